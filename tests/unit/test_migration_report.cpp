// core/migrate verify and cleanup on hand-made databases: a legacy table, and
// a target (outbox + the migration's tables) written the way the outbox_sink
// writes it (core/migrate/progress.hpp's contract).
#include "plugin_harness.hpp"

#include "migrate/cleanup.hpp"
#include "migrate/verify.hpp"

#include "base/clock.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace cdcflow::migrate;
using cdcflow::test::TempDir;
namespace sqlite = cdcflow::sqlite;

namespace {

const char *kLegacyDdl = "CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
                         "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)";

struct Fixture {
    TempDir dir{"mig_report"};
    sqlite::Db legacy{dir.file("legacy.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE};
    sqlite::Db target{dir.file("target.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE};
    MigrationSpec spec;

    Fixture() {
        spec.ns = *parse_uuid(kDefaultNamespace);
        legacy.exec(kLegacyDdl);
        target.exec(spec.outbox.create_sql());
        target.exec(kTargetDdl);
    }
    Databases dbs() { return {legacy, target, target}; }

    void add_legacy(int64_t id, const char *topic, const char *key, const char *type, const char *body,
                    const char *created) {
        auto s = legacy.prepare("INSERT INTO legacy_outbox VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)");
        s.bind(1, id);
        auto text = [&](int i, const char *v) {
            if (v)
                s.bind(i, std::string_view(v));
            else
                s.bind_null(i);
        };
        text(2, topic);
        text(3, key);
        text(4, type);
        text(5, body);
        text(6, created);
        s.run();
    }
    // Mappable rows from..to, created a year ago (or at `created`).
    void add_rows(int64_t from, int64_t to, const char *created = "2020-01-01T00:00:00Z") {
        sqlite::Transaction tx(legacy);
        for (int64_t id = from; id <= to; ++id) {
            std::string key = "acc-" + std::to_string(id % 5), body = "{\"n\":" + std::to_string(id) + "}";
            add_legacy(id, "Account", key.c_str(), "Deposited", body.c_str(), created);
        }
        tx.commit();
    }

    // What the outbox_sink commits: each legacy row with id <= up_to in id
    // order, mapped into the outbox and the map, or recorded as unmappable;
    // then the progress point.
    void migrate(int64_t up_to, const std::string &gaps = "") {
        auto rows = legacy.prepare(spec.legacy.select_sql(" WHERE id > ?1 AND id <= ?2 ORDER BY id"));
        int64_t last = read_progress(target, spec.migration).last_legacy_id.value_or(INT64_MIN);
        rows.bind(1, last).bind(2, up_to);
        auto ins = target.prepare(
            spec.outbox.insert_sql({cdcflow::outbox::Column::kId, cdcflow::outbox::Column::kAggregateType,
                                    cdcflow::outbox::Column::kAggregateId, cdcflow::outbox::Column::kType,
                                    cdcflow::outbox::Column::kPayload, cdcflow::outbox::Column::kTimestamp}));
        auto map =
            target.prepare("INSERT INTO cdcflow_migration_map(migration, seq, legacy_id, checksum, late) "
                           "VALUES (?1, ?2, ?3, ?4, 0)");
        auto skip = target.prepare("INSERT INTO cdcflow_migration_skipped VALUES (?1, ?2, ?3, 0)");
        sqlite::Transaction tx(target);
        MappedEvent ev;
        std::string reason, scratch;
        while (rows.step()) {
            LegacyRow row = read_row(rows.raw());
            last = row.id;
            if (!map_row(row, spec.legacy, spec.ns, ev, reason)) {
                skip.bind(1, std::string_view(spec.migration))
                    .bind(2, row.id)
                    .bind(3, std::string_view(reason));
                skip.run();
                continue;
            }
            ins.bind(1, ev.id_view())
                .bind(2, ev.aggregate_type)
                .bind(3, ev.aggregate_id)
                .bind(4, ev.type)
                .bind(5, ev.payload)
                .bind(6, ev.timestamp_us);
            ins.run();
            map.bind(1, std::string_view(spec.migration))
                .bind(2, target.last_rowid())
                .bind(3, row.id)
                .bind(4, event_checksum(ev, scratch));
            map.run();
        }
        rows.reset();
        auto prog =
            target.prepare("INSERT INTO cdcflow_migration_progress(name, last_legacy_id, gaps) VALUES "
                           "(?1, ?2, ?3) ON CONFLICT(name) DO UPDATE SET last_legacy_id = "
                           "excluded.last_legacy_id, gaps = excluded.gaps");
        prog.bind(1, std::string_view(spec.migration)).bind(2, last).bind(3, std::string_view(gaps));
        prog.run();
        tx.commit();
    }
    int64_t seq_of(int64_t legacy_id) {
        return target.query_int("SELECT seq FROM cdcflow_migration_map WHERE legacy_id = " +
                                std::to_string(legacy_id));
    }
    VerifyReport verify(bool allow_other = false) {
        VerifyOptions o;
        o.allow_other_events = allow_other;
        return cdcflow::migrate::verify(dbs(), spec, o);
    }
};

std::vector<int64_t> ids(std::initializer_list<int64_t> v) {
    return v;
}

} // namespace

TEST_CASE("verify: a complete migration is ok; unmappable rows are recorded and grouped by reason class") {
    Fixture f;
    f.add_rows(1, 20);
    f.add_legacy(21, nullptr, "k", "t", "{}", "2020-01-01");
    f.add_legacy(22, "", "k", "t", "{}", "2020-01-01");
    f.add_legacy(23, "A", "k", "t", "{}", "yesterday");
    f.add_legacy(24, "A", "k", "t", "\xff\xfe", "2020-01-01");
    f.add_legacy(25, "A", "k", "t", "not json", "2020-01-01 10:00:00+02:00"); // mappable: migrated as written
    f.add_legacy(26, nullptr, "k", "t", "{}", "2020-01-01");
    f.add_rows(27, 30);
    f.migrate(30);
    VerifyReport r = f.verify();
    CHECK(r.ok());
    CHECK(r.failure_summary().empty());
    CHECK(r.legacy_rows == 30);
    CHECK(r.migrated.count == 25);
    CHECK(r.unmappable.count == 5);
    CHECK(r.unmappable.ids == ids({21, 22, 23, 24, 26}));
    CHECK(r.unmappable_reasons.at("topic is NULL") == 2);
    CHECK(r.unmappable_reasons.at("topic is empty") == 1);
    CHECK(r.unmappable_reasons.at("created_at is not an ISO 8601 date") == 1);
    CHECK(r.unmappable_reasons.at("body is not valid UTF-8") == 1);
    CHECK(r.missing.count + r.not_yet.count + r.unexpected.count + r.order.count + r.mismatches.count +
              r.duplicates.count + r.other.count ==
          0);
    CHECK(*r.last_legacy_id == 30);
    const std::string j = r.json();
    CHECK(j.find("\"ok\":true") != std::string::npos);
    CHECK(j.find("\"topic is NULL\":2") != std::string::npos);
    CHECK(quick_check(f.dbs(), f.spec, 10).count == 0);
}

TEST_CASE(
    "verify: rows above the progress point and in open gaps are not yet migrated (an error until done)") {
    Fixture f;
    f.add_rows(1, 10);
    f.add_rows(14, 20);
    f.migrate(16, "11:13@5");
    f.add_rows(12, 12); // became visible in the gap, not migrated yet
    VerifyReport r = f.verify();
    CHECK_FALSE(r.ok());
    CHECK(r.not_yet.ids == ids({12, 17, 18, 19, 20}));
    CHECK(r.missing.count == 0);
    CHECK(r.open_gaps.size() == 1);
    CHECK(r.failure_summary().find("5 not yet migrated (legacy ids 12, 17, 18, 19, 20)") !=
          std::string::npos);
    // The quick check skips open gaps and what is above the point.
    CHECK(quick_check(f.dbs(), f.spec, 10).count == 0);
    // A row at or below the point, outside gaps, without an event: missing.
    f.legacy.exec("INSERT INTO legacy_outbox VALUES (13, 'A', 'k', 't', '{}', '2020-01-01', 0)");
    f.target.exec("UPDATE cdcflow_migration_progress SET gaps = ''");
    r = f.verify();
    CHECK(r.missing.ids == ids({12, 13}));
    ReportClass q = quick_check(f.dbs(), f.spec, 10);
    CHECK(q.ids == ids({12, 13}));
}

TEST_CASE(
    "verify: a persisted gap older than the migrator's gap_watch_ms is closed: a row there is missing") {
    Fixture f;
    f.add_rows(1, 10);
    f.add_rows(14, 20);
    // Opened at 5 us after the epoch: long past any watch period.
    f.migrate(20, "11:13@5");
    f.add_rows(12, 12);
    CHECK(f.verify().not_yet.ids == ids({12})); // no watch period known: as persisted
    f.spec.gap_watch_us = int64_t{600000} * 1000;
    VerifyReport r = f.verify();
    CHECK(r.open_gaps.empty());
    CHECK(r.not_yet.count == 0);
    CHECK(r.missing.ids == ids({12}));
    CHECK(quick_check(f.dbs(), f.spec, 10).ids == ids({12}));
    // A gap opened just now is still watched.
    f.target.exec("UPDATE cdcflow_migration_progress SET gaps = '11:13@" +
                  std::to_string(cdcflow::base::wall_us()) + "'");
    CHECK(f.verify().not_yet.ids == ids({12}));
}

TEST_CASE("verify: tampering with the target is named by class and legacy id") {
    Fixture f;
    f.add_rows(1, 40);
    f.migrate(40);
    REQUIRE(f.verify().ok());

    SUBCASE("a deleted event is missing") {
        f.target.exec("DELETE FROM outbox WHERE seq = " + std::to_string(f.seq_of(7)));
        VerifyReport r = f.verify();
        CHECK_FALSE(r.ok());
        CHECK(r.missing.ids == ids({7}));
        CHECK(r.failure_summary() == "1 missing (legacy id 7)");
    }
    SUBCASE("a changed payload is a content mismatch") {
        f.target.exec("UPDATE outbox SET payload = '{\"n\":999}' WHERE seq = " + std::to_string(f.seq_of(9)));
        VerifyReport r = f.verify();
        CHECK(r.mismatches.ids == ids({9}));
        CHECK(r.missing.count == 0);
    }
    SUBCASE("a foreign row is another event; --allow-other-events accepts it") {
        f.target.exec("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES "
                      "('app-1', 'A', 'k', 't', '{}', 1)");
        VerifyReport r = f.verify();
        CHECK_FALSE(r.ok());
        CHECK(r.other.count == 1);
        CHECK(r.other.seqs == ids({41}));
        CHECK(f.verify(true).ok());
    }
    SUBCASE("a version-5 event of no legacy row is unexpected, by seq") {
        char id[kUuidTextSize];
        legacy_event_id(f.spec.ns, 999, id);
        f.target.exec(
            "INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES ('" +
            std::string(id, kUuidTextSize) + "', 'A', 'k', 't', '{}', 1)");
        VerifyReport r = f.verify(true);
        CHECK_FALSE(r.ok());
        CHECK(r.unexpected.seqs == ids({41}));
    }
    SUBCASE("two neighbours swapped: an order violation naming both") {
        const int64_t a = f.seq_of(10), b = f.seq_of(11);
        f.target.exec("UPDATE outbox SET seq = -1 WHERE seq = " + std::to_string(a) + ";" +
                      "UPDATE outbox SET seq = " + std::to_string(a) + " WHERE seq = " + std::to_string(b) +
                      ";" + "UPDATE outbox SET seq = " + std::to_string(b) + " WHERE seq = -1");
        VerifyReport r = f.verify();
        CHECK_FALSE(r.ok());
        CHECK(r.order.ids == ids({10, 11}));
        CHECK(r.mismatches.count == 0); // the contents moved with their ids
        CHECK(r.failure_summary() == "2 order violation(s) (legacy ids 10, 11)");
    }
    SUBCASE("two rows far apart swapped: those two are named") {
        const int64_t a = f.seq_of(3), b = f.seq_of(30);
        f.target.exec("UPDATE outbox SET seq = -1 WHERE seq = " + std::to_string(a) + ";" +
                      "UPDATE outbox SET seq = " + std::to_string(a) + " WHERE seq = " + std::to_string(b) +
                      ";" + "UPDATE outbox SET seq = " + std::to_string(b) + " WHERE seq = -1");
        VerifyReport r = f.verify();
        CHECK(r.order.ids == ids({3, 30}));
    }
    SUBCASE("a late row is reported, not an order violation") {
        // Legacy row 41 filled a gap after 42 was migrated: it sits after 42.
        f.target.exec(
            "UPDATE cdcflow_migration_map SET late = 1 WHERE legacy_id = 5; UPDATE outbox SET seq = 100 "
            "WHERE seq = " +
            std::to_string(f.seq_of(5)) + "; UPDATE cdcflow_migration_map SET seq = 100 WHERE legacy_id = 5");
        VerifyReport r = f.verify();
        CHECK(r.ok());
        CHECK(r.late.ids == ids({5}));
        CHECK(r.order.count == 0);
    }
    SUBCASE("an event written twice is a duplicate") {
        f.target.exec(
            "INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) SELECT id, "
            "aggregatetype, aggregateid, type, payload, timestamp FROM outbox WHERE seq = " +
            std::to_string(f.seq_of(12)));
        VerifyReport r = f.verify();
        CHECK(r.duplicates.ids == ids({12}));
        CHECK_FALSE(r.ok());
    }
    SUBCASE("a deleted legacy row makes its map entry unexpected; a cleaned one is not") {
        f.legacy.exec("DELETE FROM legacy_outbox WHERE id IN (4, 6)");
        f.target.exec("UPDATE cdcflow_migration_map SET cleaned_at = 1 WHERE legacy_id = 6");
        VerifyReport r = f.verify();
        CHECK(r.unexpected.ids == ids({4}));
        CHECK(r.cleaned.ids == ids({6}));
        CHECK(r.failure_summary() == "1 unexpected (legacy id 4)");
        // A cleaned row's event is still compared, with the map's checksum.
        f.target.exec("UPDATE outbox SET type = 'x' WHERE seq = " + std::to_string(f.seq_of(6)));
        CHECK(f.verify().mismatches.ids == ids({6}));
    }
    SUBCASE("a changed legacy row is a content mismatch") {
        f.legacy.exec("UPDATE legacy_outbox SET body = '{\"n\":-1}' WHERE id = 15");
        CHECK(f.verify().mismatches.ids == ids({15}));
    }
    SUBCASE("the JSON report carries the same") {
        f.target.exec("DELETE FROM outbox WHERE seq = " + std::to_string(f.seq_of(8)));
        const std::string j = f.verify().json();
        CHECK(j.find("\"ok\":false") != std::string::npos);
        CHECK(j.find("\"missing\":{\"count\":1,\"error\":true,\"ids\":[8]}") != std::string::npos);
    }
}

TEST_CASE("verify: events deleted by the outbox's retention are retired, not missing") {
    Fixture f;
    f.add_rows(1, 30);
    f.migrate(30);
    f.target.exec(kRetiredDdl);
    f.target.exec(
        "DELETE FROM outbox WHERE seq <= 12; INSERT INTO cdcflow_outbox_retired VALUES ('outbox', 12, 0)");
    VerifyReport r = f.verify();
    CHECK(r.ok());
    CHECK(r.retired.count == 12);
    CHECK(r.migrated.count == 18);
    // Beyond the retired seq, a deleted event is missing.
    f.target.exec("DELETE FROM outbox WHERE seq = 13");
    CHECK(f.verify().missing.ids == ids({13}));
    // A legacy row that changed after its event was retired: the map's checksum tells.
    f.legacy.exec("UPDATE legacy_outbox SET message_key = 'other' WHERE id = 3");
    CHECK(f.verify().mismatches.ids == ids({3}));
}

TEST_CASE("verify: another migration's events in the same outbox are not this one's concern") {
    Fixture f;
    f.add_rows(1, 5);
    f.migrate(5);
    MigrationSpec other = f.spec;
    other.migration = "second";
    other.ns = *parse_uuid("6ba7b811-9dad-11d1-80b4-00c04fd430c8");
    char id[kUuidTextSize];
    legacy_event_id(other.ns, 1, id);
    f.target.exec(
        "INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES ('" +
        std::string(id, kUuidTextSize) +
        "', 'A', 'k', 't', '{}', 1); INSERT INTO cdcflow_migration_map VALUES ('second', 6, 1, 0, 0, NULL)");
    VerifyReport r = f.verify();
    CHECK(r.ok());
    CHECK(r.other_migrations.seqs == ids({6}));
}

TEST_CASE("verify: before the first migration (no outbox, no tables) every row is not yet migrated") {
    TempDir dir("mig_report_fresh");
    sqlite::Db legacy(dir.file("l.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    sqlite::Db target(dir.file("t.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    legacy.exec(kLegacyDdl);
    legacy.exec("INSERT INTO legacy_outbox VALUES (1, 'A', 'k', 't', '{}', '2020-01-01', 0), "
                "(2, NULL, 'k', 't', '{}', '2020-01-01', 0)");
    MigrationSpec spec;
    spec.ns = *parse_uuid(kDefaultNamespace);
    VerifyReport r = verify({legacy, target, target}, spec, {});
    CHECK_FALSE(r.ok());
    CHECK(r.not_yet.ids == ids({1, 2}));
    CHECK_FALSE(r.last_legacy_id);
    CHECK(quick_check({legacy, target, target}, spec, 10).count == 0);
    CHECK(count_legacy_after(legacy, spec.legacy, std::nullopt) == 2);
    CHECK(count_legacy_after(legacy, spec.legacy, 1) == 1);
}

TEST_CASE("verify: a missing legacy table or outbox column is a one-line error") {
    Fixture f;
    f.spec.legacy.table = "nope";
    CHECK_THROWS_WITH_AS(f.verify(), doctest::Contains("has no table \"nope\""), cdcflow::Error);
    f.spec.legacy.table = "legacy_outbox";
    f.spec.outbox.name(cdcflow::outbox::Column::kPayload) = "body";
    CHECK_THROWS_WITH_AS(f.verify(), doctest::Contains("payload_column"), cdcflow::Error);
}

TEST_CASE("cleanup: deletes only migrated, verified, old rows, never the highest id; verify passes after") {
    Fixture f;
    f.add_rows(1, 30);
    f.add_legacy(31, nullptr, "k", "t", "{}", "2020-01-01"); // unmappable
    f.add_rows(32, 35, "2999-01-01T00:00:00Z");              // young
    f.add_rows(36, 40);                                      // old, 40 the highest id
    f.migrate(40);
    f.add_rows(41, 42); // not migrated yet... and 42 is now the highest
    // Tampered: the outbox's event differs from legacy row 5; row 6's event is gone.
    f.target.exec("UPDATE outbox SET payload = '{}' WHERE seq = " + std::to_string(f.seq_of(5)));
    f.target.exec("DELETE FROM outbox WHERE seq = " + std::to_string(f.seq_of(6)));
    // Row 7's event is in the outbox twice; row 8 has a second map row.
    f.target.exec("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) SELECT id, "
                  "aggregatetype, aggregateid, type, payload, timestamp FROM outbox WHERE seq = " +
                  std::to_string(f.seq_of(7)));
    f.target.exec("INSERT INTO cdcflow_migration_map(migration, seq, legacy_id, checksum, late) VALUES ('" +
                  f.spec.migration + "', 999999, 8, 0, 0)");

    CleanupOptions o;
    o.older_than_us = 30LL * 86400 * 1000000;
    o.batch = 4; // several transactions
    o.pause = std::chrono::milliseconds(0);
    CleanupReport rep = cleanup(f.dbs(), f.spec, o);
    CHECK(rep.deleted == 31); // 1..40 old and mappable (35) minus 5, 6, 7 and 8
    CHECK(rep.kept.at("event duplicated") == 2);
    CHECK(rep.kept.at("event differs") == 1);
    CHECK(rep.kept.at("event missing") == 1);
    CHECK(rep.kept.at("unmappable") == 1);
    CHECK(rep.kept.at("younger than the retention") == 4);
    CHECK(rep.kept.at("not migrated") == 1);   // 41
    CHECK(rep.kept.at("the highest id") == 1); // 42
    CHECK(rep.marked == 31);
    CHECK(f.legacy.query_text("SELECT group_concat(id) FROM (SELECT id FROM legacy_outbox ORDER BY id)") ==
          "5,6,7,8,31,32,33,34,35,41,42");

    // Verify: the deleted rows are cleaned (their events checked against the
    // map), the tampering is still named, nothing else is wrong.
    VerifyReport r = f.verify();
    CHECK(r.cleaned.count == 31);
    CHECK(r.mismatches.ids == ids({5}));
    CHECK(r.missing.ids == ids({6}));
    CHECK(r.duplicates.count >= 1);
    CHECK(r.not_yet.ids == ids({41, 42}));
    CHECK(r.order.count == 0);
    CHECK(r.unmappable.ids == ids({31}));
    // A second cleanup deletes nothing more.
    CHECK(cleanup(f.dbs(), f.spec, o).deleted == 0);
    // Without the outbox's id index (a migration stopped before building it)
    // it refuses, rather than scan the outbox once per row.
    f.target.exec("DROP INDEX outbox_id_idx");
    CHECK_THROWS_AS(cleanup(f.dbs(), f.spec, o), cdcflow::Error);
}

TEST_CASE(
    "cleanup: a row that changes after it was verified stays, and so does one that became the highest") {
    Fixture f;
    f.add_rows(1, 10);
    f.migrate(10);
    // While cleanup marks its batch, the application changes row 3 and
    // deletes row 10 (so 9 becomes the highest id): a temporary trigger on
    // cleanup's own target connection does it in the marking transaction.
    f.target.exec("ATTACH DATABASE '" + f.dir.file("legacy.db") + "' AS leg");
    f.target.exec("CREATE TEMP TRIGGER app AFTER UPDATE OF cleaned_at ON main.cdcflow_migration_map BEGIN "
                  "UPDATE legacy_outbox SET body = '{\"n\":\"changed\"}' WHERE NEW.legacy_id = 3 AND id = 3; "
                  "DELETE FROM legacy_outbox WHERE NEW.legacy_id = 9 AND id = 10; END");
    CleanupOptions o;
    o.older_than_us = 86400LL * 1000000;
    o.batch = 100; // one batch: marked (and changed) before the deletes
    o.pause = std::chrono::milliseconds(0);
    CleanupReport rep = cleanup(f.dbs(), f.spec, o);
    CHECK(rep.kept.at("changed during the cleanup") == 1); // 3: read again under the write lock
    CHECK(rep.kept.at("the highest id") == 2);             // 10 when judged; 9 by the DELETE's own guard
    CHECK(rep.deleted == 7);
    CHECK(f.legacy.query_text("SELECT group_concat(id) FROM (SELECT id FROM legacy_outbox ORDER BY id)") ==
          "3,9");
}

TEST_CASE("cleanup: the highest id stays even when every row qualifies; a crash after marking is normal") {
    Fixture f;
    f.add_rows(1, 10);
    f.migrate(10);
    CleanupOptions o;
    o.older_than_us = 86400LL * 1000000;
    o.pause = std::chrono::milliseconds(0);
    CleanupReport rep = cleanup(f.dbs(), f.spec, o);
    CHECK(rep.deleted == 9);
    CHECK(f.legacy.query_int("SELECT count(*) FROM legacy_outbox") == 1);
    CHECK(f.legacy.query_int("SELECT id FROM legacy_outbox") == 10);
    // A crash between marking and deleting: marked rows that still exist.
    f.add_rows(11, 12);
    f.migrate(12);
    f.target.exec("UPDATE cdcflow_migration_map SET cleaned_at = 5 WHERE legacy_id IN (10, 11)");
    VerifyReport r = f.verify();
    CHECK(r.ok());
    CHECK(r.cleaned.count == 9);
    CHECK(r.migrated.count == 12);
    // Nothing is ever deleted twice, and a second cleanup finds 10 and 11.
    rep = cleanup(f.dbs(), f.spec, o);
    CHECK(rep.deleted == 2);
    CHECK(f.verify().ok());
}

TEST_CASE("cleanup: a locked legacy database is waited for, then the batch goes") {
    Fixture f;
    f.add_rows(1, 10);
    f.migrate(10);
    sqlite::Db app(f.dir.file("legacy.db"), SQLITE_OPEN_READWRITE);
    app.exec("BEGIN IMMEDIATE");
    std::thread release([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        app.exec("COMMIT");
    });
    sqlite3_busy_timeout(f.legacy.raw(), 10);
    CleanupOptions o;
    o.older_than_us = 1000000;
    o.pause = std::chrono::milliseconds(0);
    std::vector<std::string> notices;
    o.notice = [&](const std::string &m) { notices.push_back(m); };
    CleanupReport rep = cleanup(f.dbs(), f.spec, o);
    release.join();
    CHECK(rep.deleted == 9);
    CHECK_FALSE(notices.empty());
    // Past its patience it gives up with one line.
    f.add_rows(11, 12);
    f.migrate(12);
    app.exec("BEGIN IMMEDIATE");
    o.lock_patience = std::chrono::milliseconds(50);
    CHECK_THROWS_WITH_AS(cleanup(f.dbs(), f.spec, o), doctest::Contains("s of locks"), cdcflow::Error);
    app.exec("COMMIT");
    CHECK(f.legacy.query_int("SELECT count(*) FROM legacy_outbox") == 3);
    CHECK(cleanup(f.dbs(), f.spec, o).deleted == 2);
}

TEST_CASE(
    "verify: order violations on random reorderings name rows out of place, and only rows in an inversion") {
    // Property check over random reorderings of the outbox (a few moved
    // rows each): the rows named, taken out, leave the rest in order; every
    // row named is out of order with some other row; an untouched outbox
    // names none.
    std::mt19937 rng(20261130);
    for (int round = 0; round < 40; ++round) {
        Fixture f;
        const int n = 30;
        f.add_rows(1, n);
        f.migrate(n);
        std::vector<int64_t> seq(n); // seq[k]: the seq legacy id k+1's event gets
        for (int k = 0; k < n; ++k)
            seq[static_cast<size_t>(k)] = k + 1;
        const int moves = round % 4; // 0: untouched
        for (int m = 0; m < moves; ++m) {
            if (rng() % 2) {
                std::swap(seq[rng() % n], seq[rng() % n]);
            } else { // one row moved elsewhere, the others shifted
                size_t from = rng() % n, to = rng() % n;
                int64_t v = seq[from];
                seq.erase(seq.begin() + static_cast<std::ptrdiff_t>(from));
                seq.insert(seq.begin() + static_cast<std::ptrdiff_t>(to), v);
            }
        }
        f.target.exec("UPDATE outbox SET seq = seq + 1000");
        for (int k = 0; k < n; ++k) {
            char id[kUuidTextSize];
            legacy_event_id(f.spec.ns, k + 1, id);
            auto s = f.target.prepare("UPDATE outbox SET seq = ?1 WHERE id = ?2");
            s.bind(1, seq[static_cast<size_t>(k)]).bind(2, std::string_view(id, kUuidTextSize));
            s.run();
        }
        VerifyOptions o;
        o.limit = n;
        VerifyReport r = cdcflow::migrate::verify(f.dbs(), f.spec, o);
        CHECK(r.mismatches.count == 0);
        CHECK(r.missing.count == 0);
        const bool sorted = std::is_sorted(seq.begin(), seq.end());
        CHECK((r.order.count == 0) == sorted);
        std::vector<int64_t> rest;
        for (int k = 0; k < n; ++k)
            if (!std::binary_search(r.order.ids.begin(), r.order.ids.end(), k + 1))
                rest.push_back(seq[static_cast<size_t>(k)]);
        CHECK(std::is_sorted(rest.begin(), rest.end()));
        for (int64_t named : r.order.ids) {
            const size_t i = static_cast<size_t>(named - 1);
            bool inverted = false;
            for (size_t j = 0; j < seq.size(); ++j)
                inverted |= (j < i && seq[j] > seq[i]) || (j > i && seq[j] < seq[i]);
            CHECK_MESSAGE(inverted, "legacy id " << named << " named but in order, round " << round);
        }
    }
}

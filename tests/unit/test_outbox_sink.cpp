// outbox_sink against real SQLite files, driven over the host API table: one
// transaction per batch with the outbox rows, the migration's map, progress,
// skipped rows and checkpoint; already migrated events; fencing; locks.
#include "plugin_harness.hpp"

#include "common/sqlite.hpp"
#include "migrate/mapping.hpp"
#include "migrate/progress.hpp"
#include "outbox_sink/outbox_sink.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

using cdcflow::migrate::Gap;
using cdcflow::migrate::OutboxSink;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;
namespace sqlite = cdcflow::sqlite;
namespace migrate = cdcflow::migrate;

namespace {

using Positions = std::vector<std::pair<std::string, int64_t>>;

struct Sink {
    StageHarness h;
    std::unique_ptr<OutboxSink> sink;
    Sink(std::initializer_list<std::pair<const char *, Val>> cfg)
        : h("write", cdcflow::test::declared<OutboxSink>(), cfg),
          sink(cdcflow::test::make_stage<OutboxSink>(h)) {}
    void process(cdcflow_batch &b) {
        cdcflow::Batch view = h.view(b);
        sink->process(view);
    }
    Positions checkpoint() {
        Positions out;
        sink->checkpoint(
            [&](const cdcflow_position &p) { out.emplace_back(cdcflow::sv(p.partition), p.offset); });
        return out;
    }
};

EventSpec legacy(int64_t id, std::string partition = "") {
    EventSpec e;
    char out[migrate::kUuidTextSize];
    migrate::legacy_event_id(*migrate::parse_uuid(migrate::kDefaultNamespace), id, out);
    e.id = std::string(out, migrate::kUuidTextSize);
    e.aggregate_id = "acc-" + std::to_string(id % 3);
    e.type = "MoneyDeposited";
    e.payload = "{\"amount\":\"" + std::to_string(id) + ".00\"}";
    e.timestamp_us = 1714564800000000 + id;
    e.offset = id;
    e.partition = std::move(partition);
    return e;
}

// Sets event i's headers (what the migrator does to its last event).
void set_headers(cdcflow_batch &b, uint32_t i, const std::string &headers) {
    cdcflow::Batch view(cdcflow::host::host_api(), nullptr, &b);
    b.events[i].headers = view.copy(headers);
}

void reject(cdcflow_batch &b, uint32_t i, const char *stage, const std::string &why) {
    cdcflow_ctx c{};
    c.stage_id = stage;
    cdcflow::host::host_api()->event_reject(&c, &b, i, why.data(), why.size());
}

int64_t count(sqlite::Db &db, const std::string &sql) {
    return db.query_int(sql, -1);
}

struct MapRow {
    int64_t seq, legacy_id, checksum, late;
    std::string id;
};

std::vector<MapRow> map_rows(sqlite::Db &db) {
    auto s =
        db.prepare("SELECT m.seq, m.legacy_id, m.checksum, m.late, o.id FROM cdcflow_migration_map m JOIN "
                   "outbox o ON o.seq = m.seq WHERE m.migration = 'legacy-migration' ORDER BY m.seq");
    std::vector<MapRow> out;
    while (s.step())
        out.push_back({s.int64(0), s.int64(1), s.int64(2), s.int64(3), std::string(s.text(4))});
    return out;
}

std::vector<std::pair<int64_t, std::string>> skipped(sqlite::Db &db) {
    auto s = db.prepare("SELECT legacy_id, reason FROM cdcflow_migration_skipped ORDER BY legacy_id");
    std::vector<std::pair<int64_t, std::string>> out;
    while (s.step())
        out.emplace_back(s.int64(0), std::string(s.text(1)));
    return out;
}

cdcflow_ownership lease(uint32_t ms) {
    cdcflow_ownership o{};
    o.struct_size = sizeof o;
    o.lease_ms = ms;
    return o;
}

} // namespace

TEST_CASE("outbox_sink: create() changes nothing; start() creates the outbox, the migration tables and WAL") {
    TempDir dir("os_schema");
    const std::string path = dir.file("target.db");
    {
        Sink s({{"database", path}});
        CHECK_FALSE(std::filesystem::exists(path));
        CHECK(s.checkpoint().empty());
        s.sink->start();
        s.sink->stop();
    }
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(db.columns("outbox") == std::vector<std::string>{"seq", "id", "aggregatetype", "aggregateid",
                                                           "type", "payload", "timestamp"});
    // A new outbox: its id index comes once the backlog is in (the next test).
    CHECK(count(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'outbox_id_idx'") ==
          0);
    for (const char *t : {"cdcflow_migration_progress", "cdcflow_migration_map", "cdcflow_migration_skipped",
                          "cdcflow_checkpoints"})
        CHECK_MESSAGE(db.has_table(t), t);
    CHECK(db.journal_mode() == "wal");

    // Config and schema errors name the key.
    auto error_of = [](std::initializer_list<std::pair<const char *, Val>> cfg) -> std::string {
        try {
            Sink s(cfg);
            s.sink->start();
        } catch (const cdcflow::Error &e) {
            return e.what();
        }
        return "";
    };
    const std::string other = dir.file("other.db");
    CHECK(error_of({{"database", other}, {"create_schema", false}})
              .find("does not exist (create_schema is false)") != std::string::npos);
    CHECK(error_of({{"database", path}, {"payload_column", "body"}}).find("payload_column: ") !=
          std::string::npos);
    CHECK(error_of({{"database", path}, {"synchronous", "off"}}).find("synchronous") != std::string::npos);
    {
        sqlite::Db o(other, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        o.exec("CREATE TABLE x(y)");
    }
    CHECK(error_of({{"database", other}, {"create_schema", false}}).find("has no table \"outbox\"") !=
          std::string::npos);
}

TEST_CASE(
    "outbox_sink: one transaction holds the rows, their map and checksums, the skipped rows, progress and "
    "checkpoint") {
    TempDir dir("os_batch");
    const std::string path = dir.file("target.db");
    Sink s({{"database", path}});
    s.sink->start();

    cdcflow_batch b(16);
    for (int64_t id : {1, 2, 3, 4, 6, 7})
        append(b, legacy(id));
    reject(b, 2, "migrate", "topic is NULL");        // the migrator's own: the reason alone
    reject(b, 3, "validate", "amount: must be > 0"); // another stage's: prefixed
    cdcflow_ctx dedupe{};
    dedupe.stage_id = "dedupe";
    cdcflow::host::host_api()->event_mark_duplicate(&dedupe, &b, 4); // skipped, no record
    b.events[5].event_type = cdcflow::str("T\xff");                  // the sink's own check
    const std::vector<Gap> gaps = {{5, 5, 1700000000000000}};
    set_headers(b, 5, migrate::gaps_header(gaps));
    s.process(b);
    CHECK(b.events[5].status == CDCFLOW_EVENT_REJECTED);
    CHECK(cdcflow::sv(b.events[5].reject_stage) == "write");

    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    std::vector<MapRow> rows = map_rows(db);
    REQUIRE(rows.size() == 2);
    std::string scratch;
    for (size_t k = 0; k < rows.size(); ++k) {
        const EventSpec e = legacy(static_cast<int64_t>(k + 1));
        CHECK(rows[k].legacy_id == static_cast<int64_t>(k + 1));
        CHECK(rows[k].id == e.id);
        CHECK(rows[k].late == 0);
        CHECK(rows[k].checksum == migrate::event_checksum(e.id, e.aggregate_type, e.aggregate_id, e.type,
                                                          e.payload, e.timestamp_us, scratch));
    }
    auto st =
        db.prepare("SELECT aggregatetype, aggregateid, type, payload, timestamp FROM outbox ORDER BY seq");
    REQUIRE(st.step());
    CHECK(st.text(0) == "Account");
    CHECK(st.text(1) == "acc-1");
    CHECK(st.text(2) == "MoneyDeposited");
    CHECK(st.text(3) == "{\"amount\":\"1.00\"}");
    CHECK(st.int64(4) == 1714564800000001);
    st.reset();

    CHECK(skipped(db) == std::vector<std::pair<int64_t, std::string>>{
                             {3, "topic is NULL"},
                             {4, "validate: amount: must be > 0"},
                             {7, "write: event type is not valid UTF-8: \"T\\xff\""}});
    auto p = db.prepare("SELECT last_legacy_id, gaps, migrated, skipped, late, started_at, updated_at FROM "
                        "cdcflow_migration_progress WHERE name = 'legacy-migration'");
    REQUIRE(p.step());
    CHECK(p.int64(0) == 7);
    CHECK(p.text(1) == migrate::gaps_text(gaps));
    CHECK(p.int64(2) == 2);
    CHECK(p.int64(3) == 3);
    CHECK(p.int64(4) == 0);
    CHECK(p.int64(5) > 1600000000000000);
    p.reset();
    CHECK(
        count(
            db,
            "SELECT position FROM cdcflow_checkpoints WHERE name = 'legacy-migration' AND partition = ''") ==
        7);
    CHECK(s.checkpoint() == Positions{{"", 7}, {migrate::gap_partition(gaps[0]), 5}});
    CHECK(s.h.metric("outbox_sink_migrated") /* not already_migrated */ == 2);
    CHECK(s.h.metric("skipped") == 3);

    // A batch without a gap header keeps the stored set; a late row fills the gap.
    cdcflow_batch b2(4);
    append(b2, legacy(5, "late"));
    append(b2, legacy(8));
    set_headers(b2, 1, migrate::gaps_header({}));
    s.process(b2);
    rows = map_rows(db);
    REQUIRE(rows.size() == 4);
    CHECK(rows[2].legacy_id == 5);
    CHECK(rows[2].late == 1);
    CHECK(rows[3].legacy_id == 8);
    CHECK(s.checkpoint() == Positions{{"", 8}});
    CHECK(count(db, "SELECT late FROM cdcflow_migration_progress") == 1);
    CHECK(count(db, "SELECT migrated FROM cdcflow_migration_progress") == 4);
    CHECK(s.h.metric("late") == 1);

    cdcflow_batch b3(4);
    append(b3, legacy(9));
    s.process(b3);
    CHECK(count(db, "SELECT gaps = '' FROM cdcflow_migration_progress") == 1);
    CHECK(s.checkpoint() == Positions{{"", 9}});
}

TEST_CASE("outbox_sink: a new outbox is bulk-loaded without its id index, built once the backlog is in") {
    TempDir dir("os_index");
    const std::string path = dir.file("target.db");
    auto has_index = [&path] {
        sqlite::Db db(path, SQLITE_OPEN_READONLY);
        return count(db,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'outbox_id_idx'") ==
               1;
    };
    auto bulk = [](int64_t first, int64_t n) {
        auto b = std::make_unique<cdcflow_batch>(static_cast<uint32_t>(n));
        for (int64_t id = first; id < first + n; ++id)
            append(*b, legacy(id));
        return b;
    };
    {
        Sink s({{"database", path}});
        s.sink->start();
        CHECK(s.sink->index_deferred());
        s.process(*bulk(1, 1000)); // a full-sized batch: still the backlog
        CHECK(s.sink->index_deferred());
        CHECK_FALSE(has_index());
        s.sink->stop(); // a stop (SIGTERM, kill -9 alike) leaves it for the next start
    }
    {
        // A restart goes on with the bulk load; a small batch means the source caught up.
        Sink s({{"database", path}});
        s.sink->start();
        CHECK(s.sink->index_deferred());
        s.process(*bulk(1001, 1000));
        CHECK_FALSE(has_index());
        s.process(*bulk(2001, 5));
        CHECK_FALSE(s.sink->index_deferred());
        CHECK(has_index());
        s.sink->stop();
    }
    {
        Sink s({{"database", path}});
        s.sink->start();
        CHECK_FALSE(s.sink->index_deferred()); // built: nothing deferred any more
        s.sink->stop();
    }
    // A stop ends in a flush too: it leaves the index to the next start
    // (sorting the backlog must not eat the shutdown deadline); so does a
    // database another connection holds locked (every row is committed).
    const std::string stopped = dir.file("stopped.db");
    {
        Sink s({{"database", stopped}, {"busy_timeout_ms", 0}});
        s.sink->start();
        s.process(*bulk(1, 1000));
        s.h.request_stop();
        s.sink->flush();
        CHECK(s.sink->index_deferred());
    }
    {
        Sink s({{"database", stopped}, {"busy_timeout_ms", 0}});
        s.sink->start();
        sqlite::Db app(stopped, SQLITE_OPEN_READWRITE);
        app.exec("BEGIN IMMEDIATE");
        s.sink->flush(); // no throw: the run ends well, the index waits
        CHECK(s.sink->index_deferred());
        app.exec("ROLLBACK");
        s.sink->flush();
        CHECK_FALSE(s.sink->index_deferred());
    }
    // The drain builds it; so does the first look-up by event id (a late row).
    const std::string drained = dir.file("drained.db");
    {
        Sink s({{"database", drained}});
        s.sink->start();
        s.process(*bulk(1, 1000));
        s.sink->flush();
        CHECK_FALSE(s.sink->index_deferred());
        sqlite::Db db(drained, SQLITE_OPEN_READONLY);
        CHECK(count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_id_idx'") == 1);
    }
    const std::string late = dir.file("late.db");
    {
        Sink s({{"database", late}});
        s.sink->start();
        auto b = bulk(2, 1000);
        s.process(*b);
        auto l = bulk(1001, 1000);
        l->events[0].position.partition = cdcflow::str(migrate::kLatePartition);
        l->events[0].position.offset = 1; // legacy id 1, late, then the rest in order
        char id[migrate::kUuidTextSize];
        migrate::legacy_event_id(*migrate::parse_uuid(migrate::kDefaultNamespace), 1, id);
        cdcflow::Batch view(cdcflow::host::host_api(), nullptr, l.get());
        l->events[0].event_id = view.copy(std::string_view(id, sizeof id));
        s.process(*l);
        CHECK_FALSE(s.sink->index_deferred());
        sqlite::Db db(late, SQLITE_OPEN_READONLY);
        CHECK(count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_id_idx'") == 1);
        CHECK(count(db, "SELECT count(*) FROM cdcflow_migration_map WHERE late = 1 AND legacy_id = 1") == 1);
    }
    // An outbox that existed before (the application's, an older release's)
    // keeps or gets its index at once.
    const std::string existing = dir.file("existing.db");
    {
        sqlite::Db db(existing, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        cdcflow::outbox::OutboxSchema schema;
        db.exec(schema.create_table_sql());
    }
    {
        Sink s({{"database", existing}});
        s.sink->start();
        CHECK_FALSE(s.sink->index_deferred());
        sqlite::Db db(existing, SQLITE_OPEN_READONLY);
        CHECK(count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_id_idx'") == 1);
    }
}

TEST_CASE("outbox_sink: without progress of its name but with rows in the outbox, every event is looked up "
          "until a batch finds none there") {
    TempDir dir("os_noprogress");
    const std::string path = dir.file("target.db");
    auto batch_of = [](int64_t first, int64_t last) {
        auto b = std::make_unique<cdcflow_batch>(static_cast<uint32_t>(last - first + 1));
        for (int64_t id = first; id <= last; ++id)
            append(*b, legacy(id));
        return b;
    };
    {
        Sink s({{"database", path}});
        s.sink->start();
        s.process(*batch_of(1, 5));
        s.sink->flush();
    }
    // The progress row is lost (or the migration is renamed): a rerun from
    // the start must not write the five again.
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE);
        db.exec("DELETE FROM cdcflow_migration_progress; DELETE FROM cdcflow_checkpoints");
    }
    {
        Sink s({{"database", path}});
        s.sink->start();
        auto b = batch_of(1, 7);
        s.process(*b);
        CHECK(s.h.metric("already_migrated") == 5);
        CHECK(s.h.metric("outbox_sink_migrated") == 2);
        s.process(*batch_of(8, 9)); // nothing there: from now on no look-ups
        s.process(*batch_of(10, 10));
    }
    {
        Sink s({{"database", path}, {"checkpoint_name", "renamed"}});
        s.sink->start();
        s.process(*batch_of(1, 11));
        CHECK(s.h.metric("already_migrated") == 10);
        CHECK(s.h.metric("outbox_sink_migrated") == 1);
    }
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 11);
    CHECK(count(db, "SELECT count(DISTINCT id) FROM outbox") == 11);
}

TEST_CASE("outbox_sink: an event already in the outbox is never written twice; progress never moves back") {
    TempDir dir("os_again");
    const std::string path = dir.file("target.db");
    {
        Sink s({{"database", path}});
        s.sink->start();
        cdcflow_batch b(8);
        for (int64_t id = 1; id <= 5; ++id)
            append(b, legacy(id));
        s.process(b);
        s.sink->stop();
    }
    // A restart that reads some of them again (e.g. another checkpoint), and
    // late copies of rows that are there already.
    Sink s({{"database", path}});
    s.sink->start();
    CHECK(s.sink->committed_last() == 5);
    cdcflow_batch b(8);
    append(b, legacy(2, "late"));
    append(b, legacy(4));
    append(b, legacy(5));
    append(b, legacy(6));
    s.process(b);
    CHECK(s.h.metric("already_migrated") == 3);
    CHECK(s.h.metric("outbox_sink_migrated") /* not already_migrated */ == 1);
    // Marked as duplicates: the host does not count them as written.
    for (uint32_t i = 0; i < 3; ++i)
        CHECK(b.events[i].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(b.events[3].status == CDCFLOW_EVENT_OK);
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 6);
    CHECK(count(db, "SELECT count(DISTINCT id) FROM outbox") == 6);
    CHECK(count(db, "SELECT migrated FROM cdcflow_migration_progress") == 6);

    // Only events at or below the checkpoint: the checkpoint stays.
    cdcflow_batch b2(4);
    append(b2, legacy(3));
    s.process(b2);
    CHECK(s.checkpoint() == Positions{{"", 6}});
    CHECK(count(db, "SELECT last_legacy_id FROM cdcflow_migration_progress") == 6);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 6);

    // A late row not migrated before is written, marked late.
    cdcflow_batch b3(4);
    append(b3, legacy(0, "late"));
    s.process(b3);
    CHECK(count(db, "SELECT late FROM cdcflow_migration_map WHERE legacy_id = 0") == 1);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 7);

    // A skipped row recorded twice stays as first recorded.
    cdcflow_batch b4(4);
    append(b4, legacy(7));
    reject(b4, 0, "migrate", "body is empty");
    s.process(b4);
    b4.reset();
    append(b4, legacy(7, "late"));
    reject(b4, 0, "migrate", "body is NULL");
    s.process(b4);
    CHECK(skipped(db) == std::vector<std::pair<int64_t, std::string>>{{7, "body is empty"}});
    CHECK(count(db, "SELECT skipped FROM cdcflow_migration_progress") == 1);
}

TEST_CASE("outbox_sink: a second owner is refused; a fenced commit writes nothing") {
    TempDir dir("os_fence");
    const std::string path = dir.file("target.db");
    Sink a({{"database", path}});
    a.sink->acquire(lease(10000));
    a.sink->start();
    cdcflow_batch b(4);
    append(b, legacy(1));
    a.process(b);

    Sink second({{"database", path}});
    try {
        second.sink->acquire(lease(10000));
        FAIL("a second owner");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_OWNED);
        CHECK(std::string(e.what()).find("checkpoint 'legacy-migration'") != std::string::npos);
    }
    // Another process took the checkpoint over (a's lease ran out while frozen).
    {
        sqlite::Db c(path, SQLITE_OPEN_READWRITE);
        c.exec("UPDATE cdcflow_owners SET epoch = epoch + 1, host = 'h2', pid = 42");
    }
    cdcflow_batch b2(4);
    append(b2, legacy(2));
    try {
        a.process(b2);
        FAIL("a fenced commit went through");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_FENCED);
    }
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 1);
    CHECK(count(db, "SELECT count(*) FROM cdcflow_migration_map") == 1);
    CHECK(count(db, "SELECT last_legacy_id FROM cdcflow_migration_progress") == 1);
    CHECK(a.checkpoint() == Positions{{"", 1}});
    a.sink->stop();
}

TEST_CASE("outbox_sink: a locked database is a retry, and the retried batch commits once") {
    TempDir dir("os_locked");
    const std::string path = dir.file("target.db");
    Sink s({{"database", path}, {"busy_timeout_ms", 0}});
    s.sink->start();
    cdcflow_batch b(4);
    append(b, legacy(1));
    append(b, legacy(2));
    {
        sqlite::Db locker(path, SQLITE_OPEN_READWRITE);
        locker.exec("BEGIN IMMEDIATE");
        try {
            s.process(b);
            FAIL("wrote into a locked database");
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_RETRY);
        }
        locker.exec("ROLLBACK");
    }
    s.process(b);
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(count(db, "SELECT count(*) FROM outbox") == 2);
    CHECK(count(db, "SELECT migrated FROM cdcflow_migration_progress") == 2);
    CHECK(s.h.metric("outbox_sink_migrated") /* not already_migrated */ == 2);
}

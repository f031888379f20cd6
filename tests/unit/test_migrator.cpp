// migrator against real SQLite files, driven over the host API table: the
// mapping into events, unmappable rows, resuming, and the gap rules
// (core/migrate/progress.hpp) with clocks the tests drive.
#include "plugin_harness.hpp"

#include "common/sqlite.hpp"
#include "migrate/progress.hpp"
#include "migrate/uuid5.hpp"
#include "migrator/migrator.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

using cdcflow::migrate::Gap;
using cdcflow::migrate::Migrator;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;
namespace sqlite = cdcflow::sqlite;
namespace migrate = cdcflow::migrate;

namespace {

const char *kLegacy = "CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
                      "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)";

sqlite::Db make_legacy(const std::string &path, const char *journal = "WAL") {
    sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    db.exec(std::string("PRAGMA journal_mode=") + journal);
    db.exec(kLegacy);
    return db;
}

// One well-formed legacy row.
void insert(sqlite::Db &db, int64_t id, const std::string &key = "acc-1") {
    auto st =
        db.prepare("INSERT INTO legacy_outbox(id, topic, message_key, message_type, body, created_at, "
                   "published) VALUES(?1, 'Account', ?2, 'MoneyDeposited', ?3, '2024-05-01T12:00:00Z', 0)");
    std::string body = "{\"amount\":\"" + std::to_string(id) + ".00\"}";
    st.bind(1, id).bind(2, std::string_view(key)).bind(3, std::string_view(body));
    st.run();
}

void insert_range(sqlite::Db &db, int64_t from, int64_t to) {
    sqlite::Transaction tx(db);
    for (int64_t id = from; id <= to; ++id)
        insert(db, id);
    tx.commit();
}

std::string event_id(int64_t legacy_id, const char *ns = migrate::kDefaultNamespace) {
    char out[migrate::kUuidTextSize];
    migrate::legacy_event_id(*migrate::parse_uuid(ns), legacy_id, out);
    return std::string(out, migrate::kUuidTextSize);
}

struct Read {
    std::string partition;
    int64_t offset;
    bool operator==(const Read &) const = default;
};

// doctest prints vectors of these on failure.
[[maybe_unused]] std::ostream &operator<<(std::ostream &o, const Read &r) {
    return o << (r.partition.empty() ? "" : r.partition + "@") << r.offset;
}

std::vector<Read> in_order(std::initializer_list<int64_t> ids) {
    std::vector<Read> out;
    for (int64_t id : ids)
        out.push_back({"", id});
    return out;
}

struct Source {
    StageHarness h;
    std::unique_ptr<Migrator> src;
    // The clocks the migrator sees: steady (grace, rate limits) and wall (gap ages).
    Migrator::Clock::time_point now = Migrator::Clock::time_point{} + std::chrono::hours(1);
    int64_t wall = 1'700'000'000'000'000;
    bool exhausted = false;

    Source(std::initializer_list<std::pair<const char *, Val>> cfg)
        : h("migrate", cdcflow::test::declared<Migrator>(), cfg),
          src(cdcflow::test::make_stage<Migrator>(h)) {
        src->set_clocks([this] { return now; }, [this] { return wall; });
    }
    void advance(std::chrono::milliseconds ms) {
        now += ms;
        wall += ms.count() * 1000;
    }
    // One poll into `b` (reset first); returns what was read. Moves the
    // steady clock past the gap probes' rate limit first.
    std::vector<Read> poll(cdcflow_batch &b) {
        now += std::chrono::seconds(1);
        b.reset();
        cdcflow::Batch view = h.view(b);
        exhausted = src->poll(view, 0).exhausted;
        std::vector<Read> out;
        for (uint32_t i = 0; i < b.count; ++i)
            out.push_back(
                {std::string(cdcflow::sv(b.events[i].position.partition)), b.events[i].position.offset});
        return out;
    }
    void seek(const std::vector<std::pair<std::string, int64_t>> &positions) {
        std::vector<cdcflow_position> p;
        for (const auto &[part, off] : positions)
            p.push_back({cdcflow::str(part), off});
        src->seek(p);
    }
};

std::string error_of(std::initializer_list<std::pair<const char *, Val>> cfg,
                     cdcflow_status *status = nullptr) {
    try {
        Source s(cfg);
        s.src->start();
    } catch (const cdcflow::Error &e) {
        if (status) *status = e.status();
        return e.what();
    }
    return "";
}

bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

// The gap set carried by event i's headers (nullopt: none).
std::optional<std::vector<Gap>> header_gaps(const cdcflow_batch &b, uint32_t i) {
    return migrate::gaps_from_header(cdcflow::sv(b.events[i].headers));
}

} // namespace

TEST_CASE("migrator: config and schema errors are one clear line naming the key, table and database") {
    TempDir dir("mg_config");
    const std::string path = dir.file("legacy.db");
    cdcflow_status st = CDCFLOW_OK;

    std::string err = error_of({{"database", path}}, &st);
    CHECK(st == CDCFLOW_ERR_CONFIG);
    CHECK(contains(err, "database: "));
    CHECK(contains(err, path + "' does not exist"));
    CHECK_FALSE(std::filesystem::exists(path)); // nothing created

    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE other(x)");
    }
    err = error_of({{"database", path}}, &st);
    CHECK(st == CDCFLOW_ERR_CONFIG);
    CHECK(contains(err, "table: "));
    CHECK(contains(err, "has no table \"legacy_outbox\""));
    CHECK(contains(err, path));

    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE);
        db.exec("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic, message_key, message_type, body)");
    }
    err = error_of({{"database", path}}, &st);
    CHECK(contains(err, "created_at_column: "));
    CHECK(contains(err, "no column \"created_at\""));
    CHECK(contains(err, path));
    // A renamed column is looked for under its configured name.
    err = error_of({{"database", path}, {"created_at_column", "body"}, {"topic_column", "channel"}});
    CHECK(contains(err, "topic_column: "));
    CHECK(contains(err, "no column \"channel\""));
    CHECK(error_of({{"database", path}, {"created_at_column", "body"}}).empty());

    err = error_of({{"database", path}, {"created_at_column", "body"}, {"namespace", "not-a-uuid"}}, &st);
    CHECK(st == CDCFLOW_ERR_CONFIG);
    CHECK(contains(err, "namespace: \"not-a-uuid\" is not a UUID"));
    err = error_of({{"database", path}, {"created_at_column", "body"}, {"cleanup_older_than", "30 days"}});
    CHECK(contains(err, "cleanup_older_than: \"30 days\" is not a duration such as 30d, 12h or 90m"));
    CHECK(
        error_of({{"database", path}, {"created_at_column", "body"}, {"cleanup_older_than", "30d"}}).empty());

    // Not a database at all: an I/O error (permanent), not a config mistake.
    const std::string junk = dir.file("junk.db");
    {
        std::ofstream f(junk);
        f << std::string(8192, 'x');
    }
    err = error_of({{"database", junk}}, &st);
    CHECK(st == CDCFLOW_ERR_IO);
    CHECK(contains(err, junk));
    CHECK(contains(err, "not a database"));
}

TEST_CASE(
    "migrator: maps rows in id order into events; unmappable rows are rejected with the mapping's reason") {
    TempDir dir("mg_map");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    insert_range(db, 1, 3);
    db.exec("INSERT INTO legacy_outbox VALUES(4, NULL, 'k', 'T', '{}', '2024-05-01', 0)");
    db.exec("INSERT INTO legacy_outbox VALUES(5, 'Account', 'acc-2', 'AccountCreated', 'not json', "
            "'2024-05-01T14:00:00+02:00', 0)"); // mappable: the payload goes as written
    db.exec("INSERT INTO legacy_outbox VALUES(6, 'Account', CAST(X'6b' || X'ff' AS BLOB), 'T', '{}', "
            "'2024-05-01', 0)");
    db.exec("INSERT INTO legacy_outbox VALUES(7, 'Account', 'k', 'T', '{}', 'yesterday', 0)");
    insert(db, 8);

    Source s({{"database", path}});
    s.src->start();
    cdcflow_batch b(100);
    REQUIRE(s.poll(b) == in_order({1, 2, 3, 4, 5, 6, 7, 8}));
    CHECK(s.exhausted);
    const cdcflow_event &e1 = b.events[0];
    CHECK(cdcflow::sv(e1.event_id) == event_id(1));
    CHECK(cdcflow::sv(e1.aggregate_type) == "Account");
    CHECK(cdcflow::sv(e1.aggregate_id) == "acc-1");
    CHECK(cdcflow::sv(e1.event_type) == "MoneyDeposited");
    CHECK(cdcflow::sv(e1.payload) == "{\"amount\":\"1.00\"}");
    CHECK(e1.timestamp_us == 1714564800000000);
    CHECK(e1.status == CDCFLOW_EVENT_OK);
    CHECK(cdcflow::sv(e1.headers).empty()); // no gaps: nothing to tell

    CHECK(b.events[3].status == CDCFLOW_EVENT_REJECTED);
    CHECK(cdcflow::sv(b.events[3].reject_stage) == "migrate");
    CHECK(cdcflow::sv(b.events[3].reject_reason) == "topic is NULL");
    CHECK(cdcflow::sv(b.events[3].event_id) == event_id(4)); // the same id a mapped row would get
    CHECK(cdcflow::sv(b.events[3].aggregate_type).empty());
    CHECK(b.events[3].timestamp_us == 1714521600000000);

    CHECK(b.events[4].status == CDCFLOW_EVENT_OK);
    CHECK(cdcflow::sv(b.events[4].payload) == "not json");
    CHECK(b.events[4].timestamp_us == 1714564800000000);

    CHECK(b.events[5].status == CDCFLOW_EVENT_REJECTED);
    CHECK(cdcflow::sv(b.events[5].reject_reason) == "message_key is not valid UTF-8: \"k\\xff\"");
    CHECK(cdcflow::sv(b.events[5].aggregate_id) == "k\xff"); // bytes as stored

    CHECK(b.events[6].status == CDCFLOW_EVENT_REJECTED);
    CHECK(cdcflow::sv(b.events[6].reject_reason) == "created_at is not an ISO 8601 date: \"yesterday\"");
    CHECK(b.events[6].timestamp_us == 0);
    CHECK(s.h.metric("unmappable") == 3);
    CHECK(s.h.metric("rows_read") == 8);

    // Another namespace, other ids.
    Source other({{"database", path}, {"namespace", "6ba7b811-9dad-11d1-80b4-00c04fd430c8"}});
    other.src->start();
    REQUIRE(other.poll(b).size() == 8);
    CHECK(cdcflow::sv(b.events[0].event_id) == event_id(1, "6ba7b811-9dad-11d1-80b4-00c04fd430c8"));
    CHECK(cdcflow::sv(b.events[0].event_id) != event_id(1));
}

TEST_CASE("migrator: batches are bounded by the batch's room; a checkpoint resumes after it, gaps included") {
    TempDir dir("mg_seek");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    insert_range(db, 1, 10);
    {
        Source s({{"database", path}});
        s.src->start();
        cdcflow_batch b(4);
        CHECK(s.poll(b) == in_order({1, 2, 3, 4}));
        CHECK_FALSE(s.exhausted);
        CHECK(s.h.lag_figure("") == 6); // the host's source lag: max(id) - last read
        CHECK(s.poll(b) == in_order({5, 6, 7, 8}));
        CHECK(s.poll(b) == in_order({9, 10}));
        CHECK(s.exhausted);
        CHECK(s.h.lag_figure("") == 0);
        CHECK(s.poll(b).empty());
        CHECK(s.exhausted);
    }
    // A restart: after 6, with a gap 3..4 still open (rows committed late).
    db.exec("DELETE FROM legacy_outbox WHERE id IN (3, 4)");
    Source s({{"database", path}});
    s.seek({{"", 6}, {migrate::gap_partition(Gap{3, 4, s.wall}), 4}, {"bogus", 1}});
    s.src->start();
    CHECK(s.src->gaps() == std::vector<Gap>{{3, 4, s.wall}});
    cdcflow_batch b(10);
    CHECK(s.poll(b) == in_order({7, 8, 9, 10}));
    insert(db, 4);
    CHECK(s.poll(b) == std::vector<Read>{{"late", 4}});
    CHECK(header_gaps(b, 0) == std::vector<Gap>{{3, 3, s.wall}});
}

TEST_CASE("migrator: historical holes open gaps without holding anything back; a late row fills one") {
    TempDir dir("mg_hist");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    insert_range(db, 1, 10);
    db.exec("DELETE FROM legacy_outbox WHERE id IN (3, 6, 7)");

    Source s({{"database", path}, {"gap_grace_ms", 60000}});
    s.src->start();
    CHECK(s.src->start_max() == 10);
    cdcflow_batch b(100);
    // No wait: the holes are below the highest id at the start.
    CHECK(s.poll(b) == in_order({1, 2, 4, 5, 8, 9, 10}));
    CHECK(s.exhausted);
    CHECK_FALSE(s.src->holding());
    const int64_t opened = s.wall;
    const std::vector<Gap> gaps = {{3, 3, opened}, {6, 7, opened}};
    CHECK(s.src->gaps() == gaps);
    // The last event carries the new set, the others nothing.
    CHECK(header_gaps(b, 6) == gaps);
    CHECK(cdcflow::sv(b.events[0].headers).empty());
    CHECK(s.h.metric("open_gaps") == 2);

    // Nothing committed since: the gaps are not even probed.
    CHECK(s.poll(b).empty());
    // A row lands in a gap: it goes out late, and the set changes.
    insert(db, 7);
    insert(db, 11);
    CHECK(s.poll(b) == std::vector<Read>{{"late", 7}, {"", 11}});
    CHECK(cdcflow::sv(b.events[0].event_id) == event_id(7));
    CHECK(cdcflow::sv(b.events[0].headers).empty());
    CHECK(header_gaps(b, 1) == std::vector<Gap>{{3, 3, opened}, {6, 6, opened}});
    CHECK(s.h.metric("late_rows") == 1);
    CHECK(s.poll(b).empty());
}

TEST_CASE("migrator: in a table empty at the start, a first row above 1 is held back like any live hole") {
    TempDir dir("mg_first");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    Source s({{"database", path}, {"gap_grace_ms", 5000}, {"poll_interval_ms", 1}});
    s.src->start();
    cdcflow_batch b(100);
    CHECK(s.poll(b).empty());
    // Two writers: 2 commits before 1. 2 waits; 1 comes within the grace.
    insert(db, 2);
    CHECK(s.poll(b).empty());
    CHECK(s.src->holding());
    insert(db, 1);
    CHECK(s.poll(b) == in_order({1, 2}));
    CHECK(s.src->gaps().empty());

    // Another empty table: 1 never comes within the grace; 2 goes out and
    // 1 stays watched, migrated late when it comes.
    const std::string other = dir.file("other.db");
    sqlite::Db db2 = make_legacy(other);
    Source t({{"database", other}, {"gap_grace_ms", 5000}, {"poll_interval_ms", 1}});
    t.src->start();
    insert(db2, 2);
    CHECK(t.poll(b).empty());
    t.advance(std::chrono::milliseconds(5001));
    CHECK(t.poll(b) == in_order({2}));
    CHECK(t.src->gaps() == std::vector<Gap>{{1, 1, t.wall}});
    insert(db2, 1);
    CHECK(t.poll(b) == std::vector<Read>{{"late", 1}});
}

TEST_CASE("migrator: a new hole among live rows holds the rows above it back for gap_grace_ms") {
    TempDir dir("mg_hold");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    insert_range(db, 1, 3);
    Source s({{"database", path}, {"gap_grace_ms", 5000}, {"poll_interval_ms", 1}});
    s.src->start();
    cdcflow_batch b(100);
    CHECK(s.poll(b) == in_order({1, 2, 3}));

    // The application commits 5 and 6 before 4: 5 and 6 wait.
    insert(db, 5);
    insert(db, 6);
    CHECK(s.poll(b).empty());
    CHECK(s.src->holding());
    CHECK_FALSE(s.exhausted); // --drain must not end while rows are held back
    CHECK(s.h.metric("held_back") == 2);
    s.advance(std::chrono::milliseconds(2000));
    CHECK(s.poll(b).empty());
    // 4 comes within the grace period: everything goes out in order, no gap.
    insert(db, 4);
    CHECK(s.poll(b) == in_order({4, 5, 6}));
    CHECK(s.src->gaps().empty());
    CHECK_FALSE(s.src->holding());
    CHECK(s.exhausted);
    CHECK(cdcflow::sv(b.events[2].headers).empty());
    CHECK(s.h.metric("held_back") == 0);

    // 8 and 9 before 7, and 7 misses the grace period: a gap opens after it.
    insert(db, 8);
    insert(db, 9);
    CHECK(s.poll(b).empty());
    s.advance(std::chrono::milliseconds(3000));
    CHECK(s.poll(b).empty());
    // Past the grace period, counted from when 8 was first seen.
    s.advance(std::chrono::milliseconds(2001));
    CHECK(s.poll(b) == in_order({8, 9}));
    CHECK(s.src->gaps() == std::vector<Gap>{{7, 7, s.wall}});
    CHECK(header_gaps(b, 1) == std::vector<Gap>{{7, 7, s.wall}});
    insert(db, 7);
    CHECK(s.poll(b) == std::vector<Read>{{"late", 7}});
    CHECK(header_gaps(b, 0) == std::vector<Gap>{});
    CHECK(s.src->gaps().empty());

    // gap_grace_ms 0: never held back.
    Source now_s({{"database", path}, {"gap_grace_ms", 0}});
    now_s.seek({{"", 9}});
    now_s.src->start();
    insert(db, 12);
    CHECK(now_s.poll(b) == in_order({12}));
    CHECK(now_s.src->gaps() == std::vector<Gap>{{10, 11, now_s.wall}});
}

TEST_CASE("migrator: gaps close after gap_watch_ms, and beyond max_open_gaps the oldest first") {
    TempDir dir("mg_close");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path);
    for (int64_t id : {1, 3, 5, 7, 9})
        insert(db, id);
    Source s({{"database", path}, {"gap_watch_ms", 60000}, {"max_open_gaps", 3}});
    // One gap restored from the checkpoint, opened long ago.
    const int64_t old = s.wall - 10'000'000;
    s.seek({{"", 1}, {migrate::gap_partition(Gap{0, 0, old}), 0}});
    s.src->start();
    cdcflow_batch b(100);
    CHECK(s.poll(b) == in_order({3, 5, 7, 9}));
    // Four new gaps and the old one, at most three: the two oldest closed
    // (the restored one, then the lowest new one).
    CHECK(s.src->gaps() == std::vector<Gap>{{4, 4, s.wall}, {6, 6, s.wall}, {8, 8, s.wall}});
    CHECK(header_gaps(b, 3) == s.src->gaps());
    CHECK(s.h.metric("gaps_closed") == 2);
    // A row that fills a closed gap is no longer migrated.
    insert(db, 2);
    CHECK(s.poll(b).empty());

    // After gap_watch_ms (wall clock) the rest close too; the next event tells the sink.
    s.advance(std::chrono::milliseconds(60001));
    CHECK(s.poll(b).empty());
    CHECK(s.src->gaps().empty());
    CHECK(s.h.metric("gaps_closed") == 5);
    CHECK(s.h.metric("open_gaps") == 0);
    insert(db, 10);
    CHECK(s.poll(b) == in_order({10}));
    CHECK(header_gaps(b, 0) == std::vector<Gap>{});
}

TEST_CASE("migrator: a locked database is a retry; a non-integer id stops with the reason") {
    TempDir dir("mg_locked");
    const std::string path = dir.file("legacy.db");
    sqlite::Db db = make_legacy(path, "DELETE");
    insert_range(db, 1, 3);
    Source s({{"database", path}, {"busy_timeout_ms", 0}});
    s.src->start();
    cdcflow_batch b(10);
    {
        sqlite::Db locker(path, SQLITE_OPEN_READWRITE);
        locker.exec("BEGIN EXCLUSIVE");
        try {
            s.poll(b);
            FAIL("read a locked database");
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_RETRY);
        }
        locker.exec("ROLLBACK");
    }
    // Nothing was lost: the retry reads it all.
    CHECK(s.poll(b) == in_order({1, 2, 3}));

    // An id column that is not an INTEGER PRIMARY KEY can hold text, even
    // when it is a key (a unique one; a column that is no key is refused).
    db.exec("CREATE TABLE loose(id INTEGER UNIQUE, topic, message_key, message_type, body, created_at)");
    db.exec("INSERT INTO loose VALUES(1, 'Account', 'k', 'T', '{}', '2024-05-01')");
    db.exec("INSERT INTO loose VALUES('x7', 'Account', 'k', 'T', '{}', '2024-05-01')");
    Source t({{"database", path}, {"table", "loose"}});
    t.src->start();
    try {
        t.poll(b);
        FAIL("a text id was read");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_IO);
        CHECK(contains(e.what(),
                       "column \"id\" holds \"x7\" after legacy id 1: the migrator needs integer ids"));
    }
    // The failed poll is read again in full next time: nothing moved.
    CHECK(t.src->last_id() == INT64_MIN);
}

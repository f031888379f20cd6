// outbox_source against real SQLite files, driven over the host API table.
#include "plugin_harness.hpp"

#include "common/sqlite.hpp"
#include "outbox_source/outbox_source.hpp"

#include <cdcflow/outbox_writer.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

using cdcflow::outbox::OutboxSource;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;
namespace sqlite = cdcflow::sqlite;

namespace {

const char *kSchema = "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
                      "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, "
                      "payload TEXT NOT NULL, timestamp INTEGER NOT NULL);"
                      "CREATE INDEX outbox_id_idx ON outbox (id);";

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

sqlite::Db make_outbox(const std::string &path, const char *journal = "WAL") {
    sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    db.exec(std::string("PRAGMA journal_mode=") + journal);
    db.exec(kSchema);
    return db;
}

void insert_rows(sqlite::Db &db, int n, int64_t ts, const std::string &prefix = "e") {
    sqlite::Transaction tx(db);
    auto st = db.prepare("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                         "VALUES (?1, 'Account', ?2, 'MoneyDeposited', ?3, ?4)");
    for (int i = 0; i < n; ++i) {
        std::string id = prefix + std::to_string(i), agg = "acc-" + std::to_string(i % 7);
        std::string payload = "{\"amount\":\"" + std::to_string(i) + ".00\"}";
        st.bind(1, std::string_view(id))
            .bind(2, std::string_view(agg))
            .bind(3, std::string_view(payload))
            .bind(4, ts);
        st.run();
    }
    tx.commit();
}

int64_t count_rows(sqlite::Db &db) {
    return db.query_int("SELECT count(*) FROM outbox");
}

struct Source {
    StageHarness h;
    std::unique_ptr<OutboxSource> src;
    Source(std::initializer_list<std::pair<const char *, Val>> cfg)
        : h("outbox", cdcflow::test::declared<OutboxSource>(), cfg),
          src(cdcflow::test::make_stage<OutboxSource>(h)) {}
    // One poll into a fresh batch; returns the offsets read.
    std::vector<int64_t> poll(cdcflow_batch &b, uint32_t wait_ms = 0, bool *exhausted = nullptr) {
        b.reset();
        cdcflow::Batch view = h.view(b);
        auto r = src->poll(view, wait_ms);
        if (exhausted) *exhausted = r.exhausted;
        std::vector<int64_t> out;
        for (uint32_t i = 0; i < b.count; ++i)
            out.push_back(b.events[i].position.offset);
        return out;
    }
    void committed(int64_t offset) {
        cdcflow_position p{{"", 0}, offset};
        src->committed(std::span<const cdcflow_position>(&p, 1));
    }
};

std::string error_of(std::initializer_list<std::pair<const char *, Val>> cfg) {
    try {
        Source s(cfg);
        s.src->start();
    } catch (const cdcflow::Error &e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("outbox_source: a missing database, table or column is a clear error at create") {
    TempDir dir("os_missing");
    std::string path = dir.file("app.db");

    std::string err = error_of({{"database", path}});
    CHECK(err.find("does not exist") != std::string::npos);
    CHECK(err.find(path) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(path)); // create() created nothing

    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE other (x)");
    }
    err = error_of({{"database", path}});
    CHECK(err.find("no table \"outbox\"") != std::string::npos);
    CHECK(err.find(path) != std::string::npos);

    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE);
        db.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, aggregatetype TEXT, "
                "aggregateid TEXT, type TEXT, timestamp INTEGER)");
    }
    err = error_of({{"database", path}});
    CHECK(err.find("no column \"payload\"") != std::string::npos);
    CHECK(err.find("payload_column") != std::string::npos);
    CHECK(err.find(path) != std::string::npos);

    // A renamed column is found through its config key.
    err = error_of({{"database", path}, {"payload_column", "body"}});
    CHECK(err.find("no column \"body\"") != std::string::npos);
}

TEST_CASE("outbox_source: create_schema creates the table in start(), not in create()") {
    TempDir dir("os_schema");
    std::string path = dir.file("new.db");
    Source s({{"database", path}, {"create_schema", true}, {"table", "my \"outbox\""}});
    CHECK_FALSE(std::filesystem::exists(path));
    s.src->start();
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(db.has_table("my \"outbox\""));
    CHECK(db.query_int(
              "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'my \"outbox\"'") == 1);
    sqlite::Stmt jm(db, "PRAGMA journal_mode");
    REQUIRE(jm.step());
    CHECK(jm.text(0) == "wal");
}

TEST_CASE("outbox_source: a table made by the producer is read; columns match whatever their case") {
    TempDir dir("os_shared");
    std::string path = dir.file("app.db");
    {
        // The producer creates the table through the same schema module.
        cdcflow::OutboxWriterOptions o;
        o.create_schema = true;
        std::unique_ptr<cdcflow::OutboxWriter> w;
        REQUIRE(cdcflow::OutboxWriter::open(path, o, &w).ok());
        cdcflow::OutboxEvent e;
        e.id = "e1";
        e.aggregate_type = "Account";
        e.aggregate_id = "acc-1";
        e.type = "AccountCreated";
        e.payload = R"({"owner":"Ada","currency":"EUR"})";
        e.timestamp_us = 1'700'000'000'000'000;
        REQUIRE(w->append(e).status.ok());
        REQUIRE(w->flush().ok());
    }
    {
        // The source's create_schema finds it there and adds no second index.
        Source s({{"database", path}, {"create_schema", true}});
        s.src->start();
        cdcflow_batch b(10);
        REQUIRE(s.poll(b) == std::vector<int64_t>{1});
        CHECK(cdcflow::sv(b.events[0].event_id) == "e1");
        s.src->stop();
    }
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(db.query_int("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'") ==
          1);

    // Columns written in another case are the same columns to SQLite.
    std::string upper = dir.file("upper.db");
    sqlite::Db u(upper, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    u.exec("CREATE TABLE Outbox (SEQ INTEGER PRIMARY KEY AUTOINCREMENT, ID TEXT, AggregateType TEXT, "
           "AggregateId TEXT, TYPE TEXT, Payload TEXT, TimeStamp INTEGER, Ver INTEGER)");
    u.exec("INSERT INTO Outbox (ID, AggregateType, AggregateId, TYPE, Payload, TimeStamp, Ver) "
           "VALUES ('x1', 'Account', 'acc-2', 'AccountClosed', '{}', 5, 3)");
    Source s({{"database", upper}, {"version_column", "VER"}});
    s.src->start();
    cdcflow_batch b(10);
    REQUIRE(s.poll(b) == std::vector<int64_t>{1});
    CHECK(cdcflow::sv(b.events[0].event_id) == "x1");
    CHECK(b.events[0].aggregate_version == 3);
}

TEST_CASE("outbox_source: reads batches in seq order and is exhausted at the end") {
    TempDir dir("os_order");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 2500, 1234);
    // Holes in seq (deleted rows) are skipped, never waited for.
    db.exec("DELETE FROM outbox WHERE seq IN (10, 11, 999)");

    Source s({{"database", path}});
    s.src->start();
    cdcflow_batch b(1000);
    bool exhausted = true;
    auto first = s.poll(b, 0, &exhausted);
    REQUIRE(first.size() == 1000);
    CHECK_FALSE(exhausted);
    CHECK(first.front() == 1);
    CHECK(first[9] == 12);
    for (size_t i = 1; i < first.size(); ++i)
        CHECK(first[i] > first[i - 1]);
    const cdcflow_event &e = b.events[0];
    CHECK(cdcflow::sv(e.event_id) == "e0");
    CHECK(cdcflow::sv(e.aggregate_type) == "Account");
    CHECK(cdcflow::sv(e.aggregate_id) == "acc-0");
    CHECK(cdcflow::sv(e.event_type) == "MoneyDeposited");
    CHECK(cdcflow::sv(e.payload) == "{\"amount\":\"0.00\"}");
    CHECK(e.timestamp_us == 1234);
    CHECK(e.aggregate_version == -1);
    CHECK(e.headers.len == 0);
    CHECK(e.position.partition.len == 0);

    auto second = s.poll(b);
    REQUIRE(second.size() == 1000);
    CHECK(second.front() == first.back() + 1);
    auto third = s.poll(b);
    CHECK(third.size() == 497);
    CHECK(third.back() == 2500);
    auto none = s.poll(b, 0, &exhausted);
    CHECK(none.empty());
    CHECK(exhausted);
    CHECK(s.h.metric("rows_read") == 2497);
    CHECK(s.h.metric("lag") == 2500); // nothing committed yet
    s.committed(2000);
    CHECK(s.h.metric("lag") == 500);
}

TEST_CASE("outbox_source: NULL columns read as empty strings and 0") {
    TempDir dir("os_null");
    std::string path = dir.file("app.db");
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, aggregatetype TEXT, "
                "aggregateid TEXT, type TEXT, payload TEXT, timestamp INTEGER);"
                "INSERT INTO outbox (id) VALUES (NULL);");
    }
    Source s({{"database", path}});
    s.src->start();
    cdcflow_batch b(10);
    REQUIRE(s.poll(b).size() == 1);
    CHECK(b.events[0].event_id.len == 0);
    CHECK(b.events[0].payload.len == 0);
    CHECK(b.events[0].timestamp_us == 0);
}

TEST_CASE("outbox_source: version_column carries aggregate versions; a bad one is rejected, not guessed") {
    TempDir dir("os_version");
    std::string path = dir.file("app.db");
    {
        sqlite::Db db = make_outbox(path);
        insert_rows(db, 6, now_us());
        db.exec("ALTER TABLE outbox ADD COLUMN aggregate_version");
        db.exec("UPDATE outbox SET aggregate_version = CASE seq WHEN 1 THEN 7 WHEN 2 THEN 0 WHEN 3 THEN NULL "
                "WHEN 4 THEN 'three' WHEN 5 THEN -1 ELSE 2.5 END");
    }
    // Without the key the column is ignored: no event carries a version.
    {
        Source s({{"database", path}});
        s.src->start();
        cdcflow_batch b(10);
        REQUIRE(s.poll(b).size() == 6);
        for (uint32_t i = 0; i < b.count; ++i)
            CHECK(b.events[i].aggregate_version == -1);
    }
    Source s({{"database", path}, {"version_column", "aggregate_version"}});
    s.src->start();
    cdcflow_batch b(10);
    REQUIRE(s.poll(b).size() == 6);
    CHECK(b.events[0].aggregate_version == 7);
    CHECK(b.events[1].aggregate_version == 0);
    CHECK(b.events[2].aggregate_version == -1); // NULL: none
    for (int i = 0; i < 3; ++i)
        CHECK(b.events[i].status == CDCFLOW_EVENT_OK);
    for (int i = 3; i < 6; ++i) {
        CHECK(b.events[i].status == CDCFLOW_EVENT_REJECTED);
        CHECK(cdcflow::sv(b.events[i].reject_reason) ==
              "column 'aggregate_version' is not an integer >= 0 or NULL");
        CHECK(cdcflow::sv(b.events[i].reject_stage) == "outbox");
    }

    // A configured column that does not exist is an error at create, naming the key.
    std::string err = error_of({{"database", path}, {"version_column", "ver"}});
    CHECK(err.find("version_column") != std::string::npos);
    CHECK(err.find("has no column \"ver\"") != std::string::npos);

    // create_schema makes the column when one is configured.
    std::string fresh = dir.file("fresh.db");
    Source c({{"database", fresh}, {"create_schema", true}, {"version_column", "v"}});
    c.src->start();
    sqlite::Db db(fresh, SQLITE_OPEN_READONLY);
    CHECK(db.columns("outbox").back() == "v");
}

TEST_CASE("outbox_source: resumes just after the position it is sought to") {
    TempDir dir("os_seek");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 300, 1);
    Source s({{"database", path}});
    cdcflow_position cp{{"", 0}, 200};
    s.src->seek(std::span<const cdcflow_position>(&cp, 1)); // before start, as the host does
    s.src->start();
    cdcflow_batch b(1000);
    auto got = s.poll(b);
    REQUIRE(got.size() == 100);
    CHECK(got.front() == 201);
    CHECK(cdcflow::sv(b.events[0].event_id) == "e200");
    CHECK(s.src->committed_seq() == 200); // the sink's checkpoint is committed
}

TEST_CASE("outbox_source: a waiting poll wakes up for new rows and parks otherwise") {
    TempDir dir("os_wait");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    Source s({{"database", path}, {"poll_interval_ms", 5}});
    s.src->start();
    cdcflow_batch b(100);

    auto t0 = std::chrono::steady_clock::now();
    bool exhausted = false;
    CHECK(s.poll(b, 60, &exhausted).empty());
    auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= std::chrono::milliseconds(60));
    CHECK(waited < std::chrono::milliseconds(1000));
    CHECK(exhausted);

    std::thread writer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        sqlite::Db w(path, SQLITE_OPEN_READWRITE);
        insert_rows(w, 3, 1);
    });
    t0 = std::chrono::steady_clock::now();
    auto got = s.poll(b, 5000);
    waited = std::chrono::steady_clock::now() - t0;
    writer.join();
    CHECK(got.size() == 3);
    CHECK(waited < std::chrono::milliseconds(2000));

    // A stop request ends the wait early.
    s.h.request_stop();
    t0 = std::chrono::steady_clock::now();
    CHECK(s.poll(b, 5000).empty());
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));
}

TEST_CASE("outbox_source: retention deletes rows committed for retention_seconds while a writer keeps "
          "inserting") {
    TempDir dir("os_retention");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 1000, now_us() - 30LL * 24 * 3600 * 1000000, "old"); // seq 1..1000
    insert_rows(db, 200, INT64_MAX, "future");                           // seq 1001..1200

    Source s({{"database", path}, {"retention_seconds", 60}, {"cleanup_batch", 100}});
    // Retention's clock, driven by the test: no waiting for a minute.
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    s.src->set_clock([&] { return now; });
    const auto t0 = now;
    s.src->start();

    std::atomic<bool> done{false};
    std::atomic<int> inserted{0};
    std::thread writer([&] {
        sqlite::Db w(path, SQLITE_OPEN_READWRITE);
        while (!done.load()) {
            insert_rows(w, 10, now_us(), "late" + std::to_string(inserted.load()) + "-");
            inserted += 10;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });

    cdcflow_batch b(256);
    // Read everything up to seq 1200, commit up to 700 only.
    while (s.src->last_seq() < 1200)
        s.poll(b);
    s.committed(700);
    auto polls = [&](int n) {
        for (int i = 0; i < n; ++i)
            s.poll(b);
    };
    polls(5);
    CHECK(s.h.metric("cleanup_deleted") == 0); // committed just now
    now = t0 + std::chrono::seconds(59);
    polls(5);
    CHECK(s.h.metric("cleanup_deleted") == 0); // committed 59 s ago
    s.committed(1200);
    now = t0 + std::chrono::seconds(60);
    // Each poll deletes at most cleanup_batch rows; a full batch goes again.
    polls(20);
    CHECK(s.h.metric("cleanup_deleted") == 700);
    CHECK(db.query_int("SELECT min(seq) FROM outbox") == 701);
    now = t0 + std::chrono::seconds(118);
    polls(5);
    CHECK(db.query_int("SELECT count(*) FROM outbox WHERE seq <= 1200") == 500); // committed 59 s ago
    // Rows stamped at the end of time go like any other.
    now = t0 + std::chrono::seconds(119);
    polls(5);
    done = true;
    writer.join();
    CHECK(db.query_int("SELECT count(*) FROM outbox WHERE seq <= 1200") == 0);
    CHECK(count_rows(db) == inserted.load()); // nothing the writer wrote, never committed, was lost
    CHECK(s.h.metric("cleanup_deleted") == 1200);
}

TEST_CASE("outbox_source: retention records how far it deleted in cdcflow_outbox_retired, in the same "
          "transaction") {
    TempDir dir("os_retired");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 250, now_us()); // seq 1..250
    CHECK_FALSE(db.has_table("cdcflow_outbox_retired"));

    Source s({{"database", path}, {"retention_seconds", 60}, {"cleanup_batch", 100}});
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    s.src->set_clock([&] { return now; });
    s.src->start();
    cdcflow_batch b(512);
    while (s.src->last_seq() < 250)
        s.poll(b);
    s.committed(230);
    now += std::chrono::seconds(61);
    auto retired = [&] {
        return db.query_int("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = 'outbox'", -1);
    };
    // One batch of 100 per poll: the record follows each DELETE, never ahead of it.
    s.poll(b);
    CHECK(db.query_int("SELECT min(seq) FROM outbox") == 101);
    CHECK(retired() == 100);
    s.poll(b);
    CHECK(retired() == 200);
    s.poll(b);
    CHECK(retired() == 230); // the highest seq deleted, not the batch size
    CHECK(db.query_int("SELECT min(seq) FROM outbox") == 231);
    CHECK(db.query_int("SELECT count(*) FROM cdcflow_outbox_retired") == 1);
    CHECK(db.query_int("SELECT updated_at FROM cdcflow_outbox_retired") > 0);
    // Nothing newly due: no write, the record stays.
    s.poll(b);
    CHECK(retired() == 230);

    // An existing record is never lowered (another outbox's row untouched).
    db.exec("UPDATE cdcflow_outbox_retired SET up_to_seq = 10000; "
            "INSERT INTO cdcflow_outbox_retired VALUES ('other', 5, 0)");
    s.committed(250);
    now += std::chrono::seconds(61);
    s.poll(b);
    CHECK(db.query_int("SELECT count(*) FROM outbox WHERE seq <= 250") == 0);
    CHECK(retired() == 10000);
    CHECK(db.query_int("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = 'other'") == 5);
}

TEST_CASE("outbox_source: a first retention transaction that rolls back takes the retired table with it, "
          "and the next one makes it again") {
    TempDir dir("os_retired_rollback");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 50, now_us());
    // The application's own rule refuses the first DELETE.
    db.exec("CREATE TRIGGER no_delete BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'not now'); END");
    Source s({{"database", path}, {"retention_seconds", 60}, {"cleanup_batch", 100}});
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    s.src->set_clock([&] { return now; });
    s.src->start();
    cdcflow_batch b(512);
    while (s.src->last_seq() < 50)
        s.poll(b);
    s.committed(50);
    now += std::chrono::seconds(61);
    s.poll(b);
    CHECK(db.query_int("SELECT count(*) FROM outbox") == 50);
    CHECK_FALSE(db.has_table("cdcflow_outbox_retired"));
    db.exec("DROP TRIGGER no_delete");
    now += std::chrono::seconds(2); // past the back-off
    s.poll(b);
    CHECK(db.query_int("SELECT count(*) FROM outbox") == 0);
    CHECK(db.query_int("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = 'outbox'", -1) == 50);
}

TEST_CASE("outbox_source: after a restart the checkpoint counts as committed at seek") {
    TempDir dir("os_retention_seek");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 300, 1); // stamped in 1970
    Source s({{"database", path}, {"retention_seconds", 3600}});
    std::chrono::steady_clock::time_point now{std::chrono::hours(10)};
    s.src->set_clock([&] { return now; });
    const auto restart = now;
    cdcflow_position cp{{"", 0}, 200};
    s.src->seek(std::span<const cdcflow_position>(&cp, 1)); // before start, as the host does
    s.src->start();
    cdcflow_batch b(1000);
    CHECK(s.poll(b).size() == 100);
    // How long ago the checkpoint was committed is unknown: a full retention
    // from the restart, never less.
    now = restart + std::chrono::seconds(3599);
    s.poll(b);
    CHECK(count_rows(db) == 300);
    now = restart + std::chrono::seconds(3600);
    s.poll(b);
    CHECK(count_rows(db) == 100);
    CHECK(db.query_int("SELECT min(seq) FROM outbox") == 201);
}

TEST_CASE("CommitTimeline: a week of commits stays bounded and never makes a position due early") {
    using cdcflow::outbox::CommitTimeline;
    using std::chrono::milliseconds;
    const auto retention = std::chrono::seconds(7 * 24 * 3600);
    const auto granule = retention / 1000;
    CommitTimeline t(granule);
    const CommitTimeline::Clock::time_point t0{std::chrono::hours(1)};
    const auto step = milliseconds(250); // a committed batch every 250 ms, for 8 days
    const int64_t n = 8 * 24 * 3600 * 4;
    size_t most = 0;
    int64_t checked = 0;
    CHECK(t.due(t0, retention) == INT64_MIN);
    for (int64_t i = 1; i <= n; ++i) {
        const auto now = t0 + i * step; // seq i becomes committed at t0 + i * step
        t.committed(i, now);
        t.committed(i - 1, now); // an older position again changes nothing
        most = std::max(most, t.marks());
        if (i % 997 != 0) continue;
        // Positions committed at least `retention` ago: 1..(i - retention/step);
        // none (INT64_MIN from due()) counts as 0.
        const int64_t exact = std::max<int64_t>(0, i - retention / step);
        const int64_t due = std::max<int64_t>(0, t.due(now, retention));
        REQUIRE(due <= exact);                      // never early
        REQUIRE(due >= exact - granule / step - 1); // at most one granule late
        ++checked;
    }
    CHECK(checked > 100);
    // About retention / granule: the ring never had to merge into its newest mark.
    CHECK(most < CommitTimeline::kMaxMarks);
    MESSAGE("CommitTimeline: " << n << " commits over 8 days, at most " << most << " marks");
}

TEST_CASE("CommitTimeline: a full ring merges into the newest mark, later, never earlier") {
    using cdcflow::outbox::CommitTimeline;
    CommitTimeline t(std::chrono::nanoseconds(1)); // every commit would open a mark
    const CommitTimeline::Clock::time_point t0{};
    for (int64_t i = 1; i <= 5000; ++i)
        t.committed(i, t0 + std::chrono::seconds(i));
    CHECK(t.marks() == CommitTimeline::kMaxMarks);
    // Positions up to 1023 kept their own times; 1024..5000 share the last.
    CHECK(t.due(t0 + std::chrono::seconds(1023 + 10), std::chrono::seconds(10)) == 1023);
    CHECK(t.due(t0 + std::chrono::seconds(4999 + 10), std::chrono::seconds(10)) == 1023);
    CHECK(t.due(t0 + std::chrono::seconds(5000 + 10), std::chrono::seconds(10)) == 5000);
    CHECK(t.marks() == 0);
}

TEST_CASE("outbox_source: retention counts from the commit, never from the rows' timestamps") {
    TempDir dir("os_retention_stamps");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    const int64_t day = 24 * 3600 * int64_t{1000000};
    insert_rows(db, 100, now_us() - 30 * day, "backlog"); // a backlog after an outage
    for (int64_t hostile :
         {int64_t{9'000'000'000'000'000'000}, now_us() + 400 * day, int64_t{0}, int64_t{-5}})
        insert_rows(db, 1, hostile, "hostile" + std::to_string(hostile) + "-");

    Source s({{"database", path}, {"retention_seconds", 1}});
    s.src->start();
    cdcflow_batch b(1000);
    REQUIRE(s.poll(b).size() == 104);
    s.committed(104);
    // Committed just now: nothing is due, however old the stamps.
    for (int i = 0; i < 3; ++i)
        s.poll(b);
    CHECK(count_rows(db) == 104);
    // Committed for the retention: every row goes, the far-future ones too.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    s.poll(b);
    CHECK(count_rows(db) == 0);
    CHECK(s.h.metric("cleanup_deleted") == 104);
}

TEST_CASE("outbox_source: a locked database is ERR_RETRY, not a crash, and reading resumes afterwards") {
    TempDir dir("os_locked");
    std::string path = dir.file("app.db");
    // Rollback journal: an EXCLUSIVE lock keeps readers out (WAL would not).
    sqlite::Db db = make_outbox(path, "DELETE");
    insert_rows(db, 5, 1);
    Source s({{"database", path}, {"busy_timeout_ms", 20}});
    s.src->start();

    sqlite::Db locker(path, SQLITE_OPEN_READWRITE);
    locker.exec("BEGIN EXCLUSIVE");
    locker.exec("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                "VALUES ('x', 'Account', 'a', 't', '{}', 1)");
    cdcflow_batch b(10);
    cdcflow_status st = CDCFLOW_OK;
    try {
        s.poll(b);
    } catch (const cdcflow::Error &e) {
        st = e.status();
    }
    CHECK(st == CDCFLOW_ERR_RETRY);
    locker.exec("COMMIT");
    auto got = s.poll(b);
    CHECK(got.size() == 6);
    CHECK(got.front() == 1);

    // Also through the C ABI thunk: a status, never an exception.
    locker.exec("BEGIN EXCLUSIVE");
    const cdcflow_plugin *desc = cdcflow::detail::descriptor<OutboxSource>();
    char err[256] = {0};
    int32_t exhausted = 0;
    cdcflow::detail::Holder<OutboxSource> holder{cdcflow::host::host_api(), s.h.ctx(), std::move(s.src)};
    b.reset();
    CHECK(desc->callbacks->poll(&holder, &b, 0, &exhausted, err, sizeof err) == CDCFLOW_ERR_RETRY);
    CHECK(std::string(err).find("locked") != std::string::npos);
    locker.exec("ROLLBACK");
}

TEST_CASE("outbox_source: a busy database during cleanup is logged and retried later, not fatal") {
    TempDir dir("os_cleanup_busy");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 50, 1);
    Source s({{"database", path}, {"retention_seconds", 1}});
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    s.src->set_clock([&] { return now; });
    s.src->start();
    cdcflow_batch b(100);
    CHECK(s.poll(b).size() == 50);
    s.committed(50);
    now += std::chrono::seconds(1); // due
    sqlite::Db locker(path, SQLITE_OPEN_READWRITE);
    locker.exec("BEGIN IMMEDIATE"); // holds the write lock: cleanup cannot run
    CHECK_NOTHROW(s.poll(b));
    CHECK(s.h.metric("cleanup_deleted") == 0);
    locker.exec("ROLLBACK");
    CHECK_NOTHROW(s.poll(b)); // backing off: not yet
    CHECK(count_rows(db) == 50);
    now += std::chrono::seconds(1);
    CHECK_NOTHROW(s.poll(b));
    CHECK(s.h.metric("cleanup_deleted") == 50);
}

TEST_CASE("outbox_source: a read that fails half-way is read again in full by the next poll") {
    TempDir dir("os_halfway");
    std::string path = dir.file("app.db");
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("PRAGMA journal_mode=WAL");
        db.exec(
            "CREATE TABLE real_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT, timestamp INTEGER);"
            "CREATE TABLE fail (on_seq INTEGER);"
            "INSERT INTO fail VALUES (3);"
            // A view as the outbox: row 3 raises an error while it is read.
            "CREATE VIEW outbox AS SELECT seq, id, aggregatetype, aggregateid, type, "
            "CASE WHEN seq = (SELECT on_seq FROM fail) THEN json('not json') ELSE payload END AS payload, "
            "timestamp FROM real_outbox;");
        for (int i = 1; i <= 5; ++i)
            db.exec("INSERT INTO real_outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                    "VALUES ('e" +
                    std::to_string(i) + "', 'Account', 'a', 't', '{}', 1)");
    }
    Source s({{"database", path}});
    s.src->start();
    cdcflow_batch b(10);
    CHECK_THROWS_AS(s.poll(b), cdcflow::Error);
    CHECK(s.src->last_seq() == INT64_MIN); // rows 1 and 2 were appended, then dropped with the batch
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE);
        db.exec("DELETE FROM fail");
    }
    auto got = s.poll(b);
    CHECK(got == std::vector<int64_t>{1, 2, 3, 4, 5});
}

// ---------------------------------------------------------------------------
// Replay (ABI 3): the rows up to the checkpoint, for stateful transforms.

namespace {

// One replay as the host drives it: calls until done, each into a fresh
// batch of `batch_size`; returns the offsets per call.
std::vector<std::vector<int64_t>> replay_all(Source &s, cdcflow_replay &req, uint32_t batch_size) {
    std::vector<std::vector<int64_t>> calls;
    cdcflow_batch b(batch_size);
    for (bool done = false; !done;) {
        b.reset();
        cdcflow::Batch view = s.h.view(b);
        done = s.src->replay(req, view);
        std::vector<int64_t> got;
        for (uint32_t i = 0; i < b.count; ++i) {
            got.push_back(b.events[i].position.offset);
            CHECK(b.events[i].status == CDCFLOW_EVENT_OK); // nothing is marked
        }
        calls.push_back(got);
        REQUIRE(calls.size() < 10000);
    }
    return calls;
}

std::vector<int64_t> flatten(const std::vector<std::vector<int64_t>> &calls) {
    std::vector<int64_t> out;
    for (const auto &c : calls)
        out.insert(out.end(), c.begin(), c.end());
    return out;
}

std::vector<int64_t> range(int64_t from, int64_t to) {
    std::vector<int64_t> out;
    for (int64_t i = from; i <= to; ++i)
        out.push_back(i);
    return out;
}

cdcflow_replay replay_request(const cdcflow_position *cp, uint32_t n, uint64_t max_events) {
    cdcflow_replay req{};
    req.struct_size = sizeof req;
    req.position_count = n;
    req.positions = cp;
    req.max_events = max_events;
    return req;
}

} // namespace

TEST_CASE("outbox_source: replay hands out the newest max_events rows up to the checkpoint, oldest first, "
          "a batch per call") {
    TempDir dir("os_replay");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 1000, now_us());
    Source s({{"database", path}});
    cdcflow_position cp{{"", 0}, 800};
    // Before start, as the host calls it.
    cdcflow_replay req = replay_request(&cp, 1, 300);
    auto calls = replay_all(s, req, 64);
    CHECK(flatten(calls) == range(501, 800)); // the checkpoint is included, nothing after it
    CHECK(calls.size() == 5);                 // 4 full batches, then 44 rows
    CHECK(calls.front().size() == 64);
    CHECK(req.truncated == 0);
    CHECK(s.h.metric("replayed") == 300);

    // The events are the rows, as poll would read them.
    cdcflow_batch b(4);
    cdcflow_replay one = replay_request(&cp, 1, 1);
    cdcflow::Batch view = s.h.view(b);
    CHECK(s.src->replay(one, view));
    REQUIRE(b.count == 1);
    CHECK(cdcflow::sv(b.events[0].event_id) == "e799");
    CHECK(cdcflow::sv(b.events[0].payload) == "{\"amount\":\"799.00\"}");

    // A second replay starts afresh; more than there is: all of it.
    cdcflow_replay all = replay_request(&cp, 1, 5000);
    CHECK(flatten(replay_all(s, all, 256)) == range(1, 800));
    CHECK(all.truncated == 0); // nothing was deleted: the stream is just that short

    // Gaps in seq (rows deleted in the middle): still the newest 300 rows.
    db.exec("DELETE FROM outbox WHERE seq BETWEEN 500 AND 599");
    cdcflow_replay gaps = replay_request(&cp, 1, 300);
    std::vector<int64_t> want = range(401, 499), tail = range(600, 800);
    want.insert(want.end(), tail.begin(), tail.end());
    CHECK(flatten(replay_all(s, gaps, 64)) == want);
    CHECK(gaps.truncated == 0);

    // Then the source seeks and polls as before.
    s.src->seek(std::span<const cdcflow_position>(&cp, 1));
    s.src->start();
    cdcflow_batch p(1000);
    CHECK(s.poll(p) == range(801, 1000));
}

TEST_CASE(
    "outbox_source: replay with no checkpoint, another partition, or no database yet hands out nothing") {
    TempDir dir("os_replay_none");
    std::string path = dir.file("app.db");
    Source fresh({{"database", path}, {"create_schema", true}});
    cdcflow_position cp{{"", 0}, 10};
    cdcflow_replay req = replay_request(&cp, 1, 100);
    CHECK(flatten(replay_all(fresh, req, 64)).empty()); // the database does not exist yet
    CHECK_FALSE(std::filesystem::exists(path));         // and replay did not create it

    sqlite::Db db = make_outbox(path);
    insert_rows(db, 50, now_us());
    Source s({{"database", path}});
    cdcflow_replay first_start = replay_request(nullptr, 0, 100);
    CHECK(flatten(replay_all(s, first_start, 64)).empty());
    std::string kafka = "orders/0";
    cdcflow_position other{cdcflow::str(kafka), 10};
    cdcflow_replay foreign = replay_request(&other, 1, 100);
    CHECK(flatten(replay_all(s, foreign, 64)).empty());
}

TEST_CASE("outbox_source: rows deleted by retention: replay what exists and say it is short") {
    TempDir dir("os_replay_retention");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 1000, now_us());
    db.exec("DELETE FROM outbox WHERE seq <= 900"); // an older retention, or someone else
    Source s({{"database", path}, {"retention_seconds", 60}});
    cdcflow_position cp{{"", 0}, 950};
    cdcflow_replay req = replay_request(&cp, 1, 200);
    CHECK(flatten(replay_all(s, req, 16)) == range(901, 950));
    CHECK(req.truncated == 1);
    CHECK(std::string(req.truncated_by) == "retention_seconds");
    // Enough rows left for what is asked: not short.
    cdcflow_replay enough = replay_request(&cp, 1, 50);
    CHECK(flatten(replay_all(s, enough, 16)) == range(901, 950));
    CHECK(enough.truncated == 0);
    // Everything up to the checkpoint gone.
    db.exec("DELETE FROM outbox WHERE seq <= 950");
    cdcflow_replay gone = replay_request(&cp, 1, 10);
    CHECK(flatten(replay_all(s, gone, 16)).empty());
    CHECK(gone.truncated == 1);
}

TEST_CASE("outbox_source: retention keeps the rows the pipeline's stateful transforms replay at the next "
          "start") {
    TempDir dir("os_replay_keep");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 1000, 1);
    Source s({{"database", path}, {"retention_seconds", 60}, {"cleanup_batch", 10000}});
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    s.src->set_clock([&] { return now; });
    // A first start: the host tells the source how much history the
    // pipeline keeps (a deduper's window of 300).
    cdcflow_replay req = replay_request(nullptr, 0, 300);
    CHECK(flatten(replay_all(s, req, 64)).empty());
    s.src->start();
    cdcflow_batch b(2000);
    CHECK(s.poll(b).size() == 1000);
    s.committed(1000);
    now += std::chrono::seconds(61);
    s.poll(b);
    // Committed for longer than the retention, but the newest 300 stay.
    CHECK(s.h.metric("cleanup_deleted") == 700);
    CHECK(db.query_int("SELECT min(seq) FROM outbox") == 701);
    s.src->stop();

    // The next start replays every one of them.
    Source next({{"database", path}, {"retention_seconds", 60}});
    cdcflow_position cp{{"", 0}, 1000};
    cdcflow_replay again = replay_request(&cp, 1, 300);
    CHECK(flatten(replay_all(next, again, 64)) == range(701, 1000));
    CHECK(again.truncated == 0);
}

TEST_CASE("outbox_source: the source lag (host family, partition \"\") is the rows not yet read") {
    TempDir dir("os_unread");
    std::string path = dir.file("app.db");
    sqlite::Db db = make_outbox(path);
    insert_rows(db, 2500, 1234);
    Source s({{"database", path}});
    s.src->start();
    cdcflow_batch b(1000);
    // A full batch: the newest seq is looked up (once a second at most).
    REQUIRE(s.poll(b).size() == 1000);
    CHECK(s.h.lag_figure("") == 1500);
    REQUIRE(s.poll(b).size() == 1000);
    CHECK(s.h.lag_figure("") == 500); // the newest seq known, minus the last read
    REQUIRE(s.poll(b).size() == 500);
    CHECK(s.h.lag_figure("") == 0); // a short read: caught up, nothing unread
    // Committing does not change what is unread (the `lag` gauge counts
    // from the commit instead).
    s.committed(2500);
    CHECK(s.h.lag_figure("") == 0);
    CHECK(s.h.metric("lag") == 0);
    insert_rows(db, 10, 1234, "f");
    REQUIRE(s.poll(b).size() == 10);
    CHECK(s.h.lag_figure("") == 0);
}

// The outbox writer (core/outbox): the public API against real SQLite files,
// and its internal pieces (dedupe window, circuit breaker, UUIDs) directly.
#include <cdcflow/outbox_writer.hpp>

#include "circuit_breaker.hpp"
#include "id_cache.hpp"
#include "uuid.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>
#include <sqlite3.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

using cdcflow::AppendResult;
using cdcflow::BreakerState;
using cdcflow::OutboxEvent;
using cdcflow::OutboxStatus;
using cdcflow::OutboxWriter;
using cdcflow::OutboxWriterOptions;
using Code = OutboxStatus::Code;

namespace {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "cdcflow_outbox_XXXXXX").string();
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string file(const char *name) const { return (path / name).string(); }
};

// An application's connection.
struct Conn {
    sqlite3 *db = nullptr;
    explicit Conn(const std::string &path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
        REQUIRE(sqlite3_open_v2(path.c_str(), &db, flags, nullptr) == SQLITE_OK);
        sqlite3_extended_result_codes(db, 1);
    }
    ~Conn() { sqlite3_close_v2(db); }
    Conn(const Conn &) = delete;
    Conn &operator=(const Conn &) = delete;

    int exec_rc(const std::string &sql) { return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr); }
    void exec(const std::string &sql) {
        INFO(sql);
        REQUIRE(exec_rc(sql) == SQLITE_OK);
    }
    int64_t count(const std::string &sql) {
        sqlite3_stmt *st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_finalize(st);
        return n;
    }
    std::vector<std::string> column(const std::string &sql) {
        std::vector<std::string> out;
        sqlite3_stmt *st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW)
            out.emplace_back(reinterpret_cast<const char *>(sqlite3_column_text(st, 0)));
        sqlite3_finalize(st);
        return out;
    }
};

struct FakeClock {
    int64_t ms = 1'000'000;
};

OutboxWriterOptions options(FakeClock *clock = nullptr) {
    OutboxWriterOptions o;
    o.create_schema = true;
    if (clock) o.monotonic_ms = [clock] { return clock->ms; };
    return o;
}

std::unique_ptr<OutboxWriter> open_on(sqlite3 *db, OutboxWriterOptions o) {
    std::unique_ptr<OutboxWriter> w;
    OutboxStatus st = OutboxWriter::open(db, std::move(o), &w);
    INFO(st.message());
    REQUIRE(st.ok());
    return w;
}

OutboxEvent deposit(std::string_view id, std::string_view account = "acc-1",
                    std::string_view payload = R"({"amount": "12.34"})") {
    OutboxEvent e;
    e.id = id;
    e.aggregate_type = "Account";
    e.aggregate_id = account;
    e.type = "MoneyDeposited";
    e.payload = payload;
    return e;
}

// The application's side of a transaction: BEGIN, a business row for the
// event's account (table accounts), then the event.
AppendResult begin_and_append(Conn &app, OutboxWriter &w, const OutboxEvent &e) {
    app.exec("BEGIN");
    app.exec("INSERT INTO accounts VALUES ('" + std::string(e.aggregate_id) + "', '12.34')");
    return w.append_in_transaction(e);
}

// What on_refused reported: (event tag, reason), in call order.
using Refusals = std::vector<std::pair<uint64_t, std::string>>;

std::unique_ptr<OutboxWriter> open_logging_refusals(sqlite3 *db, OutboxWriterOptions o, Refusals *log) {
    o.on_refused = [log](const OutboxEvent &e, std::string_view why) { log->emplace_back(e.tag, why); };
    return open_on(db, std::move(o));
}

// Buffers events "a", "b" (for account `b_account`) and "c", tagged 1 to 3,
// and writes them with one flush().
void write_abc(OutboxWriter &w, std::string_view b_account) {
    OutboxEvent a = deposit("a"), b = deposit("b", b_account), c = deposit("c");
    a.tag = 1, b.tag = 2, c.tag = 3;
    for (const OutboxEvent &e : {a, b, c})
        REQUIRE(w.append(e).status.ok());
    OutboxStatus st = w.flush();
    INFO(st.message());
    REQUIRE(st.ok());
}

// write_abc() into a table that refuses b's account: a and c are written,
// and on_refused (logging into `refused`) reported b once. Returns its reason.
std::string write_abc_refusing_b(Conn &app, OutboxWriter &w, const Refusals &refused,
                                 std::string_view b_account) {
    write_abc(w, b_account);
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"a", "c"});
    REQUIRE(refused.size() == 1);
    CHECK(refused[0].first == 2);
    CHECK(w.metrics().written == 2);
    CHECK(w.metrics().refused == 1);
    return refused[0].second;
}

// 8-4-4-4-12 lowercase hex, version nibble 4, variant 10xx. (Not std::regex:
// GCC 12 warns inside <regex> under the sanitizers.)
bool is_uuid4(std::string_view s) {
    if (s.size() != 36) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        bool hex = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
        if (dash ? s[i] != '-' : !hex) return false;
    }
    return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

const char *kAccountsRules = R"({"aggregate_types": ["Account"], "events": {
    "AccountCreated": {"owner": {"type": "string", "min_length": 1},
                       "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "MoneyDeposited": {"amount": {"type": "decimal", "max_decimals": 2, "min_exclusive": "0"}},
    "AccountClosed": {}}})";

} // namespace

TEST_CASE("outbox writer: an event appended in a rolled-back transaction is not written, and its retry is") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec("CREATE TABLE accounts(id TEXT PRIMARY KEY, balance TEXT)");
    auto w = open_on(app.db, options());

    AppendResult r = begin_and_append(app, *w, deposit("ev-1"));
    REQUIRE(r.status.ok());
    CHECK_FALSE(r.duplicate);
    CHECK(r.event_id() == "ev-1");
    app.exec("ROLLBACK");
    CHECK(app.count("SELECT count(*) FROM outbox") == 0);
    CHECK(app.count("SELECT count(*) FROM accounts") == 0);

    // The application retries at once, in a new transaction: the id must not
    // be taken for a duplicate of the rolled-back copy.
    r = begin_and_append(app, *w, deposit("ev-1"));
    REQUIRE(r.status.ok());
    CHECK_FALSE(r.duplicate);
    app.exec("COMMIT");
    CHECK(app.count("SELECT count(*) FROM outbox WHERE id = 'ev-1'") == 1);
    CHECK(app.count("SELECT count(*) FROM accounts") == 1);

    // Once committed, the same id again is a duplicate: nothing is written.
    app.exec("BEGIN");
    r = w->append_in_transaction(deposit("ev-1"));
    CHECK(r.status.ok());
    CHECK(r.duplicate);
    app.exec("COMMIT");
    CHECK(app.count("SELECT count(*) FROM outbox") == 1);
    CHECK(w->metrics().duplicates == 1);
}

TEST_CASE("outbox writer: events commit together with the application's business rows") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec("CREATE TABLE accounts(id TEXT PRIMARY KEY, balance TEXT)");
    auto w = open_on(app.db, options());

    app.exec("BEGIN IMMEDIATE");
    for (int i = 0; i < 3; ++i) {
        std::string acc = "acc-" + std::to_string(i);
        app.exec("INSERT INTO accounts VALUES ('" + acc + "', '0.00')");
        OutboxEvent e = deposit("", acc);
        e.timestamp_us = 1000 + i;
        REQUIRE(w->append_in_transaction(e).status.ok());
    }
    // Inside the transaction the rows are visible to the application only.
    Conn other(dir.file("app.db"));
    CHECK(other.count("SELECT count(*) FROM outbox") == 0);
    app.exec("COMMIT");
    CHECK(other.count("SELECT count(*) FROM outbox") == 3);
    CHECK(other.count("SELECT count(*) FROM accounts") == 3);
    CHECK(other.column("SELECT aggregateid FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"acc-0", "acc-1", "acc-2"});
    CHECK(other.column("SELECT timestamp FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"1000", "1001", "1002"});
    CHECK(other.column("SELECT DISTINCT payload FROM outbox") ==
          std::vector<std::string>{R"({"amount": "12.34"})"});
}

TEST_CASE("outbox writer: ROLLBACK TO a savepoint forgets the id") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    app.exec("BEGIN");
    app.exec("SAVEPOINT s");
    REQUIRE(w->append_in_transaction(deposit("ev-1")).status.ok());
    app.exec("ROLLBACK TO s");
    app.exec("RELEASE s");
    AppendResult r = w->append_in_transaction(deposit("ev-1"));
    REQUIRE(r.status.ok());
    CHECK_FALSE(r.duplicate);
    // And within the same transaction a second copy is a duplicate.
    CHECK(w->append_in_transaction(deposit("ev-1")).duplicate);
    app.exec("COMMIT");
    CHECK(app.count("SELECT count(*) FROM outbox WHERE id = 'ev-1'") == 1);
}

TEST_CASE("outbox writer: append_in_transaction needs an open transaction") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    AppendResult r = w->append_in_transaction(deposit("ev-1"));
    CHECK(r.status.code() == Code::kInvalidArgument);
    CHECK(r.status.message().find("no transaction") != std::string::npos);
    CHECK(app.count("SELECT count(*) FROM outbox") == 0);
}

TEST_CASE("outbox writer: append batches batch_size events per transaction, flush writes the rest") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    OutboxWriterOptions o = options();
    o.batch_size = 3;
    auto w = open_on(app.db, o);

    std::vector<std::string> ids;
    for (int i = 0; i < 7; ++i)
        ids.push_back("ev-" + std::to_string(i));
    for (int i = 0; i < 7; ++i) {
        AppendResult r = w->append(deposit(ids[i]));
        REQUIRE(r.status.ok());
        REQUIRE(r.flush_status.ok());
        // Written exactly when a batch fills up.
        CHECK(app.count("SELECT count(*) FROM outbox") == (i + 1) / 3 * 3);
    }
    CHECK(w->metrics().batches == 2);
    CHECK(w->metrics().buffered == 1);
    CHECK(w->metrics().written == 6);

    // flush() refuses while the application has a transaction open on the
    // connection (it would commit the application's work), and keeps the event.
    app.exec("BEGIN");
    CHECK(w->flush().code() == Code::kInvalidArgument);
    app.exec("COMMIT");
    CHECK(w->metrics().buffered == 1);

    REQUIRE(w->flush().ok());
    CHECK(w->flush().ok()); // nothing buffered: nothing to do
    CHECK(w->metrics().batches == 3);
    CHECK(w->metrics().written == 7);
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == ids);

    // A repeated id is dropped whether it is still buffered or already written.
    CHECK(w->append(deposit("ev-0")).duplicate);
    REQUIRE(w->append(deposit("ev-new")).status.ok());
    CHECK(w->append(deposit("ev-new")).duplicate);

    // The destructor writes what is still buffered.
    w.reset();
    CHECK(app.count("SELECT count(*) FROM outbox") == 8);
}

TEST_CASE("outbox writer: discard drops the buffered events and forgets their ids") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    REQUIRE(w->append(deposit("a")).status.ok());
    REQUIRE(w->append(deposit("b")).status.ok());
    CHECK(w->discard() == 2);
    CHECK(w->metrics().buffered == 0);
    CHECK_FALSE(w->append(deposit("a")).duplicate);
    w.reset(); // writes "a" only
    CHECK(app.column("SELECT id FROM outbox") == std::vector<std::string>{"a"});
}

TEST_CASE("outbox writer: generated ids are RFC 4122 version 4 UUIDs") {
    CHECK(is_uuid4("3f2a9c1e-8b7d-4e6f-9a0b-0123456789ab"));
    CHECK_FALSE(is_uuid4("3f2a9c1e-8b7d-3e6f-9a0b-0123456789ab")); // version 3
    CHECK_FALSE(is_uuid4("3f2a9c1e-8b7d-4e6f-7a0b-0123456789ab")); // variant 0xxx
    cdcflow::outbox::UuidGenerator gen;
    std::set<std::string> seen;
    char buf[cdcflow::outbox::UuidGenerator::kTextSize];
    for (int i = 0; i < 20000; ++i) {
        gen.next(buf);
        std::string id(buf, sizeof buf);
        REQUIRE(is_uuid4(id));
        seen.insert(id);
    }
    CHECK(seen.size() == 20000);
    // Two generators (two writers) do not repeat each other.
    cdcflow::outbox::UuidGenerator other;
    other.next(buf);
    CHECK(seen.count(std::string(buf, sizeof buf)) == 0);

    // Through the writer: an event without id gets one, returned and stored.
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    AppendResult r = w->append(deposit(""));
    REQUIRE(r.status.ok());
    std::string id(r.event_id());
    CHECK(is_uuid4(id));
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT id FROM outbox") == std::vector<std::string>{id});
}

TEST_CASE("outbox writer: a missing timestamp is the current wall-clock time in microseconds") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    OutboxWriterOptions o = options();
    o.wall_us = [] { return int64_t{1'700'000'000'123'456}; };
    auto w = open_on(app.db, o);
    REQUIRE(w->append(deposit("a")).status.ok());
    OutboxEvent given = deposit("b");
    given.timestamp_us = 42;
    REQUIRE(w->append(given).status.ok());
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT timestamp FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"1700000000123456", "42"});

    // The default clock: the real time, in microseconds.
    Conn app2(dir.file("app2.db"));
    auto w2 = open_on(app2.db, options());
    int64_t before = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    REQUIRE(w2->append(deposit("a")).status.ok());
    REQUIRE(w2->flush().ok());
    int64_t after = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    int64_t ts = app2.count("SELECT timestamp FROM outbox");
    CHECK(ts >= before);
    CHECK(ts <= after);
}

TEST_CASE("outbox writer: a given timestamp must lie from 1970 to one day ahead of the wall clock") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    const int64_t now = 1'700'000'000'123'456; // 2023-11-14T22:13:20.123456Z
    const int64_t day = 86'400'000'000;
    OutboxWriterOptions o = options();
    o.wall_us = [now] { return now; };
    auto w = open_on(app.db, o);
    auto with_ts = [](std::string_view id, int64_t ts) {
        OutboxEvent e = deposit(id);
        e.timestamp_us = ts;
        return e;
    };
    // Both ends are included; 0 is 1970-01-01T00:00:00Z, not "now".
    for (auto [id, ts] : {std::pair{"zero", int64_t{0}}, {"last", now + day}, {"one", int64_t{1}}}) {
        AppendResult r = w->append(with_ts(id, ts));
        INFO(id, " ", r.status.message());
        CHECK(r.status.ok());
    }
    const std::string range =
        " is outside the allowed range 1970-01-01T00:00:00Z to 2023-11-15T22:13:20.123456Z (now + 1 day)";
    auto refused = [&](int64_t ts) {
        AppendResult r = w->append(with_ts("x", ts));
        CHECK(r.status.code() == Code::kRefused);
        return r.status.message();
    };
    CHECK(refused(-1) == "timestamp -1 (1969-12-31T23:59:59.999999Z)" + range);
    CHECK(refused(now + day + 1) == "timestamp 1700086400123457 (2023-11-15T22:13:20.123457Z)" + range);
    CHECK(refused(INT64_MAX) == "timestamp 9223372036854775807 (294247-01-10T04:00:54.775807Z)" + range);
    CHECK(refused(INT64_MIN) == "timestamp -9223372036854775808 (-290308-12-21T19:59:05.224192Z)" + range);
    CHECK(w->metrics().refused == 4);
    // The same check inside the application's transaction.
    app.exec("BEGIN");
    CHECK(w->append_in_transaction(with_ts("y", -5)).status.code() == Code::kRefused);
    REQUIRE(w->append_in_transaction(with_ts("z", now)).status.ok());
    app.exec("COMMIT");
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT id || ' ' || timestamp FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"z 1700000000123456", "zero 0", "last 1700086400123456", "one 1"});
}

TEST_CASE("outbox writer: the timestamp range is configurable; a generated timestamp is always in it") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    const int64_t now = 1'700'000'000'000'000; // 2023-11-14T22:13:20Z
    OutboxWriterOptions o = options();
    o.wall_us = [now] { return now; };
    o.min_timestamp_us = now + 10; // later than the wall clock
    o.max_timestamp_ahead_ms = 90'000;
    auto w = open_on(app.db, o);
    OutboxEvent e = deposit("early");
    e.timestamp_us = now + 9;
    AppendResult r = w->append(e);
    CHECK(r.status.code() == Code::kRefused);
    CHECK(r.status.message() ==
          "timestamp 1700000000000009 (2023-11-14T22:13:20.000009Z) is outside the allowed "
          "range 2023-11-14T22:13:20.000010Z to 2023-11-14T22:14:50Z (now + 90 s)");
    e.timestamp_us = now + 90'000'001;
    CHECK(w->append(e).status.code() == Code::kRefused);
    e.timestamp_us = now + 10;
    CHECK(w->append(e).status.ok());
    CHECK(w->append(deposit("generated")).status.ok()); // now, below the minimum: still taken
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT timestamp FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"1700000000000010", "1700000000000000"});

    // Before 1970 when the application says so; a range ending at the wall clock.
    Conn app2(dir.file("app2.db"));
    OutboxWriterOptions old = options();
    old.wall_us = [now] { return now; };
    old.min_timestamp_us = -1'000'000;
    old.max_timestamp_ahead_ms = 0;
    auto w2 = open_on(app2.db, old);
    OutboxEvent past = deposit("past");
    past.timestamp_us = -1'000'000;
    CHECK(w2->append(past).status.ok());
    past.timestamp_us = now + 1;
    CHECK(w2->append(past).status.message().find("to 2023-11-14T22:13:20Z (now)") != std::string::npos);
    // A huge allowance saturates instead of overflowing.
    OutboxWriterOptions far = options();
    far.max_timestamp_ahead_ms = INT64_MAX;
    auto w3 = open_on(app2.db, far);
    past.id = "far";
    past.timestamp_us = INT64_MAX;
    CHECK(w3->append(past).status.ok());

    std::unique_ptr<OutboxWriter> bad;
    OutboxWriterOptions negative = options();
    negative.max_timestamp_ahead_ms = -1;
    OutboxStatus st = OutboxWriter::open(app.db, negative, &bad);
    CHECK(st.code() == Code::kInvalidArgument);
    CHECK(st.message() == "max_timestamp_ahead_ms must not be negative");
}

TEST_CASE("outbox writer: the dedupe window forgets ids after the TTL and beyond its capacity") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    FakeClock clock;
    OutboxWriterOptions o = options(&clock);
    o.dedupe_ttl_ms = 1000;
    o.dedupe_capacity = 3;
    auto w = open_on(app.db, o);

    REQUIRE(w->append(deposit("a")).status.ok());
    clock.ms += 999;
    CHECK(w->append(deposit("a")).duplicate); // within the TTL
    clock.ms += 1;
    AppendResult r = w->append(deposit("a")); // 1000 ms after it was written: forgotten
    CHECK(r.status.ok());
    CHECK_FALSE(r.duplicate);

    // Capacity 3: the fourth id pushes out the oldest.
    for (const char *id : {"b", "c", "d"})
        REQUIRE_FALSE(w->append(deposit(id)).duplicate);
    CHECK(w->metrics().cached_ids == 3);
    CHECK_FALSE(w->append(deposit("a")).duplicate);
    CHECK(w->append(deposit("d")).duplicate);
    REQUIRE(w->flush().ok());
    CHECK(app.count("SELECT count(*) FROM outbox WHERE id = 'a'") == 3);
    CHECK(w->metrics().duplicates == 2);
}

TEST_CASE("outbox writer: with the window disabled, a UNIQUE index on the id column still dedupes") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
        "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, "
        "timestamp INTEGER NOT NULL)");
    OutboxWriterOptions o = options();
    o.dedupe_capacity = 0;
    auto w = open_on(app.db, o);
    REQUIRE(w->append(deposit("a")).status.ok());
    REQUIRE(w->flush().ok());
    REQUIRE(w->append(deposit("a")).status.ok()); // not in a window: accepted...
    REQUIRE(w->flush().ok());                     // ...and the database says duplicate
    CHECK(app.count("SELECT count(*) FROM outbox") == 1);
    CHECK(w->metrics().duplicates == 1);
    CHECK(w->metrics().written == 1);
}

TEST_CASE("outbox writer: a CHECK constraint refuses one buffered event; the rest of the batch commits") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
             "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL CHECK (length(aggregateid) < 6), "
             "type TEXT NOT NULL, payload TEXT NOT NULL, timestamp INTEGER NOT NULL)");
    Refusals refused;
    auto w = open_logging_refusals(app.db, options(), &refused);
    CHECK(write_abc_refusing_b(app, *w, refused, "acc-too-long").find("CHECK constraint failed") !=
          std::string::npos);
    // The refused id was never written, so it is not a duplicate.
    AppendResult r = w->append(deposit("b"));
    CHECK_FALSE(r.duplicate);
    REQUIRE(w->flush().ok());
    CHECK(app.count("SELECT count(*) FROM outbox") == 3);
}

// ---- constraints that end the transaction ------------------------------------
//
// A RAISE(ROLLBACK) trigger or an ON CONFLICT ROLLBACK constraint rolls back
// the whole transaction, not just the failed INSERT. Whatever the table does,
// every accepted event must end up in the outbox exactly once.

namespace {

const char *kOutboxDdl = "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
                         "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, "
                         "payload TEXT NOT NULL, timestamp INTEGER NOT NULL)";
// Rolls back the transaction of any event for the account 'bad'.
const char *kRollbackTrigger = "CREATE TRIGGER no_bad BEFORE INSERT ON outbox WHEN NEW.aggregateid = 'bad' "
                               "BEGIN SELECT RAISE(ROLLBACK, 'no bad accounts'); END";
const char *kUniqueRollbackDdl = "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                                 "id TEXT NOT NULL UNIQUE ON CONFLICT ROLLBACK, aggregatetype TEXT NOT NULL, "
                                 "aggregateid TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, "
                                 "timestamp INTEGER NOT NULL)";

} // namespace

TEST_CASE("outbox writer: a RAISE(ROLLBACK) trigger refuses its rows; the rest of the batch commits once") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    app.exec(kRollbackTrigger);
    Refusals refused;
    OutboxWriterOptions o = options();
    o.batch_size = 100;
    auto w = open_logging_refusals(app.db, o, &refused);
    const char *accounts[] = {"acc-1", "bad", "acc-3", "acc-4", "bad", "acc-6"};
    std::vector<std::string> ids;
    for (int i = 0; i < 6; ++i)
        ids.push_back("ev-" + std::to_string(i + 1));
    for (int i = 0; i < 6; ++i) {
        OutboxEvent e = deposit(ids[i], accounts[i]);
        e.tag = static_cast<uint64_t>(i + 1);
        REQUIRE(w->append(e).status.ok());
    }
    OutboxStatus st = w->flush();
    INFO(st.message());
    REQUIRE(st.ok());
    CHECK(w->flush().ok()); // nothing left buffered
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"ev-1", "ev-3", "ev-4", "ev-6"});
    CHECK(app.count("SELECT count(*) FROM outbox") == 4);
    REQUIRE(refused.size() == 2);
    CHECK(refused[0].first == 2);
    CHECK(refused[1].first == 5);
    CHECK(refused[0].second.find("no bad accounts") != std::string::npos);
    CHECK(w->metrics().written == 4);
    CHECK(w->metrics().refused == 2);
    CHECK(w->metrics().batches == 1);
    CHECK(w->metrics().buffered == 0);
    // A refused id is not remembered: fixed, it is written.
    REQUIRE_FALSE(w->append(deposit("ev-2")).duplicate);
    REQUIRE(w->flush().ok());
    CHECK(app.count("SELECT count(*) FROM outbox WHERE id = 'ev-2'") == 1);
    CHECK(app.count("SELECT count(*) FROM outbox") == 5);
}

TEST_CASE("outbox writer: a batch full of RAISE(ROLLBACK) rows writes each good row once") {
    // Every other row ends the transaction: the writer starts over each time.
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    app.exec(kRollbackTrigger);
    OutboxWriterOptions o = options();
    o.batch_size = 20;
    auto w = open_on(app.db, o);
    for (int i = 0; i < 20; ++i) {
        AppendResult r = w->append(deposit("ev-" + std::to_string(i), i % 2 ? "bad" : "acc-1"));
        REQUIRE(r.status.ok());
        INFO(r.flush_status.message());
        REQUIRE(r.flush_status.ok()); // the 20th append writes the batch
    }
    CHECK(app.count("SELECT count(*) FROM outbox") == 10);
    CHECK(app.count("SELECT count(DISTINCT id) FROM outbox") == 10);
    CHECK(app.count("SELECT count(*) FROM outbox WHERE aggregateid = 'bad'") == 0);
    CHECK(w->metrics().written == 10);
    CHECK(w->metrics().refused == 10);
}

TEST_CASE("outbox writer: an id column UNIQUE ON CONFLICT ROLLBACK dedupes a batch without rolling it back") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kUniqueRollbackDdl);
    OutboxWriterOptions o = options();
    o.dedupe_capacity = 0; // the database alone dedupes
    auto w = open_on(app.db, o);
    REQUIRE(w->append(deposit("a")).status.ok());
    REQUIRE(w->flush().ok());
    for (const char *id : {"b", "a", "c", "b", "d"})
        REQUIRE(w->append(deposit(id)).status.ok());
    OutboxStatus st = w->flush();
    INFO(st.message());
    REQUIRE(st.ok());
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"a", "b", "c", "d"});
    CHECK(w->metrics().written == 4);
    CHECK(w->metrics().duplicates == 2);
    CHECK(w->metrics().buffered == 0);
}

TEST_CASE("outbox writer: append_in_transaction reports a transaction that a RAISE(ROLLBACK) trigger ended") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    app.exec(kRollbackTrigger);
    app.exec("CREATE TABLE accounts(id TEXT PRIMARY KEY, balance TEXT)");
    auto w = open_on(app.db, options());

    AppendResult r = begin_and_append(app, *w, deposit("ev-1"));
    REQUIRE(r.status.ok());
    CHECK_FALSE(r.rolled_back);
    r = w->append_in_transaction(deposit("ev-2", "bad"));
    CHECK(r.status.code() == Code::kRefused);
    CHECK(r.rolled_back);
    CHECK(r.status.message().find("no bad accounts") != std::string::npos);
    CHECK(r.status.message().find("rolled back the whole transaction") != std::string::npos);
    CHECK(sqlite3_get_autocommit(app.db) != 0); // nothing is open any more
    CHECK(w->metrics().refused == 1);
    // Whatever the application does next cannot commit half of its work:
    // the writer refuses to append outside a transaction.
    CHECK(w->append_in_transaction(deposit("ev-3")).status.code() == Code::kInvalidArgument);
    CHECK(app.count("SELECT count(*) FROM outbox") == 0);
    CHECK(app.count("SELECT count(*) FROM accounts") == 0);

    // The application redoes its transaction without the bad event: ev-1 is
    // not taken for a duplicate of its rolled-back copy.
    r = begin_and_append(app, *w, deposit("ev-1"));
    REQUIRE(r.status.ok());
    CHECK_FALSE(r.duplicate);
    REQUIRE(w->append_in_transaction(deposit("ev-3")).status.ok());
    app.exec("COMMIT");
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"ev-1", "ev-3"});
    CHECK(app.count("SELECT count(*) FROM accounts") == 1);
}

TEST_CASE("outbox writer: append_in_transaction: ON CONFLICT ROLLBACK on the id keeps the transaction") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kUniqueRollbackDdl);
    app.exec("CREATE TABLE accounts(id TEXT PRIMARY KEY, balance TEXT)");
    OutboxWriterOptions o = options();
    o.dedupe_capacity = 0; // the database alone dedupes
    auto w = open_on(app.db, o);
    app.exec("BEGIN");
    REQUIRE(w->append_in_transaction(deposit("a")).status.ok());
    app.exec("COMMIT");

    // A retry of "a" next to new business rows and a new event.
    AppendResult r = begin_and_append(app, *w, deposit("a"));
    REQUIRE(r.status.ok());
    CHECK(r.duplicate);
    CHECK_FALSE(r.rolled_back);
    REQUIRE(sqlite3_get_autocommit(app.db) == 0); // the application's transaction is still open
    r = w->append_in_transaction(deposit("b"));
    INFO(r.status.message());
    REQUIRE(r.status.ok());
    app.exec("COMMIT");
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"a", "b"});
    CHECK(app.count("SELECT count(*) FROM accounts") == 1);
    CHECK(w->metrics().duplicates == 1);
}

TEST_CASE("outbox writer: a row a RAISE(IGNORE) trigger skips is refused, not counted as written") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    app.exec("CREATE TRIGGER skip BEFORE INSERT ON outbox WHEN NEW.aggregateid = 'skip' "
             "BEGIN SELECT RAISE(IGNORE); END");
    Refusals refused;
    auto w = open_logging_refusals(app.db, options(), &refused);
    CHECK(write_abc_refusing_b(app, *w, refused, "skip") == "a trigger ignored the row (RAISE(IGNORE))");

    // In the application's transaction: refused, and the transaction goes on.
    app.exec("BEGIN");
    AppendResult r = w->append_in_transaction(deposit("d", "skip"));
    CHECK(r.status.code() == Code::kRefused);
    CHECK_FALSE(r.rolled_back);
    CHECK(r.status.message().find("RAISE(IGNORE)") != std::string::npos);
    REQUIRE(w->append_in_transaction(deposit("e")).status.ok());
    app.exec("COMMIT");
    // Neither refused id is remembered: fixed, they are written.
    app.exec("BEGIN");
    REQUIRE_FALSE(w->append_in_transaction(deposit("d")).duplicate);
    app.exec("COMMIT");
    REQUIRE_FALSE(w->append(deposit("b")).duplicate);
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") ==
          std::vector<std::string>{"a", "c", "e", "d", "b"});
    CHECK(w->metrics().written == 5);
}

TEST_CASE("outbox writer: a UNIQUE constraint on other columns refuses the event; it is no duplicate") {
    // Only a UNIQUE id column makes a violation a duplicate: here the event
    // id is new, and dropping the event as a "duplicate" would lose it.
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    app.exec("CREATE UNIQUE INDEX one_per_type ON outbox (aggregateid, type)");
    Refusals refused;
    auto w = open_logging_refusals(app.db, options(), &refused);
    write_abc(*w, "acc-2"); // "a" and "c" are both for acc-1
    CHECK(app.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"a", "b"});
    REQUIRE(refused.size() == 1);
    CHECK(refused[0].first == 3);
    CHECK(refused[0].second == "UNIQUE constraint failed: outbox.aggregateid, outbox.type");
    CHECK(w->metrics().duplicates == 0);
    CHECK(w->metrics().refused == 1);

    app.exec("BEGIN");
    AppendResult r = w->append_in_transaction(deposit("d", "acc-2"));
    CHECK(r.status.code() == Code::kRefused);
    CHECK_FALSE(r.duplicate);
    CHECK(r.status.message().find("UNIQUE constraint failed") != std::string::npos);
    app.exec("COMMIT");
    CHECK(w->metrics().duplicates == 0);
    CHECK(w->metrics().refused == 2);
}

TEST_CASE("outbox writer: events are checked with the validator stage's rules") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    std::string error;
    OutboxWriterOptions o = options();
    o.rules = cdcflow::rules::RuleSet::parse(kAccountsRules, &error);
    REQUIRE(o.rules);
    auto w = open_on(app.db, o);

    AppendResult r = w->append(deposit("a", "acc-1", R"({"amount": "-5"})"));
    CHECK(r.status.code() == Code::kRefused);
    CHECK(r.status.message().find("MoneyDeposited.amount: \"-5\"") == 0);
    r = w->append(deposit("b", "acc-1", R"({"amount": "1.234"})"));
    CHECK(r.status.message() == "MoneyDeposited.amount: \"1.234\" has more than 2 decimals");
    OutboxEvent unknown = deposit("c");
    unknown.type = "Teleported";
    CHECK(w->append(unknown).status.message() == "unknown event type 'Teleported'");
    OutboxEvent other_aggregate = deposit("d");
    other_aggregate.aggregate_type = "Customer";
    CHECK(w->append(other_aggregate).status.code() == Code::kRefused);
    REQUIRE(w->append(deposit("e")).status.ok());
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT id FROM outbox") == std::vector<std::string>{"e"});
    CHECK(w->metrics().refused == 4);
    // A refused event's id is not remembered: fixed, it is written.
    REQUIRE_FALSE(w->append(deposit("a")).duplicate);
}

TEST_CASE("outbox writer: without rules the envelope is still checked") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    auto why = [&](OutboxEvent e) {
        AppendResult r = w->append(e);
        CHECK(r.status.code() == Code::kRefused);
        return r.status.message();
    };
    OutboxEvent e = deposit("x");
    e.aggregate_type = "";
    CHECK(why(e) == "aggregate type is empty");
    e = deposit("x", "");
    CHECK(why(e) == "aggregate id is empty");
    e = deposit("x");
    e.type = "";
    CHECK(why(e) == "event type is empty");
    CHECK(why(deposit("x", "a", "[1, 2]")) == "payload is not a JSON object (got array)");
    CHECK(why(deposit("x", "a", "")) == "payload is empty (expected a JSON object)");
    CHECK(why(deposit("x", "a", "{\"a\": tru}")).find("payload is not valid JSON") == 0);
    CHECK(why(deposit("x", "a", "{\"a\": 1} {")).find("payload is not valid JSON") == 0);
    CHECK(why(deposit("x", "a", "{\"a\": \"\xff\"}")) ==
          R"(payload is not valid UTF-8: "{\"a\": \"\xff\"}")");
    CHECK(w->append(deposit("x", "a", "{\"any\": [1, {\"thing\": null}]}")).status.ok());
    CHECK(w->metrics().refused == 8);
}

// ---- UTF-8 -------------------------------------------------------------------

namespace {

bool one_line_of_utf8(std::string_view s) {
    return simdjson::validate_utf8(s.data(), s.size()) && s.find('\n') == std::string_view::npos &&
           s.find('\r') == std::string_view::npos;
}

} // namespace

TEST_CASE("outbox writer: text that is not valid UTF-8 is refused, naming the field, bytes escaped") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    auto w = open_on(app.db, options());
    auto why = [&](const OutboxEvent &e) {
        AppendResult r = w->append(e);
        CHECK(r.status.code() == Code::kRefused);
        CHECK(one_line_of_utf8(r.status.message()));
        return r.status.message();
    };
    CHECK(why(deposit("ev-\xff")) == R"(event id is not valid UTF-8: "ev-\xff")");
    CHECK(why(deposit("x", "acc-\xc3")) == R"(aggregate id is not valid UTF-8: "acc-\xc3")");
    OutboxEvent e = deposit("x");
    e.aggregate_type = "Acc\x80unt";
    CHECK(why(e) == R"(aggregate type is not valid UTF-8: "Acc\x80unt")");
    e = deposit("x");
    e.type = "Money\xc0\xaf"
             "Deposited"; // an overlong '/'
    CHECK(why(e) == R"(event type is not valid UTF-8: "Money\xc0\xafDeposited")");
    CHECK(why(deposit("x", "a", "{\"a\": \"\xed\xa0\x80\"}")) == // a UTF-16 surrogate, UTF-8 encoded
          R"(payload is not valid UTF-8: "{\"a\": \"\xed\xa0\x80\"}")");
    CHECK(why(deposit("x", "a", "{\"a\": \"\xf4\x90\x80\x80\"}")).find("payload is not valid UTF-8: ") == 0);
    // A long value is cut in the reason, never in the middle of an escape.
    std::string long_payload = "{\"a\": \"" + std::string(100, 'x') + "\xff\"}";
    std::string reason = why(deposit("x", "a", long_payload));
    CHECK(reason.find("payload is not valid UTF-8: \"{\\\"a\\\": \\\"xxx") == 0);
    CHECK(reason.size() < 120);
    // The same inside the application's transaction, and with rules.
    app.exec("BEGIN");
    AppendResult r = w->append_in_transaction(deposit("x", "acc-\xff"));
    CHECK(r.status.code() == Code::kRefused);
    app.exec("COMMIT");
    CHECK(app.count("SELECT count(*) FROM outbox") == 0);

    // Valid UTF-8 beyond ASCII is text like any other.
    REQUIRE(
        w->append(deposit("ev-\xc3\xa9", "konto-\xc3\xbc", "{\"owner\": \"Bj\xc3\xb6rk \xf0\x9f\x98\x80\"}"))
            .status.ok());
    REQUIRE(w->flush().ok());
    CHECK(app.column("SELECT aggregateid FROM outbox") == std::vector<std::string>{"konto-\xc3\xbc"});
    CHECK(w->metrics().refused == 8);
    CHECK(w->metrics().written == 1);

    std::string error;
    OutboxWriterOptions o = options();
    o.rules = cdcflow::rules::RuleSet::parse(kAccountsRules, &error);
    REQUIRE(o.rules);
    auto wr = open_on(app.db, o);
    r = wr->append(deposit("x", "acc-\xff"));
    CHECK(r.status.message() == R"(aggregate id is not valid UTF-8: "acc-\xff")");
}

TEST_CASE("outbox writer: messages from the database are one line of valid UTF-8") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    app.exec(kOutboxDdl);
    // An application's trigger whose message holds a stray byte and a line break.
    app.exec("CREATE TRIGGER odd BEFORE INSERT ON outbox WHEN NEW.aggregateid = 'odd' "
             "BEGIN SELECT RAISE(ABORT, 'odd \xff\naccount'); END");
    Refusals refused;
    auto w = open_logging_refusals(app.db, options(), &refused);
    CHECK(write_abc_refusing_b(app, *w, refused, "odd") == R"("odd \xff\x0aaccount")");
    app.exec("BEGIN");
    AppendResult r = w->append_in_transaction(deposit("b", "odd"));
    app.exec("ROLLBACK");
    CHECK(r.status.code() == Code::kRefused);
    CHECK(r.status.message() == R"(refused by the database: "odd \xff\x0aaccount")");

    // A path that is not UTF-8 (a Linux file name is any bytes).
    std::string odd_path = dir.file("caf\xe9\nx.db");
    std::unique_ptr<OutboxWriter> w2;
    OutboxStatus st = OutboxWriter::open(odd_path, OutboxWriterOptions(), &w2);
    CHECK(st.code() == Code::kDbError);
    CHECK(one_line_of_utf8(st.message()));
    CHECK(st.message().find("caf\\xe9\\x0ax.db") != std::string::npos);
    REQUIRE(OutboxWriter::open(odd_path, options(), &w2).ok());
    REQUIRE(sqlite3_exec(w2->connection(), "PRAGMA query_only = 1", nullptr, nullptr, nullptr) == SQLITE_OK);
    REQUIRE(w2->append(deposit("c")).status.ok());
    st = w2->flush();
    CHECK(st.code() == Code::kDbError);
    CHECK(one_line_of_utf8(st.message()));
    CHECK(st.message().find("caf\\xe9\\x0ax.db") != std::string::npos);
    w2->discard();
}

TEST_CASE("outbox writer: open checks the table; create_schema creates it; names are quoted") {
    TempDir dir;
    Conn app(dir.file("app.db"));
    std::unique_ptr<OutboxWriter> w;
    OutboxWriterOptions o;
    OutboxStatus st = OutboxWriter::open(app.db, o, &w);
    CHECK(st.code() == Code::kNotFound);
    CHECK(st.message().find("has no table \"outbox\"") != std::string::npos);
    CHECK_FALSE(w);

    o.create_schema = true;
    REQUIRE(OutboxWriter::open(app.db, o, &w).ok());
    CHECK(app.count("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'outbox_id_idx'") ==
          1);
    CHECK(app.count(
              "SELECT count(*) FROM sqlite_master WHERE name = 'outbox' AND sql LIKE '%AUTOINCREMENT%'") ==
          1);
    w.reset();

    // Odd names survive quoting.
    OutboxWriterOptions odd = options();
    odd.table = "my \"odd\" table";
    odd.id_column = "event id";
    odd.payload_column = "select";
    auto w2 = open_on(app.db, odd);
    REQUIRE(w2->append(deposit("q")).status.ok());
    REQUIRE(w2->flush().ok());
    CHECK(app.column("SELECT \"event id\" FROM \"my \"\"odd\"\" table\"") == std::vector<std::string>{"q"});

    // A table without one of the configured columns.
    app.exec("CREATE TABLE legacy (seq INTEGER PRIMARY KEY, id TEXT, aggregatetype TEXT, aggregateid TEXT, "
             "type TEXT, "
             "body TEXT, timestamp INTEGER)");
    OutboxWriterOptions legacy;
    legacy.table = "legacy";
    st = OutboxWriter::open(app.db, legacy, &w);
    CHECK(st.code() == Code::kInvalidArgument);
    CHECK(st.message().find("has no column \"payload\"") != std::string::npos);

    // Bad options.
    OutboxWriterOptions bad;
    bad.batch_size = 0;
    CHECK(OutboxWriter::open(app.db, bad, &w).code() == Code::kInvalidArgument);

    // open(path) creates nothing without create_schema: a mistyped path fails.
    std::string missing = dir.file("missing.db");
    st = OutboxWriter::open(missing, OutboxWriterOptions(), &w);
    CHECK(st.code() == Code::kDbError);
    CHECK(st.message().find("cannot open database") == 0);
    CHECK_FALSE(std::filesystem::exists(missing));
    // With create_schema it makes the file, in WAL mode.
    REQUIRE(OutboxWriter::open(missing, options(), &w).ok());
    Conn check(missing);
    CHECK(check.column("PRAGMA journal_mode") == std::vector<std::string>{"wal"});
}

// ---- circuit breaker ---------------------------------------------------------

TEST_CASE("circuit breaker: closed -> open -> half-open -> closed, with a fake clock") {
    cdcflow::outbox::CircuitBreaker b(3, 100);
    CHECK(b.state() == BreakerState::kClosed);
    CHECK(b.allow(0));
    b.on_failure(0);
    b.on_failure(0);
    CHECK(b.state() == BreakerState::kClosed);
    b.on_success(); // a success resets the count
    b.on_failure(1);
    b.on_failure(1);
    CHECK(b.state() == BreakerState::kClosed);
    b.on_failure(10); // third in a row
    CHECK(b.state() == BreakerState::kOpen);
    CHECK(b.opens() == 1);
    CHECK_FALSE(b.allow(10));
    CHECK_FALSE(b.allow(109)); // cooling down
    CHECK(b.allow(110));       // the trial
    CHECK(b.state() == BreakerState::kHalfOpen);
    CHECK_FALSE(b.allow(110)); // only one trial at a time
    b.on_failure(110);         // the trial fails: open again, a new cool-down
    CHECK(b.state() == BreakerState::kOpen);
    CHECK(b.opens() == 2);
    CHECK_FALSE(b.allow(209));
    CHECK(b.allow(210));
    b.on_success();
    CHECK(b.state() == BreakerState::kClosed);
    CHECK(b.allow(210));
    CHECK(b.consecutive_failures() == 0);
}

TEST_CASE("circuit breaker: a threshold of 0 never opens") {
    cdcflow::outbox::CircuitBreaker b(0, 100);
    for (int i = 0; i < 100; ++i)
        b.on_failure(i);
    CHECK(b.state() == BreakerState::kClosed);
    CHECK(b.allow(100));
}

TEST_CASE("outbox writer: the breaker opens on a read-only database and closes when it is writable again") {
    // chmod 0444 does not stop root (tests may run as root), so the database
    // is made read-only on the connection itself: PRAGMA query_only.
    TempDir dir;
    Conn app(dir.file("app.db"));
    FakeClock clock;
    OutboxWriterOptions o = options(&clock);
    o.batch_size = 1;
    o.breaker_failures = 2;
    o.breaker_cooldown_ms = 1000;
    auto w = open_on(app.db, o);
    app.exec("PRAGMA query_only = 1");

    AppendResult r = w->append(deposit("a")); // accepted, but its batch cannot be written
    CHECK(r.status.ok());
    CHECK(r.flush_status.code() == Code::kDbError);
    CHECK((r.flush_status.sqlite_code() & 0xff) == SQLITE_READONLY);
    CHECK(w->metrics().breaker_state == BreakerState::kClosed);
    CHECK(w->flush().code() == Code::kDbError); // second failure in a row
    CHECK(w->metrics().breaker_state == BreakerState::kOpen);
    CHECK(w->metrics().db_failures == 2);

    // Open: fails fast, without touching the database.
    OutboxStatus st = w->flush();
    CHECK(st.code() == Code::kUnavailable);
    CHECK(st.retryable());
    CHECK(st.message().find("circuit breaker open") != std::string::npos);
    CHECK(w->metrics().db_failures == 2);
    CHECK(w->metrics().failed_fast == 1);
    // A new event cannot join the full buffer either.
    CHECK(w->append(deposit("b")).status.code() == Code::kUnavailable);

    // After the cool-down one trial goes through; still read-only: open again.
    clock.ms += 1000;
    CHECK(w->flush().code() == Code::kDbError);
    CHECK(w->metrics().breaker_state == BreakerState::kOpen);
    CHECK(w->metrics().breaker_opens == 2);

    // The database recovers: the next trial closes the breaker.
    app.exec("PRAGMA query_only = 0");
    clock.ms += 1000;
    REQUIRE(w->flush().ok());
    CHECK(w->metrics().breaker_state == BreakerState::kClosed);
    CHECK(app.column("SELECT id FROM outbox") == std::vector<std::string>{"a"});
}

TEST_CASE("outbox writer: a read-only connection fails appends and opens the breaker") {
    TempDir dir;
    {
        Conn setup(dir.file("app.db"));
        auto w = open_on(setup.db, options());
    }
    Conn ro(dir.file("app.db"), SQLITE_OPEN_READONLY);
    OutboxWriterOptions o;
    o.breaker_failures = 1;
    auto w = open_on(ro.db, o);
    ro.exec("BEGIN");
    AppendResult r = w->append_in_transaction(deposit("a"));
    CHECK(r.status.code() == Code::kDbError);
    CHECK((r.status.sqlite_code() & 0xff) == SQLITE_READONLY);
    CHECK(w->metrics().breaker_state == BreakerState::kOpen);
    CHECK(w->append_in_transaction(deposit("b")).status.code() == Code::kUnavailable);
    ro.exec("ROLLBACK");
}

TEST_CASE("outbox writer: the breaker opens while another connection holds the database locked") {
    TempDir dir;
    std::string path = dir.file("app.db");
    FakeClock clock;
    OutboxWriterOptions o = options(&clock);
    o.batch_size = 1;
    o.breaker_failures = 2;
    o.breaker_cooldown_ms = 1000;
    o.busy_timeout_ms = 10;
    std::unique_ptr<OutboxWriter> w;
    REQUIRE(OutboxWriter::open(path, o, &w).ok());

    Conn locker(path);
    locker.exec("BEGIN EXCLUSIVE");
    AppendResult r = w->append(deposit("a"));
    CHECK(r.status.ok());
    CHECK((r.flush_status.sqlite_code() & 0xff) == SQLITE_BUSY);
    CHECK(r.flush_status.retryable());
    CHECK(w->flush().code() == Code::kDbError);
    CHECK(w->metrics().breaker_state == BreakerState::kOpen);
    CHECK(w->flush().code() == Code::kUnavailable);
    CHECK(w->metrics().db_failures == 2);

    clock.ms += 1000; // half-open: the trial finds the lock still held
    CHECK(w->flush().code() == Code::kDbError);
    CHECK(w->metrics().breaker_state == BreakerState::kOpen);

    locker.exec("COMMIT");
    clock.ms += 1000;
    REQUIRE(w->flush().ok());
    CHECK(w->metrics().breaker_state == BreakerState::kClosed);
    REQUIRE(w->append(deposit("b")).flush_status.ok());
    CHECK(locker.column("SELECT id FROM outbox ORDER BY seq") == std::vector<std::string>{"a", "b"});
}

// ---- dedupe window -----------------------------------------------------------

TEST_CASE("id cache: exact, bounded, and it matches a simple model under random use") {
    using cdcflow::outbox::IdCache;
    // The model: a FIFO of (id, expiry, dead); capacity counts dead entries
    // until they reach the front, as in the real ring.
    struct ModelEntry {
        std::string id;
        int64_t expires;
        bool dead;
    };
    const size_t capacity = 300;
    const int64_t ttl = 500;
    IdCache cache(capacity, ttl, 12345, /*bytes_per_id=*/4096);
    std::deque<ModelEntry> model;
    std::vector<uint64_t> handles; // parallel to model
    auto expire = [&](int64_t now) {
        while (!model.empty() && (model.front().dead || model.front().expires <= now)) {
            model.pop_front();
            handles.erase(handles.begin());
        }
    };
    auto model_find = [&](const std::string &id) -> int {
        for (size_t i = 0; i < model.size(); ++i)
            if (!model[i].dead && model[i].id == id) return static_cast<int>(i);
        return -1;
    };
    std::mt19937 rng(7);
    int64_t now = 0;
    for (int step = 0; step < 200000; ++step) {
        now += rng() % 3;
        // Ids of varied length (some longer than a wrap of the byte ring's start).
        std::string id = "id-" + std::to_string(rng() % 1000);
        if (rng() % 4 == 0) id.append(rng() % 200, 'x');
        expire(now);
        int m = model_find(id);
        uint64_t h = cache.find(id, now);
        REQUIRE((m >= 0) == (h != IdCache::kNone));
        if (m >= 0) {
            REQUIRE(h == handles[m]);
            if (rng() % 5 == 0) { // forget it (a rolled-back id)
                cache.erase(h);
                model[m].dead = true;
                CHECK_FALSE(cache.live(h));
            }
            continue;
        }
        while (model.size() >= capacity) { // like the ring: one pop per slot needed, dead or not
            model.pop_front();
            handles.erase(handles.begin());
        }
        uint64_t nh = cache.insert(id, IdCache::State::kWritten, now);
        REQUIRE(nh != IdCache::kNone);
        model.push_back({id, now + ttl, false});
        handles.push_back(nh);
        size_t live = 0;
        for (const ModelEntry &e : model)
            live += !e.dead;
        REQUIRE(cache.size() == live);
    }
}

TEST_CASE("id cache: pending entries keep their rowid; long ids are not cached; the byte budget evicts") {
    using cdcflow::outbox::IdCache;
    IdCache cache(1000, 1000, 1, /*bytes_per_id=*/2); // a 2000-byte budget (at least kMaxIdBytes)
    uint64_t h = cache.insert("p", IdCache::State::kPending, 0, 77);
    CHECK(cache.state(h) == IdCache::State::kPending);
    CHECK(cache.rowid(h) == 77);
    cache.set_state(h, IdCache::State::kWritten);
    CHECK(cache.state(cache.find("p", 0)) == IdCache::State::kWritten);

    CHECK(cache.insert(std::string(IdCache::kMaxIdBytes + 1, 'L'), IdCache::State::kWritten, 0) ==
          IdCache::kNone);

    // 100-byte ids: the budget holds only a few of them; the oldest go first.
    for (int i = 0; i < 50; ++i) {
        std::string id(100, static_cast<char>('a' + i % 26));
        id += std::to_string(i);
        REQUIRE(cache.insert(id, IdCache::State::kWritten, 0) != IdCache::kNone);
        CHECK(cache.find(id, 0) != IdCache::kNone);
    }
    CHECK(cache.size() < 50);
    CHECK(cache.find(std::string(100, 'a') + "0", 0) == IdCache::kNone);

    IdCache off(0, 1000, 1);
    CHECK_FALSE(off.enabled());
    CHECK(off.insert("a", IdCache::State::kWritten, 0) == IdCache::kNone);
    CHECK(off.find("a", 0) == IdCache::kNone);
}

TEST_CASE("id cache: a million ids stay exact through growth") {
    using cdcflow::outbox::IdCache;
    IdCache cache(1'000'000, 600'000, 99);
    cdcflow::outbox::UuidGenerator gen;
    std::vector<std::string> ids(200'000);
    char buf[cdcflow::outbox::UuidGenerator::kTextSize];
    for (std::string &id : ids) {
        gen.next(buf);
        id.assign(buf, sizeof buf);
        REQUIRE(cache.find(id, 0) == IdCache::kNone);
        REQUIRE(cache.insert(id, IdCache::State::kWritten, 0) != IdCache::kNone);
    }
    CHECK(cache.size() == ids.size());
    for (const std::string &id : ids)
        REQUIRE(cache.find(id, 1) != IdCache::kNone);
    std::string near = ids[0];
    near.back() = near.back() == '0' ? '1' : '0';
    CHECK(cache.find(near, 1) == IdCache::kNone);
}

// projection_sink: the money helper, the accounts rules (pure), and the sink
// against real SQLite files over the host API table.
#include "plugin_harness.hpp"

#include "batch.hpp"
#include "common/sqlite.hpp"
#include "common/wal_checkpointer.hpp"
#include "host_api.hpp"
#include "projection_sink/accounts.hpp"
#include "projection_sink/accounts_projection.hpp"
#include "projection_sink/aggregate_versions.hpp"
#include "projection_sink/money.hpp"
#include "projection_sink/projection_sink.hpp"
#include "projection_sink/row_cache.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <list>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace money = cdcflow::projection::money;
namespace acc = cdcflow::projection::accounts;
namespace sqlite = cdcflow::sqlite;
using cdcflow::projection::ProjectionSink;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;

// ---------------------------------------------------------------- money

namespace {

int64_t cents(std::string_view s) {
    int64_t c = -1;
    REQUIRE(money::parse(s, c) == money::ParseError::ok);
    return c;
}

money::ParseError parse_error(std::string_view s) {
    int64_t c = 0;
    return money::parse(s, c);
}

} // namespace

TEST_CASE("money: parses the amount grammar exactly") {
    CHECK(cents("12") == 1200);
    CHECK(cents("12.5") == 1250);
    CHECK(cents("12.34") == 1234);
    CHECK(cents("0.10") == 10);
    CHECK(cents("0.01") == 1);
    CHECK(cents("0") == 0);
    CHECK(cents("007.50") == 750);
    CHECK(cents("999999999.99") == money::kMaxBalance);
    CHECK(cents("92233720368547758.07") == INT64_MAX);

    for (const char *bad :
         {"12.", ".5", "-5", "+5", "1e3", "1E3", " 1", "1 ", "1,50", "abc", "12.3.4", "0x10", "١٢"})
        CHECK_MESSAGE(parse_error(bad) == money::ParseError::syntax, bad);
    CHECK(parse_error(std::string_view("12\0", 3)) == money::ParseError::syntax);
    CHECK(parse_error("") == money::ParseError::empty);
    CHECK(parse_error("12.345") == money::ParseError::too_many_decimals);
    CHECK(parse_error("0.001") == money::ParseError::too_many_decimals);
    CHECK(parse_error("92233720368547758.08") == money::ParseError::too_large);
    CHECK(parse_error("99999999999999999999999999") == money::ParseError::too_large);
    CHECK(parse_error("99999999999999999999999999x") == money::ParseError::syntax);
}

TEST_CASE("money: formats with two decimals and adds exactly") {
    CHECK(money::to_string(0) == "0.00");
    CHECK(money::to_string(5) == "0.05");
    CHECK(money::to_string(10) == "0.10");
    CHECK(money::to_string(1230) == "12.30");
    CHECK(money::to_string(-5) == "-0.05");
    CHECK(money::to_string(money::kMaxBalance) == "999999999.99");
    CHECK(money::to_string(INT64_MAX) == "92233720368547758.07");
    CHECK(money::to_string(INT64_MIN) == "-92233720368547758.08");
    CHECK(money::to_string(cents("0.10") + cents("0.20")) == "0.30"); // 0.1 + 0.2 != 0.3 in binary
    for (const char *s : {"0.00", "1.01", "123456.78", "999999999.99"})
        CHECK(money::to_string(cents(s)) == s);
}

// ---------------------------------------------------------------- rules

namespace {

struct Domain {
    acc::CommandParser parser;
    std::map<std::string, acc::Account> accounts;
    std::string reason;
    int64_t ts = 0;

    // "" when applied, else the reason. Every event is also read from the
    // host's shared parse (event_payload): both readings must agree.
    std::string apply(std::string_view id, std::string_view type, std::string_view payload,
                      std::string_view agg_type = "Account") {
        acc::Command cmd;
        reason.clear();
        bool ok = parser.parse(acc::EventView{agg_type, id, type, payload}, cmd, reason);
        same_as_shared_parse(acc::EventView{agg_type, id, type, payload}, ok, cmd, reason);
        if (!ok) return reason;
        acc::Account &a = accounts[std::string(id)];
        acc::Account before = a;
        if (!acc::apply_rules(cmd, id, ++ts, a, reason)) {
            CHECK(a.balance == before.balance); // untouched on rejection
            CHECK(a.version == before.version);
            CHECK(a.open == before.open);
            CHECK(a.exists == before.exists);
            return reason;
        }
        return "";
    }
    std::string balance(const std::string &id) { return money::to_string(accounts[id].balance); }

    void same_as_shared_parse(const acc::EventView &ev, bool ok, const acc::Command &cmd,
                              const std::string &why) {
        cdcflow_batch b(1);
        cdcflow_event_init in{};
        in.struct_size = sizeof in;
        in.payload = {ev.payload.data(), ev.payload.size()};
        REQUIRE(b.append(in));
        cdcflow_payload shared{};
        shared.struct_size = sizeof shared;
        REQUIRE(cdcflow::host::host_api()->event_payload(&b, 0, &shared) == CDCFLOW_OK);
        acc::Command cmd2;
        std::string why2;
        acc::CommandParser fresh;
        bool ok2 = fresh.parse(ev, shared, cmd2, why2);
        CHECK_MESSAGE(ok2 == ok, ev.payload);
        if (ok && ok2) {
            CHECK(cmd2.kind == cmd.kind);
            CHECK(cmd2.amount == cmd.amount);
            CHECK(cmd2.owner == cmd.owner);
            CHECK(cmd2.currency == cmd.currency);
        } else if (why.rfind("payload is not", 0) == 0) {
            // "not JSON" and "not an object" may be told apart differently
            // ("xyz": the own parse sees no object, the host no JSON).
            CHECK_MESSAGE(why2.rfind("payload is not", 0) == 0, ev.payload);
        } else {
            CHECK_MESSAGE(why2 == why, ev.payload);
        }
    }
};

std::string deposit(std::string_view amount) {
    return "{\"amount\":\"" + std::string(amount) + "\"}";
}

} // namespace

TEST_CASE("accounts: the happy path and the state it leaves") {
    Domain d;
    CHECK(d.apply("acc-1", "AccountCreated", R"({"owner": "Ada", "currency": "EUR"})") == "");
    acc::Account &a = d.accounts["acc-1"];
    CHECK(a.exists);
    CHECK(a.open);
    CHECK(a.owner == "Ada");
    CHECK(a.currency == "EUR");
    CHECK(a.balance == 0);
    CHECK(a.version == 1);
    CHECK(d.apply("acc-1", "MoneyDeposited", deposit("0.10")) == "");
    CHECK(d.apply("acc-1", "MoneyDeposited", deposit("0.20")) == "");
    CHECK(d.balance("acc-1") == "0.30");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("0.3")) == "");
    CHECK(d.balance("acc-1") == "0.00");
    CHECK(d.apply("acc-1", "AccountClosed", "{}") == "");
    CHECK_FALSE(a.open);
    CHECK(a.exists);
    CHECK(a.version == 5);
    CHECK(a.updated_at == d.ts);
}

TEST_CASE("accounts: every rule and its reason") {
    Domain d;
    CHECK(d.apply("acc-1", "MoneyDeposited", deposit("1")) == "account acc-1 does not exist");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("1")) == "account acc-1 does not exist");
    CHECK(d.apply("acc-1", "AccountClosed", "{}") == "account acc-1 does not exist");
    CHECK(d.apply("acc-1", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})") == "");
    CHECK(d.apply("acc-1", "AccountCreated", R"({"owner":"Bob","currency":"USD"})") ==
          "account acc-1 already exists");
    CHECK(d.accounts["acc-1"].owner == "Ada");

    CHECK(d.apply("acc-1", "MoneyDeposited", deposit("10")) == "");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("12.34")) ==
          "insufficient funds: balance 10.00, withdrawal 12.34");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("10.01")) ==
          "insufficient funds: balance 10.00, withdrawal 10.01");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("5")) == "");
    CHECK(d.apply("acc-1", "AccountClosed", "{}") == "cannot close account acc-1 with balance 5.00");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("5.00")) == "");
    CHECK(d.apply("acc-1", "AccountClosed", "{}") == "");
    CHECK(d.apply("acc-1", "MoneyDeposited", deposit("1")) == "account acc-1 is closed");
    CHECK(d.apply("acc-1", "MoneyWithdrawn", deposit("1")) == "account acc-1 is closed");
    CHECK(d.apply("acc-1", "AccountClosed", "{}") == "account acc-1 is closed");
    // A closed account exists: it cannot be created again.
    CHECK(d.apply("acc-1", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})") ==
          "account acc-1 already exists");
}

TEST_CASE("accounts: the balance limit is exact") {
    Domain d;
    CHECK(d.apply("a", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})") == "");
    CHECK(d.apply("a", "MoneyDeposited", deposit("999999999.99")) == "");
    CHECK(d.balance("a") == "999999999.99");
    CHECK(d.apply("a", "MoneyDeposited", deposit("0.01")) == "balance would exceed 999999999.99");
    CHECK(d.apply("a", "MoneyWithdrawn", deposit("0.01")) == "");
    CHECK(d.apply("a", "MoneyDeposited", deposit("0.01")) == "");
    CHECK(d.balance("a") == "999999999.99");
    // Amounts far beyond the limit (even beyond int64 cents) are rejected, not overflowed.
    CHECK(d.apply("a", "MoneyWithdrawn", deposit("999999999.99")) == "");
    CHECK(d.apply("a", "MoneyDeposited", deposit("92233720368547758.07")) ==
          "balance would exceed 999999999.99");
    CHECK(d.apply("a", "MoneyDeposited", deposit("92233720368547758.08")) ==
          "invalid amount \"92233720368547758.08\": too large");
    CHECK(d.apply("a", "MoneyWithdrawn", deposit("92233720368547758.07")) ==
          "insufficient funds: balance 0.00, withdrawal 92233720368547758.07");
}

TEST_CASE("accounts: malformed events are rejected with a reason") {
    Domain d;
    CHECK(d.apply("a", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})") == "");
    CHECK(d.apply("a", "AccountFrozen", "{}") == "unknown event type \"AccountFrozen\"");
    CHECK(d.apply("a", "", "{}") == "unknown event type \"\"");
    CHECK(d.apply("a", "MoneyDeposited", deposit("1"), "Order") == "aggregate type \"Order\" is not Account");
    CHECK(d.apply("", "MoneyDeposited", deposit("1")) == "empty account id (aggregate id)");

    // Amounts.
    CHECK(d.apply("a", "MoneyDeposited", R"({"amount": 12.5})") == "field \"amount\" must be a JSON string");
    CHECK(d.apply("a", "MoneyDeposited", R"({"amount": null})") == "field \"amount\" must be a JSON string");
    CHECK(d.apply("a", "MoneyDeposited", R"({})") == "missing field \"amount\"");
    CHECK(d.apply("a", "MoneyDeposited", R"({"Amount": "1"})") == "missing field \"amount\"");
    CHECK(d.apply("a", "MoneyDeposited", deposit("0")) == "amount must be greater than 0, got \"0\"");
    CHECK(d.apply("a", "MoneyWithdrawn", deposit("0.00")) == "amount must be greater than 0, got \"0.00\"");
    CHECK(d.apply("a", "MoneyDeposited", deposit("12.345")) ==
          "invalid amount \"12.345\": more than 2 decimals");
    for (const char *bad : {"-5", "1e3", "abc", "", " 1", "12.", "+1"})
        CHECK_MESSAGE(d.apply("a", "MoneyDeposited", deposit(bad)) ==
                          "invalid amount \"" + std::string(bad) +
                              "\": expected digits with at most 2 decimals, e.g. \"12.34\"",
                      bad);
    CHECK(d.apply("a", "MoneyDeposited", R"({"amount":"1","amount":"2"})") ==
          "payload has field \"amount\" more than once");

    // Created.
    CHECK(d.apply("b", "AccountCreated", R"({"owner":"","currency":"EUR"})") ==
          "owner must be a non-empty string");
    CHECK(d.apply("b", "AccountCreated", R"({"owner":7,"currency":"EUR"})") ==
          "field \"owner\" must be a JSON string");
    CHECK(d.apply("b", "AccountCreated", R"({"currency":"EUR"})") == "missing field \"owner\"");
    CHECK(d.apply("b", "AccountCreated", R"({"owner":"Ada"})") == "missing field \"currency\"");
    for (const char *cur : {"eur", "EURO", "EU", "E1R", ""})
        CHECK(d.apply("b", "AccountCreated", std::string(R"({"owner":"Ada","currency":")") + cur + "\"}") ==
              "currency must be three capital letters, got \"" + std::string(cur) + "\"");
    CHECK_FALSE(d.accounts["b"].exists);

    // Payloads that are not JSON objects.
    for (const char *p : {"[1,2]", "\"12.00\"", "12", "null", "true"})
        CHECK_MESSAGE(d.apply("a", "MoneyDeposited", p) == "payload is not a JSON object", p);
    for (const char *p : {"not json", "xyz"})
        CHECK(d.apply("a", "MoneyDeposited", p) == "payload is not a JSON object");
    for (const char *p :
         {"", "{\"amount\": \"1\"", "{\"amount\":\"1\",}", "{\"amount\" \"1\"}", "{\"amount\":\"1\"} x",
          "{\"amount\":\"1\",\"x\":[1,}", "{\"amount\":\"1\",\"x\":tru}", "{\"amount\":\"1\",\"x\":\"\\q\"}",
          "{\"amount\":\"1\",\"x\":01}"})
        CHECK_MESSAGE(d.apply("a", "MoneyDeposited", p).rfind("payload is not valid JSON", 0) == 0, p);
    CHECK(d.balance("a") == "0.00");

    // Extra fields are allowed (forward compatible producers).
    CHECK(d.apply("a", "MoneyDeposited", R"({"note":{"k":[1,2.5,-3e2,true,null,"x"]},"amount":"1.50"})") ==
          "");
    CHECK(d.apply("a", "AccountClosed", R"({"reason":"done"})") ==
          "cannot close account a with balance 1.50");
}

TEST_CASE("accounts: text is kept verbatim; reasons quote it safely") {
    Domain d;
    const std::string evil = "'); DROP TABLE accounts;--";
    CHECK(d.apply(evil, "AccountCreated", R"({"owner":"'); DROP TABLE accounts;--","currency":"EUR"})") ==
          "");
    CHECK(d.accounts[evil].owner == evil);
    CHECK(d.apply(evil, "AccountCreated", R"({"owner":"x","currency":"EUR"})") ==
          "account " + evil + " already exists");
    CHECK(d.apply("z", "AccountCreated", R"({"owner":"Zo\u00eb \"Z\" \\ 李","currency":"EUR"})") == "");
    CHECK(d.accounts["z"].owner == "Zoë \"Z\" \\ 李");

    // Invalid UTF-8 inside the JSON payload: not valid JSON.
    CHECK(d.apply("z", "MoneyDeposited", "{\"amount\":\"1\",\"x\":\"\xff\xfe\"}")
              .rfind("payload is not valid JSON", 0) == 0);
    // Control characters and long values are tamed in reasons.
    CHECK(d.apply("z", "Bad\nType", "{}") == "unknown event type \"Bad\\x0aType\"");
    std::string reason = d.apply("z", std::string(500, 'T'), "{}");
    CHECK(reason.size() < 100);
    CHECK(reason.find("...") != std::string::npos);
    // A cut never splits a UTF-8 sequence.
    reason = d.apply(std::string(60, 'a') + "\xc3\xa9\xc3\xa9", "MoneyDeposited", R"({"amount":"1"})");
    CHECK(reason == "account " + std::string(60, 'a') + "\xc3\xa9\xc3\xa9 does not exist");
    reason = d.apply("z", "MoneyDeposited", "{\"amount\":\"" + std::string(63, '9') + "\xc3\xa9\"}");
    CHECK(reason == "invalid amount \"" + std::string(63, '9') +
                        "...\": expected digits with at most 2 "
                        "decimals, e.g. \"12.34\"");
}

TEST_CASE("accounts: a 10 MB payload is parsed (and its memory let go afterwards)") {
    Domain d;
    CHECK(d.apply("a", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})") == "");
    std::string big = "{\"padding\":\"" + std::string(10 << 20, 'x') + "\",\"amount\":\"2.50\"}";
    CHECK(d.apply("a", "MoneyDeposited", big) == "");
    CHECK(d.balance("a") == "2.50");
    std::string big_bad = "{\"amount\":\"2.50\",\"padding\":[" + std::string(10 << 20, '1') + ",]}";
    CHECK(d.apply("a", "MoneyDeposited", big_bad).rfind("payload is not valid JSON", 0) == 0);
    CHECK(d.apply("a", "MoneyDeposited", deposit("1")) == "");
    CHECK(d.balance("a") == "3.50");
}

TEST_CASE("row cache: LRU eviction skips pinned rows") {
    cdcflow::projection::RowCache<int> cache(2);
    auto *a = cache.insert("a");
    a->row = 1;
    cache.insert("b")->row = 2;
    CHECK(cache.find("a") == a); // a is now most recent
    cache.insert("c");           // evicts b
    CHECK(cache.find("b") == nullptr);
    CHECK(cache.size() == 2);
    cache.find("a")->pinned = true;
    cache.find("c")->pinned = true;
    cache.insert("d"); // everything pinned: grows past capacity
    CHECK(cache.size() == 3);
    cache.find("a")->pinned = false; // a batch commits: its rows are unpinned
    cache.find("c")->pinned = false;
    cache.find("a"); // unpinned finds refresh: a, then c are the most recent
    cache.find("c");
    cache.trim();
    CHECK(cache.size() == 2);
    CHECK(cache.find("d") == nullptr); // d was least recently used
    CHECK(cache.find("a") != nullptr);
    CHECK(cache.find("c") != nullptr);

    // A pinned row is not moved by later finds in its batch: it became the
    // most recent at its first touch.
    cdcflow::projection::RowCache<int> lru(3);
    lru.insert("x");
    lru.insert("y")->pinned = true; // touched first in this batch
    lru.insert("z");
    CHECK(lru.find("y") != nullptr); // pinned: stays behind z
    lru.find("y")->pinned = false;
    lru.find("x");   // x now most recent; order: x, z, y
    lru.insert("w"); // full: the least recent unpinned row goes
    CHECK(lru.find("y") == nullptr);
    CHECK(lru.find("z") != nullptr);
}

TEST_CASE("row cache: finds exactly the live keys through growth, eviction and erasure") {
    // Against a model: which keys are cached. A wrong deletion in the
    // open-addressing index loses a live key (find misses) or keeps a dead
    // one (find hits); both show here.
    cdcflow::projection::RowCache<int> cache(700);
    std::map<std::string, int> model; // key -> row value
    std::list<std::string> lru;       // most recent first
    std::mt19937 rnd(7);
    auto touch = [&](const std::string &k) {
        lru.remove(k);
        lru.push_front(k);
    };
    for (int step = 0; step < 60000; ++step) {
        std::string k = "acc-" + std::to_string(rnd() % 1500);
        int op = static_cast<int>(rnd() % 10);
        auto *n = cache.find(k);
        REQUIRE((n != nullptr) == (model.count(k) == 1));
        if (n) {
            CHECK(n->row == model[k]);
            touch(k);
            if (op == 0) { // forget it (a rolled-back batch)
                cache.erase(n);
                model.erase(k);
                lru.remove(k);
            }
        } else {
            if (model.size() >= 700) { // the least recently used goes
                model.erase(lru.back());
                lru.pop_back();
            }
            cache.insert(k)->row = step;
            model[k] = step;
            lru.push_front(k);
        }
        REQUIRE(cache.size() == model.size());
    }
    for (int i = 0; i < 1500; ++i) {
        std::string k = "acc-" + std::to_string(i);
        CHECK((cache.find(k) != nullptr) == (model.count(k) == 1));
    }
    cache.clear();
    CHECK(cache.size() == 0);
    CHECK(cache.find("acc-1") == nullptr);
}

// ---------------------------------------------------------------- the sink

namespace {

struct Sink : cdcflow::test::HarnessedStage<ProjectionSink> {
    Sink(std::initializer_list<std::pair<const char *, Val>> cfg) : HarnessedStage("project", cfg) {}
    std::unique_ptr<ProjectionSink> &sink = stage;
    std::vector<std::pair<std::string, int64_t>> checkpoint() {
        std::vector<std::pair<std::string, int64_t>> out;
        sink->checkpoint(
            [&](const cdcflow_position &p) { out.emplace_back(cdcflow::sv(p.partition), p.offset); });
        return out;
    }
};

struct Row {
    std::string owner, currency, balance, status;
    int64_t version = 0, updated_at = 0;
    bool found = false;
};

Row account(sqlite::Db &db, const std::string &id) {
    auto s = db.prepare(
        "SELECT owner, currency, balance, status, version, updated_at FROM accounts WHERE account_id = ?1");
    s.bind(1, std::string_view(id));
    Row r;
    if (s.step()) {
        r = Row{std::string(s.text(0)),
                std::string(s.text(1)),
                std::string(s.text(2)),
                std::string(s.text(3)),
                s.int64(4),
                s.int64(5),
                true};
    }
    return r;
}

struct DeadLetter {
    std::string event_id, aggregatetype, aggregateid, type, payload, source_position, stage, reason;
    int64_t failed_at;
};

std::vector<DeadLetter> dead_letters(sqlite::Db &db) {
    auto s = db.prepare(
        "SELECT event_id, aggregatetype, aggregateid, type, payload, source_position, stage, reason, "
        "failed_at FROM dead_letters ORDER BY seq");
    std::vector<DeadLetter> out;
    while (s.step())
        out.push_back({std::string(s.text(0)), std::string(s.text(1)), std::string(s.text(2)),
                       std::string(s.text(3)), std::string(s.text(4)), std::string(s.text(5)),
                       std::string(s.text(6)), std::string(s.text(7)), s.int64(8)});
    return out;
}

EventSpec ev(int64_t offset, std::string agg, std::string type, std::string payload) {
    EventSpec e;
    e.id = "ev-" + std::to_string(offset);
    e.aggregate_id = std::move(agg);
    e.type = std::move(type);
    e.payload = std::move(payload);
    e.timestamp_us = 1000 + offset;
    e.offset = offset;
    return e;
}

std::string created(const std::string &owner = "Ada") {
    return "{\"owner\":" + cdcflow::test::json_quote(owner) + ",\"currency\":\"EUR\"}";
}

} // namespace

TEST_CASE("projection_sink: create() changes nothing; start() creates the schema in WAL mode") {
    TempDir dir("ps_schema");
    std::string path = dir.file("read.db");
    {
        Sink s({{"database", path}});
        CHECK_FALSE(std::filesystem::exists(path));
        CHECK(s.checkpoint().empty()); // before start on a new database: from the start
        s.sink->start();
    }
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(db.columns("accounts") == std::vector<std::string>{"account_id", "owner", "currency", "balance",
                                                             "status", "version", "updated_at"});
    CHECK(db.columns("dead_letters") ==
          std::vector<std::string>{"seq", "event_id", "aggregatetype", "aggregateid", "type", "payload",
                                   "source_position", "stage", "reason", "failed_at"});
    CHECK(db.columns("cdcflow_checkpoints") ==
          std::vector<std::string>{"name", "partition", "position", "updated_at"});
    CHECK_FALSE(db.has_table("cdcflow_aggregate_versions")); // made by the first versioned batch
    sqlite::Stmt jm(db, "PRAGMA journal_mode");
    REQUIRE(jm.step());
    CHECK(jm.text(0) == "wal");
}

TEST_CASE("projection_sink: config errors name the problem") {
    TempDir dir("ps_config");
    std::string path = dir.file("read.db");
    auto error_of = [](std::initializer_list<std::pair<const char *, Val>> cfg) -> std::string {
        try {
            Sink s(cfg);
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_CONFIG);
            return e.what();
        }
        return "";
    };
    CHECK(error_of({{"database", path}, {"projection", "orders"}}).find("unknown projection 'orders'") !=
          std::string::npos);
    CHECK(error_of({{"database", path}, {"synchronous", "off"}}).find("synchronous") != std::string::npos);
    CHECK(error_of({{"database", path}, {"cache_size", 0}}).find("cache_size") != std::string::npos);
    CHECK(error_of({{"database", path}, {"create_schema", false}}).find("does not exist") !=
          std::string::npos);
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE x (y)");
    }
    CHECK(error_of({{"database", path}, {"create_schema", false}}).find("no table 'accounts'") !=
          std::string::npos);
}

TEST_CASE("projection_sink: applies, dead-letters and checkpoints a batch in one transaction") {
    TempDir dir("ps_batch");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();

    cdcflow_batch b(64);
    append(b, ev(1, "acc-1", "AccountCreated", created()));
    append(b, ev(2, "acc-1", "MoneyDeposited", deposit("10")));
    append(b, ev(3, "acc-1", "MoneyWithdrawn", deposit("12.34"))); // insufficient funds
    append(b, ev(4, "acc-1", "MoneyDeposited", deposit("0.10")));
    append(b, ev(5, "acc-1", "MoneyDeposited", deposit("bad")));  // malformed amount: the sink defends itself
    append(b, ev(6, "acc-2", "MoneyDeposited", deposit("1")));    // unknown account
    append(b, ev(7, "acc-1", "MoneyDeposited", deposit("1")));    // marked duplicate upstream
    append(b, ev(8, "acc-1", "MoneyDeposited", deposit("-1")));   // rejected upstream
    append(b, ev(9, "acc-1", "MoneyDeposited", deposit("0.20"))); // marked duplicate: still the checkpoint
    {
        cdcflow_ctx upstream{};
        upstream.stage_id = "dedupe";
        cdcflow::host::host_api()->event_mark_duplicate(&upstream, &b, 6);
        cdcflow::host::host_api()->event_mark_duplicate(&upstream, &b, 8);
        upstream.stage_id = "validate";
        const char why[] = "amount: must be > 0";
        cdcflow::host::host_api()->event_reject(&upstream, &b, 7, why, sizeof why - 1);
    }
    s.process(b);

    CHECK(b.events[2].status == CDCFLOW_EVENT_REJECTED);
    CHECK(cdcflow::sv(b.events[2].reject_stage) == "project");
    CHECK(b.events[0].status == CDCFLOW_EVENT_OK);

    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    Row r = account(db, "acc-1");
    REQUIRE(r.found);
    CHECK(r.owner == "Ada");
    CHECK(r.currency == "EUR");
    CHECK(r.balance == "10.10");
    CHECK(r.status == "open");
    CHECK(r.version == 3);
    CHECK(r.updated_at == 1004);
    CHECK_FALSE(account(db, "acc-2").found);

    auto dl = dead_letters(db);
    REQUIRE(dl.size() == 4);
    CHECK(dl[0].event_id == "ev-3");
    CHECK(dl[0].aggregatetype == "Account");
    CHECK(dl[0].aggregateid == "acc-1");
    CHECK(dl[0].type == "MoneyWithdrawn");
    CHECK(dl[0].payload == deposit("12.34"));
    CHECK(dl[0].source_position == "3");
    CHECK(dl[0].stage == "project");
    CHECK(dl[0].reason == "insufficient funds: balance 10.00, withdrawal 12.34");
    CHECK(dl[0].failed_at > 1600000000000000);
    CHECK(dl[1].reason.rfind("invalid amount \"bad\"", 0) == 0);
    CHECK(dl[2].reason == "account acc-2 does not exist");
    CHECK(dl[3].event_id == "ev-8");
    CHECK(dl[3].stage == "validate");
    CHECK(dl[3].reason == "amount: must be > 0");

    CHECK(s.checkpoint() == std::vector<std::pair<std::string, int64_t>>{{"", 9}});
    CHECK(s.h.metric("applied") == 3);
    CHECK(s.h.metric("rejected") == 3); // the host's per-stage count of batch.reject()
    CHECK(s.h.metric("dead_letters") == 4);
    CHECK(s.h.cache_figure("rows", CDCFLOW_CACHE_MISSES) == 2);

    // A new instance (a restart) resumes from the checkpoint and the table.
    s.sink->stop();
    Sink again({{"database", path}});
    CHECK(again.checkpoint() == std::vector<std::pair<std::string, int64_t>>{{"", 9}});
    again.sink->start();
    cdcflow_batch b2(8);
    append(b2, ev(10, "acc-1", "MoneyWithdrawn", deposit("10.10")));
    append(b2, ev(11, "acc-1", "AccountClosed", "{}"));
    again.process(b2);
    r = account(db, "acc-1");
    CHECK(r.balance == "0.00");
    CHECK(r.status == "closed");
    CHECK(r.version == 5);
    CHECK(again.checkpoint() == std::vector<std::pair<std::string, int64_t>>{{"", 11}});
}

namespace {

EventSpec versioned(int64_t offset, std::string agg, int64_t version, std::string type, std::string payload,
                    std::string id = "") {
    EventSpec e = ev(offset, std::move(agg), std::move(type), std::move(payload));
    e.version = version;
    if (!id.empty()) e.id = std::move(id);
    return e;
}

int64_t stored_version(sqlite::Db &db, const std::string &type, const std::string &id) {
    auto s = db.prepare("SELECT version FROM cdcflow_aggregate_versions WHERE name = 'accounts' AND "
                        "aggregatetype = ?1 AND aggregateid = ?2");
    s.bind(1, std::string_view(type)).bind(2, std::string_view(id));
    return s.step() ? s.int64(0) : -1;
}

} // namespace

TEST_CASE(
    "projection_sink: a dropped event is neither applied nor dead-lettered; the checkpoint moves past it") {
    TempDir dir("ps_drop");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    cdcflow_batch b(8);
    append(b, ev(1, "acc-1", "AccountCreated", created()));
    append(b, ev(2, "acc-1", "MoneyDeposited", deposit("5"))); // dropped
    append(b, ev(3, "acc-1", "MoneyDeposited", deposit("1")));
    append(b, ev(4, "acc-1", "MoneyWithdrawn", deposit("99"))); // dropped (would be a dead letter)
    cdcflow_ctx filter{};
    filter.stage_id = "filter";
    cdcflow::host::host_api()->event_drop(&filter, &b, 1);
    cdcflow::host::host_api()->event_drop(&filter, &b, 3);
    s.process(b);
    CHECK(b.events[1].status == CDCFLOW_EVENT_DROPPED);
    CHECK(b.events[3].status == CDCFLOW_EVENT_DROPPED);
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(account(db, "acc-1").balance == "1.00");
    CHECK(dead_letters(db).empty());
    CHECK(s.checkpoint() == std::vector<std::pair<std::string, int64_t>>{{"", 4}});
}

TEST_CASE(
    "projection_sink: each partition's checkpoint is its last event's position, in runs or interleaved") {
    TempDir dir("ps_partitions");
    Sink s({{"database", dir.file("read.db")}});
    s.sink->start();
    cdcflow_batch b(64);
    // Runs of one partition (as Kafka fetches give them), a partition that
    // comes back after others, names that differ only at the end.
    const std::vector<std::pair<std::string, int64_t>> order = {{"t/10", 5}, {"t/10", 6}, {"t/11", 1},
                                                                {"t/10", 7}, {"t/12", 3}, {"t/12", 4},
                                                                {"t/11", 2}, {"t/1", 9}};
    int64_t id = 0;
    for (const auto &[part, offset] : order) {
        EventSpec e = ev(offset, "acc-" + part, "AccountCreated", created());
        e.id = "ev-" + std::to_string(++id);
        e.partition = part;
        append(b, e);
    }
    s.process(b);
    auto got = s.checkpoint();
    std::sort(got.begin(), got.end());
    CHECK(got ==
          std::vector<std::pair<std::string, int64_t>>{{"t/1", 9}, {"t/10", 7}, {"t/11", 2}, {"t/12", 4}});
}

TEST_CASE("projection_sink: an event at or below its aggregate's last applied version is a duplicate, across "
          "restarts") {
    TempDir dir("ps_versions");
    std::string path = dir.file("read.db");
    {
        Sink s({{"database", path}});
        s.sink->start();
        cdcflow_batch b(16);
        append(b, versioned(1, "acc-1", 1, "AccountCreated", created()));
        append(b, versioned(2, "acc-1", 2, "MoneyDeposited", deposit("10")));
        append(b, versioned(3, "acc-1", 2, "MoneyDeposited", deposit("10"), "retry-copy")); // same version
        append(b, versioned(4, "acc-1", 1, "AccountCreated", created("Eve")));              // stale replay
        append(b, versioned(5, "acc-1", 5, "MoneyDeposited", deposit("1")));                // a gap is fine
        append(b, versioned(6, "acc-1", 6, "MoneyWithdrawn", deposit("100")));              // rejected
        append(b, versioned(7, "acc-1", 6, "MoneyWithdrawn", deposit("1"), "corrected"));   // applied
        append(b, ev(8, "acc-1", "MoneyDeposited", deposit("2")));                          // no version
        append(b, versioned(9, "acc-2", 1, "AccountCreated", created("Bob")));              // own sequence
        s.process(b);
        for (int i = 0; i < 9; ++i)
            CHECK_MESSAGE((b.events[i].status == CDCFLOW_EVENT_DUPLICATE) == (i == 2 || i == 3), i);
        CHECK(b.events[5].status == CDCFLOW_EVENT_REJECTED);
        CHECK(b.events[6].status == CDCFLOW_EVENT_OK);
        CHECK(s.h.metric("version_duplicates") == 2);
        CHECK(s.h.metric("duplicates") == 2);
        CHECK(s.h.metric("applied") == 6);
        s.sink->stop();
    }
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(db.columns("cdcflow_aggregate_versions") ==
          std::vector<std::string>{"id", "name", "aggregatetype", "aggregateid", "version"});
    Row r = account(db, "acc-1");
    CHECK(r.owner == "Ada");
    CHECK(r.balance == "12.00");
    CHECK(r.version == 5); // events applied, not the last aggregate version
    CHECK(stored_version(db, "Account", "acc-1") == 6);
    CHECK(stored_version(db, "Account", "acc-2") == 1);
    CHECK(dead_letters(db).size() == 1);

    // After a restart the versions come from the table, not from memory.
    Sink again({{"database", path}});
    again.sink->start();
    cdcflow_batch b2(8);
    append(b2, versioned(10, "acc-1", 5, "MoneyDeposited", deposit("1"), "late")); // stale
    append(b2, versioned(11, "acc-1", 7, "MoneyDeposited", deposit("1")));
    append(b2, versioned(12, "acc-2", 1, "AccountCreated", created("Bob"), "late-2"));
    again.process(b2);
    CHECK(b2.events[0].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(b2.events[1].status == CDCFLOW_EVENT_OK);
    CHECK(b2.events[2].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(account(db, "acc-1").balance == "13.00");
    CHECK(stored_version(db, "Account", "acc-1") == 7);
}

TEST_CASE("projection_sink: the first versioned batch creates the version table, and a rollback undoes it") {
    TempDir dir("ps_versions_rollback");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    db.exec("CREATE TRIGGER fail_cp BEFORE INSERT ON cdcflow_checkpoints BEGIN SELECT RAISE(ABORT, "
            "'injected'); END");
    cdcflow_batch b(8);
    append(b, versioned(1, "acc-9", 1, "AccountCreated", created()));
    CHECK_THROWS_WITH_AS(s.process(b), doctest::Contains("injected"), cdcflow::Error);
    CHECK_FALSE(db.has_table("cdcflow_aggregate_versions"));
    db.exec("DROP TRIGGER fail_cp");
    s.process(b); // the host's retry
    CHECK(b.events[0].status == CDCFLOW_EVENT_OK);
    CHECK(account(db, "acc-9").found);
    CHECK(stored_version(db, "Account", "acc-9") == 1);
}

TEST_CASE("aggregate versions: keyed by type and id; a row changed behind the cache is rewritten") {
    TempDir dir("av_keys");
    sqlite::Db db(dir.file("v.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    std::vector<std::string> log;
    cdcflow::projection::AggregateVersions v(1, [&](const std::string &m) { log.push_back(m); });
    v.open(db, "accounts");
    using AV = cdcflow::projection::AggregateVersions;
    auto batch = [&](auto body) {
        sqlite::Transaction tx(db);
        body();
        v.write_batch();
        tx.commit();
        v.batch_committed();
    };
    // "ab"+"c" and "a"+"bc" concatenate alike; they are different aggregates.
    batch([&] {
        AV::Entry *x = v.find("ab", "c");
        CHECK(AV::last(x) == -1);
        AV::applied(x, 3);
        AV::Entry *y = v.find("a", "bc");
        CHECK(AV::last(y) == -1);
        AV::applied(y, 2);
    });
    CHECK(log.size() == 1); // the table was created, once
    auto stored = [&](const char *type, const char *id) {
        auto q = db.prepare("SELECT version FROM cdcflow_aggregate_versions WHERE name = 'accounts' AND "
                            "aggregatetype = ?1 AND aggregateid = ?2");
        q.bind(1, std::string_view(type)).bind(2, std::string_view(id));
        return q.step() ? q.int64(0) : -1;
    };
    CHECK(stored("ab", "c") == 3);
    CHECK(stored("a", "bc") == 2);

    // The cache (capacity 1) still holds ("a","bc") with its row id. Another
    // connection deletes that row: the next update finds nothing by id and
    // falls back to the upsert instead of losing the version.
    db.exec("DELETE FROM cdcflow_aggregate_versions WHERE aggregatetype = 'a'");
    batch([&] {
        AV::Entry *y = v.find("a", "bc");
        CHECK(AV::last(y) == 2); // from the cache
        AV::applied(y, 4);
    });
    CHECK(stored("a", "bc") == 4);
    CHECK(stored("ab", "c") == 3);
    v.close();
}

TEST_CASE("projection_sink: SQL metacharacters are stored verbatim; invalid UTF-8 and huge payloads are dead "
          "letters with their exact bytes") {
    TempDir dir("ps_verbatim");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    const std::string evil = "'); DROP TABLE accounts;--";
    const std::string bad_utf8 = "acc-\xff\xfe\"'";
    const std::string huge =
        "{\"amount\":\"1\",\"x\":[" + std::string(10 << 20, '7') + ",]}"; // 10 MB, invalid
    cdcflow_batch b(8);
    append(b, ev(1, evil, "AccountCreated", created(evil)));
    append(b, ev(2, bad_utf8, "AccountCreated", created("O'Brien")));
    append(b, ev(3, evil, "MoneyDeposited", huge));
    EventSpec odd = ev(4, evil, "Money\"Deposited'", deposit("1"));
    odd.id = "id'\"; --";
    odd.partition = "topic/3";
    append(b, odd);
    s.process(b);

    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(db.has_table("accounts"));
    Row r = account(db, evil);
    REQUIRE(r.found);
    CHECK(r.owner == evil);
    CHECK_FALSE(account(db, bad_utf8).found); // never text that is not UTF-8 in the read model
    auto dl = dead_letters(db);
    REQUIRE(dl.size() == 3);
    CHECK(dl[0].aggregateid == bad_utf8); // the original bytes...
    CHECK(dl[0].reason ==
          "aggregate id is not valid UTF-8: \"acc-\\xff\\xfe\\\"'\""); // ...and a UTF-8 reason
    CHECK(db.query_int("SELECT count(*) FROM dead_letters WHERE typeof(aggregateid) = 'blob'") == 1);
    CHECK(db.query_int("SELECT count(*) FROM dead_letters WHERE typeof(reason) = 'text'") == 3);
    CHECK(dl[1].payload == huge); // kept whole, never parsed (over max_payload_bytes)
    CHECK(dl[1].aggregateid == evil);
    CHECK(dl[1].reason ==
          "payload is " + std::to_string(huge.size()) + " bytes, more than max_payload_bytes 1048576");
    CHECK(dl[2].event_id == "id'\"; --");
    CHECK(dl[2].type == "Money\"Deposited'");
    CHECK(dl[2].source_position == "topic/3@4");
    CHECK(dl[2].reason == "unknown event type \"Money\\\"Deposited'\"");
    // Checkpoints per partition.
    auto cp = s.checkpoint();
    std::sort(cp.begin(), cp.end());
    CHECK(cp == std::vector<std::pair<std::string, int64_t>>{{"", 3}, {"topic/3", 4}});
}

TEST_CASE("projection_sink: holds its own limits without a validator: empty ids, deep JSON, big payloads") {
    TempDir dir("ps_limits");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}, {"max_payload_bytes", 4096}});
    s.sink->start();
    cdcflow_batch b(8);
    append(b, ev(1, "acc-1", "AccountCreated", created()));
    EventSpec no_id = ev(2, "acc-2", "AccountCreated", created());
    no_id.id = "";
    append(b, no_id);
    std::string deep =
        "{\"amount\":\"1.00\",\"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    Sink big({{"database", dir.file("other.db")}}); // default limit: 1 MiB
    append(b, ev(3, "acc-1", "MoneyDeposited", deposit("1.00")));
    append(b, ev(4, "acc-1", "MoneyDeposited",
                 "{\"amount\":\"1.00\",\"pad\":\"" + std::string(5000, 'p') + "\"}"));
    s.process(b);
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(account(db, "acc-1").balance == "1.00");
    CHECK_FALSE(account(db, "acc-2").found);
    auto dl = dead_letters(db);
    REQUIRE(dl.size() == 2);
    CHECK(dl[0].reason == "event id is empty");
    CHECK(dl[1].reason == "payload is 5026 bytes, more than max_payload_bytes 4096");

    // 100,000 levels deep: refused at simdjson's default depth (1024), as
    // the validator's parser refuses it, without walking (or recursing) it all.
    big.sink->start();
    cdcflow_batch b2(4);
    append(b2, ev(1, "acc-9", "AccountCreated", created()));
    append(b2, ev(2, "acc-9", "MoneyDeposited", deep));
    append(b2, ev(3, "acc-9", "MoneyDeposited",
                  "{\"amount\":\"2.00\",\"x\":" + std::string(1000, '[') + std::string(1000, ']') + "}"));
    big.process(b2);
    sqlite::Db db2(dir.file("other.db"), SQLITE_OPEN_READONLY);
    CHECK(account(db2, "acc-9").balance == "2.00"); // 1,000 deep is fine
    auto dl2 = dead_letters(db2);
    REQUIRE(dl2.size() == 1);
    CHECK(dl2[0].reason ==
          "payload is not valid JSON: The JSON document was too deep (too many nested objects and "
          "arrays)");
}

TEST_CASE("projection_sink: a tiny cache gives the same results as a big one") {
    TempDir dir("ps_cache");
    auto run = [&](const std::string &path, int cache_size) {
        Sink s({{"database", path}, {"cache_size", cache_size}});
        s.sink->start();
        int64_t off = 0;
        cdcflow_batch b(50);
        for (int round = 0; round < 20; ++round) {
            b.reset();
            for (int i = 0; i < 50; ++i) {
                int a = (round * 50 + i) % 37;
                std::string id = "acc-" + std::to_string(a);
                ++off;
                if (round == 0 && i < 37)
                    append(b, ev(off, id, "AccountCreated", created()));
                else
                    append(b, ev(off, id, i % 3 ? "MoneyDeposited" : "MoneyWithdrawn",
                                 deposit(std::to_string(i) + ".25")));
            }
            s.process(b);
        }
        return std::make_pair(s.h.cache_figure("rows", CDCFLOW_CACHE_MISSES), s.h.metric("applied"));
    };
    auto big = run(dir.file("big.db"), 1000);
    auto tiny = run(dir.file("tiny.db"), 2);
    CHECK(big.first == 37);
    CHECK(tiny.first > 37);
    CHECK(big.second == tiny.second);
    sqlite::Db a(dir.file("big.db"), SQLITE_OPEN_READONLY), c(dir.file("tiny.db"), SQLITE_OPEN_READONLY);
    for (int i = 0; i < 37; ++i) {
        Row x = account(a, "acc-" + std::to_string(i)), y = account(c, "acc-" + std::to_string(i));
        CHECK(x.balance == y.balance);
        CHECK(x.version == y.version);
    }
    CHECK(dead_letters(a).size() == dead_letters(c).size());
}

TEST_CASE(
    "projection_sink: a failed batch rolls back, cache included, and its retry gives identical results") {
    TempDir dir("ps_retry");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    cdcflow_batch b1(8);
    append(b1, ev(1, "acc-1", "AccountCreated", created()));
    append(b1, ev(2, "acc-1", "MoneyDeposited", deposit("100")));
    s.process(b1);

    cdcflow_batch b2(8);
    append(b2, ev(3, "acc-1", "MoneyWithdrawn", deposit("30")));
    append(b2, ev(4, "acc-1", "MoneyWithdrawn", deposit("80"))); // rejected: 70 left
    append(b2, ev(5, "acc-2", "AccountCreated", created("Bob")));

    // 1. Busy at BEGIN: another writer holds the lock -> ERR_RETRY.
    sqlite::Db other(path, SQLITE_OPEN_READWRITE, 0);
    other.exec("BEGIN IMMEDIATE");
    {
        Sink fast({{"database", path}, {"busy_timeout_ms", 10}, {"create_schema", false}});
        fast.sink->start();
        cdcflow_status st = CDCFLOW_OK;
        try {
            fast.process(b2);
        } catch (const cdcflow::Error &e) {
            st = e.status();
        }
        CHECK(st == CDCFLOW_ERR_RETRY);
        fast.sink->stop();
    }
    other.exec("ROLLBACK");

    // 2. A failure after the events were applied in memory: the checkpoint
    // write fails (a trigger stands in for a disk error).
    {
        sqlite::Db w(path, SQLITE_OPEN_READWRITE);
        w.exec("CREATE TRIGGER fail_cp BEFORE UPDATE ON cdcflow_checkpoints BEGIN SELECT RAISE(ABORT, "
               "'injected'); END");
    }
    CHECK_THROWS_WITH_AS(s.process(b2), doctest::Contains("injected"), cdcflow::Error);
    CHECK(b2.events[1].status == CDCFLOW_EVENT_REJECTED); // the verdict stays on the event
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(account(db, "acc-1").balance == "100.00");
    CHECK_FALSE(account(db, "acc-2").found);
    CHECK(dead_letters(db).empty());
    {
        sqlite::Db w(path, SQLITE_OPEN_READWRITE);
        w.exec("DROP TRIGGER fail_cp");
    }

    // The host's retry of the same batch: the cache was restored, so 30 is
    // withdrawn once and the 80 is still refused.
    s.process(b2);
    Row r = account(db, "acc-1");
    CHECK(r.balance == "70.00");
    CHECK(r.version == 3);
    CHECK(account(db, "acc-2").found);
    auto dl = dead_letters(db);
    REQUIRE(dl.size() == 1);
    CHECK(dl[0].reason == "insufficient funds: balance 70.00, withdrawal 80.00");
    CHECK(dl[0].stage == "project");
    CHECK(s.checkpoint() == std::vector<std::pair<std::string, int64_t>>{{"", 5}});
}

TEST_CASE("projection_sink: through the C ABI, a bad batch is a status, never an exception") {
    TempDir dir("ps_abi");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    sqlite::Db other(path, SQLITE_OPEN_READWRITE, 0);
    other.exec("BEGIN IMMEDIATE");
    const cdcflow_plugin *desc = cdcflow::detail::descriptor<ProjectionSink>();
    cdcflow::detail::Holder<ProjectionSink> holder{cdcflow::host::host_api(), s.h.ctx(), std::move(s.sink)};
    cdcflow_batch b(4);
    append(b, ev(1, "a", "AccountCreated", created()));
    char err[512] = {0};
    // Locked for 100 ms: within busy_timeout_ms (5000), so SQLite waits it out.
    std::thread release([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        other.exec("ROLLBACK");
    });
    CHECK(desc->callbacks->process(&holder, &b, err, sizeof err) == CDCFLOW_OK);
    release.join();
    // The same batch again, after it committed: a replay below the
    // checkpoint is refused as a whole (a status and a message, nothing applied).
    CHECK(desc->callbacks->process(&holder, &b, err, sizeof err) == CDCFLOW_ERR_INTERNAL);
    CHECK(std::string(err) ==
          "checkpoint 'accounts' is at 1, this batch ends at 1: refusing to apply events a second time");
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    CHECK(dead_letters(db).empty());
    CHECK(db.query_int("SELECT count(*) FROM accounts") == 1);
}

TEST_CASE("projection_sink: rows renumbered under the cache (VACUUM) are still updated by account id") {
    TempDir dir("ps_rowid");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}});
    s.sink->start();
    cdcflow_batch b(8);
    append(b, ev(1, "acc-1", "AccountCreated", created("One")));
    append(b, ev(2, "acc-2", "AccountCreated", created("Two")));
    append(b, ev(3, "acc-1", "MoneyDeposited", deposit("1")));
    s.process(b);
    {
        // Swap the two rows' rowids, as a VACUUM may renumber them.
        sqlite::Db w(path, SQLITE_OPEN_READWRITE);
        w.exec("UPDATE accounts SET rowid = -rowid");
        w.exec("UPDATE accounts SET rowid = CASE account_id WHEN 'acc-1' THEN 2 ELSE 1 END");
    }
    b.reset();
    append(b, ev(4, "acc-1", "MoneyDeposited", deposit("10")));
    append(b, ev(5, "acc-2", "MoneyDeposited", deposit("20")));
    s.process(b);
    b.reset();
    append(b, ev(6, "acc-1", "MoneyDeposited", deposit("100")));
    s.process(b);
    sqlite::Db db(path, SQLITE_OPEN_READONLY);
    Row one = account(db, "acc-1"), two = account(db, "acc-2");
    CHECK(one.owner == "One");
    CHECK(one.balance == "111.00");
    CHECK(one.version == 4);
    CHECK(two.owner == "Two");
    CHECK(two.balance == "20.00");
    CHECK(two.version == 2);
    CHECK(db.query_int("SELECT count(*) FROM accounts") == 2);
}

TEST_CASE("wal checkpointer: checkpoints in the background and keeps the WAL bounded") {
    TempDir dir("walcp");
    std::string path = dir.file("w.db");
    sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    db.exec("PRAGMA journal_mode=WAL");
    db.exec("CREATE TABLE t (x TEXT)");
    sqlite::WalCheckpointer cp;
    std::vector<std::string> errors;
    cp.attach(db, 20, [&](const std::string &m) { errors.push_back(m); });
    // A reader that keeps coming back, as the outbox source does.
    sqlite::Db reader(path, SQLITE_OPEN_READONLY);
    std::string blob(3000, 'x');
    for (int i = 0; i < 400; ++i) {
        sqlite::Transaction tx(db);
        auto ins = db.prepare("INSERT INTO t VALUES (?1)");
        for (int k = 0; k < 4; ++k) {
            ins.bind(1, std::string_view(blob));
            ins.run();
        }
        tx.commit();
        if (i % 7 == 0) CHECK(reader.query_int("SELECT count(*) FROM t") == 4 * (i + 1));
    }
    cp.stop();
    CHECK(errors.empty());
    CHECK(cp.runs() > 0);
    // 400 commits of ~4 pages each: without checkpoints about 6.5 MB of WAL.
    CHECK(std::filesystem::file_size(path + "-wal") < 20 * 8 * 4096 * 2);
    CHECK(db.query_int("SELECT count(*) FROM t") == 1600);
}

TEST_CASE("projection_sink: the row and version caches' figures: entries within cache_size after each batch, "
          "hits and misses per look-up") {
    TempDir dir("ps_cache_figures");
    std::string path = dir.file("read.db");
    Sink s({{"database", path}, {"cache_size", 2}});
    s.sink->start();
    CHECK(s.h.cache_figure("rows", CDCFLOW_CACHE_CAPACITY) == 2);
    CHECK(s.h.cache_figure("versions", CDCFLOW_CACHE_CAPACITY) == 2);
    cdcflow_batch b(8);
    append(b, versioned(1, "acc-1", 1, "AccountCreated", created()));      // miss
    append(b, versioned(2, "acc-2", 1, "AccountCreated", created("Bob"))); // miss
    append(b, versioned(3, "acc-1", 2, "MoneyDeposited", deposit("10")));  // hit
    append(b, versioned(4, "acc-3", 1, "AccountCreated", created("Eve"))); // miss: 3 rows pinned by the batch
    s.process(b);
    for (const char *cache : {"rows", "versions"}) {
        INFO(cache);
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_ENTRIES) == 2); // trimmed after the commit
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_HITS) == 1);
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_MISSES) == 3);
    }
    // acc-1 was the least recent (a row the batch already held is not moved
    // again): evicted; acc-3 is still there.
    b.reset();
    append(b, versioned(5, "acc-3", 2, "MoneyDeposited", deposit("1"))); // hit
    append(b, versioned(6, "acc-1", 3, "MoneyDeposited", deposit("1"))); // miss
    s.process(b);
    for (const char *cache : {"rows", "versions"}) {
        INFO(cache);
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_ENTRIES) == 2);
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_HITS) == 2);
        CHECK(s.h.cache_figure(cache, CDCFLOW_CACHE_MISSES) == 4);
    }
    // The projection's own counters say the same.
    CHECK(s.h.cache_figure("rows", CDCFLOW_CACHE_HITS) == 2);
    CHECK(s.h.cache_figure("rows", CDCFLOW_CACHE_MISSES) == 4);
    CHECK(s.h.metric("applied") == 6);
}

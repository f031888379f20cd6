// `cdcflow test`'s case files: parsing (defaults, every mistake with its
// file:line:col), reading a run's results from SQLite, and the diff.
#include "case_file.hpp"

#include <doctest/doctest.h>

#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

// Diff lines shown one a line when a CHECK fails.
template <> struct doctest::StringMaker<std::vector<std::string>> {
    static doctest::String convert(const std::vector<std::string> &lines) {
        std::string out;
        for (const std::string &l : lines)
            out += "\n  " + l;
        return out.c_str();
    }
};

using namespace cdcflow::cli::cases;

namespace {

CaseFile parse_ok(const std::string &text) {
    auto r = parse_case_file(text, "c.yaml");
    INFO(r.status().message());
    REQUIRE(r.ok());
    return std::move(r.value());
}

std::string parse_error(const std::string &text) {
    auto r = parse_case_file(text, "c.yaml");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().abi() == CDCFLOW_ERR_CONFIG);
    CHECK(r.status().message().find('\n') == std::string::npos);
    return r.status().message();
}

// One case with one event, `expect` as given (indented under the case).
std::string one_case(const std::string &event, const std::string &expect = "      tables: {t: []}\n") {
    return "aggregate_type: Account\n"
           "cases:\n"
           "  - name: c\n"
           "    events:\n"
           "      - " +
           event +
           "\n"
           "    expect:\n" +
           expect;
}

// The error of a case whose one event is fine and whose `expect` is this.
std::string expect_error(const std::string &expect) {
    return parse_error(one_case("{type: A, aggregate_id: a}", expect));
}

Cell text(const std::string &s) {
    Cell c;
    c.kind = Cell::Kind::text;
    c.bytes = s;
    return c;
}
Cell integer(int64_t i) {
    Cell c;
    c.kind = Cell::Kind::integer;
    c.i = i;
    return c;
}

// accounts(account_id PRIMARY KEY, balance, version) holding `rows`.
ActualTable accounts(std::vector<std::vector<Cell>> rows) {
    ActualTable t;
    t.exists = true;
    t.columns = {"account_id", "balance", "version"};
    t.key = {0};
    t.rows = std::move(rows);
    return t;
}

const char *kCaseHead = "cases:\n"
                        "  - name: c\n"
                        "    events:\n"
                        "      - {type: A, aggregate_id: x, aggregate_type: T}\n"
                        "      - {type: B, aggregate_id: x, aggregate_type: T, id: given}\n"
                        "    expect:\n";

} // namespace

TEST_SUITE("case file: parsing") {
    TEST_CASE("events: defaults, generated ids, increasing timestamps, payloads as JSON or raw") {
        CaseFile f =
            parse_ok("aggregate_type: Account\n"
                     "cases:\n"
                     "  - name: first\n"
                     "    events:\n"
                     "      - {type: AccountCreated, aggregate_id: a1, payload: {owner: Ada, n: 5, s: '5'}}\n"
                     "      - type: MoneyDeposited\n"
                     "        aggregate_id: 42\n"
                     "        aggregate_type: Other\n"
                     "        payload_raw: '{not json'\n"
                     "        id: same\n"
                     "        timestamp: -7\n"
                     "        version: 3\n"
                     "      - {type: X, aggregate_id: a1, payload: [1, null]}\n"
                     "    expect: {}\n"
                     "  - name: second\n"
                     "    events: [{type: Y, aggregate_id: b}]\n"
                     "    expect: {dead_letters: []}\n");
        REQUIRE(f.cases.size() == 2);
        const Case &c = f.cases[0];
        CHECK(c.name == "first");
        REQUIRE(c.events.size() == 3);
        CHECK(c.events[0].id == "1-1");
        CHECK(c.events[0].aggregate_type == "Account");
        CHECK(c.events[0].payload == R"({"owner":"Ada","n":5,"s":"5"})");
        CHECK(c.events[0].timestamp == kFirstTimestamp);
        CHECK_FALSE(c.events[0].version);
        CHECK(c.events[1].id == "same");
        CHECK(c.events[1].aggregate_id == "42");
        CHECK(c.events[1].aggregate_type == "Other");
        CHECK(c.events[1].payload == "{not json");
        CHECK(c.events[1].timestamp == -7);
        CHECK(c.events[1].version == 3);
        CHECK(c.events[2].payload == "[1,null]");
        CHECK(c.events[2].timestamp == kFirstTimestamp + 2'000'000);
        CHECK(c.tables.empty());
        CHECK_FALSE(c.dead_letters);
        const Case &d = f.cases[1];
        CHECK(d.events[0].id == "2-1");
        CHECK(d.events[0].payload == "{}");
        REQUIRE(d.dead_letters);
        CHECK(d.dead_letters->empty());
    }

    TEST_CASE("expectations: typed cells, dead letters by number or id") {
        CaseFile f =
            parse_ok(std::string(kCaseHead) +
                     "      tables:\n"
                     "        accounts:\n"
                     "          - {account_id: a1, balance: '12.30', version: 2, ratio: 1.5, on: true,\n"
                     "             gone: null, empty: }\n"
                     "        history: []\n"
                     "      dead_letters:\n"
                     "        - {event: 2, stage: validate, reason: why}\n"
                     "        - {event_id: other, reason_contains: part}\n");
        const Case &c = f.cases[0];
        REQUIRE(c.tables.size() == 2);
        CHECK(c.tables[0].name == "accounts");
        CHECK(c.tables[1].name == "history");
        CHECK(c.tables[1].rows.empty());
        const auto &cells = c.tables[0].rows.at(0).cells;
        REQUIRE(cells.size() == 7);
        CHECK(cells[0].second.kind == Expected::Kind::text);
        CHECK(cells[1].second.kind == Expected::Kind::text);
        CHECK(cells[1].second.text == "12.30");
        CHECK(cells[2].second.kind == Expected::Kind::integer);
        CHECK(cells[2].second.i == 2);
        CHECK(cells[3].second.kind == Expected::Kind::real);
        CHECK(cells[4].second.kind == Expected::Kind::boolean);
        CHECK(cells[5].second.kind == Expected::Kind::null);
        CHECK(cells[6].second.kind == Expected::Kind::null);
        CHECK(cells[2].second.mark.line == 9);
        REQUIRE(c.dead_letters);
        REQUIRE(c.dead_letters->size() == 2);
        CHECK((*c.dead_letters)[0].event_id == "given");
        CHECK((*c.dead_letters)[0].event == 2u);
        CHECK((*c.dead_letters)[0].stage == "validate");
        CHECK((*c.dead_letters)[0].reason == "why");
        CHECK((*c.dead_letters)[1].event_id == "other");
        CHECK((*c.dead_letters)[1].reason_contains == "part");
        CHECK_FALSE((*c.dead_letters)[1].stage);
    }

    TEST_CASE("mistakes are one line with the position") {
        CHECK(parse_error("") == "c.yaml:1:1: empty case file");
        CHECK(parse_error("- a\n") ==
              "c.yaml:1:1: a case file must be a mapping (cases, aggregate_type), got a sequence");
        CHECK(parse_error("aggregate_type: A\n") ==
              "c.yaml:1:1: missing required key 'cases' (a list of cases)");
        CHECK(parse_error("cases: []\n") == "c.yaml:1:8: 'cases' must be a non-empty list, got a sequence");
        CHECK(parse_error("cases:\n") == "c.yaml:1:1: 'cases' must be a non-empty list, got null");
        CHECK(parse_error("casez: []\n") == "c.yaml:1:1: unknown key 'casez' (known: cases, aggregate_type)");
        CHECK(parse_error("cases: [{events: [], expect: {}}]\n") == "c.yaml:1:9: case #1 has no 'name'");
        CHECK(parse_error("cases: [{name: n, expect: {}}]\n") == "c.yaml:1:9: case 'n' has no 'events'");
        CHECK(parse_error("cases: [{name: n, events: [], expect: {}}]\n") ==
              "c.yaml:1:27: 'events' of case 'n' must not be empty");
        CHECK(parse_error("cases: [{name: n, events: [{type: A, aggregate_id: x, aggregate_type: T}]}]\n") ==
              "c.yaml:1:9: case 'n' has no 'expect' (tables, dead_letters)");
        CHECK(parse_error(
                  "cases: [{name: n, events: [{type: A, aggregate_id: x, aggregate_type: T}], expect: {}, "
                  "speed: 1}]\n") ==
              "c.yaml:1:88: unknown key 'speed' in case #1 (known: name, events, expect)");
        CHECK(parse_error(one_case("{aggregate_id: a1}")) == "c.yaml:5:9: event #1 has no 'type'");
        CHECK(parse_error(one_case("{type: A}")) == "c.yaml:5:9: event #1 has no 'aggregate_id'");
        CHECK(parse_error(one_case("{type: [A], aggregate_id: a}")) ==
              "c.yaml:5:16: 'type' must be a string, got a sequence");
        CHECK(parse_error(one_case("{type: A, aggregate_id: a, kind: x}")) ==
              "c.yaml:5:36: unknown key 'kind' in event #1 (known: id, type, aggregate_id, aggregate_type, "
              "payload, "
              "payload_raw, timestamp, version)");
        CHECK(parse_error(one_case("{type: A, aggregate_id: a, payload: {}, payload_raw: x}")) ==
              "c.yaml:5:49: event #1 has both 'payload' and 'payload_raw' (first at c.yaml:5:36)");
        CHECK(parse_error(one_case("{type: A, aggregate_id: a, timestamp: soon}")) ==
              "c.yaml:5:47: 'timestamp' must be an integer, got 'soon'");
        CHECK(parse_error(one_case("{type: A, aggregate_id: a, version: '3'}")) ==
              "c.yaml:5:45: 'version' must be an integer >= 0, got the string '3'");
        CHECK(parse_error(one_case("{type: A, aggregate_id: a, version: -1}")) ==
              "c.yaml:5:45: 'version' must be an integer >= 0, got '-1'");
        CHECK(parse_error("cases: [{name: n, events: [{type: A, aggregate_id: x}], expect: {}}]\n") ==
              "c.yaml:1:28: event #1 has no 'aggregate_type' and the file sets no default (a top-level "
              "'aggregate_type:')");
        CHECK(expect_error("      tables: {t: [{c: [1]}]}\n") ==
              "c.yaml:7:24: column 'c' of table 't' must be a scalar, got a sequence");
        CHECK(expect_error("      tables: {t: {c: 1}}\n") ==
              "c.yaml:7:19: table 't' (a list of rows) must be a list, got a mapping");
        CHECK(expect_error("      tables: {t: [1]}\n") ==
              "c.yaml:7:20: a row of table 't' must be a mapping (column: value), got a scalar");
        CHECK(expect_error("      rows: []\n") ==
              "c.yaml:7:7: unknown key 'rows' in 'expect' (known: tables, dead_letters)");
        CHECK(expect_error("      dead_letters: [{event: 2}]\n") ==
              "c.yaml:7:30: 'event' must be the number of one of the case's events (1 to 1), got 2");
        CHECK(expect_error("      dead_letters: [{stage: s}]\n") ==
              "c.yaml:7:22: a dead letter needs 'event' (its number in the case) or 'event_id'");
        CHECK(
            expect_error("      dead_letters: [{event: 1, reason: a, reason_contains: b}]\n") ==
            "c.yaml:7:44: a dead letter takes one of 'reason' and 'reason_contains' (first at c.yaml:7:33)");
        CHECK(parse_error(
                  one_case("{type: A, aggregate_id: a}", "      dead_letters: [{event: 1, why: b}]\n")) ==
              "c.yaml:7:33: unknown key 'why' in a dead letter (known: event, event_id, stage, reason, "
              "reason_contains)");
        CHECK(parse_error("aggregate_type: T\ncases:\n"
                          "  - {name: n, events: [{type: A, aggregate_id: x}], expect: {}}\n"
                          "  - {name: n, events: [{type: A, aggregate_id: x}], expect: {}}\n") ==
              "c.yaml:4:5: duplicate case name 'n' (first at c.yaml:3:5)");
        CHECK(parse_error(one_case("{type: A, type: B, aggregate_id: a}")) ==
              "c.yaml:5:19: duplicate key 'type' (first at c.yaml:5:10)");
        CHECK(parse_error("cases: [\n").starts_with("c.yaml:"));
    }

    TEST_CASE("values are never interpolated: a case file is data") {
        CaseFile f = parse_ok(one_case("{type: '${HOME}', aggregate_id: a, payload: {x: '${HOME}'}}"));
        CHECK(f.cases[0].events[0].type == "${HOME}");
        CHECK(f.cases[0].events[0].payload == R"({"x":"${HOME}"})");
    }

    TEST_CASE("a missing file is an error naming it") {
        auto r = load_case_file("/nonexistent/cases.yaml");
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().message() ==
              "cannot read case file '/nonexistent/cases.yaml': No such file or directory");
    }
}

TEST_SUITE("case file: comparing") {
    Case expecting(const std::string &expect) {
        CaseFile f = parse_ok(std::string(kCaseHead) + expect);
        return f.cases[0];
    }

    TEST_CASE("rows matched by primary key; only listed columns compared; types matter") {
        Case c = expecting("      tables:\n"
                           "        accounts:\n"
                           "          - {account_id: b, balance: '2.00'}\n"
                           "          - {account_id: a, version: 1}\n");
        Actual a;
        a.tables["accounts"] =
            accounts({{text("a"), text("1.00"), integer(1)}, {text("b"), text("2.00"), integer(7)}});
        CHECK(compare(c, a, "c.yaml").empty());

        a.tables["accounts"] =
            accounts({{text("a"), text("1.00"), text("1")}, {text("b"), text("2.0"), integer(7)}});
        CHECK(compare(c, a, "c.yaml") ==
              std::vector<std::string>{"table 'accounts', row account_id='b' (expected at c.yaml:9:13):",
                                       "    balance: expected '2.00', got '2.0'",
                                       "table 'accounts', row account_id='a' (expected at c.yaml:10:13):",
                                       "    version: expected 1, got '1'"});
    }

    TEST_CASE("missing and unexpected rows; [] means empty; a table or column that is not there fails") {
        Case c = expecting("      tables:\n"
                           "        accounts:\n"
                           "          - {account_id: a}\n"
                           "          - {account_id: c}\n"
                           "        history: []\n");
        Actual a;
        a.tables["accounts"] =
            accounts({{text("a"), text("1.00"), integer(1)}, {text("b"), text("2.00"), integer(2)}});
        ActualTable history;
        history.exists = true;
        history.columns = {"event_id"};
        history.rows = {{text("e1")}};
        a.tables["history"] = history;
        CHECK(
            compare(c, a, "c.yaml") ==
            std::vector<std::string>{
                "table 'accounts': missing row account_id='c' (expected at c.yaml:10:13)",
                "table 'accounts': unexpected row account_id='b': account_id='b', balance='2.00', version=2",
                "table 'history': unexpected row #1: event_id='e1'"});

        a.tables.erase("history");
        CHECK(compare(c, a, "c.yaml").back() == "table 'history': no such table (expected at c.yaml:11:9)");

        Case typo = expecting("      tables: {accounts: [{acount_id: a}]}\n");
        CHECK(compare(typo, a, "c.yaml") ==
              std::vector<std::string>{
                  "table 'accounts' has no column 'acount_id' (at c.yaml:7:39; the table has: "
                  "account_id, balance, version)"});
    }

    TEST_CASE("rows without their key columns are matched in key order") {
        Case c = expecting("      tables:\n"
                           "        accounts: [{balance: '1.00'}, {balance: '3.00'}]\n");
        Actual a;
        a.tables["accounts"] =
            accounts({{text("a"), text("1.00"), integer(1)}, {text("b"), text("2.00"), integer(2)}});
        CHECK(compare(c, a, "c.yaml") ==
              std::vector<std::string>{"table 'accounts', row #2 (expected at c.yaml:8:39):",
                                       "    balance: expected '3.00', got '2.00'"});
    }

    TEST_CASE("cells: null, booleans as 1/0, numbers, text") {
        Case c = expecting("      tables:\n"
                           "        t: [{k: 1, n: null, b: true, r: 2.5, i: 3, s: 'x'}]\n");
        ActualTable t;
        t.exists = true;
        t.columns = {"k", "n", "b", "r", "i", "s"};
        t.key = {0};
        Cell null_cell, real;
        real.kind = Cell::Kind::real;
        real.d = 2.5;
        t.rows = {{integer(1), null_cell, integer(1), real, integer(3), text("x")}};
        Actual a;
        a.tables["t"] = t;
        CHECK(compare(c, a, "c.yaml").empty());
        t.rows = {{integer(1), text("null"), integer(2), text("2.5"), real, text("y")}};
        a.tables["t"] = t;
        CHECK(compare(c, a, "c.yaml") ==
              std::vector<std::string>{
                  "table 't', row k=1 (expected at c.yaml:8:13):", "    n: expected null, got 'null'",
                  "    b: expected true, got 2", "    r: expected 2.5, got '2.5'",
                  "    i: expected 3, got 2.5", "    s: expected 'x', got 'y'"});
    }

    TEST_CASE("dead letters: exact, contained, near misses, missing, unexpected, none") {
        Case c = expecting("      dead_letters:\n"
                           "        - {event: 1, stage: validate, reason: bad type}\n"
                           "        - {event_id: given, reason_contains: funds}\n");
        Actual a;
        a.dead_letters = {{"given", "project", "insufficient funds: 1", {}},
                          {"1-1", "validate", "bad type", {}}};
        CHECK(compare(c, a, "c.yaml").empty());

        a.dead_letters = {{"1-1", "project", "bad type!", {}}, {"zzz", "validate", "odd", {}}};
        CHECK(
            compare(c, a, "c.yaml") ==
            std::vector<std::string>{"dead letters: event 1 (id '1-1') (expected at c.yaml:8:11):",
                                     "    stage: expected 'validate', got 'project'",
                                     "    reason: expected 'bad type', got 'bad type!'",
                                     "dead letters: missing event 2 (id 'given'), reason containing 'funds' "
                                     "(expected at c.yaml:9:11)",
                                     "dead letters: unexpected id 'zzz', stage 'validate': 'odd'"});

        Case none = expecting("      dead_letters: []\n");
        a.dead_letters = {{"given", "validate", "x", {}}};
        CHECK(
            compare(none, a, "c.yaml") ==
            std::vector<std::string>{"dead letters: unexpected event 2 (id 'given'), stage 'validate': 'x'"});
        a.dead_letters.clear();
        CHECK(compare(none, a, "c.yaml").empty());
        // Not listed: none expected (a rejection nobody listed fails the
        // case; `expect: {}` does not pass with every event rejected).
        Case unlisted = expecting("      tables: {}\n");
        a.dead_letters = {{"given", "validate", "x", {}}};
        CHECK(
            compare(unlisted, a, "c.yaml") ==
            std::vector<std::string>{"dead letters: unexpected event 2 (id 'given'), stage 'validate': 'x'"});
        Case empty = expecting("      {}\n");
        CHECK(compare(empty, a, "c.yaml").size() == 1);
        a.dead_letters.clear();
        CHECK(compare(empty, a, "c.yaml").empty());
    }

    TEST_CASE("dead letters: `event: N` is that event, not another one with the same id") {
        // Events 1 and 3 share an id on purpose (a copy): the dead letter
        // of event 3 does not satisfy `event: 1`.
        CaseFile f = parse_ok("cases:\n"
                              "  - name: c\n"
                              "    events:\n"
                              "      - {type: A, aggregate_id: x, aggregate_type: T, id: dup}\n"
                              "      - {type: B, aggregate_id: x, aggregate_type: T}\n"
                              "      - {type: A, aggregate_id: x, aggregate_type: T, id: dup}\n"
                              "    expect:\n"
                              "      dead_letters: [{event: 1, reason: r}]\n");
        const Case &c = f.cases[0];
        Actual a;
        a.dead_letters = {{"dup", "project", "r", 3}};
        CHECK(compare(c, a, "c.yaml") ==
              std::vector<std::string>{
                  "dead letters: missing event 1 (id 'dup'), reason 'r' (expected at c.yaml:8:22)",
                  "dead letters: unexpected event 3 (id 'dup'), stage 'project': 'r'"});
        a.dead_letters = {{"dup", "project", "r", 1}};
        CHECK(compare(c, a, "c.yaml").empty());
        // `event_id:` takes either.
        CaseFile g = parse_ok("cases:\n"
                              "  - name: c\n"
                              "    events:\n"
                              "      - {type: A, aggregate_id: x, aggregate_type: T, id: dup}\n"
                              "      - {type: A, aggregate_id: x, aggregate_type: T, id: dup}\n"
                              "    expect:\n"
                              "      dead_letters: [{event_id: dup, reason: r}]\n");
        a.dead_letters = {{"dup", "project", "r", 2}};
        CHECK(compare(g.cases[0], a, "c.yaml").empty());
    }
}

TEST_SUITE("case file: reading the results") {
    TEST_CASE("rows in primary key order with their SQLite types; dead letters in order; absent tables") {
        std::filesystem::path dir =
            std::filesystem::temp_directory_path() / ("cdcflow_case_file_" + std::to_string(getpid()));
        std::filesystem::create_directories(dir);
        const std::string db_path = (dir / "r.db").string();
        sqlite3 *db = nullptr;
        REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
        REQUIRE(
            sqlite3_exec(
                db,
                "CREATE TABLE accounts(account_id TEXT PRIMARY KEY, balance TEXT, version INTEGER, r REAL, "
                "b BLOB);"
                "INSERT INTO accounts VALUES ('b', '2.00', 2, 0.5, x'00ff'), ('a', NULL, 1, NULL, NULL);"
                "CREATE TABLE dead_letters(seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT, stage "
                "TEXT, reason TEXT);"
                "INSERT INTO dead_letters(event_id, stage, reason) VALUES ('e2', 's', 'r2'), ('e1', 's', "
                "'r1');"
                "CREATE TABLE dl2(seq INTEGER PRIMARY KEY, event_id TEXT, stage TEXT, reason TEXT, "
                "source_position TEXT);"
                "INSERT INTO dl2(event_id, stage, reason, source_position) VALUES ('e', 's', 'r', '2'), "
                "('e', 's', 'r', 'p@7');",
                nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);

        Case c = parse_ok(std::string(kCaseHead) + "      tables: {accounts: [], missing: []}\n").cases[0];
        auto r = read_actual(db_path, c);
        REQUIRE(r.ok());
        const ActualTable &t = r.value().tables.at("accounts");
        CHECK(t.exists);
        CHECK(t.columns == std::vector<std::string>{"account_id", "balance", "version", "r", "b"});
        CHECK(t.key == std::vector<size_t>{0});
        REQUIRE(t.rows.size() == 2);
        CHECK(t.rows[0][0].bytes == "a");
        CHECK(t.rows[0][1].kind == Cell::Kind::null);
        CHECK(t.rows[1][2].kind == Cell::Kind::integer);
        CHECK(t.rows[1][3].kind == Cell::Kind::real);
        CHECK(t.rows[1][4].kind == Cell::Kind::blob);
        CHECK(t.rows[1][4].bytes == std::string("\0\xff", 2));
        CHECK(shown(t.rows[1][4]) == "a BLOB '\\x00\\xff'");
        CHECK_FALSE(r.value().tables.at("missing").exists);
        REQUIRE(r.value().dead_letters.size() == 2);
        CHECK(r.value().dead_letters[0].event_id == "e2");
        CHECK(r.value().dead_letters[1].reason == "r1");
        CHECK_FALSE(r.value().dead_letters[0].event); // no source_position column
        // source_position is the event's number in the case (its outbox seq).
        auto r2 = read_actual(db_path, c, "dl2");
        REQUIRE(r2.ok());
        REQUIRE(r2.value().dead_letters.size() == 2);
        CHECK(r2.value().dead_letters[0].event == 2u);
        CHECK_FALSE(r2.value().dead_letters[1].event);

        auto gone = read_actual((dir / "nope" / "x.db").string(), c);
        REQUIRE_FALSE(gone.ok());
        CHECK(gone.status().abi() == CDCFLOW_ERR_IO);
        std::filesystem::remove_all(dir);
    }
}

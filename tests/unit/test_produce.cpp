// The producer library (core/produce): the line reader and parser, the
// --rules file loader and the loop, against real files and a real outbox.
// tests/e2e/test_produce.py drives the same through the `cdcflow produce` command.
#include "plugin_harness.hpp" // TempDir

#include "event_lines.hpp"
#include "pipeline.hpp"
#include "producer.hpp"
#include "rules_file.hpp"

#include <cdcflow/outbox_writer.hpp>

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using cdcflow::OutboxEvent;
using cdcflow::produce::EventLineParser;
using cdcflow::produce::LineReader;
using cdcflow::test::TempDir;

namespace {

void write_file(const std::string &path, const std::string &text) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    std::fclose(f);
}

// Parses one line the way the reader hands it over (padded).
struct Parsed {
    bool ok;
    OutboxEvent ev;
    std::string why;
};
Parsed parse_line(EventLineParser &p, const std::string &line) {
    static std::string padded; // owns the bytes ev's views point into
    padded = line;
    padded.append(simdjson::SIMDJSON_PADDING, '\0');
    Parsed r;
    r.ok = p.parse(std::string_view(padded.data(), line.size()), &r.ev, &r.why);
    return r;
}

cdcflow::host::EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string &name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

std::vector<std::string> column(const std::string &db_path, const char *sql) {
    sqlite3 *db = nullptr;
    REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt *st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK);
    std::vector<std::string> out;
    while (sqlite3_step(st) == SQLITE_ROW)
        out.emplace_back(reinterpret_cast<const char *>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

} // namespace

TEST_SUITE("produce") {
    TEST_CASE("the payload is stored as the bytes the producer wrote") {
        EventLineParser p;
        // Spacing, number spelling, brackets and quotes inside strings, and
        // the payload neither first nor last.
        const std::string payload = R"({ "a" : [1.50, "}]"], "b": "\"{", "c": {"d": 1e2} })";
        Parsed r = parse_line(p, R"({"type": "T", "payload" :  )" + payload +
                                     R"(  , "aggregatetype": "A", "aggregateid": "1"})");
        REQUIRE_MESSAGE(r.ok, r.why);
        CHECK(r.ev.payload == payload);
        CHECK(r.ev.type == "T");
        CHECK(r.ev.aggregate_type == "A");
        CHECK(r.ev.aggregate_id == "1");
        CHECK(r.ev.id.empty());
        CHECK_FALSE(r.ev.timestamp_us.has_value());

        // Last, with spaces before the closing brace; its key written with an escape.
        r = parse_line(
            p, R"({"aggregatetype": "A", "aggregateid": "1", "type": "T", "pay\u006coad": {"x":[]}   })");
        REQUIRE_MESSAGE(r.ok, r.why);
        CHECK(r.ev.payload == R"({"x":[]})");
    }

    TEST_CASE("optional fields and null") {
        EventLineParser p;
        Parsed r = parse_line(
            p,
            R"({"id": "e1", "aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {}, "timestamp": 42})");
        REQUIRE_MESSAGE(r.ok, r.why);
        CHECK(r.ev.id == "e1");
        CHECK(r.ev.timestamp_us == 42);
        r = parse_line(
            p,
            R"({"id": null, "aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {}, "timestamp": null})");
        REQUIRE_MESSAGE(r.ok, r.why);
        CHECK(r.ev.id.empty());
        CHECK_FALSE(r.ev.timestamp_us.has_value());
    }

    TEST_CASE("a bad line gets one reason") {
        EventLineParser p;
        CHECK(parse_line(p, R"({"aggregatetype": "A", "type": "T", "payload": {}})").why ==
              R"(missing field "aggregateid")");
        CHECK(
            parse_line(p, R"({"aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": []})").why ==
            "payload: expected a JSON object, got array");
        CHECK(parse_line(p, R"([1])").why == "not a JSON object (got array)");
        CHECK(parse_line(p, R"({"aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {})")
                  .why.rfind("not valid JSON: ", 0) == 0);
        Parsed r = parse_line(p, R"({"aggregatetype": "A", "colour": 1})");
        CHECK_FALSE(r.ok);
        CHECK(r.why ==
              R"(unknown field "colour" (known: id, aggregatetype, aggregateid, type, payload, timestamp))");
    }

    TEST_CASE("lines from a file: the last needs no newline") {
        TempDir dir("produce_lines");
        write_file(dir.file("in"), "one\r\n\ntwo\nthree");
        int fd = ::open(dir.file("in").c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        LineReader reader(fd);
        std::vector<std::string> lines;
        std::string_view line;
        while (reader.next(&line, {}, {}) == LineReader::Got::kLine)
            lines.emplace_back(line);
        ::close(fd);
        CHECK(lines == std::vector<std::string>{"one\r", "", "two", "three"});
    }

    TEST_CASE("a YAML rules file: the validator's typing and interpolation, the file's own positions") {
        TempDir dir("produce_rules");
        const std::string path = dir.file("rules.yaml");
        write_file(path, "# accounts\n"
                         "events:\n"
                         "  AccountCreated:\n"
                         "    owner:\n"
                         "      type: string\n"
                         "      max_length: ${MAX}\n");
        std::string error;
        auto rs = cdcflow::produce::load_rules_file(path, env_of({{"MAX", "3"}}), &error);
        REQUIRE_MESSAGE(rs.has_value(), error);
        cdcflow::rules::Validator v(*rs);
        std::string why;
        CHECK(v.check({"e1", "Account", "acc-1", "AccountCreated", R"({"owner": "Ada"})"}, &why));
        CHECK_FALSE(v.check({"e2", "Account", "acc-1", "AccountCreated", R"({"owner": "Adam"})"}, &why));

        // Undefined variable: where the value is in the file itself.
        CHECK_FALSE(cdcflow::produce::load_rules_file(path, env_of({}), &error).has_value());
        CHECK(error ==
              path + ":6:19: undefined environment variable 'MAX' (use ${MAX:-default} to give a default)");

        write_file(path, "events:\n  A: {x: {type: string}\n");
        CHECK_FALSE(cdcflow::produce::load_rules_file(path, env_of({}), &error).has_value());
        CHECK(error.rfind(path + ":3:1: invalid YAML: ", 0) == 0);

        write_file(path, "events: {A: {}}\n---\nevents: {B: {}}\n");
        CHECK_FALSE(cdcflow::produce::load_rules_file(path, env_of({}), &error).has_value());
        CHECK(error == path + ":2:1: a second YAML document: a rules file holds one");
    }

    TEST_CASE("a JSON rules file is taken literally; a YAML flow mapping is YAML") {
        TempDir dir("produce_json_rules");
        const std::string path = dir.file("rules.json");
        std::string error, why;
        write_file(path, R"({"events": {"A": {"x": {"type": "string", "max_length": "${X}"}}}})");
        CHECK_FALSE(cdcflow::produce::load_rules_file(path, env_of({{"X", "3"}}), &error).has_value());
        CHECK(error.rfind(path + ": events.A.x.max_length: ", 0) == 0);

        write_file(path, "{events: {A: {x: {type: string, max_length: 3}}}}\n");
        auto rs = cdcflow::produce::load_rules_file(path, env_of({}), &error);
        REQUIRE_MESSAGE(rs.has_value(), error);
        cdcflow::rules::Validator v(*rs);
        CHECK(v.check({"e1", "A", "1", "A", R"({"x": "abc"})"}, &why));
        CHECK_FALSE(v.check({"e2", "A", "1", "A", R"({"x": "abcd"})"}, &why));
    }

    TEST_CASE("a pipeline file: the rules of its first validator stage") {
        TempDir dir("produce_pipeline");
        const std::string path = dir.file("p.yaml");
        write_file(path, "pipeline: p\n"
                         "stages:\n"
                         "  - {id: s, plugin: outbox_source}\n"
                         "  - id: v1\n"
                         "    plugin: validator\n"
                         "    config:\n"
                         "      rules: {events: {First: {}}}\n"
                         "  - id: v2\n"
                         "    plugin: validator\n"
                         "    config: {rules: {events: {Second: {}}}}\n");
        std::string error, why;
        auto rs = cdcflow::produce::load_rules_file(path, env_of({}), &error);
        REQUIRE_MESSAGE(rs.has_value(), error);
        cdcflow::rules::Validator v(*rs);
        CHECK(v.check({"e1", "A", "1", "First", "{}"}, &why));
        CHECK_FALSE(v.check({"e1", "A", "1", "Second", "{}"}, &why));
    }

    TEST_CASE("the loop: refused lines by number, the rest written, blank lines skipped") {
        TempDir dir("produce_loop");
        const std::string in = dir.file("in.jsonl"), db = dir.file("o.db");
        write_file(
            in, R"({"id": "a", "aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {"n": 1}})"
                "\n\n"
                "{oops\n"
                R"({"id": "b", "aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {"n": 2}})"
                "\n"
                R"({"id": "a", "aggregatetype": "A", "aggregateid": "1", "type": "T", "payload": {"n": 1}})"
                "\n");
        cdcflow::OutboxWriterOptions wo;
        wo.create_schema = true;
        std::unique_ptr<cdcflow::OutboxWriter> writer;
        REQUIRE(cdcflow::OutboxWriter::open(db, std::move(wo), &writer).ok());
        std::vector<uint64_t> refused;
        cdcflow::produce::ProduceHooks hooks;
        hooks.refused = [&](uint64_t line_no, std::string_view) { refused.push_back(line_no); };
        int fd = ::open(in.c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        cdcflow::produce::ProduceOutcome out = cdcflow::produce::produce_lines(fd, *writer, hooks);
        ::close(fd);
        CHECK(out.end == cdcflow::produce::ProduceOutcome::End::kDone);
        CHECK(out.lines == 5);
        CHECK(out.refused_here == 1);
        CHECK(refused == std::vector<uint64_t>{3});
        CHECK(writer->metrics().written == 2);
        CHECK(writer->metrics().duplicates == 1);
        writer.reset();
        CHECK(column(db, "SELECT payload FROM outbox ORDER BY seq") ==
              std::vector<std::string>{R"({"n": 1})", R"({"n": 2})"});
    }
}

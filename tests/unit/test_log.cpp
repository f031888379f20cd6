// core/src/log.cpp: the two line formats, above all what hostile text
// becomes in them (one line, valid UTF-8, valid JSON), and the plugin rate limit.
#include "base/utf8.hpp"
#include "log.hpp"
#include "pipeline.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <pty.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <string>

using namespace cdcflow::host;

namespace {

constexpr int64_t kT = 1700000000123456; // 2023-11-14T22:13:20.123456Z

std::string text(std::string_view who, std::string_view msg, cdcflow_log_level l = CDCFLOW_LOG_INFO) {
    return render_log_line(LogFormat::text, l, "p", who, msg, "", {}, kT);
}

std::string json(std::string_view msg, std::string_view event = "",
                 std::initializer_list<LogField> fields = {}, std::string_view pipeline = "accounts") {
    return render_log_line(LogFormat::json, CDCFLOW_LOG_WARN, pipeline, "outbox", msg, event, fields, kT);
}

// One line: ends in its only newline, no other control byte, valid UTF-8.
void check_one_line(const std::string &line) {
    REQUIRE(!line.empty());
    CHECK(line.back() == '\n');
    std::string body = line.substr(0, line.size() - 1);
    for (char c : body)
        CHECK_MESSAGE(static_cast<unsigned char>(c) >= 0x20, line);
    CHECK(cdcflow::base::valid_utf8(body));
    // No Unicode line break or C1 control either.
    for (size_t i = 0; i + 1 < body.size(); ++i) {
        auto b = [&](size_t k) { return i + k < body.size() ? static_cast<unsigned char>(body[i + k]) : 0u; };
        CHECK_MESSAGE(!(b(0) == 0xC2 && b(1) >= 0x80 && b(1) <= 0x9F), line);
        CHECK_MESSAGE(!(b(0) == 0xE2 && b(1) == 0x80 && (b(2) == 0xA8 || b(2) == 0xA9)), line);
    }
}

} // namespace

TEST_CASE("log text format: timestamp, level, [who], the message") {
    CHECK(text("host", "pipeline 'x' starting") ==
          "2023-11-14T22:13:20.123Z info  [host] pipeline 'x' starting\n");
    CHECK(text("src", "m", CDCFLOW_LOG_WARN) == "2023-11-14T22:13:20.123Z warn  [src] m\n");
    CHECK(text("src", "m", CDCFLOW_LOG_ERROR) == "2023-11-14T22:13:20.123Z error [src] m\n");
    CHECK(text("src", "m", CDCFLOW_LOG_DEBUG) == "2023-11-14T22:13:20.123Z debug [src] m\n");
    // A level a plugin made up is logged as info, not refused.
    CHECK(text("src", "m", static_cast<cdcflow_log_level>(77)) == "2023-11-14T22:13:20.123Z info  [src] m\n");
}

TEST_CASE("log text format: a message cannot forge a second line") {
    std::string line = text("spam", "a\nZ error [host] forged\r\x1b[31m\xff\xfe caf\xc3\xa9 \"q\" \\ \t end");
    CHECK(line == "2023-11-14T22:13:20.123Z info  [spam] a\\x0aZ error [host] forged\\x0d\\x1b[31m\\xff\\xfe "
                  "caf\xc3\xa9 \"q\" \\ \\x09 end\n");
    check_one_line(line);
    // The name is escaped too (a plugin-made id could hold anything).
    CHECK(text("a]\nb", "m") == "2023-11-14T22:13:20.123Z info  [a]\\x0ab] m\n");
}

TEST_CASE("log JSON format: the documented members, fields after them") {
    std::string line =
        json("retrying", "retry", {{"attempt", 2}, {"call", "process"}, {"ok", false}, {"s", 0.5}});
    CHECK(line == R"({"ts":"2023-11-14T22:13:20.123Z","level":"warn","pipeline":"accounts","stage":"outbox",)"
                  R"("event":"retry","msg":"retrying","attempt":2,"call":"process","ok":false,"s":0.5})"
                  "\n");
    // No pipeline yet (before the file is read), no event: not written.
    CHECK(json("m", "", {}, "") ==
          R"({"ts":"2023-11-14T22:13:20.123Z","level":"warn","stage":"outbox","msg":"m"})"
          "\n");
    // A field cannot replace the line's own members; an empty key is left out;
    // a number JSON cannot hold is null.
    auto j = nlohmann::json::parse(
        json("m", "e", {{"level", "error"}, {"msg", "forged"}, {"", "x"}, {"nan", std::nan("")}, {"n", -5}}));
    CHECK(j["level"] == "warn");
    CHECK(j["msg"] == "m");
    CHECK(j.size() == 8); // ts level pipeline stage event msg nan n
    CHECK(j["nan"].is_null());
    CHECK(j["n"] == -5);
}

TEST_CASE("log JSON format: hostile text is escaped, the line stays valid JSON") {
    const std::string hostile =
        "a\n{\"level\":\"error\"}\r\x1b[31m\x01\x7f \xff\xfe \xc3\x28 caf\xc3\xa9 \xed\xa0\x80 "
        "\"q\" \\ \t end";
    std::string line = json(hostile, "x\n\"y", {{"k\n\xff", "v\x02\xfe"}});
    check_one_line(line);
    auto j = nlohmann::json::parse(line);
    // The text itself, with invalid UTF-8 as the text \xNN (a surrogate's
    // encoding is invalid UTF-8 too).
    CHECK(j["msg"] ==
          "a\n{\"level\":\"error\"}\r\x1b[31m\x01\x7f \\xff\\xfe \\xc3( caf\xc3\xa9 \\xed\\xa0\\x80 "
          "\"q\" \\ \t end");
    CHECK(j["level"] == "warn");
    CHECK(j["event"] == "x\n\"y");
    CHECK(j["k\n\\xff"] == "v\x02\\xfe");
}

TEST_CASE("log: Unicode line breaks and C1 controls are escaped in both formats") {
    // NEL (U+0085), a C1 CSI (U+009B), LINE and PARAGRAPH SEPARATOR: Python's
    // splitlines() and some viewers break lines there. Other characters stay.
    const std::string s = "a\xc2\x85"
                          "b\xc2\x9b"
                          "c\xe2\x80\xa8"
                          "d\xe2\x80\xa9"
                          "e\xc2\xa0\xe2\x80\x94 caf\xc3\xa9";
    CHECK(text("s", s) ==
          "2023-11-14T22:13:20.123Z info  [s] a\\xc2\\x85b\\xc2\\x9bc\\xe2\\x80\\xa8d\\xe2\\x80\\xa9"
          "e\xc2\xa0\xe2\x80\x94 caf\xc3\xa9\n");
    std::string j = json(s);
    CHECK(j.find(R"("msg":"a\u0085b\u009Bc\u2028d\u2029e)"
                 "\xc2\xa0\xe2\x80\x94 caf\xc3\xa9\"") != std::string::npos);
    CHECK(nlohmann::json::parse(j)["msg"] == s); // the same text once decoded
}

TEST_CASE("log lines stay one valid line for any bytes (random messages)") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> len(0, 64), byte(0, 255);
    for (int i = 0; i < 2000; ++i) {
        std::string msg;
        for (int n = len(rng); n > 0; --n)
            msg += static_cast<char>(byte(rng));
        check_one_line(text("s", msg));
        std::string j = json(msg, "e", {{"f", msg}});
        check_one_line(j);
        CHECK(nlohmann::json::accept(j));
    }
}

TEST_CASE("log: a huge message is cut, in both formats") {
    std::string big(100000, 'x');
    std::string t = text("s", big);
    CHECK(t.size() < 17000);
    CHECK(t.ends_with("x...\n"));
    auto j = nlohmann::json::parse(json(big));
    CHECK(j["msg"].get<std::string>().size() == 16 * 1024 + 3);
    // Not inside a character.
    std::string accents;
    while (accents.size() < 20000)
        accents += "\xc3\xa9";
    check_one_line(text("s", "x" + accents));
    check_one_line(json("x" + accents));
}

TEST_CASE("log level and format names") {
    cdcflow_log_level l;
    CHECK(parse_log_level("warn", &l));
    CHECK(l == CDCFLOW_LOG_WARN);
    CHECK_FALSE(parse_log_level("warning", &l));
    LogFormat f;
    CHECK(parse_log_format("json", &f));
    CHECK(f == LogFormat::json);
    CHECK(parse_log_format("auto", &f));
    CHECK(f == LogFormat::text);
    CHECK_FALSE(parse_log_format("JSON", &f));
}

TEST_CASE("pipeline file: the log mapping") {
    auto env = [](const std::string &) -> std::optional<std::string> { return std::nullopt; };
    const std::string stages = "stages:\n  - {id: a, plugin: x}\n";
    auto def = parse_pipeline("pipeline: p\nlog: {level: debug, format: json, plugin_lines_per_second: 0}\n" +
                                  stages,
                              "p.yaml", env);
    REQUIRE(def.ok());
    CHECK(def.value().log.level == CDCFLOW_LOG_DEBUG);
    CHECK(def.value().log.format == LogFormat::json);
    CHECK(def.value().log.plugin_lines_per_second == 0);
    // Absent: nothing chosen, the default limit.
    def = parse_pipeline("pipeline: p\n" + stages, "p.yaml", env);
    REQUIRE(def.ok());
    CHECK_FALSE(def.value().log.level.has_value());
    CHECK_FALSE(def.value().log.format.has_value());
    CHECK(def.value().log.plugin_lines_per_second == kDefaultPluginLinesPerSecond);
    def = parse_pipeline("pipeline: p\nlog: {format: [json]}\n" + stages, "p.yaml", env);
    REQUIRE_FALSE(def.ok());
    CHECK(def.status().message() == "p.yaml:2:7: log.format must be one of text, json, auto, got a sequence");
}

TEST_CASE("PluginLogLimiter: N lines a second pass, the rest are counted") {
    set_log_level(CDCFLOW_LOG_ERROR); // the limiter's own warning is not what this checks
    set_plugin_log_limit(10);
    {
        PluginLogLimiter lim("t");
        int passed = 0;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 1000; ++i)
            passed += lim.admit() ? 1 : 0;
        // At most 10 in each second that began (however slow the machine).
        auto secs =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0).count();
        CHECK(passed >= 10);
        CHECK(passed <= 10 * (secs + 1));
        CHECK(lim.suppressed_total() == static_cast<uint64_t>(1000 - passed));
    }
    set_plugin_log_limit(0);
    PluginLogLimiter unlimited("u");
    for (int i = 0; i < 1000; ++i)
        REQUIRE(unlimited.admit());
    CHECK(unlimited.suppressed_total() == 0);
    flush_suppressed_logs(); // while the level hides the report
    set_plugin_log_limit(kDefaultPluginLinesPerSecond);
    set_log_level(CDCFLOW_LOG_INFO);
}

namespace {

// Runs `f` with fd 2 moved onto `fd` (a terminal's slave side, a pipe), then
// puts stderr back.
template <typename F> void with_stderr(int fd, F &&f) {
    std::fflush(stderr);
    int saved = dup(STDERR_FILENO);
    REQUIRE(saved >= 0);
    dup2(fd, STDERR_FILENO);
    f();
    dup2(saved, STDERR_FILENO);
    close(saved);
}

std::string drain_fd(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN)) break;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

} // namespace

TEST_CASE("log: a status line on a terminal stays below the log lines; none on a pipe") {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
        MESSAGE("no pseudo-terminal here: skipped");
        return;
    }
    with_stderr(slave, [] {
        set_status_line("bar 1");
        log_line(CDCFLOW_LOG_WARN, "host", "hello");
        set_status_line("bar \n2"); // one line, whatever the text
        end_status_line("bar 3");
        log_line(CDCFLOW_LOG_WARN, "host", "after");
    });
    std::string got = drain_fd(master);
    close(slave);
    close(master);
    // The terminal turns "\n" into "\r\n".
    {
        std::string plain;
        for (size_t i = 0; i < got.size(); ++i)
            if (!(got[i] == '\r' && i + 1 < got.size() && got[i + 1] == '\n')) plain += got[i];
        got = plain;
    }
    const std::string erase = "\r\033[K";
    const size_t hello = got.find("hello\n");
    REQUIRE(hello != std::string::npos);
    // The bar, then erased for the log line, which ends before the bar comes back.
    CHECK(got.rfind(erase + "bar 1" + erase, hello) == 0);
    CHECK(got.substr(hello, 11) == "hello\nbar 1");
    CHECK(got.find(erase + "bar \\x0a2" + erase + "bar 3\n", hello) != std::string::npos);
    // After the end, log lines are plain again: no erase before them.
    const size_t after = got.find("after\n");
    REQUIRE(after != std::string::npos);
    CHECK(got.find(erase, got.find("bar 3\n")) == std::string::npos);

    int fds[2];
    REQUIRE(pipe(fds) == 0);
    with_stderr(fds[1], [] {
        set_status_line("invisible");
        log_line(CDCFLOW_LOG_WARN, "host", "plain");
        end_status_line("invisible");
    });
    close(fds[1]);
    std::string piped = drain_fd(fds[0]);
    close(fds[0]);
    CHECK(piped.find("plain\n") != std::string::npos);
    CHECK(piped.find("invisible") == std::string::npos);
    CHECK(piped.find('\r') == std::string::npos);
}

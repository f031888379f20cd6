// core/base: the one escaping helper, the one UTF-8 check, the one UTC format,
// byte sizes, durations, the resident memory.
#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/duration.hpp"
#include "base/process.hpp"
#include "base/text.hpp"
#include "base/utf8.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace base = cdcflow::base;
using base::Quoting;

TEST_CASE("base::append_quoted: one line of valid UTF-8 whatever the bytes") {
    // The reason format: quote and backslash escaped, control and non-ASCII
    // bytes as lowercase \xNN.
    CHECK(base::quoted("a\"b\\c\n\x01\x7f\xff caf\xc3\xa9") == R"("a\"b\\c\x0a\x01\x7f\xff caf\xc3\xa9")");
    CHECK(base::quoted("it's", {'\''}) == R"('it\'s')");
    CHECK(base::quoted("") == R"("")");
    // keep_utf8: valid characters stay, invalid bytes and controls do not.
    CHECK(base::quoted("caf\xc3\xa9 \xff\xe2\x82\n", {'"', 40, true}) ==
          "\"caf\xc3\xa9 \\xff\\xe2\\x82\\x0a\"");
    // No quote: nothing but unsafe bytes is escaped.
    CHECK(base::quoted("a\"b\\ \t", {0, SIZE_MAX, true}) == "a\"b\\ \\x09");
}

TEST_CASE("base::append_quoted cuts long text at a boundary, never inside an escape or a character") {
    CHECK(base::quoted(std::string(50, 'x')) == "\"" + std::string(40, 'x') + "...\"");
    CHECK(base::quoted(std::string(40, 'x')) ==
          "\"" + std::string(40, 'x') + "\""); // exactly the limit: no cut
    std::string nl;
    for (int i = 0; i < 40; ++i)
        nl += "\\x0a";
    CHECK(base::quoted(std::string(45, '\n')) == "\"" + nl + "...\"");
    // A two-byte character across the limit is left out whole.
    CHECK(base::quoted(std::string(63, 'a') + "\xc3\xa9", {0, 64, true}) == std::string(63, 'a') + "...");
    CHECK(base::quoted(std::string(62, 'a') + "\xc3\xa9", {0, 64, true}) ==
          std::string(62, 'a') + "\xc3\xa9");
    // What core/src/pipeline.cpp's quote() does (single quotes, UTF-8 kept,
    // 200 bytes cut at a character boundary, "..." inside the quotes):
    const Quoting kPipeline{'\'', 200, true};
    CHECK(base::quoted("caf\xc3\xa9\tbar", kPipeline) == "'caf\xc3\xa9\\x09bar'");
    std::string long_text = std::string(199, 'y') + "\xc3\xa9z";
    CHECK(base::quoted(long_text, kPipeline) == "'" + std::string(199, 'y') + "...'");
}

TEST_CASE("base::append_text: verbatim when clean, else quoted and escaped") {
    CHECK(base::text("/tmp/a b.db") == "/tmp/a b.db");
    CHECK(base::text("/tmp/caf\xc3\xa9.db", '\'') == "'/tmp/caf\xc3\xa9.db'");
    CHECK(base::text("caf\xe9\nx.db", '\'') == R"('caf\xe9\x0ax.db')");
    CHECK(base::text("bad\x01") == R"("bad\x01")");
    std::string ten;
    for (int i = 0; i < 10; ++i)
        ten += "\\x02";
    CHECK(base::text(std::string(300, '\x02'), 0, 10) == "\"" + ten + "...\"");
}

TEST_CASE("base::escape_invalid_utf8 escapes only what is not UTF-8") {
    CHECK(base::escape_invalid_utf8("caf\xc3\xa9 ok") == "caf\xc3\xa9 ok");
    CHECK(base::escape_invalid_utf8("a\xff\xfe b, cut \xe2\x82") == R"(a\xff\xfe b, cut \xe2\x82)");
    CHECK(base::escape_invalid_utf8("line\nbreak") == "line\nbreak"); // controls are valid UTF-8: kept
}

TEST_CASE(
    "base::valid_utf8 rejects overlong forms, surrogates, cut sequences and code points past U+10FFFF") {
    CHECK(base::valid_utf8(""));
    CHECK(base::valid_utf8("plain ascii"));
    CHECK(base::valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"));
    for (const char *bad : {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
                            "\xff", "\x80", "ok\xc3"}) {
        INFO(bad);
        CHECK_FALSE(base::valid_utf8(bad));
        CHECK(base::utf8_length(bad, 0) == (bad[0] == 'o' ? 1u : 0u));
    }
    // The simdjson check (long text) and the per-character walk (escaping)
    // agree on random bytes biased towards UTF-8's lead and continuation bytes.
    std::mt19937 rng(20261130);
    const unsigned char kBytes[] = {'a',  0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc2, 0xc3,
                                    0xdf, 0xe0, 0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xc0, 0xff};
    for (int round = 0; round < 20000; ++round) {
        std::string s(rng() % 12, 'a');
        for (char &c : s)
            c = static_cast<char>(kBytes[rng() % sizeof kBytes]);
        bool walk = true;
        for (size_t i = 0; i < s.size() && walk;) {
            size_t n = base::utf8_length(s, i);
            walk = n != 0;
            i += n;
        }
        REQUIRE(base::valid_utf8(s) == walk);
        REQUIRE(base::valid_utf8(base::escape_invalid_utf8(s)));
    }
}

TEST_CASE("base::utf8_floor never lands inside a character") {
    const std::string s = "a\xc3\xa9\xe2\x82\xac";
    CHECK(base::utf8_floor(s, 0) == 0);
    CHECK(base::utf8_floor(s, 1) == 1);
    CHECK(base::utf8_floor(s, 2) == 1);
    CHECK(base::utf8_floor(s, 3) == 3);
    CHECK(base::utf8_floor(s, 5) == 3);
    CHECK(base::utf8_floor(s, 6) == 6);
}

TEST_CASE("base::append_utc: ISO 8601 UTC for every int64, digits cut not rounded") {
    using D = base::UtcDigits;
    CHECK(base::utc(0) == "1970-01-01T00:00:00Z");
    CHECK(base::utc(1'500'000) == "1970-01-01T00:00:01.500000Z");
    CHECK(base::utc(1'500'000, D::kSeconds) == "1970-01-01T00:00:01Z");
    CHECK(base::utc(1'999'999, D::kMillis) == "1970-01-01T00:00:01.999Z");
    CHECK(base::utc(0, D::kMillis) == "1970-01-01T00:00:00.000Z");
    CHECK(base::utc(1'714'564'800'000'000) == "2024-05-01T12:00:00Z");
    // Before the epoch: the second the instant is in.
    CHECK(base::utc(-1) == "1969-12-31T23:59:59.999999Z");
    CHECK(base::utc(-1, D::kSeconds) == "1969-12-31T23:59:59Z");
    // The extremes never crash and stay one short line.
    for (int64_t us : {INT64_MIN, INT64_MAX}) {
        std::string s = base::utc(us);
        CHECK(!s.empty());
        CHECK(s.size() < 40);
        CHECK((s.back() == 'Z' || s == "(not a date)"));
    }
}

TEST_CASE("base::wall_us is the system clock in microseconds") {
    // A window of an hour: it tells microseconds from milliseconds and the
    // system clock from the steady one, and a clock step cannot break it.
    const int64_t want = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    const int64_t got = base::wall_us();
    CHECK(got > want - 3'600'000'000);
    CHECK(got < want + 3'600'000'000);
}

TEST_CASE("base::parse_bytes: an integer, or one with a binary unit; nothing else") {
    CHECK(base::parse_bytes("0") == 0u);
    CHECK(base::parse_bytes("67108864") == 67108864u);
    CHECK(base::parse_bytes("64MiB") == 64u << 20);
    CHECK(base::parse_bytes("512 MiB") == 512u << 20);
    CHECK(base::parse_bytes("1KiB") == 1024u);
    CHECK(base::parse_bytes("3GiB") == uint64_t{3} << 30);
    CHECK(base::parse_bytes("2TiB") == uint64_t{2} << 40);
    CHECK(base::parse_bytes("18446744073709551615") == UINT64_MAX);
    for (const char *bad : {"", " ", "-1", "+5", "1.5MiB", "64MB", "64mib", "64 ", "64  MiB", "MiB", "0x10",
                            "18446744073709551616", "16777216TiB", "64MiB ", "64 MiBx"})
        CHECK_MESSAGE(!base::parse_bytes(bad), bad);
}

TEST_CASE("base::parse_duration_s: a whole number and one unit (s, m, h, d, w); nothing else") {
    CHECK(base::parse_duration_s("30d") == 30 * 86400);
    CHECK(base::parse_duration_s("12h") == 12 * 3600);
    CHECK(base::parse_duration_s("90m") == 90 * 60);
    CHECK(base::parse_duration_s("45s") == 45);
    CHECK(base::parse_duration_s("2w") == 14 * 86400);
    CHECK(base::parse_duration_s("0s") == 0);
    CHECK(base::parse_duration_s("007d") == 7 * 86400);
    // The largest count whose microseconds still fit an int64_t.
    CHECK(base::parse_duration_s("9223372036854s") == 9223372036854);
    for (const char *bad : {"", "d", "30", "30x", "30D", " 30d", "30d ", "30 d", "-1d", "+1d", "1.5h",
                            "1d12h", "0x10s", "9223372036855s", "106751992d", "99999999999999999999d"})
        CHECK_MESSAGE(!base::parse_duration_s(bad), bad);
}

TEST_CASE("base::format_bytes: one decimal past the unit, cut not rounded") {
    CHECK(base::format_bytes(0) == "0 B");
    CHECK(base::format_bytes(1023) == "1023 B");
    CHECK(base::format_bytes(1024) == "1.0 KiB");
    CHECK(base::format_bytes(1536) == "1.5 KiB");
    CHECK(base::format_bytes((uint64_t{64} << 20) - 1) == "63.9 MiB"); // just under 64 MiB is not "64.0"
    CHECK(base::format_bytes(uint64_t{3} << 30) == "3.0 GiB");
    CHECK(base::format_bytes(UINT64_MAX) == "15.9 EiB");
}

TEST_CASE("base::resident_bytes: this process's resident memory, and it sees an allocation touched") {
    const uint64_t before = base::resident_bytes();
    REQUIRE(before > 0);
    // 64 MiB written to: resident now, whatever the allocator kept before.
    std::vector<char> big(64u << 20, 1);
    const uint64_t after = base::resident_bytes();
    CHECK(after >= before + (32u << 20));
    CHECK(big[12345] == 1);
}

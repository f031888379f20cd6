// Exact money: int64 cents, never floating point. parse() accepts exactly
// the amount grammar of DESIGN.md (digits, an optional point and one or two
// decimals: "12", "12.5", "12.34"); format() writes two decimals ("12.30").
//
// A local helper until the project-wide cdcflow::rules::Decimal is unified
// with it; it allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cdcflow::projection::money {

// The largest balance an account may hold: 999999999.99.
inline constexpr int64_t kMaxBalance = 99'999'999'999;

enum class ParseError { ok, empty, syntax, too_many_decimals, too_large };

// Parses s into cents. No sign, no exponent, no spaces, no leading or
// trailing point ("12." and ".5" are rejected): a syntax error rather than a
// guess. Leading zeros are fine ("007.50" is 7.50).
inline ParseError parse(std::string_view s, int64_t &cents) {
    if (s.empty()) return ParseError::empty;
    size_t i = 0;
    int64_t units = 0;
    bool too_large = false;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
        // Keep scanning after an overflow so that "99999999999999999999x"
        // reports the syntax error, not the size.
        if (!too_large &&
            (__builtin_mul_overflow(units, 10, &units) || __builtin_add_overflow(units, s[i] - '0', &units)))
            too_large = true;
    }
    if (i == 0) return ParseError::syntax;
    int64_t frac = 0;
    if (i < s.size()) {
        if (s[i] != '.') return ParseError::syntax;
        size_t start = ++i;
        for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
        }
        if (i != s.size() || i == start) return ParseError::syntax;
        if (i - start > 2) return ParseError::too_many_decimals;
        frac = (s[start] - '0') * 10 + (i - start == 2 ? s[start + 1] - '0' : 0);
    }
    if (too_large || __builtin_mul_overflow(units, 100, &units) ||
        __builtin_add_overflow(units, frac, &units))
        return ParseError::too_large;
    cents = units;
    return ParseError::ok;
}

// Writes cents as "-12.30" / "0.05" into buf (at least 24 bytes, not
// NUL-terminated); returns the length.
inline size_t format(int64_t cents, char *buf) {
    // Work in unsigned so INT64_MIN formats too.
    bool neg = cents < 0;
    uint64_t v = neg ? 0 - static_cast<uint64_t>(cents) : static_cast<uint64_t>(cents);
    char tmp[24];
    size_t n = 0;
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
    tmp[n++] = '.';
    do {
        tmp[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    size_t len = 0;
    if (neg) buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    return len;
}

inline std::string to_string(int64_t cents) {
    char buf[24];
    return std::string(buf, format(cents, buf));
}

} // namespace cdcflow::projection::money

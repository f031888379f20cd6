// Exact money for the projection: int64 cents, never floating point, read
// and written by the project's one decimal type, rules::Decimal, at scale 2.
// parse() accepts exactly the amount grammar of DESIGN.md (digits, an
// optional point and one or two decimals: "12", "12.5", "12.34"); format()
// writes two decimals ("12.30"). Neither allocates.
//
// The projection bounds amounts by value (kMaxBalance, and a sum that would
// pass it), not by how many digits they are written with, so it reads them
// with Decimal::parse_within_int64: any value whose cents fit in int64.
#pragma once

#include <cdcflow/rules.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cdcflow::projection::money {

inline constexpr int kScale = 2; // cents

// The largest balance an account may hold: 999999999.99.
inline constexpr int64_t kMaxBalance = 99'999'999'999;

// What the projection's reasons distinguish.
enum class ParseError { ok, empty, syntax, too_many_decimals, too_large };

// Parses s into cents. No sign, no exponent, no spaces, no leading or
// trailing point ("12." and ".5" are rejected): a syntax error rather than a
// guess. Leading zeros are fine ("007.50" is 7.50).
inline ParseError parse(std::string_view s, int64_t &cents) {
    using E = rules::Decimal::ParseError;
    rules::Decimal d;
    switch (rules::Decimal::parse_within_int64(s, kScale, &d)) {
    case E::kNone:
        cents = d.units();
        return ParseError::ok;
    case E::kEmpty:
        return ParseError::empty;
    case E::kTooManyDecimals:
        return ParseError::too_many_decimals;
    case E::kTooManyIntegerDigits: // not with parse_within_int64; kept for completeness
    case E::kOutOfRange:
        return ParseError::too_large;
    case E::kNotDecimal:
    case E::kNoIntegerDigit:
    case E::kNoFractionDigit:
    case E::kBadScale:
        break;
    }
    return ParseError::syntax;
}

// Writes cents as "-12.30" / "0.05" into buf (at least
// rules::Decimal::kMaxTextSize bytes, not NUL-terminated); returns the length.
inline size_t format(int64_t cents, char *buf) {
    return rules::Decimal(cents, kScale).format(buf);
}

inline std::string to_string(int64_t cents) {
    return rules::Decimal(cents, kScale).to_string();
}

} // namespace cdcflow::projection::money

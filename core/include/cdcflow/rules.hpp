// cdcflow/rules.hpp: declarative event validation and exact decimals.
//
// Shared by the validator stage, the producer (`cdcflow produce`) and the
// projection, so it depends on nothing in the host. Three pieces:
//
//   Decimal    an exact fixed-point number (int64 units scaled by 10^scale)
//              for money: parse "12.34", add, compare, format back. No
//              floating point anywhere.
//   RuleSet    the parsed, immutable rules (which event types exist, which
//              payload fields each one has and their constraints).
//   Validator  checks one event against a RuleSet; holds the reusable JSON
//              parser and buffers, so keep one per thread.
//
// Rules are given as JSON (the `rules:` mapping of a pipeline file):
//
//   {"aggregate_types": ["Account"],                       // optional
//    "max_payload_bytes": 1048576,                         // optional
//    "events": {                                           // required
//      "AccountCreated": {"owner": {"type": "string", "min_length": 1},
//                         "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
//      "MoneyDeposited": {"amount": {"type": "decimal", "max_decimals": 2,
//                                    "min_exclusive": "0", "max": "999999999.99"}},
//      "AccountClosed": {}}}
//
// Field rule keys, by type (every field is required unless "optional": true;
// an optional field may be absent or null; extra payload fields are allowed):
//   string   min_length, max_length (Unicode code points), pattern (POSIX
//            extended regex, unanchored unless written with ^...$; only run on
//            strings of at most kMaxPatternInput bytes without NUL characters:
//            longer ones, or ones containing NUL, fail the rule)
//   decimal  max_decimals (required, 0..9); min, min_exclusive, max,
//            max_exclusive as decimal strings (or JSON integers). The value
//            must be a JSON string, see Decimal::parse.
//   integer  min, max (JSON integers); the value must be a JSON integer
//   number   min, max (JSON numbers); the value any JSON number
//   boolean, object, array: type only
// Integer and boolean rule parameters may also be written as strings ("2",
// "true") because YAML scalars reach us untyped. Unknown keys are errors.
//
// Besides the payload, an event's envelope is checked: event id and aggregate
// id non-empty, all four envelope strings valid UTF-8, event type listed under
// `events`, aggregate type listed under `aggregate_types` when that is given. The payload must be a JSON
// object (valid UTF-8, nesting at most 1024 deep, at most max_payload_bytes bytes; default 1 MiB, which
// bounds the parser's memory at about 14 bytes per payload byte). A payload key that a rule names may appear
// only once.
#pragma once

#include <cdcflow/plugin.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cdcflow::rules {

// An exact decimal: units / 10^scale, e.g. {1234, 2} is 12.34.
//
// Thread-safety: a plain value type.
class Decimal {
public:
    static constexpr int kMaxScale = 9;
    // More integer digits than this are refused by parse (as written, leading
    // zeros included): 15 digits survive even a consumer that holds amounts
    // in a double, and leave int64 headroom for sums at the usual money scales.
    static constexpr int kMaxIntegerDigits = 15;
    // Longest text format() writes: "-9223372036.854775808".
    static constexpr size_t kMaxTextSize = 24;

    enum class ParseError : uint8_t {
        kNone = 0,
        kEmpty,                // ""
        kNotDecimal,           // a sign, exponent, space, non-ASCII digit, second '.'...
        kNoIntegerDigit,       // ".5"
        kNoFractionDigit,      // "1."
        kTooManyDecimals,      // more than `scale` digits after '.'
        kTooManyIntegerDigits, // more than kMaxIntegerDigits before '.'
        kOutOfRange,           // does not fit in int64 units at this scale
        kBadScale,             // scale outside 0..kMaxScale
    };

    // Zero at scale 0.
    constexpr Decimal() noexcept = default;
    // REQUIRES: 0 <= scale <= kMaxScale (out-of-range scales are clamped).
    constexpr Decimal(int64_t units, int scale) noexcept
        : units_(units), scale_(scale < 0           ? 0
                                : scale > kMaxScale ? kMaxScale
                                                    : scale) {}

    // Parses `text`: ASCII digits with an optional '.' followed by at least
    // one and at most `scale` digits ("12", "12.5", "12.34", "00.10"). No
    // sign, exponent, whitespace or leading/trailing point. On success stores
    // the value at exactly `scale` (so "12.5" at scale 2 is {1250, 2}) in
    // *out and returns kNone; on failure leaves *out untouched and returns
    // why. Never allocates or throws.
    static ParseError parse(std::string_view text, int scale, Decimal *out) noexcept;
    // As parse(), but with no limit on the number of integer digits as
    // written (leading zeros are free): any value whose units fit in int64
    // at `scale` is read, a larger one is kOutOfRange. For a consumer that
    // bounds values by size itself (the projection's balance limit) rather
    // than by how they are written.
    // Inline: the projection parses every amount with it on its hot path.
    static ParseError parse_within_int64(std::string_view text, int scale, Decimal *out) noexcept {
        return parse_text(text, scale, SIZE_MAX, out);
    }
    // A short fixed phrase for an error, e.g. "has no digit after '.'".
    static const char *describe(ParseError e) noexcept;

    int64_t units() const noexcept { return units_; }
    int scale() const noexcept { return scale_; }

    // The same value at another scale. Returns false (and leaves *out
    // untouched) when it would overflow or lose non-zero digits.
    [[nodiscard]] bool rescale(int scale, Decimal *out) const noexcept;
    // Exact sum / difference at the larger of the two scales. Returns false
    // on overflow, leaving *out untouched.
    [[nodiscard]] bool add(const Decimal &other, Decimal *out) const noexcept;
    [[nodiscard]] bool sub(const Decimal &other, Decimal *out) const noexcept;

    // Numeric comparison, exact across scales ({120, 2} == {12, 1}).
    friend std::strong_ordering operator<=>(const Decimal &a, const Decimal &b) noexcept;
    friend bool operator==(const Decimal &a, const Decimal &b) noexcept {
        return (a <=> b) == std::strong_ordering::equal;
    }

    // Writes the value with exactly scale() decimals ({1230, 2} -> "12.30",
    // {5, 2} -> "0.05", {-5, 2} -> "-0.05", {7, 0} -> "7") into out, which
    // must hold kMaxTextSize bytes; returns the length (no NUL is written).
    size_t format(char *out) const noexcept;
    std::string to_string() const;

private:
    // The one decimal parser behind parse() and parse_within_int64(), see
    // there; max_integer_digits is kMaxIntegerDigits or unlimited.
    static ParseError parse_text(std::string_view text, int scale, size_t max_integer_digits,
                                 Decimal *out) noexcept;

    int64_t units_ = 0;
    int scale_ = 0;
};

// One pass over the text without overflow checks while there are at most 18
// digits (10^18 < 2^63); longer text is summed again with checks. The errors
// come in the order of precedence of ParseError: the syntax first, then the
// digit counts, then the range.
inline Decimal::ParseError Decimal::parse_text(std::string_view text, int scale, size_t max_integer_digits,
                                               Decimal *out) noexcept {
    constexpr size_t kSafeDigits = 18;
    constexpr int64_t kPow10[kMaxScale + 1] = {1,      10,      100,      1000,      10000,
                                               100000, 1000000, 10000000, 100000000, 1000000000};
    auto is_digit = [](char c) { return static_cast<unsigned char>(c - '0') <= 9; };
    if (scale < 0 || scale > kMaxScale) return ParseError::kBadScale;
    if (text.empty()) return ParseError::kEmpty;

    const char *p = text.data();
    const size_t n = text.size();
    uint64_t sum = 0; // exact while there are at most kSafeDigits digits
    size_t i = 0;
    for (; i < n && is_digit(p[i]); ++i)
        sum = sum * 10 + static_cast<uint64_t>(p[i] - '0');
    const size_t int_digits = i;
    size_t frac_digits = 0;
    if (i < n) {
        if (p[i] != '.') return ParseError::kNotDecimal; // sign, 'e', space...
        const size_t start = ++i;
        for (; i < n && is_digit(p[i]); ++i)
            sum = sum * 10 + static_cast<uint64_t>(p[i] - '0');
        if (i < n) return ParseError::kNotDecimal; // a second '.', or any other character
        if (int_digits == 0) return ParseError::kNoIntegerDigit;
        frac_digits = i - start;
        if (frac_digits == 0) return ParseError::kNoFractionDigit;
    }
    if (frac_digits > static_cast<size_t>(scale)) return ParseError::kTooManyDecimals;
    if (int_digits > max_integer_digits) return ParseError::kTooManyIntegerDigits;

    int64_t units = static_cast<int64_t>(sum);
    if (int_digits + frac_digits > kSafeDigits) {
        // Leading zeros, or a value near or past the range: check every step.
        units = 0;
        for (size_t k = 0; k < n; ++k) {
            if (p[k] == '.') continue;
            if (__builtin_mul_overflow(units, int64_t{10}, &units) ||
                __builtin_add_overflow(units, int64_t{p[k] - '0'}, &units))
                return ParseError::kOutOfRange;
        }
    }
    if (__builtin_mul_overflow(units, kPow10[static_cast<size_t>(scale) - frac_digits], &units))
        return ParseError::kOutOfRange;
    *out = Decimal(units, scale);
    return ParseError::kNone;
}

// The parts of an event the rules look at. Borrowed; nothing is copied.
struct EventView {
    std::string_view event_id;
    std::string_view aggregate_type;
    std::string_view aggregate_id;
    std::string_view event_type;
    std::string_view payload; // JSON text, need not be padded or NUL-terminated
};

// Parsed rules. Immutable and cheap to copy (copies share one
// representation).
//
// Thread-safety: safe to share between threads, including through copies.
class RuleSet {
public:
    // Parses rules given as JSON text (see the top of this file). On success
    // returns the rule set. On failure returns nullopt and stores in *error a
    // one-line message naming the path of the bad rule, e.g.
    // "events.MoneyDeposited.amount.max_decimals: must be an integer 0..9".
    // Throws only std::bad_alloc.
    static std::optional<RuleSet> parse(std::string_view rules_json, std::string *error);

    // Does `event_type` appear under `events`?
    bool has_event_type(std::string_view event_type) const;

    struct Impl; // defined in core/rules/, opaque to users

private:
    explicit RuleSet(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
    friend class Validator;
};

// Checks events against a RuleSet.
//
// Thread-safety: one Validator per thread (it owns a JSON parser and
// scratch buffers); many Validators may share one RuleSet.
class Validator {
public:
    explicit Validator(const RuleSet &rules);
    ~Validator();
    Validator(Validator &&) noexcept;
    Validator &operator=(Validator &&) noexcept;
    Validator(const Validator &) = delete;
    Validator &operator=(const Validator &) = delete;

    // Returns true when `event` satisfies every rule. Otherwise returns false
    // and replaces *reason with one line naming the rule, e.g.
    //   MoneyDeposited.amount: "12.345" has more than 2 decimals
    //   AccountCreated.owner: missing
    //   payload is not valid JSON: <simdjson error>
    //   unknown event type 'Foo'
    // Values inside a reason are cut to about 40 bytes with control and
    // non-ASCII bytes escaped as \xNN. Does not allocate in the steady state
    // (buffers grow to the largest payload seen and to the longest reason);
    // throws only std::bad_alloc while growing them.
    bool check(const EventView &event, std::string *reason);

    // check() in two steps, for a stage whose host parses each payload once
    // for the whole pipeline (plugin.h, event_payload): the envelope and the
    // payload's size first (before anything parses it), then the payload as
    // parsed. Same rules, same reasons as check().
    bool check_envelope(const EventView &event, std::string *reason);
    bool check_payload(const EventView &event, const cdcflow_payload &parsed, std::string *reason);

private:
    struct State;
    std::unique_ptr<State> state_;
};

// Longest string a pattern is run on, in bytes (see "pattern" above).
inline constexpr size_t kMaxPatternInput = 4096;
// Default for "max_payload_bytes".
inline constexpr uint64_t kDefaultMaxPayloadBytes = 1u << 20;

} // namespace cdcflow::rules

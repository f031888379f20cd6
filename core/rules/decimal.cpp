// Exact fixed-point decimals (see cdcflow/rules.hpp). Integer arithmetic
// only, with every overflow checked by the compiler builtins.
#include <cdcflow/rules.hpp>

#include <cstring>

namespace cdcflow::rules {

namespace {

constexpr int64_t kPow10[Decimal::kMaxScale + 1] = {
    1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
};

} // namespace

// The parser itself is inline in rules.hpp (Decimal::parse_text).
Decimal::ParseError Decimal::parse(std::string_view text, int scale, Decimal *out) noexcept {
    return parse_text(text, scale, static_cast<size_t>(kMaxIntegerDigits), out);
}

const char *Decimal::describe(ParseError e) noexcept {
    switch (e) {
    case ParseError::kNone:
        return "is a decimal";
    case ParseError::kEmpty:
        return "is empty";
    case ParseError::kNotDecimal:
        return "is not a decimal (ASCII digits with an optional '.')";
    case ParseError::kNoIntegerDigit:
        return "has no digit before '.'";
    case ParseError::kNoFractionDigit:
        return "has no digit after '.'";
    case ParseError::kTooManyDecimals:
        return "has too many decimals";
    case ParseError::kTooManyIntegerDigits:
        return "has more than 15 integer digits";
    case ParseError::kOutOfRange:
        return "is out of range";
    case ParseError::kBadScale:
        return "cannot be read: scale outside 0..9";
    }
    return "is not a decimal";
}

bool Decimal::rescale(int scale, Decimal *out) const noexcept {
    if (scale < 0 || scale > kMaxScale) return false;
    if (scale >= scale_) {
        int64_t u;
        if (__builtin_mul_overflow(units_, kPow10[scale - scale_], &u)) return false;
        *out = Decimal(u, scale);
        return true;
    }
    int64_t div = kPow10[scale_ - scale];
    if (units_ % div != 0) return false; // would drop non-zero digits
    *out = Decimal(units_ / div, scale);
    return true;
}

bool Decimal::add(const Decimal &other, Decimal *out) const noexcept {
    int s = scale_ > other.scale_ ? scale_ : other.scale_;
    Decimal a, b;
    int64_t u;
    if (!rescale(s, &a) || !other.rescale(s, &b) || __builtin_add_overflow(a.units_, b.units_, &u))
        return false;
    *out = Decimal(u, s);
    return true;
}

bool Decimal::sub(const Decimal &other, Decimal *out) const noexcept {
    int s = scale_ > other.scale_ ? scale_ : other.scale_;
    Decimal a, b;
    int64_t u;
    if (!rescale(s, &a) || !other.rescale(s, &b) || __builtin_sub_overflow(a.units_, b.units_, &u))
        return false;
    *out = Decimal(u, s);
    return true;
}

std::strong_ordering operator<=>(const Decimal &a, const Decimal &b) noexcept {
    int s = a.scale_ > b.scale_ ? a.scale_ : b.scale_;
    Decimal ra, rb;
    bool a_fits = a.rescale(s, &ra), b_fits = b.rescale(s, &rb);
    if (a_fits && b_fits) return ra.units_ <=> rb.units_;
    // Only the operand with the smaller scale is ever rescaled upwards, so at
    // most one fails, and its magnitude then exceeds anything the other can
    // hold: the sign decides.
    if (!a_fits) return a.units_ < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
    return b.units_ < 0 ? std::strong_ordering::greater : std::strong_ordering::less;
}

size_t Decimal::format(char *out) const noexcept {
    // Work on the magnitude as unsigned so INT64_MIN formats correctly.
    uint64_t mag = units_ < 0 ? 0 - static_cast<uint64_t>(units_) : static_cast<uint64_t>(units_);
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = static_cast<char>('0' + mag % 10);
        mag /= 10;
    } while (mag != 0);
    // Pad with zeros so there is at least one digit before the point.
    while (n < static_cast<size_t>(scale_) + 1)
        digits[n++] = '0';

    size_t len = 0;
    if (units_ < 0) out[len++] = '-';
    for (size_t i = n; i-- > 0;) {
        out[len++] = digits[i];
        if (i == static_cast<size_t>(scale_) && scale_ > 0) out[len++] = '.';
    }
    return len;
}

std::string Decimal::to_string() const {
    char buf[kMaxTextSize];
    return std::string(buf, format(buf));
}

} // namespace cdcflow::rules

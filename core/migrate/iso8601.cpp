#include "iso8601.hpp"

#include <cstddef>

namespace cdcflow::migrate {

namespace {

class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}
    bool done() const { return i_ == s_.size(); }
    char peek() const { return done() ? '\0' : s_[i_]; }
    bool eat(char c) {
        if (peek() != c) return false;
        ++i_;
        return true;
    }
    // Exactly n digits.
    bool digits(int n, int &out) {
        int v = 0;
        for (int k = 0; k < n; ++k) {
            char c = peek();
            if (c < '0' || c > '9') return false;
            v = v * 10 + (c - '0');
            ++i_;
        }
        out = v;
        return true;
    }
    bool digit_next() const {
        char c = peek();
        return c >= '0' && c <= '9';
    }

private:
    std::string_view s_;
    size_t i_ = 0;
};

bool leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int days_in_month(int y, int m) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : kDays[m - 1];
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's
// days_from_civil).
int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

} // namespace

std::optional<int64_t> parse_iso8601_us(std::string_view text) {
    Reader r(text);
    int y, mo, d;
    if (!r.digits(4, y)) return std::nullopt;
    const bool extended = r.eat('-');
    if (!r.digits(2, mo)) return std::nullopt;
    if (extended && !r.eat('-')) return std::nullopt;
    if (!r.digits(2, d)) return std::nullopt;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return std::nullopt;

    int h = 0, mi = 0, s = 0;
    int64_t frac_us = 0;
    int64_t offset_s = 0;
    if (!r.done()) {
        if (!(r.eat('T') || r.eat('t') || (extended && r.eat(' ')))) return std::nullopt;
        if (!r.digits(2, h)) return std::nullopt;
        if (extended && !r.eat(':')) return std::nullopt;
        if (!r.digits(2, mi)) return std::nullopt;
        if (extended ? r.eat(':') : r.digit_next()) {
            if (!r.digits(2, s)) return std::nullopt;
            if (r.eat('.') || r.eat(',')) {
                if (!r.digit_next()) return std::nullopt;
                int n = 0;
                while (r.digit_next()) {
                    int digit;
                    r.digits(1, digit);
                    if (++n > 9) return std::nullopt;
                    if (n <= 6) frac_us = frac_us * 10 + digit;
                }
                for (int k = n; k < 6; ++k)
                    frac_us *= 10;
            }
        }
        if (h == 24 && mi == 0 && s == 0 && frac_us == 0) {
            // 24:00 is the end of the day: the next day's midnight.
        } else if (h > 23 || mi > 59 || s > 60) {
            return std::nullopt;
        }
        if (s == 60) { // a leap second: the last instant of the minute before it
            s = 59;
            frac_us = 999999;
        }
        if (r.eat('Z') || r.eat('z')) {
        } else if (r.peek() == '+' || r.peek() == '-') {
            const int sign = r.eat('-') ? -1 : (r.eat('+'), 1);
            int oh, om = 0;
            if (!r.digits(2, oh)) return std::nullopt;
            if (r.eat(':')) {
                if (!r.digits(2, om)) return std::nullopt;
            } else if (r.digit_next() && !r.digits(2, om)) {
                return std::nullopt;
            }
            if (oh > 23 || om > 59) return std::nullopt;
            offset_s = sign * (oh * 3600 + om * 60);
        }
        if (!r.done()) return std::nullopt;
    }
    const int64_t days = days_from_civil(y, mo, d);
    const int64_t secs = days * 86400 + h * 3600 + mi * 60 + s - offset_s;
    return secs * 1000000 + frac_us;
}

} // namespace cdcflow::migrate

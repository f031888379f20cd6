// See duration.hpp.
#include "duration.hpp"

#include <charconv>

namespace cdcflow::base {

std::optional<int64_t> parse_duration_s(std::string_view text) {
    if (text.size() < 2) return std::nullopt;
    int64_t per = 0;
    switch (text.back()) {
    case 's':
        per = 1;
        break;
    case 'm':
        per = 60;
        break;
    case 'h':
        per = 3600;
        break;
    case 'd':
        per = 86400;
        break;
    case 'w':
        per = 7 * 86400;
        break;
    default:
        return std::nullopt;
    }
    std::string_view digits = text.substr(0, text.size() - 1);
    // from_chars takes a '-' for int64_t: only ASCII digits are a count here.
    if (digits.empty() || digits.front() < '0' || digits.front() > '9') return std::nullopt;
    int64_t n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    // In microseconds it must still fit an int64_t (about 292,000 years).
    constexpr int64_t kMaxSeconds = INT64_MAX / 1000000;
    if (n > kMaxSeconds / per) return std::nullopt;
    return n * per;
}

} // namespace cdcflow::base

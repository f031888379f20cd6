// See clock.hpp.
#include "clock.hpp"

#include <chrono>
#include <ctime>

namespace cdcflow::base {

int64_t wall_us() noexcept {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void append_utc(std::string &out, int64_t us, UtcDigits digits) {
    int64_t secs = us / 1'000'000, frac = us % 1'000'000; // no overflow at INT64_MIN
    if (frac < 0) {                                       // floor: -1 us is 23:59:59.999999 of the day before
        frac += 1'000'000;
        --secs;
    }
    const time_t t = static_cast<time_t>(secs);
    std::tm tm{};
    char buf[64];
    if (!gmtime_r(&t, &tm) || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        out.append("(not a date)");
        return;
    }
    out.append(buf);
    int places = digits == UtcDigits::kMillis ? 3 : digits == UtcDigits::kMicrosWhenAny && frac != 0 ? 6 : 0;
    if (places == 3) frac /= 1000;
    if (places > 0) {
        char text[7] = {'.'};
        for (int i = places; i >= 1; --i, frac /= 10)
            text[i] = static_cast<char>('0' + frac % 10);
        out.append(text, static_cast<size_t>(places) + 1);
    }
    out += 'Z';
}

} // namespace cdcflow::base

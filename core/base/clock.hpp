// The wall clock and UTC dates for messages and logs: one reading of "now"
// and one date format for the producer's reasons and
// the ownership messages.
//
// Wall time is data for people (logs, reasons, updated_at columns), never
// what orders or bounds anything (DESIGN.md, "Timestamps are data, not
// truth"): for intervals use std::chrono::steady_clock.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

namespace cdcflow::base {

// Microseconds since the Unix epoch, from the system clock.
int64_t wall_us() noexcept;

enum class UtcDigits : uint8_t {
    kSeconds,       // "2024-05-01T12:00:00Z"
    kMillis,        // "2024-05-01T12:00:00.123Z" (as log lines show it: core/src/log.cpp, spdlog's %e)
    kMicrosWhenAny, // "2024-05-01T12:00:00Z", or ".123456" before the Z when there are microseconds
};

// Appends `us` (microseconds since the epoch) as an ISO 8601 UTC date. Works
// for every int64_t: a date outside years 0..9999 comes out with its real
// year, and one gmtime cannot represent as "(not a date)". Sub-second digits
// are cut, never rounded (the second shown is the one the instant is in).
void append_utc(std::string &out, int64_t us, UtcDigits digits = UtcDigits::kMicrosWhenAny);
inline std::string utc(int64_t us, UtcDigits digits = UtcDigits::kMicrosWhenAny) {
    std::string out;
    append_utc(out, us, digits);
    return out;
}

} // namespace cdcflow::base

// Durations as people write them in settings and on the command line
// ("30d", "12h", "90m"): one parser for every duration-valued setting, so
// that the migrator's `cleanup_older_than` and `cdcflow migrate --cleanup
// --older-than` accept exactly the same text.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cdcflow::base {

// A whole number followed by one unit: s (seconds), m (minutes), h (hours),
// d (days) or w (weeks), nothing around it ("30d", "90m", "0s"). Returns
// seconds; nullopt for anything else (no unit, a sign, a fraction, a space,
// two units) or a value whose microseconds would not fit in an int64_t (so
// that callers can subtract it from a timestamp in microseconds safely).
std::optional<int64_t> parse_duration_s(std::string_view text);

} // namespace cdcflow::base

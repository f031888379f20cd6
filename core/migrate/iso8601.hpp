// ISO 8601 dates as legacy outboxes write them in created_at, to
// microseconds since the Unix epoch (the outbox's timestamp).
//
// Accepted (extended and basic forms):
//   2024-05-01                        midnight UTC
//   2024-05-01T12:00  2024-05-01T12:00:00  2024-05-01 12:00:00 (space for T)
//   fractions of a second: .5 up to 9 digits (digits past microseconds are cut)
//   zones: Z (or z), +02:00, +0200, +02, -05:30; none means UTC
//   20240501T120000Z, 20240501T120000.123+0200 (basic form)
// A leap second (:60) is read as :59.999999. Anything else (an impossible
// date such as 2023-02-29, a trailing byte, an empty string) is nullopt: the
// row is unmappable and recorded with the reason.
//
// Internal (not installed): include as "migrate/iso8601.hpp".
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cdcflow::migrate {

std::optional<int64_t> parse_iso8601_us(std::string_view text);

} // namespace cdcflow::migrate

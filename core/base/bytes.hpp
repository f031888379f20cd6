// Byte counts as people write and read them: one parser for every
// byte-valued setting ("67108864", "64MiB", "512 MiB") and one way to print
// a size in messages ("63.9 MiB"), so that settings and log lines agree.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdcflow::base {

// A whole number of bytes, optionally followed by a binary unit (KiB, MiB,
// GiB, TiB; one space allowed before it). Decimal units (KB, MB) are not
// accepted: "MB" means 10^6 to some readers and 2^20 to others. nullopt for
// anything else, a negative number, or a value past UINT64_MAX.
std::optional<uint64_t> parse_bytes(std::string_view text);

// "512 B", "64.0 KiB", "63.9 MiB", "1.5 GiB": one decimal past the unit
// (cut, not rounded, so a size just under a limit never prints as the limit).
std::string format_bytes(uint64_t bytes);

} // namespace cdcflow::base

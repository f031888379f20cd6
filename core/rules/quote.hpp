// Quoting untrusted bytes inside a one-line reason.
// Internal (not installed): shared by the rules library, the outbox writer
// and `cdcflow produce`, so that every reason quotes values the same way.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cdcflow::rules {

// Appends `v` to `out` between `quote` characters, escaping `quote`, '\\',
// control and non-ASCII bytes (\xNN) and cutting it after about `max_bytes`
// source bytes ("..." marks the cut), so the result is always one short line
// of ASCII (valid UTF-8 whatever `v` holds).
void append_quoted(std::string &out, std::string_view v, char quote = '"', size_t max_bytes = 40);

} // namespace cdcflow::rules

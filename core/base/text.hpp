// Untrusted text (event bytes, file names, SQLite's messages, config values)
// inside a one-line message: one way to escape it, for every message the
// project writes, so that a message is always one line of valid UTF-8 and a
// reader sees the same escapes everywhere.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cdcflow::base {

struct Quoting {
    // Written around the text, and escaped (as \" or \') inside it together
    // with '\\'. 0: no quotes, and nothing but unsafe bytes is escaped.
    char quote = '"';
    // Cut after about this many bytes of the text, never inside an escape or
    // a character; "..." (inside the quotes) marks the cut. SIZE_MAX: never.
    size_t max_bytes = 40;
    // Valid UTF-8 beyond ASCII stays as it is ("café"); false writes every
    // byte >= 0x80 as \xNN, so the result is pure ASCII.
    bool keep_utf8 = false;
};

// Appends `text` to `out` as `q` says. Control bytes (and DEL) and bytes that
// are not valid UTF-8 are always written as \xNN (lowercase hex).
void append_quoted(std::string &out, std::string_view text, const Quoting &q = {});
inline std::string quoted(std::string_view text, const Quoting &q = {}) {
    std::string out;
    append_quoted(out, text, q);
    return out;
}

// For names and messages that are usually clean (a path, SQLite's message, a
// column name): verbatim when `text` is printable valid UTF-8 (between
// `quote`s when one is given), else escaped and quoted like a value in a
// reason (append_quoted with `quote`, or '"' when none is given).
void append_text(std::string &out, std::string_view text, char quote = 0, size_t max_bytes = 200);
inline std::string text(std::string_view s, char quote = 0, size_t max_bytes = 200) {
    std::string out;
    append_text(out, s, quote, max_bytes);
    return out;
}

// `s` with only the bytes that are not part of valid UTF-8 written as \xNN:
// for text that must be stored as valid UTF-8 but otherwise kept as it is (a
// plugin's reject reason). Valid text comes back unchanged.
std::string escape_invalid_utf8(std::string_view s);

} // namespace cdcflow::base

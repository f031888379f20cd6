// UTF-8 for the host: checking text that plugins and files hand in, and
// making it safe to store or print. (Plugins use simdjson::validate_utf8.)
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cdcflow::host {

// Length of the valid UTF-8 sequence at s[i], or 0 (an invalid or cut
// sequence). The second byte's range excludes overlong forms, surrogates and
// code points past U+10FFFF.
inline size_t utf8_length(std::string_view s, size_t i) {
    auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
    unsigned c = at(0);
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (at(1) < lo || at(1) > hi) return 0;
    for (size_t k = 2; k < n; ++k)
        if ((at(k) & 0xC0) != 0x80) return 0;
    return n;
}

inline bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        // ASCII runs are the common case.
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        size_t n = utf8_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

// s with every byte that is not part of a valid UTF-8 sequence written as
// the four characters \xNN, so that the result is valid UTF-8 and still shows
// the original bytes. Valid text comes back unchanged.
inline std::string escape_invalid_utf8(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size() + 8);
    for (size_t i = 0; i < s.size();) {
        size_t n = utf8_length(s, i);
        if (n == 0) {
            auto c = static_cast<unsigned char>(s[i]);
            out.append("\\x").push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 0xF]);
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

} // namespace cdcflow::host

// UTF-8: one validity check and one character-length function for the whole
// project (host, rules, producer, plugins), so that "valid text" means the
// same thing wherever an event or a message is checked.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

namespace cdcflow::base {

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

// simdjson's validator (fast on long payloads) without the ASCII fast path.
bool valid_utf8_simd(std::string_view s) noexcept;

// Is `s` valid UTF-8? Ids, types and typical payloads are ASCII, and for
// short strings the dispatch into simdjson costs more than this loop (the
// producer's five fields: 78 ns an event without it, 14 ns with it; the
// validator's and the sink's envelope checks were 3-5% of their time in
// simdjson's per-call setup). Eight bytes at a time.
inline bool valid_utf8(std::string_view s) noexcept {
    const char *p = s.data();
    size_t n = s.size(), i = 0;
    uint64_t any = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        any |= w;
    }
    for (; i < n; ++i)
        any |= static_cast<unsigned char>(p[i]);
    return (any & 0x8080808080808080ull) == 0 || valid_utf8_simd(s);
}

// The largest n' <= n that does not fall inside a UTF-8 sequence of s (for
// cutting text without splitting a character). REQUIRES: n <= s.size().
inline size_t utf8_floor(std::string_view s, size_t n) {
    while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;
    return n;
}

} // namespace cdcflow::base

// One-line, bounded rendering of untrusted values inside failure reasons.
#include "quote.hpp"

namespace cdcflow::rules {

void append_quoted(std::string &out, std::string_view v, char quote, size_t max_bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += quote;
    size_t n = v.size() < max_bytes ? v.size() : max_bytes;
    for (size_t i = 0; i < n; ++i) {
        auto c = static_cast<unsigned char>(v[i]);
        if (c == static_cast<unsigned char>(quote) || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (n < v.size()) out += "...";
    out += quote;
}

} // namespace cdcflow::rules

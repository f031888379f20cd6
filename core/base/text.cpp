// See text.hpp.
#include "text.hpp"

#include "utf8.hpp"

#include <algorithm>

namespace cdcflow::base {

namespace {

void append_hex(std::string &out, unsigned char c) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
}

bool printable(std::string_view s) {
    return std::none_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

} // namespace

void append_quoted(std::string &out, std::string_view v, const Quoting &q) {
    if (q.quote) out += q.quote;
    size_t n = std::min(v.size(), q.max_bytes);
    if (q.keep_utf8) n = utf8_floor(v, n); // a cut character would turn into \xNN escapes
    for (size_t i = 0; i < n;) {
        auto c = static_cast<unsigned char>(v[i]);
        if (c >= 0x80) {
            size_t len = q.keep_utf8 ? utf8_length(v, i) : 0;
            if (len == 0 || i + len > n) {
                append_hex(out, c);
                ++i;
            } else {
                out.append(v.substr(i, len));
                i += len;
            }
            continue;
        }
        if (q.quote && (c == static_cast<unsigned char>(q.quote) || c == '\\')) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            append_hex(out, c);
        } else {
            out += static_cast<char>(c);
        }
        ++i;
    }
    if (n < v.size()) out += "...";
    if (q.quote) out += q.quote;
}

void append_text(std::string &out, std::string_view text, char quote, size_t max_bytes) {
    if (printable(text) && valid_utf8(text)) {
        if (quote) out += quote;
        out.append(text);
        if (quote) out += quote;
    } else {
        append_quoted(out, text, {quote ? quote : '"', max_bytes, false});
    }
}

std::string escape_invalid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    for (size_t i = 0; i < s.size();) {
        size_t n = utf8_length(s, i);
        if (n == 0) {
            append_hex(out, static_cast<unsigned char>(s[i]));
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

} // namespace cdcflow::base

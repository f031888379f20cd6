#include "escape.hpp"

#include "base/text.hpp"
#include "base/utf8.hpp"

#include <algorithm>
#include <cstdio>

namespace cdcflow::host {

std::string hex(unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", static_cast<unsigned>(c));
    return buf;
}

std::string quote(std::string_view s) {
    // The project's one way to quote untrusted text in a message (base/text.hpp):
    // single quotes, UTF-8 kept, cut at 200 bytes on a character boundary.
    return base::quoted(s, {'\'', 200, true});
}

std::string one_line(std::string s) {
    std::replace_if(
        s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return s;
}

// Plain ASCII is copied in runs: alias expansion may push megabytes through here.
void put_string(std::string &out, std::string_view s) {
    auto plain = [](unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; };
    out += '"';
    for (size_t i = 0; i < s.size();) {
        size_t run = i;
        while (run < s.size() && plain(static_cast<unsigned char>(s[run])))
            ++run;
        out.append(s.substr(i, run - i));
        i = run;
        if (i == s.size()) break;
        auto c = static_cast<unsigned char>(s[i]);
        size_t n = base::utf8_length(s, i);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(c));
            out += buf;
        } else if (n == 0) {
            out += "\xEF\xBF\xBD";
        } else {
            out += s.substr(i, n);
        }
        i += std::max<size_t>(n, 1);
    }
    out += '"';
}

std::string json_string(std::string_view s) {
    std::string out;
    put_string(out, s);
    return out;
}

} // namespace cdcflow::host

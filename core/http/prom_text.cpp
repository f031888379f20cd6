// See prom_text.hpp. The grammar (Prometheus "Exposition formats", text):
//   sample := name [ '{' [ label { ',' label } [','] ] '}' ] value [ timestamp ]
//   label  := label_name '=' '"' escaped '"'     (escapes: \\  \"  \n)
//   value  := a Go float: decimal, exponent, +Inf, -Inf, NaN
// with spaces or tabs between the parts.
#include "prom_text.hpp"

#include <charconv>
#include <limits>
#include <optional>

namespace cdcflow::http {

const std::string *Sample::label(std::string_view key) const {
    for (const auto &[k, v] : labels)
        if (k == key) return &v;
    return nullptr;
}

namespace {

bool name_start(char c, bool colon) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}
bool name_char(char c, bool colon) {
    return name_start(c, colon) || (c >= '0' && c <= '9');
}

// A cursor over one line; every step fails (nullopt/false) rather than
// reading past the end.
struct Line {
    std::string_view s;
    size_t i = 0;

    bool done() const { return i >= s.size(); }
    void blanks() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t'))
            ++i;
    }
    bool eat(char c) {
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    std::optional<std::string> name(bool colon) {
        if (done() || !name_start(s[i], colon)) return std::nullopt;
        size_t b = i;
        while (i < s.size() && name_char(s[i], colon))
            ++i;
        return std::string(s.substr(b, i - b));
    }
    std::optional<std::string> quoted() {
        if (!eat('"')) return std::nullopt;
        std::string out;
        while (i < s.size()) {
            char c = s[i++];
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (done()) return std::nullopt;
            char e = s[i++];
            if (e == 'n')
                out += '\n';
            else if (e == '\\' || e == '"')
                out += e;
            else
                return std::nullopt; // not an escape the format has
        }
        return std::nullopt; // unterminated
    }
    std::string_view token() {
        size_t b = i;
        while (i < s.size() && s[i] != ' ' && s[i] != '\t')
            ++i;
        return s.substr(b, i - b);
    }
};

std::optional<double> parse_value(std::string_view t) {
    if (t == "+Inf" || t == "Inf") return std::numeric_limits<double>::infinity();
    if (t == "-Inf") return -std::numeric_limits<double>::infinity();
    if (t == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (!t.empty() && t.front() == '+') t.remove_prefix(1); // from_chars takes no '+'
    if (t.empty() || !((t.front() >= '0' && t.front() <= '9') || t.front() == '-' || t.front() == '.'))
        return std::nullopt; // from_chars would take "inf"/"nan" spelled other ways
    double v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
    return v;
}

std::optional<Sample> parse_sample(std::string_view text) {
    Line l{text};
    Sample smp;
    auto name = l.name(true);
    if (!name) return std::nullopt;
    smp.name = std::move(*name);
    l.blanks();
    if (l.eat('{')) {
        for (;;) {
            l.blanks();
            if (l.eat('}')) break;
            auto key = l.name(false);
            if (!key) return std::nullopt;
            l.blanks();
            if (!l.eat('=')) return std::nullopt;
            l.blanks();
            auto value = l.quoted();
            if (!value) return std::nullopt;
            smp.labels.emplace_back(std::move(*key), std::move(*value));
            l.blanks();
            if (l.eat('}')) break;
            if (!l.eat(',')) return std::nullopt;
        }
        l.blanks();
    } else if (l.i == text.size() || (text[l.i - 1] != ' ' && text[l.i - 1] != '\t')) {
        return std::nullopt; // the name must be followed by labels or a blank
    }
    auto value = parse_value(l.token());
    if (!value) return std::nullopt;
    smp.value = *value;
    l.blanks();
    if (!l.done()) { // an optional integer timestamp (milliseconds), then nothing
        std::string_view ts = l.token();
        int64_t ms = 0;
        auto [end, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), ms);
        if (ec != std::errc() || end != ts.data() + ts.size()) return std::nullopt;
        l.blanks();
        if (!l.done()) return std::nullopt;
    }
    return smp;
}

} // namespace

std::vector<Sample> parse_prometheus(std::string_view text, size_t *skipped) {
    std::vector<Sample> out;
    size_t bad = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        size_t first = line.find_first_not_of(" \t");
        if (first == std::string_view::npos || line[first] == '#') continue;
        if (auto s = parse_sample(line.substr(first)))
            out.push_back(std::move(*s));
        else
            ++bad;
    }
    if (skipped) *skipped = bad;
    return out;
}

} // namespace cdcflow::http

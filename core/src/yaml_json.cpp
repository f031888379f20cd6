#include "yaml_json.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>

namespace cdcflow::host {

std::optional<int64_t> parse_int(std::string_view s) {
    if (s.starts_with('+')) {
        s.remove_prefix(1);
        if (s.starts_with('-')) return std::nullopt;
    }
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<double> parse_double(std::string_view s) {
    if (s.starts_with('+')) {
        s.remove_prefix(1);
        if (s.starts_with('-')) return std::nullopt;
    }
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
    return v;
}

void put_smart(std::string &out, const std::string &s) {
    if (s.empty() || std::string_view("~nNtTfF+-.0123456789").find(s[0]) == npos) return put_string(out, s);
    if (s == "~" || s == "null" || s == "Null" || s == "NULL")
        out += "null";
    else if (s == "true" || s == "True" || s == "TRUE")
        out += "true";
    else if (s == "false" || s == "False" || s == "FALSE")
        out += "false";
    else if (std::optional<int64_t> i = parse_int(s))
        out += std::to_string(*i);
    else if (std::optional<double> d = parse_double(s))
        out += nlohmann::json(*d).dump();
    else
        put_string(out, s);
}

} // namespace cdcflow::host

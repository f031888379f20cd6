#include "yaml_json.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

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

// ---- nested positions (config_location_at) ----

uint32_t NestedMarks::add(Mark m) {
    // The loader's budgets keep a file far below this; a guard, not a limit anyone meets.
    if (nodes_.size() >= std::numeric_limits<uint32_t>::max()) throw std::length_error("too many nodes");
    nodes_.push_back(Node{m, 0, 0, false});
    return static_cast<uint32_t>(nodes_.size() - 1);
}

void NestedMarks::open(uint32_t parent, bool mapping, size_t count) {
    if (children_.size() + count >= std::numeric_limits<uint32_t>::max())
        throw std::length_error("too many nodes");
    Node &p = nodes_.at(parent);
    p.first = static_cast<uint32_t>(children_.size());
    p.count = static_cast<uint32_t>(count);
    p.mapping = mapping;
    children_.resize(children_.size() + count);
}

void NestedMarks::set_child(uint32_t parent, size_t i, std::string_view key, uint32_t node) {
    const Node &p = nodes_.at(parent);
    if (i >= p.count) throw std::out_of_range("NestedMarks::set_child");
    if (keys_.size() + key.size() >= std::numeric_limits<uint32_t>::max())
        throw std::length_error("keys too long");
    Child &c = children_[p.first + i];
    c.key_offset = static_cast<uint32_t>(keys_.size());
    c.key_size = static_cast<uint32_t>(key.size());
    c.node = node;
    keys_.append(key);
}

void NestedMarks::shrink() {
    nodes_.shrink_to_fit();
    children_.shrink_to_fit();
    keys_.shrink_to_fit();
}

namespace {

// One reference token of a JSON Pointer, unescaped (RFC 6901: "~1" is '/',
// "~0" is '~'); nullopt for a '~' followed by anything else.
std::optional<std::string> unescape_token(std::string_view t) {
    std::string out;
    out.reserve(t.size());
    for (size_t i = 0; i < t.size(); ++i) {
        if (t[i] != '~') {
            out += t[i];
        } else if (i + 1 < t.size() && (t[i + 1] == '0' || t[i + 1] == '1')) {
            out += t[++i] == '0' ? '~' : '/';
        } else {
            return std::nullopt;
        }
    }
    return out;
}

// An array index as RFC 6901 writes it: "0", or digits without a leading zero.
std::optional<size_t> index_token(std::string_view t) {
    if (t.empty() || t.size() > 10 || (t.size() > 1 && t[0] == '0')) return std::nullopt;
    size_t v = 0;
    for (char c : t) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<size_t>(c - '0');
    }
    return v;
}

} // namespace

uint32_t NestedMarks::resolve(std::string_view pointer) const {
    uint32_t at = 0;
    if (nodes_.empty() || pointer.empty() || pointer[0] != '/') return at; // "" or not a pointer: the root
    pointer.remove_prefix(1);
    while (true) {
        size_t slash = pointer.find('/');
        std::string_view raw = pointer.substr(0, slash);
        const Node &n = nodes_[at];
        std::optional<uint32_t> next;
        if (n.mapping) {
            if (std::optional<std::string> key = unescape_token(raw))
                for (uint32_t i = 0; i < n.count && !next; ++i) {
                    const Child &c = children_[n.first + i];
                    if (std::string_view(keys_).substr(c.key_offset, c.key_size) == *key) next = c.node;
                }
        } else if (std::optional<size_t> i = index_token(raw); i && *i < n.count) {
            next = children_[n.first + *i].node;
        }
        if (!next) return at; // names nothing: the deepest node reached
        at = *next;
        if (slash == std::string_view::npos) return at;
        pointer.remove_prefix(slash + 1);
    }
}

const char *NestedMarks::location(uint32_t i) const {
    std::lock_guard lock(mutex_);
    auto it = answers_.find(i);
    if (it == answers_.end()) it = answers_.emplace(i, where(file_, nodes_.at(i).mark)).first;
    return it->second.c_str(); // a std::map's values never move
}

const char *ConfigValue::location_at(std::string_view pointer) const {
    if (!nested || from_default) return location.c_str();
    return nested->location(nested->resolve(pointer));
}

} // namespace cdcflow::host

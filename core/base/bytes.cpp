// See bytes.hpp.
#include "bytes.hpp"

#include <charconv>
#include <cstdio>

namespace cdcflow::base {

std::optional<uint64_t> parse_bytes(std::string_view text) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end == text.data()) return std::nullopt; // no digits, a sign, or too large
    std::string_view unit = text.substr(static_cast<size_t>(end - text.data()));
    if (unit.starts_with(' ')) unit.remove_prefix(1);
    if (unit.empty()) return text.back() == ' ' ? std::nullopt : std::optional<uint64_t>(n);
    static constexpr std::pair<std::string_view, int> kUnits[] = {
        {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}};
    for (auto [name, shift] : kUnits) {
        if (unit != name) continue;
        if (n > (UINT64_MAX >> shift)) return std::nullopt;
        return n << shift;
    }
    return std::nullopt;
}

std::string format_bytes(uint64_t bytes) {
    static constexpr const char *kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    int u = 0;
    uint64_t scale = 1024;
    while (u + 1 < 6 && bytes / scale >= 1024) {
        scale <<= 10;
        ++u;
    }
    const uint64_t whole = bytes / scale;
    const uint64_t tenth = (bytes % scale) * 10 / scale; // no overflow: remainder < 2^60
    char buf[48];
    std::snprintf(buf, sizeof buf, "%llu.%llu %s", static_cast<unsigned long long>(whole),
                  static_cast<unsigned long long>(tenth), kUnits[u]);
    return buf;
}

} // namespace cdcflow::base

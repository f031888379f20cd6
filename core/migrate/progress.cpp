#include "progress.hpp"

#include <charconv>

namespace cdcflow::migrate {

const char *const kTargetDdl =
    "CREATE TABLE IF NOT EXISTS cdcflow_migration_progress(name TEXT PRIMARY KEY, "
    "last_legacy_id INTEGER, gaps TEXT NOT NULL DEFAULT '', migrated INTEGER NOT NULL DEFAULT 0, "
    "skipped INTEGER NOT NULL DEFAULT 0, late INTEGER NOT NULL DEFAULT 0, started_at INTEGER, "
    "updated_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS cdcflow_migration_map(migration TEXT NOT NULL, seq INTEGER NOT NULL, "
    "legacy_id INTEGER NOT NULL, checksum INTEGER NOT NULL, late INTEGER NOT NULL DEFAULT 0, "
    "cleaned_at INTEGER, PRIMARY KEY(migration, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS cdcflow_migration_skipped(migration TEXT NOT NULL, "
    "legacy_id INTEGER NOT NULL, reason TEXT NOT NULL, recorded_at INTEGER NOT NULL, "
    "PRIMARY KEY(migration, legacy_id)) WITHOUT ROWID;";

const char *const kRetiredDdl = "CREATE TABLE IF NOT EXISTS cdcflow_outbox_retired(outbox TEXT PRIMARY KEY, "
                                "up_to_seq INTEGER NOT NULL, updated_at INTEGER)";

namespace {

constexpr std::string_view kHeaderPrefix = "{\"cdcflow_gaps\":\"";
constexpr std::string_view kHeaderSuffix = "\"}";
constexpr std::string_view kGapPrefix = "gap:";

void append_int(std::string &out, int64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    (void)ec;
    out.append(buf, end);
}

// Reads an int64 at the front of `s` and drops it; false if none.
bool take_int(std::string_view &s, int64_t &v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p == s.data()) return false;
    s.remove_prefix(static_cast<size_t>(p - s.data()));
    return true;
}

bool take(std::string_view &s, char c) {
    if (s.empty() || s.front() != c) return false;
    s.remove_prefix(1);
    return true;
}

} // namespace

std::string gaps_text(std::span<const Gap> gaps) {
    std::string out;
    for (const Gap &g : gaps) {
        if (!out.empty()) out += ',';
        append_int(out, g.lo);
        out += ':';
        append_int(out, g.hi);
        out += '@';
        append_int(out, g.opened_us);
    }
    return out;
}

std::optional<std::vector<Gap>> parse_gaps(std::string_view text) {
    std::vector<Gap> out;
    while (!text.empty()) {
        Gap g;
        if (!take_int(text, g.lo) || !take(text, ':') || !take_int(text, g.hi) || !take(text, '@') ||
            !take_int(text, g.opened_us) || g.lo > g.hi)
            return std::nullopt;
        out.push_back(g);
        if (!text.empty() && (!take(text, ',') || text.empty())) return std::nullopt;
    }
    return out;
}

std::string gaps_header(std::span<const Gap> gaps) {
    std::string out(kHeaderPrefix);
    out += gaps_text(gaps);
    out += kHeaderSuffix;
    return out;
}

std::optional<std::vector<Gap>> gaps_from_header(std::string_view headers) {
    if (!headers.starts_with(kHeaderPrefix) || !headers.ends_with(kHeaderSuffix) ||
        headers.size() < kHeaderPrefix.size() + kHeaderSuffix.size())
        return std::nullopt;
    headers.remove_prefix(kHeaderPrefix.size());
    headers.remove_suffix(kHeaderSuffix.size());
    return parse_gaps(headers);
}

std::string gap_partition(const Gap &g) {
    std::string out(kGapPrefix);
    append_int(out, g.lo);
    out += '@';
    append_int(out, g.opened_us);
    return out;
}

std::optional<Gap> gap_from_position(std::string_view partition, int64_t offset) {
    if (!partition.starts_with(kGapPrefix)) return std::nullopt;
    partition.remove_prefix(kGapPrefix.size());
    Gap g;
    g.hi = offset;
    if (!take_int(partition, g.lo) || !take(partition, '@') || !take_int(partition, g.opened_us) ||
        !partition.empty() || g.lo > g.hi)
        return std::nullopt;
    return g;
}

} // namespace cdcflow::migrate

#include "verify.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace cdcflow::migrate {

namespace {

using sqlite::Db;
using sqlite::Stmt;

void add(ReportClass &c, int64_t id, size_t limit) {
    ++c.count;
    if (c.ids.size() < limit) c.ids.push_back(id);
}
void add_seq(ReportClass &c, int64_t seq, size_t limit) {
    ++c.count;
    if (c.seqs.size() < limit) c.seqs.push_back(seq);
}

// The ids of a class are collected in legacy id order, except those that
// come from leftover map entries at the end: keep the first `limit` in order.
void sort_ids(ReportClass &c) {
    std::sort(c.ids.begin(), c.ids.end());
    std::sort(c.seqs.begin(), c.seqs.end());
}

struct MapEntry {
    int64_t legacy_id, seq, checksum;
    bool late, cleaned;
};

struct OutRow {
    Uuid id;
    int64_t seq;
    int64_t checksum;
    bool v5;
    bool matched = false;
};

bool uuid_less(const Uuid &a, const Uuid &b) {
    return std::memcmp(a.data(), b.data(), 16) < 0;
}

bool has_migration_tables(Db &target) {
    return target.has_table("cdcflow_migration_map") && target.has_table("cdcflow_migration_skipped") &&
           target.has_table("cdcflow_migration_progress");
}

// The first legacy id of `gaps` (sorted by lo) holding `id`.
// The persisted gaps the migrator still watches (MigrationSpec::gap_watch_us).
std::vector<Gap> watched_gaps(std::vector<Gap> gaps, const MigrationSpec &spec) {
    if (!spec.gap_watch_us) return gaps;
    const int64_t now = base::wall_us();
    std::erase_if(gaps, [&](const Gap &g) { return g.opened_us <= now - *spec.gap_watch_us; });
    return gaps;
}

bool in_gaps(const std::vector<Gap> &gaps, int64_t id) {
    for (const Gap &g : gaps)
        if (id >= g.lo && id <= g.hi) return true;
    return false;
}

// A read transaction on a connection for the scope (one snapshot for
// several statements); rolled back at the end: nothing is written.
class ReadTx {
public:
    explicit ReadTx(Db &db) : db_(db) { db_.exec("BEGIN"); }
    ~ReadTx() { sqlite3_exec(db_.raw(), "ROLLBACK", nullptr, nullptr, nullptr); }

private:
    Db &db_;
};

// False when the outbox table does not exist yet (the sink creates it at its
// first start): nothing is migrated. A missing column throws.
bool check_outbox(Db &outbox, const outbox::OutboxSchema &schema) {
    outbox::SchemaProblem p =
        schema.check(outbox.raw(), {outbox::Column::kSeq, outbox::Column::kId, outbox::Column::kAggregateType,
                                    outbox::Column::kAggregateId, outbox::Column::kType,
                                    outbox::Column::kPayload, outbox::Column::kTimestamp});
    if (p.kind == outbox::SchemaProblem::Kind::kNoTable) return false;
    if (!p.ok())
        throw Error(p.kind == outbox::SchemaProblem::Kind::kDbError ? sqlite::status_of(p.sqlite_rc)
                                                                    : CDCFLOW_ERR_CONFIG,
                    sqlite::database_label(outbox.path()) + ": " + p.message);
    return true;
}

} // namespace

void check_legacy(Db &legacy, const LegacySchema &schema) {
    int db_error = 0;
    std::string bad = schema.check(legacy.raw(), &db_error);
    if (bad.empty()) return;
    // A locked or corrupt file is the database's fault, not the pipeline's.
    if (db_error)
        throw Error(sqlite::status_of(db_error), sqlite::database_label(legacy.path()) + ": " + bad);
    throw Error(CDCFLOW_ERR_CONFIG, sqlite::database_label(legacy.path()) +
                                        (bad.rfind("has no table", 0) == 0 ? " " : ": ") + bad);
}

namespace {

std::string ids_text(const ReportClass &c, const char *what) {
    std::string out;
    const std::vector<int64_t> &v = c.ids.empty() ? c.seqs : c.ids;
    const char *noun = c.ids.empty() ? "outbox seq" : what;
    if (v.empty()) return out;
    out += " (";
    out += noun;
    if (v.size() > 1) out += "s";
    out += " ";
    for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(v[i]);
    }
    if (c.count > v.size()) out += ", ...";
    out += ")";
    return out;
}

struct Named {
    const char *key;   // JSON member
    const char *label; // text
    ReportClass VerifyReport::*member;
    bool error; // makes verify fail
};

constexpr Named kClasses[] = {
    {"migrated", "migrated", &VerifyReport::migrated, false},
    {"unmappable", "unmappable (recorded)", &VerifyReport::unmappable, false},
    {"missing", "missing", &VerifyReport::missing, true},
    {"not_yet_migrated", "not yet migrated", &VerifyReport::not_yet, true},
    {"unexpected", "unexpected", &VerifyReport::unexpected, true},
    {"duplicates", "duplicate event id(s)", &VerifyReport::duplicates, true},
    {"order_violations", "order violation(s)", &VerifyReport::order, true},
    {"late", "late (migrated out of order after a gap filled)", &VerifyReport::late, false},
    {"mismatches", "content mismatch(es)", &VerifyReport::mismatches, true},
    {"retired", "retired (deleted by the outbox's retention)", &VerifyReport::retired, false},
    {"cleaned", "cleaned (legacy row deleted by cleanup)", &VerifyReport::cleaned, false},
    {"other_events", "other event(s) (not from a migration)", &VerifyReport::other, true},
    {"other_migrations", "events of other migrations", &VerifyReport::other_migrations, false},
};

bool counts_as_error(const VerifyReport &r, const Named &n) {
    if (!n.error) return false;
    if (n.member == &VerifyReport::other && r.allow_other_events) return false;
    return (r.*n.member).count > 0;
}

// Order check: the in-order events, in legacy id order, must have rising
// seqs. The rows out of place are those outside a longest increasing run of
// seqs (the fewest rows whose removal leaves the rest in order); a row out of
// place that conflicts with no other such row (one of two swapped
// neighbours) is named with the in-place row it conflicts with, so that a
// swap names both legacy ids.
void check_order(const std::vector<std::pair<int64_t, int64_t>> &seq_by_id, ReportClass &out, size_t limit) {
    const size_t n = seq_by_id.size();
    if (n < 2) return;
    // Fast path: already in order (the normal case).
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; ++i)
        sorted = seq_by_id[i - 1].second < seq_by_id[i].second;
    if (sorted) return;

    std::vector<uint32_t> tails; // index of the smallest tail of each run length
    std::vector<int32_t> parent(n, -1);
    for (size_t i = 0; i < n; ++i) {
        const int64_t s = seq_by_id[i].second;
        auto it = std::lower_bound(tails.begin(), tails.end(), s,
                                   [&](uint32_t t, int64_t v) { return seq_by_id[t].second < v; });
        if (it != tails.begin()) parent[i] = static_cast<int32_t>(*(it - 1));
        if (it == tails.end())
            tails.push_back(static_cast<uint32_t>(i));
        else
            *it = static_cast<uint32_t>(i);
    }
    std::vector<uint8_t> in_run(n, 0);
    for (int32_t i = static_cast<int32_t>(tails.back()); i >= 0; i = parent[static_cast<size_t>(i)])
        in_run[static_cast<size_t>(i)] = 1;

    std::vector<size_t> out_of_place;
    for (size_t i = 0; i < n; ++i)
        if (!in_run[i]) out_of_place.push_back(i);
    // Among the rows out of place: does each conflict with another one?
    const size_t k = out_of_place.size();
    std::vector<int64_t> prefix_max(k), suffix_min(k);
    for (size_t j = 0; j < k; ++j)
        prefix_max[j] = j ? std::max(prefix_max[j - 1], seq_by_id[out_of_place[j - 1]].second) : INT64_MIN;
    for (size_t j = k; j-- > 0;)
        suffix_min[j] =
            j + 1 < k ? std::min(suffix_min[j + 1], seq_by_id[out_of_place[j + 1]].second) : INT64_MAX;
    std::vector<uint8_t> named(n, 0);
    for (size_t j = 0; j < k; ++j) {
        const size_t i = out_of_place[j];
        const int64_t s = seq_by_id[i].second;
        named[i] = 1;
        if (prefix_max[j] > s || suffix_min[j] < s) continue;
        // Its partner in the run: the nearest run row before it with a
        // higher seq, else the nearest after it with a lower one (one exists,
        // or the row would extend the run).
        size_t p = i;
        while (p-- > 0)
            if (in_run[p]) break;
        if (p < i && in_run[p] && seq_by_id[p].second > s) {
            named[p] = 1;
            continue;
        }
        for (size_t q = i + 1; q < n; ++q)
            if (in_run[q]) {
                if (seq_by_id[q].second < s) named[q] = 1;
                break;
            }
    }
    for (size_t i = 0; i < n; ++i)
        if (named[i]) add(out, seq_by_id[i].first, limit);
}

} // namespace

Progress read_progress(Db &target, const std::string &migration) {
    Progress p;
    if (!target.has_table("cdcflow_migration_progress")) return p;
    Stmt s = target.prepare("SELECT last_legacy_id, gaps, migrated, skipped, late FROM "
                            "cdcflow_migration_progress WHERE name = ?1");
    s.bind(1, std::string_view(migration));
    if (!s.step()) return p;
    p.exists = true;
    if (!s.is_null(0)) p.last_legacy_id = s.int64(0);
    auto gaps = parse_gaps(s.text(1));
    if (!gaps)
        throw Error(CDCFLOW_ERR_IO, sqlite::database_label(target.path()) +
                                        ": cdcflow_migration_progress has malformed gaps for migration " +
                                        base::quoted(migration) + ": " + base::quoted(s.text(1)));
    p.gaps = std::move(*gaps);
    std::sort(p.gaps.begin(), p.gaps.end(), [](const Gap &a, const Gap &b) { return a.lo < b.lo; });
    p.migrated = s.int64(2);
    p.skipped = s.int64(3);
    p.late = s.int64(4);
    return p;
}

std::string namespace_mismatch(Db &target, const MigrationSpec &spec) {
    if (!has_migration_tables(target) || !target.has_table(spec.outbox.table)) return {};
    using outbox::Column;
    Stmt s = target.prepare("SELECT m.legacy_id, o." + spec.outbox.quoted(Column::kId) +
                            " FROM cdcflow_migration_map AS m JOIN " + spec.outbox.quoted_table() +
                            " AS o ON o." + spec.outbox.quoted(Column::kSeq) +
                            " = m.seq WHERE m.migration = ?1 ORDER BY m.seq DESC LIMIT 1");
    s.bind(1, std::string_view(spec.migration));
    if (!s.step()) return {};
    const int64_t legacy_id = s.int64(0);
    char want[kUuidTextSize];
    legacy_event_id(spec.ns, legacy_id, want);
    const std::string_view have = s.text(1);
    if (have == std::string_view(want, kUuidTextSize)) return {};
    return "legacy id " + std::to_string(legacy_id) + " was migrated as event " +
           base::quoted(have, {'"', 40, true}) + ", but the namespace " + uuid_text(spec.ns) + " makes it " +
           std::string(want, kUuidTextSize) +
           ": the migrator's namespace changed since (set it back; a namespace is chosen once per legacy "
           "table)";
}

TargetCounts count_target(Db &target, const std::string &migration) {
    TargetCounts c;
    if (!has_migration_tables(target)) return c;
    Stmt m = target.prepare(
        "SELECT count(*), coalesce(sum(late <> 0), 0) FROM cdcflow_migration_map WHERE migration = ?1");
    m.bind(1, std::string_view(migration));
    if (m.step()) {
        c.migrated = static_cast<uint64_t>(m.int64(0));
        c.late = static_cast<uint64_t>(m.int64(1));
    }
    Stmt s = target.prepare("SELECT reason FROM cdcflow_migration_skipped WHERE migration = ?1");
    s.bind(1, std::string_view(migration));
    while (s.step()) {
        ++c.unmappable;
        std::string_view cls = reason_class(s.text(0));
        auto it = c.reasons.find(cls);
        if (it == c.reasons.end()) it = c.reasons.emplace(std::string(cls), 0).first;
        ++it->second;
    }
    return c;
}

uint64_t count_legacy_after(Db &legacy, const LegacySchema &schema, std::optional<int64_t> after) {
    std::string sql = "SELECT count(*) FROM " + schema.table_sql();
    if (after) sql += " WHERE " + schema.id_sql() + " > ?1";
    Stmt s = legacy.prepare(sql);
    if (after) s.bind(1, *after);
    return s.step() ? static_cast<uint64_t>(s.int64(0)) : 0;
}

VerifyReport verify(Databases dbs, const MigrationSpec &spec, const VerifyOptions &opts) {
    VerifyReport r;
    r.migration = spec.migration;
    r.allow_other_events = opts.allow_other_events;
    const size_t limit = opts.limit;
    check_legacy(dbs.legacy, spec.legacy);
    const bool have_outbox = check_outbox(dbs.outbox, spec.outbox);

    std::vector<MapEntry> map;
    std::vector<int64_t> other_seqs; // map entries of other migrations
    std::vector<int64_t> skipped;
    std::vector<OutRow> out;
    std::string scratch;
    {
        // One snapshot of the target (and of the outbox when it lives there):
        // progress, map and outbox rows agree with each other.
        ReadTx tx(dbs.target);
        Progress p = read_progress(dbs.target, spec.migration);
        r.last_legacy_id = p.last_legacy_id;
        r.open_gaps = watched_gaps(p.gaps, spec);
        if (has_migration_tables(dbs.target)) {
            Stmt m = dbs.target.prepare("SELECT migration = ?1, legacy_id, seq, checksum, late <> 0, "
                                        "cleaned_at IS NOT NULL FROM cdcflow_migration_map");
            m.bind(1, std::string_view(spec.migration));
            while (m.step()) {
                if (m.int64(0))
                    map.push_back({m.int64(1), m.int64(2), m.int64(3), m.int64(4) != 0, m.int64(5) != 0});
                else
                    other_seqs.push_back(m.int64(2));
            }
            Stmt s = dbs.target.prepare("SELECT legacy_id, reason FROM cdcflow_migration_skipped WHERE "
                                        "migration = ?1 ORDER BY legacy_id");
            s.bind(1, std::string_view(spec.migration));
            while (s.step()) {
                skipped.push_back(s.int64(0));
                std::string_view cls = reason_class(s.text(1));
                auto it = r.unmappable_reasons.find(cls);
                if (it == r.unmappable_reasons.end())
                    it = r.unmappable_reasons.emplace(std::string(cls), 0).first;
                ++it->second;
            }
        }
        std::optional<ReadTx> outbox_tx;
        if (&dbs.outbox != &dbs.target) outbox_tx.emplace(dbs.outbox);
        if (dbs.outbox.has_table("cdcflow_outbox_retired")) {
            Stmt s = dbs.outbox.prepare("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = ?1");
            s.bind(1, std::string_view(spec.outbox.table));
            if (s.step() && !s.is_null(0)) r.retired_up_to = s.int64(0);
        }
        using outbox::Column;
        const outbox::OutboxSchema &o = spec.outbox;
        Stmt s;
        if (have_outbox)
            s = dbs.outbox.prepare(
                "SELECT " +
                o.column_list({Column::kSeq, Column::kId, Column::kAggregateType, Column::kAggregateId,
                               Column::kType, Column::kPayload, Column::kTimestamp}) +
                " FROM " + o.quoted_table());
        std::sort(other_seqs.begin(), other_seqs.end());
        while (have_outbox && s.step()) {
            const int64_t seq = s.int64(0);
            std::string_view id = s.text(1);
            std::optional<Uuid> u = parse_uuid(id);
            if (!u) {
                // Not a UUID: the application's own event (or another tool's).
                if (std::binary_search(other_seqs.begin(), other_seqs.end(), seq))
                    add_seq(r.other_migrations, seq, limit);
                else
                    add_seq(r.other, seq, limit);
                continue;
            }
            const int64_t sum =
                event_checksum(id, s.text(2), s.text(3), s.text(4), s.text(5), s.int64(6), scratch);
            out.push_back({*u, seq, sum, looks_like_uuid5(id)});
        }
    }
    std::sort(map.begin(), map.end(), [](const MapEntry &a, const MapEntry &b) {
        return a.legacy_id != b.legacy_id ? a.legacy_id < b.legacy_id : a.seq < b.seq;
    });
    std::sort(out.begin(), out.end(), [](const OutRow &a, const OutRow &b) {
        int c = std::memcmp(a.id.data(), b.id.data(), 16);
        return c != 0 ? c < 0 : a.seq < b.seq;
    });

    // The outbox rows carrying event id `u`: [first, last).
    auto find = [&](const Uuid &u) {
        auto lo = std::lower_bound(out.begin(), out.end(), u,
                                   [](const OutRow &row, const Uuid &v) { return uuid_less(row.id, v); });
        auto hi = lo;
        while (hi != out.end() && hi->id == u)
            ++hi;
        return std::pair(lo, hi);
    };
    auto not_yet = [&](int64_t id) {
        return !r.last_legacy_id || id > *r.last_legacy_id || in_gaps(r.open_gaps, id);
    };

    std::vector<std::pair<int64_t, int64_t>> in_order; // (legacy id, seq) of in-order events
    char text_id[kUuidTextSize];

    // An event found for legacy id `id`: migrated, perhaps duplicated, its
    // content compared with `expected`, queued for the order check.
    auto found = [&](int64_t id, std::vector<OutRow>::iterator lo, std::vector<OutRow>::iterator hi,
                     std::optional<int64_t> expected, bool late) {
        for (auto it = lo; it != hi; ++it)
            it->matched = true;
        add(r.migrated, id, limit);
        if (hi - lo > 1) add(r.duplicates, id, limit);
        if (expected && lo->checksum != *expected) add(r.mismatches, id, limit);
        if (late)
            add(r.late, id, limit);
        else
            in_order.emplace_back(id, lo->seq);
    };

    // A map entry whose legacy row is gone: cleaned (verified against the
    // map's checksum) or unexpected.
    auto orphan = [&](const MapEntry &m) {
        legacy_event_id(spec.ns, m.legacy_id, text_id);
        Uuid u = *parse_uuid(std::string_view(text_id, kUuidTextSize));
        auto [lo, hi] = find(u);
        if (!m.cleaned) {
            for (auto it = lo; it != hi; ++it)
                it->matched = true;
            add(r.unexpected, m.legacy_id, limit);
            return;
        }
        add(r.cleaned, m.legacy_id, limit);
        if (lo != hi) {
            found(m.legacy_id, lo, hi, m.checksum, m.late);
        } else if (r.retired_up_to && m.seq <= *r.retired_up_to) {
            add(r.retired, m.legacy_id, limit);
        } else {
            add(r.missing, m.legacy_id, limit);
        }
    };

    size_t mi = 0, si = 0;
    MappedEvent ev;
    std::string reason;
    {
        ReadTx tx(dbs.legacy);
        Stmt s = dbs.legacy.prepare(spec.legacy.select_sql(" ORDER BY " + spec.legacy.id_sql()));
        while (s.step()) {
            LegacyRow row = read_row(s.raw());
            const int64_t id = row.id;
            ++r.legacy_rows;
            while (mi < map.size() && map[mi].legacy_id < id)
                orphan(map[mi++]);
            const MapEntry *m = nullptr;
            if (mi < map.size() && map[mi].legacy_id == id) m = &map[mi];
            while (mi < map.size() && map[mi].legacy_id == id)
                ++mi; // a second map entry for one legacy id: its event is a duplicate, found below
            while (si < skipped.size() && skipped[si] < id)
                ++si;
            const bool recorded = si < skipped.size() && skipped[si] == id;
            const bool mapped = map_row(row, spec.legacy, spec.ns, ev, reason);
            if (mapped) {
                std::memcpy(text_id, ev.id, kUuidTextSize);
            } else {
                legacy_event_id(spec.ns, id, text_id);
            }
            Uuid u = *parse_uuid(std::string_view(text_id, kUuidTextSize));
            auto [lo, hi] = find(u);
            if (recorded && lo == hi) {
                add(r.unmappable, id, limit);
                continue;
            }
            if (lo != hi) {
                // An unmappable row with an event (or one recorded as
                // unmappable): the row changed since it was migrated.
                std::optional<int64_t> expected;
                if (mapped) expected = event_checksum(ev, scratch);
                found(id, lo, hi, expected, m && m->late);
                if (!mapped || recorded) add(r.mismatches, id, limit);
                continue;
            }
            if (m && r.retired_up_to && m->seq <= *r.retired_up_to) {
                add(r.retired, id, limit);
                if (!mapped || event_checksum(ev, scratch) != m->checksum) add(r.mismatches, id, limit);
                continue;
            }
            if (not_yet(id))
                add(r.not_yet, id, limit);
            else
                add(r.missing, id, limit);
        }
    }
    while (mi < map.size())
        orphan(map[mi++]);

    for (const OutRow &o : out) {
        if (o.matched) continue;
        if (std::binary_search(other_seqs.begin(), other_seqs.end(), o.seq))
            add_seq(r.other_migrations, o.seq, limit);
        else if (o.v5)
            add_seq(r.unexpected, o.seq, limit);
        else
            add_seq(r.other, o.seq, limit);
    }
    // A duplicate event id that matched no legacy row is named by its seqs.
    for (size_t i = 1; i < out.size(); ++i)
        if (!out[i].matched && out[i].id == out[i - 1].id) add_seq(r.duplicates, out[i].seq, limit);

    check_order(in_order, r.order, limit);
    for (const Named &n : kClasses)
        sort_ids(r.*n.member);
    return r;
}

ReportClass quick_check(Databases dbs, const MigrationSpec &spec, size_t limit) {
    ReportClass missing;
    check_legacy(dbs.legacy, spec.legacy);
    Progress p;
    std::vector<int64_t> accounted;
    {
        ReadTx tx(dbs.target);
        p = read_progress(dbs.target, spec.migration);
        if (!p.last_legacy_id) return missing;
        if (has_migration_tables(dbs.target)) {
            for (const char *sql :
                 {"SELECT legacy_id FROM cdcflow_migration_map WHERE migration = ?1 AND "
                  "legacy_id <= ?2",
                  "SELECT legacy_id FROM cdcflow_migration_skipped WHERE migration = ?1 AND "
                  "legacy_id <= ?2"}) {
                Stmt s = dbs.target.prepare(sql);
                s.bind(1, std::string_view(spec.migration)).bind(2, *p.last_legacy_id);
                while (s.step())
                    accounted.push_back(s.int64(0));
            }
        }
    }
    std::sort(accounted.begin(), accounted.end());
    const std::vector<Gap> gaps = watched_gaps(p.gaps, spec);
    ReadTx tx(dbs.legacy);
    Stmt s = dbs.legacy.prepare("SELECT " + spec.legacy.id_sql() + " FROM " + spec.legacy.table_sql() +
                                " WHERE " + spec.legacy.id_sql() + " <= ?1 ORDER BY " + spec.legacy.id_sql());
    s.bind(1, *p.last_legacy_id);
    size_t i = 0;
    while (s.step()) {
        const int64_t id = s.int64(0);
        while (i < accounted.size() && accounted[i] < id)
            ++i;
        if (i < accounted.size() && accounted[i] == id) continue;
        if (in_gaps(gaps, id)) continue;
        add(missing, id, limit);
    }
    return missing;
}

bool VerifyReport::ok() const {
    for (const Named &n : kClasses)
        if (counts_as_error(*this, n)) return false;
    return true;
}

std::string VerifyReport::failure_summary() const {
    std::string out;
    for (const Named &n : kClasses) {
        if (!counts_as_error(*this, n)) continue;
        const ReportClass &c = this->*n.member;
        if (!out.empty()) out += "; ";
        out += std::to_string(c.count) + " " + n.label + ids_text(c, "legacy id");
    }
    return out;
}

std::string VerifyReport::text() const {
    std::string out = "migration " + base::quoted(migration) + ": " + std::to_string(legacy_rows) +
                      " legacy rows; progress: ";
    out += last_legacy_id ? "last legacy id " + std::to_string(*last_legacy_id) : std::string("none");
    if (!open_gaps.empty()) {
        out += ", open gaps";
        for (size_t i = 0; i < open_gaps.size() && i < 8; ++i)
            out +=
                (i ? ", " : " ") + std::to_string(open_gaps[i].lo) + ".." + std::to_string(open_gaps[i].hi);
        if (open_gaps.size() > 8) out += ", ... (" + std::to_string(open_gaps.size()) + ")";
    }
    if (retired_up_to) out += "; outbox retired up to seq " + std::to_string(*retired_up_to);
    out += "\n";
    for (const Named &n : kClasses) {
        const ReportClass &c = this->*n.member;
        char line[96];
        std::snprintf(line, sizeof line, "  %-17s %10llu  ", n.key, static_cast<unsigned long long>(c.count));
        out += line;
        out += n.label;
        if (c.count > 0 && n.member != &VerifyReport::migrated) out += ids_text(c, "legacy id");
        if (counts_as_error(*this, n)) out += "  <- FAIL";
        out += "\n";
        if (n.member == &VerifyReport::unmappable)
            for (const auto &[cls, count] : unmappable_reasons)
                out += "      " + std::to_string(count) + " " + base::text(cls) + "\n";
    }
    return out;
}

std::string VerifyReport::json() const {
    using nlohmann::json;
    json j;
    j["migration"] = migration;
    j["ok"] = ok();
    j["legacy_rows"] = legacy_rows;
    j["last_legacy_id"] = last_legacy_id ? json(*last_legacy_id) : json(nullptr);
    json gaps = json::array();
    for (const Gap &g : open_gaps)
        gaps.push_back({{"lo", g.lo}, {"hi", g.hi}, {"opened_us", g.opened_us}});
    j["open_gaps"] = gaps;
    j["retired_up_to_seq"] = retired_up_to ? json(*retired_up_to) : json(nullptr);
    j["allow_other_events"] = allow_other_events;
    json classes = json::object();
    for (const Named &n : kClasses) {
        const ReportClass &c = this->*n.member;
        json cj = {{"count", c.count}, {"ids", c.ids}, {"error", counts_as_error(*this, n)}};
        if (!c.seqs.empty()) cj["seqs"] = c.seqs;
        classes[n.key] = cj;
    }
    json reasons = json::object();
    for (const auto &[cls, count] : unmappable_reasons)
        reasons[cls] = count;
    classes["unmappable"]["reasons"] = reasons;
    j["classes"] = classes;
    std::string failure = failure_summary();
    if (!failure.empty()) j["failure"] = failure;
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

} // namespace cdcflow::migrate

#include "cleanup.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <algorithm>
#include <thread>

namespace cdcflow::migrate {

namespace {

using sqlite::Db;
using sqlite::Stmt;

struct MapRow {
    int64_t legacy_id, seq, checksum;
};

struct Candidate {
    int64_t id, seq, checksum;
};

template <typename F> void with_retry(const CleanupOptions &opts, const char *what, F &&fn) {
    retry_while_locked(opts.lock_patience, what, opts.notice, std::forward<F>(fn));
}

} // namespace

uint64_t CleanupReport::kept_total() const {
    uint64_t n = 0;
    for (const auto &[why, count] : kept)
        n += count;
    return n;
}

CleanupReport cleanup(Databases dbs, const MigrationSpec &spec, const CleanupOptions &opts) {
    CleanupReport rep;
    // The legacy table's columns, before anything is written.
    const LegacySchema &ls = spec.legacy;
    check_legacy(dbs.legacy, ls);
    const int64_t now = opts.now_us ? opts.now_us : base::wall_us();
    const int64_t cutoff = now - opts.older_than_us;

    std::vector<MapRow> map;
    std::vector<int64_t> skipped;
    std::optional<int64_t> retired;
    if (!dbs.target.has_table("cdcflow_migration_map") || !dbs.target.has_table("cdcflow_migration_skipped"))
        throw Error(CDCFLOW_ERR_CONFIG, sqlite::database_label(dbs.target.path()) +
                                            " has no migration tables: run the migration first");
    {
        Stmt m = dbs.target.prepare(
            "SELECT legacy_id, seq, checksum FROM cdcflow_migration_map WHERE migration = ?1");
        m.bind(1, std::string_view(spec.migration));
        while (m.step())
            map.push_back({m.int64(0), m.int64(1), m.int64(2)});
        Stmt s = dbs.target.prepare("SELECT legacy_id FROM cdcflow_migration_skipped WHERE migration = ?1");
        s.bind(1, std::string_view(spec.migration));
        while (s.step())
            skipped.push_back(s.int64(0));
    }
    std::sort(map.begin(), map.end(), [](const MapRow &a, const MapRow &b) {
        return a.legacy_id != b.legacy_id ? a.legacy_id < b.legacy_id : a.seq < b.seq;
    });
    std::sort(skipped.begin(), skipped.end());
    if (dbs.outbox.has_table("cdcflow_outbox_retired")) {
        Stmt s = dbs.outbox.prepare("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = ?1");
        s.bind(1, std::string_view(spec.outbox.table));
        if (s.step() && !s.is_null(0)) retired = s.int64(0);
    }

    const std::string t = ls.table_sql(), id = ls.id_sql();
    using outbox::Column;
    const outbox::OutboxSchema &o = spec.outbox;
    Stmt read = dbs.legacy.prepare(ls.select_sql(" WHERE " + id + " >= ?1 ORDER BY " + id + " LIMIT ?2"));
    Stmt one = dbs.legacy.prepare(ls.select_sql(" WHERE " + id + " = ?1"));
    Stmt del = dbs.legacy.prepare("DELETE FROM " + t + " WHERE " + id + " = ?1 AND " + id +
                                  " < (SELECT max(" + id + ") FROM " + t + ")");
    Stmt at_seq =
        dbs.outbox.prepare("SELECT " +
                           o.column_list({Column::kId, Column::kAggregateType, Column::kAggregateId,
                                          Column::kType, Column::kPayload, Column::kTimestamp}) +
                           " FROM " + o.quoted_table() + " WHERE " + o.quoted(Column::kSeq) + " = ?1");
    // An event id that is in the outbox more than once is something verify
    // fails on (duplicates): its legacy row stays until that is explained.
    // Looked up through the id index: without it (a migration stopped before
    // building it) every row would cost a scan of the outbox.
    {
        Stmt ix = dbs.outbox.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1");
        const std::string name = o.index_name();
        ix.bind(1, std::string_view(name));
        if (!ix.step())
            throw Error(CDCFLOW_ERR_CONFIG, sqlite::database_label(dbs.outbox.path()) +
                                                ": the outbox has no index " + base::text(name, '\'') +
                                                " yet (a migration stopped before building it): run cdcflow "
                                                "migrate to the end first");
    }
    Stmt copies = dbs.outbox.prepare("SELECT count(*) FROM " + o.quoted_table() + " WHERE " +
                                     o.quoted(Column::kId) + " = ?1");
    Stmt mark =
        dbs.target.prepare("UPDATE cdcflow_migration_map SET cleaned_at = ?3 WHERE migration = ?1 AND "
                           "seq = ?2 AND cleaned_at IS NULL");
    int64_t max_id = INT64_MIN;
    bool any = false;
    with_retry(opts, "reading the legacy table", [&] {
        Stmt s = dbs.legacy.prepare("SELECT max(" + id + ") FROM " + t);
        any = s.step() && !s.is_null(0);
        if (any) max_id = s.int64(0);
    });
    if (!any) return rep;

    std::string scratch;
    std::string reason;
    MappedEvent ev;
    auto keep = [&rep](const char *why) { ++rep.kept[why]; };
    // Is the legacy row `row` (mapped into `ev`) deletable? Returns its map
    // row's seq, or nullopt with the reason counted.
    auto judge = [&](const LegacyRow &row) -> std::optional<Candidate> {
        if (!map_row(row, ls, spec.ns, ev, reason)) {
            keep("unmappable");
            return std::nullopt;
        }
        if (ev.timestamp_us >= cutoff) {
            keep("younger than the retention");
            return std::nullopt;
        }
        if (row.id >= max_id) {
            keep(row.id == max_id ? "the highest id" : "written during the cleanup");
            return std::nullopt;
        }
        auto it = std::lower_bound(map.begin(), map.end(), row.id,
                                   [](const MapRow &m, int64_t v) { return m.legacy_id < v; });
        if (it == map.end() || it->legacy_id != row.id) {
            keep(std::binary_search(skipped.begin(), skipped.end(), row.id) ? "unmappable" : "not migrated");
            return std::nullopt;
        }
        // Migrated twice (two map rows), or its event id twice in the
        // outbox: verify fails on both, so the row is evidence to keep.
        if (std::next(it) != map.end() && std::next(it)->legacy_id == row.id) {
            keep("event duplicated");
            return std::nullopt;
        }
        {
            copies.bind(1, ev.id_view());
            sqlite::ResetOnExit guard{copies};
            if (copies.step() && copies.int64(0) > 1) {
                keep("event duplicated");
                return std::nullopt;
            }
        }
        const int64_t sum = event_checksum(ev, scratch);
        at_seq.bind(1, it->seq);
        sqlite::ResetOnExit guard{at_seq};
        if (at_seq.step()) {
            const int64_t there = event_checksum(at_seq.text(0), at_seq.text(1), at_seq.text(2),
                                                 at_seq.text(3), at_seq.text(4), at_seq.int64(5), scratch);
            if (at_seq.text(0) != ev.id_view() || there != sum) {
                keep("event differs");
                return std::nullopt;
            }
        } else if (retired && it->seq <= *retired) {
            if (it->checksum != sum) {
                keep("event differs");
                return std::nullopt;
            }
        } else {
            keep("event missing");
            return std::nullopt;
        }
        return Candidate{row.id, it->seq, sum};
    };

    int64_t cursor = INT64_MIN;
    bool done = false;
    bool first_batch = true;
    while (!done) {
        if (opts.stop && opts.stop()) {
            rep.stopped = true;
            break;
        }
        if (!first_batch && opts.pause.count() > 0) std::this_thread::sleep_for(opts.pause);
        first_batch = false;
        // Read a batch's worth of rows and judge them; the statement is
        // reset before anything is written (in rollback-journal mode a
        // pending read would block our own write on the same file).
        std::vector<Candidate> batch;
        std::map<std::string, uint64_t> kept_before = rep.kept;
        with_retry(opts, "reading the legacy table", [&] {
            rep.kept = kept_before;
            batch.clear();
            sqlite::ResetOnExit guard{read};
            read.bind(1, cursor).bind(2, opts.batch);
            int64_t rows = 0, last = cursor;
            while (read.step()) {
                LegacyRow row = read_row(read.raw());
                ++rows;
                last = row.id;
                if (auto c = judge(row)) batch.push_back(*c);
            }
            done = rows < opts.batch || last == INT64_MAX;
            if (rows > 0 && last != INT64_MAX) cursor = last + 1;
        });
        if (batch.empty()) continue;

        // Mark first: a crash after this commit leaves marked rows that still
        // exist (normal for verify), never deleted rows that are not marked.
        uint64_t marked = 0;
        with_retry(opts, "marking the map", [&] {
            marked = 0;
            sqlite::Transaction tx(dbs.target);
            const int64_t at = base::wall_us();
            for (const Candidate &c : batch) {
                mark.bind(1, std::string_view(spec.migration)).bind(2, c.seq).bind(3, at);
                mark.run();
                marked += static_cast<uint64_t>(dbs.target.changes());
            }
            tx.commit();
        });
        rep.marked += marked;

        uint64_t deleted = 0;
        std::map<std::string, uint64_t> kept;
        with_retry(opts, "deleting legacy rows", [&] {
            deleted = 0;
            kept.clear();
            sqlite::Transaction tx(dbs.legacy);
            for (const Candidate &c : batch) {
                {
                    // Read again under the write lock: the row must be the
                    // one that was verified.
                    one.bind(1, c.id);
                    sqlite::ResetOnExit guard{one};
                    if (!one.step()) continue; // deleted by someone else meanwhile
                    LegacyRow row = read_row(one.raw());
                    if (!map_row(row, ls, spec.ns, ev, reason) || event_checksum(ev, scratch) != c.checksum) {
                        ++kept["changed during the cleanup"];
                        continue;
                    }
                }
                del.bind(1, c.id);
                del.run();
                if (dbs.legacy.changes() == 1)
                    ++deleted;
                else
                    ++kept["the highest id"];
            }
            tx.commit();
        });
        rep.deleted += deleted;
        for (const auto &[why, n] : kept)
            rep.kept[why] += n;
    }
    return rep;
}

} // namespace cdcflow::migrate

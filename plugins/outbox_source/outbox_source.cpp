#include "outbox_source.hpp"

#include "base/clock.hpp"
#include "migrate/progress.hpp"

#include <algorithm>
#include <filesystem>
#include <thread>

namespace cdcflow::outbox {

namespace {

using std::chrono::milliseconds;

// The cleanup connection waits only briefly for the write lock: the sink and
// the application write to the same file, and a cleanup that cannot get in
// simply runs later, while a long wait would stall the source's reads.
constexpr int kCleanupBusyTimeoutMs = 250;

// After a read that returned rows, a caught-up poll waits 1 ms, then 2, 4,
// ... up to poll_interval_ms between looks: a steady stream is picked up
// within a few milliseconds of its commit instead of ~poll_interval/2, while
// a trickle or an idle outbox costs a handful of extra looks per row, not a
// thousand a second.
constexpr auto kFirstSlice = std::chrono::milliseconds(1);

// Commits closer together than this share one retention mark (see
// commit_timeline.hpp): rows may go up to 0.1% of the retention late, and the
// record stays at about 1000 marks however long the retention.
std::chrono::steady_clock::duration commit_granule(int64_t retention_s) {
    return std::max<std::chrono::steady_clock::duration>(std::chrono::milliseconds(1),
                                                         std::chrono::seconds(retention_s) / 1000);
}

} // namespace

OutboxSource::OutboxSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Source(ctx), path_(cfg.database), poll_interval_ms_(cfg.poll_interval_ms),
      busy_timeout_ms_(cfg.busy_timeout_ms), retention_s_(cfg.retention_seconds),
      cleanup_batch_(cfg.cleanup_batch), create_schema_(cfg.create_schema),
      commits_(commit_granule(retention_s_)) {
    // Bounds are the host's (declared in OutboxSourceSettings); emptiness is ours.
    if (path_.empty()) cfg.fail(&Settings::database, "must not be empty");
    if (cfg.table.empty()) cfg.fail(&Settings::table, "must not be empty");
    schema_.table = cfg.table;
    for (size_t i = 0; i < kColumnCount; ++i) {
        schema_.names[i] = cfg.*Settings::kColumnMembers[i];
        // Only the version column is optional: an empty name means none.
        if (schema_.names[i].empty() && i != static_cast<size_t>(Column::kVersion))
            cfg.fail(Settings::kColumnMembers[i], "must not be empty");
    }

    rows_read_ = ctx.counter("rows_read", "outbox rows read");
    polls_ = ctx.counter("polls", "poll calls");
    cleanup_deleted_ = ctx.counter("cleanup_deleted", "outbox rows deleted by retention cleanup");
    lag_ = ctx.gauge("lag", "highest seq in the outbox minus the highest seq committed downstream");
    // The host's source lag family (ABI 4): rows not yet read, partition "".
    unread_ = ctx.lag_metric("");
    replayed_ = ctx.counter("replayed", "outbox rows replayed to rebuild stateful transforms");

    // create() checks, never changes: a missing file or table is an error
    // now (at `cdcflow validate` time), unless start() is allowed to create it.
    std::error_code ec;
    bool exists = std::filesystem::exists(path_, ec);
    if (!exists) {
        if (create_schema_) return;
        cfg.fail(&Settings::database, sqlite::database_label(path_) + " does not exist");
    }
    open_reader();
    if (auto bad = missing_column()) {
        // start() creates a missing table; a missing column it cannot fix.
        if (create_schema_ && bad->first == &Settings::table) return;
        cfg.fail(bad->first, bad->second);
    }
}

void OutboxSource::open_reader() {
    if (!reader_) reader_ = sqlite::Db(path_, SQLITE_OPEN_READONLY, static_cast<int>(busy_timeout_ms_));
}

std::optional<std::pair<std::string OutboxSource::Settings::*, std::string>> OutboxSource::missing_column() {
    SchemaProblem p = schema_.check(reader_.raw());
    const std::string where = sqlite::database_label(path_);
    switch (p.kind) {
    case SchemaProblem::Kind::kNone:
        return std::nullopt;
    case SchemaProblem::Kind::kNoTable:
        return std::pair(&Settings::table, where + " " + p.message);
    case SchemaProblem::Kind::kNoColumn:
        for (size_t i = 0; i < kColumnCount; ++i)
            if (std::string_view(kColumns[i].key) == p.key)
                return std::pair(Settings::kColumnMembers[i], where + ": " + p.message);
        break;
    case SchemaProblem::Kind::kDbError:
        break;
    }
    throw Error(sqlite::status_of(p.sqlite_rc), where + ": " + p.message);
}

void OutboxSource::create_schema() {
    // The writer is opened with CREATE only here: without create_schema the
    // source never creates anything in the user's database.
    sqlite::Db db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, static_cast<int>(busy_timeout_ms_));
    // WAL: readers (this source) and the application's writers do not block
    // each other. Switching needs a moment alone with the file; if another
    // connection is busy, keep the current mode and say so.
    if (std::string mode = db.switch_to_wal(); mode != "wal")
        ctx().warn(sqlite::database_label(path_) + " stays in journal_mode '" + mode +
                   "' (WAL is recommended)");
    db.exec(schema_.create_sql());
}

std::string OutboxSource::select_columns() const {
    // Column order: append_row() takes them by index.
    return "SELECT " +
           schema_.column_list({Column::kSeq, Column::kId, Column::kAggregateType, Column::kAggregateId,
                                Column::kType, Column::kPayload, Column::kTimestamp, Column::kVersion}) +
           " FROM " + schema_.quoted_table();
}

void OutboxSource::prepare() {
    const std::string t = schema_.quoted_table(), seq = schema_.quoted(Column::kSeq);
    // One statement for every poll: the read transaction it opens ends when
    // it is reset, so a caught-up source never pins the WAL.
    select_ = reader_.prepare(select_columns() + " WHERE " + seq + " > ?1 ORDER BY " + seq + " LIMIT ?2");
    data_version_ = reader_.prepare("PRAGMA data_version");
    max_seq_ = reader_.prepare("SELECT max(" + seq + ") FROM " + t);
    if (retention_s_ > 0) {
        if (!writer_) writer_ = sqlite::Db(path_, SQLITE_OPEN_READWRITE, kCleanupBusyTimeoutMs);
        sqlite3_busy_timeout(writer_.raw(),
                             static_cast<int>(std::min<int64_t>(busy_timeout_ms_, kCleanupBusyTimeoutMs)));
        // Positions only: the timestamp column plays no part in retention.
        cleanup_ = writer_.prepare("DELETE FROM " + t + " WHERE " + seq + " IN (SELECT " + seq + " FROM " +
                                   t + " WHERE " + seq + " <= ?1 ORDER BY " + seq + " LIMIT ?2)");
        cleanup_top_ = writer_.prepare("SELECT max(" + seq + ") FROM (SELECT " + seq + " FROM " + t +
                                       " WHERE " + seq + " <= ?1 ORDER BY " + seq + " LIMIT ?2)");
    }
}

void OutboxSource::start() {
    if (create_schema_) create_schema();
    open_reader();
    if (auto bad = missing_column())
        throw Error(CDCFLOW_ERR_CONFIG, std::string(cdcflow::key_of(bad->first)) + ": " + bad->second);
    if (!create_schema_) {
        if (std::string mode = reader_.journal_mode(); mode != "wal")
            ctx().info(
                sqlite::database_label(path_) + " is in journal_mode '" + mode +
                "'; WAL is strongly recommended so that reading the outbox does not block its writers");
    }
    prepare();
    next_cleanup_ = now_();
}

void OutboxSource::seek(std::span<const cdcflow_position> positions) {
    for (const cdcflow_position &p : positions) {
        if (p.partition.len != 0) {
            ctx().warn("ignoring checkpoint for partition '" + std::string(sv(p.partition)) +
                       "': an outbox has one partition (\"\")");
            continue;
        }
        // The sink's checkpoint is durable: everything up to it is committed.
        // When it was committed is unknown, so for retention it counts as
        // committed now: after a restart rows wait a full retention again,
        // never less.
        last_seq_ = p.offset;
        committed_seq_ = std::max(committed_seq_, p.offset);
        if (retention_s_ > 0) commits_.committed(committed_seq_, now_());
    }
}

bool OutboxSource::append_row(sqlite::Stmt &st, cdcflow::Batch &batch, bool reject_bad_version) {
    // A NULL column reads as "" (or 0): the validator rejects such events
    // with a reason instead of this stage failing on them.
    cdcflow_event_init e = cdcflow::make_event_init();
    e.event_id = cdcflow::str(st.text(1));
    e.aggregate_type = cdcflow::str(st.text(2));
    e.aggregate_id = cdcflow::str(st.text(3));
    e.event_type = cdcflow::str(st.text(4));
    e.payload = cdcflow::str(st.text(5));
    e.timestamp_us = st.int64(6);
    e.position = cdcflow_position{{"", 0}, st.int64(0)};
    // The version: a non-negative integer, or NULL for none. Anything else
    // would silently turn the check off for the event: reject it.
    bool bad_version = false;
    e.aggregate_version = -1;
    if (schema_.has(Column::kVersion)) {
        int type = sqlite3_column_type(st.raw(), 7);
        if (type == SQLITE_INTEGER && st.int64(7) >= 0)
            e.aggregate_version = st.int64(7);
        else
            bad_version = type != SQLITE_NULL;
    }
    if (!batch.append(e)) return false;
    if (bad_version && reject_bad_version)
        batch.reject(batch.size() - 1,
                     "column '" + schema_.name(Column::kVersion) + "' is not an integer >= 0 or NULL");
    return true;
}

uint32_t OutboxSource::read_rows(cdcflow::Batch &batch) {
    uint32_t room = batch.capacity() - batch.size();
    if (room == 0) return 0;
    // On a failure the host drops the batch and polls again: the rows
    // appended so far must then be read again.
    const int64_t resume = last_seq_;
    uint32_t n = 0;
    try {
        select_.bind(1, last_seq_).bind(2, static_cast<int64_t>(room));
        sqlite::ResetOnExit guard{select_};
        while (select_.step()) {
            if (!append_row(select_, batch, true)) break;
            last_seq_ = select_.int64(0);
            ++n;
        }
    } catch (...) {
        last_seq_ = resume;
        throw;
    }
    rows_read_.add(n);
    if (n > 0) slice_ = kFirstSlice;
    update_lag(n < room);
    return n;
}

bool OutboxSource::begin_replay(cdcflow_replay &req, int64_t checkpoint) {
    // Called before start: the reader may not be open yet, and with
    // create_schema the database may not exist yet (then nothing was
    // delivered from it).
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) return false;
    open_reader();
    if (!reader_.has_table(schema_.table)) return false;
    if (auto bad = missing_column())
        throw Error(CDCFLOW_ERR_CONFIG, std::string(cdcflow::key_of(bad->first)) + ": " + bad->second);
    const std::string t = schema_.quoted_table(), seq = schema_.quoted(Column::kSeq);
    // The oldest row up to the checkpoint: one probe of the seq (rowid) index.
    sqlite::Stmt oldest = reader_.prepare("SELECT min(" + seq + ") FROM " + t + " WHERE " + seq + " <= ?1");
    oldest.bind(1, checkpoint);
    if (!oldest.step() || oldest.is_null(0)) {
        // Every row up to the checkpoint is gone (or there never was one).
        if (checkpoint >= 1) {
            req.truncated = 1;
            req.truncated_by = retention_s_ > 0 ? "retention_seconds" : nullptr;
        }
        return false;
    }
    const int64_t min_seq = oldest.int64(0);
    const uint64_t span = static_cast<uint64_t>(checkpoint) - static_cast<uint64_t>(min_seq) + 1;
    if (span <= req.max_events) {
        // Seqs are unique integers: at most `span` rows exist from there on,
        // so every one of them is asked for. When rows before the oldest
        // existed (an AUTOINCREMENT seq starts at 1) and are deleted, the
        // transforms get a shorter history than they asked for.
        replay_after_ = min_seq - 1;
        if (min_seq > 1 && span < req.max_events) {
            req.truncated = 1;
            req.truncated_by = retention_s_ > 0 ? "retention_seconds" : nullptr;
        }
    } else {
        // More rows than asked for: the start is the max_events-th row
        // counted back from the checkpoint. One query on the seq index,
        // stepping over row ids only (seqs may have gaps, so no arithmetic).
        sqlite::Stmt first = reader_.prepare("SELECT " + seq + " FROM " + t + " WHERE " + seq +
                                             " <= ?1 ORDER BY " + seq + " DESC LIMIT 1 OFFSET ?2");
        first.bind(1, checkpoint)
            .bind(2, static_cast<int64_t>(std::min<uint64_t>(req.max_events - 1, INT64_MAX)));
        // No such row: gaps left fewer rows than the span; replay them all.
        replay_after_ = first.step() ? first.int64(0) - 1 : min_seq - 1;
    }
    replay_upto_ = checkpoint;
    replay_select_ = reader_.prepare(select_columns() + " WHERE " + seq + " > ?1 AND " + seq +
                                     " <= ?3 ORDER BY " + seq + " LIMIT ?2");
    return true;
}

bool OutboxSource::replay(cdcflow_replay &req, cdcflow::Batch &batch) {
    keep_rows_ = std::max(keep_rows_, req.max_events);
    if (!replay_select_) {
        const cdcflow_position *cp = nullptr;
        for (uint32_t i = 0; i < req.position_count; ++i)
            if (req.positions[i].partition.len == 0) cp = &req.positions[i];
        // No checkpoint (a first start), or one of another source: nothing
        // from this outbox was delivered.
        if (!cp || req.max_events == 0 || !begin_replay(req, cp->offset)) return true;
    }
    uint32_t room = batch.capacity() - batch.size();
    if (room == 0) return false;
    uint32_t n = 0;
    int64_t after = replay_after_;
    {
        // Each call is one short read transaction; a failed one is read
        // again in full by the next call (replay_after_ moves on success).
        replay_select_.bind(1, replay_after_).bind(2, static_cast<int64_t>(room)).bind(3, replay_upto_);
        sqlite::ResetOnExit guard{replay_select_};
        while (replay_select_.step()) {
            if (!append_row(replay_select_, batch, false)) break; // marks are not the replay's business
            after = replay_select_.int64(0);
            ++n;
        }
    }
    replay_after_ = after;
    replayed_.add(n);
    if (n == room) return false;
    replay_select_ = {}; // done: a later replay starts afresh
    return true;
}

int64_t OutboxSource::data_version() {
    int64_t v = data_version_.step() ? data_version_.int64(0) : 0;
    data_version_.reset();
    return v;
}

cdcflow::PollResult OutboxSource::poll(cdcflow::Batch &batch, uint32_t wait_ms) {
    polls_.add();
    maybe_cleanup();
    const auto deadline = Clock::now() + milliseconds(wait_ms);
    // data_version before the read: a commit that lands between the two is
    // then either seen by the read or changes the version (a harmless re-read).
    int64_t version = wait_ms ? data_version() : 0;
    if (read_rows(batch) > 0) return {false};
    if (wait_ms == 0) return {true};
    // Caught up: park in short sleeps, re-reading only when another
    // connection committed something. Idle cost: one cheap pragma per slice.
    while (!ctx().stop_requested()) {
        auto now = Clock::now();
        if (now >= deadline) break;
        const Clock::duration longest = milliseconds(poll_interval_ms_);
        if (slice_ > longest) slice_ = longest;
        std::this_thread::sleep_for(std::min<Clock::duration>(slice_, deadline - now));
        slice_ *= 2;
        int64_t v = data_version();
        if (v == version) continue;
        version = v;
        if (read_rows(batch) > 0) return {false};
    }
    return {true};
}

void OutboxSource::committed(std::span<const cdcflow_position> positions) {
    for (const cdcflow_position &p : positions)
        if (p.partition.len == 0) committed_seq_ = std::max(committed_seq_, p.offset);
    // Retention counts from here. One clock read per committed batch.
    if (retention_s_ > 0 && committed_seq_ != INT64_MIN) commits_.committed(committed_seq_, now_());
    update_lag(false);
}

void OutboxSource::update_lag(bool caught_up) {
    auto now = Clock::now();
    if (caught_up) {
        // The read returned everything there was: the newest row is ours.
        max_seq_seen_ = std::max(max_seq_seen_, last_seq_);
    } else if (select_ && now >= next_lag_probe_) {
        // max(seq) is a single index probe; still, at most once a second.
        next_lag_probe_ = now + std::chrono::seconds(1);
        try {
            int64_t m = max_seq_.step() && !max_seq_.is_null(0) ? max_seq_.int64(0) : INT64_MIN;
            max_seq_.reset();
            max_seq_seen_ = std::max(max_seq_seen_, m);
        } catch (const Error &) {
            // The gauge is best effort: a busy database must not fail a poll
            // that already holds rows.
        }
    }
    if (max_seq_seen_ == INT64_MIN) return;
    int64_t base = committed_seq_ == INT64_MIN ? 0 : committed_seq_;
    lag_.set(std::max<int64_t>(0, max_seq_seen_ - base));
    // Not yet read: the newest seq known minus the last one read. Seqs have
    // gaps (a rolled-back insert, deleted rows), so this is an upper bound;
    // and the newest seq is at most a second old while rows keep coming.
    const int64_t read = last_seq_ == INT64_MIN ? 0 : last_seq_;
    unread_.set(max_seq_seen_ > read ? max_seq_seen_ - read : 0);
}

void OutboxSource::maybe_cleanup() {
    if (retention_s_ <= 0 || !cleanup_) return;
    const auto now = now_();
    if (now < next_cleanup_) return;
    // Rows up to `due` have been committed for at least the retention. Their
    // timestamps play no part: a row stamped 30 days ago is kept as long as
    // one stamped now, and one stamped far in the future goes like any other.
    int64_t due = commits_.due(now, std::chrono::seconds(retention_s_));
    // Never the newest keep_rows_ committed rows: the pipeline's stateful
    // transforms rebuild from them at the next start (replay), so retention
    // cannot make a restarted deduper forget what the live one remembered.
    // Counted in seq: exact for an outbox that only this cleanup deletes from.
    if (keep_rows_ > 0 && due != INT64_MIN) {
        const int64_t keep = static_cast<int64_t>(std::min<uint64_t>(keep_rows_, INT64_MAX));
        due = std::min(due, committed_seq_ < INT64_MIN + keep ? INT64_MIN : committed_seq_ - keep);
    }
    if (due == INT64_MIN || due <= cleaned_upto_) {
        // Nothing newly due: no write transaction. Commits only become due
        // as time passes; look again in a second.
        next_cleanup_ = now + std::chrono::seconds(1);
        return;
    }
    try {
        // A short IMMEDIATE transaction of at most cleanup_batch rows, so the
        // application's writers never wait long for us.
        sqlite::Transaction tx(writer_);
        // How far retention deleted, committed with the DELETE: a migration's
        // verify (core/migrate/progress.hpp) then reports an event that is
        // gone from here as retired, not missing. Never lowered.
        // The table is made in this transaction: it exists only once that
        // commits (a rollback takes it away, and the statement with it).
        if (!retired_table_) {
            writer_.exec(migrate::kRetiredDdl);
            retired_ = writer_.prepare(
                "INSERT INTO cdcflow_outbox_retired(outbox, up_to_seq, updated_at) VALUES (?1, ?2, ?3) "
                "ON CONFLICT(outbox) DO UPDATE SET up_to_seq = max(up_to_seq, excluded.up_to_seq), "
                "updated_at = excluded.updated_at");
        }
        cleanup_top_.bind(1, due).bind(2, cleanup_batch_);
        const int64_t top =
            cleanup_top_.step() && !cleanup_top_.is_null(0) ? cleanup_top_.int64(0) : INT64_MIN;
        cleanup_top_.reset();
        cleanup_.bind(1, due).bind(2, cleanup_batch_);
        cleanup_.run();
        int64_t n = writer_.changes();
        if (n > 0 && top != INT64_MIN) {
            retired_.bind(1, std::string_view(schema_.table)).bind(2, top).bind(3, base::wall_us());
            retired_.run();
        }
        tx.commit();
        retired_table_ = true;
        cleanup_deleted_.add(n);
        cleanup_failures_ = 0;
        // A full batch: more is waiting, go again on the next poll.
        // Otherwise every row up to `due` is gone.
        if (n < cleanup_batch_) cleaned_upto_ = due;
        next_cleanup_ = n >= cleanup_batch_ ? now : now + std::chrono::seconds(1);
    } catch (const Error &e) {
        if (!retired_table_) retired_ = {}; // prepared against a table the rollback removed
        // Busy or failing cleanup never stops the pipeline; back off.
        uint32_t shift = std::min<uint32_t>(cleanup_failures_++, 6);
        auto delay = std::chrono::seconds(1LL << shift);
        next_cleanup_ = now + delay;
        ctx().warn(std::string("outbox cleanup skipped: ") + e.what() + "; retrying in " +
                   std::to_string(delay.count()) + " s");
    }
}

void OutboxSource::stop() {
    replay_select_ = {};
    select_ = {};
    data_version_ = {};
    max_seq_ = {};
    cleanup_ = {};
    cleanup_top_ = {};
    retired_ = {};
    retired_table_ = false;
    writer_ = {};
    reader_ = {};
}

} // namespace cdcflow::outbox

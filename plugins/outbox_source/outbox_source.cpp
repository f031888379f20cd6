#include "outbox_source.hpp"

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

constexpr int64_t kMaxRetentionS = int64_t{100} * 366 * 24 * 3600; // a century

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

OutboxSource::OutboxSource(const cdcflow::Config &cfg, cdcflow::Context ctx)
    : Source(ctx), path_(cfg.str("database")), poll_interval_ms_(cfg.i64("poll_interval_ms")),
      busy_timeout_ms_(cfg.i64("busy_timeout_ms")), retention_s_(cfg.i64("retention_seconds")),
      cleanup_batch_(cfg.i64("cleanup_batch")), create_schema_(cfg.boolean("create_schema")),
      commits_(commit_granule(retention_s_)) {
    if (path_.empty()) cfg.fail("database", "must not be empty");
    schema_.table = cfg.str("table");
    if (schema_.table.empty()) cfg.fail("table", "must not be empty");
    for (size_t i = 0; i < kColumnCount; ++i) {
        schema_.names[i] = cfg.str(kColumns[i].key);
        // Only the version column is optional: an empty name means none.
        if (schema_.names[i].empty() && i != static_cast<size_t>(Column::kVersion))
            cfg.fail(kColumns[i].key, "must not be empty");
    }
    if (poll_interval_ms_ < 1 || poll_interval_ms_ > 60000) cfg.fail("poll_interval_ms", "must be 1..60000");
    if (busy_timeout_ms_ < 0 || busy_timeout_ms_ > 3600000) cfg.fail("busy_timeout_ms", "must be 0..3600000");
    // The upper bound keeps seconds(retention_s_) far from overflowing.
    if (retention_s_ < 0 || retention_s_ > kMaxRetentionS)
        cfg.fail("retention_seconds",
                 "must be 0.." + std::to_string(kMaxRetentionS) + " (0 keeps every row)");
    if (cleanup_batch_ < 1) cfg.fail("cleanup_batch", "must be >= 1");

    rows_read_ = ctx.counter("rows_read", "outbox rows read");
    polls_ = ctx.counter("polls", "poll calls");
    cleanup_deleted_ = ctx.counter("cleanup_deleted", "outbox rows deleted by retention cleanup");
    lag_ = ctx.gauge("lag", "highest seq in the outbox minus the highest seq committed downstream");

    // create() checks, never changes: a missing file or table is an error
    // now (at `cdcflow validate` time), unless start() is allowed to create it.
    std::error_code ec;
    bool exists = std::filesystem::exists(path_, ec);
    if (!exists) {
        if (create_schema_) return;
        cfg.fail("database", sqlite::database_label(path_) + " does not exist");
    }
    open_reader();
    if (auto bad = missing_column()) {
        // start() creates a missing table; a missing column it cannot fix.
        if (create_schema_ && std::string_view(bad->first) == "table") return;
        cfg.fail(bad->first, bad->second);
    }
}

void OutboxSource::open_reader() {
    if (!reader_) reader_ = sqlite::Db(path_, SQLITE_OPEN_READONLY, static_cast<int>(busy_timeout_ms_));
}

std::optional<std::pair<const char *, std::string>> OutboxSource::missing_column() {
    SchemaProblem p = schema_.check(reader_.raw());
    const std::string where = sqlite::database_label(path_);
    switch (p.kind) {
    case SchemaProblem::Kind::kNone:
        return std::nullopt;
    case SchemaProblem::Kind::kNoTable:
        return std::pair("table", where + " " + p.message);
    case SchemaProblem::Kind::kNoColumn:
        return std::pair(p.key, where + ": " + p.message);
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

void OutboxSource::prepare() {
    const std::string t = schema_.quoted_table(), seq = schema_.quoted(Column::kSeq);
    // One statement for every poll: the read transaction it opens ends when
    // it is reset, so a caught-up source never pins the WAL.
    // Column order: read_rows() takes them by index.
    select_ = reader_.prepare(
        "SELECT " +
        schema_.column_list({Column::kSeq, Column::kId, Column::kAggregateType, Column::kAggregateId,
                             Column::kType, Column::kPayload, Column::kTimestamp, Column::kVersion}) +
        " FROM " + t + " WHERE " + seq + " > ?1 ORDER BY " + seq + " LIMIT ?2");
    data_version_ = reader_.prepare("PRAGMA data_version");
    max_seq_ = reader_.prepare("SELECT max(" + seq + ") FROM " + t);
    if (retention_s_ > 0) {
        if (!writer_) writer_ = sqlite::Db(path_, SQLITE_OPEN_READWRITE, kCleanupBusyTimeoutMs);
        sqlite3_busy_timeout(writer_.raw(),
                             static_cast<int>(std::min<int64_t>(busy_timeout_ms_, kCleanupBusyTimeoutMs)));
        // Positions only: the timestamp column plays no part in retention.
        cleanup_ = writer_.prepare("DELETE FROM " + t + " WHERE " + seq + " IN (SELECT " + seq + " FROM " +
                                   t + " WHERE " + seq + " <= ?1 ORDER BY " + seq + " LIMIT ?2)");
    }
}

void OutboxSource::start() {
    if (create_schema_) create_schema();
    open_reader();
    if (auto bad = missing_column())
        throw Error(CDCFLOW_ERR_CONFIG, std::string(bad->first) + ": " + bad->second);
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
        cdcflow_event_init e = cdcflow::make_event_init();
        while (select_.step()) {
            // A NULL column reads as "" (or 0): the validator rejects such
            // events with a reason instead of this stage failing on them.
            e.event_id = cdcflow::str(select_.text(1));
            e.aggregate_type = cdcflow::str(select_.text(2));
            e.aggregate_id = cdcflow::str(select_.text(3));
            e.event_type = cdcflow::str(select_.text(4));
            e.payload = cdcflow::str(select_.text(5));
            e.timestamp_us = select_.int64(6);
            e.position = cdcflow_position{{"", 0}, select_.int64(0)};
            // The version: a non-negative integer, or NULL for none. Anything
            // else would silently turn the check off for the event: reject it.
            bool bad_version = false;
            e.aggregate_version = -1;
            if (schema_.has(Column::kVersion)) {
                int type = sqlite3_column_type(select_.raw(), 7);
                if (type == SQLITE_INTEGER && select_.int64(7) >= 0)
                    e.aggregate_version = select_.int64(7);
                else
                    bad_version = type != SQLITE_NULL;
            }
            if (!batch.append(e)) break;
            if (bad_version)
                batch.reject(batch.size() - 1, "column '" + schema_.name(Column::kVersion) +
                                                   "' is not an integer >= 0 or NULL");
            last_seq_ = e.position.offset;
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
}

void OutboxSource::maybe_cleanup() {
    if (retention_s_ <= 0 || !cleanup_) return;
    const auto now = now_();
    if (now < next_cleanup_) return;
    // Rows up to `due` have been committed for at least the retention. Their
    // timestamps play no part: a row stamped 30 days ago is kept as long as
    // one stamped now, and one stamped far in the future goes like any other.
    const int64_t due = commits_.due(now, std::chrono::seconds(retention_s_));
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
        cleanup_.bind(1, due).bind(2, cleanup_batch_);
        cleanup_.run();
        int64_t n = writer_.changes();
        tx.commit();
        cleanup_deleted_.add(n);
        cleanup_failures_ = 0;
        // A full batch: more is waiting, go again on the next poll.
        // Otherwise every row up to `due` is gone.
        if (n < cleanup_batch_) cleaned_upto_ = due;
        next_cleanup_ = n >= cleanup_batch_ ? now : now + std::chrono::seconds(1);
    } catch (const Error &e) {
        // Busy or failing cleanup never stops the pipeline; back off.
        uint32_t shift = std::min<uint32_t>(cleanup_failures_++, 6);
        auto delay = std::chrono::seconds(1LL << shift);
        next_cleanup_ = now + delay;
        ctx().warn(std::string("outbox cleanup skipped: ") + e.what() + "; retrying in " +
                   std::to_string(delay.count()) + " s");
    }
}

void OutboxSource::stop() {
    select_ = {};
    data_version_ = {};
    max_seq_ = {};
    cleanup_ = {};
    writer_ = {};
    reader_ = {};
}

} // namespace cdcflow::outbox

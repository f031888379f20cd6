#include "migrator.hpp"

#include "migrate/iso8601.hpp"

#include "base/clock.hpp"
#include "base/duration.hpp"
#include "base/text.hpp"

#include <algorithm>
#include <filesystem>
#include <thread>

namespace cdcflow::migrate {

namespace {

using std::chrono::milliseconds;

// After a read that returned rows, a caught-up poll waits 1 ms, then 2, 4,
// ... up to poll_interval_ms between looks (as outbox_source): a steady
// stream is picked up within milliseconds, an idle table costs a cheap
// pragma per poll_interval_ms.
constexpr auto kFirstSlice = milliseconds(1);

// Closed gaps after the first of their kind: one summary line at most this often.
constexpr auto kCloseSummaryEvery = std::chrono::seconds(60);

// Gaps shown in a warning line.
std::string describe(const Gap &g) {
    return g.lo == g.hi ? "legacy id " + std::to_string(g.lo)
                        : "legacy ids " + std::to_string(g.lo) + ".." + std::to_string(g.hi);
}

} // namespace

Migrator::Migrator(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Source(ctx), path_(cfg.database), poll_interval_ms_(cfg.poll_interval_ms),
      busy_timeout_ms_(cfg.busy_timeout_ms), gap_grace_ms_(cfg.gap_grace_ms), gap_watch_ms_(cfg.gap_watch_ms),
      max_open_gaps_(cfg.max_open_gaps), wall_us_([] { return base::wall_us(); }) {
    // Bounds are the host's (declared in MigratorSettings); the rest is ours.
    if (path_.empty()) cfg.fail(&Settings::database, "must not be empty");
    if (cfg.table.empty()) cfg.fail(&Settings::table, "must not be empty");
    schema_.table = cfg.table;
    for (size_t i = 0; i < kLegacyColumnCount; ++i) {
        schema_.names[i] = cfg.*Settings::kColumnMembers[i];
        if (schema_.names[i].empty()) cfg.fail(Settings::kColumnMembers[i], "must not be empty");
    }
    std::optional<Uuid> ns = parse_uuid(cfg.ns);
    if (!ns)
        cfg.fail(&Settings::ns, base::quoted(cfg.ns, {'"', 60, true}) +
                                    " is not a UUID (8-4-4-4-12 hex digits, e.g. the default " +
                                    kDefaultNamespace + ")");
    ns_ = *ns;
    // Read by `cdcflow migrate --cleanup`; checked here so that a typo fails
    // at load time, not at the end of a migration.
    if (!cfg.cleanup_older_than.empty() && !base::parse_duration_s(cfg.cleanup_older_than))
        cfg.fail(&Settings::cleanup_older_than, base::quoted(cfg.cleanup_older_than, {'"', 60, true}) +
                                                    " is not a duration such as 30d, 12h or 90m");

    rows_read_ = ctx.counter("rows_read", "legacy rows read (in order and late)");
    unmappable_ = ctx.counter("unmappable", "legacy rows that cannot be mapped (rejected with the reason)");
    open_gaps_ = ctx.gauge("open_gaps", "gaps in the legacy ids watched for late rows");
    late_rows_ = ctx.counter("late_rows", "rows that filled a gap after rows above it were handed out");
    held_back_ = ctx.gauge("held_back", "rows held back behind a new gap (gap_grace_ms)");
    gaps_closed_ = ctx.counter("gaps_closed", "gaps closed unfilled (gap_watch_ms or max_open_gaps)");
    lag_ = ctx.lag_metric("");

    // create() only looks, and only reads: the application's database is
    // never created or written by this stage.
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) cfg.fail(&Settings::database, where() + " does not exist");
    open_reader();
    int db_error = 0, missing = -1;
    if (std::string why = schema_.check(reader_.raw(), &db_error, &missing); !why.empty()) {
        // A locked database is not a config mistake, and create() is not
        // retried: start() (which the host retries) checks it all again.
        if (sqlite::is_busy(db_error)) return;
        // A corrupt file or any other failure: stop with SQLite's reason.
        if (db_error != 0) throw Error(sqlite::status_of(db_error), where() + ": " + why);
        if (missing >= 0) cfg.fail(Settings::kColumnMembers[missing], where() + ": " + why);
        cfg.fail(&Settings::table, where() + " " + why);
    }
    bool unknown = false;
    if (std::string why = schema_.check_id_key(reader_.raw(), &unknown, &db_error); !why.empty()) {
        if (sqlite::is_busy(db_error)) return;
        if (db_error != 0) throw Error(sqlite::status_of(db_error), where() + ": " + why);
        cfg.fail(&Settings::id_column, where() + ": " + why);
    }
    key_checked_ = true;
    if (unknown) warn_view(ctx);
}

void Migrator::warn_view(const cdcflow::Context &ctx) {
    ctx.warn(where() + ": " + base::text(schema_.table, '"') +
             " is a view: that its id column holds one distinct, non-NULL id per row cannot be "
             "checked (two rows with one id would share an event id; a NULL id is never read)");
}

std::string Migrator::where() const {
    return sqlite::database_label(path_);
}

void Migrator::open_reader() {
    if (!reader_) reader_ = sqlite::Db(path_, SQLITE_OPEN_READONLY, static_cast<int>(busy_timeout_ms_));
}

void Migrator::start() {
    open_reader();
    int db_error = 0;
    if (std::string why = schema_.check(reader_.raw(), &db_error); !why.empty())
        throw Error(db_error ? sqlite::status_of(db_error) : CDCFLOW_ERR_CONFIG, where() + ": " + why);
    if (!key_checked_) { // create() found the database locked
        bool unknown = false;
        if (std::string why = schema_.check_id_key(reader_.raw(), &unknown, &db_error); !why.empty())
            throw Error(db_error ? sqlite::status_of(db_error) : CDCFLOW_ERR_CONFIG, where() + ": " + why);
        key_checked_ = true;
        if (unknown) warn_view(ctx());
    }
    const std::string id = schema_.id_sql(), t = schema_.table_sql();
    // One statement per poll, prepared once: its read transaction ends when
    // it is reset, so the source never pins the application's WAL.
    select_ = reader_.prepare(schema_.select_sql(" WHERE " + id + " > ?1 ORDER BY " + id + " LIMIT ?2"));
    // Before any progress, `id > INT64_MIN` would never read a row whose id
    // is INT64_MIN itself: the first read includes its bound.
    select_first_ =
        reader_.prepare(schema_.select_sql(" WHERE " + id + " >= ?1 ORDER BY " + id + " LIMIT ?2"));
    probe_ = reader_.prepare(
        schema_.select_sql(" WHERE " + id + " BETWEEN ?1 AND ?2 ORDER BY " + id + " LIMIT ?3"));
    data_version_ = reader_.prepare("PRAGMA data_version");
    max_id_ = reader_.prepare("SELECT max(" + id + ") FROM " + t);
    // Holes below the highest id that exists now are history (deleted or
    // rolled-back rows): they hold nothing back. Holes above it appear while
    // the application writes, and may be rows committed out of order.
    {
        sqlite::ResetOnExit guard{max_id_};
        start_max_ = max_id_.step() && !max_id_.is_null(0) ? max_id_.int64(0) : INT64_MIN;
    }
    max_id_seen_ = start_max_;
    if (std::string mode = reader_.journal_mode(); mode != "wal")
        ctx().info(where() + " is in journal_mode '" + mode +
                   "'; WAL is recommended so that reading the legacy table never blocks the application's "
                   "writers");
    open_gaps_.set(static_cast<int64_t>(gaps_.size()));
}

void Migrator::seek(std::span<const cdcflow_position> positions) {
    gaps_.clear();
    for (const cdcflow_position &p : positions) {
        std::string_view part = sv(p.partition);
        if (part.empty()) {
            last_ = p.offset;
            have_last_ = true;
        } else if (std::optional<Gap> g = gap_from_position(part, p.offset)) {
            gaps_.push_back(*g);
        } else {
            ctx().warn("ignoring checkpoint position '" + base::text(part) + "'@" + std::to_string(p.offset) +
                       ": not a migration position (\"\" or a gap)");
        }
    }
    std::sort(gaps_.begin(), gaps_.end(), [](const Gap &a, const Gap &b) { return a.lo < b.lo; });
    // The sink already holds this set: nothing to tell it.
    gaps_dirty_ = false;
    open_gaps_.set(static_cast<int64_t>(gaps_.size()));
}

bool Migrator::append_row(sqlite::Stmt &st, cdcflow::Batch &batch, bool late) {
    sqlite3_stmt *s = st.raw();
    // Ids are read in order with `id > last`: a value that is not an integer
    // (text sorts above every number in SQLite) would be read as some other
    // number and read again forever. Stop with the reason instead.
    if (sqlite3_column_type(s, 0) != SQLITE_INTEGER)
        throw Error(CDCFLOW_ERR_IO, where() + ": table " + base::text(schema_.table, '"') + " column " +
                                        base::text(schema_.name(LegacyColumn::kId), '"') + " holds " +
                                        base::quoted(st.text(0), {'"', 40, true}) + " after legacy id " +
                                        std::to_string(last_) +
                                        ": the migrator needs integer ids (id_column)");
    LegacyRow row = read_row(s);
    cdcflow_event_init e = cdcflow::make_event_init();
    const bool mapped = map_row(row, schema_, ns_, mapped_, reason_);
    if (mapped) {
        e.aggregate_type = cdcflow::str(mapped_.aggregate_type);
        e.aggregate_id = cdcflow::str(mapped_.aggregate_id);
        e.event_type = cdcflow::str(mapped_.type);
        e.payload = cdcflow::str(mapped_.payload);
        e.timestamp_us = mapped_.timestamp_us;
    } else {
        // Whatever the row has, bytes as stored, so that the sink can record
        // it; the reason says what is wrong.
        legacy_event_id(ns_, row.id, mapped_.id);
        e.aggregate_type = cdcflow::str(row.topic.value_or(""));
        e.aggregate_id = cdcflow::str(row.key.value_or(""));
        e.event_type = cdcflow::str(row.type.value_or(""));
        e.payload = cdcflow::str(row.body.value_or(""));
        std::optional<int64_t> ts = row.created_at ? parse_iso8601_us(*row.created_at) : std::nullopt;
        e.timestamp_us = ts.value_or(0);
    }
    e.event_id = cdcflow::str(mapped_.id_view());
    e.position = cdcflow_position{cdcflow::str(late ? kLatePartition : std::string_view()), row.id};
    if (!batch.append(e)) return false;
    if (!mapped) {
        batch.reject(batch.size() - 1, reason_);
        unmappable_.add();
    }
    rows_read_.add();
    return true;
}

void Migrator::open_gap(int64_t lo, int64_t hi) {
    gaps_.push_back(Gap{lo, hi, wall_us_()});
    gaps_dirty_ = true;
}

void Migrator::note_closed(CloseWhy why, const Gap &g) {
    CloseLog &log = close_log_[static_cast<size_t>(why)];
    // A live gap (above the start's highest id) comes first in the line.
    const bool live = g.lo > start_max_;
    if (log.pending == 0 || (live && log.live == 0)) log.first = g;
    ++log.pending;
    if (live) ++log.live;
    gaps_closed_.add();
}

void Migrator::flush_close_warnings(bool force) {
    static constexpr const char *kWhy[] = {"stayed empty for gap_watch_ms", "were beyond max_open_gaps"};
    const auto now = now_();
    for (size_t k = 0; k < 2; ++k) {
        CloseLog &log = close_log_[k];
        if (log.pending == 0 || (!force && log.warned && now < log.next_line)) continue;
        // Every gap closed was a hole among the rows that existed at the
        // start (rows the old system deleted, most likely): a plain one-shot
        // migration of an old table meets thousands. Said once, quietly; a
        // warning is for gaps among rows written while this process ran.
        if (log.live == 0) {
            if (!log.warned && !log.told_historical)
                ctx().info(std::to_string(log.pending) +
                           " hole(s) in the legacy ids among the rows that existed "
                           "at the start " +
                           kWhy[k] +
                           " and are no longer watched (rows deleted before the "
                           "migration, most likely); the metric gaps_closed counts them from now on");
            log.told_historical = true;
            log.pending = 0;
            continue;
        }
        // Appended piece by piece: GCC 12 reports a false -Wrestrict on
        // chains of operator+ with std::to_string.
        std::string line;
        if (log.warned) line.append("since the last such line, ");
        line.append(std::to_string(log.pending)).append(" gap(s) in the legacy ids ").append(kWhy[k]);
        line.append(" (").append(std::to_string(k == 0 ? gap_watch_ms_ : max_open_gaps_)).append(")");
        line.append(" and are no longer watched, the first ").append(describe(log.first));
        line.append(
            ": a row committed there from now on is not migrated (cdcflow verify reports it missing)");
        if (!log.warned) line.append("; later closures are summed up at most once a minute");
        ctx().warn(line);
        log.warned = true;
        log.pending = 0;
        log.live = 0;
        log.next_line = now + kCloseSummaryEvery;
    }
}

void Migrator::close_gaps() {
    if (gaps_.empty()) return;
    const size_t before = gaps_.size();
    // Expired: open for gap_watch_ms on the wall clock (the open time is
    // stored with the checkpoint, so the period survives restarts). A gap
    // stamped in the future (the clock went back) waits until it is reached.
    const int64_t now = wall_us_();
    const int64_t watch_us = gap_watch_ms_ * 1000;
    std::erase_if(gaps_, [&](const Gap &g) {
        if (g.opened_us > now - watch_us) return false;
        note_closed(CloseWhy::kExpired, g);
        return true;
    });
    // Over the cap: the oldest go first (open time, then id).
    if (gaps_.size() > static_cast<size_t>(max_open_gaps_)) {
        const size_t k = gaps_.size() - static_cast<size_t>(max_open_gaps_);
        auto older = [](const Gap &a, const Gap &b) {
            return a.opened_us != b.opened_us ? a.opened_us < b.opened_us : a.lo < b.lo;
        };
        scratch_gaps_.assign(gaps_.begin(), gaps_.end());
        std::nth_element(scratch_gaps_.begin(), scratch_gaps_.begin() + static_cast<ptrdiff_t>(k - 1),
                         scratch_gaps_.end(), older);
        const Gap limit = scratch_gaps_[k - 1]; // the k-th oldest: it and every older one close
        std::erase_if(gaps_, [&](const Gap &g) {
            if (older(limit, g)) return false;
            note_closed(CloseWhy::kOverCap, g);
            return true;
        });
    }
    if (gaps_.size() != before) gaps_dirty_ = true;
}

uint32_t Migrator::read_late(cdcflow::Batch &batch) {
    if (gaps_.empty()) return 0;
    const auto now = now_();
    if (now < next_gap_check_) return 0;
    // Only another connection's commit can fill a gap: no commit since the
    // last complete probe, nothing to look for.
    const int64_t version = data_version();
    if (version == gap_check_version_) return 0;
    next_gap_check_ = now + milliseconds(poll_interval_ms_);
    uint32_t n = 0;
    bool complete = true, changed = false;
    scratch_gaps_.clear();
    for (const Gap &g : gaps_) {
        const uint32_t room = batch.capacity() - batch.size();
        if (!complete || room == 0) {
            complete = false;
            scratch_gaps_.push_back(g);
            continue;
        }
        // One range scan of the id index per gap: empty gaps cost a probe.
        int64_t from = g.lo;
        probe_.bind(1, g.lo).bind(2, g.hi).bind(3, static_cast<int64_t>(room));
        sqlite::ResetOnExit guard{probe_};
        while (probe_.step()) {
            const int64_t id = probe_.int64(0);
            if (!append_row(probe_, batch, true)) {
                complete = false;
                break;
            }
            ++n;
            late_rows_.add();
            changed = true;
            if (id > from) scratch_gaps_.push_back(Gap{from, id - 1, g.opened_us});
            from = id + 1; // id < g.hi + 1 <= last_: no overflow
        }
        if (from <= g.hi) scratch_gaps_.push_back(Gap{from, g.hi, g.opened_us});
    }
    gaps_.swap(scratch_gaps_);
    if (changed) gaps_dirty_ = true;
    // Cut short by a full batch: look again at the next poll.
    if (complete)
        gap_check_version_ = version;
    else
        next_gap_check_ = now;
    return n;
}

uint32_t Migrator::read_in_order(cdcflow::Batch &batch) {
    held_rows_ = 0;
    more_ = false;
    const uint32_t room = batch.capacity() - batch.size();
    if (room == 0) {
        more_ = true;
        return 0;
    }
    uint32_t n = 0, rows = 0;
    sqlite::Stmt &select = have_last_ ? select_ : select_first_;
    select.bind(1, have_last_ ? last_ : INT64_MIN).bind(2, static_cast<int64_t>(room));
    sqlite::ResetOnExit guard{select};
    while (select.step()) {
        ++rows;
        const int64_t id = select.int64(0);
        // id > last_ (the query's bound), so id - 1 cannot overflow. Before
        // the first row ever read there is no hole, except in a table that
        // was empty at the start: rowids start at 1, so a first row above 1
        // may have overtaken rows still committing (two writers).
        const bool first_live = !have_last_ && start_max_ == INT64_MIN && id > 1;
        if ((have_last_ || first_live) && sqlite3_column_type(select.raw(), 0) == SQLITE_INTEGER &&
            (first_live || id - 1 > last_)) {
            const int64_t lo = have_last_ ? last_ + 1 : 1, hi = id - 1;
            if (gap_grace_ms_ > 0 && lo > start_max_) {
                // A hole among rows written since the start: the row there
                // may be committing right now. Hold back what is above it
                // for the grace period, counted from when the rows above it
                // were first seen (a hole that shrinks keeps its start).
                const auto now = now_();
                if (!hold_ || hi >= hold_->above) hold_ = Hold{id, now};
                if (now - hold_->since < milliseconds(gap_grace_ms_)) {
                    held_rows_ = 1;
                    while (select.step())
                        ++held_rows_;
                    more_ = true;
                    break;
                }
            }
            open_gap(lo, hi);
        }
        if (!append_row(select, batch, false)) {
            more_ = true; // the batch is full (bytes)
            break;
        }
        last_ = id;
        have_last_ = true;
        ++n;
        if (hold_ && id >= hold_->above) hold_.reset();
    }
    if (rows == room) more_ = true;
    return n;
}

uint32_t Migrator::fill(cdcflow::Batch &batch) {
    close_gaps();
    uint32_t n = read_late(batch);
    n += read_in_order(batch);
    close_gaps(); // the cap, with the gaps this read opened
    flush_close_warnings(false);
    open_gaps_.set(static_cast<int64_t>(gaps_.size()));
    held_back_.set(held_rows_);
    update_lag(!more_ && !hold_);
    if (n > 0) slice_ = kFirstSlice;
    // The sink commits the gap set it last saw with the rows: the last event
    // handed out after a change carries it.
    if (gaps_dirty_ && batch.size() > 0) {
        header_ = gaps_header(gaps_);
        batch[batch.size() - 1].headers = batch.copy(header_);
        gaps_dirty_ = false;
    }
    return n;
}

int64_t Migrator::data_version() {
    sqlite::ResetOnExit guard{data_version_};
    return data_version_.step() ? data_version_.int64(0) : 0;
}

cdcflow::PollResult Migrator::poll(cdcflow::Batch &batch, uint32_t wait_ms) {
    const auto deadline = Clock::now() + milliseconds(wait_ms);
    // data_version before the read: a commit that lands between the two is
    // then either seen by the read or changes the version (a harmless re-read).
    int64_t version = wait_ms ? data_version() : 0;
    // A failed poll is dropped by the host and polled again: everything this
    // one changed must then be as before it.
    saved_last_ = last_;
    saved_have_last_ = have_last_;
    saved_gaps_.assign(gaps_.begin(), gaps_.end());
    saved_dirty_ = gaps_dirty_;
    saved_hold_ = hold_;
    saved_gap_check_version_ = gap_check_version_;
    auto attempt = [&]() -> uint32_t {
        try {
            return fill(batch);
        } catch (...) {
            last_ = saved_last_;
            have_last_ = saved_have_last_;
            gaps_.assign(saved_gaps_.begin(), saved_gaps_.end());
            gaps_dirty_ = saved_dirty_;
            hold_ = saved_hold_;
            gap_check_version_ = saved_gap_check_version_;
            throw;
        }
    };
    if (attempt() > 0) return {!hold_ && !more_};
    if (wait_ms == 0) {
        // --drain polls without waiting, and again at once while we are not
        // exhausted: rows held back would make that a busy loop. Wait a
        // little instead (the hold ends with its grace period).
        if (hold_ && !ctx().stop_requested())
            std::this_thread::sleep_for(std::min<Clock::duration>(
                milliseconds(poll_interval_ms_), std::max<Clock::duration>(hold_remaining(), kFirstSlice)));
        return {!hold_ && !more_};
    }
    // Caught up (or holding): park in short sleeps, reading again only when
    // another connection committed, a hold's grace ran out, or open gaps are
    // due a probe.
    while (!ctx().stop_requested()) {
        const auto now = Clock::now();
        if (now >= deadline) break;
        if (slice_ > milliseconds(poll_interval_ms_)) slice_ = milliseconds(poll_interval_ms_);
        Clock::duration wait = std::min<Clock::duration>(slice_, deadline - now);
        if (hold_) wait = std::min(wait, std::max<Clock::duration>(hold_remaining(), kFirstSlice));
        std::this_thread::sleep_for(wait);
        slice_ *= 2;
        const int64_t v = data_version();
        const bool hold_due = hold_ && hold_remaining() <= Clock::duration::zero();
        const bool probe_due = !gaps_.empty() && v != gap_check_version_ && now_() >= next_gap_check_;
        if (v == version && !hold_due && !probe_due) continue;
        const bool committed = v != version;
        version = v;
        if (attempt() > 0) return {!hold_ && !more_};
        // Another connection committed and nothing came above last_: a
        // delete, or an id at or below it.
        if (committed) check_top();
    }
    return {!hold_ && !more_};
}

void Migrator::check_top() {
    if (!have_last_ || !max_id_) return;
    int64_t top = INT64_MIN;
    try {
        sqlite::ResetOnExit guard{max_id_};
        if (max_id_.step() && !max_id_.is_null(0)) top = max_id_.int64(0);
    } catch (const Error &) {
        return; // busy: the next commit asks again
    }
    if (top < last_ && top_low_ == INT64_MAX) {
        top_low_ = top;
        ctx().warn(where() + ": the highest legacy id is now " +
                   (top == INT64_MIN ? std::string("none (the table is empty)") : std::to_string(top)) +
                   ", below the last migrated id " + std::to_string(last_) +
                   ": the application deleted its newest rows, and SQLite gives their ids to its next "
                   "messages, which cannot be migrated (their event ids are taken): keep the highest id "
                   "(README, \"Cleanup\")");
        return;
    }
    if (top_low_ == INT64_MAX) return; // the top is where it was
    if (top <= top_low_) {
        top_low_ = top; // more deleted
        return;
    }
    // Ids above top_low_ and at or below last_ were written again.
    const int64_t hi = std::min(top, last_);
    ctx().error(where() + ": legacy ids " + std::to_string(top_low_ + 1) + ".." + std::to_string(hi) +
                " were given again to new rows after the newest rows were deleted: not migrated (their event "
                "ids are those of the deleted rows; verify reports them as content mismatches)");
    top_low_ = top < last_ ? top : INT64_MAX;
}

Migrator::Clock::duration Migrator::hold_remaining() const {
    if (!hold_) return Clock::duration::zero();
    return hold_->since + milliseconds(gap_grace_ms_) - now_();
}

void Migrator::update_lag(bool caught_up) {
    const auto now = now_();
    if (caught_up) {
        // The read returned everything there was: the newest row is ours.
        max_id_seen_ = std::max(max_id_seen_, last_);
    } else if (max_id_ && now >= next_lag_probe_) {
        // max(id) is one index probe; still, at most once per poll interval.
        next_lag_probe_ = now + milliseconds(poll_interval_ms_);
        try {
            sqlite::ResetOnExit guard{max_id_};
            if (max_id_.step() && !max_id_.is_null(0))
                max_id_seen_ = std::max(max_id_seen_, max_id_.int64(0));
        } catch (const Error &) {
            // The gauge is best effort: a busy database must not fail a poll
            // that already holds rows.
        }
    }
    // Nothing read yet: the table was empty (a first read takes what there is).
    if (max_id_seen_ == INT64_MIN || !have_last_) return;
    // Ids have holes (deleted rows): an upper bound on the rows behind. Rows
    // held back count: they are behind.
    const bool behind = max_id_seen_ > last_;
    lag_.set(behind ? static_cast<int64_t>(static_cast<uint64_t>(max_id_seen_) - static_cast<uint64_t>(last_))
                    : 0);
}

void Migrator::stop() {
    flush_close_warnings(true);
    select_ = {};
    select_first_ = {};
    probe_ = {};
    data_version_ = {};
    max_id_ = {};
    reader_ = {};
}

} // namespace cdcflow::migrate

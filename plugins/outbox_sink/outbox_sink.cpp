#include "outbox_sink.hpp"

#include "common/checkpoints.hpp"
#include "common/sqlite_sink.hpp"
#include "migrate/mapping.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>

namespace cdcflow::migrate {

namespace {

using outbox::Column;

// The target tables besides the outbox: the migration's own
// (progress.hpp's kTargetDdl) and the sinks' checkpoint table.
constexpr const char *kOwnTables[] = {"cdcflow_migration_progress", "cdcflow_migration_map",
                                      "cdcflow_migration_skipped", "cdcflow_checkpoints"};

// The columns written, in bind order (?1..?6). The seq is the outbox's.
constexpr std::initializer_list<Column> kWritten = {Column::kId,          Column::kAggregateType,
                                                    Column::kAggregateId, Column::kType,
                                                    Column::kPayload,     Column::kTimestamp};

} // namespace

OutboxSink::OutboxSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Sink(ctx), path_(cfg.database), checkpoint_name_(cfg.checkpoint_name), source_stage_(cfg.source_stage),
      create_schema_(cfg.create_schema), busy_timeout_ms_(cfg.busy_timeout_ms),
      sync_full_(cfg.synchronous == "full"), wal_checkpoint_pages_(cfg.wal_checkpoint_pages),
      cache_mib_(cfg.cache_mib) {
    // Bounds and choices are the host's (declared in OutboxSinkSettings); emptiness is ours.
    if (path_.empty()) cfg.fail(&Settings::database, "must not be empty");
    if (checkpoint_name_.empty()) cfg.fail(&Settings::checkpoint_name, "must not be empty");
    if (cfg.table.empty()) cfg.fail(&Settings::table, "must not be empty");
    schema_.table = cfg.table;
    for (size_t i = 0; i < Settings::kUsedColumns; ++i) {
        schema_.names[i] = cfg.*Settings::kColumnMembers[i];
        if (schema_.names[i].empty()) cfg.fail(Settings::kColumnMembers[i], "must not be empty");
    }
    schema_.name(Column::kVersion).clear(); // migrated events carry no aggregate version

    migrated_ = ctx.counter("migrated", "events written into the outbox");
    skipped_ = ctx.counter("skipped", "events recorded in cdcflow_migration_skipped (unmappable or refused)");
    already_migrated_ =
        ctx.counter("already_migrated", "events found in the outbox already (not written again)");
    late_ = ctx.counter("late", "late events (filled a gap) written into the outbox");

    // create() only looks: missing tables are created in start() when
    // create_schema allows it, and are an error now otherwise.
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) {
        if (!create_schema_)
            cfg.fail(&Settings::database,
                     sqlite::database_label(path_) + " does not exist (create_schema is false)");
        return;
    }
    db_ = sqlite::Db(path_, SQLITE_OPEN_READWRITE, static_cast<int>(busy_timeout_ms_));
    try {
        check_outbox(&cfg);
        if (std::string missing = missing_table(); !missing.empty()) {
            if (create_schema_) return; // start() creates it
            cfg.fail(&Settings::database, sqlite::database_label(path_) + " has no table '" + missing +
                                              "' (create_schema is false)");
        }
        prepare(); // every table exists: surface column mismatches now, not mid-run
    } catch (const Error &e) {
        // Locked by another connection past busy_timeout_ms: create() is not
        // retried, start() is, and checks it all again.
        if (e.status() == CDCFLOW_ERR_RETRY) return;
        throw;
    }
}

OutboxSink::~OutboxSink() {
    checkpointer_.stop();
}

void OutboxSink::check_outbox(const cdcflow::Configured<Settings> *cfg) {
    outbox::SchemaProblem p =
        schema_.check(db_.raw(), {Column::kSeq, Column::kId, Column::kAggregateType, Column::kAggregateId,
                                  Column::kType, Column::kPayload, Column::kTimestamp});
    const std::string where = sqlite::database_label(path_);
    switch (p.kind) {
    case outbox::SchemaProblem::Kind::kNone:
        return;
    case outbox::SchemaProblem::Kind::kNoTable:
        if (create_schema_) return; // start() creates it
        if (cfg) cfg->fail(&Settings::table, where + " " + p.message + " (create_schema is false)");
        throw Error(CDCFLOW_ERR_CONFIG, "table: " + where + " " + p.message + " (create_schema is false)");
    case outbox::SchemaProblem::Kind::kNoColumn:
        // CREATE TABLE IF NOT EXISTS would not add it: an error either way.
        for (size_t i = 0; i < Settings::kUsedColumns; ++i)
            if (cfg && std::string_view(outbox::kColumns[i].key) == p.key)
                cfg->fail(Settings::kColumnMembers[i], where + ": " + p.message);
        throw Error(CDCFLOW_ERR_CONFIG, std::string(p.key) + ": " + where + ": " + p.message);
    case outbox::SchemaProblem::Kind::kDbError:
        break;
    }
    throw Error(sqlite::status_of(p.sqlite_rc), where + ": " + p.message);
}

std::string OutboxSink::missing_table() {
    if (!db_.has_table(schema_.table)) return schema_.table;
    for (const char *t : kOwnTables)
        if (!db_.has_table(t)) return t;
    return {};
}

void OutboxSink::prepare() {
    insert_ = db_.prepare(schema_.insert_sql(kWritten));
    map_insert_ = db_.prepare("INSERT INTO cdcflow_migration_map(migration, seq, legacy_id, checksum, late) "
                              "VALUES(?1, ?2, ?3, ?4, ?5)");
    // A rerun meets the rows it recorded before: they stay as first recorded.
    skipped_insert_ = db_.prepare("INSERT OR IGNORE INTO cdcflow_migration_skipped(migration, legacy_id, "
                                  "reason, recorded_at) VALUES(?1, ?2, ?3, ?4)");
    lookup_ = db_.prepare("SELECT 1 FROM " + schema_.quoted_table() + " WHERE " +
                          schema_.quoted(Column::kId) + " = ?1");
    // The last in-order id never moves back (?2 NULL: the batch had no
    // in-order event); ?3 NULL keeps the stored gap set; totals add up.
    progress_upsert_ = db_.prepare(
        "INSERT INTO cdcflow_migration_progress(name, last_legacy_id, gaps, migrated, skipped, late, "
        "started_at, updated_at) VALUES(?1, ?2, coalesce(?3, ''), ?4, ?5, ?6, ?7, ?7) "
        "ON CONFLICT(name) DO UPDATE SET last_legacy_id = CASE WHEN excluded.last_legacy_id IS NULL THEN "
        "last_legacy_id WHEN last_legacy_id IS NULL OR excluded.last_legacy_id > last_legacy_id THEN "
        "excluded.last_legacy_id ELSE last_legacy_id END, gaps = coalesce(?3, gaps), "
        "migrated = migrated + excluded.migrated, skipped = skipped + excluded.skipped, "
        "late = late + excluded.late, updated_at = excluded.updated_at");
    checkpoint_upsert_ = db_.prepare(sqlite::kCheckpointUpsertSql);
    prepared_ = true;
}

void OutboxSink::start() {
    if (!db_)
        db_ =
            sqlite::Db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, static_cast<int>(busy_timeout_ms_));
    // The id index takes keys at random places (ids are hashes), whether one
    // insert at a time (an outbox that had its index) or in the build's sort:
    // with its pages in memory that is work, not reads from disk. Negative:
    // KiB. Pages are allocated only as used.
    db_.exec("PRAGMA cache_size=-" + std::to_string(cache_mib_ * 1024));
    sqlite_sink::set_durability(db_, path_, sync_full_, create_schema_, ctx());
    if (create_schema_) {
        // Only when something is missing: a restart then takes no write lock
        // before its first batch.
        if (!missing_table().empty()) {
            sqlite::Transaction tx(db_);
            // A new outbox: its id index comes once the backlog is in.
            if (!db_.has_table(schema_.table)) {
                db_.exec(schema_.create_table_sql());
                index_deferred_ = true;
            } else {
                db_.exec(schema_.create_sql());
            }
            db_.exec(kTargetDdl);
            db_.exec(sqlite::kCheckpointsDdl);
            tx.commit();
        }
    }
    check_outbox(nullptr);
    if (std::string missing = missing_table(); !missing.empty())
        throw Error(CDCFLOW_ERR_CONFIG, sqlite::database_label(path_) + " has no table '" + missing +
                                            "' (create_schema is false)");
    if (!prepared_) prepare();
    // A bulk load that stopped before its index was built goes on as one.
    if (create_schema_ && !has_id_index()) index_deferred_ = true;
    // CREATE INDEX sorts with a helper thread: the build takes about half as long.
    db_.exec("PRAGMA threads=2");
    read_progress();
    if (lease_ && !fence_) fence_ = ownership::Fence(db_, *lease_);
    if (wal_checkpoint_pages_ > 0 && db_.journal_mode() == "wal")
        checkpointer_.attach(db_, static_cast<int>(wal_checkpoint_pages_),
                             [c = ctx()](const std::string &m) { c.warn(m); });
}

void OutboxSink::read_progress() {
    sqlite::Stmt s(db_, "SELECT last_legacy_id FROM cdcflow_migration_progress WHERE name = ?1");
    s.bind(1, std::string_view(checkpoint_name_));
    committed_last_ = s.step() && !s.is_null(0) ? s.int64(0) : INT64_MIN;
    s.reset();
    // No progress of this name, yet the outbox has rows: its progress row was
    // lost, or the same legacy table is migrated again under another
    // checkpoint_name. Look every event up until a batch finds none there
    // (the rows written before are a prefix in legacy id order).
    check_all_ = committed_last_ == INT64_MIN &&
                 db_.query_int("SELECT EXISTS (SELECT 1 FROM " + schema_.quoted_table() + ")", 0) == 1;
    if (check_all_)
        ctx().info(
            "no progress of '" + base::text(checkpoint_name_) +
            "' in this database, but the outbox has rows: every event is looked up by its id before it "
            "is written, until a batch finds none there");
}

bool OutboxSink::has_id_index() {
    sqlite::Stmt s(db_, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1");
    const std::string name = schema_.index_name();
    s.bind(1, std::string_view(name));
    return s.step();
}

void OutboxSink::add_id_index() {
    const auto t0 = std::chrono::steady_clock::now();
    db_.exec(schema_.create_index_sql());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char took[32];
    std::snprintf(took, sizeof took, "%.2f", secs);
    ctx().info("built the outbox's id index " + base::text(schema_.index_name(), '\'') + " in " + took +
               " s");
}

void OutboxSink::flush() {
    if (!index_deferred_ || !db_) return;
    // A stop (SIGTERM, Ctrl-C) also ends in a flush: it must not spend the
    // shutdown deadline sorting the backlog. The next start builds it.
    if (ctx().stop_requested()) {
        ctx().info("stopping: the outbox's id index is built at the next start");
        return;
    }
    try {
        sqlite::Transaction tx(db_);
        if (fence_) fence_.check();
        add_id_index();
        tx.commit();
    } catch (const Error &e) {
        // Every row is committed already: a database another connection
        // holds locked (the application's, when the outbox shares its file)
        // must not fail the run. The next start builds it.
        if (e.status() != CDCFLOW_ERR_RETRY) throw;
        ctx().info(std::string("the outbox's id index is built at the next start: ") + e.what());
        return;
    }
    index_deferred_ = false;
    if (fence_) fence_.committed();
}

void OutboxSink::acquire(const cdcflow_ownership &req) {
    sqlite_sink::acquire(lease_, path_, checkpoint_name_, req, ctx());
}

void OutboxSink::release() {
    if (lease_) lease_->release();
}

void OutboxSink::checkpoint(const std::function<void(const cdcflow_position &)> &emit) {
    if (!sqlite_sink::open_if_created(db_, path_, static_cast<int>(busy_timeout_ms_))) return;
    const bool has_progress = db_.has_table("cdcflow_migration_progress");
    sqlite::Stmt s;
    if (has_progress) {
        s = sqlite::Stmt(db_, "SELECT last_legacy_id, gaps FROM cdcflow_migration_progress WHERE name = ?1");
        s.bind(1, std::string_view(checkpoint_name_));
    }
    if (!has_progress || !s.step()) {
        // No migration of this name yet: the name must not be another
        // pipeline's checkpoint (a projection's, in the same file), whose
        // position this sink would overwrite with a legacy id, and that
        // pipeline would then skip events.
        sqlite_sink::refuse_name_of(db_, path_, "cdcflow_checkpoints", checkpoint_name_,
                                    "another pipeline (in cdcflow_checkpoints, not a migration)");
        return;
    }
    std::optional<std::vector<Gap>> gaps = parse_gaps(s.text(1));
    if (!gaps)
        throw Error(CDCFLOW_ERR_IO, sqlite::database_label(path_) + ": cdcflow_migration_progress.gaps of '" +
                                        base::text(checkpoint_name_) +
                                        "' is not a gap set: " + base::quoted(s.text(1), {'"', 80, true}));
    if (!s.is_null(0)) emit(cdcflow_position{cdcflow::str(""), s.int64(0)});
    for (const Gap &g : *gaps) {
        const std::string part = gap_partition(g); // alive while emit copies it
        emit(cdcflow_position{cdcflow::str(part), g.hi});
    }
}

bool OutboxSink::admissible(const cdcflow_event &e) {
    // The outbox's columns are TEXT, the payload included.
    return sqlite_sink::event_text_ok(e, true, reason_);
}

bool OutboxSink::record_skipped(const cdcflow_event &e, int64_t now_us) {
    // The migrator's own reason alone (the mapping's, which the migrate
    // summary counts by class); any other stage's with its id in front.
    std::string_view stage = sv(e.reject_stage), why = sv(e.reject_reason);
    if (stage != source_stage_) {
        reason_.assign(stage).append(": ").append(why);
        why = reason_;
    }
    skipped_insert_.bind(1, std::string_view(checkpoint_name_))
        .bind(2, e.position.offset)
        .bind(3, why)
        .bind(4, now_us);
    skipped_insert_.run();
    return db_.changes() == 1;
}

void OutboxSink::process(cdcflow::Batch &batch) {
    if (batch.empty()) return;
    const int64_t now = base::wall_us();
    int64_t migrated = 0, skipped = 0, already = 0, late = 0;
    std::optional<int64_t> batch_last; // the highest in-order legacy id of the batch
    bool gaps_seen = false;
    const std::string_view name = checkpoint_name_;
    {
        sqlite::Transaction tx(db_);
        // Still the owner? Checked under the write lock this transaction
        // holds until COMMIT, so no takeover can slip in between.
        if (fence_) fence_.check();
        // The source caught up (a small batch): the bulk load is over.
        bool index_added = false;
        if (index_deferred_ && batch.size() < kCaughtUpBatch) {
            add_id_index();
            index_added = true;
        }
        for (uint32_t i = 0; i < batch.size(); ++i) {
            const cdcflow_event &e = batch[i];
            // The migrator tells its gap set in the headers of the last event
            // after a change (progress.hpp), whatever that event's fate.
            if (e.headers.len > 0) {
                if (std::optional<std::vector<Gap>> g = gaps_from_header(sv(e.headers))) {
                    gaps_text_ = gaps_text(*g);
                    gaps_seen = true;
                }
            }
            const std::string_view part = sv(e.position.partition);
            const bool in_order = part.empty();
            if (in_order && (!batch_last || e.position.offset > *batch_last)) batch_last = e.position.offset;
            if (e.status == CDCFLOW_EVENT_DUPLICATE || e.status == CDCFLOW_EVENT_DROPPED) continue;
            if (e.status == CDCFLOW_EVENT_OK && !admissible(e)) batch.reject(i, reason_);
            if (batch[i].status == CDCFLOW_EVENT_REJECTED) {
                if (record_skipped(batch[i], now)) ++skipped;
                continue;
            }
            // A late event, or one at or below what was committed (a rerun
            // that re-reads): written only if its id is not there yet.
            const bool is_late = part == kLatePartition;
            if (!in_order || e.position.offset <= committed_last_ || check_all_) {
                // A look-up needs the index (a scan per event would be quadratic).
                if (index_deferred_ && !index_added) {
                    add_id_index();
                    index_added = true;
                }
                lookup_.bind(1, sv(e.event_id));
                sqlite::ResetOnExit guard{lookup_};
                if (lookup_.step()) {
                    // Counted by the host as a duplicate, not as written
                    // (migrate's "migrated this run" is what was written).
                    batch.mark_duplicate(i);
                    ++already;
                    continue;
                }
            }
            // Views into the batch: bound without copies (SQLITE_STATIC).
            insert_.bind(1, sv(e.event_id))
                .bind(2, sv(e.aggregate_type))
                .bind(3, sv(e.aggregate_id))
                .bind(4, sv(e.event_type))
                .bind(5, sv(e.payload))
                .bind(6, e.timestamp_us);
            insert_.run();
            const int64_t seq = db_.last_rowid();
            const int64_t checksum =
                event_checksum(sv(e.event_id), sv(e.aggregate_type), sv(e.aggregate_id), sv(e.event_type),
                               sv(e.payload), e.timestamp_us, scratch_);
            map_insert_.bind(1, name)
                .bind(2, seq)
                .bind(3, e.position.offset)
                .bind(4, checksum)
                .bind(5, int64_t{is_late ? 1 : 0});
            map_insert_.run();
            ++migrated;
            if (is_late) ++late;
        }
        // Progress and checkpoint: the last in-order id never moves back.
        const bool forward = batch_last && (committed_last_ == INT64_MIN || *batch_last > committed_last_);
        progress_upsert_.bind(1, name);
        if (forward)
            progress_upsert_.bind(2, *batch_last);
        else
            progress_upsert_.bind_null(2);
        if (gaps_seen)
            progress_upsert_.bind(3, std::string_view(gaps_text_));
        else
            progress_upsert_.bind_null(3);
        progress_upsert_.bind(4, migrated).bind(5, skipped).bind(6, late).bind(7, now);
        progress_upsert_.run();
        if (forward) {
            checkpoint_upsert_.bind(1, name).bind(2, std::string_view()).bind(3, *batch_last).bind(4, now);
            checkpoint_upsert_.run();
        }
        tx.commit();
        if (forward) committed_last_ = *batch_last;
        if (index_added) index_deferred_ = false;
        if (check_all_ && already == 0) check_all_ = false;
    }
    if (fence_) fence_.committed();
    migrated_.add(migrated);
    skipped_.add(skipped);
    already_migrated_.add(already);
    late_.add(late);
}

void OutboxSink::stop() {
    checkpointer_.stop();
    sqlite_sink::truncate_wal(db_);
    insert_ = {};
    map_insert_ = {};
    skipped_insert_ = {};
    lookup_ = {};
    progress_upsert_ = {};
    checkpoint_upsert_ = {};
    fence_ = {};
    prepared_ = false;
    db_ = {};
}

} // namespace cdcflow::migrate

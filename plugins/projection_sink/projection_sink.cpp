#include "projection_sink.hpp"

#include "accounts.hpp"

#include "common/sqlite_sink.hpp"

#include "common/checkpoints.hpp"
#include "common/dead_letters.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace cdcflow::projection {

ProjectionSink::ProjectionSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : ProjectionSink(cfg, ctx, nullptr) {}

ProjectionSink::ProjectionSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx,
                               std::unique_ptr<Projection> projection)
    : Sink(ctx), path_(cfg.database), checkpoint_name_(cfg.checkpoint_name),
      busy_timeout_ms_(cfg.busy_timeout_ms), max_payload_bytes_(cfg.max_payload_bytes),
      create_schema_(cfg.create_schema), sync_full_(cfg.synchronous == "full"),
      wal_checkpoint_pages_(cfg.wal_checkpoint_pages), projection_(std::move(projection)),
      versions_(static_cast<size_t>(cfg.cache_size), [ctx](const std::string &m) { ctx.info(m); }),
      claims_(cfg.database, cfg.checkpoint_name, ctx) {
    // Bounds and choices are the host's (declared in ProjectionSinkSettings); emptiness is ours.
    if (path_.empty()) cfg.fail(&Settings::database, "must not be empty");
    if (checkpoint_name_.empty()) cfg.fail(&Settings::checkpoint_name, "must not be empty");
    if (!projection_) {
        ProjectionOptions opts;
        opts.cache_size = static_cast<size_t>(cfg.cache_size);
        if (cfg.projection == "declared") {
            if (!cfg.model) cfg.fail(&Settings::model, "required with projection: declared");
            opts.model = cfg.model->text;
            opts.locate = [&cfg](const std::string &pointer) {
                return cfg.location_at(&Settings::model, pointer.c_str());
            };
        } else if (cfg.model) {
            cfg.fail(&Settings::model,
                     "only with projection: declared (projection is '" + cfg.projection + "')");
        }
        projection_ = make_projection(cfg.projection, opts, ctx);
        if (!projection_)
            cfg.fail(&Settings::projection,
                     "unknown projection '" + cfg.projection + "' (built in: " + builtin_projections() + ")");
    }

    versions_.report_to(ctx);
    applied_ = ctx.counter("applied", "events applied to the projection");
    dead_letters_ = ctx.counter("dead_letters", "dead letters written (rejected by any stage)");
    version_duplicates_ =
        ctx.counter("version_duplicates", "events skipped: aggregate version not above the last one applied");
    event_duplicates_ = ctx.counter(
        "event_duplicates", "events skipped: their event id was applied before (a history row has it)");

    // create() only looks: a missing database or table is created in start()
    // when create_schema allows it, and is an error now otherwise.
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) {
        if (!create_schema_)
            cfg.fail(&Settings::database,
                     sqlite::database_label(path_) + " does not exist (create_schema is false)");
        return;
    }
    db_ = sqlite::Db(path_, SQLITE_OPEN_READWRITE, static_cast<int>(busy_timeout_ms_));
    if (std::string missing = missing_table(); !missing.empty()) {
        if (create_schema_) {
            projection_->check_existing(db_); // start() creates the missing ones
            return;
        }
        cfg.fail(&Settings::database,
                 sqlite::database_label(path_) + " has no table '" + missing + "' (create_schema is false)");
    }
    prepare(); // every table exists: surface column mismatches now, not mid-run
}

std::string ProjectionSink::missing_table() {
    std::vector<std::string> need = projection_->tables();
    need.insert(need.end(), {"dead_letters", "cdcflow_checkpoints"});
    for (const std::string &t : need)
        if (!db_.has_table(t)) return t;
    return {};
}

ProjectionSink::~ProjectionSink() {
    checkpointer_.stop();
    claims_.detach();
    // Statements before their connection.
    if (projection_) projection_->close();
    versions_.close();
}

void ProjectionSink::prepare() {
    dead_letters_out_.prepare(db_);
    checkpoint_upsert_ = db_.prepare(sqlite::kCheckpointUpsertSql);
    projection_->open(db_);
    versions_.open(db_, checkpoint_name_);
    prepared_ = true;
}

void ProjectionSink::start() {
    if (!db_)
        db_ =
            sqlite::Db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, static_cast<int>(busy_timeout_ms_));
    sqlite_sink::set_durability(db_, path_, sync_full_, create_schema_, ctx());
    if (create_schema_) {
        // Only when something is missing: a restart then takes no write lock
        // before its first batch.
        if (!missing_table().empty()) {
            sqlite::Transaction tx(db_);
            db_.exec(sqlite::kDeadLettersDdl);
            db_.exec(sqlite::kCheckpointsDdl);
            projection_->create_schema(db_);
            tx.commit();
        }
    }
    if (!prepared_) prepare();
    if (lease_ && !fence_) fence_ = ownership::Fence(db_, *lease_);
    claims_.attach(db_);
    if (wal_checkpoint_pages_ > 0 && db_.journal_mode() == "wal")
        checkpointer_.attach(db_, static_cast<int>(wal_checkpoint_pages_),
                             [c = ctx()](const std::string &m) { c.warn(m); });
}

void ProjectionSink::acquire(const cdcflow_ownership &req) {
    if (req.flags & CDCFLOW_OWNERSHIP_PER_PARTITION) {
        claims_.enable(req.lease_ms);
        return;
    }
    sqlite_sink::acquire(lease_, path_, checkpoint_name_, req, ctx());
}

void ProjectionSink::release() {
    if (lease_) lease_->release();
    claims_.release_all();
}

void ProjectionSink::partitions(const cdcflow_partitions &change) {
    // Without acquire (CDCFLOW_UNSAFE_NO_OWNERSHIP, unit tests) nothing is
    // claimed or fenced, as for a whole checkpoint; positions and caches
    // still follow the change.
    if (change.revoked_count || change.assigned_count) {
        // Statements closed and opened again: the caches start empty.
        projection_->close();
        versions_.close();
        projection_->open(db_);
        versions_.open(db_, checkpoint_name_);
    }
    claims_.change(change);
}

void ProjectionSink::checkpoint(const std::function<void(const cdcflow_position &)> &emit) {
    sqlite_sink::report_checkpoint(db_, path_, static_cast<int>(busy_timeout_ms_), checkpoint_name_, emit);
}

bool ProjectionSink::admissible(const cdcflow_event &e, std::string &reason) const {
    // Text that is not UTF-8 never reaches the read model; the dead letter
    // keeps the bytes. The payload is parsed as JSON, which checks it.
    if (!sqlite_sink::event_text_ok(e, false, reason)) return false;
    if (e.payload.len > static_cast<uint64_t>(max_payload_bytes_)) {
        reason = "payload is " + std::to_string(e.payload.len) + " bytes, more than max_payload_bytes " +
                 std::to_string(max_payload_bytes_);
        return false;
    }
    return true;
}

void ProjectionSink::collect_partitions(cdcflow::Batch &batch) {
    // The last position of each partition in the batch, whatever the events'
    // status: skipped and dead-lettered events are done with too. Events come
    // in runs of one partition (a Kafka fetch answers per partition): the
    // run's entry is tried first and the list searched only when the
    // partition changes (a search per event, over 128 partitions, was 10% of
    // a consuming run's samples).
    partitions_.clear();
    size_t at = 0;
    for (uint32_t i = 0; i < batch.size(); ++i) {
        const cdcflow_position &p = batch[i].position;
        const std::string_view part = sv(p.partition);
        if (partitions_.empty() || partitions_[at].first != part) {
            at = 0;
            while (at < partitions_.size() && partitions_[at].first != part)
                ++at;
            if (at == partitions_.size()) partitions_.emplace_back(part, p.offset);
        }
        partitions_[at].second = p.offset;
    }
}

void ProjectionSink::save_checkpoint(int64_t now_us) {
    for (const auto &[part, offset] : partitions_) {
        checkpoint_upsert_.bind(1, std::string_view(checkpoint_name_))
            .bind(2, part)
            .bind(3, offset)
            .bind(4, now_us);
        checkpoint_upsert_.run();
        // A checkpoint never moves back: that would mean this batch repeats
        // events already applied. Refuse the whole batch (it rolls back)
        // rather than apply anything twice.
        if (db_.changes() != 1) {
            sqlite::Stmt at(
                db_, "SELECT position FROM cdcflow_checkpoints WHERE name = ?1 AND \"partition\" = ?2");
            at.bind(1, std::string_view(checkpoint_name_)).bind(2, part);
            const int64_t current = at.step() ? at.int64(0) : 0;
            throw Error(CDCFLOW_ERR_INTERNAL,
                        "checkpoint '" + checkpoint_name_ + "'" +
                            (part.empty() ? std::string() : " partition '" + std::string(part) + "'") +
                            " is at " + std::to_string(current) + ", this batch ends at " +
                            std::to_string(offset) + ": refusing to apply events a second time");
        }
    }
}

void ProjectionSink::process(cdcflow::Batch &batch) {
    if (batch.empty()) return;
    const int64_t now = base::wall_us();
    int64_t applied = 0, dead = 0;
    try {
        sqlite::Transaction tx(db_);
        // Still the owner? Checked under the write lock this transaction
        // holds until COMMIT, so no takeover can slip in between.
        if (fence_) fence_.check();
        collect_partitions(batch);
        if (claims_.enabled()) claims_.check(partitions_);
        for (uint32_t i = 0; i < batch.size(); ++i) {
            const cdcflow_event &e = batch[i];
            // Skipped: a copy, or filtered out by a transform (its position
            // still moves the checkpoint below).
            if (e.status == CDCFLOW_EVENT_DUPLICATE || e.status == CDCFLOW_EVENT_DROPPED) continue;
            // Events that carry an aggregate version: one at or below the
            // last applied for the aggregate is a copy under another id or
            // a stale replay. Counted now: the mark survives a rollback, so
            // a retry skips the event above.
            AggregateVersions::Entry *version = nullptr;
            if (e.aggregate_version >= 0) {
                version = versions_.find(sv(e.aggregate_type), sv(e.aggregate_id));
                if (e.aggregate_version <= AggregateVersions::last(version)) {
                    batch.mark_duplicate(i);
                    version_duplicates_.add();
                    continue;
                }
            }
            if (e.status == CDCFLOW_EVENT_OK) {
                // The payload as the host parsed it once (a validator before
                // us usually asked already); an older host: the projection
                // parses it itself.
                cdcflow_payload parsed;
                if (admissible(e, reason_) &&
                    (batch.payload(i, parsed) ? projection_->apply(e, parsed, reason_)
                                              : projection_->apply(e, reason_))) {
                    if (version) AggregateVersions::applied(version, e.aggregate_version);
                    ++applied;
                    continue;
                }
                if (projection_->last_was_duplicate()) {
                    batch.mark_duplicate(i);
                    event_duplicates_.add();
                    continue;
                }
                // Sets status, stage (this sink) and reason on the event; a
                // retry of this batch then dead-letters it like any rejection.
                batch.reject(i, reason_);
            }
            dead_letters_out_.insert(batch[i], now);
            ++dead;
        }
        projection_->write_batch();
        versions_.write_batch();
        save_checkpoint(now);
        tx.commit();
    } catch (...) {
        // The transaction has rolled back (tx's destructor ran first): bring
        // the projection's memory back to the committed state too, so that
        // the host's retry of this batch gives the same result.
        projection_->batch_rolled_back();
        versions_.batch_rolled_back();
        throw;
    }
    if (fence_) fence_.committed();
    if (claims_.enabled()) claims_.committed(partitions_);
    projection_->batch_committed();
    versions_.batch_committed();
    applied_.add(applied);
    dead_letters_.add(dead);
}

void ProjectionSink::stop() {
    checkpointer_.stop();
    sqlite_sink::truncate_wal(db_);
    projection_->close();
    versions_.close();
    dead_letters_out_.reset();
    checkpoint_upsert_ = {};
    fence_ = {};
    claims_.detach(); // the claims stay until release(); their fences go with the connection
    prepared_ = false;
    db_ = {};
}

} // namespace cdcflow::projection

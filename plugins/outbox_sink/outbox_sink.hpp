// outbox_sink: writes events into a CDC outbox table (DESIGN.md, "SQLite
// schemas"; the table is core/outbox/schema.hpp's) in bulk, with the legacy
// migration's bookkeeping (core/migrate/progress.hpp: progress, the map of
// migrated events with their checksums, the unmappable rows) and the
// checkpoint committed in the same transaction as the rows. A migration
// stopped at any instant (Ctrl-C, kill -9) therefore resumes where it left
// off, and writes no event twice. One owner per checkpoint, like
// projection_sink. See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h).
#pragma once

#include "common/ownership.hpp"
#include "common/sqlite.hpp"
#include "common/wal_checkpointer.hpp"
#include "migrate/progress.hpp"
#include "outbox/schema.hpp"

#include <cdcflow/sdk.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::migrate {

// The stage's config (cdcflow/sdk.hpp, "Declared config"); the host enforces
// types, bounds and choices.
struct OutboxSinkSettings {
    std::string database;
    std::string table, seq_column, id_column, aggregate_type_column, aggregate_id_column, type_column,
        payload_column, timestamp_column;
    std::string checkpoint_name;
    std::string source_stage;
    bool create_schema = true;
    int64_t busy_timeout_ms = 5000;
    std::string synchronous;
    int64_t wal_checkpoint_pages = 1000;
    int64_t cache_mib = 64;

    using S = OutboxSinkSettings;
    static constexpr const char *kSynchronous[] = {"normal", "full", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("database", &S::database)
            .required()
            .describe(
                "path of the SQLite database of the target outbox (may be the legacy table's own file)"),
        cdcflow::param("table", &S::table).defaults_to(outbox::kDefaultTable).describe("target outbox table"),
        cdcflow::param("seq_column", &S::seq_column)
            .defaults_to(outbox::info(outbox::Column::kSeq).default_name)
            .describe("outbox position: INTEGER PRIMARY KEY AUTOINCREMENT"),
        cdcflow::param("id_column", &S::id_column)
            .defaults_to(outbox::info(outbox::Column::kId).default_name)
            .describe("event id column (indexed: already migrated events are found by it)"),
        cdcflow::param("aggregate_type_column", &S::aggregate_type_column)
            .defaults_to(outbox::info(outbox::Column::kAggregateType).default_name)
            .describe("aggregate type column"),
        cdcflow::param("aggregate_id_column", &S::aggregate_id_column)
            .defaults_to(outbox::info(outbox::Column::kAggregateId).default_name)
            .describe("aggregate id column"),
        cdcflow::param("type_column", &S::type_column)
            .defaults_to(outbox::info(outbox::Column::kType).default_name)
            .describe("event type column"),
        cdcflow::param("payload_column", &S::payload_column)
            .defaults_to(outbox::info(outbox::Column::kPayload).default_name)
            .describe("payload column (the legacy body, as written)"),
        cdcflow::param("timestamp_column", &S::timestamp_column)
            .defaults_to(outbox::info(outbox::Column::kTimestamp).default_name)
            .describe("event time column, microseconds since epoch"),
        cdcflow::param("checkpoint_name", &S::checkpoint_name)
            .defaults_to("legacy-migration")
            .describe("the migration's name: its key in cdcflow_checkpoints and every cdcflow_migration_* "
                      "table (unique per migration sharing the database)"),
        cdcflow::param("source_stage", &S::source_stage)
            .defaults_to("migrate")
            .describe("the migrator's stage id: its rejections (unmappable rows) are recorded with the "
                      "mapping's reason alone, any other stage's with \"<stage>: \" in front"),
        cdcflow::param("create_schema", &S::create_schema)
            .defaults_to("true")
            .describe("create the outbox (a new one gets its id index once the backlog is in), the "
                      "cdcflow_migration_* tables and cdcflow_checkpoints if missing, and use WAL"),
        cdcflow::param("busy_timeout_ms", &S::busy_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe(
                "SQLite busy timeout; a batch that still finds the database locked is retried by the host"),
        cdcflow::param("synchronous", &S::synchronous)
            .defaults_to("normal")
            .choices(kSynchronous)
            .describe(
                "normal: with WAL, a committed batch survives a process crash; full: also a power loss (one "
                "fsync per commit)"),
        cdcflow::param("wal_checkpoint_pages", &S::wal_checkpoint_pages)
            .defaults_to("1000")
            .min("0")
            .max("1000000000")
            .describe("WAL mode: checkpoint on a background thread once the WAL holds this many pages, so "
                      "commits never wait for a checkpoint's fsync (0: SQLite's auto-checkpoint, inside the "
                      "commit)"),
        cdcflow::param("cache_mib", &S::cache_mib)
            .defaults_to("64")
            .min("2")
            .max("65536")
            .describe(
                "SQLite page cache of the sink's connection (MiB, used only as it fills): the id index's "
                "sort, and an existing outbox's index, which takes a random page per event"));

    // The column keys this sink uses, in the outbox schema's order (no
    // version column: migrated events carry none).
    static constexpr size_t kUsedColumns = 7;
    static constexpr std::string S::*kColumnMembers[kUsedColumns] = {
        &S::seq_column,  &S::id_column,      &S::aggregate_type_column, &S::aggregate_id_column,
        &S::type_column, &S::payload_column, &S::timestamp_column};
};

static_assert([] {
    for (size_t i = 0; i < OutboxSinkSettings::kUsedColumns; ++i)
        if (std::string_view(cdcflow::key_of(OutboxSinkSettings::kColumnMembers[i])) !=
            outbox::kColumns[i].key)
            return false;
    return true;
}());

class OutboxSink : public cdcflow::Sink {
public:
    static constexpr const char *kName = "outbox_sink";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "writes events into an SQLite CDC outbox; rows, migration progress and checkpoint in one transaction";
    using Settings = OutboxSinkSettings;

    OutboxSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);
    ~OutboxSink() override;

    void start() override;
    // {"", last in-order legacy id} and one position per open gap
    // (progress.hpp: gap_partition, hi).
    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override;
    void process(cdcflow::Batch &batch) override;
    // At drain: the deferred id index, if still pending, before the exit.
    void flush() override;
    void stop() override;
    // One owner per checkpoint (common/ownership.hpp), as projection_sink.
    void acquire(const cdcflow_ownership &req);
    void release();

    // For tests: the last in-order legacy id committed (INT64_MIN: none).
    int64_t committed_last() const { return committed_last_; }
    // For tests: the outbox's id index is still to be built (a bulk load).
    bool index_deferred() const { return index_deferred_; }

private:
    // The first table this sink needs that does not exist ("" when none).
    std::string missing_table();
    // The outbox's columns; throws a config error naming the key.
    void check_outbox(const cdcflow::Configured<Settings> *cfg);
    void prepare();
    void read_progress();
    // Does the outbox have its id index (OutboxSchema::index_name)?
    bool has_id_index();
    // Creates the deferred id index inside the caller's transaction.
    void add_id_index();
    // The sink's own limits, whatever ran before it: a non-empty event id,
    // UTF-8 text. false: reason_ says why.
    bool admissible(const cdcflow_event &e);
    // Records event i as unmappable / refused; true when it was new.
    bool record_skipped(const cdcflow_event &e, int64_t now_us);

    std::string path_;
    outbox::OutboxSchema schema_;
    std::string checkpoint_name_;
    std::string source_stage_;
    bool create_schema_;
    int64_t busy_timeout_ms_;
    bool sync_full_;
    int64_t wal_checkpoint_pages_;
    int64_t cache_mib_;

    std::unique_ptr<ownership::Lease> lease_; // its own connection and renewal thread
    sqlite::Db db_;
    ownership::Fence fence_;  // on db_, prepared once the lease is held
    sqlite::Stmt insert_;     // the outbox row
    sqlite::Stmt map_insert_; // cdcflow_migration_map
    sqlite::Stmt skipped_insert_;
    sqlite::Stmt lookup_; // an event id in the outbox (its id index)
    sqlite::Stmt progress_upsert_;
    sqlite::Stmt checkpoint_upsert_;
    bool prepared_ = false;
    sqlite::WalCheckpointer checkpointer_; // after db_: stops before it closes

    int64_t committed_last_ = INT64_MIN; // the committed last_legacy_id
    // A new outbox is bulk-loaded without its id index, which is built in one
    // sort once the backlog is in (README, "Speed"): a batch of fewer than
    // kCaughtUpBatch events (the source caught up), the first look-up by
    // event id, or the drain. Random ids would otherwise dirty most index
    // pages in every commit, and the WAL would take them all again each time.
    static constexpr uint32_t kCaughtUpBatch = 1000;
    // Look every event up by id (read_progress: rows without progress).
    bool check_all_ = false;
    bool index_deferred_ = false;

    // Reused per batch: no allocation in the steady state.
    std::string reason_;
    std::string scratch_; // event_checksum's
    std::string gaps_text_;

    cdcflow::Metric migrated_, skipped_, already_migrated_, late_;
};

} // namespace cdcflow::migrate

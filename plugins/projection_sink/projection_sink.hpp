// projection_sink: applies events to a read model in SQLite. One batch is
// one transaction holding the projection's changes, the batch's dead
// letters and the checkpoint, so a crash at any instant loses nothing and
// applies nothing twice. See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h).
#pragma once

#include "aggregate_versions.hpp"
#include "common/dead_letters.hpp"
#include "common/ownership.hpp"
#include "common/partition_claims.hpp"
#include "common/sqlite.hpp"
#include "common/wal_checkpointer.hpp"
#include "projection.hpp"

#include <cdcflow/sdk.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cdcflow::projection {

// The stage's config (cdcflow/sdk.hpp, "Declared config"); the host enforces
// types, bounds and choices.
struct ProjectionSinkSettings {
    std::string database;
    std::string projection;
    std::string checkpoint_name;
    int64_t cache_size = 100000;
    int64_t max_payload_bytes = 1048576;
    int64_t busy_timeout_ms = 5000;
    bool create_schema = true;
    std::string synchronous;
    int64_t wal_checkpoint_pages = 1000;
    std::optional<cdcflow::Json> model;

    using S = ProjectionSinkSettings;
    static constexpr const char *kSynchronous[] = {"normal", "full", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("database", &S::database)
            .required()
            .describe("path of the SQLite database of the read model (may be the outbox's file)"),
        cdcflow::param("projection", &S::projection)
            .defaults_to("accounts")
            .describe("the domain model to build: accounts (built in), or declared (the model key)"),
        cdcflow::param("model", &S::model)
            .describe("projection: declared: the read model's tables, payload fields, rules and effects "
                      "(README, \"Declared models\")"),
        cdcflow::param("checkpoint_name", &S::checkpoint_name)
            .defaults_to("accounts")
            .describe("this sink's key in the cdcflow_checkpoints table (unique per pipeline sharing the "
                      "database)"),
        cdcflow::param("cache_size", &S::cache_size)
            .defaults_to("100000")
            .min("1")
            .describe("projection rows (and aggregate versions) kept in LRU caches"),
        cdcflow::param("max_payload_bytes", &S::max_payload_bytes)
            .defaults_to("1048576")
            .min("2")
            .max("1073741824")
            .describe("a larger payload is dead-lettered without being parsed (the sink's own limit, with or "
                      "without a validator stage)"),
        cdcflow::param("busy_timeout_ms", &S::busy_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe(
                "SQLite busy timeout; a batch that still finds the database locked is retried by the host"),
        cdcflow::param("create_schema", &S::create_schema)
            .defaults_to("true")
            .describe(
                "create the projection, dead_letters and cdcflow_checkpoints tables if missing, and use "
                "WAL"),
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
                      "commit)"));
};

class ProjectionSink : public cdcflow::Sink {
public:
    static constexpr const char *kName = "projection_sink";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "applies events to an SQLite read model; effects, dead letters and checkpoint in one transaction";
    using Settings = ProjectionSinkSettings;

    ProjectionSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);
    // For domains built as their own plugins: the same sink around their model.
    ProjectionSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx,
                   std::unique_ptr<Projection> projection);
    ~ProjectionSink() override;

    void start() override;
    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override;
    void process(cdcflow::Batch &batch) override;
    void stop() override;
    // One owner per checkpoint (common/ownership.hpp): the claim lives in
    // this database's cdcflow_owners table, and every batch's transaction
    // checks it. Without acquire (unit tests, an ABI 1 host) nothing is fenced.
    void acquire(const cdcflow_ownership &req);
    void release();
    // A consumer group's partitions (ABI 5, CDCFLOW_OWNERSHIP_PER_PARTITION
    // at acquire): one claim per partition (common/partition_claims.hpp);
    // on every change the row and version caches are dropped, since another
    // host may have moved the rows of the partitions that came and went.
    void partitions(const cdcflow_partitions &change);

    Projection &projection() { return *projection_; }

private:
    void prepare();
    // The first table this sink needs that does not exist ("" when none).
    std::string missing_table();
    // The sink's own limits, whatever ran before it: a non-empty event id,
    // UTF-8 text, a bounded payload. false: reason says why.
    bool admissible(const cdcflow_event &e, std::string &reason) const;
    // The last position of each partition in the batch, into partitions_.
    void collect_partitions(cdcflow::Batch &batch);
    void save_checkpoint(int64_t now_us);

    std::string path_;
    std::string checkpoint_name_;
    int64_t busy_timeout_ms_;
    int64_t max_payload_bytes_;
    bool create_schema_;
    bool sync_full_;
    int64_t wal_checkpoint_pages_;
    std::unique_ptr<Projection> projection_;
    AggregateVersions versions_;

    std::unique_ptr<ownership::Lease> lease_; // its own connection and renewal thread
    sqlite_sink::PartitionClaims claims_;     // per partition instead (a consumer group's source)
    sqlite::Db db_;
    ownership::Fence fence_;               // on db_, prepared once the lease is held
    sqlite::DeadLetters dead_letters_out_; // the shared dead_letters table's insert
    sqlite::Stmt checkpoint_upsert_;
    bool prepared_ = false;
    sqlite::WalCheckpointer checkpointer_; // after db_: stops before it closes

    // Reused per batch: no allocation in the steady state.
    std::string reason_;
    std::vector<std::pair<std::string_view, int64_t>> partitions_;

    // Rejections are counted by the host (batch.reject: cdcflow_events_total).
    cdcflow::Metric applied_, dead_letters_, version_duplicates_, event_duplicates_;
};

} // namespace cdcflow::projection

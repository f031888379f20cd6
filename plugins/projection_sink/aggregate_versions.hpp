// AggregateVersions: the last applied version of each aggregate, for events
// that carry one (cdcflow_event::aggregate_version >= 0).
//
// DESIGN.md: "the projection additionally tracks, per aggregate, the last
// applied version where events carry one". The deduper catches a copy with
// the same event id; this catches what it cannot: a re-sent event with a new
// id, an old event replayed after the deduper window forgot it, a stale
// event delivered out of order. An event whose version is not above the
// last applied one of its aggregate is a duplicate (skipped, counted). Only
// applied events move the version: a dead-lettered event does not, so a
// corrected re-send with the same version is applied.
//
// Stored in cdcflow_aggregate_versions, written in the sink's batch
// transaction, so it is exactly as durable as the projection. The table is
// created by the first batch that needs it (in that batch's transaction),
// so a sink whose events never carry versions needs no such table. A
// bounded LRU (RowCache) keeps recent aggregates in memory; the batch
// protocol is the Projection's: find()/last()/applied() per event,
// write_batch(), then batch_committed() or batch_rolled_back().
//
// Not thread-safe: owned by one sink instance.
#pragma once

#include "common/sqlite.hpp"
#include "row_cache.hpp"

#include <cdcflow/sdk.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::projection {

class AggregateVersions {
    struct Row {
        int64_t version = -1; // -1: none applied yet
        int64_t id = 0;       // its row's id; 0: no row yet
    };
    using Cache = RowCache<Row>;

public:
    using Entry = Cache::Node;
    using Log = std::function<void(const std::string &)>;
    static constexpr const char *kTable = "cdcflow_aggregate_versions";
    static const char *ddl();

    AggregateVersions(size_t cache_size, Log info) : cache_(cache_size), info_(std::move(info)) {}
    // Publish the cache's figures under the host's cache families as cache
    // "versions" (ABI 4): once per batch, after it committed or rolled back.
    void report_to(const cdcflow::Context &ctx);

    // name: the sink's checkpoint_name (several sinks may share a database).
    void open(sqlite::Db &db, std::string_view name);
    void close();

    // The aggregate's entry, loaded and pinned until the batch ends. Only
    // inside the sink's batch transaction (it may create the table).
    Entry *find(std::string_view aggregate_type, std::string_view aggregate_id);
    static int64_t last(const Entry *e) { return e->row.version; }
    // The batch applied `version` (above last(e)) to the aggregate.
    static void applied(Entry *e, int64_t version) {
        e->row.version = version;
        e->dirty = true;
    }

    void write_batch();
    void batch_committed();
    void batch_rolled_back();

    // Aggregates held in the cache; look-ups answered from it, and read
    // from the table, since create.
    size_t cached() const { return cache_.size(); }
    uint64_t hits() const { return hits_; }
    uint64_t misses() const { return misses_; }

private:
    void prepare();
    // After a batch: the counts since the last one, and the entries held.
    void publish();

    sqlite::Db *db_ = nullptr;
    std::string name_;
    Cache cache_;
    Log info_;
    std::vector<Entry *> touched_;
    std::string key_;            // reused
    bool created_table_ = false; // by the batch in progress
    sqlite::Stmt select_, update_, upsert_;
    uint64_t hits_ = 0, misses_ = 0;
    int64_t batch_hits_ = 0, batch_misses_ = 0; // counted per event, published per batch
    cdcflow::Metric entries_metric_, hits_metric_, misses_metric_;
};

} // namespace cdcflow::projection

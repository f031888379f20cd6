// AggregateVersions: the last processed version of each aggregate, for
// events that carry one (cdcflow_event::aggregate_version >= 0).
//
// DESIGN.md: "the projection additionally tracks, per aggregate, the last
// applied version where events carry one". The deduper catches a copy with
// the same event id; this catches what it cannot: a re-sent event with a new
// id, an old event replayed after the deduper window forgot it, a stale
// event delivered out of order. An event whose version is not above the
// last one processed for its aggregate is a duplicate (skipped, counted).
// A version is "processed" once its event was applied or dead-lettered:
// a rejected event is not retried by a later copy either.
//
// Stored in cdcflow_aggregate_versions, written in the sink's batch
// transaction, so it is exactly as durable as the projection. A bounded LRU
// (RowCache) keeps recent aggregates in memory; the batch protocol is the
// Projection's: check()/record() per event, write_batch(), then
// batch_committed() or batch_rolled_back().
//
// Not thread-safe: owned by one sink instance.
#pragma once

#include "common/sqlite.hpp"
#include "row_cache.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::projection {

class AggregateVersions {
public:
    static constexpr const char *kTable = "cdcflow_aggregate_versions";
    static const char *ddl();

    explicit AggregateVersions(size_t cache_size) : cache_(cache_size) {}

    // name: the sink's checkpoint_name (several sinks may share a database).
    void open(sqlite::Db &db, std::string_view name);
    void close();

    // True when `version` is above the last processed version of the
    // aggregate; records it as processed by the batch in progress. False:
    // the event is a duplicate.
    bool advance(std::string_view aggregate_type, std::string_view aggregate_id, int64_t version);

    void write_batch();
    void batch_committed();
    void batch_rolled_back();

private:
    struct Row {
        int64_t version = -1; // -1: none processed yet
        int64_t id = 0;       // its row's id; 0: no row yet
    };
    using Cache = RowCache<Row>;

    std::string name_;
    Cache cache_;
    std::vector<Cache::Node *> touched_;
    std::string key_; // reused
    sqlite::Stmt select_, update_, upsert_;
};

} // namespace cdcflow::projection

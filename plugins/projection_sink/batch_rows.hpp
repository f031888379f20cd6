// BatchRows: what a projection keeps of its rows between events — the LRU
// RowCache, the rows the batch in progress touched (pinned until it ends,
// written by write_batch, forgotten on a rollback), and the cache's figures
// under the host's cache families (ABI 4, cache "rows"), counted per event
// and published per batch (a shared atomic per event would cost more than
// the look-up). One implementation for every projection (the accounts
// model, declared models).
//
// Not thread-safe: owned by one sink instance.
#pragma once

#include "row_cache.hpp"

#include <cdcflow/sdk.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace cdcflow::projection {

template <typename Row> class BatchRows {
public:
    using Cache = RowCache<Row>;
    using Node = typename Cache::Node;

    BatchRows(size_t capacity, cdcflow::Context ctx) : cache_(capacity) {
        entries_ = ctx.cache_metric("rows", CDCFLOW_CACHE_ENTRIES);
        hits_ = ctx.cache_metric("rows", CDCFLOW_CACHE_HITS);
        misses_ = ctx.cache_metric("rows", CDCFLOW_CACHE_MISSES);
        ctx.cache_metric("rows", CDCFLOW_CACHE_CAPACITY).set(static_cast<int64_t>(cache_.capacity()));
        entries_.set(0);
        touched_.reserve(1024);
    }

    // The cached row for id, pinned and touched by this batch; nullptr on a
    // miss (then insert() it and read it).
    Node *find(std::string_view id) {
        Node *n = cache_.find(id);
        if (!n) {
            ++miss_count_;
            return nullptr;
        }
        ++hit_count_;
        if (!n->pinned) {
            n->pinned = true;
            touched_.push_back(n);
        }
        return n;
    }
    // A fresh row for id (after find() missed), pinned and touched before the
    // caller reads it: if the read throws, the rollback forgets the half-made
    // row.
    Node *insert(std::string_view id) {
        Node *n = cache_.insert(id);
        n->pinned = true;
        touched_.push_back(n);
        return n;
    }
    const std::vector<Node *> &touched() const { return touched_; }

    // After COMMIT: unpin, trim to capacity, publish the figures.
    void committed() {
        for (Node *n : touched_)
            n->pinned = n->dirty = false;
        touched_.clear();
        cache_.trim();
        publish();
    }
    // After ROLLBACK. Simplest correct undo: forget every row the batch
    // touched; the next miss reads the committed state back.
    void rolled_back() {
        for (Node *n : touched_)
            cache_.erase(n);
        touched_.clear();
        publish();
    }
    // Statements closed: the cache could go stale against a re-opened
    // database, so start from the tables again.
    void clear() {
        cache_.clear();
        touched_.clear();
        entries_.set(0);
    }
    size_t size() const { return cache_.size(); }

private:
    void publish() {
        hits_.add(hit_count_);
        misses_.add(miss_count_);
        hit_count_ = miss_count_ = 0;
        entries_.set(static_cast<int64_t>(cache_.size()));
    }

    Cache cache_;
    std::vector<Node *> touched_;
    int64_t hit_count_ = 0, miss_count_ = 0;
    cdcflow::Metric entries_, hits_, misses_;
};

} // namespace cdcflow::projection

// BatchQueue: the SpscQueue between two stages, counting what it holds in
// batches and in event bytes, so that /metrics and `cdcflow status` can show
// how full each queue is (Runtime::queues) without touching a batch.
//
// The counts are relaxed atomics changed once per batch (never per event):
// the producer adds after a push succeeded and the consumer subtracts after
// its pop, so the depth never shows more than the capacity; a reader on
// another thread may catch the subtract before the add for a moment, which
// reads as zero (the counts are signed and clamped). The bytes are the
// batch's arena bytes at the push (Arena::bytes_used): a stage that later
// allocates in the batch's arena (a reject reason) changes what the next
// queue counts, never what this one subtracts.
//
// Thread-safety: as SpscQueue (one producer, one consumer; close and the
// counts from any thread).
#pragma once

#include "batch.hpp"
#include "spsc_queue.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cdcflow::host {

class BatchQueue {
public:
    explicit BatchQueue(size_t capacity) : q_(capacity), capacity_(capacity ? capacity : 1) {}
    BatchQueue(const BatchQueue &) = delete;
    BatchQueue &operator=(const BatchQueue &) = delete;

    // Blocks while full. False only when the queue was closed.
    bool push(Batch *b) {
        const size_t bytes = b->arena.bytes_used();
        b->queued_bytes = bytes; // before the push: the consumer reads it after its pop
        if (!q_.push(b)) return false;
        entered(bytes);
        return true;
    }
    // Non-blocking push; false when full or closed.
    bool try_push(Batch *b) {
        const size_t bytes = b->arena.bytes_used();
        b->queued_bytes = bytes;
        if (!q_.try_push(b)) return false;
        entered(bytes);
        return true;
    }
    // Blocks while empty. Null only when closed and drained.
    Batch *pop() { return left(q_.pop()); }
    // Non-blocking pop; null when empty.
    Batch *try_pop() { return left(q_.try_pop()); }

    void close() { q_.close(); }
    bool closed() const { return q_.closed(); }
    size_t capacity() const { return capacity_; }
    uint64_t parks() const { return q_.parks(); }

    // What the queue holds now (any thread; a moment's value).
    uint64_t batches() const { return clamp(batches_.load(std::memory_order_relaxed)); }
    uint64_t bytes() const { return clamp(bytes_.load(std::memory_order_relaxed)); }

private:
    static uint64_t clamp(int64_t v) { return v > 0 ? static_cast<uint64_t>(v) : 0; }
    // `bytes` as read before the push: the batch is the consumer's after it.
    void entered(size_t bytes) {
        batches_.fetch_add(1, std::memory_order_relaxed);
        bytes_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    }
    Batch *left(Batch *b) {
        if (!b) return b;
        batches_.fetch_sub(1, std::memory_order_relaxed);
        bytes_.fetch_sub(static_cast<int64_t>(b->queued_bytes), std::memory_order_relaxed);
        return b;
    }

    SpscQueue<Batch> q_;
    size_t capacity_;
    std::atomic<int64_t> batches_{0};
    std::atomic<int64_t> bytes_{0};
};

} // namespace cdcflow::host

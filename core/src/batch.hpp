// Batch: a fixed-capacity array of events plus the arena that owns their
// bytes. Batches circulate: the source fills one, the stages mark its events
// in place, the sink commits it, and it returns to the source to be reused.
// Reuse keeps the arena's blocks, so a steady pipeline allocates nothing.
//
// Not thread-safe: a batch belongs to one stage at a time (handed over
// through the queues, which give the needed happens-before).
#pragma once

#include <cdcflow/plugin.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace cdcflow::host {

// Bump allocator: large blocks, freed all at once by reset(). Blocks are kept
// across resets (only an oversized one-off block is released).
class Arena {
public:
    explicit Arena(size_t block_size = 256 * 1024) : block_size_(block_size) {}
    Arena(const Arena &) = delete;
    Arena &operator=(const Arena &) = delete;

    // Never returns null (throws std::bad_alloc like new).
    void *alloc(size_t n, size_t align = alignof(std::max_align_t));
    // Copy bytes in; returns a view of the copy.
    cdcflow_str copy(cdcflow_str s);
    void reset();
    size_t bytes_reserved() const { return reserved_; }

private:
    struct Block {
        std::unique_ptr<char[]> mem;
        size_t size;
    };
    size_t block_size_;
    std::vector<Block> blocks_;
    size_t cur_ = 0;  // index of the block being filled
    size_t used_ = 0; // bytes used in blocks_[cur_]
    size_t reserved_ = 0;
};

struct Batch {
    explicit Batch(uint32_t capacity);

    void reset(); // empty, keep memory
    uint32_t size() const { return count; }
    uint32_t capacity() const { return static_cast<uint32_t>(events.size()); }
    cdcflow_event &at(uint32_t i) { return events[i]; }
    bool append(const cdcflow_event_init &ev); // false when full

    std::vector<cdcflow_event> events; // sized to capacity once
    uint32_t count = 0;
    Arena arena;
    bool end_of_stream = false; // sentinel batch: no more data follows
    // Events marked DROPPED (event_drop): while zero, the runtime shows the
    // batch to ABI 1 and 2 stages as it is, without looking at any event.
    uint32_t dropped = 0;
};

} // namespace cdcflow::host

// The opaque handle plugins see is the host's Batch.
struct cdcflow_batch : cdcflow::host::Batch {
    using cdcflow::host::Batch::Batch;
};

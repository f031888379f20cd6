// Batch: a fixed-capacity array of events plus the arena that owns their
// bytes. Batches circulate: the source fills one, the stages mark its events
// in place, the sink commits it, and it returns to the source to be reused.
// Reuse keeps the arena's blocks, so a steady pipeline allocates nothing.
//
// Not thread-safe: a batch belongs to one stage at a time (handed over
// through the queues, which give the needed happens-before).
#pragma once

#include <cdcflow/plugin.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace cdcflow::host {

// An allocator that leaves new elements of a trivial type uninitialised (the
// standard one zeroes them). A batch's event array is reserved for its
// largest fill once and resized within that as fills grow: nothing is
// written, so the pages a fill never reaches are never touched (a zeroing
// resize of a 1M-event batch faulted in 176 MB it might never use).
template <class T> struct DefaultInitAllocator : std::allocator<T> {
    template <class U> struct rebind { using other = DefaultInitAllocator<U>; };
    using std::allocator<T>::allocator;
    template <class U> void construct(U *p) noexcept(std::is_nothrow_default_constructible_v<U>) {
        ::new (static_cast<void *>(p)) U;
    }
    template <class U, class... A> void construct(U *p, A &&...a) {
        ::new (static_cast<void *>(p)) U(std::forward<A>(a)...);
    }
};

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
    // Bytes handed out since the last reset (what a batch's byte bound counts).
    size_t bytes_used() const { return used_total_; }

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
    size_t used_total_ = 0;
};

// What bounds one fill of a batch (adaptive batching: the host sets these
// before each poll). A batch always takes its first event, however large, so
// that one oversized event cannot stall the stream.
struct BatchLimits {
    uint32_t events = 1; // at most this many events (batch_capacity)
    size_t bytes = 0;    // arena bytes (event strings); 0: unbounded
    // Stop filling this long after the first event went in (the time a
    // source spends waiting for its first row does not count); 0: no limit.
    std::chrono::nanoseconds max_fill{0};
};

// Adaptive batching's policy (settings batch_size / batch_max_events): the
// events the next fill may take. A fill that came back full (a backlog)
// doubles the next one, up to max_events, so that each sink commit covers
// more events; one that did not (caught up) falls back to min_events, and
// with it the latency of small batches.
class BatchSizer {
public:
    BatchSizer(uint32_t min_events, uint32_t max_events)
        : min_(min_events ? min_events : 1), max_(max_events > min_ ? max_events : min_), target_(min_) {}
    uint32_t target() const { return target_; }
    uint32_t max() const { return max_; }
    // After a fill: what it held, and whether a limit stopped it.
    void filled(uint32_t count, bool full) {
        if (full || count >= target_)
            target_ = static_cast<uint32_t>(std::min<uint64_t>(uint64_t(target_) * 2, max_));
        else
            target_ = min_;
    }

private:
    uint32_t min_, max_, target_;
};

struct Batch {
    // max_events: room for fills of up to that many events without moving
    // or copying the event array as the fills grow (address space only: see
    // DefaultInitAllocator). The runtime reserves its batch_max_events.
    // Reserved before the array is sized: reserved after, it moved
    // `capacity` never-written events into the new array, faulting in both
    // (accounts-to-kafka.yaml's 14 pool batches of 4,096: ~3,000 page faults
    // at every start).
    explicit Batch(uint32_t capacity, uint32_t max_events = 0);

    void reset(); // empty, keep memory (and the limits)
    uint32_t size() const { return count; }
    // The events this fill may hold (what batch_capacity reports).
    uint32_t capacity() const { return limits.events; }
    cdcflow_event &at(uint32_t i) { return events[i]; }
    // false when full: capacity reached, or (with at least one event in)
    // the byte bound or the deadline; `full` then records it.
    bool append(const cdcflow_event_init &ev);
    // Only while no stage holds the batch (between fills): the event array
    // grows to hold limits.events and never moves during a fill.
    void set_limits(const BatchLimits &l);
    // Every event's slot in `parsed` (event_payload fills it by index),
    // within the reserved room.
    void make_parsed_slots() {
        if (parsed.size() >= events.size()) return;
        parsed.reserve(events.capacity());
        parsed.resize(events.size());
    }

    std::vector<cdcflow_event, DefaultInitAllocator<cdcflow_event>> events; // at least capacity() long
    uint32_t count = 0;
    Arena arena;
    // Events marked DROPPED (event_drop): while zero, the runtime shows the
    // batch to ABI 1 and 2 stages as it is, without looking at any event.
    uint32_t dropped = 0;
    // Events no longer OK (rejected, duplicate or dropped through the host's
    // marking functions): the runtime counts a stage's outcomes from this
    // before and after its process, without looking at any event.
    uint32_t marked = 0;
    // Marks a later stage's duplicate mark replaced (a copy of an event an
    // earlier stage rejected or dropped): counted as that stage's duplicate,
    // not as skipped.
    uint32_t overridden = 0;
    // event_payload's results, by event index; an entry is current when its
    // generation is the batch's (reset() moves the generation on instead of
    // clearing every entry).
    struct Parsed {
        uint32_t generation = 0;
        cdcflow_str of{}; // the payload it was parsed from (a stage may point an event elsewhere)
        cdcflow_payload payload{};
    };
    std::vector<Parsed> parsed;
    uint32_t generation = 1;
    BatchLimits limits;
    bool full = false;                                     // append refused an event since the last reset
    std::chrono::steady_clock::time_point fill_deadline{}; // set by the first append
    bool end_of_stream = false;                            // sentinel batch: no more data follows
    // Arena bytes when the batch last entered a BatchQueue (what that queue
    // counts for it until it leaves), and when the source pushed it (what
    // the runtime counts in flight until it comes back). Set by their owners.
    size_t queued_bytes = 0;
    size_t in_flight_bytes = 0;
};

} // namespace cdcflow::host

// The opaque handle plugins see is the host's Batch.
struct cdcflow_batch : cdcflow::host::Batch {
    using cdcflow::host::Batch::Batch;
};

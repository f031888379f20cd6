// IdCache: the writer's dedupe window of recently written event ids
// (internal to core/outbox).
//
// Exact: ids are stored and compared byte for byte, so two different ids never
// collide (a hash-only window could silently drop an event). Bounded three
// ways: a TTL, a count (capacity) and a byte budget (capacity * bytes_per_id
// on average); the oldest id goes first. Ids longer than kMaxIdBytes are not
// cached at all (they are still written).
//
// No allocation in the steady state: entries live in a ring (FIFO: the TTL is
// the same for all, so insertion order is expiry order), id bytes in a byte
// ring, and an open-addressing index (linear probing, backward-shift delete)
// maps ids to entries. The three grow geometrically up to their bounds.
//
// An entry is kWritten (committed, or buffered for the writer's own batch) or
// kPending: inserted inside an application transaction whose outcome the
// writer does not know; it carries the row's rowid so that the writer can
// look the row up when the id comes again. erase() removes an entry early
// (a rolled-back id).
//
// Thread-safety: one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace cdcflow::outbox {

class IdCache {
public:
    enum class State : uint8_t { kDead = 0, kWritten, kPending };
    // Returned by find() and insert() for "no entry".
    static constexpr uint64_t kNone = UINT64_MAX;
    static constexpr size_t kMaxIdBytes = 1024;

    // capacity == 0 or ttl_ms <= 0: disabled (find() never finds, insert()
    // stores nothing). seed keys the hash, so that crafted ids cannot pile up
    // in one probe run.
    IdCache(size_t capacity, int64_t ttl_ms, uint64_t seed, size_t bytes_per_id = 64);

    // The entry holding `id`, or kNone. Forgets expired ids first.
    uint64_t find(std::string_view id, int64_t now_ms);
    // Remembers `id` (REQUIRES: find(id) == kNone) until now_ms + ttl.
    // Returns its handle, or kNone when not cached (disabled, too long).
    uint64_t insert(std::string_view id, State state, int64_t now_ms, int64_t rowid = 0);

    // Is the entry still there (not expired, evicted or erased)?
    bool live(uint64_t handle) const;
    // REQUIRES: live(handle).
    State state(uint64_t handle) const;
    int64_t rowid(uint64_t handle) const;
    void set_state(uint64_t handle, State state);
    void erase(uint64_t handle);

    // Live ids.
    size_t size() const { return live_; }
    bool enabled() const { return capacity_ > 0; }

private:
    struct Entry {       // 32 bytes: a full default window is 32 MB of entries
        uint64_t pos;    // absolute position of the id in the byte ring
        int64_t expires; // ms
        int64_t rowid;   // kPending: the row inserted in the application's transaction
        uint32_t hash;   // of the id (the index uses the low bits to place it)
        uint16_t len;    // <= kMaxIdBytes
        State state;
    };

    uint32_t hash(std::string_view id) const;
    void expire(int64_t now_ms);
    void pop_front();
    Entry &entry(uint64_t seq) { return ring_[seq & (ring_.size() - 1)]; }
    const Entry &entry(uint64_t seq) const { return ring_[seq & (ring_.size() - 1)]; }
    // The sequence number of the live entry at ring index r.
    uint64_t seq_of(size_t r) const { return head_ + ((r - head_) & (ring_.size() - 1)); }
    bool same_id(const Entry &e, std::string_view id) const;
    void grow_ring();
    void grow_bytes(size_t size);
    uint64_t slot_of(uint64_t seq) const; // an entry's value in the index
    void index_insert(uint64_t seq);
    void index_erase(uint64_t seq);
    void rebuild_index(size_t slots);

    size_t capacity_;
    int64_t ttl_ms_;
    uint64_t seed_;
    size_t max_ring_;  // power of two >= capacity_
    size_t max_bytes_; // power of two, the byte budget

    std::vector<Entry> ring_; // power-of-two size; seq s at [s & mask]
    uint64_t head_ = 0;       // oldest entry's seq
    uint64_t next_ = 0;       // next seq
    size_t live_ = 0;         // entries neither dead nor popped
    std::vector<char> bytes_; // power-of-two size; absolute position p at [p & mask]
    uint64_t byte_head_ = 0;  // next write position
    uint64_t byte_tail_ = 0;  // oldest live byte
    // 0: empty; else hash << 32 | (ring index + 1). The hash in the slot
    // spares a cache miss on the entry for every probe that does not match.
    std::vector<uint64_t> index_;
};

} // namespace cdcflow::outbox

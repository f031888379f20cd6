// IdWindow: the deduper's memory of recently seen event ids.
//
// A bounded LRU set of 128-bit id fingerprints (SipHash-2-4, see
// siphash.hpp) with a time-to-live. Layout, chosen for memory (1,000,000 ids
// in about 35 MiB) and O(1) operations with no allocation after construction:
//
//   entries_  capacity x 28-byte Entry {fingerprint, prev, next, seen}: the
//             LRU list is intrusive, linked by uint32 indices.
//   table_    open addressing with linear probing, power-of-two size at
//             most 3/4 full (load <= 0.75, in practice ~0.5), each slot the
//             entry index + 1 (0 = empty). Deletion shifts later entries
//             back (no tombstones), so lookups never degrade.
//
// The entries are allocated once, untouched (for-overwrite): they are used
// in order, so resident memory grows with the ids actually stored. The
// table starts small and doubles (rehashing the ids held) whenever it would
// pass 3/4 full, up to the size the capacity needs: its slots are touched
// at random, so a table sized for the capacity from the start would become
// resident (and miss the caches) as a whole however few ids arrive. That
// matters with a window per partition (the deduper): 128 partitions'
// windows of 100,000 ids holding ~8,000 ids each touched 128 MiB of tables
// instead of 8, and cost the Kafka consumer a quarter of its CPU time.
//
// Time is arrival time, never event time (DESIGN.md: timestamps are data,
// not truth). The window has a clock that the caller advances from a
// monotonic source (the deduper: std::chrono::steady_clock, once per batch);
// every id is stamped with the clock when its latest copy passed through,
// and expires once the clock is more than ttl ahead of that stamp. Because
// stamps only come from the clock and the clock never goes back, stamps never
// decrease from the least to the most recent id, so expiry pops from the LRU
// tail and stays O(1) per id. No event's timestamp is ever read here, so none
// (far future, zero, negative, skewed) can make the window forget an id.
// Times are kept in whole seconds (uint32: 136 years of a monotonic clock).
//
// Thread-safety: none; one window per deduper instance, driven by one thread.
#pragma once

#include "base/siphash.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

namespace cdcflow::dedupe {

using base::Hash128;
using base::siphash128;
using base::SipKey;

class IdWindow {
public:
    static constexpr uint32_t kMaxCapacity = 1u << 30;

    // REQUIRES: 1 <= capacity <= kMaxCapacity, ttl_seconds >= 0 (0 = ids
    // never expire, only the capacity evicts). Throws std::bad_alloc.
    IdWindow(uint32_t capacity, int64_t ttl_seconds, SipKey key = SipKey::random())
        : key_(key), capacity_(capacity), ttl_s_(ttl_seconds) {
        size_t slots = 1;
        while (slots < static_cast<size_t>(capacity) * 4 / 3 + 1)
            slots <<= 1;
        max_slots_ = slots;
        entries_ = std::make_unique_for_overwrite<Entry[]>(capacity);
        resize_table(std::min(slots, kFirstSlots));
    }

    // The live path: when `id` is remembered and not expired, makes it the
    // most recent, restamps it with the clock and returns true (a
    // duplicate). Otherwise remembers it as the most recent, stamped with the
    // clock (evicting the least recent id when full), and returns false.
    bool check_and_insert(std::string_view id) noexcept { return check_and_insert(fingerprint(id)); }

    // The same in steps, so that a caller walking many ids can prefetch:
    // the id's fingerprint(), then (some ids ahead) its table slot, then (a
    // few ids ahead, once the slot is in cache) the entry it points at. A
    // 1,000,000-id window is far bigger than the caches: without this each
    // id waits for two misses to memory, most of the deduper's time.
    void prefetch_slot(const Hash128 &h) const noexcept { __builtin_prefetch(&table_[home(h)]); }
    void prefetch_entry(const Hash128 &h) const noexcept {
        if (uint32_t v = table_[home(h)]) __builtin_prefetch(&entries_[v - 1]);
    }
    bool check_and_insert(const Hash128 &h) noexcept {
        size_t slot = find(h);
        if (slot != kNoSlot) {
            uint32_t i = table_[slot] - 1;
            bool live = !expired_s(entries_[i].seen);
            entries_[i].seen = clock_;
            move_to_front(i);
            return live;
        }
        if (size_ == capacity_) erase(tail_);
        if (size_ >= grow_at_) resize_table((mask_ + 1) * 2);
        uint32_t i = take_free();
        entries_[i].set(h, clock_);
        link_front(i);
        insert_slot(h, i);
        return false;
    }

    // Restoring after a restart (the host's replay, oldest first): what
    // check_and_insert does for each id, with the table slots of the next
    // few ids prefetched while the current one is inserted. A full window's
    // inserts are cache misses (a random table slot, then its entry), which
    // the live path hides behind other work but a restore of a million ids
    // waits for one after another. Empty ids are skipped; returns how many
    // were not.
    template <typename Ids> size_t insert_all(const Ids &ids, size_t n) noexcept {
        constexpr size_t kAhead = 8;
        Hash128 ring[kAhead];
        size_t queued = 0, done = 0, inserted = 0;
        auto next = [&] { // hashes the next non-empty id into the ring
            while (queued < n) {
                std::string_view id = ids(queued++);
                if (id.empty()) continue;
                Hash128 h = siphash128(id, key_);
                __builtin_prefetch(&table_[home(h)]);
                ring[(inserted + done++) % kAhead] = h;
                return;
            }
        };
        for (size_t k = 0; k < kAhead; ++k)
            next();
        while (done > 0) {
            check_and_insert(ring[inserted % kAhead]);
            ++inserted;
            --done;
            next();
        }
        return inserted;
    }

    // Is `id` remembered and not expired? Changes nothing.
    bool contains(std::string_view id) const noexcept {
        size_t slot = find(siphash128(id, key_));
        return slot != kNoSlot && !expired_s(entries_[table_[slot] - 1].seen);
    }

    // The clock, in seconds of the caller's monotonic time source (0 before
    // it was first advanced).
    int64_t clock_s() const noexcept { return clock_; }
    // Moves the clock forward to now_s (clamped to 0..2^32-1); never back, so
    // a caller's clock that steps back cannot make stamps decrease.
    void advance_clock(int64_t now_s) noexcept {
        uint32_t t = now_s <= 0                     ? 0
                     : now_s >= int64_t{UINT32_MAX} ? UINT32_MAX
                                                    : static_cast<uint32_t>(now_s);
        if (t > clock_) clock_ = t;
    }

    // Forgets expired ids from the least recent end; returns how many. As
    // stamps never decrease towards the most recent id, that is all of them
    // (lookups check expiry too, so correctness does not rest on it).
    size_t expire() noexcept {
        size_t n = 0;
        while (tail_ != kNil && expired_s(entries_[tail_].seen)) {
            erase(tail_);
            ++n;
        }
        return n;
    }

    // Forgets every id. The clock stays: it is monotonic.
    void clear() noexcept {
        std::memset(table_.get(), 0, (mask_ + 1) * sizeof(uint32_t));
        head_ = tail_ = free_ = kNil;
        size_ = used_ = 0;
    }

    size_t size() const noexcept { return size_; }
    size_t capacity() const noexcept { return capacity_; }
    bool full() const noexcept { return size_ == capacity_; }
    // Bytes allocated now (resident once the window has filled).
    size_t memory_bytes() const noexcept {
        return sizeof(*this) + static_cast<size_t>(capacity_) * sizeof(Entry) +
               (mask_ + 1) * sizeof(uint32_t);
    }
    // Bytes a full window holds (its table grown to the capacity's size).
    size_t max_memory_bytes() const noexcept {
        return sizeof(*this) + static_cast<size_t>(capacity_) * sizeof(Entry) + max_slots_ * sizeof(uint32_t);
    }

    // The fingerprint this window stores for `id`.
    Hash128 fingerprint(std::string_view id) const noexcept { return siphash128(id, key_); }

    // Calls f(fingerprint, arrival_seconds) from the most to the least recent
    // id (for tests and diagnostics).
    template <typename F> void for_each_recent(F &&f) const {
        for (uint32_t i = head_; i != kNil; i = entries_[i].next)
            f(entries_[i].hash(), entries_[i].seen);
    }

private:
    static constexpr uint32_t kNil = UINT32_MAX;
    static constexpr size_t kNoSlot = SIZE_MAX;
    // The table's first size (16 KiB): doubled as ids arrive.
    static constexpr size_t kFirstSlots = 4096;

    // 4-byte aligned on purpose: 28 bytes, not 32, per id.
    struct Entry {
        uint32_t h[4]; // Hash128 lo, hi
        uint32_t prev, next;
        uint32_t seen; // the clock when its latest copy arrived, seconds

        void set(const Hash128 &x, uint32_t t) {
            std::memcpy(h, &x.lo, 8);
            std::memcpy(h + 2, &x.hi, 8);
            seen = t;
        }
        Hash128 hash() const {
            Hash128 x;
            std::memcpy(&x.lo, h, 8);
            std::memcpy(&x.hi, h + 2, 8);
            return x;
        }
    };
    static_assert(sizeof(Entry) == 28);

    struct FreeTable {
        void operator()(uint32_t *p) const noexcept { std::free(p); }
    };

    bool expired_s(uint32_t seen) const {
        return ttl_s_ > 0 && clock_ > seen && static_cast<int64_t>(clock_ - seen) > ttl_s_;
    }

    size_t home(const Hash128 &h) const { return static_cast<size_t>(h.lo) & mask_; }

    // A table of `slots` slots (a power of two, at most max_slots_) holding
    // every id held now. Throws std::bad_alloc (the window is unchanged).
    void resize_table(size_t slots) {
        std::unique_ptr<uint32_t[], FreeTable> t(
            static_cast<uint32_t *>(std::calloc(slots, sizeof(uint32_t))));
        if (!t) throw std::bad_alloc();
        table_ = std::move(t);
        mask_ = slots - 1;
        // Full at 3/4 (as the capacity's size is at most), never past the last size.
        grow_at_ = slots >= max_slots_ ? UINT32_MAX : static_cast<uint32_t>(slots / 4 * 3);
        for (uint32_t i = head_; i != kNil; i = entries_[i].next)
            insert_slot(entries_[i].hash(), i);
    }

    size_t find(const Hash128 &h) const {
        for (size_t s = home(h);; s = (s + 1) & mask_) {
            uint32_t v = table_[s];
            if (v == 0) return kNoSlot;
            if (entries_[v - 1].hash() == h) return s;
        }
    }
    void insert_slot(const Hash128 &h, uint32_t i) {
        size_t s = home(h);
        while (table_[s] != 0)
            s = (s + 1) & mask_;
        table_[s] = i + 1;
    }
    // Backward-shift deletion (Knuth 6.4, Algorithm R): close the gap so
    // every remaining entry stays reachable from its home slot.
    void erase_slot(size_t gap) {
        for (size_t j = (gap + 1) & mask_; table_[j] != 0; j = (j + 1) & mask_) {
            size_t want = home(entries_[table_[j] - 1].hash());
            // The entry at j may move into the gap unless its home lies
            // cyclically in (gap, j].
            bool stays = gap <= j ? (gap < want && want <= j) : (gap < want || want <= j);
            if (!stays) {
                table_[gap] = table_[j];
                gap = j;
            }
        }
        table_[gap] = 0;
    }

    void erase(uint32_t i) {
        size_t s = home(entries_[i].hash());
        while (table_[s] != i + 1)
            s = (s + 1) & mask_;
        erase_slot(s);
        unlink(i);
        entries_[i].next = free_;
        free_ = i;
        --size_;
    }
    uint32_t take_free() {
        ++size_;
        if (free_ != kNil) {
            uint32_t i = free_;
            free_ = entries_[i].next;
            return i;
        }
        return used_++;
    }

    void unlink(uint32_t i) {
        Entry &e = entries_[i];
        if (e.prev != kNil)
            entries_[e.prev].next = e.next;
        else
            head_ = e.next;
        if (e.next != kNil)
            entries_[e.next].prev = e.prev;
        else
            tail_ = e.prev;
    }
    void link_front(uint32_t i) {
        entries_[i].prev = kNil;
        entries_[i].next = head_;
        if (head_ != kNil)
            entries_[head_].prev = i;
        else
            tail_ = i;
        head_ = i;
    }
    void move_to_front(uint32_t i) {
        if (head_ == i) return;
        unlink(i);
        link_front(i);
    }

    SipKey key_;
    uint32_t capacity_;
    int64_t ttl_s_;
    size_t mask_ = 0;
    size_t max_slots_ = 0;          // the table's size for the capacity
    uint32_t grow_at_ = UINT32_MAX; // ids held at which the table doubles
    std::unique_ptr<Entry[]> entries_;
    std::unique_ptr<uint32_t[], FreeTable> table_;
    uint32_t head_ = kNil, tail_ = kNil; // most / least recent
    uint32_t free_ = kNil;               // free list through Entry::next
    uint32_t size_ = 0;
    uint32_t used_ = 0;  // entries ever handed out (the rest are untouched)
    uint32_t clock_ = 0; // arrival clock, seconds (see advance_clock)
};

} // namespace cdcflow::dedupe

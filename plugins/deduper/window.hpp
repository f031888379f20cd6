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
// Both arrays are allocated once, untouched (calloc / for-overwrite), so
// resident memory grows with the ids actually stored.
//
// Time is event time, not the wall clock: the window's clock is the newest
// event time it has been given, and an id expires once the clock is more
// than ttl ahead of the id's (latest) event time. So the window's decisions
// depend only on the stream, and a window rebuilt from the outbox after a
// restart (seed.hpp) agrees with the one that was lost, even when the events
// are days old (a backlog, a backfill, a demo). Callers cap event times at
// the wall clock so one future-dated event cannot expire everything.
// Times are kept in whole seconds (uint32, good until 2106).
//
// Thread-safety: none; one window per deduper instance, driven by one thread.
#pragma once

#include "siphash.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

namespace cdcflow::dedupe {

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
        mask_ = slots - 1;
        entries_ = std::make_unique_for_overwrite<Entry[]>(capacity);
        table_.reset(static_cast<uint32_t *>(std::calloc(slots, sizeof(uint32_t))));
        if (!table_) throw std::bad_alloc();
    }

    // The live path, for an event with time event_us (advances the clock).
    // When `id` is remembered and not expired, makes it the most recent,
    // keeps the later of the two times and returns true: a duplicate.
    // Otherwise remembers it as the most recent (evicting the least recent
    // id when full) and returns false; an event already older than the TTL
    // is not remembered at all (it would only evict a live id).
    bool check_and_insert(std::string_view id, int64_t event_us) noexcept {
        Hash128 h = siphash128(id, key_);
        uint32_t t = to_seconds(event_us);
        if (t > clock_) clock_ = t;
        size_t slot = find(h);
        if (slot != kNoSlot) {
            uint32_t i = table_[slot] - 1;
            bool live = !expired_s(entries_[i].seen);
            if (!live || t > entries_[i].seen) entries_[i].seen = t;
            if (!live && expired_s(t)) {
                erase(i);
                return false;
            }
            move_to_front(i);
            return live;
        }
        if (expired_s(t)) return false;
        if (size_ == capacity_) erase(tail_);
        uint32_t i = take_free();
        entries_[i].set(h, t);
        link_front(i);
        insert_slot(h, i);
        return false;
    }

    // Seeding, newest first: remembers `id` as the LEAST recent entry,
    // stamped seen_us. An id already remembered (a newer copy came first)
    // only keeps the later of the two times, as the live path would have; a
    // full window takes nothing more. Leaves the clock alone (set it first
    // with advance_clock). Returns true when it added the id.
    bool insert_oldest(std::string_view id, int64_t seen_us) noexcept {
        Hash128 h = siphash128(id, key_);
        uint32_t t = to_seconds(seen_us);
        if (size_t slot = find(h); slot != kNoSlot) {
            Entry &e = entries_[table_[slot] - 1];
            if (t > e.seen) e.seen = t;
            return false;
        }
        if (size_ == capacity_) return false;
        uint32_t i = take_free();
        entries_[i].set(h, t);
        link_back(i);
        insert_slot(h, i);
        return true;
    }

    // Is `id` remembered and not expired? Changes nothing.
    bool contains(std::string_view id) const noexcept {
        size_t slot = find(siphash128(id, key_));
        return slot != kNoSlot && !expired_s(entries_[table_[slot] - 1].seen);
    }

    // The clock: the newest event time given so far (0 before any).
    int64_t clock_us() const noexcept { return int64_t{clock_} * 1000000; }
    // Moves the clock forward to t_us (never back).
    void advance_clock(int64_t t_us) noexcept {
        uint32_t t = to_seconds(t_us);
        if (t > clock_) clock_ = t;
    }
    // Is an event time older than the TTL at the current clock?
    bool expired(int64_t event_us) const noexcept { return expired_s(to_seconds(event_us)); }

    // Forgets expired ids from the least recent end; returns how many. An
    // expired id further in is still treated as unseen by every lookup.
    size_t expire() noexcept {
        size_t n = 0;
        while (tail_ != kNil && expired_s(entries_[tail_].seen)) {
            erase(tail_);
            ++n;
        }
        return n;
    }

    // Forgets every id and resets the clock.
    void clear() noexcept {
        std::memset(table_.get(), 0, (mask_ + 1) * sizeof(uint32_t));
        head_ = tail_ = free_ = kNil;
        size_ = used_ = 0;
        clock_ = 0;
    }

    size_t size() const noexcept { return size_; }
    size_t capacity() const noexcept { return capacity_; }
    bool full() const noexcept { return size_ == capacity_; }
    // Bytes allocated (resident once the window has filled).
    size_t memory_bytes() const noexcept {
        return sizeof(*this) + static_cast<size_t>(capacity_) * sizeof(Entry) +
               (mask_ + 1) * sizeof(uint32_t);
    }

    // The fingerprint this window stores for `id`.
    Hash128 fingerprint(std::string_view id) const noexcept { return siphash128(id, key_); }

    // Calls f(fingerprint, seen_seconds) from the most to the least recent
    // id (for tests and diagnostics).
    template <typename F> void for_each_recent(F &&f) const {
        for (uint32_t i = head_; i != kNil; i = entries_[i].next)
            f(entries_[i].hash(), entries_[i].seen);
    }

private:
    static constexpr uint32_t kNil = UINT32_MAX;
    static constexpr size_t kNoSlot = SIZE_MAX;

    // 4-byte aligned on purpose: 28 bytes, not 32, per id.
    struct Entry {
        uint32_t h[4]; // Hash128 lo, hi
        uint32_t prev, next;
        uint32_t seen; // seconds since the epoch

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

    static uint32_t to_seconds(int64_t us) {
        int64_t s = us / 1000000;
        return s <= 0 ? 0 : s >= int64_t{UINT32_MAX} ? UINT32_MAX : static_cast<uint32_t>(s);
    }
    bool expired_s(uint32_t seen) const {
        return ttl_s_ > 0 && clock_ > seen && static_cast<int64_t>(clock_ - seen) > ttl_s_;
    }

    size_t home(const Hash128 &h) const { return static_cast<size_t>(h.lo) & mask_; }

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
    void link_back(uint32_t i) {
        entries_[i].next = kNil;
        entries_[i].prev = tail_;
        if (tail_ != kNil)
            entries_[tail_].next = i;
        else
            head_ = i;
        tail_ = i;
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
    std::unique_ptr<Entry[]> entries_;
    std::unique_ptr<uint32_t[], FreeTable> table_;
    uint32_t head_ = kNil, tail_ = kNil; // most / least recent
    uint32_t free_ = kNil;               // free list through Entry::next
    uint32_t size_ = 0;
    uint32_t used_ = 0;  // entries ever handed out (the rest are untouched)
    uint32_t clock_ = 0; // newest event time, seconds
};

} // namespace cdcflow::dedupe

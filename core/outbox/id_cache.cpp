#include "id_cache.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

namespace cdcflow::outbox {

namespace {

// Start small: most writers never see the full window.
constexpr size_t kInitialEntries = 1024;
constexpr size_t kInitialBytes = 64 * 1024;
// Index slots hold ring indexes in 32 bits.
constexpr size_t kMaxCapacity = size_t{1} << 31;

size_t pow2_at_least(size_t n) {
    return std::bit_ceil(std::max<size_t>(n, 1));
}

uint64_t fmix(uint64_t x) {
    // splitmix64's finalizer: every input bit reaches every output bit.
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

} // namespace

IdCache::IdCache(size_t capacity, int64_t ttl_ms, uint64_t seed, size_t bytes_per_id)
    : capacity_(ttl_ms > 0 ? std::min(capacity, kMaxCapacity) : 0), ttl_ms_(ttl_ms), seed_(seed),
      max_ring_(pow2_at_least(capacity_)),
      max_bytes_(pow2_at_least(std::max(capacity_ * std::max<size_t>(bytes_per_id, 1), kMaxIdBytes))) {
    if (!enabled()) return;
    ring_.resize(std::min(kInitialEntries, max_ring_));
    bytes_.resize(std::min(kInitialBytes, max_bytes_));
    index_.assign(2 * ring_.size(), 0);
}

uint32_t IdCache::hash(std::string_view id) const {
    // Eight bytes per multiply; ids are short (a UUID is five rounds).
    uint64_t h = seed_ ^ (id.size() * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= id.size(); i += 8) {
        uint64_t w;
        std::memcpy(&w, id.data() + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    if (i < id.size()) {
        uint64_t w = 0;
        std::memcpy(&w, id.data() + i, id.size() - i);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    }
    return static_cast<uint32_t>(fmix(h));
}

bool IdCache::same_id(const Entry &e, std::string_view id) const {
    if (e.len != id.size()) return false;
    size_t mask = bytes_.size() - 1;
    size_t p = e.pos & mask;
    size_t first = std::min<size_t>(id.size(), bytes_.size() - p);
    return std::memcmp(bytes_.data() + p, id.data(), first) == 0 &&
           std::memcmp(bytes_.data(), id.data() + first, id.size() - first) == 0;
}

bool IdCache::live(uint64_t handle) const {
    return handle >= head_ && handle < next_ && entry(handle).state != State::kDead;
}

IdCache::State IdCache::state(uint64_t handle) const {
    return entry(handle).state;
}

int64_t IdCache::rowid(uint64_t handle) const {
    return entry(handle).rowid;
}

void IdCache::set_state(uint64_t handle, State state) {
    entry(handle).state = state;
}

void IdCache::erase(uint64_t handle) {
    index_erase(handle);
    entry(handle).state = State::kDead;
    --live_;
    // Its bytes and ring slot are reclaimed when it reaches the front.
}

void IdCache::pop_front() {
    Entry &e = entry(head_);
    if (e.state != State::kDead) {
        index_erase(head_);
        e.state = State::kDead;
        --live_;
    }
    ++head_;
    byte_tail_ = head_ == next_ ? byte_head_ : entry(head_).pos;
}

void IdCache::expire(int64_t now_ms) {
    while (head_ != next_ && (entry(head_).state == State::kDead || entry(head_).expires <= now_ms))
        pop_front();
}

uint64_t IdCache::find(std::string_view id, int64_t now_ms) {
    if (!enabled()) return kNone;
    expire(now_ms);
    if (id.size() > kMaxIdBytes) return kNone;
    uint32_t h = hash(id);
    size_t mask = index_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint64_t slot = index_[i];
        if (slot == 0) return kNone;
        if (static_cast<uint32_t>(slot >> 32) != h) continue;
        size_t r = static_cast<uint32_t>(slot) - 1;
        if (same_id(ring_[r], id)) return seq_of(r);
    }
}

uint64_t IdCache::insert(std::string_view id, State state, int64_t now_ms, int64_t rowid) {
    if (!enabled() || id.size() > kMaxIdBytes) return kNone;
    expire(now_ms);
    while (next_ - head_ >= capacity_)
        pop_front();
    if (next_ - head_ == ring_.size()) grow_ring();
    while (byte_head_ - byte_tail_ + id.size() > bytes_.size()) {
        if (bytes_.size() < max_bytes_)
            grow_bytes(2 * bytes_.size());
        else
            pop_front(); // the byte budget: forget the oldest ids
    }
    // Copy the id in, wrapping around the end of the byte ring.
    size_t mask = bytes_.size() - 1;
    size_t p = byte_head_ & mask;
    size_t first = std::min(id.size(), bytes_.size() - p);
    std::memcpy(bytes_.data() + p, id.data(), first);
    std::memcpy(bytes_.data(), id.data() + first, id.size() - first);

    // Keep the index at most half full (short probe runs); rebuilt before
    // the new entry exists, so it is indexed once, below.
    if (2 * (live_ + 1) > index_.size()) rebuild_index(2 * index_.size());
    uint64_t seq = next_++;
    const int64_t expires = now_ms > INT64_MAX - ttl_ms_ ? INT64_MAX : now_ms + ttl_ms_;
    entry(seq) = Entry{byte_head_, expires, rowid, hash(id), static_cast<uint16_t>(id.size()), state};
    byte_head_ += id.size();
    ++live_;
    index_insert(seq);
    return seq;
}

void IdCache::grow_ring() {
    std::vector<Entry> bigger(ring_.size() * 2);
    for (uint64_t s = head_; s != next_; ++s)
        bigger[s & (bigger.size() - 1)] = entry(s);
    ring_.swap(bigger);
    rebuild_index(std::max(index_.size(), 2 * ring_.size()));
}

void IdCache::grow_bytes(size_t size) {
    // Positions are absolute, so each live byte moves to its place in the
    // bigger ring; entries keep their positions.
    std::vector<char> bigger(size);
    size_t old_mask = bytes_.size() - 1, new_mask = size - 1;
    for (uint64_t p = byte_tail_; p != byte_head_;) {
        size_t n =
            std::min<uint64_t>({byte_head_ - p, bytes_.size() - (p & old_mask), size - (p & new_mask)});
        std::memcpy(bigger.data() + (p & new_mask), bytes_.data() + (p & old_mask), n);
        p += n;
    }
    bytes_.swap(bigger);
}

void IdCache::rebuild_index(size_t slots) {
    index_.assign(slots, 0);
    for (uint64_t s = head_; s != next_; ++s)
        if (entry(s).state != State::kDead) index_insert(s);
}

uint64_t IdCache::slot_of(uint64_t seq) const {
    return uint64_t{entry(seq).hash} << 32 | ((seq & (ring_.size() - 1)) + 1);
}

void IdCache::index_insert(uint64_t seq) {
    size_t mask = index_.size() - 1;
    size_t i = entry(seq).hash & mask;
    while (index_[i] != 0)
        i = (i + 1) & mask;
    index_[i] = slot_of(seq);
}

void IdCache::index_erase(uint64_t seq) {
    size_t mask = index_.size() - 1;
    const uint64_t want = slot_of(seq);
    size_t i = entry(seq).hash & mask;
    while (index_[i] != want)
        i = (i + 1) & mask; // present: every live entry is indexed
    // Backward-shift deletion: pull later members of the probe run into the
    // hole when their home slot is not in (hole, j], so lookups never stop
    // early at an empty slot.
    for (size_t j = i;;) {
        index_[i] = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (index_[j] == 0) return;
            size_t home = (index_[j] >> 32) & mask;
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) break;
        }
        index_[i] = index_[j];
        i = j;
    }
}

} // namespace cdcflow::outbox

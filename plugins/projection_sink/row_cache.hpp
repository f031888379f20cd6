// RowCache: a bounded LRU of projection rows keyed by a string id.
//
// Rows touched by the batch in progress are pinned: they are never evicted
// before the batch commits (their changes are only written at the end of the
// batch), so the cache may exceed its capacity by one batch's worth of rows
// until trim() runs after the commit. Nodes are recycled: in the steady state
// (a warm cache) a lookup or an eviction allocates nothing.
//
// The index is an open-addressing table of (hash, node) pairs probed
// linearly: one look-up per event is on the sink's hot path, and a node-based
// std::unordered_map cost three dependent cache misses there (bucket, hash
// node, key bytes; ~15% of the sink's time on a 10,000-account backlog).
// Here a probe reads 16-byte slots that sit together, compares full 64-bit
// hashes, and touches a node's key only when its hash matches.
//
// Not thread-safe: owned by one sink instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::projection {

template <typename Row> class RowCache {
public:
    struct Node {
        std::string key;
        size_t hash = 0; // of key
        Row row{};
        bool pinned = false; // touched by the current batch
        bool dirty = false;  // changed by the current batch: write at its end
        Node *prev = nullptr;
        Node *next = nullptr;
    };

    explicit RowCache(size_t capacity) : capacity_(capacity ? capacity : 1) {}
    RowCache(const RowCache &) = delete;
    RowCache &operator=(const RowCache &) = delete;

    // The node for key, made most recently used; nullptr on a miss. A
    // pinned node (touched by the current batch) stays where it is: it was
    // made most recent at its first touch in the batch and cannot be evicted
    // before the batch ends, so moving it again would only cost writes to
    // two neighbouring nodes, random cache lines, for every event.
    Node *find(std::string_view key) {
        const size_t h = hash_of(key);
        Node *n = nullptr;
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
            const Slot &s = slots_[i];
            if (!s.node) return nullptr;
            if (s.hash == h && s.node->key == key) {
                n = s.node;
                break;
            }
        }
        if (!n->pinned) {
            unlink(n);
            push_front(n);
        }
        return n;
    }

    // A fresh node for key (which must not be cached), most recently used,
    // with a default row. Evicts the least recently used unpinned row first
    // when full.
    Node *insert(std::string_view key) {
        if (size_ >= capacity_) evict_one();
        Node *n;
        if (!free_.empty()) {
            n = free_.back();
            free_.pop_back();
        } else {
            n = &store_.emplace_back();
        }
        n->key.assign(key.data(), key.size());
        n->hash = hash_of(key);
        n->row = Row{};
        n->pinned = n->dirty = false;
        push_front(n);
        // At most half full: probe runs stay short.
        if ((size_ + 1) * 2 > slots_.size()) grow();
        place(n);
        ++size_;
        return n;
    }

    // Forget one row (e.g. its batch rolled back: the committed state is
    // re-read on the next miss).
    void erase(Node *n) {
        remove_slot(n);
        --size_;
        unlink(n);
        n->pinned = n->dirty = false;
        free_.push_back(n);
    }

    // Evict unpinned rows until within capacity.
    void trim() {
        while (size_ > capacity_ && evict_one()) {
        }
    }

    void clear() {
        while (head_)
            erase(head_);
    }

    size_t size() const { return size_; }
    size_t capacity() const { return capacity_; }

private:
    struct Slot {
        size_t hash = 0;
        Node *node = nullptr; // nullptr: empty
    };

    static size_t hash_of(std::string_view key) { return std::hash<std::string_view>()(key); }

    void place(Node *n) {
        size_t i = n->hash & mask_;
        while (slots_[i].node)
            i = (i + 1) & mask_;
        slots_[i] = Slot{n->hash, n};
    }

    void grow() {
        std::vector<Slot> old;
        old.swap(slots_);
        slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
        mask_ = slots_.size() - 1;
        for (const Slot &s : old)
            if (s.node) place(s.node);
    }

    // Linear probing's deletion without tombstones: empty the node's slot,
    // then move back every later entry of the run that may no longer be
    // reachable from its home slot.
    void remove_slot(Node *n) {
        size_t i = n->hash & mask_;
        while (slots_[i].node != n)
            i = (i + 1) & mask_;
        slots_[i] = Slot{};
        for (size_t j = (i + 1) & mask_; slots_[j].node; j = (j + 1) & mask_) {
            size_t home = slots_[j].hash & mask_;
            // Does j's home lie cyclically in (i, j]? Then it stays.
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (stays) continue;
            slots_[i] = slots_[j];
            slots_[j] = Slot{};
            i = j;
        }
    }

    // Evicts the least recently used unpinned row; false when all are pinned.
    bool evict_one() {
        for (Node *n = tail_; n; n = n->prev) {
            if (n->pinned) continue;
            erase(n);
            return true;
        }
        return false;
    }
    void unlink(Node *n) {
        (n->prev ? n->prev->next : head_) = n->next;
        (n->next ? n->next->prev : tail_) = n->prev;
        n->prev = n->next = nullptr;
    }
    void push_front(Node *n) {
        n->prev = nullptr;
        n->next = head_;
        (head_ ? head_->prev : tail_) = n;
        head_ = n;
    }

    size_t capacity_;
    std::deque<Node> store_;                          // stable addresses: slots point at nodes
    std::vector<Node *> free_;                        // recycled nodes
    std::vector<Slot> slots_ = std::vector<Slot>(64); // a power of two, at most half full
    size_t mask_ = 63;
    size_t size_ = 0;
    Node *head_ = nullptr; // most recently used
    Node *tail_ = nullptr;
};

} // namespace cdcflow::projection

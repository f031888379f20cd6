// RowCache: a bounded LRU of projection rows keyed by a string id.
//
// Rows touched by the batch in progress are pinned: they are never evicted
// before the batch commits (their changes are only written at the end of the
// batch), so the cache may exceed its capacity by one batch's worth of rows
// until trim() runs after the commit. Nodes are recycled: in the steady state
// (a warm cache) a lookup or an eviction allocates nothing.
//
// Not thread-safe: owned by one sink instance.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cdcflow::projection {

template <typename Row> class RowCache {
public:
    struct Node {
        std::string key;
        Row row{};
        bool pinned = false; // touched by the current batch
        bool dirty = false;  // changed by the current batch: write at its end
        Node *prev = nullptr;
        Node *next = nullptr;
    };

    explicit RowCache(size_t capacity) : capacity_(capacity ? capacity : 1) {}
    RowCache(const RowCache &) = delete;
    RowCache &operator=(const RowCache &) = delete;

    // The node for key, made most recently used; nullptr on a miss.
    Node *find(std::string_view key) {
        auto it = index_.find(Key::of(key));
        if (it == index_.end()) return nullptr;
        Node *n = it->second;
        unlink(n);
        push_front(n);
        return n;
    }

    // A fresh node for key (which must not be cached), most recently used,
    // with a default row. Evicts the least recently used unpinned row first
    // when full.
    Node *insert(std::string_view key) {
        if (index_.size() >= capacity_) evict_one();
        Node *n;
        if (!free_.empty()) {
            n = free_.back();
            free_.pop_back();
        } else {
            n = &store_.emplace_back();
        }
        n->key.assign(key.data(), key.size());
        n->row = Row{};
        n->pinned = n->dirty = false;
        push_front(n);
        index_.emplace(Key::of(n->key), n);
        return n;
    }

    // Forget one row (e.g. its batch rolled back: the committed state is
    // re-read on the next miss).
    void erase(Node *n) {
        index_.erase(Key::of(n->key));
        unlink(n);
        n->pinned = n->dirty = false;
        free_.push_back(n);
    }

    // Evict unpinned rows until within capacity.
    void trim() {
        while (index_.size() > capacity_ && evict_one()) {
        }
    }

    void clear() {
        while (head_)
            erase(head_);
    }

    size_t size() const { return index_.size(); }
    size_t capacity() const { return capacity_; }

private:
    // The key carries its hash: walking a bucket then compares hashes
    // before bytes and never re-hashes a neighbour's key (libstdc++ does
    // not cache hash codes for a cheap hasher like this one).
    struct Key {
        std::string_view s;
        size_t hash;
        static Key of(std::string_view s) { return Key{s, std::hash<std::string_view>()(s)}; }
        bool operator==(const Key &o) const { return hash == o.hash && s == o.s; }
    };
    struct Hash {
        size_t operator()(const Key &k) const noexcept { return k.hash; }
    };

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
    std::deque<Node> store_;   // stable addresses: the index keys view node keys
    std::vector<Node *> free_; // recycled nodes
    std::unordered_map<Key, Node *, Hash> index_;
    Node *head_ = nullptr; // most recently used
    Node *tail_ = nullptr;
};

} // namespace cdcflow::projection

// CommitTimeline: when outbox positions became committed downstream, so that
// retention counts from the commit, never from a row's timestamp (DESIGN.md:
// timestamps are data, not truth).
//
// It keeps marks (position, time it became committed) in a fixed ring of at
// most kMaxMarks. Commits arrive once per batch (thousands a second); to stay
// bounded over a week-long retention, commits less than one `granule` after
// the newest mark was opened merge into it: the mark takes the higher
// position and the later time. Merging only ever moves a position's time
// later, so a row is never due early; it may be due up to one granule late
// (the caller picks retention / 1000: 0.1%). Marks leave the ring once due,
// so with that granule at most ~1000 are pending; should the ring fill anyway
// (a clock that jumps), commits merge into the newest mark, again late, never
// early.
//
// Thread-safety: none; owned by the source, driven by one thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cdcflow::outbox {

class CommitTimeline {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr size_t kMaxMarks = 1024;

    explicit CommitTimeline(Clock::duration granule) : granule_(granule) { ring_.resize(kMaxMarks); }

    // Everything up to `seq` is committed as of `now`. A position not above
    // the highest one recorded changes nothing (it was committed earlier).
    void committed(int64_t seq, Clock::time_point now) {
        if (seq <= last_seq_) return;
        last_seq_ = seq;
        if (size_ > 0) {
            Mark &newest = ring_[(head_ + size_ - 1) % kMaxMarks];
            if (now - newest.opened < granule_ || size_ == kMaxMarks) {
                newest.seq = seq;
                newest.at = std::max(newest.at, now);
                return;
            }
        }
        ring_[(head_ + size_) % kMaxMarks] = Mark{seq, now, now};
        ++size_;
    }

    // The highest position committed at least `age` before `now`, or
    // INT64_MIN when there is none yet. Drops the marks that are due.
    int64_t due(Clock::time_point now, Clock::duration age) {
        while (size_ > 0 && now - ring_[head_].at >= age) {
            due_seq_ = ring_[head_].seq;
            head_ = (head_ + 1) % kMaxMarks;
            --size_;
        }
        return due_seq_;
    }

    // Marks pending (not yet due), for tests and diagnostics.
    size_t marks() const { return size_; }

private:
    struct Mark {
        int64_t seq = 0;
        Clock::time_point at{};     // when `seq` became committed (the latest commit merged in)
        Clock::time_point opened{}; // the first commit merged in: bounds how long a mark keeps merging
    };

    std::vector<Mark> ring_; // sized once: no allocation per commit
    size_t head_ = 0, size_ = 0;
    Clock::duration granule_;
    int64_t last_seq_ = INT64_MIN;
    int64_t due_seq_ = INT64_MIN;
};

} // namespace cdcflow::outbox

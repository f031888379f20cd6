// CircuitBreaker: fail fast while a database keeps failing (internal to core/outbox).
//
//   closed    --(failure_threshold consecutive failures)-->          open
//   open      --(allow() once cooldown_ms have passed since opening)--> half_open
//   half_open --(the one trial call succeeds)-->                     closed
//   half_open --(the trial fails)-->                                 open (a new cool-down)
//
// While open, allow() returns false (the caller fails fast without touching
// the database). In half-open exactly one call is let through until its
// outcome is reported. Time comes in as an argument, so tests drive it with
// a fake clock.
//
// Thread-safety: the transitions belong to one thread; state() and opens()
// may be read from any thread (relaxed atomics, for metrics).
#pragma once

#include <cdcflow/outbox_writer.hpp>

#include <atomic>
#include <cstdint>

namespace cdcflow::outbox {

class CircuitBreaker {
public:
    // failure_threshold <= 0: never opens.
    CircuitBreaker(int failure_threshold, int64_t cooldown_ms)
        : threshold_(failure_threshold), cooldown_ms_(cooldown_ms < 0 ? 0 : cooldown_ms) {}

    // May a database call be made now? Moves open -> half_open once the
    // cool-down has passed; in half_open only the first caller is let through
    // (the trial) until on_success() or on_failure() reports its outcome.
    bool allow(int64_t now_ms) {
        switch (state()) {
        case BreakerState::kClosed:
            return true;
        case BreakerState::kOpen:
            if (now_ms - opened_at_ms_ < cooldown_ms_) return false;
            set_state(BreakerState::kHalfOpen);
            trial_out_ = true;
            return true;
        case BreakerState::kHalfOpen:
            if (trial_out_) return false;
            trial_out_ = true;
            return true;
        }
        return false;
    }

    void on_success() {
        consecutive_ = 0;
        trial_out_ = false;
        set_state(BreakerState::kClosed);
    }

    void on_failure(int64_t now_ms) {
        trial_out_ = false;
        if (threshold_ <= 0) return;
        if (state() == BreakerState::kHalfOpen || ++consecutive_ >= threshold_) open(now_ms);
    }

    BreakerState state() const { return state_.load(std::memory_order_relaxed); }
    uint64_t opens() const { return opens_.load(std::memory_order_relaxed); }
    // Consecutive failures counted in the closed state.
    int consecutive_failures() const { return consecutive_; }

private:
    void open(int64_t now_ms) {
        opened_at_ms_ = now_ms;
        consecutive_ = 0;
        set_state(BreakerState::kOpen);
        opens_.store(opens_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    void set_state(BreakerState s) { state_.store(s, std::memory_order_relaxed); }

    const int threshold_;
    const int64_t cooldown_ms_;
    int consecutive_ = 0;
    int64_t opened_at_ms_ = 0;
    bool trial_out_ = false;
    std::atomic<BreakerState> state_{BreakerState::kClosed};
    std::atomic<uint64_t> opens_{0};
};

} // namespace cdcflow::outbox

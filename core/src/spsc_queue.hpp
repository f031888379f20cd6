// SpscQueue: a bounded single-producer single-consumer queue of pointers
// (Boost.Lockfree's spsc_queue) with parking on both ends.
//
// - push() blocks while the queue is full (back pressure); pop() blocks while
//   it is empty. Each side spins briefly (the other side is usually about to
//   act), then parks on a futex (C++20 atomic wait) so an idle pipeline burns
//   no CPU. A parked side is woken only when the other side sees it parked,
//   so the fast path costs no syscall.
// - close() wakes both sides; afterwards push() fails and pop() drains what
//   is left, then fails.
//
// Thread-safety: exactly one producer thread and one consumer thread;
// close() may be called from any thread.
#pragma once

#include <boost/lockfree/spsc_queue.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CDCFLOW_CPU_RELAX() _mm_pause()
#else
#define CDCFLOW_CPU_RELAX() std::this_thread::yield()
#endif

namespace cdcflow::host {

template <typename T>
class SpscQueue {
public:
    explicit SpscQueue(size_t capacity) : q_(capacity ? capacity : 1) {}
    SpscQueue(const SpscQueue &) = delete;
    SpscQueue &operator=(const SpscQueue &) = delete;

    // Blocks while full. False only when the queue was closed.
    bool push(T *item) {
        for (;;) {
            if (closed_.load(std::memory_order_acquire)) return false;
            if (q_.push(item)) {
                wake(consumer_parked_, consumer_epoch_);
                return true;
            }
            if (!wait_for(producer_parked_, producer_epoch_, [&] { return q_.write_available() > 0; }))
                continue;
        }
    }

    // Non-blocking push; false when full or closed.
    bool try_push(T *item) {
        if (closed_.load(std::memory_order_acquire) || !q_.push(item)) return false;
        wake(consumer_parked_, consumer_epoch_);
        return true;
    }

    // Blocks while empty. Null only when closed and drained.
    T *pop() {
        for (;;) {
            T *item = nullptr;
            if (q_.pop(item)) {
                wake(producer_parked_, producer_epoch_);
                return item;
            }
            if (closed_.load(std::memory_order_acquire)) {
                // Drain anything pushed before close.
                if (q_.pop(item)) return item;
                return nullptr;
            }
            wait_for(consumer_parked_, consumer_epoch_, [&] { return q_.read_available() > 0; });
        }
    }

    // Non-blocking pop; null when empty.
    T *try_pop() {
        T *item = nullptr;
        if (!q_.pop(item)) return nullptr;
        wake(producer_parked_, producer_epoch_);
        return item;
    }

    void close() {
        closed_.store(true, std::memory_order_release);
        for (auto *e : {&consumer_epoch_, &producer_epoch_}) {
            e->fetch_add(1, std::memory_order_acq_rel); // publishes closed_ to a waiter that reads it
            e->notify_all();
        }
    }
    bool closed() const { return closed_.load(std::memory_order_acquire); }
    size_t size() const { return q_.read_available(); }

    // How often a side actually parked (for tests and metrics).
    uint64_t parks() const { return parks_.load(std::memory_order_relaxed); }

private:
    static constexpr int kSpins = 256;

    // Wake the other side if it announced that it parks. The handshake is a
    // read-modify-write on `parked` by both sides (here fetch_add(0), in
    // wait_for an exchange): RMWs on one atomic are totally ordered, so either
    // the waiter's exchange comes first and we see it parked, or our RMW
    // comes first and, by acquire/release through it, the waiter sees our
    // item when it re-checks. No fences (which ThreadSanitizer cannot model).
    static void wake(std::atomic<uint32_t> &parked, std::atomic<uint32_t> &epoch) {
        if (parked.fetch_add(0, std::memory_order_acq_rel) != 0) {
            epoch.fetch_add(1, std::memory_order_acq_rel);
            epoch.notify_one();
        }
    }

    // Spin, then park until ready() or close. Returns true if it parked.
    template <typename Ready>
    bool wait_for(std::atomic<uint32_t> &parked, std::atomic<uint32_t> &epoch, Ready ready) {
        for (int i = 0; i < kSpins; ++i) {
            if (ready() || closed_.load(std::memory_order_relaxed)) return false;
            CDCFLOW_CPU_RELAX();
        }
        // Read the epoch before announcing: a wake after this point changes
        // it, so wait() cannot miss it.
        uint32_t e = epoch.load(std::memory_order_acquire);
        parked.exchange(1, std::memory_order_acq_rel);
        if (!ready() && !closed_.load(std::memory_order_acquire)) {
            parks_.fetch_add(1, std::memory_order_relaxed);
            epoch.wait(e, std::memory_order_acquire);
        }
        parked.store(0, std::memory_order_relaxed);
        return true;
    }

    boost::lockfree::spsc_queue<T *> q_;
    std::atomic<bool> closed_{false};
    alignas(64) std::atomic<uint32_t> consumer_parked_{0};
    std::atomic<uint32_t> consumer_epoch_{0};
    alignas(64) std::atomic<uint32_t> producer_parked_{0};
    std::atomic<uint32_t> producer_epoch_{0};
    std::atomic<uint64_t> parks_{0};
};

} // namespace cdcflow::host

#include "spsc_queue.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <thread>

using cdcflow::host::SpscQueue;

namespace {
// Sequence numbers travel as pointer values; they are never dereferenced.
int *as_ptr(uint64_t v) { return reinterpret_cast<int *>(static_cast<uintptr_t>(v)); }
uint64_t as_num(int *p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); }

double thread_cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
} // namespace

TEST_CASE("queue: FIFO order across two threads, millions of items, small capacity") {
    // Capacity 8 forces constant full/empty transitions: both sides park and
    // wake millions of times. Run under ThreadSanitizer in CI (tsan build).
    const uint64_t n = 4'000'000;
    SpscQueue<int> q(8);
    std::atomic<uint64_t> errors{0};
    std::thread consumer([&] {
        for (uint64_t expect = 1; expect <= n; ++expect) {
            int *p = q.pop();
            if (as_num(p) != expect) errors.fetch_add(1);
        }
    });
    for (uint64_t i = 1; i <= n; ++i) REQUIRE(q.push(as_ptr(i)));
    consumer.join();
    CHECK(errors.load() == 0);
    CHECK(q.size() == 0);
}

TEST_CASE("queue: push blocks while full and resumes when the consumer pops") {
    SpscQueue<int> q(2);
    REQUIRE(q.push(as_ptr(1)));
    REQUIRE(q.push(as_ptr(2)));
    CHECK_FALSE(q.try_push(as_ptr(3)));
    std::atomic<bool> pushed{false};
    std::thread producer([&] {
        q.push(as_ptr(3));
        pushed.store(true);
    });
    // The producer cannot finish until we pop.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(pushed.load());
    CHECK(as_num(q.pop()) == 1);
    producer.join();
    CHECK(pushed.load());
    CHECK(as_num(q.pop()) == 2);
    CHECK(as_num(q.pop()) == 3);
}

TEST_CASE("queue: an idle consumer parks instead of spinning") {
    SpscQueue<int> q(4);
    double cpu_ms = 0;
    std::thread consumer([&] {
        double t0 = thread_cpu_ms();
        int *p = q.pop(); // waits ~300 ms for the item
        cpu_ms = thread_cpu_ms() - t0;
        CHECK(as_num(p) == 42);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    q.push(as_ptr(42));
    consumer.join();
    CHECK(q.parks() >= 1);
    CHECK(cpu_ms < 50.0); // a spinning consumer would burn ~300 ms
}

TEST_CASE("queue: close wakes a blocked consumer and a blocked producer") {
    SpscQueue<int> q(1);
    std::thread consumer([&] { CHECK(q.pop() == nullptr); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    q.close();
    consumer.join();
    CHECK_FALSE(q.push(as_ptr(1)));

    SpscQueue<int> q2(1);
    REQUIRE(q2.push(as_ptr(1)));
    std::thread producer([&] { CHECK_FALSE(q2.push(as_ptr(2))); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    q2.close();
    producer.join();
    CHECK(as_num(q2.pop()) == 1); // what was queued before close still drains
    CHECK(q2.pop() == nullptr);
}

// The deduper: SipHash-128, the LRU/TTL id window, and the stage driven
// in-process over the real host API, including rebuilding its window from
// the host's replay after a restart (history/restore).
#include "plugin_harness.hpp"

#include "base/siphash.hpp"
#include "deduper/deduper.hpp"
#include "deduper/window.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <list>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

using cdcflow::base::Hash128;
using cdcflow::base::SipKey;
using cdcflow::dedupe::IdWindow;

namespace {

constexpr int64_t kSec = 1'000'000;           // microseconds
constexpr int64_t kT0 = 1'700'000'000 * kSec; // an event timestamp
// A reading of the window's arrival clock, in seconds.
constexpr int64_t kNow = 5'000;
const SipKey kTestKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL}; // bytes 00..0f

std::string id_of(size_t i) {
    return "0190a1b2-0000-7000-8000-" + std::to_string(1000000000000 + i);
}

// Fingerprints from most to least recent.
std::vector<Hash128> recency(const IdWindow &w) {
    std::vector<Hash128> out;
    w.for_each_recent([&](const Hash128 &h, uint32_t) { out.push_back(h); });
    return out;
}

std::vector<Hash128> fingerprints(const IdWindow &w, std::initializer_list<const char *> ids) {
    std::vector<Hash128> out;
    for (const char *id : ids)
        out.push_back(w.fingerprint(id));
    return out;
}

} // namespace

// ---------------------------------------------------------------------------
// SipHash-2-4-128

TEST_CASE("siphash128 matches the reference vectors") {
    // vectors_sip128 from the reference implementation: key 00..0f, message
    // 00 01 02 ... of the given length. Lengths cover the 8-byte blocks and
    // every tail size.
    struct Vec {
        size_t len;
        unsigned char out[16];
    };
    const Vec vecs[] = {
        {0, {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93}},
        {1, {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45}},
        {7, {0xa1, 0xf1, 0xeb, 0xbe, 0xd8, 0xdb, 0xc1, 0x53, 0xc0, 0xb8, 0x4a, 0xa6, 0x1f, 0xf0, 0x82, 0x39}},
        {8, {0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97, 0xb4}},
        {15,
         {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9}},
        {16,
         {0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb, 0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23, 0x05, 0x77}},
        {63,
         {0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f, 0xbd, 0x7c}},
    };
    std::string msg;
    for (int i = 0; i < 64; ++i)
        msg += static_cast<char>(i);
    for (const Vec &v : vecs) {
        INFO("length ", v.len);
        Hash128 h = cdcflow::base::siphash128(std::string_view(msg).substr(0, v.len), kTestKey);
        unsigned char got[16];
        for (int b = 0; b < 8; ++b) {
            got[b] = static_cast<unsigned char>(h.lo >> (8 * b));
            got[8 + b] = static_cast<unsigned char>(h.hi >> (8 * b));
        }
        CHECK(std::equal(got, got + 16, v.out));
    }
    // Keys matter: a random key gives different fingerprints.
    SipKey other = SipKey::random();
    CHECK_FALSE(cdcflow::base::siphash128("abc", other) == cdcflow::base::siphash128("abc", kTestKey));
}

// ---------------------------------------------------------------------------
// IdWindow

TEST_CASE("IdWindow remembers ids and reports copies") {
    IdWindow w(100, 0, kTestKey);
    CHECK(w.size() == 0);
    CHECK_FALSE(w.check_and_insert("a"));
    CHECK_FALSE(w.check_and_insert("b"));
    CHECK(w.check_and_insert("a"));
    CHECK(w.check_and_insert("b"));
    CHECK_FALSE(w.check_and_insert("A"));
    CHECK_FALSE(w.check_and_insert("")); // the window itself takes any string
    CHECK(w.size() == 4);
    CHECK(w.contains("a"));
    CHECK_FALSE(w.contains("c"));
    w.advance_clock(kNow);
    w.clear();
    CHECK(w.size() == 0);
    CHECK(w.clock_s() == kNow); // the clock is monotonic: forgetting the ids keeps it
    CHECK_FALSE(w.contains("a"));
    CHECK_FALSE(w.check_and_insert("a"));
}

TEST_CASE("IdWindow evicts the least recently seen id at capacity; a hit refreshes recency") {
    IdWindow w(3, 0, kTestKey);
    for (const char *id : {"a", "b", "c"})
        CHECK_FALSE(w.check_and_insert(id));
    CHECK(w.full());
    CHECK(recency(w) == fingerprints(w, {"c", "b", "a"}));
    CHECK(w.check_and_insert("a")); // a is now the most recent
    CHECK(recency(w) == fingerprints(w, {"a", "c", "b"}));
    CHECK_FALSE(w.check_and_insert("d")); // evicts b
    CHECK(recency(w) == fingerprints(w, {"d", "a", "c"}));
    CHECK_FALSE(w.contains("b"));
    CHECK_FALSE(w.check_and_insert("e")); // evicts c
    CHECK(recency(w) == fingerprints(w, {"e", "d", "a"}));
    CHECK_FALSE(w.check_and_insert("b")); // b is new again, evicts a
    CHECK(recency(w) == fingerprints(w, {"b", "e", "d"}));
    CHECK(w.size() == 3);

    // insert_all (restore) is check_and_insert for each non-empty id, in order.
    const std::vector<std::string> ids = {"a", "", "b", "c", "a", "d", "", "e", "f", "b", "g", "h", "i", "d"};
    for (size_t cap : {size_t{1}, size_t{3}, size_t{20}}) {
        IdWindow one_by_one(static_cast<uint32_t>(cap), 0, kTestKey),
            batched(static_cast<uint32_t>(cap), 0, kTestKey);
        for (const auto &id : ids)
            if (!id.empty()) one_by_one.check_and_insert(id);
        CHECK(batched.insert_all([&](size_t i) { return std::string_view(ids[i]); }, ids.size()) == 12);
        CHECK(recency(batched) == recency(one_by_one));
    }

    IdWindow one(1, 0, kTestKey);
    CHECK_FALSE(one.check_and_insert("a"));
    CHECK(one.check_and_insert("a"));
    CHECK_FALSE(one.check_and_insert("b"));
    CHECK_FALSE(one.check_and_insert("a"));
    CHECK(one.size() == 1);
}

TEST_CASE("IdWindow keeps an id for the TTL after its latest copy arrived, then forgets it") {
    IdWindow w(100, 10, kTestKey);
    w.advance_clock(kNow);
    CHECK_FALSE(w.check_and_insert("a")); // arrives at +0 s
    w.advance_clock(kNow + 5);
    CHECK_FALSE(w.check_and_insert("b")); // arrives at +5 s
    w.advance_clock(kNow + 10);
    CHECK(w.contains("a"));    // exactly the TTL after it arrived: still remembered
    w.advance_clock(kNow + 9); // the clock never goes back
    CHECK(w.clock_s() == kNow + 10);
    CHECK(w.check_and_insert("a")); // a copy: a now counts from +10 s
    w.advance_clock(kNow + 16);
    CHECK(w.contains("a"));
    CHECK_FALSE(w.contains("b")); // 11 s after it arrived
    // An expired id is new again (and counts from now), not a duplicate.
    CHECK_FALSE(w.check_and_insert("b"));
    w.advance_clock(kNow + 26);
    CHECK(w.check_and_insert("b"));
    CHECK_FALSE(w.contains("a")); // 16 s after its latest copy

    // expire() drops from the least recent end.
    IdWindow e(100, 10, kTestKey);
    for (int i = 0; i < 10; ++i) {
        e.advance_clock(kNow + i);
        e.check_and_insert(id_of(static_cast<size_t>(i)));
    }
    CHECK(e.expire() == 0);
    e.advance_clock(kNow + 14);
    CHECK(e.expire() == 4); // arrived at +0..+3 s
    CHECK(e.size() == 6);
    CHECK_FALSE(e.contains(id_of(3)));
    CHECK(e.contains(id_of(4)));
    e.advance_clock(kNow + 100);
    CHECK(e.expire() == 6);
    CHECK(e.size() == 0);
    // Freed entries are reused.
    for (int i = 0; i < 100; ++i)
        CHECK_FALSE(e.check_and_insert(id_of(1000 + static_cast<size_t>(i))));
    CHECK(e.size() == 100);

    // ttl 0: only the capacity evicts.
    IdWindow forever(10, 0, kTestKey);
    forever.check_and_insert("a");
    forever.advance_clock(4'000'000'000);
    CHECK(forever.contains("a"));
    CHECK(forever.expire() == 0);

    // The clock saturates rather than wrapping.
    IdWindow sat(10, 10, kTestKey);
    sat.advance_clock(-5);
    CHECK(sat.clock_s() == 0);
    sat.check_and_insert("a");
    sat.advance_clock(INT64_MAX);
    CHECK(sat.clock_s() == UINT32_MAX);
    CHECK_FALSE(sat.contains("a"));
}

TEST_CASE("IdWindow agrees with a straightforward LRU model under random use") {
    // Random inserts, hits, expiry and evictions against std::list + map:
    // exercises backward-shift deletion in every probe-chain shape, and (the
    // larger capacity) the table's doubling as ids arrive.
    for (const size_t cap : {size_t{257}, size_t{20000}}) {
        CAPTURE(cap);
        // The large window without a TTL, so that it fills (0: never expires).
        const int64_t ttl = cap > 4096 ? 0 : 50;
        IdWindow w(static_cast<uint32_t>(cap), ttl, kTestKey);
        const size_t table_at_start = w.memory_bytes();
        std::list<std::pair<std::string, int64_t>> lru; // front = most recent; (id, arrival seconds)
        std::unordered_map<std::string, std::list<std::pair<std::string, int64_t>>::iterator> pos;
        std::mt19937_64 rng(42);
        int64_t clock = kNow;
        auto expired = [&](int64_t seen) { return ttl > 0 && clock - seen > ttl; };
        for (int step = 0; step < 200000; ++step) {
            if (rng() % 8 == 0) clock += static_cast<int64_t>(rng() % 4);
            w.advance_clock(clock);
            if (rng() % 64 == 0) {
                size_t n = w.expire();
                size_t m = 0;
                while (!lru.empty() && expired(lru.back().second)) {
                    pos.erase(lru.back().first);
                    lru.pop_back();
                    ++m;
                }
                REQUIRE(n == m);
            }
            std::string id = id_of(rng() % (cap * 600 / 257));
            auto it = pos.find(id);
            bool want = it != pos.end() && !expired(it->second->second);
            if (it != pos.end()) {
                lru.erase(it->second);
                pos.erase(it);
            } else if (lru.size() == cap) {
                pos.erase(lru.back().first);
                lru.pop_back();
            }
            lru.emplace_front(id, clock);
            pos[id] = lru.begin();
            REQUIRE(w.check_and_insert(id) == want);
            REQUIRE(w.size() == lru.size());
        }
        std::vector<Hash128> model;
        for (const auto &[id, seen] : lru)
            model.push_back(w.fingerprint(id));
        CHECK(recency(w) == model);
        if (cap > 4096) {
            // The table started small and grew to the capacity's size.
            CHECK(table_at_start < w.max_memory_bytes() - 64 * 1024);
            CHECK(w.memory_bytes() == w.max_memory_bytes());
        }
    }
}

TEST_CASE("IdWindow holds 1,000,000 ids in well under 64 MiB") {
    const uint32_t n = 1'000'000;
    IdWindow w(n, 604800, kTestKey);
    w.advance_clock(kNow);
    size_t dups = 0, found = 0;
    for (uint32_t i = 0; i < n; ++i)
        dups += w.check_and_insert(id_of(i));
    CHECK(dups == 0);
    CHECK(w.size() == n);
    for (uint32_t i = 0; i < n; ++i)
        found += w.contains(id_of(i));
    CHECK(found == n);
    size_t bytes = w.memory_bytes();
    MESSAGE("IdWindow: " << bytes << " bytes for " << n << " ids = " << static_cast<double>(bytes) / n
                         << " bytes/id");
    CHECK(bytes < size_t{48} << 20);
    // Half a million more evict the oldest half million.
    for (uint32_t i = n; i < n + n / 2; ++i)
        dups += w.check_and_insert(id_of(i));
    CHECK(dups == 0);
    CHECK(w.size() == n);
    CHECK_FALSE(w.contains(id_of(0)));
    CHECK_FALSE(w.contains(id_of(n / 2 - 1)));
    CHECK(w.contains(id_of(n / 2)));
    CHECK(w.contains(id_of(n + n / 2 - 1)));
}

// ---------------------------------------------------------------------------
// The deduper stage over the real host API

namespace {

using cdcflow::dedupe::Deduper;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::Val;

EventSpec event(const std::string &id, int64_t timestamp_us) {
    EventSpec e;
    e.id = id;
    e.aggregate_id = "acc-1";
    e.type = "AccountClosed";
    e.timestamp_us = timestamp_us;
    return e;
}

std::vector<int> statuses(cdcflow_batch &b) {
    std::vector<int> out;
    for (uint32_t i = 0; i < b.size(); ++i)
        out.push_back(b.at(i).status);
    return out;
}

constexpr int OK = CDCFLOW_EVENT_OK, DUP = CDCFLOW_EVENT_DUPLICATE, REJ = CDCFLOW_EVENT_REJECTED;

} // namespace

TEST_CASE("deduper stage: marks later copies, even of rejected events; empty ids pass") {
    StageHarness h("dedupe", cdcflow::test::declared<Deduper>(), {{"window_size", 100}});
    auto stage = cdcflow::test::make_stage<Deduper>(h);

    cdcflow_batch b(16);
    auto add = [&](const std::string &id, int64_t t) { cdcflow::test::append(b, event(id, t)); };
    add("a", kT0);
    add("b", kT0);
    add("a", kT0 + kSec); // a copy in the same batch
    add("", kT0);
    add("", kT0);  // empty ids are never compared
    add("r", kT0); // rejected by an earlier stage ...
    b.at(5).status = REJ;
    cdcflow::Batch view = h.view(b);
    stage->process(view);
    CHECK(statuses(b) == std::vector<int>{OK, OK, DUP, OK, OK, REJ});

    b.reset();
    add("r", kT0 + kSec); // ... so its later copy is a duplicate, not a second dead letter
    b.at(0).status = REJ;
    add("b", kT0 + kSec);
    add("c", 0); // no timestamp: the window's clock stands in
    add("c", 0);
    view = h.view(b);
    stage->process(view);
    CHECK(statuses(b) == std::vector<int>{DUP, DUP, OK, DUP});
    CHECK(h.metric("duplicates") == 4); // counted once, by the host's event_mark_duplicate
    CHECK(h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 4);
    CHECK(h.metric("restored") == 0);
}

TEST_CASE("deduper stage: config errors name the key") {
    auto error_of = [](std::initializer_list<std::pair<const char *, Val>> values) -> std::string {
        StageHarness h("dedupe", cdcflow::test::declared<Deduper>(), values);
        try {
            cdcflow::test::make_stage<Deduper>(h);
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_CONFIG);
            return e.what();
        }
        return "no error";
    };
    // Bounds are declared and enforced by the host, before the stage exists.
    CHECK(
        error_of({{"window_size", 0}}) ==
        "test.yaml:1:1: config key 'window_size' for plugin 'deduper' must be from 1 to 1073741824, got '0'");
    CHECK(error_of({{"window_size", int64_t{1} << 31}}) ==
          "test.yaml:1:1: config key 'window_size' for plugin 'deduper' must be from 1 to 1073741824, got "
          "'2147483648'");
    CHECK(error_of({{"ttl_seconds", -1}})
              .starts_with("test.yaml:1:1: config key 'ttl_seconds' for plugin 'deduper' must be from 0 to"));
    // The seed_* keys of older pipeline files are accepted and not read.
    CHECK(error_of({{"seed_table", ""}, {"seed_database", "/nonexistent/outbox.db"}}) == "no error");
    CHECK(error_of({{"ttl_seconds", 0}, {"window_size", 1}}) == "no error");
}

// ---------------------------------------------------------------------------
// DESIGN.md: "Timestamps are data, not truth". No event's timestamp may make
// the window forget what it would otherwise hold.

namespace {

int64_t wall_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

constexpr int64_t kDay = 24 * 3600 * kSec;
// Stamps a broken or hostile producer writes.
const int64_t kHostile[] = {9'000'000'000'000'000'000, 0, -5, INT64_MIN, INT64_MAX};

// A deduper stage over the host API, fed one batch at a time, on a monotonic
// clock that the test drives (no sleeping).
struct DedupeStage {
    StageHarness h;
    std::unique_ptr<Deduper> stage;
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    cdcflow_batch b{128};

    explicit DedupeStage(std::initializer_list<std::pair<const char *, Val>> cfg)
        : h("dedupe", cdcflow::test::declared<Deduper>(), cfg), stage(cdcflow::test::make_stage<Deduper>(h)) {
        stage->set_clock([this] { return now; });
    }
    // As the host calls it before start: the replayed events (already
    // processed before the restart), oldest first, one batch.
    void restore(const std::vector<std::pair<std::string, int64_t>> &events) {
        b.reset();
        for (const auto &[id, t] : events)
            cdcflow::test::append(b, event(id, t));
        cdcflow::Batch view = h.view(b);
        stage->restore(view);
        CHECK(statuses(b) == std::vector<int>(events.size(), OK)); // restore marks nothing
    }
    // One batch of (event id, timestamp); returns the events' statuses.
    std::vector<int> process(const std::vector<std::pair<std::string, int64_t>> &events) {
        b.reset();
        for (const auto &[id, t] : events)
            cdcflow::test::append(b, event(id, t));
        cdcflow::Batch view = h.view(b);
        stage->process(view);
        return statuses(b);
    }
};

} // namespace

TEST_CASE("deduper stage: old events, then one stamped far ahead, 0 or negative: copies of the old ids "
          "are still caught") {
    const int64_t month_ago = wall_us() - 30 * kDay;
    for (int64_t hostile :
         {kHostile[0], kHostile[1], kHostile[2], kHostile[3], kHostile[4], wall_us() + 400 * kDay}) {
        INFO("hostile timestamp ", hostile);
        DedupeStage d({{"window_size", 1000}});
        // A backlog from a month ago, then the hostile event in a batch of its
        // own and amid old events, then retries of every one of them.
        CHECK(d.process({{"old-1", month_ago}, {"old-2", month_ago + kSec}}) == std::vector<int>{OK, OK});
        CHECK(d.process({{"hostile", hostile}}) == std::vector<int>{OK});
        CHECK(d.process({{"old-3", month_ago + 2 * kSec}, {"hostile-2", hostile}, {"old-4", month_ago}}) ==
              std::vector<int>{OK, OK, OK});
        CHECK(d.process({{"old-1", month_ago + 3 * kSec},
                         {"old-2", month_ago},
                         {"hostile", month_ago},
                         {"old-3", hostile},
                         {"hostile-2", hostile},
                         {"old-4", month_ago + 5 * kSec},
                         {"hostile", hostile}}) == std::vector<int>{DUP, DUP, DUP, DUP, DUP, DUP, DUP});
        CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 6);
    }
}

TEST_CASE("deduper stage: restore remembers every replayed id, whatever its timestamp") {
    const int64_t month_ago = wall_us() - 30 * kDay;
    std::vector<std::pair<std::string, int64_t>> replayed;
    for (int i = 0; i < 3; ++i)
        replayed.emplace_back("old-" + std::to_string(i), month_ago + i * kSec);
    for (int64_t hostile : kHostile)
        replayed.emplace_back("hostile-" + std::to_string(replayed.size()), hostile);
    replayed.emplace_back("ahead", wall_us() + 400 * kDay);
    replayed.emplace_back("old-last", month_ago);
    REQUIRE(replayed.size() == 10);

    DedupeStage d({{"window_size", 100}});
    d.restore(replayed);
    CHECK(d.h.metric("restored") == 10);
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 10);
    // The events after the checkpoint, with retries of every restored id.
    std::vector<std::pair<std::string, int64_t>> after = {{"after-checkpoint", month_ago}};
    for (const auto &[id, t] : replayed)
        after.emplace_back(id, month_ago);
    std::vector<int> want(after.size(), DUP);
    want[0] = OK;
    CHECK(d.process(after) == want);
}

TEST_CASE("deduper stage: an id is kept for ttl_seconds after its latest copy arrived, then forgotten") {
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    DedupeStage d({{"window_size", 100}, {"ttl_seconds", 60}});
    const auto t0 = d.now;
    // Stamps that would have steered the old event-time clock.
    CHECK(d.process({{"a", kHostile[0]}, {"b", 0}}) == std::vector<int>{OK, OK});
    d.now = t0 + seconds(60);
    CHECK(d.process({{"a", -5}}) == std::vector<int>{DUP}); // a counts from +60 s now
    d.now = t0 + seconds(60) + milliseconds(999);
    CHECK(d.process({{"c", kT0}}) == std::vector<int>{OK}); // b still held: 60.999 s
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 3);
    d.now = t0 + seconds(61);
    CHECK(d.process({{"b", kT0}}) == std::vector<int>{OK}); // b forgotten: 61 s after it arrived
    // A clock that steps back (a steady clock never does; a test can) forgets nothing.
    d.now = t0;
    CHECK(d.process({{"a", kT0}, {"b", kT0}, {"c", kT0}}) == std::vector<int>{DUP, DUP, DUP});
    d.now = t0 + seconds(121);
    CHECK(d.process({{"d", kT0}}) == std::vector<int>{OK});
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) ==
          4); // a, b, c stamped at +61 s: held until +121 s
    d.now = t0 + seconds(122);
    CHECK(d.process({{"a", kT0}}) == std::vector<int>{OK});
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) ==
          2); // b and c expired at the batch's start, a is new again
}

TEST_CASE("deduper stage: restored ids count as arriving at the restore, whatever their stamps") {
    DedupeStage d({{"window_size", 100}, {"ttl_seconds", 600}});
    const auto restart = d.now;
    // A year old, in the far future, and at 0: the stamps make no difference.
    d.restore({{"year-old", kT0 - 365 * kDay}, {"far-future", kHostile[0]}, {"zero", 0}});
    CHECK(d.h.metric("restored") == 3);
    d.now = restart + std::chrono::seconds(600); // the TTL after the restart: all still held
    CHECK(d.process({{"zero", kT0}}) == std::vector<int>{DUP});
    d.now = restart + std::chrono::seconds(601); // then forgotten, unless seen again since
    CHECK(d.process({{"year-old", kT0}, {"far-future", kT0}, {"zero", kT0}}) ==
          std::vector<int>{OK, OK, DUP});
}

// ---------------------------------------------------------------------------
// Restarts: the host replays the last history() events up to the checkpoint
// (oldest first) into restore() before start.

TEST_CASE("deduper stage: asks for twice window_size events of history; restore rebuilds the window's LRU "
          "order") {
    DedupeStage d({{"window_size", 100}});
    CHECK(d.stage->history() == 200);
    // The events up to the checkpoint, oldest first: "dup" twice, an empty id.
    d.restore({{"e1", kT0}, {"dup", kT0}, {"ancient", kT0 - 8 * kDay}, {"", kT0}, {"dup", kT0}, {"e6", kT0}});
    CHECK(d.h.metric("restored") == 5);
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 4);
    CHECK(d.h.metric("duplicates") == 0); // nothing marked while restoring
    // The events after the checkpoint: new ones pass, copies are dropped.
    CHECK(d.process({{"after1", kT0}, {"e1", kT0}, {"dup", kT0}, {"after1", kT0}, {"", kT0}}) ==
          std::vector<int>{OK, DUP, DUP, DUP, OK});

    // A small window keeps the most recent distinct ids, as live: a later
    // copy refreshed "dup", so "e6" and "dup" are what a window of 2 holds.
    DedupeStage small({{"window_size", 2}});
    CHECK(small.stage->history() == 4);
    small.restore({{"e1", kT0}, {"dup", kT0}, {"ancient", kT0}, {"dup", kT0}, {"e6", kT0}});
    CHECK(small.process({{"e6", kT0}, {"dup", kT0}}) == std::vector<int>{DUP, DUP});
    CHECK(small.process({{"e1", kT0}}) == std::vector<int>{OK});
}

TEST_CASE("deduper stage: a restarted deduper catches every copy the lost one would have") {
    // One stream with retries, evictions and expiry. The live deduper
    // processes it all, its clock advancing per batch; a restarted one
    // restores the last history() events up to the checkpoint (what the
    // host replays) and processes the rest. Without a TTL they decide alike;
    // with one the restarted window (whose ids all arrive at the restart) may
    // hold more, so it catches a superset, and only true copies.
    std::mt19937_64 rng(7);
    std::vector<std::string> stream;
    for (int i = 0; i < 6000; ++i) {
        // Mostly fresh ids, some retries of recent ones, some of old ones.
        int back =
            rng() % 10 < 7 ? 0 : static_cast<int>(rng() % static_cast<uint64_t>(std::min(i + 1, 2000)));
        stream.push_back(id_of(static_cast<size_t>(i - back)));
    }
    std::unordered_map<std::string, size_t> first;
    for (size_t i = 0; i < stream.size(); ++i)
        first.emplace(stream[i], i);
    // Batches of 100 events, 20 s apart: a TTL of 100 s spans 500 events,
    // fewer than the 700 ids the capacity holds, so the TTL is what evicts.
    auto clock_at = [](size_t i) {
        return std::chrono::steady_clock::time_point(
            std::chrono::seconds(kNow + static_cast<int64_t>(i / 100) * 20));
    };
    // Events [from, to) through `d` in batches cut at multiples of 100; the
    // statuses, one per event.
    auto run = [&](DedupeStage &d, size_t from, size_t to) {
        std::vector<int> out;
        for (size_t i = from; i < to;) {
            size_t end = std::min(to, (i / 100 + 1) * 100);
            d.now = clock_at(i);
            std::vector<std::pair<std::string, int64_t>> batch;
            for (size_t k = i; k < end; ++k)
                batch.emplace_back(stream[k], rng() % 2 ? kT0 : -kT0); // stamps play no part
            for (int st : d.process(batch))
                out.push_back(st);
            i = end;
        }
        return out;
    };
    for (int ttl : {0, 100}) {
        for (size_t checkpoint : {size_t{1}, size_t{1000}, size_t{2500}, size_t{4500}}) {
            INFO("ttl ", ttl, ", checkpoint ", checkpoint);
            DedupeStage live({{"window_size", 700}, {"ttl_seconds", ttl}});
            std::vector<int> live_st = run(live, 0, stream.size());
            // A new process: a new key, a new clock. The host replays the
            // newest history() events up to the checkpoint, 128 at a time.
            DedupeStage restarted({{"window_size", 700}, {"ttl_seconds", ttl}});
            restarted.now = clock_at(checkpoint);
            size_t want = static_cast<size_t>(restarted.stage->history());
            for (size_t i = checkpoint > want ? checkpoint - want : 0; i < checkpoint; i += 128) {
                std::vector<std::pair<std::string, int64_t>> replayed;
                for (size_t k = i; k < std::min(checkpoint, i + 128); ++k)
                    replayed.emplace_back(stream[k], kT0);
                restarted.restore(replayed);
            }
            std::vector<int> st = run(restarted, checkpoint, stream.size());
            size_t dups = 0, missed = 0, extra = 0, wrong = 0;
            for (size_t i = checkpoint; i < stream.size(); ++i) {
                bool d = st[i - checkpoint] == DUP, was = live_st[i] == DUP;
                dups += d;
                missed += was && !d;
                extra += d && !was;
                wrong += d && first[stream[i]] == i; // a first occurrence dropped
            }
            CHECK(dups > 100);
            CHECK(missed == 0);
            CHECK(wrong == 0);
            if (ttl == 0)
                CHECK(extra == 0);
            else if (checkpoint > 1)
                CHECK(extra > 0); // ids the lost window had let expire before the checkpoint
        }
    }
}

TEST_CASE("deduper: the SDK exports history and restore (and no seek-time reading of its own)") {
    const cdcflow_plugin *d = cdcflow::detail::descriptor<Deduper>();
    REQUIRE(CDCFLOW_HAS_FIELD(d->callbacks, cdcflow_callbacks, replay));
    const bool has_history = d->callbacks->history, has_restore = d->callbacks->restore,
               has_replay = d->callbacks->replay;
    CHECK(has_history);
    CHECK(has_restore);
    CHECK_FALSE(has_replay); // a transform does not replay
    // Through the C ABI, as the host calls it.
    StageHarness h("dedupe", cdcflow::test::declared<Deduper>(), {{"window_size", 1234}});
    void *inst = nullptr;
    char err[256] = {0};
    REQUIRE(d->callbacks->create(cdcflow::host::host_api(), h.ctx(), h.cfg(), &inst, err, sizeof err) ==
            CDCFLOW_OK);
    cdcflow_history want{};
    want.struct_size = sizeof want;
    d->callbacks->history(inst, &want);
    CHECK(want.max_events == 2468);
    CHECK(std::string(want.setting) == "window_size");
    cdcflow_batch b(8);
    cdcflow::test::append(b, event("x", kT0));
    CHECK(d->callbacks->restore(inst, &b, err, sizeof err) == CDCFLOW_OK);
    CHECK(h.metric("restored") == 1);
    d->callbacks->destroy(inst);
}

TEST_CASE("deduper stage: the window's cache figures: ids held, capacity, copies found (hits), new ids "
          "(misses); replayed ids count as neither") {
    DedupeStage d({{"window_size", 3}});
    d.restore({{"r1", kT0}, {"r2", kT0}});
    CHECK(d.stage->window_entries() == 2);
    CHECK(d.stage->window_hits() == 0);
    CHECK(d.stage->window_misses() == 0);
    CHECK(d.process({{"a", kT0}, {"a", kT0}, {"r1", kT0}}) == std::vector<int>{OK, DUP, DUP});
    CHECK(d.stage->window_hits() == 2);
    CHECK(d.stage->window_misses() == 1);
    CHECK(d.stage->window_entries() == 3);
    // Three new ids, each evicting the least recent: r2, then a, then r1.
    CHECK(d.process({{"c", kT0}, {"d", kT0}, {"r2", kT0}}) == std::vector<int>{OK, OK, OK});
    CHECK(d.stage->window_hits() == 2);
    CHECK(d.stage->window_misses() == 4);
    CHECK(d.stage->window_entries() == 3); // the capacity holds
    CHECK(d.stage->window_capacity() == 3);
    // What the host's families received, once per batch.
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_ENTRIES) == 3);
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_CAPACITY) == 3);
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_HITS) == 2);
    CHECK(d.h.cache_figure("window", CDCFLOW_CACHE_MISSES) == 4);
    CHECK(d.h.metric("duplicates") == 2); // hits are exactly the duplicates marked
}

// ---------------------------------------------------------------------------
// Partitions a consumer group assigns (ABI 5): a window per partition.

namespace {

// A deduper stage fed events of named partitions, and told of rebalances
// as the host tells it (partitions, then the assigned partitions' replay).
struct PartitionedDedupe {
    DedupeStage d;
    explicit PartitionedDedupe(int64_t window_size) : d({{"window_size", window_size}, {"ttl_seconds", 0}}) {}
    static EventSpec at(const std::string &partition, int64_t offset) {
        EventSpec e = event(partition + "-" + std::to_string(offset), kT0);
        e.partition = partition;
        e.offset = offset;
        return e;
    }
    // Offsets [from, to) of each partition, interleaved one by one as a
    // consumer hands them out, in batches of at most 128; the statuses.
    std::vector<int> events(const std::vector<std::string> &parts, int64_t from, int64_t to,
                            bool replay = false) {
        std::vector<int> out;
        d.b.reset();
        auto flush = [&] {
            cdcflow::Batch view = d.h.view(d.b);
            if (replay)
                d.stage->restore(view);
            else
                d.stage->process(view);
            for (int s : statuses(d.b))
                out.push_back(s);
            d.b.reset();
        };
        for (int64_t o = from; o < to; ++o)
            for (const std::string &p : parts) {
                if (d.b.size() == d.b.capacity()) flush();
                cdcflow::test::append(d.b, at(p, o));
            }
        flush();
        return out;
    }
    void change(const std::vector<std::string> &assigned, const std::vector<std::string> &revoked) {
        cdcflow::test::PartitionChange c(assigned, revoked);
        d.stage->partitions(c.change);
    }
};

size_t count_of(const std::vector<int> &st, int status) {
    return static_cast<size_t>(std::count(st.begin(), st.end(), status));
}

} // namespace

TEST_CASE("deduper stage: an assigned partition's replay never evicts ids of the partitions kept; a revoked "
          "partition's window goes") {
    // window_size 100: a replay of 2 x 100 events of each of three newly
    // assigned partitions would have pushed every id of t/0 out of one
    // shared window (the reproduction from the last review).
    PartitionedDedupe p(100);
    p.change({"t/0"}, {});
    CHECK(count_of(p.events({"t/0"}, 1, 91), OK) == 90);
    p.change({"t/1", "t/2", "t/3"}, {});
    p.events({"t/1", "t/2", "t/3"}, 1, 201, true); // the host's replay of their history
    CHECK(p.d.h.metric("restored") == 600);
    CHECK(p.d.stage->window_count() == 4);
    CHECK(p.d.stage->window_entries("t/0") == 90);
    CHECK(p.d.stage->window_entries("t/1") == 100); // the newest window_size of each
    // Copies of t/0's last 90 ids: every one dropped; and of t/1's newest 100.
    CHECK(count_of(p.events({"t/0"}, 1, 91), DUP) == 90);
    CHECK(count_of(p.events({"t/1"}, 101, 201), DUP) == 100);
    CHECK(count_of(p.events({"t/1"}, 1, 101), OK) == 100); // older than its window: new
    CHECK(p.d.stage->window_entries("t/0") == 90);

    // t/2 goes: its window with it (its next owner rebuilds it). When it
    // comes back, only its replay fills it again.
    p.change({}, {"t/2"});
    CHECK(p.d.stage->window_count() == 3);
    CHECK(p.d.stage->window_entries("t/2") == 0);
    CHECK(p.d.stage->window_entries() == 90 + 100 + 100);
    p.change({"t/2"}, {});
    p.events({"t/2"}, 151, 181, true);
    CHECK(p.d.stage->window_entries("t/2") == 30);
    CHECK(count_of(p.events({"t/2"}, 151, 181), DUP) == 30);
    CHECK(count_of(p.events({"t/0"}, 1, 91), DUP) == 90);               // t/0 untouched throughout
    CHECK(p.d.h.cache_figure("window", CDCFLOW_CACHE_CAPACITY) == 400); // 4 partitions x window_size
}

TEST_CASE("deduper stage: the outbox's one partition has its window from create; a group's first assignment "
          "drops it") {
    PartitionedDedupe p(10);
    CHECK(p.d.stage->window_count() == 1);
    CHECK(p.d.stage->bytes_bound() > 10 * 28);
    CHECK(count_of(p.d.process({{"a", kT0}, {"a", kT0}}), DUP) == 1);
    p.change({"t/0"}, {});
    CHECK(p.d.stage->window_count() == 2); // "" held an id: kept
    PartitionedDedupe q(10);
    q.change({"t/0", "t/1"}, {});
    CHECK(q.d.stage->window_count() == 2);
}

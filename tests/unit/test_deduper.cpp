// The deduper: SipHash-128, the LRU/TTL id window, seeding the window from
// an outbox database, and the stage driven in-process over the real host API.
#include "plugin_harness.hpp"

#include "deduper/deduper.hpp"
#include "deduper/seed.hpp"
#include "deduper/siphash.hpp"
#include "deduper/window.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <list>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

using cdcflow::dedupe::Hash128;
using cdcflow::dedupe::IdWindow;
using cdcflow::dedupe::SeedSource;
using cdcflow::dedupe::SipKey;

namespace {

constexpr int64_t kSec = 1'000'000; // microseconds
constexpr int64_t kT0 = 1'700'000'000 * kSec;
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

// A temporary SQLite file, removed afterwards.
struct TempDb {
    std::filesystem::path path;
    cdcflow::sqlite::Db db;

    explicit TempDb(const std::string &name)
        : path(std::filesystem::temp_directory_path() /
               ("cdcflow_test_deduper_" + std::to_string(getpid()) + "_" + name + ".db")) {
        std::filesystem::remove(path);
        db = cdcflow::sqlite::Db(path.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("PRAGMA synchronous = OFF"); // a test file: no fsync per insert
    }
    ~TempDb() {
        db = cdcflow::sqlite::Db();
        std::filesystem::remove(path);
    }
};

void create_outbox(cdcflow::sqlite::Db &db) {
    db.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
            "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, "
            "payload TEXT NOT NULL, timestamp INTEGER NOT NULL)");
}

void add_row(cdcflow::sqlite::Db &db, const std::string &id, int64_t ts) {
    auto st = db.prepare("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                         "VALUES (?1, 'Account', 'acc-1', 'AccountClosed', '{}', ?2)");
    st.bind(1, std::string_view(id)).bind(2, ts);
    st.run();
}

std::string seed_error(IdWindow &w, const SeedSource &src, cdcflow_status want) {
    try {
        cdcflow::dedupe::seed_window(w, src, 10, kT0);
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == want);
        return e.what();
    }
    FAIL("seed_window did not throw");
    return "";
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
        Hash128 h = cdcflow::dedupe::siphash128(std::string_view(msg).substr(0, v.len), kTestKey);
        unsigned char got[16];
        for (int b = 0; b < 8; ++b) {
            got[b] = static_cast<unsigned char>(h.lo >> (8 * b));
            got[8 + b] = static_cast<unsigned char>(h.hi >> (8 * b));
        }
        CHECK(std::equal(got, got + 16, v.out));
    }
    // Keys matter: a random key gives different fingerprints.
    SipKey other = SipKey::random();
    CHECK_FALSE(cdcflow::dedupe::siphash128("abc", other) == cdcflow::dedupe::siphash128("abc", kTestKey));
}

// ---------------------------------------------------------------------------
// IdWindow

TEST_CASE("IdWindow remembers ids and reports copies") {
    IdWindow w(100, 0, kTestKey);
    CHECK(w.size() == 0);
    CHECK_FALSE(w.check_and_insert("a", kT0));
    CHECK_FALSE(w.check_and_insert("b", kT0));
    CHECK(w.check_and_insert("a", kT0));
    CHECK(w.check_and_insert("b", kT0));
    CHECK_FALSE(w.check_and_insert("A", kT0));
    CHECK_FALSE(w.check_and_insert("", kT0)); // the window itself takes any string
    CHECK(w.size() == 4);
    CHECK(w.contains("a"));
    CHECK_FALSE(w.contains("c"));
    CHECK(w.clock_us() == kT0);
    w.clear();
    CHECK(w.size() == 0);
    CHECK(w.clock_us() == 0);
    CHECK_FALSE(w.contains("a"));
    CHECK_FALSE(w.check_and_insert("a", kT0));
}

TEST_CASE("IdWindow evicts the least recently seen id at capacity; a hit refreshes recency") {
    IdWindow w(3, 0, kTestKey);
    for (const char *id : {"a", "b", "c"})
        CHECK_FALSE(w.check_and_insert(id, kT0));
    CHECK(w.full());
    CHECK(recency(w) == fingerprints(w, {"c", "b", "a"}));
    CHECK(w.check_and_insert("a", kT0)); // a is now the most recent
    CHECK(recency(w) == fingerprints(w, {"a", "c", "b"}));
    CHECK_FALSE(w.check_and_insert("d", kT0)); // evicts b
    CHECK(recency(w) == fingerprints(w, {"d", "a", "c"}));
    CHECK_FALSE(w.contains("b"));
    CHECK_FALSE(w.check_and_insert("e", kT0)); // evicts c
    CHECK(recency(w) == fingerprints(w, {"e", "d", "a"}));
    CHECK_FALSE(w.check_and_insert("b", kT0)); // b is new again, evicts a
    CHECK(recency(w) == fingerprints(w, {"b", "e", "d"}));
    CHECK(w.size() == 3);

    // insert_oldest appends behind everything and never evicts.
    IdWindow s(3, 0, kTestKey);
    CHECK(s.insert_oldest("newest", kT0));
    CHECK(s.insert_oldest("middle", kT0));
    CHECK_FALSE(s.insert_oldest("newest", kT0 - kSec)); // an older copy of a known id
    CHECK(s.insert_oldest("oldest", kT0));
    CHECK_FALSE(s.insert_oldest("overflow", kT0));
    CHECK(recency(s) == fingerprints(s, {"newest", "middle", "oldest"}));
    CHECK_FALSE(s.check_and_insert("new", kT0)); // live inserts evict the oldest
    CHECK(recency(s) == fingerprints(s, {"new", "newest", "middle"}));

    IdWindow one(1, 0, kTestKey);
    CHECK_FALSE(one.check_and_insert("a", kT0));
    CHECK(one.check_and_insert("a", kT0));
    CHECK_FALSE(one.check_and_insert("b", kT0));
    CHECK_FALSE(one.check_and_insert("a", kT0));
    CHECK(one.size() == 1);
}

TEST_CASE("IdWindow forgets ids once events more than the TTL newer arrive (event time)") {
    IdWindow w(100, 10, kTestKey);
    CHECK_FALSE(w.check_and_insert("a", kT0));
    CHECK_FALSE(w.check_and_insert("b", kT0 + 5 * kSec));
    CHECK(w.clock_us() == kT0 + 5 * kSec);
    w.advance_clock(kT0 + 10 * kSec);
    CHECK(w.contains("a"));          // exactly the TTL old: still remembered
    w.advance_clock(kT0 + 9 * kSec); // the clock never goes back
    CHECK(w.clock_us() == kT0 + 10 * kSec);
    CHECK(w.check_and_insert("a", kT0 + 10 * kSec)); // a copy; a is now stamped +10 s
    w.advance_clock(kT0 + 16 * kSec);
    CHECK(w.contains("a"));
    CHECK_FALSE(w.contains("b"));
    // An expired id is new again (and restamped), not a duplicate.
    CHECK_FALSE(w.check_and_insert("b", kT0 + 16 * kSec));
    CHECK(w.check_and_insert("b", kT0 + 17 * kSec));
    // A copy carrying an older time is still a duplicate; the later time stays.
    CHECK(w.check_and_insert("b", kT0));
    w.advance_clock(kT0 + 27 * kSec);
    CHECK(w.contains("b"));

    CHECK(w.expired(kT0 + 16 * kSec));
    CHECK_FALSE(w.expired(kT0 + 17 * kSec));
    CHECK_FALSE(w.expired(kT0 + 100 * kSec)); // from the future: not expired

    // Events far behind the clock (a backfill) are not remembered: they would
    // only evict live ids.
    CHECK_FALSE(w.check_and_insert("old", kT0));
    CHECK_FALSE(w.contains("old"));
    CHECK_FALSE(w.check_and_insert("old", kT0));
    CHECK(w.clock_us() == kT0 + 27 * kSec);

    // Days-old events are fine when the whole stream is that old: only the
    // distance to the newest event counts, never the wall clock.
    IdWindow old(100, 10, kTestKey);
    CHECK_FALSE(old.check_and_insert("x", 1000 * kSec));
    CHECK(old.check_and_insert("x", 1005 * kSec));

    // expire() drops from the least recent end.
    IdWindow e(100, 10, kTestKey);
    for (int i = 0; i < 10; ++i)
        e.check_and_insert(id_of(static_cast<size_t>(i)), kT0 + i * kSec);
    CHECK(e.expire() == 0);
    e.advance_clock(kT0 + 14 * kSec);
    CHECK(e.expire() == 4); // seen at +0..+3 s
    CHECK(e.size() == 6);
    CHECK_FALSE(e.contains(id_of(3)));
    CHECK(e.contains(id_of(4)));
    e.advance_clock(kT0 + 100 * kSec);
    CHECK(e.expire() == 6);
    CHECK(e.size() == 0);
    // Freed entries are reused.
    for (int i = 0; i < 100; ++i)
        CHECK_FALSE(e.check_and_insert(id_of(1000 + static_cast<size_t>(i)), kT0 + 100 * kSec));
    CHECK(e.size() == 100);

    // ttl 0: only the capacity evicts.
    IdWindow forever(10, 0, kTestKey);
    forever.check_and_insert("a", kSec);
    forever.advance_clock(int64_t{4'000'000'000} * kSec);
    CHECK(forever.contains("a"));
    CHECK(forever.expire() == 0);
}

TEST_CASE("IdWindow agrees with a straightforward LRU model under random use") {
    // Random inserts, hits, expiry and evictions against std::list + map:
    // exercises backward-shift deletion in every probe-chain shape.
    const size_t cap = 257;
    const int64_t ttl = 50;
    IdWindow w(static_cast<uint32_t>(cap), ttl, kTestKey);
    std::list<std::pair<std::string, int64_t>> lru; // front = most recent; (id, seen seconds)
    std::unordered_map<std::string, std::list<std::pair<std::string, int64_t>>::iterator> pos;
    std::mt19937_64 rng(42);
    int64_t clock = 0;
    int64_t now_s = kT0 / kSec;
    auto expired = [&](int64_t seen) { return clock - seen > ttl; };
    for (int step = 0; step < 200000; ++step) {
        if (rng() % 8 == 0) now_s += static_cast<int64_t>(rng() % 4);
        // Mostly current times, sometimes late ones (out of order).
        int64_t t = rng() % 16 == 0 ? now_s - static_cast<int64_t>(rng() % 80) : now_s;
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
        clock = std::max(clock, t);
        std::string id = id_of(rng() % 600);
        auto it = pos.find(id);
        bool want = it != pos.end() && !expired(it->second->second);
        int64_t seen = want ? std::max(t, it->second->second) : t;
        if (it != pos.end()) {
            lru.erase(it->second);
            pos.erase(it);
        }
        if (want || !expired(seen)) {
            if (lru.size() == cap) {
                pos.erase(lru.back().first);
                lru.pop_back();
            }
            lru.emplace_front(id, seen);
            pos[id] = lru.begin();
        }
        REQUIRE(w.check_and_insert(id, t * kSec) == want);
        REQUIRE(w.size() == lru.size());
    }
    std::vector<Hash128> model;
    for (const auto &[id, seen] : lru)
        model.push_back(w.fingerprint(id));
    CHECK(recency(w) == model);
}

TEST_CASE("IdWindow holds 1,000,000 ids in well under 64 MiB") {
    const uint32_t n = 1'000'000;
    IdWindow w(n, 604800, kTestKey);
    size_t dups = 0, found = 0;
    for (uint32_t i = 0; i < n; ++i)
        dups += w.check_and_insert(id_of(i), kT0);
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
        dups += w.check_and_insert(id_of(i), kT0);
    CHECK(dups == 0);
    CHECK(w.size() == n);
    CHECK_FALSE(w.contains(id_of(0)));
    CHECK_FALSE(w.contains(id_of(n / 2 - 1)));
    CHECK(w.contains(id_of(n / 2)));
    CHECK(w.contains(id_of(n + n / 2 - 1)));
}

// ---------------------------------------------------------------------------
// Seeding from the outbox

TEST_CASE("seed_window rebuilds the window exactly as of the checkpoint") {
    TempDb t("seed");
    create_outbox(t.db);
    // seq 1..8; "dup" appears at 2 and 5; seq 3 is older than the TTL; 4 has
    // an empty id; 7 and 8 are after the checkpoint (read, not committed).
    add_row(t.db, "e1", kT0 - 100 * kSec);
    add_row(t.db, "dup", kT0 - 90 * kSec);
    add_row(t.db, "ancient", kT0 - 8 * 24 * 3600 * kSec);
    add_row(t.db, "", kT0 - 80 * kSec);
    add_row(t.db, "dup", kT0 - 70 * kSec);
    add_row(t.db, "e6", kT0 + 3600 * kSec); // clock skew: in the future
    add_row(t.db, "after1", kT0 - 10 * kSec);
    add_row(t.db, "after2", kT0 - 5 * kSec);

    SeedSource src;
    src.database = t.path.string();
    IdWindow w(100, 604800, kTestKey);
    w.check_and_insert("stale-live-entry", kT0); // seeding starts from scratch
    size_t n = cdcflow::dedupe::seed_window(w, src, 6, kT0);
    CHECK(n == 3);
    CHECK(w.size() == 3);
    // The clock is the newest time up to the checkpoint, capped at the wall clock.
    CHECK(w.clock_us() == kT0);
    // Most recent first, by the seq of each id's latest copy.
    CHECK(recency(w) == fingerprints(w, {"e6", "dup", "e1"}));
    CHECK_FALSE(w.contains("stale-live-entry"));
    CHECK_FALSE(w.contains("ancient")); // 8 days older than the newest event
    CHECK_FALSE(w.contains("after1"));  // beyond the checkpoint: must be replayed, not dropped
    CHECK_FALSE(w.contains("after2"));

    // Replaying after the checkpoint: after1 passes, a copy of e1 is dropped.
    CHECK_FALSE(w.check_and_insert("after1", kT0 - 10 * kSec));
    CHECK(w.check_and_insert("e1", kT0));
    // The future timestamp was capped, so e6 expires on time.
    w.advance_clock(kT0 + 604801 * kSec);
    CHECK_FALSE(w.contains("e6"));

    // A small window keeps the most recent distinct ids.
    IdWindow small(2, 604800, kTestKey);
    CHECK(cdcflow::dedupe::seed_window(small, src, 8, kT0) == 2);
    CHECK(recency(small) == fingerprints(small, {"after2", "after1"}));

    // No TTL: the ancient id is seeded too.
    IdWindow all(100, 0, kTestKey);
    CHECK(cdcflow::dedupe::seed_window(all, src, 6, kT0) == 4);
    CHECK(all.contains("ancient"));

    // A checkpoint before every row seeds nothing.
    IdWindow none(100, 604800, kTestKey);
    CHECK(cdcflow::dedupe::seed_window(none, src, 0, kT0) == 0);
    CHECK(none.size() == 0);
    CHECK(none.clock_us() == 0);
}

TEST_CASE("seed_window: an outbox older than the TTL (a backlog, a demo) is still seeded") {
    TempDb t("old");
    create_outbox(t.db);
    const int64_t year_ago = kT0 - 365 * 24 * 3600 * kSec;
    for (int i = 0; i < 50; ++i)
        add_row(t.db, id_of(static_cast<size_t>(i)), year_ago + i * kSec);
    SeedSource src;
    src.database = t.path.string();
    IdWindow w(100, 604800, kTestKey);
    CHECK(cdcflow::dedupe::seed_window(w, src, 40, kT0) == 40);
    CHECK(w.clock_us() == year_ago + 39 * kSec);
    CHECK(w.check_and_insert(id_of(0), year_ago + 45 * kSec)); // a retry of a processed event
    CHECK_FALSE(w.check_and_insert(id_of(45), year_ago + 45 * kSec));
}

TEST_CASE("seed_window: a restarted window decides exactly like the one that was lost") {
    // One stream with retries, evictions and expiry, written to the outbox.
    // The live window processes it all; a second window is seeded at the
    // checkpoint and then processes the rest. Their decisions must match.
    TempDb t("replay");
    create_outbox(t.db);
    std::mt19937_64 rng(7);
    std::vector<std::pair<std::string, int64_t>> stream;
    int64_t ts = kT0 - 100000 * kSec;
    t.db.exec("BEGIN");
    for (int i = 0; i < 6000; ++i) {
        ts += static_cast<int64_t>(rng() % 3) * kSec; // non-decreasing event times
        // Mostly fresh ids, some retries of recent ones, some of old ones.
        int back =
            rng() % 10 < 7 ? 0 : static_cast<int>(rng() % static_cast<uint64_t>(std::min(i + 1, 2000)));
        size_t pick = static_cast<size_t>(i - back);
        stream.emplace_back(id_of(pick), ts);
        add_row(t.db, stream.back().first, ts);
    }
    t.db.exec("COMMIT");
    SeedSource src;
    src.database = t.path.string();
    for (int64_t checkpoint : {1, 1000, 2500, 4500}) {
        IdWindow live(700, 1500, kTestKey);
        std::vector<bool> live_dup, seeded_dup;
        for (size_t i = 0; i < stream.size(); ++i) {
            live_dup.push_back(live.check_and_insert(stream[i].first, stream[i].second));
            if (i % 100 == 99) live.expire(); // as the plugin does per batch
        }
        IdWindow seeded(700, 1500, SipKey::random()); // a new process, a new key
        cdcflow::dedupe::seed_window(seeded, src, checkpoint, kT0);
        size_t diff = 0, dups = 0;
        for (size_t i = static_cast<size_t>(checkpoint); i < stream.size(); ++i) {
            bool d = seeded.check_and_insert(stream[i].first, stream[i].second);
            diff += d != live_dup[i];
            dups += d;
        }
        INFO("checkpoint ", checkpoint);
        CHECK(dups > 100);
        CHECK(diff == 0);
    }
}

TEST_CASE("seed_window uses the configured names, quoted") {
    TempDb t("names");
    t.db.exec(
        R"(CREATE TABLE "my ""outbox""" ("pos" INTEGER PRIMARY KEY, "event id" TEXT, "ts us" INTEGER))");
    t.db.exec(R"(INSERT INTO "my ""outbox""" VALUES (1, 'x', NULL), (2, NULL, 0), (3, 'y', 0))");
    SeedSource src;
    src.database = t.path.string();
    src.table = "my \"outbox\"";
    src.id_column = "EVENT ID"; // SQLite names are case-insensitive
    src.position_column = "pos";
    src.timestamp_column = "ts us";
    IdWindow w(10, 0, kTestKey);
    CHECK(cdcflow::dedupe::seed_window(w, src, 3, kT0) == 2);
    CHECK(recency(w) == fingerprints(w, {"y", "x"}));
}

TEST_CASE("seed_window names a missing database, table or column") {
    TempDb t("errors");
    create_outbox(t.db);
    IdWindow w(10, 0, kTestKey);
    SeedSource src;
    src.database = t.path.string();
    const std::string where = "seed_database '" + src.database + "': ";

    src.table = "outbox_missing";
    CHECK(seed_error(w, src, CDCFLOW_ERR_CONFIG) == where + "no table 'outbox_missing' (seed_table)");
    src.table = "outbox";
    src.id_column = "event_id";
    CHECK(seed_error(w, src, CDCFLOW_ERR_CONFIG) ==
          where + "table 'outbox' has no column 'event_id' (seed_id_column)");
    src.id_column = "id";
    src.position_column = "position";
    CHECK(seed_error(w, src, CDCFLOW_ERR_CONFIG) ==
          where + "table 'outbox' has no column 'position' (seed_position_column)");
    src.position_column = "seq";
    src.timestamp_column = "ts";
    CHECK(seed_error(w, src, CDCFLOW_ERR_CONFIG) ==
          where + "table 'outbox' has no column 'ts' (seed_timestamp_column)");

    SeedSource missing;
    missing.database =
        (std::filesystem::temp_directory_path() / "cdcflow_test_no_such_dir" / "x.db").string();
    CHECK(seed_error(w, missing, CDCFLOW_ERR_IO)
              .starts_with("cannot open database '" + missing.database + "'"));
    // Read-only: seeding never creates the file.
    CHECK_FALSE(std::filesystem::exists(missing.database));
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
    StageHarness h("dedupe", Deduper::kConfig, std::size(Deduper::kConfig), {{"window_size", 100}});
    auto stage = cdcflow::test::make_stage<Deduper>(h);
    std::vector<cdcflow_position> none;
    stage->seek(none); // first start: nothing to seed, nothing to open

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
    CHECK(h.metric("window_entries") == 4);
    CHECK(h.metric("seeded") == 0);
}

TEST_CASE("deduper stage: seek rebuilds the window from the outbox as of the checkpoint") {
    TempDb t("stage");
    create_outbox(t.db);
    for (const char *id : {"e1", "e2", "e3"})
        add_row(t.db, id, kT0);
    StageHarness h("dedupe", Deduper::kConfig, std::size(Deduper::kConfig),
                   {{"window_size", 100}, {"seed_database", t.path.string()}});
    auto stage = cdcflow::test::make_stage<Deduper>(h);
    std::string partition;
    std::vector<cdcflow_position> checkpoint = {{cdcflow::str(partition), 2}};
    stage->seek(checkpoint);
    CHECK(h.metric("seeded") == 2);
    CHECK(h.metric("window_entries") == 2);

    // The replay after the checkpoint: e3 was read but never committed.
    cdcflow_batch b(8);
    for (const char *id : {"e3", "e1", "e3", "e2"})
        cdcflow::test::append(b, event(id, kT0));
    cdcflow::Batch view = h.view(b);
    stage->process(view);
    CHECK(statuses(b) == std::vector<int>{OK, DUP, DUP, DUP});

    // A Kafka checkpoint cannot seed from an outbox.
    std::string kafka = "orders/0";
    std::vector<cdcflow_position> kp = {{cdcflow::str(kafka), 2}};
    try {
        stage->seek(kp);
        FAIL("no error");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_CONFIG);
        CHECK(std::string(e.what()).find("got partition 'orders/0'") != std::string::npos);
    }

    // Without seed_database a restart starts empty (and says so in the log).
    StageHarness plain("dedupe", Deduper::kConfig, std::size(Deduper::kConfig), {});
    auto unseeded = cdcflow::test::make_stage<Deduper>(plain);
    unseeded->seek(checkpoint);
    CHECK(plain.metric("seeded") == 0);
}

TEST_CASE("deduper stage: config errors name the key") {
    auto error_of = [](std::initializer_list<std::pair<const char *, Val>> values) -> std::string {
        StageHarness h("dedupe", Deduper::kConfig, std::size(Deduper::kConfig), values);
        try {
            cdcflow::test::make_stage<Deduper>(h);
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_CONFIG);
            return e.what();
        }
        return "no error";
    };
    CHECK(error_of({{"window_size", 0}}) == "test.yaml:1:1: window_size: must be 1..1073741824");
    CHECK(error_of({{"window_size", int64_t{1} << 31}}) ==
          "test.yaml:1:1: window_size: must be 1..1073741824");
    CHECK(error_of({{"ttl_seconds", -1}}).starts_with("test.yaml:1:1: ttl_seconds: must be 0.."));
    CHECK(error_of({{"seed_table", ""}}) == "test.yaml:1:1: seed_table: must not be empty");
    CHECK(error_of({{"ttl_seconds", 0}, {"window_size", 1}}) == "no error");
}

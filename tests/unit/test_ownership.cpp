// One owner per checkpoint: the SQLite lease (plugins/common/ownership.hpp)
// and projection_sink's fenced commit, against real SQLite files.
#include "plugin_harness.hpp"

#include "common/ownership.hpp"
#include "common/sqlite.hpp"
#include "projection_sink/projection_sink.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace own = cdcflow::ownership;
namespace sqlite = cdcflow::sqlite;
using cdcflow::projection::ProjectionSink;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;

namespace {

own::LeaseOptions options(const std::string &db, uint32_t lease_ms = 10000) {
    own::LeaseOptions o;
    o.database = db;
    o.name = "accounts";
    o.lease_ms = lease_ms;
    return o;
}

int64_t column(const std::string &db, const std::string &sql) {
    sqlite::Db c(db, SQLITE_OPEN_READONLY);
    return c.query_int(sql, -1);
}

} // namespace

TEST_CASE("ownership: one claim at a time; a release hands over at once with a higher epoch") {
    TempDir dir("own_basic");
    std::string db = dir.file("read.db");
    own::Lease a(options(db)), b(options(db));
    own::Lease::Attempt first = a.try_acquire();
    REQUIRE(first.owned);
    CHECK(a.epoch() == 1);
    CHECK(first.text.find("a new claim") != std::string::npos);

    own::Lease::Attempt second = b.try_acquire();
    CHECK_FALSE(second.owned);
    const own::Identity &me = own::Identity::self();
    const std::string want = "checkpoint 'accounts' of '" + db + "' is owned by host '" + me.host + "' pid " +
                             std::to_string(me.pid) + " (since ";
    CHECK(second.text.substr(0, want.size()) == want);
    CHECK(second.text.substr(second.text.size() - 10) == ", epoch 1)");
    CHECK_FALSE(b.try_acquire().owned); // the same process, but another claim: it waits like anyone

    a.release();
    CHECK_FALSE(a.owned());
    own::Lease::Attempt third = b.try_acquire();
    REQUIRE(third.owned);
    CHECK(b.epoch() == 2);
    CHECK(third.text.find("released by host") != std::string::npos);
    CHECK(column(db, "SELECT released FROM cdcflow_owners") == 0);
}

TEST_CASE("ownership: an owner that stops renewing is taken over after its lease, never before") {
    TempDir dir("own_lease");
    std::string db = dir.file("read.db");
    // A lease of 1 s: renewals every 333 ms leave room for a busy machine.
    auto a = std::make_unique<own::Lease>(options(db, 1000));
    REQUIRE(a->try_acquire().owned);
    // While a renews, b waits however long it watches.
    own::Lease b(options(db, 1000));
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1500)) {
        CHECK_FALSE(b.try_acquire().owned);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(column(db, "SELECT heartbeat FROM cdcflow_owners") >= 2);
    // a's process lives on but its claim is no longer renewed (what a frozen
    // owner looks like): the destructor stops renewing without releasing.
    a.reset();
    const int64_t last_renewal_us = column(db, "SELECT renewed_at FROM cdcflow_owners");
    t0 = std::chrono::steady_clock::now();
    own::Lease::Attempt got;
    while (!(got = b.try_acquire()).owned) {
        REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Not before a full lease after the last renewal b could have seen.
    const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    CHECK(now_us - last_renewal_us >= 1000 * 1000);
    CHECK(got.text.find("no renewal for") != std::string::npos);
    CHECK(b.epoch() == 2);
}

TEST_CASE("ownership: a renewal that finds the claim taken calls on_lost once") {
    TempDir dir("own_lost");
    std::string db = dir.file("read.db");
    std::atomic<int> lost{0};
    std::string why;
    own::LeaseOptions o = options(db, 150);
    o.on_lost = [&](const std::string &m) {
        why = m;
        lost.fetch_add(1);
    };
    own::Lease a(o);
    REQUIRE(a.try_acquire().owned);
    {
        sqlite::Db c(db, SQLITE_OPEN_READWRITE);
        c.exec("UPDATE cdcflow_owners SET epoch = epoch + 1, pid = 1, host = 'elsewhere'");
    }
    for (int i = 0; i < 200 && lost.load() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(lost.load() == 1);
    CHECK(why.find("ownership lost: checkpoint 'accounts' of '" + db +
                   "' is owned by host 'elsewhere' pid 1") == 0);
}

TEST_CASE("ownership: a claim whose process is gone from this machine is taken over at once") {
    TempDir dir("own_dead");
    std::string db = dir.file("read.db");
    const own::Identity &me = own::Identity::self();
    REQUIRE_FALSE(me.boot_id.empty()); // Linux /proc
    // A child process that claims and exits without releasing: kill -9.
    std::fflush(nullptr); // the child must not write the parent's buffered output again
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) try {
            // Not the parent's (cached) identity: the child's own. Nothing may
            // escape this block: the child must never go on running tests.
            sqlite::Db c(db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
            c.exec(own::kOwnersDdl);
            std::string stat;
            {
                FILE *f = std::fopen("/proc/self/stat", "r");
                char buf[1024] = {0};
                if (f && std::fgets(buf, sizeof buf, f)) stat = buf;
                if (f) std::fclose(f);
            }
            // start_ticks: field 22.
            std::string rest = stat.substr(stat.rfind(')') + 2);
            long long ticks = 0;
            int field = 3;
            for (size_t i = 0, j; i < rest.size(); i = j + 1, ++field) {
                j = rest.find(' ', i);
                if (j == std::string::npos) j = rest.size();
                if (field == 22) ticks = std::atoll(rest.substr(i, j - i).c_str());
            }
            sqlite::Stmt s(
                c, "INSERT INTO cdcflow_owners VALUES('accounts', '', 7, 'here', ?1, ?2, ?3, ?4, 'n', "
                   "600000, 0, 0, 0, 0)");
            s.bind(1, static_cast<int64_t>(getpid()))
                .bind(2, std::string_view(me.boot_id))
                .bind(3, std::string_view(me.pid_ns))
                .bind(4, static_cast<int64_t>(ticks));
            s.run();
            _exit(0);
        } catch (...) {
            _exit(1);
        }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    own::Lease b(options(db));
    own::Lease::Attempt got = b.try_acquire();
    REQUIRE(got.owned); // without waiting for its 10-minute lease
    CHECK(got.text.find("its process is gone") != std::string::npos);
    CHECK(b.epoch() == 8);
}

namespace {

size_t entries(const char *dir) {
    size_t n = 0;
    for ([[maybe_unused]] auto &e : std::filesystem::directory_iterator(dir))
        ++n;
    return n;
}

int64_t heartbeat(const std::string &db, const std::string &partition) {
    return column(db, "SELECT heartbeat FROM cdcflow_owners WHERE \"partition\" = '" + partition + "'");
}

// Every partition's heartbeat passed `above` (polled: cdcflow::test::eventually).
bool heartbeats_pass(const std::string &db, const std::vector<std::string> &parts, int64_t above) {
    return cdcflow::test::eventually([&] {
        for (const auto &p : parts)
            if (heartbeat(db, p) <= above) return false;
        return true;
    });
}

// Claims of one checkpoint's partitions t/0.., renewed by one Renewer and
// claimed on one shared connection, as PartitionClaims makes them.
struct SharedClaims {
    std::string db;
    std::mutex mu;
    std::vector<std::string> warnings, lost;
    own::Renewer renewer;
    sqlite::Db connection;
    std::vector<std::unique_ptr<own::Lease>> leases;

    explicit SharedClaims(std::string path)
        : db(std::move(path)), renewer(db, 150,
                                       [this](const std::string &m) {
                                           std::lock_guard lock(mu);
                                           warnings.push_back(m);
                                       }),
          connection(own::open_claims_db(db, 150)) {}
    ~SharedClaims() { leases.clear(); } // before the renewer and the connection
    own::Lease &claim(int i) {
        own::LeaseOptions o = options(db, 150);
        o.partition = "t/" + std::to_string(i);
        o.renewer = &renewer;
        o.connection = &connection;
        o.on_lost = [this](const std::string &m) {
            std::lock_guard lock(mu);
            lost.push_back(m);
        };
        leases.push_back(std::make_unique<own::Lease>(o));
        REQUIRE(leases.back()->try_acquire().owned);
        return *leases.back();
    }
    std::vector<std::string> copy(const std::vector<std::string> &v) {
        std::lock_guard lock(mu);
        return v;
    }
};

} // namespace

TEST_CASE("ownership: one Renewer renews many claims on one thread; a released or dropped claim no more") {
    TempDir dir("own_renewer");
    SharedClaims c(dir.file("read.db"));
    c.claim(0); // the renewal thread starts with the first claim
    const size_t threads = entries("/proc/self/task"), files = entries("/proc/self/fd");
    std::vector<std::string> parts{"t/0"};
    for (int i = 1; i < 8; ++i) {
        c.claim(i);
        parts.push_back("t/" + std::to_string(i));
    }
    // Seven more claims: no thread and no connection more (a thread and a
    // connection each before).
    CHECK(entries("/proc/self/task") == threads);
    CHECK(c.renewer.size() == 8);
    REQUIRE(heartbeats_pass(c.db, parts, 2));
    CHECK(entries("/proc/self/fd") <= files + 2); // the renewer's journal, say

    // Released (revoked) and dropped without a release (the lease object
    // gone, as at a step-down): both leave the renewer, neither is renewed
    // again nor reported lost; the rest are renewed on.
    c.leases[1]->release();
    c.leases[2].reset();
    CHECK(c.renewer.size() == 6);
    const int64_t dropped_at = heartbeat(c.db, "t/2");
    CHECK(column(c.db, "SELECT released FROM cdcflow_owners WHERE \"partition\" = 't/1'") == 1);
    REQUIRE(heartbeats_pass(c.db, {"t/0", "t/7"}, heartbeat(c.db, "t/0") + 3));
    CHECK(heartbeat(c.db, "t/2") == dropped_at); // still this host's row: a renewal would move it
    CHECK(c.copy(c.lost).empty());
    CHECK(c.copy(c.warnings).empty());
}

TEST_CASE("ownership: a Renewer tells a claim taken over through its on_lost once and renews the others") {
    TempDir dir("own_renewer_lost");
    SharedClaims c(dir.file("read.db"));
    c.claim(0);
    c.claim(1);
    {
        sqlite::Db other(c.db, SQLITE_OPEN_READWRITE);
        other.exec("UPDATE cdcflow_owners SET epoch = epoch + 1, pid = 1, host = 'elsewhere' WHERE "
                   "\"partition\" = 't/0'");
    }
    REQUIRE(cdcflow::test::eventually([&] { return !c.copy(c.lost).empty(); }));
    REQUIRE(heartbeats_pass(c.db, {"t/1"}, heartbeat(c.db, "t/1") + 3)); // several periods later
    const std::vector<std::string> lost = c.copy(c.lost);
    REQUIRE(lost.size() == 1);
    CHECK(lost[0].find("ownership lost: checkpoint 'accounts' partition 't/0' of '" + c.db +
                       "' is owned by host 'elsewhere' pid 1") == 0);
    CHECK(c.renewer.size() == 1);
}

TEST_CASE("ownership: a Renewer waits for a busy database once per period for all its claims, says so, and "
          "renews once it is free") {
    TempDir dir("own_renewer_busy");
    SharedClaims c(dir.file("read.db"));
    std::vector<std::string> parts;
    for (int i = 0; i < 8; ++i) {
        c.claim(i);
        parts.push_back("t/" + std::to_string(i));
    }
    REQUIRE(heartbeats_pass(c.db, parts, 0));
    int64_t held;
    {
        // Another writer holds the write lock for 2 s. A period is ~150 ms
        // (50 ms, then 100 ms waiting for the lock): ~12 failed periods. One
        // wait per claim would make a period ~850 ms: 2 or 3.
        sqlite::Db other(c.db, SQLITE_OPEN_READWRITE);
        other.exec("BEGIN IMMEDIATE");
        held = heartbeat(c.db, "t/0");
        std::this_thread::sleep_for(std::chrono::milliseconds(2000));
        CHECK(heartbeat(c.db, "t/0") == held);
        other.exec("ROLLBACK");
    }
    REQUIRE(heartbeats_pass(c.db, parts, held + 1));
    const std::vector<std::string> warnings = c.copy(c.warnings);
    REQUIRE(warnings.size() >= 2);
    // One line for the period's eight claims, not one per claim, every third
    // failed period.
    CHECK(warnings[0].find("cannot renew ownership of checkpoint 'accounts' partition 't/") == 0);
    CHECK(warnings[0].find(" and 7 more (3 times in a row): ") != std::string::npos);
    CHECK(warnings[1].find(" and 7 more (6 times in a row): ") != std::string::npos);
    CHECK(c.copy(c.lost).empty());
}

TEST_CASE(
    "ownership: a claim dropped while its Renewer waits for the database is left alone after the wait") {
    TempDir dir("own_renewer_drop");
    SharedClaims c(dir.file("read.db"));
    for (int i = 0; i < 3; ++i)
        c.claim(i);
    REQUIRE(heartbeats_pass(c.db, {"t/0", "t/1", "t/2"}, 0));
    sqlite::Db other(c.db, SQLITE_OPEN_READWRITE);
    other.exec("BEGIN IMMEDIATE");
    // The renewer is now inside its wait for the lock, holding t/1 among
    // the claims it renews: the drop waits for the renewal to end (without
    // the wait, the renewal read the freed lease: ASan's use-after-free).
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    std::thread unlock([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        other.exec("ROLLBACK");
    });
    c.leases[1].reset();
    unlock.join();
    CHECK(c.renewer.size() == 2);
    const int64_t dropped_at = heartbeat(c.db, "t/1");
    REQUIRE(heartbeats_pass(c.db, {"t/0", "t/2"}, heartbeat(c.db, "t/0") + 3));
    CHECK(heartbeat(c.db, "t/1") == dropped_at);
    CHECK(c.copy(c.lost).empty());
}

TEST_CASE("ownership: a Renewer refuses a claim of another database or lease before anything is claimed") {
    TempDir dir("own_renewer_refuse");
    own::Renewer renewer(dir.file("a.db"), 150, nullptr);
    for (auto [file, lease] : {std::pair{std::string("b.db"), 150u}, std::pair{std::string("a.db"), 3000u}}) {
        own::LeaseOptions o = options(dir.file(file), lease);
        o.renewer = &renewer;
        try {
            own::Lease l(o);
            FAIL("a lease the renewer cannot renew");
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_INTERNAL);
        }
    }
    CHECK_FALSE(std::filesystem::exists(dir.file("b.db"))); // nothing opened, nothing claimed
    CHECK(renewer.size() == 0);
}

TEST_CASE("ownership: a live process elsewhere (or a reused pid) is not taken for dead") {
    own::Identity me = own::Identity::self();
    CHECK(own::process_alive(me, me) == std::optional<bool>(true));
    own::Identity reused = me;
    reused.start_ticks += 1; // same pid, another process
    CHECK(own::process_alive(reused, me) == std::optional<bool>(false));
    own::Identity other_machine = me;
    other_machine.boot_id = "another-boot";
    CHECK(own::process_alive(other_machine, me) == std::nullopt);
    own::Identity other_ns = me;
    other_ns.pid_ns = "pid:[1]";
    CHECK(own::process_alive(other_ns, me) == std::nullopt);
    own::Identity gone = me;
    gone.pid = 4194304; // above any pid_max: no such process (ESRCH)
    CHECK(own::process_alive(gone, me) == std::optional<bool>(false));
}

namespace {

struct Sink {
    StageHarness h;
    std::unique_ptr<ProjectionSink> sink;
    explicit Sink(const std::string &db)
        : h("project", cdcflow::test::declared<ProjectionSink>(), {{"database", db}}),
          sink(cdcflow::test::make_stage<ProjectionSink>(h)) {}
    void process(cdcflow_batch &b) {
        cdcflow::Batch view = h.view(b);
        sink->process(view);
    }
};

cdcflow_ownership lease(uint32_t ms) {
    cdcflow_ownership o{};
    o.struct_size = sizeof o;
    o.lease_ms = ms;
    return o;
}

EventSpec created(int64_t offset, const std::string &account) {
    EventSpec e;
    e.id = "e" + std::to_string(offset);
    e.aggregate_id = account;
    e.type = "AccountCreated";
    e.payload = R"({"owner":"Ada","currency":"EUR"})";
    e.offset = offset;
    return e;
}

// Another process changes the claim behind the sink's back (`sql`); the
// sink's next batch must fail with FENCED. Returns the message.
std::string fenced(Sink &s, const std::string &db, const std::string &sql, int64_t offset) {
    {
        sqlite::Db c(db, SQLITE_OPEN_READWRITE);
        c.exec(sql);
    }
    cdcflow_batch b(2);
    append(b, created(offset, "acc-" + std::to_string(offset)));
    try {
        s.process(b);
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_FENCED);
        return e.what();
    }
    FAIL("a fenced commit went through");
    return "";
}

} // namespace

TEST_CASE(
    "projection_sink: a second instance is refused with the owner named; a fenced commit applies nothing") {
    TempDir dir("own_sink");
    std::string db = dir.file("read.db");
    Sink a(db);
    a.sink->acquire(lease(10000));
    a.sink->start();
    cdcflow_batch b1(4);
    append(b1, created(1, "acc-1"));
    a.process(b1);

    Sink b(db);
    try {
        b.sink->acquire(lease(10000));
        FAIL("a second owner");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_OWNED);
        CHECK(std::string(e.what()).find("is owned by host") != std::string::npos);
    }

    // Another process takes the checkpoint over while `a` is away (frozen
    // past its lease): its next batch must commit nothing at all.
    CHECK(fenced(a, db, "UPDATE cdcflow_owners SET epoch = epoch + 1, host = 'h2', pid = 42", 2) ==
          "checkpoint 'accounts' of '" + db +
              "' was taken over by host 'h2' pid 42 (epoch 2); this process (epoch 1) commits nothing more");
    CHECK(column(db, "SELECT count(*) FROM accounts") == 1);
    CHECK(column(db, "SELECT position FROM cdcflow_checkpoints") == 1);
    CHECK(column(db, "SELECT count(*) FROM dead_letters") == 0);
    a.sink->stop();
}

TEST_CASE("projection_sink: every commit renews the claim in its own transaction; a re-created row with the "
          "same epoch is still another claim") {
    TempDir dir("own_renew");
    std::string db = dir.file("read.db");
    Sink a(db);
    a.sink->acquire(lease(600000)); // the renewal thread would wait 200 s: only commits renew
    a.sink->start();
    const int64_t before = column(db, "SELECT heartbeat FROM cdcflow_owners");
    for (int64_t k = 1; k <= 3; ++k) {
        cdcflow_batch b(2);
        append(b, created(k, "acc-" + std::to_string(k)));
        a.process(b);
    }
    CHECK(column(db, "SELECT heartbeat FROM cdcflow_owners") == before + 3);

    // Someone deletes the row and another process claims anew: epochs start
    // over at 1, like ours. The nonce still tells the claims apart.
    fenced(a, db, "UPDATE cdcflow_owners SET nonce = 'someone-else', host = 'h3', pid = 3", 4);
    CHECK(column(db, "SELECT count(*) FROM accounts") == 3);
    a.sink->stop();
}

TEST_CASE("projection_sink: a checkpoint never moves back; such a batch applies nothing") {
    TempDir dir("own_back");
    std::string db = dir.file("read.db");
    Sink a(db);
    a.sink->start();
    cdcflow_batch b1(2);
    append(b1, created(10, "acc-1"));
    a.process(b1);
    cdcflow_batch b2(2);
    append(b2, created(5, "acc-2")); // a replay of something older than the checkpoint
    try {
        a.process(b2);
        FAIL("the checkpoint moved back");
    } catch (const cdcflow::Error &e) {
        CHECK(std::string(e.what()) ==
              "checkpoint 'accounts' is at 10, this batch ends at 5: refusing to apply events a second time");
    }
    CHECK(column(db, "SELECT count(*) FROM accounts") == 1);
    CHECK(column(db, "SELECT position FROM cdcflow_checkpoints") == 10);
    a.sink->stop();
}

TEST_CASE(
    "projection_sink: a standby made before its database existed reads the checkpoint the owner wrote") {
    TempDir dir("own_late_db");
    std::string db = dir.file("read.db"); // does not exist yet
    Sink a(db), b(db);
    a.sink->acquire(lease(10000));
    a.sink->start();
    cdcflow_batch b1(2);
    append(b1, created(7, "acc-1"));
    a.process(b1);
    a.sink->stop();
    a.sink->release();
    b.sink->acquire(lease(10000));
    std::vector<int64_t> seen;
    b.sink->checkpoint([&](const cdcflow_position &p) { seen.push_back(p.offset); });
    CHECK(seen == std::vector<int64_t>{7}); // not "from the beginning"
}

TEST_CASE("projection_sink: through the C ABI, acquire and release are exported and report OWNED") {
    const cdcflow_plugin *d = cdcflow::detail::descriptor<ProjectionSink>();
    REQUIRE(CDCFLOW_HAS_FIELD(d->callbacks, cdcflow_callbacks, release));
    REQUIRE(static_cast<bool>(d->callbacks->acquire));
    REQUIRE(static_cast<bool>(d->callbacks->release));
    TempDir dir("own_abi");
    std::string db = dir.file("read.db");
    StageHarness h1("project", cdcflow::test::declared<ProjectionSink>(), {{"database", db}});
    StageHarness h2("project", cdcflow::test::declared<ProjectionSink>(), {{"database", db}});
    void *i1 = nullptr, *i2 = nullptr;
    char err[512] = {0};
    REQUIRE(d->callbacks->create(cdcflow::host::host_api(), h1.ctx(), h1.cfg(), &i1, err, sizeof err) ==
            CDCFLOW_OK);
    REQUIRE(d->callbacks->create(cdcflow::host::host_api(), h2.ctx(), h2.cfg(), &i2, err, sizeof err) ==
            CDCFLOW_OK);
    cdcflow_ownership req = lease(10000);
    CHECK(d->callbacks->acquire(i1, &req, err, sizeof err) == CDCFLOW_OK);
    CHECK(d->callbacks->acquire(i2, &req, err, sizeof err) == CDCFLOW_ERR_OWNED);
    CHECK(std::string(err).find("is owned by host") != std::string::npos);
    d->callbacks->release(i1);
    CHECK(d->callbacks->acquire(i2, &req, err, sizeof err) == CDCFLOW_OK);
    d->callbacks->destroy(i1);
    d->callbacks->destroy(i2);
}

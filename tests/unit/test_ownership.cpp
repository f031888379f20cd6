// One owner per checkpoint: the SQLite lease (plugins/common/ownership.hpp)
// and projection_sink's fenced commit, against real SQLite files.
#include "plugin_harness.hpp"

#include "common/ownership.hpp"
#include "common/sqlite.hpp"
#include "projection_sink/projection_sink.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

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

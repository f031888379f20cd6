// Partitions a consumer group assigns (ABI 5), without Kafka: the real
// Runtime drives group_source (tests/plugins, a simulated consumer group) ->
// deduper -> projection_sink on a temporary SQLite file, and the sink's
// per-partition claims (common/partition_claims) are driven directly
// through the plugin harness. Each group_source partition "t/k" opens
// account "acct-k" at offset 1 and deposits "1.00" at every later offset,
// so an account's balance counts the deposits applied: exactly-once is an
// equality. Test names start with "partitions" (scripts/test.sh's TSan pass).
#include "metrics_lookup.hpp"
#include "plugin_harness.hpp"
#include "runtime.hpp"

#include "common/sqlite.hpp"
#include "projection_sink/projection_sink.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;
using cdcflow::projection::ProjectionSink;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
namespace sqlite = cdcflow::sqlite;

namespace {

constexpr int kEvents = 300; // per partition
constexpr int kParts = 4;

std::string group_pipeline(const std::string &db, const std::string &src_cfg,
                           const std::string &sink_plugin = "projection_sink", int events = kEvents,
                           int parts = kParts, int window_size = 1000) {
    std::string sink_cfg = sink_plugin == "projection_sink" ? "database: '" + db + "'" : "";
    return "pipeline: g\nsettings: {batch_size: 16, owner_lease_ms: 400}\nstages:\n"
           "  - id: src\n    plugin: group_source\n    config: {partitions: " +
           std::to_string(parts) + ", events: " + std::to_string(events) + ", " + src_cfg +
           "}\n"
           "  - id: dedupe\n    plugin: deduper\n    config: {window_size: " +
           std::to_string(window_size) +
           "}\n"
           "  - id: sink\n    plugin: " +
           sink_plugin + "\n    config: {" + sink_cfg + "}\n";
}

// One host: a Runtime on its own registry and metrics, run with --drain on
// a thread of its own.
struct Host {
    Metrics metrics;
    PluginRegistry registry;
    std::unique_ptr<Runtime> rt;
    Status create_status, run_status;
    std::thread thread;

    explicit Host(const std::string &yaml) {
        registry.add_front({CDCFLOW_TEST_PLUGIN_DIR});
        auto def = parse_pipeline(yaml, "test.yaml", [](const std::string &) { return std::nullopt; });
        if (!def) {
            create_status = def.status();
            return;
        }
        auto r = Runtime::create(std::move(def.value()), registry, metrics);
        create_status = r.status();
        if (r) rt = std::move(r.value());
    }
    ~Host() {
        if (thread.joinable()) {
            rt->request_stop();
            thread.join();
        }
    }
    void start() {
        thread = std::thread([this] {
            RunOptions ro;
            ro.drain = true;
            run_status = rt->run(ro);
        });
    }
    // True when run() returned within the test-sized bound; else stops it.
    bool finish(uint32_t timeout_ms = 30000) {
        bool done = rt->wait_stopped(timeout_ms);
        if (!done) rt->request_stop();
        thread.join();
        return done;
    }
    int64_t metric(const std::string &name) const { return cdcflow::test::metric_value(metrics, name); }
};

int64_t column(const std::string &db, const std::string &sql) {
    sqlite::Db c(db, SQLITE_OPEN_READONLY);
    sqlite::Stmt s(c, sql);
    return s.step() ? s.int64(0) : -1;
}

// Runs `h` (--drain) to its end; every step must succeed.
void run_to_end(Host &h) {
    REQUIRE_MESSAGE(h.create_status.ok(), h.create_status.message());
    h.start();
    REQUIRE(h.finish());
    REQUIRE_MESSAGE(h.run_status.ok(), h.run_status.message());
}

// account id -> (balance, version)
std::map<std::string, std::pair<std::string, int64_t>> accounts(const std::string &db) {
    sqlite::Db c(db, SQLITE_OPEN_READONLY);
    sqlite::Stmt s(c, "SELECT account_id, balance, version FROM accounts");
    std::map<std::string, std::pair<std::string, int64_t>> out;
    while (s.step())
        out[std::string(s.text(0))] = {std::string(s.text(1)), s.int64(2)};
    return out;
}

// Empty while the sink has not created its tables yet (tests poll it).
std::map<std::string, int64_t> checkpoints(const std::string &db) {
    std::map<std::string, int64_t> out;
    if (!std::filesystem::exists(db)) return out;
    sqlite::Db c(db, SQLITE_OPEN_READONLY);
    if (!c.has_table("cdcflow_checkpoints")) return out;
    sqlite::Stmt s(c, "SELECT \"partition\", position FROM cdcflow_checkpoints WHERE name = 'accounts'");
    while (s.step())
        out[std::string(s.text(0))] = s.int64(1);
    return out;
}

// Every account at `deposits` deposits of 1.00 applied once (version: the
// events applied), every partition's checkpoint at its end, no dead letter.
void check_exact(const std::string &db, int deposits, int events = kEvents) {
    auto acc = accounts(db);
    REQUIRE(acc.size() == kParts);
    for (int k = 0; k < kParts; ++k) {
        INFO("account acct-" << k);
        CHECK(acc["acct-" + std::to_string(k)].first == std::to_string(deposits) + ".00");
        CHECK(acc["acct-" + std::to_string(k)].second == deposits + 1);
    }
    auto cp = checkpoints(db);
    CHECK(cp.size() == kParts);
    for (int k = 0; k < kParts; ++k)
        CHECK(cp["t/" + std::to_string(k)] == events);
    CHECK(column(db, "SELECT count(*) FROM dead_letters") == 0);
}

// The projection sink alone, through the real host API (plugin_harness.hpp).
struct Sink {
    StageHarness h;
    std::unique_ptr<ProjectionSink> sink;
    explicit Sink(const std::string &db)
        : h("project", cdcflow::test::declared<ProjectionSink>(), {{"database", db}}),
          sink(cdcflow::test::make_stage<ProjectionSink>(h)) {
        cdcflow_ownership o{};
        o.struct_size = sizeof o;
        o.lease_ms = 10000; // never runs out during a test: only a release hands a partition over
        o.flags = CDCFLOW_OWNERSHIP_PER_PARTITION;
        sink->acquire(o);
        sink->start();
    }
    ~Sink() {
        sink->stop();
        sink->release();
    }
    void process(cdcflow_batch &b) {
        cdcflow::Batch view = h.view(b);
        sink->process(view);
    }
    // A change; the positions reported for assigned and queried partitions.
    std::map<std::string, int64_t> change(std::vector<std::string> assigned, std::vector<std::string> revoked,
                                          std::vector<std::string> query = {}) {
        cdcflow::test::PartitionChange pc(assigned, revoked, query);
        cdcflow_partitions &c = pc.change;
        std::map<std::string, int64_t> got;
        c.fn = [](void *user, const cdcflow_position *p) {
            (*static_cast<std::map<std::string, int64_t> *>(user))[std::string(cdcflow::sv(p->partition))] =
                p->offset;
        };
        c.user = &got;
        sink->partitions(c);
        return got;
    }
};

EventSpec deposit(const std::string &partition, int64_t offset, const std::string &account) {
    EventSpec e;
    e.id = partition + "-" + std::to_string(offset);
    e.aggregate_id = account;
    e.type = offset == 1 ? "AccountCreated" : "MoneyDeposited";
    e.payload = offset == 1 ? R"({"owner":"Ada","currency":"EUR"})" : R"({"amount":"1.00"})";
    e.offset = offset;
    e.partition = partition;
    return e;
}

cdcflow::Error fenced_error(Sink &s, cdcflow_batch &b) {
    try {
        s.process(b);
    } catch (const cdcflow::Error &e) {
        return e;
    }
    return cdcflow::Error(CDCFLOW_OK, "committed");
}

} // namespace

TEST_CASE("partitions: one host, partitions revoked and assigned again mid-stream: every event applied "
          "once, every checkpoint at its end") {
    TempDir dir("parts_one");
    const std::string db = dir.file("read.db");
    // t/1 and t/2 go away after 200 events and come back after 500 (or once
    // the rest is done); every partition holds one copy (offset 250 repeats
    // offset 20's event id), which the deduper drops.
    Host h(group_pipeline(db, "plan: '-1,2@200;+1,2@500', copy_at: 250, copy_of: 20"));
    REQUIRE(h.create_status.ok());
    h.start();
    REQUIRE(h.finish());
    REQUIRE_MESSAGE(h.run_status.ok(), h.run_status.message());
    check_exact(db, kEvents - 2);
    const Totals t = h.rt->totals();
    CHECK(t.events == kParts * kEvents); // nothing read twice, nothing skipped
    CHECK(t.duplicates == kParts);
    CHECK(t.applied == kParts * (kEvents - 1));
    CHECK(h.metric("src.emitted") == kParts * kEvents);
    CHECK(h.metric("src.changes") == 3);
    CHECK(h.metric("src.committed_unheld") == 0);
    // t/2 resumed after what was committed when it was revoked (the 200
    // events went out round robin over four partitions: about 50 each).
    CHECK(h.metric("src.last_resumed_from") > 1);
    CHECK(h.metric("src.last_resumed_from") < kEvents);
    // Their history was replayed into the deduper on the way back.
    CHECK(h.metric("src.replayed") > 0);
    CHECK(h.metric("dedupe.restored") == h.metric("src.replayed"));
    // One claim per partition, each given up at the end (peers take over at once).
    CHECK(column(db, "SELECT count(*) FROM cdcflow_owners WHERE name = 'accounts'") == kParts);
    CHECK(column(db, "SELECT count(*) FROM cdcflow_owners WHERE released = 0") == 0);
}

TEST_CASE("partitions: two hosts share one projection, each owning half; a partition moves from one to the "
          "other and back: exact balances, positions handed over") {
    TempDir dir("parts_two");
    const std::string db = dir.file("read.db");
    // A holds t/0 and t/1 and gives t/1 up after 100 events; B holds t/2
    // and t/3 and asks for t/1 after 50, and gives it up after 450; A asks
    // for t/1 again once B committed it to 150 and waits there until B lets
    // go (a claim waits for a live owner). Offset 100
    // of each partition repeats offset 20's id: t/1's copy reaches B, whose
    // deduper knows offset 20 (committed by A) only from t/1's replay.
    Host a(group_pipeline(db, "assign: '0,1', plan: '-1@100;+1@~150', copy_at: 100, copy_of: 20"));
    Host b(group_pipeline(db, "assign: '2,3', plan: '+1@50;-1@450', copy_at: 100, copy_of: 20"));
    REQUIRE(a.create_status.ok());
    REQUIRE(b.create_status.ok());
    a.start();
    // B joins once A gave t/1 up, as a group coordinator would order it
    // (else B may claim t/1 first: just as exact, but not this story).
    for (int i = 0; i < 4000 && a.metric("src.changes") < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(a.metric("src.changes") >= 2);
    b.start();
    const bool a_done = a.finish(), b_done = b.finish();
    REQUIRE(a_done);
    REQUIRE(b_done);
    REQUIRE_MESSAGE(a.run_status.ok(), a.run_status.message());
    REQUIRE_MESSAGE(b.run_status.ok(), b.run_status.message());
    // A's row cache held acct-1 from before B moved it on: stale, it would
    // make the balance short of B's deposits.
    check_exact(db, kEvents - 2);
    CHECK(a.rt->totals().duplicates + b.rt->totals().duplicates == kParts);
    CHECK(a.rt->totals().events + b.rt->totals().events == kParts * kEvents);
    CHECK(a.metric("src.emitted") + b.metric("src.emitted") == kParts * kEvents);
    // Positions handed over: B resumed t/1 just after what A committed, A
    // just after what B committed, so A read t/0 whole, t/1 up to where B
    // took over and from where B left.
    const int64_t b_from = b.metric("src.last_resumed_from"), a_from = a.metric("src.last_resumed_from");
    CHECK(b_from >= 20); // offset 20 was A's, so B's copy at 100 is one only through the replay
    CHECK(b_from < 100);
    CHECK(a_from > b_from);
    CHECK(a.metric("src.emitted") == kEvents + b_from + (kEvents - a_from));
    CHECK(b.metric("src.replayed") >= b_from);
    CHECK(a.metric("src.committed_unheld") == 0);
    CHECK(b.metric("src.committed_unheld") == 0);
}

TEST_CASE("partitions: the dedupe window is rebuilt from the assigned partitions' replay: a copy of an event "
          "committed by an earlier host is still dropped") {
    TempDir dir("parts_dedupe");
    const std::string db = dir.file("read.db");
    {
        // The first host commits the first half of every partition (its
        // topic ends there).
        Host first(group_pipeline(db, "", "projection_sink", kEvents / 2));
        run_to_end(first);
    }
    REQUIRE(checkpoints(db).size() == kParts);
    // A new host (an empty window) gets every partition; offset 200 repeats
    // offset 20's id, committed by the first host.
    Host second(group_pipeline(db, "copy_at: 200, copy_of: 20"));
    run_to_end(second);
    check_exact(db, kEvents - 2);
    CHECK(second.rt->totals().duplicates == kParts);
    CHECK(second.metric("dedupe.restored") == kParts * kEvents / 2);
}

TEST_CASE("partitions: assigning partitions never evicts the ids of the partitions kept from the dedupe "
          "window, however long their replay") {
    TempDir dir("parts_window");
    const std::string db = dir.file("read.db");
    const int window = 100;
    {
        Host first(group_pipeline(db, "", "projection_sink", kEvents / 2, kParts, window));
        run_to_end(first);
    }
    REQUIRE(checkpoints(db).size() == kParts);
    // The second host holds t/0 and reads on from 151; after its first
    // batch (16 events: t/0 up to 166) it is assigned t/1..t/3, whose
    // replay (150 events each, 1.5 x window_size) goes through the deduper
    // before t/0's offset 230 repeats offset 160's id: 70 ids back in t/0,
    // well inside a window of 100, but 450 replayed ids back in one window
    // shared by every partition. t/1..t/3 read on from 151 too, each
    // with the same copy.
    Host second(group_pipeline(db, "assign: '0', plan: '+1,2,3@10', copy_at: 230, copy_of: 160",
                               "projection_sink", kEvents, kParts, window));
    run_to_end(second);
    check_exact(db, kEvents - 2);
    CHECK(second.rt->totals().duplicates == kParts);
    CHECK(second.metric("src.changes") == 2);                        // the first assignment, then t/1..t/3
    CHECK(second.metric("dedupe.restored") == kParts * kEvents / 2); // each partition's 150, once
}

TEST_CASE("partitions: a commit for a partition this host never claimed, or gave up, is fenced and commits "
          "nothing") {
    TempDir dir("parts_fence");
    const std::string db = dir.file("read.db");
    Sink s(db);
    CHECK(s.change({"t/0"}, {}).empty()); // nothing committed yet: no position
    {
        cdcflow_batch b(4);
        append(b, deposit("t/0", 1, "acct-0"));
        s.process(b);
    }
    // A batch that touches t/1 (never assigned here) commits nothing of it,
    // nor of t/0 in the same batch.
    {
        cdcflow_batch b(4);
        append(b, deposit("t/0", 2, "acct-0"));
        append(b, deposit("t/1", 1, "acct-1"));
        cdcflow::Error e = fenced_error(s, b);
        CHECK(e.status() == CDCFLOW_ERR_FENCED);
        CHECK(std::string(e.what()).find("partition 't/1' is not claimed by this host") != std::string::npos);
    }
    CHECK(checkpoints(db) == std::map<std::string, int64_t>{{"t/0", 1}});
    CHECK(column(db, "SELECT count(*) FROM accounts") == 1);
    CHECK(column(db, "SELECT version FROM accounts WHERE account_id = 'acct-0'") == 1);
    // Revoked: t/0 is fenced too, and the reports still answer queries.
    CHECK(s.change({}, {"t/0"}, {"t/0", "t/9"}) == std::map<std::string, int64_t>{{"t/0", 1}});
    {
        cdcflow_batch b(4);
        append(b, deposit("t/0", 2, "acct-0"));
        CHECK(fenced_error(s, b).status() == CDCFLOW_ERR_FENCED);
    }
    CHECK(checkpoints(db) == std::map<std::string, int64_t>{{"t/0", 1}});
    CHECK(column(db, "SELECT version FROM accounts WHERE account_id = 'acct-0'") == 1);
    CHECK(column(db, "SELECT released FROM cdcflow_owners WHERE \"partition\" = 't/0'") == 1);
}

TEST_CASE("partitions: a claim waits while another live owner holds the partition, takes it when that owner "
          "lets go, and ends with RETRY on a stop") {
    TempDir dir("parts_wait");
    const std::string db = dir.file("read.db");
    Sink a(db), b(db);
    a.change({"t/0"}, {});
    {
        cdcflow_batch batch(4);
        append(batch, deposit("t/0", 1, "acct-0"));
        append(batch, deposit("t/0", 2, "acct-0"));
        a.process(batch);
    }
    // b asks for t/0 while a (alive, this very process) holds it: b waits.
    std::promise<std::map<std::string, int64_t>> got;
    auto got_f = got.get_future();
    std::thread waiter([&] {
        try {
            got.set_value(b.change({"t/0"}, {}));
        } catch (...) {
            got.set_exception(std::current_exception());
        }
    });
    CHECK(got_f.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
    // a gives it up: b gets it, with the position a committed.
    a.change({}, {"t/0"});
    REQUIRE(got_f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
    waiter.join();
    CHECK(got_f.get() == std::map<std::string, int64_t>{{"t/0", 2}});
    {
        cdcflow_batch batch(4);
        append(batch, deposit("t/0", 3, "acct-0"));
        b.process(batch);
    }
    CHECK(checkpoints(db) == std::map<std::string, int64_t>{{"t/0", 3}});
    CHECK(column(db, "SELECT epoch FROM cdcflow_owners WHERE \"partition\" = 't/0'") == 2);

    // A third instance waits for b's claim; a stop ends the wait with RETRY
    // (the host then returns from poll with nothing changed).
    Sink c(db);
    std::promise<cdcflow_status> stopped;
    auto stopped_f = stopped.get_future();
    std::string why;
    std::thread stopper([&] {
        try {
            c.change({"t/0"}, {});
            stopped.set_value(CDCFLOW_OK);
        } catch (const cdcflow::Error &e) {
            why = e.what();
            stopped.set_value(e.status());
        }
    });
    CHECK(stopped_f.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
    c.h.request_stop();
    REQUIRE(stopped_f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
    stopper.join();
    CHECK(stopped_f.get() == CDCFLOW_ERR_RETRY);
    CHECK(why == "stopping while waiting to claim partition 't/0'");
    // b still owns it and commits on.
    {
        cdcflow_batch batch(4);
        append(batch, deposit("t/0", 4, "acct-0"));
        b.process(batch);
    }
    CHECK(checkpoints(db) == std::map<std::string, int64_t>{{"t/0", 4}});
}

TEST_CASE("partitions: a change reported with events already in the batch is refused; a sink without the "
          "partitions callback cannot follow a group source") {
    TempDir dir("parts_refuse");
    const std::string db = dir.file("read.db");
    Host h(group_pipeline(db, "events_in_change: true"));
    REQUIRE(h.create_status.ok());
    h.start();
    REQUIRE(h.finish());
    CHECK(h.run_status.abi() == CDCFLOW_ERR_INTERNAL);
    CHECK(h.run_status.message() ==
          "stage 'src' (plugin 'group_source'): partitions_changed: partitions_changed called with 1 events "
          "already in the batch: report the change before handing out events");
    CHECK(h.rt->totals().events == 0);

    // A count without its list: refused before any stage reads it.
    Host n(group_pipeline(db, "null_assigned: true"));
    REQUIRE(n.create_status.ok());
    n.start();
    REQUIRE(n.finish());
    CHECK(n.run_status.abi() == CDCFLOW_ERR_INTERNAL);
    CHECK(n.run_status.message() ==
          "stage 'src' (plugin 'group_source'): partitions_changed: partitions_changed: "
          "the assigned list (4 partitions) has a null pointer: nothing was changed");

    Host f(group_pipeline(db, "", "file_sink"));
    REQUIRE_FALSE(f.create_status.ok());
    CHECK(f.create_status.abi() == CDCFLOW_ERR_CONFIG);
    CHECK(
        f.create_status.message().find("stage 'sink' (plugin 'file_sink'): cannot follow stage 'src', whose "
                                       "partitions a consumer group assigns") != std::string::npos);
}

TEST_CASE("partitions: with the checkpoint unfenced (CDCFLOW_UNSAFE_NO_OWNERSHIP, as the benchmarks compare) "
          "a group pipeline still follows its partitions") {
    TempDir dir("parts_unsafe");
    const std::string db = dir.file("read.db");
    // Set before the run's threads exist, removed after they are gone.
    setenv("CDCFLOW_UNSAFE_NO_OWNERSHIP", "1", 1);
    Host h(group_pipeline(db, "plan: '-1@200;+1@400'"));
    REQUIRE(h.create_status.ok());
    h.start();
    const bool done = h.finish();
    unsetenv("CDCFLOW_UNSAFE_NO_OWNERSHIP");
    REQUIRE(done);
    REQUIRE_MESSAGE(h.run_status.ok(), h.run_status.message());
    check_exact(db, kEvents - 1);
    CHECK(h.metric("src.emitted") == kParts * kEvents);
    CHECK(h.metric("src.last_resumed_from") > 1);
    // Nothing claimed: no owners table at all.
    CHECK(column(db, "SELECT count(*) FROM sqlite_master WHERE name = 'cdcflow_owners'") == 0);
}

TEST_CASE("partitions: a stop ends a host's wait for a partition another live host holds, cleanly, with "
          "nothing committed") {
    TempDir dir("parts_stop_wait");
    const std::string db = dir.file("read.db");
    // A holds t/0 and never drains (t/1 is nobody's); B asks for both.
    Host a(group_pipeline(db, "assign: '0'", "projection_sink", 10, 2));
    REQUIRE(a.create_status.ok());
    a.start();
    for (int i = 0; i < 4000 && checkpoints(db)["t/0"] < 10; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(checkpoints(db)["t/0"] == 10);
    Host b(group_pipeline(db, "", "projection_sink", 10, 2));
    REQUIRE(b.create_status.ok());
    b.start();
    // B claimed nothing yet: t/0 comes first and A holds it.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(b.rt->state() == "running");
    CHECK(b.metric("src.changes") == 0);
    b.rt->request_stop();
    REQUIRE(b.finish());
    CHECK(b.run_status.ok());
    CHECK(b.rt->totals().events == 0);
    CHECK(b.metric("src.emitted") == 0);
    CHECK(column(db, "SELECT epoch FROM cdcflow_owners WHERE \"partition\" = 't/0'") == 1);
    CHECK(checkpoints(db).count("t/1") == 0);
    a.rt->request_stop();
    REQUIRE(a.finish());
    CHECK(a.run_status.ok());
}

TEST_CASE("partitions: a partition taken over behind the host's back fences it: the host steps down, claims "
          "its partitions again and every event is still applied once") {
    TempDir dir("parts_fenced");
    const std::string db = dir.file("read.db");
    constexpr int kMany = 20000;
    // Partitions 0..3 of 5: t/4 is nobody's, so the run never drains and
    // the step-down happens whether the takeover meets a commit (FENCED)
    // or only the lease's renewal (ownership lost).
    Host h(group_pipeline(db, "assign: '0,1,2,3'", "projection_sink", kMany, 5));
    REQUIRE(h.create_status.ok());
    h.start();
    for (int i = 0; i < 20000 && checkpoints(db)["t/0"] <= 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    {
        // Another host (its lease never renewed) takes t/0 over.
        sqlite::Db c(db, SQLITE_OPEN_READWRITE);
        c.exec(
            "UPDATE cdcflow_owners SET epoch = epoch + 1, host = 'h2', pid = 42 WHERE \"partition\" = 't/0'");
    }
    // The host steps down, and claims t/0 back once h2's claim went
    // owner_lease_ms without a renewal.
    bool back = false;
    for (int i = 0; i < 6000 && !back; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        auto cp = checkpoints(db);
        back = column(db, "SELECT epoch FROM cdcflow_owners WHERE \"partition\" = 't/0'") == 3 &&
               cp.size() == 4 && cp["t/0"] == kMany && cp["t/1"] == kMany && cp["t/2"] == kMany &&
               cp["t/3"] == kMany;
    }
    h.rt->request_stop();
    REQUIRE(h.finish());
    CHECK(h.run_status.ok());
    REQUIRE(back);
    check_exact(db, kMany - 1, kMany);
    CHECK(h.rt->totals().events == 4 * kMany); // committed once each, across both incarnations
}

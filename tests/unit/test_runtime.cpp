// The runtime with real test plugins (tests/plugins) loaded through Boost.DLL.
#include "metrics_lookup.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace {

struct Run {
    Status create_status;
    Status run_status;
    Totals totals;
    int64_t metric(const std::string &name) const { return cdcflow::test::metric_value(*metrics, name); }
    std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
};

Result<std::unique_ptr<Runtime>> make(const std::string &yaml, PluginRegistry &reg, Metrics &m) {
    auto def = parse_pipeline(yaml, "test.yaml", [](const std::string &) { return std::nullopt; });
    if (!def) return def.status();
    return Runtime::create(std::move(def.value()), reg, m);
}

Run run_drain(const std::string &yaml) {
    Run out;
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    auto rt = make(yaml, reg, *out.metrics);
    out.create_status = rt.status();
    if (!rt) return out;
    RunOptions ro;
    ro.drain = true;
    out.run_status = rt.value()->run(ro);
    out.totals = rt.value()->totals();
    return out;
}

std::string pipeline(const std::string &src_cfg, const std::string &pass_cfg, const std::string &sink_cfg,
                     const std::string &settings = "") {
    return "pipeline: t\n" + settings + "stages:\n  - id: src\n    plugin: gen_source\n    config: {" +
           src_cfg + "}\n  - id: pass\n    plugin: passthrough\n    config: {" + pass_cfg +
           "}\n  - id: sink\n    plugin: file_sink\n    config: {" + sink_cfg + "}\n";
}

std::filesystem::path temp_dir(const char *name) {
    auto d = std::filesystem::temp_directory_path() / ("cdcflow_rt_" + std::string(name));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

} // namespace

TEST_CASE("runtime: --drain counts every event as exactly one of applied, rejected, duplicate") {
    auto r = run_drain(pipeline("count: 10000", "reject_every: 10, duplicate_every: 7", ""));
    REQUIRE(r.create_status.ok());
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 10000);
    CHECK(r.totals.duplicates == 1428); // multiples of 7 (a later duplicate mark overrides a rejection)
    CHECK(r.totals.rejected == 1000 - 142);
    CHECK(r.totals.applied == 10000 - 1428 - 858);
    CHECK(r.metric("sink.counted") == 10000);
    // What the stage did with each event, as it did it: the 142 multiples of
    // 70 it rejected and then marked duplicate count under both.
    CHECK(r.metric("pass.passed") + r.metric("pass.rejected") + r.metric("pass.duplicates") - 142 == 10000);
    CHECK(r.metric("pass.passed") == r.totals.applied);
}

TEST_CASE("runtime: state changes are notified, and the state only moves forward through a drain") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    auto made = make(pipeline("count: 2000", "", "", "settings: {batch_size: 10}\n"), reg, m);
    REQUIRE(made.ok());
    Runtime &rt = *made.value();
    // Nothing changes: the wait parks until its timeout, and says so.
    const uint64_t e0 = rt.change_epoch();
    CHECK(rt.wait_for_change(e0, std::chrono::milliseconds(30)) == e0);
    std::vector<std::string> states;
    std::atomic<bool> done{false};
    std::thread watcher([&] {
        uint64_t seen = rt.change_epoch();
        while (!done.load()) {
            std::string st = rt.state();
            if (states.empty() || states.back() != st) states.push_back(st);
            seen = rt.wait_for_change(seen, std::chrono::milliseconds(1000));
        }
        states.push_back(rt.state());
    });
    RunOptions ro;
    ro.drain = true;
    REQUIRE(rt.run(ro).ok());
    CHECK(rt.change_epoch() > e0); // start, running, stages, the end: each bumped it
    done.store(true);
    rt.notify_change(); // wakes the watcher at once
    watcher.join();
    CHECK(states.back() == "stopped");
    const std::vector<std::string> order = {"starting", "running", "draining", "stopped"};
    size_t at = 0;
    for (const std::string &st : states) {
        auto it = std::find(order.begin(), order.end(), st);
        REQUIRE_MESSAGE(it != order.end(), st);
        const size_t rank = static_cast<size_t>(it - order.begin());
        CHECK_MESSAGE(rank >= at, st); // never back to "starting" at the drain's end
        at = rank;
    }
}

TEST_CASE("runtime: batch sizes 1 and odd sizes move every event") {
    for (const char *bs : {"1", "3", "1000"}) {
        auto r = run_drain(pipeline("count: 2500", "", "",
                                    std::string("settings: {batch_size: ") + bs + ", queue_capacity: 2}\n"));
        REQUIRE(r.run_status.ok());
        CHECK(r.totals.events == 2500);
        CHECK(r.totals.applied == 2500);
    }
}

TEST_CASE("runtime: an exception in a plugin becomes a stage error, never a crash") {
    // A transform's exception (CDCFLOW_ERR_INTERNAL) blames the events: the
    // one that throws on its own is dead-lettered, the rest go on.
    auto r = run_drain(pipeline("count: 5000", "throw_at: 500", ""));
    REQUIRE(r.create_status.ok());
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 5000);
    CHECK(r.totals.rejected == 1);
    CHECK(r.totals.applied == 4999);
    // A failure that is not an event's (I/O) stops the pipeline with the stage's message.
    auto io = run_drain(pipeline("count: 5000", "io_error_at: 500", ""));
    REQUIRE_FALSE(io.run_status.ok());
    CHECK(io.run_status.abi() == CDCFLOW_ERR_IO);
    CHECK(io.run_status.message() == "stage 'pass' (plugin 'passthrough'): injected I/O error at offset 500");
    CHECK(io.totals.events < 5000);
}

TEST_CASE("runtime: a source failure stops the pipeline with the source's message") {
    auto r = run_drain(
        pipeline("count: 5000, fail_at: 100", "", "", "settings: {batch_size: 10, batch_max_events: 10}\n"));
    REQUIRE_FALSE(r.run_status.ok());
    // Batches of 10 (batch_max_events: they do not grow): offsets 1..100 are read, the poll that would read
    // 101 fails.
    CHECK(r.run_status.message() == "stage 'src' (plugin 'gen_source'): injected failure at offset 101");
}

TEST_CASE("runtime: a transient failure is retried and loses nothing") {
    auto r = run_drain(pipeline("count: 3000", "retry_at: 1500", ""));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 3000);
    CHECK(r.metric("pass.errors") == 2);
}

TEST_CASE("runtime: a restart resumes after the sink's checkpoint") {
    auto dir = temp_dir("resume");
    std::string out = (dir / "events.txt").string();
    auto first =
        run_drain(pipeline("count: 100", "", "output: '" + out + "'", "settings: {batch_size: 16}\n"));
    REQUIRE(first.run_status.ok());
    CHECK(first.totals.events == 100);
    auto second =
        run_drain(pipeline("count: 250", "", "output: '" + out + "'", "settings: {batch_size: 16}\n"));
    REQUIRE(second.run_status.ok());
    CHECK(second.totals.events == 150); // 101..250 only
    std::ifstream in(out);
    std::string line;
    int64_t expect = 1;
    while (std::getline(in, line))
        CHECK(std::stoll(line) == expect++);
    CHECK(expect == 251);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: request_stop drains what was read and commits it") {
    auto dir = temp_dir("stop");
    std::string out = (dir / "events.txt").string();
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    auto rt =
        make(pipeline("count: 0", "", "output: '" + out + "', slow_us: 200", "settings: {batch_size: 64}\n"),
             reg, m);
    REQUIRE(rt.ok());
    Status st;
    std::thread t([&] { st = rt.value()->run(RunOptions{}); });
    while (cdcflow::test::metric_value(m, "sink.counted") < 1000)
        std::this_thread::yield();
    rt.value()->request_stop();
    t.join();
    CHECK(st.ok());
    CHECK(rt.value()->state() == "stopped");
    // Everything the source read reached the sink: the sink saw as many
    // events as the source produced, and the checkpoint is the last one.
    CHECK(cdcflow::test::metric_value(m, "sink.counted") == cdcflow::test::metric_value(m, "src.events"));
    std::ifstream cp(out + ".checkpoint");
    int64_t last = 0;
    cp >> last;
    CHECK(last == cdcflow::test::metric_value(m, "src.events"));
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: unknown plugins and schema errors are reported at load, with position") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    auto rt =
        make("pipeline: t\nstages:\n  - id: a\n    plugin: nope\n  - id: b\n    plugin: file_sink\n", reg, m);
    REQUIRE_FALSE(rt.ok());
    CHECK(rt.status().message().rfind("test.yaml:4:13: stage 'a': plugin 'nope' not found", 0) == 0);

    auto bad_cfg = make(pipeline("count: -1", "", ""), reg, m);
    REQUIRE_FALSE(bad_cfg.ok());
    // The declared bound, enforced by the host before create: one line, at the value.
    CHECK(bad_cfg.status().message() ==
          "test.yaml:5:21: config key 'count' for plugin 'gen_source' must be at least 0, got '-1'");
}

TEST_CASE("runtime: committed positions never go backwards, whatever the number of partitions") {
    // 64 partitions in every batch: more than any fixed-size array would hold.
    auto r = run_drain(pipeline("count: 20000, partitions: 64", "", "",
                                "settings: {batch_size: 1000, batch_max_events: 1000}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 20000);
    CHECK(r.metric("src.committed_regressions") == 0);
    // One report per partition per batch (20 batches of 1000 events).
    CHECK(r.metric("src.committed_positions") == 64 * 20);
}

TEST_CASE("runtime: retries stop at the stage's bound and fail with its message") {
    auto t0 = std::chrono::steady_clock::now();
    auto r = run_drain("pipeline: t\nstages:\n  - id: src\n    plugin: gen_source\n    config: {count: 100}\n"
                       "  - id: pass\n    plugin: passthrough\n    config: {retry_forever_at: 50}\n"
                       "    retry: {max_attempts: 4, backoff_ms: 10, max_backoff_ms: 20}\n"
                       "    breaker: {failures: 0}\n"
                       "  - id: sink\n    plugin: file_sink\n");
    REQUIRE(r.create_status.ok());
    REQUIRE_FALSE(r.run_status.ok());
    CHECK(r.run_status.abi() == CDCFLOW_ERR_RETRY);
    CHECK(r.run_status.message() ==
          "stage 'pass' (plugin 'passthrough'): injected transient failure that never "
          "ends (gave up after 4 attempts; see the stage's retry.max_attempts)");
    CHECK(r.metric("pass.errors") == 4);
    // Waited 10 + 20 + 20 ms between the four tries, not the default 50 ms..5 s.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    CHECK(r.totals.events == 0);
}

TEST_CASE("runtime: a stop request ends the retrying at once, cleanly") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    // The default policy would go on for minutes.
    auto rt = make(pipeline("count: 100", "retry_forever_at: 50", ""), reg, m);
    REQUIRE(rt.ok());
    Status st;
    std::thread t([&] { st = rt.value()->run(RunOptions{true}); });
    while (cdcflow::test::metric_value(m, "pass.errors") < 2)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    rt.value()->request_stop();
    t.join();
    // Not a failure: what the stage held is replayed on the next start.
    CHECK(st.ok());
    CHECK(rt.value()->state() == "stopped");
    CHECK(cdcflow::test::metric_value(m, "sink.counted") == 0);
}

TEST_CASE("runtime: an unknown retry key or an inverted backoff range is a load error with position") {
    auto bad = [](const std::string &retry) {
        auto def =
            parse_pipeline("pipeline: t\nstages:\n  - id: src\n    plugin: gen_source\n    retry: " + retry +
                               "\n  - id: sink\n    plugin: file_sink\n",
                           "test.yaml", [](const std::string &) { return std::nullopt; });
        return def ? std::string() : def.status().message();
    };
    CHECK(bad("{max_attempts: 0}") ==
          "test.yaml:5:27: retry.max_attempts must be an integer from 1 to 1000000, got '0'");
    CHECK(bad("{attempts: 3}") == "test.yaml:5:13: unknown key 'attempts' in 'retry' of stage 'src' (known: "
                                  "max_attempts, backoff_ms, max_backoff_ms, jitter)");
    CHECK(bad("{backoff_ms: 100, max_backoff_ms: 10}") ==
          "test.yaml:5:46: retry.max_backoff_ms must be at least retry.backoff_ms (100)");
    CHECK(bad("[1]") == "test.yaml:5:5: 'retry' of stage 'src' must be a mapping, got a sequence");
}

TEST_CASE("runtime: a start() that finds its store busy is retried like a batch, not fatal") {
    auto r = run_drain(pipeline("count: 500", "", "busy_starts: 3"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 500);
    CHECK(r.metric("sink.errors") == 3);
    // Past the bound it fails, with the stage's own code and message.
    auto bounded = run_drain("pipeline: t\nstages:\n  - id: src\n    plugin: gen_source\n"
                             "  - id: sink\n    plugin: file_sink\n    config: {busy_starts: 10}\n"
                             "    retry: {max_attempts: 2, backoff_ms: 1}\n    breaker: {failures: 0}\n");
    REQUIRE_FALSE(bounded.run_status.ok());
    CHECK(bounded.run_status.abi() == CDCFLOW_ERR_RETRY);
    CHECK(bounded.run_status.message() ==
          "stage 'sink' (plugin 'file_sink'): start failed: database is locked "
          "(injected) (gave up after 2 attempts; see the stage's retry.max_attempts)");
}

TEST_CASE("runtime: plugins built against ABI 1 keep loading and working") {
    // C plugins compiled against the frozen ABI 1 header: a source that reads
    // NOMEM from batch_append as "full", a sink with a short callback table.
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR, CDCFLOW_ABI_V1_PLUGIN_DIR});
    auto source = reg.find("v1_source");
    REQUIRE(source.ok());
    CHECK(source.value()->desc->abi_version == 1);
    CHECK(source.value()->desc->callbacks->struct_size < sizeof(cdcflow_callbacks));
    Metrics m;
    auto rt = make("pipeline: t\nsettings: {batch_size: 64, batch_max_events: 64}\nstages:\n  - id: src\n    "
                   "plugin: v1_source\n"
                   "    config: {count: 5000}\n  - id: pass\n    plugin: passthrough\n  - id: sink\n"
                   "    plugin: v1_sink\n",
                   reg, m);
    REQUIRE(rt.ok());
    Status st = rt.value()->run(RunOptions{true});
    REQUIRE(st.ok());
    CHECK(rt.value()->totals().events == 5000);
    CHECK(cdcflow::test::metric_value(m, "sink.seen") == 5000);
    CHECK(cdcflow::test::metric_value(m, "src.batches") == (5000 + 63) / 64);
    CHECK(rt.value()->role() == ""); // finished: no longer the owner
}

TEST_CASE("runtime: an idle source still learns that its last batches were committed") {
    // Retention and the lag gauge depend on it: the source must not wait for
    // new traffic before it hears about the batches it sent last.
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    auto rt =
        make(pipeline("count: 0, idle_after: 1000", "", "", "settings: {batch_size: 64, poll_wait_ms: 20}\n"),
             reg, m);
    REQUIRE(rt.ok());
    Status st;
    std::thread t([&] { st = rt.value()->run(RunOptions{}); });
    auto t0 = std::chrono::steady_clock::now();
    while (cdcflow::test::metric_value(m, "src.last_committed") < 1000 &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(cdcflow::test::metric_value(m, "src.last_committed") == 1000);
    rt.value()->request_stop();
    t.join();
    CHECK(st.ok());
}

TEST_CASE(
    "runtime: a dropped event is counted per stage and in the totals, and the checkpoint moves past it") {
    auto dir = temp_dir("drop");
    std::string out = (dir / "events.txt").string();
    // Offset 100, the run's last event, is dropped: the checkpoint must still reach it.
    auto r = run_drain(pipeline("count: 100", "drop_every: 10, reject_every: 20, duplicate_every: 30",
                                "output: '" + out + "'", "settings: {batch_size: 16}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 100);
    // Multiples of 30 are duplicates (a duplicate mark stands over the rest);
    // of the other multiples of 10, those of 20 were rejected before the drop.
    CHECK(r.totals.duplicates == 3);       // 30 60 90
    CHECK(r.totals.rejected == 5 - 1);     // 20 40 80 100, not 60
    CHECK(r.totals.dropped == 10 - 3 - 4); // 10 50 70
    CHECK(r.totals.applied == 100 - 3 - 4 - 3);
    CHECK(r.metric("pass.dropped") == 3);
    CHECK(r.totals.dropped == 3);
    std::ifstream cp(out + ".checkpoint");
    int64_t last = 0;
    cp >> last;
    CHECK(last == 100);
    // An ABI 3 sink sees the drops as DROPPED (file_sink writes the status).
    std::ifstream lines(out);
    std::string line;
    int dropped_lines = 0;
    while (std::getline(lines, line))
        if (line.rfind("10 3 ", 0) == 0 || line.rfind("50 3 ", 0) == 0 || line.rfind("70 3 ", 0) == 0)
            ++dropped_lines;
    CHECK(dropped_lines == 3);
    auto second = run_drain(
        pipeline("count: 150", "drop_every: 10", "output: '" + out + "'", "settings: {batch_size: 16}\n"));
    REQUIRE(second.run_status.ok());
    CHECK(second.totals.events == 50); // 101..150: nothing before the dropped 100 again
    CHECK(second.totals.dropped == 5);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: stages built against ABI 1 never see DROPPED; later ABI 3 stages see it again") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR, CDCFLOW_ABI_V1_PLUGIN_DIR});
    auto dir = temp_dir("drop_v1");
    std::string out = (dir / "events.txt").string();
    SUBCASE("an ABI 1 sink behind a dropping transform") {
        Metrics m;
        auto rt =
            make("pipeline: t\nsettings: {batch_size: 64}\nstages:\n  - id: src\n    plugin: v1_source\n"
                 "    config: {count: 1000}\n  - id: pass\n    plugin: passthrough\n"
                 "    config: {drop_every: 4}\n  - id: sink\n    plugin: v1_sink\n",
                 reg, m);
        REQUIRE(rt.ok());
        REQUIRE(rt.value()->run(RunOptions{true}).ok());
        CHECK(cdcflow::test::metric_value(m, "sink.seen") == 1000);
        CHECK(cdcflow::test::metric_value(m, "sink.unknown_status") == 0);
        CHECK(cdcflow::test::metric_value(m, "sink.skipped") == 250); // shown as DUPLICATE: skipped
        // ...and still counted as dropped, not as duplicates.
        CHECK(rt.value()->totals().dropped == 250);
        CHECK(rt.value()->totals().duplicates == 0);
        CHECK(rt.value()->totals().applied == 750);
    }
    SUBCASE("an ABI 1 transform between a dropping transform and an ABI 3 sink") {
        Metrics m;
        auto rt =
            make("pipeline: t\nsettings: {batch_size: 64}\nstages:\n  - id: src\n    plugin: gen_source\n"
                 "    config: {count: 1000}\n  - id: pass\n    plugin: passthrough\n"
                 "    config: {drop_every: 4}\n  - id: old\n    plugin: v1_pass\n"
                 "  - id: sink\n    plugin: file_sink\n    config: {output: '" +
                     out + "'}\n",
                 reg, m);
        REQUIRE(rt.ok());
        REQUIRE(rt.value()->run(RunOptions{true}).ok());
        CHECK(cdcflow::test::metric_value(m, "old.unknown_status") == 0);
        CHECK(cdcflow::test::metric_value(m, "old.skipped") == 250);
        CHECK(rt.value()->totals().dropped == 250);
        std::ifstream lines(out);
        std::string line;
        int dropped = 0, total = 0;
        while (std::getline(lines, line)) {
            ++total;
            auto sp = line.find(' ');
            if (line.compare(sp + 1, 2, "3 ") == 0) ++dropped;
        }
        CHECK(total == 1000);
        CHECK(dropped == 250); // the ABI 3 sink after the ABI 1 stage sees DROPPED again
    }
    std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------
// State that moves with the stream: history / restore / replay (ABI 3).

namespace {

// Captures what the host logs (stderr) while it lives.
class CapturedLog {
public:
    explicit CapturedLog(const std::filesystem::path &file) : file_(file) {
        std::fflush(stderr);
        saved_ = dup(2);
        int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        close(fd);
    }
    ~CapturedLog() { restore(); }
    std::string text() {
        restore();
        std::ifstream in(file_);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

private:
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stderr);
        dup2(saved_, 2);
        close(saved_);
        saved_ = -1;
    }
    std::filesystem::path file_;
    int saved_ = -1;
};

// A file_sink whose checkpoint already stands at `offset`: the events up to
// it count as delivered and committed before this start.
std::string sink_at(const std::filesystem::path &dir, int64_t offset) {
    std::string out = (dir / "events.txt").string();
    std::ofstream(out + ".checkpoint") << offset << "\n";
    return "output: '" + out + "'";
}

} // namespace

TEST_CASE("runtime: a transform's history is replayed before start, oldest first, in pool-sized batches, "
          "up to the checkpoint") {
    auto dir = temp_dir("replay_order");
    auto r = run_drain(
        pipeline("count: 1000", "history: 300", sink_at(dir, 1000), "settings: {batch_size: 64}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.metric("src.replay_max_events") == 300);
    CHECK(r.metric("pipeline.replayed") == 300);
    CHECK(r.metric("pass.restored") == 300);
    CHECK(r.metric("pass.restore_first") == 701);
    CHECK(r.metric("pass.restore_last") == 1000); // the checkpoint, inclusive
    CHECK(r.metric("pass.restore_disorder") == 0);
    CHECK(r.metric("pass.restore_late") == 0); // before seek and start
    CHECK(r.metric("pass.seeks") == 1);        // a transform's seek (ABI 1's way) is still called
    CHECK(r.metric("pass.restore_calls") == (300 + 63) / 64); // full batches of the pool's size
    CHECK(r.metric("pass.restore_max_batch") == 64);
    CHECK(r.metric("src.seeks") == 1); // then the source seeks as before
    CHECK(r.totals.events == 0);       // nothing replayed went downstream
    CHECK(r.metric("pass.events") == 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a source that replays in small pieces is called until done, each piece restored") {
    auto dir = temp_dir("replay_pieces");
    auto r = run_drain(pipeline("count: 1200, replay_piece: 7", "history: 100", sink_at(dir, 1000),
                                "settings: {batch_size: 64}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.metric("pass.restored") == 100);
    CHECK(r.metric("pass.restore_first") == 901);
    CHECK(r.metric("pass.restore_last") == 1000);
    CHECK(r.metric("pass.restore_calls") == (100 + 6) / 7);
    CHECK(r.metric("pass.restore_disorder") == 0);
    CHECK(r.totals.events == 200); // then 1001..1200 flow as usual
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: restore never sees an event past the checkpoint; a source that hands one out fails the "
          "start") {
    auto dir = temp_dir("replay_past");
    auto r = run_drain(pipeline("count: 1000, replay_past: 3", "history: 50", sink_at(dir, 900),
                                "settings: {batch_size: 64}\n"));
    REQUIRE_FALSE(r.run_status.ok());
    CHECK(r.run_status.abi() == CDCFLOW_ERR_INTERNAL);
    CHECK(r.run_status.message() ==
          "stage 'src' (plugin 'gen_source'): replay handed out offset 901, which is "
          "past the checkpoint: refusing to rebuild state from events that were not "
          "committed");
    CHECK(r.metric("pass.restored") == 0); // 851..903 came in one batch: none of it was restored
    CHECK(r.totals.events == 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: drop, reject and duplicate on one event: the first verdict stands, a duplicate mark "
          "overrides; a sink may drop too; each event is counted once") {
    auto dir = temp_dir("drop_orders");
    std::string out = (dir / "events.txt").string();
    // Drop first, then reject and duplicate marks; the sink drops what is still OK at multiples of 7.
    auto r =
        run_drain("pipeline: t\nstages:\n  - id: src\n    plugin: gen_source\n    config: {count: 30}\n"
                  "  - id: drop\n    plugin: passthrough\n    config: {drop_every: 2}\n"
                  "  - id: mark\n    plugin: passthrough\n    config: {reject_every: 5, duplicate_every: 3}\n"
                  "  - id: sink\n    plugin: file_sink\n    config: {output: '" +
                  out + "', drop_every: 7}\n");
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 30);
    CHECK(r.totals.duplicates == 10); // 3, 6, ..., 30: over a drop (6, 12, ...) and a rejection (15)
    CHECK(r.totals.rejected == 2);    // 5, 25: 10, 20 were dropped before, and a rejection never overrides
    CHECK(r.totals.dropped ==
          11);                    // 2, 4, 8, ... by "drop" (not 6, 12, 18, 24, 30: duplicates), 7 by the sink
    CHECK(r.totals.applied == 7); // 1, 11, 13, 17, 19, 23, 29
    CHECK(r.totals.applied + r.totals.rejected + r.totals.duplicates + r.totals.dropped == 30);
    // What each stage did, as it did it: a later mark may change the outcome.
    CHECK(r.metric("drop.dropped") == 15);
    CHECK(r.metric("mark.rejected") == 3); // 5, 15, 25
    CHECK(r.metric("mark.duplicates") == 10);
    CHECK(r.metric("sink.dropped") == 1);
    CHECK(r.totals.dropped == 11);
    std::ifstream in(out);
    std::string line;
    int lines = 0;
    while (std::getline(in, line)) {
        ++lines;
        CHECK(line.rfind("7 ", 0) != 0); // what the sink dropped it did not write
    }
    CHECK(lines == 29);
    std::ifstream cp(out + ".checkpoint");
    int64_t at = 0;
    cp >> at;
    CHECK(at == 30);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a replay that never finishes fails the start instead of looping until stopped") {
    auto dir = temp_dir("replay_stall");
    // Empty batches, never done.
    auto empty = run_drain(pipeline("count: 1000, replay_stall: 1", "history: 50", sink_at(dir, 900)));
    REQUIRE_FALSE(empty.run_status.ok());
    CHECK(empty.run_status.abi() == CDCFLOW_ERR_INTERNAL);
    CHECK(empty.run_status.message() == "stage 'src' (plugin 'gen_source'): replay made no progress: 1000 "
                                        "calls in a row handed out no event and did not finish");
    CHECK(empty.metric("src.replay_calls") == 1000);
    CHECK(empty.totals.events == 0);
    // The same events again and again, never done.
    auto again = run_drain(
        pipeline("count: 1000, replay_stall: 2, replay_piece: 20", "history: 50", sink_at(dir, 900)));
    REQUIRE_FALSE(again.run_status.ok());
    CHECK(again.run_status.message() ==
          "stage 'src' (plugin 'gen_source'): replay handed out more than the 50 "
          "events per partition asked for without finishing");
    CHECK(again.metric("pass.restored") == 40); // two pieces fit in what was asked for; the third does not
    CHECK(again.totals.events == 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: no replay when no transform asks for history, nor before a first start") {
    auto dir = temp_dir("replay_none");
    auto none = run_drain(pipeline("count: 500", "", sink_at(dir, 400)));
    REQUIRE(none.run_status.ok());
    CHECK(none.metric("src.replay_calls") == 0);
    CHECK(none.metric("pass.restore_calls") == 0);
    CHECK(none.totals.events == 100);
    std::filesystem::remove_all(dir);

    // No checkpoint: one call that tells the source how much history the
    // pipeline keeps, and nothing to restore.
    auto first = run_drain(pipeline("count: 500", "history: 100", ""));
    REQUIRE(first.run_status.ok());
    CHECK(first.metric("src.replay_calls") == 1);
    CHECK(first.metric("src.replay_max_events") == 100);
    CHECK(first.metric("pass.restore_calls") == 0);
    CHECK(first.totals.events == 500);
}

TEST_CASE("runtime: a source without replay: the stateful transform starts empty, with one warning") {
    auto dir = temp_dir("replay_missing");
    std::string yaml =
        "pipeline: t\nstages:\n  - id: src\n    plugin: gen_source_noreplay\n    config: {count: 500}\n"
        "  - id: pass\n    plugin: passthrough\n    config: {history: 100}\n"
        "  - id: sink\n    plugin: file_sink\n    config: {" +
        sink_at(dir, 400) + "}\n";
    CapturedLog log(dir / "log.txt");
    auto r = run_drain(yaml);
    std::string text = log.text();
    REQUIRE(r.run_status.ok());
    CHECK(r.metric("pass.restore_calls") == 0);
    CHECK(r.totals.events == 100);
    CHECK(
        text.find("stage 'src' (plugin 'gen_source_noreplay') cannot replay events (no replay callback), so "
                  "stage 'pass' starts with no state from before the checkpoint (stage 'pass' (plugin "
                  "'passthrough') asked for the last 100 events (its history))") != std::string::npos);
    size_t first = text.find("cannot replay events");
    CHECK(text.find("cannot replay events", first + 1) == std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a replay cut short by the source's retention is a warning naming both settings") {
    auto dir = temp_dir("replay_truncated");
    CapturedLog log(dir / "log.txt");
    auto r = run_drain(pipeline("count: 1000, replay_first: 950", "history: 200", sink_at(dir, 1000)));
    std::string text = log.text();
    REQUIRE(r.run_status.ok());
    CHECK(r.metric("pass.restored") == 51); // 950..1000: what still exists
    CHECK(r.metric("pass.restore_first") == 950);
    CHECK(text.find(
              "stage 'pass' (plugin 'passthrough') asked for the last 200 events (its history) to rebuild "
              "its state, but stage 'src' (plugin 'gen_source') could replay only 51: older events are "
              "gone (its replay_first)") != std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a failing restore fails the start with the transform's message") {
    auto dir = temp_dir("restore_fails");
    auto r = run_drain(pipeline("count: 1000", "history: 10, fail_restore: true", sink_at(dir, 500)));
    REQUIRE_FALSE(r.run_status.ok());
    CHECK(r.run_status.abi() == CDCFLOW_ERR_IO);
    CHECK(r.run_status.message() ==
          "stage 'pass' (plugin 'passthrough'): restore failed: injected restore failure");
    CHECK(r.totals.events == 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: marks made in restore are ignored and not counted") {
    auto dir = temp_dir("restore_marks");
    auto r = run_drain(pipeline("count: 1000", "history: 10, mark_in_restore: true", sink_at(dir, 900)));
    REQUIRE(r.run_status.ok());
    CHECK(r.metric("pass.restored") == 10);
    CHECK(r.metric("pass.rejected") == 0);
    CHECK(r.metric("pass.duplicates") == 0);
    CHECK(r.metric("pass.dropped") == 0);
    CHECK(r.totals.events == 100);
    CHECK(r.totals.applied == 100);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a source whose replay throws fails the start with its message") {
    auto dir = temp_dir("replay_throws");
    // gen_source throws from replay when it spreads events over partitions.
    auto r = run_drain(pipeline("count: 1000, partitions: 2", "history: 10", sink_at(dir, 500)));
    REQUIRE_FALSE(r.run_status.ok());
    CHECK(r.run_status.abi() == CDCFLOW_ERR_INTERNAL);
    CHECK(r.run_status.message() ==
          "stage 'src' (plugin 'gen_source'): replay failed: gen_source replays one partition only");
    CHECK(r.metric("pass.restored") == 0);
    CHECK(r.totals.events == 0);
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: a stop requested during the replay ends it promptly and starts nothing") {
    auto dir = temp_dir("replay_stop");
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    // 100,000 events of history in pieces of 10, 20 ms each: over three minutes.
    auto rt = make(pipeline("count: 100000, replay_piece: 10, replay_sleep_ms: 20", "history: 100000",
                            sink_at(dir, 100000)),
                   reg, m);
    REQUIRE(rt.ok());
    Status st;
    std::thread t([&] { st = rt.value()->run(RunOptions{}); });
    while (cdcflow::test::metric_value(m, "pass.restored") < 50)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto t0 = std::chrono::steady_clock::now();
    rt.value()->request_stop();
    t.join();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    CHECK(st.ok());
    CHECK(cdcflow::test::metric_value(m, "pass.restored") < 100000);
    CHECK(cdcflow::test::metric_value(m, "src.seeks") == 0); // never started
    CHECK(rt.value()->state() == "stopped");
    std::filesystem::remove_all(dir);
}

TEST_CASE("runtime: under backlog batches grow to batch_max_events, never beyond, and lose nothing") {
    auto r = run_drain(pipeline("count: 200000", "", "",
                                "settings: {batch_size: 100, batch_max_events: 5000, batch_max_ms: 0}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 200000);
    CHECK(r.metric("sink.counted") == 200000);
    CHECK(r.metric("sink.max_batch") == 5000);
    // Fixed batches of 100 would be 2,000; growing ones are ~40 of 5,000.
    CHECK(r.totals.batches < 100);
}

TEST_CASE("runtime: once the source is caught up, batches are small again") {
    // A backlog of 50,000 events, then the source hands out 10 events per
    // poll (what a caught-up outbox source sees at a steady rate).
    auto r = run_drain(pipeline("count: 52000, trickle_after: 50000, trickle: 10", "", "",
                                "settings: {batch_size: 100, batch_max_events: 5000, batch_max_ms: 0}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 52000);
    CHECK(r.metric("src.max_capacity") == 5000); // the backlog grew the batches
    CHECK(r.metric("src.last_capacity") == 100); // caught up: batch_size again
    CHECK(r.metric("sink.max_batch") == 5000);
}

TEST_CASE("runtime: batch_max_bytes bounds a batch however many events it may take") {
    // gen_source's events carry at least 24 bytes of strings ("Test",
    // "Generated", the id twice, the payload).
    auto r = run_drain(pipeline("count: 20000", "", "",
                                "settings: {batch_size: 10000, batch_max_bytes: 2048, batch_max_ms: 0}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 20000);
    CHECK(r.metric("sink.max_batch") > 1);
    CHECK(r.metric("sink.max_batch") <= 2048 / 24);
}

TEST_CASE("runtime: the adaptive batching settings are checked at load, with position") {
    auto bad = parse_pipeline("pipeline: t\nsettings: {batch_max_bytes: 10}\nstages: []\n", "t.yaml",
                              [](const std::string &) { return std::nullopt; });
    REQUIRE_FALSE(bad);
    CHECK(bad.status().message().find("t.yaml:2:") == 0);
    CHECK(bad.status().message().find("batch_max_bytes") != std::string::npos);
}

namespace {

// A run whose Runtime the test can prepare (a fake resident-memory reader)
// and inspect afterwards (memory(), queues()).
struct MemRun {
    Status run_status;
    Totals totals;
    MemoryReport memory;
    std::vector<QueueReport> queues;
    std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
    int64_t metric(const std::string &name) const { return cdcflow::test::metric_value(*metrics, name); }
};

MemRun run_mem(const std::string &yaml, std::function<uint64_t()> rss = nullptr,
               std::chrono::milliseconds every = std::chrono::milliseconds(0)) {
    MemRun out;
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    auto rt = make(yaml, reg, *out.metrics);
    REQUIRE(rt.status().ok());
    if (rss) rt.value()->set_resident_reader(std::move(rss), every);
    RunOptions ro;
    ro.drain = true;
    out.run_status = rt.value()->run(ro);
    out.totals = rt.value()->totals();
    out.memory = rt.value()->memory();
    out.queues = rt.value()->queues();
    return out;
}

} // namespace

TEST_CASE("runtime: the event bytes in flight never pass queue_max_bytes, and every event still arrives") {
    // ~10 kB events, at most 32 KiB a batch: without the byte bound the
    // queues (8 batches each) and stages hold ~19 batches, ~600 kB, behind
    // a slow sink.
    const std::string src = "count: 400, payload_bytes: 10000";
    const std::string sink = "slow_us: 2000";
    const std::string common = "batch_size: 4, batch_max_events: 64, batch_max_bytes: 32KiB, batch_max_ms: 0";
    auto bounded = run_mem(pipeline(src, "", sink, "settings: {" + common + ", queue_max_bytes: 64KiB}\n"));
    REQUIRE(bounded.run_status.ok());
    CHECK(bounded.totals.events == 400);
    CHECK(bounded.metric("sink.counted") == 400);
    CHECK(bounded.memory.queue_max_bytes == 65536);
    CHECK(bounded.memory.in_flight_bytes_peak > 32768); // more than one batch went at once
    CHECK(bounded.memory.in_flight_bytes_peak <= 65536);
    CHECK(bounded.memory.in_flight_bytes == 0); // everything came back
    // The control: the same run with the default bound (64 MiB) holds far
    // more, so the bound above is what kept it small.
    auto loose = run_mem(pipeline(src, "", sink, "settings: {" + common + "}\n"));
    REQUIRE(loose.run_status.ok());
    CHECK(loose.totals.events == 400);
    CHECK(loose.memory.in_flight_bytes_peak > 3 * 65536);
}

TEST_CASE("runtime: an event larger than the byte bounds still goes, one batch at a time") {
    auto r = run_mem(pipeline("count: 30, payload_bytes: 100000", "", "",
                              "settings: {batch_max_bytes: 32KiB, queue_max_bytes: 64KiB}\n"));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 30);
    CHECK(r.metric("sink.max_batch") == 1);
    // One event of ~100 kB in flight at a time: the bound plus one batch.
    CHECK(r.memory.in_flight_bytes_peak > 100000);
    CHECK(r.memory.in_flight_bytes_peak < 65536 + 110000);
}

TEST_CASE("runtime: queues() names each queue by its stages, with its capacity; empty once drained") {
    auto r = run_mem(pipeline("count: 1000", "", "", "settings: {queue_capacity: 3}\n"));
    REQUIRE(r.run_status.ok());
    REQUIRE(r.queues.size() == 2);
    CHECK(r.queues[0].name == "src->pass");
    CHECK(r.queues[1].name == "pass->sink");
    for (const QueueReport &q : r.queues) {
        CHECK(q.capacity == 3);
        CHECK(q.depth == 0);
        CHECK(q.bytes == 0);
    }
}

TEST_CASE("runtime: queues() counts the batches and bytes a queue holds while a stage downstream is slow") {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    Metrics m;
    // The sink takes 50 ms a batch: the queue before it fills with what the
    // events bound lets in flight (3 stages x 10 events: 3 batches, one of
    // them in the sink's hands).
    auto rt = make(pipeline("count: 0, payload_bytes: 1000", "", "slow_us: 50000",
                            "settings: {batch_size: 10, batch_max_events: 10, queue_capacity: 4}\n"),
                   reg, m);
    REQUIRE(rt.status().ok());
    Runtime &r = *rt.value();
    std::thread runner([&] { (void)r.run(RunOptions{}); });
    std::vector<QueueReport> q;
    for (int i = 0; i < 500; ++i) { // up to 5 s; it fills within the first batches
        q = r.queues();
        if (q.size() == 2 && q[1].depth == 2) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const MemoryReport mem = r.memory();
    r.request_stop();
    runner.join();
    REQUIRE(q.size() == 2);
    CHECK(q[1].name == "pass->sink");
    CHECK(q[1].depth == 2);
    CHECK(q[1].capacity == 4);
    // Two batches of ten events of at least 1,000 payload bytes each.
    CHECK(q[1].bytes >= 2 * 10 * 1000);
    CHECK(q[1].bytes <= mem.in_flight_bytes);
    CHECK(q[0].depth == 0); // the transform keeps up
}

TEST_CASE("runtime: past 90% of the soft memory limit the source reads batch_size events at a time, one "
          "batch in flight") {
    // The resident memory stays above the mark for the whole run.
    const uint64_t limit = uint64_t{1000} << 20;
    auto r = run_mem(pipeline("count: 3000", "", "",
                              "settings: {batch_size: 100, batch_max_events: 5000, batch_max_ms: 0, "
                              "memory_soft_limit_bytes: 1000MiB}\n"),
                     [&] { return limit - limit / 20; }); // 95%
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 3000);             // slowed, never stalled: nothing lost
    CHECK(r.metric("src.max_capacity") == 100); // never grown (it grows to 5000 unthrottled)
    CHECK(r.metric("sink.max_batch") == 100);
    CHECK(r.memory.throttled);
    CHECK(r.memory.throttle_episodes == 1);
    CHECK(r.memory.soft_limit_bytes == limit);
    CHECK(r.memory.resident_bytes == limit - limit / 20);
    // One batch at a time: 100 events of at most ~40 bytes of strings each.
    CHECK(r.memory.in_flight_bytes_peak <= 100 * 40);
}

TEST_CASE("runtime: the soft limit's throttle ends when the resident memory falls below the mark, and "
          "batches grow again") {
    const uint64_t limit = uint64_t{1000} << 20;
    std::atomic<int> reads{0};
    // Above the mark for the first 20 reads (20 polls: 2,000 events), then
    // well below it.
    auto rss = [&]() -> uint64_t { return reads.fetch_add(1) < 20 ? limit - limit / 20 : limit / 2; };
    auto r = run_mem(pipeline("count: 200000", "", "",
                              "settings: {batch_size: 100, batch_max_events: 5000, batch_max_ms: 0, "
                              "memory_soft_limit_bytes: 1048576000}\n"),
                     rss);
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 200000);
    CHECK(reads.load() > 20);
    CHECK_FALSE(r.memory.throttled);
    CHECK(r.memory.throttle_episodes == 1);
    CHECK(r.metric("src.max_capacity") == 5000); // resumed at full speed
}

TEST_CASE("runtime: the resident memory is read at most once per interval, not per batch") {
    std::atomic<int> reads{0};
    auto r = run_mem(
        pipeline("count: 20000", "", "",
                 "settings: {batch_size: 10, batch_max_events: 10, memory_soft_limit_bytes: 1GiB}\n"),
        [&]() -> uint64_t {
            reads.fetch_add(1);
            return 1;
        },
        std::chrono::hours(1));
    REQUIRE(r.run_status.ok());
    CHECK(r.totals.events == 20000); // 2,000 polls
    CHECK(reads.load() == 1);
    CHECK(r.memory.resident_bytes == 1);
}

TEST_CASE("runtime: no soft limit, no reading of the resident memory") {
    std::atomic<int> reads{0};
    auto r = run_mem(pipeline("count: 1000", "", ""), [&] {
        reads.fetch_add(1);
        return UINT64_MAX;
    });
    REQUIRE(r.run_status.ok());
    CHECK(reads.load() == 0);
    CHECK_FALSE(r.memory.throttled);
    CHECK(r.memory.soft_limit_bytes == 0);
}

TEST_CASE("runtime: byte settings take a unit; queue_max_bytes below batch_max_bytes is a load error with "
          "position") {
    auto env = [](const std::string &) { return std::nullopt; };
    auto good = parse_pipeline("pipeline: t\nsettings:\n  batch_max_bytes: 1MiB\n  queue_max_bytes: 16 MiB\n "
                               " memory_soft_limit_bytes: "
                               "2GiB\nstages:\n  - {id: a, plugin: p}\n",
                               "t.yaml", env);
    REQUIRE(good);
    CHECK(good.value().settings.batch_max_bytes == 1u << 20);
    CHECK(good.value().settings.queue_max_bytes == 16u << 20);
    CHECK(good.value().settings.memory_soft_limit_bytes == uint64_t{2} << 30);
    CHECK(good.value().settings.memory_soft_limit_bytes != 0);

    auto small = parse_pipeline("pipeline: t\nsettings:\n  batch_max_bytes: 1MiB\n  queue_max_bytes: "
                                "65536\nstages:\n  - {id: a, plugin: p}\n",
                                "t.yaml", env);
    REQUIRE_FALSE(small);
    CHECK(
        small.status().message() ==
        "t.yaml:4:20: settings.queue_max_bytes (65536) must be at least settings.batch_max_bytes (1048576): "
        "the event bytes in flight must hold at least one full batch");
    // Only batch_max_bytes set, past the default queue bound: named at batch_max_bytes.
    auto big = parse_pipeline(
        "pipeline: t\nsettings: {batch_max_bytes: 128MiB}\nstages:\n  - {id: a, plugin: p}\n", "t.yaml", env);
    REQUIRE_FALSE(big);
    CHECK(big.status().message().find("t.yaml:2:29: settings.queue_max_bytes (67108864, the default) must be "
                                      "at least settings.batch_max_bytes (134217728)") == 0);
    auto unit = parse_pipeline(
        "pipeline: t\nsettings: {queue_max_bytes: 64MB}\nstages:\n  - {id: a, plugin: p}\n", "t.yaml", env);
    REQUIRE_FALSE(unit);
    CHECK(unit.status().message() ==
          "t.yaml:2:29: settings.queue_max_bytes must be a number of bytes from 1024 "
          "to 1099511627776 (e.g. 67108864 or 64MiB), got '64MB'");
}

TEST_CASE(
    "runtime: scraped while it drains (metrics, health, queues, memory from another thread), the counts "
    "at the end equal the totals") {
    // The HTTP endpoints call these from their I/O thread while the stages
    // run: under the thread sanitizer this is the data-race check of every
    // collector and report; here, that nothing is lost or counted twice.
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    auto metrics = std::make_shared<Metrics>();
    auto rt = make(pipeline("count: 20000", "reject_every: 10, throw_at: 777", "",
                            "settings: {batch_size: 7, queue_capacity: 2}\n"),
                   reg, *metrics);
    REQUIRE(rt.status().ok());
    Runtime &r = *rt.value();
    std::atomic<bool> done{false};
    std::atomic<int> scrapes{0};
    std::thread scraper([&] {
        while (!done.load()) {
            const std::string page = metrics->prometheus();
            const HealthReport h = r.health();
            (void)r.queues();
            (void)r.memory();
            if (page.find("cdcflow_events_total") != std::string::npos && !h.pipeline.empty()) ++scrapes;
        }
    });
    RunOptions ro;
    ro.drain = true;
    const Status st = r.run(ro);
    // Scrapes after the end must also be safe, and must agree with the totals.
    const std::string last = metrics->prometheus();
    done = true;
    scraper.join();
    REQUIRE(st.ok());
    CHECK(scrapes.load() > 0);
    const Totals t = r.totals();
    CHECK(t.events == 20000);
    CHECK(t.rejected == 2001); // every tenth, and the one that throws (777 is not a multiple of 10)
    CHECK(t.applied == 20000 - t.rejected);
    CHECK(cdcflow::test::metric_value(*metrics, "sink.counted") == 20000);
    CHECK(r.health().totals.events == t.events);
    CHECK(last.find("cdcflow_events_total") != std::string::npos);
}

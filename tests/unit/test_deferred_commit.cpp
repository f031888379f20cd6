// Deferred sink commits (ABI 6, CDCFLOW_PLUGIN_DEFERRED_COMMIT): the runtime
// with tests/plugins/deferred_sink, whose settle makes accepted process
// calls durable only as far as a control file allows. The source
// (gen_source) reports the highest committed offset it was told of
// (src.last_committed): it must never pass what settle made durable.
#include "metrics_lookup.hpp"
#include "plugin_harness.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;
using cdcflow::test::eventually;
using cdcflow::test::metric_value;
using cdcflow::test::TempDir;

namespace {

Result<std::unique_ptr<Runtime>> make(const std::string &yaml, Metrics &m) {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR});
    auto def = parse_pipeline(yaml, "test.yaml", [](const std::string &) { return std::nullopt; });
    if (!def) return def.status();
    return Runtime::create(std::move(def.value()), reg, m);
}

// gen_source (count events, batches of 10) -> deferred_sink; queues of 2
// batches, so the sink holds at most 2 accepted batches.
std::string pipeline(int count, const std::string &sink_cfg, const std::string &sink = "deferred_sink") {
    return "pipeline: test\nsettings: {batch_size: 10, batch_max_events: 10, queue_capacity: 2}\n"
           "stages:\n  - id: src\n    plugin: gen_source\n    config: {count: " +
           std::to_string(count) + "}\n  - id: sink\n    plugin: " + sink + "\n    config: {" + sink_cfg +
           "}\n";
}

void allow(const std::string &control, int calls) {
    std::ofstream(control + ".tmp") << calls << "\n";
    std::filesystem::rename(control + ".tmp", control);
}

int64_t checkpoint_of(const std::string &out) {
    std::ifstream in(out + ".checkpoint");
    int64_t off = -1;
    in >> off;
    return off;
}

// Runs the pipeline on a thread of its own; join() returns run()'s status.
struct Running {
    std::unique_ptr<Runtime> rt;
    Status result;
    std::thread t;
    Running(std::unique_ptr<Runtime> r, bool drain) : rt(std::move(r)) {
        t = std::thread([this, drain] {
            RunOptions o;
            o.drain = drain;
            result = rt->run(o);
        });
    }
    Status join() {
        if (t.joinable()) t.join();
        return result;
    }
    ~Running() {
        if (t.joinable()) {
            rt->request_stop();
            t.join();
        }
    }
};

// The pipeline created (the test stops here if it is refused) and running.
std::unique_ptr<Running> start(const std::string &yaml, Metrics &m, bool drain) {
    auto rt = make(yaml, m);
    REQUIRE_MESSAGE(rt, rt.status().message());
    return std::make_unique<Running>(std::move(rt.value()), drain);
}

} // namespace

TEST_CASE("deferred commit: the source learns only settled positions; the sink overlaps up to its bound; "
          "a drain settles everything") {
    TempDir d("defer_settled");
    const std::string out = d.file("out"), control = d.file("control");
    allow(control, 0);
    Metrics m;
    auto run = start(pipeline(100, "output: " + out + ", control: " + control), m, true);
    // Nothing acknowledged: the sink takes a second batch while the first
    // waits, then waits (the FIFO's bound) instead of taking more.
    REQUIRE(eventually([&] { return metric_value(m, "sink.max_pending") == 2; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(metric_value(m, "sink.accepted") == 2);
    CHECK(metric_value(m, "sink.settle_calls") > 0);
    CHECK(metric_value(m, "src.last_committed") == 0);
    CHECK(run->rt->totals().events == 0); // committed counts only on settle
    // The first batch durable: its positions (1..10) reach the source.
    allow(control, 1);
    REQUIRE(eventually([&] { return metric_value(m, "src.last_committed") == 10; }));
    CHECK(run->rt->totals().events == 10);
    CHECK(checkpoint_of(out) == 10);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(metric_value(m, "src.last_committed") == 10); // not past what is durable
    CHECK(metric_value(m, "sink.accepted") == 3);       // one more taken in the freed room
    // Everything: the drain ends once all of it is durable.
    allow(control, 1000);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(checkpoint_of(out) == 100);
    CHECK(metric_value(m, "src.last_committed") == 100);
    CHECK(run->rt->totals().events == 100);
    CHECK(metric_value(m, "sink.max_pending") == 2);
}

TEST_CASE("deferred commit: a settle failure fails the pipeline, nothing past the last durable call "
          "committed") {
    TempDir d("defer_fail");
    const std::string out = d.file("out");
    Metrics m;
    auto run = start(pipeline(100, "output: " + out + ", fail_after: 3"), m, true);
    Status st = run->join();
    REQUIRE_FALSE(st.ok());
    CHECK(st.abi() == CDCFLOW_ERR_IO);
    CHECK(st.message().find("settle failed: injected settle failure past call 3") != std::string::npos);
    CHECK(st.message().find("stage 'sink'") != std::string::npos);
    // At most the first 3 calls (30 events) durable, and the source told no more.
    CHECK(checkpoint_of(out) <= 30);
    CHECK(metric_value(m, "src.last_committed") <= checkpoint_of(out));
    CHECK(run->rt->totals().events == static_cast<uint64_t>(std::max<int64_t>(checkpoint_of(out), 0)));
}

TEST_CASE("deferred commit: a stop abandons accepted batches that are not durable; the restart resumes "
          "after the last durable one") {
    TempDir d("defer_stop");
    const std::string out = d.file("out"), control = d.file("control");
    allow(control, 1);
    {
        Metrics m;
        auto run = start(pipeline(100, "output: " + out + ", control: " + control), m, false);
        REQUIRE(eventually([&] {
            return metric_value(m, "sink.durable") == 1 && metric_value(m, "sink.max_pending") == 2 &&
                   metric_value(m, "sink.accepted") == 3;
        }));
        run->rt->request_stop();
        Status st = run->join();
        CHECK_MESSAGE(st.ok(), st.message()); // a stop is not a failure
        CHECK(checkpoint_of(out) == 10);
        CHECK(metric_value(m, "src.last_committed") == 10);
        CHECK(run->rt->totals().events == 10);
    }
    // The next start resumes after offset 10 and settles the rest.
    allow(control, 1000);
    Metrics m;
    auto run = start(pipeline(100, "output: " + out + ", control: " + control), m, true);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(checkpoint_of(out) == 100);
    CHECK(run->rt->totals().events == 90);
}

TEST_CASE("deferred commit: a poison event's isolation counts each successful process call") {
    TempDir d("defer_poison");
    const std::string out = d.file("out");
    Metrics m;
    auto run = start(pipeline(50, "output: " + out + ", poison_offset: 25"), m, true);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(checkpoint_of(out) == 50);
    CHECK(metric_value(m, "src.last_committed") == 50);
    // 5 batches, the third one in several calls: every call was settled.
    CHECK(metric_value(m, "sink.accepted") > 5);
    CHECK(metric_value(m, "sink.durable") == metric_value(m, "sink.accepted"));
    CHECK(run->rt->totals().events == 50);
    CHECK(run->rt->totals().rejected == 1);
}

TEST_CASE("deferred commit: the flag without a settle callback is refused, naming the plugin; a sink "
          "without the flag commits in process as before") {
    TempDir d("defer_refuse");
    Metrics m;
    auto rt = make(pipeline(10, "output: " + d.file("out"), "deferred_sink_nosettle"), m);
    REQUIRE_FALSE(rt);
    CHECK(rt.status().abi() == CDCFLOW_ERR_CONFIG);
    CHECK(rt.status().message().rfind("test.yaml:", 0) == 0);
    CHECK(rt.status().message().find("plugin 'deferred_sink_nosettle'") != std::string::npos);
    CHECK(rt.status().message().find("no settle callback") != std::string::npos);

    Metrics m2;
    auto run = start(pipeline(100, "output: " + d.file("plain"), "file_sink"), m2, true);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(checkpoint_of(d.file("plain")) == 100);
    CHECK(metric_value(m2, "src.last_committed") == 100);
}

TEST_CASE("deferred commit: a partition change waits until every accepted batch is durable (the sink keeps "
          "settling), then the assigned partitions resume after their durable positions") {
    TempDir d("defer_parts");
    const std::string control = d.file("control");
    allow(control, 1000000);
    Metrics m;
    // group_source: 4 partitions of 100 events; t/1 and t/2 revoked after
    // 120 events, assigned again after 250.
    auto run = start("pipeline: test\nsettings: {batch_size: 8, batch_max_events: 8, queue_capacity: 2}\n"
                     "stages:\n  - id: src\n    plugin: group_source\n"
                     "    config: {partitions: 4, events: 100, plan: '-1,2@120;+1,2@250'}\n"
                     "  - id: sink\n    plugin: deferred_sink\n    config: {output: " +
                         d.file("out") + ", control: " + control + "}\n",
                     m, true);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    const Totals t = run->rt->totals();
    CHECK(t.events == 400); // nothing read twice, nothing skipped
    CHECK(metric_value(m, "src.changes") == 3);
    CHECK(metric_value(m, "src.last_resumed_from") > 1); // resumed after what was durable
    CHECK(metric_value(m, "src.committed_unheld") == 0);
    CHECK(metric_value(m, "sink.durable") == metric_value(m, "sink.accepted"));
}

TEST_CASE("deferred commit: settle's RETRY (a locked database) goes through the stage's retry policy: "
          "retried after a backoff, then the run completes; forever, it fails after max_attempts") {
    TempDir d("defer_busy");
    const std::string retry =
        "    retry: {max_attempts: 4, backoff_ms: 1, max_backoff_ms: 2}\n    breaker: {failures: 0}\n";
    {
        Metrics m;
        auto run = start(pipeline(50, "output: " + d.file("a") + ", busy_settles: 2") + retry, m, true);
        Status st = run->join();
        CHECK_MESSAGE(st.ok(), st.message());
        CHECK(checkpoint_of(d.file("a")) == 50);
        CHECK(metric_value(m, "src.last_committed") == 50);
    }
    Metrics m;
    auto run = start(pipeline(50, "output: " + d.file("b") + ", busy_settles: -1") + retry, m, true);
    Status st = run->join();
    REQUIRE_FALSE(st.ok());
    CHECK(st.message().find("settle failed: injected busy commit") != std::string::npos);
    CHECK(st.message().find("gave up after 4 attempts") != std::string::npos);
    CHECK(checkpoint_of(d.file("b")) == -1);
    CHECK(metric_value(m, "src.last_committed") <= 0);
}

TEST_CASE("deferred commit: a settle that returns at once without progress does not make the sink "
          "thread spin (the host waits out the rest of wait_ms)") {
    TempDir d("defer_early");
    const std::string out = d.file("out"), control = d.file("control");
    allow(control, 0);
    Metrics m;
    auto run = start(pipeline(100, "output: " + out + ", control: " + control + ", early: true"), m, false);
    REQUIRE(eventually([&] { return metric_value(m, "sink.max_pending") == 2; }));
    const int64_t before = metric_value(m, "sink.settle_calls");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // Full FIFO: one call per 100 ms (kFullWaitMs); a spin makes thousands.
    CHECK(metric_value(m, "sink.settle_calls") - before < 50);
    allow(control, 1000);
    REQUIRE(eventually([&] { return checkpoint_of(out) == 100; }));
}

TEST_CASE("deferred commit: a graceful stop keeps calling settle while the sink still waits: what "
          "becomes durable within the sink's grace is committed") {
    TempDir d("defer_grace");
    const std::string out = d.file("out"), control = d.file("control");
    allow(control, 1);
    Metrics m;
    auto run =
        start(pipeline(100, "output: " + out + ", control: " + control + ", stop_grace_ms: 1500"), m, false);
    REQUIRE(eventually(
        [&] { return metric_value(m, "sink.durable") == 1 && metric_value(m, "sink.accepted") == 3; }));
    run->rt->request_stop();
    // Past several of the host's 100 ms settle calls: the acknowledgements
    // arrive late in the grace.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    allow(control, 3);
    Status st = run->join();
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(checkpoint_of(out) == 30);
    CHECK(metric_value(m, "src.last_committed") == 30);
    CHECK(run->rt->totals().events == 30);
}

TEST_CASE("deferred commit: the flag on a stage that is not the sink is refused, naming the plugin") {
    TempDir d("defer_not_sink");
    Metrics m;
    std::string yaml = pipeline(10, "output: " + d.file("out"));
    const std::string sink_at = "  - id: sink\n";
    yaml.insert(yaml.find(sink_at), "  - id: mid\n    plugin: passthrough_deferred\n");
    auto rt = make(yaml, m);
    REQUIRE_FALSE(rt);
    CHECK(rt.status().abi() == CDCFLOW_ERR_CONFIG);
    CHECK(rt.status().message().rfind("test.yaml:", 0) == 0);
    CHECK(rt.status().message().find("plugin 'passthrough_deferred'") != std::string::npos);
    CHECK(rt.status().message().find("only the pipeline's last stage") != std::string::npos);
}

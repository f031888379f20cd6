// Retries with jitter, circuit breakers, stops while a breaker is open, and
// poison events isolated by bisection: the runtime with the test plugins
// (tests/plugins) loaded through Boost.DLL.
#include "metrics_lookup.hpp"
#include "plugin_harness.hpp"
#include "runtime.hpp"

#include <cdcflow/sdk.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;
using cdcflow::test::eventually;

namespace {

Result<std::unique_ptr<Runtime>> make(const std::string &yaml, PluginRegistry &reg, Metrics &m) {
    auto def = parse_pipeline(yaml, "test.yaml", [](const std::string &) { return std::nullopt; });
    if (!def) return def.status();
    return Runtime::create(std::move(def.value()), reg, m);
}

PluginRegistry registry() {
    PluginRegistry reg;
    reg.add_front({CDCFLOW_TEST_PLUGIN_DIR, CDCFLOW_ABI_V1_PLUGIN_DIR});
    return reg;
}

std::filesystem::path temp_dir(const char *name) {
    auto d = std::filesystem::temp_directory_path() / ("cdcflow_br_" + std::string(name));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

// gen_source -> passthrough -> file_sink, one batch of `count` events.
std::string pipeline(const std::string &count, const std::string &pass_cfg, const std::string &sink_cfg,
                     const std::string &sink_extra = "", const std::string &settings = "") {
    return "pipeline: t\nsettings: {batch_size: " + count + ", batch_max_events: " + count + settings +
           "}\nstages:\n  - id: src\n    plugin: gen_source\n    config: {count: " + count +
           "}\n  - id: pass\n    plugin: passthrough\n    config: {" + pass_cfg +
           "}\n  - id: sink\n    plugin: file_sink\n    config: {" + sink_cfg + "}\n" + sink_extra;
}

struct Line {
    int64_t offset;
    int status;
    std::string reason;
};

// file_sink's output: "offset status id reason".
std::vector<Line> read_lines(const std::filesystem::path &p) {
    std::vector<Line> out;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream s(line);
        Line l{};
        std::string id;
        s >> l.offset >> l.status >> id;
        std::getline(s, l.reason);
        if (!l.reason.empty() && l.reason[0] == ' ') l.reason.erase(0, 1);
        out.push_back(l);
    }
    return out;
}

int64_t checkpoint_of(const std::filesystem::path &out) {
    std::ifstream in(out.string() + ".checkpoint");
    int64_t off = -1;
    in >> off;
    return off;
}

// A copy: callers pass health()'s temporary report (a reference into it
// dangled at the end of the statement; ASan: heap-use-after-free).
StageReport stage(const HealthReport &h, const std::string &id) {
    for (const StageReport &s : h.stages)
        if (s.id == id) return s;
    throw std::runtime_error("no stage " + id);
}

} // namespace

TEST_CASE("retry: the backoff doubles up to its bound, and jitter only ever shortens it, within bounds") {
    RetryPolicy p;
    p.backoff_ms = 50;
    p.max_backoff_ms = 300;
    CHECK(retry_backoff_ms(p, 1) == 50);
    CHECK(retry_backoff_ms(p, 2) == 100);
    CHECK(retry_backoff_ms(p, 3) == 200);
    CHECK(retry_backoff_ms(p, 4) == 300);
    CHECK(retry_backoff_ms(p, 1000000) == 300); // no overflow however many retries
    CHECK(jittered_ms(200, 0) == 200);
    CHECK(jittered_ms(0, 0.5) == 0);
    for (double j : {0.2, 0.5, 1.0}) {
        std::set<uint32_t> seen;
        for (int i = 0; i < 2000; ++i) {
            uint32_t w = jittered_ms(1000, j);
            CHECK(w <= 1000);
            CHECK(w >= static_cast<uint32_t>(1000 * (1 - j)));
            seen.insert(w);
        }
        CHECK(seen.size() > 50); // it does vary
    }
    // Each thread has its own generator: two threads draw different sequences.
    std::vector<uint32_t> a, b;
    std::thread ta([&] {
        for (int i = 0; i < 20; ++i)
            a.push_back(jittered_ms(1000000, 1.0));
    });
    ta.join();
    std::thread tb([&] {
        for (int i = 0; i < 20; ++i)
            b.push_back(jittered_ms(1000000, 1.0));
    });
    tb.join();
    CHECK(a != b);
}

TEST_CASE("retry/breaker: settings give every stage's defaults, a stage overrides them key by key") {
    auto def = parse_pipeline("pipeline: t\nsettings:\n  retry: {backoff_ms: 7, jitter: 0.5}\n"
                              "  breaker: {failures: 3}\n  poison_limit: 9\nstages:\n"
                              "  - id: src\n    plugin: gen_source\n"
                              "  - id: sink\n    plugin: file_sink\n    retry: {max_attempts: 4}\n"
                              "    breaker: {cooldown_ms: 20}\n    poison_limit: 2\n",
                              "test.yaml", [](const std::string &) { return std::nullopt; });
    REQUIRE(def.ok());
    const StageDef &src = def.value().stages[0], &sink = def.value().stages[1];
    CHECK(src.retry.backoff_ms == 7);
    CHECK(src.retry.jitter == 0.5);
    CHECK(src.retry.max_attempts == 20);
    CHECK(src.breaker.failures == 3);
    CHECK(src.breaker.cooldown_ms == 5000);
    CHECK(src.poison_limit == 9);
    CHECK(sink.retry.backoff_ms == 7);
    CHECK(sink.retry.max_attempts == 4);
    CHECK(sink.breaker.failures == 3);
    CHECK(sink.breaker.cooldown_ms == 20);
    CHECK(sink.poison_limit == 2);

    auto bad = [](const std::string &text) {
        auto d = parse_pipeline(text, "test.yaml", [](const std::string &) { return std::nullopt; });
        return d ? std::string() : d.status().message();
    };
    const std::string stages = "stages:\n  - id: src\n    plugin: gen_source\n";
    CHECK(bad("pipeline: t\nsettings: {retry: {jitter: 1.5}}\n" + stages) ==
          "test.yaml:2:28: retry.jitter must be a number from 0 to 1, got '1.5'");
    CHECK(bad("pipeline: t\nsettings: {breaker: {failures: -1}}\n" + stages) ==
          "test.yaml:2:32: breaker.failures must be an integer from 0 to 1000000, got '-1'");
    CHECK(bad("pipeline: t\nsettings: {breaker: {trips: 1}}\n" + stages) ==
          "test.yaml:2:22: unknown key 'trips' in 'breaker' of settings (known: failures, cooldown_ms)");
    CHECK(bad("pipeline: t\n" + stages + "    breaker: {cooldown_ms: 0}\n") ==
          "test.yaml:5:28: breaker.cooldown_ms must be an integer from 1 to 3600000, got '0'");
    CHECK(bad("pipeline: t\n" + stages + "    poison_limit: 0\n") ==
          "test.yaml:5:19: poison_limit must be an integer from 1 to 1000000, got '0'");
    // A stage's backoff past the maximum it inherits: at the stage's mapping.
    CHECK(bad("pipeline: t\nsettings: {retry: {max_backoff_ms: 100}}\n" + stages +
              "    retry: {backoff_ms: 500}\n") ==
          "test.yaml:6:12: retry.max_backoff_ms must be at least retry.backoff_ms (500)");
}

TEST_CASE("breaker: opens after N failures, re-opens on a failed probe, closes on success; trips counted") {
    auto dir = temp_dir("transitions");
    auto out = dir / "events.txt";
    PluginRegistry reg = registry();
    Metrics m;
    // process fails transiently 4 times: 2 failures open the breaker (trip
    // 1); the probes (3rd, 4th call) fail and re-open it (trips 2, 3); the
    // 5th call (a probe) succeeds and closes it.
    auto rt = make(
        pipeline("100", "", "output: '" + out.string() + "', busy_batches: 4",
                 "    retry: {backoff_ms: 1, jitter: 0}\n    breaker: {failures: 2, cooldown_ms: 150}\n"),
        reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    Runtime &r = *rt.value();
    Status st;
    std::thread t([&] { st = r.run(RunOptions{true}); });
    bool seen_open = eventually([&] {
        HealthReport h = r.health();
        return stage(h, "sink").breaker == BreakerState::open && !h.healthy &&
               stage(h, "sink").state == "open";
    });
    t.join();
    CHECK(seen_open);
    REQUIRE(st.ok());
    HealthReport h = r.health();
    const StageReport &sink = stage(h, "sink");
    CHECK(sink.breaker == BreakerState::closed);
    CHECK(sink.trips == 3);
    CHECK(sink.retries == 4); // one backoff retry, three probes
    CHECK(cdcflow::test::metric_value(m, "sink.errors") == 4);
    CHECK(sink.last_error == "database is locked (injected)");
    CHECK(r.totals().events == 100);
    CHECK(read_lines(out).size() == 100); // nothing lost, nothing twice
    CHECK(checkpoint_of(out) == 100);
    std::filesystem::remove_all(dir);
}

TEST_CASE("breaker: disabled (failures 0), the pipeline fails past retry.max_attempts as before") {
    PluginRegistry reg = registry();
    Metrics m;
    auto rt = make(pipeline("10", "", "busy_batches: 100",
                            "    retry: {max_attempts: 3, backoff_ms: 1}\n    breaker: {failures: 0}\n"),
                   reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    Status st = rt.value()->run(RunOptions{true});
    REQUIRE_FALSE(st.ok());
    CHECK(st.abi() == CDCFLOW_ERR_RETRY);
    CHECK(st.message() == "stage 'sink' (plugin 'file_sink'): database is locked (injected) (gave up after 3 "
                          "attempts; see the stage's retry.max_attempts)");
    CHECK(stage(rt.value()->health(), "sink").trips == 0);
}

TEST_CASE("breaker: a stop while it is open returns at once, cleanly; a restart commits everything once") {
    auto dir = temp_dir("stop_open");
    auto out = dir / "events.txt";
    PluginRegistry reg = registry();
    {
        Metrics m;
        // A cool-down far longer than anything here: only the stop ends it.
        auto rt = make(pipeline("50", "", "output: '" + out.string() + "', busy_batches: 1000000",
                                "    breaker: {failures: 1, cooldown_ms: 3600000}\n"),
                       reg, m);
        REQUIRE_MESSAGE(rt.ok(), rt.status().message());
        Runtime &r = *rt.value();
        Status st;
        std::thread t([&] { st = r.run(RunOptions{true}); });
        CHECK(eventually([&] { return stage(r.health(), "sink").breaker == BreakerState::open; }));
        r.request_stop();
        // The stop is not held by the hour-long cool-down (joining at all
        // proves it; the bound only keeps a broken build from hanging).
        CHECK(r.wait_stopped(30000));
        t.join();
        CHECK(st.ok());
        CHECK(r.state() == "stopped");
        CHECK(cdcflow::test::metric_value(m, "sink.counted") == 0);
        CHECK(read_lines(out).empty());
    }
    Metrics m;
    auto rt = make(pipeline("50", "", "output: '" + out.string() + "'"), reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    REQUIRE(rt.value()->run(RunOptions{true}).ok());
    auto lines = read_lines(out);
    REQUIRE(lines.size() == 50);
    for (size_t i = 0; i < lines.size(); ++i)
        CHECK(lines[i].offset == static_cast<int64_t>(i + 1));
    std::filesystem::remove_all(dir);
}

TEST_CASE(
    "poison: 1, 2 or 3 poison events in a batch are exactly the dead letters, the rest committed in order") {
    for (const char *offsets : {"37", "1,64", "2,3,40"}) {
        CAPTURE(offsets);
        auto dir = temp_dir("bisect");
        auto out = dir / "events.txt";
        PluginRegistry reg = registry();
        Metrics m;
        auto rt = make(
            pipeline("64", "", "output: '" + out.string() + "', poison_offsets: '" + offsets + "'"), reg, m);
        REQUIRE_MESSAGE(rt.ok(), rt.status().message());
        Runtime &r = *rt.value();
        REQUIRE(r.run(RunOptions{true}).ok());
        std::set<int64_t> poison;
        std::stringstream ss(offsets);
        for (std::string x; std::getline(ss, x, ',');)
            poison.insert(std::stoll(x));
        auto lines = read_lines(out);
        REQUIRE(lines.size() == 64);
        for (size_t i = 0; i < lines.size(); ++i) {
            const Line &l = lines[i];
            CHECK(l.offset == static_cast<int64_t>(i + 1)); // in order, each once
            if (poison.count(l.offset)) {
                CHECK(l.status == CDCFLOW_EVENT_REJECTED);
                CHECK(l.reason == "cannot apply offset " + std::to_string(l.offset) + " (injected poison)");
            } else {
                CHECK(l.status == CDCFLOW_EVENT_OK);
            }
        }
        CHECK(checkpoint_of(out) == 64);
        CHECK(r.totals().rejected == poison.size());
        CHECK(r.totals().applied == 64 - poison.size());
        const StageReport &sink = stage(r.health(), "sink");
        CHECK(sink.poison == poison.size());
        CHECK(sink.bisect_calls > 0);
        CHECK(cdcflow::test::metric_value(m, "sink.rejected") == static_cast<int64_t>(poison.size()));
        std::filesystem::remove_all(dir);
    }
}

TEST_CASE("poison: a transform's exception isolates the event, with the stage as the rejecting stage") {
    auto dir = temp_dir("transform");
    auto out = dir / "events.txt";
    PluginRegistry reg = registry();
    Metrics m;
    auto rt = make(pipeline("100", "throw_at: 50", "output: '" + out.string() + "'"), reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    REQUIRE(rt.value()->run(RunOptions{true}).ok());
    auto lines = read_lines(out);
    REQUIRE(lines.size() == 100);
    CHECK(lines[49].status == CDCFLOW_EVENT_REJECTED);
    CHECK(lines[49].reason == "injected exception at offset 50");
    CHECK(cdcflow::test::metric_value(m, "pass.rejected") == 1);
    CHECK(stage(rt.value()->health(), "pass").poison == 1);
    CHECK(rt.value()->totals().applied == 99);
    std::filesystem::remove_all(dir);
}

TEST_CASE("poison: a stage that fails every event is a stage failure, not a pile of dead letters") {
    auto dir = temp_dir("always");
    auto out = dir / "events.txt";
    PluginRegistry reg = registry();
    {
        Metrics m;
        auto rt = make(pipeline("16", "", "output: '" + out.string() + "', poison_every: 1"), reg, m);
        REQUIRE_MESSAGE(rt.ok(), rt.status().message());
        Status st = rt.value()->run(RunOptions{true});
        REQUIRE_FALSE(st.ok());
        CHECK(st.abi() == CDCFLOW_ERR_EVENT);
        CHECK(st.message() ==
              "stage 'sink' (plugin 'file_sink'): each of the batch's 16 events fails on its own, "
              "so the stage is at fault, not the events: cannot apply offset 1 (injected poison)");
        CHECK(read_lines(out).empty()); // not one dead letter committed
        CHECK(checkpoint_of(out) == -1);
    }
    {
        // Batches of one: poison_limit ends it (3 dead letters, the 4th in a row fails the stage).
        Metrics m;
        auto rt = make("pipeline: t\nsettings: {batch_size: 1, batch_max_events: 1}\nstages:\n"
                       "  - id: src\n    plugin: gen_source\n    config: {count: 16}\n"
                       "  - id: sink\n    plugin: file_sink\n    config: {output: '" +
                           out.string() + "', poison_every: 1}\n    poison_limit: 3\n",
                       reg, m);
        REQUIRE_MESSAGE(rt.ok(), rt.status().message());
        Status st = rt.value()->run(RunOptions{true});
        REQUIRE_FALSE(st.ok());
        CHECK(st.message() ==
              "stage 'sink' (plugin 'file_sink'): more than 3 events in a row failed on their own "
              "(the stage's poison_limit), so the stage is at fault, not the events: cannot "
              "apply offset 4 (injected poison)");
        CHECK(read_lines(out).size() == 3);
        CHECK(checkpoint_of(out) == 3);
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("poison: an I/O error is never bisected") {
    PluginRegistry reg = registry();
    Metrics m;
    auto rt = make(pipeline("64", "io_error_at: 10", ""), reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    Status st = rt.value()->run(RunOptions{true});
    REQUIRE_FALSE(st.ok());
    CHECK(st.abi() == CDCFLOW_ERR_IO);
    const StageReport &pass = stage(rt.value()->health(), "pass");
    CHECK(pass.bisect_calls == 0);
    CHECK(pass.poison == 0);
    CHECK(cdcflow::test::metric_value(m, "pass.errors") == 1);
    CHECK(cdcflow::test::metric_value(m, "sink.counted") == 0);
}

TEST_CASE("poison: an ABI 1 C sink answering CDCFLOW_ERR_INTERNAL has its poison events isolated") {
    PluginRegistry reg = registry();
    Metrics m;
    auto rt = make("pipeline: t\nsettings: {batch_size: 100, batch_max_events: 100}\nstages:\n"
                   "  - id: src\n    plugin: v1_source\n    config: {count: 300}\n"
                   "  - id: sink\n    plugin: v1_sink\n    config: {poison_every: 25}\n",
                   reg, m);
    REQUIRE_MESSAGE(rt.ok(), rt.status().message());
    REQUIRE(rt.value()->run(RunOptions{true}).ok());
    Totals t = rt.value()->totals();
    CHECK(t.events == 300);
    CHECK(t.rejected == 12);
    CHECK(t.applied == 288);
    CHECK(stage(rt.value()->health(), "sink").poison == 12);
    CHECK(cdcflow::test::metric_value(m, "sink.unknown_status") == 0);
}

TEST_CASE("sdk: a plugin's Status of Code::kRefused reaches the host as CDCFLOW_ERR_EVENT") {
    char err[64] = {0};
    auto refused = [] { throw cdcflow::Error(Status::Refused("amount has 3 decimals")); };
    CHECK(cdcflow::detail::guarded(err, sizeof err, refused) == CDCFLOW_ERR_EVENT);
    CHECK(std::string(err) == "amount has 3 decimals");
    CHECK(cdcflow::Error(CDCFLOW_ERR_EVENT, "x").status() == CDCFLOW_ERR_EVENT);
    CHECK(cdcflow::Error(Status::Io("disk full")).status() == CDCFLOW_ERR_IO);
    CHECK(cdcflow::Error(Status::OK()).status() == CDCFLOW_ERR_INTERNAL);
}

// bench_hop: the raw cost of moving events through the host.
//
// 1. Events/s through a 4-stage pass-through pipeline (gen_source in "bare"
//    mode -> passthrough -> passthrough -> file_sink counting only), for batch
//    sizes 1, 64 and 1024: every batch crosses three SPSC queues and returns
//    to the source through the pool.
// 2. CPU used by an idle pipeline (the source has nothing to read) over a few
//    seconds, as a share of one core.
//
// Usage: bench_hop PLUGIN_DIR [EVENTS_FOR_1024]   (prints figures; asserts nothing)
#include "runtime.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/resource.h>
#include <thread>

using namespace cdcflow::host;
using cdcflow::Status;

static double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static std::unique_ptr<Runtime> make(const std::string &dir, const std::string &src_cfg, uint32_t batch,
                                     Metrics &m) {
    std::string yaml = "pipeline: bench\nsettings: {batch_size: " + std::to_string(batch) +
                       ", queue_capacity: 8}\nstages:\n"
                       "  - {id: src, plugin: gen_source, config: {" +
                       src_cfg +
                       "}}\n"
                       "  - {id: p1, plugin: passthrough}\n"
                       "  - {id: p2, plugin: passthrough}\n"
                       "  - {id: sink, plugin: file_sink}\n";
    auto def = parse_pipeline(yaml, "bench.yaml", [](const std::string &) { return std::nullopt; });
    if (!def) {
        std::fprintf(stderr, "%s\n", def.status().message().c_str());
        std::exit(1);
    }
    PluginRegistry reg;
    reg.add_front({dir});
    auto rt = Runtime::create(std::move(def.value()), reg, m);
    if (!rt) {
        std::fprintf(stderr, "%s\n", rt.status().message().c_str());
        std::exit(1);
    }
    return std::move(rt.value());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench_hop PLUGIN_DIR [EVENTS_FOR_1024]\n");
        return 2;
    }
    set_log_level(CDCFLOW_LOG_WARN);
    std::string dir = argv[1];
    long long big = argc > 2 ? std::atoll(argv[2]) : 200'000'000LL;
    std::printf("4-stage pass-through pipeline (source -> transform -> transform -> sink), %u cores\n",
                std::thread::hardware_concurrency());
    std::printf("%10s %14s %14s %10s\n", "batch", "events", "events/s", "cpu/wall");
    for (uint32_t batch : {1u, 64u, 1024u}) {
        long long n = batch == 1 ? big / 200 : batch == 64 ? big / 10 : big;
        Metrics m;
        auto rt = make(dir, "count: " + std::to_string(n) + ", bare: true", batch, m);
        RunOptions ro;
        ro.drain = true;
        double c0 = cpu_seconds();
        auto t0 = std::chrono::steady_clock::now();
        Status st = rt->run(ro);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double cpu = cpu_seconds() - c0;
        if (!st || rt->totals().events != static_cast<uint64_t>(n)) {
            std::fprintf(stderr, "run failed: %s (events %llu)\n", st.message().c_str(),
                         static_cast<unsigned long long>(rt->totals().events));
            return 1;
        }
        std::printf("%10u %14lld %14.0f %10.2f\n", batch, n, n / secs, cpu / secs);
    }

    // Idle: 1 event, then the source finds nothing (gen_source parks in its
    // poll like a caught-up outbox source).
    Metrics m;
    auto rt = make(dir, "count: 0, idle_after: 1", 1024, m);
    std::thread t([&] { (void)rt->run(RunOptions{}); }); // stopped below; the idle CPU is the figure
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(5));
    double cpu = cpu_seconds() - c0;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rt->request_stop();
    t.join();
    std::printf("idle pipeline: %.3f%% of one core over %.1f s\n", 100.0 * cpu / secs, secs);
    return 0;
}

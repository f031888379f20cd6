// deferred_sink: a test sink that commits after process returns (ABI 6,
// CDCFLOW_PLUGIN_DEFERRED_COMMIT), as kafka_sink does while it waits for
// Kafka's acknowledgements. process only accepts a batch (remembers its
// last offset); settle makes accepted calls durable, oldest first, as far
// as the test allows: with `control` set, the file holds how many process
// calls may be durable (missing or empty: none), so the test decides when
// each batch is "acknowledged"; without it everything accepted is durable
// at the next settle. Durable means written to OUTPUT.checkpoint (the last
// offset of the newest durable call), which checkpoint() reports.
// fail_after makes settle fail once it would make more calls durable than
// that. It follows partitions a consumer group assigns (ABI 5): it keeps
// each partition's durable position in memory and reports it when the
// partition is assigned. busy_settles makes that many settle calls that
// would make progress fail with ERR_RETRY first (a locked database; -1:
// all of them); early makes settle return at once instead of waiting;
// stop_grace_ms is how long settle still waits for the test's go-ahead
// after a stop before it gives up (ERR_RETRY). Built a second time as
// deferred_sink_nosettle: the flag declared, no settle callback (the host
// must refuse it).
#include "checkpoint_file.hpp"
#include "descriptor_with_flags.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <string>
#include <thread>

struct DeferredSinkSettings {
    std::string output;
    std::string control;
    int64_t fail_after = -1;
    int64_t poison_offset = -1;
    int64_t busy_settles = 0;
    bool early = false;
    int64_t stop_grace_ms = 0;

    using S = DeferredSinkSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("output", &S::output).required().describe("OUTPUT.checkpoint: the durable offset"),
        cdcflow::param("control", &S::control)
            .defaults_to("")
            .describe("a file holding how many process calls may be durable (empty: all, at once)"),
        cdcflow::param("fail_after", &S::fail_after)
            .defaults_to("-1")
            .describe("settle fails once it would make more calls durable than this (-1: never)"),
        cdcflow::param("poison_offset", &S::poison_offset)
            .defaults_to("-1")
            .describe("process fails with ERR_EVENT while the batch holds this offset as an OK event"),
        cdcflow::param("busy_settles", &S::busy_settles)
            .defaults_to("0")
            .describe("settle calls that would make progress failing with ERR_RETRY first (-1: all)"),
        cdcflow::param("early", &S::early)
            .defaults_to("false")
            .describe("settle returns at once, never waits"),
        cdcflow::param("stop_grace_ms", &S::stop_grace_ms)
            .defaults_to("0")
            .describe("how long settle still waits for durability after a stop, then gives up"));
};

class DeferredSinkBase : public cdcflow::Sink {
public:
    static constexpr const char *kDescription = "test sink: commits in settle, when the test allows";
    using Settings = DeferredSinkSettings;

    DeferredSinkBase(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
        : Sink(ctx), output_(cfg.output), control_(cfg.control), fail_after_(cfg.fail_after),
          poison_(cfg.poison_offset), busy_(cfg.busy_settles), early_(cfg.early),
          stop_grace_ms_(cfg.stop_grace_ms) {
        accepted_m_ = ctx.gauge("accepted", "process calls accepted");
        durable_m_ = ctx.gauge("durable", "process calls durable");
        max_pending_ = ctx.gauge("max_pending", "most process calls accepted and not durable at once");
        settles_ = ctx.counter("settle_calls", "settle calls");
    }

    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override {
        test_sinks::report_checkpoint(output_, emit);
    }

    void process(cdcflow::Batch &batch) override {
        for (uint32_t i = 0; i < batch.size(); ++i)
            if (batch[i].status == CDCFLOW_EVENT_OK && batch[i].position.offset == poison_)
                throw cdcflow::Error(CDCFLOW_ERR_EVENT, "cannot take offset " + std::to_string(poison_));
        // An empty call (isolation's last one may hold only dead letters)
        // still counts: it keeps the previous offset.
        Pending p;
        p.last = pending_.empty() ? committed_ : pending_.back().last;
        if (!batch.empty()) p.last = batch[batch.size() - 1].position.offset;
        for (uint32_t i = 0; i < batch.size(); ++i)
            p.parts[std::string(cdcflow::sv(batch[i].position.partition))] = batch[i].position.offset;
        pending_.push_back(std::move(p));
        ++accepted_;
        accepted_m_.set(static_cast<int64_t>(accepted_));
        if (static_cast<int64_t>(pending_.size()) > max_pending_seen_)
            max_pending_.set(max_pending_seen_ = static_cast<int64_t>(pending_.size()));
    }

    // ABI 5: an assigned partition resumes after its durable position. The
    // host calls this only when every accepted call is durable.
    void partitions(const cdcflow_partitions &change) {
        if (!pending_.empty())
            throw cdcflow::Error(CDCFLOW_ERR_INTERNAL,
                                 std::to_string(pending_.size()) +
                                     " accepted calls not durable at a partition change");
        // Assigned partitions, and those a drain asks about (query).
        auto report = [&](const cdcflow_str *v, uint32_t n) {
            for (uint32_t i = 0; i < n; ++i) {
                auto it = durable_parts_.find(std::string(v[i].data, v[i].len));
                if (it != durable_parts_.end() && change.fn) {
                    cdcflow_position p{{it->first.data(), it->first.size()}, it->second};
                    change.fn(change.user, &p);
                }
            }
        };
        report(change.assigned, change.assigned_count);
        report(change.query, change.query_count);
    }

protected:
    // How many calls the test allows to be durable now.
    uint64_t allowed() const {
        if (control_.empty()) return accepted_;
        std::FILE *f = std::fopen(control_.c_str(), "r");
        if (!f) return durable_;
        long long n = 0;
        if (std::fscanf(f, "%lld", &n) != 1) n = 0;
        std::fclose(f);
        return n < 0 ? 0 : static_cast<uint64_t>(n);
    }

    uint64_t settle_impl(uint32_t wait_ms) {
        settles_.add();
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
        for (;;) {
            uint64_t to = std::min(allowed(), accepted_);
            if (to > durable_) {
                if (fail_after_ >= 0 && to > static_cast<uint64_t>(fail_after_))
                    throw cdcflow::Error(CDCFLOW_ERR_IO,
                                         "injected settle failure past call " + std::to_string(fail_after_));
                if (busy_ != 0) {
                    if (busy_ > 0) --busy_;
                    throw cdcflow::Error(CDCFLOW_ERR_RETRY, "injected busy commit (database is locked)");
                }
                int64_t off = 0;
                for (; durable_ < to; ++durable_) {
                    off = pending_.front().last;
                    for (const auto &[part, o] : pending_.front().parts)
                        durable_parts_[part] = o;
                    pending_.pop_front();
                }
                test_sinks::write_checkpoint(output_, off);
                committed_ = off;
                durable_m_.set(static_cast<int64_t>(durable_));
                return durable_;
            }
            // A stop: still waits stop_grace_ms for the go-ahead, then gives
            // up explicitly (RETRY while stopping).
            const auto now = std::chrono::steady_clock::now();
            if (ctx().stop_requested()) {
                if (stop_seen_ == std::chrono::steady_clock::time_point{}) stop_seen_ = now;
                if (now - stop_seen_ >= std::chrono::milliseconds(stop_grace_ms_))
                    throw cdcflow::Error(CDCFLOW_ERR_RETRY,
                                         "stopping: " + std::to_string(accepted_ - durable_) +
                                             " accepted calls not durable");
            }
            // Parked (a sleep, not a spin).
            if (early_ || now >= until) return durable_;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }

private:
    std::string output_, control_;
    int64_t fail_after_, poison_, busy_;
    bool early_;
    int64_t stop_grace_ms_;
    std::chrono::steady_clock::time_point stop_seen_{};
    struct Pending { // an accepted call, not durable yet
        int64_t last = 0;
        std::map<std::string, int64_t> parts; // its last offset per partition
    };
    std::deque<Pending> pending_;
    std::map<std::string, int64_t> durable_parts_;
    uint64_t accepted_ = 0, durable_ = 0;
    int64_t committed_ = 0, max_pending_seen_ = 0;
    cdcflow::Metric accepted_m_, durable_m_, max_pending_, settles_;
};

#ifndef DEFERRED_SINK_NO_SETTLE
class DeferredSink : public DeferredSinkBase {
public:
    static constexpr const char *kName = "deferred_sink";
    static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_DEFERRED_COMMIT;
    using DeferredSinkBase::DeferredSinkBase;
    uint64_t settle(uint32_t wait_ms) { return settle_impl(wait_ms); }
};
CDCFLOW_PLUGIN(DeferredSink)
#else
// The flag without the callback: the SDK refuses to build that (a
// static_assert), so the descriptor is patched by hand here.
class DeferredSink : public DeferredSinkBase {
public:
    static constexpr const char *kName = "deferred_sink_nosettle";
    using DeferredSinkBase::DeferredSinkBase;
};
extern "C" CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return test_plugins::descriptor_with_flags<DeferredSink>(CDCFLOW_PLUGIN_DEFERRED_COMMIT);
}
#endif

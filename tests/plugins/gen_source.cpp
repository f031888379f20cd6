// gen_source: a test source that generates `count` events with offsets
// 1..count (partition ""), resuming after the sink's checkpoint. Events carry
// ids "e<offset>" unless `bare` is set (then only positions: the cheapest
// possible event, for the queue-hop benchmark). count = 0: endless.
// With `partitions` N > 0, event k goes to partition "p<k mod N>" (offsets
// still rise within each), and the metric `<stage>.committed_regressions`
// counts committed() reports that went backwards for a partition.
#include <cdcflow/sdk.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

class GenSource : public cdcflow::Source {
public:
    static constexpr const char *kName = "gen_source";
    static constexpr const char *kDescription = "test source: generates numbered events";
    static constexpr cdcflow_config_key kConfig[] = {
        {"count", CDCFLOW_CONFIG_INT, "1000", 0, "events to generate; 0 = endless"},
        {"bare", CDCFLOW_CONFIG_BOOL, "false", 0, "no ids or payloads (benchmark)"},
        {"fail_at", CDCFLOW_CONFIG_INT, "0", 0, "poll fails once this offset is reached (0 = never)"},
        {"idle_after", CDCFLOW_CONFIG_INT, "0", 0,
         "stop producing (stay idle, never exhausted) after this offset"},
        {"partitions", CDCFLOW_CONFIG_INT, "0", 0,
         "spread events over this many partitions p0..pN-1 (0: one, \"\")"},
        {"throw_in_committed", CDCFLOW_CONFIG_BOOL, "false", 0, "committed() throws (the host must log it)"},
        {"trickle_after", CDCFLOW_CONFIG_INT, "0", 0,
         "past this offset, at most trickle events per poll (a caught-up source; 0: never)"},
        {"trickle", CDCFLOW_CONFIG_INT, "10", 0, "events per poll once trickling"},
    };

    GenSource(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Source(ctx), count_(cfg.i64("count")), bare_(cfg.boolean("bare")), fail_at_(cfg.i64("fail_at")),
          idle_after_(cfg.i64("idle_after")), partitions_(cfg.i64("partitions")),
          throw_in_committed_(cfg.boolean("throw_in_committed")), trickle_after_(cfg.i64("trickle_after")),
          trickle_(cfg.i64("trickle")) {
        if (count_ < 0) cfg.fail("count", "must be >= 0");
        if (partitions_ < 0 || partitions_ > 4096) cfg.fail("partitions", "must be 0..4096");
        last_committed_.assign(static_cast<size_t>(std::max<int64_t>(partitions_, 1)), 0);
        for (int64_t p = 0; p < partitions_; ++p) {
            char name[24];
            std::snprintf(name, sizeof name, "p%lld", static_cast<long long>(p));
            names_.emplace_back(name);
        }
        regressions_ = ctx.counter("committed_regressions", "committed() went backwards for a partition");
        committed_calls_ = ctx.counter("committed_positions", "positions reported through committed()");
        last_committed_gauge_ = ctx.gauge("last_committed", "highest committed offset reported");
        max_capacity_ = ctx.gauge("max_capacity", "largest batch capacity the host offered a poll");
        last_capacity_ = ctx.gauge("last_capacity", "batch capacity the host offered the last poll");
    }

    void committed(std::span<const cdcflow_position> positions) override {
        if (throw_in_committed_) throw std::runtime_error("injected exception in committed");
        for (const cdcflow_position &p : positions) {
            // "" or "p<N>": an index, no allocation (the hop benchmark runs this per batch).
            std::string_view part = cdcflow::sv(p.partition);
            size_t k =
                part.size() > 1 ? static_cast<size_t>(std::atoll(std::string(part.substr(1)).c_str())) : 0;
            if (k >= last_committed_.size()) continue;
            int64_t &last = last_committed_[k];
            if (p.offset < last) regressions_.add();
            last = std::max(last, p.offset);
            highest_ = std::max(highest_, p.offset);
        }
        last_committed_gauge_.set(highest_);
        committed_calls_.add(static_cast<int64_t>(positions.size()));
    }

    void seek(std::span<const cdcflow_position> positions) override {
        for (auto &p : positions)
            next_ = p.offset + 1;
    }

    cdcflow::PollResult poll(cdcflow::Batch &batch, uint32_t wait_ms) override {
        if (fail_at_ && next_ >= fail_at_)
            throw cdcflow::Error(CDCFLOW_ERR_IO, "injected failure at offset " + std::to_string(next_));
        if (idle_after_ && next_ > idle_after_) {
            // Idle: park for the wait (a real source waits on its database).
            for (uint32_t waited = 0; waited < wait_ms && !ctx().stop_requested(); waited += 10)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            return {};
        }
        const int64_t capacity = batch.capacity();
        max_capacity_seen_ = std::max(max_capacity_seen_, capacity);
        max_capacity_.set(max_capacity_seen_);
        last_capacity_.set(capacity);
        cdcflow_event_init e = cdcflow::make_event_init();
        char id[24], payload[40];
        int64_t produced = 0;
        while (count_ == 0 || next_ <= count_) {
            if (idle_after_ && next_ > idle_after_) break;
            if (trickle_after_ && next_ > trickle_after_ && produced >= trickle_) break;
            ++produced;
            e.position.offset = next_;
            if (partitions_)
                e.position.partition = cdcflow::str(names_[static_cast<size_t>(next_ % partitions_)]);
            if (!bare_) {
                int n = std::snprintf(id, sizeof id, "e%lld", static_cast<long long>(next_));
                int m = std::snprintf(payload, sizeof payload, "{\"n\":%lld}", static_cast<long long>(next_));
                e.event_id = {id, static_cast<uint64_t>(n)};
                e.aggregate_type = cdcflow::str("Test");
                e.aggregate_id = e.event_id;
                e.event_type = cdcflow::str("Generated");
                e.payload = {payload, static_cast<uint64_t>(m)};
                e.timestamp_us = next_;
            }
            if (!batch.append(e)) break;
            ++next_;
        }
        return {count_ != 0 && next_ > count_};
    }

private:
    int64_t count_;
    bool bare_;
    int64_t fail_at_;
    int64_t idle_after_;
    int64_t partitions_;
    bool throw_in_committed_;
    std::vector<std::string> names_;
    std::vector<int64_t> last_committed_; // per partition index
    int64_t trickle_after_, trickle_;
    cdcflow::Metric regressions_, committed_calls_, last_committed_gauge_, max_capacity_, last_capacity_;
    int64_t max_capacity_seen_ = 0;
    int64_t highest_ = 0;
    int64_t next_ = 1;
};

CDCFLOW_PLUGIN(GenSource)

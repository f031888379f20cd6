// gen_source: a test source that generates `count` events with offsets
// 1..count (partition ""), resuming after the sink's checkpoint. Events carry
// ids "e<offset>" unless `bare` is set (then only positions: the cheapest
// possible event, for the queue-hop benchmark). count = 0: endless.
// `payload_bytes` pads every payload to about that size (memory tests).
// With `partitions` N > 0, event k goes to partition "p<k mod N>" (offsets
// still rise within each), and the metric `<stage>.committed_regressions`
// counts committed() reports that went backwards for a partition.
// It replays (ABI 3) what it generated up to the checkpoint, in pieces of at
// most `replay_piece` events per call, optionally `replay_past` events past
// the checkpoint (a broken source the host must refuse). Built a second time
// as gen_source_noreplay (GEN_SOURCE_NO_REPLAY): a source without replay.
#include <cdcflow/sdk.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// Declared the ABI 3 way (cdcflow/sdk.hpp, "Declared config"); passthrough and
// file_sink keep the older kConfig, so both paths stay exercised.
struct GenSourceSettings {
    int64_t count = 1000;
    bool bare = false;
    int64_t fail_at = 0;
    int64_t idle_after = 0;
    int64_t partitions = 0;
    bool throw_in_committed = false;
    int64_t replay_piece = 0, replay_past = 0, replay_sleep_ms = 0, replay_first = 1, replay_stall = 0;
    int64_t trickle_after = 0, trickle = 10;
    int64_t payload_bytes = 0;

    using S = GenSourceSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("count", &S::count)
            .defaults_to("1000")
            .min("0")
            .describe("events to generate; 0 = endless"),
        cdcflow::param("bare", &S::bare).defaults_to("false").describe("no ids or payloads (benchmark)"),
        cdcflow::param("fail_at", &S::fail_at)
            .defaults_to("0")
            .describe("poll fails once this offset is reached (0 = never)"),
        cdcflow::param("idle_after", &S::idle_after)
            .defaults_to("0")
            .describe("stop producing (stay idle, never exhausted) after this offset"),
        cdcflow::param("partitions", &S::partitions)
            .defaults_to("0")
            .min("0")
            .max("4096")
            .describe("spread events over this many partitions p0..pN-1 (0: one, \"\")"),
        cdcflow::param("throw_in_committed", &S::throw_in_committed)
            .defaults_to("false")
            .describe("committed() throws (the host must log it)"),
        cdcflow::param("replay_piece", &S::replay_piece)
            .defaults_to("0")
            .min("0")
            .describe("replay at most this many events per call (0: a batch)"),
        cdcflow::param("replay_past", &S::replay_past)
            .defaults_to("0")
            .min("0")
            .describe("replay this many events past the checkpoint (a bug)"),
        cdcflow::param("replay_sleep_ms", &S::replay_sleep_ms)
            .defaults_to("0")
            .min("0")
            .describe("sleep this long per replay call (stop tests)"),
        cdcflow::param("replay_first", &S::replay_first)
            .defaults_to("1")
            .min("1")
            .describe("the oldest offset still there to replay (retention)"),
        cdcflow::param("replay_stall", &S::replay_stall)
            .defaults_to("0")
            .min("0")
            .max("2")
            .describe("replay never ends (a bug): 1 empty batches, 2 the same events again"),
        cdcflow::param("trickle_after", &S::trickle_after)
            .defaults_to("0")
            .min("0")
            .describe("past this offset, at most trickle events per poll (a caught-up source; 0: never)"),
        cdcflow::param("trickle", &S::trickle)
            .defaults_to("10")
            .min("1")
            .describe("events per poll once trickling"),
        cdcflow::param("payload_bytes", &S::payload_bytes)
            .defaults_to("0")
            .min("0")
            .max("67108864")
            .describe("pad each payload to at least this many bytes (memory bound tests)"));
};

class GenSource : public cdcflow::Source {
public:
#ifdef GEN_SOURCE_NO_REPLAY
    static constexpr const char *kName = "gen_source_noreplay";
#else
    static constexpr const char *kName = "gen_source";
#endif
    static constexpr const char *kDescription = "test source: generates numbered events";
    using Settings = GenSourceSettings;

    GenSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
        : Source(ctx), count_(cfg.count), bare_(cfg.bare), fail_at_(cfg.fail_at), idle_after_(cfg.idle_after),
          partitions_(cfg.partitions), throw_in_committed_(cfg.throw_in_committed),
          replay_piece_(cfg.replay_piece), replay_past_(cfg.replay_past),
          replay_sleep_ms_(cfg.replay_sleep_ms), replay_first_(cfg.replay_first),
          replay_stall_(cfg.replay_stall), trickle_after_(cfg.trickle_after), trickle_(cfg.trickle) {
        // {"n":123,"pad":"xxx..."}: still a JSON object, of about payload_bytes.
        if (cfg.payload_bytes > 0) pad_.assign(static_cast<size_t>(cfg.payload_bytes), 'x');
        last_committed_.assign(static_cast<size_t>(std::max<int64_t>(partitions_, 1)), 0);
        for (int64_t p = 0; p < partitions_; ++p) {
            char name[24];
            std::snprintf(name, sizeof name, "p%lld", static_cast<long long>(p));
            names_.emplace_back(name);
        }
        regressions_ = ctx.counter("committed_regressions", "committed() went backwards for a partition");
        committed_calls_ = ctx.counter("committed_positions", "positions reported through committed()");
        last_committed_gauge_ = ctx.gauge("last_committed", "highest committed offset reported");
        replay_calls_ = ctx.counter("replay_calls", "replay() calls");
        replay_max_ = ctx.gauge("replay_max_events", "max_events of the last replay request");
        seeks_ = ctx.counter("seeks", "seek() calls");
        max_capacity_ = ctx.gauge("max_capacity", "largest batch capacity the host offered a poll");
        last_capacity_ = ctx.gauge("last_capacity", "batch capacity the host offered the last poll");
    }

#ifndef GEN_SOURCE_NO_REPLAY
    // The events it generated up to the checkpoint, newest max_events, oldest
    // first: exactly what poll() produced for those offsets.
    bool replay(cdcflow_replay &req, cdcflow::Batch &batch) {
        replay_calls_.add();
        replay_max_.set(static_cast<int64_t>(req.max_events));
        if (seeks_value_ > 0) throw cdcflow::Error(CDCFLOW_ERR_INTERNAL, "replay after seek");
        if (replay_sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(replay_sleep_ms_));
        if (req.position_count == 0) return true;
        if (partitions_) throw cdcflow::Error(CDCFLOW_ERR_INTERNAL, "gen_source replays one partition only");
        int64_t cp = req.positions[0].offset;
        if (replay_stall_ == 1) return false;     // not done, and nothing handed out
        if (replay_stall_ == 2) replay_next_ = 0; // starts over at every call
        if (replay_next_ == 0) {
            int64_t want = static_cast<int64_t>(std::min<uint64_t>(req.max_events, INT64_MAX / 2));
            replay_next_ = std::max<int64_t>(cp - want + 1, 1);
            if (replay_next_ < replay_first_) {
                replay_next_ = replay_first_;
                req.truncated = 1;
                req.truncated_by = "replay_first";
            }
        }
        int64_t last = cp + replay_past_;
        uint32_t put = 0;
        while (replay_next_ <= last && (replay_piece_ == 0 || put < replay_piece_)) {
            if (!generate(batch, replay_next_)) return false;
            ++replay_next_;
            ++put;
        }
        if (replay_next_ <= last) return false;
        replay_next_ = 0;
        return true;
    }
#endif

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
        seeks_.add();
        ++seeks_value_;
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
        int64_t produced = 0;
        while (count_ == 0 || next_ <= count_) {
            if (idle_after_ && next_ > idle_after_) break;
            if (trickle_after_ && next_ > trickle_after_ && produced >= trickle_) break;
            ++produced;
            if (!generate(batch, next_)) break;
            ++next_;
        }
        return {count_ != 0 && next_ > count_};
    }

private:
    // Appends the event at `offset`; false when the batch is full.
    bool generate(cdcflow::Batch &batch, int64_t offset) {
        cdcflow_event_init e = cdcflow::make_event_init();
        char id[24], payload[40];
        e.position.offset = offset;
        if (partitions_)
            e.position.partition = cdcflow::str(names_[static_cast<size_t>(offset % partitions_)]);
        if (!bare_) {
            int n = std::snprintf(id, sizeof id, "e%lld", static_cast<long long>(offset));
            int m = std::snprintf(payload, sizeof payload, "{\"n\":%lld}", static_cast<long long>(offset));
            e.payload = {payload, static_cast<uint64_t>(m)};
            if (!pad_.empty()) {
                padded_.assign(payload, static_cast<size_t>(m) - 1)
                    .append(",\"pad\":\"")
                    .append(pad_)
                    .append("\"}");
                e.payload = cdcflow::str(padded_);
            }
            e.event_id = {id, static_cast<uint64_t>(n)};
            e.aggregate_type = cdcflow::str("Test");
            e.aggregate_id = e.event_id;
            e.event_type = cdcflow::str("Generated");
            e.timestamp_us = offset;
        }
        return batch.append(e);
    }

    int64_t count_;
    bool bare_;
    int64_t fail_at_;
    int64_t idle_after_;
    int64_t partitions_;
    bool throw_in_committed_;
    int64_t replay_piece_, replay_past_, replay_sleep_ms_, replay_first_, replay_stall_;
    int64_t replay_next_ = 0; // the next offset to replay; 0: no replay under way
    int64_t seeks_value_ = 0;
    std::vector<std::string> names_;
    std::vector<int64_t> last_committed_; // per partition index
    int64_t trickle_after_, trickle_;
    std::string pad_, padded_; // payload_bytes: the padding, and the padded payload (reused)
    cdcflow::Metric regressions_, committed_calls_, last_committed_gauge_, replay_calls_, replay_max_, seeks_,
        max_capacity_, last_capacity_;
    int64_t max_capacity_seen_ = 0;
    int64_t highest_ = 0;
    int64_t next_ = 1;
};

CDCFLOW_PLUGIN(GenSource)

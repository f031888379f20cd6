// passthrough: a test transform. Passes batches on untouched unless told to
// reject, mark duplicates, drop, fail or throw at given offsets. With `history` N
// it asks the host to replay the last N events up to the checkpoint before
// start (ABI 3), and records what restore() saw in its metrics.
#include "descriptor_with_flags.hpp"

#include <cdcflow/sdk.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

class Passthrough : public cdcflow::Transform {
public:
    static constexpr const char *kName = "passthrough";
    static constexpr const char *kDescription = "test transform: passes events on (optionally marks some)";
    static constexpr cdcflow_config_key kConfig[] = {
        {"reject_every", CDCFLOW_CONFIG_INT, "0", 0, "reject events whose offset is a multiple of this"},
        {"duplicate_every", CDCFLOW_CONFIG_INT, "0", 0,
         "mark duplicate events whose offset is a multiple of this"},
        {"drop_every", CDCFLOW_CONFIG_INT, "0", 0,
         "drop (filter out) events whose offset is a multiple of this"},
        {"throw_at", CDCFLOW_CONFIG_INT, "0", 0, "throw a C++ exception at this offset (0 = never)"},
        {"throw_every", CDCFLOW_CONFIG_INT, "0", 0,
         "throw a C++ exception at offsets that are a multiple of this (many poison events; 0 = never)"},
        {"io_error_at", CDCFLOW_CONFIG_INT, "0", 0,
         "fail with CDCFLOW_ERR_IO at this offset (0 = never; never isolated as a poison event)"},
        {"retry_at", CDCFLOW_CONFIG_INT, "0", 0, "fail transiently twice at this offset (0 = never)"},
        {"retry_forever_at", CDCFLOW_CONFIG_INT, "0", 0,
         "fail transiently every time at this offset (0 = never)"},
        {"throw_in_stop", CDCFLOW_CONFIG_BOOL, "false", 0, "stop() throws (the host must log it)"},
        {"history", CDCFLOW_CONFIG_INT, "0", 0,
         "events before the checkpoint to see again at start (0: none)"},
        {"fail_restore", CDCFLOW_CONFIG_BOOL, "false", 0, "restore() fails"},
        {"mark_in_restore", CDCFLOW_CONFIG_BOOL, "false", 0,
         "restore() marks events (a bug the host ignores)"},
        {"hang_at", CDCFLOW_CONFIG_INT, "0", 0,
         "never return from process at this offset, stop or not (a stuck plugin; 0 = never)"},
    };
    static constexpr const char *kHistorySetting = "history";

    Passthrough(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Transform(ctx), reject_every_(cfg.i64("reject_every")), dup_every_(cfg.i64("duplicate_every")),
          drop_every_(cfg.i64("drop_every")), throw_at_(cfg.i64("throw_at")),
          throw_every_(cfg.i64("throw_every")), retry_at_(cfg.i64("retry_at")),
          retry_forever_at_(cfg.i64("retry_forever_at")), throw_in_stop_(cfg.boolean("throw_in_stop")),
          history_(cfg.i64("history")), io_error_at_(cfg.i64("io_error_at")),
          fail_restore_(cfg.boolean("fail_restore")), mark_in_restore_(cfg.boolean("mark_in_restore")),
          hang_at_(cfg.i64("hang_at")) {
        restored_ = ctx.counter("restored", "events seen by restore()");
        restore_calls_ = ctx.counter("restore_calls", "restore() calls");
        restore_first_ = ctx.gauge("restore_first", "offset of the first event restore() saw");
        restore_last_ = ctx.gauge("restore_last", "offset of the last event restore() saw");
        restore_disorder_ = ctx.counter("restore_disorder", "restored events not after the previous one");
        restore_late_ = ctx.counter("restore_late", "restore() calls after seek() or start()");
        seeks_ = ctx.counter("seeks", "seek() calls (the pre-ABI-3 way to rebuild state)");
        restore_max_batch_ = ctx.gauge("restore_max_batch", "most events in one restore() call");
    }

    uint64_t history() { return static_cast<uint64_t>(history_); }

    void restore(cdcflow::Batch &batch) {
        if (fail_restore_) throw cdcflow::Error(CDCFLOW_ERR_IO, "injected restore failure");
        if (mark_in_restore_ && batch.size() >= 3) {
            batch.reject(0, "marked in restore");
            batch.mark_duplicate(1);
            batch.drop(2);
        }
        restore_calls_.add();
        if (started_ || sought_) restore_late_.add();
        if (batch.size() > max_batch_) restore_max_batch_.set(max_batch_ = batch.size());
        for (uint32_t i = 0; i < batch.size(); ++i) {
            int64_t off = batch[i].position.offset;
            if (last_ == 0)
                restore_first_.set(off);
            else if (off <= last_)
                restore_disorder_.add();
            last_ = off;
        }
        restore_last_.set(last_);
        restored_.add(batch.size());
    }

    void start() override { started_ = true; }
    void seek(std::span<const cdcflow_position>) override {
        seeks_.add();
        sought_ = true;
    }

    void stop() override {
        if (throw_in_stop_) throw std::runtime_error("injected exception in stop");
    }

    void process(cdcflow::Batch &batch) override {
        if (!reject_every_ && !dup_every_ && !drop_every_ && !throw_at_ && !throw_every_ && !retry_at_ &&
            !retry_forever_at_ && !io_error_at_ && !hang_at_)
            return; // benchmark path
        for (uint32_t i = 0; i < batch.size(); ++i) {
            int64_t off = batch[i].position.offset;
            if ((throw_at_ && off == throw_at_) || (throw_every_ && off % throw_every_ == 0))
                throw std::runtime_error("injected exception at offset " + std::to_string(off));
            if (io_error_at_ && off == io_error_at_)
                throw cdcflow::Error(CDCFLOW_ERR_IO, "injected I/O error at offset " + std::to_string(off));
            if (retry_at_ && off == retry_at_ && retries_ < 2) {
                ++retries_;
                throw cdcflow::Error(CDCFLOW_ERR_RETRY, "injected transient failure");
            }
            if (hang_at_ && off == hang_at_)
                for (;;) // parked, not spinning: only the process's exit ends it
                    std::this_thread::sleep_for(std::chrono::hours(1));
            if (retry_forever_at_ && off == retry_forever_at_)
                throw cdcflow::Error(CDCFLOW_ERR_RETRY, "injected transient failure that never ends");
            if (reject_every_ && off % reject_every_ == 0)
                batch.reject(i, "offset " + std::to_string(off) + " is unlucky");
            if (dup_every_ && off % dup_every_ == 0) batch.mark_duplicate(i);
            if (drop_every_ && off % drop_every_ == 0) batch.drop(i);
        }
    }

private:
    int64_t reject_every_, dup_every_, drop_every_, throw_at_, throw_every_, retry_at_, retry_forever_at_;
    bool throw_in_stop_;
    int64_t history_;
    int64_t io_error_at_;
    bool fail_restore_;
    bool mark_in_restore_;
    int64_t hang_at_;
    int retries_ = 0;
    bool started_ = false, sought_ = false;
    int64_t last_ = 0;
    uint32_t max_batch_ = 0;
    cdcflow::Metric restored_, restore_calls_, restore_first_, restore_last_, restore_disorder_,
        restore_late_, restore_max_batch_, seeks_;
};

#ifndef PASSTHROUGH_DEFERRED
CDCFLOW_PLUGIN(Passthrough)
#else
// A transform declaring CDCFLOW_PLUGIN_DEFERRED_COMMIT (a sink's flag): the
// host must refuse it. The SDK would not build that, so the descriptor is
// patched by hand.
class PassthroughDeferred : public Passthrough {
public:
    static constexpr const char *kName = "passthrough_deferred";
    using Passthrough::Passthrough;
};
extern "C" CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return test_plugins::descriptor_with_flags<PassthroughDeferred>(CDCFLOW_PLUGIN_DEFERRED_COMMIT);
}
#endif

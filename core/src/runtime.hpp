// Runtime: turns a checked PipelineDef into running stages.
//
// Each stage runs on its own thread. Stage i hands batches to stage i+1
// through a bounded SPSC queue; the sink hands committed batches back to the
// source through one more queue, which is also the batch pool: the number of
// batches in circulation is fixed, so memory is bounded and a slow sink
// blocks the source (back pressure).
//
// Shutdown: request_stop() makes the source stop reading; it then sends an
// end-of-stream marker that each stage forwards after its in-flight work, so
// everything read is committed. A fatal error in any stage closes every
// queue instead (nothing more is committed; the next start replays from the
// sink's checkpoint).
//
// Teardown order (destructor): threads joined, stage instances destroyed,
// then plugin libraries released.
#pragma once

#include "host_api.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include "spsc_queue.hpp"
#include "status.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cdcflow::host {

struct RunOptions {
    bool drain = false; // exit once the source is exhausted and all is committed
};

// Totals counted at the sink after each committed batch: every event that
// entered is exactly one of these.
struct Totals {
    uint64_t events = 0;
    uint64_t applied = 0;
    uint64_t rejected = 0;
    uint64_t duplicates = 0;
    uint64_t batches = 0;
};

class Runtime {
public:
    // Loads plugins (the file's plugin_path first), checks the pipeline
    // against their schemas, and creates every stage instance. Nothing runs.
    static Result<std::unique_ptr<Runtime>> create(PipelineDef def, PluginRegistry &registry,
                                                   Metrics &metrics);
    ~Runtime();
    Runtime(const Runtime &) = delete;
    Runtime &operator=(const Runtime &) = delete;

    // Runs until drained (--drain), stopped, or failed. Blocks.
    Status run(const RunOptions &opts);
    // Async-signal-safe is not required: called from the signal thread.
    void request_stop();
    // After request_stop: true once run() has returned.
    bool wait_stopped(uint32_t timeout_ms);

    Totals totals() const;
    const PipelineDef &def() const { return def_; }
    // "running", "draining", "stopped", "failed"
    std::string state() const;

private:
    struct Stage {
        const StageDef *def = nullptr;
        std::shared_ptr<LoadedPlugin> plugin;
        const cdcflow_callbacks *cb = nullptr;
        void *instance = nullptr;
        cdcflow_ctx ctx;
        cdcflow_config cfg;
        cdcflow_metric *batches = nullptr;
        cdcflow_metric *events = nullptr;
        cdcflow_metric *errors = nullptr;
        cdcflow_metric *busy_us = nullptr;
    };

    explicit Runtime(PipelineDef def, Metrics &metrics);
    void source_loop(Stage &st, bool drain);
    void recycle(Stage &src, Batch *b);
    void stage_loop(size_t index);
    // Calls process with retries (backoff) for CDCFLOW_ERR_RETRY.
    bool process_with_retry(Stage &st, Batch *b);
    void fail(const Stage &st, const std::string &what, cdcflow_status code);
    void notify_committed(Stage &src, Batch *b);
    void count_committed(Batch *b);
    void close_all();

    PipelineDef def_;
    Metrics &metrics_;
    std::vector<std::unique_ptr<Stage>> stages_; // stable addresses: plugins keep &ctx
    std::vector<std::unique_ptr<SpscQueue<Batch>>> queues_; // queues_[i]: stage i -> i+1
    std::unique_ptr<SpscQueue<Batch>> free_;                // sink -> source
    std::vector<std::unique_ptr<cdcflow_batch>> pool_;
    std::vector<std::thread> threads_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> failed_{false};
    std::atomic<bool> running_{false};
    std::atomic<bool> finished_{false};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    Status error_;

    cdcflow_metric *m_events_ = nullptr;
    cdcflow_metric *m_applied_ = nullptr;
    cdcflow_metric *m_rejected_ = nullptr;
    cdcflow_metric *m_duplicates_ = nullptr;
    cdcflow_metric *m_batches_ = nullptr;
    cdcflow_metric *m_checkpoint_ = nullptr;
};

} // namespace cdcflow::host

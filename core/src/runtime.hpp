// Runtime: turns a checked PipelineDef into running stages.
//
// Each stage runs on its own thread. Stage i hands batches to stage i+1
// through a bounded SPSC queue; the sink hands committed batches back to the
// source through one more queue, which is also the batch pool: the number of
// batches in circulation is fixed, so memory is bounded and a slow sink
// blocks the source (back pressure).
//
// State that moves with the stream: after the checkpoint is read and before
// seek/start, a transform that keeps state derived from the stream (history
// and restore) is rebuilt from the source's replay of the events up to the
// checkpoint, wherever they live (an outbox, a Kafka partition that moved
// here). Nothing replayed is marked, passed downstream or committed. This
// runs again for every incarnation (after a step-down too).
//
// Ownership (one owner per checkpoint, DESIGN.md): before it reads the
// checkpoint, run() asks the sink to acquire it. While another live process
// owns it, this host is a standby (settings.when_owned: wait) polling until
// it can take over, or returns CDCFLOW_ERR_OWNED (refuse). A sink that finds
// it was fenced (CDCFLOW_ERR_FENCED from process, or ownership_lost) stops the
// pipeline without committing more; run() then steps down: it destroys and
// re-creates every stage instance (no cache outlives the ownership) and waits
// as a standby again (or returns FENCED when refusing).
//
// Shutdown: request_stop() makes the source stop reading; it then sends an
// end-of-stream marker that each stage forwards after its in-flight work, so
// everything read is committed. A fatal error in any stage closes every
// queue instead (nothing more is committed; the next start replays from the
// sink's checkpoint). A stop also ends a standby's wait and any retrying: a
// stage that was retrying (a locked database) then fails the run, and what
// it held is replayed from the checkpoint on the next start.
//
// Retries: a call that answers CDCFLOW_ERR_RETRY is tried again under the
// stage's RetryPolicy (backoff, bounded attempts); past the bound the
// pipeline fails with the stage's message.
//
// Teardown order (destructor): threads joined, stage instances destroyed,
// then plugin libraries released.
#pragma once

#include "batch_queue.hpp"
#include "host_api.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include <cdcflow/status.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
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
    uint64_t dropped = 0; // filtered out by a transform (event_drop)
    uint64_t batches = 0;
};

// A stage's circuit breaker (settings per stage, `breaker:`): closed while
// calls succeed; open after consecutive failures (nothing is called, upstream
// waits: back pressure); half-open while one probe call runs after the
// cool-down. The numbers are cdcflow_breaker_state's.
enum class BreakerState : int { closed = 0, half_open = 1, open = 2 };
const char *breaker_name(BreakerState s); // "closed", "half_open", "open"

// One stage as /health shows it.
struct StageReport {
    std::string id;
    std::string plugin;
    std::string kind;  // "source", "transform", "sink"
    std::string state; // "idle" (not started), "running", "retrying", "open" (breaker), "failed", "stopped"
    BreakerState breaker = BreakerState::closed;
    uint64_t retries = 0;   // calls retried since start
    uint64_t trips = 0;     // times the breaker opened
    std::string last_error; // the stage's last failure, "" if none
    uint64_t last_error_unix_ms = 0;
};

// What /health and /ready answer, taken at one moment (Runtime::health).
struct HealthReport {
    std::string pipeline;
    std::string state; // Runtime::state()
    std::string role;  // Runtime::role()
    std::string owner; // while a standby: who owns the checkpoint
    std::string last_error;
    // /health: 200 when true (running, stopping, standing by); 503 when the
    // pipeline failed or a stage's breaker is not closed.
    bool healthy = true;
    // /ready: 200 when every stage started, the source is connected and this
    // host owns the checkpoint; 503 otherwise (a standby, starting, stopping).
    bool ready = false;
    std::vector<StageReport> stages;
    Totals totals;
};

// One queue between two stages, as /metrics shows it (Runtime::queues):
// cdcflow_queue_depth_batches, cdcflow_queue_capacity_batches and
// cdcflow_queue_bytes, labelled with `queue` = name.
struct QueueReport {
    std::string name;      // "from->to": the two stages' ids
    uint64_t depth = 0;    // batches in it now
    uint64_t capacity = 0; // settings.queue_capacity
    uint64_t bytes = 0;    // the event bytes of those batches (their arenas)
};

// The memory the runtime bounds, taken at one moment (Runtime::memory).
struct MemoryReport {
    // Event bytes of the batches the source pushed that have not come back
    // committed (arena bytes at the push), and the most since the start.
    // The source starts no fill that could take them past queue_max_bytes
    // (one batch always goes).
    uint64_t in_flight_bytes = 0;
    uint64_t in_flight_bytes_peak = 0;
    uint64_t queue_max_bytes = 0;
    uint64_t soft_limit_bytes = 0; // settings.memory_soft_limit_bytes; 0: none
    // Resident memory as the source last read it (base::resident_bytes);
    // 0 when no soft limit is set (then nobody reads it here).
    uint64_t resident_bytes = 0;
    bool throttled = false;         // the source is slowed by the soft limit now
    uint64_t throttle_episodes = 0; // times it started slowing down since the start
};

class Runtime {
public:
    // Loads plugins (the file's plugin_path first), checks the pipeline
    // against their schemas, and creates every stage instance. Nothing runs.
    // A bad file, plugin or config is CDCFLOW_ERR_CONFIG ("FILE:LINE:COL:
    // ..."); a plugin's own failure keeps its code (e.g. CDCFLOW_ERR_IO for
    // a database that cannot be opened) and names the stage.
    static Result<std::unique_ptr<Runtime>> create(PipelineDef def, PluginRegistry &registry,
                                                   Metrics &metrics);
    ~Runtime();
    Runtime(const Runtime &) = delete;
    Runtime &operator=(const Runtime &) = delete;

    // Runs until drained (--drain), stopped, or failed. Blocks. The status
    // is CDCFLOW_ERR_OWNED or CDCFLOW_ERR_FENCED when another process owns
    // the checkpoint and settings.when_owned is refuse.
    Status run(const RunOptions &opts);
    // Thread-safe (called from the signal thread and HTTP handlers).
    void request_stop();
    // After request_stop: true once run() has returned.
    bool wait_stopped(uint32_t timeout_ms);

    Totals totals() const;
    const PipelineDef &def() const { return def_; }
    // "starting", "standby", "running", "draining", "stopped", "failed"
    std::string state() const;
    // "owner" (this host writes the checkpoint) or "standby"; "" before the
    // first attempt.
    std::string role() const;
    // While a standby: who owns the checkpoint, as the sink describes it.
    std::string owner() const;
    // Thread-safe snapshot for /health, /ready and `status`.
    HealthReport health() const;
    // Thread-safe: each queue between two stages, in pipeline order (while
    // no incarnation runs, e.g. a standby: every queue empty).
    std::vector<QueueReport> queues() const;
    // Thread-safe: the byte bound and the soft memory limit's state.
    MemoryReport memory() const;

    // Tests: what the source reads as the resident memory (instead of
    // base::resident_bytes) and how often at most. Before run().
    void set_resident_reader(std::function<uint64_t()> read, std::chrono::milliseconds interval) {
        read_resident_ = std::move(read);
        resident_interval_ = interval;
    }

private:
    struct Stage {
        const StageDef *def = nullptr;
        std::shared_ptr<LoadedPlugin> plugin;
        const cdcflow_callbacks *cb = nullptr;
        // ABI 2 callbacks, null when the plugin's table is too short to hold them.
        cdcflow_status (*acquire)(void *, const cdcflow_ownership *, char *, uint64_t) = nullptr;
        void (*release)(void *) = nullptr;
        // Built against ABI 1 or 2: never shown CDCFLOW_EVENT_DROPPED (see
        // hide_dropped); `hidden` holds the events it is shown as DUPLICATE.
        bool knows_dropped = true;
        std::vector<uint32_t> hidden;
        // ABI 3 callbacks (state that moves with the stream), null likewise.
        void (*history)(void *, cdcflow_history *) = nullptr;
        cdcflow_status (*restore)(void *, cdcflow_batch *, char *, uint64_t) = nullptr;
        cdcflow_status (*replay)(void *, cdcflow_replay *, cdcflow_batch *, int32_t *, char *,
                                 uint64_t) = nullptr;
        void *instance = nullptr;
        cdcflow_ctx ctx;
        cdcflow_config cfg;
        cdcflow_metric *batches = nullptr;
        cdcflow_metric *events = nullptr;
        cdcflow_metric *errors = nullptr;
        cdcflow_metric *busy_us = nullptr;
        // What health() reports (written by the stage's thread, read by any).
        std::atomic<bool> started{false};  // start succeeded, stop not yet called
        std::atomic<bool> stopped{false};  // stop was called
        std::atomic<bool> retrying{false}; // the last call failed and is being retried
        std::atomic<int> breaker{0};       // BreakerState
        std::atomic<uint64_t> retries{0};
        std::atomic<uint64_t> trips{0};
        std::string last_error; // under Runtime::mu_
        uint64_t last_error_unix_ms = 0;
    };
    struct Outcome {
        cdcflow_status code = CDCFLOW_OK;
        std::string message;
    };

    explicit Runtime(PipelineDef def, Metrics &metrics);
    Status create_instances();
    void destroy_instances();
    // Waits as a standby until the sink owns the checkpoint (or a stop).
    Status acquire_ownership();
    void release_ownership();
    // One incarnation: checkpoint, replay, seek, threads, until drained/stopped/failed.
    Status run_once(const RunOptions &opts);
    // Rebuilds the stateful transforms (history/restore) from the source's
    // replay of the events up to the checkpoint, through one pool batch.
    // Returns early (OK) on a stop request.
    Status restore_state(const std::vector<cdcflow_position> &checkpoint);
    // Calls f(err, err_len) -> cdcflow_status (a plugin call that writes a
    // message into err on failure), retrying CDCFLOW_ERR_RETRY under the
    // stage's policy. Counts failures in the stage's errors metric and logs
    // each retry. A template, not std::function: it wraps every poll and
    // every batch, and must not allocate.
    template <typename F> Outcome call_with_retry(Stage &st, const char *what, F &&f);
    void source_loop(Stage &st, bool drain);
    // The soft memory limit (source thread): reads the resident memory at
    // most every resident_interval_, logs and counts where the throttle
    // starts and ends. True while the source is to slow down.
    bool memory_throttled();
    void recycle(Stage &src, Batch *b);
    void stage_loop(size_t index);
    void fail(Stage &st, const std::string &what, cdcflow_status code);
    void notify_committed(Stage &src, Batch *b);
    void count_committed(Batch *b);
    // Around an ABI 1/2 stage's process: DROPPED events are shown to it as
    // DUPLICATE (skipped, a status it knows), then marked DROPPED again for
    // the stages after it and the totals.
    static void hide_dropped(Stage &st, Batch *b);
    static void unhide_dropped(Stage &st, Batch *b);
    void close_all();
    bool stopping() const { return stop_.load(std::memory_order_relaxed); }

    PipelineDef def_;
    Metrics &metrics_;
    std::vector<std::unique_ptr<Stage>> stages_;      // stable addresses: plugins keep &ctx
    std::vector<std::unique_ptr<BatchQueue>> queues_; // queues_[i]: stage i -> i+1
    std::unique_ptr<BatchQueue> free_;                // sink -> source
    std::vector<std::unique_ptr<cdcflow_batch>> pool_;
    std::vector<std::thread> threads_;
    std::vector<cdcflow_position> committed_; // source thread: notify_committed's scratch
    uint64_t in_flight_ = 0;                  // source thread: events pushed and not yet recycled
    // Written by the source thread only; atomics so that memory() can read them.
    std::atomic<uint64_t> in_flight_bytes_{0}; // arena bytes of those events' batches at the push
    std::atomic<uint64_t> in_flight_bytes_peak_{0};
    std::atomic<uint64_t> resident_{0}; // as last read (soft limit set)
    std::atomic<bool> throttled_{false};
    std::atomic<uint64_t> throttle_episodes_{0};
    std::function<uint64_t()> read_resident_;
    std::chrono::milliseconds resident_interval_{100};
    std::chrono::steady_clock::time_point next_resident_read_{};
    std::chrono::steady_clock::time_point throttle_started_{};
    std::atomic<bool> stop_{false};      // the pipeline is stopping (asked to, or failed); plugins see it
    std::atomic<bool> user_stop_{false}; // request_stop() was called
    std::atomic<bool> failed_{false};
    std::atomic<bool> running_{false};
    std::atomic<bool> standby_{false};
    std::atomic<bool> owner_{false};
    std::atomic<bool> finished_{false};
    bool warned_unfenced_ = false;
    bool warned_no_replay_ = false;
    bool warned_no_resident_ = false;
    mutable std::mutex mu_; // error_, owner_text_, queues_ while they are made or closed
    std::condition_variable cv_;
    Status error_;
    std::string owner_text_;

    cdcflow_metric *m_events_ = nullptr;
    cdcflow_metric *m_applied_ = nullptr;
    cdcflow_metric *m_rejected_ = nullptr;
    cdcflow_metric *m_duplicates_ = nullptr;
    cdcflow_metric *m_dropped_ = nullptr;
    cdcflow_metric *m_batches_ = nullptr;
    cdcflow_metric *m_checkpoint_ = nullptr;
    cdcflow_metric *m_owner_ = nullptr;
    cdcflow_metric *m_takeovers_ = nullptr;
    cdcflow_metric *m_replayed_ = nullptr;
};

} // namespace cdcflow::host

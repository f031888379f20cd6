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
// Partitions a consumer group assigns (ABI 5, a source whose plugin declares
// CDCFLOW_PLUGIN_GROUP_PARTITIONS): the host claims no checkpoint at start
// (the sink's acquire is told CDCFLOW_OWNERSHIP_PER_PARTITION), reads none
// and replays nothing; the source reports each rebalance through
// partitions_changed, on its own thread during poll. change_partitions()
// then waits until every batch in flight came back committed (taking them
// back as the source loop does), so every stage is idle, and calls each
// transform's and then the sink's partitions callback on the source's
// thread: the sink gives revoked partitions up and claims assigned ones,
// reporting their committed positions; stateful transforms are then
// rebuilt from the source's replay of the assigned partitions' history,
// through the source's (empty) batch. The batches' queues give the
// happens-before between the stage threads' last calls and these.
//
// Shutdown: request_stop() makes the source stop reading; it then sends an
// end-of-stream marker that each stage forwards after its in-flight work, so
// everything read is committed. A fatal error in any stage closes every
// queue instead (nothing more is committed; the next start replays from the
// sink's checkpoint). A stop also ends a standby's wait and any retry wait
// or open breaker at once: the stage that was waiting then abandons what it
// held (nothing more is committed, every queue closes), the run ends cleanly
// (OK, with a WARN line) and the next start replays it from the checkpoint.
// No retry or breaker extends a stop.
//
// Retries and breakers (RetryPolicy, BreakerPolicy in pipeline.hpp): a call
// that answers CDCFLOW_ERR_RETRY is tried again after an exponential backoff
// with jitter; after the stage's breaker.failures consecutive failures its
// breaker opens (the stage's thread waits out the cool-down, upstream fills
// its queue and blocks: back pressure), then half-open: one probe. With the
// breaker disabled (failures 0), past retry.max_attempts the pipeline fails
// with the stage's message. Any other failure is not retried.
//
// Poison events: when a transform's or sink's process answers
// CDCFLOW_ERR_EVENT or CDCFLOW_ERR_INTERNAL, the batch is bisected
// (isolate()): process is called on parts of it, left before right, down to
// the single events that fail on their own, which are marked REJECTED with
// the stage's message. A part is shown to the plugin as a batch by rotating
// its events (and their parsed payloads) to the front and setting the
// count (PartView), then rotated back: the normal path pays nothing. A sink
// commits each successful part with its checkpoint; an isolated event's dead
// letter goes out with the next part it calls (or one last call), so that
// positions committed only rise and a batch whose every event fails is a
// stage failure with nothing of it committed.
//
// Deferred commits (ABI 6, a sink whose plugin declares
// CDCFLOW_PLUGIN_DEFERRED_COMMIT, e.g. kafka_sink waiting for Kafka's
// acknowledgements): such a sink's OK from process means "accepted", not
// "durable". Its thread keeps each accepted batch in a FIFO with the number
// of OK process calls at its end (isolation may call process several times
// per batch; failed calls do not count) and hands it on to the source
// (committed positions, in-flight accounting, the committed metrics) only
// once settle's durable count covers it. While the FIFO is below
// deferred_depth_ and input waits, it processes the next batch; otherwise it
// calls settle, parked; with an empty FIFO it blocks on its input queue as
// any sink. End of stream settles everything before flush; a stop abandons
// what is not durable (nothing past the last durable call is committed: the
// next start replays it); a settle failure fails the pipeline.
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
#include <map>
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

// The wait before retry number `retry` (1-based) of one call, before jitter:
// backoff_ms doubled per retry, at most max_backoff_ms.
uint32_t retry_backoff_ms(const RetryPolicy &p, uint32_t retry);
// `ms` times a random factor in [1 - jitter, 1] (jitter is clamped to 0..1),
// from a PRNG of the calling thread's own (no lock, no shared state).
uint32_t jittered_ms(uint32_t ms, double jitter);

// One stage as /health shows it.
struct StageReport {
    std::string id;
    std::string plugin;
    std::string kind;  // "source", "transform", "sink"
    std::string state; // "idle" (not started), "running", "retrying", "open" (breaker), "failed", "stopped"
    BreakerState breaker = BreakerState::closed;
    uint64_t retries = 0;      // calls retried since start
    uint64_t trips = 0;        // times the breaker opened
    uint64_t poison = 0;       // events dead-lettered by isolation (poison events)
    uint64_t bisect_calls = 0; // process calls made to isolate them
    std::string last_error;    // the stage's last failure, "" if none
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

// Loads the plugins a pipeline names (its plugin_path first) and checks the
// pipeline against their schemas (defaults filled in): what Runtime::create
// does before it creates anything, for commands that read a checked
// pipeline without starting it (verify, migrate --cleanup). Errors as
// create's (CDCFLOW_ERR_CONFIG, "FILE:LINE:COL: ...").
Result<std::map<std::string, std::shared_ptr<LoadedPlugin>>> load_and_check(PipelineDef &def,
                                                                            PluginRegistry &registry);

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

    // Change notification (the embedded host's state callbacks wait on it
    // instead of sampling health()): a counter bumped, with a wake-up,
    // whenever what health() shows apart from the totals may have changed:
    // the run's state, role or readiness, a stage's state or breaker, a last
    // error. Bumps happen on state transitions only, never per batch, so a
    // running pipeline pays nothing for it. Thread-safe.
    uint64_t change_epoch() const { return epoch_.load(std::memory_order_acquire); }
    // Parks until change_epoch() differs from `seen` or `timeout` passed;
    // returns the epoch then. An idle pipeline wakes nobody.
    uint64_t wait_for_change(uint64_t seen, std::chrono::milliseconds timeout) const;
    // A bump from outside (the embedded host's own phase changed): wakes
    // every wait_for_change.
    void notify_change();

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
        // ABI 5 (partitions a consumer group assigns), null likewise.
        cdcflow_status (*partitions)(void *, const cdcflow_partitions *, char *, uint64_t) = nullptr;
        // ABI 6: a sink that declares CDCFLOW_PLUGIN_DEFERRED_COMMIT
        // (deferred) and reports what became durable through settle.
        cdcflow_status (*settle)(void *, uint32_t, uint64_t *, char *, uint64_t) = nullptr;
        bool deferred = false;
        // Stage thread: process calls that returned OK since the instance
        // was created (a deferred sink's settle counts in these).
        uint64_t accepted = 0;
        void *instance = nullptr;
        cdcflow_ctx ctx;
        cdcflow_config cfg;
        // Series of the stage's metric families (runtime_metrics.cpp); the
        // marks it makes are counted through ctx (rejected, duplicates, dropped).
        cdcflow_metric *batches = nullptr;
        cdcflow_metric *passed = nullptr;  // events_total{outcome="passed"|"applied"}
        cdcflow_metric *skipped = nullptr; // events_total{outcome="skipped"}: came marked
        cdcflow_metric *errors = nullptr;
        cdcflow_metric *dead_letters = nullptr; // its rejections, once the sink wrote them
        Histogram *duration = nullptr;          // each poll / process call, microseconds
        Histogram *batch_events = nullptr;      // the source: events per batch
        // What health() reports (written by the stage's thread, read by any).
        std::atomic<bool> started{false};  // start succeeded, stop not yet called
        std::atomic<bool> stopped{false};  // stop was called
        std::atomic<bool> retrying{false}; // the last call failed and is being retried
        std::atomic<int> breaker{0};       // BreakerState
        // Every call made again after a transient failure (backoff retries
        // and half-open probes): cdcflow_retries_total.
        std::atomic<uint64_t> retries{0};
        // Transitions to open (a failed probe re-opens: counted too):
        // cdcflow_breaker_trips_total.
        std::atomic<uint64_t> trips{0};
        // Events dead-lettered because they failed on their own (isolate()).
        std::atomic<uint64_t> poison{0};
        // process calls made on parts of batches to isolate them.
        std::atomic<uint64_t> bisect_calls{0};
        // Stage thread only: events isolated in a row with none succeeding
        // in between (bounded by the stage's poison_limit).
        uint32_t poison_run = 0;
        std::string last_error; // under Runtime::mu_
        uint64_t last_error_unix_ms = 0;
    };
    struct Outcome {
        cdcflow_status code = CDCFLOW_OK;
        std::string message;
        // A stop request ended a retry wait or an open breaker: not a
        // failure of the stage, the run ends cleanly (see abandon()).
        bool stopped = false;
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
    // Through batch `b` (empty; left empty). `first`: the incarnation's
    // start (the replayed-events gauge starts over), else a rebalance.
    Status restore_state(const std::vector<cdcflow_position> &checkpoint, Batch *b, bool first);
    // The source's partitions_changed (ABI 5); the source's thread.
    cdcflow_status change_partitions(Stage &src, const cdcflow_partitions &change, std::string &err);
    // Calls f(err, err_len) -> cdcflow_status (a plugin call that writes a
    // message into err on failure), retrying CDCFLOW_ERR_RETRY under the
    // stage's policy. Counts failures in the stage's errors metric and logs
    // each retry. A template, not std::function: it wraps every poll and
    // every batch, and must not allocate.
    // With the stage's breaker enabled, transient failures open it instead
    // of failing (the stage waits, then probes); see BreakerPolicy.
    template <typename F> Outcome call_with_retry(Stage &st, const char *what, F &&f);
    // After a whole batch failed with a poison code (first): bisects it and
    // dead-letters the events that fail on their own. OK when the batch is
    // done (every other event processed, a sink's parts committed); else the
    // outcome that fails the stage.
    Outcome isolate(Stage &st, Batch *b, bool is_sink, const Outcome &first);
    struct Isolation;
    Outcome split(Stage &st, Batch *b, bool is_sink, uint32_t lo, uint32_t hi, const Outcome &failed,
                  Isolation &iso);
    // process on events [from, to) of a batch of n, shown as a batch of its own.
    // One process call on b as it is (DROPPED hidden from ABI 1/2 stages,
    // timed, retried under the stage's policy).
    Outcome process_batch(Stage &st, Batch *b);
    Outcome process_part(Stage &st, Batch *b, uint32_t from, uint32_t to, uint32_t n);
    // A stop request ended `st`'s retry wait or open breaker: it drops what
    // it held (logged as a WARN with `why`), every queue closes so that
    // nothing more is committed, and the run ends OK.
    void abandon(Stage &st, const std::string &why);
    void source_loop(Stage &st, bool drain);
    // The soft memory limit (source thread): reads the resident memory at
    // most every resident_interval_, logs and counts where the throttle
    // starts and ends. True while the source is to slow down.
    bool memory_throttled();
    void recycle(Stage &src, Batch *b);
    // A committed batch the source took back early (its positions reported):
    // kept in spare_ for the next fill.
    void take_back(Stage &src, Batch *b);
    void stage_loop(size_t index);
    // One batch through a transform or sink (process_batch, isolate on a
    // poison code); counts it. False when the stage failed or a stop
    // abandoned the run (already reported): the loop ends.
    bool process_whole(Stage &st, Batch *b, bool is_sink);
    // At the end of the stream; false (the stage failed) when flush failed.
    bool flush(Stage &st);
    // A deferred-commit sink's loop (ABI 6): keeps accepted batches until
    // settle reports them durable, takes the next batch meanwhile.
    void deferred_loop(Stage &st, BatchQueue &in, BatchQueue &out);
    void fail(Stage &st, const std::string &what, cdcflow_status code);
    // A stage thread's whole body. Whatever escapes it (memory that ran out
    // while the host itself allocated, say for the message of a stage's
    // error) fails the pipeline instead of ending the process through
    // std::terminate.
    template <class F> void stage_thread(Stage &st, F &&body) noexcept;
    // fail() when memory ran out: needs no memory (Status::OutOfMemory);
    // the log line is best effort.
    void fail_out_of_memory(Stage &st) noexcept;
    // A stage's end in a run: stop called once, after any partition change
    // (its loop's end, or stage_thread's after a throw skipped that).
    void end_stage(Stage &st) noexcept;
    // Inside run's catch: the run's failure, with the batches and queues
    // released as run_once's end would.
    Status run_threw() noexcept;
    void notify_committed(Stage &src, Batch *b);
    // After a stage processed b (runtime_metrics.cpp): its events by outcome.
    static void count_processed(Stage &st, const Batch *b, uint32_t marked_before,
                                uint32_t overridden_before);
    // After the sink committed b: the totals, dead letters, end-to-end latency.
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
    // Source thread: committed batches taken back early, used last in, first
    // out (the batches in use stay the few already grown to the backlog's
    // size); and the batch being filled while the source polls (null between).
    std::vector<Batch *> spare_;
    Batch *polling_ = nullptr;
    // The source's plugin declares CDCFLOW_PLUGIN_GROUP_PARTITIONS.
    bool group_partitions_ = false;
    // A deferred-commit sink (ABI 6): how many accepted batches it may hold
    // before it waits for settle (2); 0 for any other sink. See create().
    size_t deferred_depth_ = 0;
    // Under mu_: change_partitions is calling other stages' plugins on the
    // source's thread; their threads wait for it before calling stop.
    bool in_change_ = false;
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
    std::atomic<bool> abandoned_{false}; // a stop ended a retry wait or breaker: see abandon()
    std::atomic<bool> running_{false};
    // The incarnation's stage threads ended (the end of a drain, or a stop)
    // and run() has not returned yet: "draining", not "starting" again.
    std::atomic<bool> wound_down_{false};
    std::atomic<bool> standby_{false};
    std::atomic<bool> owner_{false};
    std::atomic<bool> finished_{false};
    bool warned_unfenced_ = false;
    bool warned_no_replay_ = false;
    bool warned_no_resident_ = false;
    // change_epoch(): bumped under change_mu_ (a leaf lock: taken last, by
    // changed() alone) so that wait_for_change cannot miss a wake-up.
    std::atomic<uint64_t> epoch_{0};
    mutable std::mutex change_mu_;
    mutable std::condition_variable change_cv_;
    void changed() { notify_change(); }
    mutable std::mutex mu_; // error_, owner_text_, queues_ while they are made or closed
    std::condition_variable cv_;
    Status error_;
    std::string owner_text_;

    // The totals (counted at the sink; Totals). Not metric series: a stage
    // can never be named so that it adds to them.
    struct {
        std::atomic<uint64_t> events{0}, applied{0}, rejected{0}, duplicates{0}, dropped{0}, batches{0};
    } totals_;
    // runtime_metrics.cpp: the pipeline's series and the scrape-time collector.
    void make_metrics();
    void collect(Collect &out) const;
    int collector_ = 0;
    cdcflow_metric *m_commits_ = nullptr;
    Histogram *m_latency_ = nullptr; // event timestamp to commit, microseconds
    cdcflow_metric *m_checkpoint_ = nullptr;
    cdcflow_metric *m_owner_ = nullptr;
    cdcflow_metric *m_takeovers_ = nullptr;
    cdcflow_metric *m_replayed_ = nullptr;
};

} // namespace cdcflow::host

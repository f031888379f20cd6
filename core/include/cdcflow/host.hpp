// cdcflow/host.hpp: run a cdcflow pipeline inside a C++ application.
//
// A Host runs one pipeline the way `cdcflow run` does (the same file, checks
// and "FILE:LINE:COL: what" errors as `cdcflow validate`, the same stages,
// exactly-once effect, /health JSON and /metrics families), on threads of
// its own, started and stopped by the application. It handles no signal
// and never exits the process; it serves HTTP only when asked (serve()):
// the application may serve health_json() and metrics_text() where it
// wants them instead. The C API (cdcflow/host.h) is this one through a C
// waist, for other languages. `cdcflow run` is built on this class too.
//
// Failures: every call answers a cdcflow::Status (cdcflow/status.hpp) with a
// one-line message; no exception leaves this API. exit_code() turns a
// Status into the CLI's exit code (cdcflow/host.h CDCFLOW_EXIT_*):
//   kInvalidArgument  2  misuse: a call the host's state does not allow
//   kConfig           3  a bad pipeline file, plugin or config
//   kUnavailable      4  a stop or drain did not finish in time (it goes on)
//   kTransient        1  a drain cut short by a stop from another thread
//   kOwned, kFenced   6  another host owns the checkpoint (when_owned: refuse)
//   anything else     1  the pipeline failed (or could not be created for a
//                        reason outside the file: a database that cannot open)
// A run's own failure whose code would read as one of 2, 3 or 4 is answered
// as kInternal with its message, so that it maps to 1 as in the CLI.
//
// Life cycle: open -> start or drain -> stop -> destroy. A Host runs once;
// start or drain after a stop is kInvalidArgument (open a new Host).
//
// Thread safety: every member function may be called from any thread,
// concurrently; the destructor must not race any other call. Ownership: the
// application owns the Host (std::unique_ptr); the destructor is close()
// with its default timeout: it stops a running pipeline first and is
// bounded (see close(): a plugin stuck in a call is abandoned, not waited
// for). From the moment the destructor (or close()) begins, no state
// callback is started (so a running host's final state is not delivered:
// stop() first to see it); one already running may still call into the
// Host until it returns, and close waits for it.
//
// Link: libcdcflow-host.so (`pkg-config --cflags --libs cdcflow-host`),
// built with the same compiler and standard library as the application
// (std::string and std::function cross this header; the C API does not
// have that constraint).
//
// Log settings are the process's, not the host's: open() applies the
// pipeline's `log:` (level, format, the plugins' line rate) and its name on
// every JSON line to the whole process, unless CDCFLOW_LOG_LEVEL /
// CDCFLOW_LOG_FORMAT chose the level / format. With two hosts in one
// process the last one opened wins for both (a `log: {level: warn}` in one
// silences the other's info lines, and JSON lines carry the last opened
// pipeline's name): give the hosts of one process the same `log:`, or set
// the environment variables. A host does not survive fork(); the search
// order for plugins: cdcflow/host.h.
#pragma once

#include <cdcflow/host.h>
#include <cdcflow/status.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::embed {

struct HostOptions {
    // Folders searched for plugins before CDCFLOW_PLUGIN_PATH and the shipped
    // plugins next to the library (the pipeline's own plugin_path comes
    // before all of these).
    std::vector<std::string> plugin_path;
};

// What a state callback is told: the moment's /health content, in parts.
struct StateChange {
    std::string state; // "starting", "standby", "running", "draining", "stopped", "failed"
    std::string role;  // "owner", "standby", "" before the first attempt
    bool healthy = true;
    bool ready = false;
    std::string health_json; // /health's document
};

// Where a migration (or its verification) is: `done` legacy rows of
// `total`. For migrate(), total is what was left to migrate when it began
// (done may pass it: rows the application wrote meanwhile).
struct MigrationProgress {
    uint64_t done = 0;
    uint64_t total = 0;
};
using ProgressFn = std::function<void(const MigrationProgress &)>;

// What migrate() did, as `cdcflow migrate` prints it.
struct MigrationSummary {
    std::string migration;                 // the outbox_sink's checkpoint_name
    uint64_t migrated_this_run = 0;        // legacy rows this run turned into outbox events
    uint64_t migrated = 0;                 // in all, this run's included
    uint64_t unmappable_this_run = 0;      // recorded as unmappable by this run
    uint64_t unmappable = 0;               // in all
    uint64_t late = 0;                     // rows that arrived below the progress point
    uint64_t open_gaps = 0;                // id gaps still watched
    std::optional<int64_t> last_legacy_id; // the progress point (nullopt: nothing migrated yet)
};

// What verify() found: `cdcflow verify`'s report.
struct VerifyResult {
    bool ok = false;     // nothing missing, duplicated or foreign
    std::string text;    // the report as `cdcflow verify` prints it
    std::string json;    // as `cdcflow verify --json`
    std::string failure; // one line when !ok
};

// Metric labels: {{"stage", "project"}, {"outcome", "applied"}}.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// The run's totals, counted at the sink after each committed batch: every
// event that entered is exactly one of applied, rejected, duplicates,
// dropped (the summary line of `cdcflow run`).
struct RunTotals {
    uint64_t events = 0;
    uint64_t applied = 0;
    uint64_t rejected = 0;
    uint64_t duplicates = 0;
    uint64_t dropped = 0;
    uint64_t batches = 0;
};

// How a finished run ended, as `cdcflow run` reports it (its "stop" log
// line and its exit code).
struct RunEnd {
    std::string how;         // "drained", "stopped", "failed", "refused" (another host owns the checkpoint)
    int exit_code = 0;       // `cdcflow run`'s exit code for it: 0, 1 or 6
    bool stop_asked = false; // stop() or request_stop() was called during the run
    Status status;           // the run's own status (OK unless it failed or was refused)
};

class CDCFLOW_HOST_API Host {
public:
    // Reads and checks a pipeline file, loads its plugins and creates its
    // stages (databases opened); starts nothing.
    static Result<std::unique_ptr<Host>> open(const std::string &pipeline_path, const HostOptions &opts = {});
    // The same from YAML text; `name` stands for the file in messages.
    static Result<std::unique_ptr<Host>>
    open_yaml(const std::string &yaml, const std::string &name = "<string>", const HostOptions &opts = {});
    ~Host();
    Host(const Host &) = delete;
    Host &operator=(const Host &) = delete;

    // Starts the pipeline on its own threads and returns: OK when running (or
    // standing by while another live host owns the checkpoint: state()).
    Status start();
    // Starts if needed and runs until the source is drained and everything
    // read is committed (`cdcflow run --drain`), then stops. Waits at most
    // `timeout` (zero: no bound); kUnavailable when not done by then (the
    // drain goes on; calling drain again waits for it again); kTransient
    // when a stop() from another thread cut it short (the source was not
    // drained). A host started with start() is not drained: kInvalidArgument.
    Status drain(std::chrono::milliseconds timeout);
    // Graceful stop (everything read is committed); waits at most `timeout`
    // (zero: no bound). OK: stopped cleanly; kUnavailable: not in time (it
    // goes on stopping; the destructor waits for it); the run's failure if
    // it failed. Calling it again answers the same; a host never started
    // stops at once (OK).
    Status stop(std::chrono::milliseconds timeout);
    // Asks for a graceful stop and returns at once (safe from any thread,
    // e.g. a signal-watching one); stop(), wait() or drain() wait for it. On
    // a host not started yet, the run that start() or drain() begins then
    // ends at once (as `cdcflow run` does with a signal during its start-up).
    void request_stop();
    // Waits at most `timeout` (zero: no bound) for the run to end by itself
    // or by a stop asked elsewhere, and answers as stop() would then.
    // kUnavailable when not ended in time; kInvalidArgument when never
    // started.
    Status wait(std::chrono::milliseconds timeout);
    // Stops a running pipeline (as stop) and ends the host's threads, bounded:
    // after `timeout` (zero: the pipeline's settings.shutdown_timeout_ms and
    // one second more, the runtime's own graceful bound plus its threads'
    // end, so that a slow but healthy stop is not taken for a stuck one) a
    // pipeline whose plugin is stuck in a call (never returning from process,
    // say) is abandoned, not waited for: its threads are left running on
    // their own, and the runtime, the plugins' libraries (their code stays
    // mapped) and the host's memory are deliberately leaked for the rest of
    // the process. Nothing is committed past what was durable: the stuck
    // stage holds its batch, the next start replays it from the checkpoint.
    // OK: everything stopped; kUnavailable (exit code 4, as `cdcflow run`
    // exits when its shutdown times out): abandoned, with one ERROR log line
    // and the message naming the stuck stage. The cost of abandoning: a
    // thread and the pipeline's memory and file descriptors (its databases
    // stay open) until the process exits; open a new Host to run again.
    // After close() only the reading functions may be called (start, drain,
    // migrate answer kInvalidArgument); a second close() answers the first's
    // status, waiting for it when it is still under way (from a state
    // callback while another thread closes: kInvalidArgument at once, since
    // that close waits for the callback). on_run_end's function is not
    // called once close() began (an abandoned run that ends later calls no
    // application code). The destructor calls it when the application did
    // not.
    Status close(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

    // The run's totals so far (zero before the start).
    RunTotals totals() const;
    // How the run ended, once it did (nullopt before: never started, or
    // still running; a host stopped before it started never ran).
    std::optional<RunEnd> run_end() const;
    // The pipeline's name (its `pipeline:` key).
    std::string name() const;

    // Serves /health, /ready and /metrics over HTTP as `cdcflow run --http`
    // does (one I/O thread of the host's own, a deadline per request, a
    // connection cap: the pipeline's `http:` settings), until the run ends
    // (the endpoints answer through a drain) or the host closes. `address`:
    // HOST:PORT, [IPv6]:PORT, :PORT or PORT (127.0.0.1); port 0 picks a free
    // one; "" serves on the pipeline's http.listen (nothing when it has
    // none). Call before start() or drain(), once. The bound address
    // ("127.0.0.1:40123"; "" when nothing is served), or kInvalidArgument:
    // an address that does not parse or cannot be bound (for the pipeline's
    // own, the message ends with "(http.listen at FILE:LINE:COL)").
    Result<std::string> serve(const std::string &address = "");
    // Called once on the host's runner thread when the run has ended and its
    // endpoints stopped, before its "stop" log line and before stop(),
    // wait() or drain() return: a front end's last words about the run
    // (`cdcflow run` prints its summary line there). It may call the reading
    // functions and totals() (run_end() is not set yet: it is decided just
    // after), never stop/wait/drain/close (a deadlock). Set it before
    // start() or drain(); an exception from it is logged and ignored.
    void on_run_end(std::function<void()> fn);

    // For a migration pipeline (a `migrator` stage and an `outbox_sink`,
    // README "Migrating a legacy outbox"): `cdcflow migrate` through the
    // API. Counts what is left, drains (as drain(), same timeout rules: a
    // later migrate() waits for one that timed out, and one that finished
    // answers again), then reads the result
    // back and checks that no legacy row at or below the progress point is
    // missing. `progress` is called on the caller's thread, about every
    // 200 ms and once at the end (not while the host holds a lock: it may
    // call the reading functions). kConfig: not a migration pipeline, or
    // the target was migrated under another namespace; kInternal: rows are
    // missing (run verify()); else as drain() (kTransient: cut short by a
    // stop()). Not on a host started with start() (kInvalidArgument).
    Result<MigrationSummary> migrate(std::chrono::milliseconds timeout, const ProgressFn &progress = {});
    // `cdcflow verify` through the API: the integrity report, read-only,
    // at any time (while running too). `limit`: ids listed per class.
    // `progress` is called before the pass ({0, total}) and after it
    // ({total, total}): the report is one pass with no finer hook yet.
    Result<VerifyResult> verify(bool allow_other_events = false, size_t limit = 10,
                                const ProgressFn &progress = {}) const;

    // The reading functions below may be called from a state callback.
    // "idle" before start, then as StateChange::state (never "starting"
    // again once past it).
    std::string state() const;
    StateChange snapshot() const;
    std::string health_json() const;
    // /metrics's page (Prometheus text format 0.0.4): the pipeline's
    // families, the process's and cdcflow_build_info.
    std::string metrics_text() const;
    // One stored series' value, or nullopt; and the sum of every stored
    // series of `family` whose labels include `subset`. Series a scrape
    // computes (queue depths, process memory) are only in metrics_text().
    std::optional<double> metric(std::string_view family, const MetricLabels &labels = {}) const;
    double metric_sum(std::string_view family, const MetricLabels &subset = {}) const;

    // Calls `fn` on every change of state, role, health, readiness or a
    // stage's state or breaker, on the host's own watcher thread, one call at
    // a time, never while the host holds a lock: `fn` may call any member,
    // and may even destroy the Host (the watcher then ends on its own; no
    // callback is called once the destructor returned, not even the final
    // state). The runtime notifies every change (no sampling: a host whose
    // state does not change wakes no thread), and the watcher takes a fresh
    // snapshot at once, so a state that lasts as long as it takes a parked
    // thread to wake up (microseconds to a millisecond; a breaker open for
    // its cool-down, say) is delivered; states that follow each other
    // faster than that are delivered as the last of them. The state moves
    // only forward through a run: idle, starting, [standby,] running,
    // draining, then stopped or failed. One exception: a host fenced out of
    // its checkpoint (another host took it over) steps down, which shows as
    // "failed" (the last error says fenced), and then stands by and starts
    // again ("standby", "starting", ...): "failed" is final only once stop()
    // or drain() returned or run_end() is set. The final "stopped" or
    // "failed" is always delivered, before stop() or drain() returns: their
    // caller must not hold a lock that `fn` takes (a deadlock). `fn` must
    // return normally (an exception is caught, logged and ignored; no
    // longjmp). Returns an id for unsubscribe.
    int subscribe(std::function<void(const StateChange &)> fn);
    // Once it returns, `id`'s callback is not running (unless called from
    // it) and is not called again.
    void unsubscribe(int id);

    // The Status's CLI exit code (table above).
    static int exit_code(const Status &st);

private:
    struct Impl;
    friend struct HostFactory;
    explicit Host(std::shared_ptr<Impl> impl);
    // Shared with the watcher thread, which may outlive a Host destroyed
    // from one of its own callbacks.
    std::shared_ptr<Impl> impl_;
};

} // namespace cdcflow::embed

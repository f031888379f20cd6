/* cdcflow/host.h: run a cdcflow pipeline inside an application (the C API).
 *
 * The hourglass's waist, as plugin.h is the plugins': C only, an opaque
 * handle, fixed-width integers, no exception and no C++ type crosses it, so
 * that any language with a C FFI (Python's ctypes, Go's cgo, Rust...) can
 * embed cdcflow. Implemented by libcdcflow-host.so over the C++ API
 * (cdcflow/host.hpp); `pkg-config --cflags --libs cdcflow-host`.
 *
 * A host runs one pipeline, the same as `cdcflow run PIPELINE.yaml` would:
 * the same file, the same checks and "FILE:LINE:COL: what" errors as
 * `cdcflow validate`, the same stages and exactly-once effect, the same
 * /health JSON and /metrics families. It does not serve HTTP (the
 * application serves what it reads here), handle signals, or exit.
 *
 * Life cycle: open -> start or drain -> stop -> close. A host runs once:
 * after it stopped (or a drain finished), open a new one to run again.
 *
 * Return codes are the CLI's exit codes (README, "Exit codes"), so a script
 * or binding can treat an embedded run and `cdcflow run` alike:
 *   CDCFLOW_EXIT_OK (0), CDCFLOW_EXIT_FAILURE (1: the pipeline failed while
 *   running, or could not be created for a reason outside the file: a
 *   database that cannot be opened), CDCFLOW_EXIT_USAGE (2: misuse: a NULL
 *   handle or argument, a call the host's state does not allow, e.g. start
 *   after stop), CDCFLOW_EXIT_INVALID (3: a bad pipeline file, plugin or
 *   config), CDCFLOW_EXIT_TIMEOUT (4: a stop or drain did not finish in time;
 *   the host goes on and a later call can wait again), CDCFLOW_EXIT_OWNED
 *   (6: another host, in this process or another, owns the checkpoint and
 *   settings.when_owned is refuse).
 *
 * Messages: every `err` is one line of UTF-8, NUL-terminated, cut to fit
 * `err_len` (err may be NULL when err_len is 0); "" on success.
 *
 * Thread safety: every function may be called from any thread, concurrently
 * with the others, on the same handle, except cdcflow_host_close, after
 * which the handle is gone (no call may race it or follow it).
 *
 * Plugins are searched, first match wins, in: the pipeline's own
 * plugin_path, then (C++ only) HostOptions::plugin_path, then
 * CDCFLOW_PLUGIN_PATH, then the shipped plugins next to the library itself
 * (<libdir>/cdcflow/plugins of its install tree, wherever it was moved to;
 * build/plugins for the library in the build tree only). The library's own
 * folder is resolved once, when it is loaded, so a library loaded by a
 * relative path keeps finding its plugins after a chdir; when it cannot be
 * resolved, a "plugin not found" message says why.
 *
 * Logs: the host writes its log lines to stderr (README, "Logs"; the level
 * and format from CDCFLOW_LOG_LEVEL / CDCFLOW_LOG_FORMAT, else the
 * pipeline's `log:`). These settings are the process's, not the host's:
 * with two hosts in one process, the last one opened sets the level, the
 * format and the pipeline name written on every JSON line (so a `log:
 * {level: warn}` in one silences the other's info lines). Give the hosts of
 * one process the same `log:`, or set CDCFLOW_LOG_LEVEL / _FORMAT. A process
 * whose stderr may be a closed pipe should ignore SIGPIPE, as the CLI does;
 * the library leaves the process's signals alone.
 *
 * fork: a host does not survive fork(): its threads are not in the child.
 * A child must not call any function of this API on a handle opened before
 * the fork (not even cdcflow_host_close: it would wait for threads that do
 * not exist); it may exec, or open hosts of its own. Fork before opening.
 */
#ifndef CDCFLOW_HOST_H
#define CDCFLOW_HOST_H

#include <stddef.h>
#include <stdint.h>

#if defined(CDCFLOW_HOST_BUILDING)
#define CDCFLOW_HOST_API __attribute__((visibility("default")))
#else
#define CDCFLOW_HOST_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The CLI's exit codes, and this API's return codes. */
#define CDCFLOW_EXIT_OK 0
#define CDCFLOW_EXIT_FAILURE 1
#define CDCFLOW_EXIT_USAGE 2
#define CDCFLOW_EXIT_INVALID 3
#define CDCFLOW_EXIT_TIMEOUT 4
#define CDCFLOW_EXIT_REFUSED 5 /* `cdcflow produce` only: some input lines were refused */
#define CDCFLOW_EXIT_OWNED 6

typedef struct cdcflow_host cdcflow_host;

/* Opens a pipeline file: reads and checks it, loads its plugins and creates
 * its stages (databases opened), starts nothing. NULL on failure, with a
 * one-line message in err ("FILE:LINE:COL: what" for a mistake in the file).
 * A NULL or empty path is misuse (2). */
CDCFLOW_HOST_API cdcflow_host *cdcflow_host_open(const char *pipeline_path, char *err, size_t err_len);
/* The same from YAML text; `name` stands for the file in messages (NULL:
 * "<string>"). ${VAR} is interpolated from the environment as for a file. */
CDCFLOW_HOST_API cdcflow_host *cdcflow_host_open_string(const char *yaml, const char *name, char *err,
                                                        size_t err_len);
/* The two above, also answering the failure's return code in *code (when
 * code is not NULL): 0 on success; 2 misuse (NULL or empty path); 3 a bad
 * pipeline file, plugin or config; 1 anything else (a database that cannot
 * be opened). */
CDCFLOW_HOST_API cdcflow_host *cdcflow_host_open_ex(const char *pipeline_path, int *code, char *err,
                                                    size_t err_len);
CDCFLOW_HOST_API cdcflow_host *cdcflow_host_open_string_ex(const char *yaml, const char *name, int *code,
                                                           char *err, size_t err_len);

/* Starts the pipeline on its own threads and returns; 0: running (or, when
 * another host owns the checkpoint, standing by: see the state). */
CDCFLOW_HOST_API int cdcflow_host_start(cdcflow_host *h, char *err, size_t err_len);

/* Starts if needed, runs until the source is drained and everything read is
 * committed (like `cdcflow run --drain`), then stops; waits at most
 * timeout_ms (0: without a bound). 4 when not done in time: the drain goes
 * on, and a later drain waits for it again. 1 when a cdcflow_host_stop
 * (from another thread) cut the drain short: what was read is committed,
 * but the source was not drained. A host started with cdcflow_host_start
 * is not drained (2): stop it and open a new one. */
CDCFLOW_HOST_API int cdcflow_host_drain(cdcflow_host *h, uint32_t timeout_ms, char *err, size_t err_len);

/* Graceful stop: the source stops reading, everything read is committed.
 * Waits at most timeout_ms (0: without a bound); 0: stopped cleanly; 4: not
 * in time (the stop goes on; cdcflow_host_close waits for it); 1 or 6: the
 * run had failed. A second stop answers the same as the first; stopping a
 * host that never started is 0. The message: cdcflow_host_last_error. */
CDCFLOW_HOST_API int cdcflow_host_stop(cdcflow_host *h, uint32_t timeout_ms);

/* /health's JSON (state, role, stages, breakers, last error, totals) into
 * buf, as snprintf does: at most buf_len - 1 bytes (cut at a UTF-8
 * character boundary) and a NUL, whenever buf_len > 0. Returns the bytes
 * the whole text needs, NUL included; more than buf_len means buf holds a
 * cut copy. A running host's text can grow between two calls, so loop:
 *     size_t n = 4096; char *b = NULL;
 *     for (;;) { b = realloc(b, n); size_t need = cdcflow_host_health_json(h, b, n);
 *                if (need <= n) break; n = need; }
 * 0 for a NULL handle. */
CDCFLOW_HOST_API size_t cdcflow_host_health_json(cdcflow_host *h, char *buf, size_t buf_len);

/* /metrics's page (Prometheus text format 0.0.4), returned as health_json. */
CDCFLOW_HOST_API size_t cdcflow_host_metrics_text(cdcflow_host *h, char *buf, size_t buf_len);

/* The last failure's message of this host (a stop's, a run's), as err. */
CDCFLOW_HOST_API size_t cdcflow_host_last_error(cdcflow_host *h, char *buf, size_t buf_len);

/* Called whenever the state, the role, health, readiness or a stage's state
 * or breaker changes, with the new state ("starting", "standby", "running",
 * "draining", "stopped", "failed"; never "starting" again once past it) and
 * /health's JSON, both valid only during the call. Called on the host's own
 * watcher thread, one call at a time, never while the host holds a lock:
 * the callback may call any function of this API, cdcflow_host_close
 * included (the watcher then ends on its own, and no callback of that host
 * is called after the close, not even the final state). Every change wakes
 * the watcher at once (it is notified, not sampling; an idle host wakes no
 * thread), so a state as short as a thread's wake-up (a breaker open for a
 * few ms) is delivered; states that follow each other faster arrive as the
 * last of them. The state moves only forward through a run. The final
 * state ("stopped" or "failed") is always delivered, before a
 * stop or drain that saw the run end returns (after, when called from the
 * callback itself).
 *
 * Because a stop or drain waits for that final call, the caller of
 * cdcflow_host_stop, cdcflow_host_drain or cdcflow_host_close must not hold
 * a lock that the callback takes: that is a deadlock. The callback must
 * return normally: no longjmp out of it, and no exception or panic of the
 * calling language across it (an uncaught C++ exception is caught, logged
 * and ignored). */
typedef void (*cdcflow_host_state_fn)(void *user, const char *state, const char *health_json);
/* One callback per host: a new one replaces the old; NULL removes it. Once
 * this returns, the old callback is not running (unless this is called from
 * it) and is not called again. */
CDCFLOW_HOST_API int cdcflow_host_on_state(cdcflow_host *h, cdcflow_host_state_fn fn, void *user);

/* Progress of a migration or its verification: `done` legacy rows of
 * `total` (migrate: what was left when it began; done may pass it). */
typedef void (*cdcflow_host_progress_fn)(void *user, uint64_t done, uint64_t total);

/* For a migration pipeline (a migrator stage and an outbox_sink): `cdcflow
 * migrate` through the API. Counts what is left, drains as
 * cdcflow_host_drain (same timeout rules; a later call waits again), then
 * checks that no legacy row at or below the progress point is missing.
 * `fn` (may be NULL) is called on the caller's thread about every 200 ms
 * and once at the end. 0: done; 3: not a migration pipeline, or the target
 * was migrated under another namespace; 1: rows are missing (run
 * cdcflow_host_verify), a failure, or a stop cut it short; 2, 4, 6 as
 * drain. The summary ("N migrated this run, M in all; ...") in err on 0. */
CDCFLOW_HOST_API int cdcflow_host_migrate(cdcflow_host *h, uint32_t timeout_ms, cdcflow_host_progress_fn fn,
                                          void *user, char *err, size_t err_len);

/* `cdcflow verify --json` through the API, read-only, at any time: the
 * report's JSON into buf (the buffer protocol of cdcflow_host_health_json;
 * *needed, when not NULL, gets the size the whole needs), `fn` called
 * before and after the pass. 0: the report is ok; 1: it found something
 * wrong (err: what) or the databases could not be read; 3: not a migration
 * pipeline. `flags`: CDCFLOW_VERIFY_ALLOW_OTHER_EVENTS (the application's
 * own events in the outbox are fine). */
#define CDCFLOW_VERIFY_ALLOW_OTHER_EVENTS 1u
CDCFLOW_HOST_API int cdcflow_host_verify(cdcflow_host *h, uint32_t flags, cdcflow_host_progress_fn fn,
                                         void *user, char *buf, size_t buf_len, size_t *needed, char *err,
                                         size_t err_len);

/* Stops first if running, bounded by the pipeline's
 * settings.shutdown_timeout_ms and one second: a pipeline whose plugin is stuck in a call
 * is abandoned after it (see cdcflow_host_close_ex), then frees
 * everything. NULL is a no-op. From the moment close begins no state
 * callback is started (a running host's final "stopped" is not delivered:
 * cdcflow_host_stop first to see it); one already running may still call
 * into the handle until it returns, and close waits for it. */
CDCFLOW_HOST_API void cdcflow_host_close(cdcflow_host *h);

/* cdcflow_host_close with a bound and an answer: stops a running pipeline
 * (graceful), waits at most timeout_ms (0: the pipeline's
 * settings.shutdown_timeout_ms and one second, as cdcflow_host_close), then frees the
 * handle, whatever the answer. 0: everything stopped. 4 (as `cdcflow run`
 * exits when its shutdown times out): a plugin was stuck in a call (say,
 * process never returned); its threads are abandoned, not waited for, and
 * err names the stage. The cost: those threads go on, and the pipeline's
 * memory, open files and plugin libraries (kept loaded so that the stuck
 * code stays mapped) are leaked until the process exits; nothing past the
 * last commit was committed (the next start replays it). One ERROR log line
 * says so too. NULL is 2. cdcflow_host_close is this with 0 and no err.
 */
CDCFLOW_HOST_API int cdcflow_host_close_ex(cdcflow_host *h, uint32_t timeout_ms, char *err, size_t err_len);

/* "0.1.0": the library's version. */
CDCFLOW_HOST_API const char *cdcflow_host_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CDCFLOW_HOST_H */

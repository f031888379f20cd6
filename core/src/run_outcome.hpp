// How a pipeline run is reported, the same by `cdcflow run` and the
// embedded host (core/embed): its exit code (cdcflow/host.h CDCFLOW_EXIT_*,
// README "Exit codes") and its "start" and "stop" log events (README, "Logs").
//
// Thread-safety: any thread (log.hpp's functions are).
#pragma once

#include "pipeline.hpp"
#include "runtime.hpp"
#include <cdcflow/status.hpp>

#include <chrono>

namespace cdcflow::host {

// A pipeline that could not be created: the file's fault (3), or the
// environment's (1: a database that cannot be opened...).
int create_failure_code(const Status &st);
// Runtime::run's status: 0, 6 when another host owns the checkpoint, else 1.
int run_exit_code(const Status &st);

// The "start" event: what runs, and which build runs it.
void log_start(const PipelineDef &def);

// How a run that returned `st` ended: "refused" (another host owns the
// checkpoint), "failed", "stopped" (`stop_asked`: a signal, Host::stop),
// else "drained". The one place this is decided, for the CLI and the
// embedded host alike.
const char *run_end(const Status &st, bool stop_asked);

// The "stop" event: how the run ended (run_end), after how long, with the
// totals. In the text format a failure's reason follows as the last line
// ("cdcflow: ...", which scripts read); in JSON it is this line's "error".
// Returns the run's exit code (run_exit_code).
int log_stop(Runtime &r, const Status &st, bool stop_asked, std::chrono::steady_clock::time_point started);

} // namespace cdcflow::host

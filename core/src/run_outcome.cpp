#include "run_outcome.hpp"

#include "escape.hpp"
#include "log.hpp"
#include <cdcflow/host.h>

#include <cstdio>
#include <string>
#include <unistd.h>

namespace cdcflow::host {

int create_failure_code(const Status &st) {
    return st.abi() == CDCFLOW_ERR_CONFIG ? CDCFLOW_EXIT_INVALID : CDCFLOW_EXIT_FAILURE;
}

int run_exit_code(const Status &st) {
    if (st) return CDCFLOW_EXIT_OK;
    return st.abi() == CDCFLOW_ERR_OWNED || st.abi() == CDCFLOW_ERR_FENCED ? CDCFLOW_EXIT_OWNED
                                                                           : CDCFLOW_EXIT_FAILURE;
}

void log_start(const PipelineDef &def) {
    std::string stages, list;
    for (const StageDef &sd : def.stages) {
        stages += (stages.empty() ? "" : ", ") + sd.id + ": " + sd.plugin;
        list += (list.empty() ? "" : ",") + sd.id;
    }
    log_line(CDCFLOW_LOG_INFO, "host",
             "pipeline " + quote(def.name) + " starting: " + std::to_string(def.stages.size()) + " stages (" +
                 stages + "); cdcflow " + CDCFLOW_VERSION + ", pid " + std::to_string(getpid()),
             "start",
             {{"stages", list},
              {"stage_count", def.stages.size()},
              {"version", CDCFLOW_VERSION},
              {"pid", static_cast<int64_t>(getpid())}});
}

// The "stop" event: how the run ended, after how long, with the totals. In
// the text format a failure's reason follows as the last line
// ("cdcflow: ...", which scripts read); in JSON it is this line's "error".
const char *run_end(const Status &st, bool stop_asked) {
    if (run_exit_code(st) == CDCFLOW_EXIT_OWNED) return "refused";
    if (!st) return "failed";
    return stop_asked ? "stopped" : "drained";
}

int log_stop(Runtime &r, const Status &st, bool stop_asked, std::chrono::steady_clock::time_point started) {
    const int code = run_exit_code(st);
    const char *how = run_end(st, stop_asked);
    flush_suppressed_logs();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    Totals t = r.totals();
    char took[32];
    std::snprintf(took, sizeof took, "%.3f", secs);
    std::string msg = "pipeline " + quote(r.def().name) + " " + how + " after " + took +
                      " s: " + std::to_string(t.events) + " events (" + std::to_string(t.applied) +
                      " applied, " + std::to_string(t.rejected) + " rejected, " +
                      std::to_string(t.duplicates) + " duplicates, " + std::to_string(t.dropped) +
                      " dropped), exit " + std::to_string(code);
    std::initializer_list<LogField> fields = {{"outcome", how},
                                              {"exit_code", code},
                                              {"duration_s", secs},
                                              {"events", t.events},
                                              {"applied", t.applied},
                                              {"rejected", t.rejected},
                                              {"duplicates", t.duplicates},
                                              {"dropped", t.dropped},
                                              {"batches", t.batches},
                                              // (an empty key: not written)
                                              {st ? std::string_view() : "error", st.message()}};
    if (log_format() == LogFormat::json && !st) {
        log_failure(msg, "stop", fields); // whatever the level: it says why the command failed
        return code;
    }
    log_line(st ? CDCFLOW_LOG_INFO : CDCFLOW_LOG_ERROR, "host", msg, "stop", fields);
    if (!st) log_failure(st.message(), "error", {{"exit_code", code}});
    return code;
}

} // namespace cdcflow::host

// The host side of the plugin ABI: the function table handed to plugins and
// the per-stage context and config objects it operates on.
#pragma once

#include "batch.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"

#include <cdcflow/plugin.h>

#include <atomic>
#include <deque>
#include <functional>
#include <string>

struct cdcflow_ctx {
    std::string stage_id;
    std::string pipeline; // the pipeline's name: every series' `pipeline` label
    std::string plugin;   // the plugin's name: its metric families' namespace
    cdcflow::host::Metrics *metrics = nullptr;
    const std::atomic<bool> *stop = nullptr;
    // Handles for metrics that cannot be listed (a plugin's name clash):
    // counted, never rendered, so the plugin needs no null checks.
    std::deque<cdcflow_metric> unlisted;
    cdcflow_metric *rejected = nullptr;   // events this stage rejected
    cdcflow_metric *duplicates = nullptr; // events this stage marked duplicate
    cdcflow_metric *dropped = nullptr;    // events this stage dropped (filtered out)
    // Set by the runtime around a restore call (its thread): replayed events are
    // not marked (plugin.h), so the marking functions ignore them, uncounted.
    bool restoring = false;
    // ownership_lost: set by the runtime; called from any thread.
    std::function<void(const std::string &)> ownership_lost;
};

struct cdcflow_config {
    const cdcflow::host::StageDef *def = nullptr;
    // The plugin's declaration: what config_lookup and the getters answer for.
    // Null (tests that fill a StageDef by hand): every key in def counts as declared.
    const cdcflow::host::PluginSchema *schema = nullptr;
};

namespace cdcflow::host {

// The one host API table (static storage, lives as long as the process).
const cdcflow_host_api *host_api();

// Logging used by the host itself and by plugins (via host_api()->log).
void log_line(cdcflow_log_level level, const std::string &who, const std::string &msg);
// Set from --log-level / CDCFLOW_LOG_LEVEL: debug, info, warn, error.
void set_log_level(cdcflow_log_level level);
bool parse_log_level(const std::string &s, cdcflow_log_level *out);

} // namespace cdcflow::host

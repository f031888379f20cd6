// The host side of the plugin ABI: the function table handed to plugins and
// the per-stage context and config objects it operates on.
#pragma once

#include "batch.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"

#include <cdcflow/plugin.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
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
    // partitions_changed (ABI 5): set by the runtime for a source whose
    // plugin declares CDCFLOW_PLUGIN_GROUP_PARTITIONS; its thread only.
    // Writes the failure's message into the string.
    std::function<cdcflow_status(const cdcflow_partitions &, std::string &)> partitions_changed;
    // pipeline_setting (ABI 7): the pipeline's settings, set by the runtime
    // before create and outliving the stage; null (a stage made outside a
    // runtime, e.g. by a unit test): the defaults.
    const cdcflow::host::Settings *settings = nullptr;
    // The rate limit on this stage's log calls (made on first use: the
    // stage id is set after construction).
    std::unique_ptr<cdcflow::host::PluginLogLimiter> log_limit;
    std::once_flag log_limit_once;
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

// Logging (log_line, used by the host itself and, rate-limited per stage, by
// plugins via host_api()->log) is in log.hpp.

} // namespace cdcflow::host

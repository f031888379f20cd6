// From a pipeline file (or its text) to a created, not started Runtime: the
// front half that `cdcflow run`, `cdcflow validate` and the embedded host
// (core/embed) share, so that a pipeline means the same and fails with the
// same "FILE:LINE:COL: what" messages wherever it is opened.
//
// Thread-safety: applying the file's `log:` sets the process's log settings
// (log.hpp); call from one thread at a time.
#pragma once

#include "metrics.hpp"
#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include "runtime.hpp"
#include <cdcflow/status.hpp>

#include <memory>
#include <string>

namespace cdcflow::host {

// Whether someone other than the pipeline file chose the log level and
// format (the command line, the environment): they win over its `log:`.
struct LogChoice {
    bool level = false;
    bool format = false;
};

// The pipeline file's `log:` where `chosen` left the choice to it, the
// plugins' line rate, and the pipeline's name on every JSON line.
void apply_file_log(const PipelineDef &def, LogChoice chosen);

// Where a pipeline comes from: a file on disk, or YAML text (`name` stands
// for the file in messages, e.g. "<string>").
struct PipelineSource {
    std::string path; // empty: `text` is the pipeline
    std::string text;
    std::string name;
    static PipelineSource file(std::string p) { return {std::move(p), {}, {}}; }
    static PipelineSource yaml(std::string t, std::string n) { return {{}, std::move(t), std::move(n)}; }
};

// Step 1 (pipeline.hpp) on `src`, with ${VAR} from the process environment.
// A file that cannot be read or parsed is CDCFLOW_ERR_CONFIG (exit 3).
Result<PipelineDef> read_pipeline(const PipelineSource &src);

// Read + apply the file's `log:` + create (Runtime::create: plugins loaded,
// config checked, stages created, nothing started).
Result<std::unique_ptr<Runtime>> open_runtime(const PipelineSource &src, PluginRegistry &registry,
                                              Metrics &metrics, LogChoice chosen);

} // namespace cdcflow::host

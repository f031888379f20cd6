#include "pipeline_open.hpp"

#include "log.hpp"

namespace cdcflow::host {

void apply_file_log(const PipelineDef &def, LogChoice chosen) {
    if (def.log.level && !chosen.level) set_log_level(*def.log.level);
    if (def.log.format && !chosen.format) set_log_format(*def.log.format);
    set_plugin_log_limit(def.log.plugin_lines_per_second);
    set_log_pipeline(def.name);
}

Result<PipelineDef> read_pipeline(const PipelineSource &src) {
    auto def = src.path.empty() ? parse_pipeline(src.text, src.name, process_env())
                                : load_pipeline_file(src.path, process_env());
    // A pipeline that cannot be read is the caller's fault, as a bad one is: 3.
    if (!def) return Status::from_abi(CDCFLOW_ERR_CONFIG, def.status().message());
    return def;
}

Result<std::unique_ptr<Runtime>> open_runtime(const PipelineSource &src, PluginRegistry &registry,
                                              Metrics &metrics, LogChoice chosen) {
    auto def = read_pipeline(src);
    if (!def) return def.status();
    // Before any stage exists: what the plugins log at create is in the chosen form.
    apply_file_log(def.value(), chosen);
    return Runtime::create(std::move(def.value()), registry, metrics);
}

} // namespace cdcflow::host

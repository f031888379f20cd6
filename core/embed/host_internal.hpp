// What the cdcflow CLI needs of the embedded host beyond cdcflow/host.hpp.
// The CLI runs its pipelines through embed::Host (one code path for open,
// start, drain, stop, state, metrics and exit codes); it links the host's
// code itself (host_static in core/embed/meson.build), not
// libcdcflow-host.so, so these internal functions (hidden in the library)
// are within its reach.
#pragma once

#include "pipeline.hpp"
#include "pipeline_open.hpp"
#include <cdcflow/host.hpp>

#include <memory>
#include <string>

namespace cdcflow::embed::internal {

// Host::open for the cdcflow executable: plugins from the registry's
// default folders (CDCFLOW_PLUGIN_PATH, then relative to the executable)
// instead of the library's, and the log level and format chosen by the
// command line or the environment (`chosen`, which win over the file's).
Result<std::unique_ptr<Host>> open_for_cli(const std::string &pipeline_path, host::LogChoice chosen);

// The checked pipeline a host runs (settings, stages, file positions).
const host::PipelineDef &def_of(const Host &h);

} // namespace cdcflow::embed::internal

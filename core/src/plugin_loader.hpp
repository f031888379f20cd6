// Plugin loading (Boost.DLL) and discovery.
//
// A LoadedPlugin keeps its shared library open; everything that came out of
// the library (descriptor, callbacks, instances) must be gone before the last
// shared_ptr to it is released. The runtime holds the LoadedPlugin for as
// long as any stage instance lives (teardown: stop queues, destroy stages,
// unload).
#pragma once

#include "pipeline.hpp"
#include <cdcflow/status.hpp>

#include <cdcflow/plugin.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace boost::dll {
class shared_library;
}

namespace cdcflow::host {

struct LoadedPlugin {
    std::shared_ptr<boost::dll::shared_library> lib;
    const cdcflow_plugin *desc = nullptr;
    std::string file;
    PluginSchema schema;
    ~LoadedPlugin();
};

// Open one file and check its descriptor. One-line errors name the file:
// not a shared object, no entry symbol, unsupported ABI version (found and
// supported range), malformed descriptor.
Result<std::shared_ptr<LoadedPlugin>> load_plugin_file(const std::string &path);

const char *kind_name(cdcflow_kind k); // "source", "transform", "sink"

// Finds plugins by name in a list of folders: <dir>/<name>.so or
// <dir>/<name>/<name>.so (the build tree's layout). Loaded plugins are cached.
class PluginRegistry {
public:
    // Default folders: CDCFLOW_PLUGIN_PATH (colon-separated), then the
    // folders relative to the running executable (build and install trees).
    PluginRegistry();
    // CDCFLOW_PLUGIN_PATH, then `shipped`: where the shipped plugins are for
    // a binary that is not the cdcflow executable (the embedded host's
    // library finds them relative to itself).
    explicit PluginRegistry(const std::vector<std::string> &shipped);
    // Folders named by a pipeline's plugin_path come first.
    void add_front(const std::vector<std::string> &dirs);
    const std::vector<std::string> &dirs() const { return dirs_; }

    // Null and an error when not found or broken.
    Result<std::shared_ptr<LoadedPlugin>> find(const std::string &name);
    // Every plugin file in every folder (for `cdcflow plugins`): loaded
    // plugins and, for broken files, their errors.
    struct Entry {
        std::shared_ptr<LoadedPlugin> plugin;
        std::string file;
        std::string error;
    };
    std::vector<Entry> scan();

private:
    std::vector<std::string> dirs_;
    std::map<std::string, std::shared_ptr<LoadedPlugin>> cache_;
};

// The folder holding the running executable.
std::string executable_dir();

} // namespace cdcflow::host

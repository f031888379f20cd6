#include "plugin_loader.hpp"

#include "config_schema.hpp"

#include <boost/dll/shared_library.hpp>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <set>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace fs = std::filesystem;

namespace cdcflow::host {

LoadedPlugin::~LoadedPlugin() {
    desc = nullptr; // the descriptor lives in the library: drop it first
}

const char *kind_name(cdcflow_kind k) {
    switch (k) {
    case CDCFLOW_KIND_SOURCE:
        return "source";
    case CDCFLOW_KIND_TRANSFORM:
        return "transform";
    case CDCFLOW_KIND_SINK:
        return "sink";
    }
    return "unknown";
}

// The smallest descriptor and callback table ABI 1 defines.
static constexpr size_t kMinPluginSize = offsetof(cdcflow_plugin, callbacks) + sizeof(void *);
static constexpr size_t kMinCallbacksSize = offsetof(cdcflow_callbacks, destroy) + sizeof(void *);

static Status bad(const std::string &file, const std::string &why) {
    return Status::from_abi(CDCFLOW_ERR_CONFIG, "plugin '" + file + "': " + why);
}

Result<std::shared_ptr<LoadedPlugin>> load_plugin_file(const std::string &path) {
    auto p = std::make_shared<LoadedPlugin>();
    p->file = path;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return bad(path, "no such file");
    try {
        p->lib = std::make_shared<boost::dll::shared_library>(path, boost::dll::load_mode::rtld_now |
                                                                        boost::dll::load_mode::rtld_local);
    } catch (const std::bad_alloc &) {
        return Status::OutOfMemory();
    } catch (const std::exception &e) {
        // dlerror() text names the reason (e.g. "invalid ELF header").
        // The loader's own lack of memory (a segment it could not map) is
        // no fault of the file: a failure (exit 1), not an invalid plugin.
        const std::string why = e.what();
        if (why.find("Cannot allocate memory") != std::string::npos ||
            why.find("failed to map segment") != std::string::npos)
            return Status(Status::Code::kNoMemory, "plugin '" + path + "': cannot load: " + why);
        return bad(path, "not a loadable shared object: " + why);
    }
    if (!p->lib->has(CDCFLOW_PLUGIN_ENTRY_SYMBOL))
        return bad(path, "no entry symbol '" CDCFLOW_PLUGIN_ENTRY_SYMBOL "' (not a cdcflow plugin)");
    cdcflow_plugin_entry_fn entry = nullptr;
    try {
        entry = p->lib->get<const cdcflow_plugin *()>(CDCFLOW_PLUGIN_ENTRY_SYMBOL);
    } catch (const std::exception &e) {
        return bad(path, std::string("cannot resolve entry symbol: ") + e.what());
    }
    const cdcflow_plugin *d = entry ? entry() : nullptr;
    if (!d) return bad(path, "entry symbol returned no descriptor");
    if (d->abi_version < CDCFLOW_ABI_VERSION_MIN || d->abi_version > CDCFLOW_ABI_VERSION)
        return bad(path, "unsupported ABI version " + std::to_string(d->abi_version) +
                             " (this host supports " + std::to_string(CDCFLOW_ABI_VERSION_MIN) + ".." +
                             std::to_string(CDCFLOW_ABI_VERSION) + ")");
    // Say what was expected: the usual cause is a descriptor written by hand
    // with struct_size set to something other than sizeof(cdcflow_plugin).
    if (d->struct_size < kMinPluginSize)
        return bad(path, "descriptor too small: struct_size is " + std::to_string(d->struct_size) +
                             " bytes, ABI " + std::to_string(d->abi_version) + " needs at least " +
                             std::to_string(kMinPluginSize) + " (set it to sizeof(cdcflow_plugin))");
    if (!d->name || !*d->name) return bad(path, "descriptor has no name");
    // Read as an int first: a plugin may have written any value there, and
    // loading one that is not an enumerator as the enum is undefined.
    int kind = 0;
    std::memcpy(&kind, &d->kind, sizeof kind);
    if (kind != CDCFLOW_KIND_SOURCE && kind != CDCFLOW_KIND_TRANSFORM && kind != CDCFLOW_KIND_SINK)
        return bad(path, "descriptor has an unknown kind " + std::to_string(kind));
    const cdcflow_callbacks *cb = d->callbacks;
    if (!cb) return bad(path, "descriptor has no callback table");
    if (cb->struct_size < kMinCallbacksSize)
        return bad(path, "callback table too small: struct_size is " + std::to_string(cb->struct_size) +
                             " bytes, ABI 1 needs at least " + std::to_string(kMinCallbacksSize) +
                             " (set it to sizeof(cdcflow_callbacks))");
    if (!cb->create || !cb->destroy) return bad(path, "callbacks create and destroy are required");
    if (d->kind == CDCFLOW_KIND_SOURCE && !cb->poll) return bad(path, "a source needs a poll callback");
    if (d->kind != CDCFLOW_KIND_SOURCE && !cb->process)
        return bad(path, std::string("a ") + kind_name(d->kind) + " needs a process callback");
    Result<PluginSchema> schema = schema_of(*d);
    if (!schema) return bad(path, schema.status().message());
    p->desc = d;
    p->schema = std::move(schema.value());
    return p;
}

std::string executable_dir() {
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return ".";
    return exe.parent_path().string();
}

PluginRegistry::PluginRegistry()
    : PluginRegistry({executable_dir() + "/../plugins",                // build tree: build/tools/cdcflow
                      executable_dir() + "/" CDCFLOW_REL_PLUGINDIR}) { // install tree
}

PluginRegistry::PluginRegistry(const std::vector<std::string> &shipped) {
    if (const char *env = std::getenv("CDCFLOW_PLUGIN_PATH")) {
        std::string s = env;
        size_t start = 0;
        while (start <= s.size()) {
            size_t end = s.find(':', start);
            if (end == std::string::npos) end = s.size();
            if (end > start) dirs_.push_back(s.substr(start, end - start));
            start = end + 1;
        }
    }
    dirs_.insert(dirs_.end(), shipped.begin(), shipped.end());
}

void PluginRegistry::add_front(const std::vector<std::string> &dirs) {
    dirs_.insert(dirs_.begin(), dirs.begin(), dirs.end());
}

// A plugin is found by its file name, so the name it declares must match.
static Result<std::shared_ptr<LoadedPlugin>> load_checked(const fs::path &file, const std::string &name) {
    auto r = load_plugin_file(file.string());
    if (r && r.value()->schema.name != name)
        return bad(file.string(), "declares the name '" + r.value()->schema.name + "', expected '" + name +
                                      "' (its file name)");
    return r;
}

Result<std::shared_ptr<LoadedPlugin>> PluginRegistry::find(const std::string &name) {
    if (auto it = cache_.find(name); it != cache_.end()) return it->second;
    // A name is a file name: refuse paths so "../x" cannot escape the folders.
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
        return Status::Config("invalid plugin name '" + name + "'");
    for (const std::string &dir : dirs_) {
        for (fs::path candidate : {fs::path(dir) / (name + ".so"), fs::path(dir) / name / (name + ".so")}) {
            std::error_code ec;
            if (!fs::is_regular_file(candidate, ec)) continue;
            auto r = load_checked(candidate, name);
            if (!r) return r.status();
            cache_[name] = r.value();
            return r.value();
        }
    }
    std::string searched;
    for (const std::string &d : dirs_)
        searched += (searched.empty() ? "" : ":") + d;
    return Status::Config("plugin '" + name + "' not found (searched " + searched +
                          "; add folders with CDCFLOW_PLUGIN_PATH or plugin_path)");
}

std::vector<PluginRegistry::Entry> PluginRegistry::scan() {
    std::vector<Entry> out;
    std::set<std::string> seen_files;
    // A file that `find` would refuse (its declared name is not its file
    // name) is listed as broken too: a pipeline could not use it.
    auto consider = [&](const fs::path &f) {
        std::error_code ec;
        fs::path canon = fs::weakly_canonical(f, ec);
        std::string key = ec ? f.string() : canon.string();
        if (!seen_files.insert(key).second) return;
        auto r = load_checked(f, f.stem().string());
        if (r)
            out.push_back({r.value(), f.string(), ""});
        else
            out.push_back({nullptr, f.string(), r.status().message()});
    };
    for (const std::string &dir : dirs_) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) continue;
        for (auto &ent : fs::directory_iterator(dir, ec)) {
            if (ent.is_regular_file(ec) && ent.path().extension() == ".so")
                consider(ent.path());
            else if (ent.is_directory(ec)) {
                fs::path inner = ent.path() / (ent.path().filename().string() + ".so");
                if (fs::is_regular_file(inner, ec)) consider(inner);
            }
        }
    }
    return out;
}

} // namespace cdcflow::host

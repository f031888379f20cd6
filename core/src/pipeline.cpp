// The pipeline YAML loader, step 1 (see pipeline.hpp): the structure of a
// pipeline file into a PipelineDef.
//
// Hostile input is refused before yaml-cpp sees it wherever yaml-cpp itself would
// suffer (size, binary, nesting depth, node count: yaml_prescan.cpp), and while walking
// the tree wherever our own work could explode (aliases: yaml_json.hpp). Every limit
// ends in a one-line error. The parts: escape.cpp (quoting), yaml_prescan.cpp,
// yaml_json.cpp (YAML to JSON), interpolate.cpp (${VAR}), pipeline_file.cpp (reading
// the file), config_schema.cpp (step 2: stage config against the plugins' schemas).
#include "pipeline.hpp"

#include "escape.hpp"
#include "yaml_json.hpp"
#include "yaml_load.hpp"
#include "yaml_prescan.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>

namespace cdcflow::host {
namespace {

using Entry = Converter::Entry;

// The structure of a pipeline file, into a PipelineDef.
class Reader {
public:
    Reader(const std::string &file, const EnvLookup &env) : file_(file), conv_(file, &env) {}

    PipelineDef read(const YAML::Node &root) {
        if (!root.IsMap())
            fail(mark_of(root), std::string("a pipeline file must be a mapping (pipeline, stages...), got ") +
                                    kind_of(root));
        PipelineDef def;
        def.file = file_;
        bool named = false;
        for (const Entry &e : conv_.entries(root, false)) {
            if (e.key == "pipeline") {
                def.name = string_value(e);
                named = true;
            } else if (e.key == "plugin_path") {
                read_plugin_path(e, def);
            } else if (e.key == "settings") {
                read_settings(e, def.settings);
            } else if (e.key == "log") {
                read_log(e, def.log);
            } else if (e.key == "stages") {
                read_stages(e, def);
            } else {
                fail(mark_of(e.k), "unknown key " + quote(e.key) +
                                       " (known: pipeline, plugin_path, settings, log, stages)");
            }
        }
        if (!named) fail(mark_of(root), "missing required key 'pipeline' (the pipeline's name)");
        if (def.stages.empty()) fail(mark_of(root), "missing required key 'stages'");
        return def;
    }

private:
    std::string string_value(const Entry &e) {
        if (!e.v.IsScalar()) fail(mark_of(e.k), quote(e.key) + " must be a string, got " + kind_of(e.v));
        std::string s = conv_.text(e.v);
        if (s.empty()) fail(mark_of(e.v), quote(e.key) + " must not be empty");
        return s;
    }

    void read_plugin_path(const Entry &e, PipelineDef &def) {
        auto add = [&](const YAML::Node &n) {
            if (!n.IsScalar())
                fail(mark_of(n), std::string("'plugin_path' entries must be strings, got ") + kind_of(n));
            std::filesystem::path p = conv_.text(n);
            if (p.empty()) fail(mark_of(n), "'plugin_path' entries must not be empty");
            if (p.is_relative()) p = std::filesystem::path(file_).parent_path() / p;
            def.plugin_path.push_back(p.lexically_normal().string());
        };
        if (e.v.IsScalar()) {
            add(e.v);
        } else if (e.v.IsSequence()) {
            for (const YAML::Node &n : e.v)
                add(n);
        } else {
            fail(mark_of(e.k),
                 std::string("'plugin_path' must be a string or a list of strings, got ") + kind_of(e.v));
        }
    }

    void read_settings(const Entry &e, Settings &s) {
        if (e.v.IsNull()) return;
        if (!e.v.IsMap())
            fail(mark_of(e.k), std::string("'settings' must be a mapping, got ") + kind_of(e.v));
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "batch_size")
                s.batch_size = setting(x, 1u << 20);
            else if (x.key == "batch_max_events")
                s.batch_max_events = setting(x, 1u << 20);
            else if (x.key == "batch_max_bytes")
                s.batch_max_bytes = setting(x, 1u << 30, 1024);
            else if (x.key == "batch_max_ms")
                s.batch_max_ms = setting(x, 3600000, 0);
            else if (x.key == "queue_capacity")
                s.queue_capacity = setting(x, 4096);
            else if (x.key == "shutdown_timeout_ms")
                s.shutdown_timeout_ms = setting(x, UINT32_MAX);
            else if (x.key == "poll_wait_ms")
                s.poll_wait_ms = setting(x, UINT32_MAX);
            else if (x.key == "owner_lease_ms")
                s.owner_lease_ms = setting(x, 3600000, 100);
            else if (x.key == "when_owned")
                s.when_owned = when_owned(x);
            else
                fail(mark_of(x.k), "unknown settings key " + quote(x.key) +
                                       " (known: batch_size, batch_max_events, batch_max_bytes, "
                                       "batch_max_ms, queue_capacity, shutdown_timeout_ms, "
                                       "poll_wait_ms, when_owned, owner_lease_ms)");
        }
    }

    // The `log:` mapping (LogSettings).
    void read_log(const Entry &e, LogSettings &l) {
        if (e.v.IsNull()) return;
        if (!e.v.IsMap()) fail(mark_of(e.k), std::string("'log' must be a mapping, got ") + kind_of(e.v));
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "level") {
                const std::string what = "log.level must be one of debug, info, warn, error, got ";
                if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
                std::string s = conv_.text(x.v);
                cdcflow_log_level level;
                if (!parse_log_level(s, &level)) fail(mark_of(x.v), what + quote(s));
                l.level = level;
            } else if (x.key == "format") {
                const std::string what = "log.format must be one of text, json, auto, got ";
                if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
                std::string s = conv_.text(x.v);
                LogFormat format;
                if (!parse_log_format(s, &format)) fail(mark_of(x.v), what + quote(s));
                l.format = format;
            } else if (x.key == "plugin_lines_per_second") {
                l.plugin_lines_per_second = setting(x, 1000000, 0, "log.");
            } else {
                fail(mark_of(x.k),
                     "unknown log key " + quote(x.key) + " (known: level, format, plugin_lines_per_second)");
            }
        }
    }

    WhenOwned when_owned(const Entry &x) {
        const std::string what = "settings.when_owned must be 'wait' or 'refuse', got ";
        if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
        std::string s = conv_.text(x.v);
        if (s == "wait") return WhenOwned::wait;
        if (s == "refuse") return WhenOwned::refuse;
        fail(mark_of(x.v), what + quote(s));
    }

    // An integer in [min, max] for `<prefix><key>`.
    uint32_t setting(const Entry &x, uint32_t max, uint32_t min = 1, const char *prefix = "settings.") {
        std::string what = prefix + x.key + " must be an integer from " + std::to_string(min) + " to " +
                           std::to_string(max) + ", got ";
        if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
        std::string s = conv_.text(x.v);
        std::optional<int64_t> n = parse_int(s);
        if (!n || *n < min || *n > max) fail(mark_of(x.v), what + quote(s));
        return static_cast<uint32_t>(*n);
    }

    // A stage's `retry:` mapping (RetryPolicy).
    RetryPolicy retry_policy(const Entry &e, const std::string &stage) {
        RetryPolicy r;
        if (e.v.IsNull()) return r;
        if (!e.v.IsMap())
            fail(mark_of(e.k),
                 "'retry' of stage " + quote(stage) + " must be a mapping, got " + kind_of(e.v));
        std::optional<Mark> max_mark;
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "max_attempts")
                r.max_attempts = setting(x, 1000000, 1, "retry.");
            else if (x.key == "backoff_ms")
                r.backoff_ms = setting(x, 3600000, 1, "retry.");
            else if (x.key == "max_backoff_ms") {
                r.max_backoff_ms = setting(x, 3600000, 1, "retry.");
                max_mark = mark_of(x.v);
            } else
                fail(mark_of(x.k), "unknown key " + quote(x.key) + " in 'retry' of stage " + quote(stage) +
                                       " (known: max_attempts, backoff_ms, max_backoff_ms)");
        }
        if (r.max_backoff_ms < r.backoff_ms)
            fail(max_mark ? *max_mark : mark_of(e.v),
                 "retry.max_backoff_ms must be at least retry.backoff_ms (" + std::to_string(r.backoff_ms) +
                     ")");
        return r;
    }

    void read_stages(const Entry &e, PipelineDef &def) {
        if (!e.v.IsSequence())
            fail(mark_of(e.k), std::string("'stages' must be a sequence, got ") + kind_of(e.v));
        std::map<std::string, Mark> ids;
        for (const YAML::Node &n : e.v) {
            StageDef st = read_stage(n, def.stages.size() + 1);
            auto [first, fresh] = ids.emplace(st.id, st.mark);
            if (!fresh)
                fail(st.mark, "duplicate stage id " + quote(st.id) + " (first at " +
                                  where(file_, first->second) + ")");
            def.stages.push_back(std::move(st));
        }
        if (def.stages.empty())
            fail(mark_of(e.k), "'stages' must not be empty: a pipeline needs a source and a sink");
    }

    StageDef read_stage(const YAML::Node &n, size_t number) {
        const std::string label = "stage #" + std::to_string(number);
        if (!n.IsMap())
            fail(mark_of(n), label + " must be a mapping (id, plugin, config), got " + kind_of(n));
        StageDef st;
        st.mark = st.config_mark = mark_of(n);
        std::optional<Entry> id, plugin, config, retry;
        for (Entry &x : conv_.entries(n, false)) {
            if (x.key == "id")
                id = std::move(x);
            else if (x.key == "plugin")
                plugin = std::move(x);
            else if (x.key == "config")
                config = std::move(x);
            else if (x.key == "retry")
                retry = std::move(x);
            else
                fail(mark_of(x.k),
                     "unknown key " + quote(x.key) + " in " + label + " (known: id, plugin, config, retry)");
        }
        if (!id) fail(st.mark, label + " has no 'id'");
        st.id = string_value(*id);
        if (st.id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
            std::string::npos)
            fail(mark_of(id->v),
                 "invalid stage id " + quote(st.id) + ": use letters, digits, '_', '.' and '-'");
        if (!plugin) fail(st.mark, "stage " + quote(st.id) + " has no 'plugin'");
        st.plugin = string_value(*plugin);
        st.plugin_mark = mark_of(plugin->v);
        if (retry) st.retry = retry_policy(*retry, st.id);
        if (config && config->v.IsNull()) {
            st.config_mark = mark_of(config->k);
        } else if (config) {
            if (!config->v.IsMap())
                fail(mark_of(config->k),
                     "'config' of stage " + quote(st.id) + " must be a mapping, got " + kind_of(config->v));
            st.config_mark = mark_of(config->v);
            for (const Entry &x : conv_.entries(config->v, false))
                st.config.emplace(x.key, conv_.value(x.v, mark_of(x.k)));
        }
        return st;
    }

    const std::string &file_;
    Converter conv_;
};

} // namespace

std::string where(const std::string &file, Mark m) {
    return file + ":" + std::to_string(m.line) + ":" + std::to_string(m.col);
}

namespace {

// The one YAML document of `text`, after the checks that protect yaml-cpp
// (binary, size, depth, node count). `kind` names the file in messages
// ("pipeline file", "rules file"). Throws LoadError and YAML::Exception.
YAML::Node load_one_document(const std::string &text, const std::string &kind) {
    check_text(text);
    prescan(text);
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts docs;
    if (!parser.HandleNextDocument(docs)) fail({1, 1}, "empty " + kind);
    if (parser.HandleNextDocument(docs))
        fail(mark_of(docs.mark), "a second YAML document: a " + kind + " holds one");
    YAML::Node root = YAML::Load(text);
    if (root.IsNull()) fail({1, 1}, "empty " + kind);
    return root;
}

// Runs `load` and turns what it throws into one line "FILE:LINE:COL: what".
template <typename T, typename Load>
Result<T> one_line_errors(const std::string &file, const std::string &what, Load &&load) {
    try {
        return load();
    } catch (const LoadError &e) {
        return Status::Config(one_line(where(file, e.mark) + ": " + e.msg));
    } catch (const YAML::DeepRecursion &e) { // what the prescan missed
        return Status::Config(where(file, mark_of(e.mark)) + ": nesting deeper than 200 levels");
    } catch (const YAML::Exception &e) {
        return Status::Config(one_line(where(file, mark_of(e.mark)) + ": invalid YAML: " + e.msg));
    } catch (const std::exception &e) {
        return Status::Config(one_line(file + ": cannot load " + what + ": " + e.what()));
    }
}

} // namespace

Result<PipelineDef> parse_pipeline(const std::string &text, const std::string &file, const EnvLookup &env) {
    return one_line_errors<PipelineDef>(file, "the pipeline", [&] {
        YAML::Node root = load_one_document(text, "pipeline file");
        return Reader(file, env).read(root);
    });
}

Result<ConfigValue> parse_config_document(const std::string &text, const std::string &file,
                                          const std::string &kind, const EnvLookup &env) {
    return one_line_errors<ConfigValue>(file, "the " + kind, [&] {
        YAML::Node root = load_one_document(text, kind);
        return Converter(file, &env).value(root, Mark{1, 1});
    });
}

} // namespace cdcflow::host

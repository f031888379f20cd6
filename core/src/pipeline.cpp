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

#include "base/bytes.hpp"
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
            } else if (e.key == "http") {
                read_http(e, def.http);
            } else if (e.key == "log") {
                read_log(e, def.log);
            } else if (e.key == "stages") {
                read_stages(e, def);
            } else {
                fail(mark_of(e.k), "unknown key " + quote(e.key) +
                                       " (known: pipeline, plugin_path, settings, http, log, stages)");
            }
        }
        if (!named) fail(mark_of(root), "missing required key 'pipeline' (the pipeline's name)");
        if (def.stages.empty()) fail(mark_of(root), "missing required key 'stages'");
        // The file's defaults for every stage, then each stage's own keys.
        StageDef defaults;
        apply_policies(defaults, PolicyKeys{});
        def.settings.retry = defaults.retry;
        def.settings.breaker = defaults.breaker;
        def.settings.poison_limit = defaults.poison_limit;
        for (size_t i = 0; i < def.stages.size(); ++i)
            apply_policies(def.stages[i], stage_policy_[i]);
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
        std::optional<Mark> batch_bytes_mark, queue_bytes_mark;
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "batch_size")
                s.batch_size = setting(x, 1u << 20);
            else if (x.key == "batch_max_events")
                s.batch_max_events = setting(x, 1u << 20);
            else if (x.key == "batch_max_bytes") {
                s.batch_max_bytes = static_cast<uint32_t>(bytes_setting(x, 1024, uint64_t{1} << 30));
                batch_bytes_mark = mark_of(x.v);
            } else if (x.key == "queue_max_bytes") {
                s.queue_max_bytes = bytes_setting(x, 1024, uint64_t{1} << 40);
                queue_bytes_mark = mark_of(x.v);
            } else if (x.key == "memory_soft_limit_bytes")
                s.memory_soft_limit_bytes = bytes_setting(x, 0, uint64_t{1} << 50);
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
            else if (x.key == "retry")
                settings_policy_.retry = retry_keys(x, "settings");
            else if (x.key == "breaker")
                settings_policy_.breaker = breaker_keys(x, "settings");
            else if (x.key == "poison_limit")
                settings_policy_.poison_limit = poison_limit(x);
            else
                fail(mark_of(x.k), "unknown settings key " + quote(x.key) +
                                       " (known: batch_size, batch_max_events, batch_max_bytes, "
                                       "batch_max_ms, queue_capacity, queue_max_bytes, "
                                       "memory_soft_limit_bytes, shutdown_timeout_ms, "
                                       "poll_wait_ms, when_owned, owner_lease_ms, retry, breaker, "
                                       "poison_limit)");
        }
        // One batch must fit in the byte bound of the queues, or the source
        // could never start a second fill while the first is in flight.
        if (s.queue_max_bytes < s.batch_max_bytes)
            fail(queue_bytes_mark ? *queue_bytes_mark : *batch_bytes_mark,
                 "settings.queue_max_bytes (" + std::to_string(s.queue_max_bytes) +
                     (queue_bytes_mark ? "" : ", the default") +
                     ") must be at least settings.batch_max_bytes (" + std::to_string(s.batch_max_bytes) +
                     "): the event bytes in flight must hold at least one full batch");
    }

    // The `http:` mapping (HttpSettings). listen is parsed here, strictly, so
    // that a bad address is a FILE:LINE:COL error before anything starts.
    void read_http(const Entry &e, HttpSettings &h) {
        if (e.v.IsNull()) return;
        if (!e.v.IsMap()) fail(mark_of(e.k), std::string("'http' must be a mapping, got ") + kind_of(e.v));
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "listen") {
                if (!x.v.IsScalar())
                    fail(mark_of(x.k), std::string("http.listen must be an address, got ") + kind_of(x.v));
                auto a = http::parse_address(conv_.text(x.v));
                if (!a) fail(mark_of(x.v), "http.listen: " + a.status().message());
                h.listen = *a;
                h.listen_mark = mark_of(x.v);
            } else if (x.key == "request_timeout_ms") {
                h.request_timeout_ms = setting(x, 3600000, 10, "http.");
            } else if (x.key == "max_connections") {
                h.max_connections = setting(x, 100000, 1, "http.");
            } else {
                fail(mark_of(x.k), "unknown http key " + quote(x.key) +
                                       " (known: listen, request_timeout_ms, max_connections)");
            }
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

    // A number of bytes in [min, max] for `settings.<key>`: an integer, or
    // one with a binary unit ("64MiB", base/bytes.hpp).
    uint64_t bytes_setting(const Entry &x, uint64_t min, uint64_t max) {
        std::string what = "settings." + x.key + " must be a number of bytes from " + std::to_string(min) +
                           " to " + std::to_string(max) + " (e.g. 67108864 or 64MiB), got ";
        if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
        std::string s = conv_.text(x.v);
        std::optional<uint64_t> n = base::parse_bytes(s);
        if (!n || *n < min || *n > max) fail(mark_of(x.v), what + quote(s));
        return *n;
    }

    // The keys one `retry:` or `breaker:` mapping sets (in `settings` or a
    // stage): applied on top of the defaults key by key, once the whole file
    // is read (settings may come after the stages).
    struct RetryKeys {
        std::optional<uint32_t> max_attempts, backoff_ms, max_backoff_ms;
        std::optional<double> jitter;
        Mark at, max_backoff_at; // the mapping; max_backoff_ms's value
    };
    struct BreakerKeys {
        std::optional<uint32_t> failures, cooldown_ms;
    };
    struct PolicyKeys {
        std::optional<RetryKeys> retry;
        std::optional<BreakerKeys> breaker;
        std::optional<uint32_t> poison_limit;
    };

    // `owner`: "settings" or "stage 'id'" (messages).
    const YAML::Node &policy_mapping(const Entry &e, const std::string &owner) {
        if (!e.v.IsMap() && !e.v.IsNull())
            fail(mark_of(e.k), quote(e.key) + " of " + owner + " must be a mapping, got " + kind_of(e.v));
        return e.v;
    }

    RetryKeys retry_keys(const Entry &e, const std::string &owner) {
        RetryKeys r;
        r.at = mark_of(e.v.IsNull() ? e.k : e.v);
        if (policy_mapping(e, owner).IsNull()) return r;
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "max_attempts")
                r.max_attempts = setting(x, 1000000, 1, "retry.");
            else if (x.key == "backoff_ms")
                r.backoff_ms = setting(x, 3600000, 1, "retry.");
            else if (x.key == "max_backoff_ms") {
                r.max_backoff_ms = setting(x, 3600000, 1, "retry.");
                r.max_backoff_at = mark_of(x.v);
            } else if (x.key == "jitter") {
                const std::string what = "retry.jitter must be a number from 0 to 1, got ";
                if (!x.v.IsScalar()) fail(mark_of(x.k), what + kind_of(x.v));
                std::string text = conv_.text(x.v);
                std::optional<double> d = parse_double(text);
                if (!d || !(*d >= 0 && *d <= 1)) fail(mark_of(x.v), what + quote(text));
                r.jitter = *d;
            } else
                fail(mark_of(x.k), "unknown key " + quote(x.key) + " in 'retry' of " + owner +
                                       " (known: max_attempts, backoff_ms, max_backoff_ms, jitter)");
        }
        return r;
    }

    BreakerKeys breaker_keys(const Entry &e, const std::string &owner) {
        BreakerKeys b;
        if (policy_mapping(e, owner).IsNull()) return b;
        for (const Entry &x : conv_.entries(e.v, false)) {
            if (x.key == "failures")
                b.failures = setting(x, 1000000, 0, "breaker.");
            else if (x.key == "cooldown_ms")
                b.cooldown_ms = setting(x, 3600000, 1, "breaker.");
            else
                fail(mark_of(x.k), "unknown key " + quote(x.key) + " in 'breaker' of " + owner +
                                       " (known: failures, cooldown_ms)");
        }
        return b;
    }

    uint32_t poison_limit(const Entry &x) { return setting(x, 1000000, 1, ""); }

    // A stage's policies: the built-in defaults, then settings' keys, then
    // the stage's own.
    void apply_policies(StageDef &st, const PolicyKeys &own) {
        RetryPolicy &r = st.retry;
        Mark max_at{};
        bool max_set = false;
        for (const PolicyKeys *k : {static_cast<const PolicyKeys *>(&settings_policy_), &own}) {
            if (k->retry) {
                const RetryKeys &x = *k->retry;
                if (x.max_attempts) r.max_attempts = *x.max_attempts;
                if (x.backoff_ms) r.backoff_ms = *x.backoff_ms;
                if (x.jitter) r.jitter = *x.jitter;
                if (x.max_backoff_ms) {
                    r.max_backoff_ms = *x.max_backoff_ms;
                    max_at = x.max_backoff_at;
                    max_set = true;
                } else if (x.backoff_ms) {
                    max_at = x.at; // the mapping that raised backoff_ms past the maximum
                    max_set = true;
                }
            }
            if (k->breaker) {
                if (k->breaker->failures) st.breaker.failures = *k->breaker->failures;
                if (k->breaker->cooldown_ms) st.breaker.cooldown_ms = *k->breaker->cooldown_ms;
            }
            if (k->poison_limit) st.poison_limit = *k->poison_limit;
        }
        if (r.max_backoff_ms < r.backoff_ms)
            fail(max_set ? max_at : st.mark, "retry.max_backoff_ms must be at least retry.backoff_ms (" +
                                                 std::to_string(r.backoff_ms) + ")");
    }

    void read_stages(const Entry &e, PipelineDef &def) {
        if (!e.v.IsSequence())
            fail(mark_of(e.k), std::string("'stages' must be a sequence, got ") + kind_of(e.v));
        std::map<std::string, Mark> ids;
        for (const YAML::Node &n : e.v) {
            StageDef st = read_stage(n, def.stages.size() + 1);
            add_unique(ids, st.id, st.mark, file_, "stage id");
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
        std::optional<Entry> id, plugin, config;
        std::vector<Entry> policy_entries;
        PolicyKeys policy;
        for (Entry &x : conv_.entries(n, false)) {
            if (x.key == "id")
                id = std::move(x);
            else if (x.key == "plugin")
                plugin = std::move(x);
            else if (x.key == "config")
                config = std::move(x);
            else if (x.key == "retry" || x.key == "breaker" || x.key == "poison_limit")
                policy_entries.push_back(std::move(x)); // read once the stage's id is known
            else
                fail(mark_of(x.k), "unknown key " + quote(x.key) + " in " + label +
                                       " (known: id, plugin, config, retry, breaker, poison_limit)");
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
        for (const Entry &x : policy_entries) {
            const std::string owner = "stage " + quote(st.id);
            if (x.key == "retry")
                policy.retry = retry_keys(x, owner);
            else if (x.key == "breaker")
                policy.breaker = breaker_keys(x, owner);
            else
                policy.poison_limit = poison_limit(x);
        }
        stage_policy_.push_back(std::move(policy));
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
    PolicyKeys settings_policy_;           // settings.retry / breaker / poison_limit
    std::vector<PolicyKeys> stage_policy_; // by stage index
};

} // namespace

std::string where(const std::string &file, Mark m) {
    return file + ":" + std::to_string(m.line) + ":" + std::to_string(m.col);
}

std::optional<int64_t> integer_setting(const Settings &s, std::string_view name) {
    // The keys as the settings mapping spells them (Reader::settings).
    const std::pair<std::string_view, uint64_t> values[] = {
        {"batch_size", s.batch_size},
        {"batch_max_events", s.batch_max_events},
        {"batch_max_bytes", s.batch_max_bytes},
        {"batch_max_ms", s.batch_max_ms},
        {"queue_capacity", s.queue_capacity},
        {"queue_max_bytes", s.queue_max_bytes},
        {"memory_soft_limit_bytes", s.memory_soft_limit_bytes},
        {"shutdown_timeout_ms", s.shutdown_timeout_ms},
        {"poll_wait_ms", s.poll_wait_ms},
        {"owner_lease_ms", s.owner_lease_ms},
        {"poison_limit", s.poison_limit},
    };
    for (const auto &[key, value] : values)
        if (key == name) return static_cast<int64_t>(value); // every bound is far below 2^63
    return std::nullopt;
}

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

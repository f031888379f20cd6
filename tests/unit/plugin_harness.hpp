// Drives a plugin class in-process over the REAL host API table
// (cdcflow::host::host_api()): the Config and Context handed to the plugin
// are the host's own cdcflow_config / cdcflow_ctx, and batches are the
// host's cdcflow_batch. Only the YAML step is skipped: config values are
// given typed here, then checked and completed with defaults by the host's
// own config checker, against the plugin's own declaration.
#pragma once

#include "batch.hpp"
#include "config_schema.hpp"
#include "host_api.hpp"
#include "metrics.hpp"
#include "metrics_lookup.hpp"
#include "pipeline.hpp"

#include <cdcflow/sdk.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cdcflow::test {

// One config value as a test writes it.
struct Val {
    Val(const char *s) : type(CDCFLOW_CONFIG_STRING), s(s) {}
    Val(std::string s) : type(CDCFLOW_CONFIG_STRING), s(std::move(s)) {}
    Val(int v) : type(CDCFLOW_CONFIG_INT), i(v) {}
    Val(int64_t v) : type(CDCFLOW_CONFIG_INT), i(v) {}
    Val(bool v) : type(CDCFLOW_CONFIG_BOOL), b(v) {}
    // A mapping or sequence, as the YAML step would hand it on: JSON text.
    static Val json(std::string text) {
        Val v(std::move(text));
        v.type = CDCFLOW_CONFIG_JSON;
        return v;
    }
    cdcflow_config_type type;
    std::string s;
    int64_t i = 0;
    bool b = false;
};

inline std::string json_quote(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

// A plugin class's declaration as the host reads it: its descriptor's schema
// (ABI 3 config_params, or the older kConfig).
template <typename T> host::PluginSchema declared() {
    cdcflow::Result<host::PluginSchema> r = host::schema_of(*cdcflow::detail::descriptor<T>());
    if (!r) throw std::logic_error("the plugin's declaration is refused: " + r.status().message());
    return std::move(r.value());
}

// A stage's host-side objects: StageDef, cdcflow_config, cdcflow_ctx, metrics.
// The values go through the host's own checks (types, bounds, choices,
// required keys, defaults) as a pipeline file's would; a value the host
// refuses makes make_stage() throw the host's message, as `cdcflow run` would
// print it (at "test.yaml:1:1").
class StageHarness {
public:
    StageHarness(std::string stage_id, host::PluginSchema schema,
                 std::initializer_list<std::pair<const char *, Val>> values)
        : schema_(std::move(schema)) {
        init(std::move(stage_id), values);
    }
    // The older kConfig declaration (kept for plugins that still use it).
    StageHarness(std::string stage_id, const cdcflow_config_key *keys, size_t nkeys,
                 std::initializer_list<std::pair<const char *, Val>> values) {
        cdcflow_plugin d{};
        d.abi_version = 1;
        d.struct_size = offsetof(cdcflow_plugin, config_params);
        d.name = "test";
        d.kind = CDCFLOW_KIND_TRANSFORM;
        d.config_keys = keys;
        d.config_key_count = static_cast<uint32_t>(nkeys);
        cdcflow::Result<host::PluginSchema> r = host::schema_of(d);
        if (!r) throw std::logic_error("the plugin's declaration is refused: " + r.status().message());
        schema_ = std::move(r.value());
        init(std::move(stage_id), values);
    }
    StageHarness(const StageHarness &) = delete;
    StageHarness &operator=(const StageHarness &) = delete;

    cdcflow::Config config() const { return cdcflow::Config(host::host_api(), &cfg_); }
    cdcflow::Context context() { return cdcflow::Context(host::host_api(), &ctx_); }
    cdcflow_ctx *ctx() { return &ctx_; }
    const cdcflow_config *cfg() const { return &cfg_; }
    int64_t metric(const std::string &name) const {
        return test::metric_value(metrics_, def_.id + "." + name);
    }
    // A figure the stage published under the host's cache or lag families
    // (ABI 4: the same arguments return the same handle); -1 when the host
    // has none. The one place that knows how those handles are read.
    int64_t cache_figure(const char *cache, cdcflow_cache_stat stat) {
        cdcflow_metric *m = host::host_api()->metric_cache(&ctx_, cache, stat);
        return m ? m->value.load() : -1;
    }
    int64_t lag_figure(const char *partition) {
        cdcflow_metric *m = host::host_api()->metric_lag(&ctx_, partition);
        return m ? m->value.load() : -1;
    }
    void request_stop() { stop_.store(true); }
    // Why the host refused the values ("" when it did not).
    const std::string &refused() const { return refused_; }

    // A view of b as the plugin sees it in process()/poll().
    cdcflow::Batch view(cdcflow_batch &b) { return cdcflow::Batch(host::host_api(), &ctx_, &b); }

private:
    void init(std::string stage_id, std::initializer_list<std::pair<const char *, Val>> values) {
        def_.id = std::move(stage_id);
        def_.plugin = schema_.name;
        for (auto &[k, v] : values)
            put(k, v);
        cdcflow::Status st = host::check_stage_config("test.yaml", def_, schema_, nullptr);
        if (!st) refused_ = st.message();
        cfg_.def = &def_;
        cfg_.schema = &schema_;
        ctx_.stage_id = def_.id;
        ctx_.metrics = &metrics_;
        ctx_.stop = &stop_;
        ctx_.pipeline = "test";
        ctx_.plugin = schema_.name;
        auto events = [&](const char *outcome) {
            return metrics_.counter("cdcflow_events_total", "", {{"stage", def_.id}, {"outcome", outcome}});
        };
        ctx_.rejected = events("rejected");
        ctx_.duplicates = events("duplicate");
        ctx_.dropped = events("dropped");
    }

    // As the YAML step would store the value: its text, checked afterwards.
    void put(const std::string &key, const Val &v) {
        host::ConfigValue cv;
        cv.mark = cv.key_mark = host::Mark{1, 1};
        cv.location = "test.yaml:1:1";
        switch (v.type) {
        case CDCFLOW_CONFIG_STRING:
            cv.scalar = v.s;
            break;
        case CDCFLOW_CONFIG_INT:
            cv.scalar = std::to_string(v.i);
            break;
        case CDCFLOW_CONFIG_JSON:
            cv.is_scalar = false;
            cv.json = v.s;
            def_.config[key] = std::move(cv);
            return;
        default:
            cv.scalar = v.b ? "true" : "false";
            break;
        }
        cv.json = json_quote(cv.scalar);
        def_.config[key] = std::move(cv);
    }

    host::PluginSchema schema_;
    host::StageDef def_;
    cdcflow_config cfg_{};
    cdcflow_ctx ctx_{};
    host::Metrics metrics_;
    std::atomic<bool> stop_{false};
    std::string refused_;
};

// Makes a T (a plugin class) from the harness, as the SDK's create thunk does;
// throws the host's message when it refused the values.
template <typename T> std::unique_ptr<T> make_stage(StageHarness &h) {
    if (!h.refused().empty()) throw cdcflow::Error(CDCFLOW_ERR_CONFIG, h.refused());
    return cdcflow::detail::make_stage<T>(host::host_api(), h.ctx(), h.cfg());
}

// A plugin class T made from typed config values, with its harness: what
// a test of one stage holds. process() hands it a host batch as the
// runtime would.
template <typename T> struct HarnessedStage {
    StageHarness h;
    std::unique_ptr<T> stage;
    HarnessedStage(std::string stage_id, std::initializer_list<std::pair<const char *, Val>> cfg)
        : h(std::move(stage_id), declared<T>(), cfg), stage(make_stage<T>(h)) {}
    void process(cdcflow_batch &b) {
        cdcflow::Batch view = h.view(b);
        stage->process(view);
    }
};

// Appends one event to a host batch (what a source's poll does). Other
// suites build these with aggregate initialisation: only append fields, and
// give each a default (-Wmissing-field-initializers).
struct EventSpec {
    std::string id{};
    std::string aggregate_type = "Account";
    std::string aggregate_id{};
    std::string type{};
    std::string payload = "{}";
    int64_t timestamp_us = 0;
    int64_t offset = 0;
    std::string partition{};
    int64_t version = -1; // aggregate version; -1: none
};
// A partition change (ABI 5) as a group source reports it, over the
// caller's names (which must outlive it); change.fn and change.user unset.
struct PartitionChange {
    std::vector<cdcflow_str> assigned, revoked, query;
    cdcflow_partitions change{};
    PartitionChange(const std::vector<std::string> &a, const std::vector<std::string> &r,
                    const std::vector<std::string> &q = {}) {
        for (const std::string &s : a)
            assigned.push_back(cdcflow::str(s));
        for (const std::string &s : r)
            revoked.push_back(cdcflow::str(s));
        for (const std::string &s : q)
            query.push_back(cdcflow::str(s));
        change.struct_size = sizeof change;
        change.assigned_count = static_cast<uint32_t>(assigned.size());
        change.assigned = assigned.data();
        change.revoked_count = static_cast<uint32_t>(revoked.size());
        change.revoked = revoked.data();
        change.query_count = static_cast<uint32_t>(query.size());
        change.query = query.data();
    }
};

inline bool append(cdcflow_batch &b, const EventSpec &s) {
    cdcflow_event_init e = cdcflow::make_event_init();
    e.event_id = cdcflow::str(s.id);
    e.aggregate_type = cdcflow::str(s.aggregate_type);
    e.aggregate_id = cdcflow::str(s.aggregate_id);
    e.event_type = cdcflow::str(s.type);
    e.payload = cdcflow::str(s.payload);
    e.timestamp_us = s.timestamp_us;
    e.position = cdcflow_position{cdcflow::str(s.partition), s.offset};
    e.aggregate_version = s.version;
    return b.append(e);
}

// A fresh, empty temporary directory per test (removed at scope exit).
class TempDir {
public:
    explicit TempDir(const std::string &name) {
        path_ = std::filesystem::temp_directory_path() /
                ("cdcflow_ut_" + name + "_" +
                 std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string &name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

// Polls `pred` every few ms for up to 20 s (a generous bound: the code under
// test decides when; nothing here measures speed).
template <typename P> bool eventually(P pred) {
    auto t0 = std::chrono::steady_clock::now();
    while (!pred()) {
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(20)) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

} // namespace cdcflow::test

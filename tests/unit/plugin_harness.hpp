// Drives a plugin class in-process over the REAL host API table
// (cdcflow::host::host_api()): the Config and Context handed to the plugin
// are the host's own cdcflow_config / cdcflow_ctx, and batches are the
// host's cdcflow_batch. Only the YAML step is skipped: config values are
// filled here, defaults taken from the plugin's declared kConfig the way
// check_pipeline() does.
#pragma once

#include "batch.hpp"
#include "host_api.hpp"
#include "metrics.hpp"
#include "pipeline.hpp"

#include <cdcflow/sdk.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

namespace cdcflow::test {

// One config value as a test writes it.
struct Val {
    Val(const char *s) : type(CDCFLOW_CONFIG_STRING), s(s) {}
    Val(std::string s) : type(CDCFLOW_CONFIG_STRING), s(std::move(s)) {}
    Val(int v) : type(CDCFLOW_CONFIG_INT), i(v) {}
    Val(int64_t v) : type(CDCFLOW_CONFIG_INT), i(v) {}
    Val(bool v) : type(CDCFLOW_CONFIG_BOOL), b(v) {}
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

// A stage's host-side objects: StageDef, cdcflow_config, cdcflow_ctx, metrics.
class StageHarness {
public:
    StageHarness(std::string stage_id, const cdcflow_config_key *keys, size_t nkeys,
                 std::initializer_list<std::pair<const char *, Val>> values) {
        def_.id = std::move(stage_id);
        for (size_t k = 0; k < nkeys; ++k) {
            const cdcflow_config_key &key = keys[k];
            if (!key.default_value) continue;
            std::string text = key.default_value;
            switch (key.type) {
            case CDCFLOW_CONFIG_STRING:
                if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
                    text = text.substr(1, text.size() - 2);
                put(key.name, Val(text), true);
                break;
            case CDCFLOW_CONFIG_INT:
                put(key.name, Val(static_cast<int64_t>(std::stoll(text))), true);
                break;
            case CDCFLOW_CONFIG_BOOL:
                put(key.name, Val(text == "true"), true);
                break;
            default:
                break;
            }
        }
        for (auto &[k, v] : values)
            put(k, v, false);
        cfg_.def = &def_;
        ctx_.stage_id = def_.id;
        ctx_.metrics = &metrics_;
        ctx_.stop = &stop_;
        ctx_.rejected = metrics_.create(def_.id + ".rejected", "", false);
        ctx_.duplicates = metrics_.create(def_.id + ".duplicates", "", false);
    }
    StageHarness(const StageHarness &) = delete;
    StageHarness &operator=(const StageHarness &) = delete;

    cdcflow::Config config() const { return cdcflow::Config(host::host_api(), &cfg_); }
    cdcflow::Context context() { return cdcflow::Context(host::host_api(), &ctx_); }
    cdcflow_ctx *ctx() { return &ctx_; }
    const cdcflow_config *cfg() const { return &cfg_; }
    int64_t metric(const std::string &name) const { return metrics_.value(def_.id + "." + name); }
    void request_stop() { stop_.store(true); }

    // A view of b as the plugin sees it in process()/poll().
    cdcflow::Batch view(cdcflow_batch &b) { return cdcflow::Batch(host::host_api(), &ctx_, &b); }

private:
    void put(const std::string &key, const Val &v, bool from_default) {
        host::ConfigValue cv;
        cv.from_default = from_default;
        cv.type = v.type;
        cv.location = "test.yaml:1:1";
        switch (v.type) {
        case CDCFLOW_CONFIG_STRING:
            cv.scalar = v.s;
            cv.json = json_quote(v.s);
            break;
        case CDCFLOW_CONFIG_INT:
            cv.i = v.i;
            cv.scalar = cv.json = std::to_string(v.i);
            break;
        default:
            cv.b = v.b;
            cv.scalar = cv.json = v.b ? "true" : "false";
            break;
        }
        def_.config[key] = std::move(cv);
    }

    host::StageDef def_;
    cdcflow_config cfg_{};
    cdcflow_ctx ctx_{};
    host::Metrics metrics_;
    std::atomic<bool> stop_{false};
};

// Makes a T (a plugin class) from the harness, as the SDK's create thunk does.
template <typename T> std::unique_ptr<T> make_stage(StageHarness &h) {
    return std::make_unique<T>(h.config(), h.context());
}

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

} // namespace cdcflow::test

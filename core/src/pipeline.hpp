// The pipeline definition: what a pipeline YAML file says, checked.
//
// Loading happens in two steps because the file itself may add plugin
// folders (plugin_path):
//   1. parse_pipeline(): YAML -> PipelineDef. Checks structure (mappings where
//      mappings belong, unique stage ids, required fields), interpolates
//      ${VAR} / ${VAR:-default} in scalar values, and refuses hostile input
//      (too large, too deep, alias bombs, binary) with an error, never a crash.
//   2. check_pipeline() (config_schema.cpp): checks every stage's config
//      against its plugin's declared schema (unknown plugin, unknown key with
//      the closest declared one, wrong type, bounds, choices, missing required
//      key; a secret's value is never echoed) and the shape (a source first, a
//      sink last, transforms between), and fills in defaults.
// Every error is one line: "FILE:LINE:COL: what is wrong".
#pragma once

#include "http/address.hpp"
#include "log.hpp"

#include <cdcflow/status.hpp>

#include <cdcflow/plugin.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::host {

// A position in the pipeline file (1-based line and column).
struct Mark {
    int line = 0;
    int col = 0;
};

// Where every node nested in a config value that is a mapping or a sequence
// is in the file, so that config_location_at (ABI 6) can answer a JSON
// Pointer into the value. Kept only for mappings and sequences, which only a
// json-typed key accepts; scalars need none. Built once by the loader's walk
// (yaml_json.hpp), read-only afterwards except for the answers' cache.
//
// Cheap on purpose: a flat tree (one Node per YAML node, a mapping's or
// sequence's children contiguous, keys in one arena), bounded by the
// loader's budgets on hostile files (aliases: one Node per visit). A value
// reached through an alias has the anchored node's position: that is where
// its text is.
class NestedMarks {
public:
    struct Node {
        Mark mark;
        uint32_t first = 0; // its children: children_[first, first + count)
        uint32_t count = 0;
        bool mapping = false; // else a sequence (or a scalar: count 0)
    };

    explicit NestedMarks(std::string file) : file_(std::move(file)) {}

    // Building (the loader). add() returns the new node's index; the root is 0.
    uint32_t add(Mark m);
    // Reserves `count` children of `parent`; set each with set_child before
    // adding any other node's children.
    void open(uint32_t parent, bool mapping, size_t count);
    void set_child(uint32_t parent, size_t i, std::string_view key, uint32_t node);
    // Once built: gives back what the vectors' growth reserved (up to half).
    void shrink();

    // The node a JSON Pointer (RFC 6901) names or, when it names none (a
    // missing key, an index past the end, "-", a malformed escape), the
    // deepest node reached on the way. "" is the root.
    uint32_t resolve(std::string_view pointer) const;
    const Node &node(uint32_t i) const { return nodes_[i]; }
    size_t size() const { return nodes_.size(); }
    // "file:line:col" of node i, NUL-terminated and valid as long as this
    // object (answers are cached; any thread).
    const char *location(uint32_t i) const;

private:
    struct Child {
        uint32_t key_offset = 0; // into keys_ (mappings; empty for sequences)
        uint32_t key_size = 0;
        uint32_t node = 0;
    };
    std::string file_;
    std::vector<Node> nodes_;
    std::vector<Child> children_;
    std::string keys_;
    mutable std::mutex mutex_;
    mutable std::map<uint32_t, std::string> answers_;
};

// One config value after interpolation and schema checking. For scalars,
// `scalar` holds the interpolated text; `json` always holds the value as JSON
// text (a string is quoted, a mapping is an object...). Typed fields are
// filled by check_pipeline() for the declared type.
struct ConfigValue {
    Mark mark;                 // where the value (or, for defaults, the key) is
    bool from_default = false; // not in the file: the schema's default
    bool is_scalar = true;
    std::string scalar;
    std::string json;
    cdcflow_config_type type = CDCFLOW_CONFIG_STRING; // set by check_pipeline
    int64_t i = 0;
    double d = 0;
    bool b = false;
    std::string location; // "file:line:col", NUL-terminated via c_str()
    Mark key_mark;        // where the key is (for defaults: the config mapping)
    // A mapping or sequence written in the file: where each nested node is
    // (config_location_at). Null for scalars and defaults; copies share it.
    std::shared_ptr<const NestedMarks> nested{};

    // "file:line:col" of the node `pointer` names in this value (the deepest
    // one on the way when it names none); `location` for a scalar, an
    // interpolated value (its scalar is where the text is) and a default
    // (the stage's config mapping). Valid as long as this value.
    const char *location_at(std::string_view pointer) const;
};

// How the host retries a stage call that answered CDCFLOW_ERR_RETRY (a
// locked database, a broker that is away): the same call again after a
// backoff that doubles from backoff_ms up to max_backoff_ms, each wait
// multiplied by a random factor in [1 - jitter, 1] (so that hosts that met
// the same lock do not come back in step). With the stage's breaker disabled
// (breaker.failures 0), max_attempts tries in all, then the pipeline fails
// with the stage's message; with it enabled, the breaker opens after
// min(breaker.failures, max_attempts) consecutive failures instead (see
// BreakerPolicy). A stop request ends any wait at once. (A stage's optional
// `retry:` mapping; `settings.retry` holds the pipeline's defaults, which a
// stage's own mapping overrides key by key.)
struct RetryPolicy {
    uint32_t max_attempts = 20;
    uint32_t backoff_ms = 50;
    uint32_t max_backoff_ms = 5000;
    double jitter = 0.2; // 0..1
};

// A stage's circuit breaker (`breaker:`, defaults in `settings.breaker`):
// after `failures` consecutive transient failures of one call the breaker
// opens: nothing is called for cooldown_ms (the stage's thread waits, so its
// upstream queue fills and the source blocks: back pressure, nothing is
// dropped), then it is half-open: the same call once more (the probe).
// Success closes it and the stage goes on; failure opens it for another
// cool-down. While enabled, a transient failure never fails the pipeline
// (it waits; /health answers 503 while a breaker is not closed). failures 0
// disables the breaker: past retry.max_attempts the pipeline fails.
// Permanent failures (IO, CONFIG, NOMEM, ...) never go through it: they stop
// the pipeline at once, the last checkpoint intact.
struct BreakerPolicy {
    uint32_t failures = 5;
    uint32_t cooldown_ms = 5000;
};

// Poison events (CDCFLOW_ERR_EVENT or CDCFLOW_ERR_INTERNAL from a transform's
// or sink's process): the host bisects the batch down to the events that fail
// on their own and dead-letters each (REJECTED, the stage's message as the
// reason). More than `poison_limit` events isolated in a row (no event
// succeeding in between), or a batch of 2+ events that all fail on their
// own, is a stage failure instead. (A stage key; default in settings.)
constexpr uint32_t kDefaultPoisonLimit = 100;

struct StageDef {
    std::string id;
    std::string plugin;
    Mark mark;        // the stage's mapping
    Mark plugin_mark; // the plugin: value
    Mark config_mark; // the config: mapping (or the stage when absent)
    std::map<std::string, ConfigValue> config;
    RetryPolicy retry;     // settings.retry, overridden key by key by the stage's `retry:`
    BreakerPolicy breaker; // settings.breaker, likewise by the stage's `breaker:`
    uint32_t poison_limit = kDefaultPoisonLimit;
};

// What a host does when another live process owns the sink's checkpoint.
enum class WhenOwned {
    wait,  // a standby: take over when the owner stops or dies
    refuse // exit at once (kExitOwned), naming the owner
};

// Host-level settings (the optional `settings:` mapping).
struct Settings {
    // Adaptive batching: a batch holds up to batch_size events while the
    // source keeps up; each batch the source fills to its limit doubles the
    // next one's, up to max(batch_size, batch_max_events), and the first one
    // that is not full falls back to batch_size. A fill also stops at
    // batch_max_bytes of event data and batch_max_ms after its first event (0: no
    // time bound). Events in flight are bounded by stages x the largest batch.
    uint32_t batch_size = 1024;          // events per batch while caught up
    uint32_t batch_max_events = 32768;   // events per batch under backlog
    uint32_t batch_max_bytes = 8u << 20; // event bytes per batch
    uint32_t batch_max_ms = 50;          // longest a batch fills
    uint32_t queue_capacity = 8;         // batches per queue between stages
    // Memory (README, "Memory"). Event bytes in flight (the arena bytes of
    // the batches the source pushed and that have not come back committed)
    // stay within queue_max_bytes: the source starts no fill that could pass
    // it, except the one batch that always goes (an oversized event cannot
    // stall the stream). At least batch_max_bytes (checked at load).
    uint64_t queue_max_bytes = uint64_t{64} << 20;
    // 0: none. Once the process's resident memory passes 90% of it, the
    // source reads batch_size events at a time, each only after everything
    // in flight committed, until it falls below again. Soft: it slows the
    // source; caches are bounded by their own settings and RSS can pass it.
    uint64_t memory_soft_limit_bytes = 0;
    uint32_t shutdown_timeout_ms = 10000;   // SIGINT/SIGTERM drain deadline
    uint32_t poll_wait_ms = 100;            // longest a source poll may park
    WhenOwned when_owned = WhenOwned::wait; // another host owns the checkpoint
    uint32_t owner_lease_ms = 10000;        // see cdcflow_ownership.lease_ms
    // Every stage's defaults (a stage's own keys override them one by one).
    RetryPolicy retry;
    BreakerPolicy breaker;
    uint32_t poison_limit = kDefaultPoisonLimit;
};

// The value of the settings key `name` when it is an integer setting (what
// a stage reads through pipeline_setting, ABI 7); nullopt for any other
// name (when_owned, retry, an unknown key).
std::optional<int64_t> integer_setting(const Settings &s, std::string_view name);

// The operational endpoints (the optional `http:` mapping; `run --http ADDR`
// overrides listen): /health, /ready and /metrics, served as http/server.hpp
// says.
struct HttpSettings {
    std::optional<http::Address> listen; // none: served only with --http
    Mark listen_mark;                    // where listen's value is, for messages
    uint32_t request_timeout_ms = 5000;  // one deadline for a whole request
    uint32_t max_connections = 32;       // open at once; more are closed at accept
};

// The optional `log:` mapping. The command line (--log-level,
// --log-format) and the environment (CDCFLOW_LOG_LEVEL, CDCFLOW_LOG_FORMAT)
// win over what the file says; unset: the defaults (info, text).
struct LogSettings {
    std::optional<cdcflow_log_level> level;
    std::optional<LogFormat> format;
    uint32_t plugin_lines_per_second = kDefaultPluginLinesPerSecond; // per stage; 0: no limit
};

struct PipelineDef {
    std::string file; // as given on the command line
    std::string name;
    std::vector<std::string> plugin_path; // folders, resolved relative to the file
    Settings settings;
    HttpSettings http;
    LogSettings log;
    std::vector<StageDef> stages;
    // Filled by check_pipeline(): "file:line:col: what" for what loads but
    // deserves a word (a deprecated config key); the runtime logs them.
    std::vector<std::string> warnings{};
};

// What the checker needs to know about a plugin (from its descriptor: ABI 3's
// config_params, or ABI 1's config_keys converted; see config_schema.hpp).
struct KeySpec {
    std::string name;
    cdcflow_config_type type;
    // ABI 1: the YAML text of the default ("\"outbox\"" or "outbox"); ABI 3
    // (literal_default): the value as a user writes it, a string taken as is.
    std::optional<std::string> default_value;
    bool required = false;
    std::string description;
    bool literal_default = false;
    bool secret = false;     // never printed (CDCFLOW_PARAM_SECRET)
    bool deprecated = false; // accepted, ignored, a warning when set (CDCFLOW_PARAM_DEPRECATED)
    // INT and DOUBLE: inclusive bounds as declared (text), nullopt: unbounded.
    std::optional<std::string> min{};
    std::optional<std::string> max{};
    // STRING: the allowed values; empty: any text.
    std::vector<std::string> choices{};
};
struct PluginSchema {
    std::string name;
    cdcflow_kind kind;
    std::vector<KeySpec> keys;
};

// Looks up an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string &)>;
EnvLookup process_env();

// Interpolate ${VAR} and ${VAR:-default} in one scalar. "$$" is a literal
// "$". An unset variable without a default is an error naming it.
Result<std::string> interpolate(const std::string &text, const EnvLookup &env);

// Step 1. `text` is the file's content; `file` is used in messages.
Result<PipelineDef> parse_pipeline(const std::string &text, const std::string &file, const EnvLookup &env);
// Step 1 from a file on disk (unreadable file: an error naming it).
Result<PipelineDef> load_pipeline_file(const std::string &path, const EnvLookup &env);

// A YAML document that is one config value kept in a file of its own (e.g. a
// validator's `rules:` mapping, read by `cdcflow produce --rules`): the
// value means exactly what it would mean under a stage's `config:` (same
// scalar typing, ${VAR} interpolation and limits on hostile input). `kind`
// names the file in messages ("rules file"); errors are "FILE:LINE:COL: what".
Result<ConfigValue> parse_config_document(const std::string &text, const std::string &file,
                                          const std::string &kind, const EnvLookup &env);

// Step 2. `find` returns the schema of a plugin by name, or nullptr.
Status check_pipeline(PipelineDef &def, const std::function<const PluginSchema *(const std::string &)> &find);

// "file:line:col" for messages.
std::string where(const std::string &file, Mark m);

} // namespace cdcflow::host

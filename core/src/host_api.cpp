#include "host_api.hpp"

#include "base/text.hpp"
#include "base/utf8.hpp"
#include "config_schema.hpp"
#include "payload.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string_view>

namespace cdcflow::host {

namespace {

// The key's declaration, or null when the plugin did not declare it. Without a
// schema (a StageDef filled by hand in tests) a key set in def counts as declared.
const KeySpec *declared(const cdcflow_config *cfg, const char *key) {
    static const KeySpec kUnchecked{};
    if (!cfg || !cfg->def || !key) return nullptr;
    if (!cfg->schema) return cfg->def->config.count(key) ? &kUnchecked : nullptr;
    return find_key(*cfg->schema, key);
}

// The value of a declared key (set, or its default); null otherwise. The v1
// getters go through here too, so they refuse an undeclared key like
// config_lookup does (NOT_FOUND), whatever the StageDef holds.
const ConfigValue *lookup(const cdcflow_config *cfg, const char *key) {
    if (!declared(cfg, key)) return nullptr;
    auto it = cfg->def->config.find(key);
    return it == cfg->def->config.end() ? nullptr : &it->second;
}

// A plugin's line, under its stage's rate limit (log.hpp): a plugin that
// logs in a loop must not flood the disk or hold the host up.
void api_log(cdcflow_ctx *ctx, cdcflow_log_level level, const char *msg) {
    if (level < log_level()) return; // filtered lines do not count against the limit
    if (ctx) {
        std::call_once(ctx->log_limit_once,
                       [ctx] { ctx->log_limit = std::make_unique<PluginLogLimiter>(ctx->stage_id); });
        if (!ctx->log_limit->admit()) return;
    }
    log_line(level, ctx ? ctx->stage_id : "plugin", msg ? msg : "");
}

cdcflow_status get_string(const cdcflow_config *cfg, const char *key, cdcflow_str *out) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    if (v->type != CDCFLOW_CONFIG_STRING) return CDCFLOW_ERR_TYPE;
    *out = cdcflow_str{v->scalar.c_str(), v->scalar.size()};
    return CDCFLOW_OK;
}

cdcflow_status get_int(const cdcflow_config *cfg, const char *key, int64_t *out) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    if (v->type != CDCFLOW_CONFIG_INT) return CDCFLOW_ERR_TYPE;
    *out = v->i;
    return CDCFLOW_OK;
}

cdcflow_status get_double(const cdcflow_config *cfg, const char *key, double *out) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    if (v->type != CDCFLOW_CONFIG_DOUBLE) return CDCFLOW_ERR_TYPE;
    *out = v->d;
    return CDCFLOW_OK;
}

cdcflow_status get_bool(const cdcflow_config *cfg, const char *key, int32_t *out) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    if (v->type != CDCFLOW_CONFIG_BOOL) return CDCFLOW_ERR_TYPE;
    *out = v->b ? 1 : 0;
    return CDCFLOW_OK;
}

cdcflow_status get_json(const cdcflow_config *cfg, const char *key, cdcflow_str *out) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    *out = cdcflow_str{v->json.c_str(), v->json.size()};
    return CDCFLOW_OK;
}

// ABI 3. Only the member of the asked type is written, and only when the
// caller's cdcflow_config_value is long enough to hold it (it is for every ABI 3
// caller; a shorter one gets WRONG_TYPE rather than a write past its end).
cdcflow_config_result config_lookup(const cdcflow_config *cfg, const char *key, cdcflow_config_type type,
                                    cdcflow_config_value *out) {
    const KeySpec *spec = declared(cfg, key);
    if (!spec) return CDCFLOW_CONFIG_UNDECLARED;
    const ConfigValue *v = lookup(cfg, key);
    // Without a schema the value's own (checked) type stands in for the declaration.
    cdcflow_config_type declared_type = cfg->schema ? spec->type : v ? v->type : type;
    if (declared_type != type) return CDCFLOW_CONFIG_WRONG_TYPE;
    if (!v) return CDCFLOW_CONFIG_UNSET;
    if (!out) return CDCFLOW_CONFIG_FOUND;
    switch (type) {
    case CDCFLOW_CONFIG_STRING:
    case CDCFLOW_CONFIG_JSON:
        if (!CDCFLOW_HAS_FIELD(out, cdcflow_config_value, text)) return CDCFLOW_CONFIG_WRONG_TYPE;
        out->text = type == CDCFLOW_CONFIG_STRING ? cdcflow_str{v->scalar.c_str(), v->scalar.size()}
                                                  : cdcflow_str{v->json.c_str(), v->json.size()};
        break;
    case CDCFLOW_CONFIG_INT:
        if (!CDCFLOW_HAS_FIELD(out, cdcflow_config_value, i)) return CDCFLOW_CONFIG_WRONG_TYPE;
        out->i = v->i;
        break;
    case CDCFLOW_CONFIG_DOUBLE:
        if (!CDCFLOW_HAS_FIELD(out, cdcflow_config_value, d)) return CDCFLOW_CONFIG_WRONG_TYPE;
        out->d = v->d;
        break;
    case CDCFLOW_CONFIG_BOOL:
        if (!CDCFLOW_HAS_FIELD(out, cdcflow_config_value, b)) return CDCFLOW_CONFIG_WRONG_TYPE;
        out->b = v->b ? 1 : 0;
        break;
    default:
        return CDCFLOW_CONFIG_WRONG_TYPE;
    }
    return CDCFLOW_CONFIG_FOUND;
}

const char *config_location(const cdcflow_config *cfg, const char *key) {
    const ConfigValue *v = lookup(cfg, key);
    return v ? v->location.c_str() : "";
}

// ABI 6. A value the file does not hold nests nothing the file could point
// at: a default answers what config_location does (the stage's config
// mapping), as does a scalar, whatever the pointer; a key with no value at
// all answers "". See ConfigValue::location_at.
const char *config_location_at(const cdcflow_config *cfg, const char *key, const char *pointer) {
    const ConfigValue *v = lookup(cfg, key);
    if (!v) return "";
    try {
        return v->location_at(pointer ? pointer : "");
    } catch (const std::exception &) { // out of memory for the cached answer: the key's own position
        return v->location.c_str();
    }
}

// ABI 7. Read-only after load, so any thread.
cdcflow_status pipeline_setting(cdcflow_ctx *ctx, const char *name, int64_t *out) {
    if (!ctx || !name || !out) return CDCFLOW_ERR_INTERNAL;
    static const Settings kDefaults;
    std::optional<int64_t> v = integer_setting(ctx->settings ? *ctx->settings : kDefaults, name);
    if (!v) return CDCFLOW_ERR_NOT_FOUND;
    *out = *v;
    return CDCFLOW_OK;
}

// A plugin's metrics are families of their own, cdcflow_plugin_<plugin>_<name>
// (a counter ends in _total), labelled with the pipeline and the stage: they
// can never alias the host's families, and two stages of one plugin share
// a family. A name that cannot be listed (empty, or already a family of
// the other type) gets a handle that counts but is never rendered.
cdcflow_metric *plugin_metric(cdcflow_ctx *ctx, const char *name, const char *help, bool gauge) {
    if (!ctx) return nullptr;
    cdcflow_metric *m = nullptr;
    if (ctx->metrics && name && *name) {
        std::string family =
            "cdcflow_plugin_" + Metrics::name_part(ctx->plugin) + "_" + Metrics::name_part(name);
        const std::string total = "_total";
        if (!gauge && (family.size() < total.size() ||
                       family.compare(family.size() - total.size(), total.size(), total) != 0))
            family += total;
        Labels labels = {{"pipeline", ctx->pipeline}, {"stage", ctx->stage_id}};
        std::string h = help && *help ? help : std::string("metric '") + name + "' of plugin " + ctx->plugin;
        m = gauge ? ctx->metrics->gauge(family, h, labels) : ctx->metrics->counter(family, h, labels);
        if (!m)
            log_line(CDCFLOW_LOG_WARN, ctx->stage_id,
                     "metric " + base::quoted(name) + " is not shown in /metrics: family " + family +
                         " already exists as another type");
    }
    return m ? m : &ctx->unlisted.emplace_back();
}

cdcflow_metric *metric_counter(cdcflow_ctx *ctx, const char *name, const char *help) {
    return plugin_metric(ctx, name, help, false);
}

cdcflow_metric *metric_gauge(cdcflow_ctx *ctx, const char *name, const char *help) {
    return plugin_metric(ctx, name, help, true);
}

void metric_add(cdcflow_metric *m, int64_t delta) {
    if (m) m->value.fetch_add(delta, std::memory_order_relaxed);
}

void metric_set(cdcflow_metric *m, int64_t value) {
    if (m) m->value.store(value, std::memory_order_relaxed);
}

// ABI 4. A cache's figures under the host's families, labelled with the
// stage and the cache's name.
cdcflow_metric *metric_cache(cdcflow_ctx *ctx, const char *cache, cdcflow_cache_stat stat) {
    if (!ctx || !ctx->metrics || !cache) return nullptr;
    Labels labels = {{"pipeline", ctx->pipeline}, {"stage", ctx->stage_id}, {"cache", cache}};
    switch (stat) {
    case CDCFLOW_CACHE_ENTRIES:
        return ctx->metrics->gauge("cdcflow_cache_entries", "Entries a stage's cache holds.", labels);
    case CDCFLOW_CACHE_CAPACITY:
        return ctx->metrics->gauge("cdcflow_cache_capacity", "Entries a stage's cache holds at most.",
                                   labels);
    case CDCFLOW_CACHE_HITS:
        return ctx->metrics->counter("cdcflow_cache_hits_total", "Look-ups a stage's cache answered.",
                                     labels);
    case CDCFLOW_CACHE_MISSES:
        return ctx->metrics->counter("cdcflow_cache_misses_total",
                                     "Look-ups a stage's cache could not answer.", labels);
    }
    return nullptr;
}

cdcflow_metric *metric_lag(cdcflow_ctx *ctx, const char *partition) {
    if (!ctx || !ctx->metrics || !partition) return nullptr;
    return ctx->metrics->gauge(
        "cdcflow_source_lag_events", "Events a source has not read yet (for Kafka: the consumer lag).",
        {{"pipeline", ctx->pipeline}, {"stage", ctx->stage_id}, {"partition", partition}});
}

cdcflow_event *batch_events(cdcflow_batch *b, uint32_t *count, uint32_t *stride) {
    if (count) *count = b ? b->count : 0;
    if (stride) *stride = sizeof(cdcflow_event);
    return b ? b->events.data() : nullptr;
}

// Copies ev into b. OK, BATCH_FULL, NOMEM.
cdcflow_status push_exact(cdcflow_batch *b, const cdcflow_event_init &ev) {
    try {
        return b->append(ev) ? CDCFLOW_OK : CDCFLOW_ERR_BATCH_FULL;
    } catch (const std::bad_alloc &) {
        return CDCFLOW_ERR_NOMEM;
    }
}

// As push_exact, also for an older plugin's shorter cdcflow_event_init (the
// rest zero); INTERNAL for a malformed one. The common case copies nothing.
cdcflow_status push(cdcflow_batch *b, const cdcflow_event_init *ev) {
    if (!b || !ev) return CDCFLOW_ERR_INTERNAL;
    if (ev->struct_size == sizeof(cdcflow_event_init)) return push_exact(b, *ev);
    cdcflow_event_init full{};
    full.aggregate_version = -1;
    size_t n = ev->struct_size < sizeof full ? ev->struct_size : sizeof full;
    if (n < offsetof(cdcflow_event_init, position) + sizeof(cdcflow_position)) return CDCFLOW_ERR_INTERNAL;
    std::memcpy(&full, ev, n);
    return push_exact(b, full);
}

cdcflow_status batch_push(cdcflow_batch *b, const cdcflow_event_init *ev) {
    return push(b, ev);
}

// ABI 1's meaning: NOMEM is "full". Memory that ran out must not read as
// "full" (the source would retry the same row forever): INTERNAL.
cdcflow_status batch_append(cdcflow_batch *b, const cdcflow_event_init *ev) {
    switch (cdcflow_status st = push(b, ev)) {
    case CDCFLOW_ERR_BATCH_FULL:
        return CDCFLOW_ERR_NOMEM;
    case CDCFLOW_ERR_NOMEM:
        return CDCFLOW_ERR_INTERNAL;
    default:
        return st;
    }
}

cdcflow_status payload_of(cdcflow_batch *b, uint32_t index, cdcflow_payload *out) {
    return b ? event_payload(*b, index, out) : CDCFLOW_ERR_INTERNAL;
}

uint32_t batch_capacity(const cdcflow_batch *b) {
    return b ? b->capacity() : 0;
}

void *batch_alloc(cdcflow_batch *b, uint64_t size) {
    if (!b) return nullptr;
    try {
        return b->arena.alloc(static_cast<size_t>(size));
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}

const char kNoReason[] = "rejected";

void event_reject(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index, const char *reason, uint64_t len) {
    if (!b || index >= b->count || (ctx && ctx->restoring)) return;
    cdcflow_event &e = b->events[index];
    if (e.status != CDCFLOW_EVENT_OK) return; // first verdict stands
    e.status = CDCFLOW_EVENT_REJECTED;
    ++b->marked;
    const std::string &stage = ctx ? ctx->stage_id : std::string();
    try {
        e.reject_stage = b->arena.copy(cdcflow_str{stage.data(), stage.size()});
        std::string_view r(reason ? reason : "", reason ? static_cast<size_t>(len) : 0);
        if (r.empty()) {
            e.reject_reason = cdcflow_str{kNoReason, 8};
        } else if (base::valid_utf8(r)) {
            e.reject_reason = b->arena.copy(cdcflow_str{r.data(), r.size()});
        } else {
            // Reasons are always valid UTF-8 (they quote event bytes): every
            // client can read the dead-letter table.
            std::string safe = base::escape_invalid_utf8(r);
            e.reject_reason = b->arena.copy(cdcflow_str{safe.data(), safe.size()});
        }
    } catch (const std::bad_alloc &) {
        e.reject_stage = cdcflow_str{"", 0};
        e.reject_reason = cdcflow_str{kNoReason, 8};
    }
    if (ctx) metric_add(ctx->rejected, 1);
}

void event_mark_duplicate(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index) {
    if (!b || index >= b->count || (ctx && ctx->restoring)) return;
    cdcflow_event &e = b->events[index];
    if (e.status == CDCFLOW_EVENT_DUPLICATE) return;
    if (e.status == CDCFLOW_EVENT_OK)
        ++b->marked;
    else if (!ctx || std::string_view(e.reject_stage.data ? e.reject_stage.data : "", e.reject_stage.len) !=
                         ctx->stage_id)
        ++b->overridden; // another stage's verdict: see Batch::overridden
    // A later copy of an id is a duplicate even if an earlier stage rejected
    // it: it is counted, not dead-lettered (DESIGN.md).
    e.status = CDCFLOW_EVENT_DUPLICATE;
    e.reject_stage = cdcflow_str{"", 0};
    e.reject_reason = cdcflow_str{"", 0};
    if (ctx) metric_add(ctx->duplicates, 1);
}

void event_drop(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index) {
    if (!b || index >= b->count || (ctx && ctx->restoring)) return;
    cdcflow_event &e = b->events[index];
    // A rejection (a dead letter) or a duplicate mark stands over a drop: a
    // filter must not make a bad event or a copy vanish from the counts.
    if (e.status != CDCFLOW_EVENT_OK) return;
    e.status = CDCFLOW_EVENT_DROPPED;
    ++b->dropped;
    ++b->marked;
    if (ctx) metric_add(ctx->dropped, 1);
}

const char *stage_id(cdcflow_ctx *ctx) {
    return ctx ? ctx->stage_id.c_str() : "";
}

int32_t stop_requested(cdcflow_ctx *ctx) {
    return ctx && ctx->stop && ctx->stop->load(std::memory_order_relaxed) ? 1 : 0;
}

void ownership_lost(cdcflow_ctx *ctx, const char *msg) {
    if (!ctx) return;
    std::string m;
    try {
        m = msg ? msg : "ownership lost";
    } catch (...) {
        m.clear(); // memory ran out for the message: the pipeline still stops
    }
    try {
        if (ctx->ownership_lost)
            ctx->ownership_lost(m);
        else
            log_line(CDCFLOW_LOG_ERROR, ctx->stage_id, m);
    } catch (...) {
    }
}

cdcflow_status partitions_changed(cdcflow_ctx *ctx, const cdcflow_partitions *change, char *err,
                                  uint64_t err_len) {
    std::string why;
    cdcflow_status cs = CDCFLOW_ERR_INTERNAL;
    if (!ctx || !change || change->struct_size < sizeof(uint32_t) * 2)
        why = "partitions_changed: no context or no change";
    else if (!ctx->partitions_changed)
        why = "partitions_changed: only the source of a pipeline may call it, and only when its plugin "
              "declares CDCFLOW_PLUGIN_GROUP_PARTITIONS";
    else {
        // From inside a consumer group's rebalance callback: nothing may
        // escape into the plugin (the SDK's side is noexcept).
        try {
            cs = ctx->partitions_changed(*change, why);
        } catch (const std::bad_alloc &) {
            cs = CDCFLOW_ERR_NOMEM;
            why.clear();
        } catch (const std::exception &e) {
            cs = CDCFLOW_ERR_INTERNAL;
            try {
                why = std::string("partitions_changed: ") + e.what();
            } catch (...) {
                why.clear();
            }
        }
    }
    if (cs != CDCFLOW_OK && err && err_len) {
        const std::string_view text = why.empty() && cs == CDCFLOW_ERR_NOMEM
                                          ? std::string_view("out of memory")
                                          : std::string_view(why);
        size_t n = std::min<size_t>(text.size(), static_cast<size_t>(err_len - 1));
        std::memcpy(err, text.data(), n);
        err[n] = '\0';
    }
    return cs;
}

const cdcflow_host_api kApi = {
    CDCFLOW_ABI_VERSION,
    sizeof(cdcflow_host_api),
    api_log,
    get_string,
    get_int,
    get_double,
    get_bool,
    get_json,
    config_location,
    metric_counter,
    metric_gauge,
    metric_add,
    metric_set,
    batch_events,
    batch_append,
    batch_capacity,
    batch_alloc,
    event_reject,
    event_mark_duplicate,
    stage_id,
    stop_requested,
    batch_push,
    ownership_lost,
    config_lookup,
    event_drop,
    payload_of,
    metric_cache,
    metric_lag,
    partitions_changed,
    config_location_at,
    pipeline_setting,
};

} // namespace

const cdcflow_host_api *host_api() {
    return &kApi;
}

} // namespace cdcflow::host

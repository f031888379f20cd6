/* FROZEN: cdcflow/plugin.h exactly as ABI 1 shipped it (commit 6864ccf). The
 * plugins in this folder are built against it, so that a test proves that a
 * plugin built for ABI 1 keeps loading and working in this host. Never edit. */
/*
 * cdcflow/plugin.h: the stable C ABI between the cdcflow host and a stage
 * plugin. This header is the whole contract; it is plain C99 (a test compiles
 * it as C) and carries no C++ types and no exceptions.
 *
 * A plugin is a shared object that exports exactly one symbol,
 * CDCFLOW_PLUGIN_ENTRY_SYMBOL ("cdcflow_plugin_entry"), a function returning a
 * pointer to a static cdcflow_plugin descriptor. The descriptor starts with
 * abi_version and struct_size; the host refuses a plugin whose abi_version is
 * outside [CDCFLOW_ABI_VERSION_MIN, CDCFLOW_ABI_VERSION].
 *
 * Growth rule: every struct here only ever grows at its end. A reader checks
 * struct_size before touching a field that a newer ABI appended.
 *
 * Threading: the host calls every callback of one stage instance from one
 * thread at a time (the stage's own thread, or the host's main thread before
 * start and after stop). Host API functions are thread-safe unless noted.
 *
 * Ownership: the host owns batches, events, config and every string it hands
 * out; a plugin never frees them. A plugin owns its instance (void *) and frees
 * it in destroy. Error messages are written into caller-provided buffers.
 */
#ifndef CDCFLOW_PLUGIN_H
#define CDCFLOW_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes, and the oldest one the host still loads. */
#define CDCFLOW_ABI_VERSION 1u
#define CDCFLOW_ABI_VERSION_MIN 1u

#define CDCFLOW_PLUGIN_ENTRY_SYMBOL "cdcflow_plugin_entry"

#if defined(_WIN32)
#define CDCFLOW_EXPORT __declspec(dllexport)
#else
#define CDCFLOW_EXPORT __attribute__((visibility("default")))
#endif

/* One status enum for every fallible call; cdcflow_status_str() names it. */
typedef enum cdcflow_status {
    CDCFLOW_OK = 0,
    CDCFLOW_ERR_CONFIG = 1,    /* bad configuration: fatal at load time */
    CDCFLOW_ERR_IO = 2,        /* database / network / file failure */
    CDCFLOW_ERR_RETRY = 3,     /* transient: the host retries with backoff */
    CDCFLOW_ERR_INTERNAL = 4,  /* a bug or an exception caught by the SDK */
    CDCFLOW_ERR_NOT_FOUND = 5, /* a config key or item that is not there */
    CDCFLOW_ERR_TYPE = 6,      /* a config key asked for with the wrong type */
    CDCFLOW_ERR_NOMEM = 7
} cdcflow_status;

typedef enum cdcflow_kind {
    CDCFLOW_KIND_SOURCE = 1,
    CDCFLOW_KIND_TRANSFORM = 2,
    CDCFLOW_KIND_SINK = 3
} cdcflow_kind;

/* Event status: events are marked, never erased or copied. */
typedef enum cdcflow_event_status {
    CDCFLOW_EVENT_OK = 0,
    CDCFLOW_EVENT_DUPLICATE = 1, /* skip: counted, not dead-lettered */
    CDCFLOW_EVENT_REJECTED = 2   /* dead letter: see reject_stage, reject_reason */
} cdcflow_event_status;

typedef enum cdcflow_log_level {
    CDCFLOW_LOG_DEBUG = 0,
    CDCFLOW_LOG_INFO = 1,
    CDCFLOW_LOG_WARN = 2,
    CDCFLOW_LOG_ERROR = 3
} cdcflow_log_level;

/* Config value types a plugin may declare. JSON takes any YAML value
 * (mapping, sequence or scalar) and hands it to the plugin as JSON text. */
typedef enum cdcflow_config_type {
    CDCFLOW_CONFIG_STRING = 1,
    CDCFLOW_CONFIG_INT = 2,    /* int64 */
    CDCFLOW_CONFIG_DOUBLE = 3,
    CDCFLOW_CONFIG_BOOL = 4,
    CDCFLOW_CONFIG_JSON = 5
} cdcflow_config_type;

/* A borrowed byte string; not NUL-terminated unless said so. */
typedef struct cdcflow_str {
    const char *data;
    uint64_t len;
} cdcflow_str;

/* A source position: an outbox has one partition ("") and offset = seq; Kafka
 * has "topic/partition" and the offset. A checkpoint is a set of these. */
typedef struct cdcflow_position {
    cdcflow_str partition;
    int64_t offset;
} cdcflow_position;

/* One declared config key. default_value is the YAML text of the default
 * (e.g. "100", "true", "[]"), or NULL when the key has no default. */
typedef struct cdcflow_config_key {
    const char *name;
    cdcflow_config_type type;
    const char *default_value;
    int32_t required; /* non-zero: the pipeline must set it */
    const char *description;
} cdcflow_config_key;

/* An event as it travels. Strings point into the batch's arena and live as
 * long as the batch is in the stage's hands. Events in a batch are laid out
 * with a stride the host reports (cdcflow_host_api.batch_events), so that a
 * plugin built against an older, shorter cdcflow_event still walks them. */
typedef struct cdcflow_event {
    cdcflow_str event_id;
    cdcflow_str aggregate_type;
    cdcflow_str aggregate_id;
    cdcflow_str event_type;
    cdcflow_str payload; /* JSON bytes, as the source read them */
    cdcflow_str headers; /* JSON object text, or empty */
    int64_t timestamp_us;
    int64_t aggregate_version; /* -1: none */
    cdcflow_position position;
    int32_t status;            /* cdcflow_event_status */
    int32_t reserved;
    cdcflow_str reject_stage;  /* set by the host on reject */
    cdcflow_str reject_reason; /* set by the host on reject */
} cdcflow_event;

/* What a source hands to batch_append; the host copies it into the arena. */
typedef struct cdcflow_event_init {
    uint32_t struct_size;
    uint32_t reserved;
    cdcflow_str event_id;
    cdcflow_str aggregate_type;
    cdcflow_str aggregate_id;
    cdcflow_str event_type;
    cdcflow_str payload;
    cdcflow_str headers;
    int64_t timestamp_us;
    int64_t aggregate_version; /* -1: none */
    cdcflow_position position;
} cdcflow_event_init;

typedef struct cdcflow_batch cdcflow_batch;   /* opaque, owned by the host */
typedef struct cdcflow_config cdcflow_config; /* opaque, owned by the host */
typedef struct cdcflow_ctx cdcflow_ctx;       /* opaque: one per stage instance */
typedef struct cdcflow_metric cdcflow_metric; /* opaque, owned by the host */

/* Receives positions one at a time (checkpoint reporting). */
typedef void (*cdcflow_position_fn)(void *user, const cdcflow_position *pos);

/* Host services, passed at create. Only ever grows at the end: check
 * struct_size before calling a function appended after ABI 1. */
typedef struct cdcflow_host_api {
    uint32_t abi_version;
    uint32_t struct_size;

    /* Logging, attributed to the stage. msg is NUL-terminated. */
    void (*log)(cdcflow_ctx *ctx, cdcflow_log_level level, const char *msg);

    /* Config access. Strings and JSON text stay valid until destroy.
     * Return OK, ERR_NOT_FOUND (key unset and no default) or ERR_TYPE. */
    cdcflow_status (*config_get_string)(const cdcflow_config *cfg, const char *key,
                                        cdcflow_str *out);
    cdcflow_status (*config_get_int)(const cdcflow_config *cfg, const char *key, int64_t *out);
    cdcflow_status (*config_get_double)(const cdcflow_config *cfg, const char *key, double *out);
    cdcflow_status (*config_get_bool)(const cdcflow_config *cfg, const char *key, int32_t *out);
    cdcflow_status (*config_get_json)(const cdcflow_config *cfg, const char *key,
                                      cdcflow_str *out);
    /* Where a key was written in the pipeline file, "file:line:col", for
     * plugin-side config errors (e.g. a bad rule). NUL-terminated. */
    const char *(*config_location)(const cdcflow_config *cfg, const char *key);

    /* Metrics: counters and gauges named "<stage>.<name>". The handle lives
     * as long as the host; add/set are lock-free and may be called anywhere. */
    cdcflow_metric *(*metric_counter)(cdcflow_ctx *ctx, const char *name, const char *help);
    cdcflow_metric *(*metric_gauge)(cdcflow_ctx *ctx, const char *name, const char *help);
    void (*metric_add)(cdcflow_metric *m, int64_t delta);
    void (*metric_set)(cdcflow_metric *m, int64_t value);

    /* Batches. batch_events returns the first event, the count and the
     * stride in bytes between events; the array holds batch_capacity events
     * and never moves while the batch is in the stage's hands (appending
     * only raises the count). Not thread-safe per batch (a batch belongs to
     * one stage at a time). */
    cdcflow_event *(*batch_events)(cdcflow_batch *b, uint32_t *count, uint32_t *stride);
    /* Sources: copy an event into the batch. ERR_NOMEM when the batch is
     * full (batch_capacity events) — poll returns what it has. */
    cdcflow_status (*batch_append)(cdcflow_batch *b, const cdcflow_event_init *ev);
    uint32_t (*batch_capacity)(const cdcflow_batch *b);
    /* Scratch memory that lives as long as the batch's current contents. */
    void *(*batch_alloc)(cdcflow_batch *b, uint64_t size);

    /* Marking: reject copies reason into the batch and records the calling
     * stage; the event travels on to the sink's dead-letter store. The first
     * rejection stands; a duplicate mark overrides a rejection (a later copy
     * of an event id is skipped, not dead-lettered). The host counts both in
     * the metrics "<stage>.rejected" and "<stage>.duplicates": a plugin
     * must not count them again under those names. */
    void (*event_reject)(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index, const char *reason,
                         uint64_t reason_len);
    void (*event_mark_duplicate)(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index);

    /* The stage's id from the pipeline file (NUL-terminated). */
    const char *(*stage_id)(cdcflow_ctx *ctx);
    /* Non-zero once the host asked the pipeline to stop: long-running calls
     * (a source waiting for rows) return early when they see it. */
    int32_t (*stop_requested)(cdcflow_ctx *ctx);
} cdcflow_host_api;

/* Callbacks. Every callback that can fail returns a status and, on failure,
 * writes a NUL-terminated one-line message into err (err_len bytes). */
typedef struct cdcflow_callbacks {
    uint32_t struct_size;
    uint32_t reserved;

    /* Make an instance from its (already schema-checked) config. create
     * may open connections and check that what it needs exists, but must
     * not change anything outside the process (`cdcflow validate` creates
     * and destroys instances); do that in start. */
    cdcflow_status (*create)(const cdcflow_host_api *host, cdcflow_ctx *ctx,
                             const cdcflow_config *cfg, void **instance, char *err,
                             uint64_t err_len);
    /* Called once on the stage's thread before the first batch. */
    cdcflow_status (*start)(void *instance, char *err, uint64_t err_len);

    /* SOURCE: fill b with up to batch_capacity events. Return OK with zero
     * events when nothing is available within wait_ms (wait parked, not
     * spinning, and return early on stop_requested). *exhausted set non-zero
     * tells --drain that the source has nothing left right now. */
    cdcflow_status (*poll)(void *instance, cdcflow_batch *b, uint32_t wait_ms,
                           int32_t *exhausted, char *err, uint64_t err_len);
    /* SOURCE: resume just after these positions (the sink's checkpoint).
     * Also called on a TRANSFORM that keeps state derived from the stream
     * (a deduper rebuilding its window as of the checkpoint); may be NULL
     * for transforms. Called before start; count may be 0 (from the start). */
    cdcflow_status (*seek)(void *instance, const cdcflow_position *positions, uint32_t count,
                           char *err, uint64_t err_len);
    /* SOURCE: these positions are durably committed downstream (retention,
     * offset commits). Called on the source's thread. */
    void (*committed)(void *instance, const cdcflow_position *positions, uint32_t count);

    /* TRANSFORM and SINK: process one batch. A sink returns OK only once the
     * batch's effects, dead letters and checkpoint are durable. */
    cdcflow_status (*process)(void *instance, cdcflow_batch *b, char *err, uint64_t err_len);
    /* SINK: report the durable checkpoint (one call to fn per partition). */
    cdcflow_status (*checkpoint)(void *instance, cdcflow_position_fn fn, void *user, char *err,
                                 uint64_t err_len);

    /* Flush buffered work (called on the stage's thread at drain). */
    cdcflow_status (*flush)(void *instance, char *err, uint64_t err_len);
    /* Stop: release threads and connections; on the stage's thread. */
    void (*stop)(void *instance);
    /* Free the instance; on the host's main thread after stop. */
    void (*destroy)(void *instance);
} cdcflow_callbacks;

/* The descriptor returned by the entry symbol. Static storage in the plugin. */
typedef struct cdcflow_plugin {
    uint32_t abi_version; /* CDCFLOW_ABI_VERSION the plugin was built with */
    uint32_t struct_size; /* sizeof(cdcflow_plugin) the plugin was built with */
    const char *name;     /* e.g. "outbox_source" */
    cdcflow_kind kind;
    const char *version;     /* the plugin's own version, free text */
    const char *description; /* one line */
    const cdcflow_config_key *config_keys;
    uint32_t config_key_count;
    uint32_t reserved;
    const cdcflow_callbacks *callbacks;
} cdcflow_plugin;

typedef const cdcflow_plugin *(*cdcflow_plugin_entry_fn)(void);

/* Static text for a status, e.g. "io error". Defined inline so plugins need
 * not link against the host. */
static inline const char *cdcflow_status_str(cdcflow_status s) {
    switch (s) {
    case CDCFLOW_OK: return "ok";
    case CDCFLOW_ERR_CONFIG: return "config error";
    case CDCFLOW_ERR_IO: return "io error";
    case CDCFLOW_ERR_RETRY: return "transient error";
    case CDCFLOW_ERR_INTERNAL: return "internal error";
    case CDCFLOW_ERR_NOT_FOUND: return "not found";
    case CDCFLOW_ERR_TYPE: return "wrong type";
    case CDCFLOW_ERR_NOMEM: return "out of memory";
    }
    return "unknown status";
}

#ifdef __cplusplus
}
#endif

#endif /* CDCFLOW_PLUGIN_H */

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
 * Versions: as in SQLite's headers, every declaration appended after ABI 1
 * says when it appeared: its comment starts "Since ABI N." or ends "since
 * ABI N", and a marker "---- ABI N ----" heads what ABI N appended to an
 * enum or struct. Anything without such a note has been there since ABI 1.
 * A plugin built against ABI N declares abi_version N and loads in every
 * host whose CDCFLOW_ABI_VERSION >= N.
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

/* The ABI this header describes, and the oldest one the host still loads.
 * ABI 2 appended: the statuses BATCH_FULL, OWNED and FENCED; the host
 * functions batch_push and ownership_lost; the sink callbacks acquire and
 * release (one owner per checkpoint).
 * ABI 3 appended: declared config (cdcflow_config_param with bounds, choices
 * and secrets; config_lookup with its own result type); dropping events in
 * a transform (CDCFLOW_EVENT_DROPPED, event_drop); rebuilding a stateful
 * transform through the host (history, restore, and the source's replay);
 * each payload parsed once per pipeline and shared (event_payload).
 * ABI 4 appended: the status ERR_EVENT (a poison event: the host isolates
 * it and dead-letters it); cache and source-lag figures under the host's
 * metric families (metric_cache, metric_lag).
 * ABI 5 appended: sources whose partitions a consumer group assigns
 * (CDCFLOW_PLUGIN_GROUP_PARTITIONS, cdcflow_partitions, the host function
 * partitions_changed and the transform/sink callback partitions), so that
 * each partition's checkpoint has one owner and state moves with it.
 * ABI 6 appended: sinks that commit after process returns
 * (CDCFLOW_PLUGIN_DEFERRED_COMMIT and the sink callback settle), so that a
 * sink waiting for a remote acknowledgement (Kafka) takes the next batch
 * meanwhile; where a value nested in a key's mapping is in the pipeline file
 * (config_location_at), so that a plugin's own declarations get
 * file:line:col errors.
 * ABI 7 appended: the pipeline's own settings as a stage sees them
 * (pipeline_setting), so that a stage can refuse at load what its settings
 * cannot work with under the pipeline's (a group source's takeover against
 * settings.owner_lease_ms).
 * A plugin built against ABI 1, 2, 3, 4, 5 or 6 keeps loading and behaves as before. */
#define CDCFLOW_ABI_VERSION 7u
#define CDCFLOW_ABI_VERSION_MIN 1u

/* Does a struct that starts with struct_size (as the other side built it)
 * hold `field`? Read a field appended after ABI 1 only when this is true.
 * Since ABI 2 (a plugin built against ABI 1 compares struct_size itself). */
#define CDCFLOW_HAS_FIELD(ptr, type, field)                                                                  \
    ((ptr) != NULL && (ptr)->struct_size >= offsetof(type, field) + sizeof((ptr)->field))

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
    CDCFLOW_ERR_NOMEM = 7,     /* memory ran out (ABI 1's batch_append also used it for "full") */
    /* ---- ABI 2 ---- */
    CDCFLOW_ERR_BATCH_FULL = 8, /* since ABI 2. batch_push: the batch already holds batch_capacity events */
    CDCFLOW_ERR_OWNED = 9,      /* since ABI 2. acquire: another live process owns the checkpoint */
    CDCFLOW_ERR_FENCED = 10,    /* since ABI 2. This instance no longer owns its checkpoint: nothing was
                                   committed */
    /* ---- ABI 4 ---- */
    /* Since ABI 4. process (transforms and sinks): one or more events of
     * this batch cannot be handled (a poison event), the rest could. Nothing
     * of the batch took effect (a sink rolled back). The host then calls
     * process on parts of the batch (left before right; each part is shown
     * as a batch of its own, events[0..count)) down to the single events
     * that fail on their own, marks each REJECTED with err as its reason
     * (this stage as the rejecting stage) and goes on with the rest; a sink
     * is shown that event again (now REJECTED) at the start of its next
     * call, to write its dead letter with what follows. Each
     * successful part is final (a sink commits it with its checkpoint).
     * CDCFLOW_ERR_INTERNAL (e.g. an exception the SDK caught) is treated the
     * same way; IO, CONFIG, NOMEM, FENCED and every other code never are.
     * What a stage must guarantee: a failed process leaves its own state as
     * it was before the call. A batch of 2+ events that all fail on their
     * own, or more than the stage's poison_limit such events in a row, is a
     * stage failure (the pipeline stops). */
    CDCFLOW_ERR_EVENT = 11
} cdcflow_status;

typedef enum cdcflow_kind {
    CDCFLOW_KIND_SOURCE = 1,
    CDCFLOW_KIND_TRANSFORM = 2,
    CDCFLOW_KIND_SINK = 3
} cdcflow_kind;

/* Event status: events are marked, never erased or copied. A sink applies
 * OK events, dead-letters REJECTED ones and skips every other status. */
typedef enum cdcflow_event_status {
    CDCFLOW_EVENT_OK = 0,
    CDCFLOW_EVENT_DUPLICATE = 1, /* skip: counted, not dead-lettered */
    CDCFLOW_EVENT_REJECTED = 2,  /* dead letter: see reject_stage, reject_reason */
    /* ---- ABI 3 ---- */
    /* Since ABI 3. Filtered out by a transform (event_drop): counted, not
     * applied, not dead-lettered; its position still counts as processed.
     * A stage built against ABI 1 or 2 never sees it: during that stage's
     * process the host shows such an event as DUPLICATE (skipped), and
     * marks it DROPPED again for the stages after it. */
    CDCFLOW_EVENT_DROPPED = 3
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
    CDCFLOW_CONFIG_INT = 2, /* int64 */
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

/* ABI 1's declared config key (an array element without a size, so it cannot
 * grow; ABI 3 plugins declare cdcflow_config_param instead). default_value is
 * the YAML text of the default (e.g. "100", "true", "\"outbox\"", "[]"), or
 * NULL when the key has no default. */
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
    /* The bytes the source read. JSON only if the producer wrote JSON: a
     * validator stage rejects anything else, but stages before it (or in a
     * pipeline without one) may see any bytes. */
    cdcflow_str payload;
    cdcflow_str headers; /* JSON object text, or empty */
    int64_t timestamp_us;
    int64_t aggregate_version; /* -1: none */
    cdcflow_position position;
    int32_t status; /* cdcflow_event_status */
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

/* Since ABI 3. Flags of a cdcflow_config_param. */
#define CDCFLOW_PARAM_REQUIRED 1u /* the pipeline must set it */
#define CDCFLOW_PARAM_SECRET 2u   /* never printed: not by `plugins`, logs, errors or /health */
/* Accepted so that older pipeline files load, and ignored: the host warns at
 * load when a file sets it, giving the description as the reason. */
#define CDCFLOW_PARAM_DEPRECATED 4u

/* Since ABI 3. One declared config key. The host checks every value against it
 * before create (type, bounds, choices, required) and refuses a key that is
 * not declared, naming the closest declared one. */
typedef struct cdcflow_config_param {
    uint32_t struct_size; /* sizeof(cdcflow_config_param) as the plugin built it */
    uint32_t flags;       /* CDCFLOW_PARAM_* */
    const char *name;
    cdcflow_config_type type;
    uint32_t reserved;
    /* The default written as the value itself, the way a user writes it in
     * the pipeline file: 100, true, 0.5, outbox (no quotes for a string),
     * or JSON text for JSON keys ([] , {"a": 1}). NULL: no default. */
    const char *default_value;
    const char *description; /* one line */
    /* INT and DOUBLE: inclusive bounds, written like default_value; NULL:
     * unbounded on that side. */
    const char *min;
    const char *max;
    /* STRING: the allowed values, a NULL-terminated array; NULL: any text. */
    const char *const *choices;
} cdcflow_config_param;

/* Since ABI 3. What config_lookup found. Not a cdcflow_status: a look-up is not an
 * operation that fails, and its answers are not errors a stage returns. */
typedef enum cdcflow_config_result {
    CDCFLOW_CONFIG_FOUND = 0,      /* set in the file, or its default */
    CDCFLOW_CONFIG_UNSET = 1,      /* declared, not set, no default */
    CDCFLOW_CONFIG_WRONG_TYPE = 2, /* declared with another type */
    CDCFLOW_CONFIG_UNDECLARED = 3  /* the plugin did not declare this key */
} cdcflow_config_result;

/* Since ABI 3. A config value as config_lookup hands it out. Only the member of
 * the asked type is set; text stays valid until destroy. */
typedef struct cdcflow_config_value {
    uint32_t struct_size; /* set by the caller */
    uint32_t reserved;
    cdcflow_str text; /* STRING: the string; JSON: the value as JSON text */
    int64_t i;        /* INT */
    double d;         /* DOUBLE */
    int32_t b;        /* BOOL: 0 or 1 */
    int32_t reserved2;
} cdcflow_config_value;

/* Since ABI 3. What a stateful transform wants replayed to rebuild its state
 * (history); filled in by the transform, the host zeroes it first. */
typedef struct cdcflow_history {
    uint32_t struct_size; /* set by the host */
    uint32_t reserved;
    /* The newest max_events events up to and including the checkpoint, per
     * partition; 0: nothing (the transform keeps no state from the stream). */
    uint64_t max_events;
    /* The transform's setting that decides max_events (e.g. "window_size"),
     * named in the host's messages: static NUL-terminated text, or NULL. */
    const char *setting;
} cdcflow_history;

/* Since ABI 3. What the host asks of a source's replay, and what the source
 * answers about it. The host zeroes it, sets the request, and passes the same
 * struct to every call of one replay. */
typedef struct cdcflow_replay {
    uint32_t struct_size;
    uint32_t position_count;
    /* The checkpoint: replay ends with the event at each of these positions
     * (inclusive), and starts at most max_events events before it, per
     * partition. position_count 0: nothing was delivered yet, so there is
     * nothing to replay (answer done at once); the call still tells the
     * source how much history the pipeline keeps (e.g. to keep that many
     * events from its retention). A source must never hand out an event past
     * the checkpoint: a transform would remember an event that was not
     * committed (the host refuses such a replay). */
    const cdcflow_position *positions;
    uint64_t max_events;
    /* Set by the source, read once done: non-zero when events that were
     * asked for existed but are gone (deleted by retention, expired from a
     * topic), so that a transform's state is shorter than it asked for. The
     * host then warns, naming truncated_by: the source's setting that removed
     * them (static NUL-terminated text, or NULL). */
    int32_t truncated;
    uint32_t reserved;
    const char *truncated_by;
} cdcflow_replay;

/* Since ABI 3. JSON value types (event_payload). */
typedef enum cdcflow_json_type {
    CDCFLOW_JSON_NULL = 0,
    CDCFLOW_JSON_BOOL = 1,
    CDCFLOW_JSON_NUMBER = 2,
    CDCFLOW_JSON_STRING = 3,
    CDCFLOW_JSON_ARRAY = 4,
    CDCFLOW_JSON_OBJECT = 5
} cdcflow_json_type;

/* Since ABI 3. One top-level field of a payload object (event_payload). Arrays of
 * these are walked with the stride event_payload reports. */
typedef struct cdcflow_json_field {
    cdcflow_str key;    /* unescaped */
    cdcflow_str value;  /* the value's JSON text as written, inside the event's
                         * payload: a string keeps its quotes and escapes */
    int32_t type;       /* cdcflow_json_type */
    int32_t has_escape; /* STRING: the text holds a backslash escape (else the
                         * string is value without its two quotes) */
} cdcflow_json_field;

/* Since ABI 3. What event_payload found. */
typedef enum cdcflow_payload_result {
    CDCFLOW_PAYLOAD_OBJECT = 0,     /* a valid JSON object: fields */
    CDCFLOW_PAYLOAD_NOT_OBJECT = 1, /* valid JSON, another type: root_type */
    CDCFLOW_PAYLOAD_INVALID = 2     /* not valid JSON (UTF-8, syntax, nesting
                                     * deeper than 1024, trailing content): error */
} cdcflow_payload_result;

/* Since ABI 3. An event's payload parsed as JSON (event_payload). */
typedef struct cdcflow_payload {
    uint32_t struct_size; /* set by the caller */
    int32_t result;       /* cdcflow_payload_result */
    int32_t root_type;    /* cdcflow_json_type: OBJECT, NOT_OBJECT */
    uint32_t field_count; /* OBJECT: top-level fields in payload order (a
                           * repeated key appears each time) */
    const cdcflow_json_field *fields;
    uint32_t field_stride; /* bytes between fields */
    uint32_t reserved;
    const char *error; /* INVALID: why, one line, NUL-terminated */
} cdcflow_payload;

typedef struct cdcflow_batch cdcflow_batch;   /* opaque, owned by the host */
typedef struct cdcflow_config cdcflow_config; /* opaque, owned by the host */
typedef struct cdcflow_ctx cdcflow_ctx;       /* opaque: one per stage instance */
typedef struct cdcflow_metric cdcflow_metric; /* opaque, owned by the host */

/* Since ABI 2. What the host asks of a sink's acquire (one owner per checkpoint).
 * Starts with struct_size; only ever grows at its end. */
typedef struct cdcflow_ownership {
    uint32_t struct_size;
    /* The owner renews its claim at least every lease_ms / 3; a standby on
     * another machine takes over once the claim went lease_ms without a
     * renewal (on the same machine, at once when the owner's process is gone). */
    uint32_t lease_ms;
    /* ---- ABI 5 ---- */
    uint32_t flags;    /* CDCFLOW_OWNERSHIP_*; since ABI 5 */
    uint32_t reserved; /* since ABI 5 */
} cdcflow_ownership;

/* Since ABI 5. The source's partitions are assigned by a consumer group
 * (CDCFLOW_PLUGIN_GROUP_PARTITIONS): claim nothing now and answer OK; keep
 * lease_ms, and claim each partition's checkpoint (name, "topic/partition")
 * as the partitions callback assigns it, checking in every commit that each
 * partition the batch touches is still owned. */
#define CDCFLOW_OWNERSHIP_PER_PARTITION 1u

/* Since ABI 4. The figures of one cache of a stage (metric_cache). */
typedef enum cdcflow_cache_stat {
    CDCFLOW_CACHE_ENTRIES = 1,  /* gauge: entries held now */
    CDCFLOW_CACHE_CAPACITY = 2, /* gauge: the configured limit (entries) */
    CDCFLOW_CACHE_HITS = 3,     /* counter: look-ups answered from the cache */
    CDCFLOW_CACHE_MISSES = 4    /* counter: look-ups that went to the store */
} cdcflow_cache_stat;

/* Receives positions one at a time (checkpoint reporting). */
typedef void (*cdcflow_position_fn)(void *user, const cdcflow_position *pos);

/* Since ABI 5. A change of the partitions a source reads, as a consumer
 * group's rebalance decides it (partitions_changed), and what the source
 * needs back: the sink's committed position of each partition it asks
 * about. Partition names are as in cdcflow_position ("topic/partition").
 * Starts with struct_size; only ever grows at its end. */
typedef struct cdcflow_partitions {
    uint32_t struct_size;
    uint32_t revoked_count;
    /* No longer this source's: every event of them that the source handed
     * out before is committed first; then the sink gives their checkpoints
     * up (another host takes them over) and every stage drops state derived
     * from them (row caches, version caches). */
    const cdcflow_str *revoked;
    uint32_t assigned_count;
    uint32_t query_count;
    /* Now this source's: the sink claims each one's checkpoint (waiting for
     * a previous owner as it would as a standby), stateful transforms are
     * rebuilt from the source's replay of their history, and fn receives
     * each one's committed position (none: nothing committed yet). */
    const cdcflow_str *assigned;
    /* Only asked about (e.g. to learn whether peers finished theirs, for
     * --drain): fn receives the committed position of each that has one,
     * whichever host committed it. Nothing is claimed or dropped. */
    const cdcflow_str *query;
    /* Receives positions of assigned and query partitions, one call each,
     * before partitions_changed (or partitions) returns; may be NULL. */
    cdcflow_position_fn fn;
    void *user;
} cdcflow_partitions;

/* Host services, passed at create. Only ever grows at the end: check
 * struct_size before calling a function appended after ABI 1. */
typedef struct cdcflow_host_api {
    uint32_t abi_version;
    uint32_t struct_size;

    /* Logging, attributed to the stage. msg is NUL-terminated. */
    void (*log)(cdcflow_ctx *ctx, cdcflow_log_level level, const char *msg);

    /* Config access. Strings and JSON text stay valid until destroy.
     * Return OK, ERR_NOT_FOUND (key unset and no default) or ERR_TYPE. */
    cdcflow_status (*config_get_string)(const cdcflow_config *cfg, const char *key, cdcflow_str *out);
    cdcflow_status (*config_get_int)(const cdcflow_config *cfg, const char *key, int64_t *out);
    cdcflow_status (*config_get_double)(const cdcflow_config *cfg, const char *key, double *out);
    cdcflow_status (*config_get_bool)(const cdcflow_config *cfg, const char *key, int32_t *out);
    cdcflow_status (*config_get_json)(const cdcflow_config *cfg, const char *key, cdcflow_str *out);
    /* Where a key was written in the pipeline file, "file:line:col", for
     * plugin-side config errors (e.g. a bad rule). NUL-terminated. */
    const char *(*config_location)(const cdcflow_config *cfg, const char *key);

    /* Metrics: counters and gauges, shown as cdcflow_plugin_<plugin>_<name>
     * (a counter ends in _total) labelled with the pipeline and the stage
     * (until ABI 4 the host named them "<stage>.<name>"). The handle lives
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
    /* Sources (prefer batch_push, since ABI 2): copy an event into the batch.
     * ERR_NOMEM when the batch is full (batch_capacity events) — poll
     * returns what it has; ERR_INTERNAL when memory ran out. */
    cdcflow_status (*batch_append)(cdcflow_batch *b, const cdcflow_event_init *ev);
    uint32_t (*batch_capacity)(const cdcflow_batch *b);
    /* Scratch memory that lives as long as the batch's current contents
     * (later stages may read it: a transform's rewritten payload lives
     * here). NULL when memory ran out (or b is NULL). */
    void *(*batch_alloc)(cdcflow_batch *b, uint64_t size);

    /* Marking: reject copies reason into the batch and records the calling
     * stage; the event travels on to the sink's dead-letter store. The first
     * rejection stands; a duplicate mark overrides a rejection (a later copy
     * of an event id is skipped, not dead-lettered). The host counts both in
     * cdcflow_events_total{outcome="rejected"|"duplicate"}: a plugin
     * must not count them again under those names. */
    void (*event_reject)(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index, const char *reason,
                         uint64_t reason_len);
    void (*event_mark_duplicate)(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index);

    /* The stage's id from the pipeline file (NUL-terminated). */
    const char *(*stage_id)(cdcflow_ctx *ctx);
    /* Non-zero once the host asked the pipeline to stop: long-running calls
     * (a source waiting for rows) return early when they see it. */
    int32_t (*stop_requested)(cdcflow_ctx *ctx);

    /* ---- ABI 2: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* Sources: copy an event into the batch. OK; CDCFLOW_ERR_BATCH_FULL when
     * the batch holds batch_capacity events (poll returns what it has);
     * CDCFLOW_ERR_NOMEM when memory ran out (fail the poll: retrying cannot
     * help). ABI 1's batch_append keeps answering ERR_NOMEM for a full batch
     * and, since ABI 2, ERR_INTERNAL when memory ran out, so that no plugin
     * mistakes the one for the other. */
    cdcflow_status (*batch_push)(cdcflow_batch *b, const cdcflow_event_init *ev); /* since ABI 2 */
    /* Sinks that fence their checkpoint (acquire): this instance learned
     * outside a process() call (e.g. when renewing its claim on its own
     * thread) that another process took the checkpoint over. The host stops
     * the pipeline without committing anything more, and then waits as a
     * standby or exits (settings.when_owned). Thread-safe; msg is
     * NUL-terminated. */
    void (*ownership_lost)(cdcflow_ctx *ctx, const char *msg); /* since ABI 2 */

    /* ---- ABI 3: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* Typed look-up of a declared key; out->struct_size must be set. Never
     * fails for a key of an ABI 3 plugin's own declaration, of its type. */
    cdcflow_config_result (*config_lookup)(const cdcflow_config *cfg, const char *key,
                                           cdcflow_config_type type,
                                           cdcflow_config_value *out); /* since ABI 3 */
    /* Transforms: filter an event out. It travels on marked DROPPED: not
     * applied, not dead-lettered, counted by the host in
     * cdcflow_events_total{outcome="dropped"} (a plugin must not count it
     * again) and in the
     * pipeline's totals; its position still counts as processed (the
     * checkpoint moves past it). Only an OK event is dropped: a rejection or
     * duplicate mark already on it stands. Afterwards, a later stage's
     * rejection does not override the drop (the first verdict stands) and a
     * duplicate mark does (as over a rejection). */
    void (*event_drop)(cdcflow_ctx *ctx, cdcflow_batch *b, uint32_t index); /* since ABI 3 */
    /* Any stage: event index's payload parsed as JSON, once per event per
     * pipeline: the first stage that asks parses and checks the whole text
     * (as strictly as a DOM parser: UTF-8, syntax, depth, trailing content)
     * and the batch keeps the result for every later stage, so a validator
     * and a sink do not both parse each payload. Everything out points to
     * stays valid while the batch is in the caller's hands.
     * out->struct_size must be set. OK; ERR_NOT_FOUND for an index past the
     * batch; ERR_NOMEM. Not thread-safe per batch, like the batch. */
    cdcflow_status (*event_payload)(cdcflow_batch *b, uint32_t index, cdcflow_payload *out); /* since ABI 3 */

    /* ---- ABI 4: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* A cache's figure under the host's own families (cdcflow_cache_entries,
     * cdcflow_cache_capacity, cdcflow_cache_hits_total,
     * cdcflow_cache_misses_total, labelled with the stage and `cache`, e.g.
     * "window" or "rows"), so that every plugin's caches read alike: set the
     * gauges with metric_set, add to the counters with metric_add. The same
     * arguments return the same handle. NULL for a NULL or unknown argument. */
    cdcflow_metric *(*metric_cache)(cdcflow_ctx *ctx, const char *cache,
                                    cdcflow_cache_stat stat); /* since ABI 4 */
    /* Sources: a gauge of the events not yet read from `partition` ("" for
     * an outbox), cdcflow_source_lag_events; set it with metric_set whenever
     * the source learns it (e.g. once per poll). */
    cdcflow_metric *(*metric_lag)(cdcflow_ctx *ctx, const char *partition); /* since ABI 4 */

    /* ---- ABI 5: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* Sources whose descriptor sets CDCFLOW_PLUGIN_GROUP_PARTITIONS, on the
     * source's thread, during poll (e.g. in a rebalance callback), while
     * the batch being filled is still empty (ERR_INTERNAL otherwise): the
     * partitions it reads changed (cdcflow_partitions says what the host
     * does). Blocks until every event handed out before is committed and
     * every stage took the change, and only then returns: the source then
     * reads each assigned partition just after the position fn received
     * (from its start when none). While it blocks, the host may call the
     * source's committed and replay callbacks on this thread (re-entrant).
     * OK; CDCFLOW_ERR_FENCED when this host lost a checkpoint to another
     * process (a commit in flight was fenced: the host steps down); CDCFLOW_ERR_RETRY when the pipeline is
     * stopping (nothing was changed: return from poll); another code when a stage failed (the pipeline
     * stops). Called with nothing revoked or assigned it only answers the query. */
    cdcflow_status (*partitions_changed)(cdcflow_ctx *ctx, const cdcflow_partitions *change, char *err,
                                         uint64_t err_len); /* since ABI 5 */

    /* ---- ABI 6: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* Where a value nested in key's value is in the pipeline file. pointer
     * is a JSON Pointer (RFC 6901: "/events/MoneyDeposited/when/0", "~1"
     * for '/', "~0" for '~') into the value config_get_json(key) returns;
     * "" is key's value itself. Returns "file:line:col" of the node the
     * pointer names or, when it names none, of the deepest node on its way
     * (so an error about a missing entry points into the mapping that
     * lacks it); "" for a key the file does not set. Valid as long as cfg;
     * any thread. */
    const char *(*config_location_at)(const cdcflow_config *cfg, const char *key,
                                      const char *pointer); /* since ABI 6 */

    /* ---- ABI 7: check CDCFLOW_HAS_FIELD(host, cdcflow_host_api, name) ---- */

    /* The pipeline's integer setting `name` (a key of the file's settings:
     * mapping, e.g. "owner_lease_ms", "batch_max_events", "poll_wait_ms"):
     * the file's value, else the default (as the settings mapping has it: a
     * stage's own poison_limit, and the host's use of batch_max_events
     * below batch_size, are not applied). OK and *out;
     * CDCFLOW_ERR_NOT_FOUND for a name that is no integer setting;
     * CDCFLOW_ERR_INTERNAL for a NULL argument. Any thread, from create on. */
    cdcflow_status (*pipeline_setting)(cdcflow_ctx *ctx, const char *name, int64_t *out); /* since ABI 7 */
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
    cdcflow_status (*create)(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                             void **instance, char *err, uint64_t err_len);
    /* Called once on the stage's thread before the first batch. */
    cdcflow_status (*start)(void *instance, char *err, uint64_t err_len);

    /* SOURCE: fill b with up to batch_capacity events. Return OK with zero
     * events when nothing is available within wait_ms (wait parked, not
     * spinning, and return early on stop_requested). *exhausted set non-zero
     * tells --drain that the source has nothing left right now. */
    cdcflow_status (*poll)(void *instance, cdcflow_batch *b, uint32_t wait_ms, int32_t *exhausted, char *err,
                           uint64_t err_len);
    /* SOURCE: resume just after these positions (the sink's checkpoint).
     * Also called on a TRANSFORM that keeps state derived from the stream
     * (ABI 1 and 2's way to rebuild it, by reading the source's store
     * itself; since ABI 3 prefer history and restore below); may be NULL
     * for transforms. Called before start, after any replay; count may be 0
     * (from the start). */
    cdcflow_status (*seek)(void *instance, const cdcflow_position *positions, uint32_t count, char *err,
                           uint64_t err_len);
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

    /* ---- ABI 2: the host reads these only when struct_size covers them ---- */

    /* SINK, may be NULL (the host then warns that the checkpoint is not
     * fenced): become the one writer of this sink's checkpoint. Called on
     * the host's main thread before checkpoint and start, and again (on a
     * new instance) after the host stepped down. OK: this instance owns the
     * checkpoint, renews its claim (every lease_ms / 3) until release, and
     * checks in the same transaction as every commit that it still owns it,
     * failing that commit with CDCFLOW_ERR_FENCED otherwise. CDCFLOW_ERR_OWNED:
     * another live process owns it; err names it (host, pid, since when) and
     * the host asks again later. ERR_RETRY: the store is busy. */
    cdcflow_status (*acquire)(void *instance, const cdcflow_ownership *req, char *err,
                              uint64_t err_len); /* since ABI 2 */
    /* SINK, may be NULL: give the checkpoint up so that a standby takes over
     * at once. Called on the host's main thread after stop. */
    void (*release)(void *instance); /* since ABI 2 */

    /* ---- ABI 3: the host reads these only when struct_size covers them ---- */

    /* TRANSFORM, may be NULL: how much of the stream before the checkpoint
     * this stage needs to see again to rebuild its state (a deduper's window).
     * Called on the host's main thread after create. */
    void (*history)(void *instance, cdcflow_history *want); /* since ABI 3 */
    /* TRANSFORM, may be NULL: rebuild state from replayed events (already
     * delivered, oldest first, ending at the checkpoint). Nothing may be
     * marked and nothing goes downstream. Called before start, in pipeline
     * order; a transform may see more events than it asked for (the most
     * that any stage of the pipeline asked for is replayed to each). */
    cdcflow_status (*restore)(void *instance, cdcflow_batch *b, char *err,
                              uint64_t err_len); /* since ABI 3 */
    /* SOURCE, may be NULL (then stateful transforms start empty, with a
     * warning): fill b with already delivered events for req, oldest first;
     * the host calls it again with a fresh batch until *done is non-zero
     * (after a failure, with the same request: resume where the last
     * successful call ended). Called on the host's main thread before seek
     * and start; the source's position after the replay is whatever seek
     * then sets. Long calls return early on stop_requested. */
    cdcflow_status (*replay)(void *instance, cdcflow_replay *req, cdcflow_batch *b, int32_t *done, char *err,
                             uint64_t err_len); /* since ABI 3 */

    /* ---- ABI 5: the host reads these only when struct_size covers them ---- */

    /* TRANSFORM and SINK, may be NULL: the source's partitions changed
     * (cdcflow_partitions). Called on the source's thread while no batch is
     * in flight (every stage is idle), transforms first, in pipeline order.
     * A transform drops what it derived from revoked partitions (fn is
     * NULL for it). A sink gives the revoked partitions' checkpoints up,
     * claims the assigned ones' (waiting while a live previous owner holds
     * one, returning early on stop_requested with ERR_RETRY; a revoked one
     * that was already taken over is simply let go: its commits were fenced
     * before), drops its caches of what those
     * partitions touched, and reports through fn the committed position of
     * every assigned and query partition that has one. A pipeline whose
     * source sets CDCFLOW_PLUGIN_GROUP_PARTITIONS needs a sink with it. */
    cdcflow_status (*partitions)(void *instance, const cdcflow_partitions *change, char *err,
                                 uint64_t err_len); /* since ABI 5 */

    /* ---- ABI 6: the host reads these only when struct_size covers them ---- */

    /* SINK whose descriptor sets CDCFLOW_PLUGIN_DEFERRED_COMMIT (required
     * then): report what has become durable. Such a sink's process returning
     * OK means "accepted": its effects, dead letters and checkpoint become
     * durable later, in the order the process calls were accepted. Waits,
     * parked, up to wait_ms until at least one more accepted call is
     * durable, then sets *durable to the number of process calls of this
     * instance that returned OK and whose work is durable now (0 when none
     * yet; it never decreases): count a call only once process is sure to
     * return OK. OK, with or without progress (during a stop the host calls
     * again, up to shutdown_timeout_ms, while the sink still waits).
     * ERR_RETRY: a transient failure (a locked database), retried under
     * the stage's retry and breaker policy; while stop_requested it means
     * "giving up because of the stop": what is not durable is abandoned.
     * Any other status fails the pipeline. Either way nothing accepted
     * after the last durable call is committed (the host replays it from
     * the checkpoint, at least once). Called on the sink's thread, only
     * while calls are accepted and not yet durable. */
    cdcflow_status (*settle)(void *instance, uint32_t wait_ms, uint64_t *durable, char *err,
                             uint64_t err_len); /* since ABI 6 */
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

    /* ---- ABI 3: the host reads these only when struct_size covers them ---- */

    /* The declared config; when set, config_keys above is ignored. Every
     * element has the same struct_size, which is the array's stride. */
    const cdcflow_config_param *config_params; /* since ABI 3 */
    uint32_t config_param_count;               /* since ABI 3 */
    uint32_t reserved2;                        /* since ABI 3 */

    /* ---- ABI 5: the host reads these only when struct_size covers them ---- */

    uint32_t flags;     /* CDCFLOW_PLUGIN_*; since ABI 5 */
    uint32_t reserved3; /* since ABI 5 */
} cdcflow_plugin;

/* Since ABI 5. A source whose partitions a consumer group assigns while it
 * runs: it learns them in poll and reports every change through
 * partitions_changed. The host then claims no checkpoint of its own at
 * start (the sink claims each partition as it is assigned; several hosts
 * share one sink store, each owning some partitions), reads no checkpoint
 * and replays nothing before start. */
#define CDCFLOW_PLUGIN_GROUP_PARTITIONS 1u

/* Since ABI 6. A sink whose commit completes after process returns (see the
 * callback settle). The host then keeps each accepted batch in flight (its
 * positions are not reported committed to the source, a drain and a
 * partition change wait for it, the in-flight bounds count it) until settle
 * reports it durable, and takes the next batch meanwhile: the sink's wait
 * for a remote acknowledgement overlaps the next batch's work. flush (at
 * drain's end) and stop need not wait for anything: the host settles every
 * accepted call before flush and abandons what is not durable at a stop. */
#define CDCFLOW_PLUGIN_DEFERRED_COMMIT 2u

typedef const cdcflow_plugin *(*cdcflow_plugin_entry_fn)(void);

/* Static text for a status, e.g. "io error". Defined inline so plugins need
 * not link against the host. */
static inline const char *cdcflow_status_str(cdcflow_status s) {
    switch (s) {
    case CDCFLOW_OK:
        return "ok";
    case CDCFLOW_ERR_CONFIG:
        return "config error";
    case CDCFLOW_ERR_IO:
        return "io error";
    case CDCFLOW_ERR_RETRY:
        return "transient error";
    case CDCFLOW_ERR_INTERNAL:
        return "internal error";
    case CDCFLOW_ERR_NOT_FOUND:
        return "not found";
    case CDCFLOW_ERR_TYPE:
        return "wrong type";
    case CDCFLOW_ERR_NOMEM:
        return "out of memory";
    case CDCFLOW_ERR_BATCH_FULL:
        return "batch full";
    case CDCFLOW_ERR_OWNED:
        return "owned by another process";
    case CDCFLOW_ERR_EVENT:
        return "poison event";
    case CDCFLOW_ERR_FENCED:
        return "ownership lost";
    }
    return "unknown status";
}

#ifdef __cplusplus
}
#endif

#endif /* CDCFLOW_PLUGIN_H */

/* v1_source: a source written in C against the frozen ABI 1 header. It
 * generates `count` events (offsets 1..count, ids "v<offset>") and relies on
 * ABI 1's meaning of batch_append: CDCFLOW_ERR_NOMEM is "the batch is full". */
#include "plugin_v1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const cdcflow_host_api *host;
    int64_t count;
    int64_t next;
} v1_source;

static const cdcflow_config_key keys[] = {
    {"count", CDCFLOW_CONFIG_INT, "100", 0, "events to generate"},
};

static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                             void **instance, char *err, uint64_t err_len) {
    (void)ctx;
    v1_source *s = calloc(1, sizeof *s);
    if (!s) return CDCFLOW_ERR_NOMEM;
    s->host = host;
    s->next = 1;
    if (host->config_get_int(cfg, "count", &s->count) != CDCFLOW_OK) {
        snprintf(err, (size_t)err_len, "count: not an integer");
        free(s);
        return CDCFLOW_ERR_CONFIG;
    }
    *instance = s;
    return CDCFLOW_OK;
}

static cdcflow_status seek(void *instance, const cdcflow_position *positions, uint32_t count, char *err,
                           uint64_t err_len) {
    v1_source *s = instance;
    (void)err, (void)err_len;
    for (uint32_t i = 0; i < count; ++i) s->next = positions[i].offset + 1;
    return CDCFLOW_OK;
}

static cdcflow_status poll(void *instance, cdcflow_batch *b, uint32_t wait_ms, int32_t *exhausted, char *err,
                           uint64_t err_len) {
    v1_source *s = instance;
    (void)wait_ms;
    char id[32];
    while (s->next <= s->count) {
        int n = snprintf(id, sizeof id, "v%lld", (long long)s->next);
        cdcflow_event_init e;
        memset(&e, 0, sizeof e);
        e.struct_size = sizeof e;
        e.event_id.data = id;
        e.event_id.len = (uint64_t)n;
        e.aggregate_type.data = "Test";
        e.aggregate_type.len = 4;
        e.aggregate_id = e.event_id;
        e.event_type.data = "Generated";
        e.event_type.len = 9;
        e.payload.data = "{}";
        e.payload.len = 2;
        e.aggregate_version = -1;
        e.position.offset = s->next;
        cdcflow_status st = s->host->batch_append(b, &e);
        if (st == CDCFLOW_ERR_NOMEM) break; /* ABI 1: full */
        if (st != CDCFLOW_OK) {
            snprintf(err, (size_t)err_len, "batch_append: %s", cdcflow_status_str(st));
            return st;
        }
        ++s->next;
    }
    *exhausted = s->next > s->count;
    return CDCFLOW_OK;
}

static void destroy(void *instance) { free(instance); }

static const cdcflow_callbacks callbacks = {
    sizeof(cdcflow_callbacks), 0, create, NULL, poll, seek, NULL, NULL, NULL, NULL, NULL, destroy,
};

static const cdcflow_plugin desc = {
    CDCFLOW_ABI_VERSION, sizeof(cdcflow_plugin), "v1_source", CDCFLOW_KIND_SOURCE, "1.0", "an ABI 1 source in C",
    keys, 1, 0, &callbacks,
};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) { return &desc; }

/* v1_sink: a sink written in C against the frozen ABI 1 header: it counts
 * events into the metric <stage>.seen, and by status into <stage>.skipped
 * (DUPLICATE) and <stage>.unknown_status (a status ABI 1 does not define: the
 * host must never show it one, e.g. ABI 3's DROPPED). It keeps its checkpoint
 * in memory only (so every run starts from the beginning). Its callback
 * table has no acquire/release: the host must run it, unfenced, with a
 * warning. */
#include "status_counts.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    v1_status_counts counts;
    cdcflow_metric *seen;
    int64_t poison_every; /* process fails with ERR_INTERNAL on such an OK event */
} v1_sink;

static const cdcflow_config_key keys[] = {
    {"poison_every", CDCFLOW_CONFIG_INT, "0", 0,
     "fail process (CDCFLOW_ERR_INTERNAL) while the batch holds an OK event whose offset is a multiple of "
     "this"},
};

static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                             void **instance, char *err, uint64_t err_len) {
    v1_sink *s = calloc(1, sizeof *s);
    if (!s) return CDCFLOW_ERR_NOMEM;
    if (host->config_get_int(cfg, "poison_every", &s->poison_every) != CDCFLOW_OK) {
        snprintf(err, (size_t)err_len, "poison_every: not an integer");
        free(s);
        return CDCFLOW_ERR_CONFIG;
    }
    v1_status_counts_init(&s->counts, host, ctx);
    s->seen = host->metric_counter(ctx, "seen", "events that reached this ABI 1 sink");
    *instance = s;
    return CDCFLOW_OK;
}

static cdcflow_status process(void *instance, cdcflow_batch *b, char *err, uint64_t err_len) {
    v1_sink *s = instance;
    uint32_t count = 0, stride = 0, i;
    const char *first = (const char *)s->counts.host->batch_events(b, &count, &stride);
    for (i = 0; s->poison_every && i < count; ++i) {
        const cdcflow_event *e = (const cdcflow_event *)(first + (size_t)i * stride);
        if (e->status == CDCFLOW_EVENT_OK && e->position.offset % s->poison_every == 0) {
            snprintf(err, (size_t)err_len, "cannot handle offset %lld (injected)",
                     (long long)e->position.offset);
            return CDCFLOW_ERR_INTERNAL;
        }
    }
    count = v1_status_counts_add(&s->counts, b);
    s->counts.host->metric_add(s->seen, count);
    return CDCFLOW_OK;
}

static void destroy(void *instance) {
    free(instance);
}

static const cdcflow_callbacks callbacks = {
    sizeof(cdcflow_callbacks), 0, create, NULL, NULL, NULL, NULL, process, NULL, NULL, NULL, destroy,
};

static const cdcflow_plugin desc = {
    CDCFLOW_ABI_VERSION,
    sizeof(cdcflow_plugin),
    "v1_sink",
    CDCFLOW_KIND_SINK,
    "1.0",
    "an ABI 1 sink in C",
    keys,
    sizeof keys / sizeof keys[0],
    0,
    &callbacks,
};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return &desc;
}

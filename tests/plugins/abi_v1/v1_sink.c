/* v1_sink: a sink written in C against the frozen ABI 1 header: it counts
 * events into the metric <stage>.seen, and by status into <stage>.skipped
 * (DUPLICATE) and <stage>.unknown_status (a status ABI 1 does not define: the
 * host must never show it one, e.g. ABI 3's DROPPED). It keeps its checkpoint
 * in memory only (so every run starts from the beginning). Its callback
 * table has no acquire/release: the host must run it, unfenced, with a
 * warning. */
#include "plugin_v1.h"

#include <stdlib.h>

typedef struct {
    const cdcflow_host_api *host;
    cdcflow_metric *seen;
    cdcflow_metric *skipped;
    cdcflow_metric *unknown;
} v1_sink;

static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                             void **instance, char *err, uint64_t err_len) {
    (void)cfg, (void)err, (void)err_len;
    v1_sink *s = calloc(1, sizeof *s);
    if (!s) return CDCFLOW_ERR_NOMEM;
    s->host = host;
    s->seen = host->metric_counter(ctx, "seen", "events that reached this ABI 1 sink");
    s->skipped = host->metric_counter(ctx, "skipped", "events this ABI 1 sink saw marked DUPLICATE");
    s->unknown = host->metric_counter(ctx, "unknown_status", "events with a status ABI 1 does not define");
    *instance = s;
    return CDCFLOW_OK;
}

static cdcflow_status process(void *instance, cdcflow_batch *b, char *err, uint64_t err_len) {
    v1_sink *s = instance;
    uint32_t count = 0, stride = 0, i;
    const char *first;
    (void)err, (void)err_len;
    first = (const char *)s->host->batch_events(b, &count, &stride);
    for (i = 0; i < count; ++i) {
        const cdcflow_event *e = (const cdcflow_event *)(first + (size_t)i * stride);
        if (e->status == CDCFLOW_EVENT_DUPLICATE)
            s->host->metric_add(s->skipped, 1);
        else if (e->status != CDCFLOW_EVENT_OK && e->status != CDCFLOW_EVENT_REJECTED)
            s->host->metric_add(s->unknown, 1);
    }
    s->host->metric_add(s->seen, count);
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
    NULL,
    0,
    0,
    &callbacks,
};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return &desc;
}

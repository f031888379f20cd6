/* v1_pass: a transform written in C against the frozen ABI 1 header. It
 * passes batches on untouched and counts, like v1_sink, events with a status
 * ABI 1 does not define into <stage>.unknown_status (the host must never show
 * it ABI 3's DROPPED) and DUPLICATE ones into <stage>.skipped. Placed between
 * a dropping transform and an ABI 3 sink, it also shows that the stages after
 * it see the drops again. */
#include "status_counts.h"

#include <stdlib.h>

typedef struct {
    v1_status_counts counts;
} v1_pass;

static cdcflow_status create(const cdcflow_host_api *host, cdcflow_ctx *ctx, const cdcflow_config *cfg,
                             void **instance, char *err, uint64_t err_len) {
    (void)cfg, (void)err, (void)err_len;
    v1_pass *s = calloc(1, sizeof *s);
    if (!s) return CDCFLOW_ERR_NOMEM;
    v1_status_counts_init(&s->counts, host, ctx);
    *instance = s;
    return CDCFLOW_OK;
}

static cdcflow_status process(void *instance, cdcflow_batch *b, char *err, uint64_t err_len) {
    v1_pass *s = instance;
    (void)err, (void)err_len;
    (void)v1_status_counts_add(&s->counts, b);
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
    "v1_pass",
    CDCFLOW_KIND_TRANSFORM,
    "1.0",
    "an ABI 1 transform in C",
    NULL,
    0,
    0,
    &callbacks,
};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return &desc;
}

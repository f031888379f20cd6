/* What the ABI 1 test stages (v1_pass, v1_sink) check in every batch: the
 * events shown to them as DUPLICATE go to <stage>.skipped, and any status
 * ABI 1 does not define (the host must never show one, e.g. ABI 3's DROPPED)
 * to <stage>.unknown_status. Plain C99 against the frozen ABI 1 header. */
#ifndef CDCFLOW_TEST_V1_STATUS_COUNTS_H
#define CDCFLOW_TEST_V1_STATUS_COUNTS_H

#include "plugin_v1.h"

typedef struct {
    const cdcflow_host_api *host;
    cdcflow_metric *skipped;
    cdcflow_metric *unknown;
} v1_status_counts;

static void v1_status_counts_init(v1_status_counts *c, const cdcflow_host_api *host, cdcflow_ctx *ctx) {
    c->host = host;
    c->skipped = host->metric_counter(ctx, "skipped", "events this ABI 1 stage saw marked DUPLICATE");
    c->unknown = host->metric_counter(ctx, "unknown_status", "events with a status ABI 1 does not define");
}

/* Counts b's events by status; returns how many it holds. */
static uint32_t v1_status_counts_add(const v1_status_counts *c, cdcflow_batch *b) {
    uint32_t count = 0, stride = 0, i;
    const char *first = (const char *)c->host->batch_events(b, &count, &stride);
    for (i = 0; i < count; ++i) {
        const cdcflow_event *e = (const cdcflow_event *)(first + (size_t)i * stride);
        if (e->status == CDCFLOW_EVENT_DUPLICATE)
            c->host->metric_add(c->skipped, 1);
        else if (e->status != CDCFLOW_EVENT_OK && e->status != CDCFLOW_EVENT_REJECTED)
            c->host->metric_add(c->unknown, 1);
    }
    return count;
}

#endif

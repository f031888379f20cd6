// The runtime's metrics: the pipeline's and its stages' series, what is
// counted after each batch, and what is read from live state at a scrape.
// README.md, "Metrics", lists every family; the alert rules
// (deploy/prometheus/cdcflow-alerts.yaml) and `cdcflow status` read them.
#include "runtime.hpp"

#include "base/clock.hpp"

#include <algorithm>
#include <array>

namespace cdcflow::host {

namespace {

// Seconds, for calls and end-to-end latency: 100 us to 60 s.
const std::vector<double> kSecondsBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
// Events per batch: 1 to the largest batch_max_events allows.
const std::vector<double> kBatchBuckets = {1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144};
constexpr double kMicros = 1e-6;
// An event timestamp further back than this counts as this old (in +Inf), so
// that a hostile timestamp cannot make the latency sum meaningless.
constexpr int64_t kLatencyCapUs = int64_t(1e6) * 86400 * 365;

} // namespace

void Runtime::make_metrics() {
    Metrics &m = metrics_;
    const std::string &p = def_.name;
    const Labels pipeline = {{"pipeline", p}};
    for (size_t i = 0; i < stages_.size(); ++i) {
        Stage &s = *stages_[i];
        const bool is_source = i == 0, is_sink = i + 1 == stages_.size();
        const std::string &id = s.def->id;
        auto events = [&](const char *outcome) {
            return m.counter("cdcflow_events_total",
                             "Events a stage handled, by what it did with them: passed on (applied, at "
                             "the sink), rejected, marked duplicate, dropped, or skipped (they came "
                             "already marked by an earlier stage).",
                             {{"pipeline", p}, {"stage", id}, {"outcome", outcome}});
        };
        s.passed = events(is_sink ? "applied" : "passed");
        if (!is_source) {
            s.skipped = events("skipped");
            s.ctx.rejected = events("rejected");
            s.ctx.duplicates = events("duplicate");
            s.ctx.dropped = events("dropped");
        }
        const Labels stage = {{"pipeline", p}, {"stage", id}};
        s.batches = m.counter("cdcflow_batches_total", "Batches a stage handled.", stage);
        s.errors = m.counter("cdcflow_stage_errors_total",
                             "Failed plugin calls of a stage (retried or fatal).", stage);
        s.dead_letters = m.counter("cdcflow_dead_letters_total",
                                   "Dead letters written, by the stage that rejected the event.", stage);
        s.duration = m.histogram("cdcflow_stage_batch_duration_seconds",
                                 "Time a stage's plugin spent on one batch (a source's poll, a transform's "
                                 "or sink's process; a sink's includes its commit).",
                                 stage, kSecondsBuckets, kMicros);
        if (is_source)
            s.batch_events = m.histogram("cdcflow_batch_events", "Events per batch, as the source filled it.",
                                         stage, kBatchBuckets);
        s.ctx.pipeline = p;
        s.ctx.plugin = s.plugin->desc->name; // its own name, even when the file names a path
    }
    const Labels sink = {{"pipeline", p}, {"stage", stages_.back()->def->id}};
    m_commits_ = m.counter("cdcflow_commits_total", "Batches the sink committed with its checkpoint.", sink);
    m_latency_ = m.histogram("cdcflow_end_to_end_latency_seconds",
                             "From an event's timestamp (as its producer wrote it) to the commit of its "
                             "batch; a timestamp in the future counts as 0.",
                             pipeline, kSecondsBuckets, kMicros);
    m_checkpoint_ = m.gauge("cdcflow_checkpoint_offset", "Offset of the last committed event.", pipeline);
    m_owner_ =
        m.gauge("cdcflow_owner_role",
                "1 while this host owns the sink's checkpoint (it writes), 0 while a standby.", pipeline);
    m_takeovers_ = m.counter("cdcflow_ownership_changes_total",
                             "Times this host took the checkpoint over or stepped down.", pipeline);
    m_replayed_ = m.gauge("cdcflow_restore_replayed_events",
                          "Events replayed to rebuild stateful transforms at the last start.", pipeline);
    collector_ = m.add_collector([this](Collect &out) { collect(out); });
}

void Runtime::collect(Collect &out) const {
    const std::string &p = def_.name;
    HealthReport h = health();
    out.gauge("cdcflow_pipeline_healthy", "1 while /health answers 200, 0 while it answers 503.",
              {{"pipeline", p}}, h.healthy ? 1 : 0);
    out.gauge("cdcflow_pipeline_ready", "1 while /ready answers 200.", {{"pipeline", p}}, h.ready ? 1 : 0);
    for (const StageReport &s : h.stages) {
        const Labels stage = {{"pipeline", p}, {"stage", s.id}};
        out.gauge("cdcflow_breaker_state", "A stage's circuit breaker: 0 closed, 1 half-open, 2 open.", stage,
                  static_cast<int>(s.breaker));
        out.counter("cdcflow_breaker_trips_total", "Times a stage's circuit breaker opened.", stage,
                    static_cast<double>(s.trips));
        out.counter("cdcflow_retries_total", "Calls of a stage retried after a transient failure.", stage,
                    static_cast<double>(s.retries));
        out.counter("cdcflow_poison_events_total",
                    "Events a stage's process failed on, on their own (isolated by bisecting the batch and "
                    "dead-lettered).",
                    stage, static_cast<double>(s.poison));
    }
    for (const QueueReport &q : queues()) {
        const Labels queue = {{"pipeline", p}, {"queue", q.name}};
        out.gauge("cdcflow_queue_depth_batches", "Batches waiting in a queue between two stages.", queue,
                  static_cast<double>(q.depth));
        out.gauge("cdcflow_queue_capacity_batches", "Batches a queue between two stages holds at most.",
                  queue, static_cast<double>(q.capacity));
        out.gauge("cdcflow_queue_bytes", "Event bytes of the batches waiting in a queue between two stages.",
                  queue, static_cast<double>(q.bytes));
    }
    const MemoryReport mem = memory();
    const Labels pipeline = {{"pipeline", p}};
    out.gauge("cdcflow_in_flight_bytes",
              "Event bytes read by the source and not yet committed (bounded by settings.queue_max_bytes).",
              pipeline, static_cast<double>(mem.in_flight_bytes));
    out.gauge("cdcflow_in_flight_max_bytes",
              "settings.queue_max_bytes: the bound on cdcflow_in_flight_bytes.", pipeline,
              static_cast<double>(mem.queue_max_bytes));
    out.gauge("cdcflow_memory_soft_limit_bytes",
              "settings.memory_soft_limit_bytes (0: none): the source slows down past 90% of it.", pipeline,
              static_cast<double>(mem.soft_limit_bytes));
    out.gauge("cdcflow_memory_throttled", "1 while the soft memory limit slows the source down.", pipeline,
              mem.throttled ? 1 : 0);
    out.counter("cdcflow_memory_throttles_total",
                "Times the soft memory limit started slowing the source down.", pipeline,
                static_cast<double>(mem.throttle_episodes));
}

void Runtime::count_processed(Stage &st, const Batch *b, uint32_t marked_before, uint32_t overridden_before) {
    st.batches->value.fetch_add(1, std::memory_order_relaxed);
    uint32_t marked_after = std::max(b->marked, marked_before);
    st.passed->value.fetch_add(b->count - std::min(marked_after, b->count), std::memory_order_relaxed);
    // Came marked, minus those this stage marked again (counted as its own).
    uint32_t remarked = b->overridden - std::min(overridden_before, b->overridden);
    uint32_t skipped = marked_before - std::min(remarked, marked_before);
    if (skipped) st.skipped->value.fetch_add(skipped, std::memory_order_relaxed);
}

void Runtime::count_committed(Batch *b) {
    uint64_t ok = 0, rej = 0, dup = 0, drop = 0;
    // End-to-end latency, tallied here and added to the shared histogram once
    // per batch: one pass over events the sink just touched.
    std::array<uint64_t, 32> lat{};
    const size_t nb = std::min(m_latency_->buckets(), lat.size());
    double lat_sum = 0;
    const int64_t now = base::wall_us();
    for (uint32_t i = 0; i < b->count; ++i) {
        const cdcflow_event &e = b->events[i];
        switch (e.status) {
        case CDCFLOW_EVENT_OK:
            ++ok;
            break;
        case CDCFLOW_EVENT_REJECTED: {
            ++rej;
            // Rejections are few: find the rejecting stage by its id.
            std::string_view who(e.reject_stage.data ? e.reject_stage.data : "", e.reject_stage.len);
            for (auto &s : stages_)
                if (s->def->id == who) {
                    s->dead_letters->value.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
            break;
        }
        case CDCFLOW_EVENT_DROPPED:
            ++drop;
            break;
        default:
            ++dup;
            break;
        }
        if (e.timestamp_us <= 0) continue; // none
        int64_t us = e.timestamp_us >= now ? 0 : std::min(now - e.timestamp_us, kLatencyCapUs);
        ++lat[std::min(m_latency_->bucket(us), nb - 1)];
        lat_sum += static_cast<double>(us);
    }
    m_latency_->add_counts(lat.data(), lat_sum);
    totals_.events.fetch_add(b->count, std::memory_order_relaxed);
    totals_.applied.fetch_add(ok, std::memory_order_relaxed);
    totals_.rejected.fetch_add(rej, std::memory_order_relaxed);
    totals_.duplicates.fetch_add(dup, std::memory_order_relaxed);
    totals_.dropped.fetch_add(drop, std::memory_order_relaxed);
    totals_.batches.fetch_add(1, std::memory_order_relaxed);
    m_commits_->value.fetch_add(1, std::memory_order_relaxed);
    if (b->count)
        m_checkpoint_->value.store(b->events[b->count - 1].position.offset, std::memory_order_relaxed);
}

} // namespace cdcflow::host

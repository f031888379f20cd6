#include "runtime.hpp"

#include "base/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <pthread.h>
#include <string_view>

namespace cdcflow::host {

namespace {

constexpr size_t kErrLen = 1024;
// A replay call that hands out nothing and is not done makes no progress; a
// source that keeps doing so would hold the start (and a CPU) until stopped.
constexpr int kMaxEmptyReplays = 1000;

using Clock = std::chrono::steady_clock;

int64_t micros_since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

std::string stage_label(const StageDef &d) {
    return "stage '" + d.id + "' (plugin '" + d.plugin + "')";
}

std::string_view partition_of(const cdcflow_position &p) {
    return {p.partition.data ? p.partition.data : "", static_cast<size_t>(p.partition.len)};
}

// Names the calling thread after its stage ("cf:" + the stage id, cut to
// Linux's 15 bytes), so that top -H, perf and gdb show which stage spends
// what.
void name_thread(const StageDef &d) {
    std::string name = ("cf:" + d.id).substr(0, 15);
    pthread_setname_np(pthread_self(), name.c_str());
}

// Does the plugin's callback table (as it was built) hold `field`?
#define CDCFLOW_CB(cb, field) (CDCFLOW_HAS_FIELD(cb, cdcflow_callbacks, field) ? (cb)->field : nullptr)

// Benchmarks compare a run with and without the ownership check; nothing
// else should ever set this (two hosts could then both apply everything).
bool ownership_disabled() {
    const char *v = std::getenv("CDCFLOW_UNSAFE_NO_OWNERSHIP");
    return v && *v && std::string_view(v) != "0";
}

} // namespace

Runtime::Runtime(PipelineDef def, Metrics &metrics) : def_(std::move(def)), metrics_(metrics) {}

Result<std::unique_ptr<Runtime>> Runtime::create(PipelineDef def, PluginRegistry &registry,
                                                 Metrics &metrics) {
    std::unique_ptr<Runtime> rt(new Runtime(std::move(def), metrics));
    PipelineDef &d = rt->def_;
    registry.add_front(d.plugin_path);

    // Load every plugin the file names; a missing or broken one is reported
    // at the position of its name.
    std::map<std::string, std::shared_ptr<LoadedPlugin>> loaded;
    for (const StageDef &sd : d.stages) {
        if (loaded.count(sd.plugin)) continue;
        auto r = registry.find(sd.plugin);
        if (!r)
            return Status::Config(where(d.file, sd.plugin_mark) + ": stage '" + sd.id +
                                  "': " + r.status().message());
        loaded[sd.plugin] = r.value();
    }
    Status st = check_pipeline(d, [&](const std::string &name) -> const PluginSchema * {
        auto it = loaded.find(name);
        return it == loaded.end() ? nullptr : &it->second->schema;
    });
    if (!st) return st;

    for (const StageDef &sd : d.stages) {
        auto s = std::make_unique<Stage>();
        s->def = &sd;
        s->plugin = loaded[sd.plugin];
        s->cb = s->plugin->desc->callbacks;
        s->acquire = CDCFLOW_CB(s->cb, acquire);
        s->release = CDCFLOW_CB(s->cb, release);
        s->knows_dropped = s->plugin->desc->abi_version >= 3;
        s->history = CDCFLOW_CB(s->cb, history);
        s->restore = CDCFLOW_CB(s->cb, restore);
        s->replay = CDCFLOW_CB(s->cb, replay);
        s->ctx.stage_id = sd.id;
        s->ctx.metrics = &metrics;
        s->ctx.stop = &rt->stop_;
        s->ctx.rejected = metrics.create(sd.id + ".rejected", "events this stage rejected", false);
        s->ctx.duplicates =
            metrics.create(sd.id + ".duplicates", "events this stage marked duplicate", false);
        s->ctx.dropped =
            metrics.create(sd.id + ".dropped", "events this stage dropped (filtered out)", false);
        Runtime *self = rt.get();
        Stage *stage = s.get();
        s->ctx.ownership_lost = [self, stage](const std::string &msg) {
            self->fail(*stage, msg, CDCFLOW_ERR_FENCED);
        };
        s->cfg.def = &sd;
        s->cfg.schema = &s->plugin->schema;
        s->batches = metrics.create(sd.id + ".batches", "batches handled", false);
        s->events = metrics.create(sd.id + ".events", "events handled", false);
        s->errors = metrics.create(sd.id + ".errors", "failed calls (retried or fatal)", false);
        s->busy_us = metrics.create(sd.id + ".busy_us", "time spent in the plugin, microseconds", false);
        rt->stages_.push_back(std::move(s));
    }
    if (Status cs = rt->create_instances(); !cs) return cs;
    // Only for a pipeline that loads: a failure stays the one line it is.
    for (const std::string &w : d.warnings)
        log_line(CDCFLOW_LOG_WARN, "host", w);
    rt->m_events_ = metrics.create("pipeline.events", "events that reached the sink", false);
    rt->m_applied_ = metrics.create("pipeline.applied", "events applied", false);
    rt->m_rejected_ = metrics.create("pipeline.rejected", "events rejected (dead letters)", false);
    rt->m_duplicates_ = metrics.create("pipeline.duplicates", "duplicate events skipped", false);
    rt->m_dropped_ =
        metrics.create("pipeline.dropped", "events dropped (filtered out) by a transform", false);
    rt->m_batches_ = metrics.create("pipeline.batches", "batches committed", false);
    rt->m_checkpoint_ =
        metrics.create("pipeline.checkpoint_offset", "offset of the last committed event", true);
    rt->m_owner_ = metrics.create("pipeline.owner",
                                  "1 while this host owns the sink's checkpoint, 0 while a standby", true);
    rt->m_takeovers_ = metrics.create("pipeline.ownership_changes",
                                      "times this host took the checkpoint over or stepped down", false);
    rt->m_replayed_ = metrics.create(
        "pipeline.replayed", "events replayed to rebuild stateful transforms at the last start", true);
    return rt;
}

Status Runtime::create_instances() {
    const PipelineDef &d = def_;
    for (auto &sp : stages_) {
        Stage &s = *sp;
        const StageDef &sd = *s.def;
        char err[kErrLen] = {0};
        cdcflow_status cs = s.cb->create(host_api(), &s.ctx, &s.cfg, &s.instance, err, sizeof err);
        if (cs == CDCFLOW_OK) continue;
        s.instance = nullptr;
        std::string msg = err[0] ? err : cdcflow_status_str(cs);
        // Config::fail already starts the message with the key's
        // "file:line:col": lead with it instead of the stage's position.
        std::string prefix = d.file + ":";
        if (msg.rfind(prefix, 0) == 0) {
            size_t colon = msg.find(": ", prefix.size());
            std::string loc = msg.substr(0, colon);
            return Status::from_abi(cs, loc + ": " + stage_label(sd) + ": " +
                                            (colon == std::string::npos ? "" : msg.substr(colon + 2)));
        }
        // Not the file's fault (a database that cannot be opened...): no
        // file position, and the plugin's code, so that it is not reported
        // as an invalid pipeline.
        if (cs != CDCFLOW_ERR_CONFIG) return Status::from_abi(cs, stage_label(sd) + ": " + msg);
        return Status::from_abi(cs, where(d.file, sd.config_mark) + ": " + stage_label(sd) + ": " + msg);
    }
    return Status::OK();
}

void Runtime::destroy_instances() {
    for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) {
        Stage &s = **it;
        if (s.instance) s.cb->destroy(s.instance);
        s.instance = nullptr;
    }
}

Runtime::~Runtime() {
    // Teardown order: stop queues, join, destroy instances, unload libraries.
    if (!threads_.empty()) {
        stop_.store(true);
        close_all();
        for (auto &t : threads_)
            if (t.joinable()) t.join();
    }
    destroy_instances();
    stages_.clear(); // releases the plugin libraries last
}

void Runtime::close_all() {
    std::lock_guard lock(mu_);
    for (auto &q : queues_)
        q->close();
    if (free_) free_->close();
}

void Runtime::fail(Stage &st, const std::string &what, cdcflow_status code) {
    {
        std::lock_guard lock(mu_);
        if (!failed_.load()) error_ = Status::from_abi(code, stage_label(*st.def) + ": " + what);
        st.last_error = what;
        st.last_error_unix_ms = static_cast<uint64_t>(base::wall_us() / 1000);
        failed_.store(true);
        stop_.store(true);
    }
    log_line(CDCFLOW_LOG_ERROR, st.def->id, what, "error");
    close_all();
    std::lock_guard lock(mu_);
    cv_.notify_all();
}

void Runtime::request_stop() {
    std::lock_guard lock(mu_);
    user_stop_.store(true);
    stop_.store(true);
    cv_.notify_all();
}

bool Runtime::wait_stopped(uint32_t timeout_ms) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return finished_.load(); });
}

std::string Runtime::state() const {
    if (failed_.load()) return "failed";
    if (finished_.load()) return "stopped";
    if (stop_.load()) return "draining";
    if (standby_.load()) return "standby";
    return running_.load() ? "running" : "starting";
}

std::string Runtime::role() const {
    if (owner_.load()) return "owner";
    return standby_.load() ? "standby" : "";
}

const char *breaker_name(BreakerState s) {
    switch (s) {
    case BreakerState::half_open:
        return "half_open";
    case BreakerState::open:
        return "open";
    default:
        return "closed";
    }
}

HealthReport Runtime::health() const {
    HealthReport h;
    h.pipeline = def_.name;
    h.state = state();
    h.role = role();
    h.owner = owner();
    h.totals = totals();
    bool all_started = !stages_.empty();
    std::lock_guard lock(mu_);
    if (failed_.load()) h.last_error = error_.message();
    for (const auto &sp : stages_) {
        const Stage &s = *sp;
        StageReport r;
        r.id = s.def->id;
        r.plugin = s.def->plugin;
        r.kind = kind_name(s.plugin->desc->kind);
        r.breaker = static_cast<BreakerState>(s.breaker.load());
        r.retries = s.retries.load();
        r.trips = s.trips.load();
        r.last_error = s.last_error;
        r.last_error_unix_ms = s.last_error_unix_ms;
        bool started = s.started.load();
        if (r.breaker == BreakerState::open)
            r.state = "open";
        else if (s.retrying.load())
            r.state = "retrying";
        else if (started)
            r.state = "running";
        else if (s.stopped.load())
            r.state = failed_.load() ? "failed" : "stopped";
        else
            r.state = "idle";
        if (r.breaker != BreakerState::closed) h.healthy = false;
        all_started = all_started && started;
        h.stages.push_back(std::move(r));
    }
    if (failed_.load()) h.healthy = false;
    h.ready = h.healthy && all_started && owner_.load() && running_.load() && !stop_.load();
    return h;
}

std::string Runtime::owner() const {
    std::lock_guard lock(mu_);
    return standby_.load() ? owner_text_ : std::string();
}

Totals Runtime::totals() const {
    Totals t;
    auto v = [](cdcflow_metric *m) { return m ? static_cast<uint64_t>(m->value.load()) : 0; };
    t.events = v(m_events_);
    t.applied = v(m_applied_);
    t.rejected = v(m_rejected_);
    t.duplicates = v(m_duplicates_);
    t.dropped = v(m_dropped_);
    t.batches = v(m_batches_);
    return t;
}

template <typename F> Runtime::Outcome Runtime::call_with_retry(Stage &st, const char *what, F &&f) {
    const RetryPolicy &policy = st.def->retry;
    char err[kErrLen];
    uint32_t backoff_ms = policy.backoff_ms;
    for (uint32_t attempt = 1;; ++attempt) {
        err[0] = '\0';
        cdcflow_status cs = f(err, sizeof err);
        if (cs == CDCFLOW_OK) {
            if (attempt > 1) st.retrying.store(false, std::memory_order_relaxed);
            return {};
        }
        // "Owned by another process" is a standby's normal answer, not an error.
        if (cs != CDCFLOW_ERR_OWNED) st.errors->value.fetch_add(1, std::memory_order_relaxed);
        std::string msg = err[0] ? err : cdcflow_status_str(cs);
        if (cs != CDCFLOW_ERR_RETRY) return {cs, msg};
        if (attempt >= policy.max_attempts)
            return {cs, msg + " (gave up after " + std::to_string(attempt) + " attempts; see the stage's " +
                            "retry.max_attempts)"};
        if (stopping())
            return {cs, msg + " (stopped while retrying " + what + ": the work is replayed from the " +
                            "checkpoint on the next start)"};
        st.retrying.store(true, std::memory_order_relaxed);
        st.retries.fetch_add(1, std::memory_order_relaxed);
        {
            std::lock_guard lock(mu_);
            st.last_error = msg;
            st.last_error_unix_ms = static_cast<uint64_t>(base::wall_us() / 1000);
        }
        log_line(CDCFLOW_LOG_WARN, st.def->id,
                 msg + "; " + what + " retry " + std::to_string(attempt) + "/" +
                     std::to_string(policy.max_attempts - 1) + " in " + std::to_string(backoff_ms) + " ms",
                 "retry", {{"call", what}, {"attempt", attempt}, {"delay_ms", backoff_ms}, {"error", msg}});
        {
            // A stop (or another stage failing) ends the wait at once.
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return stop_.load(); });
        }
        if (stopping())
            return {cs, msg + " (stopped while retrying " + what + ": the work is replayed from the " +
                            "checkpoint on the next start)"};
        backoff_ms = backoff_ms > policy.max_backoff_ms / 2 ? policy.max_backoff_ms : backoff_ms * 2;
    }
}

void Runtime::notify_committed(Stage &src, Batch *b) {
    if (b->count == 0 || !src.cb->committed) return;
    // The last position of every partition in the batch (positions within a
    // partition rise), however many partitions: one call, in no particular
    // order across partitions. Events of one partition usually come in
    // runs, so the last match is tried first.
    committed_.clear();
    size_t last = 0;
    for (uint32_t i = b->count; i-- > 0;) {
        const cdcflow_position &p = b->events[i].position;
        std::string_view part = partition_of(p);
        if (!committed_.empty() && partition_of(committed_[last]) == part) continue;
        bool seen = false;
        for (size_t j = 0; j < committed_.size() && !seen; ++j)
            if (partition_of(committed_[j]) == part) {
                seen = true;
                last = j;
            }
        if (seen) continue;
        last = committed_.size();
        committed_.push_back(p);
    }
    src.cb->committed(src.instance, committed_.data(), static_cast<uint32_t>(committed_.size()));
}

void Runtime::recycle(Stage &src, Batch *b) {
    notify_committed(src, b);
    in_flight_ -= std::min<uint64_t>(in_flight_, b->count);
    b->reset();
}

void Runtime::count_committed(Batch *b) {
    uint64_t ok = 0, rej = 0, dup = 0, drop = 0;
    for (uint32_t i = 0; i < b->count; ++i) {
        switch (b->events[i].status) {
        case CDCFLOW_EVENT_OK:
            ++ok;
            break;
        case CDCFLOW_EVENT_REJECTED:
            ++rej;
            break;
        case CDCFLOW_EVENT_DROPPED:
            ++drop;
            break;
        default:
            ++dup;
            break;
        }
    }
    m_events_->value.fetch_add(b->count, std::memory_order_relaxed);
    m_applied_->value.fetch_add(ok, std::memory_order_relaxed);
    m_rejected_->value.fetch_add(rej, std::memory_order_relaxed);
    m_duplicates_->value.fetch_add(dup, std::memory_order_relaxed);
    m_dropped_->value.fetch_add(drop, std::memory_order_relaxed);
    m_batches_->value.fetch_add(1, std::memory_order_relaxed);
    if (b->count)
        m_checkpoint_->value.store(b->events[b->count - 1].position.offset, std::memory_order_relaxed);
}

void Runtime::hide_dropped(Stage &st, Batch *b) {
    st.hidden.clear();
    if (st.knows_dropped || b->dropped == 0) return; // the common case looks at no event
    for (uint32_t i = 0; i < b->count; ++i) {
        cdcflow_event &e = b->events[i];
        if (e.status != CDCFLOW_EVENT_DROPPED) continue;
        // DUPLICATE is what an ABI 1/2 stage already skips without a dead
        // letter: the same outcome as a drop, in a status it knows.
        e.status = CDCFLOW_EVENT_DUPLICATE;
        st.hidden.push_back(i); // reserved to the batch size: no allocation per batch
    }
}

void Runtime::unhide_dropped(Stage &st, Batch *b) {
    // The stage could not have changed a shown DUPLICATE: event_reject keeps
    // the first verdict and event_mark_duplicate is a no-op on a duplicate.
    for (uint32_t i : st.hidden)
        if (b->events[i].status == CDCFLOW_EVENT_DUPLICATE) b->events[i].status = CDCFLOW_EVENT_DROPPED;
    st.hidden.clear();
}

void Runtime::source_loop(Stage &st, bool drain) {
    Outcome started = call_with_retry(st, "start", [&](char *err, uint64_t len) {
        return st.cb->start ? st.cb->start(st.instance, err, len) : CDCFLOW_OK;
    });
    if (started.code != CDCFLOW_OK) {
        fail(st, "start failed: " + started.message, started.code);
        if (st.cb->stop) st.cb->stop(st.instance);
        return;
    }
    st.started.store(true);
    SpscQueue<Batch> &out = *queues_.front();
    Batch *b = nullptr;
    in_flight_ = 0; // a fresh pool
    // Committed batches taken back early (their positions already reported):
    // an idle source learns what was committed without waiting for traffic.
    // Used last in, first out: the batches in use stay the few already grown
    // to the backlog's size, the others keep their small first allocation.
    std::vector<Batch *> spare;
    spare.reserve(pool_.size());
    auto take_back = [&](Batch *r) {
        recycle(st, r);
        spare.push_back(r);
    };
    auto take = [&]() -> Batch * {
        while (Batch *r = free_->try_pop())
            take_back(r);
        if (spare.empty()) {
            Batch *x = free_->pop(); // blocks while every batch is downstream
            if (x) recycle(st, x);
            return x;
        }
        Batch *x = spare.back();
        spare.pop_back();
        return x;
    };
    // Adaptive batching (Settings): the events the next fill may take.
    const Settings &set = def_.settings;
    BatchSizer sizer(set.batch_size, set.batch_max_events);
    // Memory stays bounded however long the backlog: at most one largest
    // batch per stage is in flight (every stage busy at once is all that
    // the batches' size can buy).
    const uint64_t in_flight_max = uint64_t(sizer.max()) * stages_.size();
    while (!stopping()) {
        if (!b && !(b = take())) break;
        // Wait for committed batches until the next fill fits the bound
        // (something is in flight then, so this ends).
        while (in_flight_ > 0 && in_flight_ + sizer.target() > in_flight_max && !stopping()) {
            Batch *r = free_->pop();
            if (!r) break; // closed: a stage failed
            take_back(r);
        }
        BatchLimits limits;
        limits.events = sizer.target();
        limits.bytes = set.batch_max_bytes;
        limits.max_fill = std::chrono::milliseconds(set.batch_max_ms);
        b->set_limits(limits);
        int32_t exhausted = 0;
        Outcome polled = call_with_retry(st, "poll", [&](char *err, uint64_t len) {
            exhausted = 0;
            auto t0 = Clock::now();
            cdcflow_status cs = st.cb->poll(st.instance, static_cast<cdcflow_batch *>(b),
                                            drain ? 0 : def_.settings.poll_wait_ms, &exhausted, err, len);
            st.busy_us->value.fetch_add(micros_since(t0), std::memory_order_relaxed);
            // A failed poll leaves no half-read batch behind: the source
            // reads those rows again.
            if (cs != CDCFLOW_OK) b->reset();
            return cs;
        });
        if (polled.code != CDCFLOW_OK) {
            if (stopping() && !failed_.load() && polled.code == CDCFLOW_ERR_RETRY) break; // asked to stop
            fail(st, polled.message, polled.code);
            break;
        }
        if (b->count > 0) {
            sizer.filled(b->count, b->full);
            st.batches->value.fetch_add(1, std::memory_order_relaxed);
            st.events->value.fetch_add(b->count, std::memory_order_relaxed);
            in_flight_ += b->count;
            if (!out.push(b)) break; // closed: a stage failed
            b = nullptr;
        } else if (drain && exhausted) {
            break;
        } else {
            sizer.filled(0, false);
            while (Batch *r = free_->try_pop())
                take_back(r);
        }
    }
    // End of stream: everything read so far drains and commits, then the
    // marker comes back through the pool.
    if (!failed_.load()) {
        if (!b) b = take();
        if (b) {
            recycle(st, b);
            b->end_of_stream = true;
            if (out.push(b)) {
                while (Batch *r = free_->pop()) {
                    bool eos = r->end_of_stream;
                    recycle(st, r);
                    if (eos) break;
                }
            }
        }
    }
    st.started.store(false);
    st.stopped.store(true);
    if (st.cb->stop) st.cb->stop(st.instance);
}

void Runtime::stage_loop(size_t index) {
    Stage &st = *stages_[index];
    bool is_sink = index + 1 == stages_.size();
    SpscQueue<Batch> &in = *queues_[index - 1];
    SpscQueue<Batch> &out = is_sink ? *free_ : *queues_[index];
    if (!st.knows_dropped) st.hidden.reserve(def_.settings.batch_size);
    Outcome started = call_with_retry(st, "start", [&](char *err, uint64_t len) {
        return st.cb->start ? st.cb->start(st.instance, err, len) : CDCFLOW_OK;
    });
    if (started.code != CDCFLOW_OK) {
        fail(st, "start failed: " + started.message, started.code);
        if (st.cb->stop) st.cb->stop(st.instance);
        return;
    }
    st.started.store(true);
    while (Batch *b = in.pop()) {
        if (b->end_of_stream) {
            char err[kErrLen] = {0};
            if (st.cb->flush) {
                cdcflow_status cs = st.cb->flush(st.instance, err, sizeof err);
                if (cs != CDCFLOW_OK) {
                    fail(st, std::string("flush failed: ") + (err[0] ? err : cdcflow_status_str(cs)), cs);
                    break;
                }
            }
            out.push(b);
            break;
        }
        hide_dropped(st, b);
        Outcome done = call_with_retry(st, "process", [&](char *err, uint64_t len) {
            auto t0 = Clock::now();
            cdcflow_status cs = st.cb->process(st.instance, static_cast<cdcflow_batch *>(b), err, len);
            st.busy_us->value.fetch_add(micros_since(t0), std::memory_order_relaxed);
            return cs;
        });
        unhide_dropped(st, b);
        if (done.code != CDCFLOW_OK) {
            fail(st, done.message, done.code);
            break;
        }
        st.batches->value.fetch_add(1, std::memory_order_relaxed);
        st.events->value.fetch_add(b->count, std::memory_order_relaxed);
        if (is_sink) count_committed(b);
        if (!out.push(b)) break;
    }
    st.started.store(false);
    st.stopped.store(true);
    if (st.cb->stop) st.cb->stop(st.instance);
}

Status Runtime::acquire_ownership() {
    Stage &sink = *stages_.back();
    if (!sink.acquire || ownership_disabled()) {
        if (!warned_unfenced_)
            log_line(CDCFLOW_LOG_WARN, "host",
                     sink.acquire
                         ? "CDCFLOW_UNSAFE_NO_OWNERSHIP is set: the checkpoint is not fenced; another "
                           "host on the same store would apply every event again"
                         : stage_label(*sink.def) +
                               " does not fence its checkpoint (no acquire callback): run one host "
                               "per checkpoint, a second one would apply every event again");
        warned_unfenced_ = true;
        owner_.store(true);
        m_owner_->value.store(1);
        return Status::OK();
    }
    cdcflow_ownership req{};
    req.struct_size = sizeof req;
    req.lease_ms = def_.settings.owner_lease_ms;
    // A standby looks often enough to notice a released or dead owner
    // promptly, and rarely enough to cost nothing.
    const auto poll = std::chrono::milliseconds(std::clamp<uint32_t>(req.lease_ms / 4, 25, 500));
    std::string announced;
    for (;;) {
        if (user_stop_.load()) return Status::OK();
        auto attempt = [&](char *err, uint64_t len) { return sink.acquire(sink.instance, &req, err, len); };
        Outcome got;
        if (standby_.load()) {
            // A standby asks once per look: a busy store is just more waiting
            // (no retry budget, no warning per attempt).
            char err[kErrLen] = {0};
            got.code = attempt(err, sizeof err);
            if (got.code != CDCFLOW_OK) got.message = err[0] ? err : cdcflow_status_str(got.code);
        } else {
            got = call_with_retry(sink, "acquire", attempt);
        }
        if (got.code == CDCFLOW_OK) {
            if (standby_.load())
                log_line(CDCFLOW_LOG_INFO, "host", "taking over: this host now owns the checkpoint",
                         "owner_change", {{"role", "owner"}});
            m_takeovers_->value.fetch_add(standby_.load() ? 1 : 0, std::memory_order_relaxed);
            {
                std::lock_guard lock(mu_);
                owner_text_.clear();
                standby_.store(false);
                owner_.store(true);
            }
            m_owner_->value.store(1);
            return Status::OK();
        }
        if (got.code == CDCFLOW_ERR_RETRY && standby_.load() && !user_stop_.load()) {
            // A standby whose store stays locked (a frozen owner inside a
            // commit, a long backup) goes on waiting: that is its job.
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, poll, [&] { return user_stop_.load(); });
            continue;
        }
        if (got.code != CDCFLOW_ERR_OWNED) {
            if (user_stop_.load() && got.code == CDCFLOW_ERR_RETRY) return Status::OK();
            return Status::from_abi(got.code,
                                    stage_label(*sink.def) +
                                        ": cannot take ownership of the checkpoint: " + got.message);
        }
        if (def_.settings.when_owned == WhenOwned::refuse)
            return Status::from_abi(
                CDCFLOW_ERR_OWNED,
                stage_label(*sink.def) + ": " + got.message +
                    " (settings.when_owned is 'refuse': exiting instead of waiting as a standby)");
        {
            std::lock_guard lock(mu_);
            owner_text_ = got.message;
            standby_.store(true);
            owner_.store(false);
        }
        m_owner_->value.store(0);
        if (got.message != announced) {
            log_line(CDCFLOW_LOG_INFO, "host",
                     "standby: " + got.message +
                         "; taking over when it stops (at once if its process is gone "
                         "from this machine, else " +
                         std::to_string(req.lease_ms) +
                         " ms after its last renewal; settings.owner_lease_ms)",
                     "owner_change", {{"role", "standby"}, {"owner", got.message}});
            announced = got.message;
        }
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, poll, [&] { return user_stop_.load(); });
    }
}

void Runtime::release_ownership() {
    Stage &sink = *stages_.back();
    if (sink.release && sink.instance && owner_.load() && !ownership_disabled()) sink.release(sink.instance);
    owner_.store(false);
}

Status Runtime::run(const RunOptions &opts) {
    Status result;
    for (;;) {
        result = acquire_ownership();
        if (!result) break;
        if (user_stop_.load()) { // asked to stop while (or just after) taking over
            release_ownership();
            break;
        }
        result = run_once(opts);
        release_ownership();
        if (result.abi() != CDCFLOW_ERR_FENCED) break;
        m_owner_->value.store(0);
        m_takeovers_->value.fetch_add(1, std::memory_order_relaxed);
        if (def_.settings.when_owned == WhenOwned::refuse) break;
        if (user_stop_.load()) { // fenced, then asked to stop: a standby's clean exit
            log_line(CDCFLOW_LOG_WARN, "host", "stepped down: " + result.message(), "owner_change",
                     {{"role", "none"}});
            result = Status::OK();
            break;
        }
        // Step down: nothing this incarnation holds in memory (row caches,
        // the dedupe window) may outlive the ownership; new instances start
        // from whatever the new owner commits.
        log_line(CDCFLOW_LOG_WARN, "host", "stepping down to standby: " + result.message(), "owner_change",
                 {{"role", "standby"}});
        destroy_instances();
        {
            std::lock_guard lock(mu_);
            failed_.store(false);
            stop_.store(user_stop_.load());
            error_ = Status::OK();
        }
        if (result = create_instances(); !result) break;
    }
    running_.store(false);
    {
        std::lock_guard lock(mu_);
        standby_.store(false);
        finished_.store(true);
    }
    cv_.notify_all();
    return result;
}

Status Runtime::restore_state(const std::vector<cdcflow_position> &checkpoint) {
    m_replayed_->value.store(0);
    // What each stateful transform asks for. The most any of them asks is
    // replayed, to each: one pass over the source, and a transform that sees
    // more than it asked for only remembers more.
    std::vector<Stage *> restoring;
    uint64_t want = 0;
    std::string asker; // who asked the most, for the messages below
    for (size_t i = 1; i + 1 < stages_.size(); ++i) {
        Stage &s = *stages_[i];
        if (!s.history || !s.restore) continue;
        cdcflow_history h{};
        h.struct_size = sizeof h;
        s.history(s.instance, &h);
        if (h.max_events == 0) continue;
        restoring.push_back(&s);
        if (h.max_events > want) {
            want = h.max_events;
            asker = stage_label(*s.def) + " asked for the last " + std::to_string(want) + " events" +
                    (h.setting ? std::string(" (its ") + h.setting + ")" : std::string());
        }
    }
    if (restoring.empty()) return Status::OK();
    Stage &src = *stages_.front();
    if (!src.replay) {
        // Nothing was delivered before a first start: nothing is lost then.
        if (!checkpoint.empty() && !warned_no_replay_) {
            std::string names;
            for (Stage *s : restoring)
                names += (names.empty() ? "'" : ", '") + s->def->id + "'";
            log_line(
                CDCFLOW_LOG_WARN, "host",
                stage_label(*src.def) + " cannot replay events (no replay callback), so " +
                    (restoring.size() == 1 ? "stage " + names + " starts" : "stages " + names + " start") +
                    " with no state from before the checkpoint (" + asker +
                    "): e.g. copies of events processed before this start are not recognised");
            warned_no_replay_ = true;
        }
        return Status::OK();
    }

    cdcflow_replay req{};
    req.struct_size = sizeof req;
    req.position_count = static_cast<uint32_t>(checkpoint.size());
    req.positions = checkpoint.data();
    req.max_events = want;
    // One batch of the normal pool, filled and handed to each transform in
    // turn on this thread: the replay costs no memory of its own.
    Batch *b = pool_.front().get();
    uint64_t replayed = 0;
    // A source hands out at most max_events per partition of the checkpoint;
    // more means it is going round in circles (e.g. the same events again).
    const uint64_t partitions = std::max<uint64_t>(checkpoint.size(), 1);
    const uint64_t most = want > UINT64_MAX / partitions ? UINT64_MAX : want * partitions;
    int empty_calls = 0;
    const auto t0 = Clock::now();
    for (int32_t done = 0; !done;) {
        b->reset();
        if (stopping()) return Status::OK(); // the caller starts nothing
        Outcome got = call_with_retry(src, "replay", [&](char *err, uint64_t len) {
            done = 0;
            cdcflow_status cs =
                src.replay(src.instance, &req, static_cast<cdcflow_batch *>(b), &done, err, len);
            if (cs != CDCFLOW_OK) b->reset(); // the source reads these again
            return cs;
        });
        if (got.code != CDCFLOW_OK) {
            b->reset();
            if (stopping() && !failed_.load() && got.code == CDCFLOW_ERR_RETRY) return Status::OK();
            return Status::from_abi(got.code, stage_label(*src.def) + ": replay failed: " + got.message);
        }
        // An event past the checkpoint was never committed: a transform that
        // remembered it would, e.g., drop its real delivery as a duplicate.
        for (uint32_t i = 0; i < b->count; ++i) {
            const cdcflow_position &p = b->events[i].position;
            bool within = false;
            for (const cdcflow_position &c : checkpoint)
                if (partition_of(c) == partition_of(p)) within = p.offset <= c.offset;
            if (!within) {
                std::string at =
                    (partition_of(p).empty() ? std::string("offset ") : std::string(partition_of(p)) + "@") +
                    std::to_string(p.offset);
                b->reset();
                return Status::from_abi(CDCFLOW_ERR_INTERNAL,
                                        stage_label(*src.def) + ": replay handed out " + at +
                                            ", which is past the checkpoint: refusing to rebuild state from "
                                            "events that were not committed");
            }
        }
        if (b->count == 0 && !done && ++empty_calls == kMaxEmptyReplays) {
            b->reset();
            return Status::from_abi(CDCFLOW_ERR_INTERNAL,
                                    stage_label(*src.def) +
                                        ": replay made no progress: " + std::to_string(kMaxEmptyReplays) +
                                        " calls in a row handed out no event and did not finish");
        }
        if (b->count == 0) continue;
        empty_calls = 0;
        if (b->count > most - replayed) {
            b->reset();
            return Status::from_abi(CDCFLOW_ERR_INTERNAL,
                                    stage_label(*src.def) + ": replay handed out more than the " +
                                        std::to_string(want) +
                                        " events per partition asked for without finishing");
        }
        for (Stage *s : restoring) {
            s->ctx.restoring = true;
            Outcome restored = call_with_retry(*s, "restore", [&](char *err, uint64_t len) {
                return s->restore(s->instance, static_cast<cdcflow_batch *>(b), err, len);
            });
            s->ctx.restoring = false;
            if (restored.code != CDCFLOW_OK) {
                b->reset();
                if (stopping() && !failed_.load() && restored.code == CDCFLOW_ERR_RETRY) return Status::OK();
                return Status::from_abi(restored.code,
                                        stage_label(*s->def) + ": restore failed: " + restored.message);
            }
        }
        replayed += b->count;
    }
    b->reset();
    m_replayed_->value.store(static_cast<int64_t>(replayed));
    if (!checkpoint.empty())
        log_line(CDCFLOW_LOG_INFO, "host",
                 "rebuilt stream state from " + std::to_string(replayed) + " events up to the checkpoint, " +
                     "replayed by " + stage_label(*src.def) + " in " +
                     std::to_string(micros_since(t0) / 1000) + " ms");
    if (req.truncated)
        log_line(CDCFLOW_LOG_WARN, "host",
                 asker + " to rebuild its state, but " + stage_label(*src.def) + " could replay only " +
                     std::to_string(replayed) + ": older events are gone" +
                     (req.truncated_by ? std::string(" (its ") + req.truncated_by + ")" : std::string()) +
                     "; e.g. copies of those older events are not recognised after this start");
    return Status::OK();
}

Status Runtime::run_once(const RunOptions &opts) {
    // Resume: ask the sink where it is, and start the source (and any
    // stateful transform) just after it. Only the owner reads it: a standby's
    // copy would be stale by the time it takes over.
    Stage &sink = *stages_.back();
    std::vector<std::pair<std::string, int64_t>> checkpoint;
    if (sink.cb->checkpoint) {
        Outcome got = call_with_retry(sink, "checkpoint", [&](char *err, uint64_t len) {
            checkpoint.clear();
            auto collect = [](void *user, const cdcflow_position *p) {
                static_cast<std::vector<std::pair<std::string, int64_t>> *>(user)->emplace_back(
                    std::string(partition_of(*p)), p->offset);
            };
            return sink.cb->checkpoint(sink.instance, collect, &checkpoint, err, len);
        });
        if (got.code != CDCFLOW_OK)
            return Status::from_abi(got.code,
                                    stage_label(*sink.def) + ": cannot read checkpoint: " + got.message);
    }
    std::vector<cdcflow_position> positions;
    for (auto &[part, off] : checkpoint)
        positions.push_back({{part.data(), part.size()}, off});

    const Settings &set = def_.settings;
    size_t n = stages_.size();
    {
        // fail() (e.g. ownership_lost from a plugin's own thread) may close
        // the queues at any moment: make them under the same lock.
        std::lock_guard lock(mu_);
        for (size_t i = 0; i + 1 < n; ++i)
            queues_.push_back(std::make_unique<SpscQueue<Batch>>(set.queue_capacity));
        // Enough batches to fill every queue and keep one in each stage's
        // hands, plus the end-of-stream marker.
        size_t pool = (n - 1) * set.queue_capacity + n + 1;
        free_ = std::make_unique<SpscQueue<Batch>>(pool);
        for (size_t i = 0; i < pool; ++i) {
            pool_.push_back(std::make_unique<cdcflow_batch>(set.batch_size)); // the plugins' handle type
            free_->try_push(pool_.back().get());
        }
        if (failed_.load()) {
            for (auto &q : queues_)
                q->close();
            free_->close();
        }
    }
    // Every return from here on leaves no queue or batch behind.
    auto finish = [&](Status st) {
        std::lock_guard lock(mu_);
        queues_.clear();
        free_.reset();
        pool_.clear();
        return st;
    };

    if (Status st = restore_state(positions); !st) return finish(st);
    if (stopping()) { // asked to stop (or fenced) during the replay: start nothing
        Status st;
        {
            std::lock_guard lock(mu_);
            st = failed_.load() ? error_ : Status::OK();
        }
        return finish(st);
    }
    for (size_t i = 0; i + 1 < stages_.size(); ++i) {
        Stage &s = *stages_[i];
        if (!s.cb->seek) continue;
        Outcome got = call_with_retry(s, "seek", [&](char *err, uint64_t len) {
            return s.cb->seek(s.instance, positions.data(), static_cast<uint32_t>(positions.size()), err,
                              len);
        });
        if (got.code != CDCFLOW_OK)
            return finish(Status::from_abi(
                got.code, stage_label(*s.def) + ": cannot resume from the checkpoint: " + got.message));
    }
    if (!checkpoint.empty()) {
        std::string cp;
        for (auto &[part, off] : checkpoint)
            cp += (cp.empty() ? "" : ", ") + (part.empty() ? std::string("offset ") : part + "@") +
                  std::to_string(off);
        log_line(CDCFLOW_LOG_INFO, "host", "resuming after checkpoint " + cp);
    }

    running_.store(true);
    threads_.emplace_back([this, &opts] {
        name_thread(*stages_[0]->def);
        source_loop(*stages_[0], opts.drain);
    });
    for (size_t i = 1; i < n; ++i)
        threads_.emplace_back([this, i] {
            name_thread(*stages_[i]->def);
            stage_loop(i);
        });
    for (auto &t : threads_)
        t.join();
    threads_.clear();
    running_.store(false);
    Status result;
    {
        std::lock_guard lock(mu_);
        result = failed_.load() ? error_ : Status::OK();
    }
    return finish(result);
}

} // namespace cdcflow::host

#include "runtime.hpp"

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/process.hpp"

#include "escape.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <pthread.h>
#include <random>
#include <string_view>
#include <tuple>

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
    // No allocation: the first thing a new stage thread does, outside its
    // out-of-memory handling (stage_thread).
    char name[16];
    std::snprintf(name, sizeof name, "cf:%s", d.id.c_str());
    pthread_setname_np(pthread_self(), name);
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

Result<std::map<std::string, std::shared_ptr<LoadedPlugin>>> load_and_check(PipelineDef &d,
                                                                            PluginRegistry &registry) {
    registry.add_front(d.plugin_path);

    // Load every plugin the file names; a missing or broken one is reported
    // at the position of its name.
    std::map<std::string, std::shared_ptr<LoadedPlugin>> loaded;
    for (const StageDef &sd : d.stages) {
        if (loaded.count(sd.plugin)) continue;
        auto r = registry.find(sd.plugin);
        if (!r) {
            // Memory that ran out loading it is no fault of the file: a
            // failure (exit 1), not an invalid pipeline (3).
            const Status::Code code = r.status().code() == Status::Code::kNoMemory ? Status::Code::kNoMemory
                                                                                   : Status::Code::kConfig;
            return Status(code,
                          where(d.file, sd.plugin_mark) + ": stage '" + sd.id + "': " + r.status().message());
        }
        loaded[sd.plugin] = r.value();
    }
    // Two plugins whose names differ only where metric names cannot (my-sink,
    // my_sink) would share their metric families: refused, at the second.
    std::map<std::string, const StageDef *> metric_names;
    for (const StageDef &sd : d.stages) {
        const std::string &name = loaded[sd.plugin]->desc->name;
        auto [it, fresh] = metric_names.emplace(Metrics::name_part(name), &sd);
        if (!fresh && loaded[it->second->plugin]->desc->name != name)
            return Status::Config(where(d.file, sd.plugin_mark) + ": stage '" + sd.id + "': plugin " +
                                  quote(name) + " and plugin " +
                                  quote(loaded[it->second->plugin]->desc->name) + " (stage '" +
                                  it->second->id +
                                  "') would share the metric families "
                                  "cdcflow_plugin_" +
                                  it->first + "_*: rename one of them");
    }
    Status st = check_pipeline(d, [&](const std::string &name) -> const PluginSchema * {
        auto it = loaded.find(name);
        return it == loaded.end() ? nullptr : &it->second->schema;
    });
    if (!st) return st;
    return loaded;
}

Result<std::unique_ptr<Runtime>> Runtime::create(PipelineDef def, PluginRegistry &registry,
                                                 Metrics &metrics) {
    std::unique_ptr<Runtime> rt(new Runtime(std::move(def), metrics));
    PipelineDef &d = rt->def_;
    auto checked = load_and_check(d, registry);
    if (!checked) return checked.status();
    std::map<std::string, std::shared_ptr<LoadedPlugin>> &loaded = checked.value();

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
        s->partitions = CDCFLOW_CB(s->cb, partitions);
        s->ctx.stage_id = sd.id;
        s->ctx.settings = &d.settings;
        s->ctx.metrics = &metrics;
        s->ctx.stop = &rt->stop_;
        Runtime *self = rt.get();
        Stage *stage = s.get();
        s->ctx.ownership_lost = [self, stage](const std::string &msg) {
            // Called on a plugin's own thread, through the C ABI: nothing
            // may escape, not even memory running out for the message.
            try {
                self->fail(*stage, msg, CDCFLOW_ERR_FENCED);
            } catch (...) {
                self->fail_out_of_memory(*stage);
            }
        };
        s->cfg.def = &sd;
        s->cfg.schema = &s->plugin->schema;
        rt->stages_.push_back(std::move(s));
    }
    // A source whose partitions a consumer group assigns needs a sink that
    // claims each partition's checkpoint as it comes (ABI 5).
    const cdcflow_plugin *src_desc = rt->stages_.front()->plugin->desc;
    rt->group_partitions_ = CDCFLOW_HAS_FIELD(src_desc, cdcflow_plugin, flags) &&
                            (src_desc->flags & CDCFLOW_PLUGIN_GROUP_PARTITIONS) != 0;
    if (rt->group_partitions_) {
        Stage &sink = *rt->stages_.back();
        if (!sink.partitions)
            return Status::Config(where(d.file, sink.def->plugin_mark) + ": " + stage_label(*sink.def) +
                                  ": cannot follow stage '" + rt->stages_.front()->def->id +
                                  "', whose partitions a consumer group assigns: the plugin has no "
                                  "partitions callback (ABI 5), so it could not claim each partition's "
                                  "checkpoint as it moves between hosts");
        Stage &src = *rt->stages_.front();
        Runtime *self = rt.get();
        src.ctx.partitions_changed = [self, &src](const cdcflow_partitions &c, std::string &err) {
            return self->change_partitions(src, c, err);
        };
    }
    // Deferred commits are a sink's: a source or transform declaring the
    // flag would have it silently ignored (its process still "done").
    for (size_t i = 0; i + 1 < rt->stages_.size(); ++i) {
        const Stage &s = *rt->stages_[i];
        const cdcflow_plugin *desc = s.plugin->desc;
        if (CDCFLOW_HAS_FIELD(desc, cdcflow_plugin, flags) &&
            (desc->flags & CDCFLOW_PLUGIN_DEFERRED_COMMIT) != 0)
            return Status::Config(where(d.file, s.def->plugin_mark) + ": " + stage_label(*s.def) +
                                  ": the plugin declares CDCFLOW_PLUGIN_DEFERRED_COMMIT, which only the "
                                  "pipeline's last stage (its sink) may: move it last or drop the flag");
    }
    Stage &sink = *rt->stages_.back();
    const cdcflow_plugin *sink_desc = sink.plugin->desc;
    if (CDCFLOW_HAS_FIELD(sink_desc, cdcflow_plugin, flags) &&
        (sink_desc->flags & CDCFLOW_PLUGIN_DEFERRED_COMMIT) != 0) {
        // Its process returning OK means "accepted": without settle the host
        // could never learn what became durable.
        sink.settle = CDCFLOW_CB(sink.cb, settle);
        if (!sink.settle)
            return Status::Config(where(d.file, sink.def->plugin_mark) + ": " + stage_label(*sink.def) +
                                  ": the plugin declares CDCFLOW_PLUGIN_DEFERRED_COMMIT but has no settle "
                                  "callback (ABI 6), so the host could never learn what it committed");
        sink.deferred = true;
        // Accepted batches the sink may hold before it waits for settle: 2,
        // one waiting for its acknowledgements while the next is produced.
        // Under a backlog that overlaps the whole wait (1M events into 128
        // partitions: the wait's tail is ~50 ms, producing a 65,536-event
        // batch takes about as long); while caught up the wait costs latency, not
        // throughput. More would only hold more memory: every accepted
        // batch stays in flight, and the pool and the source's in-flight
        // bound grow by as much (run_once, source_loop). A depth of 4 was
        // slower in tools/bench/bench_kafka_sink.py's setup (interleaved, 3
        // runs each on the loaded 2-core VM: 2.8-3.7 s against 2.4-2.9 s)
        // and took its peak RSS from ~370 to ~500 MB.
        rt->deferred_depth_ = 2;
    }
    rt->make_metrics(); // before the instances: a plugin's create may count already
    if (Status cs = rt->create_instances(); !cs) return cs;
    // Only for a pipeline that loads: a failure stays the one line it is.
    for (const std::string &w : d.warnings)
        log_line(CDCFLOW_LOG_WARN, "host", w);
    return rt;
}

Status Runtime::create_instances() {
    const PipelineDef &d = def_;
    for (auto &sp : stages_) {
        Stage &s = *sp;
        const StageDef &sd = *s.def;
        char err[kErrLen] = {0};
        s.accepted = 0; // a new instance counts its own process calls (settle)
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
    // A scrape must not read this object once it starts going away.
    if (collector_) metrics_.remove_collector(collector_);
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
    changed();
    log_line(CDCFLOW_LOG_ERROR, st.def->id, what, "error");
    close_all();
    std::lock_guard lock(mu_);
    cv_.notify_all();
}

template <class F> void Runtime::stage_thread(Stage &st, F &&body) noexcept {
    try {
        body();
        return;
    } catch (const std::bad_alloc &) {
    } catch (const std::exception &e) {
        try {
            fail(st, std::string("internal error: ") + e.what(), CDCFLOW_ERR_INTERNAL);
            end_stage(st);
            return;
        } catch (...) {
        }
    } catch (...) {
    }
    fail_out_of_memory(st);
    end_stage(st);
}

void Runtime::end_stage(Stage &st) noexcept {
    // Once per run: at the end of the stage's loop, or after stage_thread
    // caught a throw that skipped it. Either way the plugin is stopped
    // before the host frees the batches: a sink may still hold their bytes
    // (kafka_sink's producer borrows the payloads until stop).
    if (st.stopped.load()) return;
    {
        // The source thread may be calling this stage's plugin for a
        // partition change (change_partitions): stop only after it.
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !in_change_; });
    }
    st.started.store(false);
    st.stopped.store(true);
    changed();
    if (st.cb->stop) st.cb->stop(st.instance);
}

void Runtime::fail_out_of_memory(Stage &st) noexcept {
    {
        std::lock_guard lock(mu_);
        // The first failure's reason stands.
        if (!failed_.load()) error_ = Status::OutOfMemory();
        failed_.store(true);
        stop_.store(true);
    }
    changed();
    try {
        log_line(CDCFLOW_LOG_ERROR, st.def->id, "memory ran out in the host's own work; stopping", "error");
    } catch (...) {
    }
    close_all();
    std::lock_guard lock(mu_);
    cv_.notify_all();
}

void Runtime::request_stop() {
    {
        std::lock_guard lock(mu_);
        user_stop_.store(true);
        stop_.store(true);
        cv_.notify_all();
    }
    changed();
}

bool Runtime::wait_stopped(uint32_t timeout_ms) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return finished_.load(); });
}

void Runtime::notify_change() {
    {
        std::lock_guard lock(change_mu_);
        epoch_.fetch_add(1, std::memory_order_acq_rel);
    }
    change_cv_.notify_all();
}

uint64_t Runtime::wait_for_change(uint64_t seen, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(change_mu_);
    change_cv_.wait_for(lock, timeout, [&] { return epoch_.load(std::memory_order_acquire) != seen; });
    return epoch_.load(std::memory_order_acquire);
}

std::string Runtime::state() const {
    if (failed_.load()) return "failed";
    if (finished_.load()) return "stopped";
    // Stage threads that ended (a drain's end) are the run ending, not a
    // new start: a state a subscriber sees only moves forward.
    if (stop_.load() || wound_down_.load()) return "draining";
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
        r.poison = s.poison.load();
        r.bisect_calls = s.bisect_calls.load();
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
    t.events = totals_.events.load();
    t.applied = totals_.applied.load();
    t.rejected = totals_.rejected.load();
    t.duplicates = totals_.duplicates.load();
    t.dropped = totals_.dropped.load();
    t.batches = totals_.batches.load();
    return t;
}

uint32_t retry_backoff_ms(const RetryPolicy &p, uint32_t retry) {
    uint64_t ms = std::max<uint32_t>(p.backoff_ms, 1);
    for (uint32_t i = 1; i < retry && ms < p.max_backoff_ms; ++i)
        ms *= 2;
    return static_cast<uint32_t>(std::min<uint64_t>(ms, std::max(p.max_backoff_ms, p.backoff_ms)));
}

uint32_t jittered_ms(uint32_t ms, double jitter) {
    if (!(jitter > 0) || ms == 0) return ms; // also NaN
    jitter = std::min(jitter, 1.0);
    // Seeded per thread from the clock and the thread: hosts (and stages)
    // that met the same lock at the same moment draw different waits.
    thread_local std::minstd_rand rng(static_cast<std::minstd_rand::result_type>(
        static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
        std::hash<std::thread::id>{}(std::this_thread::get_id())));
    std::uniform_real_distribution<double> factor(1.0 - jitter, 1.0);
    // factor < 1, so the ceiling is at most ms, and at least ms * (1 - jitter).
    return static_cast<uint32_t>(std::ceil(static_cast<double>(ms) * factor(rng)));
}

template <typename F> Runtime::Outcome Runtime::call_with_retry(Stage &st, const char *what, F &&f) {
    const RetryPolicy &policy = st.def->retry;
    const BreakerPolicy &bp = st.def->breaker;
    const bool breaker = bp.failures > 0;
    // With the breaker, exhausting retry.max_attempts opens it too.
    const uint32_t open_after = breaker ? std::min(bp.failures, policy.max_attempts) : 0;
    char err[kErrLen];
    uint32_t failures = 0; // consecutive failures of this call
    Clock::time_point opened{};
    for (;;) {
        err[0] = '\0';
        cdcflow_status cs = f(err, sizeof err);
        if (cs == CDCFLOW_OK) {
            if (failures == 0) return {};
            if (st.breaker.load() != static_cast<int>(BreakerState::closed)) {
                st.breaker.store(static_cast<int>(BreakerState::closed));
                log_line(CDCFLOW_LOG_INFO, st.def->id,
                         std::string("breaker closed: ") + what + " succeeded again after " +
                             std::to_string(micros_since(opened) / 1000) + " ms open (" +
                             std::to_string(failures) + " failures in a row)",
                         "breaker_closed", {{"call", what}, {"open_ms", micros_since(opened) / 1000}});
            }
            st.retrying.store(false, std::memory_order_relaxed);
            changed();
            return {};
        }
        // "Owned by another process" is a standby's normal answer, not an error.
        if (cs != CDCFLOW_ERR_OWNED) st.errors->value.fetch_add(1, std::memory_order_relaxed);
        std::string msg = err[0] ? err : cdcflow_status_str(cs);
        if (cs != CDCFLOW_ERR_RETRY) {
            if (st.retrying.exchange(false, std::memory_order_relaxed)) changed();
            return {cs, msg};
        }
        ++failures;
        {
            std::lock_guard lock(mu_);
            st.last_error = msg;
            st.last_error_unix_ms = static_cast<uint64_t>(base::wall_us() / 1000);
        }
        changed();
        auto stopped = [&] {
            bool open = st.breaker.load() != static_cast<int>(BreakerState::closed);
            return Outcome{cs,
                           std::string("stopped while ") +
                               (open ? "the breaker was open for " : "retrying ") + what + " (" + msg + ")",
                           true};
        };
        if (stopping()) return stopped();
        const auto state = static_cast<BreakerState>(st.breaker.load());
        uint32_t wait_ms;
        if (breaker && (state == BreakerState::half_open || failures >= open_after)) {
            if (state == BreakerState::closed) opened = Clock::now();
            st.breaker.store(static_cast<int>(BreakerState::open));
            st.trips.fetch_add(1, std::memory_order_relaxed);
            st.retrying.store(true, std::memory_order_relaxed);
            wait_ms = bp.cooldown_ms;
            log_line(CDCFLOW_LOG_WARN, st.def->id,
                     state == BreakerState::half_open
                         ? std::string("breaker open again: the probe of ") + what + " failed: " + msg +
                               "; next probe in " + std::to_string(wait_ms) + " ms"
                         : std::string("breaker open after ") + std::to_string(failures) +
                               (failures == 1 ? " failure" : " consecutive failures") + " of " + what + ": " +
                               msg + "; nothing is called for " + std::to_string(wait_ms) +
                               " ms (breaker.cooldown_ms), then one probe",
                     "breaker_open",
                     {{"call", what}, {"failures", failures}, {"cooldown_ms", wait_ms}, {"error", msg}});
        } else if (!breaker && failures >= policy.max_attempts) {
            st.retrying.store(false, std::memory_order_relaxed);
            changed();
            return {cs, msg + " (gave up after " + std::to_string(failures) + " attempts; see the stage's " +
                            "retry.max_attempts)"};
        } else {
            st.retrying.store(true, std::memory_order_relaxed);
            wait_ms = jittered_ms(retry_backoff_ms(policy, failures), policy.jitter);
            log_line(CDCFLOW_LOG_WARN, st.def->id,
                     msg + "; " + what + " retry " + std::to_string(failures) + "/" +
                         std::to_string((breaker ? open_after : policy.max_attempts) - 1) + " in " +
                         std::to_string(wait_ms) + " ms" + (breaker ? " (then the breaker opens)" : ""),
                     "retry", {{"call", what}, {"attempt", failures}, {"delay_ms", wait_ms}, {"error", msg}});
        }
        changed(); // the breaker opened, or the stage is retrying
        {
            // A stop (or another stage failing) ends the wait at once.
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return stop_.load(); });
        }
        if (stopping()) return stopped();
        st.retries.fetch_add(1, std::memory_order_relaxed);
        if (st.breaker.load() == static_cast<int>(BreakerState::open)) {
            st.breaker.store(static_cast<int>(BreakerState::half_open));
            changed();
            log_line(CDCFLOW_LOG_INFO, st.def->id,
                     std::string("breaker half-open: probing ") + what + " once", "breaker_half_open",
                     {{"call", what}});
        }
    }
}

void Runtime::abandon(Stage &st, const std::string &why) {
    {
        std::lock_guard lock(mu_);
        abandoned_.store(true);
        stop_.store(true);
    }
    changed();
    log_line(CDCFLOW_LOG_WARN, st.def->id,
             why + ": what this stage held is not committed; it is replayed from the checkpoint on the "
                   "next start",
             "abandoned");
    close_all();
    std::lock_guard lock(mu_);
    cv_.notify_all();
}

namespace {

// The codes that blame events rather than the stage (ABI 4): bisect.
bool poison_code(cdcflow_status cs) {
    return cs == CDCFLOW_ERR_EVENT || cs == CDCFLOW_ERR_INTERNAL;
}

// Shows events [from, to) of a batch of n to a plugin as a batch of their
// own: they are rotated to the front (their parsed payloads with them) and
// the count is cut; the destructor rotates everything back. Only isolation
// uses it: the normal path never moves an event.
class PartView {
public:
    PartView(Batch *b, uint32_t from, uint32_t to, uint32_t n) : b_(b), from_(from), n_(n) {
        // event_payload fills `parsed` by index: give it every slot now so
        // that entries made during the part rotate back with their events.
        if (b->parsed.size() < n) b->make_parsed_slots();
        std::rotate(b->events.begin(), b->events.begin() + from, b->events.begin() + n);
        std::rotate(b->parsed.begin(), b->parsed.begin() + from, b->parsed.begin() + n);
        b->count = to - from;
    }
    ~PartView() {
        b_->count = n_;
        std::rotate(b_->events.begin(), b_->events.begin() + (n_ - from_), b_->events.begin() + n_);
        std::rotate(b_->parsed.begin(), b_->parsed.begin() + (n_ - from_), b_->parsed.begin() + n_);
    }
    PartView(const PartView &) = delete;
    PartView &operator=(const PartView &) = delete;

private:
    Batch *b_;
    uint32_t from_, n_;
};

std::string event_label(const cdcflow_event &e) {
    std::string_view part = partition_of(e.position);
    return (part.empty() ? std::string("offset ") : std::string(part) + "@") +
           std::to_string(e.position.offset) + " (event id " +
           quote(std::string_view(e.event_id.data ? e.event_id.data : "",
                                  static_cast<size_t>(e.event_id.len))) +
           ")";
}

} // namespace

struct Runtime::Isolation {
    uint32_t n = 0;        // events in the batch
    uint32_t carry = 0;    // sink: first event not committed yet ([carry, next part) are isolated ones)
    uint32_t isolated = 0; // events that failed on their own
};

Runtime::Outcome Runtime::process_batch(Stage &st, Batch *b) {
    hide_dropped(st, b);
    Outcome r = call_with_retry(st, "process", [&](char *err, uint64_t len) {
        auto t0 = Clock::now();
        cdcflow_status cs = st.cb->process(st.instance, static_cast<cdcflow_batch *>(b), err, len);
        st.duration->observe(micros_since(t0));
        if (cs == CDCFLOW_OK) ++st.accepted;
        return cs;
    });
    unhide_dropped(st, b);
    return r;
}

Runtime::Outcome Runtime::process_part(Stage &st, Batch *b, uint32_t from, uint32_t to, uint32_t n) {
    PartView view(b, from, to, n);
    st.bisect_calls.fetch_add(1, std::memory_order_relaxed);
    return process_batch(st, b);
}

Runtime::Outcome Runtime::split(Stage &st, Batch *b, bool is_sink, uint32_t lo, uint32_t hi,
                                const Outcome &failed, Isolation &iso) {
    if (hi - lo == 1) {
        // Fails on its own: a poison event. REJECTED by this stage with its
        // message; a sink writes the dead letter with its next part.
        const std::string &why = failed.message;
        host_api()->event_reject(&st.ctx, static_cast<cdcflow_batch *>(b), lo, why.data(), why.size());
        st.poison.fetch_add(1, std::memory_order_relaxed);
        ++iso.isolated;
        ++st.poison_run;
        log_line(CDCFLOW_LOG_WARN, st.def->id,
                 "poison event: " + event_label(b->events[lo]) + " fails on its own (" +
                     cdcflow_status_str(failed.code) + "): dead-lettered with the stage's message: " + why);
        if (st.poison_run > st.def->poison_limit)
            return {failed.code,
                    "more than " + std::to_string(st.def->poison_limit) +
                        " events in a row failed on their own (the stage's poison_limit), so the "
                        "stage is at fault, not the events: " +
                        why};
        return {};
    }
    const uint32_t mid = lo + (hi - lo) / 2;
    const std::pair<uint32_t, uint32_t> halves[] = {{lo, mid}, {mid, hi}};
    for (auto [from, to] : halves) { // left before right: a sink commits in order
        Outcome r = process_part(st, b, is_sink ? iso.carry : from, to, iso.n);
        if (r.code == CDCFLOW_OK) {
            if (is_sink) iso.carry = to;
            st.poison_run = 0;
            continue;
        }
        if (!poison_code(r.code) || r.stopped) return r;
        if (Outcome deeper = split(st, b, is_sink, from, to, r, iso); deeper.code != CDCFLOW_OK)
            return deeper;
    }
    return {};
}

Runtime::Outcome Runtime::isolate(Stage &st, Batch *b, bool is_sink, const Outcome &first) {
    const uint32_t n = b->count;
    if (n == 0) return first;
    log_line(CDCFLOW_LOG_WARN, st.def->id,
             std::string("process failed (") + cdcflow_status_str(first.code) + "): " + first.message +
                 "; isolating the events that fail on their own (" + std::to_string(n) + " events)");
    Isolation iso;
    iso.n = n;
    Outcome r = split(st, b, is_sink, 0, n, first, iso);
    if (r.code != CDCFLOW_OK) return r;
    if (n >= 2 && iso.isolated == n)
        return {first.code,
                "each of the batch's " + std::to_string(n) +
                    " events fails on its own, so the stage is at fault, not the events: " + first.message};
    if (is_sink && iso.carry < n) {
        // The dead letters isolated last, after the last committed part.
        Outcome w = process_part(st, b, iso.carry, n, n);
        if (w.code != CDCFLOW_OK && !w.stopped)
            return {w.code, "cannot write the dead letters of poison events: " + w.message};
        return w;
    }
    return {};
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
    const uint64_t bytes = in_flight_bytes_.load(std::memory_order_relaxed);
    in_flight_bytes_.store(bytes - std::min<uint64_t>(bytes, b->in_flight_bytes), std::memory_order_relaxed);
    b->in_flight_bytes = 0;
    b->reset();
}

void Runtime::take_back(Stage &src, Batch *b) {
    recycle(src, b);
    spare_.push_back(b);
}

cdcflow_status Runtime::change_partitions(Stage &src, const cdcflow_partitions &change, std::string &err) {
    // A newer source's longer struct: read what this host knows; an older
    // one's shorter struct: what it did not set stays zero.
    cdcflow_partitions c{};
    std::memcpy(&c, &change, std::min<size_t>(change.struct_size, sizeof c));
    c.struct_size = sizeof c;
    auto why_stopping = [&]() -> cdcflow_status {
        std::lock_guard lock(mu_);
        if (failed_.load()) {
            err = "the pipeline is stopping: " + error_.message();
            return error_.abi() == CDCFLOW_ERR_FENCED ? CDCFLOW_ERR_FENCED : CDCFLOW_ERR_IO;
        }
        err = "the pipeline is stopping";
        return CDCFLOW_ERR_RETRY;
    };
    if (!polling_) {
        err = "partitions_changed is called during poll only";
        return CDCFLOW_ERR_INTERNAL;
    }
    if (polling_->count > 0) {
        // Those events would reach the sink after it gave their partitions up.
        err = "partitions_changed called with " + std::to_string(polling_->count) +
              " events already in the batch: report the change before handing out events";
        return CDCFLOW_ERR_INTERNAL;
    }
    // A plugin's malformed lists are refused here, before any stage (or
    // the log line below) would read through a null pointer.
    for (auto [what, v, n] : {std::tuple{"revoked", c.revoked, c.revoked_count},
                              std::tuple{"assigned", c.assigned, c.assigned_count},
                              std::tuple{"query", c.query, c.query_count}}) {
        bool bad = n > 0 && !v;
        for (uint32_t i = 0; !bad && i < n; ++i)
            bad = v[i].len > 0 && !v[i].data;
        if (bad) {
            err = std::string("partitions_changed: the ") + what + " list (" + std::to_string(n) +
                  " partitions) has a null pointer: nothing was changed";
            return CDCFLOW_ERR_INTERNAL;
        }
        // A Kafka topic name is at most 249 bytes: anything near this bound
        // is a length the plugin never meant (and would be read past).
        constexpr uint64_t kMaxName = 4096;
        for (uint32_t i = 0; i < n; ++i)
            if (v[i].len > kMaxName) {
                err = std::string("partitions_changed: a name in the ") + what + " list is " +
                      std::to_string(v[i].len) + " bytes long (at most " + std::to_string(kMaxName) +
                      "): nothing was changed";
                return CDCFLOW_ERR_INTERNAL;
            }
    }
    // Every stage started (a rebalance may come before the sink's start
    // ran on its thread), then every batch in flight back, committed: every
    // stage is idle, and the sink commits what the revoked partitions had
    // in flight while it still owns them.
    {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] {
            if (stop_.load()) return true;
            for (size_t i = 1; i < stages_.size(); ++i)
                if (!stages_[i]->started.load() && !stages_[i]->stopped.load()) return false;
            return true;
        });
    }
    while (in_flight_ > 0 && !stopping()) {
        Batch *r = free_->pop();
        if (!r) break; // closed: a stage failed
        take_back(src, r);
    }
    // From here on other stages' callbacks run on this thread: a stage
    // whose thread ends meanwhile (a failure elsewhere closes the queues)
    // waits for this to finish before it calls its plugin's stop.
    // Decided under the lock: a stop between setting in_change_ and a
    // second look would leave it set, and every stage would wait for it
    // forever before its stop.
    bool stop_seen;
    {
        std::lock_guard lock(mu_);
        stop_seen = stop_.load();
        if (!stop_seen) in_change_ = true;
    }
    if (stop_seen) return why_stopping();
    struct EndChange {
        Runtime *rt;
        ~EndChange() {
            {
                std::lock_guard lock(rt->mu_);
                rt->in_change_ = false;
            }
            rt->cv_.notify_all();
        }
    } end_change{this};
    // A stage that gave up on a transient failure (retries spent) is not a
    // stop: the source must not take RETRY as "the pipeline is stopping".
    auto failure = [&](cdcflow_status cs) {
        if (stopping()) return why_stopping();
        return cs == CDCFLOW_ERR_RETRY ? CDCFLOW_ERR_IO : cs;
    };

    // Transforms first (they drop what they derived from revoked
    // partitions), then the sink (which reports the positions).
    struct Collected {
        std::vector<std::pair<std::string, int64_t>> got;
        cdcflow_position_fn fn;
        void *user;
    } collected{{}, c.fn, c.user};
    auto collect = [](void *user, const cdcflow_position *p) {
        auto *k = static_cast<Collected *>(user);
        k->got.emplace_back(std::string(partition_of(*p)), p->offset);
        if (k->fn) k->fn(k->user, p);
    };
    for (size_t i = 1; i < stages_.size(); ++i) {
        Stage &s = *stages_[i];
        if (!s.partitions) continue;
        const bool is_sink = i + 1 == stages_.size();
        cdcflow_partitions mine = c;
        if (is_sink) {
            mine.fn = collect;
            mine.user = &collected;
        } else {
            mine.fn = nullptr;
            mine.user = nullptr;
        }
        Outcome done = call_with_retry(s, "partitions", [&](char *e, uint64_t len) {
            collected.got.clear();
            return s.partitions(s.instance, &mine, e, len);
        });
        if (done.code != CDCFLOW_OK) {
            if (done.stopped) return why_stopping();
            err = stage_label(*s.def) + ": " + done.message;
            return failure(done.code);
        }
    }
    if (c.revoked_count || c.assigned_count) {
        auto names = [](const cdcflow_str *v, uint32_t n) {
            std::string out;
            for (uint32_t i = 0; i < n && i < 8; ++i)
                out += (out.empty() ? "" : ", ") + std::string(v[i].data, static_cast<size_t>(v[i].len));
            if (n > 8) out += " and " + std::to_string(n - 8) + " more";
            return out.empty() ? std::string("none") : out;
        };
        log_line(CDCFLOW_LOG_INFO, "host",
                 "partitions changed: assigned " + names(c.assigned, c.assigned_count) + "; revoked " +
                     names(c.revoked, c.revoked_count),
                 "partitions", {{"assigned", c.assigned_count}, {"revoked", c.revoked_count}});
    }
    // State that moves with the stream: the assigned partitions' history,
    // up to their committed positions, into the stateful transforms.
    std::vector<cdcflow_position> assigned;
    for (const auto &[part, off] : collected.got)
        for (uint32_t i = 0; i < c.assigned_count; ++i)
            if (part == std::string_view(c.assigned[i].data, static_cast<size_t>(c.assigned[i].len))) {
                assigned.push_back({{part.data(), part.size()}, off});
                break;
            }
    if (!assigned.empty()) {
        Status st = restore_state(assigned, polling_, false);
        polling_->reset();
        if (!st) {
            err = st.message();
            return failure(st.abi());
        }
        if (stopping()) return why_stopping();
    }
    return CDCFLOW_OK;
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
        if (started.stopped && !failed_.load())
            abandon(st, "start: " + started.message);
        else
            fail(st, "start failed: " + started.message, started.code);
        if (st.cb->stop) st.cb->stop(st.instance);
        return;
    }
    st.started.store(true);
    changed();
    BatchQueue &out = *queues_.front();
    Batch *b = nullptr;
    in_flight_ = 0; // a fresh pool
    in_flight_bytes_.store(0, std::memory_order_relaxed);
    throttled_.store(false, std::memory_order_relaxed);
    next_resident_read_ = {};
    // Committed batches taken back early (their positions already reported):
    // an idle source learns what was committed without waiting for traffic.
    // Used last in, first out: the batches in use stay the few already grown
    // to the backlog's size, the others keep their small first allocation.
    spare_.clear();
    spare_.reserve(pool_.size());
    auto take = [&]() -> Batch * {
        while (Batch *r = free_->try_pop())
            take_back(st, r);
        if (spare_.empty()) {
            Batch *x = free_->pop(); // blocks while every batch is downstream
            if (x) recycle(st, x);
            return x;
        }
        Batch *x = spare_.back();
        spare_.pop_back();
        return x;
    };
    // Adaptive batching (Settings): the events the next fill may take.
    const Settings &set = def_.settings;
    BatchSizer sizer(set.batch_size, set.batch_max_events);
    // Memory stays bounded however long the backlog: at most one largest
    // batch per stage is in flight (every stage busy at once is all that
    // the batches' size can buy).
    // A deferred-commit sink holds up to deferred_depth_ accepted batches
    // more (create()).
    const uint64_t in_flight_max = uint64_t(sizer.max()) * (stages_.size() + deferred_depth_);
    // And so do the event bytes (settings.queue_max_bytes, at least one
    // batch_max_bytes): a fill starts only when a full one still fits.
    const uint64_t bytes_max =
        set.queue_max_bytes - std::min<uint64_t>(set.queue_max_bytes, set.batch_max_bytes);
    while (!stopping()) {
        if (!b && !(b = take())) break;
        // The soft memory limit: past its mark, one batch_size batch at a
        // time, each after everything before it committed, so that the
        // process holds as little event data as the stream allows.
        const bool slow = set.memory_soft_limit_bytes > 0 && memory_throttled();
        if (slow) sizer.filled(0, false); // back to batch_size, and growing again from there after
        // Wait for committed batches until the next fill fits the bounds
        // (something is in flight then, so this ends; parked on the pool).
        while (in_flight_ > 0 && !stopping() &&
               (slow || in_flight_ + sizer.target() > in_flight_max ||
                in_flight_bytes_.load(std::memory_order_relaxed) > bytes_max)) {
            Batch *r = free_->pop();
            if (!r) break; // closed: a stage failed
            take_back(st, r);
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
            polling_ = b;
            cdcflow_status cs = st.cb->poll(st.instance, static_cast<cdcflow_batch *>(b),
                                            drain ? 0 : def_.settings.poll_wait_ms, &exhausted, err, len);
            polling_ = nullptr;
            // Only a poll that brought events: an idle source's wait is not work.
            if (b->count) st.duration->observe(micros_since(t0));
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
            st.passed->value.fetch_add(b->count, std::memory_order_relaxed);
            st.batch_events->observe(b->count);
            in_flight_ += b->count;
            b->in_flight_bytes = b->arena.bytes_used();
            const uint64_t bytes = in_flight_bytes_.load(std::memory_order_relaxed) + b->in_flight_bytes;
            in_flight_bytes_.store(bytes, std::memory_order_relaxed);
            if (bytes > in_flight_bytes_peak_.load(std::memory_order_relaxed))
                in_flight_bytes_peak_.store(bytes, std::memory_order_relaxed);
            if (!out.push(b)) {
                // Closed (a stage failed, or a stop abandoned the run): these
                // events were never delivered, so they must not reach the
                // source as committed (recycle below would report them, and
                // a source may delete what is committed).
                in_flight_ -= std::min<uint64_t>(in_flight_, b->count);
                in_flight_bytes_.store(bytes - std::min<uint64_t>(bytes, b->in_flight_bytes),
                                       std::memory_order_relaxed);
                b->in_flight_bytes = 0;
                b->reset();
                break;
            }
            b = nullptr;
        } else if (drain && exhausted) {
            break;
        } else {
            sizer.filled(0, false);
            while (Batch *r = free_->try_pop())
                take_back(st, r);
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
    end_stage(st);
}

bool Runtime::memory_throttled() {
    const auto now = Clock::now();
    const bool was = throttled_.load(std::memory_order_relaxed);
    if (now < next_resident_read_) return was;
    next_resident_read_ = now + resident_interval_;
    const uint64_t rss = read_resident_ ? read_resident_() : base::resident_bytes();
    resident_.store(rss, std::memory_order_relaxed);
    if (rss == 0 && !warned_no_resident_) {
        // No /proc (a sandbox without it): say so once rather than pretend.
        log_line(CDCFLOW_LOG_WARN, "host",
                 "memory: cannot read this process's resident memory (/proc/self/statm): "
                 "settings.memory_soft_limit_bytes has no effect");
        warned_no_resident_ = true;
    }
    const uint64_t limit = def_.settings.memory_soft_limit_bytes;
    // 90%: the source slows down before the limit, not after; what is in
    // flight when it starts still arrives and commits.
    const uint64_t mark = limit - limit / 10;
    const bool now_over = rss > mark; // rss 0 (unreadable): never throttles
    if (now_over == was) return was;
    throttled_.store(now_over, std::memory_order_relaxed);
    if (now_over) {
        throttle_started_ = now;
        throttle_episodes_.fetch_add(1, std::memory_order_relaxed);
        log_line(CDCFLOW_LOG_WARN, "host",
                 "memory: resident " + base::format_bytes(rss) + " passed 90% of " +
                     "settings.memory_soft_limit_bytes (" + base::format_bytes(limit) +
                     "): the source slows down (batch_size events at a time, each after everything before "
                     "it committed) until it falls below again");
    } else {
        log_line(CDCFLOW_LOG_INFO, "host",
                 "memory: resident " + base::format_bytes(rss) + " is below 90% of " +
                     "settings.memory_soft_limit_bytes (" + base::format_bytes(limit) + ") again after " +
                     std::to_string(micros_since(throttle_started_) / 1000) +
                     " ms: the source reads at full speed");
    }
    return now_over;
}

std::vector<QueueReport> Runtime::queues() const {
    std::vector<QueueReport> out;
    std::lock_guard lock(mu_); // queues_ are made and cleared under it
    for (size_t i = 0; i + 1 < stages_.size(); ++i) {
        QueueReport q;
        q.name = stages_[i]->def->id + "->" + stages_[i + 1]->def->id;
        q.capacity = def_.settings.queue_capacity;
        if (i < queues_.size()) {
            q.depth = queues_[i]->batches();
            q.bytes = queues_[i]->bytes();
        }
        out.push_back(std::move(q));
    }
    return out;
}

MemoryReport Runtime::memory() const {
    MemoryReport m;
    m.in_flight_bytes = in_flight_bytes_.load(std::memory_order_relaxed);
    m.in_flight_bytes_peak = in_flight_bytes_peak_.load(std::memory_order_relaxed);
    m.queue_max_bytes = def_.settings.queue_max_bytes;
    m.soft_limit_bytes = def_.settings.memory_soft_limit_bytes;
    m.resident_bytes = resident_.load(std::memory_order_relaxed);
    m.throttled = throttled_.load(std::memory_order_relaxed);
    m.throttle_episodes = throttle_episodes_.load(std::memory_order_relaxed);
    return m;
}

void Runtime::stage_loop(size_t index) {
    Stage &st = *stages_[index];
    bool is_sink = index + 1 == stages_.size();
    BatchQueue &in = *queues_[index - 1];
    BatchQueue &out = is_sink ? *free_ : *queues_[index];
    if (!st.knows_dropped) st.hidden.reserve(def_.settings.batch_size);
    Outcome started = call_with_retry(st, "start", [&](char *err, uint64_t len) {
        return st.cb->start ? st.cb->start(st.instance, err, len) : CDCFLOW_OK;
    });
    if (started.code != CDCFLOW_OK) {
        if (started.stopped && !failed_.load())
            abandon(st, "start: " + started.message);
        else
            fail(st, "start failed: " + started.message, started.code);
        if (st.cb->stop) st.cb->stop(st.instance);
        return;
    }
    {
        // change_partitions waits for every stage to have started.
        std::lock_guard lock(mu_);
        st.started.store(true);
    }
    changed();
    cv_.notify_all();
    if (st.deferred)
        deferred_loop(st, in, out);
    else
        while (Batch *b = in.pop()) {
            if (b->end_of_stream) {
                if (flush(st)) out.push(b);
                break;
            }
            // A stop abandoned the pipeline's in-flight work: commit no more.
            if (abandoned_.load(std::memory_order_relaxed)) break;
            if (!process_whole(st, b, is_sink)) break;
            if (is_sink) count_committed(b);
            if (!out.push(b)) break;
        }
    end_stage(st);
}

bool Runtime::process_whole(Stage &st, Batch *b, bool is_sink) {
    const uint32_t marked_before = b->marked, overridden_before = b->overridden;
    Outcome done = process_batch(st, b);
    if (done.code == CDCFLOW_OK)
        st.poison_run = 0;
    else if (poison_code(done.code) && !done.stopped)
        done = isolate(st, b, is_sink, done);
    if (done.code != CDCFLOW_OK) {
        if (done.stopped && !failed_.load())
            abandon(st, done.message);
        else
            fail(st, done.message, done.code);
        return false;
    }
    count_processed(st, b, marked_before, overridden_before);
    return true;
}

bool Runtime::flush(Stage &st) {
    if (!st.cb->flush) return true;
    char err[kErrLen] = {0};
    cdcflow_status cs = st.cb->flush(st.instance, err, sizeof err);
    if (cs == CDCFLOW_OK) return true;
    fail(st, std::string("flush failed: ") + (err[0] ? err : cdcflow_status_str(cs)), cs);
    return false;
}

void Runtime::deferred_loop(Stage &st, BatchQueue &in, BatchQueue &out) {
    // Accepted batches, oldest first, each with st.accepted at its end.
    struct Accepted {
        Batch *b;
        uint64_t upto;
    };
    std::vector<Accepted> fifo;
    fifo.reserve(deferred_depth_ + 1);
    uint64_t durable = st.accepted; // an instance re-created (step-down) counts from where it is
    // settle's wait while the FIFO has room: input may arrive meanwhile and
    // is looked at only between two calls, so the wait starts short and
    // doubles while nothing becomes durable, up to kMaxRoomWaitMs (an idle
    // sink whose cluster stays silent wakes a few times a second, not ~60).
    // With a full FIFO (or at the end) only durability matters: the plugin
    // returns as soon as it has some, and kFullWaitMs only bounds how late
    // a stop is seen.
    constexpr uint32_t kMinWaitMs = 1, kMaxRoomWaitMs = 128, kFullWaitMs = 100;
    uint32_t room_wait = kMinWaitMs;
    Clock::time_point stop_seen{};
    // One settle call; the batches it covers go on to the source. False
    // when the loop is to end (failed, or a stop abandoned the rest).
    auto settle = [&](uint32_t wait_ms) -> bool {
        uint64_t now_durable = durable;
        const auto t0 = Clock::now();
        // RETRY (a locked database, say) goes through the stage's retry
        // and breaker policy as process's does: backoff, max_attempts, the
        // breaker and /health. RETRY while stopping is the plugin giving
        // up because of the stop: call_with_retry answers it as stopped.
        Outcome done = call_with_retry(st, "settle", [&](char *err, uint64_t len) {
            now_durable = durable;
            return st.settle(st.instance, wait_ms, &now_durable, err, len);
        });
        if (done.code != CDCFLOW_OK) {
            if (done.stopped && !failed_.load())
                abandon(st, "settle: " + done.message);
            else
                fail(st, "settle failed: " + done.message, done.code);
            return false;
        }
        if (now_durable < durable || now_durable > st.accepted) {
            fail(st,
                 "settle reported " + std::to_string(now_durable) + " durable process calls after " +
                     std::to_string(durable) + ", with " + std::to_string(st.accepted) +
                     " accepted: the count never decreases and never passes what was accepted",
                 CDCFLOW_ERR_INTERNAL);
            return false;
        }
        const bool progress = now_durable > durable;
        durable = now_durable;
        size_t k = 0;
        for (; k < fifo.size() && fifo[k].upto <= durable; ++k) {
            count_committed(fifo[k].b);
            if (!out.push(fifo[k].b)) return false; // closed: a stage failed
        }
        fifo.erase(fifo.begin(), fifo.begin() + static_cast<std::ptrdiff_t>(k));
        room_wait = progress ? kMinWaitMs : std::min(room_wait * 2, kMaxRoomWaitMs);
        if (progress || fifo.empty()) return true;
        const auto now = Clock::now();
        if (stopping()) {
            // OK without progress during a stop: the plugin still waits for
            // its acknowledgements (it gives up with an explicit RETRY), so
            // it is called again, up to settings.shutdown_timeout_ms.
            if (stop_seen == Clock::time_point{}) stop_seen = now;
            if (now - stop_seen >= std::chrono::milliseconds(def_.settings.shutdown_timeout_ms)) {
                if (!failed_.load()) {
                    uint64_t events = 0;
                    for (const Accepted &a : fifo)
                        events += a.b->count;
                    abandon(st, "stopping while " + std::to_string(fifo.size()) + " accepted batches (" +
                                    std::to_string(events) + " events) were not durable after " +
                                    std::to_string(def_.settings.shutdown_timeout_ms) +
                                    " ms (settings.shutdown_timeout_ms)");
                }
                return false;
            }
        }
        // Returned before wait_ms without progress: wait out the rest here,
        // or a plugin that answers at once would have this thread spin. A
        // stop ends the wait, not a stop already under way (which would
        // otherwise spin through its grace).
        const auto until = t0 + std::chrono::milliseconds(wait_ms);
        if (now < until) {
            std::unique_lock lock(mu_);
            if (stop_seen == Clock::time_point{})
                cv_.wait_until(lock, until, [&] { return stop_.load() || failed_.load(); });
            else
                cv_.wait_until(lock, until, [&] { return failed_.load(); });
        }
        return true;
    };
    for (;;) {
        if (failed_.load() || abandoned_.load(std::memory_order_relaxed)) return;
        Batch *b = nullptr;
        if (fifo.empty()) {
            b = in.pop(); // idle: parked on the queue, as any sink
            if (!b) return;
        } else if (fifo.size() < deferred_depth_ && (b = in.try_pop())) {
            room_wait = kMinWaitMs;
        } else {
            const bool room = fifo.size() < deferred_depth_ && !stopping();
            if (!settle(room ? room_wait : kFullWaitMs)) return;
            continue;
        }
        if (b->end_of_stream) {
            // Everything accepted becomes durable (or the run ends) first.
            while (!fifo.empty())
                if (!settle(kFullWaitMs)) return;
            if (flush(st)) out.push(b);
            return;
        }
        if (!process_whole(st, b, true)) return;
        fifo.push_back({b, st.accepted});
    }
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
        changed();
        m_owner_->value.store(1);
        return Status::OK();
    }
    cdcflow_ownership req{};
    req.struct_size = sizeof req;
    req.lease_ms = def_.settings.owner_lease_ms;
    if (group_partitions_) req.flags |= CDCFLOW_OWNERSHIP_PER_PARTITION;
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
            changed();
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
        changed();
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
    if (owner_.exchange(false)) changed();
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
        try {
            result = run_once(opts);
        } catch (...) {
            // What run_once's own code could not answer (memory ran out
            // making the batches, say): no stage thread runs any more (none
            // started, or all joined); the run ends failed, and the
            // ownership is released and the end announced as for any other.
            result = run_threw();
        }
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
            wound_down_.store(false); // a new incarnation starts
            error_ = Status::OK();
        }
        changed();
        if (result = create_instances(); !result) break;
    }
    running_.store(false);
    {
        std::lock_guard lock(mu_);
        standby_.store(false);
        finished_.store(true);
    }
    changed();
    cv_.notify_all();
    return result;
}

Status Runtime::run_threw() noexcept {
    Status st;
    try {
        throw;
    } catch (const std::bad_alloc &) {
        st = Status::OutOfMemory();
    } catch (const std::exception &e) {
        try {
            st = Status::Internal(std::string("internal error: ") + e.what());
        } catch (...) {
            st = Status::OutOfMemory();
        }
    } catch (...) {
        st = Status::Internal("internal error");
    }
    std::lock_guard lock(mu_);
    if (failed_.load()) st = std::move(error_); // the first failure's reason stands
    failed_.store(true);
    stop_.store(true);
    for (auto &q : queues_)
        q->close();
    if (free_) free_->close();
    queues_.clear();
    free_.reset();
    pool_.clear();
    return st;
}

Status Runtime::restore_state(const std::vector<cdcflow_position> &checkpoint, Batch *b, bool first) {
    if (first) m_replayed_->value.store(0);
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
    // A consumer group's source learns each partition's position as it is
    // assigned (change_partitions): nothing to read or replay now.
    if (sink.cb->checkpoint && !group_partitions_) {
        Outcome got = call_with_retry(sink, "checkpoint", [&](char *err, uint64_t len) {
            checkpoint.clear();
            auto collect = [](void *user, const cdcflow_position *p) {
                static_cast<std::vector<std::pair<std::string, int64_t>> *>(user)->emplace_back(
                    std::string(partition_of(*p)), p->offset);
            };
            return sink.cb->checkpoint(sink.instance, collect, &checkpoint, err, len);
        });
        if (got.stopped && !failed_.load()) {
            log_line(CDCFLOW_LOG_WARN, sink.def->id, got.message + ": nothing was started");
            return Status::OK();
        }
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
            queues_.push_back(std::make_unique<BatchQueue>(set.queue_capacity));
        // Enough batches to fill every queue and keep one in each stage's
        // hands, plus the end-of-stream marker, plus what a deferred-commit
        // sink holds accepted.
        size_t pool = (n - 1) * set.queue_capacity + n + 1 + deferred_depth_;
        free_ = std::make_unique<BatchQueue>(pool);
        for (size_t i = 0; i < pool; ++i) {
            // The plugins' handle type, with room for batch_max_events.
            pool_.push_back(std::make_unique<cdcflow_batch>(set.batch_size, set.batch_max_events));
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

    // One batch of the normal pool, filled and handed to each transform in
    // turn on this thread: the replay costs no memory of its own.
    if (Status st = restore_state(positions, pool_.front().get(), true); !st) return finish(st);
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
        if (got.stopped && !failed_.load()) {
            log_line(CDCFLOW_LOG_WARN, s.def->id, got.message + ": nothing was started");
            return finish(Status::OK());
        }
        if (got.code != CDCFLOW_OK)
            return finish(Status::from_abi(
                got.code, stage_label(*s.def) + ": cannot resume from the checkpoint: " + got.message));
    }
    if (!checkpoint.empty()) {
        // A checkpoint may hold many positions (Kafka partitions, a
        // migration's open gaps): the first few make the line, the rest a count.
        constexpr size_t kShown = 8;
        std::string cp;
        for (size_t i = 0; i < checkpoint.size() && i < kShown; ++i) {
            const auto &[part, off] = checkpoint[i];
            cp += (cp.empty() ? "" : ", ") + (part.empty() ? std::string("offset ") : part + "@") +
                  std::to_string(off);
        }
        if (checkpoint.size() > kShown) cp += " and " + std::to_string(checkpoint.size() - kShown) + " more";
        log_line(CDCFLOW_LOG_INFO, "host", "resuming after checkpoint " + cp);
    }

    // A stage's flags are per run (a stepped-down host runs again with new
    // instances): none has started or stopped yet.
    for (auto &sp : stages_) {
        sp->started.store(false);
        sp->stopped.store(false);
    }
    running_.store(true);
    changed();
    try {
        threads_.reserve(n);
        threads_.emplace_back([this, &opts] {
            name_thread(*stages_[0]->def);
            stage_thread(*stages_[0], [&] { source_loop(*stages_[0], opts.drain); });
        });
        for (size_t i = 1; i < n; ++i)
            threads_.emplace_back([this, i] {
                name_thread(*stages_[i]->def);
                stage_thread(*stages_[i], [&] { stage_loop(i); });
            });
    } catch (const std::exception &e) {
        // No thread for a stage (the process's thread or memory limit):
        // the stages already running stop as on any stage's failure, and
        // are joined below.
        const size_t k = threads_.size();
        Stage &st = *stages_[std::min(k, n - 1)];
        try {
            fail(st, std::string("cannot start the stage's thread: ") + e.what(), CDCFLOW_ERR_IO);
        } catch (...) {
            fail_out_of_memory(st);
        }
    }
    for (auto &t : threads_)
        t.join();
    threads_.clear();
    // Before running_ goes: state() never reads "starting" in between.
    wound_down_.store(true);
    running_.store(false);
    changed();
    Status result;
    {
        std::lock_guard lock(mu_);
        result = failed_.load() ? error_ : Status::OK();
    }
    return finish(result);
}

} // namespace cdcflow::host

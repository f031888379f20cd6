#include "runtime.hpp"

#include <chrono>
#include <string_view>

namespace cdcflow::host {

namespace {

constexpr size_t kErrLen = 1024;

using Clock = std::chrono::steady_clock;

int64_t micros_since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

std::string stage_label(const StageDef &d) { return "stage '" + d.id + "' (plugin '" + d.plugin + "')"; }

} // namespace

Runtime::Runtime(PipelineDef def, Metrics &metrics) : def_(std::move(def)), metrics_(metrics) {}

Result<std::unique_ptr<Runtime>> Runtime::create(PipelineDef def, PluginRegistry &registry, Metrics &metrics) {
    std::unique_ptr<Runtime> rt(new Runtime(std::move(def), metrics));
    PipelineDef &d = rt->def_;
    registry.add_front(d.plugin_path);

    // Load every plugin the file names; a missing or broken one is reported
    // at the position of its name.
    std::map<std::string, std::shared_ptr<LoadedPlugin>> loaded;
    for (const StageDef &sd : d.stages) {
        if (loaded.count(sd.plugin)) continue;
        auto r = registry.find(sd.plugin);
        if (!r) return Status::error(where(d.file, sd.plugin_mark) + ": stage '" + sd.id + "': " + r.status().message());
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
        s->ctx.stage_id = sd.id;
        s->ctx.metrics = &metrics;
        s->ctx.stop = &rt->stop_;
        s->ctx.rejected = metrics.create(sd.id + ".rejected", "events this stage rejected", false);
        s->ctx.duplicates = metrics.create(sd.id + ".duplicates", "events this stage marked duplicate", false);
        s->cfg.def = &sd;
        s->batches = metrics.create(sd.id + ".batches", "batches handled", false);
        s->events = metrics.create(sd.id + ".events", "events handled", false);
        s->errors = metrics.create(sd.id + ".errors", "failed calls (retried or fatal)", false);
        s->busy_us = metrics.create(sd.id + ".busy_us", "time spent in the plugin, microseconds", false);
        char err[kErrLen] = {0};
        cdcflow_status cs = s->cb->create(host_api(), &s->ctx, &s->cfg, &s->instance, err, sizeof err);
        if (cs != CDCFLOW_OK) {
            s->instance = nullptr;
            // Config::fail already starts the message with the key's
            // "file:line:col": lead with it instead of the stage's position.
            std::string msg = err[0] ? err : cdcflow_status_str(cs);
            std::string prefix = d.file + ":";
            if (msg.rfind(prefix, 0) == 0) {
                size_t colon = msg.find(": ", prefix.size());
                std::string loc = msg.substr(0, colon);
                return Status::error(loc + ": " + stage_label(sd) + ": " +
                                         (colon == std::string::npos ? "" : msg.substr(colon + 2)),
                                     cs);
            }
            return Status::error(where(d.file, sd.config_mark) + ": " + stage_label(sd) + ": " + msg, cs);
        }
        rt->stages_.push_back(std::move(s));
    }
    rt->m_events_ = metrics.create("pipeline.events", "events that reached the sink", false);
    rt->m_applied_ = metrics.create("pipeline.applied", "events applied", false);
    rt->m_rejected_ = metrics.create("pipeline.rejected", "events rejected (dead letters)", false);
    rt->m_duplicates_ = metrics.create("pipeline.duplicates", "duplicate events skipped", false);
    rt->m_batches_ = metrics.create("pipeline.batches", "batches committed", false);
    rt->m_checkpoint_ = metrics.create("pipeline.checkpoint_offset", "offset of the last committed event", true);
    return rt;
}

Runtime::~Runtime() {
    // Teardown order: stop queues, join, destroy instances, unload libraries.
    if (!threads_.empty()) {
        stop_.store(true);
        close_all();
        for (auto &t : threads_)
            if (t.joinable()) t.join();
    }
    for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) {
        Stage &s = **it;
        if (s.instance) s.cb->destroy(s.instance);
        s.instance = nullptr;
    }
    stages_.clear(); // releases the plugin libraries last
}

void Runtime::close_all() {
    for (auto &q : queues_) q->close();
    if (free_) free_->close();
}

void Runtime::fail(const Stage &st, const std::string &what, cdcflow_status code) {
    {
        std::lock_guard lock(mu_);
        if (!failed_.load()) error_ = Status::error(stage_label(*st.def) + ": " + what, code);
    }
    failed_.store(true);
    stop_.store(true);
    log_line(CDCFLOW_LOG_ERROR, st.def->id, what);
    close_all();
    std::lock_guard lock(mu_);
    cv_.notify_all();
}

void Runtime::request_stop() {
    stop_.store(true);
    std::lock_guard lock(mu_);
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
    return running_.load() ? "running" : "starting";
}

Totals Runtime::totals() const {
    Totals t;
    auto v = [](cdcflow_metric *m) { return m ? static_cast<uint64_t>(m->value.load()) : 0; };
    t.events = v(m_events_);
    t.applied = v(m_applied_);
    t.rejected = v(m_rejected_);
    t.duplicates = v(m_duplicates_);
    t.batches = v(m_batches_);
    return t;
}

bool Runtime::process_with_retry(Stage &st, Batch *b) {
    char err[kErrLen];
    uint32_t backoff_ms = 50;
    for (;;) {
        err[0] = '\0';
        auto t0 = Clock::now();
        cdcflow_status cs = st.cb->process(st.instance, static_cast<cdcflow_batch *>(b), err, sizeof err);
        st.busy_us->value.fetch_add(micros_since(t0), std::memory_order_relaxed);
        if (cs == CDCFLOW_OK) return true;
        st.errors->value.fetch_add(1, std::memory_order_relaxed);
        std::string msg = err[0] ? err : cdcflow_status_str(cs);
        if (cs != CDCFLOW_ERR_RETRY || failed_.load()) {
            fail(st, msg, cs);
            return false;
        }
        // Transient (e.g. database locked): back off and try the same batch
        // again. A stop does not abandon the batch: the shutdown timeout
        // bounds how long we keep trying.
        log_line(CDCFLOW_LOG_WARN, st.def->id, msg + "; retrying in " + std::to_string(backoff_ms) + " ms");
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return failed_.load(); });
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
}

void Runtime::notify_committed(Stage &src, Batch *b) {
    if (b->count == 0 || !src.cb->committed) return;
    // The last position per partition: positions within a partition rise.
    cdcflow_position latest[16];
    uint32_t n = 0;
    for (uint32_t i = b->count; i-- > 0;) {
        const cdcflow_position &p = b->events[i].position;
        std::string_view part(p.partition.data ? p.partition.data : "", static_cast<size_t>(p.partition.len));
        bool seen = false;
        for (uint32_t j = 0; j < n && !seen; ++j)
            seen = std::string_view(latest[j].partition.data ? latest[j].partition.data : "",
                                    static_cast<size_t>(latest[j].partition.len)) == part;
        if (seen) continue;
        latest[n++] = p;
        if (n == 16) {
            src.cb->committed(src.instance, latest, n);
            n = 0;
        }
    }
    if (n) src.cb->committed(src.instance, latest, n);
}

void Runtime::recycle(Stage &src, Batch *b) {
    notify_committed(src, b);
    b->reset();
}

void Runtime::count_committed(Batch *b) {
    uint64_t ok = 0, rej = 0, dup = 0;
    for (uint32_t i = 0; i < b->count; ++i) {
        switch (b->events[i].status) {
        case CDCFLOW_EVENT_OK: ++ok; break;
        case CDCFLOW_EVENT_REJECTED: ++rej; break;
        default: ++dup; break;
        }
    }
    m_events_->value.fetch_add(b->count, std::memory_order_relaxed);
    m_applied_->value.fetch_add(ok, std::memory_order_relaxed);
    m_rejected_->value.fetch_add(rej, std::memory_order_relaxed);
    m_duplicates_->value.fetch_add(dup, std::memory_order_relaxed);
    m_batches_->value.fetch_add(1, std::memory_order_relaxed);
    if (b->count) m_checkpoint_->value.store(b->events[b->count - 1].position.offset, std::memory_order_relaxed);
}

void Runtime::source_loop(Stage &st, bool drain) {
    char err[kErrLen] = {0};
    if (st.cb->start && st.cb->start(st.instance, err, sizeof err) != CDCFLOW_OK) {
        fail(st, std::string("start failed: ") + err, CDCFLOW_ERR_IO);
        return;
    }
    SpscQueue<Batch> &out = *queues_.front();
    Batch *b = nullptr;
    uint32_t backoff_ms = 50;
    while (!stop_.load(std::memory_order_relaxed)) {
        if (!b) {
            b = free_->pop(); // blocks while every batch is downstream
            if (!b) break;
            recycle(st, b);
        }
        int32_t exhausted = 0;
        err[0] = '\0';
        auto t0 = Clock::now();
        cdcflow_status cs =
            st.cb->poll(st.instance, static_cast<cdcflow_batch *>(b), drain ? 0 : def_.settings.poll_wait_ms, &exhausted, err, sizeof err);
        st.busy_us->value.fetch_add(micros_since(t0), std::memory_order_relaxed);
        if (cs == CDCFLOW_ERR_RETRY) {
            st.errors->value.fetch_add(1, std::memory_order_relaxed);
            log_line(CDCFLOW_LOG_WARN, st.def->id, std::string(err) + "; retrying in " + std::to_string(backoff_ms) + " ms");
            b->reset();
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return stop_.load(); });
            backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
            continue;
        }
        if (cs != CDCFLOW_OK) {
            st.errors->value.fetch_add(1, std::memory_order_relaxed);
            fail(st, err[0] ? err : cdcflow_status_str(cs), cs);
            break;
        }
        backoff_ms = 50;
        if (b->count > 0) {
            st.batches->value.fetch_add(1, std::memory_order_relaxed);
            st.events->value.fetch_add(b->count, std::memory_order_relaxed);
            if (!out.push(b)) break; // closed: a stage failed
            b = nullptr;
        } else if (drain && exhausted) {
            break;
        }
    }
    // End of stream: everything read so far drains and commits, then the
    // marker comes back through the pool.
    if (!failed_.load()) {
        if (!b) b = free_->pop();
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
    if (st.cb->stop) st.cb->stop(st.instance);
}

void Runtime::stage_loop(size_t index) {
    Stage &st = *stages_[index];
    bool is_sink = index + 1 == stages_.size();
    SpscQueue<Batch> &in = *queues_[index - 1];
    SpscQueue<Batch> &out = is_sink ? *free_ : *queues_[index];
    char err[kErrLen] = {0};
    if (st.cb->start && st.cb->start(st.instance, err, sizeof err) != CDCFLOW_OK) {
        fail(st, std::string("start failed: ") + err, CDCFLOW_ERR_IO);
        return;
    }
    while (Batch *b = in.pop()) {
        if (b->end_of_stream) {
            err[0] = '\0';
            if (st.cb->flush && st.cb->flush(st.instance, err, sizeof err) != CDCFLOW_OK) {
                fail(st, std::string("flush failed: ") + err, CDCFLOW_ERR_IO);
                break;
            }
            out.push(b);
            break;
        }
        if (!process_with_retry(st, b)) break;
        st.batches->value.fetch_add(1, std::memory_order_relaxed);
        st.events->value.fetch_add(b->count, std::memory_order_relaxed);
        if (is_sink) count_committed(b);
        if (!out.push(b)) break;
    }
    if (st.cb->stop) st.cb->stop(st.instance);
}

Status Runtime::run(const RunOptions &opts) {
    // Resume: ask the sink where it is, and start the source (and any
    // stateful transform) just after it.
    Stage &sink = *stages_.back();
    std::vector<std::pair<std::string, int64_t>> checkpoint;
    if (sink.cb->checkpoint) {
        char err[kErrLen] = {0};
        auto collect = [](void *user, const cdcflow_position *p) {
            auto *v = static_cast<std::vector<std::pair<std::string, int64_t>> *>(user);
            v->emplace_back(std::string(p->partition.data ? p->partition.data : "", static_cast<size_t>(p->partition.len)),
                            p->offset);
        };
        cdcflow_status cs = sink.cb->checkpoint(sink.instance, collect, &checkpoint, err, sizeof err);
        if (cs != CDCFLOW_OK)
            return Status::error(stage_label(*sink.def) + ": cannot read checkpoint: " + (err[0] ? err : cdcflow_status_str(cs)), cs);
    }
    std::vector<cdcflow_position> positions;
    for (auto &[part, off] : checkpoint) positions.push_back({{part.data(), part.size()}, off});
    for (size_t i = 0; i + 1 < stages_.size(); ++i) {
        Stage &s = *stages_[i];
        if (!s.cb->seek) continue;
        char err[kErrLen] = {0};
        cdcflow_status cs = s.cb->seek(s.instance, positions.data(), static_cast<uint32_t>(positions.size()), err, sizeof err);
        if (cs != CDCFLOW_OK)
            return Status::error(stage_label(*s.def) + ": cannot resume from the checkpoint: " + (err[0] ? err : cdcflow_status_str(cs)), cs);
    }
    if (!checkpoint.empty()) {
        std::string cp;
        for (auto &[part, off] : checkpoint) cp += (cp.empty() ? "" : ", ") + (part.empty() ? std::string("offset ") : part + "@") + std::to_string(off);
        log_line(CDCFLOW_LOG_INFO, "host", "resuming after checkpoint " + cp);
    }

    const Settings &set = def_.settings;
    size_t n = stages_.size();
    for (size_t i = 0; i + 1 < n; ++i) queues_.push_back(std::make_unique<SpscQueue<Batch>>(set.queue_capacity));
    // Enough batches to fill every queue and keep one in each stage's hands,
    // plus the end-of-stream marker.
    size_t pool = (n - 1) * set.queue_capacity + n + 1;
    free_ = std::make_unique<SpscQueue<Batch>>(pool);
    for (size_t i = 0; i < pool; ++i) {
        pool_.push_back(std::make_unique<cdcflow_batch>(set.batch_size)); // the plugins' handle type
        free_->try_push(pool_.back().get());
    }

    running_.store(true);
    threads_.emplace_back([this, &opts] { source_loop(*stages_[0], opts.drain); });
    for (size_t i = 1; i < n; ++i) threads_.emplace_back([this, i] { stage_loop(i); });
    for (auto &t : threads_) t.join();
    threads_.clear();
    running_.store(false);
    {
        std::lock_guard lock(mu_);
        finished_.store(true);
    }
    cv_.notify_all();
    std::lock_guard lock(mu_);
    return failed_.load() ? error_ : Status::ok();
}

} // namespace cdcflow::host

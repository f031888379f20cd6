// The embedded host (cdcflow/host.hpp): a Runtime of the CLI's own making
// (pipeline_open.hpp), run on a thread of its own, with a watcher thread
// that turns the runtime's state into callbacks.
//
// Threads: the runner calls Runtime::run, which blocks until the run ends
// (the stages run on the runtime's threads); the watcher samples the
// runtime's health every 50 ms while the run lasts and calls the
// subscribers. Sampling, not a notification: the runtime has no change
// callback, and a sample is a few atomic loads, so a 50 ms tick costs
// nothing measurable; the watcher ends with the run, so a host that is not
// running wakes nobody.
#include <cdcflow/host.hpp>

#include "health_json.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "migrate/target.hpp"
#include "pipeline_open.hpp"
#include "plugin_loader.hpp"
#include "process_metrics.hpp"
#include "run_outcome.hpp"
#include "runtime.hpp"
#include "state_map.hpp"

#include <condition_variable>
#include <cstdlib>
#include <dlfcn.h>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

namespace cdcflow::embed {

using namespace cdcflow::host;
using Code = Status::Code;

namespace {

constexpr std::chrono::milliseconds kWatchTick{50};

// Where the shipped plugins are, relative to this library wherever it was
// installed or moved (DESTDIR included): dladdr on one of its own exported
// symbols names the file it was loaded from. That name is the one the
// loader was given, relative to the working directory of that moment when
// the library was loaded by a relative path: so it is resolved once, at
// load time (kShipped below), before the application can chdir. `why` says
// what went wrong when nothing could be resolved.
std::vector<std::string> shipped_plugin_dirs(std::string *why) {
    try {
        Dl_info info{};
        if (dladdr(reinterpret_cast<void *>(&cdcflow_host_version), &info) == 0 || !info.dli_fname) {
            *why = "dladdr does not name the library's file";
            return {};
        }
        std::error_code ec;
        std::filesystem::path lib = std::filesystem::canonical(info.dli_fname, ec);
        if (ec) {
            *why =
                std::string("the library's path '") + info.dli_fname + "' does not resolve: " + ec.message();
            return {};
        }
        std::filesystem::path dir = lib.parent_path();
        std::vector<std::string> dirs{dir.string() +
                                      "/" CDCFLOW_HOST_REL_PLUGINDIR}; // <libdir>/cdcflow/plugins
        // The build tree's plugins only when this is the library in the build
        // tree (build/core/embed): an installed library must not search
        // <prefix>/plugins, which is nobody's.
        if (std::filesystem::equivalent(dir, CDCFLOW_HOST_BUILD_DIR, ec))
            dirs.push_back(dir.string() + "/../../plugins");
        return dirs;
    } catch (const std::exception &e) {
        *why = e.what();
        return {};
    }
}

struct Shipped {
    std::string why; // empty when dirs were resolved
    std::vector<std::string> dirs = shipped_plugin_dirs(&why);
};
// Initialized when the library is loaded (see shipped_plugin_dirs).
const Shipped kShipped;

// One of CDCFLOW_LOG_LEVEL / CDCFLOW_LOG_FORMAT: when set, it wins over the
// file's `log:`, as it does for the CLI; a value that is not one of `names`
// is misuse (the CLI's exit 2).
template <typename T>
Status env_log_setting(const char *var, const char *names, bool (*parse)(const std::string &, T *),
                       void (*apply)(T), bool *chosen) {
    const char *v = std::getenv(var);
    if (!v || !*v) return Status::OK();
    T value;
    if (!parse(v, &value))
        return Status::InvalidArgument(std::string(var) + ": '" + v + "' is not one of " + names);
    apply(value);
    *chosen = true;
    return Status::OK();
}

Status env_log_choice(LogChoice *chosen) {
    if (Status st = env_log_setting<cdcflow_log_level>("CDCFLOW_LOG_LEVEL", "debug, info, warn, error",
                                                       parse_log_level, set_log_level, &chosen->level);
        !st)
        return st;
    return env_log_setting<LogFormat>("CDCFLOW_LOG_FORMAT", "text, json, auto", parse_log_format,
                                      set_log_format, &chosen->format);
}

// A failure that is not the caller's (a plugin's, a database's) must not read
// as misuse, a bad file or a timeout: exit_code() gives it 1, as the CLI.
Status as_failure(Status st) {
    if (st.code() == Code::kInvalidArgument || st.code() == Code::kConfig || st.code() == Code::kUnavailable)
        return Status::Internal(st.message());
    return st;
}

// Runtime::create's failure: the file's fault (3) as the CLI's
// create_failure_code says, otherwise a failure (1).
Status as_create_failure(Status st) {
    if (create_failure_code(st) == CDCFLOW_EXIT_INVALID) return Status::Config(st.message());
    return as_failure(std::move(st));
}

Status caught(const char *what) {
    try {
        throw;
    } catch (const std::exception &e) {
        return Status::Internal(std::string(what) + ": " + e.what());
    } catch (...) {
        return Status::Internal(std::string(what) + ": unknown exception");
    }
}

std::string ms_text(std::chrono::milliseconds t) {
    return std::to_string(t.count()) + " ms";
}

} // namespace

// Hidden: the implementation is not part of the library's interface.
struct __attribute__((visibility("hidden"))) Host::Impl {
    // Declaration order is teardown order in reverse: the runtime goes
    // first, then the metrics it registered into, then the plugins' files.
    PluginRegistry registry;
    Metrics metrics;
    std::unique_ptr<Runtime> rt;

    enum class Phase { opened, running, finished };
    mutable std::mutex mu; // everything below up to the subscribers
    std::condition_variable cv;
    Phase phase = Phase::opened;
    bool ran = false;      // a run was started (else a stop before start finished it)
    bool draining = false; // the run was started by drain()
    bool stop_asked = false;
    bool watcher_quit = false;
    bool final_delivered = false; // the watcher told the subscribers the run's end
    Status result;                // the run's, once finished
    // migrate(): the migration's target and what was left before the run
    // (set before the run begins; read only after).
    std::optional<migrate::Target> mig_target;
    std::optional<migrate::BeforeRun> mig_before;
    std::chrono::steady_clock::time_point started{};
    std::thread runner;
    std::thread watcher;

    std::mutex subs_mu; // subs, next_id, closed
    std::map<int, std::function<void(const StateChange &)>> subs;
    int next_id = 1;
    // The Host was destroyed: nobody is called any more, not even a
    // delivery already under way (a callback that destroyed the Host must
    // not see the others, nor itself, called after the destructor returned).
    bool closed = false;
    // Once the run was seen past "starting" (see report()).
    mutable bool went_past_starting = false;
    // Held while callbacks run, so that unsubscribe can wait one out.
    std::mutex deliver_mu;

    explicit Impl(const HostOptions &opts) : registry(kShipped.dirs) { registry.add_front(opts.plugin_path); }

    // Under mu, phase opened: starts the runner and the watcher.
    // A thread that cannot be created throws (std::system_error): nothing
    // started when it is the runner; without a watcher the run goes on
    // without callbacks (a WARN line says so).
    void begin(std::unique_lock<std::mutex> &, bool drain, const std::shared_ptr<Impl> &self) {
        started = std::chrono::steady_clock::now();
        log_start(rt->def());
        runner = std::thread([this, drain] { run_body(drain); });
        draining = drain;
        ran = true;
        phase = Phase::running;
        try {
            // The watcher holds the Impl: a callback may destroy the Host
            // (the destructor then leaves the watcher to finish on its own).
            watcher = std::thread([self] { self->watch(); });
        } catch (const std::exception &e) {
            final_delivered = true; // nobody will be told: stop and drain must not wait for it
            log_line(CDCFLOW_LOG_WARN, "host", std::string("no state callbacks for this run: ") + e.what());
        }
    }

    void run_body(bool drain) {
        RunOptions ro;
        ro.drain = drain;
        Status st;
        try {
            st = rt->run(ro);
        } catch (...) {
            st = caught("run");
        }
        bool asked;
        {
            std::lock_guard lock(mu);
            asked = stop_asked;
        }
        log_stop(*rt, st, asked, started);
        {
            std::lock_guard lock(mu);
            result = st;
            phase = Phase::finished;
        }
        cv.notify_all();
    }

    // Waits (under lk) until the run finished and the subscribers were told
    // its final state, at most `timeout` (zero: no bound). On the watcher's
    // own thread (a callback that stops the host) the final state is
    // delivered after this returns: waiting for it there could never end.
    bool wait_finished(std::unique_lock<std::mutex> &lk, std::chrono::milliseconds timeout) {
        const bool on_watcher = std::this_thread::get_id() == watcher.get_id();
        auto done = [this, on_watcher] {
            return phase == Phase::finished && (final_delivered || on_watcher || !ran);
        };
        if (timeout.count() == 0) {
            cv.wait(lk, done);
            return true;
        }
        return cv.wait_for(lk, timeout, done);
    }

    // A finished run's answer. `for_drain`: a drain that a stop (from
    // another thread) cut short did not do what was asked, whatever the run
    // says: the caller must not take it for "everything was read".
    Status outcome(bool for_drain = false) const {
        if (!result) return as_failure(result);
        if (for_drain && std::string_view(run_end(result, stop_asked)) == "stopped")
            return Status::Transient("drain: stopped before the source was drained (stop was called during "
                                     "the drain; what was read is committed)");
        return Status::OK();
    }

    // The report the API shows: the runtime's, with the host's own phase
    // before and after a run (the runtime says "starting" until it runs).
    HealthReport report() const {
        HealthReport h = rt->health();
        std::lock_guard lock(mu);
        if (phase == Phase::opened) h.state = "idle";
        if (phase == Phase::finished && !ran) h.state = "stopped";
        h.state = host_state_after(h.state, &went_past_starting, draining || stop_asked);
        return h;
    }

    static StateChange change_of(const HealthReport &h) {
        return {h.state, h.role, h.healthy, h.ready, host::health_json(h)};
    }

    // What a subscriber is told about: a change in any of these.
    static std::string signature(const HealthReport &h) {
        std::string s = h.state + '|' + h.role + '|' + (h.healthy ? '1' : '0') + (h.ready ? '1' : '0');
        for (const StageReport &st : h.stages)
            s += '|' + st.state + ':' + breaker_name(st.breaker);
        return s;
    }

    void watch() {
        std::string last;
        // The first sample at once: a run shorter than a tick is still seen
        // starting, not only stopped.
        bool first = true;
        for (;;) {
            bool final;
            {
                std::unique_lock lk(mu);
                if (!first)
                    cv.wait_for(lk, kWatchTick, [this] { return watcher_quit || phase == Phase::finished; });
                first = false;
                final = watcher_quit || phase == Phase::finished;
            }
            // Closed from a callback: the runtime is gone (shut_down), and
            // nobody may be called any more.
            if (is_closed()) return;
            HealthReport h = report();
            if (std::string sig = signature(h); sig != last) {
                last = std::move(sig);
                deliver(change_of(h));
            }
            if (is_closed()) return;
            if (final) {
                {
                    std::lock_guard lock(mu);
                    final_delivered = true;
                }
                cv.notify_all();
                return;
            }
        }
    }

    bool is_closed() {
        std::lock_guard lock(subs_mu);
        return closed;
    }

    void deliver(const StateChange &c) {
        std::lock_guard d(deliver_mu);
        std::vector<std::pair<int, std::function<void(const StateChange &)>>> fns;
        {
            std::lock_guard lock(subs_mu);
            for (auto &[id, fn] : subs)
                fns.emplace_back(id, fn);
        }
        for (auto &[id, fn] : fns) {
            {
                // An earlier callback of this delivery may have unsubscribed
                // this one or destroyed the Host.
                std::lock_guard lock(subs_mu);
                if (closed || !subs.count(id)) continue;
            }
            try {
                fn(c);
            } catch (...) {
                // An application's exception must not end the watcher (or the
                // process): say so and go on.
                log_line(CDCFLOW_LOG_WARN, "host", caught("state callback").message());
            }
        }
    }

    // Ends the run (if any) and the threads; the destructor's work.
    void shut_down() {
        {
            std::lock_guard lock(subs_mu);
            closed = true;
            subs.clear();
        }
        {
            std::lock_guard lock(mu);
            if (phase == Phase::running) {
                stop_asked = true;
                rt->request_stop();
            }
        }
        if (runner.joinable()) runner.join();
        {
            std::lock_guard lock(mu);
            watcher_quit = true;
        }
        cv.notify_all();
        if (!watcher.joinable()) return;
        if (std::this_thread::get_id() != watcher.get_id()) {
            watcher.join();
            return;
        }
        // Destroyed from a callback: the watcher holds the Impl and ends
        // after it, unjoined. The runtime (its stages, their databases and
        // plugins) is torn down here, before the destructor returns, so that
        // what is left to that thread is freeing memory: nothing of the
        // pipeline's outlives the Host, even if the process exits at once.
        // The runner is joined, and the watcher (this thread) no longer reads
        // the runtime once closed.
        watcher.detach();
        rt.reset();
    }
};

Host::Host(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

// Host::open's body, with access to the Impl.
struct HostFactory {
    static Result<std::unique_ptr<Host>> open(const PipelineSource &src, const HostOptions &opts) {
        try {
            auto impl = std::make_shared<Host::Impl>(opts);
            add_process_metrics(impl->metrics);
            LogChoice chosen;
            if (Status st = env_log_choice(&chosen); !st) return st;
            auto rt = open_runtime(src, impl->registry, impl->metrics, chosen);
            if (!rt) {
                Status st = rt.status();
                if (!kShipped.why.empty() && st.message().find("not found (searched") != std::string::npos)
                    st = Status(st.code(),
                                st.message() + "; the shipped plugins were not searched: " + kShipped.why);
                return as_create_failure(std::move(st));
            }
            impl->rt = std::move(rt.value());
            return std::unique_ptr<Host>(new Host(std::move(impl)));
        } catch (...) {
            return caught("open");
        }
    }
};

Host::~Host() {
    try {
        impl_->shut_down();
    } catch (...) {
        // Joining cannot fail here (each thread is joined once, never by
        // itself); nothing may leave a destructor anyway.
    }
}

Result<std::unique_ptr<Host>> Host::open(const std::string &pipeline_path, const HostOptions &opts) {
    // Misuse, as a NULL path is in the C API (not YAML text, not a file named "").
    if (pipeline_path.empty()) return Status::InvalidArgument("open: the pipeline path is empty");
    return HostFactory::open(PipelineSource::file(pipeline_path), opts);
}

Result<std::unique_ptr<Host>> Host::open_yaml(const std::string &yaml, const std::string &name,
                                              const HostOptions &opts) {
    return HostFactory::open(PipelineSource::yaml(yaml, name), opts);
}

Status Host::start() {
    try {
        std::unique_lock lk(impl_->mu);
        switch (impl_->phase) {
        case Impl::Phase::opened:
            impl_->begin(lk, false, impl_);
            return Status::OK();
        case Impl::Phase::running:
            return Status::InvalidArgument("start: the host is already running");
        case Impl::Phase::finished:
            break;
        }
        return Status::InvalidArgument("start: the host was stopped; a host runs once (open a new one)");
    } catch (...) {
        return caught("start");
    }
}

Status Host::drain(std::chrono::milliseconds timeout) {
    try {
        std::unique_lock lk(impl_->mu);
        if (impl_->phase == Impl::Phase::finished && !(impl_->draining && !impl_->stop_asked))
            return Status::InvalidArgument("drain: the host was stopped; a host runs once (open a new one)");
        if (impl_->phase == Impl::Phase::running && !impl_->draining)
            return Status::InvalidArgument(
                "drain: the host was started without drain; stop it and drain a new host");
        if (impl_->phase == Impl::Phase::opened) impl_->begin(lk, true, impl_);
        if (!impl_->wait_finished(lk, timeout))
            return Status(Code::kUnavailable, "drain: not drained within " + ms_text(timeout) +
                                                  "; the drain goes on (drain again to wait for it)");
        return impl_->outcome(true);
    } catch (...) {
        return caught("drain");
    }
}

Status Host::stop(std::chrono::milliseconds timeout) {
    try {
        std::unique_lock lk(impl_->mu);
        if (impl_->phase == Impl::Phase::opened) {
            impl_->phase = Impl::Phase::finished;
            impl_->cv.notify_all();
            return Status::OK();
        }
        if (impl_->phase == Impl::Phase::running) {
            impl_->stop_asked = true;
            impl_->rt->request_stop();
            if (!impl_->wait_finished(lk, timeout))
                return Status(Code::kUnavailable, "stop: the pipeline did not stop within " +
                                                      ms_text(timeout) + "; it goes on stopping");
        }
        return impl_->outcome();
    } catch (...) {
        return caught("stop");
    }
}

namespace {

// An exception of the migration's reads (one line) as a Status: kConfig
// stays the file's or the schema's fault (3), the rest is a failure (1).
Status migration_error(const char *what) {
    try {
        throw;
    } catch (const Error &e) {
        Status st = Status::from_abi(e.status(), std::string(what) + ": " + e.what());
        return st.code() == Code::kConfig ? st : as_failure(st);
    } catch (...) {
        return caught(what);
    }
}

void warn_locked(const std::string &msg) {
    log_line(CDCFLOW_LOG_WARN, "migrate", msg);
}

} // namespace

Result<MigrationSummary> Host::migrate(std::chrono::milliseconds timeout, const ProgressFn &progress) {
    try {
        Impl &m = *impl_;
        std::unique_lock lk(m.mu);
        if (m.phase == Impl::Phase::opened) {
            // What is left, read before the run (no lock held: a locked
            // database is waited for, and state() must answer meanwhile).
            lk.unlock();
            auto t = migrate::target_of(m.rt->def());
            if (!t) return t.status();
            migrate::BeforeRun before;
            try {
                before = migrate::read_before(t.value(), warn_locked);
            } catch (...) {
                return migration_error("migrate");
            }
            // Going on would migrate the rest of the table under other event ids.
            if (!before.mismatch.empty())
                return Status::Config("migrate: " + sqlite::database_label(t.value().target_db) + ": " +
                                      before.mismatch);
            lk.lock();
            if (m.phase != Impl::Phase::opened)
                return Status::InvalidArgument("migrate: the host was started meanwhile (by another thread)");
            m.mig_target = std::move(t.value());
            m.mig_before = std::move(before);
            m.begin(lk, true, impl_);
        } else if (!m.mig_before) {
            return Status::InvalidArgument(
                "migrate: the host already ran (start or drain); open a new one to migrate");
        }
        const uint64_t total = m.mig_before->total;
        const auto deadline = timeout.count() == 0 ? std::chrono::steady_clock::time_point::max()
                                                   : std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = deadline - std::chrono::steady_clock::now();
            auto slice = std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(200), left);
            const bool done =
                slice.count() > 0 &&
                m.wait_finished(lk, std::chrono::duration_cast<std::chrono::milliseconds>(slice) +
                                        std::chrono::milliseconds(1));
            if (progress) {
                MigrationProgress p{m.rt->totals().events, total};
                lk.unlock();
                try {
                    progress(p);
                } catch (...) {
                    log_line(CDCFLOW_LOG_WARN, "host", caught("progress callback").message());
                }
                lk.lock();
            }
            if (done) break;
            if (std::chrono::steady_clock::now() >= deadline)
                return Status(Code::kUnavailable,
                              "migrate: not done within " + ms_text(timeout) +
                                  "; the migration goes on (migrate again to wait for it)");
        }
        if (Status st = m.outcome(true); !st) return st;
        const Totals own = m.rt->totals();
        lk.unlock();

        migrate::AfterRun end;
        try {
            end = migrate::read_after(*m.mig_target, warn_locked);
        } catch (...) {
            return migration_error("migrate");
        }
        if (end.missing.count > 0)
            return Status::Internal("migrate: " + migrate::missing_message(end.missing));
        const migrate::RunShare share =
            migrate::run_share(m.mig_before->counts, end.counts, own.applied, own.rejected);
        MigrationSummary s;
        s.migration = m.mig_target->spec.migration;
        s.migrated_this_run = share.migrated;
        s.migrated = end.counts.migrated;
        s.unmappable_this_run = share.unmappable;
        s.unmappable = end.counts.unmappable;
        s.late = end.counts.late;
        s.open_gaps = end.progress.gaps.size();
        s.last_legacy_id = end.progress.last_legacy_id;
        return s;
    } catch (...) {
        return caught("migrate");
    }
}

Result<VerifyResult> Host::verify(bool allow_other_events, size_t limit, const ProgressFn &progress) const {
    try {
        auto t = migrate::target_of(impl_->rt->def());
        if (!t) return t.status();
        migrate::VerifyOptions vo;
        vo.allow_other_events = allow_other_events;
        vo.limit = limit;
        migrate::VerifyReport report;
        try {
            if (progress) {
                sqlite::Db legacy = migrate::open_db(t.value().legacy_db, false);
                progress({0, migrate::count_legacy_after(legacy, t.value().spec.legacy, std::nullopt)});
            }
            report = migrate::verify_target(t.value(), vo);
        } catch (...) {
            return migration_error("verify");
        }
        if (progress) progress({report.legacy_rows, report.legacy_rows});
        return VerifyResult{report.ok(), report.text(), report.json(), report.failure_summary()};
    } catch (...) {
        return caught("verify");
    }
}

std::string Host::state() const {
    try {
        return impl_->report().state;
    } catch (...) {
        return "failed"; // only a failed allocation gets here
    }
}

StateChange Host::snapshot() const {
    try {
        return Impl::change_of(impl_->report());
    } catch (...) {
        return {"failed", "", false, false, "{}"};
    }
}

std::string Host::health_json() const {
    try {
        return host::health_json(impl_->report());
    } catch (...) {
        return "{}";
    }
}

std::string Host::metrics_text() const {
    try {
        return impl_->metrics.prometheus();
    } catch (...) {
        return "";
    }
}

std::optional<double> Host::metric(std::string_view family, const MetricLabels &labels) const {
    try {
        return impl_->metrics.value(family, labels);
    } catch (...) {
        return std::nullopt;
    }
}

double Host::metric_sum(std::string_view family, const MetricLabels &subset) const {
    try {
        return impl_->metrics.sum(family, subset);
    } catch (...) {
        return 0;
    }
}

int Host::subscribe(std::function<void(const StateChange &)> fn) {
    try {
        std::lock_guard lock(impl_->subs_mu);
        int id = impl_->next_id++;
        impl_->subs.emplace(id, std::move(fn));
        return id;
    } catch (...) {
        return 0; // never a subscription's id
    }
}

void Host::unsubscribe(int id) {
    {
        std::lock_guard lock(impl_->subs_mu);
        impl_->subs.erase(id);
    }
    bool on_watcher;
    {
        std::lock_guard lock(impl_->mu);
        on_watcher = std::this_thread::get_id() == impl_->watcher.get_id();
    }
    // Wait out a delivery in progress, unless this is that delivery.
    if (!on_watcher) {
        std::lock_guard d(impl_->deliver_mu);
    }
}

int Host::exit_code(const Status &st) {
    switch (st.code()) {
    case Code::kOk:
        return CDCFLOW_EXIT_OK;
    case Code::kInvalidArgument:
        return CDCFLOW_EXIT_USAGE;
    case Code::kConfig:
        return CDCFLOW_EXIT_INVALID;
    case Code::kUnavailable:
        return CDCFLOW_EXIT_TIMEOUT;
    case Code::kOwned:
    case Code::kFenced:
        return CDCFLOW_EXIT_OWNED;
    default:
        return CDCFLOW_EXIT_FAILURE;
    }
}

} // namespace cdcflow::embed

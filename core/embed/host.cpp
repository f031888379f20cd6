// The embedded host (cdcflow/host.hpp): a Runtime of the CLI's own making
// (pipeline_open.hpp), run on a thread of its own, with a watcher thread
// that turns the runtime's state into callbacks.
//
// Threads: the runner calls Runtime::run, which blocks until the run ends
// (the stages run on the runtime's threads); the watcher parks on the
// runtime's change notification (Runtime::wait_for_change) while the run
// lasts, takes a snapshot on every change and calls the subscribers: a
// host whose state does not change wakes no thread, and a change is seen
// as soon as the watcher wakes (no sampling period to fall between).
// close() (and the destructor) is bounded: a runner still inside a plugin
// call after the timeout is detached and keeps the Impl (the runtime, the
// plugins' libraries) alive for as long as it runs.
#include <cdcflow/host.hpp>

#include "host_internal.hpp"

#include "escape.hpp"
#include "health_json.hpp"
#include "http/server.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "migrate/target.hpp"
#include "pipeline_open.hpp"
#include "plugin_loader.hpp"
#include "process_metrics.hpp"
#include "run_outcome.hpp"
#include "runtime.hpp"

#include <condition_variable>
#include <cstdio>
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

// How long the watcher parks at most between two changes: only a bound for
// the wait call (a change, the run's end or close wake it at once).
constexpr std::chrono::hours kWatchPark{1};

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
    } catch (const std::bad_alloc &) {
        return Status::OutOfMemory();
    } catch (const std::exception &e) {
        try {
            return Status::Internal(std::string(what) + ": " + e.what());
        } catch (...) {
            return Status::OutOfMemory();
        }
    } catch (...) {
        try {
            return Status::Internal(std::string(what) + ": unknown exception");
        } catch (...) {
            return Status::OutOfMemory();
        }
    }
}

// close()'s default bound beyond settings.shutdown_timeout_ms (see close_impl).
constexpr std::chrono::milliseconds kCloseMargin{1000};

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
    // serve()'s endpoints (read rt and metrics: destroyed before them).
    // Started and stopped under server_mu (http::Server's calls are not
    // concurrent-safe among themselves); stopped when the run ends.
    std::mutex server_mu;
    std::unique_ptr<http::Server> server;

    enum class Phase { opened, running, finished };
    mutable std::mutex mu; // everything below up to the subscribers
    std::condition_variable cv;
    Phase phase = Phase::opened;
    bool ran = false;      // a run was started (else a stop before start finished it)
    bool draining = false; // the run was started by drain()
    bool stop_asked = false;
    bool watcher_quit = false;
    bool final_delivered = false;       // the watcher told the subscribers the run's end
    bool closing = false;               // close() began: nobody is told the run's end any more
    Status result;                      // the run's, once finished
    std::optional<RunEnd> end;          // how it ended, once finished
    std::function<void()> run_end_fn;   // on_run_end's
    std::optional<Status> close_result; // close() happened: its answer
    bool close_begun = false;           // a close() is under way (a second one waits for its answer)
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
    // Held while callbacks run, so that unsubscribe can wait one out.
    std::mutex deliver_mu;

    explicit Impl(const HostOptions &opts) : registry(kShipped.dirs) { registry.add_front(opts.plugin_path); }
    // The cdcflow executable's: the registry's default folders.
    Impl() = default;

    // Under mu, phase opened: starts the runner and the watcher.
    // A thread that cannot be created throws (std::system_error): nothing
    // started when it is the runner; without a watcher the run goes on
    // without callbacks (a WARN line says so).
    void begin(std::unique_lock<std::mutex> &, bool drain, const std::shared_ptr<Impl> &self) {
        started = std::chrono::steady_clock::now();
        log_start(rt->def());
        // The runner holds the Impl too: close() may leave it behind, stuck
        // in a plugin call, and what it runs must outlive the Host.
        runner = std::thread([self, drain] { self->run_body(drain); });
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
        end_run(st);
    }

    // Never throws: whoever waits for the run's end must be woken, however
    // short of memory the process is.
    void end_run(Status &st) noexcept {
        bool asked = false;
        try {
            // The endpoints answered through the drain; their stop returns
            // at once, so no client holds the run's end.
            stop_serving();
            std::function<void()> fn;
            {
                std::lock_guard lock(mu);
                fn = run_end_fn;
                asked = stop_asked;
            }
            if (fn) {
                try {
                    fn();
                } catch (...) {
                    log_line(CDCFLOW_LOG_WARN, "host", caught("run end callback").message());
                }
            }
            log_stop(*rt, st, asked, started);
        } catch (...) {
            // Memory ran out before the stop line could be built: the
            // reason in one line all the same.
            log_out_of_memory();
        }
        // Neither allocates: the run's own outcome stands, whatever failed
        // above (the exit code of a fenced run stays 6).
        const int code = run_exit_code(st);
        const char *how = host::run_end(st, asked);
        {
            std::lock_guard lock(mu);
            try {
                end = RunEnd{how, code, asked, st};
            } catch (...) {
                end =
                    RunEnd{how, code, asked, Status::OutOfMemory()}; // "failed"-length strings: no allocation
            }
            result = std::move(st);
            phase = Phase::finished;
        }
        cv.notify_all();
        rt->notify_change(); // the watcher delivers the final state
    }

    void stop_serving() {
        std::lock_guard lock(server_mu);
        if (server) server->stop();
    }

    // Waits (under lk) until the run finished and the subscribers were told
    // its final state, at most `timeout` (zero: no bound). On the watcher's
    // own thread (a callback that stops the host) the final state is
    // delivered after this returns: waiting for it there could never end.
    bool wait_finished(std::unique_lock<std::mutex> &lk, std::chrono::milliseconds timeout) {
        const bool on_watcher = std::this_thread::get_id() == watcher.get_id();
        auto done = [this, on_watcher] {
            return phase == Phase::finished && (final_delivered || on_watcher || !ran || closing);
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
        if (for_drain && std::string_view(host::run_end(result, stop_asked)) == "stopped")
            return Status::Transient("drain: stopped before the source was drained (stop was called during "
                                     "the drain; what was read is committed)");
        return Status::OK();
    }

    // The report the API shows: the runtime's (whose state only moves
    // forward through a run), with the host's own phase before and after a
    // run (the runtime says "starting" until it runs).
    HealthReport report() const {
        HealthReport h = rt->health();
        std::lock_guard lock(mu);
        if (phase == Phase::opened) h.state = "idle";
        if (phase == Phase::finished && !ran) h.state = "stopped";
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
        // Read before each snapshot: a change after it (the run's end and
        // close bump it too) makes the wait below return at once.
        uint64_t seen = rt->change_epoch();
        for (;;) {
            bool final;
            {
                std::lock_guard lk(mu);
                final = watcher_quit || phase == Phase::finished;
            }
            // Closed from a callback: the runtime is gone (shut_down), and
            // nobody may be called any more.
            if (is_closed()) return;
            try {
                HealthReport h = report();
                if (std::string sig = signature(h); sig != last) {
                    deliver(change_of(h));
                    last = std::move(sig);
                }
            } catch (...) {
                // Memory ran out for the snapshot or its delivery: it is
                // tried again at the next change (last is unchanged), and
                // the watcher, which the run's end waits for, goes on. A
                // final state that cannot be built is not delivered.
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
            seen = rt->wait_for_change(seen, kWatchPark);
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

    // The stage stuck in a plugin call, once a stop timed out. The stop's
    // end-of-stream marker travels down the queues behind the batches: it
    // waits (with anything else in flight) in the input queue of the stage
    // that does not return, and every queue after it is empty (the stages
    // there wait for input). No batch in any queue: the source itself is
    // stuck (poll), or no stage runs (start, ownership, the checkpoint).
    std::string stuck_stage() const {
        const std::vector<QueueReport> queues = rt->queues();
        const std::vector<StageDef> &stages = rt->def().stages;
        size_t stuck = 0;
        for (size_t i = 0; i < queues.size(); ++i)
            if (queues[i].depth > 0) stuck = i + 1;
        if (stuck >= stages.size()) return "a stage";
        return "stage " + quote(stages[stuck].id) + " (" + stages[stuck].plugin + ")";
    }

    // Ends the run (if any) and the threads, waiting at most `timeout` (0:
    // settings.shutdown_timeout_ms) for the run; close()'s and the
    // destructor's work. A run still going then is abandoned (see close()).
    // `destroying`: the Host is being destroyed (nothing reads rt after).
    Status close_impl(std::chrono::milliseconds timeout, bool destroying) {
        {
            std::lock_guard lock(subs_mu);
            closed = true;
            subs.clear();
        }
        // The default bound: the runtime's own graceful stop ends by
        // shutdown_timeout_ms after it saw the stop (a deferred sink's last
        // settle, the abandon of what was not durable); a margin for its
        // threads to end after that, so that a slow but healthy stop is not
        // taken for a stuck plugin.
        if (timeout.count() == 0)
            timeout = std::chrono::milliseconds(rt->def().settings.shutdown_timeout_ms) + kCloseMargin;
        bool stuck;
        {
            std::unique_lock lock(mu);
            if (close_result) return *close_result;
            if (close_begun) {
                // Another thread is closing: its answer is this one's. On
                // the watcher's thread (a callback) waiting could never end:
                // that close joins this thread.
                if (std::this_thread::get_id() == watcher.get_id())
                    return Status::InvalidArgument("close: already closing on another thread");
                cv.wait(lock, [this] { return close_result.has_value(); });
                return *close_result;
            }
            close_begun = true;
            // An abandoned run that ends later must not call the
            // application's code any more: the Host may be gone by then.
            run_end_fn = nullptr;
            // A stop() or drain() waiting in another thread for the final
            // delivery, which will not come, returns on the run's end.
            closing = true;
            cv.notify_all();
            if (phase == Phase::running) {
                stop_asked = true;
                rt->request_stop();
            }
            if (phase == Phase::opened) phase = Phase::finished;
            stuck = !cv.wait_for(lock, timeout, [this] { return phase == Phase::finished; });
        }
        stop_serving();
        if (!stuck && runner.joinable()) runner.join();
        {
            std::lock_guard lock(mu);
            watcher_quit = true;
        }
        cv.notify_all();
        rt->notify_change();
        if (watcher.joinable()) {
            if (std::this_thread::get_id() != watcher.get_id()) {
                watcher.join();
            } else {
                // Closed from a callback: the watcher holds the Impl and ends
                // after it, unjoined. When the Host is being destroyed, the
                // runtime (its stages, their databases and plugins) is torn
                // down here, before the destructor returns, so that what is
                // left to that thread is freeing memory: nothing of the
                // pipeline's outlives the Host, even if the process exits at
                // once. The runner is joined, and the watcher (this thread) no
                // longer reads the runtime once closed. (A stuck run keeps its
                // runtime: its threads use it; after close() the reading
                // functions still do.)
                watcher.detach();
                if (destroying && !stuck) rt.reset();
            }
        }
        Status st = Status::OK();
        if (stuck) {
            // Waiting longer would hold the application's exit hostage to a
            // plugin; killing a thread is not possible. The runner (and the
            // stage threads it waits for) go on alone, holding the Impl: the
            // plugins stay loaded, so their code stays mapped.
            runner.detach();
            st = Status(Code::kUnavailable,
                        "close: the pipeline did not stop within " + ms_text(timeout) + ": " + stuck_stage() +
                            " is stuck in a plugin call; its threads are abandoned and the pipeline stays "
                            "loaded until the process exits (nothing uncommitted was committed: the next "
                            "start replays it from the checkpoint)");
            log_line(CDCFLOW_LOG_ERROR, "host", st.message(), "abandoned");
        }
        {
            std::lock_guard lock(mu);
            close_result = st;
        }
        cv.notify_all();
        return st;
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

    static Result<std::unique_ptr<Host>> open_for_cli(const std::string &path, LogChoice chosen) {
        try {
            auto impl = std::make_shared<Host::Impl>();
            add_process_metrics(impl->metrics);
            auto rt = open_runtime(PipelineSource::file(path), impl->registry, impl->metrics, chosen);
            if (!rt) return as_create_failure(rt.status());
            impl->rt = std::move(rt.value());
            return std::unique_ptr<Host>(new Host(std::move(impl)));
        } catch (...) {
            return caught("open");
        }
    }

    static const PipelineDef &def_of(const Host &h) { return h.impl_->rt->def(); }
};

namespace internal {

Result<std::unique_ptr<Host>> open_for_cli(const std::string &pipeline_path, LogChoice chosen) {
    return HostFactory::open_for_cli(pipeline_path, chosen);
}

const PipelineDef &def_of(const Host &h) {
    return HostFactory::def_of(h);
}

} // namespace internal

Host::~Host() {
    try {
        (void)impl_->close_impl(std::chrono::milliseconds(0), true); // the destructor cannot answer
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
        if (impl_->close_result) return Status::InvalidArgument("start: the host was closed");
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
        if (impl_->close_result && impl_->phase != Impl::Phase::finished)
            return Status::InvalidArgument("drain: the host was closed");
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

void Host::request_stop() {
    try {
        std::lock_guard lk(impl_->mu);
        impl_->stop_asked = true;
        impl_->rt->request_stop();
    } catch (...) {
        // A lock that cannot be taken (EDEADLK...): nothing to report it with.
    }
}

Status Host::wait(std::chrono::milliseconds timeout) {
    try {
        std::unique_lock lk(impl_->mu);
        if (impl_->phase == Impl::Phase::opened || !impl_->ran)
            return Status::InvalidArgument("wait: the host was not started");
        if (!impl_->wait_finished(lk, timeout))
            return Status(Code::kUnavailable, "wait: the run did not end within " + ms_text(timeout));
        return impl_->outcome();
    } catch (...) {
        return caught("wait");
    }
}

Status Host::close(std::chrono::milliseconds timeout) {
    try {
        return impl_->close_impl(timeout, false);
    } catch (...) {
        return caught("close");
    }
}

RunTotals Host::totals() const {
    const Totals t = impl_->rt->totals();
    return {t.events, t.applied, t.rejected, t.duplicates, t.dropped, t.batches};
}

std::optional<RunEnd> Host::run_end() const {
    try {
        std::lock_guard lk(impl_->mu);
        return impl_->end;
    } catch (...) {
        return std::nullopt;
    }
}

std::string Host::name() const {
    try {
        return impl_->rt->def().name;
    } catch (...) {
        return "";
    }
}

Result<std::string> Host::serve(const std::string &address) {
    try {
        Impl &m = *impl_;
        {
            std::lock_guard lk(m.mu);
            if (m.phase != Impl::Phase::opened || m.close_result)
                return Status::InvalidArgument("serve: call it before start or drain");
        }
        std::lock_guard lk(m.server_mu);
        if (m.server) return Status::InvalidArgument("serve: already serving");
        const PipelineDef &def = m.rt->def();
        http::Address addr;
        std::string at; // where the address came from, for the pipeline's own
        if (!address.empty()) {
            auto a = http::parse_address(address);
            if (!a) return Status::InvalidArgument(a.status().message());
            addr = *a;
        } else if (def.http.listen) {
            addr = *def.http.listen;
            at = " (http.listen at " + where(def.file, def.http.listen_mark) + ")";
        } else {
            return std::string();
        }
        // Handlers read snapshots only (http/server.hpp: one I/O thread, a
        // deadline per request, a connection cap, a stop that never waits
        // for a client).
        http::ServerOptions so;
        so.request_timeout_ms = def.http.request_timeout_ms;
        so.max_connections = def.http.max_connections;
        so.warn = [](const std::string &msg) { log_line(CDCFLOW_LOG_WARN, "http", msg); };
        auto server = std::make_unique<http::Server>(std::move(so));
        constexpr const char *kJson = "application/json";
        server->route("/health", [&m](const http::Request &) {
            HealthReport h = m.report();
            return http::Response{h.healthy ? 200 : 503, kJson, host::health_json(h)};
        });
        server->route("/ready", [&m](const http::Request &) {
            HealthReport h = m.report();
            return http::Response{h.ready ? 200 : 503, kJson, ready_json(h)};
        });
        server->route("/metrics", [&m](const http::Request &) {
            return http::Response{200, "text/plain; version=0.0.4; charset=utf-8", m.metrics.prometheus()};
        });
        if (Status st = server->start(addr); !st) return Status::InvalidArgument(st.message() + at);
        const std::string bound = server->bound().text();
        log_line(CDCFLOW_LOG_INFO, "host", "serving /health, /ready and /metrics on http://" + bound,
                 "listen", {{"address", bound}});
        m.server = std::move(server);
        return bound;
    } catch (...) {
        return caught("serve");
    }
}

void Host::on_run_end(std::function<void()> fn) {
    try {
        std::lock_guard lk(impl_->mu);
        impl_->run_end_fn = std::move(fn);
    } catch (...) {
        // Only a failed lock gets here; the callback is not set.
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
        if (m.close_result && m.phase != Impl::Phase::finished)
            return Status::InvalidArgument("migrate: the host was closed");
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

// cdcflow migrate and cdcflow verify: the legacy outbox migration's commands
// (README, "Migrating a legacy outbox"). The pipeline file says where
// everything is: its `migrator` stage (the legacy database, table, columns,
// namespace, cleanup_older_than) and its `outbox_sink` stage (the target
// database, outbox table and columns, checkpoint_name = the migration).
#include "commands.hpp"

#include "escape.hpp"
#include "host_internal.hpp"
#include "http/address.hpp"
#include "log.hpp"
#include "signal_watcher.hpp"

#include "migrate/cleanup.hpp"
#include "migrate/target.hpp"
#include "migrate/verify.hpp"

#include "base/duration.hpp"
#include "base/text.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>

namespace po = boost::program_options;
using namespace cdcflow::host;
namespace mig = cdcflow::migrate;

namespace cdcflow::cli {

namespace {

using mig::Target;
using mig::target_of;

// A pipeline file, loaded and checked without starting anything, and its
// migration's stages. An error (exit 3) names the file.
Result<Target> load_target(const std::string &file, PluginRegistry &registry) {
    auto def = load_checked(file, registry);
    if (!def) return def.status();
    return target_of(def.value());
}

} // namespace

int cmd_verify(int argc, char **argv) {
    const char *usage = "cdcflow verify PIPELINE.yaml [--json] [--allow-other-events] [--limit N]";
    po::options_description opts("verify options");
    opts.add_options()("pipeline", po::value<std::string>()->required(),
                       "the migration's pipeline YAML file")("json", po::bool_switch(),
                                                             "print the report as one JSON object")(
        "allow-other-events", po::bool_switch(),
        "outbox rows that no migration wrote (the application's own, after the switch-over) are not an "
        "error")("limit", po::value<int64_t>()->default_value(10),
                 "legacy ids listed per class (0 to 100000)");
    po::positional_options_description pos;
    pos.add("pipeline", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    const int64_t limit = vm["limit"].as<int64_t>();
    if (limit < 0 || limit > 100000) {
        std::fprintf(stderr, "cdcflow verify: --limit must be from 0 to 100000 (usage: %s)\n", usage);
        return kExitUsage;
    }
    PluginRegistry registry;
    auto t = load_target(vm["pipeline"].as<std::string>(), registry);
    if (!t) {
        log_failure(t.status().message(), "error", {{"exit_code", kExitInvalid}});
        return kExitInvalid;
    }
    mig::VerifyOptions vo;
    vo.limit = static_cast<size_t>(limit);
    vo.allow_other_events = vm["allow-other-events"].as<bool>();
    mig::VerifyReport report;
    try {
        report = mig::verify_target(t.value(), vo);
    } catch (const Error &e) {
        const int code = e.status() == CDCFLOW_ERR_CONFIG ? kExitInvalid : kExitFailure;
        log_failure(std::string("verify: ") + e.what(), "error", {{"exit_code", code}});
        return code;
    }
    if (vm["json"].as<bool>())
        std::printf("%s\n", report.json().c_str());
    else
        std::printf("%s", report.text().c_str());
    std::fflush(stdout);
    if (report.ok()) return kExitOk;
    std::fprintf(stderr, "cdcflow verify: FAILED: %s\n", report.failure_summary().c_str());
    return kExitFailure;
}

namespace {

// The progress display of `cdcflow migrate`: a bar redrawn in place on a
// terminal (at most 5 times a second), or a plain line every few seconds;
// on stderr, beside the log. Its own thread, woken by a condition variable
// (no spinning); stopped before the summary.
class ProgressDisplay {
public:
    enum class Mode { none, bar, lines };
    ProgressDisplay(Mode mode, uint64_t total, std::function<uint64_t()> done)
        : mode_(mode), total_(total), done_(std::move(done)) {}
    ~ProgressDisplay() { stop(); }

    void start() {
        if (mode_ == Mode::none) return;
        started_ = std::chrono::steady_clock::now();
        thread_ = std::thread([this] { loop(); });
    }
    void stop() {
        {
            std::lock_guard lock(mu_);
            if (stopping_) return;
            stopping_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
        // The final state, however short the run (a bar ends its line).
        if (mode_ != Mode::none) draw(true);
    }

private:
    void loop() {
        const auto period =
            mode_ == Mode::bar ? std::chrono::milliseconds(200) : std::chrono::milliseconds(2000);
        std::unique_lock lock(mu_);
        while (!cv_.wait_for(lock, period, [this] { return stopping_; })) {
            lock.unlock();
            draw(false);
            lock.lock();
        }
    }

    void draw(bool last) {
        const uint64_t done = done_();
        const double secs = std::max(
            1e-3, std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
        const double rate = static_cast<double>(done) / secs;
        const uint64_t total = std::max(total_, done);
        const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
        char eta[32] = "-";
        if (rate > 0 && total > done) {
            const auto left = static_cast<uint64_t>(static_cast<double>(total - done) / rate);
            std::snprintf(eta, sizeof eta, "%llu:%02llu:%02llu", static_cast<unsigned long long>(left / 3600),
                          static_cast<unsigned long long>(left / 60 % 60),
                          static_cast<unsigned long long>(left % 60));
        } else if (total <= done) {
            std::snprintf(eta, sizeof eta, "0:00:00");
        }
        char line[256];
        if (mode_ == Mode::bar) {
            constexpr int kWidth = 30;
            char bar[kWidth + 1];
            const int filled = static_cast<int>(frac * kWidth);
            for (int i = 0; i < kWidth; ++i)
                bar[i] = i < filled ? '#' : '.';
            bar[kWidth] = 0;
            std::snprintf(line, sizeof line, "migrate [%s] %5.1f%% %llu/%llu rows, %.0f rows/s, ETA %s", bar,
                          frac * 100, static_cast<unsigned long long>(done),
                          static_cast<unsigned long long>(total), rate, eta);
            // Through the log's writer: log lines go above the bar, never into it.
            if (last)
                end_status_line(line);
            else
                set_status_line(line);
            return;
        } else {
            std::snprintf(line, sizeof line, "migrate: %llu/%llu rows (%.1f%%), %.0f rows/s, ETA %s\n",
                          static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                          frac * 100, rate, eta);
        }
        std::fputs(line, stderr);
        std::fflush(stderr);
    }

    Mode mode_;
    uint64_t total_;
    std::function<uint64_t()> done_;
    std::chrono::steady_clock::time_point started_{};
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

void warn_locked(const std::string &msg) {
    log_line(CDCFLOW_LOG_WARN, "migrate", msg);
}

// migrate = run --drain, with the progress display and the summary.
class MigrateObserver : public RunObserver {
public:
    MigrateObserver(ProgressDisplay::Mode mode, bool automatic) : mode_(mode), automatic_(automatic) {}

    int before(embed::Host &h) override {
        auto t = target_of(embed::internal::def_of(h));
        if (!t) {
            log_failure(t.status().message(), "error", {{"exit_code", kExitInvalid}});
            return kExitInvalid;
        }
        target_ = std::move(t.value());
        uint64_t total = 0;
        std::string mismatch;
        try {
            // A locked database (the application, or another cdcflow
            // migrating into the target) is waited for, as the run would.
            mig::BeforeRun b = mig::read_before(target_, warn_locked);
            total = b.total;
            before_ = std::move(b.counts);
            mismatch = std::move(b.mismatch);
        } catch (const Error &e) {
            log_failure(std::string("migrate: ") + e.what(), "error", {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        // Going on would migrate the rest of the table under other event ids.
        if (!mismatch.empty()) {
            log_failure("migrate: " + sqlite::database_label(target_.target_db) + ": " + mismatch, "error",
                        {{"exit_code", kExitInvalid}});
            return kExitInvalid;
        }
        // JSON logs are for machines: progress only when asked for by name
        // (the file's `log:` is applied by now).
        if (automatic_ && log_format() == LogFormat::json) mode_ = ProgressDisplay::Mode::none;
        display_ = std::make_unique<ProgressDisplay>(mode_, total, [&h] { return h.totals().events; });
        display_->start();
        return -1;
    }

    void finished(embed::Host &) override {
        if (display_) display_->stop();
    }

    int after(embed::Host &h, const Status &st, int code, bool stop_asked) override {
        mig::AfterRun end;
        try {
            end = mig::read_after(target_, warn_locked);
        } catch (const Error &e) {
            // A run that failed already said why (and its code stands).
            if (code != kExitOk) return code;
            log_failure(std::string("migrate: ") + e.what(), "error", {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        const mig::TargetCounts &now = end.counts;
        const mig::Progress &p = end.progress;
        const mig::ReportClass &missing = end.missing;
        const embed::RunTotals own = h.totals();
        const mig::RunShare share = mig::run_share(before_, now, own.applied, own.rejected);
        const uint64_t run_migrated = share.migrated;
        const uint64_t run_unmappable = share.unmappable;
        const auto &run_reasons = share.reasons;
        std::printf("migration %s: %llu migrated this run, %llu already migrated before it (%llu in all)\n",
                    quote(target_.spec.migration).c_str(), static_cast<unsigned long long>(run_migrated),
                    static_cast<unsigned long long>(now.migrated - run_migrated),
                    static_cast<unsigned long long>(now.migrated));
        // One line per reason class: its count in all, and this run's.
        std::printf("unmappable: %llu this run; %llu in all\n",
                    static_cast<unsigned long long>(run_unmappable),
                    static_cast<unsigned long long>(now.unmappable));
        for (const auto &[cls, n] : now.reasons) {
            auto it = run_reasons.find(cls);
            std::string run = it == run_reasons.end() ? "" : " (" + std::to_string(it->second) + " this run)";
            std::printf("  %llu %s%s\n", static_cast<unsigned long long>(n), base::text(cls).c_str(),
                        run.c_str());
        }
        std::printf("late rows: %llu\n", static_cast<unsigned long long>(now.late));
        std::string gaps;
        for (size_t i = 0; i < p.gaps.size() && i < 8; ++i)
            gaps += (i ? ", " : "") + std::to_string(p.gaps[i].lo) + ".." + std::to_string(p.gaps[i].hi);
        if (p.gaps.size() > 8) gaps += ", ...";
        std::printf("open gaps: %zu%s%s\n", p.gaps.size(), gaps.empty() ? "" : ": ", gaps.c_str());
        std::printf("progress: last legacy id %s\n",
                    p.last_legacy_id ? std::to_string(*p.last_legacy_id).c_str() : "none");
        std::fflush(stdout);
        if (code != kExitOk || !st) return code;
        if (stop_asked) {
            log_failure("migrate: stopped before the end; run it again to resume", "error",
                        {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        if (missing.count > 0) {
            log_failure("migrate: " + mig::missing_message(missing), "error", {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        return kExitOk;
    }

private:
    ProgressDisplay::Mode mode_;
    bool automatic_; // --progress=auto
    Target target_;
    mig::TargetCounts before_;
    std::unique_ptr<ProgressDisplay> display_;
};

int run_cleanup(const std::string &file, const po::variables_map &vm, const char *usage) {
    PluginRegistry registry;
    auto t = load_target(file, registry);
    if (!t) {
        log_failure(t.status().message(), "error", {{"exit_code", kExitInvalid}});
        return kExitInvalid;
    }
    std::string older =
        vm.count("older-than") ? vm["older-than"].as<std::string>() : t.value().cleanup_older_than;
    std::string from = vm.count("older-than") ? std::string("--older-than")
                                              : t.value().older_than_at + ": cleanup_older_than";
    if (older.empty()) {
        std::fprintf(
            stderr,
            "cdcflow migrate: --cleanup needs --older-than DURATION or the migrator's cleanup_older_than "
            "(usage: %s)\n",
            usage);
        return kExitUsage;
    }
    auto secs = base::parse_duration_s(older);
    if (!secs) {
        std::fprintf(stderr,
                     "cdcflow migrate: %s: %s is not a duration such as 30d, 12h or 90m (usage: %s)\n",
                     from.c_str(), quote(older).c_str(), usage);
        return vm.count("older-than") ? kExitUsage : kExitInvalid;
    }
    const int64_t batch = vm["batch"].as<int64_t>();
    const int64_t pause = vm["pause-ms"].as<int64_t>();
    if (batch < 1 || batch > 100000 || pause < 0 || pause > 60000) {
        std::fprintf(stderr,
                     "cdcflow migrate: --batch must be from 1 to 100000 and --pause-ms from 0 to 60000 "
                     "(usage: %s)\n",
                     usage);
        return kExitUsage;
    }
    std::atomic<bool> stop{false};
    SignalWatcher signals(10000, kExitTimeout, [&](const char *) { stop = true; });
    mig::CleanupOptions co;
    co.older_than_us = *secs * 1000000; // parse_duration_s keeps this within int64_t
    co.batch = batch;
    co.pause = std::chrono::milliseconds(pause);
    co.stop = [&] { return stop.load(); };
    co.notice = [](const std::string &msg) { log_line(CDCFLOW_LOG_WARN, "cleanup", msg); };
    mig::CleanupReport rep;
    try {
        mig::Connections c = mig::open_all(t.value(), true);
        rep = mig::cleanup(c.dbs(), t.value().spec, co);
    } catch (const Error &e) {
        const int code = e.status() == CDCFLOW_ERR_CONFIG ? kExitInvalid : kExitFailure;
        log_failure(std::string("cleanup: ") + e.what(), "error", {{"exit_code", code}});
        return code;
    }
    std::printf("cleanup of migration %s: deleted %llu legacy rows older than %s; kept %llu",
                quote(t.value().spec.migration).c_str(), static_cast<unsigned long long>(rep.deleted),
                older.c_str(), static_cast<unsigned long long>(rep.kept_total()));
    std::string kept;
    for (const auto &[why, n] : rep.kept)
        kept += (kept.empty() ? ": " : ", ") + std::to_string(n) + " " + why;
    std::printf("%s%s\n", kept.c_str(), rep.stopped ? " (stopped by a signal before the end)" : "");
    std::fflush(stdout);
    return rep.stopped ? kExitFailure : kExitOk;
}

} // namespace

int cmd_migrate(int argc, char **argv) {
    const char *usage =
        "cdcflow migrate PIPELINE.yaml [--progress=auto|bar|lines|none] [--http ADDR] | "
        "cdcflow migrate PIPELINE.yaml --cleanup [--older-than DURATION] [--batch N] [--pause-ms MS]";
    po::options_description opts("migrate options");
    opts.add_options()("pipeline", po::value<std::string>()->required(),
                       "the migration's pipeline YAML file")(
        "progress", po::value<std::string>()->default_value("auto"),
        "auto (a bar on a terminal, else lines; none with JSON logs), bar (lines when stderr is not a "
        "terminal), lines (one every 2 s) or none; on stderr")(
        "http", po::value<std::string>(), "serve /health, /ready and /metrics on ADDR (as run --http)")(
        "cleanup", po::bool_switch(),
        "do not migrate: delete legacy rows that are migrated, verified and older than --older-than")(
        "older-than", po::value<std::string>(),
        "with --cleanup: the age (from created_at) past which verified rows go: 30d, 12h, 90m (else the "
        "migrator's cleanup_older_than)")("batch", po::value<int64_t>()->default_value(500),
                                          "with --cleanup: legacy rows per delete transaction")(
        "pause-ms", po::value<int64_t>()->default_value(20), "with --cleanup: pause between transactions");
    po::positional_options_description pos;
    pos.add("pipeline", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    const std::string file = vm["pipeline"].as<std::string>();
    if (vm["cleanup"].as<bool>()) return run_cleanup(file, vm, usage);
    if (vm.count("older-than") || !vm["batch"].defaulted() || !vm["pause-ms"].defaulted()) {
        std::fprintf(stderr,
                     "cdcflow migrate: --older-than, --batch and --pause-ms go with --cleanup (usage: %s)\n",
                     usage);
        return kExitUsage;
    }
    const std::string mode = vm["progress"].as<std::string>();
    ProgressDisplay::Mode m;
    if (mode == "auto")
        m = isatty(STDERR_FILENO) ? ProgressDisplay::Mode::bar : ProgressDisplay::Mode::lines;
    else if (mode == "bar") // drawn in place on a terminal only: plain lines elsewhere
        m = isatty(STDERR_FILENO) ? ProgressDisplay::Mode::bar : ProgressDisplay::Mode::lines;
    else if (mode == "lines")
        m = ProgressDisplay::Mode::lines;
    else if (mode == "none")
        m = ProgressDisplay::Mode::none;
    else {
        std::fprintf(stderr,
                     "cdcflow migrate: --progress: %s is not one of auto, bar, lines, none (usage: %s)\n",
                     quote(mode).c_str(), usage);
        return kExitUsage;
    }
    std::optional<std::string> http_addr;
    if (vm.count("http")) {
        http_addr = vm["http"].as<std::string>();
        if (auto a = http::parse_address(*http_addr); !a) {
            std::fprintf(stderr, "cdcflow migrate: --http: %s\n", a.status().message().c_str());
            return kExitUsage;
        }
    }
    MigrateObserver observer(m, mode == "auto");
    return run_pipeline("migrate", file, true, http_addr, &observer);
}

} // namespace cdcflow::cli

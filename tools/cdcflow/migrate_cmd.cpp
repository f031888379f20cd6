// cdcflow migrate and cdcflow verify: the legacy outbox migration's commands
// (README, "Migrating a legacy outbox"). The pipeline file says where
// everything is: its `migrator` stage (the legacy database, table, columns,
// namespace, cleanup_older_than) and its `outbox_sink` stage (the target
// database, outbox table and columns, checkpoint_name = the migration).
#include "commands.hpp"

#include "escape.hpp"
#include "log.hpp"
#include "runtime.hpp"
#include "signal_watcher.hpp"

#include "migrate/cleanup.hpp"
#include "migrate/verify.hpp"

#include "base/duration.hpp"
#include "base/text.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

namespace po = boost::program_options;
using namespace cdcflow::host;
namespace mig = cdcflow::migrate;

namespace cdcflow::cli {

namespace {

// Where the migration's databases are, from the checked pipeline.
struct Target {
    mig::MigrationSpec spec;
    std::string legacy_db;
    std::string target_db; // the outbox's database too
    std::string cleanup_older_than;
    std::string older_than_at; // "file:line:col" of the key, for messages
};

const std::string *config_text(const StageDef &sd, const char *key) {
    auto it = sd.config.find(key);
    return it == sd.config.end() ? nullptr : &it->second.scalar;
}

// The migration's stages. An error (exit 3) names the file.
Result<Target> target_of(const PipelineDef &def) {
    const StageDef *source = nullptr, *sink = nullptr;
    for (const StageDef &sd : def.stages) {
        if (sd.plugin == "migrator" && !source) source = &sd;
        if (sd.plugin == "outbox_sink" && !sink) sink = &sd;
    }
    if (!source || !sink)
        return Status::Config(def.file + ": not a migration pipeline: it has no stage whose plugin is " +
                              std::string(!source ? "'migrator'" : "'outbox_sink'"));
    Target t;
    auto text = [](const StageDef &sd, const char *key) {
        const std::string *v = config_text(sd, key);
        return v ? *v : std::string();
    };
    t.legacy_db = text(*source, "database");
    t.target_db = text(*sink, "database");
    if (t.legacy_db.empty() || t.target_db.empty())
        return Status::Config(def.file + ": stage '" + (t.legacy_db.empty() ? source->id : sink->id) +
                              "': database is empty");
    if (const std::string *v = config_text(*source, "table"); v && !v->empty()) t.spec.legacy.table = *v;
    for (size_t i = 0; i < mig::kLegacyColumnCount; ++i)
        if (const std::string *v = config_text(*source, mig::kLegacyColumns[i].key); v && !v->empty())
            t.spec.legacy.names[i] = *v;
    std::string ns = text(*source, "namespace");
    if (ns.empty()) ns = mig::kDefaultNamespace;
    auto u = mig::parse_uuid(ns);
    if (!u) {
        auto it = source->config.find("namespace");
        return Status::Config((it != source->config.end() ? where(def.file, it->second.mark) : def.file) +
                              ": namespace: " + quote(ns) + " is not a UUID");
    }
    t.spec.ns = *u;
    if (const std::string *v = config_text(*sink, "table"); v && !v->empty()) t.spec.outbox.table = *v;
    for (size_t i = 0; i < outbox::kColumnCount; ++i)
        if (const std::string *v = config_text(*sink, outbox::kColumns[i].key); v && !v->empty())
            t.spec.outbox.names[i] = *v;
    if (const std::string *v = config_text(*sink, "checkpoint_name"); v && !v->empty()) t.spec.migration = *v;
    // As the migrator closes gaps (the value checked against its declared
    // bounds, or its default: check_pipeline filled both in).
    if (auto it = source->config.find("gap_watch_ms");
        it != source->config.end() && it->second.type == CDCFLOW_CONFIG_INT)
        t.spec.gap_watch_us = it->second.i * 1000;
    t.cleanup_older_than = text(*source, "cleanup_older_than");
    if (auto it = source->config.find("cleanup_older_than"); it != source->config.end())
        t.older_than_at = where(def.file, it->second.mark);
    return t;
}

// A pipeline file, loaded and checked without starting anything, and its
// migration's stages. An error (exit 3) names the file.
Result<Target> load_target(const std::string &file, PluginRegistry &registry) {
    auto def = load_checked(file, registry);
    if (!def) return def.status();
    return target_of(def.value());
}

// The databases, opened as the command needs them. The outbox is the
// target's connection (one snapshot).
struct Connections {
    sqlite::Db legacy, target;
    mig::Databases dbs() { return {legacy, target, target}; }
};

// Read-only opens never create a file; a missing one is named.
sqlite::Db open_db(const std::string &path, bool write) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        throw Error(CDCFLOW_ERR_IO, sqlite::database_label(path) + " does not exist");
    return sqlite::Db(path, write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, 5000);
}

Connections open_all(const Target &t, bool write) {
    Connections c;
    c.legacy = open_db(t.legacy_db, write);
    c.target = open_db(t.target_db, write);
    return c;
}

std::string ids_list(const std::vector<int64_t> &ids, uint64_t count) {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i)
        out += (i ? ", " : "") + std::to_string(ids[i]);
    if (count > ids.size()) out += ", ...";
    return out;
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
        Connections c = open_all(t.value(), false);
        report = mig::verify(c.dbs(), t.value().spec, vo);
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

// How long migrate's own reads (before and after the run) wait for a locked
// database, as cleanup's transactions do.
constexpr std::chrono::milliseconds kLockPatience = std::chrono::minutes(2);
void warn_locked(const std::string &msg) {
    log_line(CDCFLOW_LOG_WARN, "migrate", msg);
}

// migrate = run --drain, with the progress display and the summary.
class MigrateObserver : public RunObserver {
public:
    MigrateObserver(ProgressDisplay::Mode mode, bool automatic) : mode_(mode), automatic_(automatic) {}

    int before(Runtime &r) override {
        auto t = target_of(r.def());
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
            mig::retry_while_locked(kLockPatience, "counting the rows to migrate", warn_locked, [&] {
                // The target may not exist yet: the sink creates it when it starts.
                sqlite::Db legacy = open_db(target_.legacy_db, false);
                std::error_code ec;
                if (std::filesystem::exists(target_.target_db, ec)) {
                    sqlite::Db target = open_db(target_.target_db, false);
                    before_ = mig::count_target(target, target_.spec.migration);
                    progress_ = mig::read_progress(target, target_.spec.migration);
                    mismatch = mig::namespace_mismatch(target, target_.spec);
                }
                total = mig::count_legacy_after(legacy, target_.spec.legacy, progress_.last_legacy_id);
            });
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
        display_ = std::make_unique<ProgressDisplay>(mode_, total, [&r] { return r.totals().events; });
        display_->start();
        return -1;
    }

    void finished(Runtime &) override {
        if (display_) display_->stop();
    }

    int after(Runtime &r, const Status &st, int code, bool stop_asked) override {
        mig::TargetCounts now;
        mig::Progress p;
        mig::ReportClass missing;
        try {
            mig::retry_while_locked(kLockPatience, "reading the migration's progress", warn_locked, [&] {
                sqlite::Db legacy = open_db(target_.legacy_db, false);
                sqlite::Db target = open_db(target_.target_db, false);
                now = mig::count_target(target, target_.spec.migration);
                p = mig::read_progress(target, target_.spec.migration);
                missing = mig::quick_check({legacy, target, target}, target_.spec, 10);
            });
        } catch (const Error &e) {
            // A run that failed already said why (and its code stands).
            if (code != kExitOk) return code;
            log_failure(std::string("migrate: ") + e.what(), "error", {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        auto minus = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
        // This run's share is what this process wrote (the sink's applied
        // and rejected events), not the target's growth since before(): a
        // second migrate that waited as a standby while the first did the
        // work would otherwise claim all of it.
        const Totals own = r.totals();
        const uint64_t run_migrated = std::min(own.applied, now.migrated);
        const uint64_t run_unmappable = std::min(own.rejected, now.unmappable);
        std::map<std::string, uint64_t, std::less<>> run_reasons;
        uint64_t grown = 0;
        for (const auto &[cls, n] : now.reasons) {
            auto it = before_.reasons.find(cls);
            uint64_t d = minus(n, it == before_.reasons.end() ? 0 : it->second);
            grown += d;
            if (d) run_reasons[cls] = d;
        }
        // By reason only when all the growth is ours.
        if (grown != run_unmappable) run_reasons.clear();
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
            log_failure(
                "migrate: " + std::to_string(missing.count) +
                    " legacy rows at or below the progress point are neither migrated nor recorded as "
                    "unmappable (legacy ids " +
                    ids_list(missing.ids, missing.count) + "); run cdcflow verify",
                "error", {{"exit_code", kExitFailure}});
            return kExitFailure;
        }
        return kExitOk;
    }

private:
    ProgressDisplay::Mode mode_;
    bool automatic_; // --progress=auto
    Target target_;
    mig::TargetCounts before_;
    mig::Progress progress_;
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
        Connections c = open_all(t.value(), true);
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
    std::optional<http::Address> http_addr;
    if (vm.count("http")) {
        auto a = http::parse_address(vm["http"].as<std::string>());
        if (!a) {
            std::fprintf(stderr, "cdcflow migrate: --http: %s\n", a.status().message().c_str());
            return kExitUsage;
        }
        http_addr = *a;
    }
    MigrateObserver observer(m, mode == "auto");
    return run_pipeline("migrate", file, true, http_addr, &observer);
}

} // namespace cdcflow::cli

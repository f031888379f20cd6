// `cdcflow test PIPELINE CASES`: each case's events go into a fresh outbox
// in a temporary SQLite file, the pipeline's stages run on that file in
// drain mode (in this process, as `run --drain` runs them, without HTTP),
// and the rows and dead letters they leave are compared with the case's
// expectations (case_file.hpp). README, "Testing a read model: cdcflow test".
#include "case_file.hpp"
#include "commands.hpp"

#include "escape.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "runtime.hpp"
#include "signal_watcher.hpp"

#include "common/sqlite.hpp"
#include "outbox/schema.hpp"

#include <boost/program_options.hpp>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace po = boost::program_options;
using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace cdcflow::cli {
namespace {

constexpr const char *kSourcePlugin = "outbox_source";

// A temporary folder, removed with everything in it when the command ends.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::error_code ec;
        std::filesystem::path base = std::filesystem::temp_directory_path(ec);
        if (ec) base = "/tmp";
        std::string tmpl = (base / "cdcflow-test-XXXXXX").string();
        if (mkdtemp(tmpl.data())) path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
};

// The outbox table the source stage reads, from its config (its table and
// column keys are schema.hpp's option keys).
outbox::OutboxSchema schema_of(const StageDef &source) {
    outbox::OutboxSchema s;
    auto text = [&](const char *key) -> const std::string * {
        auto it = source.config.find(key);
        return it == source.config.end() || !it->second.is_scalar ? nullptr : &it->second.scalar;
    };
    if (const std::string *t = text("table")) s.table = *t;
    for (size_t i = 0; i < outbox::kColumnCount; ++i)
        if (const std::string *n = text(outbox::kColumns[i].key)) s.names[i] = *n;
    return s;
}

// Every stage's `database` points at the case's file; every `create_schema`
// is on (the file starts empty but for the outbox).
void point_at(PipelineDef &def, const std::string &database) {
    for (StageDef &st : def.stages) {
        if (auto it = st.config.find("database");
            it != st.config.end() && it->second.type == CDCFLOW_CONFIG_STRING) {
            it->second.scalar = database;
            it->second.json = json_string(database);
        }
        if (auto it = st.config.find("create_schema");
            it != st.config.end() && it->second.type == CDCFLOW_CONFIG_BOOL) {
            it->second.b = true;
            it->second.scalar = "true";
            it->second.json = "true";
        }
    }
}

// The case's events, in order, into a fresh outbox in `database`.
void write_outbox(const std::string &database, const outbox::OutboxSchema &schema, const cases::Case &c) {
    sqlite::Db db(database, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    db.exec(schema.create_sql());
    sqlite::Transaction tx(db);
    using outbox::Column;
    sqlite::Stmt ins(
        db, schema.insert_sql({Column::kId, Column::kAggregateType, Column::kAggregateId, Column::kType,
                               Column::kPayload, Column::kTimestamp, Column::kVersion}));
    for (const cases::Event &e : c.events) {
        ins.bind(1, std::string_view(e.id))
            .bind(2, std::string_view(e.aggregate_type))
            .bind(3, std::string_view(e.aggregate_id))
            .bind(4, std::string_view(e.type))
            .bind(5, std::string_view(e.payload))
            .bind(6, e.timestamp);
        if (schema.has(Column::kVersion)) {
            if (e.version)
                ins.bind(7, *e.version);
            else
                ins.bind_null(7);
        }
        ins.run();
    }
    tx.commit();
}

// What stops a case's run from outside: SIGINT/SIGTERM (the command stops
// after the case) and the case's deadline.
struct Control {
    std::mutex mu;
    std::condition_variable cv;
    Runtime *current = nullptr; // the case's runtime while it runs
    bool interrupted = false;
};

struct CaseOutcome {
    bool config_error = false; // the pipeline cannot be created: the file's fault (exit 3)
    bool timed_out = false;    // the later cases would most likely wait the same way: not run
    std::string error;         // the run failed (the case fails with it)
    std::vector<std::string> diff;
};

CaseOutcome run_case(const PipelineDef &def, PluginRegistry &registry, const outbox::OutboxSchema &schema,
                     const cases::Case &c, const std::string &database, const std::string &case_file,
                     Control &control, std::chrono::seconds timeout) {
    CaseOutcome out;
    try {
        write_outbox(database, schema, c);
    } catch (const std::exception &e) {
        out.error = std::string("cannot write the outbox: ") + e.what();
        return out;
    }
    {
        PipelineDef d = def;
        point_at(d, database);
        Metrics metrics;
        auto rt = Runtime::create(std::move(d), registry, metrics);
        if (!rt) {
            out.config_error = rt.status().abi() == CDCFLOW_ERR_CONFIG;
            out.error = rt.status().message();
            return out;
        }
        Runtime &r = *rt.value();
        // A stage that waits for what a test cannot give (a broker, a lock
        // held elsewhere) must not hang the command: past the deadline the
        // run is stopped like a SIGTERM stops it, and the case fails.
        bool done = false, timed_out = false;
        {
            std::lock_guard lock(control.mu);
            control.current = &r;
            if (control.interrupted) r.request_stop();
        }
        std::thread watchdog([&] {
            std::unique_lock lock(control.mu);
            if (!control.cv.wait_for(lock, timeout, [&] { return done; })) {
                timed_out = true;
                r.request_stop();
            }
        });
        RunOptions ro;
        ro.drain = true;
        Status st;
        try {
            st = r.run(ro);
        } catch (const std::bad_alloc &) {
            // The watchdog is joined below in any case: a joinable thread
            // destroyed by an exception's unwinding would end the process.
            st = Status::OutOfMemory();
        } catch (const std::exception &e) {
            st = Status::Internal(e.what());
        }
        bool interrupted;
        {
            std::lock_guard lock(control.mu);
            done = true;
            control.current = nullptr;
            interrupted = control.interrupted;
        }
        control.cv.notify_all();
        watchdog.join();
        if (timed_out) {
            out.timed_out = true;
            out.error = "stopped after " + std::to_string(timeout.count()) +
                        " s without draining (--timeout): does a stage wait for something outside the file?";
            return out;
        }
        if (interrupted) {
            out.error = "interrupted";
            return out;
        }
        if (!st) {
            out.error = "the pipeline failed: " + st.message();
            return out;
        }
    } // the stages are gone (their connections closed) before the results are read
    auto actual = cases::read_actual(database, c);
    if (!actual) {
        out.error = actual.status().message();
        return out;
    }
    out.diff = cases::compare(c, actual.value(), case_file);
    return out;
}

} // namespace

int cmd_test(int argc, char **argv) {
    const char *usage = "cdcflow test PIPELINE.yaml CASES.yaml [--verbose] [--timeout SEC]";
    po::options_description opts("test options");
    opts.add_options()("pipeline", po::value<std::string>()->required(), "pipeline YAML file")(
        "cases", po::value<std::string>()->required(), "case file (README, \"Testing a read model\")")(
        "verbose", po::bool_switch(), "show the pipeline's log lines (by default only errors)")(
        "timeout", po::value<uint32_t>()->default_value(60),
        "seconds a case may run before it is stopped and fails (1 to 86400)");
    po::positional_options_description pos;
    pos.add("pipeline", 1).add("cases", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    const std::string file = vm["pipeline"].as<std::string>(), case_path = vm["cases"].as<std::string>();
    const bool verbose = vm["verbose"].as<bool>();
    const uint32_t timeout_s = vm["timeout"].as<uint32_t>();
    if (timeout_s < 1 || timeout_s > 86400) {
        std::fprintf(stderr, "cdcflow test: --timeout must be from 1 to 86400 seconds (usage: %s)\n", usage);
        return kExitUsage;
    }
    // Before any stage's thread exists (as run does): only the watcher sees
    // SIGINT/SIGTERM. The first stops the running case and the command
    // (the temporary folder is removed); a second exits at once.
    Control control;
    SignalWatcher signals(Settings{}.shutdown_timeout_ms, kExitTimeout, [&](const char *) {
        std::lock_guard lock(control.mu);
        control.interrupted = true;
        if (control.current) control.current->request_stop();
    });

    PluginRegistry registry;
    auto def = load_checked(file, registry);
    if (!verbose) set_log_level(CDCFLOW_LOG_ERROR); // after the file's log: settings
    if (!def) {
        log_failure(def.status().message());
        return def.status().abi() == CDCFLOW_ERR_CONFIG ? kExitInvalid : kExitFailure;
    }
    const StageDef &source = def.value().stages.front();
    if (source.plugin != kSourcePlugin) {
        log_failure(where(file, source.plugin_mark) + ": cdcflow test needs an " + kSourcePlugin +
                    " first stage (stage " + quote(source.id) + " is plugin " + quote(source.plugin) + ")");
        return kExitInvalid;
    }
    const StageDef &sink = def.value().stages.back();
    if (!sink.config.count("database")) {
        log_failure(where(file, sink.plugin_mark) +
                    ": cdcflow test reads the results from the sink's SQLite "
                    "database, and stage " +
                    quote(sink.id) + " (plugin " + quote(sink.plugin) + ") has no 'database' config key");
        return kExitInvalid;
    }
    auto cf = cases::load_case_file(case_path);
    if (!cf) {
        log_failure(cf.status().message());
        return kExitInvalid;
    }
    const outbox::OutboxSchema schema = schema_of(source);
    for (const cases::Case &c : cf.value().cases)
        for (const cases::Event &e : c.events)
            if (e.version && !schema.has(outbox::Column::kVersion)) {
                log_failure(where(case_path, e.version_mark) +
                            ": 'version' needs a version column, and stage " + quote(source.id) +
                            " names none (its version_column)");
                return kExitInvalid;
            }

    TempDir tmp;
    if (tmp.path.empty()) {
        log_failure("cannot make a temporary folder: " + std::string(std::strerror(errno)));
        return kExitFailure;
    }
    size_t passed = 0, failed = 0, number = 0;
    for (const cases::Case &c : cf.value().cases) {
        // The case's file (and its -wal and -shm) in a folder of its own,
        // removed once the case is done: disk use stays one case's.
        const std::filesystem::path folder = tmp.path / ("case-" + std::to_string(++number));
        std::error_code ec;
        std::filesystem::create_directory(folder, ec);
        const std::string database = (folder / "test.db").string();
        log_line(CDCFLOW_LOG_INFO, "test",
                 "case " + quote(c.name) + ": " + std::to_string(c.events.size()) +
                     " events into a fresh outbox in " + quote(database));
        CaseOutcome o = run_case(def.value(), registry, schema, c, database, case_path, control,
                                 std::chrono::seconds(timeout_s));
        std::filesystem::remove_all(folder, ec);
        if (o.config_error) { // as validate would say, once, whatever the case
            log_failure(o.error);
            return kExitInvalid;
        }
        const bool ok = o.error.empty() && o.diff.empty();
        std::printf("%s %s\n", ok ? "ok  " : "FAIL", one_line(c.name).c_str());
        if (!o.error.empty()) std::printf("  %s\n", one_line(o.error).c_str());
        for (const std::string &line : o.diff)
            std::printf("  %s\n", line.c_str());
        std::fflush(stdout);
        ++(ok ? passed : failed);
        std::lock_guard lock(control.mu);
        if (control.interrupted || o.timed_out) break;
    }
    const size_t not_run = cf.value().cases.size() - passed - failed;
    if (not_run > 0)
        std::printf("%zu passed, %zu failed, %zu not run\n", passed, failed, not_run);
    else
        std::printf("%zu passed, %zu failed\n", passed, failed);
    return failed ? kExitFailure : kExitOk;
}

} // namespace cdcflow::cli

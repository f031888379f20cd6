#include "commands.hpp"

#include "config_schema.hpp"
#include "escape.hpp"
#include "host_api.hpp"
#include "host_internal.hpp"
#include "http/address.hpp"
#include "pipeline.hpp"
#include "pipeline_open.hpp"
#include "plugin_loader.hpp"
#include "signal_watcher.hpp"
#include "status_cmd.hpp"

#include <boost/program_options.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace po = boost::program_options;
using namespace cdcflow::host;
using cdcflow::Result;
using cdcflow::Status;

namespace cdcflow::cli {

const std::vector<Command> &commands() {
    static const std::vector<Command> cmds = {
        {"run", "run a pipeline", cmd_run},
        {"validate", "check a pipeline file without running it", cmd_validate},
        {"plugins", "list plugins: kind, ABI version, file, config keys (--markdown: as tables)",
         cmd_plugins},
        {"status", "show a running host's health and metrics (see run --http)", cmd_status},
        {"produce", "validate JSON-lines events from stdin and write them into an outbox", cmd_produce},
        {"migrate",
         "migrate a legacy outbox with progress and a summary (--cleanup: delete verified old rows)",
         cmd_migrate},
        {"verify", "the integrity report of a legacy outbox migration", cmd_verify},
        {"test", "run a pipeline's stages on the cases of a YAML file and compare rows and dead letters",
         cmd_test},
    };
    return cmds;
}

void print_usage(std::FILE *out) {
    std::fprintf(out, "usage: cdcflow <command> [options]\n\ncommands:\n");
    for (const Command &c : commands())
        std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
    std::fprintf(
        out, "\n'cdcflow <command> --help' describes a command; 'cdcflow --version' prints the version.\n");
}

void print_version() {
    std::printf("cdcflow %s (plugin ABI %u..%u)\n", CDCFLOW_VERSION, CDCFLOW_ABI_VERSION_MIN,
                CDCFLOW_ABI_VERSION);
}

namespace {

// Whether the command line or the environment chose the log level and
// format: they win over the pipeline file's `log:` (apply_file_log).
bool g_level_chosen = false;
bool g_format_chosen = false;

// --log-level / --log-format, else CDCFLOW_LOG_LEVEL / CDCFLOW_LOG_FORMAT.
// False (reported) for a value that is not one of the names.
template <typename T>
bool choose(const po::variables_map &vm, const char *cmd, const char *option, const char *env_name,
            const char *names, bool (*parse_value)(const std::string &, T *), void (*apply)(T),
            bool *chosen) {
    std::string v = vm[option].as<std::string>();
    std::string from = std::string("--") + option;
    const char *env = std::getenv(env_name);
    if (vm[option].defaulted() && env && *env) {
        v = env;
        from = env_name;
    }
    T value;
    if (!parse_value(v, &value)) {
        std::fprintf(stderr, "cdcflow %s: %s: %s is not one of %s\n", cmd, from.c_str(), quote(v).c_str(),
                     names);
        return false;
    }
    apply(value);
    *chosen = !vm[option].defaulted() || (env && *env);
    return true;
}

} // namespace

// Parses argv for one command. Returns -1 to go on, else an exit code
// (--help printed, or a usage error reported).
int parse_command_line(int argc, char **argv, const char *usage, po::options_description &opts,
                       po::positional_options_description &pos, po::variables_map &vm) {
    opts.add_options()("help,h", "show this help")(
        "log-level", po::value<std::string>()->default_value("info"),
        "debug, info, warn or error (else CDCFLOW_LOG_LEVEL, else the file's log.level)")(
        "log-format", po::value<std::string>()->default_value("text"),
        "text, json (one JSON object a line) or auto (text) (else CDCFLOW_LOG_FORMAT, else the file's "
        "log.format)");
    try {
        po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
        if (vm.count("help")) {
            std::cout << "usage: " << usage << "\n\n" << opts << "\n";
            return kExitOk;
        }
        po::notify(vm);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cdcflow %s: %s (usage: %s)\n", argv[0], e.what(), usage);
        return kExitUsage;
    }
    if (!choose<cdcflow_log_level>(vm, argv[0], "log-level", "CDCFLOW_LOG_LEVEL", "debug, info, warn, error",
                                   parse_log_level, set_log_level, &g_level_chosen) ||
        !choose<LogFormat>(vm, argv[0], "log-format", "CDCFLOW_LOG_FORMAT", "text, json, auto",
                           parse_log_format, set_log_format, &g_format_chosen))
        return kExitUsage;
    return -1;
}

// Load + check, nothing created: the checked pipeline of verify and
// migrate --cleanup (3 for a bad file, as run and validate).
Result<PipelineDef> load_checked(const std::string &file, PluginRegistry &registry) {
    auto def = read_pipeline(PipelineSource::file(file));
    if (!def) return def.status();
    apply_file_log(def.value(), {g_level_chosen, g_format_chosen});
    auto loaded = load_and_check(def.value(), registry);
    if (!loaded) return loaded.status();
    return std::move(def.value());
}

namespace {

// The CLI's way into the embedded host: its plugin folders, and the log
// choices of its command line (they win over the file's `log:`).
Result<std::unique_ptr<embed::Host>> open_host(const std::string &file) {
    return embed::internal::open_for_cli(file, {g_level_chosen, g_format_chosen});
}

// An open that failed: the error line, and its exit code (3: the file's
// fault, else 1), as the embedded host answers it.
int open_failed(const Status &st) {
    const int code = embed::Host::exit_code(st);
    log_failure(st.message(), "error", {{"exit_code", code}});
    return code;
}

} // namespace

int cmd_run(int argc, char **argv) {
    const char *usage = "cdcflow run PIPELINE.yaml [--drain] [--http ADDR]";
    po::options_description opts("run options");
    opts.add_options()("pipeline", po::value<std::string>()->required(), "pipeline YAML file")(
        "drain", po::bool_switch(), "exit 0 once the source is empty and everything in flight is committed")(
        "http", po::value<std::string>(),
        "serve /health, /ready and /metrics on ADDR: HOST:PORT (IPv4 or localhost), [IPv6]:PORT, :PORT or "
        "PORT (127.0.0.1); port 0 picks a free one. Overrides the pipeline file's http.listen");
    po::positional_options_description pos;
    pos.add("pipeline", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    // The address is checked before anything is loaded or opened.
    std::optional<std::string> http_addr;
    if (vm.count("http")) {
        http_addr = vm["http"].as<std::string>();
        if (auto a = http::parse_address(*http_addr); !a) {
            std::fprintf(stderr, "cdcflow run: --http: %s\n", a.status().message().c_str());
            return kExitUsage;
        }
    }
    return run_pipeline("run", vm["pipeline"].as<std::string>(), vm["drain"].as<bool>(), http_addr, nullptr);
}

int run_pipeline(const char *cmd, const std::string &file, bool drain, std::optional<std::string> http_addr,
                 RunObserver *observer) {
    // Before any other thread exists (a plugin may start one at create), so
    // that every thread inherits the blocked signal mask and only the
    // watcher sees SIGINT/SIGTERM. A signal during start-up waits for it.
    embed::Host *current = nullptr;
    std::mutex current_mu;
    bool stop_asked = false;
    auto signals =
        std::make_unique<SignalWatcher>(Settings{}.shutdown_timeout_ms, kExitTimeout, [&](const char *) {
            std::lock_guard lock(current_mu);
            stop_asked = true;
            if (current) current->request_stop();
        });

    auto opened = open_host(file);
    if (!opened) return open_failed(opened.status());
    embed::Host &h = *opened.value();
    signals->set_timeout(embed::internal::def_of(h).settings.shutdown_timeout_ms);
    {
        std::lock_guard lock(current_mu);
        current = &h;
        if (stop_asked) h.request_stop(); // the run then ends at once
    }
    // Whatever way this function returns, a signal must not reach the
    // Host once it is gone (it is destroyed before the watcher).
    struct Forget {
        std::mutex &mu;
        embed::Host *&current;
        ~Forget() {
            std::lock_guard lock(mu);
            current = nullptr;
        }
    } forget{current_mu, current};

    // Bound before the pipeline starts, so that an address in use is an
    // error at once ("" serves the file's http.listen, if any).
    if (auto bound = h.serve(http_addr.value_or("")); !bound) {
        std::fprintf(stderr, "cdcflow %s: %s%s\n", cmd, bound.status().message().c_str(),
                     http_addr ? " (--http)" : "");
        return kExitUsage;
    }
    if (observer)
        if (int rc = observer->before(h); rc >= 0) return rc;

    // The run's end, on the host's runner thread: the endpoints answered
    // through the drain and are stopped by now; the "stop" log line follows.
    h.on_run_end([&] {
        if (observer) observer->finished(h);
        const embed::RunTotals t = h.totals();
        // "dropped" comes last: scripts that read the line up to "duplicates" keep working.
        // The name quoted as in the log: a pipeline name may hold a newline (YAML
        // "\n"), which would split the line scripts read.
        std::printf("pipeline %s: %llu events: %llu applied, %llu rejected, %llu duplicates, %llu dropped\n",
                    quote(h.name()).c_str(), static_cast<unsigned long long>(t.events),
                    static_cast<unsigned long long>(t.applied), static_cast<unsigned long long>(t.rejected),
                    static_cast<unsigned long long>(t.duplicates),
                    static_cast<unsigned long long>(t.dropped));
        std::fflush(stdout);
    });
    // Run to the end: drained, stopped by a signal, or failed. How it went
    // is the host's run_end (its "stop" log line is written by now).
    Status st = drain ? h.drain(std::chrono::milliseconds(0)) : h.start();
    if (!drain && st) st = h.wait(std::chrono::milliseconds(0));
    const std::optional<embed::RunEnd> end = h.run_end();
    if (!end) { // never ran: a thread that could not be created
        log_failure(st.message(), "error", {{"exit_code", kExitFailure}});
        return kExitFailure;
    }
    int code = end->exit_code;
    if (observer) code = observer->after(h, end->status, code, end->stop_asked);
    return code;
}

int cmd_validate(int argc, char **argv) {
    const char *usage = "cdcflow validate PIPELINE.yaml";
    po::options_description opts("validate options");
    opts.add_options()("pipeline", po::value<std::string>()->required(), "pipeline YAML file");
    po::positional_options_description pos;
    pos.add("pipeline", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    std::string file = vm["pipeline"].as<std::string>();
    auto opened = open_host(file);
    if (!opened) return open_failed(opened.status());
    const PipelineDef &def = embed::internal::def_of(*opened.value());
    std::printf("%s: pipeline '%s' is valid (%zu stages)\n", file.c_str(), def.name.c_str(),
                def.stages.size());
    return kExitOk;
}

namespace {

// A key's default as `plugins` shows it: never a secret's (it may be a real
// credential baked into the plugin); "" for an empty string default.
std::string default_text(const KeySpec &k) {
    if (!k.default_value) return "";
    if (k.secret) return kSecretShown;
    return k.default_value->empty() ? "\"\"" : *k.default_value;
}

// What values a key takes beyond its type: "1 to 60000", "at least 0",
// "one of: normal, full".
std::string allowed_text(const KeySpec &k, const char *quote) {
    if (k.min && k.max) return *k.min + " to " + *k.max;
    if (k.min) return "at least " + *k.min;
    if (k.max) return "at most " + *k.max;
    std::string out;
    for (const std::string &c : k.choices)
        out += (out.empty() ? "one of: " : ", ") + std::string(quote) + c + quote;
    return out;
}

std::string notes_text(const KeySpec &k) {
    std::string out;
    for (auto [on, word] :
         {std::pair{k.required, "required"}, {k.secret, "secret"}, {k.deprecated, "deprecated"}})
        if (on) out += (out.empty() ? "" : ", ") + std::string(word);
    return out;
}

// A Markdown table cell: one line, no column breaks.
std::string md_cell(std::string s) {
    std::string out;
    for (char c : s) {
        if (c == '|')
            out += "\\|";
        else if (c == '\n' || c == '\r')
            out += ' ';
        else
            out += c;
    }
    return out;
}

// Code in a cell; a backtick inside takes a double-backtick span.
std::string md_code(const std::string &s) {
    if (s.empty()) return "";
    std::string cell = md_cell(s);
    return cell.find('`') == std::string::npos ? "`" + cell + "`" : "`` " + cell + " ``";
}

// The key table a plugin README carries (between its generated-table markers).
std::string markdown_table(const PluginSchema &schema) {
    std::string out = "| key | type | default | allowed | notes | description |\n|---|---|---|---|---|---|\n";
    for (const KeySpec &k : schema.keys) {
        std::string def = default_text(k);
        out += "| " + md_code(k.name) + " | " + config_type_name(k.type) + " | " +
               (k.secret && k.default_value ? md_cell(def) : md_code(def)) + " | " +
               md_cell(allowed_text(k, "`")) + " | " + notes_text(k) + " | " + md_cell(k.description) +
               " |\n";
    }
    if (schema.keys.empty()) out = "This plugin takes no config keys.\n";
    return out;
}

void print_plugin(const PluginRegistry::Entry &e) {
    const cdcflow_plugin *d = e.plugin->desc;
    std::printf("%s  (%s, ABI %u, version %s)\n  %s\n  file: %s\n", d->name, kind_name(d->kind),
                d->abi_version, d->version ? d->version : "?", d->description ? d->description : "",
                e.file.c_str());
    for (const KeySpec &k : e.plugin->schema.keys) {
        std::string facts;
        auto add = [&](const std::string &f) {
            if (!f.empty()) facts += (facts.empty() ? "" : "; ") + f;
        };
        add(notes_text(k));
        if (k.default_value) add("default " + default_text(k));
        add(allowed_text(k, "'"));
        std::printf("    %-22s %-6s %s%s%s\n", k.name.c_str(), config_type_name(k.type), facts.c_str(),
                    facts.empty() ? "" : "  ", k.description.c_str());
    }
}

} // namespace

int cmd_plugins(int argc, char **argv) {
    const char *usage = "cdcflow plugins [--path DIR]... [--markdown [NAME]]";
    po::options_description opts("plugins options");
    opts.add_options()("path", po::value<std::vector<std::string>>()->composing(), "also look in DIR")(
        "markdown", po::value<std::string>()->implicit_value(""),
        "print each plugin's config keys as a Markdown table (only NAME's table when given: what its README "
        "carries)");
    po::positional_options_description pos;
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    PluginRegistry registry;
    if (vm.count("path")) registry.add_front(vm["path"].as<std::vector<std::string>>());

    if (vm.count("markdown") && !vm["markdown"].as<std::string>().empty()) {
        const std::string name = vm["markdown"].as<std::string>();
        auto p = registry.find(name);
        if (!p) {
            std::fprintf(stderr, "cdcflow plugins: %s\n", p.status().message().c_str());
            return kExitInvalid;
        }
        std::printf("%s", markdown_table(p.value()->schema).c_str());
        return kExitOk;
    }
    auto entries = registry.scan();
    int broken = 0;
    for (auto &e : entries) {
        if (!e.plugin) {
            std::printf("! %s\n", e.error.c_str());
            ++broken;
        } else if (vm.count("markdown")) {
            const cdcflow_plugin *d = e.plugin->desc;
            std::printf("## %s\n\n%s (%s)\n\n%s\n", d->name, d->description ? d->description : "",
                        kind_name(d->kind), markdown_table(e.plugin->schema).c_str());
        } else {
            print_plugin(e);
        }
    }
    if (entries.empty()) {
        std::string dirs;
        for (auto &d : registry.dirs())
            dirs += " " + d;
        std::fprintf(stderr, "cdcflow plugins: no plugins found in:%s\n", dirs.c_str());
        return kExitInvalid;
    }
    return broken ? kExitInvalid : kExitOk;
}

int cmd_status(int argc, char **argv) {
    const char *usage = "cdcflow status [ADDR] [--watch] [--interval SEC] [--metrics]";
    po::options_description opts("status options");
    opts.add_options()("address", po::value<std::string>()->default_value("127.0.0.1:9464"),
                       "the host's --http address (same forms as run --http)")(
        "watch", po::bool_switch(), "refresh until SIGINT/SIGTERM (in place on a terminal)")(
        "interval", po::value<double>(),
        "seconds between readings; rates come from two readings (default with --watch: 1; without "
        "--watch one reading and no rates, unless given)")("metrics", po::bool_switch(),
                                                           "also print the raw /metrics page");
    po::positional_options_description pos;
    pos.add("address", 1);
    po::variables_map vm;
    if (int rc = parse_command_line(argc, argv, usage, opts, pos, vm); rc >= 0) return rc;
    StatusOptions so;
    auto a = http::parse_address(vm["address"].as<std::string>());
    if (!a || a->port == 0) {
        std::string why = a ? "port 0 is for listening, not for connecting" : a.status().message();
        std::fprintf(stderr, "cdcflow status: %s (usage: %s)\n", why.c_str(), usage);
        return kExitUsage;
    }
    so.addr = *a;
    so.watch = vm["watch"].as<bool>();
    so.metrics = vm["metrics"].as<bool>();
    if (vm.count("interval")) {
        double s = vm["interval"].as<double>();
        if (!(s >= 0.05 && s <= 3600)) {
            std::fprintf(stderr, "cdcflow status: --interval must be from 0.05 to 3600 seconds (usage: %s)\n",
                         usage);
            return kExitUsage;
        }
        so.interval_s = s;
    }
    return run_status(so);
}

} // namespace cdcflow::cli

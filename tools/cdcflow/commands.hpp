// The subcommands of the cdcflow CLI and the exit codes they share.
#pragma once

#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include <cdcflow/host.h>

#include <boost/program_options.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::embed {
class Host;
}

namespace cdcflow::cli {

// Exit codes (README.md, "Exit codes"): cdcflow/host.h's, which the
// embedded host returns too.
constexpr int kExitOk = CDCFLOW_EXIT_OK;
constexpr int kExitFailure = CDCFLOW_EXIT_FAILURE; // the pipeline failed while running
constexpr int kExitUsage = CDCFLOW_EXIT_USAGE;     // bad command line
constexpr int kExitInvalid = CDCFLOW_EXIT_INVALID; // invalid pipeline file, plugin or config
constexpr int kExitTimeout = CDCFLOW_EXIT_TIMEOUT; // graceful shutdown did not finish in time
constexpr int kExitRefused = CDCFLOW_EXIT_REFUSED; // produce: some input lines were refused
constexpr int kExitOwned =
    CDCFLOW_EXIT_OWNED; // another host owns the checkpoint (settings.when_owned: refuse)

struct Command {
    const char *name;
    const char *summary;
    int (*fn)(int argc, char **argv); // argv[0] is the command name
};

const std::vector<Command> &commands();
void print_usage(std::FILE *out);
void print_version();

int cmd_run(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_produce(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_test(int argc, char **argv);

// Parses argv for one command (adding --help, --log-level, --log-format).
// Returns -1 to go on, else an exit code (--help printed, or a usage error
// reported).
int parse_command_line(int argc, char **argv, const char *usage,
                       boost::program_options::options_description &opts,
                       boost::program_options::positional_options_description &pos,
                       boost::program_options::variables_map &vm);

// A pipeline file loaded and checked against its plugins' schemas (defaults
// filled in), nothing created or started; the file's `log:` applied.
// CDCFLOW_ERR_CONFIG for a bad file (exit 3).
Result<host::PipelineDef> load_checked(const std::string &file, host::PluginRegistry &registry);

// What a command adds to run's machinery (run_pipeline).
class RunObserver {
public:
    virtual ~RunObserver() = default;
    // The pipeline is opened, not started (main thread): -1 to go on, else
    // the exit code.
    virtual int before(embed::Host &) { return -1; }
    // The run ended (on the host's runner thread, before the totals line
    // and the "stop" log line).
    virtual void finished(embed::Host &) {}
    // The exit code (main thread), given the run's status, its exit code
    // (`code`) and whether a signal stopped it.
    virtual int after(embed::Host &, const Status &, int code, bool /*stop_asked*/) { return code; }
};

// `cdcflow run`'s machinery over the embedded host (embed::Host, the same
// open, run, stop and exit codes as an embedding application's): signals,
// the HTTP endpoints (`http_addr`, else the file's http.listen), the totals
// line; `cmd` names the command in messages.
int run_pipeline(const char *cmd, const std::string &file, bool drain, std::optional<std::string> http_addr,
                 RunObserver *observer);

} // namespace cdcflow::cli

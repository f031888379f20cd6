// The subcommands of the cdcflow CLI and the exit codes they share.
#pragma once

#include <cstdio>
#include <vector>

namespace cdcflow::cli {

// Exit codes (README.md, "Exit codes").
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // the pipeline failed while running
constexpr int kExitUsage = 2;    // bad command line
constexpr int kExitInvalid = 3;  // invalid pipeline file, plugin or config
constexpr int kExitTimeout = 4;  // graceful shutdown did not finish in time
constexpr int kExitRefused = 5;  // produce: some input lines were refused
constexpr int kExitOwned = 6;    // another host owns the checkpoint (settings.when_owned: refuse)

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

} // namespace cdcflow::cli

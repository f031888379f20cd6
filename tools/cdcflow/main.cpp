// cdcflow: the host CLI. See README.md, "Command line" for the contract.
#include "commands.hpp"

#include "log.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <new>
#include <string>
#include <unistd.h>

namespace {

// Before anything can write or open a file. A closed standard stream would
// let the next open() (a database, a plugin) take fd 0, 1 or 2, and log
// lines would be written into it: park /dev/null there instead. And a
// stderr or stdout whose reader went away must be a failed write (EPIPE,
// counted as a dropped log line), not SIGPIPE killing the host mid-batch.
void guard_standard_streams() {
    for (int fd = 0; fd <= 2; ++fd)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int null = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (null >= 0 && null != fd) {
                dup2(null, fd);
                close(null);
            }
        }
    std::signal(SIGPIPE, SIG_IGN);
}

int run_main(int argc, char **argv) {
    using namespace cdcflow::cli;
    if (argc < 2) {
        print_usage(stderr);
        return kExitUsage;
    }
    std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        print_usage(stdout);
        return kExitOk;
    }
    if (cmd == "--version" || cmd == "-V" || cmd == "version") {
        print_version();
        return kExitOk;
    }
    for (const Command &c : commands())
        if (cmd == c.name) return c.fn(argc - 1, argv + 1);
    std::fprintf(stderr, "cdcflow: unknown command '%s' (try 'cdcflow --help')\n", cmd.c_str());
    return kExitUsage;
}

} // namespace

int main(int argc, char **argv) {
    guard_standard_streams();
    // What no command caught (memory or threads that ran out where the
    // command could not answer it): one line and exit 1, not std::terminate
    // and SIGABRT.
    try {
        return run_main(argc, argv);
    } catch (const std::bad_alloc &) {
        cdcflow::host::log_out_of_memory();
    } catch (const std::exception &e) {
        try {
            cdcflow::host::log_failure(e.what());
        } catch (...) {
            cdcflow::host::log_out_of_memory(); // no memory for the message's copy
        }
    }
    return cdcflow::cli::kExitFailure;
}

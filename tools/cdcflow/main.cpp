// cdcflow: the host CLI. See README.md, "Command line" for the contract.
#include "commands.hpp"

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char **argv) {
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

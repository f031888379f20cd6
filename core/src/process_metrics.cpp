#include "process_metrics.hpp"

#include "base/process.hpp"
#include "log.hpp"

#include <cdcflow/plugin.h>

#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

namespace cdcflow::host {

namespace {

struct ProcStat {
    bool ok = false;
    double utime = 0, stime = 0; // clock ticks
    double start = 0;            // clock ticks after boot
    double vsize = 0;            // bytes
};

ProcStat read_stat() {
    ProcStat st;
    std::ifstream f("/proc/self/stat");
    std::string line;
    if (!std::getline(f, line)) return st;
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields after the last ')' are fixed.
    size_t close = line.rfind(')');
    if (close == std::string::npos) return st;
    std::istringstream in(line.substr(close + 2));
    std::string field;
    // Field 3 is the state; fields 14, 15, 22 and 23 are what we read.
    for (int n = 3; n <= 23 && in >> field; ++n) {
        if (n == 14) st.utime = std::strtod(field.c_str(), nullptr);
        if (n == 15) st.stime = std::strtod(field.c_str(), nullptr);
        if (n == 22) st.start = std::strtod(field.c_str(), nullptr);
        if (n == 23) {
            st.vsize = std::strtod(field.c_str(), nullptr);
            st.ok = true;
        }
    }
    return st;
}

// Boot time, seconds since the epoch (/proc/stat btime).
double boot_time() {
    std::ifstream f("/proc/stat");
    std::string key;
    double value = 0;
    while (f >> key) {
        if (key == "btime") {
            f >> value;
            return value;
        }
        f.ignore(1 << 20, '\n');
    }
    return 0;
}

double open_fds() {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    double n = 0;
    while (dirent *e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n - 1; // the directory's own descriptor
}

} // namespace

int add_process_metrics(Metrics &m) {
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double boot = boot_time();
    return m.add_collector([=](Collect &out) {
        ProcStat st = read_stat();
        if (st.ok && ticks > 0) {
            out.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", {},
                        (st.utime + st.stime) / ticks);
            // The soft memory limit reads the same number (base/process.hpp).
            out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", {},
                      static_cast<double>(base::resident_bytes()));
            out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", {}, st.vsize);
            if (boot > 0)
                out.gauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", {},
                          boot + st.start / ticks);
        }
        if (double fds = open_fds(); fds >= 0)
            out.gauge("process_open_fds", "Number of open file descriptors.", {}, fds);
        rlimit lim{};
        if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
            out.gauge("process_max_fds", "Maximum number of open file descriptors.", {},
                      static_cast<double>(lim.rlim_cur));
        const LogStats logs = log_stats();
        out.counter("cdcflow_log_lines_total", "Log lines written to stderr.", {},
                    static_cast<double>(logs.written));
        out.counter("cdcflow_log_lines_dropped_total",
                    "Log lines dropped because stderr would not take them (a full pipe nobody reads).", {},
                    static_cast<double>(logs.dropped));
        out.counter("cdcflow_log_lines_suppressed_total",
                    "Plugin log lines held back by the per-stage rate limit (log.plugin_lines_per_second).",
                    {}, static_cast<double>(logs.suppressed));
        out.gauge(
            "cdcflow_build_info", "The cdcflow version and plugin ABI range of this host (always 1).",
            {{"version", CDCFLOW_VERSION},
             {"abi", std::to_string(CDCFLOW_ABI_VERSION_MIN) + ".." + std::to_string(CDCFLOW_ABI_VERSION)}},
            1);
    });
}

} // namespace cdcflow::host

#include "signal_watcher.hpp"

#include "host_api.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <poll.h>
#include <pthread.h>
#include <string>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace cdcflow::cli {

using host::log_line;

SignalWatcher::SignalWatcher(uint32_t timeout_ms, int exit_code, std::function<void(const char *)> on_stop)
    : timeout_ms_(timeout_ms), exit_code_(exit_code), on_stop_(std::move(on_stop)) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC);
    if (signal_fd_ < 0 || wake_fd_ < 0) {
        // Without them SIGINT/SIGTERM stay blocked: the process can still be
        // stopped with SIGKILL, and nothing is lost. Say so.
        log_line(CDCFLOW_LOG_WARN, "host",
                 std::string("cannot watch for SIGINT/SIGTERM (") + std::strerror(errno) +
                     "): stop this process with SIGKILL; uncommitted work is replayed on the next start");
        return;
    }
    thread_ = std::thread([this] { loop(); });
}

SignalWatcher::~SignalWatcher() {
    if (thread_.joinable()) {
        uint64_t one = 1;
        while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
        }
        thread_.join();
    }
    if (signal_fd_ >= 0) close(signal_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
}

void SignalWatcher::loop() {
    bool stopping = false;
    for (;;) {
        pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        // Before the first signal: wait for ever. After it: the shutdown timeout.
        const uint32_t timeout_ms = timeout_ms_.load();
        int rc = poll(fds, 2, stopping ? static_cast<int>(std::min<uint32_t>(timeout_ms, INT32_MAX)) : -1);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return; // the command is done
        if (rc == 0) {
            log_line(CDCFLOW_LOG_ERROR, "host",
                     "shutdown did not finish within " + std::to_string(timeout_ms) +
                         " ms; exiting: uncommitted work will be replayed from the checkpoint");
            _exit(exit_code_);
        }
        signalfd_siginfo info{};
        if (read(signal_fd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) continue;
        const char *name = info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (stopping) {
            log_line(CDCFLOW_LOG_WARN, "host",
                     std::string("second signal (") + name +
                         "): exiting now; uncommitted work will be replayed");
            _exit(exit_code_);
        }
        stopping = true;
        log_line(CDCFLOW_LOG_INFO, "host",
                 std::string(name) + ": draining in-flight batches (timeout " +
                     std::to_string(timeout_ms_.load()) + " ms)");
        on_stop_(name);
    }
}

} // namespace cdcflow::cli

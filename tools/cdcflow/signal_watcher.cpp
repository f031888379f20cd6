#include "signal_watcher.hpp"

#include "host_api.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
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

namespace {

// The last words before _exit: another thread may hold the log's lock (or
// be blocked writing to a full stderr pipe), so log_last_words writes
// directly, and only if stderr can take it now. Exiting matters more than
// the message.
void say_and_exit(int code, const std::string &msg, const char *how) {
    host::log_last_words(msg, "stop", {{"outcome", how}, {"exit_code", code}});
    _exit(code);
}

} // namespace

void SignalWatcher::loop() {
    using Clock = std::chrono::steady_clock;
    std::optional<Clock::time_point> first_signal;
    for (;;) {
        pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        // Before the first signal: wait for ever. After it: until the
        // shutdown timeout, counted from that signal (re-read each time, as
        // the pipeline file may set it after the signal came).
        int wait_ms = -1;
        if (first_signal) {
            auto deadline = *first_signal + std::chrono::milliseconds(timeout_ms_.load());
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            wait_ms = static_cast<int>(std::clamp<int64_t>(left, 0, INT32_MAX));
        }
        int rc = poll(fds, 2, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return; // the command is done
        if (rc == 0)
            say_and_exit(exit_code_,
                         "shutdown did not finish within " + std::to_string(timeout_ms_.load()) +
                             " ms; exiting: uncommitted work will be replayed from the checkpoint",
                         "timeout");
        signalfd_siginfo info{};
        if (read(signal_fd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) continue;
        const char *name = info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (first_signal)
            say_and_exit(exit_code_,
                         std::string("second signal (") + name +
                             "): exiting now; uncommitted work will be replayed",
                         "second_signal");
        first_signal = Clock::now();
        log_line(CDCFLOW_LOG_INFO, "host",
                 std::string(name) + ": draining in-flight batches (timeout " +
                     std::to_string(timeout_ms_.load()) + " ms)",
                 "signal", {{"signal", name}});
        on_stop_(name);
    }
}

} // namespace cdcflow::cli

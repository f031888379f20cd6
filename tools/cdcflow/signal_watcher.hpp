// SignalWatcher: SIGINT/SIGTERM handling for `cdcflow run`, on a thread of
// its own that is joined before the command returns (nothing outlives the
// objects it calls into).
//
// The first signal calls on_stop (the pipeline drains and stops). Then a
// second signal, or the shutdown timeout passing before the watcher is
// destroyed, exits the process at once with exit_code: data is safe either
// way, uncommitted work is replayed from the checkpoint on the next start.
//
// Construct it before any other thread starts: it blocks both signals in
// the calling thread, and threads started later inherit that mask, so only
// the watcher sees them (through a signalfd).
//
// Thread-safety: construct and destroy on one thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

namespace cdcflow::cli {

class SignalWatcher {
public:
    SignalWatcher(uint32_t timeout_ms, int exit_code, std::function<void(const char *signal_name)> on_stop);
    ~SignalWatcher();
    SignalWatcher(const SignalWatcher &) = delete;
    SignalWatcher &operator=(const SignalWatcher &) = delete;

    // The pipeline file's own shutdown timeout, once it is known.
    void set_timeout(uint32_t timeout_ms) { timeout_ms_.store(timeout_ms); }

private:
    void loop();

    std::atomic<uint32_t> timeout_ms_;
    int exit_code_;
    std::function<void(const char *)> on_stop_;
    int signal_fd_ = -1;
    int wake_fd_ = -1; // written by the destructor
    std::thread thread_;
};

} // namespace cdcflow::cli

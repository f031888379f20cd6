// The test sinks' checkpoint file (file_sink, deferred_sink): OUTPUT.checkpoint
// holds the last durable offset as text, replaced atomically (write, fsync,
// rename), so a kill -9 at any instant leaves the old or the new one.
#pragma once

#include <cdcflow/sdk.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <string>
#include <unistd.h>

namespace test_sinks {

// Reports the checkpoint in `output`.checkpoint, if there is one (partition "").
inline void report_checkpoint(const std::string &output,
                              const std::function<void(const cdcflow_position &)> &emit) {
    std::FILE *f = std::fopen((output + ".checkpoint").c_str(), "r");
    if (!f) return;
    long long off = 0;
    if (std::fscanf(f, "%lld", &off) == 1) emit(cdcflow_position{{"", 0}, off});
    std::fclose(f);
}

// Replaces `output`.checkpoint with `offset`; throws cdcflow::Error on failure.
inline void write_checkpoint(const std::string &output, int64_t offset) {
    std::string tmp = output + ".checkpoint.tmp";
    std::string cp = std::to_string(offset) + "\n";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok =
        fd >= 0 && ::write(fd, cp.data(), cp.size()) == static_cast<ssize_t>(cp.size()) && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok || std::rename(tmp.c_str(), (output + ".checkpoint").c_str()) != 0)
        throw cdcflow::Error(CDCFLOW_ERR_IO, "checkpoint " + output + ": " + std::strerror(errno));
}

} // namespace test_sinks

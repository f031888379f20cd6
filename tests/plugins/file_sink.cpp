// file_sink: a test sink. With `output` set, appends one line per event
// ("offset status id reason") and keeps its checkpoint in OUTPUT.checkpoint,
// written atomically (write + fsync + rename) after the lines are fsynced: a
// kill -9 at any instant leaves lines for every checkpointed offset, and at
// most some lines past it (which the test then sees replayed, i.e. at-least-
// once for this sink; exactly-once needs one transaction, see
// projection_sink). Without `output` it only counts.
#include <cdcflow/sdk.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

class FileSink : public cdcflow::Sink {
public:
    static constexpr const char *kName = "file_sink";
    static constexpr const char *kDescription = "test sink: appends events to a file, checkpoint beside it";
    static constexpr cdcflow_config_key kConfig[] = {
        {"output", CDCFLOW_CONFIG_STRING, "\"\"", 0, "file to append events to (empty: count only)"},
        {"slow_us", CDCFLOW_CONFIG_INT, "0", 0, "sleep this long per batch (back-pressure tests)"},
        {"busy_starts", CDCFLOW_CONFIG_INT, "0", 0, "start() fails transiently this many times first"},
        {"drop_every", CDCFLOW_CONFIG_INT, "0", 0,
         "drop OK events whose offset is a multiple of this, unwritten"},
    };

    FileSink(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Sink(ctx), output_(cfg.str("output")), slow_us_(cfg.i64("slow_us")),
          busy_starts_(cfg.i64("busy_starts")), drop_every_(cfg.i64("drop_every")) {
        counted_ = ctx.counter("counted", "events seen");
        max_batch_ = ctx.gauge("max_batch", "most events seen in one batch (adaptive batching tests)");
    }
    ~FileSink() override {
        if (fd_ >= 0) ::close(fd_);
    }

    void start() override {
        if (busy_starts_-- > 0) throw cdcflow::Error(CDCFLOW_ERR_RETRY, "database is locked (injected)");
        if (output_.empty()) return;
        fd_ = ::open(output_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd_ < 0)
            throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot open " + output_ + ": " + std::strerror(errno));
    }

    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override {
        if (output_.empty()) return;
        std::FILE *f = std::fopen((output_ + ".checkpoint").c_str(), "r");
        if (!f) return;
        long long off = 0;
        if (std::fscanf(f, "%lld", &off) == 1) emit(cdcflow_position{{"", 0}, off});
        std::fclose(f);
    }

    void process(cdcflow::Batch &batch) override {
        counted_.add(batch.size());
        if (batch.size() > max_batch_seen_) max_batch_.set(max_batch_seen_ = batch.size());
        if (slow_us_) ::usleep(static_cast<useconds_t>(slow_us_));
        if (fd_ < 0 || batch.empty()) return;
        std::string buf;
        for (uint32_t i = 0; i < batch.size(); ++i) {
            const cdcflow_event &e = batch[i];
            // A sink may filter too: what it drops it does not write.
            if (drop_every_ && e.status == CDCFLOW_EVENT_OK && e.position.offset % drop_every_ == 0) {
                batch.drop(i);
                continue;
            }
            buf += std::to_string(e.position.offset) + " " + std::to_string(e.status) + " " +
                   std::string(cdcflow::sv(e.event_id)) + " " + std::string(cdcflow::sv(e.reject_reason)) +
                   "\n";
        }
        if (::write(fd_, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()) || ::fsync(fd_) != 0)
            throw cdcflow::Error(CDCFLOW_ERR_IO, "write " + output_ + ": " + std::strerror(errno));
        std::string tmp = output_ + ".checkpoint.tmp";
        std::string cp = std::to_string(batch[batch.size() - 1].position.offset) + "\n";
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        bool ok = fd >= 0 && ::write(fd, cp.data(), cp.size()) == static_cast<ssize_t>(cp.size()) &&
                  ::fsync(fd) == 0;
        if (fd >= 0) ::close(fd);
        if (!ok || std::rename(tmp.c_str(), (output_ + ".checkpoint").c_str()) != 0)
            throw cdcflow::Error(CDCFLOW_ERR_IO, "checkpoint " + output_ + ": " + std::strerror(errno));
    }

private:
    std::string output_;
    int64_t slow_us_;
    int64_t busy_starts_;
    int64_t drop_every_;
    int fd_ = -1;
    cdcflow::Metric counted_, max_batch_;
    uint32_t max_batch_seen_ = 0;
};

CDCFLOW_PLUGIN(FileSink)

// file_sink: a test sink. With `output` set, appends one line per event
// ("offset status id reason") and keeps its checkpoint in OUTPUT.checkpoint,
// written atomically (write + fsync + rename) after the lines are fsynced: a
// kill -9 at any instant leaves lines for every checkpointed offset, and at
// most some lines past it (which the test then sees replayed, i.e. at-least-
// once for this sink; exactly-once needs one transaction, see
// projection_sink). Without `output` it only counts. poison_offsets /
// poison_every make process fail with CDCFLOW_ERR_EVENT (bisection tests);
// busy_batches / busy_ms make it fail transiently (retry and breaker tests).
#include "checkpoint_file.hpp"

#include <cdcflow/sdk.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <set>
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
        {"poison_offsets", CDCFLOW_CONFIG_STRING, "\"\"", 0,
         "comma-separated offsets: process fails with ERR_EVENT, writing nothing, while the batch holds "
         "one of them as an OK event (a poison event)"},
        {"poison_every", CDCFLOW_CONFIG_INT, "0", 0,
         "likewise for every OK event whose offset is a multiple of this"},
        {"busy_batches", CDCFLOW_CONFIG_INT, "0", 0,
         "process fails transiently (ERR_RETRY, writing nothing) this many times first"},
        {"busy_ms", CDCFLOW_CONFIG_INT, "0", 0,
         "process fails transiently for this long after its first call (breaker tests)"},
    };

    FileSink(const cdcflow::Config &cfg, cdcflow::Context ctx)
        : Sink(ctx), output_(cfg.str("output")), slow_us_(cfg.i64("slow_us")),
          busy_starts_(cfg.i64("busy_starts")), drop_every_(cfg.i64("drop_every")),
          poison_every_(cfg.i64("poison_every")), busy_batches_(cfg.i64("busy_batches")),
          busy_ms_(cfg.i64("busy_ms")) {
        std::string list(cfg.str("poison_offsets"));
        for (size_t at = 0; at < list.size();) {
            size_t comma = list.find(',', at);
            if (comma == std::string::npos) comma = list.size();
            std::string item = list.substr(at, comma - at);
            char *end = nullptr;
            long long off = std::strtoll(item.c_str(), &end, 10);
            if (item.empty() || *end != '\0')
                throw cdcflow::Error(CDCFLOW_ERR_CONFIG, "poison_offsets: not an offset: '" + item + "'");
            poison_.insert(off);
            at = comma + 1;
        }
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
        if (!output_.empty()) test_sinks::report_checkpoint(output_, emit);
    }

    void process(cdcflow::Batch &batch) override {
        if (busy_batches_ > 0) {
            --busy_batches_;
            throw cdcflow::Error(CDCFLOW_ERR_RETRY, "database is locked (injected)");
        }
        if (busy_ms_ > 0) {
            auto now = std::chrono::steady_clock::now();
            if (first_call_ == std::chrono::steady_clock::time_point{}) first_call_ = now;
            if (now - first_call_ < std::chrono::milliseconds(busy_ms_))
                throw cdcflow::Error(CDCFLOW_ERR_RETRY, "database is locked (injected)");
        }
        // A poison event fails the whole call before anything is written (a
        // sink rolls back): the host isolates it and calls again.
        for (uint32_t i = 0; i < batch.size(); ++i) {
            const cdcflow_event &e = batch[i];
            if (e.status != CDCFLOW_EVENT_OK) continue; // a dead letter is written, not applied
            int64_t off = e.position.offset;
            if (poison_.count(off) || (poison_every_ && off % poison_every_ == 0))
                throw cdcflow::Error(CDCFLOW_ERR_EVENT,
                                     "cannot apply offset " + std::to_string(off) + " (injected poison)");
        }
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
        test_sinks::write_checkpoint(output_, batch[batch.size() - 1].position.offset);
    }

private:
    std::string output_;
    int64_t slow_us_;
    int64_t busy_starts_;
    int64_t drop_every_;
    int64_t poison_every_;
    int64_t busy_batches_;
    int64_t busy_ms_;
    std::set<int64_t> poison_;
    std::chrono::steady_clock::time_point first_call_{};
    int fd_ = -1;
    cdcflow::Metric counted_, max_batch_;
    uint32_t max_batch_seen_ = 0;
};

CDCFLOW_PLUGIN(FileSink)

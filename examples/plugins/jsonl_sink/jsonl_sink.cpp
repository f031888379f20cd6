// jsonl_sink: the complete example sink of the plugin author's guide
// (plugin-authoring.md, "Sinks: the sink owns the transaction"). It
// appends every applied event as one JSON line to `output`, every
// rejected event to `dead_letters` (with the stage that rejected it and the
// reason), skips duplicates and dropped events, and keeps its own checkpoint
// in `checkpoint`.
//
// Exactly once, with plain files: a batch is committed when its checkpoint
// file is renamed into place. The checkpoint records, besides the last
// position per partition, how long both data files were at that moment; on
// start the sink cuts them back to those lengths. Lines written after the
// last commit (a crash between the write and the rename) are therefore
// removed and written again from the replayed events: never lost, never twice.
//
// Build it out of tree against an installed cdcflow (see meson.build):
//     meson setup build && ninja -C build       # makes build/jsonl_sink.so
#include <cdcflow/sdk.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using nlohmann::json;

std::string errno_text() {
    return std::strerror(errno);
}

// Event bytes as JSON: the text itself when it is valid UTF-8, else (never
// lose a byte) its hex under "<name>_hex".
void put_bytes(json &out, const char *name, cdcflow_str s) {
    std::string text(cdcflow::sv(s));
    try {
        (void)json(text).dump(); // throws on invalid UTF-8
        out[name] = text;
    } catch (const json::type_error &) {
        static const char digits[] = "0123456789abcdef";
        std::string hex;
        for (unsigned char c : text) {
            hex += digits[c >> 4];
            hex += digits[c & 15];
        }
        out[std::string(name) + "_hex"] = hex;
    }
}

json event_json(const cdcflow_event &e) {
    json j = json::object();
    put_bytes(j, "event_id", e.event_id);
    put_bytes(j, "aggregate_type", e.aggregate_type);
    put_bytes(j, "aggregate_id", e.aggregate_id);
    put_bytes(j, "type", e.event_type);
    put_bytes(j, "payload", e.payload); // as text: the payload need not be JSON
    j["timestamp_us"] = e.timestamp_us;
    j["partition"] = std::string(cdcflow::sv(e.position.partition));
    j["offset"] = e.position.offset;
    return j;
}

// write(2) all of buf, or throw an I/O error naming the file.
void write_all(int fd, const std::string &buf, const std::string &path) {
    size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = ::write(fd, buf.data() + done, buf.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw cdcflow::Error(CDCFLOW_ERR_IO, "write " + path + ": " + errno_text());
        done += static_cast<size_t>(n);
    }
}

std::string dir_of(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace

// The stage's config, declared once (the host checks it before the
// constructor runs). Relative paths are relative to the directory cdcflow
// runs in (not to the pipeline file).
struct JsonlSinkSettings {
    std::string output, dead_letters, checkpoint;

    using S = JsonlSinkSettings;
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("output", &S::output).required().describe("JSON-lines file of applied events"),
        cdcflow::param("dead_letters", &S::dead_letters)
            .required()
            .describe("JSON-lines file of rejected events"),
        cdcflow::param("checkpoint", &S::checkpoint)
            .required()
            .describe("checkpoint file (replaced atomically per batch)"));
};

class JsonlSink : public cdcflow::Sink {
public:
    static constexpr const char *kName = "jsonl_sink";
    static constexpr const char *kDescription =
        "appends events as JSON lines, with dead letters and a checkpoint";
    static constexpr const char *kVersion = "1.0.0";
    using Settings = JsonlSinkSettings;

    // The constructor only reads the config: it must change nothing outside
    // the process (`cdcflow validate` constructs stages too). It needs no
    // fail() or location(), so it takes the plain settings struct.
    JsonlSink(const Settings &cfg, cdcflow::Context ctx)
        : Sink(ctx), output_(cfg.output), dead_path_(cfg.dead_letters), checkpoint_path_(cfg.checkpoint),
          written_(ctx.counter("written", "events written to the output file")) {}
    ~JsonlSink() override {
        if (out_fd_ >= 0) ::close(out_fd_);
        if (dead_fd_ >= 0) ::close(dead_fd_);
    }

    // Called once per instance, on the host's main thread, after acquire
    // (for a sink that fences) and before start(): the moment to read the
    // durable state. (Read in the constructor, a standby's copy would be
    // stale by the time it takes over.) One position per partition, the last
    // one committed; the host starts the source just after these.
    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override {
        load();
        for (auto &[part, off] : positions_)
            emit(cdcflow_position{cdcflow::str(part), off});
    }

    // On the stage's own thread, before the first batch: cut the files back
    // to the last commit.
    void start() override {
        load(); // already done by checkpoint(); never cut files back to an unread length
        out_fd_ = open_at(output_, output_bytes_);
        dead_fd_ = open_at(dead_path_, dead_bytes_);
    }

    // Return only once the batch is durable: effects, dead letters and the
    // checkpoint. Throwing leaves nothing half-committed: the host stops (or
    // retries, for cdcflow::Error(CDCFLOW_ERR_RETRY)) and the next run
    // replays from the last checkpoint.
    void process(cdcflow::Batch &batch) override {
        if (batch.empty()) return;
        Committed before{positions_, output_bytes_, dead_bytes_};
        try {
            write_batch(batch);
        } catch (...) {
            // The host may retry this batch (CDCFLOW_ERR_RETRY): go back to
            // the last commit first, so that a retry cannot write lines twice.
            roll_back(before);
            throw;
        }
    }

private:
    void load() {
        if (loaded_) return;
        std::ifstream in(checkpoint_path_);
        if (in) {
            std::stringstream text;
            text << in.rdbuf();
            try {
                json cp = json::parse(text.str());
                for (auto &[part, off] : cp.at("positions").items())
                    positions_[part] = off.get<int64_t>();
                output_bytes_ = cp.at("output_bytes").get<int64_t>();
                dead_bytes_ = cp.at("dead_letter_bytes").get<int64_t>();
            } catch (const json::exception &e) {
                throw cdcflow::Error(CDCFLOW_ERR_IO, "checkpoint " + checkpoint_path_ +
                                                         " is not a checkpoint file: " + e.what());
            }
        } // no file: no checkpoint yet, from the start
        loaded_ = true;
    }

    struct Committed {
        std::map<std::string, int64_t> positions;
        int64_t output_bytes, dead_bytes;
    };

    void write_batch(cdcflow::Batch &batch) {
        std::string lines, dead;
        for (const cdcflow_event &e : batch) {
            // Every event's position counts as processed, whatever its
            // status: a dropped or duplicate last event still moves the
            // checkpoint, or it would be read again on every start.
            positions_[std::string(cdcflow::sv(e.position.partition))] = e.position.offset;
            switch (e.status) {
            case CDCFLOW_EVENT_OK:
                lines += event_json(e).dump() + "\n";
                break;
            case CDCFLOW_EVENT_REJECTED: {
                json j = event_json(e);
                j["stage"] = std::string(cdcflow::sv(e.reject_stage)); // the host fills these
                j["reason"] = std::string(cdcflow::sv(e.reject_reason));
                dead += j.dump() + "\n";
                break;
            }
            default: // CDCFLOW_EVENT_DUPLICATE, CDCFLOW_EVENT_DROPPED: skipped
                break;
            }
        }
        append(out_fd_, lines, output_, output_bytes_);
        append(dead_fd_, dead, dead_path_, dead_bytes_);
        save_checkpoint(); // the commit point
        written_.add(static_cast<int64_t>(std::count(lines.begin(), lines.end(), '\n')));
    }

    void roll_back(const Committed &c) {
        positions_ = c.positions;
        output_bytes_ = c.output_bytes;
        dead_bytes_ = c.dead_bytes;
        bool ok = ::ftruncate(out_fd_, output_bytes_) == 0 &&
                  ::lseek(out_fd_, output_bytes_, SEEK_SET) >= 0 && ::ftruncate(dead_fd_, dead_bytes_) == 0 &&
                  ::lseek(dead_fd_, dead_bytes_, SEEK_SET) >= 0;
        // Not even that worked: stop (an I/O error is not retried); the next
        // start cuts the files back to the checkpoint.
        if (!ok) throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot roll the files back: " + errno_text());
    }

    // Opens path for appending, cut back to the committed length.
    int open_at(const std::string &path, int64_t committed) {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot open " + path + ": " + errno_text());
        struct stat st {};
        if (::fstat(fd, &st) != 0 || st.st_size < committed) {
            ::close(fd);
            throw cdcflow::Error(CDCFLOW_ERR_IO, path + " is shorter than its checkpoint says (" +
                                                     std::to_string(committed) +
                                                     " bytes): it was changed "
                                                     "behind the sink's back");
        }
        if (::ftruncate(fd, committed) != 0 || ::lseek(fd, committed, SEEK_SET) < 0) {
            ::close(fd);
            throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot cut " + path + " back: " + errno_text());
        }
        return fd;
    }

    void append(int fd, const std::string &buf, const std::string &path, int64_t &length) {
        if (buf.empty()) return;
        write_all(fd, buf, path);
        if (::fsync(fd) != 0) throw cdcflow::Error(CDCFLOW_ERR_IO, "fsync " + path + ": " + errno_text());
        length += static_cast<int64_t>(buf.size());
    }

    // write + fsync a temporary file, rename it over the checkpoint, fsync
    // the folder: after a crash, either the old or the new checkpoint is
    // there, never half of one.
    void save_checkpoint() {
        json cp = {
            {"positions", positions_}, {"output_bytes", output_bytes_}, {"dead_letter_bytes", dead_bytes_}};
        std::string text = cp.dump() + "\n", tmp = checkpoint_path_ + ".tmp";
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot write " + tmp + ": " + errno_text());
        try {
            write_all(fd, text, tmp);
        } catch (...) {
            ::close(fd);
            throw;
        }
        bool synced = ::fsync(fd) == 0;
        ::close(fd);
        if (!synced || std::rename(tmp.c_str(), checkpoint_path_.c_str()) != 0)
            throw cdcflow::Error(CDCFLOW_ERR_IO, "cannot replace " + checkpoint_path_ + ": " + errno_text());
        int dir = ::open(dir_of(checkpoint_path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0) {
            ::fsync(dir);
            ::close(dir);
        }
    }

    std::string output_, dead_path_, checkpoint_path_;
    std::map<std::string, int64_t> positions_;  // partition -> last committed offset
    int64_t output_bytes_ = 0, dead_bytes_ = 0; // committed lengths of the two files
    int out_fd_ = -1, dead_fd_ = -1;
    bool loaded_ = false;
    cdcflow::Metric written_;
};

CDCFLOW_PLUGIN(JsonlSink)

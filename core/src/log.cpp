// See log.hpp. The lines are laid out by spdlog's pattern formatter (UTC
// timestamps with milliseconds, the level's colour range) and fmt; this file
// decides what goes into them (escaping, JSON fields) and how they reach
// stderr without ever blocking the pipeline for long.
#include "log.hpp"

#include "base/text.hpp"
#include "base/utf8.hpp"
#include "escape.hpp"

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <fcntl.h>
#include <limits.h>
#include <mutex>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace cdcflow::host {

LogField::LogField(std::string_view k, double v)
    : key(k), value(std::isfinite(v) ? fmt::format("{}", v) : "null"), bare(true) {}

namespace {

using Clock = std::chrono::steady_clock;

// A message longer than this is cut (with "..."): a plugin handing the host
// megabytes must not make one line of them.
constexpr size_t kMaxMessageBytes = 16 * 1024;
// How long one line may wait for a stderr that does not take it (a full pipe)
// before it is dropped; after a drop, lines do not wait at all until stderr
// takes one again. This bounds what a stuck reader costs the pipeline.
constexpr int kLineWaitMs = 100;

std::atomic<int> g_level{CDCFLOW_LOG_INFO};
std::atomic<int> g_format{static_cast<int>(LogFormat::text)};
std::atomic<uint32_t> g_plugin_limit{kDefaultPluginLinesPerSecond};
std::atomic<uint64_t> g_written{0}, g_dropped{0}, g_suppressed{0};
// The pipeline's name for log_last_words, which must not take the writer's
// lock. Set once per run; the old copy is kept (a few bytes), since a
// reader may still hold it.
std::atomic<const std::string *> g_pipeline_name{nullptr};

const char *level_name(spdlog::level::level_enum l) {
    switch (l) {
    case spdlog::level::debug:
        return "debug";
    case spdlog::level::warn:
        return "warn";
    case spdlog::level::err:
        return "error";
    default:
        return "info";
    }
}

spdlog::level::level_enum to_spdlog(cdcflow_log_level l) {
    switch (l) {
    case CDCFLOW_LOG_DEBUG:
        return spdlog::level::debug;
    case CDCFLOW_LOG_WARN:
        return spdlog::level::warn;
    case CDCFLOW_LOG_ERROR:
        return spdlog::level::err;
    default: // an out-of-range level from a plugin is logged, as info
        return spdlog::level::info;
    }
}

// %* in the patterns: the project's level names ("warn", not spdlog's
// "warning"), padded to one width in text so that the columns line up.
class LevelFlag final : public spdlog::custom_flag_formatter {
public:
    explicit LevelFlag(bool padded) : padded_(padded) {}
    void format(const spdlog::details::log_msg &msg, const std::tm &, spdlog::memory_buf_t &dest) override {
        if (padded_)
            fmt::format_to(std::back_inserter(dest), "{:<5}", level_name(msg.level));
        else
            fmt::format_to(std::back_inserter(dest), "{}", level_name(msg.level));
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<LevelFlag>(padded_);
    }

private:
    bool padded_;
};

// text: "2026-11-30T11:25:14.123Z info  [who] message" (%^..%$: the colour range)
// json: {"ts":"...","level":"info",<payload: pipeline, stage, event, msg, fields>}
std::unique_ptr<spdlog::pattern_formatter> make_formatter(LogFormat f) {
    auto p = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc, "\n");
    p->add_flag<LevelFlag>('*', f == LogFormat::text);
    p->set_pattern(f == LogFormat::text ? "%Y-%m-%dT%H:%M:%S.%eZ %^%*%$ [%n] %v"
                                        : R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%*",%v})");
    return p;
}

// The length of a line-breaking character that is valid UTF-8 at s[i]
// (C1 controls U+0080..U+009F, NEL among them; U+2028, U+2029): readers
// that split lines the Unicode way (Python's splitlines, some log viewers)
// and terminals with C1 controls would take them for a line break or an
// escape. 0 for anything else.
size_t unicode_break_at(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
    if (b(0) == 0xC2 && b(1) >= 0x80 && b(1) <= 0x9F) return 2;
    if (b(0) == 0xE2 && b(1) == 0x80 && (b(2) == 0xA8 || b(2) == 0xA9)) return 3;
    return 0;
}

// Rewrites, from `from` on, the line-breaking characters in `out` (which is
// valid UTF-8 there) with `escape`.
template <typename Escape> void escape_unicode_breaks(std::string &out, size_t from, Escape &&escape) {
    if (out.find('\xC2', from) == std::string::npos && out.find('\xE2', from) == std::string::npos) return;
    std::string done = out.substr(0, from);
    for (size_t i = from; i < out.size();) {
        if (size_t n = unicode_break_at(out, i)) {
            escape(done, std::string_view(out).substr(i, n));
            i += n;
        } else {
            done += out[i++];
        }
    }
    out.swap(done);
}

// Message text for the text format: control bytes (newlines, escapes) and
// invalid UTF-8 as \xNN, valid UTF-8 kept (base/text.hpp's one way); the
// Unicode line breaks too, as their bytes.
void append_text_escaped(std::string &out, std::string_view s) {
    size_t from = out.size();
    base::append_quoted(out, s, {0, kMaxMessageBytes, true});
    escape_unicode_breaks(out, from, [](std::string &o, std::string_view c) {
        for (unsigned char b : c)
            o += fmt::format("\\x{:02x}", b);
    });
}

// A JSON string that says what `s` says: invalid UTF-8 as the text \xNN
// (as in the text format, rather than U+FFFD: the bytes stay readable),
// then JSON's own escapes for quotes and control characters, and \uXXXX for
// the Unicode line breaks.
void append_json_string(std::string &out, std::string_view s) {
    bool cut = s.size() > kMaxMessageBytes;
    if (cut) s = s.substr(0, base::utf8_floor(s, kMaxMessageBytes));
    std::string text = base::valid_utf8(s) ? std::string(s) : base::escape_invalid_utf8(s);
    if (cut) text += "...";
    size_t from = out.size();
    put_string(out, text);
    escape_unicode_breaks(out, from, [](std::string &o, std::string_view c) {
        unsigned cp = c.size() == 2 ? static_cast<unsigned char>(c[1])
                                    : 0x2000u | (static_cast<unsigned char>(c[2]) == 0xA8 ? 0x28u : 0x29u);
        o += fmt::format("\\u{:04X}", cp);
    });
}

bool reserved_key(std::string_view k) {
    for (const char *r : {"ts", "level", "pipeline", "stage", "event", "msg"})
        if (k == r) return true;
    return false;
}

// What %v holds: the escaped message (text), or the JSON members after
// "level" (json).
std::string payload(LogFormat f, std::string_view pipeline, std::string_view who, std::string_view msg,
                    std::string_view event, std::initializer_list<LogField> fields) {
    std::string out;
    if (f == LogFormat::text) {
        append_text_escaped(out, msg);
        return out;
    }
    if (!pipeline.empty()) {
        out += "\"pipeline\":";
        append_json_string(out, pipeline);
        out += ',';
    }
    out += "\"stage\":";
    append_json_string(out, who);
    if (!event.empty()) {
        out += ",\"event\":";
        append_json_string(out, event);
    }
    out += ",\"msg\":";
    append_json_string(out, msg);
    for (const LogField &fl : fields) {
        // The line's own members come first and stay what they say.
        if (fl.key.empty() || reserved_key(fl.key)) continue;
        out += ',';
        append_json_string(out, fl.key);
        out += ':';
        if (fl.bare)
            out += fl.value;
        else
            append_json_string(out, fl.value);
    }
    return out;
}

std::string who_text(LogFormat f, std::string_view who) {
    if (f == LogFormat::json) return std::string(who); // not shown (%n is not in the pattern)
    std::string out;
    base::append_quoted(out, who, {0, 200, true});
    return out;
}

// Where the formatter put the level in a line (%^..%$), for colouring it.
struct ColorRange {
    size_t start = 0, end = 0;
};

// Formats one line into `buf`.
ColorRange format_line(spdlog::pattern_formatter &formatter, LogFormat f, const std::string &pipeline,
                       spdlog::level::level_enum level, std::string_view who, std::string_view msg,
                       std::string_view event, std::initializer_list<LogField> fields,
                       spdlog::log_clock::time_point when, spdlog::memory_buf_t &buf) {
    std::string name = who_text(f, who);
    std::string body = payload(f, pipeline, who, msg, event, fields);
    spdlog::details::log_msg m(when, spdlog::source_loc{}, name, level, body);
    formatter.format(m, buf);
    return {m.color_range_start, m.color_range_end};
}

// stderr, written without ever blocking for long (log.hpp). How a write
// avoids blocking depends on what stderr is:
// - a pipe: a private non-blocking open file description of the same pipe
//   (/proc/self/fd/2), so that O_NONBLOCK does not leak to the processes
//   that share our stderr (a shell's terminal, a supervisor);
// - a socket (systemd's journal stream): send(MSG_DONTWAIT);
// - a file or /dev/null: a plain write (nothing to wait for);
// - anything else (a terminal): poll for room, then write at most PIPE_BUF
//   bytes, which a writable descriptor takes without waiting in practice.
// Lines are whole or absent: a line cut by a full pipe is finished before
// any other is written. Each line checks that fd 2 is still what it was
// (one fstat): whoever moves stderr with dup2 (a test capturing the log)
// gets the lines that follow.
class StderrWriter {
public:
    StderrWriter() {
        text_ = make_formatter(LogFormat::text);
        json_ = make_formatter(LogFormat::json);
    }

    void log(cdcflow_log_level level, std::string_view who, std::string_view msg, std::string_view event,
             std::initializer_list<LogField> fields, bool force = false) {
        std::lock_guard lock(mu_);
        if (!force && level < g_level.load(std::memory_order_relaxed)) return;
        bind();
        LogFormat f = static_cast<LogFormat>(g_format.load(std::memory_order_relaxed));
        buf_.clear();
        ColorRange c = format_line(f == LogFormat::text ? *text_ : *json_, f, pipeline_, to_spdlog(level),
                                   who, msg, event, fields, spdlog::log_clock::now(), buf_);
        emit(std::string_view(buf_.data(), buf_.size()), f == LogFormat::text ? c : ColorRange{});
    }

    // A line already laid out ("cdcflow: msg\n").
    void raw(std::string_view line) {
        std::lock_guard lock(mu_);
        bind();
        emit(line, {}); // no colours
    }

    void set_pipeline(const std::string &name) {
        std::lock_guard lock(mu_);
        pipeline_ = name;
    }

    // The status line (set_status_line): drawn in place on a terminal; `end`
    // leaves it on a line of its own. Best effort: a terminal that takes
    // nothing right now gets the next update instead (never waits).
    void status(std::string_view text, bool end) {
        std::lock_guard lock(mu_);
        bind();
        if (!tty_) return;
        status_ = end ? std::string() : std::string(text);
        std::string out = kEraseLine;
        append_text_escaped(out, text);
        if (end) out += '\n';
        if (!pending_.empty()) {
            std::string_view rest = pending_;
            push(rest, 0);
            pending_.erase(0, pending_.size() - rest.size());
            if (!pending_.empty() && !end) return;
        }
        std::string_view rest = out;
        push(rest, end ? kLineWaitMs : 0);
        if (!rest.empty() && rest.size() < out.size()) pending_.assign(rest);
    }

private:
    // Under mu_. (Re)chooses how to write when fd 2 is not what it was.
    void bind() {
        struct stat st {};
        bool ok = fstat(STDERR_FILENO, &st) == 0;
        if (bound_ && ok == stat_ok_ && (!ok || (st.st_dev == dev_ && st.st_ino == ino_))) return;
        if (own_fd_ >= 0) close(own_fd_);
        own_fd_ = -1;
        fd_ = STDERR_FILENO;
        socket_ = false;
        direct_ = false;
        pending_.clear(); // the rest of a line for a stderr that is gone
        status_.clear();
        stalled_ = false;
        bound_ = true;
        stat_ok_ = ok;
        dev_ = st.st_dev;
        ino_ = st.st_ino;
        if (ok && S_ISFIFO(st.st_mode)) {
            own_fd_ = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (own_fd_ >= 0) fd_ = own_fd_;
        } else if (ok && S_ISSOCK(st.st_mode)) {
            socket_ = true;
        }
        const char *no_color = std::getenv("NO_COLOR");
        bool tty = isatty(STDERR_FILENO);
        tty_ = tty;
        color_ = tty && !(no_color && *no_color);
        // A file or /dev/null never makes a write wait for a reader: no poll.
        direct_ = ok && (S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !tty));
    }

    // One attempt that does not block. >= 0: bytes taken; -1 with errno.
    ssize_t try_write(const char *p, size_t n) {
        if (socket_) return send(fd_, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (fd_ == own_fd_ || direct_) return write(fd_, p, n);
        pollfd pf{fd_, POLLOUT, 0};
        int r = poll(&pf, 1, 0);
        if (r < 0) return -1;
        if (r == 0 || !(pf.revents & POLLOUT)) {
            if (pf.revents & (POLLERR | POLLHUP | POLLNVAL)) return write(fd_, p, std::min<size_t>(n, 1));
            errno = EAGAIN;
            return -1;
        }
        return write(fd_, p, std::min<size_t>(n, PIPE_BUF));
    }

    // Writes from `s` until it is all written (true), stderr fails for good
    // or `wait_ms` passes without room (false). `s` keeps what is left.
    bool push(std::string_view &s, int wait_ms) {
        auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
        while (!s.empty()) {
            ssize_t w = try_write(s.data(), s.size());
            if (w > 0) {
                s.remove_prefix(static_cast<size_t>(w));
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false; // EPIPE, EBADF, EIO...
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) return false;
            pollfd pf{fd_, POLLOUT, 0};
            poll(&pf, 1, static_cast<int>(left));
        }
        return true;
    }

    // Under mu_. Writes one whole line, or counts it as dropped.
    // `color`: where the level is, to colour on a terminal (empty: nowhere).
    void emit(std::string_view line, ColorRange color) {
        int wait = stalled_ ? 0 : kLineWaitMs;
        if (!pending_.empty()) {
            std::string_view rest = pending_;
            bool done = push(rest, wait);
            pending_.erase(0, pending_.size() - rest.size());
            if (!done) return drop();
        }
        if (dropped_ > 0) {
            // Say what was lost, before the line that follows it.
            std::string msg = std::to_string(dropped_) + " log line" + (dropped_ == 1 ? "" : "s") +
                              " dropped: stderr did not take them (a full or closed pipe)";
            note_.clear();
            LogFormat nf = static_cast<LogFormat>(g_format.load(std::memory_order_relaxed));
            format_line(nf == LogFormat::text ? *text_ : *json_, nf, pipeline_, spdlog::level::warn, "host",
                        msg, "log_dropped", {{"dropped", dropped_}}, spdlog::log_clock::now(), note_);
            std::string_view n(note_.data(), note_.size());
            bool done = push(n, wait);
            if (n.size() < note_.size()) dropped_ = 0; // said (whole, or finished as pending_)
            if (!n.empty() && n.size() < note_.size()) pending_.assign(n);
            if (!done) return drop();
        }
        std::string colored;
        if (color_ && color.start < color.end) line = colorize(line, color, colored);
        // Under a status line: erase it, write the line, draw it again below.
        std::string around;
        if (!status_.empty()) {
            around.append(kEraseLine).append(line);
            append_text_escaped(around, status_);
            line = around;
        }
        std::string_view rest = line;
        bool done = push(rest, wait);
        if (!rest.empty() && rest.size() < line.size()) pending_.assign(rest);
        if (!done && rest.size() == line.size()) return drop();
        stalled_ = !done;
        g_written.fetch_add(1, std::memory_order_relaxed);
    }

    void drop() {
        stalled_ = true;
        ++dropped_;
        g_dropped.fetch_add(1, std::memory_order_relaxed);
    }

    // The level in colour (the formatter marked its range), for a terminal.
    static std::string_view colorize(std::string_view line, ColorRange c, std::string &out) {
        size_t a = c.start, b = c.end;
        if (a >= b || b > line.size()) return line;
        const char *code = "\033[32m"; // info: green
        std::string_view lv = line.substr(a, b - a);
        if (lv.starts_with("warn")) code = "\033[33m\033[1m";
        if (lv.starts_with("error")) code = "\033[31m\033[1m";
        if (lv.starts_with("debug")) code = "\033[36m";
        out.append(line.substr(0, a)).append(code).append(lv).append("\033[m").append(line.substr(b));
        return out;
    }

    std::mutex mu_;
    bool bound_ = false, stat_ok_ = false;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
    int fd_ = STDERR_FILENO;
    int own_fd_ = -1;
    bool socket_ = false;
    bool direct_ = false;
    bool color_ = false;
    bool tty_ = false;
    std::string status_;                                  // the status line shown below the log ("" for none)
    static constexpr const char *kEraseLine = "\r\033[K"; // to the line's start, erase it
    std::unique_ptr<spdlog::pattern_formatter> text_, json_;
    spdlog::memory_buf_t buf_, note_;
    std::string pipeline_;
    std::string pending_; // the rest of a line a full pipe cut
    bool stalled_ = false;
    uint64_t dropped_ = 0; // lines dropped since the last one written
};

// Lives as long as the process (never destroyed): a thread may log while
// static objects are destroyed at exit.
StderrWriter &writer() {
    static StderrWriter *w = new StderrWriter();
    return *w;
}

} // namespace

void log_line(cdcflow_log_level level, const std::string &who, const std::string &msg, std::string_view event,
              std::initializer_list<LogField> fields) {
    if (level < g_level.load(std::memory_order_relaxed)) return;
    try {
        writer().log(level, who, msg, event, fields);
    } catch (...) {
        // Out of memory while formatting: the line is lost, the host goes on.
        g_dropped.fetch_add(1, std::memory_order_relaxed);
    }
}

void set_status_line(std::string_view text) {
    try {
        writer().status(text, false);
    } catch (...) {
        // Out of memory: the bar is not drawn this time.
    }
}

void end_status_line(std::string_view text) {
    try {
        writer().status(text, true);
    } catch (...) {
    }
}

void log_failure(const std::string &msg, std::string_view event, std::initializer_list<LogField> fields) {
    try {
        if (log_format() == LogFormat::json) {
            writer().log(CDCFLOW_LOG_ERROR, "host", msg, event, fields, true);
            return;
        }
        std::string line = "cdcflow: ";
        append_text_escaped(line, msg);
        line += '\n';
        writer().raw(line);
    } catch (...) {
        g_dropped.fetch_add(1, std::memory_order_relaxed);
    }
}

void log_out_of_memory() noexcept {
    std::fputs(
        log_format() == LogFormat::json
            ? "{\"level\":\"error\",\"stage\":\"host\",\"event\":\"error\",\"msg\":\"out of memory\"}\n"
            : "cdcflow: out of memory\n",
        stderr);
}

void log_last_words(const std::string &msg, std::string_view event, std::initializer_list<LogField> fields) {
    std::string line;
    try {
        if (log_format() == LogFormat::json) {
            // The shared writer's lock may be held: render with a formatter of our own.
            spdlog::memory_buf_t buf;
            auto f = make_formatter(LogFormat::json);
            const std::string *name = g_pipeline_name.load();
            format_line(*f, LogFormat::json, name ? *name : std::string(), spdlog::level::err, "host", msg,
                        event, fields, spdlog::log_clock::now(), buf);
            line.assign(buf.data(), buf.size());
        } else {
            line = "cdcflow: ";
            append_text_escaped(line, msg);
            line += '\n';
        }
    } catch (...) {
        return;
    }
    pollfd out{STDERR_FILENO, POLLOUT, 0};
    if (poll(&out, 1, 0) == 1 && (out.revents & POLLOUT)) {
        ssize_t n = write(STDERR_FILENO, line.data(), std::min<size_t>(line.size(), PIPE_BUF));
        (void)n;
    }
}

std::string render_log_line(LogFormat format, cdcflow_log_level level, std::string_view pipeline,
                            std::string_view who, std::string_view msg, std::string_view event,
                            std::initializer_list<LogField> fields, int64_t unix_us) {
    auto f = make_formatter(format);
    spdlog::memory_buf_t buf;
    spdlog::log_clock::time_point when{
        std::chrono::duration_cast<spdlog::log_clock::duration>(std::chrono::microseconds(unix_us))};
    format_line(*f, format, std::string(pipeline), to_spdlog(level), who, msg, event, fields, when, buf);
    return std::string(buf.data(), buf.size());
}

void set_log_level(cdcflow_log_level level) {
    g_level.store(level);
}

cdcflow_log_level log_level() {
    return static_cast<cdcflow_log_level>(g_level.load());
}

bool parse_log_level(const std::string &s, cdcflow_log_level *out) {
    static const std::pair<const char *, cdcflow_log_level> names[] = {{"debug", CDCFLOW_LOG_DEBUG},
                                                                       {"info", CDCFLOW_LOG_INFO},
                                                                       {"warn", CDCFLOW_LOG_WARN},
                                                                       {"error", CDCFLOW_LOG_ERROR}};
    for (auto &[n, l] : names)
        if (s == n) {
            *out = l;
            return true;
        }
    return false;
}

void set_log_format(LogFormat format) {
    g_format.store(static_cast<int>(format));
}

LogFormat log_format() {
    return static_cast<LogFormat>(g_format.load());
}

bool parse_log_format(const std::string &s, LogFormat *out) {
    // "auto" is text today: a terminal reads text, and a collector is told
    // what it gets (--log-format json) rather than guessed at.
    if (s == "text" || s == "auto") {
        *out = LogFormat::text;
        return true;
    }
    if (s == "json") {
        *out = LogFormat::json;
        return true;
    }
    return false;
}

void set_log_pipeline(const std::string &name) {
    writer().set_pipeline(name);
    // Readers hold the published pointer without a lock, so every name
    // stays valid for the process's life: kept here (reachable, not leaked),
    // one per change (an embedding process opens few pipelines).
    static std::mutex mu;
    static std::vector<std::unique_ptr<std::string>> names;
    std::lock_guard lock(mu);
    const std::string *old = g_pipeline_name.load();
    if (!old || *old != name) {
        names.push_back(std::make_unique<std::string>(name));
        g_pipeline_name.store(names.back().get());
    }
}

void set_plugin_log_limit(uint32_t lines_per_second) {
    g_plugin_limit.store(lines_per_second);
}

LogStats log_stats() {
    return {g_written.load(), g_dropped.load(), g_suppressed.load()};
}

// ---- the plugin rate limit ----

struct PluginLogLimiter::State {
    explicit State(std::string w) : who(std::move(w)) {}
    const std::string who;
    std::mutex mu;
    Clock::time_point window_start{};
    uint32_t in_window = 0;
    uint64_t suppressed = 0; // in the current window, not yet reported
    uint32_t limit = 0;      // the limit those were suppressed under
    bool queued = false;     // in the reporter's list
    std::atomic<uint64_t> total{0};
};

namespace {

void report_suppressed(const std::string &who, uint64_t n, uint32_t limit) {
    log_line(CDCFLOW_LOG_WARN, who,
             "suppressed " + std::to_string(n) + " log line" + (n == 1 ? "" : "s") +
                 " from this stage: more than " + std::to_string(limit) +
                 " a second (log.plugin_lines_per_second)",
             "log_suppressed", {{"suppressed", n}, {"limit", limit}});
}

// Reports a limiter's suppressed lines once its second is over, when the
// plugin does not log again to trigger it. Sleeps on a condition variable
// (no polling) while nothing is pending; started at the first suppression.
class Reporter {
public:
    ~Reporter() {
        {
            std::lock_guard lock(mu_);
            if (!thread_.joinable()) return;
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

    void enqueue(std::shared_ptr<PluginLogLimiter::State> s) {
        std::lock_guard lock(mu_);
        if (stop_) return;
        queue_.push_back(std::move(s));
        if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
        cv_.notify_all();
    }

    // Everything queued, reported now (the caller's thread).
    void flush() {
        std::vector<std::shared_ptr<PluginLogLimiter::State>> work;
        {
            std::lock_guard lock(mu_);
            work.swap(queue_);
        }
        for (auto &s : work) {
            uint64_t n = 0;
            uint32_t limit = 0;
            {
                std::lock_guard sl(s->mu);
                n = s->suppressed;
                limit = s->limit;
                s->suppressed = 0;
                s->queued = false;
            }
            if (n) report_suppressed(s->who, n, limit);
        }
    }

private:
    void loop() {
        std::unique_lock lock(mu_);
        for (;;) {
            std::vector<std::shared_ptr<PluginLogLimiter::State>> work;
            work.swap(queue_);
            bool stopping = stop_;
            lock.unlock();
            // Without mu_ held: a limiter's lock is never taken under it.
            std::vector<std::shared_ptr<PluginLogLimiter::State>> keep;
            Clock::time_point next = Clock::time_point::max();
            for (auto &s : work) {
                uint64_t n = 0;
                uint32_t limit = 0;
                {
                    std::lock_guard sl(s->mu);
                    auto end = s->window_start + std::chrono::seconds(1);
                    if (s->suppressed == 0) {
                        s->queued = false;
                    } else if (stopping || Clock::now() >= end) {
                        n = s->suppressed;
                        limit = s->limit;
                        s->suppressed = 0;
                        s->queued = false;
                    } else {
                        next = std::min(next, end);
                        keep.push_back(s);
                    }
                }
                if (n) report_suppressed(s->who, n, limit);
            }
            lock.lock();
            queue_.insert(queue_.end(), keep.begin(), keep.end());
            if (stopping) return;
            if (queue_.size() == keep.size()) { // nothing new came in meanwhile
                if (next == Clock::time_point::max())
                    cv_.wait(lock, [&] { return stop_ || queue_.size() > keep.size(); });
                else
                    cv_.wait_until(lock, next, [&] { return stop_ || queue_.size() > keep.size(); });
            }
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::shared_ptr<PluginLogLimiter::State>> queue_;
    std::thread thread_;
    bool stop_ = false;
};

// Destroyed at exit (after main returns): reports what is still pending.
Reporter &reporter() {
    static Reporter r;
    return r;
}

} // namespace

void flush_suppressed_logs() {
    reporter().flush();
}

PluginLogLimiter::PluginLogLimiter(std::string who) : state_(std::make_shared<State>(std::move(who))) {}

PluginLogLimiter::~PluginLogLimiter() = default;

bool PluginLogLimiter::admit() {
    uint32_t limit = g_plugin_limit.load(std::memory_order_relaxed);
    if (limit == 0) return true;
    State &s = *state_;
    uint64_t report = 0;
    uint32_t report_limit = 0;
    bool admitted = false, enqueue = false;
    {
        std::lock_guard lock(s.mu);
        auto now = Clock::now();
        if (now - s.window_start >= std::chrono::seconds(1)) {
            report = s.suppressed;
            report_limit = s.limit;
            s.suppressed = 0;
            s.window_start = now;
            s.in_window = 0;
        }
        if (s.in_window < limit) {
            ++s.in_window;
            admitted = true;
        } else {
            ++s.suppressed;
            s.limit = limit;
            s.total.fetch_add(1, std::memory_order_relaxed);
            g_suppressed.fetch_add(1, std::memory_order_relaxed);
            enqueue = !s.queued;
            s.queued = true;
        }
    }
    if (report) report_suppressed(s.who, report, report_limit);
    if (enqueue) reporter().enqueue(state_);
    return admitted;
}

uint64_t PluginLogLimiter::suppressed_total() const {
    return state_->total.load(std::memory_order_relaxed);
}

} // namespace cdcflow::host

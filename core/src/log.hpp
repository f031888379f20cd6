// The host's log: every line the host and its plugins write to stderr goes
// through log_line(), in one of two formats (README, "Logs"):
//
//   text: 2026-11-30T11:25:14.123Z info  [outbox] message
//   json: {"ts":"2026-11-30T11:25:14.123Z","level":"info","pipeline":"accounts",
//          "stage":"outbox","event":"retry","msg":"message",...fields}
//
// Whatever a message holds (a plugin's text, event bytes, invalid UTF-8,
// newlines, terminal escapes), a line stays one line: in text control bytes
// and invalid UTF-8 are written as \xNN, in JSON the line is valid JSON
// (invalid UTF-8 as the text \xNN, control characters as JSON escapes).
//
// Writing never stops the host: SIGPIPE is ignored (tools/cdcflow/main.cpp),
// and a stderr that cannot take a line (a full pipe nobody reads, a closed
// one) makes the line dropped and counted after a short bounded wait, not a
// blocked stage thread; a "K lines dropped" line follows once stderr takes
// lines again.
//
// Thread-safety: every function may be called from any thread (stage
// threads, plugin threads, the signal watcher).
#pragma once

#include <cdcflow/plugin.h>

#include <atomic>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

namespace cdcflow::host {

enum class LogFormat : uint8_t { text, json };

// One structured field of a log line: in JSON "key":value (numbers and
// booleans bare, text as a JSON string); the text format does not show
// fields (its message says the same in words). A field named like one of
// the line's own members (ts, level, pipeline, stage, event, msg) or with
// an empty key is not written.
struct LogField {
    std::string_view key;
    std::string value;
    bool bare = false; // a number or a boolean: written without quotes in JSON

    LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
    LogField(std::string_view k, const char *v) : key(k), value(v ? v : "") {}
    LogField(std::string_view k, const std::string &v) : key(k), value(v) {}
    LogField(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), bare(true) {}
    LogField(std::string_view k, std::integral auto v) : key(k), value(std::to_string(v)), bare(true) {}
    LogField(std::string_view k, double v);
};

// Writes one line if `level` is at or above the current level. `who` is the
// stage id, or "host" for the host's own lines ("stage" in JSON). `event`
// names an event of interest in JSON ("start", "stop", "retry", "error",
// "owner_change", "breaker_open"...; README, "Logs"); empty: none.
void log_line(cdcflow_log_level level, const std::string &who, const std::string &msg,
              std::string_view event = {}, std::initializer_list<LogField> fields = {});

// From --log-level / CDCFLOW_LOG_LEVEL / the file's log.level.
void set_log_level(cdcflow_log_level level);
cdcflow_log_level log_level();
bool parse_log_level(const std::string &s, cdcflow_log_level *out); // debug, info, warn, error
// From --log-format / CDCFLOW_LOG_FORMAT / the file's log.format.
void set_log_format(LogFormat format);
LogFormat log_format();
bool parse_log_format(const std::string &s, LogFormat *out); // text, json, auto (= text)
// The pipeline's name, written as "pipeline" in every JSON line once set.
void set_log_pipeline(const std::string &name);

// A last line written while exiting at once (from the signal watcher): the
// text format's "cdcflow: msg", or a JSON error line. Takes no lock (another
// thread may hold the log's) and writes only what stderr takes right now.
void log_last_words(const std::string &msg, std::string_view event, std::initializer_list<LogField> fields);

// A status line below the log on a terminal stderr (migrate's progress
// bar): drawn in place (carriage return, erase the line, the text); every log
// line written while it shows first erases it and draws it again after
// itself, so that neither breaks the other. end_status_line draws its last
// text and ends the line (no more status line). Nothing is written when
// stderr is not a terminal (callers print plain lines there). The text is one
// line: control bytes are escaped.
void set_status_line(std::string_view text);
void end_status_line(std::string_view text);

// The text format's final line of a failed command ("cdcflow: msg", which
// scripts read), or in JSON an error line with `event` and `fields`. Goes
// through the same non-blocking writer as log_line, whatever the level.
void log_failure(const std::string &msg, std::string_view event = "error",
                 std::initializer_list<LogField> fields = {});
// log_failure's line when memory already ran out: "out of memory", written
// to stderr without allocating (a JSON object in the JSON format, without
// a timestamp), for what could not even build its own message.
void log_out_of_memory() noexcept;

// The rendering of one line without writing it (for the unit tests):
// `who`, `msg`, `event` and `fields` as log_line takes them, at instant
// `unix_us`, in `format`, with `pipeline` ("" for none).
std::string render_log_line(LogFormat format, cdcflow_log_level level, std::string_view pipeline,
                            std::string_view who, std::string_view msg, std::string_view event,
                            std::initializer_list<LogField> fields, int64_t unix_us);

// How many lines a plugin may log per second per stage before the rest are
// suppressed (log.plugin_lines_per_second; 0: no limit). Host lines are not
// limited.
constexpr uint32_t kDefaultPluginLinesPerSecond = 100;
void set_plugin_log_limit(uint32_t lines_per_second);

// The per-stage limit on a plugin's log calls (host_api log). In each second
// the first N lines pass; the rest are counted, and one warning
// "suppressed K lines" follows when that second is over (from a helper
// thread if the plugin said nothing more), so a plugin logging in a loop
// writes at most N + 1 lines a second.
class PluginLogLimiter {
public:
    explicit PluginLogLimiter(std::string who);
    ~PluginLogLimiter(); // what is still suppressed is reported within a second
    PluginLogLimiter(const PluginLogLimiter &) = delete;
    PluginLogLimiter &operator=(const PluginLogLimiter &) = delete;
    // True: write this line. Reports the previous second's suppressed lines first.
    bool admit();
    // Lines suppressed since start (for the metrics the lead wires).
    uint64_t suppressed_total() const;

    struct State; // shared with the reporting thread
private:
    std::shared_ptr<State> state_;
};

// Reports every stage's suppressed lines now, whether or not their second
// is over: before the "stop" line, so that it stays the last.
void flush_suppressed_logs();

// Process-wide counts, for metrics: lines written, lines dropped because
// stderr could not take them, plugin lines suppressed by the rate limit.
struct LogStats {
    uint64_t written = 0;
    uint64_t dropped = 0;
    uint64_t suppressed = 0;
};
LogStats log_stats();

} // namespace cdcflow::host

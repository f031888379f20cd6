// cdcflow produce: JSON lines on standard input -> events in an outbox table.
//
// Each line is one event:
//   {"id"?: str, "aggregatetype": str, "aggregateid": str, "type": str, "payload": {...}, "timestamp"?: int}
// A line is parsed here (simdjson DOM: the whole line is validated, UTF-8
// included) and handed to an OutboxWriter, which checks it with the
// validator stage's rules (the shared rules library) and the timestamp range
// (--min-timestamp, --max-timestamp-ahead), fills in a missing id
// and timestamp, drops repeated ids and writes in batched transactions. A
// refused line is reported on stderr as "line N: reason" and not written;
// a reason is one line of valid UTF-8 (what it quotes is escaped).
//
// Exit codes: 0 every line written or a duplicate; 5 some lines refused;
// 2 bad command line; 3 bad rules file; 1 database failure (one line on
// stderr saying which lines are written).
#include "base/text.hpp" // base::append_quoted: one way to quote untrusted bytes in a reason
#include "commands.hpp"
#include "json_type.hpp"
#include "pipeline.hpp"

#include <cdcflow/outbox_writer.hpp>
#include <cdcflow/rules.hpp>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <simdjson.h>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace po = boost::program_options;

namespace cdcflow::cli {

namespace {

constexpr const char *kUsage = "cdcflow produce --db PATH [--table T] [--rules FILE] [--batch-size N] "
                               "[--create-schema] [--busy-timeout-ms MS] [--min-timestamp US] "
                               "[--max-timestamp-ahead SECONDS] < events.jsonl";
constexpr size_t kMaxRulesFileBytes = size_t{4} << 20; // as for pipeline files
constexpr size_t kMaxLineBytes = size_t{8} << 20;      // longer lines are refused (8x the payload limit)
constexpr size_t kReadChunk = size_t{1} << 20;
constexpr int kProgressMs = 250;  // the progress line's refresh period (~4x/s)
constexpr int kIdleFlushMs = 200; // input paused this long: write what is buffered (tail -f | produce)

// ---- rules ---------------------------------------------------------------

// A rules file that is YAML is read through the pipeline loader, wrapped as
// the rules of a one-stage pipeline, so that its scalars mean exactly what
// they mean under a validator stage's `rules:` (same typing, same ${VAR}
// interpolation, same limits on hostile input). These lines go before it; its
// own lines are indented by kWrapIndent.
constexpr const char *kWrapHeader = "pipeline: rules\n"
                                    "stages:\n"
                                    "  - id: rules\n"
                                    "    plugin: validator\n"
                                    "    config:\n"
                                    "      rules:\n";
constexpr int kWrapLines = 6;
constexpr int kWrapIndent = 8;

std::string wrap_rules_yaml(std::string_view text) {
    std::string out = kWrapHeader;
    out.reserve(out.size() + text.size() + text.size() / 8);
    bool content_seen = false;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string line(text.substr(0, nl));
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        // Document markers and directives only mean something at column 0 of
        // a top-level document; blank them (keeping line numbers).
        auto marker = [&](std::string_view m) {
            return line.compare(0, 3, m) == 0 &&
                   (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
        };
        if (!content_seen && !line.empty() && line[0] == '%')
            line.clear();
        else if (!content_seen && marker("---"))
            line.replace(0, 3, "   ");
        else if (marker("..."))
            line.clear();
        size_t first = line.find_first_not_of(" \t\r");
        if (first != std::string::npos && line[first] != '#') content_seen = true;
        out.append(kWrapIndent, ' ').append(line).append("\n");
    }
    return out;
}

// The loader's "FILE:LINE:COL: what" about the wrapped text, moved back to
// the rules file's own lines and columns.
std::string unwrap_error(const std::string &msg, const std::string &file) {
    std::string prefix = file;
    prefix.append(":");
    if (msg.compare(0, prefix.size(), prefix) != 0) return msg;
    const char *p = msg.data() + prefix.size(), *end = msg.data() + msg.size();
    int line = 0, col = 0;
    auto r1 = std::from_chars(p, end, line);
    if (r1.ec != std::errc() || r1.ptr == end || *r1.ptr != ':') return msg;
    auto r2 = std::from_chars(r1.ptr + 1, end, col);
    if (r2.ec != std::errc() || r2.ptr == end || *r2.ptr != ':') return msg;
    std::string out = file;
    if (line > kWrapLines) {
        out.append(":").append(std::to_string(line - kWrapLines));
        out.append(":").append(std::to_string(std::max(1, col - kWrapIndent)));
    }
    out.append(r2.ptr);
    return out;
}

// The rules of the first stage whose plugin is "validator".
std::optional<rules::RuleSet> rules_of_pipeline(const host::PipelineDef &def, std::string *error) {
    for (const host::StageDef &st : def.stages) {
        if (st.plugin != "validator") continue;
        auto it = st.config.find("rules");
        if (it == st.config.end()) {
            *error = host::where(def.file, st.config_mark);
            error->append(": stage '").append(st.id).append("' (plugin validator) has no 'rules'");
            return std::nullopt;
        }
        std::string why;
        auto rs = rules::RuleSet::parse(it->second.json, &why);
        if (!rs) {
            *error = it->second.location;
            error->append(": rules: ").append(why);
        }
        return rs;
    }
    *error = def.file;
    error->append(": no stage with plugin 'validator' (produce uses the rules of the first one)");
    return std::nullopt;
}

// --rules FILE: a pipeline file (rules of its first validator stage), or a
// JSON or YAML document that is the rules mapping itself.
std::optional<rules::RuleSet> load_rules(const std::string &path, std::string *error) {
    std::string text;
    {
        std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!f) {
            *error = "cannot read rules file '";
            error->append(path).append("': ").append(std::strerror(errno));
            return std::nullopt;
        }
        char buf[1 << 16];
        size_t n;
        while (text.size() <= kMaxRulesFileBytes && (n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
            text.append(buf, n);
        if (std::ferror(f.get())) {
            *error = "cannot read rules file '";
            error->append(path).append("': ").append(std::strerror(errno));
            return std::nullopt;
        }
    }
    if (text.size() > kMaxRulesFileBytes) {
        *error = path;
        error->append(": file too large (the limit is 4 MiB)");
        return std::nullopt;
    }
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.replace(0, 3, "   "); // a BOM (keep the columns)
    size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
        *error = path;
        error->append(": empty rules file");
        return std::nullopt;
    }

    // JSON: taken literally, no YAML typing or interpolation.
    if (text[first] == '{' && nlohmann::json::accept(text)) {
        auto j = nlohmann::json::parse(text);
        if (!j.contains("stages")) {
            std::string why;
            auto rs = rules::RuleSet::parse(text, &why);
            if (!rs) error->assign(path).append(": ").append(why);
            return rs;
        }
        // else: a pipeline written as JSON; YAML reads it.
    } else {
        auto def = host::parse_pipeline(wrap_rules_yaml(text), path, host::process_env());
        if (!def) {
            *error = unwrap_error(def.status().message(), path);
            return std::nullopt;
        }
        const host::ConfigValue &v = def->stages.front().config.at("rules");
        nlohmann::json j = nlohmann::json::parse(v.json, nullptr, false);
        if (!j.is_object() || !(j.contains("stages") || j.contains("pipeline"))) {
            std::string why;
            auto rs = rules::RuleSet::parse(v.json, &why);
            if (!rs) error->assign(path).append(": ").append(why);
            return rs;
        }
        // else: a pipeline file.
    }
    auto def = host::parse_pipeline(text, path, host::process_env());
    if (!def) {
        *error = def.status().message();
        return std::nullopt;
    }
    return rules_of_pipeline(def.value(), error);
}

// ---- input ---------------------------------------------------------------

// Lines from a file descriptor, each followed in memory by at least
// SIMDJSON_PADDING readable bytes (so simdjson parses them in place). A line
// longer than kMaxLineBytes is skipped and reported as too long.
class LineReader {
public:
    explicit LineReader(int fd) : fd_(fd) { grow(4 * kReadChunk); }

    enum class Got { kLine, kTooLong, kEnd, kError };

    // While no input arrives, idle() is called every idle_ms() milliseconds
    // (asked again each time; -1: just wait for input).
    template <typename IdleMs, typename Idle>
    Got next(std::string_view *line, IdleMs &&idle_ms, Idle &&idle) {
        for (;;) {
            if (const void *nl = std::memchr(buf_.get() + begin_, '\n', end_ - begin_)) {
                size_t at = static_cast<const char *>(nl) - buf_.get();
                *line = std::string_view(buf_.get() + begin_, at - begin_);
                begin_ = at + 1;
                if (skipping_) {
                    skipping_ = false;
                    return Got::kTooLong;
                }
                return Got::kLine;
            }
            if (eof_) {
                if (begin_ == end_) return Got::kEnd;
                *line = std::string_view(buf_.get() + begin_, end_ - begin_);
                begin_ = end_;
                if (skipping_) {
                    skipping_ = false;
                    return Got::kTooLong;
                }
                return Got::kLine;
            }
            // No complete line: make room, then read.
            if (begin_ > 0) {
                std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
                end_ -= begin_;
                begin_ = 0;
            }
            if (end_ == cap_) {
                if (cap_ < kMaxLineBytes + 1) {
                    grow(std::min(2 * cap_, kMaxLineBytes + 1));
                } else {
                    skipping_ = true; // drop what we have; the rest of the line follows
                    end_ = 0;
                }
            }
            if (int ms = idle_ms(); ms >= 0) {
                pollfd p{fd_, POLLIN, 0};
                if (::poll(&p, 1, ms) == 0) {
                    idle();
                    continue;
                }
            }
            ssize_t n = ::read(fd_, buf_.get() + end_, std::min(kReadChunk, cap_ - end_));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                error_ = errno;
                return Got::kError;
            }
            if (n == 0) eof_ = true;
            end_ += static_cast<size_t>(n);
        }
    }

    int error() const { return error_; }

private:
    void grow(size_t cap) {
        std::unique_ptr<char[]> bigger(new char[cap + simdjson::SIMDJSON_PADDING]);
        if (buf_) std::memcpy(bigger.get(), buf_.get(), end_);
        std::memset(bigger.get() + cap, 0, simdjson::SIMDJSON_PADDING);
        buf_ = std::move(bigger);
        cap_ = cap;
    }

    int fd_;
    std::unique_ptr<char[]> buf_;
    size_t cap_ = 0, begin_ = 0, end_ = 0;
    bool eof_ = false, skipping_ = false;
    int error_ = 0;
};

// The fields of one input line.
enum Field : unsigned { kId, kAggregateType, kAggregateId, kType, kPayload, kTimestamp, kFieldCount };
constexpr std::string_view kFieldNames[kFieldCount] = {"id",   "aggregatetype", "aggregateid",
                                                       "type", "payload",       "timestamp"};

bool json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Past the string that starts at s[i] ('"').
size_t skip_string(std::string_view s, size_t i) {
    for (++i; i < s.size(); ++i) {
        if (s[i] == '\\')
            ++i;
        else if (s[i] == '"')
            return i + 1;
    }
    return s.size();
}

// Past the value that starts at s[i].
size_t skip_value(std::string_view s, size_t i) {
    if (s[i] == '"') return skip_string(s, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < s.size()) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i);
                continue;
            }
            ++i;
            if (c == '{' || c == '[')
                ++depth;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i;
        }
        return i;
    }
    while (i < s.size() && !json_space(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']')
        ++i;
    return i;
}

// The raw text of the value of the n-th member of the object `json`, which
// the DOM parser has validated (so this walk needs no error handling). The
// DOM keeps no source offsets; taking the payload's own bytes (rather than
// re-serializing the DOM) keeps it exactly as the producer wrote it.
std::string_view member_value(std::string_view json, size_t n) {
    size_t i = json.find('{') + 1;
    for (size_t m = 0;; ++m) {
        while (json_space(json[i]))
            ++i;
        i = skip_string(json, i); // the key
        while (json_space(json[i]))
            ++i;
        ++i; // ':'
        while (json_space(json[i]))
            ++i;
        size_t start = i;
        i = skip_value(json, i);
        if (m == n) return json.substr(start, i - start);
        while (json_space(json[i]))
            ++i;
        ++i; // ','
    }
}

// Parses lines into OutboxEvents. The views it returns point into the line
// and the parser's buffers: valid until the next parse().
class LineParser {
public:
    LineParser() {
        if (parser_.allocate(64 * 1024) != simdjson::SUCCESS) throw std::bad_alloc();
    }

    // On success fills *ev and returns true; else returns false with *why.
    // REQUIRES: SIMDJSON_PADDING readable bytes after the line (LineReader).
    bool parse(std::string_view line, OutboxEvent *ev, std::string *why) {
        // A whole-document DOM parse, runtime-dispatched to the CPU's best
        // kernel (simdjson's On Demand API would run its portable fallback in
        // a generic x86-64 build). Grow geometrically, not to each new maximum.
        if (line.size() > parser_.capacity() &&
            parser_.allocate(std::max(line.size(), 2 * parser_.capacity())) != simdjson::SUCCESS)
            throw std::bad_alloc();
        simdjson::dom::element root;
        if (auto err = parser_.parse(line.data(), line.size(), false).get(root)) {
            why->assign("not valid JSON: ").append(simdjson::error_message(err));
            return false;
        }
        simdjson::dom::object obj;
        if (root.get_object().get(obj)) {
            why->assign("not a JSON object (got ").append(rules::json_type_name(root.type())).append(")");
            return false;
        }
        *ev = OutboxEvent();
        unsigned seen = 0;
        size_t index = 0, payload_index = 0;
        for (simdjson::dom::key_value_pair kv : obj) {
            unsigned f = 0;
            while (f < kFieldCount && kv.key != kFieldNames[f])
                ++f;
            if (f == kFieldCount) {
                why->assign("unknown field ");
                base::append_quoted(*why, kv.key, {'"', 60});
                why->append(" (known: id, aggregatetype, aggregateid, type, payload, timestamp)");
                return false;
            }
            if (seen & (1u << f)) {
                why->assign("duplicate field \"").append(kFieldNames[f]).append("\"");
                return false;
            }
            seen |= 1u << f;
            simdjson::dom::element_type t = kv.value.type();
            if ((f == kId || f == kTimestamp) && t == simdjson::dom::element_type::NULL_VALUE) {
                seen &= ~(1u << f); // null: as if absent
            } else if (f == kPayload) {
                if (t != simdjson::dom::element_type::OBJECT) return type_error(f, "a JSON object", t, why);
                payload_index = index;
            } else if (f == kTimestamp) {
                // The writer checks the range (OutboxWriterOptions).
                if (t == simdjson::dom::element_type::UINT64) {
                    why->assign("timestamp: ")
                        .append(std::to_string(kv.value.get_uint64().value_unsafe()))
                        .append(" is more than 9223372036854775807 (microseconds since the epoch)");
                    return false;
                }
                if (t != simdjson::dom::element_type::INT64)
                    return type_error(f, "an integer (microseconds since the epoch)", t, why);
                ev->timestamp_us = kv.value.get_int64().value_unsafe();
            } else {
                if (t != simdjson::dom::element_type::STRING) return type_error(f, "a string", t, why);
                std::string_view s = kv.value.get_string().value_unsafe();
                if (f == kId && s.empty()) {
                    why->assign("id: is empty (leave it out to have one generated)");
                    return false;
                }
                switch (f) {
                case kId:
                    ev->id = s;
                    break;
                case kAggregateType:
                    ev->aggregate_type = s;
                    break;
                case kAggregateId:
                    ev->aggregate_id = s;
                    break;
                default:
                    ev->type = s;
                    break;
                }
            }
            ++index;
        }
        for (unsigned f : {kAggregateType, kAggregateId, kType, kPayload})
            if (!(seen & (1u << f))) {
                why->assign("missing field \"").append(kFieldNames[f]).append("\"");
                return false;
            }
        ev->payload = member_value(line, payload_index);
        return true;
    }

private:
    static bool type_error(unsigned f, const char *expected, simdjson::dom::element_type got,
                           std::string *why) {
        why->assign(kFieldNames[f]).append(": expected ").append(expected).append(", got ");
        why->append(rules::json_type_name(got));
        return false;
    }

    simdjson::dom::parser parser_;
};

// ---- progress ------------------------------------------------------------

using Clock = std::chrono::steady_clock;

// The progress line on a terminal: "\r12345 written, 3 refused, 0 duplicates, 250000 events/s".
class Progress {
public:
    explicit Progress(bool enabled) : enabled_(enabled), last_(Clock::now()) {}
    bool enabled() const { return enabled_; }

    // Redraws when kProgressMs have passed (or `force`).
    void tick(uint64_t lines, const OutboxWriterMetrics &m, uint64_t refused, bool force = false) {
        if (!enabled_) return;
        Clock::time_point now = Clock::now();
        double secs = std::chrono::duration<double>(now - last_).count();
        if (!force && secs * 1000 < kProgressMs) return;
        double rate = secs > 0 ? static_cast<double>(lines - last_lines_) / secs : 0;
        std::fprintf(stderr, "\r\033[K%llu written, %llu refused, %llu duplicates, %.0f events/s",
                     static_cast<unsigned long long>(m.written), static_cast<unsigned long long>(refused),
                     static_cast<unsigned long long>(m.duplicates), rate);
        std::fflush(stderr);
        shown_ = true;
        last_ = now;
        last_lines_ = lines;
    }
    // Before other output on stderr.
    void clear() {
        if (!shown_) return;
        std::fputs("\r\033[K", stderr);
        shown_ = false;
    }

private:
    bool enabled_;
    bool shown_ = false;
    Clock::time_point last_;
    uint64_t last_lines_ = 0;
};

} // namespace

int cmd_produce(int argc, char **argv) {
    po::options_description opts("produce options");
    opts.add_options()("help,h", "show this help")("db", po::value<std::string>(),
                                                   "the SQLite database (required)")(
        "table", po::value<std::string>()->default_value("outbox"), "the outbox table")(
        "rules", po::value<std::string>(),
        "a pipeline file (the rules of its first validator stage) or a rules file (YAML or JSON)")(
        "batch-size", po::value<long long>()->default_value(1000), "events per transaction (1..1000000)")(
        "create-schema", po::bool_switch(), "create the outbox table and its index when missing")(
        "busy-timeout-ms", po::value<int>()->default_value(5000),
        "how long a write waits for another connection's lock before failing")(
        "min-timestamp", po::value<long long>()->value_name("US")->default_value(0),
        "refuse an event whose timestamp (microseconds since the epoch) is earlier (0: "
        "1970-01-01T00:00:00Z)")(
        "max-timestamp-ahead", po::value<long long>()->value_name("SECONDS")->default_value(86400),
        "refuse an event whose timestamp is more than SECONDS after the current time (86400: one day)");
    po::positional_options_description none; // so that a stray argument is an error, not ignored
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(opts).positional(none).run(), vm);
        if (vm.count("help")) {
            std::cout
                << "usage: " << kUsage << "\n\n"
                << "Reads one JSON event per line from standard input:\n"
                << "  {\"id\"?: str, \"aggregatetype\": str, \"aggregateid\": str, \"type\": str,"
                << " \"payload\": {...}, \"timestamp\"?: int}\n"
                << "and writes the valid ones into the outbox. Refused lines are reported on stderr.\n"
                << "A timestamp (microseconds since the epoch; missing: now) must lie from --min-timestamp\n"
                << "to --max-timestamp-ahead seconds after the current time.\n\n"
                << opts << "\n";
            return kExitOk;
        }
        po::notify(vm);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cdcflow produce: %s (usage: %s)\n", e.what(), kUsage);
        return kExitUsage;
    }
    if (!vm.count("db")) {
        std::fprintf(stderr, "cdcflow produce: --db is required (usage: %s)\n", kUsage);
        return kExitUsage;
    }
    long long batch = vm["batch-size"].as<long long>();
    if (batch < 1 || batch > 1'000'000) {
        std::fprintf(stderr, "cdcflow produce: --batch-size must be from 1 to 1000000, got %lld\n", batch);
        return kExitUsage;
    }
    long long ahead_s = vm["max-timestamp-ahead"].as<long long>();
    if (ahead_s < 0 || ahead_s > INT64_MAX / 1000) {
        std::fprintf(stderr,
                     "cdcflow produce: --max-timestamp-ahead must be from 0 to %lld seconds, got %lld\n",
                     static_cast<long long>(INT64_MAX / 1000), ahead_s);
        return kExitUsage;
    }
    const std::string db_path = vm["db"].as<std::string>();

    OutboxWriterOptions wo;
    wo.table = vm["table"].as<std::string>();
    wo.batch_size = static_cast<size_t>(batch);
    wo.create_schema = vm["create-schema"].as<bool>();
    wo.busy_timeout_ms = std::max(0, vm["busy-timeout-ms"].as<int>());
    wo.min_timestamp_us = vm["min-timestamp"].as<long long>();
    wo.max_timestamp_ahead_ms = ahead_s * 1000;
    if (vm.count("rules")) {
        std::string error;
        wo.rules = load_rules(vm["rules"].as<std::string>(), &error);
        if (!wo.rules) {
            std::fprintf(stderr, "cdcflow produce: %s\n", error.c_str());
            return kExitInvalid;
        }
    }

    // A closed stdout (`produce ... | head`) must end in an exit code, not a
    // SIGPIPE death.
    std::signal(SIGPIPE, SIG_IGN);
    Progress progress(::isatty(STDERR_FILENO) == 1);
    uint64_t refused_here = 0; // lines refused before reaching the writer
    std::string line_msg;
    auto report = [&](uint64_t line_no, std::string_view reason) {
        line_msg.assign("line ").append(std::to_string(line_no)).append(": ").append(reason).append("\n");
        progress.clear();
        std::fwrite(line_msg.data(), 1, line_msg.size(), stderr);
    };
    // A CHECK or trigger of the database refused a line while a batch was written.
    wo.on_refused = [&](const OutboxEvent &ev, std::string_view reason) {
        std::string why = "refused by the database: ";
        why.append(reason);
        report(ev.tag, why);
    };

    std::unique_ptr<OutboxWriter> writer;
    if (OutboxStatus st = OutboxWriter::open(db_path, std::move(wo), &writer); !st.ok()) {
        std::string msg = st.message();
        if (st.code() == OutboxStatus::Code::kNotFound) msg.append(" (use --create-schema to create it)");
        std::fprintf(stderr, "cdcflow produce: %s\n", msg.c_str());
        return st.code() == OutboxStatus::Code::kInvalidArgument ? kExitInvalid : kExitFailure;
    }

    auto summary = [&] {
        progress.clear();
        OutboxWriterMetrics m = writer->metrics();
        std::printf("produced: %llu written, %llu duplicates, %llu refused\n",
                    static_cast<unsigned long long>(m.written), static_cast<unsigned long long>(m.duplicates),
                    static_cast<unsigned long long>(m.refused + refused_here));
        std::fflush(stdout);
        return m.refused + refused_here;
    };
    uint64_t line_no = 0;
    uint64_t first_buffered = 0; // the first line in the writer's buffer (0: empty)
    // A batch could not be written: say exactly which input is in the outbox.
    auto db_failure = [&](const OutboxStatus &st) {
        writer->discard(); // so that the destructor does not write them after all
        summary();
        uint64_t done = (first_buffered ? first_buffered : line_no + 1) - 1;
        std::fprintf(stderr,
                     "cdcflow produce: %s; input up to line %llu is done, line %llu and later not written\n",
                     st.message().c_str(), static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(done + 1));
        return kExitFailure;
    };

    LineReader reader(STDIN_FILENO);
    LineParser parser;
    OutboxEvent ev;
    std::string why;
    OutboxStatus idle_error;
    // While input pauses: keep the progress line alive and write what is
    // buffered, so that a slow stream's events do not wait for a full batch.
    auto idle = [&] {
        if (writer->metrics().buffered > 0) {
            OutboxStatus st = writer->flush();
            if (st.ok())
                first_buffered = 0;
            else if (idle_error.ok())
                idle_error = st;
        }
        progress.tick(line_no, writer->metrics(), refused_here);
    };
    auto idle_ms = [&] {
        return progress.enabled() ? kProgressMs : writer->metrics().buffered > 0 ? kIdleFlushMs : -1;
    };
    for (;;) {
        std::string_view line;
        LineReader::Got got = reader.next(&line, idle_ms, idle);
        if (!idle_error.ok()) return db_failure(idle_error);
        if (got == LineReader::Got::kEnd) break;
        if (got == LineReader::Got::kError) {
            summary();
            std::fprintf(stderr, "cdcflow produce: cannot read standard input: %s\n",
                         std::strerror(reader.error()));
            return kExitFailure;
        }
        ++line_no;
        if (got == LineReader::Got::kTooLong) {
            ++refused_here;
            report(line_no, "line longer than 8 MiB");
            continue;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.find_first_not_of(" \t") == std::string_view::npos) continue; // blank lines are not events
        if (!parser.parse(line, &ev, &why)) {
            ++refused_here;
            report(line_no, why);
            continue;
        }
        ev.tag = line_no;
        AppendResult r = writer->append(ev);
        if (!r.status.ok()) {
            if (r.status.code() != OutboxStatus::Code::kRefused) return db_failure(r.status);
            report(line_no, r.status.message());
        } else if (!r.duplicate && first_buffered == 0) {
            first_buffered = line_no;
        }
        if (!r.flush_status.ok()) return db_failure(r.flush_status);
        if (r.status.ok() && !r.duplicate && writer->metrics().buffered == 0) first_buffered = 0;
        if (progress.enabled() && (line_no & 1023) == 0)
            progress.tick(line_no, writer->metrics(), refused_here);
    }
    if (OutboxStatus st = writer->flush(); !st.ok()) return db_failure(st);
    first_buffered = 0;
    return summary() > 0 ? kExitRefused : kExitOk;
}

} // namespace cdcflow::cli

// cdcflow produce: JSON lines on standard input -> events in an outbox table.
//
// The command line around the producer library (core/produce): its loop
// (producer.hpp) reads and parses each line (event_lines.hpp) and hands it to
// an OutboxWriter, which checks it with the validator stage's rules (the
// shared rules library, loaded by rules_file.hpp) and the timestamp range
// (--min-timestamp, --max-timestamp-ahead), fills in a missing id and
// timestamp, drops repeated ids and writes in batched transactions. A refused
// line is reported on stderr as "line N: reason" and not written; a reason is
// one line of valid UTF-8 (what it quotes is escaped).
//
// Exit codes: 0 every line written or a duplicate; 5 some lines refused;
// 2 bad command line; 3 bad rules file; 1 database failure (one line on
// stderr saying which lines are written).
#include "base/text.hpp" // base::append_quoted: one way to quote untrusted bytes in a reason
#include "commands.hpp"
#include "producer.hpp"
#include "rules_file.hpp"

#include <cdcflow/outbox_writer.hpp>

#include <boost/program_options.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

namespace po = boost::program_options;

namespace cdcflow::cli {

namespace {

constexpr const char *kUsage = "cdcflow produce --db PATH [--table T] [--rules FILE] [--batch-size N] "
                               "[--create-schema] [--busy-timeout-ms MS] [--min-timestamp US] "
                               "[--max-timestamp-ahead SECONDS] < events.jsonl";
constexpr int kProgressMs = 250; // the progress line's refresh period (~4x/s)

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
        wo.rules = produce::load_rules_file(vm["rules"].as<std::string>(), host::process_env(), &error);
        if (!wo.rules) {
            std::fprintf(stderr, "cdcflow produce: %s\n", error.c_str());
            return kExitInvalid;
        }
    }

    // A closed stdout (`produce ... | head`) must end in an exit code, not a
    // SIGPIPE death.
    std::signal(SIGPIPE, SIG_IGN);
    Progress progress(::isatty(STDERR_FILENO) == 1);
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

    produce::ProduceHooks hooks;
    hooks.refused = report;
    if (progress.enabled()) {
        hooks.progress_ms = kProgressMs;
        hooks.progress = [&](uint64_t lines, uint64_t refused_here) {
            // Refused in all, as the summary counts them: by the parser and by the writer.
            OutboxWriterMetrics m = writer->metrics();
            progress.tick(lines, m, m.refused + refused_here);
        };
    }
    produce::ProduceOutcome out = produce::produce_lines(STDIN_FILENO, *writer, hooks);

    progress.clear();
    OutboxWriterMetrics m = writer->metrics();
    const uint64_t refused = m.refused + out.refused_here;
    std::printf("produced: %llu written, %llu duplicates, %llu refused\n",
                static_cast<unsigned long long>(m.written), static_cast<unsigned long long>(m.duplicates),
                static_cast<unsigned long long>(refused));
    std::fflush(stdout);
    switch (out.end) {
    case produce::ProduceOutcome::End::kReadError:
        std::fprintf(stderr, "cdcflow produce: cannot read standard input: %s\n",
                     std::strerror(out.read_errno));
        return kExitFailure;
    case produce::ProduceOutcome::End::kDbFailure:
        std::fprintf(stderr,
                     "cdcflow produce: %s; input up to line %llu is done, line %llu and later not written\n",
                     out.db_status.message().c_str(), static_cast<unsigned long long>(out.done_through_line),
                     static_cast<unsigned long long>(out.done_through_line + 1));
        return kExitFailure;
    case produce::ProduceOutcome::End::kDone:
        break;
    }
    return refused > 0 ? kExitRefused : kExitOk;
}

} // namespace cdcflow::cli

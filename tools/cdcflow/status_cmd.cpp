// See status_cmd.hpp. One reading is /health (JSON) and /metrics (Prometheus
// text, read with http/prom_text.hpp); rates come from two readings. What a
// host does not report shows as "-": an older or newer host's page is
// summarized with what it has, never refused.
#include "status_cmd.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"
#include "commands.hpp"
#include "http/client.hpp"
#include "http/prom_text.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace cdcflow::cli {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct Reading {
    std::string error; // "": /health answered with cdcflow's JSON
    int status = 0;    // /health's HTTP status
    Json health;
    std::string metrics_error;
    std::string metrics_raw;
    std::vector<http::Sample> samples;
    Clock::time_point at;
};

Reading take(const StatusOptions &o) {
    Reading r;
    r.at = Clock::now();
    auto h = http::get(o.addr, "/health", o.timeout_ms);
    if (!h) {
        r.error = h.status().message();
        return r;
    }
    r.status = h->status;
    r.health = Json::parse(h->body, nullptr, false);
    if (r.health.is_discarded() || !r.health.is_object() || !r.health.contains("state")) {
        r.error = "http://" + o.addr.text() + "/health answered " + std::to_string(h->status) +
                  " without cdcflow's health JSON: is this a cdcflow host?";
        return r;
    }
    auto m = http::get(o.addr, "/metrics", o.timeout_ms);
    if (!m)
        r.metrics_error = m.status().message();
    else if (m->status != 200)
        r.metrics_error = "/metrics answered " + std::to_string(m->status);
    else {
        r.metrics_raw = std::move(m->body);
        r.samples = http::parse_prometheus(r.metrics_raw);
    }
    return r;
}

// Text from the host (ids, errors, owner) on a terminal: control bytes
// (an escape sequence) and invalid UTF-8 written as \xNN, one line.
std::string clean(std::string_view s) {
    return base::quoted(s, {.quote = 0, .max_bytes = 300, .keep_utf8 = true});
}

std::string str(const Json &j, const char *key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? clean(it->get<std::string>()) : std::string();
}

std::optional<double> num(const Json &j, const char *key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::string count_text(std::optional<double> v) {
    if (!v || !std::isfinite(*v)) return "-";
    char b[64];
    std::snprintf(b, sizeof b, "%.0f", *v);
    return b;
}

std::string bytes_text(std::optional<double> v) {
    if (!v || !std::isfinite(*v)) return "-";
    char b[64];
    std::snprintf(b, sizeof b, "%.1f MiB resident", *v / (1024.0 * 1024.0));
    return b;
}

// The numbers /metrics gives per stage (this pipeline's samples only).
struct StageNums {
    std::optional<double> events, rejected, duplicates, lag, breaker;
};

void add(std::optional<double> &to, double v) {
    to = to.value_or(0) + v;
}

bool ours(const http::Sample &s, const std::string &pipeline) {
    const std::string *p = s.label("pipeline");
    return !p || *p == pipeline;
}

std::map<std::string, StageNums> stage_numbers(const Reading &r, const std::string &pipeline) {
    std::map<std::string, StageNums> out;
    for (const http::Sample &s : r.samples) {
        const std::string *stage = s.label("stage");
        if (!stage || !ours(s, pipeline)) continue;
        StageNums &n = out[*stage];
        if (s.name == "cdcflow_events_total") {
            // Every event a stage handles ends in one outcome: their sum is
            // what the stage saw.
            add(n.events, s.value);
            const std::string *outcome = s.label("outcome");
            if (outcome && *outcome == "rejected") add(n.rejected, s.value);
            if (outcome && *outcome == "duplicate") add(n.duplicates, s.value);
        } else if (s.name == "cdcflow_source_lag_events") {
            add(n.lag, s.value); // over partitions
        } else if (s.name == "cdcflow_breaker_state") {
            n.breaker = s.value;
        }
    }
    return out;
}

const char *breaker_from_metric(double v) {
    return v >= 2 ? "open" : v >= 1 ? "half_open" : "closed";
}

// Columns padded to their widest cell, two spaces apart.
std::string table(const std::vector<std::vector<std::string>> &rows) {
    std::vector<size_t> w;
    for (const auto &row : rows)
        for (size_t i = 0; i < row.size(); ++i) {
            if (w.size() <= i) w.push_back(0);
            w[i] = std::max(w[i], row[i].size());
        }
    std::string out;
    for (const auto &row : rows) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line += std::string(w[i] - row[i].size() + 2, ' ');
        }
        out += "  " + line + "\n";
    }
    return out;
}

std::string render(const StatusOptions &o, const Reading &now, const Reading *before) {
    std::string out = "cdcflow http://" + o.addr.text() + "  " +
                      base::utc(base::wall_us(), base::UtcDigits::kSeconds) + "\n";
    if (!now.error.empty()) return out + "  " + clean(now.error) + "\n";
    const Json &h = now.health;
    std::string pipeline = str(h, "pipeline");
    std::string state = str(h, "state"), role = str(h, "role");
    out += "  pipeline  " + pipeline + "\n";
    out += "  state     " + state + (role.empty() ? "" : " (" + role + ")");
    out += now.status == 200 ? ", healthy" : ", NOT healthy (" + std::to_string(now.status) + ")";
    if (auto it = h.find("ready"); it != h.end() && it->is_boolean())
        out += it->get<bool>() ? ", ready" : ", not ready";
    out += "\n";
    if (std::string owner = str(h, "owner"); !owner.empty()) out += "  owner     " + owner + "\n";
    if (std::string err = str(h, "last_error"); !err.empty()) out += "  error     " + err + "\n";

    auto nums = stage_numbers(now, pipeline);
    std::map<std::string, StageNums> prev;
    double dt = 0;
    if (before && before->error.empty()) {
        prev = stage_numbers(*before, pipeline);
        dt = std::chrono::duration<double>(now.at - before->at).count();
    }
    std::vector<std::vector<std::string>> rows = {
        {"STAGE", "KIND", "STATE", "BREAKER", "EVENTS", "EVENTS/S", "REJECTED", "DUPLICATES", "LAG"}};
    std::vector<std::string> stage_errors;
    if (auto it = h.find("stages"); it != h.end() && it->is_array()) {
        for (const Json &s : *it) {
            if (!s.is_object()) continue;
            std::string id = str(s, "id");
            const StageNums *n = nullptr;
            if (auto f = nums.find(s.value("id", std::string())); f != nums.end()) n = &f->second;
            std::string rate = "-";
            if (n && n->events && dt > 0) {
                auto p = prev.find(s.value("id", std::string()));
                if (p != prev.end() && p->second.events) {
                    char b[64];
                    std::snprintf(b, sizeof b, "%.1f", std::max(0.0, *n->events - *p->second.events) / dt);
                    rate = b;
                }
            }
            std::string breaker = str(s, "breaker");
            if (breaker.empty() && n && n->breaker) breaker = breaker_from_metric(*n->breaker);
            rows.push_back(
                {id, str(s, "kind"), str(s, "state"), breaker.empty() ? "-" : breaker,
                 count_text(n ? n->events : std::nullopt), rate, count_text(n ? n->rejected : std::nullopt),
                 count_text(n ? n->duplicates : std::nullopt), count_text(n ? n->lag : std::nullopt)});
            if (std::string e = str(s, "last_error"); !e.empty()) stage_errors.push_back(id + ": " + e);
        }
    }
    out += "\n" + table(rows);
    for (const std::string &e : stage_errors)
        out += "  error     " + e + "\n";

    // Queues in the order the page lists them.
    std::vector<std::string> order;
    std::map<std::string, std::pair<std::optional<double>, std::optional<double>>> queues;
    std::optional<double> rss;
    for (const http::Sample &s : now.samples) {
        if (s.name == "process_resident_memory_bytes") rss = s.value;
        const std::string *q = s.label("queue");
        if (!q || !ours(s, pipeline)) continue;
        bool depth = s.name == "cdcflow_queue_depth_batches",
             cap = s.name == "cdcflow_queue_capacity_batches";
        if (!depth && !cap) continue;
        if (!queues.count(*q)) order.push_back(*q);
        (depth ? queues[*q].first : queues[*q].second) = s.value;
    }
    std::string qtext;
    for (const std::string &q : order)
        qtext += (qtext.empty() ? "" : ", ") + clean(q) + " " + count_text(queues[q].first) + "/" +
                 count_text(queues[q].second);
    out += "\n  queues    " + (qtext.empty() ? std::string("-") : qtext) + "\n";
    out += "  memory    " + bytes_text(rss) + "\n";
    out += "  totals    " + count_text(num(h, "events")) + " events: " + count_text(num(h, "applied")) +
           " applied, " + count_text(num(h, "rejected")) + " rejected, " + count_text(num(h, "duplicates")) +
           " duplicates, " + count_text(num(h, "dropped")) + " dropped\n";
    if (!now.metrics_error.empty()) out += "  metrics   " + clean(now.metrics_error) + "\n";
    if (o.metrics && !now.metrics_raw.empty()) out += "\n" + now.metrics_raw;
    return out;
}

int exit_code(const Reading &r) {
    if (!r.error.empty()) return kExitUsage; // 2: cannot be reached
    return r.status == 200 ? kExitOk : kExitFailure;
}

// False when stdout is gone (a closed pipe: `status --watch | head`).
bool print(const std::string &block, bool terminal) {
    // A terminal is redrawn in place (cursor home, clear); a pipe or file
    // gets one block after another.
    std::string text = terminal ? "\x1b[H\x1b[2J" + block : block + "\n";
    std::fwrite(text.data(), 1, text.size(), stdout);
    return std::fflush(stdout) == 0 && !std::ferror(stdout);
}

} // namespace

int run_status(const StatusOptions &o) {
    // A reader that closes the pipe ends this with a write error, not SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    if (!o.watch) {
        Reading first = take(o);
        if (!first.error.empty()) {
            std::fprintf(stderr, "cdcflow status: %s\n", clean(first.error).c_str());
            return kExitUsage;
        }
        if (!o.interval_s) {
            std::string block = render(o, first, nullptr);
            std::fwrite(block.data(), 1, block.size(), stdout);
            return exit_code(first);
        }
        // --interval without --watch: a second reading for the rates.
        std::this_thread::sleep_for(std::chrono::duration<double>(*o.interval_s));
        Reading second = take(o);
        if (!second.error.empty()) {
            std::fprintf(stderr, "cdcflow status: %s\n", clean(second.error).c_str());
            return kExitUsage;
        }
        std::string block = render(o, second, &first);
        std::fwrite(block.data(), 1, block.size(), stdout);
        return exit_code(second);
    }

    // --watch: SIGINT/SIGTERM end it (exit 0). They are blocked and waited
    // for between readings (sigtimedwait), so the wait neither spins nor
    // misses a signal that comes during a request.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    const bool terminal = isatty(STDOUT_FILENO) == 1;
    const auto interval = std::chrono::duration<double>(o.interval_s.value_or(1.0));
    std::optional<Reading> before;
    for (;;) {
        Reading now = take(o);
        if (!print(render(o, now, before ? &*before : nullptr), terminal)) return kExitFailure;
        auto until = now.at + std::chrono::duration_cast<Clock::duration>(interval);
        for (;;) {
            auto left = until - Clock::now();
            if (left <= Clock::duration::zero()) break;
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            int sig = sigtimedwait(&set, nullptr, &ts);
            if (sig == SIGINT || sig == SIGTERM) return kExitOk;
            if (sig < 0 && errno == EAGAIN) break;
        }
        if (now.error.empty())
            before = std::move(now);
        else
            before.reset();
    }
}

} // namespace cdcflow::cli

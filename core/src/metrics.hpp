// Metrics: Prometheus metric families with labels, rendered in the text
// exposition format for `/metrics` (README.md, "Metrics", lists every family).
//
// A family has one name, one type and one help text; each distinct set of
// label values is one series. Counters and gauges store an int64 (updated with
// relaxed atomics, lock-free, from any thread) that is multiplied by the
// family's scale when rendered, so that the hot path counts integers
// (microseconds) and the page shows base units (seconds). Histograms count
// observations into fixed buckets, also lock-free.
//
// What is cheaper to read than to count (queue depths, breaker states, the
// process's memory) comes from collectors: functions called at each scrape
// that add samples from live state.
//
// Thread-safety: creating a series or a collector, removing a collector and
// rendering take one lock; updating a series takes none. Handles stay valid
// for the Metrics object's life.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// One counter or gauge series (the handle plugins see through the ABI).
struct cdcflow_metric {
    std::atomic<int64_t> value{0};
};

namespace cdcflow::host {

// Label names and values, in the order they are rendered.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { counter, gauge, histogram };

// One histogram series. Observations are integers in the family's raw unit
// (e.g. microseconds); bucket bounds are in base units (seconds).
class Histogram {
public:
    Histogram(const std::vector<double> &bounds, double scale);
    void observe(int64_t raw) { add(bucket(raw), static_cast<double>(raw), 1); }
    // Several observations at once (a caller that tallied a batch locally):
    // counts[i] for bucket i (bounds().size() + 1 of them, the last is +Inf).
    void add_counts(const uint64_t *counts, double raw_sum);
    size_t bucket(int64_t raw) const;
    size_t buckets() const { return raw_bounds_.size() + 1; }
    uint64_t count() const { return count_.load(std::memory_order_relaxed); }
    void render(std::string &out, const std::string &name, const std::string &labels) const;

private:
    void add(size_t i, double raw, uint64_t n);
    std::vector<double> bounds_;
    std::vector<int64_t> raw_bounds_; // bounds_ / scale, rounded down
    double scale_;
    std::unique_ptr<std::atomic<uint64_t>[]> counts_; // per bucket, not cumulative
    std::atomic<uint64_t> count_{0};
    std::atomic<double> sum_{0}; // raw units (a double: no observation can overflow it)
};

// Samples a collector adds at a scrape.
class Collect {
public:
    void gauge(std::string_view family, std::string_view help, const Labels &labels, double value) {
        add(family, help, MetricType::gauge, labels, value);
    }
    void counter(std::string_view family, std::string_view help, const Labels &labels, double value) {
        add(family, help, MetricType::counter, labels, value);
    }

private:
    friend class Metrics;
    struct Sample {
        std::string help;
        MetricType type;
        Labels labels;
        double value;
    };
    void add(std::string_view family, std::string_view help, MetricType type, const Labels &labels,
             double value);
    std::multimap<std::string, Sample, std::less<>> samples_;
};

class Metrics {
public:
    Metrics();
    ~Metrics();
    Metrics(const Metrics &) = delete;
    Metrics &operator=(const Metrics &) = delete;

    // The series of `family` with these labels, made on first use. A family
    // keeps the type, help and scale it was first made with: asking for it
    // as another type returns null (callers treat null as "not counted").
    // `family` must be a valid Prometheus name (see valid_name).
    cdcflow_metric *counter(std::string_view family, std::string_view help, const Labels &labels,
                            double scale = 1);
    cdcflow_metric *gauge(std::string_view family, std::string_view help, const Labels &labels,
                          double scale = 1);
    Histogram *histogram(std::string_view family, std::string_view help, const Labels &labels,
                         const std::vector<double> &bounds, double scale = 1);

    // Collectors run at each scrape, under the metrics lock (they must not
    // call back into this object). remove_collector returns once the
    // collector is not running and never will again.
    using Collector = std::function<void(Collect &)>;
    int add_collector(Collector c);
    void remove_collector(int id);

    // The text exposition format (version 0.0.4): every family once, sorted
    // by name, HELP and TYPE first.
    std::string prometheus() const;

    // Tests and tools: one stored series' value (scaled), or the sum of every
    // stored series of `family` whose labels include `subset`.
    std::optional<double> value(std::string_view family, const Labels &labels) const;
    double sum(std::string_view family, const Labels &subset = {}) const;
    // The names of the stored families (sorted).
    std::vector<std::string> families() const;

    // [a-zA-Z_:][a-zA-Z0-9_:]*
    static bool valid_name(std::string_view name);
    // `text` as a metric name part: every other byte becomes '_'.
    static std::string name_part(std::string_view text);

private:
    struct Series {
        Labels labels;
        std::string rendered_labels; // {a="x",b="y"} or ""
        cdcflow_metric metric;
        std::unique_ptr<Histogram> histogram;
    };
    struct Family {
        MetricType type;
        std::string help;
        double scale = 1;
        std::deque<Series> series; // stable addresses
        std::map<std::string, Series *, std::less<>> by_labels;
    };
    Series *series(std::string_view family, std::string_view help, MetricType type, const Labels &labels,
                   double scale, const std::vector<double> *bounds);

    mutable std::mutex mu_;
    std::map<std::string, Family, std::less<>> families_;
    std::map<int, Collector> collectors_;
    int next_collector_ = 1;
};

// Label text as the exposition format wants it: {a="x",b="y"}, values escaped.
std::string render_labels(const Labels &labels);

} // namespace cdcflow::host

// Metrics: named counters and gauges, lock-free to update, rendered as
// Prometheus text for `cdcflow run --http` and as a table for `--drain`.
//
// Thread-safety: create() takes a lock (called at stage creation); add/set on
// a metric are relaxed atomics, callable from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

struct cdcflow_metric {
    std::string name; // "<stage>.<name>" or "pipeline.<name>"
    std::string help;
    bool gauge = false;
    std::atomic<int64_t> value{0};
};

namespace cdcflow::host {

class Metrics {
public:
    // Returns the existing metric when the name is taken (same kind).
    cdcflow_metric *create(const std::string &name, const std::string &help, bool gauge);
    // Null when absent.
    cdcflow_metric *find(const std::string &name) const;
    int64_t value(const std::string &name) const;
    // Snapshot, sorted by name.
    std::vector<std::pair<std::string, int64_t>> snapshot() const;
    // Prometheus text exposition: cdcflow_<name with . -> _>.
    std::string prometheus() const;

private:
    mutable std::mutex mu_;
    std::deque<cdcflow_metric> store_; // stable addresses
    std::map<std::string, cdcflow_metric *> by_name_;
};

} // namespace cdcflow::host

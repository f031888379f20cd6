// The standard process metrics every Prometheus client library exports
// (process_resident_memory_bytes, process_cpu_seconds_total, ...), read from
// /proc at each scrape, plus cdcflow_build_info.
#pragma once

#include "metrics.hpp"

namespace cdcflow::host {

// Adds the collector; returns its id (Metrics::remove_collector).
int add_process_metrics(Metrics &m);

} // namespace cdcflow::host

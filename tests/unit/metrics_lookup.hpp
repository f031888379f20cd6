// Tests read metrics by the short names they were written with,
// "<stage>.<what>": the host's families for what the host counts, a plugin's
// own family (cdcflow_plugin_<plugin>_<what>[_total]) otherwise.
#pragma once

#include "metrics.hpp"

#include <cstdint>
#include <string>

namespace cdcflow::test {

inline int64_t metric_value(const host::Metrics &m, const std::string &dotted) {
    const size_t dot = dotted.find('.');
    const std::string stage = dotted.substr(0, dot), what = dotted.substr(dot + 1);
    auto events = [&](const char *outcome) {
        host::Labels l;
        if (stage != "pipeline") l.push_back({"stage", stage});
        if (outcome) l.push_back({"outcome", outcome});
        return static_cast<int64_t>(m.sum("cdcflow_events_total", l));
    };
    if (what == "events") return events(nullptr);
    if (what == "passed") return events("passed") + events("applied");
    if (what == "rejected") return events("rejected");
    if (what == "duplicates") return events("duplicate");
    if (what == "dropped") return events("dropped");
    if (what == "errors")
        return static_cast<int64_t>(m.sum("cdcflow_stage_errors_total", {{"stage", stage}}));
    if (what == "batches") return static_cast<int64_t>(m.sum("cdcflow_batches_total", {{"stage", stage}}));
    if (dotted == "pipeline.replayed") return static_cast<int64_t>(m.sum("cdcflow_restore_replayed_events"));
    for (const std::string &f : m.families()) {
        if (f.rfind("cdcflow_plugin_", 0) != 0) continue;
        for (const std::string &suffix : {"_" + what, "_" + what + "_total"})
            if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
                if (auto v = m.value(f, {{"pipeline", "test"}, {"stage", stage}}))
                    return static_cast<int64_t>(*v);
    }
    for (const std::string &f : m.families()) {
        if (f.rfind("cdcflow_plugin_", 0) != 0) continue;
        for (const std::string &suffix : {"_" + what, "_" + what + "_total"})
            if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
                if (double v = m.sum(f, {{"stage", stage}}); v != 0) return static_cast<int64_t>(v);
    }
    return 0;
}

} // namespace cdcflow::test

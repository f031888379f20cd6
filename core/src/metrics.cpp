#include "metrics.hpp"

namespace cdcflow::host {

cdcflow_metric *Metrics::create(const std::string &name, const std::string &help, bool gauge) {
    std::lock_guard lock(mu_);
    if (auto it = by_name_.find(name); it != by_name_.end()) return it->second;
    cdcflow_metric &m = store_.emplace_back();
    m.name = name;
    m.help = help;
    m.gauge = gauge;
    by_name_[name] = &m;
    return &m;
}

cdcflow_metric *Metrics::find(const std::string &name) const {
    std::lock_guard lock(mu_);
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

int64_t Metrics::value(const std::string &name) const {
    cdcflow_metric *m = find(name);
    return m ? m->value.load(std::memory_order_relaxed) : 0;
}

std::vector<std::pair<std::string, int64_t>> Metrics::snapshot() const {
    std::lock_guard lock(mu_);
    std::vector<std::pair<std::string, int64_t>> out;
    out.reserve(by_name_.size());
    for (auto &[name, m] : by_name_) out.emplace_back(name, m->value.load(std::memory_order_relaxed));
    return out;
}

static std::string prom_name(const std::string &name) {
    std::string out = "cdcflow_";
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out += ok ? c : '_';
    }
    return out;
}

std::string Metrics::prometheus() const {
    std::lock_guard lock(mu_);
    std::string out;
    for (auto &[name, m] : by_name_) {
        std::string n = prom_name(name);
        std::string help = m->help;
        for (char &c : help)
            if (c == '\n') c = ' ';
        out += "# HELP " + n + " " + help + "\n";
        out += "# TYPE " + n + (m->gauge ? " gauge\n" : " counter\n");
        out += n + " " + std::to_string(m->value.load(std::memory_order_relaxed)) + "\n";
    }
    return out;
}

} // namespace cdcflow::host

#include "metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace cdcflow::host {

namespace {

const char *type_name(MetricType t) {
    switch (t) {
    case MetricType::counter:
        return "counter";
    case MetricType::gauge:
        return "gauge";
    default:
        return "histogram";
    }
}

// A sample value: integers exactly, other numbers in the shortest form that
// reads back the same; the format's own spellings for NaN and infinities.
void append_number(std::string &out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
        return;
    }
    if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
        return;
    }
    char buf[64];
    std::to_chars_result r;
    if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0)
        r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
    else
        r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// HELP text: one line; the format escapes backslash and newline.
void append_help(std::string &out, std::string_view help) {
    for (char c : help) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
}

// A raw value in base units. A scale like 1e-6 divides by 1e6 instead of
// multiplying by 1e-6 (not exact in binary), so microseconds show as the
// decimal seconds they are (7051700 us: 7.0517, not 7.051699999999999).
double scaled(double raw, double scale) {
    if (scale > 0 && scale < 1) {
        double inverse = std::round(1 / scale);
        if (std::fabs(inverse * scale - 1) < 1e-12) return raw / inverse;
    }
    return raw * scale;
}

void append_header(std::string &out, const std::string &name, std::string_view help, MetricType type) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help(out, help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type_name(type);
    out += '\n';
}

} // namespace

std::string render_labels(const Labels &labels) {
    if (labels.empty()) return {};
    std::string out = "{";
    for (size_t i = 0; i < labels.size(); ++i) {
        if (i) out += ',';
        out += labels[i].first;
        out += "=\"";
        for (char c : labels[i].second) {
            if (c == '\\')
                out += "\\\\";
            else if (c == '"')
                out += "\\\"";
            else if (c == '\n')
                out += "\\n";
            else
                out += c;
        }
        out += '"';
    }
    out += '}';
    return out;
}

// ---- Histogram ----

Histogram::Histogram(const std::vector<double> &bounds, double scale)
    : bounds_(bounds), scale_(scale), counts_(new std::atomic<uint64_t>[bounds.size() + 1]) {
    for (double b : bounds_)
        raw_bounds_.push_back(static_cast<int64_t>(std::floor(b / scale_ + 1e-9)));
    for (size_t i = 0; i <= bounds_.size(); ++i)
        counts_[i].store(0, std::memory_order_relaxed);
}

size_t Histogram::bucket(int64_t raw) const {
    // The first bound at or above raw (le is inclusive); past the last: +Inf.
    // A binary search: the sink tallies every committed event's latency.
    return static_cast<size_t>(std::lower_bound(raw_bounds_.begin(), raw_bounds_.end(), raw) -
                               raw_bounds_.begin());
}

void Histogram::add(size_t i, double raw, uint64_t n) {
    counts_[i].fetch_add(n, std::memory_order_relaxed);
    count_.fetch_add(n, std::memory_order_relaxed);
    sum_.fetch_add(raw, std::memory_order_relaxed);
}

void Histogram::add_counts(const uint64_t *counts, double raw_sum) {
    uint64_t n = 0;
    for (size_t i = 0; i < buckets(); ++i) {
        if (counts[i]) counts_[i].fetch_add(counts[i], std::memory_order_relaxed);
        n += counts[i];
    }
    if (!n) return;
    count_.fetch_add(n, std::memory_order_relaxed);
    sum_.fetch_add(raw_sum, std::memory_order_relaxed);
}

void Histogram::render(std::string &out, const std::string &name, const std::string &labels) const {
    // The le label goes last, inside the series' own label set.
    std::string open = labels.empty() ? "{" : labels.substr(0, labels.size() - 1) + ",";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
        cumulative += counts_[i].load(std::memory_order_relaxed);
        out += name;
        out += "_bucket";
        out += open;
        out += "le=\"";
        if (i < bounds_.size())
            append_number(out, bounds_[i]);
        else
            out += "+Inf";
        out += "\"} ";
        append_number(out, static_cast<double>(cumulative));
        out += '\n';
    }
    out += name + "_sum" + labels + ' ';
    append_number(out, scaled(sum_.load(std::memory_order_relaxed), scale_));
    out += '\n';
    // _count equals the +Inf bucket by definition; read it from there so a
    // scrape racing an observation never shows them apart.
    out += name + "_count" + labels + ' ';
    append_number(out, static_cast<double>(cumulative));
    out += '\n';
}

// ---- Collect ----

void Collect::add(std::string_view family, std::string_view help, MetricType type, const Labels &labels,
                  double value) {
    samples_.emplace(std::string(family), Sample{std::string(help), type, labels, value});
}

// ---- Metrics ----

Metrics::Metrics() = default;
Metrics::~Metrics() = default;

bool Metrics::valid_name(std::string_view name) {
    if (name.empty()) return false;
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

std::string Metrics::name_part(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out += ok ? c : '_';
    }
    return out;
}

Metrics::Series *Metrics::series(std::string_view family, std::string_view help, MetricType type,
                                 const Labels &labels, double scale, const std::vector<double> *bounds) {
    if (!valid_name(family)) return nullptr;
    std::lock_guard lock(mu_);
    auto fit = families_.find(family);
    if (fit == families_.end()) {
        fit = families_.emplace(std::string(family), Family{}).first;
        fit->second.type = type;
        fit->second.help = std::string(help);
        fit->second.scale = scale;
    } else if (fit->second.type != type) {
        return nullptr;
    }
    Family &f = fit->second;
    std::string key = render_labels(labels);
    if (auto it = f.by_labels.find(key); it != f.by_labels.end()) return it->second;
    Series &s = f.series.emplace_back();
    s.labels = labels;
    s.rendered_labels = key;
    if (type == MetricType::histogram) s.histogram = std::make_unique<Histogram>(*bounds, f.scale);
    f.by_labels.emplace(std::move(key), &s);
    return &s;
}

cdcflow_metric *Metrics::counter(std::string_view family, std::string_view help, const Labels &labels,
                                 double scale) {
    Series *s = series(family, help, MetricType::counter, labels, scale, nullptr);
    return s ? &s->metric : nullptr;
}

cdcflow_metric *Metrics::gauge(std::string_view family, std::string_view help, const Labels &labels,
                               double scale) {
    Series *s = series(family, help, MetricType::gauge, labels, scale, nullptr);
    return s ? &s->metric : nullptr;
}

Histogram *Metrics::histogram(std::string_view family, std::string_view help, const Labels &labels,
                              const std::vector<double> &bounds, double scale) {
    Series *s = series(family, help, MetricType::histogram, labels, scale, &bounds);
    return s ? s->histogram.get() : nullptr;
}

int Metrics::add_collector(Collector c) {
    std::lock_guard lock(mu_);
    int id = next_collector_++;
    collectors_.emplace(id, std::move(c));
    return id;
}

void Metrics::remove_collector(int id) {
    std::lock_guard lock(mu_);
    collectors_.erase(id);
}

std::string Metrics::prometheus() const {
    std::lock_guard lock(mu_);
    Collect collected;
    for (auto &[id, c] : collectors_)
        c(collected);
    std::string out;
    out.reserve(16384);
    auto sit = collected.samples_.begin();
    // Families from collectors interleave with stored ones in name order; a
    // collected family whose name is also stored is rendered with it only if
    // the types agree (otherwise it is left out: two meanings, one name).
    auto render_collected = [&](const std::string &name, MetricType stored_type, bool stored) {
        bool first = true;
        for (; sit != collected.samples_.end() && sit->first == name; ++sit) {
            const Collect::Sample &s = sit->second;
            if (stored && s.type != stored_type) continue;
            if (first && !stored) append_header(out, name, s.help, s.type);
            first = false;
            out += name;
            out += render_labels(s.labels);
            out += ' ';
            append_number(out, s.value);
            out += '\n';
        }
    };
    for (auto &[name, f] : families_) {
        while (sit != collected.samples_.end() && sit->first < name)
            render_collected(sit->first, MetricType::gauge, false);
        append_header(out, name, f.help, f.type);
        for (const Series &s : f.series) {
            if (f.type == MetricType::histogram) {
                s.histogram->render(out, name, s.rendered_labels);
                continue;
            }
            out += name;
            out += s.rendered_labels;
            out += ' ';
            append_number(
                out, scaled(static_cast<double>(s.metric.value.load(std::memory_order_relaxed)), f.scale));
            out += '\n';
        }
        if (f.type != MetricType::histogram) render_collected(name, f.type, true);
        while (sit != collected.samples_.end() && sit->first == name)
            ++sit; // a histogram's name: nothing may be added to it
    }
    while (sit != collected.samples_.end())
        render_collected(sit->first, MetricType::gauge, false);
    return out;
}

std::optional<double> Metrics::value(std::string_view family, const Labels &labels) const {
    std::lock_guard lock(mu_);
    auto fit = families_.find(family);
    if (fit == families_.end()) return std::nullopt;
    auto it = fit->second.by_labels.find(render_labels(labels));
    if (it == fit->second.by_labels.end()) return std::nullopt;
    if (it->second->histogram) return static_cast<double>(it->second->histogram->count());
    return scaled(static_cast<double>(it->second->metric.value.load(std::memory_order_relaxed)),
                  fit->second.scale);
}

double Metrics::sum(std::string_view family, const Labels &subset) const {
    std::lock_guard lock(mu_);
    auto fit = families_.find(family);
    if (fit == families_.end()) return 0;
    double total = 0;
    for (const Series &s : fit->second.series) {
        bool match = true;
        for (auto &want : subset) {
            bool found = false;
            for (auto &have : s.labels)
                found = found || have == want;
            match = match && found;
        }
        if (!match) continue;
        total += s.histogram ? static_cast<double>(s.histogram->count())
                             : scaled(static_cast<double>(s.metric.value.load(std::memory_order_relaxed)),
                                      fit->second.scale);
    }
    return total;
}

std::vector<std::string> Metrics::families() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (auto &[name, f] : families_)
        out.push_back(name);
    return out;
}

} // namespace cdcflow::host

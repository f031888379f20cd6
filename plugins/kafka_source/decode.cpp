#include "decode.hpp"

#include "base/text.hpp"

#include <charconv>

namespace cdcflow::kafka {

namespace od = simdjson::ondemand;

std::optional<Properties> consumer_properties(const std::string &brokers, const std::string &group,
                                              const Properties &user, std::string &error) {
    auto refuse = [&](std::string_view key, const std::string &why) {
        error = base::text(key) + ": " + why;
        return std::nullopt;
    };
    if (!refuse_shared(user, "source", error)) return std::nullopt;
    for (const auto &[k, v] : user) {
        if (k == "group.id") return refuse(k, "set the source's `group` key instead");
        if ((k == "enable.auto.commit" || k == "enable.auto.offset.store") && truthy(v))
            return refuse(k, "must stay false: the projection database holds each partition's position; the "
                             "source commits to Kafka (for lag tools) only what the sink committed");
        if (k == "enable.partition.eof" || k == "rebalance_cb" || k == "offset_commit_cb" ||
            k == "consume_cb")
            return refuse(k, "set by the source itself");
    }
    Properties out = {
        {"bootstrap.servers", brokers},
        {"group.id", group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        // A partition with no position in the projection database is read
        // from its start (the source assigns it at BEGINNING itself); this
        // covers a stored position whose events the topic's retention
        // removed meanwhile: read on from the oldest one left.
        {"auto.offset.reset", "earliest"},
        // The consumer learns where it reached a partition's end: past
        // transaction markers, which take offsets but are never delivered,
        // so the last offset handed out may stay below the end (--drain).
        {"enable.partition.eof", "true"},
        // A fetch that finds no data waits this long at the broker. Kafka's
        // 500 ms default costs that much again whenever partitions join a
        // fetch that is already waiting (each assignment, a partition found
        // at its end): seconds of stall for a consumer that starts behind.
        // 100 ms keeps that small at ten requests a second per idle broker.
        {"fetch.wait.max.ms", "100"},
        // librdkafka stops fetching every partition once the one consumer
        // queue they all feed holds queued.min.messages (default 100,000:
        // a few of our batches) and looks again only later: the source then
        // waited for Kafka a third of the time (measured, README). The bytes
        // bound (queued.max.messages.kbytes, 64 MiB) still holds memory.
        {"queued.min.messages", "1000000"},
        // Only warnings and errors by default (the host rate-limits them).
        {"log_level", "4"},
    };
    out.insert(out.end(), user.begin(), user.end());
    return out;
}

std::string partition_name(std::string_view topic, int32_t partition) {
    std::string out;
    out.reserve(topic.size() + 12);
    out.append(topic).push_back('/');
    out += std::to_string(partition);
    return out;
}

bool split_partition_name(std::string_view name, std::string &topic, int32_t &partition) {
    const size_t slash = name.rfind('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == name.size()) return false;
    const char *first = name.data() + slash + 1, *last = name.data() + name.size();
    int32_t p = 0;
    auto [end, ec] = std::from_chars(first, last, p);
    if (ec != std::errc() || end != last || p < 0) return false;
    topic.assign(name.substr(0, slash));
    partition = p;
    return true;
}

std::optional<RoutingPattern> RoutingPattern::parse(std::string_view pattern, std::string &error) {
    static constexpr std::string_view kPlaceholder = "{aggregatetype}";
    const size_t at = pattern.find(kPlaceholder);
    const size_t again = at == std::string_view::npos ? at : pattern.find(kPlaceholder, at + 1);
    if (at == std::string_view::npos || again != std::string_view::npos) {
        error = "must hold {aggregatetype} once (the part of the topic name that is the aggregate type): " +
                base::quoted(pattern);
        return std::nullopt;
    }
    RoutingPattern p;
    p.prefix_ = std::string(pattern.substr(0, at));
    p.suffix_ = std::string(pattern.substr(at + kPlaceholder.size()));
    if (p.prefix_.find_first_of("{}") != std::string::npos ||
        p.suffix_.find_first_of("{}") != std::string::npos) {
        error = "only {aggregatetype} may stand between braces in " + base::quoted(pattern);
        return std::nullopt;
    }
    return p;
}

bool RoutingPattern::extract(std::string_view topic, std::string_view &aggregate_type) const {
    if (topic.size() <= prefix_.size() + suffix_.size() || !topic.starts_with(prefix_) ||
        !topic.ends_with(suffix_))
        return false;
    aggregate_type = topic.substr(prefix_.size(), topic.size() - prefix_.size() - suffix_.size());
    return true;
}

std::string_view ValueDecoder::decode(std::string_view value) {
    size_t i = 0;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t' || value[i] == '\n' || value[i] == '\r'))
        ++i;
    if (i == value.size() || (value[i] != '"' && value[i] != '{')) return value;
    // The whole value checked (syntax, UTF-8, nothing after it) by the DOM
    // parser; anything it refuses is handed out as it is.
    simdjson::dom::element doc;
    if (dom_.parse(value.data(), value.size()).get(doc) != simdjson::SUCCESS) return value;
    std::string_view s;
    if (doc.get_string().get(s) == simdjson::SUCCESS) {
        // A JSON string whose content is the payload (JsonConverter without
        // schemas over StringConverter's text).
        out_.assign(s);
        return out_;
    }
    simdjson::dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS || obj.size() != 2) return value;
    simdjson::dom::element payload, schema;
    if (obj.at_key("schema").get(schema) != simdjson::SUCCESS ||
        obj.at_key("payload").get(payload) != simdjson::SUCCESS)
        return value;
    switch (payload.type()) {
    case simdjson::dom::element_type::STRING:
        out_.assign(std::string_view(payload));
        return out_;
    case simdjson::dom::element_type::NULL_VALUE:
        return std::string_view(); // a tombstone: no payload
    default:
        break;
    }
    // A JSON payload: its text exactly as written (the DOM would rewrite
    // numbers and spacing), found by the on-demand parser in a padded copy.
    padded_.assign(value);
    padded_.resize(value.size() + simdjson::SIMDJSON_PADDING);
    od::document od_doc;
    od::object od_obj;
    if (parser_.iterate(padded_.data(), value.size(), padded_.size()).get(od_doc) != simdjson::SUCCESS ||
        od_doc.get_object().get(od_obj) != simdjson::SUCCESS)
        return value;
    std::string_view raw;
    for (auto field : od_obj) {
        std::string_view key;
        if (field.unescaped_key().get(key) != simdjson::SUCCESS) return value;
        if (key != "payload") continue;
        od::value v = field.value();
        od::object o;
        od::array a;
        if (payload.is_object()) {
            if (v.get_object().get(o) != simdjson::SUCCESS || o.raw_json().get(raw) != simdjson::SUCCESS)
                return value;
        } else if (payload.is_array()) {
            if (v.get_array().get(a) != simdjson::SUCCESS || a.raw_json().get(raw) != simdjson::SUCCESS)
                return value;
        } else {
            raw = v.raw_json_token();
            while (!raw.empty() &&
                   (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\r' || raw.back() == '\t'))
                raw.remove_suffix(1);
        }
        break;
    }
    if (raw.empty()) return value;
    // raw points into padded_, a copy of `value` at the same offsets.
    return value.substr(static_cast<size_t>(raw.data() - padded_.data()), raw.size());
}

} // namespace cdcflow::kafka

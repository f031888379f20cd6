#include "sink_config.hpp"

#include "base/text.hpp"

#include <librdkafka/rdkafka.h>
#include <simdjson.h>

namespace cdcflow::kafka {

namespace dom = simdjson::dom;

std::optional<Properties> producer_properties(const std::string &brokers, const Properties &user,
                                              bool allow_duplicates, std::string &error) {
    auto refuse = [&](std::string_view key, const std::string &why) {
        error = base::text(key) + ": " + why;
        return std::nullopt;
    };
    if (!refuse_shared(user, "sink", error)) return std::nullopt;
    for (const auto &[k, v] : user) {
        if (k == "transactional.id")
            return refuse(k, "the transactional producer is not supported by kafka_sink yet");
        if (k == "delivery.report.only.error")
            return refuse(k, "the sink counts every acknowledgement before it commits: it must be false");
        if (k == "dr_cb" || k == "dr_msg_cb") return refuse(k, "set by the sink itself");
    }
    Properties out = {
        {"bootstrap.servers", brokers},
        // No reordering and no duplicates from librdkafka's own retries.
        {"enable.idempotence", "true"},
        {"acks", "all"},
        // What Java producers (so Debezium) use: the same key lands in the
        // same partition as with Debezium, and one key is one partition.
        {"partitioner", "murmur2_random"},
        {"linger.ms", "5"},
        {"compression.codec", "none"},
        // librdkafka retries a message until it is delivered, in order: a
        // message that timed out while later ones of its partition got
        // through would, produced again, land after them (per-key order
        // lost). The sink's own stop and the lag metric bound the wait.
        {"message.timeout.ms", "0"},
        // Anything else that could leave a gap in a partition (a batch that
        // failed while later ones succeeded) is fatal instead: the pipeline
        // stops, nothing is committed past it, a restart publishes in order.
        {"enable.gapless.guarantee", "true"},
        // Only warnings and errors by default (the host rate-limits them).
        {"log_level", "4"},
    };
    out.insert(out.end(), user.begin(), user.end());

    if (const std::string *v = find_property(out, "enable.idempotence");
        v && !truthy(*v) && !allow_duplicates)
        return refuse("enable.idempotence",
                      "must stay true: without it a retry may write an event twice or out of order "
                      "(allow_duplicates_on_retry: true accepts that)");
    for (const char *acks : {"acks", "request.required.acks"})
        if (const std::string *v = find_property(out, acks); v && *v != "all" && *v != "-1")
            return refuse(acks, "must be all (-1): an event acknowledged by fewer replicas can be lost after "
                                "the sink committed past it");
    for (const char *part : {"partitioner", "default.topic.config.partitioner"})
        if (const std::string *v = find_property(out, part); v && (*v == "random"))
            return refuse(part,
                          "random would spread one key over several partitions (per-key order is lost)");
    return out;
}

std::optional<TopicPattern> TopicPattern::parse(std::string_view pattern, std::string &error) {
    static constexpr std::string_view kPlaceholder = "{aggregatetype}";
    TopicPattern p;
    p.pieces_.emplace_back();
    for (size_t i = 0; i < pattern.size();) {
        if (pattern.compare(i, kPlaceholder.size(), kPlaceholder) == 0) {
            ++p.placeholders_;
            p.pieces_.emplace_back();
            i += kPlaceholder.size();
            continue;
        }
        if (pattern[i] == '{' || pattern[i] == '}') {
            error = "only {aggregatetype} may stand between braces in " + base::quoted(pattern);
            return std::nullopt;
        }
        p.pieces_.back().push_back(pattern[i++]);
    }
    if (p.constant()) {
        std::string reason;
        if (!legal_topic(p.pieces_[0], reason)) {
            error = reason;
            return std::nullopt;
        }
    }
    return p;
}

void TopicPattern::render(std::string_view aggregate_type, std::string &out) const {
    out.assign(pieces_[0]);
    for (size_t i = 1; i < pieces_.size(); ++i)
        out.append(aggregate_type).append(pieces_[i]);
}

std::optional<std::vector<HeaderSpec>> parse_headers(std::string_view json, std::string &error) {
    std::vector<HeaderSpec> out;
    if (json.empty()) return out;
    dom::parser parser;
    dom::element doc;
    if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) {
        error = "not a map of header name to event field";
        return std::nullopt;
    }
    if (doc.is_null()) return out;
    dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS) {
        error = "must be a map of header name to event field (aggregatetype, aggregateid, timestamp, "
                "header.<key>)";
        return std::nullopt;
    }
    for (dom::key_value_pair kv : obj) {
        HeaderSpec h;
        h.name = std::string(kv.key);
        if (h.name.empty()) {
            error = "a header name is empty";
            return std::nullopt;
        }
        std::string_view field;
        if (kv.value.get_string().get(field) != simdjson::SUCCESS) {
            error = base::text(h.name, '\'') + ": the event field must be a string";
            return std::nullopt;
        }
        if (field == "aggregatetype") {
            h.field = HeaderSpec::Field::aggregatetype;
        } else if (field == "aggregateid") {
            h.field = HeaderSpec::Field::aggregateid;
        } else if (field == "timestamp") {
            h.field = HeaderSpec::Field::timestamp;
        } else if (field.starts_with("header.") && field.size() > 7) {
            h.field = HeaderSpec::Field::event_header;
            h.key = std::string(field.substr(7));
        } else {
            error = base::text(h.name, '\'') + ": unknown event field " + base::quoted(field) +
                    " (aggregatetype, aggregateid, timestamp or header.<key>)";
            return std::nullopt;
        }
        out.push_back(std::move(h));
    }
    return out;
}

bool retriable_delivery_error(int err) {
    switch (static_cast<rd_kafka_resp_err_t>(err)) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RETRY:
    case RD_KAFKA_RESP_ERR__NODE_UPDATE:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR_NOT_CONTROLLER:
    case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
        return true;
    default:
        return false;
    }
}

} // namespace cdcflow::kafka

#include "kafka_config.hpp"

#include "base/text.hpp"

#include <cctype>
#include <dlfcn.h>
#include <simdjson.h>

namespace cdcflow::kafka {

namespace dom = simdjson::dom;

bool secret_key(std::string_view name) {
    for (std::string_view part : {"password", "secret", "sasl.oauthbearer.config", "ssl.key"})
        if (name.find(part) != std::string_view::npos) return true;
    return false;
}

std::optional<Properties> parse_properties(std::string_view json, std::string &error) {
    Properties out;
    if (json.empty()) return out;
    dom::parser parser;
    dom::element doc;
    if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) {
        error = "not a map of librdkafka properties";
        return std::nullopt;
    }
    if (doc.is_null()) return out; // `kafka:` with nothing under it
    dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS) {
        error = "must be a map of librdkafka properties (name: value)";
        return std::nullopt;
    }
    for (dom::key_value_pair kv : obj) {
        std::string key(kv.key);
        if (key.empty()) {
            error = "a property name is empty";
            return std::nullopt;
        }
        std::string value;
        switch (kv.value.type()) {
        case dom::element_type::STRING:
            value = std::string(std::string_view(kv.value));
            break;
        case dom::element_type::INT64:
        case dom::element_type::UINT64:
        case dom::element_type::DOUBLE:
        case dom::element_type::BOOL:
            value = simdjson::to_string(kv.value);
            break;
        default:
            // No value printed: it may be a secret.
            error = base::text(key) + ": must be a string, number or boolean";
            return std::nullopt;
        }
        out.emplace_back(std::move(key), std::move(value));
    }
    return out;
}

const std::string *find_property(const Properties &props, std::string_view key) {
    const std::string *found = nullptr;
    for (const auto &[k, v] : props)
        if (k == key) found = &v;
    return found;
}

bool truthy(std::string_view value) {
    return value == "true" || value == "1" || value == "True" || value == "TRUE";
}

bool refuse_shared(const Properties &user, std::string_view stage, std::string &error) {
    auto refuse = [&](std::string_view key, const std::string &why) {
        error = base::text(key) + ": " + why;
        return false;
    };
    for (const auto &[k, v] : user) {
        if (k == "bootstrap.servers" || k == "metadata.broker.list")
            return refuse(k, "set the " + std::string(stage) +
                                 "'s `brokers` key instead (one place says where Kafka is)");
        if (k == "error_cb" || k == "log_cb" || k == "opaque")
            return refuse(k, "set by the " + std::string(stage) + " itself");
        if (k == "debug") {
            // librdkafka reads its contexts in any case ("CONF", "All").
            std::string lower = v;
            for (char &c : lower)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (lower.find("conf") != std::string::npos || lower.find("all") != std::string::npos)
                return refuse(k, "conf and all would print the whole configuration, secrets included");
        }
    }
    return true;
}

bool set_property(rd_kafka_conf_t *conf, const std::string &key, const std::string &value,
                  std::string &error) {
    char err[512];
    err[0] = '\0';
    const rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err);
    if (r == RD_KAFKA_CONF_OK) return true;
    error = base::text(key) + ": ";
    if (r == RD_KAFKA_CONF_UNKNOWN)
        error += "not a librdkafka property";
    else if (secret_key(key))
        error += "librdkafka refuses the value (not shown: a secret)";
    else
        base::append_text(error, err);
    return false;
}

rd_kafka_conf_t *make_conf(const Properties &props, std::string &error) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (const auto &[k, v] : props)
        if (!set_property(conf, k, v, error)) {
            rd_kafka_conf_destroy(conf);
            return nullptr;
        }
    return conf;
}

std::string redacted(const Properties &props) {
    std::string out;
    for (const auto &[k, v] : props) {
        if (!out.empty()) out += ", ";
        base::append_text(out, k);
        out += '=';
        if (secret_key(k))
            out += "(secret)";
        else
            base::append_text(out, v);
    }
    return out;
}

bool legal_topic(std::string_view name, std::string &reason) {
    auto bad = [&](const char *why) {
        reason = "topic ";
        base::append_quoted(reason, name, {'\'', 64, true});
        reason += why;
        return false;
    };
    if (name.empty()) return bad(" is empty");
    if (name.size() > 249) return bad(" is longer than Kafka's 249 characters");
    if (name == "." || name == "..") return bad(" is not allowed by Kafka");
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '.' || c == '_' || c == '-';
        if (!ok) return bad(" has a character Kafka does not allow in a topic name (only a-z A-Z 0-9 . _ -)");
    }
    return true;
}

bool log_line(int level, const char *fac, const char *buf, cdcflow_log_level &out, std::string &text) {
    if (fac && std::string_view(fac) == "CONF") return false;
    out = level <= 3   ? CDCFLOW_LOG_ERROR
          : level == 4 ? CDCFLOW_LOG_WARN
          : level <= 6 ? CDCFLOW_LOG_INFO
                       : CDCFLOW_LOG_DEBUG;
    text = std::string("librdkafka: ") + (fac ? fac : "") + ": " + (buf ? buf : "");
    return true;
}

std::string err_text(int err) {
    const auto e = static_cast<rd_kafka_resp_err_t>(err);
    return std::string(rd_kafka_err2str(e)) + " (" + rd_kafka_err2name(e) + ")";
}

void pin_librdkafka() {
    static const bool pinned = [] {
        // The file the running librdkafka came from, marked never to unload
        // (RTLD_NOLOAD: it is loaded already; this adds a reference only).
        Dl_info info{};
        if (!dladdr(reinterpret_cast<void *>(&rd_kafka_version), &info) || !info.dli_fname) return false;
        return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;
    }();
    (void)pinned;
}

} // namespace cdcflow::kafka

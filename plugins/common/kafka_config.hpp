// What kafka_sink and kafka_source share about librdkafka, apart from the
// clients so that unit tests reach it without a broker: the `kafka:` map
// (its parsing, the keys no stage lets it set, secrets), Kafka's topic name
// rules, error and property texts, and keeping librdkafka loaded. Each
// stage's own defaults and refusals are its own (kafka_sink/sink_config.hpp,
// kafka_source/decode.hpp).
//
// Thread-safety: pure functions and immutable values once built.
#pragma once

#include <cdcflow/plugin.h>
#include <librdkafka/rdkafka.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::kafka {

// A property whose value must never be printed (errors, logs, /health):
// its name contains password, secret, sasl.oauthbearer.config or ssl.key.
bool secret_key(std::string_view name);

using Properties = std::vector<std::pair<std::string, std::string>>;

// The `kafka:` map's JSON text (a JSON object of scalars) as properties in
// the map's order, each value as librdkafka takes it (a string's text, a
// number's or a boolean's JSON text). nullopt with `error` set ("<key>: why",
// no value printed) for anything else.
std::optional<Properties> parse_properties(std::string_view json, std::string &error);

// The value librdkafka ends up with for `key` (the last one wins, as it
// applies them in order); nullptr when none sets it.
const std::string *find_property(const Properties &props, std::string_view key);

// A boolean property's value as librdkafka reads it as true.
bool truthy(std::string_view value);

// The refusals every stage makes of the user's `kafka:` map, in `stage`'s
// words ("sink", "source"): bootstrap servers (the stage's `brokers` key
// says where), the callbacks and opaque the stage sets itself, and debug
// contexts that would print the whole configuration (secrets included).
// false with `error` "<key>: why" (no value printed).
bool refuse_shared(const Properties &user, std::string_view stage, std::string &error);

// Sets one property on `conf`. false with `error` "<key>: why": a secret's
// value is never in it (librdkafka's own message quotes the value, so a
// secret gets a message of ours instead).
bool set_property(rd_kafka_conf_t *conf, const std::string &key, const std::string &value,
                  std::string &error);

// A new conf holding `props` in order (set_property each), or nullptr with
// `error` set as set_property says.
rd_kafka_conf_t *make_conf(const Properties &props, std::string &error);

// The properties for a log line: "name=value, ..." with a secret's value
// shown as "(secret)".
std::string redacted(const Properties &props);

// A librdkafka log line (its log callback's arguments) as a stage logs it:
// false for one never passed on (facility CONF: a configuration dump,
// debug=conf, may hold secrets); else `level` (syslog's, as librdkafka
// gives it) as the host's and `text` "librdkafka: FAC: message".
bool log_line(int level, const char *fac, const char *buf, cdcflow_log_level &out, std::string &text);

// Kafka's rule for a topic name: 1 to 249 characters of [a-zA-Z0-9._-], and
// not "." or "..". false: `reason` says why (the name quoted, escaped).
bool legal_topic(std::string_view name, std::string &reason);

// An error code as messages show it: "Broker: Unknown topic or partition
// (UNKNOWN_TOPIC_OR_PART)".
std::string err_text(int err);

// Keeps librdkafka loaded until the process exits, whatever happens to the
// plugin that loaded it: librdkafka keeps process-wide state (its global
// init, allocations referenced from it) that is never freed, and a host
// that unloads the last plugin using it would unmap that state (a leak under
// LeakSanitizer, and a library that must not be loaded twice). Idempotent.
void pin_librdkafka();

} // namespace cdcflow::kafka

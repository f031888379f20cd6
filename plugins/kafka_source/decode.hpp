// kafka_source's pure parts, apart from the consumer so that unit tests
// reach them without a broker: the consumer's librdkafka properties (the
// `kafka:` map over the source's defaults, what would break the contract,
// secrets), the routing pattern that gives an event's aggregate type from
// its topic, partition names ("topic/partition") and the Debezium value
// decoder. What kafka_sink shares (the `kafka:` map's parsing, secrets,
// topic names) is in common/kafka_config.hpp.
//
// Thread-safety: pure functions and immutable values, except ValueDecoder
// (one per thread: it keeps its parser and scratch memory).
#pragma once

#include "common/kafka_config.hpp"

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdcflow::kafka {

// The source's defaults, then the user's `kafka:` map (later wins): the
// consumer's properties in order. Refuses (nullopt, `error` "<key>: why",
// no value printed) what another key says (bootstrap servers, group.id),
// what would make Kafka's committed offsets move by themselves (auto commit,
// auto offset store: the projection database is the truth, Kafka's offsets
// only mirror it), callbacks the source sets itself, and debug contexts that
// would print the whole configuration (secrets included).
std::optional<Properties> consumer_properties(const std::string &brokers, const std::string &group,
                                              const Properties &user, std::string &error);

// "topic/partition": a source position's partition name (DESIGN.md). Topic
// names cannot hold '/', so the last one splits it.
std::string partition_name(std::string_view topic, int32_t partition);
// The inverse; false for a name that is not "topic/N" with 0 <= N < 2^31.
bool split_partition_name(std::string_view name, std::string &topic, int32_t &partition);

// Debezium's outbox router's topic pattern, "outbox.event.{aggregatetype}"
// by default: literal text around one {aggregatetype}. extract() gives the
// aggregate type of a topic the pattern names.
class RoutingPattern {
public:
    // nullopt with `error` set unless the text holds exactly one
    // {aggregatetype} and no other brace.
    static std::optional<RoutingPattern> parse(std::string_view pattern, std::string &error);
    // The text that stands for {aggregatetype} in `topic`; false when the
    // topic does not match (or the match is empty).
    bool extract(std::string_view topic, std::string_view &aggregate_type) const;

private:
    std::string prefix_, suffix_;
};

// What the value of a message is.
enum class ValueFormat {
    // The payload as written: kafka_sink's values, and Debezium's with
    // value.converter StringConverter.
    raw,
    // Debezium with JsonConverter: {"schema": ..., "payload": ...} (with
    // schemas.enable) whose payload is the event's JSON as a string (or as
    // JSON), or without schemas a JSON string whose content is the payload.
    debezium_json,
};

// Unwraps a Debezium JsonConverter value (ValueFormat::debezium_json):
//   {"schema": S, "payload": "<text>"}  -> <text> unescaped
//   {"schema": S, "payload": {...}}     -> the payload's JSON text as written
//   {"schema": S, "payload": null}      -> empty (a tombstone: no payload)
//   "<text>"                            -> <text> unescaped
//   anything else                       -> the value unchanged (JSON written
//                                          without a converter envelope, or
//                                          bytes the validator refuses)
// An object is an envelope only when its keys are exactly "schema" and
// "payload" (in either order): that is all JsonConverter writes, and an
// application payload rarely has exactly those two keys (README says so).
class ValueDecoder {
public:
    // The payload: a view into `value` or into this decoder's memory (valid
    // until the next call).
    std::string_view decode(std::string_view value);

private:
    simdjson::dom::parser dom_;
    simdjson::ondemand::parser parser_;
    std::string padded_; // the value, with simdjson's padding
    std::string out_;    // an unescaped string payload
};

} // namespace cdcflow::kafka

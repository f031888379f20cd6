// kafka_sink's pure parts, apart from the producer so that unit tests reach
// them without a broker: the producer's librdkafka properties (the sink's
// defaults under the `kafka:` map, the properties that would break the
// delivery contract), the topic pattern and the extra headers' spec. What
// kafka_source shares (the map's parsing, secrets, topic names) is in
// common/kafka_config.hpp.
//
// Thread-safety: pure functions and immutable values once built.
#pragma once

#include "common/kafka_config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::kafka {

// What the sink sets unless the map overrides it, then the map: the
// properties handed to librdkafka, in order (later wins). Refuses (nullopt,
// `error` "<key>: why", no value printed) what would break the contract:
// enable.idempotence false (a retry may then write twice or reorder) unless
// allow_duplicates, acks other than all (an acknowledged event can be lost),
// a partitioner that does not keep one key in one partition, a transactional
// or delivery-report-only-on-error producer, and bootstrap servers (the
// sink's `brokers` key says where).
std::optional<Properties> producer_properties(const std::string &brokers, const Properties &user,
                                              bool allow_duplicates, std::string &error);

// The `topic` setting: literal text with `{aggregatetype}` placeholders.
class TopicPattern {
public:
    // nullopt with `error` set for a '{' or '}' that is not a placeholder.
    static std::optional<TopicPattern> parse(std::string_view pattern, std::string &error);
    // The topic of an event of this aggregate type, into `out` (reused).
    void render(std::string_view aggregate_type, std::string &out) const;
    // True when the name does not depend on the event (checked once).
    bool constant() const { return pieces_.size() <= 1 && placeholders_ == 0; }

private:
    // Literal text between placeholders: pieces_.size() == placeholders_ + 1.
    std::vector<std::string> pieces_;
    size_t placeholders_ = 0;
};

// One extra header: its name and the event field it carries.
struct HeaderSpec {
    enum class Field { aggregatetype, aggregateid, timestamp, event_header };
    std::string name;
    Field field = Field::aggregatetype;
    std::string key; // event_header: the key in the event's headers JSON
};

// The `headers:` map (header name -> aggregatetype | aggregateid | timestamp
// | header.<key>). nullopt with `error` set ("<name>: why").
std::optional<std::vector<HeaderSpec>> parse_headers(std::string_view json, std::string &error);

// Is a failed delivery worth producing again (the broker or the network may
// recover), or permanent (the pipeline stops)?
bool retriable_delivery_error(int err);

} // namespace cdcflow::kafka

// kafka_source: reads Kafka topics as a member of a consumer group (issue
// 11). Partitions come and go with the group's rebalances; each change is
// reported to the host (ABI 5, partitions_changed), which has everything in
// flight committed, the sink give up revoked partitions' checkpoints and
// claim assigned ones, and answers each assigned partition's committed
// position: the source reads it from just after that position (from its
// start when there is none). The projection database is the truth; Kafka's
// committed offsets only mirror what the sink committed (for lag tools).
// It replays (ABI 3) the events up to a position with a separate consumer
// that belongs to no group, so that a stateful transform (the deduper's
// window) is rebuilt when a partition moves here. See README.md.
//
// Thread-safety: driven by one thread at a time (plugin.h). The rebalance
// callback runs inside rd_kafka_consumer_poll on the source's thread (in
// poll, or in stop's close); librdkafka's log and error callbacks run on
// its own threads and only log or set an atomic flag.
#pragma once

#include "kafka_source/decode.hpp"

#include <cdcflow/sdk.hpp>

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace cdcflow::kafka {

struct KafkaSourceSettings {
    std::string brokers;
    std::string group;
    cdcflow::Json topics;
    std::optional<cdcflow::Json> kafka;
    std::string id_header;
    std::string type_header;
    std::string aggregate_type_from;
    std::string routing_pattern;
    std::string value_format;
    int64_t poll_batch = 65536;
    int64_t drain_check_ms = 200;
    int64_t replay_timeout_ms = 30000;
    int64_t close_timeout_ms = 5000;

    using S = KafkaSourceSettings;
    static constexpr const char *kFormats[] = {"raw", "debezium_json", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("brokers", &S::brokers)
            .required()
            .describe("Kafka's bootstrap servers (host:port,...), librdkafka's bootstrap.servers"),
        cdcflow::param("group", &S::group)
            .required()
            .describe("the consumer group (group.id): the hosts of one group share the topics' partitions "
                      "and must share one projection store"),
        cdcflow::param("topics", &S::topics)
            .required()
            .describe("the topics to read: a name, or a list of names (e.g. [outbox.event.Account])"),
        cdcflow::param("kafka", &S::kafka)
            .describe("librdkafka consumer properties (name: value) over the source's defaults "
                      "(enable.auto.commit false, auto.offset.reset earliest, fetch.wait.max.ms 100, "
                      "queued.min.messages 1000000, "
                      "partition.assignment.strategy range,roundrobin; cooperative-sticky works too); values "
                      "of keys naming a password, secret, sasl.oauthbearer.config or ssl.key are never "
                      "printed"),
        cdcflow::param("id_header", &S::id_header)
            .defaults_to("id")
            .describe("the header that carries the event id (a message without it is dead-lettered by the "
                      "sink: empty event id)"),
        cdcflow::param("type_header", &S::type_header)
            .defaults_to("type")
            .describe("the header that carries the event type (Debezium's is often eventType)"),
        cdcflow::param("aggregate_type_from", &S::aggregate_type_from)
            .defaults_to("topic")
            .describe("topic: the aggregate type is the part of the topic name that routing_pattern's "
                      "{aggregatetype} stands for; header:<name>: that header's value"),
        cdcflow::param("routing_pattern", &S::routing_pattern)
            .defaults_to("outbox.event.{aggregatetype}")
            .describe("the topic names' pattern (Debezium's route.topic.replacement, kafka_sink's topic); a "
                      "topic it does not match gives an empty aggregate type"),
        cdcflow::param("value_format", &S::value_format)
            .defaults_to("raw")
            .choices(kFormats)
            .describe("raw: the value is the payload as written (kafka_sink, Debezium's StringConverter); "
                      "debezium_json: JsonConverter's {\"schema\":..,\"payload\":..} envelope and/or a JSON "
                      "string holding the payload, unwrapped (a key written by JsonConverter too)"),
        cdcflow::param("poll_batch", &S::poll_batch)
            .defaults_to("65536")
            .min("1")
            .max("1048576")
            .describe("at most this many messages taken from librdkafka per poll (the host's batch "
                      "limits bound it too)"),
        cdcflow::param("drain_check_ms", &S::drain_check_ms)
            .defaults_to("200")
            .min("10")
            .max("60000")
            .describe("--drain: while idle, how often to ask whether every partition's committed "
                      "position (whichever host committed it) is at the partition's end"),
        cdcflow::param("replay_timeout_ms", &S::replay_timeout_ms)
            .defaults_to("30000")
            .min("100")
            .max("3600000")
            .describe("replay (rebuilding a transform's state): the longest wait for Kafka's next message "
                      "before the replay fails; with settings.owner_lease_ms, at most half the consumer's "
                      "max.poll.interval.ms (the claim and the replay run inside the rebalance callback)"),
        cdcflow::param("close_timeout_ms", &S::close_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("600000")
            .describe("at stop, the longest wait for leaving the group cleanly (then the group's session "
                      "timeout frees the partitions)"));
};

class KafkaSource : public cdcflow::Source {
public:
    static constexpr const char *kName = "kafka_source";
    static constexpr const char *kVersion = "1.0.0";
    static constexpr const char *kDescription =
        "reads Kafka topics in a consumer group; positions live in the projection database";
    static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_GROUP_PARTITIONS;
    using Settings = KafkaSourceSettings;

    KafkaSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);
    ~KafkaSource() override;

    void start() override;
    cdcflow::PollResult poll(cdcflow::Batch &batch, uint32_t wait_ms) override;
    void committed(std::span<const cdcflow_position> positions) override;
    // Events up to and including req's positions, oldest first, read by a
    // consumer outside the group; true once every partition reached its
    // position. Sets req.truncated when the topic's retention removed
    // events that were asked for.
    bool replay(cdcflow_replay &req, cdcflow::Batch &batch);
    void stop() override;

    // For tests: the partitions assigned now, by name.
    std::vector<std::string> assigned() const;
    // For tests: did the last stop leave the consumer group cleanly (its
    // partitions handed to the others at once) rather than give up after
    // close_timeout_ms (then the group's session timeout frees them)?
    bool left_cleanly() const { return left_cleanly_; }

private:
    // One partition this source has seen (assigned now or before).
    struct Part {
        std::string name; // "topic/partition": the events' position partition
        std::string topic;
        int32_t partition = 0;
        bool assigned = false;
        // The aggregate type of its events (aggregate_type_from: topic).
        std::string aggregate_type;
        // The next offset to hand out (-1: unknown, from the partition's start).
        int64_t next = -1;
        // What the sink committed and Kafka was not told yet (-1: nothing).
        int64_t to_commit = -1;
        // Where the consumer last reached the partition's end (its
        // PARTITION_EOF: the next offset it would fetch, past transaction
        // markers; -1: not since it was assigned).
        int64_t eof_at = -1;
        cdcflow::Metric lag;
        bool has_lag = false;
    };
    struct Replay;

    Part &part(std::string_view topic, int32_t partition);
    Part *find_part(std::string_view name);
    Part &part_of(const rd_kafka_message_t *m);

    static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                             void *opaque);
    void rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts);
    void assign(rd_kafka_topic_partition_list_t *parts);
    void revoke(rd_kafka_topic_partition_list_t *parts);
    void unassign(rd_kafka_topic_partition_list_t *parts);
    static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
    static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);

    // Moves messages from librdkafka into buffered_ (up to `most`), the
    // first wait parked up to timeout_ms.
    void read(size_t most, int timeout_ms);
    void handle_error(const rd_kafka_message_t *m);
    // Drops (destroys) buffered messages of the partitions in `parts`, or
    // every buffered message when parts is null.
    void drop_buffered(const rd_kafka_topic_partition_list_t *parts);
    void push_buffered(cdcflow::Batch &batch);
    bool push(cdcflow::Batch &batch, const rd_kafka_message_t *m, Part &p);
    // A failure seen inside a librdkafka callback, thrown now.
    void throw_pending();
    void remember(cdcflow_status st, const std::string &msg);
    // --drain: has this host read every message of its own partitions (as
    // far as the last fetch knows)? Only then is asking the host worth it:
    // the question waits until everything in flight is committed, which
    // would stall a pipeline that still has a backlog.
    bool caught_up();
    // --drain: is every partition of the topics committed up to its end?
    bool drained();
    // --drain: does nothing but transaction markers (control records, which
    // take offsets but are never delivered) follow each (partition, first
    // offset) up to its end? Read with a consumer outside the group.
    bool only_markers_left(const std::vector<std::pair<Part *, int64_t>> &from);
    void update_lag(bool force);
    void flush_commits(bool force);
    void close_consumer() noexcept;
    void close_probe() noexcept;
    rd_kafka_conf_t *make_conf(bool group_member) const;

    // Config.
    std::string brokers_, group_;
    std::vector<std::string> topics_;
    Properties props_;
    std::string id_header_, type_header_;
    std::string type_from_header_; // aggregate_type_from header:<name>; empty: from the topic
    std::optional<RoutingPattern> routing_;
    ValueFormat format_ = ValueFormat::raw;
    size_t poll_batch_;
    std::chrono::milliseconds drain_check_, replay_timeout_, close_timeout_;
    // The consumer's max.poll.interval.ms (the kafka: map's, or librdkafka's default).
    static constexpr int64_t kDefaultMaxPollMs = 300000;
    int64_t max_poll_ms_ = kDefaultMaxPollMs;

    rd_kafka_t *rk_ = nullptr;
    bool cooperative_ = false;
    bool left_cleanly_ = false; // the last close_consumer left the group (tests)
    bool closing_ = false;
    std::unordered_map<std::string, std::unique_ptr<Part>> parts_;
    Part *last_part_ = nullptr; // the last message's partition (messages come in runs)
    std::vector<rd_kafka_message_t *> buffered_;
    size_t head_ = 0;                    // buffered_[head_..] are not handed out yet
    ValueDecoder decoder_, key_decoder_; // debezium_json (each keeps its own scratch memory)

    // A failure inside a callback (rebalance, fatal error), for poll.
    cdcflow_status pending_ = CDCFLOW_OK;
    std::string pending_msg_;
    bool stopping_ = false; // partitions_changed answered RETRY: the pipeline stops
    std::atomic<bool> fatal_{false};

    using Clock = std::chrono::steady_clock;
    Clock::time_point next_drain_check_{}, next_lag_{}, next_commit_{};
    bool idle_warned_missing_id_ = false;

    std::unique_ptr<Replay> replay_;
    // --drain's consumer outside the group (drained's look-ups,
    // only_markers_left's reads), made on first use.
    rd_kafka_t *probe_ = nullptr;
    rd_kafka_t *drain_probe();

    cdcflow::Metric messages_, bytes_, rebalances_, missing_id_;
};

} // namespace cdcflow::kafka

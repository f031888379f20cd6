// kafka_sink: publishes the outbox to Kafka with Debezium's outbox event
// router contract (topic per aggregate type, key = aggregate id, value = the
// payload as written, headers id and type). A position is committed (with
// its dead letters, in one SQLite transaction on the source database, under
// the one-owner fence) only after Kafka acknowledged every event up to it;
// a crash between the two republishes: at-least-once into the topic. See
// README.md.
//
// Deferred commits (ABI 6, CDCFLOW_PLUGIN_DEFERRED_COMMIT): process
// produces a batch and returns without waiting for Kafka; each accepted call
// is a pending Unit (its messages, dead letters and positions). settle
// serves the delivery reports, produces failed deliveries again, and commits
// the oldest fully acknowledged units in one transaction. The sink relies
// on the host keeping each batch (its arena) until settle reported it
// durable: units borrow the batch's memory (dead letters and retries read
// the events' bytes) instead of copying it. librdkafka gets its own copy of
// each payload (see produce_one).
//
// Thread-safety: driven by one thread at a time (plugin.h); librdkafka's
// callbacks run on that thread (inside rd_kafka_poll), except the log and
// error callbacks' logging, which the host's log function takes from any
// thread.
#pragma once

#include "common/dead_letters.hpp"
#include "common/ownership.hpp"
#include "common/sqlite.hpp"
#include "kafka_sink/sink_config.hpp"

#include <cdcflow/sdk.hpp>

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cdcflow::kafka {

struct KafkaSinkSettings {
    std::string database;
    std::string brokers;
    std::string topic;
    std::optional<cdcflow::Json> kafka;
    std::optional<cdcflow::Json> headers;
    std::string id_header;
    std::string type_header;
    std::string checkpoint_name;
    bool allow_duplicates_on_retry = false;
    int64_t retry_backoff_ms = 1000;
    int64_t retry_backoff_max_ms = 30000;
    int64_t busy_timeout_ms = 5000;
    bool create_schema = true;
    std::string synchronous;

    using S = KafkaSinkSettings;
    static constexpr const char *kSynchronous[] = {"normal", "full", nullptr};
    static constexpr auto kParams = cdcflow::params(
        cdcflow::param("database", &S::database)
            .required()
            .describe("the outbox's SQLite file: the checkpoint and the dead letters are committed there"),
        cdcflow::param("brokers", &S::brokers)
            .required()
            .describe("Kafka's bootstrap servers (host:port,...), librdkafka's bootstrap.servers"),
        cdcflow::param("topic", &S::topic)
            .defaults_to("outbox.event.{aggregatetype}")
            .describe(
                "the topic of each event; {aggregatetype} is replaced by the event's aggregate type (an "
                "event whose topic is not a legal Kafka name is dead-lettered)"),
        cdcflow::param("kafka", &S::kafka)
            .describe("librdkafka producer properties (name: value), over the sink's defaults "
                      "(enable.idempotence true, acks all, partitioner murmur2_random, linger.ms 5, "
                      "compression.codec none, message.timeout.ms 0 (no timeout), enable.gapless.guarantee "
                      "true); values of keys naming a password, "
                      "secret, sasl.oauthbearer.config or ssl.key are never printed"),
        cdcflow::param("headers", &S::headers)
            .describe("extra headers: header name -> aggregatetype, aggregateid, timestamp (microseconds, "
                      "decimal text) or header.<key> (a key of the event's own headers JSON)"),
        cdcflow::param("id_header", &S::id_header)
            .defaults_to("id")
            .describe("the header that carries the event id (Debezium's: id)"),
        cdcflow::param("type_header", &S::type_header)
            .defaults_to("type")
            .describe("the header that carries the event type (Debezium's is often eventType)"),
        cdcflow::param("checkpoint_name", &S::checkpoint_name)
            .defaults_to("kafka")
            .describe("this sink's key in the cdcflow_checkpoints table (unique per pipeline sharing the "
                      "database)"),
        cdcflow::param("allow_duplicates_on_retry", &S::allow_duplicates_on_retry)
            .defaults_to("false")
            .describe("accept kafka.enable.idempotence: false (librdkafka's retries may then write an event "
                      "twice or out of order)"),
        cdcflow::param("retry_backoff_ms", &S::retry_backoff_ms)
            .defaults_to("1000")
            .min("1")
            .max("3600000")
            .describe("after a round of deliveries that failed (e.g. timed out), the wait before producing "
                      "them again; doubles each round"),
        cdcflow::param("retry_backoff_max_ms", &S::retry_backoff_max_ms)
            .defaults_to("30000")
            .min("1")
            .max("3600000")
            .describe("the longest wait between two rounds"),
        cdcflow::param("busy_timeout_ms", &S::busy_timeout_ms)
            .defaults_to("5000")
            .min("0")
            .max("3600000")
            .describe("SQLite busy timeout; a commit that still finds the database locked is tried again "
                      "(without publishing again)"),
        cdcflow::param("create_schema", &S::create_schema)
            .defaults_to("true")
            .describe("create the dead_letters and cdcflow_checkpoints tables if missing, and use WAL"),
        cdcflow::param("synchronous", &S::synchronous)
            .defaults_to("normal")
            .choices(kSynchronous)
            .describe("normal: with WAL, a committed checkpoint survives a process crash; full: also a power "
                      "loss"));
};

class KafkaSink : public cdcflow::Sink {
public:
    static constexpr const char *kName = "kafka_sink";
    static constexpr const char *kVersion = "1.1.0";
    static constexpr uint32_t kFlags = CDCFLOW_PLUGIN_DEFERRED_COMMIT;
    static constexpr const char *kDescription =
        "publishes events to Kafka (Debezium's outbox router contract); checkpoint and dead letters "
        "committed once Kafka acknowledged them";
    using Settings = KafkaSinkSettings;

    KafkaSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx);
    ~KafkaSink() override;

    void start() override;
    void checkpoint(const std::function<void(const cdcflow_position &)> &emit) override;
    // Produces the batch and returns (it is accepted, not yet durable).
    void process(cdcflow::Batch &batch) override;
    // Serves delivery reports for up to wait_ms (parked), commits what is
    // acknowledged; returns how many process calls are durable (plugin.h).
    uint64_t settle(uint32_t wait_ms);
    void stop() override;
    void acquire(const cdcflow_ownership &req);
    void release();

    // The properties handed to librdkafka (tests).
    const Properties &properties() const { return props_; }

private:
    enum : uint8_t { kPending, kAcked, kFailed };
    struct HeadersDeleter {
        void operator()(rd_kafka_headers_t *h) const noexcept { rd_kafka_headers_destroy(h); }
    };
    using Headers = std::unique_ptr<rd_kafka_headers_t, HeadersDeleter>;
    // One message of a unit. The event is a copy of the batch's struct (its
    // place in the batch moves while the host isolates a poison event); the
    // bytes it points to are the batch's, borrowed until the unit is durable.
    struct Msg {
        // e is left unset (plan writes it): a unit's messages are made by
        // resize, which would otherwise zero ~200 bytes per message first.
        Msg() noexcept {}
        cdcflow_event e;
        rd_kafka_topic_t *topic = nullptr;
        int32_t partition = 0; // where the partitioner puts it (for the produce order only)
        uint8_t state = kPending;
        int32_t err = 0;
    };
    // One accepted process call, durable once every message is acknowledged.
    struct Unit {
        uint32_t gen = 0;  // tells its delivery reports from others'
        uint64_t call = 0; // the process call's number (what settle reports)
        std::vector<Msg> msgs;
        size_t outstanding = 0; // produced, no report yet
        size_t failed = 0;      // reported failed for now: produced again after the backoff
        int64_t first_permanent = -1;
        int64_t backoff_ms = 0;
        uint32_t round = 1;
        std::chrono::steady_clock::time_point retry_at{};       // set while failed messages wait
        std::chrono::steady_clock::time_point accepted_at{};    // process returned OK (the latency metrics)
        std::vector<cdcflow_event> dead;                        // rejected events: dead letters
        std::vector<std::pair<std::string, int64_t>> positions; // the last per partition
        void clear() {
            msgs.clear();
            dead.clear();
            positions.clear();
            outstanding = failed = 0;
            first_permanent = -1;
            round = 1;
            retry_at = {};
        }
    };

    void open_producer();
    void close_producer() noexcept;
    // Marks what is not produced (rejected, skipped, illegal topic...),
    // finds each event's topic handle; appends the unit's messages in the
    // order they are to be produced.
    void plan(cdcflow::Batch &batch, Unit &u);
    void produce_one(Unit &u, uint32_t k);
    // The unit a delivery report belongs to (null: one given up on).
    Unit *unit_of(uint32_t gen);
    // settle's steps: produce again what failed for now (after its
    // backoff), fail on what failed for good, commit the oldest `n` units.
    void retry_failed();
    void check_failed();
    void commit(size_t n);
    struct TopicInfo {
        rd_kafka_topic_t *rkt = nullptr;
        int32_t partitions = 0; // 0: not known (yet)
    };
    TopicInfo *topic_for(std::string_view aggregate_type, std::string &reason);
    // The topic's partition count from the cluster's metadata (0 when it
    // does not answer in time).
    int32_t partition_count(rd_kafka_topic_t *rkt, int timeout_ms);
    // Where each of planned_'s messages goes among the unit's new ones:
    // by partition, keeping the batch's order within each partition (so
    // within each key). Fills slot_.
    void order_by_partition();
    // The message's headers (id, type, the extra ones); with header.<key>
    // headers, e's own headers were parsed just before (parse_event_headers).
    Headers make_headers(const cdcflow_event &e);
    // Gives every pending unit up (nothing more is committed) and throws.
    [[noreturn]] void fail_msg(const Msg &m, int err, const std::string &what);
    [[noreturn]] void give_up_on_stop(size_t outstanding);
    // How long a stop still waits for acknowledgements already due (settle).
    static constexpr int64_t kStopGraceMs = 5000;
    std::chrono::steady_clock::time_point stop_seen_{};
    // Parses the event's own headers JSON for the header.<key> headers;
    // false when it is not a JSON object.
    bool parse_event_headers(const cdcflow_event &e);
    // Extra header k's value for event e; false: the event has none.
    bool header_value(const cdcflow_event &e, size_t k, std::string_view &out);
    // Moves the acknowledgements counted by the delivery reports into the
    // metrics (once per poll, not per event).
    void settle_metrics();
    void prepare_db();

    static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
    static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);
    static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

    // Config.
    std::string path_;
    std::string checkpoint_name_;
    std::string id_header_, type_header_;
    int64_t backoff_ms_, backoff_max_ms_, busy_timeout_ms_;
    bool create_schema_, sync_full_;
    Properties props_;
    TopicPattern pattern_;
    std::vector<HeaderSpec> extra_headers_;
    bool needs_event_headers_ = false;

    // Kafka.
    rd_kafka_t *rk_ = nullptr;
    std::map<std::string, TopicInfo, std::less<>> topics_;
    std::string last_type_;           // the aggregate type of the last lookup...
    TopicInfo *last_topic_ = nullptr; // ...and its topic (one type per outbox, usually)
    // The configured partitioner as a function (murmur2, consistent, fnv1a),
    // null for another one: then the batch is produced in its own order.
    int32_t (*partitioner_)(const rd_kafka_topic_t *, const void *, size_t, int32_t, void *,
                            void *) = nullptr;
    std::vector<uint32_t> counts_;
    uint32_t asked_ = 0; // the unit (generation + 1) that last asked for partition counts
    std::atomic<bool> fatal_{false};

    // Accepted process calls not yet durable, oldest first, and the one
    // being produced. A call that failed after producing some messages
    // leaves them in current_ (tracked until acknowledged, since they
    // borrow the batch's bytes), and the next call adds its own.
    std::deque<std::unique_ptr<Unit>> units_;
    std::unique_ptr<Unit> current_;
    std::vector<std::unique_ptr<Unit>> spare_units_; // reused: no allocation per batch
    uint32_t generation_ = 0;
    uint64_t accepted_ = 0, durable_ = 0;
    std::optional<std::string> failure_; // a unit failed for good: nothing more is accepted
    struct Planned {                     // an event to produce, before the messages are made
        uint32_t index = 0;
        int32_t partition = 0;
        rd_kafka_topic_t *topic = nullptr;
    };
    std::vector<Planned> planned_;
    // The call's dead letters and last position per partition (plan).
    std::vector<cdcflow_event> call_dead_;
    std::vector<std::pair<std::string_view, int64_t>> call_positions_;
    std::vector<uint32_t> slot_;                // planned_[i] becomes the unit's message from + slot_[i]
    size_t outstanding_ = 0;                    // over every unit: the in_flight gauge
    int64_t acked_count_ = 0, acked_bytes_ = 0; // not yet in the metrics
    std::string topic_buf_, reason_;
    char ts_buf_[24];
    // The records' timestamp (the producer's wall clock, ms), read every
    // few hundred messages instead of by librdkafka for each one.
    int64_t now_ms_ = 0;
    struct EventHeaders; // the parser of events' own headers JSON (header.<key>)
    std::unique_ptr<EventHeaders> event_headers_;

    // SQLite.
    std::unique_ptr<ownership::Lease> lease_;
    sqlite::Db db_;
    ownership::Fence fence_;
    sqlite::DeadLetters dead_letters_out_;
    sqlite::Stmt checkpoint_upsert_;
    bool prepared_ = false;
    std::vector<std::pair<std::string_view, int64_t>> partitions_;

    cdcflow::Metric produced_, acked_m_, retries_, in_flight_, bytes_, dead_letters_;
    // From process accepting a call to settle committing it: the sum and
    // count (an average over any interval, as a summary's _sum / _count),
    // and the last one's.
    cdcflow::Metric durable_calls_, durable_latency_us_, durable_latency_last_ms_;
};

} // namespace cdcflow::kafka

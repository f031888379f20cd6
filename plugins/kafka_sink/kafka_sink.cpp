#include "kafka_sink.hpp"

#include "common/checkpoints.hpp"
#include "common/sqlite_sink.hpp"

#include "base/clock.hpp"
#include "base/text.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>

namespace cdcflow::kafka {

namespace dom = simdjson::dom;

struct KafkaSink::EventHeaders {
    dom::parser parser;
    dom::element doc;
    bool ok = false;
    std::string padded;               // the event's headers, padded as simdjson reads them
    std::vector<std::string> scratch; // per extra header: a non-string value's JSON text
};

namespace {

// The delivery report's opaque: the batch's generation and the event's index.
void *tag(uint32_t generation, uint32_t index) {
    return reinterpret_cast<void *>((static_cast<uintptr_t>(generation) << 32) | index);
}

} // namespace

KafkaSink::KafkaSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Sink(ctx), path_(cfg.database), checkpoint_name_(cfg.checkpoint_name), id_header_(cfg.id_header),
      type_header_(cfg.type_header), backoff_ms_(cfg.retry_backoff_ms),
      backoff_max_ms_(std::max(cfg.retry_backoff_ms, cfg.retry_backoff_max_ms)),
      busy_timeout_ms_(cfg.busy_timeout_ms), create_schema_(cfg.create_schema),
      sync_full_(cfg.synchronous == "full") {
    kafka::pin_librdkafka(); // see common/kafka_config.hpp
    if (path_.empty()) cfg.fail(&Settings::database, "must not be empty");
    if (cfg.brokers.empty()) cfg.fail(&Settings::brokers, "must not be empty");
    if (checkpoint_name_.empty()) cfg.fail(&Settings::checkpoint_name, "must not be empty");
    if (id_header_.empty()) cfg.fail(&Settings::id_header, "must not be empty");
    if (type_header_.empty()) cfg.fail(&Settings::type_header, "must not be empty");

    std::string err;
    std::optional<Properties> user = parse_properties(cfg.kafka ? cfg.kafka->text : "", err);
    if (!user) cfg.fail(&Settings::kafka, err);
    std::optional<Properties> props =
        producer_properties(cfg.brokers, *user, cfg.allow_duplicates_on_retry, err);
    if (!props) cfg.fail(&Settings::kafka, err);
    props_ = std::move(*props);
    // Every property librdkafka refuses is refused now, at create, naming the
    // key; the producer itself starts (and connects) in start().
    if (rd_kafka_conf_t *conf = make_conf(props_, err))
        rd_kafka_conf_destroy(conf);
    else if (err.starts_with("bootstrap.servers:"))
        cfg.fail(&Settings::brokers, err.substr(19));
    else
        cfg.fail(&Settings::kafka, err);

    // The partitioner librdkafka applies, as a function the sink can call to
    // order a batch by partition (see order_by_partition).
    std::string partitioner;
    for (const auto &[k, v] : props_)
        if (k == "partitioner" || k == "default.topic.config.partitioner") partitioner = v;
    if (partitioner == "murmur2" || partitioner == "murmur2_random")
        partitioner_ = &rd_kafka_msg_partitioner_murmur2;
    else if (partitioner == "consistent" || partitioner == "consistent_random")
        partitioner_ = &rd_kafka_msg_partitioner_consistent;
    else if (partitioner == "fnv1a" || partitioner == "fnv1a_random")
        partitioner_ = &rd_kafka_msg_partitioner_fnv1a;

    std::optional<TopicPattern> pattern = TopicPattern::parse(cfg.topic, err);
    if (!pattern) cfg.fail(&Settings::topic, err);
    pattern_ = std::move(*pattern);
    std::optional<std::vector<HeaderSpec>> extra = parse_headers(cfg.headers ? cfg.headers->text : "", err);
    if (!extra) cfg.fail(&Settings::headers, err);
    extra_headers_ = std::move(*extra);
    for (const HeaderSpec &h : extra_headers_)
        needs_event_headers_ |= h.field == HeaderSpec::Field::event_header;
    if (needs_event_headers_) {
        event_headers_ = std::make_unique<EventHeaders>();
        event_headers_->scratch.resize(extra_headers_.size());
    }

    produced_ =
        ctx.counter("produced", "events handed to the Kafka producer (again after a failed delivery)");
    acked_m_ = ctx.counter("acked", "events Kafka acknowledged");
    retries_ = ctx.counter("delivery_retries", "events produced again after their delivery failed");
    in_flight_ = ctx.gauge("in_flight", "events produced and not yet acknowledged");
    bytes_ = ctx.counter("bytes", "key and value bytes Kafka acknowledged");
    dead_letters_ = ctx.counter("dead_letters", "dead letters written (rejected by any stage)");
    durable_calls_ = ctx.counter("durable_calls", "accepted process calls (batches) committed");
    durable_latency_us_ = ctx.counter(
        "durable_latency_us", "sum over durable_calls of the time from process accepting the batch to "
                              "its commit (microseconds; / durable_calls: the average)");
    durable_latency_last_ms_ = ctx.gauge("durable_latency_last_ms",
                                         "the last committed batch's time from accepted to committed (ms)");

    std::error_code ec;
    if (!create_schema_ && !std::filesystem::exists(path_, ec))
        cfg.fail(&Settings::database,
                 sqlite::database_label(path_) + " does not exist (create_schema is false)");
}

KafkaSink::~KafkaSink() {
    close_producer();
}

void KafkaSink::prepare_db() {
    dead_letters_out_.prepare(db_);
    checkpoint_upsert_ = db_.prepare(sqlite::kCheckpointUpsertSql);
    prepared_ = true;
}

void KafkaSink::start() {
    if (!db_)
        db_ =
            sqlite::Db(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, static_cast<int>(busy_timeout_ms_));
    sqlite_sink::set_durability(db_, path_, sync_full_, create_schema_, ctx());
    const bool missing = !db_.has_table("dead_letters") || !db_.has_table("cdcflow_checkpoints");
    if (missing) {
        if (!create_schema_)
            throw Error(CDCFLOW_ERR_CONFIG, "database: " + sqlite::database_label(path_) +
                                                " has no dead_letters or cdcflow_checkpoints table "
                                                "(create_schema is false)");
        sqlite::Transaction tx(db_);
        db_.exec(sqlite::kDeadLettersDdl);
        db_.exec(sqlite::kCheckpointsDdl);
        tx.commit();
    }
    if (!prepared_) prepare_db();
    if (lease_ && !fence_) fence_ = ownership::Fence(db_, *lease_);
    if (!rk_) open_producer();
}

void KafkaSink::open_producer() {
    std::string err;
    rd_kafka_conf_t *conf = make_conf(props_, err);
    if (!conf) throw Error(CDCFLOW_ERR_CONFIG, "kafka: " + err);
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_dr_msg_cb(conf, &KafkaSink::on_delivery);
    rd_kafka_conf_set_error_cb(conf, &KafkaSink::on_error);
    rd_kafka_conf_set_log_cb(conf, &KafkaSink::on_log);
    char errstr[512];
    errstr[0] = '\0';
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk_) {
        rd_kafka_conf_destroy(conf); // not taken on failure
        throw Error(CDCFLOW_ERR_CONFIG,
                    "kafka: librdkafka refuses the producer's configuration: " + base::text(errstr));
    }
}

void KafkaSink::close_producer() noexcept {
    if (!rk_) return;
    // What is not durable by now is given up (the host abandons it: nothing
    // of it is committed, the next start publishes it again). The pending
    // units go first, so that the purge's reports find none of them.
    // The purge and rd_kafka_destroy make sure nothing is sent after the
    // stop; the units (whose events borrow the batches for retries and
    // dead letters) are dropped before the host frees the batches.
    units_.clear();
    current_.reset();
    outstanding_ = 0;
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
    rd_kafka_poll(rk_, 0);
    for (auto &[name, t] : topics_)
        rd_kafka_topic_destroy(t.rkt);
    topics_.clear();
    last_topic_ = nullptr;
    last_type_.clear();
    rd_kafka_destroy(rk_);
    rk_ = nullptr;
}

void KafkaSink::on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    // A failed connection is also reported through the error callback
    // (on_error): one line for it, not two.
    if (fac && std::string_view(fac) == "FAIL") return;
    auto *self = static_cast<KafkaSink *>(rd_kafka_opaque(rk));
    cdcflow_log_level l;
    std::string text;
    if (self && log_line(level, fac, buf, l, text)) self->ctx().log(l, text);
}

void KafkaSink::on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    auto *self = static_cast<KafkaSink *>(opaque);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        self->fatal_.store(true);
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        self->ctx().error(std::string("Kafka producer: fatal error: ") + why);
        return;
    }
    // librdkafka recovers from these itself (a broker down, a connection
    // lost): the operator hears of them; deliveries wait meanwhile.
    self->ctx().warn("Kafka: " + err_text(err) + ": " + (reason ? reason : ""));
}

KafkaSink::Unit *KafkaSink::unit_of(uint32_t gen) {
    if (current_ && current_->gen == gen) return current_.get();
    // A few units at most (the host's bound), the newest most often asked.
    for (auto it = units_.rbegin(); it != units_.rend(); ++it)
        if ((*it)->gen == gen) return it->get();
    return nullptr;
}

void KafkaSink::on_delivery(rd_kafka_t *, const rd_kafka_message_t *msg, void *opaque) {
    auto *self = static_cast<KafkaSink *>(opaque);
    const auto t = reinterpret_cast<uintptr_t>(msg->_private);
    const auto generation = static_cast<uint32_t>(t >> 32);
    const auto i = static_cast<uint32_t>(t & 0xffffffffu);
    // A report for a unit given up on (a stop, a failure): nothing waits for it.
    Unit *u = self->unit_of(generation);
    if (!u || i >= u->msgs.size()) return;
    Msg &m = u->msgs[i];
    if (m.state != kPending) return;
    --u->outstanding;
    --self->outstanding_;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        m.state = kAcked;
        self->acked_count_ += 1;
        self->acked_bytes_ += static_cast<int64_t>(msg->len + msg->key_len);
        return;
    }
    m.state = kFailed;
    m.err = msg->err;
    ++u->failed;
    if (!retriable_delivery_error(msg->err) && u->first_permanent < 0) u->first_permanent = i;
}

KafkaSink::TopicInfo *KafkaSink::topic_for(std::string_view aggregate_type, std::string &reason) {
    if (last_topic_ && aggregate_type == last_type_) return last_topic_;
    pattern_.render(aggregate_type, topic_buf_);
    TopicInfo *t;
    if (auto it = topics_.find(std::string_view(topic_buf_)); it != topics_.end()) {
        t = &it->second;
    } else {
        if (!legal_topic(topic_buf_, reason)) {
            reason = "aggregate type gives " + reason;
            return nullptr;
        }
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk_, topic_buf_.c_str(), nullptr);
        if (!rkt) {
            reason = "topic " + base::text(topic_buf_, '\'') + ": " + err_text(rd_kafka_last_error());
            return nullptr;
        }
        t = &topics_.emplace(topic_buf_, TopicInfo{rkt, 0}).first->second;
    }
    last_type_.assign(aggregate_type);
    last_topic_ = t;
    return t;
}

int32_t KafkaSink::partition_count(rd_kafka_topic_t *rkt, int timeout_ms) {
    const struct rd_kafka_metadata *md = nullptr;
    if (rd_kafka_metadata(rk_, 0, rkt, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR || !md) return 0;
    int32_t n = 0;
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

void KafkaSink::order_by_partition() {
    // Why: an idempotent producer sends one request per partition, at most
    // five in flight per broker. Produced in the outbox's order, every
    // partition still holds messages when the batch ends, and its last
    // acknowledgements take partitions / 5 round trips (128 partitions:
    // ~26, 55 ms on the mock). Produced partition after partition, each
    // partition's messages leave while the next ones are produced. Kafka
    // keeps no order across partitions; a stable counting sort keeps the
    // outbox's order within each partition, so within each key.
    // Only the destinations are computed: plan then writes each message
    // while it walks the batch in its own order, since reading the batch's
    // events in partition order missed the cache on every one (a batch is
    // larger than the cache; perf: plan was 12% of the sink's thread).
    int32_t max = 0;
    for (const Planned &c : planned_)
        max = std::max(max, c.partition);
    counts_.assign(static_cast<size_t>(max) + 2, 0);
    for (const Planned &c : planned_)
        ++counts_[static_cast<size_t>(c.partition) + 1];
    for (size_t p = 1; p < counts_.size(); ++p)
        counts_[p] += counts_[p - 1];
    slot_.resize(planned_.size());
    for (size_t i = 0; i < planned_.size(); ++i)
        slot_[i] = counts_[static_cast<size_t>(planned_[i].partition)]++;
}

KafkaSink::Headers KafkaSink::make_headers(const cdcflow_event &e) {
    // The header names are the configured ones; librdkafka copies names and
    // values into the list.
    Headers h(rd_kafka_headers_new(2 + extra_headers_.size()));
    rd_kafka_header_add(h.get(), id_header_.data(), static_cast<ssize_t>(id_header_.size()), e.event_id.data,
                        static_cast<ssize_t>(e.event_id.len));
    rd_kafka_header_add(h.get(), type_header_.data(), static_cast<ssize_t>(type_header_.size()),
                        e.event_type.data, static_cast<ssize_t>(e.event_type.len));
    for (size_t k = 0; k < extra_headers_.size(); ++k) {
        std::string_view v;
        if (!header_value(e, k, v)) continue;
        const std::string &name = extra_headers_[k].name;
        rd_kafka_header_add(h.get(), name.data(), static_cast<ssize_t>(name.size()), v.data(),
                            static_cast<ssize_t>(v.size()));
    }
    return h;
}

bool KafkaSink::parse_event_headers(const cdcflow_event &e) {
    EventHeaders &h = *event_headers_;
    h.ok = false;
    if (e.headers.len == 0) return true; // no headers: the header.<key> headers are left out
    h.padded.assign(e.headers.data, e.headers.len);
    h.padded.resize(e.headers.len + simdjson::SIMDJSON_PADDING);
    dom::object obj;
    if (h.parser.parse(h.padded.data(), e.headers.len, false).get(h.doc) != simdjson::SUCCESS ||
        h.doc.get_object().get(obj) != simdjson::SUCCESS)
        return false;
    h.ok = true;
    return true;
}

bool KafkaSink::header_value(const cdcflow_event &e, size_t k, std::string_view &out) {
    const HeaderSpec &h = extra_headers_[k];
    switch (h.field) {
    case HeaderSpec::Field::aggregatetype:
        out = sv(e.aggregate_type);
        return true;
    case HeaderSpec::Field::aggregateid:
        out = sv(e.aggregate_id);
        return true;
    case HeaderSpec::Field::timestamp: {
        auto [end, ec] = std::to_chars(ts_buf_, ts_buf_ + sizeof ts_buf_, e.timestamp_us);
        (void)ec;
        out = std::string_view(ts_buf_, static_cast<size_t>(end - ts_buf_));
        return true;
    }
    case HeaderSpec::Field::event_header: {
        EventHeaders &eh = *event_headers_;
        if (!eh.ok) return false;
        dom::element v;
        if (eh.doc.at_key(h.key).get(v) != simdjson::SUCCESS) return false;
        if (v.is_null()) return false;
        if (v.get_string().get(out) == simdjson::SUCCESS) return true;
        eh.scratch[k] = simdjson::minify(v);
        out = eh.scratch[k];
        return true;
    }
    }
    return false;
}

void KafkaSink::plan(cdcflow::Batch &batch, Unit &u) {
    planned_.clear();
    call_dead_.clear();
    call_positions_.clear();
    for (uint32_t i = 0; i < batch.size(); ++i) {
        const cdcflow_event &e = batch[i];
        // What settle commits once the call is durable, taken in this pass
        // over the events (a second one missed the cache again on each):
        // the last position per partition, whatever the event's status
        // (skipped and dead-lettered events are done with too).
        const std::string_view part = sv(e.position.partition);
        if (call_positions_.empty() || call_positions_.back().first != part) {
            auto it = std::find_if(call_positions_.begin(), call_positions_.end(),
                                   [&](auto &x) { return x.first == part; });
            if (it == call_positions_.end())
                call_positions_.emplace_back(part, e.position.offset);
            else
                it->second = e.position.offset;
        } else {
            call_positions_.back().second = e.position.offset;
        }
        if (e.status != CDCFLOW_EVENT_OK) { // rejected: a dead letter; skipped: nothing
            if (e.status == CDCFLOW_EVENT_REJECTED) call_dead_.push_back(e);
            continue;
        }
        // The sink's own limits, whatever ran before it: an event id, and
        // text that consumers can read as text (the payload goes as bytes).
        TopicInfo *topic = nullptr;
        if (!sqlite_sink::event_text_ok(e, false, reason_) ||
            !(topic = topic_for(sv(e.aggregate_type), reason_))) {
            batch.reject(i, reason_);
            if (e.status == CDCFLOW_EVENT_REJECTED) call_dead_.push_back(e); // as marked now
            continue;
        }
        if (needs_event_headers_ && !parse_event_headers(e)) {
            batch.reject(i, "headers are not a JSON object (the header.<key> headers read them)");
            if (e.status == CDCFLOW_EVENT_REJECTED) call_dead_.push_back(e); // as marked now
            continue;
        }
        Planned &c = planned_.emplace_back();
        c.index = i;
        c.topic = topic->rkt;
        if (partitioner_) {
            // A topic met for the first time, or whose count the cluster
            // did not give yet: asked once per call at most.
            if (topic->partitions == 0 && asked_ != u.gen + 1) {
                asked_ = u.gen + 1;
                for (auto &[name, t] : topics_)
                    if (t.partitions == 0) t.partitions = partition_count(t.rkt, 500);
            }
            if (topic->partitions > 0)
                c.partition = partitioner_(topic->rkt, e.aggregate_id.data ? e.aggregate_id.data : "",
                                           e.aggregate_id.len, topic->partitions, nullptr, nullptr);
        }
    }
    const bool sorted = partitioner_ && planned_.size() > 1;
    if (sorted) order_by_partition();
    // The messages in the order they are produced: produce, the delivery
    // reports and the retries then walk them in memory order (in the
    // batch's order, each message's 200 bytes were a cache miss each time).
    const size_t from = u.msgs.size();
    u.msgs.resize(from + planned_.size());
    for (size_t i = 0; i < planned_.size(); ++i) {
        Planned &c = planned_[i];
        Msg &m = u.msgs[from + (sorted ? slot_[i] : i)];
        m.e = batch[c.index];
        m.topic = c.topic;
        m.partition = c.partition;
    }
}

void KafkaSink::produce_one(Unit &u, uint32_t k) {
    Msg &m = u.msgs[k];
    const cdcflow_event &e = m.e;
    // Built here, not ahead in plan: allocated all at once for a batch,
    // 400,000 small blocks freed later in another order cost glibc more
    // than the copies (measured: twice the thread's time).
    if (needs_event_headers_) parse_event_headers(e);
    Headers headers = make_headers(e);
    rd_kafka_vu_t vus[7];
    vus[0].vtype = RD_KAFKA_VTYPE_RKT;
    vus[0].u.rkt = m.topic;
    vus[1].vtype = RD_KAFKA_VTYPE_KEY;
    vus[1].u.mem.ptr = const_cast<char *>(e.aggregate_id.data);
    vus[1].u.mem.size = e.aggregate_id.len;
    vus[2].vtype = RD_KAFKA_VTYPE_VALUE;
    vus[2].u.mem.ptr = const_cast<char *>(e.payload.data);
    vus[2].u.mem.size = e.payload.len;
    // Copied (RD_KAFKA_MSG_F_COPY) into the message's own allocation, here
    // on the publish thread: messages go in partition order, so consecutive
    // ones sit apart in the batch, and librdkafka's broker thread, which
    // copies each payload into its request, read borrowed payloads from all
    // over the batch (that copy was a tenth of the process's time; now this
    // copy and the broker's take 1.6% each, and the run 5% less CPU: 1M
    // events, 6 interleaved runs each). librdkafka copies the key itself.
    vus[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[3].u.i = RD_KAFKA_MSG_F_COPY;
    vus[4].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vus[4].u.ptr = tag(u.gen, k);
    // Taken over by librdkafka when (only when) produceva succeeds.
    vus[5].vtype = RD_KAFKA_VTYPE_HEADERS;
    vus[5].u.headers = headers.get();
    // No record timestamp from the event: Kafka's retention deletes by it,
    // and an event's timestamp is data, not truth (DESIGN.md); the
    // producer's clock is used, as librdkafka would (it reads the clock for
    // each message: 1% of the process's time).
    vus[6].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
    vus[6].u.i64 = now_ms_;
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_produceva(rk_, vus, std::size(vus));
        if (!error) break;
        const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
        if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL) fail_msg(m, code, "producing");
        // librdkafka's queue is full: serve reports (parked) until there is room.
        if (ctx().stop_requested()) give_up_on_stop(outstanding_);
        rd_kafka_poll(rk_, 10);
        settle_metrics();
        vus[6].u.i64 = now_ms_ = base::wall_us() / 1000;
    }
    (void)headers.release(); // librdkafka's now
    m.state = kPending;
    m.err = 0;
    ++u.outstanding;
    ++outstanding_;
}

void KafkaSink::settle_metrics() {
    if (acked_count_) {
        acked_m_.add(acked_count_);
        bytes_.add(acked_bytes_);
        acked_count_ = acked_bytes_ = 0;
    }
    in_flight_.set(static_cast<int64_t>(outstanding_));
}

void KafkaSink::fail_msg(const Msg &m, int err, const std::string &what) {
    // Nothing more goes out; what is already in flight may still land
    // (at-least-once: the restart publishes it again).
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING);
    const cdcflow_event &e = m.e;
    std::string kafka = err_text(err);
    if (err == RD_KAFKA_RESP_ERR__FATAL || fatal_.load()) {
        char why[512];
        rd_kafka_fatal_error(rk_, why, sizeof why);
        kafka = std::string("fatal producer error: ") + why;
    }
    std::string msg = what + " event " + base::text(sv(e.event_id), '\'') + " at position ";
    if (e.position.partition.len) msg += base::text(sv(e.position.partition)) + "@";
    msg += std::to_string(e.position.offset) + " to topic " +
           base::text(m.topic ? rd_kafka_topic_name(m.topic) : "?", '\'') + " failed for good: " + kafka +
           "; nothing from it on is committed (a restart publishes it again from the checkpoint)";
    // Every pending unit is given up: reports still to come find none. The
    // messages stay librdkafka's until stop destroys the producer.
    failure_ = msg;
    units_.clear();
    current_.reset();
    outstanding_ = 0;
    settle_metrics();
    throw Error(CDCFLOW_ERR_IO, msg);
}

void KafkaSink::give_up_on_stop(size_t outstanding) {
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING);
    settle_metrics();
    // RETRY while stopping: the host treats it as the stop it asked for
    // (and abandons what is not durable).
    throw Error(CDCFLOW_ERR_RETRY,
                "stopping while " + std::to_string(outstanding) +
                    " events wait for Kafka's acknowledgement: nothing of them is committed; they are "
                    "published again from the checkpoint at the next start");
}

void KafkaSink::process(cdcflow::Batch &batch) {
    if (!rk_) throw Error(CDCFLOW_ERR_INTERNAL, "process() before start()");
    if (failure_) throw Error(CDCFLOW_ERR_IO, *failure_);
    if (fatal_.load())
        for (auto &u : units_)
            for (const Msg &m : u->msgs)
                if (m.state != kAcked) fail_msg(m, RD_KAFKA_RESP_ERR__FATAL, "delivering");
    if (!current_) {
        if (spare_units_.empty()) {
            auto unit = std::make_unique<Unit>();
            // Room for the largest batch up front: grown with the host's
            // batches (batch_size doubling up to batch_max_events under a
            // backlog), each unit's messages moved to new, never-touched
            // memory at every doubling. Reserving touches nothing. An older
            // host, or no memory for it: grown as needed.
            const int64_t largest = std::max(ctx().pipeline_setting("batch_size").value_or(0),
                                             ctx().pipeline_setting("batch_max_events").value_or(0));
            try {
                unit->msgs.reserve(static_cast<size_t>(std::clamp<int64_t>(largest, 0, 1 << 20)));
            } catch (const std::bad_alloc &) {
            }
            current_ = std::move(unit);
        } else {
            current_ = std::move(spare_units_.back());
            spare_units_.pop_back();
        }
        current_->clear();
        current_->gen = ++generation_;
        current_->backoff_ms = backoff_ms_;
    }
    Unit &u = *current_;
    const size_t from = u.msgs.size();
    plan(batch, u);
    size_t n = from;
    now_ms_ = base::wall_us() / 1000;
    try {
        for (; n < u.msgs.size(); ++n) {
            // The small bytes librdkafka copies (key, id and type headers), a
            // few messages ahead (the payload as well measured no faster):
            // messages go in partition order, so these are scattered over a
            // batch larger than the cache (perf: a fifth of this thread was
            // rd_kafka_header_add's copy, missing the cache).
            if (n + 16 < u.msgs.size()) { // the message's record itself, further ahead
                const char *rec = reinterpret_cast<const char *>(&u.msgs[n + 16]);
                __builtin_prefetch(rec);
                __builtin_prefetch(rec + 64);
            }
            if (n + 8 < u.msgs.size()) {
                const cdcflow_event &ahead = u.msgs[n + 8].e;
                __builtin_prefetch(ahead.event_id.data);
                __builtin_prefetch(ahead.event_type.data);
                __builtin_prefetch(ahead.aggregate_id.data);
            }
            produce_one(u, static_cast<uint32_t>(n));
            // Serve the reports that are in as we go: librdkafka frees each
            // acknowledged message there, and freeing them interleaved with
            // the next messages' allocations reuses the same memory (freed
            // all at once, glibc spent a third of this thread's time
            // coalescing them).
            if ((n & 255) == 255) {
                rd_kafka_poll(rk_, 0);
                now_ms_ = base::wall_us() / 1000;
            }
        }
    } catch (...) {
        // The call fails, so none of its positions is committed; what it
        // produced stays in current_ (waited for, since it borrows the
        // batch) and is committed with the next accepted call, which the
        // host makes with the same events. What it did not produce is
        // dropped: left there, it would wait for nothing.
        if (current_) current_->msgs.resize(n);
        throw;
    }
    produced_.add(static_cast<int64_t>(u.msgs.size() - from));
    // Accepted: what settle commits once the unit is acknowledged (plan
    // took it from this call's events; only now is it the unit's, as a
    // call that failed commits none of it). The dead letters are the
    // events themselves, their bytes borrowed likewise.
    u.dead.insert(u.dead.end(), call_dead_.begin(), call_dead_.end());
    for (const auto &[part, offset] : call_positions_) {
        auto it = std::find_if(u.positions.begin(), u.positions.end(),
                               [&](auto &x) { return std::string_view(x.first) == part; });
        if (it == u.positions.end())
            u.positions.emplace_back(part, offset);
        else
            it->second = offset;
    }
    units_.push_back(std::move(current_));
    settle_metrics();
    // Last, after everything that can throw: the count is of calls that
    // returned OK (settle reports durability against it).
    units_.back()->accepted_at = std::chrono::steady_clock::now();
    units_.back()->call = ++accepted_;
}

void KafkaSink::check_failed() {
    for (auto &u : units_) {
        if (u->first_permanent >= 0) {
            const Msg &m = u->msgs[static_cast<size_t>(u->first_permanent)];
            fail_msg(m, m.err, "delivering");
        }
        if (fatal_.load())
            for (const Msg &m : u->msgs)
                if (m.state != kAcked) fail_msg(m, RD_KAFKA_RESP_ERR__FATAL, "delivering");
    }
}

void KafkaSink::retry_failed() {
    const auto now = std::chrono::steady_clock::now();
    for (auto &up : units_) {
        Unit &u = *up;
        // A unit's round ends when no message of it is outstanding; what
        // failed for now (timed out, the cluster unreachable) is produced
        // again after the backoff, in the order produced (per partition, so
        // per key, the batch's), never skipped.
        if (u.failed == 0 || u.outstanding > 0) continue;
        if (u.retry_at == std::chrono::steady_clock::time_point{}) {
            u.retry_at = now + std::chrono::milliseconds(u.backoff_ms);
            const Msg *first = nullptr;
            for (const Msg &m : u.msgs)
                if (m.state == kFailed) {
                    first = &m;
                    break;
                }
            ctx().warn(std::to_string(u.failed) + " events not acknowledged by Kafka (first: event " +
                       base::text(sv(first->e.event_id), '\'') + " at position " +
                       std::to_string(first->e.position.offset) + ": " + err_text(first->err) +
                       "); producing them again in " + std::to_string(u.backoff_ms) + " ms (round " +
                       std::to_string(u.round + 1) + ")");
            continue;
        }
        if (now < u.retry_at) continue;
        retries_.add(static_cast<int64_t>(u.failed));
        produced_.add(static_cast<int64_t>(u.failed));
        u.failed = 0;
        u.retry_at = {};
        u.backoff_ms = std::min(u.backoff_ms * 2, backoff_max_ms_);
        ++u.round;
        now_ms_ = base::wall_us() / 1000;
        for (uint32_t k = 0; k < u.msgs.size(); ++k)
            if (u.msgs[k].state == kFailed) produce_one(u, k);
    }
}

uint64_t KafkaSink::settle(uint32_t wait_ms) {
    if (!rk_) throw Error(CDCFLOW_ERR_INTERNAL, "settle() before start()");
    using Clock = std::chrono::steady_clock;
    const auto until = Clock::now() + std::chrono::milliseconds(wait_ms);
    for (;;) {
        rd_kafka_poll(rk_, 0); // the reports that are in
        settle_metrics();
        // The oldest units whose every message is acknowledged: one commit.
        size_t n = 0;
        while (n < units_.size() && units_[n]->outstanding == 0 && units_[n]->failed == 0)
            ++n;
        if (n > 0) {
            try {
                commit(n);
            } catch (const Error &e) {
                // A locked database (after busy_timeout_ms): the units stay,
                // nothing is published again. Serve reports for the rest of
                // wait_ms (no spin), then RETRY: the host retries settle
                // under the stage's retry and breaker policy, which logs
                // once per backoff and fails or opens the breaker at last.
                if (e.status() != CDCFLOW_ERR_RETRY) throw;
                for (auto now = Clock::now(); now < until && !ctx().stop_requested(); now = Clock::now()) {
                    const auto left =
                        std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
                    rd_kafka_poll(rk_, static_cast<int>(std::clamp<int64_t>(left, 1, 100)));
                }
                settle_metrics();
                throw Error(CDCFLOW_ERR_RETRY,
                            std::string("committing what Kafka acknowledged: ") + e.what());
            }
            durable_ = units_[n - 1]->call;
            const auto committed = Clock::now();
            int64_t sum_us = 0, last_us = 0;
            for (size_t k = 0; k < n; ++k) {
                last_us =
                    std::chrono::duration_cast<std::chrono::microseconds>(committed - units_[k]->accepted_at)
                        .count();
                sum_us += last_us;
            }
            durable_calls_.add(static_cast<int64_t>(n));
            durable_latency_us_.add(sum_us);
            durable_latency_last_ms_.set(last_us / 1000);
            for (size_t k = 0; k < n; ++k) {
                units_.front()->clear();
                spare_units_.push_back(std::move(units_.front()));
                units_.pop_front();
            }
            return durable_;
        }
        check_failed();
        retry_failed();
        const auto now = Clock::now();
        if (ctx().stop_requested()) {
            // A graceful stop still takes acknowledgements on their way for
            // a while (giving them up publishes them again at the next
            // start); a cluster that does not answer does not hold it up.
            // Giving up is explicit (RETRY while stopping); an OK without
            // progress makes the host call again with a full wait.
            if (stop_seen_ == Clock::time_point{}) stop_seen_ = now;
            if (now - stop_seen_ > std::chrono::milliseconds(kStopGraceMs)) {
                size_t waiting = 0; // in flight, and failed for now
                for (const auto &u : units_)
                    waiting += u->outstanding + u->failed;
                give_up_on_stop(waiting);
            }
        }
        if (now >= until) return durable_;
        // Parked in librdkafka's queue until a report arrives, the wait
        // ends, or (at most 100 ms) to look at the stop flag and retries.
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
        rd_kafka_poll(rk_, static_cast<int>(std::clamp<int64_t>(left, 1, 100)));
    }
}

void KafkaSink::commit(size_t n) {
    const int64_t now = base::wall_us();
    int64_t dead = 0;
    sqlite::Transaction tx(db_);
    // Still the owner? Checked under the write lock this transaction holds
    // until COMMIT, so no takeover can slip in between.
    if (fence_) fence_.check();
    partitions_.clear();
    for (size_t k = 0; k < n; ++k) {
        const Unit &u = *units_[k];
        for (const cdcflow_event &e : u.dead) {
            dead_letters_out_.insert(e, now);
            ++dead;
        }
        // The newest position of each partition over the units.
        for (const auto &[part, offset] : u.positions) {
            auto it = std::find_if(partitions_.begin(), partitions_.end(),
                                   [&](auto &x) { return x.first == part; });
            if (it == partitions_.end())
                partitions_.emplace_back(part, offset);
            else
                it->second = offset;
        }
    }
    for (const auto &[part, offset] : partitions_) {
        checkpoint_upsert_.bind(1, std::string_view(checkpoint_name_))
            .bind(2, part)
            .bind(3, offset)
            .bind(4, now);
        checkpoint_upsert_.run();
        // A checkpoint never moves back: these would then be a second
        // publication of events already committed. Refuse them as a whole.
        if (db_.changes() != 1)
            throw Error(CDCFLOW_ERR_INTERNAL, "checkpoint '" + checkpoint_name_ + "' is already at or past " +
                                                  std::to_string(offset) + ": refusing to move it back");
    }
    tx.commit();
    if (fence_) fence_.committed();
    dead_letters_.add(dead);
}

void KafkaSink::acquire(const cdcflow_ownership &req) {
    sqlite_sink::acquire(lease_, path_, checkpoint_name_, req, ctx());
}

void KafkaSink::release() {
    if (lease_) lease_->release();
}

void KafkaSink::checkpoint(const std::function<void(const cdcflow_position &)> &emit) {
    sqlite_sink::report_checkpoint(db_, path_, static_cast<int>(busy_timeout_ms_), checkpoint_name_, emit);
}

void KafkaSink::stop() {
    close_producer();
    sqlite_sink::truncate_wal(db_);
    dead_letters_out_.reset();
    checkpoint_upsert_ = {};
    fence_ = {};
    prepared_ = false;
    db_ = {};
}

} // namespace cdcflow::kafka

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

// librdkafka's properties into a conf, or nullptr with `error` "<key>: why"
// (a secret key's value is never in it: librdkafka's own message quotes the
// value, so a secret's gets a message of ours instead).
rd_kafka_conf_t *make_conf(const Properties &props, std::string &error) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    for (const auto &[k, v] : props) {
        err[0] = '\0';
        rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err);
        if (r == RD_KAFKA_CONF_OK) continue;
        error = base::text(k) + ": ";
        if (r == RD_KAFKA_CONF_UNKNOWN)
            error += "not a librdkafka property";
        else if (secret_key(k))
            error += "librdkafka refuses the value (not shown: a secret)";
        else
            base::append_text(error, err);
        rd_kafka_conf_destroy(conf);
        return nullptr;
    }
    return conf;
}

std::string err_text(int err) {
    auto e = static_cast<rd_kafka_resp_err_t>(err);
    return std::string(rd_kafka_err2str(e)) + " (" + rd_kafka_err2name(e) + ")";
}

} // namespace

KafkaSink::KafkaSink(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Sink(ctx), path_(cfg.database), checkpoint_name_(cfg.checkpoint_name), id_header_(cfg.id_header),
      type_header_(cfg.type_header), backoff_ms_(cfg.retry_backoff_ms),
      backoff_max_ms_(std::max(cfg.retry_backoff_ms, cfg.retry_backoff_max_ms)),
      busy_timeout_ms_(cfg.busy_timeout_ms), create_schema_(cfg.create_schema),
      sync_full_(cfg.synchronous == "full") {
    kafka::pin_librdkafka(); // see kafka_config.hpp
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
    vus_.reserve(7 + extra_headers_.size());

    produced_ =
        ctx.counter("produced", "events handed to the Kafka producer (again after a failed delivery)");
    acked_m_ = ctx.counter("acked", "events Kafka acknowledged");
    retries_ = ctx.counter("delivery_retries", "events produced again after their delivery failed");
    in_flight_ = ctx.gauge("in_flight", "events produced and not yet acknowledged");
    bytes_ = ctx.counter("bytes", "key and value bytes Kafka acknowledged");
    dead_letters_ = ctx.counter("dead_letters", "dead letters written (rejected by any stage)");

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
    // process() returns only once every delivery is settled, or gives the
    // batch up (nothing committed): what is left is not waited for.
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
    // A configuration dump (debug=conf) may hold secrets: never passed on.
    if (fac && std::string_view(fac) == "CONF") return;
    // A failed connection is also reported through the error callback
    // (on_error): one line for it, not two.
    if (fac && std::string_view(fac) == "FAIL") return;
    auto *self = static_cast<KafkaSink *>(rd_kafka_opaque(rk));
    if (!self) return;
    const cdcflow_log_level l = level <= 3   ? CDCFLOW_LOG_ERROR
                                : level == 4 ? CDCFLOW_LOG_WARN
                                : level <= 6 ? CDCFLOW_LOG_INFO
                                             : CDCFLOW_LOG_DEBUG;
    self->ctx().log(l, std::string("librdkafka: ") + (fac ? fac : "") + ": " + (buf ? buf : ""));
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

void KafkaSink::on_delivery(rd_kafka_t *, const rd_kafka_message_t *msg, void *opaque) {
    auto *self = static_cast<KafkaSink *>(opaque);
    const auto t = reinterpret_cast<uintptr_t>(msg->_private);
    const auto generation = static_cast<uint32_t>(t >> 32);
    const auto i = static_cast<uint32_t>(t & 0xffffffffu);
    // A report for a batch given up on (a stop, a failure): nothing waits for it.
    if (generation != self->generation_ || i >= self->slots_.size()) return;
    Slot &s = self->slots_[i];
    if (s.state != kPending) return;
    --self->outstanding_;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        s.state = kAcked;
        self->acked_count_ += 1;
        self->acked_bytes_ += static_cast<int64_t>(msg->len + msg->key_len);
        return;
    }
    s.state = kFailed;
    s.err = msg->err;
    if (!retriable_delivery_error(msg->err) && self->first_permanent_ < 0) self->first_permanent_ = i;
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
    // five in flight per broker, and the sink waits for a batch's last
    // acknowledgement before it commits. Produced in the outbox's order,
    // every partition still holds messages when the batch ends, and the
    // wait takes partitions / 5 round trips (128 partitions: ~26, 55 ms on
    // the mock, per batch). Produced partition after partition, each
    // partition's messages leave while the next ones are produced and the
    // wait is a few round trips. Kafka keeps no order across partitions; a
    // stable counting sort keeps the outbox's order within each partition,
    // so within each key.
    int32_t max = 0;
    for (uint32_t i : todo_)
        max = std::max(max, slots_[i].partition);
    counts_.assign(static_cast<size_t>(max) + 2, 0);
    for (uint32_t i : todo_)
        ++counts_[static_cast<size_t>(slots_[i].partition) + 1];
    for (size_t p = 1; p < counts_.size(); ++p)
        counts_[p] += counts_[p - 1];
    sorted_.resize(todo_.size());
    for (uint32_t i : todo_)
        sorted_[counts_[static_cast<size_t>(slots_[i].partition)]++] = i;
    todo_.swap(sorted_);
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

void KafkaSink::plan(cdcflow::Batch &batch) {
    slots_.assign(batch.size(), Slot{});
    todo_.clear();
    for (uint32_t i = 0; i < batch.size(); ++i) {
        const cdcflow_event &e = batch[i];
        if (e.status != CDCFLOW_EVENT_OK) continue; // rejected: a dead letter; skipped: nothing
        // The sink's own limits, whatever ran before it: an event id, and
        // text that consumers can read as text (the payload goes as bytes).
        TopicInfo *topic = nullptr;
        if (!sqlite_sink::event_text_ok(e, false, reason_) ||
            !(topic = topic_for(sv(e.aggregate_type), reason_))) {
            batch.reject(i, reason_);
            continue;
        }
        if (needs_event_headers_ && !parse_event_headers(e)) {
            batch.reject(i, "headers are not a JSON object (the header.<key> headers read them)");
            continue;
        }
        slots_[i].topic = topic->rkt;
        slots_[i].state = kPending;
        if (partitioner_) {
            // A topic met for the first time, or whose count the cluster
            // did not give yet: asked once per batch at most.
            if (topic->partitions == 0 && asked_ != generation_ + 1) {
                asked_ = generation_ + 1;
                for (auto &[name, t] : topics_)
                    if (t.partitions == 0) t.partitions = partition_count(t.rkt, 500);
            }
            if (topic->partitions > 0)
                slots_[i].partition = partitioner_(topic->rkt, e.aggregate_id.data ? e.aggregate_id.data : "",
                                                   e.aggregate_id.len, topic->partitions, nullptr, nullptr);
        }
        todo_.push_back(i);
    }
    if (partitioner_ && todo_.size() > 1) order_by_partition();
}

void KafkaSink::produce_one(cdcflow::Batch &batch, uint32_t i) {
    const cdcflow_event &e = batch[i];
    auto push = [&](rd_kafka_vtype_t t) -> rd_kafka_vu_t & {
        rd_kafka_vu_t &vu = vus_.emplace_back();
        vu.vtype = t;
        return vu;
    };
    auto header = [&](const std::string &name, std::string_view value) {
        rd_kafka_vu_t &vu = push(RD_KAFKA_VTYPE_HEADER);
        vu.u.header.name = name.c_str();
        vu.u.header.val = value.data();
        vu.u.header.size = static_cast<ssize_t>(value.size());
    };
    vus_.clear();
    push(RD_KAFKA_VTYPE_RKT).u.rkt = slots_[i].topic;
    rd_kafka_vu_t &key = push(RD_KAFKA_VTYPE_KEY);
    key.u.mem.ptr = const_cast<char *>(e.aggregate_id.data);
    key.u.mem.size = e.aggregate_id.len;
    rd_kafka_vu_t &value = push(RD_KAFKA_VTYPE_VALUE);
    value.u.mem.ptr = const_cast<char *>(e.payload.data);
    value.u.mem.size = e.payload.len;
    // Copied: the batch's memory goes back to the source once process
    // returns, and a batch given up on (a stop) may still be in librdkafka.
    push(RD_KAFKA_VTYPE_MSGFLAGS).u.i = RD_KAFKA_MSG_F_COPY;
    push(RD_KAFKA_VTYPE_OPAQUE).u.ptr = tag(generation_, i);
    // No record timestamp from the event: Kafka's retention deletes by it,
    // and an event's timestamp is data, not truth (DESIGN.md); the broker's
    // produce time is used.
    header(id_header_, sv(e.event_id));
    header(type_header_, sv(e.event_type));
    if (!extra_headers_.empty()) {
        if (needs_event_headers_) parse_event_headers(e);
        for (size_t k = 0; k < extra_headers_.size(); ++k) {
            std::string_view v;
            if (header_value(e, k, v)) header(extra_headers_[k].name, v);
        }
    }
    for (;;) {
        rd_kafka_error_t *error = rd_kafka_produceva(rk_, vus_.data(), vus_.size());
        if (!error) break;
        const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        rd_kafka_error_destroy(error);
        if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL) fail_event(batch, i, code, "producing");
        // librdkafka's queue is full: serve reports (parked) until there is room.
        if (ctx().stop_requested()) give_up_on_stop(outstanding_);
        rd_kafka_poll(rk_, 10);
        settle_metrics();
    }
    slots_[i].state = kPending;
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

void KafkaSink::fail_event(cdcflow::Batch &batch, uint32_t i, int err, const std::string &what) {
    // Nothing more of this batch goes out; what is already in flight may
    // still land (at-least-once: the restart publishes it again).
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING);
    const cdcflow_event &e = batch[i];
    std::string kafka = err_text(err);
    if (err == RD_KAFKA_RESP_ERR__FATAL || fatal_.load()) {
        char why[512];
        rd_kafka_fatal_error(rk_, why, sizeof why);
        kafka = std::string("fatal producer error: ") + why;
    }
    std::string msg = what + " event " + base::text(sv(e.event_id), '\'') + " at position ";
    if (e.position.partition.len) msg += base::text(sv(e.position.partition)) + "@";
    msg += std::to_string(e.position.offset) + " to topic " +
           base::text(slots_[i].topic ? rd_kafka_topic_name(slots_[i].topic) : "?", '\'') +
           " failed for good: " + kafka +
           "; nothing from this batch on is committed (a restart publishes it again from the checkpoint)";
    // Reports still to come for this batch are for a batch given up on.
    ++generation_;
    outstanding_ = 0;
    settle_metrics();
    throw Error(CDCFLOW_ERR_IO, msg);
}

void KafkaSink::give_up_on_stop(size_t outstanding) {
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING);
    ++generation_; // reports still to come are for a batch given up on
    outstanding_ = 0;
    settle_metrics();
    // RETRY while stopping: the host treats it as the stop it asked for.
    throw Error(CDCFLOW_ERR_RETRY,
                "stopping while " + std::to_string(outstanding) +
                    " events wait for Kafka's acknowledgement: nothing of this batch is "
                    "committed; it is published again from the checkpoint at the next start");
}

void KafkaSink::wait_round(cdcflow::Batch &batch) {
    for (;;) {
        settle_metrics();
        if (first_permanent_ >= 0)
            fail_event(batch, static_cast<uint32_t>(first_permanent_), slots_[first_permanent_].err,
                       "delivering");
        if (fatal_.load()) {
            for (uint32_t i : todo_)
                if (slots_[i].state != kAcked) fail_event(batch, i, RD_KAFKA_RESP_ERR__FATAL, "delivering");
        }
        if (outstanding_ == 0) return;
        if (ctx().stop_requested()) {
            // A graceful stop finishes a batch whose acknowledgements are
            // on their way (giving it up would publish it again at the next
            // start); a cluster that does not answer does not hold it up.
            const auto now = std::chrono::steady_clock::now();
            if (stop_seen_ == std::chrono::steady_clock::time_point{}) stop_seen_ = now;
            if (now - stop_seen_ > std::chrono::milliseconds(kStopGraceMs)) give_up_on_stop(outstanding_);
        }
        // Parked in librdkafka's queue until a report arrives (or 100 ms,
        // to look at the stop flag).
        rd_kafka_poll(rk_, 100);
    }
}

void KafkaSink::publish(cdcflow::Batch &batch) {
    ++generation_;
    first_permanent_ = -1;
    outstanding_ = 0;
    int64_t backoff = backoff_ms_;
    for (uint32_t round = 1;; ++round) {
        for (size_t n = 0; n < todo_.size(); ++n) {
            produce_one(batch, todo_[n]);
            // Serve the reports that are in as we go: librdkafka frees each
            // acknowledged message there, and freeing them interleaved with
            // the next messages' allocations reuses the same memory; freed
            // all at once at the end of a large batch, glibc spent a third
            // of this thread's time coalescing them (perf, 1M events).
            if ((n & 255) == 255) rd_kafka_poll(rk_, 0);
        }
        produced_.add(static_cast<int64_t>(todo_.size()));
        wait_round(batch);
        todo_.clear();
        for (uint32_t i = 0; i < slots_.size(); ++i)
            if (slots_[i].state == kFailed) todo_.push_back(i);
        if (todo_.empty()) return;
        // Failed for now (timed out, the cluster unreachable): produced
        // again in the original order, never skipped; nothing is committed
        // meanwhile.
        const cdcflow_event &first = batch[todo_[0]];
        ctx().warn(std::to_string(todo_.size()) + " events not acknowledged by Kafka (first: event " +
                   base::text(sv(first.event_id), '\'') + " at position " +
                   std::to_string(first.position.offset) + ": " + err_text(slots_[todo_[0]].err) +
                   "); producing them again in " + std::to_string(backoff) + " ms (round " +
                   std::to_string(round + 1) + ")");
        retries_.add(static_cast<int64_t>(todo_.size()));
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(backoff);
        for (;;) {
            if (ctx().stop_requested()) give_up_on_stop(todo_.size());
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  until - std::chrono::steady_clock::now())
                                  .count();
            if (left <= 0) break;
            rd_kafka_poll(rk_, static_cast<int>(std::min<int64_t>(left, 100)));
        }
        backoff = std::min(backoff * 2, backoff_max_ms_);
    }
}

void KafkaSink::commit(cdcflow::Batch &batch) {
    const int64_t now = base::wall_us();
    int64_t dead = 0;
    sqlite::Transaction tx(db_);
    // Still the owner? Checked under the write lock this transaction holds
    // until COMMIT, so no takeover can slip in between.
    if (fence_) fence_.check();
    for (uint32_t i = 0; i < batch.size(); ++i)
        if (batch[i].status == CDCFLOW_EVENT_REJECTED) {
            dead_letters_out_.insert(batch[i], now);
            ++dead;
        }
    // The last position of each partition in the batch, whatever the events'
    // status: skipped and dead-lettered events are done with too.
    partitions_.clear();
    for (uint32_t i = 0; i < batch.size(); ++i) {
        const cdcflow_position &p = batch[i].position;
        std::string_view part = sv(p.partition);
        auto it =
            std::find_if(partitions_.begin(), partitions_.end(), [&](auto &x) { return x.first == part; });
        if (it == partitions_.end())
            partitions_.emplace_back(part, p.offset);
        else
            it->second = p.offset;
    }
    for (const auto &[part, offset] : partitions_) {
        checkpoint_upsert_.bind(1, std::string_view(checkpoint_name_))
            .bind(2, part)
            .bind(3, offset)
            .bind(4, now);
        checkpoint_upsert_.run();
        // A checkpoint never moves back: this batch would then be a second
        // publication of events already committed. Refuse the whole batch.
        if (db_.changes() != 1)
            throw Error(CDCFLOW_ERR_INTERNAL, "checkpoint '" + checkpoint_name_ + "' is already at or past " +
                                                  std::to_string(offset) + ": refusing to move it back");
    }
    tx.commit();
    if (fence_) fence_.committed();
    dead_letters_.add(dead);
}

void KafkaSink::process(cdcflow::Batch &batch) {
    if (batch.empty()) return;
    if (!rk_) throw Error(CDCFLOW_ERR_INTERNAL, "process() before start()");
    const Signature sig{batch.raw(), batch.size(), batch[0].position.offset,
                        batch[batch.size() - 1].position.offset};
    if (!acked_ || !(*acked_ == sig)) {
        acked_.reset();
        plan(batch);
        publish(batch);
        acked_ = sig;
    }
    // A commit that fails here (a locked database) is retried by the host
    // with this same batch: acked_ then skips publishing it again.
    commit(batch);
    acked_.reset();
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

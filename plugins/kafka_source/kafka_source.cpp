#include "kafka_source.hpp"

#include "base/text.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace cdcflow::kafka {

namespace {

// An idle poll in --drain mode (the host passes wait_ms 0 there) still waits
// this long inside librdkafka, parked, between two drain checks: a drain
// that has to wait for peers must not spin.
constexpr int kParkMs = 100;
// Kafka's committed offsets and the lag figures are for monitoring: at most
// this often.
constexpr auto kCommitEvery = std::chrono::seconds(1);
constexpr auto kLagEvery = std::chrono::milliseconds(500);
// Metadata and offset look-ups of the drain check and of a replay's start.
constexpr int kLookupTimeoutMs = 5000;

// Properties that only a group member uses: left out of the replay's
// consumer, which reads partitions it assigns itself.
bool group_only(std::string_view key) {
    for (std::string_view k : {"group.id", "group.instance.id", "group.protocol.type",
                               "partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms",
                               "max.poll.interval.ms", "auto.commit.interval.ms", "enable.partition.eof"})
        if (key == k) return true;
    return false;
}

// The position a query or claim reported, per partition name.
struct Positions {
    std::unordered_map<std::string, int64_t> at;
    static void collect(void *user, const cdcflow_position *p) {
        static_cast<Positions *>(user)->at[std::string(sv(p->partition))] = p->offset;
    }
};

struct ListGuard {
    rd_kafka_topic_partition_list_t *list;
    ~ListGuard() {
        if (list) rd_kafka_topic_partition_list_destroy(list);
    }
};

} // namespace

// A replay in progress (ABI 3): a consumer outside the group, assigned the
// requested partitions from the oldest event wanted.
struct KafkaSource::Replay {
    struct P {
        std::string topic;
        int32_t partition = 0;
        int64_t end = 0; // the checkpoint: the last offset handed out
        bool done = false;
    };
    rd_kafka_t *rk = nullptr;
    std::vector<std::pair<std::string, int64_t>> request; // which request this is
    std::vector<P> parts;
    rd_kafka_message_t *held = nullptr; // read but not handed out: the batch was full

    ~Replay() {
        if (held) rd_kafka_message_destroy(held);
        if (rk) {
            rd_kafka_assign(rk, nullptr);
            rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        }
    }
    P *find(std::string_view topic, int32_t partition) {
        for (P &p : parts)
            if (p.partition == partition && p.topic == topic) return &p;
        return nullptr;
    }
    bool finished() const {
        return std::all_of(parts.begin(), parts.end(), [](const P &p) { return p.done; });
    }
};

KafkaSource::KafkaSource(const cdcflow::Configured<Settings> &cfg, cdcflow::Context ctx)
    : Source(ctx), brokers_(cfg.brokers), group_(cfg.group), id_header_(cfg.id_header),
      type_header_(cfg.type_header), poll_batch_(static_cast<size_t>(cfg.poll_batch)),
      drain_check_(cfg.drain_check_ms), replay_timeout_(cfg.replay_timeout_ms),
      close_timeout_(cfg.close_timeout_ms) {
    kafka::pin_librdkafka(); // see common/kafka_config.hpp
    if (brokers_.empty()) cfg.fail(&Settings::brokers, "must not be empty");
    if (group_.empty()) cfg.fail(&Settings::group, "must not be empty");
    if (id_header_.empty()) cfg.fail(&Settings::id_header, "must not be empty");
    if (type_header_.empty()) cfg.fail(&Settings::type_header, "must not be empty");

    // topics: one name, or a non-empty list of legal, distinct names.
    {
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        if (parser.parse(cfg.topics.text).get(doc) != simdjson::SUCCESS)
            cfg.fail(&Settings::topics, "must be a topic name or a list of topic names");
        std::vector<simdjson::dom::element> items;
        simdjson::dom::array list;
        if (doc.get_array().get(list) == simdjson::SUCCESS)
            for (simdjson::dom::element e : list)
                items.push_back(e);
        else
            items.push_back(doc);
        for (simdjson::dom::element e : items) {
            std::string_view name;
            if (e.get_string().get(name) != simdjson::SUCCESS)
                cfg.fail(&Settings::topics, "must be a topic name or a list of topic names (strings)");
            std::string reason;
            if (!name.empty() && name[0] == '^')
                cfg.fail(&Settings::topics, "topic patterns (^regex) are not supported: name each topic");
            if (!legal_topic(name, reason)) cfg.fail(&Settings::topics, reason);
            if (std::find(topics_.begin(), topics_.end(), name) != topics_.end())
                cfg.fail(&Settings::topics, "topic " + base::quoted(name) + " is listed twice");
            topics_.emplace_back(name);
        }
        if (topics_.empty()) cfg.fail(&Settings::topics, "must name at least one topic");
    }

    std::string err;
    std::optional<Properties> user = parse_properties(cfg.kafka ? cfg.kafka->text : "", err);
    if (!user) cfg.fail(&Settings::kafka, err);
    std::optional<Properties> props = consumer_properties(brokers_, group_, *user, err);
    if (!props) cfg.fail(&Settings::kafka, err);
    props_ = std::move(*props);
    // Every property librdkafka refuses is refused now, at create, naming
    // the key; the consumer itself joins the group in start().
    try {
        rd_kafka_conf_destroy(make_conf(true));
    } catch (const Error &e) {
        std::string what = e.what();
        if (what.starts_with("bootstrap.servers: ")) cfg.fail(&Settings::brokers, what.substr(19));
        if (what.starts_with("group.id: ")) cfg.fail(&Settings::group, what.substr(10));
        cfg.fail(&Settings::kafka, what);
    }

    // A partition's takeover runs inside librdkafka's rebalance callback:
    // the host commits what is in flight, the sink waits for a previous
    // owner's claim (up to settings.owner_lease_ms) and the replay rebuilds
    // the deduper (each wait for Kafka up to replay_timeout_ms). A member
    // that stays there past max.poll.interval.ms (the group's rebalance
    // timeout too) is dropped from the group and its partitions move again:
    // a claim wait and a replay that may together take longer than half of
    // it are refused here (the lease from the host, ABI 7; an older host
    // does not tell, and only the replay is checked).
    max_poll_ms_ = kDefaultMaxPollMs;
    bool max_poll_set = false; // by the kafka: map (librdkafka refused a malformed value above)
    for (const auto &[k, v] : props_)
        if (k == "max.poll.interval.ms") {
            int64_t ms = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
            if (ec == std::errc() && end == v.data() + v.size() && ms > 0)
                max_poll_ms_ = ms, max_poll_set = true;
        }
    const int64_t lease_ms = ctx.pipeline_setting("owner_lease_ms").value_or(0);
    if (lease_ms + cfg.replay_timeout_ms > max_poll_ms_ / 2) {
        std::string why = std::to_string(cfg.replay_timeout_ms);
        if (lease_ms > 0) why += " plus settings.owner_lease_ms " + std::to_string(lease_ms);
        why += " must stay well under the consumer's max.poll.interval.ms (" + std::to_string(max_poll_ms_) +
               (max_poll_set ? "" : ", librdkafka's default") +
               "), at most half of it: a partition's claim (a frozen owner's lease) and its replay run "
               "inside the rebalance callback, and a member that stays there longer is dropped from the "
               "group; lower replay_timeout_ms";
        if (lease_ms > 0) why += " or settings.owner_lease_ms";
        why += ", or raise max.poll.interval.ms under kafka:";
        // Point at the kafka: map's entry when it sets the interval (the
        // message names both), else at replay_timeout_ms.
        if (!max_poll_set) cfg.fail(&Settings::replay_timeout_ms, why);
        std::string at = cfg.location_at(&Settings::kafka, "/max.poll.interval.ms");
        throw Error(CDCFLOW_ERR_CONFIG, (at.empty() ? std::string() : at + ": ") +
                                            "kafka: max.poll.interval.ms: replay_timeout_ms " +
                                            std::move(why));
    }

    if (cfg.aggregate_type_from == "topic") {
        routing_ = RoutingPattern::parse(cfg.routing_pattern, err);
        if (!routing_) cfg.fail(&Settings::routing_pattern, err);
    } else if (cfg.aggregate_type_from.starts_with("header:") && cfg.aggregate_type_from.size() > 7) {
        type_from_header_ = cfg.aggregate_type_from.substr(7);
    } else {
        cfg.fail(&Settings::aggregate_type_from,
                 "must be topic or header:<name>, not " + base::quoted(cfg.aggregate_type_from));
    }
    format_ = cfg.value_format == "debezium_json" ? ValueFormat::debezium_json : ValueFormat::raw;

    messages_ = ctx.counter("messages", "messages read from Kafka and handed out");
    bytes_ = ctx.counter("bytes", "key and value bytes of the messages handed out");
    rebalances_ = ctx.counter("rebalances", "partition assignments and revocations by the consumer group");
    missing_id_ = ctx.counter("missing_id", "messages without the id header (the sink dead-letters them)");
}

KafkaSource::~KafkaSource() {
    closing_ = true;
    close_consumer();
    replay_.reset();
    close_probe();
}

rd_kafka_conf_t *KafkaSource::make_conf(bool group_member) const {
    Properties use;
    for (const auto &[k, v] : props_)
        if (group_member || !group_only(k)) use.emplace_back(k, v);
    if (!group_member) {
        // librdkafka's assign() needs a group.id, though a consumer that
        // never subscribes joins no group: a name of its own, so that it
        // is never mistaken for a member of the real group (and never
        // commits: auto commit is off).
        use.emplace_back("group.id", group_ + ".replay");
        use.emplace_back("enable.partition.eof", "true"); // the replay knows where a partition ends
    }
    std::string why;
    rd_kafka_conf_t *conf = kafka::make_conf(use, why);
    if (!conf) throw Error(CDCFLOW_ERR_CONFIG, why);
    rd_kafka_conf_set_opaque(conf, const_cast<KafkaSource *>(this));
    rd_kafka_conf_set_log_cb(conf, &KafkaSource::on_log);
    rd_kafka_conf_set_error_cb(conf, &KafkaSource::on_error);
    if (group_member) {
        rd_kafka_conf_set_rebalance_cb(conf, &KafkaSource::on_rebalance);
        // Kafka's committed offsets are for monitoring: a commit refused
        // during a rebalance (the generation moved on) loses nothing.
        rd_kafka_conf_set_offset_commit_cb(
            conf, [](rd_kafka_t *, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t *, void *) {});
    }
    return conf;
}

void KafkaSource::start() {
    if (rk_) return;
    rd_kafka_conf_t *conf = make_conf(true);
    char errstr[512];
    errstr[0] = '\0';
    rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk_) {
        rd_kafka_conf_destroy(conf); // not taken on failure
        throw Error(CDCFLOW_ERR_CONFIG,
                    "kafka: librdkafka refuses the consumer's configuration: " + base::text(errstr));
    }
    // Everything (messages, rebalances, errors) through one queue, served by
    // rd_kafka_consumer_poll on this thread.
    rd_kafka_poll_set_consumer(rk_);
    ListGuard sub{rd_kafka_topic_partition_list_new(static_cast<int>(topics_.size()))};
    for (const std::string &t : topics_)
        rd_kafka_topic_partition_list_add(sub.list, t.c_str(), RD_KAFKA_PARTITION_UA);
    if (rd_kafka_resp_err_t e = rd_kafka_subscribe(rk_, sub.list); e != RD_KAFKA_RESP_ERR_NO_ERROR)
        throw Error(CDCFLOW_ERR_CONFIG, "kafka: cannot subscribe to the topics: " + err_text(e));
    std::string names;
    for (const std::string &t : topics_)
        names += (names.empty() ? "" : ", ") + t;
    ctx().info("joining consumer group " + base::quoted(group_) + " for " + names + " (" + redacted(props_) +
               ")");
}

void KafkaSource::on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    auto *self = static_cast<KafkaSource *>(rd_kafka_opaque(rk));
    // An offset commit refused during a rebalance is expected and harmless
    // (see the offset commit callback): not a warning.
    if (fac && std::string_view(fac) == "COMMITFAIL") level = 7;
    cdcflow_log_level l;
    std::string text;
    if (self && log_line(level, fac, buf, l, text)) self->ctx().log(l, text);
}

void KafkaSource::on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    auto *self = static_cast<KafkaSource *>(opaque);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        self->fatal_.store(true); // poll fails with it (this may be librdkafka's thread)
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        self->ctx().error(std::string("librdkafka: fatal consumer error: ") + why);
        return;
    }
    // Transient (brokers down, a timeout): librdkafka retries by itself.
    self->ctx().warn(std::string("librdkafka: ") + rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)) +
                     ": " + (reason ? reason : ""));
}

KafkaSource::Part &KafkaSource::part(std::string_view topic, int32_t partition) {
    std::string name = partition_name(topic, partition);
    auto it = parts_.find(name);
    if (it != parts_.end()) return *it->second;
    auto p = std::make_unique<Part>();
    p->name = std::move(name);
    p->topic = std::string(topic);
    p->partition = partition;
    std::string_view type;
    if (routing_ && routing_->extract(topic, type))
        p->aggregate_type = std::string(type);
    else if (routing_)
        ctx().warn("topic " + base::quoted(topic) +
                   " does not match routing_pattern: its events have an empty "
                   "aggregate type (a validator rejects them)");
    Part &ref = *p;
    parts_.emplace(ref.name, std::move(p));
    return ref;
}

KafkaSource::Part *KafkaSource::find_part(std::string_view name) {
    auto it = parts_.find(std::string(name));
    return it == parts_.end() ? nullptr : it->second.get();
}

KafkaSource::Part &KafkaSource::part_of(const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (last_part_ && last_part_->partition == m->partition && last_part_->topic == topic) return *last_part_;
    last_part_ = &part(topic, m->partition);
    return *last_part_;
}

std::vector<std::string> KafkaSource::assigned() const {
    std::vector<std::string> out;
    for (const auto &[name, p] : parts_)
        if (p->assigned) out.push_back(name);
    std::sort(out.begin(), out.end());
    return out;
}

// ---- Rebalances ----------------------------------------------------------

void KafkaSource::on_rebalance(rd_kafka_t *, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                               void *opaque) {
    // Never throw through librdkafka's C frames: a failure is kept for poll.
    auto *self = static_cast<KafkaSource *>(opaque);
    try {
        self->rebalance(err, parts);
    } catch (const Error &e) {
        self->remember(e.status(), e.what());
    } catch (const std::exception &e) {
        self->remember(CDCFLOW_ERR_INTERNAL, std::string("rebalance: ") + e.what());
    } catch (...) {
        self->remember(CDCFLOW_ERR_INTERNAL, "rebalance: an unknown exception");
    }
}

void KafkaSource::rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts) {
    rebalances_.add();
    const char *protocol = rd_kafka_rebalance_protocol(rk_);
    cooperative_ = protocol && std::strcmp(protocol, "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign(parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        revoke(parts);
    } else {
        // A failed rebalance: give everything up, as librdkafka asks.
        ctx().error("consumer group rebalance failed: " + err_text(err) + "; giving every partition up");
        ListGuard all{rd_kafka_topic_partition_list_new(static_cast<int>(parts_.size()))};
        for (const auto &[name, p] : parts_)
            if (p->assigned) rd_kafka_topic_partition_list_add(all.list, p->topic.c_str(), p->partition);
        cooperative_ = false; // rd_kafka_assign(NULL) below, whatever the protocol
        revoke(all.list);
    }
}

void KafkaSource::remember(cdcflow_status st, const std::string &msg) {
    if (st == CDCFLOW_ERR_RETRY) {
        stopping_ = true; // the pipeline is stopping: poll returns
        return;
    }
    if (pending_ != CDCFLOW_OK) return; // the first failure stands
    pending_ = st;
    pending_msg_ = msg;
}

void KafkaSource::throw_pending() {
    if (fatal_.load()) {
        char why[512];
        why[0] = '\0';
        if (rk_) rd_kafka_fatal_error(rk_, why, sizeof why);
        throw Error(CDCFLOW_ERR_IO, std::string("kafka: fatal consumer error: ") + why);
    }
    if (pending_ != CDCFLOW_OK) throw Error(pending_, pending_msg_);
}

void KafkaSource::assign(rd_kafka_topic_partition_list_t *parts) {
    if (closing_ || stopping_ || pending_ != CDCFLOW_OK) {
        // Nothing more is read: the pipeline stops (its sink claims nothing).
        if (!cooperative_) rd_kafka_assign(rk_, nullptr);
        return;
    }
    std::vector<cdcflow_str> names;
    names.reserve(static_cast<size_t>(parts->cnt));
    for (int i = 0; i < parts->cnt; ++i)
        names.push_back(str(part(parts->elems[i].topic, parts->elems[i].partition).name));
    Positions got;
    if (!names.empty()) {
        cdcflow_partitions c{};
        c.struct_size = sizeof c;
        c.assigned_count = static_cast<uint32_t>(names.size());
        c.assigned = names.data();
        c.fn = &Positions::collect;
        c.user = &got;
        std::string why;
        // Blocks while the sink claims the partitions (a previous owner may
        // hold one until its lease ends) and the transforms are rebuilt.
        const auto began = Clock::now();
        cdcflow_status st = ctx().partitions_changed(c, why);
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count();
        if (took > max_poll_ms_ / 2)
            ctx().warn("taking over " + std::to_string(names.size()) + " partitions took " +
                       std::to_string(took) +
                       " ms inside the consumer group's rebalance callback, more than half of "
                       "max.poll.interval.ms (" +
                       std::to_string(max_poll_ms_) +
                       "): past it the group drops this member; raise max.poll.interval.ms (kafka:), or "
                       "lower settings.owner_lease_ms or the deduper's window_size (its replay)");
        if (st != CDCFLOW_OK) {
            remember(st, "partitions assigned by the consumer group: " + why);
            if (!cooperative_) rd_kafka_assign(rk_, nullptr);
            return;
        }
    }
    // Each partition from just after its committed position: the projection
    // database, not Kafka's committed offset, says where that is.
    ListGuard list{rd_kafka_topic_partition_list_copy(parts)};
    for (int i = 0; i < list.list->cnt; ++i) {
        rd_kafka_topic_partition_t &tp = list.list->elems[i];
        Part &p = part(tp.topic, tp.partition);
        auto it = got.at.find(p.name);
        tp.offset = it != got.at.end() ? it->second + 1 : RD_KAFKA_OFFSET_BEGINNING;
        p.assigned = true;
        // A lag series only for partitions this host reads (the drain check
        // knows every partition of the topics).
        if (!p.has_lag) {
            p.lag = ctx().lag_metric(p.name.c_str());
            p.has_lag = true;
        }
        p.next = it != got.at.end() ? it->second + 1 : -1;
        p.to_commit = -1;
        p.eof_at = -1;
    }
    if (cooperative_) {
        if (rd_kafka_error_t *e = rd_kafka_incremental_assign(rk_, list.list)) {
            std::string why = rd_kafka_error_string(e);
            rd_kafka_error_destroy(e);
            throw Error(CDCFLOW_ERR_IO, "kafka: assigning partitions failed: " + why);
        }
    } else if (rd_kafka_resp_err_t e = rd_kafka_assign(rk_, list.list); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw Error(CDCFLOW_ERR_IO, "kafka: assigning partitions failed: " + err_text(e));
    }
}

void KafkaSource::revoke(rd_kafka_topic_partition_list_t *parts) {
    const bool lost = rd_kafka_assignment_lost(rk_) != 0;
    // Messages read but not handed out: the partitions' next owner reads
    // them again from the committed position.
    drop_buffered(parts);
    std::vector<cdcflow_str> names;
    for (int i = 0; i < parts->cnt; ++i) {
        Part &p = part(parts->elems[i].topic, parts->elems[i].partition);
        if (p.assigned) names.push_back(str(p.name));
    }
    if (!closing_ && !stopping_ && pending_ == CDCFLOW_OK && !names.empty()) {
        if (lost)
            ctx().warn("the consumer group gave " + std::to_string(names.size()) +
                       " partitions of this host to others (assignment lost: e.g. this process was frozen "
                       "or cut off past session.timeout.ms); reporting them revoked");
        cdcflow_partitions c{};
        c.struct_size = sizeof c;
        c.revoked_count = static_cast<uint32_t>(names.size());
        c.revoked = names.data();
        std::string why;
        // Blocks until everything handed out is committed (while this host
        // still owns the partitions), then the sink gives them up.
        cdcflow_status st = ctx().partitions_changed(c, why);
        if (st != CDCFLOW_OK) remember(st, "partitions revoked by the consumer group: " + why);
    }
    // Kafka's committed offsets follow what the sink committed, for lag
    // tools; a lost partition's belong to its new owner now.
    if (!lost) flush_commits(true);
    for (int i = 0; i < parts->cnt; ++i) {
        Part &p = part(parts->elems[i].topic, parts->elems[i].partition);
        p.assigned = false;
        p.to_commit = -1;
        p.lag.set(0);
    }
    unassign(parts);
}

void KafkaSource::unassign(rd_kafka_topic_partition_list_t *parts) {
    if (cooperative_) {
        if (rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk_, parts)) {
            std::string why = rd_kafka_error_string(e);
            rd_kafka_error_destroy(e);
            remember(CDCFLOW_ERR_IO, "kafka: giving partitions up failed: " + why);
        }
    } else if (rd_kafka_resp_err_t e = rd_kafka_assign(rk_, nullptr); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        remember(CDCFLOW_ERR_IO, "kafka: giving partitions up failed: " + err_text(e));
    }
}

void KafkaSource::drop_buffered(const rd_kafka_topic_partition_list_t *parts) {
    size_t keep = head_;
    for (size_t i = head_; i < buffered_.size(); ++i) {
        rd_kafka_message_t *m = buffered_[i];
        const bool drop = !parts || rd_kafka_topic_partition_list_find(parts, rd_kafka_topic_name(m->rkt),
                                                                       m->partition) != nullptr;
        if (drop)
            rd_kafka_message_destroy(m);
        else
            buffered_[keep++] = m;
    }
    buffered_.resize(keep);
}

// ---- Reading -----------------------------------------------------------------

void KafkaSource::read(size_t most, int timeout_ms) {
    bool first = true;
    while (buffered_.size() - head_ < most && !stopping_ && pending_ == CDCFLOW_OK) {
        // Only the first call waits: then whatever librdkafka holds already.
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk_, first ? timeout_ms : 0);
        first = false;
        if (!m) break;
        if (m->err) {
            handle_error(m);
            rd_kafka_message_destroy(m);
            continue;
        }
        buffered_.push_back(m);
    }
}

void KafkaSource::handle_error(const rd_kafka_message_t *m) {
    const rd_kafka_resp_err_t e = m->err;
    std::string where = m->rkt ? " (" + partition_name(rd_kafka_topic_name(m->rkt), m->partition) + ")" : "";
    switch (e) {
    case RD_KAFKA_RESP_ERR__PARTITION_EOF:
        // Everything before m->offset was read (messages, or markers that
        // are never delivered): caught_up() needs to know for the markers.
        if (m->rkt) part_of(m).eof_at = m->offset;
        return;
    case RD_KAFKA_RESP_ERR__FATAL:
        fatal_.store(true);
        return;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
        remember(CDCFLOW_ERR_CONFIG, "kafka: " + err_text(e) + where);
        return;
    default:
        // Unknown topics, offsets out of range, brokers away: librdkafka
        // retries (or resets to the oldest offset left) by itself.
        ctx().warn("kafka: " + err_text(e) + where + ": " + base::text(rd_kafka_message_errstr(m)));
    }
}

bool KafkaSource::push(cdcflow::Batch &batch, const rd_kafka_message_t *m, Part &p) {
    cdcflow_event_init e = make_event_init();
    rd_kafka_headers_t *hdrs = nullptr;
    const void *v = nullptr;
    size_t n = 0;
    // Pointers into the message: batch.append copies them into the batch.
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rd_kafka_header_get_last(hdrs, id_header_.c_str(), &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
            e.event_id = cdcflow_str{static_cast<const char *>(v), n};
        if (rd_kafka_header_get_last(hdrs, type_header_.c_str(), &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
            e.event_type = cdcflow_str{static_cast<const char *>(v), n};
        if (!type_from_header_.empty() &&
            rd_kafka_header_get_last(hdrs, type_from_header_.c_str(), &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            v)
            e.aggregate_type = cdcflow_str{static_cast<const char *>(v), n};
    }
    if (type_from_header_.empty()) e.aggregate_type = str(p.aggregate_type);
    if (m->key) {
        std::string_view key(static_cast<const char *>(m->key), m->key_len);
        // JsonConverter as Debezium's key converter writes the aggregate id
        // as a JSON string (or in the envelope) too.
        if (format_ == ValueFormat::debezium_json) key = key_decoder_.decode(key);
        e.aggregate_id = str(key);
    }
    std::string_view value(m->payload ? static_cast<const char *>(m->payload) : "", m->payload ? m->len : 0);
    if (format_ == ValueFormat::debezium_json) value = decoder_.decode(value);
    e.payload = str(value);
    rd_kafka_timestamp_type_t tstype;
    const int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    // Data, not truth (DESIGN.md): a producer may write any value; one past
    // what microseconds can hold is clamped rather than overflowed.
    constexpr int64_t kMaxMs = INT64_MAX / 1000;
    e.timestamp_us = ts < 0 ? 0 : ts > kMaxMs ? kMaxMs * 1000 : ts * 1000;
    e.position = cdcflow_position{str(p.name), m->offset};
    return batch.append(e);
}

void KafkaSource::push_buffered(cdcflow::Batch &batch) {
    int64_t count = 0, bytes = 0, missing = 0;
    while (head_ < buffered_.size()) {
        rd_kafka_message_t *m = buffered_[head_];
        Part &p = part_of(m);
        const uint32_t before = batch.size();
        if (!push(batch, m, p)) break; // full: the rest goes with the next poll
        if (batch[before].event_id.len == 0) ++missing;
        p.next = m->offset + 1;
        ++count;
        bytes += static_cast<int64_t>(m->len + m->key_len);
        rd_kafka_message_destroy(m);
        buffered_[head_++] = nullptr;
    }
    if (head_ == buffered_.size()) {
        buffered_.clear();
        head_ = 0;
    } else if (head_ > 0) {
        buffered_.erase(buffered_.begin(), buffered_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
    if (count) {
        messages_.add(count);
        bytes_.add(bytes);
    }
    if (missing) {
        missing_id_.add(missing);
        if (!idle_warned_missing_id_) {
            idle_warned_missing_id_ = true;
            ctx().warn(
                "messages without the " + base::quoted(id_header_) +
                " header: handed out with an empty event id, which the sink dead-letters (is id_header "
                "right?)");
        }
    }
}

cdcflow::PollResult KafkaSource::poll(cdcflow::Batch &batch, uint32_t wait_ms) {
    if (!rk_) throw Error(CDCFLOW_ERR_INTERNAL, "poll before start");
    throw_pending();
    if (stopping_) return {};
    const size_t most = std::min<size_t>(batch.capacity(), poll_batch_);
    // Read first and hand out last: a rebalance (inside consumer_poll) needs
    // the batch still empty, and drops what was read of revoked partitions.
    // The first read waits (at most 1 ms, only when nothing is queued): a
    // consumer_poll with a timeout is what tells librdkafka that the
    // application is waiting on it, and it does not enforce
    // max.poll.interval.ms meanwhile, so a long rebalance callback (a claim
    // waiting for a frozen owner's lease, a replay) served in it does not
    // get this member dropped; with 0 the callback's time would count.
    read(most, 1);
    if (head_ == buffered_.size() && !stopping_ && pending_ == CDCFLOW_OK) {
        flush_commits(false);
        update_lag(false);
        // Only --drain asks whether everything is drained (the host passes
        // wait_ms 0 there): a following host makes no look-ups while idle
        // and has no probe consumer.
        if (wait_ms == 0 && caught_up() && drained()) return {true};
        read(most, wait_ms > 0 ? static_cast<int>(wait_ms) : kParkMs);
    }
    throw_pending();
    if (stopping_) return {};
    push_buffered(batch);
    flush_commits(false);
    update_lag(false);
    return {};
}

// ---- Drain -------------------------------------------------------------------

bool KafkaSource::caught_up() {
    for (const auto &[name, p] : parts_) {
        if (!p->assigned) continue;
        int64_t lo = -1, hi = -1;
        // Cached from the fetch responses: no request.
        if (rd_kafka_get_watermark_offsets(rk_, p->topic.c_str(), p->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            return false; // not fetched yet
        // A transaction's commit marker takes the last offset but is never
        // delivered: the consumer's end-of-partition says it was passed.
        if ((p->next >= 0 ? p->next : lo) < hi && p->eof_at < hi) return false;
    }
    return true;
}

bool KafkaSource::drained() {
    const auto now = Clock::now();
    if (now < next_drain_check_) return false;
    next_drain_check_ = now + drain_check_;
    // The look-ups go through a consumer of their own: on the group
    // member's connections they would queue behind its fetch requests,
    // which a broker holds up to fetch.wait.max.ms once the partitions are
    // read to their end (the last check took ~200 ms there, a fifth of
    // reading 1M events in tools/bench/bench_kafka_source.py).
    rd_kafka_t *probe = drain_probe();
    // Its own errors (brokers away) reach the log through its callbacks,
    // served here: nothing else polls it between two checks.
    while (rd_kafka_message_t *m = rd_kafka_consumer_poll(probe, 0))
        rd_kafka_message_destroy(m);
    // Every partition of the topics, as the cluster has them now.
    std::vector<Part *> all;
    for (const std::string &t : topics_) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(probe, t.c_str(), nullptr);
        if (!rkt) return false;
        const rd_kafka_metadata_t *md = nullptr;
        rd_kafka_resp_err_t e = rd_kafka_metadata(probe, 0, rkt, &md, kLookupTimeoutMs);
        rd_kafka_topic_destroy(rkt);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            ctx().warn("--drain: cannot read topic " + base::quoted(t) + "'s partitions: " + err_text(e));
            return false;
        }
        bool missing = md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!missing)
            for (int i = 0; i < md->topics[0].partition_cnt; ++i)
                all.push_back(&part(t, md->topics[0].partitions[i].id));
        rd_kafka_metadata_destroy(md);
        if (missing) return false; // a topic that does not exist (yet) is not drained
    }
    if (all.empty()) return true;
    // Their ends (LATEST) and starts (EARLIEST), one request each.
    auto offsets = [&](int64_t which, std::vector<int64_t> &out) {
        ListGuard list{rd_kafka_topic_partition_list_new(static_cast<int>(all.size()))};
        for (Part *p : all)
            rd_kafka_topic_partition_list_add(list.list, p->topic.c_str(), p->partition)->offset = which;
        if (rd_kafka_offsets_for_times(probe, list.list, kLookupTimeoutMs) != RD_KAFKA_RESP_ERR_NO_ERROR)
            return false;
        out.resize(all.size());
        for (size_t i = 0; i < all.size(); ++i) {
            const rd_kafka_topic_partition_t &tp = list.list->elems[i];
            if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
            out[i] = tp.offset;
        }
        return true;
    };
    std::vector<int64_t> high, low;
    if (!offsets(RD_KAFKA_OFFSET_END, high) || !offsets(RD_KAFKA_OFFSET_BEGINNING, low)) return false;
    // The committed positions in the shared store, whichever host committed
    // them (the host first commits what this one has in flight).
    std::vector<cdcflow_str> names;
    for (Part *p : all)
        names.push_back(str(p->name));
    Positions got;
    cdcflow_partitions c{};
    c.struct_size = sizeof c;
    c.query_count = static_cast<uint32_t>(names.size());
    c.query = names.data();
    c.fn = &Positions::collect;
    c.user = &got;
    std::string why;
    cdcflow_status st = ctx().partitions_changed(c, why);
    if (st == CDCFLOW_ERR_RETRY) {
        stopping_ = true;
        return false;
    }
    if (st != CDCFLOW_OK) throw Error(st, "--drain: asking for the partitions' committed positions: " + why);
    // A partition is drained when its committed position is its last
    // offset, or when only transaction markers follow it (a transactional
    // producer's, e.g. Debezium's exactly-once source: its commit marker
    // takes the last offset and is never delivered, so no position can
    // reach it), which a read past the position tells.
    std::vector<std::pair<Part *, int64_t>> check;
    for (size_t i = 0; i < all.size(); ++i) {
        if (high[i] <= low[i]) continue; // empty (or emptied by retention): nothing to read
        auto it = got.at.find(all[i]->name);
        const int64_t next = it == got.at.end() ? low[i] : std::max(it->second + 1, low[i]);
        if (next < high[i]) check.emplace_back(all[i], next);
    }
    return check.empty() || only_markers_left(check);
}

rd_kafka_t *KafkaSource::drain_probe() {
    if (probe_) return probe_;
    rd_kafka_conf_t *conf = make_conf(false); // outside the group, enable.partition.eof
    char errstr[512];
    errstr[0] = '\0';
    probe_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!probe_) {
        rd_kafka_conf_destroy(conf);
        throw Error(CDCFLOW_ERR_CONFIG, "--drain: librdkafka refuses the consumer: " + base::text(errstr));
    }
    rd_kafka_poll_set_consumer(probe_);
    return probe_;
}

bool KafkaSource::only_markers_left(const std::vector<std::pair<Part *, int64_t>> &from) {
    rd_kafka_t *probe = drain_probe();
    ListGuard list{rd_kafka_topic_partition_list_new(static_cast<int>(from.size()))};
    for (const auto &[p, offset] : from)
        rd_kafka_topic_partition_list_add(list.list, p->topic.c_str(), p->partition)->offset = offset;
    if (rd_kafka_assign(probe, list.list) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    struct Unassign {
        rd_kafka_t *rk;
        ~Unassign() { rd_kafka_assign(rk, nullptr); }
    } unassign{probe};
    // The first message of each partition decides: a delivered one means
    // events are left to read; its end (with read_committed, the last stable
    // offset) reached first means only markers were left. Not decided within
    // the look-up bound (brokers away): not drained, asked again later.
    size_t open = from.size();
    std::vector<bool> done(from.size(), false);
    const auto deadline = Clock::now() + std::chrono::milliseconds(kLookupTimeoutMs);
    while (open > 0 && Clock::now() < deadline && !ctx().stop_requested()) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(probe, 50);
        if (!m) continue;
        size_t i = 0;
        while (i < from.size() && !(m->rkt && from[i].first->partition == m->partition &&
                                    from[i].first->topic == rd_kafka_topic_name(m->rkt)))
            ++i;
        const rd_kafka_resp_err_t e = m->err;
        rd_kafka_message_destroy(m);
        if (i == from.size() || done[i]) continue;
        if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            done[i] = true;
            --open;
            continue;
        }
        return false; // a message to read, or a failure to read one
    }
    return open == 0;
}

// ---- Offsets and lag -----------------------------------------------------

void KafkaSource::committed(std::span<const cdcflow_position> positions) {
    for (const cdcflow_position &pos : positions)
        if (Part *p = find_part(sv(pos.partition)); p && p->assigned)
            p->to_commit = std::max(p->to_commit, pos.offset);
    flush_commits(false);
}

void KafkaSource::flush_commits(bool force) {
    if (!rk_) return;
    const auto now = Clock::now();
    if (!force && now < next_commit_) return;
    next_commit_ = now + kCommitEvery;
    ListGuard list{nullptr};
    for (auto &[name, p] : parts_) {
        if (!p->assigned || p->to_commit < 0) continue;
        if (!list.list) list.list = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(list.list, p->topic.c_str(), p->partition)->offset =
            p->to_commit + 1;
        p->to_commit = -1;
    }
    // Asynchronous, for monitoring only: a failure loses nothing (the
    // positions that count are in the projection database).
    if (list.list) rd_kafka_commit(rk_, list.list, 1);
}

void KafkaSource::update_lag(bool force) {
    const auto now = Clock::now();
    if (!force && now < next_lag_) return;
    next_lag_ = now + kLagEvery;
    for (auto &[name, p] : parts_) {
        if (!p->assigned) continue;
        int64_t lo = -1, hi = -1;
        // Cached from the fetch responses: no request.
        if (rd_kafka_get_watermark_offsets(rk_, p->topic.c_str(), p->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        const int64_t next = p->next >= 0 ? p->next : std::max<int64_t>(lo, 0);
        p->lag.set(std::max<int64_t>(0, hi - next));
    }
}

// ---- Replay --------------------------------------------------------------

bool KafkaSource::replay(cdcflow_replay &req, cdcflow::Batch &batch) {
    if (req.position_count == 0) {
        replay_.reset();
        return true;
    }
    std::vector<std::pair<std::string, int64_t>> request;
    for (uint32_t i = 0; i < req.position_count; ++i)
        request.emplace_back(std::string(sv(req.positions[i].partition)), req.positions[i].offset);
    if (!replay_ || replay_->request != request) {
        replay_.reset();
        auto r = std::make_unique<Replay>();
        r->request = std::move(request);
        rd_kafka_conf_t *conf = make_conf(false);
        char errstr[512];
        errstr[0] = '\0';
        r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
        if (!r->rk) {
            rd_kafka_conf_destroy(conf);
            throw Error(CDCFLOW_ERR_CONFIG, "replay: librdkafka refuses the consumer: " + base::text(errstr));
        }
        rd_kafka_poll_set_consumer(r->rk);
        ListGuard list{rd_kafka_topic_partition_list_new(static_cast<int>(r->request.size()))};
        for (const auto &[name, end] : r->request) {
            Replay::P p;
            if (!split_partition_name(name, p.topic, p.partition))
                throw Error(CDCFLOW_ERR_INTERNAL,
                            "replay: " + base::quoted(name) + " is not a topic/partition");
            p.end = end;
            r->parts.push_back(p);
            rd_kafka_topic_partition_list_add(list.list, p.topic.c_str(), p.partition)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        }
        // Where each partition starts now (retention may have removed the
        // oldest events), in one request.
        if (rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(r->rk, list.list, kLookupTimeoutMs);
            e != RD_KAFKA_RESP_ERR_NO_ERROR)
            throw Error(CDCFLOW_ERR_RETRY, "replay: cannot read where the partitions start: " + err_text(e));
        const uint64_t want = req.max_events;
        for (int i = 0; i < list.list->cnt; ++i) {
            rd_kafka_topic_partition_t &tp = list.list->elems[i];
            Replay::P &p = r->parts[static_cast<size_t>(i)];
            if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR)
                throw Error(CDCFLOW_ERR_RETRY, "replay: cannot read where " +
                                                   partition_name(p.topic, p.partition) +
                                                   " starts: " + err_text(tp.err));
            const int64_t low = std::max<int64_t>(tp.offset, 0);
            // The oldest event asked for: max_events before the position.
            const int64_t wanted =
                want > static_cast<uint64_t>(p.end) ? 0 : p.end + 1 - static_cast<int64_t>(want);
            if (wanted < low) {
                req.truncated = 1;
                req.truncated_by = "topic's retention (retention.ms, retention.bytes)";
            }
            tp.offset = std::max(wanted, low);
            p.done = tp.offset > p.end;
        }
        if (rd_kafka_resp_err_t e = rd_kafka_assign(r->rk, list.list); e != RD_KAFKA_RESP_ERR_NO_ERROR)
            throw Error(CDCFLOW_ERR_IO, "replay: assigning partitions failed: " + err_text(e));
        replay_ = std::move(r);
    }
    Replay &r = *replay_;
    auto deadline = Clock::now() + replay_timeout_;
    while (!r.finished()) {
        rd_kafka_message_t *m = r.held;
        r.held = nullptr;
        if (!m) {
            // Hand out what this call has before waiting for more.
            m = rd_kafka_consumer_poll(r.rk, batch.empty() ? 100 : 0);
        }
        if (!m) {
            if (!batch.empty() || ctx().stop_requested()) return false;
            if (Clock::now() > deadline) {
                std::string open;
                for (const Replay::P &p : r.parts)
                    if (!p.done) open += (open.empty() ? "" : ", ") + partition_name(p.topic, p.partition);
                throw Error(CDCFLOW_ERR_IO, "replay: no message from Kafka for " +
                                                std::to_string(replay_timeout_.count()) +
                                                " ms (replay_timeout_ms) while reading " + open);
            }
            continue;
        }
        deadline = Clock::now() + replay_timeout_;
        Replay::P *p = m->rkt ? r.find(rd_kafka_topic_name(m->rkt), m->partition) : nullptr;
        if (m->err) {
            const rd_kafka_resp_err_t e = m->err;
            const std::string msg = base::text(rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            // The partition's end came before its position (e.g. the last
            // offsets were transaction markers): nothing more to replay there.
            if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (p) p->done = true;
                continue;
            }
            throw Error(CDCFLOW_ERR_RETRY, "replay: kafka: " + err_text(e) + ": " + msg);
        }
        if (!p || p->done || m->offset > p->end) {
            // Never past the position: those events were not committed.
            if (p && m->offset > p->end) p->done = true;
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!push(batch, m, part(p->topic, p->partition))) {
            r.held = m; // full: first in the next call
            return false;
        }
        if (m->offset >= p->end) p->done = true;
        rd_kafka_message_destroy(m);
    }
    replay_.reset();
    return true;
}

// ---- Stop --------------------------------------------------------------------

void KafkaSource::stop() {
    closing_ = true;
    flush_commits(true);
    close_consumer();
    replay_.reset();
    close_probe();
}

void KafkaSource::close_probe() noexcept {
    if (!probe_) return;
    rd_kafka_destroy_flags(probe_, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    probe_ = nullptr;
}

void KafkaSource::close_consumer() noexcept {
    if (!rk_) return;
    closing_ = true; // the revoke callback only unassigns: the pipeline is gone
    drop_buffered(nullptr);
    buffered_.clear();
    head_ = 0;
    // Leave the group cleanly (its partitions go to the others at once),
    // but not for longer than close_timeout_ms: the group's session
    // timeout frees them anyway.
    bool closed = false;
    if (rd_kafka_queue_t *q = rd_kafka_queue_new(rk_)) {
        if (rd_kafka_error_t *e = rd_kafka_consumer_close_queue(rk_, q)) {
            rd_kafka_error_destroy(e);
        } else {
            // Served as events, not callbacks: messages still on their way
            // land in this queue too, and serving those as callbacks is a
            // librdkafka assertion (an abort). A rebalance (the revocation
            // that leaving brings) goes to rebalance(), which only
            // unassigns now (closing_).
            const auto deadline = Clock::now() + close_timeout_;
            while (!(closed = rd_kafka_consumer_closed(rk_) != 0) && Clock::now() < deadline) {
                rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 50);
                if (!ev) continue;
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                    try {
                        rebalance(rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev));
                    } catch (...) {
                        // Leaving anyway: nothing is reported any more.
                    }
                }
                rd_kafka_event_destroy(ev);
            }
        }
        rd_kafka_queue_destroy(q);
    }
    left_cleanly_ = closed;
    rd_kafka_destroy_flags(rk_, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    rk_ = nullptr;
    last_part_ = nullptr;
}

} // namespace cdcflow::kafka

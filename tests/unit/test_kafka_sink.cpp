// kafka_sink: its pure parts (librdkafka properties and the contract's
// refusals, secrets, topic names, extra headers), and the stage driven over
// the host API table against librdkafka's in-process mock cluster: what is
// published, what is committed (dead letters, checkpoint) and when nothing
// is (a permanent failure, a stop while Kafka is away).
#include "plugin_harness.hpp"

#include "common/sqlite.hpp"
#include "kafka_sink/kafka_sink.hpp"
#include "kafka_sink/sink_config.hpp"

#include <doctest/doctest.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

using cdcflow::kafka::HeaderSpec;
using cdcflow::kafka::KafkaSink;
using cdcflow::kafka::Properties;
using cdcflow::kafka::TopicPattern;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;
namespace kafka = cdcflow::kafka;
namespace sqlite = cdcflow::sqlite;

namespace {

std::map<std::string, std::string> as_map(const Properties &p) {
    std::map<std::string, std::string> m;
    for (const auto &[k, v] : p)
        m[k] = v; // later wins, as librdkafka applies them
    return m;
}

std::string refusal(const std::string &json, bool allow_duplicates = false) {
    std::string err;
    std::optional<Properties> user = kafka::parse_properties(json, err);
    if (!user) return err;
    std::optional<Properties> props = kafka::producer_properties("b:9092", *user, allow_duplicates, err);
    return props ? std::string() : err;
}

} // namespace

TEST_CASE("kafka_sink: properties are the sink's defaults, then the kafka map over them") {
    std::string err;
    auto user = kafka::parse_properties(
        R"({"linger.ms": 50, "compression.codec": "lz4", "enable.idempotence": true})", err);
    REQUIRE(user);
    CHECK(as_map(*user)["linger.ms"] == "50"); // a number as librdkafka takes it
    CHECK(as_map(*user)["enable.idempotence"] == "true");
    auto props = kafka::producer_properties("h1:9092,h2:9092", *user, false, err);
    REQUIRE(props);
    auto m = as_map(*props);
    CHECK(m["bootstrap.servers"] == "h1:9092,h2:9092");
    CHECK(m["acks"] == "all");
    CHECK(m["partitioner"] == "murmur2_random");
    CHECK(m["linger.ms"] == "50");
    CHECK(m["compression.codec"] == "lz4");
    // Nothing set: the defaults alone.
    auto none = kafka::parse_properties("null", err);
    REQUIRE(none);
    CHECK(none->empty());
}

TEST_CASE("kafka_sink: properties that would break the contract are refused, naming the key, no value") {
    CHECK(refusal(R"({"enable.idempotence": false})").starts_with("enable.idempotence: must stay true"));
    CHECK(refusal(R"({"enable.idempotence": false})", true).empty()); // allow_duplicates_on_retry
    CHECK(refusal(R"({"acks": 1})").starts_with("acks: must be all"));
    CHECK(refusal(R"({"request.required.acks": "0"})").starts_with("request.required.acks:"));
    CHECK(refusal(R"({"acks": -1})").empty());
    CHECK(refusal(R"({"partitioner": "random"})").starts_with("partitioner:"));
    CHECK(refusal(R"({"partitioner": "consistent_random"})").empty());
    CHECK(refusal(R"({"bootstrap.servers": "x:1"})")
              .starts_with("bootstrap.servers: set the sink's `brokers`"));
    CHECK(refusal(R"({"transactional.id": "t"})").starts_with("transactional.id:"));
    CHECK(refusal(R"({"delivery.report.only.error": true})").starts_with("delivery.report.only.error:"));
    CHECK(refusal(R"({"debug": "broker,conf"})").starts_with("debug:"));
    CHECK(refusal(R"({"debug": "broker,CONF"})").starts_with("debug:")); // librdkafka ignores case
    CHECK(refusal(R"({"debug": "All"})").starts_with("debug:"));
    CHECK(refusal(R"({"debug": "broker,msg"})").empty());
    CHECK(refusal(R"({"dr_msg_cb": "x"})") == "dr_msg_cb: set by the sink itself");
    CHECK(refusal(R"({"log_cb": "x"})") == "log_cb: set by the sink itself");
    // A value that is not a scalar: the key is named, the value is not shown.
    std::string e = refusal(R"({"sasl.password": {"hunter2": 1}})");
    CHECK(e.starts_with("sasl.password: must be a string"));
    CHECK(e.find("hunter2") == std::string::npos);
    CHECK(refusal(R"(["a"])").find("map") != std::string::npos);
}

TEST_CASE("kafka_config: secret keys") {
    for (const char *k : {"sasl.password", "ssl.key.password", "ssl.key.pem", "ssl.keystore.password",
                          "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "my.secret.thing"})
        CHECK_MESSAGE(kafka::secret_key(k), k);
    for (const char *k : {"linger.ms", "sasl.username", "ssl.ca.location", "sasl.mechanisms"})
        CHECK_MESSAGE(!kafka::secret_key(k), k);
}

TEST_CASE("kafka_config: librdkafka's log lines as a stage logs them, a configuration dump never") {
    cdcflow_log_level l = CDCFLOW_LOG_DEBUG;
    std::string text;
    CHECK_FALSE(kafka::log_line(7, "CONF", "sasl.password = hunter2", l, text));
    CHECK(text.empty());
    REQUIRE(kafka::log_line(3, "BROKER", "down", l, text));
    CHECK(l == CDCFLOW_LOG_ERROR);
    CHECK(text == "librdkafka: BROKER: down");
    CHECK((kafka::log_line(4, "X", "", l, text) && l == CDCFLOW_LOG_WARN));
    CHECK((kafka::log_line(6, "X", "", l, text) && l == CDCFLOW_LOG_INFO));
    CHECK((kafka::log_line(7, nullptr, nullptr, l, text) && l == CDCFLOW_LOG_DEBUG));
    CHECK(text == "librdkafka: : ");
}

TEST_CASE("kafka_config: topic names follow Kafka's rule") {
    std::string why;
    CHECK(kafka::legal_topic("outbox.event.Account", why));
    CHECK(kafka::legal_topic("a-b_c.D9", why));
    CHECK(kafka::legal_topic(std::string(249, 'x'), why));
    CHECK(!kafka::legal_topic(std::string(250, 'x'), why));
    CHECK(why.find("249") != std::string::npos);
    CHECK(!kafka::legal_topic("", why));
    CHECK(!kafka::legal_topic(".", why));
    CHECK(!kafka::legal_topic("..", why));
    CHECK(!kafka::legal_topic("outbox.event.Bank Account", why));
    CHECK(why ==
          "topic 'outbox.event.Bank Account' has a character Kafka does not allow in a topic name (only "
          "a-z A-Z 0-9 . _ -)");
    // Untrusted bytes are escaped in the reason, which stays one line.
    CHECK(!kafka::legal_topic("a\nb\xff", why));
    CHECK(why.find('\n') == std::string::npos);
    CHECK(why.find("\\x0a") != std::string::npos);
}

TEST_CASE("kafka_sink: the topic pattern substitutes the aggregate type") {
    std::string err, out;
    auto p = TopicPattern::parse("outbox.event.{aggregatetype}", err);
    REQUIRE(p);
    CHECK(!p->constant());
    p->render("Account", out);
    CHECK(out == "outbox.event.Account");
    p->render("", out);
    CHECK(out == "outbox.event.");
    auto twice = TopicPattern::parse("{aggregatetype}-{aggregatetype}", err);
    REQUIRE(twice);
    twice->render("A", out);
    CHECK(out == "A-A");
    auto fixed = TopicPattern::parse("events", err);
    REQUIRE(fixed);
    CHECK(fixed->constant());
    fixed->render("Account", out);
    CHECK(out == "events");
    CHECK(!TopicPattern::parse("outbox.{type}", err));
    CHECK(err.find("{aggregatetype}") != std::string::npos);
    CHECK(!TopicPattern::parse("bad topic", err)); // constant and illegal: refused at create
    CHECK(err.find("'bad topic'") != std::string::npos);
}

TEST_CASE("kafka_sink: extra headers name an event field") {
    std::string err;
    auto h = kafka::parse_headers(
        R"({"aggtype": "aggregatetype", "key": "aggregateid", "ts": "timestamp", "trace": "header.traceparent"})",
        err);
    REQUIRE(h);
    REQUIRE(h->size() == 4);
    CHECK((*h)[0].name == "aggtype");
    CHECK((*h)[0].field == HeaderSpec::Field::aggregatetype);
    CHECK((*h)[1].field == HeaderSpec::Field::aggregateid);
    CHECK((*h)[2].field == HeaderSpec::Field::timestamp);
    CHECK((*h)[3].field == HeaderSpec::Field::event_header);
    CHECK((*h)[3].key == "traceparent");
    CHECK(!kafka::parse_headers(R"({"x": "payload"})", err));
    CHECK(err.find("'x'") != std::string::npos);
    CHECK(!kafka::parse_headers(R"({"x": "header."})", err));
    CHECK(!kafka::parse_headers(R"({"x": 3})", err));
    CHECK(!kafka::parse_headers(R"(["x"])", err));
}

TEST_CASE("kafka_sink: delivery errors that may recover are retried, the others stop") {
    CHECK(kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT));
    CHECK(kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION));
    CHECK(kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR__TRANSPORT));
    CHECK(!kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE));
    CHECK(!kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED));
    CHECK(!kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
    CHECK(!kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR__FATAL));
    CHECK(!kafka::retriable_delivery_error(RD_KAFKA_RESP_ERR_INVALID_MSG));
}

namespace {

// librdkafka's mock cluster in this process (the e2e tests use the
// cdcflow-kafka-mock tool instead).
struct MockCluster {
    rd_kafka_t *rk = nullptr;
    rd_kafka_mock_cluster_t *mc = nullptr;
    std::string bootstrap;
    explicit MockCluster(int partitions = 4) {
        char err[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
        REQUIRE(rk);
        mc = rd_kafka_mock_cluster_new(rk, 1);
        REQUIRE(mc);
        bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
        rd_kafka_mock_topic_create(mc, "outbox.event.Account", partitions, 1);
    }
    ~MockCluster() {
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
    }
    // key \t value \t headers of every message of `topic`, per partition in order.
    std::vector<std::string> read(const std::string &topic, int partitions) {
        std::vector<std::string> out;
        char err[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
        rd_kafka_conf_set(conf, "group.id", "test", err, sizeof err);
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
        rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
        REQUIRE(c);
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
        for (int p = 0; p < partitions; ++p)
            rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(c, parts);
        rd_kafka_topic_partition_list_destroy(parts);
        // To the end of every partition (partition EOF events), or 20 s.
        int eof = 0;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (eof < partitions && std::chrono::steady_clock::now() < until) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
            if (!m) continue;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                ++eof;
            } else if (m->err) {
                MESSAGE("consumer: " << rd_kafka_message_errstr(m));
            } else {
                std::string line(static_cast<const char *>(m->key), m->key_len);
                line.append("\t").append(static_cast<const char *>(m->payload), m->len).append("\t");
                rd_kafka_headers_t *hdrs = nullptr;
                if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                    const char *name;
                    const void *val;
                    size_t size;
                    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; ++i)
                        line.append(name)
                            .append("=")
                            .append(static_cast<const char *>(val), size)
                            .append(";");
                }
                out.push_back(line);
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
        return out;
    }
};

struct Sink {
    StageHarness h;
    std::unique_ptr<KafkaSink> sink;
    Sink(std::initializer_list<std::pair<const char *, Val>> cfg)
        : h("publish", cdcflow::test::declared<KafkaSink>(), cfg),
          sink(cdcflow::test::make_stage<KafkaSink>(h)) {}
    uint64_t accepted = 0;
    std::atomic<bool> stopping{false};
    void request_stop() {
        stopping.store(true);
        h.request_stop();
    }
    void process(cdcflow_batch &b) {
        cdcflow::Batch view = h.view(b);
        sink->process(view);
        ++accepted;
    }
    // Settles as the host does: until every accepted call is durable, a
    // stop makes no progress, or 20 s pass. Returns the durable count.
    uint64_t settle_all() {
        uint64_t durable = 0;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (durable < accepted && std::chrono::steady_clock::now() < until) {
            const uint64_t before = durable;
            durable = sink->settle(100);
            CHECK(durable >= before); // never decreases
            if (durable == before && stopping.load()) break;
        }
        return durable;
    }
    int64_t checkpoint() {
        int64_t at = -1;
        sink->checkpoint([&](const cdcflow_position &p) { at = p.offset; });
        return at;
    }
};

EventSpec event(int64_t offset, std::string account, std::string type = "MoneyDeposited") {
    EventSpec e;
    e.id = "ev-";
    e.id += std::to_string(offset);
    e.aggregate_id = std::move(account);
    e.type = std::move(type);
    e.payload = "{\"amount\": \"";
    e.payload.append(std::to_string(offset)).append(".00\"}");
    e.timestamp_us = 1714564800000000 + offset;
    e.offset = offset;
    return e;
}

std::string config_error(std::initializer_list<std::pair<const char *, Val>> cfg) {
    try {
        Sink s(cfg);
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_CONFIG);
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("kafka_sink: config errors at create name the key and never print a secret's value") {
    TempDir dir("ksink_cfg");
    const std::string db = dir.file("o.db");
    // librdkafka refuses a value: its own message for a plain key...
    std::string e = config_error(
        {{"database", db}, {"brokers", "b:1"}, {"kafka", Val::json(R"({"linger.ms": "soon"})")}});
    CHECK(e.find("kafka: linger.ms: ") != std::string::npos);
    // ...ours for a secret one (librdkafka's quotes the value).
    e = config_error(
        {{"database", db},
         {"brokers", "b:1"},
         {"kafka", Val::json(R"({"ssl.key.password": "hunter2", "ssl.key.pem": "hunter3", "x": 1})")}});
    CHECK(e.find("kafka: x: not a librdkafka property") != std::string::npos);
    e = config_error({{"database", db},
                      {"brokers", "b:1"},
                      {"kafka", Val::json(R"({"sasl.mechanisms": "PLAIN", "sasl.password": "hunter2",
                                              "enable.idempotence": "maybe-hunter2"})")}});
    CHECK(e.find("enable.idempotence") != std::string::npos);
    CHECK(e.find("hunter2") == std::string::npos);
    e = config_error({{"database", db}, {"brokers", "b:1"}, {"kafka", Val::json(R"({"acks": "1"})")}});
    CHECK(e.find("kafka: acks: must be all") != std::string::npos);
    e = config_error({{"database", db}, {"brokers", "b:1"}, {"topic", "outbox {type}"}});
    CHECK(e.find("topic: only {aggregatetype}") != std::string::npos);
    e = config_error({{"database", db}, {"brokers", "b:1"}, {"headers", Val::json(R"({"h": "nope"})")}});
    CHECK(e.find("headers: 'h': unknown event field") != std::string::npos);
    e = config_error({{"database", db}, {"brokers", ""}});
    CHECK(e.find("brokers: must not be empty") != std::string::npos);
    e = config_error({{"database", db}, {"brokers", "b:1"}, {"create_schema", false}});
    CHECK(e.find("does not exist") != std::string::npos);
    // A valid configuration creates without a broker: nothing connects before start.
    CHECK(config_error({{"database", db}, {"brokers", "127.0.0.1:1"}}).empty());
}

TEST_CASE("kafka_sink: a batch is published with the contract, then its dead letters and checkpoint commit") {
    MockCluster k(4);
    TempDir dir("ksink_pub");
    const std::string db = dir.file("o.db");
    Sink s(
        {{"database", db},
         {"brokers", k.bootstrap},
         {"headers", Val::json(R"({"agg": "aggregatetype", "ts": "timestamp", "trace": "header.trace"})")}});
    s.sink->start();
    CHECK(s.checkpoint() == -1);
    cdcflow_batch raw(64);
    for (int64_t i = 1; i <= 6; ++i)
        cdcflow::test::append(raw, event(i, "acc-" + std::to_string(i % 2)));
    cdcflow::test::append(raw, [] {
        EventSpec e = event(7, "acc-x");
        e.aggregate_type = "Bank Account"; // no legal topic: a dead letter
        return e;
    }());
    cdcflow::test::append(raw, event(8, "acc-0"));
    // Rejected upstream: a dead letter, not published.
    cdcflow_ctx other{};
    other.stage_id = "validate";
    cdcflow::host::host_api()->event_reject(&other, &raw, 5, "amount is too large", 19);
    raw.events[1].headers = s.h.view(raw).copy(R"({"trace": "t-2", "n": 7})");
    s.process(raw);
    // Accepted, not committed: process does not wait for Kafka.
    CHECK(s.checkpoint() == -1);
    CHECK(s.settle_all() == 1);
    CHECK(s.checkpoint() == 8);
    CHECK(s.h.metric("acked") == 6);
    CHECK(s.h.metric("dead_letters") == 2);

    std::vector<std::string> got = k.read("outbox.event.Account", 4);
    REQUIRE(got.size() == 6);
    std::map<std::string, std::vector<std::string>> by_key;
    for (const std::string &line : got)
        by_key[line.substr(0, line.find('\t'))].push_back(line);
    REQUIRE(by_key["acc-1"].size() == 3);
    // Per key, the outbox's order; the headers as configured.
    CHECK(by_key["acc-1"][0] ==
          "acc-1\t{\"amount\": \"1.00\"}\tid=ev-1;type=MoneyDeposited;agg=Account;ts=1714564800000001;");
    CHECK(by_key["acc-1"][1] == "acc-1\t{\"amount\": \"3.00\"}\tid=ev-3;type=MoneyDeposited;agg=Account;ts="
                                "1714564800000003;");
    CHECK(by_key["acc-0"].size() == 3); // 2, 4, 8 (6 was rejected)
    CHECK(by_key["acc-0"][0].find("id=ev-2;type=MoneyDeposited;agg=Account;ts=1714564800000002;trace=t-2;") !=
          std::string::npos);
    CHECK(by_key["acc-0"][2].find("id=ev-8;") != std::string::npos);

    sqlite::Db conn(db, SQLITE_OPEN_READONLY);
    sqlite::Stmt dl(conn, "SELECT event_id, stage, reason FROM dead_letters ORDER BY seq");
    REQUIRE(dl.step());
    CHECK(dl.text(0) == "ev-6");
    CHECK(dl.text(1) == "validate");
    REQUIRE(dl.step());
    CHECK(dl.text(0) == "ev-7");
    CHECK(dl.text(1) == "publish");
    CHECK(std::string(dl.text(2)).find("'outbox.event.Bank Account'") != std::string::npos);
    CHECK(!dl.step());
    s.sink->stop();
}

TEST_CASE("kafka_sink: a permanent delivery failure fails the batch naming the event; nothing committed") {
    MockCluster k(2);
    TempDir dir("ksink_perm");
    const std::string db = dir.file("o.db");
    Sink s({{"database", db}, {"brokers", k.bootstrap}});
    s.sink->start();
    cdcflow_batch b(8);
    cdcflow::test::append(b, event(1, "acc-1"));
    cdcflow::test::append(b, event(2, "acc-1"));
    // Every Produce request for a while: not authorized (permanent).
    std::vector<rd_kafka_resp_err_t> errs(20, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    rd_kafka_mock_push_request_errors_array(k.mc, 0 /* Produce */, errs.size(), errs.data());
    s.process(b); // accepted: the failure comes with the acknowledgements
    try {
        s.settle_all();
        FAIL("no error");
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_IO);
        const std::string msg = e.what();
        CHECK(msg.find("event 'ev-1' at position 1 to topic 'outbox.event.Account'") != std::string::npos);
        INFO(msg);
        // Kafka's error by name or, once the gap-less guarantee made it
        // fatal, by librdkafka's text.
        CHECK((msg.find("TOPIC_AUTHORIZATION_FAILED") != std::string::npos ||
               msg.find("Topic authorization failed") != std::string::npos));
        CHECK(msg.find('\n') == std::string::npos);
    }
    CHECK(s.checkpoint() == -1);
    // Nothing more is accepted after it.
    cdcflow_batch more(8);
    cdcflow::test::append(more, event(3, "acc-2"));
    CHECK_THROWS_AS(s.process(more), cdcflow::Error);
    s.sink->stop();
}

TEST_CASE("kafka_sink: a stop while Kafka is away gives the batch up, nothing committed; a retry after a "
          "failed commit does not publish again") {
    MockCluster k(2);
    TempDir dir("ksink_stop");
    const std::string db = dir.file("o.db");
    Sink s({{"database", db}, {"brokers", k.bootstrap}});
    s.sink->start();
    {
        cdcflow_batch b(8);
        cdcflow::test::append(b, event(1, "acc-1"));
        rd_kafka_mock_broker_set_down(k.mc, 1);
        std::thread stopper([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            s.request_stop();
        });
        s.process(b); // accepted at once, Kafka away or not
        // The stop's grace passes with nothing acknowledged: no progress.
        CHECK(s.settle_all() == 0);
        CHECK(s.stopping.load());
        stopper.join();
        CHECK(s.checkpoint() == -1);
    }
    s.sink->stop();
    rd_kafka_mock_broker_set_up(k.mc, 1);

    // The commit finds the database locked: settle returns RETRY (the host
    // retries it under the stage's policy) and commits at a later call,
    // without producing the batch a second time.
    Sink t({{"database", db}, {"brokers", k.bootstrap}, {"busy_timeout_ms", 0}});
    t.sink->start();
    cdcflow_batch b(8);
    cdcflow::test::append(b, event(2, "acc-1"));
    {
        sqlite::Db locker(db, SQLITE_OPEN_READWRITE);
        locker.exec("BEGIN IMMEDIATE");
        t.process(b);
        // Acknowledged by Kafka meanwhile, but not committed.
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        // No progress while unacknowledged; RETRY once the commit is tried.
        auto busy_or_none = [&] {
            try {
                return t.sink->settle(50) == 0;
            } catch (const cdcflow::Error &e) {
                return e.status() == CDCFLOW_ERR_RETRY &&
                       std::string(e.what()).find("database is locked") != std::string::npos;
            }
        };
        while (t.h.metric("acked") < 1 && std::chrono::steady_clock::now() < until)
            CHECK(busy_or_none());
        CHECK(t.h.metric("acked") == 1);
        bool retry = false;
        try {
            t.sink->settle(50);
        } catch (const cdcflow::Error &e) {
            retry = e.status() == CDCFLOW_ERR_RETRY;
        }
        CHECK(retry);
        CHECK(t.checkpoint() == -1);
        locker.exec("ROLLBACK");
    }
    CHECK(t.settle_all() == 1);
    CHECK(t.checkpoint() == 2);
    CHECK(t.h.metric("produced") == 1);
    t.sink->stop();
}

TEST_CASE("kafka_sink: process returns before Kafka acknowledges; settle commits the acknowledged calls in "
          "order, several in one transaction") {
    MockCluster k(4);
    TempDir dir("ksink_defer");
    const std::string db = dir.file("o.db");
    Sink s({{"database", db}, {"brokers", k.bootstrap}});
    s.sink->start();
    // Kafka away: three calls accepted all the same, none durable.
    rd_kafka_mock_broker_set_down(k.mc, 1);
    std::vector<std::unique_ptr<cdcflow_batch>> batches;
    for (int64_t call = 0; call < 3; ++call) {
        batches.push_back(std::make_unique<cdcflow_batch>(8));
        for (int64_t i = 1; i <= 4; ++i)
            cdcflow::test::append(*batches.back(), event(call * 4 + i, "acc-" + std::to_string(i)));
        if (call == 1) { // a dead letter in the second call
            cdcflow_ctx other{};
            other.stage_id = "validate";
            cdcflow::host::host_api()->event_reject(&other, batches.back().get(), 0, "bad", 3);
        }
        s.process(*batches.back());
    }
    CHECK(s.sink->settle(200) == 0);
    CHECK(s.checkpoint() == -1);
    CHECK(s.h.metric("in_flight") == 11);
    // Kafka back: everything acknowledged, committed (the three calls, once
    // all three are acknowledged, possibly in one transaction).
    rd_kafka_mock_broker_set_up(k.mc, 1);
    CHECK(s.settle_all() == 3);
    CHECK(s.checkpoint() == 12);
    CHECK(s.h.metric("acked") == 11);
    // Each call waited at least the 200 ms settle above, from accepted to
    // committed.
    CHECK(s.h.metric("durable_calls") == 3);
    CHECK(s.h.metric("durable_latency_us") >= 3 * 200000);
    CHECK(s.h.metric("durable_latency_last_ms") >= 200);
    CHECK(s.h.metric("dead_letters") == 1);
    sqlite::Db conn(db, SQLITE_OPEN_READONLY);
    sqlite::Stmt dl(conn, "SELECT event_id FROM dead_letters");
    REQUIRE(dl.step());
    CHECK(dl.text(0) == "ev-5");
    CHECK(!dl.step());
    // Per key, the outbox's order across the calls.
    std::vector<std::string> got = k.read("outbox.event.Account", 4);
    REQUIRE(got.size() == 11);
    std::map<std::string, std::vector<std::string>> by_key;
    for (const std::string &line : got)
        by_key[line.substr(0, line.find('\t'))].push_back(line);
    REQUIRE(by_key["acc-2"].size() == 3);
    CHECK(by_key["acc-2"][0].find("id=ev-2;") != std::string::npos);
    CHECK(by_key["acc-2"][1].find("id=ev-6;") != std::string::npos);
    CHECK(by_key["acc-2"][2].find("id=ev-10;") != std::string::npos);
    s.sink->stop();
}

namespace {

// n events over five keys, in a batch of its own that the test frees.
std::unique_ptr<cdcflow_batch> heap_batch(int64_t n) {
    auto b = std::make_unique<cdcflow_batch>(64);
    for (int64_t i = 1; i <= n; ++i)
        cdcflow::test::append(*b, event(i, "acc-" + std::to_string(i % 5)));
    return b;
}

// What the host does once it abandoned a batch: stops the stage, then frees
// the batch. The broker then comes back: a producer that still held the
// abandoned messages would send them (they would be read back). Nothing is
// committed.
void stop_free_reconnect(Sink &s, std::unique_ptr<cdcflow_batch> &b, MockCluster &k) {
    s.sink->stop();
    b.reset();
    rd_kafka_mock_broker_set_up(k.mc, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CHECK(s.checkpoint() == -1);
}

} // namespace

// A stop with messages in flight: stop must leave librdkafka holding none
// of them (the host frees the batch next, and the unit borrows its bytes),
// and none may reach Kafka afterwards.
TEST_CASE("kafka_sink: a stop with messages in flight lets go of them before the batch is freed") {
    MockCluster k(4);
    TempDir dir("ksink_borrow");
    {
        Sink s({{"database", dir.file("o.db")}, {"brokers", k.bootstrap}});
        s.sink->start();
        rd_kafka_mock_broker_set_down(k.mc, 1);
        auto b = heap_batch(50);
        s.process(*b);
        CHECK(s.h.metric("in_flight") == 50);
        s.request_stop();
        stop_free_reconnect(s, b, k);
    }
    CHECK(k.read("outbox.event.Account", 4).empty());
}

// A process call that fails after producing part of its batch (here a stop
// while librdkafka's queue is full): what it produced is still tracked
// and must be let go of at stop as well; what it did not
// produce is never sent; nothing is committed.
TEST_CASE("kafka_sink: a call failing mid-produce leaves nothing behind once stopped") {
    MockCluster k(4);
    TempDir dir("ksink_midproduce");
    {
        Sink s({{"database", dir.file("o.db")},
                {"brokers", k.bootstrap},
                {"kafka", Val::json(R"({"queue.buffering.max.messages": 4})")}});
        s.sink->start();
        rd_kafka_mock_broker_set_down(k.mc, 1);
        auto b = heap_batch(20);
        std::thread stopper([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            s.request_stop();
        });
        cdcflow_status status = CDCFLOW_OK;
        try {
            s.process(*b); // blocks on the full queue until the stop
        } catch (const cdcflow::Error &e) {
            status = e.status();
        }
        stopper.join();
        CHECK(status == CDCFLOW_ERR_RETRY); // the stop, as the host expects it
        CHECK(s.h.metric("in_flight") == 4);
        stop_free_reconnect(s, b, k);
    }
    CHECK(k.read("outbox.event.Account", 4).empty());
}

// cdcflow-kafka-mock: a local Kafka for development and tests, with no broker
// installed. It runs librdkafka's mock cluster (rdkafka_mock.h), which speaks
// the real Kafka protocol on loopback, so the Kafka pipelines, kcat and any
// other client talk to it as to a broker.
//
//   cdcflow-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]... [--control]
//
// The first line on stdout is the bootstrap list (the mock listens on
// ephemeral ports): pass it to pipelines as CDCFLOW_KAFKA_BROKERS. It then
// runs until SIGINT or SIGTERM.
//
// --control (tests): commands are read from stdin, one per line, each
// answered with one line on stdout, "ok" or "error: <why>"; end of input
// stops the cluster (so a test that dies leaves no broker behind):
//   topic NAME PARTITIONS                  create a topic
//   errors API CODE [CODE...]              the next requests of API (a name
//                                          such as Produce, Fetch, or its
//                                          number) fail with these codes
//                                          (names such as
//                                          NOT_LEADER_FOR_PARTITION, or numbers)
//   broker-down ID | broker-up ID          take a broker off the network / back
//   rtt ID MS                              delay a broker's responses
//
// Know its limits (rdkafka_mock.c): at most 5 MiB or 100,000 message sets per
// partition are kept; older data is dropped silently. Spread large tests over
// enough partitions, or consume while producing.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

int usage(const char *why) {
    std::fprintf(
        stderr,
        "cdcflow-kafka-mock: %s\nusage: cdcflow-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]... "
        "[--control]\n",
        why);
    return 2;
}

bool parse_int(const std::string &s, long lo, long hi, long &out) {
    if (s.empty()) return false;
    char *end = nullptr;
    errno = 0;
    long v = std::strtol(s.c_str(), &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    out = v;
    return true;
}

// Kafka API keys by name (the ones a test would fail).
const std::map<std::string, int16_t> &api_keys() {
    static const std::map<std::string, int16_t> keys = {
        {"Produce", 0},
        {"Fetch", 1},
        {"ListOffsets", 2},
        {"Metadata", 3},
        {"OffsetCommit", 8},
        {"OffsetFetch", 9},
        {"FindCoordinator", 10},
        {"JoinGroup", 11},
        {"Heartbeat", 12},
        {"LeaveGroup", 13},
        {"SyncGroup", 14},
        {"InitProducerId", 22},
        {"AddPartitionsToTxn", 24},
        {"EndTxn", 26},
        {"TxnOffsetCommit", 28},
    };
    return keys;
}

bool parse_api(const std::string &s, int16_t &out) {
    auto it = api_keys().find(s);
    if (it != api_keys().end()) {
        out = it->second;
        return true;
    }
    long v;
    if (!parse_int(s, 0, 100, v)) return false;
    out = static_cast<int16_t>(v);
    return true;
}

// A Kafka error code by its protocol name (rd_kafka_err2name without the
// leading underscore) or number.
bool parse_code(const std::string &s, rd_kafka_resp_err_t &out) {
    long v;
    if (parse_int(s, -200, 200, v)) {
        out = static_cast<rd_kafka_resp_err_t>(v);
        return true;
    }
    const rd_kafka_err_desc *descs = nullptr;
    size_t n = 0;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; ++i)
        if (descs[i].name && s == descs[i].name && descs[i].code >= 0) {
            out = descs[i].code;
            return true;
        }
    return false;
}

std::string command(rd_kafka_mock_cluster_t *mc, const std::string &line) {
    std::istringstream in(line);
    std::vector<std::string> w;
    for (std::string t; in >> t;)
        w.push_back(t);
    if (w.empty()) return "error: empty command";
    long a = 0, b = 0;
    if (w[0] == "topic") {
        if (w.size() != 3 || !parse_int(w[2], 1, 100000, a)) return "error: usage: topic NAME PARTITIONS";
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, w[1].c_str(), static_cast<int>(a), 1);
        return e ? std::string("error: ") + rd_kafka_err2str(e) : "ok";
    }
    if (w[0] == "errors") {
        int16_t api;
        if (w.size() < 3 || !parse_api(w[1], api)) return "error: usage: errors API CODE [CODE...]";
        std::vector<rd_kafka_resp_err_t> codes;
        for (size_t i = 2; i < w.size(); ++i) {
            rd_kafka_resp_err_t c;
            if (!parse_code(w[i], c)) return "error: unknown error code '" + w[i] + "'";
            codes.push_back(c);
        }
        rd_kafka_mock_push_request_errors_array(mc, api, codes.size(), codes.data());
        return "ok";
    }
    if (w[0] == "broker-down" || w[0] == "broker-up") {
        if (w.size() != 2 || !parse_int(w[1], 1, 1000, a)) return "error: usage: " + w[0] + " ID";
        rd_kafka_resp_err_t e = w[0] == "broker-down"
                                    ? rd_kafka_mock_broker_set_down(mc, static_cast<int32_t>(a))
                                    : rd_kafka_mock_broker_set_up(mc, static_cast<int32_t>(a));
        return e ? std::string("error: ") + rd_kafka_err2str(e) : "ok";
    }
    if (w[0] == "rtt") {
        if (w.size() != 3 || !parse_int(w[1], 1, 1000, a) || !parse_int(w[2], 0, 600000, b))
            return "error: usage: rtt ID MS";
        rd_kafka_resp_err_t e =
            rd_kafka_mock_broker_set_rtt(mc, static_cast<int32_t>(a), static_cast<int>(b));
        return e ? std::string("error: ") + rd_kafka_err2str(e) : "ok";
    }
    return "error: unknown command '" + w[0] + "' (topic, errors, broker-down, broker-up, rtt)";
}

} // namespace

int main(int argc, char **argv) {
    long brokers = 1;
    bool control = false;
    std::vector<std::pair<std::string, long>> topics;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--brokers" && i + 1 < argc) {
            if (!parse_int(argv[++i], 1, 64, brokers)) return usage("--brokers takes 1..64");
        } else if (a == "--topic" && i + 1 < argc) {
            std::string t = argv[++i];
            auto colon = t.rfind(':');
            long parts = 0;
            if (colon == std::string::npos || colon == 0 || !parse_int(t.substr(colon + 1), 1, 100000, parts))
                return usage(("--topic takes NAME:PARTITIONS, not '" + t + "'").c_str());
            topics.emplace_back(t.substr(0, colon), parts);
        } else if (a == "--control") {
            control = true;
        } else if (a == "-h" || a == "--help") {
            usage("a local Kafka (librdkafka's mock cluster) on loopback");
            return 0;
        } else {
            return usage(("unknown argument '" + a + "'").c_str());
        }
    }

    // The mock cluster lives in (and is driven by) a client handle of its own.
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        std::fprintf(stderr, "cdcflow-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, static_cast<int>(brokers));
    if (!mc) {
        std::fprintf(stderr, "cdcflow-kafka-mock: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (auto &[name, parts] : topics) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name.c_str(), static_cast<int>(parts), 1);
        if (e) {
            std::fprintf(stderr, "cdcflow-kafka-mock: topic '%s': %s\n", name.c_str(), rd_kafka_err2str(e));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    std::printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    std::fflush(stdout);

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (control) {
        std::string line;
        while (!g_stop && std::getline(std::cin, line)) {
            std::printf("%s\n", command(mc, line).c_str());
            std::fflush(stdout);
        }
    } else {
        while (!g_stop)
            pause(); // parked: the mock's own threads do the work
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

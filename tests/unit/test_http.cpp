// The HTTP module (core/http): the strict address grammar, the Prometheus
// text reader, the server's promises (a deadline per request that trickled
// bytes do not extend, the connection cap, limits, a stop that never waits
// for a client) and the /health and /ready documents.
#include "health_json.hpp"
#include "http/address.hpp"
#include "http/client.hpp"
#include "http/prom_text.hpp"
#include "http/server.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <cmath>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using cdcflow::http::Address;
using cdcflow::http::parse_address;
using cdcflow::http::parse_prometheus;

TEST_CASE("http address: the accepted forms") {
    auto a = parse_address("127.0.0.1:9464");
    REQUIRE(a.ok());
    CHECK(a->host == "127.0.0.1");
    CHECK(a->port == 9464);
    CHECK_FALSE(a->ipv6);
    CHECK(a->text() == "127.0.0.1:9464");

    auto b = parse_address("[::1]:19484");
    REQUIRE(b.ok());
    CHECK(b->host == "::1");
    CHECK(b->ipv6);
    CHECK(b->text() == "[::1]:19484");

    // PORT and :PORT mean loopback; localhost is 127.0.0.1 (no resolver).
    for (const char *s : {"9464", ":9464", "localhost:9464"}) {
        auto c = parse_address(s);
        REQUIRE_MESSAGE(c.ok(), s);
        CHECK(c->text() == "127.0.0.1:9464");
    }
    CHECK(parse_address("0.0.0.0:0")->port == 0); // 0: an ephemeral port when listening
    CHECK(parse_address("10.1.2.3:65535")->port == 65535);
    CHECK(parse_address("[fe80::1:2]:80")->host == "fe80::1:2");
}

TEST_CASE("http address: anything else is refused with a message naming the value") {
    for (const char *s : {"127.0.0.1:19464x",
                          "127.0.0.1:70000",
                          "[::1",
                          "host:",
                          "1.2.3:80",
                          "",
                          ":",
                          "127.0.0.1:",
                          "127.0.0.1: 80",
                          "127.0.0.1:+80",
                          "127.0.0.1:-1",
                          "127.0.0.1:080000",
                          "256.1.1.1:80",
                          "01.2.3.4:80",
                          "example.com:80",
                          "::1:80",
                          "[::1]",
                          "[::1]80",
                          "[::1]:80x",
                          "[]:80",
                          "[127.0.0.1]:80",
                          "[fe80::1%eth0]:80",
                          "9464 ",
                          "x"}) {
        auto r = parse_address(s);
        CHECK_MESSAGE(!r.ok(), "accepted: '" << s << "'");
        if (r.ok()) continue;
        CHECK(r.status().code() == cdcflow::Status::Code::kInvalidArgument);
        CHECK(r.status().message().find(std::string("'") + s + "' is not an address") == 0);
    }
    // User bytes in the message are escaped: one line, valid UTF-8.
    auto r = parse_address("\x1b[2J\xff:80");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("\\x1b[2J\\xff") != std::string::npos);
    CHECK(r.status().message().find('\x1b') == std::string::npos);
    CHECK(parse_address("127.0.0.1:19464x").status().message().find("the port '19464x'") !=
          std::string::npos);
}

TEST_CASE("prometheus text: samples, labels unescaped, comments and bad lines skipped") {
    const char *page =
        "# HELP cdcflow_events_total events\n"
        "# TYPE cdcflow_events_total counter\n"
        "cdcflow_events_total{pipeline=\"p\",stage=\"src\",outcome=\"passed\"} 1000\n"
        "cdcflow_events_total{pipeline=\"p\",stage=\"a\\\"b\\\\c\\nd\",outcome=\"rejected\",} 3 "
        "1700000000000\n"
        "\n"
        "process_resident_memory_bytes 1.2345e+07\r\n"
        "  up 1\n"
        "lat_bucket{le=\"+Inf\"} +Inf\n"
        "nan_gauge NaN\n"
        "neg -0.5\n"
        "broken{a=\"x\" 1\n"     // unterminated labels
        "broken2{a=x} 1\n"       // unquoted value
        "broken3 12abc\n"        // not a number
        "broken4 1 2 3\n"        // trailing text
        "broken5 inf\n"          // only Go's spellings
        "broken6{a=\"\\q\"} 1\n" // unknown escape
        "1bad 1\n"
        "nolabel\n";
    size_t skipped = 0;
    auto s = parse_prometheus(page, &skipped);
    REQUIRE(s.size() == 7);
    CHECK(skipped == 8);
    CHECK(s[0].name == "cdcflow_events_total");
    CHECK(*s[0].label("stage") == "src");
    CHECK(*s[0].label("outcome") == "passed");
    CHECK(s[0].value == 1000);
    CHECK(s[0].label("missing") == nullptr);
    CHECK(*s[1].label("stage") == "a\"b\\c\nd");
    CHECK(s[1].value == 3);
    CHECK(s[2].name == "process_resident_memory_bytes");
    CHECK(s[2].value == 12345000);
    CHECK(s[3].name == "up");
    CHECK(std::isinf(s[4].value));
    CHECK(std::isnan(s[5].value));
    CHECK(s[6].value == -0.5);
    CHECK(parse_prometheus("").empty());
}

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace http = cdcflow::http;

// A raw client, for what a well-behaved client library will not do.
struct Raw {
    int fd = -1;
    explicit Raw(uint16_t port) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    }
    ~Raw() { close(fd); }
    bool send(std::string_view s) {
        return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
    }
    // Everything until the server closes, or `limit` passes.
    std::string read_all(std::chrono::milliseconds limit) {
        std::string out;
        auto end = Clock::now() + limit;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
            if (left <= 0) return out;
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, static_cast<int>(left)) <= 0) return out;
            char buf[4096];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return out;
            out.append(buf, static_cast<size_t>(n));
        }
    }
    // True once the server has closed the connection (EOF or reset).
    bool closed_within(std::chrono::milliseconds limit) {
        auto end = Clock::now() + limit;
        while (Clock::now() < end) {
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 50) == 1) {
                char c;
                ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
                if (n <= 0) return true;
            }
        }
        return false;
    }
};

struct Served {
    http::Server server;
    explicit Served(http::ServerOptions o) : server(std::move(o)) {
        server.route("/health", [](const http::Request &) {
            return http::Response{200, "application/json", "{\"ok\":true}"};
        });
        server.route("/boom",
                     [](const http::Request &) -> http::Response { throw std::runtime_error("boom"); });
        REQUIRE(server.start(*parse_address("127.0.0.1:0")).ok());
    }
    uint16_t port() const { return server.bound().port; }
    Address addr() const { return server.bound(); }
};

} // namespace

TEST_CASE("http server: routes, HEAD, 404, 405, 500, port 0 bound to a real port") {
    Served s({});
    CHECK(s.port() != 0);
    auto r = http::get(s.addr(), "/health?verbose=1", 2000);
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->content_type == "application/json");
    CHECK(r->body == "{\"ok\":true}");
    CHECK(http::get(s.addr(), "/nope", 2000)->status == 404);
    CHECK(http::get(s.addr(), "/boom", 2000)->status == 500);

    Raw head(s.port());
    head.send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string h = head.read_all(2000ms);
    CHECK(h.find("HTTP/1.1 200") == 0);
    CHECK(h.find("Content-Length: 11") != std::string::npos);
    CHECK(h.find("{\"ok\"") == std::string::npos);

    Raw post(s.port());
    post.send("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    std::string p = post.read_all(2000ms);
    CHECK(p.find("HTTP/1.1 405") == 0);
    CHECK(p.find("Allow: GET, HEAD") != std::string::npos);
}

TEST_CASE("http server: oversized headers get 431, garbage 400") {
    Served s({.request_timeout_ms = 2000, .header_limit = 1024});
    Raw big(s.port());
    big.send("GET /health HTTP/1.1\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
    CHECK(big.read_all(2000ms).find("HTTP/1.1 431") == 0);
    Raw bad(s.port());
    bad.send("\x01\x02 nonsense\r\n\r\n");
    CHECK(bad.read_all(2000ms).find("HTTP/1.1 400") == 0);
}

TEST_CASE("http server: a trickling client is cut at its deadline and does not block others") {
    Served s({.request_timeout_ms = 400, .max_connections = 4});
    Raw slow(s.port());
    slow.send("GET /health HTTP/1.1\r\nX-a: ");
    // Others are served while it trickles.
    for (int i = 0; i < 3; ++i) {
        std::this_thread::sleep_for(100ms);
        slow.send("a"); // a byte arriving must not move the deadline
        auto r = http::get(s.addr(), "/health", 2000);
        REQUIRE(r.ok());
        CHECK(r->status == 200);
    }
    // Cut by its deadline (400 ms after accept), however it keeps sending.
    bool cut = false;
    for (int i = 0; i < 40 && !cut; ++i) {
        if (!slow.send("a"))
            cut = true;
        else
            cut = slow.closed_within(100ms);
    }
    CHECK(cut);
    CHECK(s.server.stats().timed_out >= 1);
}

TEST_CASE("http server: past max_connections a connection is closed at once; served again after a deadline") {
    Served s({.request_timeout_ms = 500, .max_connections = 2});
    Raw a(s.port()), b(s.port());
    // Both idle connections hold the two slots (the accept is asynchronous).
    for (int i = 0; i < 100 && s.server.stats().open < 2; ++i)
        std::this_thread::sleep_for(10ms);
    REQUIRE(s.server.stats().open == 2);
    Raw c(s.port());
    CHECK(c.closed_within(1000ms)); // refused at accept, long before any deadline
    CHECK(s.server.stats().refused >= 1);
    // The idle ones end at their deadline; then /health answers again.
    CHECK(a.closed_within(3000ms));
    CHECK(b.closed_within(3000ms));
    auto r = http::get(s.addr(), "/health", 2000);
    REQUIRE(r.ok());
    CHECK(r->status == 200);
}

TEST_CASE("http server: stop() does not wait for connected clients") {
    auto s = std::make_unique<Served>(http::ServerOptions{.request_timeout_ms = 60000});
    std::vector<std::unique_ptr<Raw>> clients;
    for (int i = 0; i < 5; ++i) {
        clients.push_back(std::make_unique<Raw>(s->port()));
        clients.back()->send("GET /health HTTP/1.1\r\nX-a: ");
    }
    for (int i = 0; i < 100 && s->server.stats().open < 5; ++i)
        std::this_thread::sleep_for(10ms);
    auto t0 = Clock::now();
    s->server.stop();
    // Bounded by the quick handlers, not by the 60 s deadline: well under it.
    CHECK(Clock::now() - t0 < 10s);
    for (auto &c : clients)
        CHECK(c->closed_within(2000ms));
    s->server.stop(); // idempotent
}

TEST_CASE("http server: an address in use is a clear error") {
    Served s({});
    http::Server second;
    auto st = second.start(s.addr());
    REQUIRE_FALSE(st.ok());
    CHECK(st.message().find("cannot listen on http://" + s.addr().text()) == 0);
    CHECK(st.message().find("in use") != std::string::npos);
}

TEST_CASE("http client: a closed port and a silent host are errors within the deadline") {
    uint16_t port;
    {
        Served s({});
        port = s.port();
    }
    Address closed = *parse_address("127.0.0.1:" + std::to_string(port));
    auto r = http::get(closed, "/health", 2000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("cannot reach http://127.0.0.1:") == 0);

    // A listener that accepts (the kernel's backlog) and never answers.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 4) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    Address silent = *parse_address("127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
    auto t = http::get(silent, "/health", 300);
    close(fd);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().message().find("no answer within 300 ms") != std::string::npos);
}

TEST_CASE("health json: the documented fields; store text cannot break it") {
    using namespace cdcflow::host;
    HealthReport h;
    h.pipeline = "p";
    h.state = "standby";
    h.role = "standby";
    h.owner = "host \xff pid 1";
    h.healthy = true;
    h.ready = false;
    StageReport s;
    s.id = "sink";
    s.plugin = "projection_sink";
    s.kind = "sink";
    s.state = "idle";
    s.breaker = BreakerState::half_open;
    s.retries = 3;
    s.trips = 1;
    s.last_error = "database is locked \xc3";
    s.last_error_unix_ms = 1000;
    h.stages.push_back(s);
    h.totals.events = 10;
    h.totals.applied = 7;
    auto j = nlohmann::json::parse(health_json(h));
    CHECK(j["pipeline"] == "p");
    CHECK(j["healthy"] == true);
    CHECK(j["ready"] == false);
    CHECK(j["owner"] == "host \xef\xbf\xbd pid 1"); // U+FFFD
    CHECK_FALSE(j.contains("last_error"));
    CHECK(j["stages"][0]["breaker"] == "half_open");
    CHECK(j["stages"][0]["retries"] == 3);
    CHECK(j["stages"][0]["breaker_trips"] == 1);
    CHECK(j["stages"][0]["last_error_at"] == "1970-01-01T00:00:01.000Z");
    CHECK(j["events"] == 10);
    CHECK(j["applied"] == 7);
    for (const char *k : {"rejected", "duplicates", "dropped", "batches"})
        CHECK(j.contains(k));
    auto r = nlohmann::json::parse(ready_json(h));
    CHECK(r["ready"] == false);
    CHECK(r["reason"].get<std::string>().find("standby: host") == 0);

    h.state = "running";
    h.role = "owner";
    h.owner.clear();
    CHECK(ready_reason(h) == "breaker half_open: stage 'sink'");
    h.state = "failed";
    h.last_error = "stage 'sink': disk full";
    CHECK(ready_reason(h) == "failed: stage 'sink': disk full");
    CHECK(nlohmann::json::parse(health_json(h))["last_error"] == "stage 'sink': disk full");
    h.stages[0].breaker = BreakerState::closed;
    h.state = "draining";
    CHECK(ready_reason(h) == "stopping");
    h.state = "starting";
    CHECK(ready_reason(h) == "starting");
    h.ready = true;
    CHECK(nlohmann::json::parse(ready_json(h)) == nlohmann::json{{"ready", true}});
}

TEST_CASE("pipeline file: the http mapping, with FILE:LINE:COL errors") {
    using namespace cdcflow::host;
    EnvLookup env = [](const std::string &) { return std::optional<std::string>(); };
    const std::string stages = "stages:\n  - {id: s, plugin: x}\n";
    auto ok = parse_pipeline("pipeline: p\nhttp:\n  listen: '[::1]:0'\n  request_timeout_ms: 250\n"
                             "  max_connections: 3\n" +
                                 stages,
                             "p.yaml", env);
    REQUIRE(ok.ok());
    REQUIRE(ok->http.listen);
    CHECK(ok->http.listen->text() == "[::1]:0");
    CHECK(ok->http.request_timeout_ms == 250);
    CHECK(ok->http.max_connections == 3);
    auto none = parse_pipeline("pipeline: p\n" + stages, "p.yaml", env);
    REQUIRE(none.ok());
    CHECK_FALSE(none->http.listen);
    CHECK(none->http.request_timeout_ms == 5000);
    CHECK(none->http.max_connections == 32);

    auto error = [&](const std::string &http) {
        auto r = parse_pipeline("pipeline: p\nhttp:\n" + http + stages, "p.yaml", env);
        return r.ok() ? std::string("(accepted)") : r.status().message();
    };
    CHECK(error("  listen: 'host:'\n").find("p.yaml:3:11: http.listen: 'host:' is not an address") == 0);
    CHECK(error("  listen: 127.0.0.1:19464x\n").find("p.yaml:3:11: http.listen: '127.0.0.1:19464x'") == 0);
    CHECK(error("  listen: [a]\n").find("p.yaml:3:3: http.listen must be an address") == 0);
    CHECK(error("  request_timeout_ms: 0\n").find("p.yaml:3:23: http.request_timeout_ms must be") == 0);
    CHECK(error("  max_connections: many\n").find("p.yaml:3:20: http.max_connections must be") == 0);
    CHECK(error("  port: 1\n").find("p.yaml:3:3: unknown http key 'port'") == 0);
    CHECK(parse_pipeline("pipeline: p\nhttp: 9464\n" + stages, "p.yaml", env)
              .status()
              .message()
              .find("p.yaml:2:1: 'http' must be a mapping") == 0);
}

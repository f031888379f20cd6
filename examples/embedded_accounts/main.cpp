// embedded_accounts: an accounts service that runs cdcflow inside itself.
//
// It takes commands over HTTP, writes each as an outbox event through the
// outbox writer (cdcflow/outbox_writer.hpp), and runs the accounts pipeline
// in the same process (cdcflow/host.hpp), which projects the events into the
// `accounts` read model next to the outbox. Its own health check and
// metrics are the embedded host's:
//
//   GET /health     the pipeline's /health JSON (200, or 503 when unhealthy)
//   GET /metrics    the pipeline's Prometheus page
//   GET /open?account=acc-1&owner=Ada&currency=EUR
//   GET /deposit?account=acc-1&amount=10.50
//   GET /withdraw?account=acc-1&amount=3.25
//   GET /close?account=acc-1
//                   202 and the event id: the event is in the outbox; the
//                   read model has it once the pipeline applied it (or
//                   dead-lettered it: /withdraw past the balance)
//
// Usage: embedded_accounts DB PIPELINE.yaml [PORT]   (PORT 0 or absent: any
// free port; the chosen one is printed as "listening on 127.0.0.1:PORT").
// The pipeline file reads its database from ${CDCFLOW_DB}, which this sets
// to DB (pipelines/accounts.yaml does). SIGINT/SIGTERM stop it gracefully:
// every event written is committed to the read model before it exits.
//
// Build (against an installed cdcflow; one line):
//   c++ -std=c++20 -o embedded_accounts main.cpp $(pkg-config --cflags --libs cdcflow-host cdcflow-outbox)
//
// A sketch of a service, not a web server: one request per connection,
// handled one at a time, no keep-alive.
#include <cdcflow/host.hpp>
#include <cdcflow/outbox_writer.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

namespace {

struct Response {
    int code;
    std::string type;
    std::string body;
};

// "a=1&b=x" -> {a: 1, b: x} (no %-decoding: the example's values need none).
std::map<std::string, std::string> query(const std::string &q) {
    std::map<std::string, std::string> out;
    size_t i = 0;
    while (i < q.size()) {
        size_t amp = q.find('&', i);
        if (amp == std::string::npos) amp = q.size();
        std::string kv = q.substr(i, amp - i);
        size_t eq = kv.find('=');
        if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
        i = amp + 1;
    }
    return out;
}

class Service {
public:
    Service(cdcflow::embed::Host &host, cdcflow::OutboxWriter &outbox) : host_(host), outbox_(outbox) {}

    Response handle(const std::string &target) {
        size_t qm = target.find('?');
        std::string path = target.substr(0, qm);
        auto args = query(qm == std::string::npos ? "" : target.substr(qm + 1));
        if (path == "/health")
            return {host_.snapshot().healthy ? 200 : 503, "application/json", host_.health_json()};
        if (path == "/metrics") return {200, "text/plain; version=0.0.4", host_.metrics_text()};
        // The payloads are built from the query as JSON strings; the
        // writer's envelope check and the pipeline's validator refuse what
        // is not a valid event (a quote in a value makes invalid JSON).
        if (path == "/open")
            return write(args, "AccountCreated",
                         R"({"owner": ")" + args["owner"] + R"(", "currency": ")" + args["currency"] +
                             R"("})");
        if (path == "/deposit")
            return write(args, "MoneyDeposited", R"({"amount": ")" + args["amount"] + R"("})");
        if (path == "/withdraw")
            return write(args, "MoneyWithdrawn", R"({"amount": ")" + args["amount"] + R"("})");
        if (path == "/close") return write(args, "AccountClosed", "{}");
        return {404, "text/plain", "not found\n"};
    }

private:
    Response write(std::map<std::string, std::string> &args, const char *type, const std::string &payload) {
        const std::string &account = args["account"];
        if (account.empty()) return {400, "text/plain", "account= is required\n"};
        cdcflow::AppendResult r = outbox_.append(
            {.aggregate_type = "Account", .aggregate_id = account, .type = type, .payload = payload});
        if (!r.status.ok()) return {400, "text/plain", r.status.message() + "\n"};
        // One event a request: committed before the answer, so a 202 means
        // the event is durable in the outbox.
        if (cdcflow::OutboxStatus st = outbox_.flush(); !st.ok())
            return {503, "text/plain", st.message() + "\n"};
        return {202, "text/plain", std::string(r.event_id()) + "\n"};
    }

    cdcflow::embed::Host &host_;
    cdcflow::OutboxWriter &outbox_;
};

void serve_one(int fd, Service &svc) {
    // A request line fits in what one read returns for these short requests;
    // a client that sends nothing within a second is dropped.
    struct pollfd p = {fd, POLLIN, 0};
    std::string req(8192, '\0');
    ssize_t n = poll(&p, 1, 1000) == 1 ? read(fd, req.data(), req.size()) : -1;
    Response res{400, "text/plain", "bad request\n"};
    if (n > 0) {
        req.resize(static_cast<size_t>(n));
        size_t sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
        if (sp1 != std::string::npos && sp2 != std::string::npos && req.compare(0, sp1, "GET") == 0)
            res = svc.handle(req.substr(sp1 + 1, sp2 - sp1 - 1));
    }
    std::string out = "HTTP/1.1 " + std::to_string(res.code) + (res.code < 400 ? " OK" : " Error") +
                      "\r\nContent-Type: " + res.type +
                      "\r\nContent-Length: " + std::to_string(res.body.size()) +
                      "\r\nConnection: close\r\n\r\n" + res.body;
    for (size_t off = 0; off < out.size();) {
        ssize_t w = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
    }
    close(fd);
}

int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(fd, 16) != 0)
        return -1;
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    std::printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    std::fflush(stdout);
    return fd;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: embedded_accounts DB PIPELINE.yaml [PORT]\n");
        return CDCFLOW_EXIT_USAGE;
    }
    // Before any thread exists (the host starts its own): every thread
    // inherits the blocked signals, and the main loop takes them from a
    // signalfd instead of a handler.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN); // the host logs to stderr, which may be a closed pipe
    int sfd = signalfd(-1, &stop_signals, SFD_CLOEXEC);

    cdcflow::OutboxWriterOptions opt;
    opt.create_schema = true; // the application owns its outbox
    std::unique_ptr<cdcflow::OutboxWriter> outbox;
    if (cdcflow::OutboxStatus st = cdcflow::OutboxWriter::open(argv[1], opt, &outbox); !st.ok()) {
        std::fprintf(stderr, "embedded_accounts: %s\n", st.message().c_str());
        return CDCFLOW_EXIT_FAILURE;
    }
    setenv("CDCFLOW_DB", argv[1], 1);
    auto host = cdcflow::embed::Host::open(argv[2]);
    if (!host.ok()) {
        std::fprintf(stderr, "embedded_accounts: %s\n", host.status().message().c_str());
        return cdcflow::embed::Host::exit_code(host.status());
    }
    cdcflow::embed::Host &h = *host.value();
    h.subscribe([](const cdcflow::embed::StateChange &c) {
        std::fprintf(stderr, "embedded_accounts: pipeline %s%s\n", c.state.c_str(),
                     c.healthy ? "" : " (unhealthy)");
    });
    if (cdcflow::Status st = h.start(); !st.ok()) {
        std::fprintf(stderr, "embedded_accounts: %s\n", st.message().c_str());
        return cdcflow::embed::Host::exit_code(st);
    }
    int lfd = listen_on(argc > 3 ? std::atoi(argv[3]) : 0);
    if (lfd < 0 || sfd < 0) {
        std::perror("embedded_accounts: listen");
        (void)h.stop(std::chrono::seconds(10));
        return CDCFLOW_EXIT_USAGE;
    }
    Service svc(h, *outbox);
    for (;;) {
        struct pollfd fds[2] = {{lfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue; // EINTR
        if (fds[1].revents) break;          // SIGINT/SIGTERM
        if (fds[0].revents) {
            int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (c >= 0) serve_one(c, svc);
        }
    }
    close(lfd);
    // Graceful: everything read is committed before the host is gone.
    cdcflow::Status st = h.stop(std::chrono::seconds(10));
    if (!st.ok()) std::fprintf(stderr, "embedded_accounts: %s\n", st.message().c_str());
    return cdcflow::embed::Host::exit_code(st);
}

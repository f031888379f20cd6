// A small HTTP/1.1 server for a host's operational endpoints (/health,
// /ready, /metrics), built on Boost.Beast/Asio.
//
// What it promises, because monitoring must never stop the host it watches:
// - One I/O thread (an asio io_context); nothing blocks on a client.
// - Every connection has one deadline, set once when it is accepted
//   (request_timeout_ms): reading the request (headers and body together),
//   the handler and writing the answer must all finish by then, or the
//   connection is closed. A byte arriving never extends it, so a client that
//   trickles its headers is cut at the deadline.
// - At most max_connections are open at once; a connection beyond that is
//   closed as soon as it is accepted. Since each open one ends by its
//   deadline, the cap keeps a route unreachable for at most one deadline.
// - Request headers over header_limit bytes get 431, a body over 64 KiB
//   413, a malformed request 400; then the connection closes. Only GET and
//   HEAD are served (405 otherwise), unknown paths get 404. Every answer
//   says `Connection: close`: one request per connection.
// - stop() returns at once: it stops the I/O thread, closes the listening
//   socket and every connection, whatever the clients are doing.
//
// Handlers run on the I/O thread: they must be quick (read a snapshot,
// render text). An exception from a handler becomes a 500.
//
// Thread-safety: route() before start(); start(), stop() and the destructor
// from one thread; stats() and bound() from any thread after start().
#pragma once

#include "address.hpp"

#include <cdcflow/status.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace cdcflow::http {

struct Request {
    std::string method; // "GET" or "HEAD" (nothing else reaches a handler)
    std::string target; // as sent: "/health?x=1"
    std::string path;   // the target up to '?': "/health"
};

struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

using Handler = std::function<Response(const Request &)>;

struct ServerOptions {
    uint32_t request_timeout_ms = 5000; // the whole-request deadline
    uint32_t max_connections = 32;      // open at once; more are closed at accept
    uint32_t header_limit = 8192;       // bytes of request line and headers
    // Told about what the server cannot report to a client (accept failing,
    // a handler throwing). Called on the I/O thread; may be empty.
    std::function<void(const std::string &)> warn{};
};

class Server {
public:
    explicit Server(ServerOptions opts = {});
    ~Server(); // stop()
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    // Serves `path` (exact match, the query ignored). Before start().
    void route(std::string path, Handler h);

    // Binds `addr` (port 0: an ephemeral port), listens and starts the I/O
    // thread. kIo "cannot listen on http://ADDR: Address already in use" when
    // the address cannot be bound. Once only.
    Status start(const Address &addr);
    // The address actually bound (the real port when 0 was asked for).
    Address bound() const;

    // Stops at once (see above). Idempotent; also called by the destructor.
    void stop();

    struct Stats {
        uint64_t accepted = 0;  // connections served (not refused)
        uint64_t refused = 0;   // closed at accept: max_connections were open
        uint64_t timed_out = 0; // cut at their deadline
        uint64_t requests = 0;  // requests answered (any status)
        uint64_t open = 0;      // connections open now
    };
    Stats stats() const;

    struct Impl; // server.cpp's (its connections hold it)

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace cdcflow::http

// See server.hpp. Everything below runs on the one I/O thread, except
// start(), stop() and stats() (the caller's thread; stop() touches the
// sessions only after the I/O thread has been joined).
#include "server.hpp"

#include "beast.hpp"

#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>

namespace cdcflow::http {

namespace {

// No endpoint takes a body; a small one (a probe's POST) is read so that the
// 405 reaches the client instead of a reset.
constexpr uint64_t kBodyLimit = 64 * 1024;
// After an answer to a request that was not read to its end (431, 413, 400),
// what is still arriving is read and thrown away, up to this much, before the
// close: closing with unread bytes would reset the connection and could
// destroy the answer before the client reads it.
constexpr size_t kDrainLimit = 64 * 1024;

class Session;

} // namespace

struct Server::Impl {
    explicit Impl(ServerOptions o) : opts(std::move(o)) {}

    void accept();
    void warn(const std::string &msg) {
        if (opts.warn) opts.warn(msg);
    }

    ServerOptions opts;
    std::map<std::string, Handler, std::less<>> routes;
    std::atomic<uint64_t> accepted{0}, refused{0}, timed_out{0}, requests{0}, open{0};
    // Live sessions (I/O thread; stop() after the join). Declared before the
    // io_context: sessions its destructor frees erase themselves from here.
    std::unordered_set<Session *> sessions;
    Address bound;
    asio::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    asio::steady_timer accept_retry{ioc};
    std::thread thread;
    bool accept_warned = false;
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(Server::Impl &srv, tcp::socket sock) : srv_(srv), sock_(std::move(sock)), deadline_(srv.ioc) {
        srv_.sessions.insert(this);
        ++srv_.open;
    }
    ~Session() {
        srv_.sessions.erase(this);
        --srv_.open;
    }

    void start() {
        // The one deadline for the whole exchange; nothing moves it.
        deadline_.expires_after(std::chrono::milliseconds(srv_.opts.request_timeout_ms));
        deadline_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec) return; // cancelled: the session ended first
            if (!self->closed_) ++self->srv_.timed_out;
            self->close();
        });
        parser_.emplace();
        parser_->header_limit(srv_.opts.header_limit);
        parser_->body_limit(kBodyLimit);
        bhttp::async_read(sock_, buf_, *parser_,
                          [self = shared_from_this()](error_code ec, size_t) { self->on_read(ec); });
    }

    // Idempotent. Cancels every pending operation (they complete with
    // operation_aborted and drop their reference).
    void close() {
        if (closed_) return;
        closed_ = true;
        error_code ignored;
        sock_.shutdown(tcp::socket::shutdown_both, ignored);
        sock_.close(ignored);
        deadline_.cancel();
    }

private:
    void on_read(error_code ec) {
        if (closed_) return;
        if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow)
            return answer(431, "request headers too large\n", true);
        if (ec == bhttp::error::body_limit) return answer(413, "request body too large\n", true);
        if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) return close();
        if (ec && ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category())
            return answer(400, "malformed request\n", true);
        if (ec) return close(); // reset, aborted...

        const auto &req = parser_->get();
        Request r;
        r.method = std::string(req.method_string());
        r.target = std::string(req.target());
        r.path = r.target.substr(0, r.target.find('?'));
        head_ = req.method() == bhttp::verb::head;
        if (req.method() != bhttp::verb::get && !head_) {
            res_.set(bhttp::field::allow, "GET, HEAD");
            return answer(405, "method not allowed: only GET and HEAD\n", false);
        }
        auto it = srv_.routes.find(r.path);
        if (it == srv_.routes.end()) return answer(404, "not found\n", false);
        Response out;
        try {
            out = it->second(r);
        } catch (const std::exception &e) {
            srv_.warn("HTTP handler for " + r.path + " failed: " + e.what());
            return answer(500, "internal error\n", false);
        }
        answer(out.status, std::move(out.body), false, out.content_type);
    }

    void answer(int status, std::string body, bool unread,
                const std::string &content_type = "text/plain; charset=utf-8") {
        ++srv_.requests;
        res_.version(11);
        res_.result(static_cast<unsigned>(status));
        res_.set(bhttp::field::server, "cdcflow");
        res_.set(bhttp::field::content_type, content_type);
        res_.set(bhttp::field::cache_control, "no-store");
        res_.keep_alive(false);
        res_.body() = std::move(body);
        res_.prepare_payload();
        // HEAD: the GET's headers (Content-Length included), no body.
        if (head_) res_.body().clear();
        bhttp::async_write(sock_, res_, [self = shared_from_this(), unread](error_code ec, size_t) {
            if (self->closed_) return;
            if (ec || !unread) return self->close();
            error_code ignored;
            self->sock_.shutdown(tcp::socket::shutdown_send, ignored);
            self->drain();
        });
    }

    // Reads and drops what the client still sends, until it closes, the
    // limit, or the deadline.
    void drain() {
        sock_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](error_code ec, size_t n) {
            if (self->closed_) return;
            self->drained_ += n;
            if (ec || self->drained_ >= kDrainLimit) return self->close();
            self->drain();
        });
    }

    Server::Impl &srv_;
    tcp::socket sock_;
    asio::steady_timer deadline_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    bhttp::response<bhttp::string_body> res_;
    std::array<char, 4096> scratch_{};
    size_t drained_ = 0;
    bool head_ = false;
    bool closed_ = false;
};

} // namespace

void Server::Impl::accept() {
    acceptor.async_accept([this](error_code ec, tcp::socket sock) {
        if (ec == asio::error::operation_aborted) return; // stopping
        if (ec) {
            // Out of file descriptors and the like: say so once, try again
            // shortly (at once would spin on the same error).
            if (!accept_warned) warn("HTTP accept failed: " + ec.message() + " (retrying)");
            accept_warned = true;
            accept_retry.expires_after(std::chrono::milliseconds(100));
            accept_retry.async_wait([this](error_code e) {
                if (!e) accept();
            });
            return;
        }
        accept_warned = false;
        if (open.load() >= opts.max_connections) {
            ++refused;
            error_code ignored;
            sock.close(ignored);
        } else {
            ++accepted;
            std::make_shared<Session>(*this, std::move(sock))->start();
        }
        accept();
    });
}

Server::Server(ServerOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

Server::~Server() {
    stop();
}

void Server::route(std::string path, Handler h) {
    impl_->routes[std::move(path)] = std::move(h);
}

Status Server::start(const Address &addr) {
    Impl &s = *impl_;
    error_code ec;
    auto ip = asio::ip::make_address(addr.host, ec);
    const std::string what = "cannot listen on http://" + addr.text() + ": ";
    if (ec) return Status::InvalidArgument(what + ec.message());
    tcp::endpoint ep(ip, addr.port);
    s.acceptor.open(ep.protocol(), ec);
    // Lets a restarted host bind while its predecessor's connections sit in
    // TIME_WAIT; it does not let two listeners share the port (Linux).
    if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && addr.ipv6) s.acceptor.set_option(asio::ip::v6_only(true), ec);
    if (!ec) s.acceptor.bind(ep, ec);
    if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) {
        tcp::endpoint local = s.acceptor.local_endpoint(ec);
        s.bound = addr;
        s.bound.port = local.port();
    }
    if (ec) {
        error_code ignored;
        s.acceptor.close(ignored);
        return Status::Io(what + ec.message());
    }
    s.accept();
    s.thread = std::thread([&s] {
        // Handlers catch their own exceptions; this keeps anything else
        // (an allocation failing) from ending the process on this thread.
        for (;;) {
            try {
                s.ioc.run();
                return;
            } catch (const std::exception &e) {
                s.warn(std::string("HTTP server: ") + e.what());
            }
        }
    });
    return Status::OK();
}

Address Server::bound() const {
    return impl_->bound;
}

void Server::stop() {
    Impl &s = *impl_;
    // Stop the loop first: run() returns after the handler in progress (a
    // quick one), whatever the clients do. Then, with no other thread
    // left, close the listener and every connection.
    s.ioc.stop();
    if (s.thread.joinable()) s.thread.join();
    error_code ignored;
    s.acceptor.close(ignored);
    for (Session *session : s.sessions)
        session->close();
}

Server::Stats Server::stats() const {
    const Impl &s = *impl_;
    return {s.accepted.load(), s.refused.load(), s.timed_out.load(), s.requests.load(), s.open.load()};
}

} // namespace cdcflow::http

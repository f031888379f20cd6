// See client.hpp.
#include "client.hpp"

#include "beast.hpp"

#include <boost/beast/core/tcp_stream.hpp>

#include <chrono>
#include <optional>

namespace cdcflow::http {

Result<Reply> get(const Address &addr, std::string_view path, uint32_t timeout_ms, uint64_t max_body) {
    const std::string url = "http://" + addr.text() + std::string(path);
    error_code ec;
    auto ip = asio::ip::make_address(addr.host, ec);
    if (ec) return Status::InvalidArgument("cannot reach " + url + ": " + ec.message());

    asio::io_context ioc{1};
    beast::tcp_stream stream(ioc);
    // One deadline for connect, write and read together: tcp_stream applies
    // it to every operation started until it is set again, and it is not.
    stream.expires_after(std::chrono::milliseconds(timeout_ms));

    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, std::string(path), 11};
    req.set(bhttp::field::host, addr.text());
    req.set(bhttp::field::user_agent, "cdcflow");
    req.keep_alive(false);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(max_body);
    error_code result;

    stream.async_connect(tcp::endpoint(ip, addr.port), [&](error_code e) {
        if (e) {
            result = e;
            return;
        }
        bhttp::async_write(stream, req, [&](error_code e2, size_t) {
            if (e2) {
                result = e2;
                return;
            }
            // The header first, and its Content-Length checked here: the
            // parser's own body_limit let a 69 MB page through to a 64 MiB
            // limit in most runs (Boost 1.74; tests/e2e/test_operations.py,
            // status against a hostile host), and the limit is what bounds
            // the memory a hostile page can take.
            bhttp::async_read_header(stream, buf, parser, [&](error_code e3, size_t) {
                if (e3) {
                    result = e3;
                    return;
                }
                if (auto n = parser.content_length(); n && *n > max_body) {
                    result = bhttp::error::body_limit;
                    return;
                }
                bhttp::async_read(stream, buf, parser, [&](error_code e4, size_t) { result = e4; });
            });
        });
    });
    ioc.run();
    if (result == beast::error::timeout)
        return Status::Io("cannot reach " + url + ": no answer within " + std::to_string(timeout_ms) + " ms");
    if (!result && parser.get().body().size() > max_body) result = bhttp::error::body_limit; // chunked
    if (result) return Status::Io("cannot reach " + url + ": " + result.message());
    const auto &res = parser.get();
    Reply r;
    r.status = static_cast<int>(res.result_int());
    r.content_type = std::string(res[bhttp::field::content_type]);
    r.body = res.body();
    return r;
}

} // namespace cdcflow::http

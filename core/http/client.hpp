// A blocking HTTP GET with one deadline for the whole exchange (connect,
// request, answer), for `cdcflow status` and tests: a host that accepts the
// connection and then says nothing cannot hang the caller.
//
// Internal (not installed). Thread-safety: each call is independent.
#pragma once

#include "address.hpp"

#include <cdcflow/status.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace cdcflow::http {

struct Reply {
    int status = 0;
    std::string content_type;
    std::string body;
};

// GET http://ADDR/path. kIo with a one-line reason when the host cannot be
// reached or does not answer within timeout_ms ("cannot reach
// http://127.0.0.1:9464/health: Connection refused"); any HTTP status is a
// Reply. Bodies over max_body bytes are refused.
Result<Reply> get(const Address &addr, std::string_view path, uint32_t timeout_ms,
                  uint64_t max_body = 64u << 20);

} // namespace cdcflow::http

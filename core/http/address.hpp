// The HTTP module's listen and connect addresses, parsed strictly: the same
// grammar for `run --http`, the pipeline file's `http.listen` and
// `cdcflow status`, so an address one accepts the others accept too.
//
//   HOST:PORT       HOST an IPv4 literal (four decimal parts) or `localhost`
//   [IPV6]:PORT     an IPv6 literal in brackets (no zone id)
//   :PORT, PORT     127.0.0.1:PORT
//
// PORT is 1 to 5 ASCII digits, 0..65535 (0: the system picks one when
// listening). Nothing may follow it. Host names other than `localhost` are
// refused: the endpoints are meant for loopback or one chosen interface, and
// resolving names would make the bind depend on DNS.
//
// Internal (not installed). Thread-safety: pure functions.
#pragma once

#include <cdcflow/status.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace cdcflow::http {

struct Address {
    std::string host; // the literal without brackets: "127.0.0.1", "::1" (localhost is 127.0.0.1)
    uint16_t port = 0;
    bool ipv6 = false;

    // "127.0.0.1:9464", "[::1]:9464": what a URL after http:// holds.
    std::string text() const;
    bool operator==(const Address &) const = default;
};

// One line of grammar for usage messages.
inline constexpr const char *kAddressForms = "HOST:PORT (IPv4 or localhost), [IPv6]:PORT, :PORT or PORT";

// The value in `text`, or kInvalidArgument whose message names the value
// (escaped) and says what is wrong with it, e.g.
// "'127.0.0.1:19464x' is not an address: the port '19464x' is not a number from 0 to 65535".
Result<Address> parse_address(std::string_view text);

} // namespace cdcflow::http

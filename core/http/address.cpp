// See address.hpp.
#include "address.hpp"

#include "base/text.hpp"

#include <arpa/inet.h>

namespace cdcflow::http {

std::string Address::text() const {
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

namespace {

// User input in a message: quoted, control bytes and invalid UTF-8
// escaped, cut, so the message stays one readable line.
std::string q(std::string_view s) {
    return base::quoted(s, {.quote = '\'', .max_bytes = 100, .keep_utf8 = true});
}

Status invalid(std::string_view text, const std::string &why) {
    return Status::InvalidArgument(q(text) + " is not an address: " + why + " (expected " + kAddressForms +
                                   ")");
}

} // namespace

Result<Address> parse_address(std::string_view text) {
    Address a;
    std::string_view host, port;
    if (text.empty()) return invalid(text, "it is empty");
    if (text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos) return invalid(text, "the '[' of an IPv6 address is not closed");
        host = text.substr(1, close - 1);
        if (close + 1 >= text.size() || text[close + 1] != ':')
            return invalid(text, "a port must follow the IPv6 address, as [IPV6]:PORT");
        port = text.substr(close + 2);
        in6_addr v6;
        // inet_pton takes exactly the literal forms (no zone id, no name).
        if (host.empty() || inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1)
            return invalid(text, q(host) + " is not an IPv6 address");
        a.ipv6 = true;
        a.host = std::string(host);
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            port = text; // PORT alone
        } else {
            host = text.substr(0, colon);
            port = text.substr(colon + 1);
        }
        if (host.find(':') != std::string_view::npos)
            return invalid(text, "an IPv6 address must be in brackets, as [IPV6]:PORT");
        if (host.empty() || host == "localhost") {
            a.host = "127.0.0.1";
        } else {
            in_addr v4;
            // glibc's inet_pton takes four decimal parts 0..255 and nothing
            // else ("1.2.3", "01.2.3.4" and names are refused).
            if (inet_pton(AF_INET, std::string(host).c_str(), &v4) != 1)
                return invalid(text, "the host " + q(host) + " is not an IPv4 address or localhost");
            a.host = std::string(host);
        }
    }
    if (port.empty()) return invalid(text, "the port is missing");
    bool digits = port.size() <= 5 && port.find_first_not_of("0123456789") == std::string_view::npos;
    unsigned long n = digits ? std::stoul(std::string(port)) : 0;
    if (!digits || n > 65535)
        return invalid(text, "the port " + q(port) + " is not a number from 0 to 65535");
    a.port = static_cast<uint16_t>(n);
    return a;
}

} // namespace cdcflow::http

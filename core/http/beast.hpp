// Boost.Beast's HTTP headers and the names the module's server and client
// spell them with, in one place; also because of one false warning: GCC 12 with -fsanitize=address
// reports -Wmaybe-uninitialized inside Beast's own parser
// (basic_parser::content_length_unchecked returning boost::none), and with
// -Werror the sanitizer build did not compile. The warning is off for these
// headers only; our code keeps every warning.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop

#include <boost/asio/ip/tcp.hpp>

namespace cdcflow::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

} // namespace cdcflow::http

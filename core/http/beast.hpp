// Boost.Beast's HTTP headers for the module's server and client, included in
// one place because of one false warning: GCC 12 with -fsanitize=address
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

// Out of line so that only this file includes simdjson's large header.
#include "utf8.hpp"

#include <simdjson.h>

namespace cdcflow::base {

bool valid_utf8_simd(std::string_view s) noexcept {
    return simdjson::validate_utf8(s.data(), s.size());
}

} // namespace cdcflow::base

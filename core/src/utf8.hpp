// Forwarding header: the UTF-8 helpers live in core/base (base/utf8.hpp,
// base/text.hpp). Kept only for core/src/pipeline.cpp, which is being split
// on another branch; delete this file once it includes base/utf8.hpp.
#pragma once

#include "base/utf8.hpp"

namespace cdcflow::host {

using base::utf8_length;
using base::valid_utf8;

} // namespace cdcflow::host

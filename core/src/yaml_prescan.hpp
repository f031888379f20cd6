// Checks on a pipeline file's raw text before yaml-cpp sees it: yaml-cpp accepts
// some binary input, recurses once per nesting level and spends about half a
// kilobyte per node, so text, size, depth and node count are bounded here.
// Both throw LoadError (yaml_load.hpp).
#pragma once

#include <string_view>

namespace cdcflow::host {

// A pipeline file is UTF-8 text without control characters, at most 4 MiB.
void check_text(std::string_view text);
// Nesting depth and node count (see the .cpp for the model).
void prescan(std::string_view text);

} // namespace cdcflow::host

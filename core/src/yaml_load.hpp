// What the pipeline loader's parts share: the limits on hostile input, the
// exception that carries a position inside the loader, and YAML positions.
// Internal to core/src (the loader's .cpp files); nothing here is public.
#pragma once

#include "pipeline.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace cdcflow::host {

constexpr size_t kMaxFileBytes = size_t{4} << 20;
constexpr size_t kMaxDepth = 200;
// yaml-cpp spends about half a kilobyte per node: this keeps it near 200 MB at most.
constexpr size_t kMaxTokens = 200'000;
// Aliases let a small file name one subtree millions of times; yaml-cpp shares it, a
// walk does not. These bound the walk (visits) and what it produces (bytes).
constexpr size_t kMaxVisits = 1'000'000;
constexpr size_t kMaxOutputBytes = size_t{16} << 20;
constexpr size_t npos = std::string_view::npos;

// Thrown inside the loader only; each public function turns it into a Status.
struct LoadError {
    Mark mark;
    std::string msg;
};

[[noreturn]] inline void fail(Mark m, std::string msg) {
    throw LoadError{m, std::move(msg)};
}

inline Mark mark_of(const YAML::Mark &m) {
    return {std::max(m.line, 0) + 1, std::max(m.column, 0) + 1};
}
inline Mark mark_of(const YAML::Node &n) {
    return mark_of(n.Mark());
}

inline const char *kind_of(const YAML::Node &n) {
    switch (n.Type()) {
    case YAML::NodeType::Scalar:
        return "a scalar";
    case YAML::NodeType::Sequence:
        return "a sequence";
    case YAML::NodeType::Map:
        return "a mapping";
    default:
        return "null";
    }
}

} // namespace cdcflow::host

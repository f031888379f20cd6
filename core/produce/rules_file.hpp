// `cdcflow produce --rules FILE`: the rules an event must follow, from a file.
#pragma once

#include "pipeline.hpp" // host::EnvLookup

#include <cdcflow/rules.hpp>

#include <cstddef>
#include <optional>
#include <string>

namespace cdcflow::produce {

constexpr size_t kMaxRulesFileBytes = size_t{4} << 20; // as for pipeline files

// FILE is one of:
//   - a pipeline file: the rules of its first stage whose plugin is
//     "validator" (so a producer checks what that stage will check);
//   - a YAML document that is the rules mapping itself, read exactly as the
//     value of a validator stage's `rules:` (same scalar typing, ${VAR}
//     interpolation through `env`, limits);
//   - a JSON document that is the rules object, taken literally.
// On failure returns nullopt and a one-line *error naming the file, with
// ":LINE:COL" where the YAML says where.
std::optional<rules::RuleSet> load_rules_file(const std::string &path, const host::EnvLookup &env,
                                              std::string *error);

} // namespace cdcflow::produce

// Declared config: a plugin's config schema as the host holds it (KeySpec,
// PluginSchema in pipeline.hpp), built from its descriptor, and the checks
// every stage's config goes through before create (check_pipeline).
//
// ABI 3 plugins declare cdcflow_config_param (bounds, choices, secrets,
// deprecated keys); ABI 1 and 2 plugins' cdcflow_config_key arrays are
// converted into the same schema, so one checker serves both.
//
// Thread-safety: pure functions.
#pragma once

#include "pipeline.hpp"
#include <cdcflow/status.hpp>

#include <cdcflow/plugin.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::host {

// The schema a descriptor declares: config_params (ABI 3, walked with the
// elements' struct_size as the stride) or else config_keys. A malformed
// declaration (no name, a key twice, an unknown type, bounds on a string,
// unparsable bounds, min above max, a default that breaks its own bounds or
// choices...) is an error: one line, without the file (the loader adds it).
Result<PluginSchema> schema_of(const cdcflow_plugin &d);
// The ABI 3 part alone (also used by the unit test harness).
Result<std::vector<KeySpec>> keys_from_params(const cdcflow_config_param *params, uint32_t count);

// One stage's config against its plugin's schema: what check_pipeline() does per
// stage, without the pipeline's shape; fills in defaults. The first error (in
// file order) is returned; deprecated keys that are set add a line to *warnings
// when given.
Status check_stage_config(const std::string &file, StageDef &st, const PluginSchema &schema,
                          std::vector<std::string> *warnings);

const KeySpec *find_key(const PluginSchema &schema, std::string_view name);

// "string", "int", "double", "bool", "json".
const char *config_type_name(cdcflow_config_type t);

// Edit distance in bytes (optimal string alignment: a swap of two neighbours is one edit).
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `word` when it is close enough to be a likely typo.
std::optional<std::string> closest(std::string_view word, const std::vector<std::string> &candidates);

// What a secret's value is shown as, wherever a value would be echoed.
inline constexpr const char *kSecretShown = "(secret: not shown)";

} // namespace cdcflow::host

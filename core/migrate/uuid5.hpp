// Name-based UUIDs (RFC 4122 section 4.3, version 5: SHA-1) for migrated
// events: the event id of a legacy row is uuid5(namespace, "<legacy id>"),
// so a rerun or a resumed migration computes the same id and never writes a
// message twice under two ids.
//
// Internal (not installed): include as "migrate/uuid5.hpp".
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cdcflow::migrate {

using Uuid = std::array<uint8_t, 16>;
inline constexpr size_t kUuidTextSize = 36; // 8-4-4-4-12 lowercase hex digits

// The default namespace of migrated event ids (README, "Migrating a legacy
// outbox"): uuid5(NAMESPACE_URL, "https://cdcflow.dev/ns/legacy_outbox").
// A second legacy table migrated into the same outbox needs its own
// (migrator's `namespace` key).
inline constexpr const char *kDefaultNamespace = "0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4d6";

// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex digits of either case); nullopt
// for anything else.
std::optional<Uuid> parse_uuid(std::string_view text);
std::string uuid_text(const Uuid &u);

// Writes uuid5(ns, name) in canonical lowercase form into out[0..36) (no NUL).
void uuid5(const Uuid &ns, std::string_view name, char *out);

// uuid5(ns, decimal text of legacy_id): the event id of a legacy row.
void legacy_event_id(const Uuid &ns, int64_t legacy_id, char *out);

// Is `id` the text of a version 5 UUID (any namespace)? Verify uses it to
// tell an event that claims to be migrated from the application's own.
bool looks_like_uuid5(std::string_view id);

} // namespace cdcflow::migrate

// A legacy outbox row (DESIGN.md, "Legacy outbox") and its mapping to a CDC
// outbox event, in one place for the migrator source (which maps), verify
// and cleanup (which map again and compare):
//
//   topic -> aggregatetype, message_key -> aggregateid, message_type -> type,
//   body -> payload (as written: not parsed), created_at (ISO 8601, no zone
//   = UTC) -> timestamp (microseconds), uuid5(namespace, "<id>") -> id.
//
// A row is unmappable (recorded, not migrated) when topic, key, type or body
// is NULL or empty, when one of them is not valid UTF-8, or when created_at is
// NULL or does not parse. A body that is UTF-8 but not a JSON object is
// mappable: the consuming pipeline's validator dead-letters it with a reason.
//
// Internal (not installed): include as "migrate/mapping.hpp".
// Thread-safety: LegacySchema is a plain value; the functions are pure.
#pragma once

#include "migrate/uuid5.hpp"

#include <sqlite3.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::migrate {

// The legacy table's columns, in the order select_sql() reads them.
enum class LegacyColumn : uint8_t { kId, kTopic, kKey, kType, kBody, kCreatedAt };
inline constexpr size_t kLegacyColumnCount = 6;

struct LegacyColumnInfo {
    const char *key;          // the migrator's config key that names it
    const char *default_name; // DESIGN.md's name
};
inline constexpr std::array<LegacyColumnInfo, kLegacyColumnCount> kLegacyColumns = {{
    {"id_column", "id"},
    {"topic_column", "topic"},
    {"key_column", "message_key"},
    {"type_column", "message_type"},
    {"body_column", "body"},
    {"created_at_column", "created_at"},
}};
inline constexpr const char *kDefaultLegacyTable = "legacy_outbox";

struct LegacySchema {
    std::string table = kDefaultLegacyTable;
    std::array<std::string, kLegacyColumnCount> names = [] {
        std::array<std::string, kLegacyColumnCount> n;
        for (size_t i = 0; i < kLegacyColumnCount; ++i)
            n[i] = kLegacyColumns[i].default_name;
        return n;
    }();

    std::string &name(LegacyColumn c) { return names[static_cast<size_t>(c)]; }
    const std::string &name(LegacyColumn c) const { return names[static_cast<size_t>(c)]; }

    // SELECT <the six columns, in LegacyColumn order> FROM <table> followed
    // by `where_and_order` (" WHERE id > ?1 ORDER BY id LIMIT ?2", with the
    // id column's quoted name in place of "id": see id_sql()).
    std::string select_sql(std::string_view where_and_order) const;
    std::string id_sql() const;    // the id column, quoted
    std::string table_sql() const; // the table, quoted
    // "" when the table exists with every column; else one line naming what is
    // missing (the table, or the column with its config key and the table's
    // columns), without the database (the caller puts it in front).
    // `db_error`, when given, receives SQLite's extended result code when the
    // database itself failed (locked, corrupt, not a database: the message is
    // SQLite's), else 0; `missing_column` the LegacyColumn index of the
    // missing column, else -1 (so that a caller can name the config key's
    // location, and tell a locked database from a wrong table).
    std::string check(sqlite3 *db, int *db_error = nullptr, int *missing_column = nullptr) const;
    // Whether the id column is a key: every reader (the migrator's `id > last`
    // in batches, verify, cleanup) takes one id for one row. Two rows with one
    // id would share an event id (one of them skipped at a batch boundary,
    // or written twice), a NULL id is never read. "" when the column is the
    // table's single-column primary key or has a unique, non-partial index
    // and holds no NULL; else one line saying which. `unknown` is set (and
    // "" returned) for a view, whose ids cannot be checked from its schema.
    // The caller has run check() first; `db_error` as there.
    std::string check_id_key(sqlite3 *db, bool *unknown, int *db_error = nullptr) const;
};

// One row as SQLite returned it; nullopt is SQL NULL. Views borrow the
// statement's memory: valid until its next step or reset.
struct LegacyRow {
    int64_t id = 0;
    std::optional<std::string_view> topic, key, type, body, created_at;
};

// Reads the current row of a statement made from select_sql() (columns in
// LegacyColumn order). A non-integer id is read as SQLite converts it.
LegacyRow read_row(sqlite3_stmt *s);

struct MappedEvent {
    char id[kUuidTextSize];
    std::string_view aggregate_type, aggregate_id, type, payload; // borrowed from the row
    int64_t timestamp_us = 0;
    std::string_view id_view() const { return {id, kUuidTextSize}; }
};

// Maps `row`: true with `out` filled, or false with the reason the row is
// unmappable in `reason` ("topic is NULL", "body is not valid UTF-8",
// "created_at is not an ISO 8601 date: \"yesterday\""), naming the configured
// column. The text before the first ": " is the reason's class (what the
// migrate summary counts by).
bool map_row(const LegacyRow &row, const LegacySchema &schema, const Uuid &ns, MappedEvent &out,
             std::string &reason);

// The class of a reason: its text up to the first ": " (the whole reason
// when there is none).
std::string_view reason_class(std::string_view reason);

// The per-row checksum of an event's mapped fields (id, aggregate type and
// id, type, payload, timestamp): SipHash-2-4 under a fixed key over the
// length-prefixed fields, the low 64 bits as a signed SQLite INTEGER. The
// migration stores it with each migrated event; verify and cleanup compute it
// from the legacy row and from the outbox row and compare. `scratch` is
// reused (no allocation per row once it has grown).
int64_t event_checksum(std::string_view id, std::string_view aggregate_type, std::string_view aggregate_id,
                       std::string_view type, std::string_view payload, int64_t timestamp_us,
                       std::string &scratch);
inline int64_t event_checksum(const MappedEvent &e, std::string &scratch) {
    return event_checksum(e.id_view(), e.aggregate_type, e.aggregate_id, e.type, e.payload, e.timestamp_us,
                          scratch);
}

} // namespace cdcflow::migrate

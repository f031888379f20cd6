// The outbox table's schema (DESIGN.md, "SQLite schemas"), in one place: its
// columns, their default names and option keys, the CREATE TABLE and index
// DDL, the index name, and the check of an existing table's columns. Used by
// the producer (OutboxWriter), the outbox_source plugin and whatever else
// reads or writes an outbox (the coming migrator's outbox_sink), so that
// every creator makes the same table and the same single id index, and every
// reader reports a wrong table the same way.
//
// Internal (not installed): include as "outbox/schema.hpp".
// Thread-safety: OutboxSchema is a plain value; check() uses the connection
// as SQLite allows (one thread at a time).
#pragma once

#include "sqlite/sqlite_util.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace cdcflow::outbox {

// The columns, in table order.
enum class Column : uint8_t {
    kSeq,           // the source position: INTEGER PRIMARY KEY AUTOINCREMENT
    kId,            // the event id (not unique: a retried producer may write one twice); indexed
    kAggregateType, // "Account"
    kAggregateId,   // "acc-42"
    kType,          // the event type
    kPayload,       // a JSON object
    kTimestamp,     // microseconds since the epoch
    kVersion,       // optional aggregate version (INTEGER >= 0 or NULL); no column by default
};
inline constexpr size_t kColumnCount = 8;

struct ColumnInfo {
    const char *key;          // the option / config key that names it
    const char *default_name; // "" for the optional version column: no such column
    // Its declaration in CREATE TABLE. AUTOINCREMENT matters: without it
    // SQLite may reuse a row id after cleanup, and reading by seq > last
    // would then miss events.
    const char *declaration;
};

// Indexed by Column.
inline constexpr std::array<ColumnInfo, kColumnCount> kColumns = {{
    {"seq_column", "seq", "INTEGER PRIMARY KEY AUTOINCREMENT"},
    {"id_column", "id", "TEXT NOT NULL"},
    {"aggregate_type_column", "aggregatetype", "TEXT NOT NULL"},
    {"aggregate_id_column", "aggregateid", "TEXT NOT NULL"},
    {"type_column", "type", "TEXT NOT NULL"},
    {"payload_column", "payload", "TEXT NOT NULL"},
    {"timestamp_column", "timestamp", "INTEGER NOT NULL"},
    {"version_column", "", "INTEGER"},
}};
inline constexpr const char *kDefaultTable = "outbox";

constexpr const ColumnInfo &info(Column c) {
    return kColumns[static_cast<size_t>(c)];
}

// What check() found.
struct SchemaProblem {
    enum class Kind : uint8_t { kNone, kNoTable, kNoColumn, kDbError };
    Kind kind = Kind::kNone;
    const char *key = nullptr; // kNoColumn: the key of the missing column ("id_column")
    int sqlite_rc = 0;         // kDbError: the extended result code
    // One line, names escaped, without the database: 'has no table "outbox"',
    // 'table "outbox" has no column "x" (id_column; the table has: seq, id)',
    // or SQLite's message. The caller puts "database '/path'" in front.
    std::string message;
    bool ok() const { return kind == Kind::kNone; }
};

// An outbox table: its name and its columns' names (the defaults unless
// configured; an empty version name means the table has no version column).
struct OutboxSchema {
    std::string table = kDefaultTable;
    std::array<std::string, kColumnCount> names = [] {
        std::array<std::string, kColumnCount> n;
        for (size_t i = 0; i < kColumnCount; ++i)
            n[i] = kColumns[i].default_name;
        return n;
    }();

    std::string &name(Column c) { return names[static_cast<size_t>(c)]; }
    const std::string &name(Column c) const { return names[static_cast<size_t>(c)]; }
    // The name, quoted for SQL.
    std::string quoted(Column c) const { return sqlite::quote_ident(name(c)); }
    std::string quoted_table() const { return sqlite::quote_ident(table); }
    // Is this column part of the table? (Only the version column is optional.)
    bool has(Column c) const { return !name(c).empty(); }

    // The id index's name, "<table>_<id column>_idx" ("outbox_id_idx"): the
    // same from every creator, so that two never make two indexes.
    std::string index_name() const;
    // CREATE TABLE IF NOT EXISTS ... ; CREATE INDEX IF NOT EXISTS ... (two
    // statements, for sqlite3_exec). The version column is declared when it
    // is named.
    std::string create_sql() const;
    // Its two halves. A bulk writer into a new, empty outbox (the migration's
    // outbox_sink) creates the table first and the index once the backlog is
    // in: one sort instead of a random B-tree insert per row, whose dirtied
    // pages every commit writes again.
    std::string create_table_sql() const;
    std::string create_index_sql() const;
    // '"id", "aggregatetype"' for the given columns (skipping unnamed ones):
    // for SELECT and INSERT lists.
    std::string column_list(std::initializer_list<Column> cols) const;
    // '<verb> INTO "outbox" ("id", ...) VALUES (?1, ...)' for the given
    // columns (skipping unnamed ones), bound in that order. verb: "INSERT",
    // "INSERT OR ABORT"...
    std::string insert_sql(std::initializer_list<Column> cols, const char *verb = "INSERT") const;

    // Checks that the table exists in `db` and has the `needed` columns that
    // are named (matched case-insensitively, as SQLite does). `have`, when
    // given, receives the table's columns.
    SchemaProblem check(sqlite3 *db, std::initializer_list<Column> needed,
                        std::vector<std::string> *have = nullptr) const;
    // Every column: the seq, the five texts, the timestamp and the version
    // when it is named.
    SchemaProblem check(sqlite3 *db) const;
};

} // namespace cdcflow::outbox

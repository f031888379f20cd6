// SQLite helpers shared by everything that talks to SQLite (the producer in
// core/outbox, the outbox schema, the plugins' RAII wrapper in
// plugins/common/sqlite.hpp): quoting names, matching them as SQLite does,
// reading a table's columns, classifying result codes. The C API only, no
// exceptions, so that both the non-throwing producer and the throwing
// plugin wrapper build on it.
//
// Internal (not installed): include as "sqlite/sqlite_util.hpp".
// Thread-safety: the functions that take a connection use it as SQLite
// allows (one thread at a time per connection); the rest are pure.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cdcflow::sqlite {

// Quotes an identifier for SQL ("my""table"): table and column names come
// from config and options and are never pasted into SQL raw.
std::string quote_ident(std::string_view name);

// SQLite matches identifiers ASCII case-insensitively ("Seq" is "seq"; "É"
// is not "é").
bool same_name(std::string_view a, std::string_view b) noexcept;

// The index of `name` in `columns` (as same_name matches), or npos.
size_t find_column(std::span<const std::string> columns, std::string_view name) noexcept;
inline constexpr size_t npos = static_cast<size_t>(-1);

// Reads the names of `table`'s columns, in declaration order, into *out
// (empty: there is no such table or view). pragma_table_info resolves the
// table name as SQL does. Returns SQLITE_OK or the extended error code (the
// message is then sqlite3_errmsg(db)).
int table_columns(sqlite3 *db, std::string_view table, std::vector<std::string> *out);

// A column a reader or writer needs: the option or config key that names it
// ("id_column") and the name configured for it.
struct WantedColumn {
    const char *key;
    std::string_view name;
};

// The first wanted column (skipping those with an empty name: optional and
// not configured) that `have` lacks, or nullptr.
const WantedColumn *first_missing(std::span<const std::string> have, std::span<const WantedColumn> want);

// 'table "outbox" has no column "x" (id_column; the table has: seq, id, ...)':
// the one message for a missing column, names escaped (base/text.hpp).
std::string missing_column_message(std::string_view table, const WantedColumn &missing,
                                   std::span<const std::string> have);
// 'has no table "outbox"'.
std::string missing_table_message(std::string_view table);

// "database '/path/x.db'" (the path escaped when it is not printable UTF-8),
// or "the database" for an empty path (in memory): how every message names
// the database it is about.
std::string database_label(std::string_view path);

// SQLITE_BUSY / SQLITE_LOCKED (any extended code of them): another
// connection holds the lock, and trying again later may succeed.
inline bool is_busy(int rc) noexcept {
    int primary = rc & 0xff;
    return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

struct StmtDeleter {
    void operator()(sqlite3_stmt *s) const noexcept { sqlite3_finalize(s); }
};
// A prepared statement that is finalized when it goes.
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// Binds text without a copy (SQLITE_STATIC: the bytes must outlive the next
// step/reset). A null data() would bind NULL, so an empty view binds "".
inline int bind_text(sqlite3_stmt *s, int i, std::string_view v) noexcept {
    return sqlite3_bind_text64(s, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC, SQLITE_UTF8);
}

} // namespace cdcflow::sqlite

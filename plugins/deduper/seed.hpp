// Rebuilding the deduper's window from the outbox after a restart.
//
// Every event up to the sink's checkpoint (outbox seq) was durably
// processed, every event after it will be replayed through the deduper. So
// the window as of the checkpoint is the most recent distinct ids among the
// outbox rows with seq <= checkpoint, most recent copy first. Event
// timestamps play no part (DESIGN.md: timestamps are data, not truth): every
// seeded id counts as arriving at the restart, so the rebuilt window holds at
// least what the lost one held while the rows are retained (it may hold ids
// the lost one had already let expire; remembering longer only drops more
// later copies, which are duplicates anyway). Reading it back persists
// nothing extra and is exact after kill -9: a copy applied before the crash
// is still dropped, and an event read but not committed before the crash is
// not remembered.
//
// Thread-safety: a plain function; the window belongs to the caller.
#pragma once

#include "window.hpp"

#include "../common/sqlite.hpp"

#include <cdcflow/sdk.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cdcflow::dedupe {

// Where the ids live (config keys seed_database, seed_table, seed_*_column).
struct SeedSource {
    std::string database;
    std::string table = "outbox";
    std::string id_column = "id";
    std::string position_column = "seq";
};

// Clears `window`, advances its clock to now_s (the restart: every seeded id
// arrives then) and refills it as of `checkpoint`: reads rows with position
// <= checkpoint newest first and adds each non-empty id as the least recent
// entry, until the window is full or the rows run out. Returns the number of
// ids added.
//
// The database is opened read-only with a busy timeout. Throws
// cdcflow::Error: CDCFLOW_ERR_CONFIG naming a missing table or column,
// CDCFLOW_ERR_IO (or ERR_RETRY when the database stays busy) otherwise.
inline size_t seed_window(IdWindow &window, const SeedSource &src, int64_t checkpoint, int64_t now_s) {
    window.clear();
    window.advance_clock(now_s);
    sqlite::Db db(src.database, SQLITE_OPEN_READONLY, 5000);
    auto where = [&] { return "seed_database '" + src.database + "': "; };

    // Check the schema first, so a typo gives a message naming it rather
    // than SQLite's "no such column".
    std::vector<std::string> columns;
    {
        sqlite::Stmt info = db.prepare("SELECT name FROM pragma_table_info(?1)");
        info.bind(1, std::string_view(src.table));
        while (info.step())
            columns.emplace_back(info.text(0));
    }
    if (columns.empty())
        throw Error(CDCFLOW_ERR_CONFIG, where() + "no table '" + src.table + "' (seed_table)");
    for (auto [col, key] : {std::pair{&src.id_column, "seed_id_column"},
                            std::pair{&src.position_column, "seed_position_column"}}) {
        bool found = false;
        for (const auto &c : columns)
            found = found || sqlite3_stricmp(c.c_str(), col->c_str()) == 0;
        if (!found)
            throw Error(CDCFLOW_ERR_CONFIG,
                        where() + "table '" + src.table + "' has no column '" + *col + "' (" + key + ")");
    }

    // Newest first; stepping stops once the window is full. One statement:
    // its read transaction is one snapshot while the application keeps
    // writing.
    const std::string pos = sqlite::quote_ident(src.position_column);
    sqlite::Stmt rows =
        db.prepare("SELECT " + sqlite::quote_ident(src.id_column) + " FROM " +
                   sqlite::quote_ident(src.table) + " WHERE " + pos + " <= ?1 ORDER BY " + pos + " DESC");
    rows.bind(1, checkpoint);
    size_t added = 0;
    while (!window.full() && rows.step()) {
        if (rows.is_null(0)) continue;
        std::string_view event_id = rows.text(0);
        if (event_id.empty()) continue; // never remembered live either
        added += window.insert_oldest(event_id);
    }
    return added;
}

} // namespace cdcflow::dedupe

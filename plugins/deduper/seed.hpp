// Rebuilding the deduper's window from the outbox after a restart.
//
// Every event up to the sink's checkpoint (outbox seq) was durably
// processed, every event after it will be replayed through the deduper. So
// the window as of the checkpoint is: the most recent distinct ids among the
// outbox rows with seq <= checkpoint, most recent copy first, without those
// older than the TTL (in event time, see window.hpp). Reading it back
// persists nothing extra and is exact after kill -9: a copy applied before
// the crash is still dropped, and an event read but not committed before the
// crash is not remembered.
//
// Thread-safety: a plain function; the window belongs to the caller.
#pragma once

#include "window.hpp"

#include "../common/sqlite.hpp"

#include <cdcflow/sdk.hpp>

#include <algorithm>
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
    std::string timestamp_column = "timestamp"; // microseconds since the epoch
};

namespace detail {

// The two queries of seed_window, inside its read transaction.
inline size_t seed_rows(sqlite::Db &db, IdWindow &window, const SeedSource &src, int64_t checkpoint,
                        int64_t wall_now_us) {
    const std::string id = sqlite::quote_ident(src.id_column), ts = sqlite::quote_ident(src.timestamp_column),
                      table = sqlite::quote_ident(src.table), pos = sqlite::quote_ident(src.position_column);

    // The clock first: the TTL filter below is relative to it.
    sqlite::Stmt newest = db.prepare("SELECT max(" + ts + ") FROM (SELECT " + ts + " FROM " + table +
                                     " WHERE " + pos + " <= ?1 ORDER BY " + pos + " DESC LIMIT ?2)");
    newest.bind(1, checkpoint).bind(2, static_cast<int64_t>(window.capacity()));
    if (newest.step() && !newest.is_null(0)) window.advance_clock(std::min(newest.int64(0), wall_now_us));
    const int64_t clock = window.clock_us();

    // Newest first; stepping stops once the window is full.
    sqlite::Stmt rows = db.prepare("SELECT " + id + ", " + ts + " FROM " + table + " WHERE " + pos +
                                   " <= ?1 ORDER BY " + pos + " DESC");
    rows.bind(1, checkpoint);
    size_t added = 0;
    while (!window.full() && rows.step()) {
        if (rows.is_null(0)) continue;
        std::string_view event_id = rows.text(0);
        if (event_id.empty()) continue; // never remembered live either
        // A NULL timestamp is unknown: count it as the clock. A future one
        // (clock skew) is capped like the clock, so it cannot outlive the TTL.
        int64_t seen = rows.is_null(1) ? clock : std::min(rows.int64(1), wall_now_us);
        if (window.expired(seen)) continue;
        added += window.insert_oldest(event_id, seen);
    }
    return added;
}

} // namespace detail

// Clears `window` and refills it as of `checkpoint`. The window's clock
// becomes the newest timestamp among the last window-size rows up to the
// checkpoint, capped at wall_now_us (what the live window's clock was, up
// to clock skew deeper in the table). Then reads rows with position <=
// checkpoint newest first and adds each non-empty id within the TTL as the
// least recent entry, until the window is full or the rows run out. Returns
// the number of ids added.
//
// The database is opened read-only with a busy timeout. Throws
// cdcflow::Error: CDCFLOW_ERR_CONFIG naming a missing table or column,
// CDCFLOW_ERR_IO (or ERR_RETRY when the database stays busy) otherwise.
inline size_t seed_window(IdWindow &window, const SeedSource &src, int64_t checkpoint, int64_t wall_now_us) {
    window.clear();
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
                            std::pair{&src.position_column, "seed_position_column"},
                            std::pair{&src.timestamp_column, "seed_timestamp_column"}}) {
        bool found = false;
        for (const auto &c : columns)
            found = found || sqlite3_stricmp(c.c_str(), col->c_str()) == 0;
        if (!found)
            throw Error(CDCFLOW_ERR_CONFIG,
                        where() + "table '" + src.table + "' has no column '" + *col + "' (" + key + ")");
    }

    // One read transaction: both queries see one snapshot while the
    // application keeps writing. (On an exception, closing the connection
    // ends it.)
    db.exec("BEGIN");
    size_t added = detail::seed_rows(db, window, src, checkpoint, wall_now_us);
    db.exec("COMMIT");
    return added;
}

} // namespace cdcflow::dedupe

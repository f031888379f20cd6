// The baseline cdcflow must beat: the hand-written polling loop a team writes
// instead of a pipeline. Single-threaded: select a batch of outbox rows,
// apply each event to the accounts table with one statement, write a
// checkpoint, commit. It skips validation, dedupe and dead letters (it trusts
// its input), and keeps balances as integer cents in SQL.
//
// Usage: handwritten_loop DB [BATCH]   prints "events N seconds S events/s R"
#include <simdjson.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

static sqlite3 *db;

static void die(const char *what) {
    std::fprintf(stderr, "handwritten_loop: %s: %s\n", what, sqlite3_errmsg(db));
    std::exit(1);
}
static void exec(const char *sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) die(sql);
}
static sqlite3_stmt *prep(const char *sql) {
    sqlite3_stmt *s = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) die(sql);
    return s;
}
static int64_t cents(std::string_view a) {
    int64_t v = 0, frac = 0;
    int decimals = -1;
    for (char c : a) {
        if (c == '.') decimals = 0;
        else if (decimals < 0) v = v * 10 + (c - '0');
        else frac = frac * 10 + (c - '0'), ++decimals;
    }
    if (decimals == 1) frac *= 10;
    return v * 100 + frac;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: handwritten_loop DB [BATCH]\n");
        return 2;
    }
    int batch = argc > 2 ? std::atoi(argv[2]) : 1024;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) die("open");
    sqlite3_busy_timeout(db, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("CREATE TABLE IF NOT EXISTS hw_accounts(account_id TEXT PRIMARY KEY, owner TEXT, currency TEXT, "
         "balance_cents INTEGER, status TEXT, version INTEGER, updated_at INTEGER)");
    exec("CREATE TABLE IF NOT EXISTS hw_checkpoint(id INTEGER PRIMARY KEY, seq INTEGER)");
    exec("INSERT OR IGNORE INTO hw_checkpoint VALUES (1, 0)");
    sqlite3_stmt *sel = prep("SELECT seq, aggregateid, type, payload, timestamp FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?");
    sqlite3_stmt *create = prep("INSERT INTO hw_accounts VALUES (?, ?, ?, 0, 'open', 1, ?) ON CONFLICT(account_id) DO NOTHING");
    sqlite3_stmt *move = prep("UPDATE hw_accounts SET balance_cents = balance_cents + ?, version = version + 1, "
                              "updated_at = ? WHERE account_id = ?");
    sqlite3_stmt *close = prep("UPDATE hw_accounts SET status = 'closed', version = version + 1, updated_at = ? "
                               "WHERE account_id = ?");
    sqlite3_stmt *cp = prep("UPDATE hw_checkpoint SET seq = ? WHERE id = 1");
    simdjson::ondemand::parser parser;
    std::string buf;
    int64_t last = 0, events = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        exec("BEGIN IMMEDIATE");
        sqlite3_bind_int64(sel, 1, last);
        sqlite3_bind_int(sel, 2, batch);
        int n = 0;
        while (sqlite3_step(sel) == SQLITE_ROW) {
            ++n;
            last = sqlite3_column_int64(sel, 0);
            const char *acc = reinterpret_cast<const char *>(sqlite3_column_text(sel, 1));
            std::string_view type(reinterpret_cast<const char *>(sqlite3_column_text(sel, 2)));
            const char *p = reinterpret_cast<const char *>(sqlite3_column_text(sel, 3));
            int64_t ts = sqlite3_column_int64(sel, 4);
            buf.assign(p);
            buf.append(simdjson::SIMDJSON_PADDING, '\0');
            auto doc = parser.iterate(buf.data(), std::strlen(p), buf.size());
            if (type == "AccountCreated") {
                std::string_view owner = doc["owner"].get_string().value();
                std::string_view cur = doc["currency"].get_string().value();
                sqlite3_bind_text(create, 1, acc, -1, SQLITE_STATIC);
                sqlite3_bind_text(create, 2, owner.data(), int(owner.size()), SQLITE_TRANSIENT);
                sqlite3_bind_text(create, 3, cur.data(), int(cur.size()), SQLITE_TRANSIENT);
                sqlite3_bind_int64(create, 4, ts);
                sqlite3_step(create);
                sqlite3_reset(create);
            } else if (type == "AccountClosed") {
                sqlite3_bind_int64(close, 1, ts);
                sqlite3_bind_text(close, 2, acc, -1, SQLITE_STATIC);
                sqlite3_step(close);
                sqlite3_reset(close);
            } else {
                int64_t c = cents(doc["amount"].get_string().value());
                sqlite3_bind_int64(move, 1, type == "MoneyWithdrawn" ? -c : c);
                sqlite3_bind_int64(move, 2, ts);
                sqlite3_bind_text(move, 3, acc, -1, SQLITE_STATIC);
                sqlite3_step(move);
                sqlite3_reset(move);
            }
        }
        sqlite3_reset(sel);
        sqlite3_bind_int64(cp, 1, last);
        sqlite3_step(cp);
        sqlite3_reset(cp);
        exec("COMMIT");
        events += n;
        if (n == 0) break;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("events %lld seconds %.3f events/s %.0f\n", static_cast<long long>(events), secs, events / secs);
    sqlite3_close(db);
    return 0;
}

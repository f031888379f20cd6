// The baseline cdcflow must beat: the fastest polling loop a team would write
// by hand instead of a pipeline (issue 8: "the honest baseline"). One
// connection, one thread:
//
//   SELECT seq, aggregateid, type, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1000
//   per event: the amount cut out of the payload text (no JSON parser), one
//     INSERT ... ON CONFLICT(account_id) DO UPDATE SET balance = balance + excluded.balance
//   a checkpoint upsert, COMMIT per 1,000 events; WAL, synchronous=NORMAL.
//
// It trusts its input completely: no validation, no dedupe, no dead letters,
// no per-account rules, balances as integer cents. `type` is read only to
// give a withdrawal its sign (the issue's query leaves it out, but without it
// the loop would compute wrong balances and could not be checked against
// cdcflow's).
//
// Usage: handwritten_loop DB [BATCH]   prints "events N seconds S events/s R"
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
static void step(sqlite3_stmt *s) {
    if (sqlite3_step(s) != SQLITE_DONE) die("step");
    sqlite3_reset(s);
}

// The amount cut out of `{"amount": "12.34"}` as cents: the digits after the
// key, up to the closing quote. 0 when there is no amount (AccountCreated).
static int64_t amount_cents(std::string_view payload) {
    size_t k = payload.find("\"amount\"");
    if (k == std::string_view::npos) return 0;
    size_t q = payload.find('"', payload.find(':', k + 8));
    int64_t v = 0, frac = 0;
    int decimals = -1;
    for (size_t i = q + 1; i < payload.size() && payload[i] != '"'; ++i) {
        char c = payload[i];
        if (c == '.')
            decimals = 0;
        else if (decimals < 0)
            v = v * 10 + (c - '0');
        else
            frac = frac * 10 + (c - '0'), ++decimals;
    }
    if (decimals == 1) frac *= 10;
    return v * 100 + frac;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: handwritten_loop DB [BATCH]\n");
        return 2;
    }
    int batch = argc > 2 ? std::atoi(argv[2]) : 1000;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) die("open");
    sqlite3_busy_timeout(db, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("CREATE TABLE IF NOT EXISTS hw_accounts(account_id TEXT PRIMARY KEY, balance_cents INTEGER NOT "
         "NULL)");
    exec("CREATE TABLE IF NOT EXISTS hw_checkpoint(id INTEGER PRIMARY KEY, seq INTEGER)");
    sqlite3_stmt *sel =
        prep("SELECT seq, aggregateid, type, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?");
    sqlite3_stmt *apply = prep("INSERT INTO hw_accounts(account_id, balance_cents) VALUES (?, ?) "
                               "ON CONFLICT(account_id) DO UPDATE SET balance_cents = balance_cents + "
                               "excluded.balance_cents");
    sqlite3_stmt *cp =
        prep("INSERT INTO hw_checkpoint VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq");
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
            const char *type = reinterpret_cast<const char *>(sqlite3_column_text(sel, 2));
            const char *p = reinterpret_cast<const char *>(sqlite3_column_text(sel, 3));
            int64_t c = amount_cents({p, static_cast<size_t>(sqlite3_column_bytes(sel, 3))});
            if (std::strcmp(type, "MoneyWithdrawn") == 0) c = -c;
            sqlite3_bind_text(apply, 1, reinterpret_cast<const char *>(sqlite3_column_text(sel, 1)),
                              sqlite3_column_bytes(sel, 1), SQLITE_STATIC);
            sqlite3_bind_int64(apply, 2, c);
            step(apply);
        }
        sqlite3_reset(sel);
        if (n > 0) {
            sqlite3_bind_int64(cp, 1, last);
            step(cp);
        }
        exec("COMMIT");
        events += n;
        if (n == 0) break;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("events %lld seconds %.3f events/s %.0f\n", static_cast<long long>(events), secs,
                events / secs);
    sqlite3_close(db);
    return 0;
}

// Small RAII wrapper over the SQLite C API for the SQLite plugins: errors
// throw cdcflow::Error (the SDK's way of failing a call) with a one-line
// message naming the database and the statement; SQLITE_BUSY /
// SQLITE_LOCKED become CDCFLOW_ERR_RETRY so the host retries the batch with
// backoff. The non-throwing helpers underneath (names, column look-up,
// result codes) are core/sqlite's, shared with the producer.
//
// Thread-safety: a Db and its Stmts belong to one thread.
#pragma once

#include "sqlite/sqlite_util.hpp"

#include <cdcflow/sdk.hpp>

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::sqlite {

inline cdcflow_status status_of(int rc) {
    return is_busy(rc) ? CDCFLOW_ERR_RETRY : CDCFLOW_ERR_IO;
}

// Turns SQLite's memory statistics off for the whole process, once, before
// SQLite initializes: with them on (the default) every sqlite3_malloc and
// sqlite3_free takes one global mutex (~7% of all samples in a profile of
// the accounts benchmark), shared
// by every connection of every stage. sqlite3_config only works before
// sqlite3_initialize: when something else in the process initialized SQLite
// first (answered SQLITE_MISUSE), the statistics simply stay on. Called from
// the first Db's constructor, on the host's main thread (stages open their
// databases in create), before any stage thread runs SQLite.
inline void configure_process() {
    static const int done = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)done;
}

class Stmt;

class Db {
public:
    Db() = default;
    // flags: SQLITE_OPEN_READONLY or SQLITE_OPEN_READWRITE [| SQLITE_OPEN_CREATE].
    Db(const std::string &path, int flags, int busy_timeout_ms = 5000) : path_(path) {
        configure_process();
        int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw Error(CDCFLOW_ERR_IO, "cannot open " + database_label(path) + ": " + msg);
        }
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, busy_timeout_ms);
    }
    ~Db() {
        if (db_) sqlite3_close_v2(db_);
    }
    Db(Db &&o) noexcept : db_(std::exchange(o.db_, nullptr)), path_(std::move(o.path_)) {}
    Db &operator=(Db &&o) noexcept {
        if (this != &o) {
            if (db_) sqlite3_close_v2(db_);
            db_ = std::exchange(o.db_, nullptr);
            path_ = std::move(o.path_);
        }
        return *this;
    }

    sqlite3 *raw() const { return db_; }
    const std::string &path() const { return path_; }
    explicit operator bool() const { return db_ != nullptr; }

    void exec(const std::string &sql) {
        char *err = nullptr;
        int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string msg = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            fail(rc, msg, sql);
        }
    }
    Stmt prepare(const std::string &sql);
    int64_t changes() const { return sqlite3_changes64(db_); }
    int64_t last_rowid() const { return sqlite3_last_insert_rowid(db_); }

    // Does the table exist? (Never throws for a missing table.)
    bool has_table(const std::string &table);
    // The table's column names in declaration order (empty: no such table).
    std::vector<std::string> columns(const std::string &table);
    // The first column of the first row of a query (a PRAGMA, max(...)), or
    // `otherwise` when there is no row or it is NULL.
    int64_t query_int(const std::string &sql, int64_t otherwise = 0);
    // The journal mode in effect ("wal", "delete", ...).
    std::string journal_mode() { return query_text("PRAGMA journal_mode"); }
    // Asks for WAL (readers and the writer then do not block each other) and
    // returns the mode in effect: the switch needs a moment alone with the
    // file, so while another connection is busy the old mode stays.
    std::string switch_to_wal() { return query_text("PRAGMA journal_mode=WAL"); }
    // The first column of the first row as text ("" when there is none).
    std::string query_text(const std::string &sql);

    [[noreturn]] void fail(int rc, const std::string &msg, std::string_view sql) const {
        std::string s(sql.substr(0, 120));
        for (char &c : s)
            if (c == '\n') c = ' ';
        throw Error(status_of(rc), database_label(path_) + ": " + msg + " (in: " + s + ")");
    }

private:
    sqlite3 *db_ = nullptr;
    std::string path_;
};

class Stmt {
public:
    Stmt() = default;
    Stmt(Db &db, const std::string &sql) : db_(&db), sql_(sql) {
        int rc = sqlite3_prepare_v3(db.raw(), sql.c_str(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &st_, nullptr);
        if (rc != SQLITE_OK) db.fail(rc, sqlite3_errmsg(db.raw()), sql);
    }
    ~Stmt() {
        if (st_) sqlite3_finalize(st_);
    }
    Stmt(Stmt &&o) noexcept : db_(o.db_), st_(std::exchange(o.st_, nullptr)), sql_(std::move(o.sql_)) {}
    Stmt &operator=(Stmt &&o) noexcept {
        if (this != &o) {
            if (st_) sqlite3_finalize(st_);
            db_ = o.db_;
            st_ = std::exchange(o.st_, nullptr);
            sql_ = std::move(o.sql_);
        }
        return *this;
    }

    // Binds are 1-based. Text is bound without a copy (SQLITE_STATIC): the
    // bytes must stay valid until the statement is reset.
    Stmt &bind(int i, std::string_view v) {
        check(bind_text(st_, i, v));
        return *this;
    }
    Stmt &bind(int i, int64_t v) {
        check(sqlite3_bind_int64(st_, i, v));
        return *this;
    }
    // Bytes kept exactly as given (a BLOB), e.g. text that is not UTF-8.
    Stmt &bind_blob(int i, std::string_view v) {
        check(sqlite3_bind_blob64(st_, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC));
        return *this;
    }
    Stmt &bind_null(int i) {
        check(sqlite3_bind_null(st_, i));
        return *this;
    }
    // True while a row is available; false when done.
    bool step() {
        int rc = sqlite3_step(st_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        int err = sqlite3_extended_errcode(db_->raw());
        std::string msg = sqlite3_errmsg(db_->raw());
        sqlite3_reset(st_);
        db_->fail(err, msg, sql_);
    }
    void run() {
        step();
        reset();
    }
    void reset() {
        sqlite3_reset(st_);
        sqlite3_clear_bindings(st_);
    }
    int64_t int64(int col) const { return sqlite3_column_int64(st_, col); }
    bool is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }
    // Valid until the next step/reset.
    std::string_view text(int col) const {
        const unsigned char *p = sqlite3_column_text(st_, col);
        int n = sqlite3_column_bytes(st_, col);
        return p ? std::string_view(reinterpret_cast<const char *>(p), static_cast<size_t>(n))
                 : std::string_view();
    }
    // Rows changed by the last INSERT/UPDATE/DELETE on this statement's connection.
    int64_t changes() const { return sqlite3_changes64(sqlite3_db_handle(st_)); }
    sqlite3_stmt *raw() const { return st_; }
    explicit operator bool() const { return st_ != nullptr; }

private:
    void check(int rc) {
        if (rc != SQLITE_OK) db_->fail(rc, sqlite3_errmsg(db_->raw()), sql_);
    }
    Db *db_ = nullptr;
    sqlite3_stmt *st_ = nullptr;
    std::string sql_;
};

inline Stmt Db::prepare(const std::string &sql) {
    return Stmt(*this, sql);
}

// Resets a statement when the scope ends, also when a step throws: its read
// transaction ends and its bindings are cleared. `ResetOnExit guard{stmt};`
struct ResetOnExit {
    Stmt &s;
    ~ResetOnExit() { s.reset(); }
};

inline bool Db::has_table(const std::string &table) {
    Stmt s(*this, "SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND name = ?1");
    s.bind(1, std::string_view(table));
    return s.step();
}

inline std::vector<std::string> Db::columns(const std::string &table) {
    std::vector<std::string> out;
    if (int rc = table_columns(db_, table, &out); rc != SQLITE_OK)
        fail(rc, sqlite3_errmsg(db_), "SELECT name FROM pragma_table_info(?1)");
    return out;
}

inline int64_t Db::query_int(const std::string &sql, int64_t otherwise) {
    Stmt s(*this, sql);
    return s.step() && !s.is_null(0) ? s.int64(0) : otherwise;
}

inline std::string Db::query_text(const std::string &sql) {
    Stmt s(*this, sql);
    return s.step() ? std::string(s.text(0)) : std::string();
}

// RAII transaction: BEGIN IMMEDIATE (take the write lock up front so a busy
// database fails here, not at COMMIT); rolls back unless committed.
class Transaction {
public:
    explicit Transaction(Db &db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
    ~Transaction() {
        if (!done_) sqlite3_exec(db_.raw(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    void commit() {
        db_.exec("COMMIT");
        done_ = true;
    }

private:
    Db &db_;
    bool done_ = false;
};

} // namespace cdcflow::sqlite

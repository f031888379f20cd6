// The outbox schema module (core/outbox/schema.hpp) and the SQLite helpers
// under it (core/sqlite), on real in-memory SQLite databases.
#include "outbox/schema.hpp"
#include "sqlite/sqlite_util.hpp"

#include <cdcflow/outbox_writer.hpp>

#include <doctest/doctest.h>

#include <sqlite3.h>

#include <string>
#include <vector>

using cdcflow::outbox::Column;
using cdcflow::outbox::OutboxSchema;
using cdcflow::outbox::SchemaProblem;
namespace sqlite = cdcflow::sqlite;
namespace outbox = cdcflow::outbox;

namespace {

// An in-memory database, closed at the end of the scope.
struct MemDb {
    sqlite3 *db = nullptr;
    MemDb() { REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK); }
    ~MemDb() { sqlite3_close(db); }
    MemDb(const MemDb &) = delete;
    MemDb &operator=(const MemDb &) = delete;
    void exec(const std::string &sql) {
        char *err = nullptr;
        int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
        INFO(sql, ": ", err ? err : "");
        sqlite3_free(err);
        REQUIRE(rc == SQLITE_OK);
    }
    // Rows of a query, each row's columns joined with '|'.
    std::vector<std::string> rows(const std::string &sql) {
        sqlite3_stmt *st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        sqlite::StmtPtr guard(st);
        std::vector<std::string> out;
        while (sqlite3_step(st) == SQLITE_ROW) {
            std::string row;
            for (int i = 0; i < sqlite3_column_count(st); ++i) {
                if (i) row += '|';
                const unsigned char *t = sqlite3_column_text(st, i);
                row += t ? reinterpret_cast<const char *>(t) : "NULL";
            }
            out.push_back(row);
        }
        return out;
    }
};

} // namespace

TEST_CASE("sqlite helpers: quoting, case-insensitive names, column look-up") {
    CHECK(sqlite::quote_ident("outbox") == "\"outbox\"");
    CHECK(sqlite::quote_ident("my \"events\"") == "\"my \"\"events\"\"\"");
    CHECK(sqlite::quote_ident("") == "\"\"");
    CHECK(sqlite::same_name("AggregateType", "aggregatetype"));
    CHECK(sqlite::same_name("SEQ", "seq"));
    CHECK_FALSE(sqlite::same_name("seq", "seq "));
    CHECK_FALSE(sqlite::same_name("\xc3\x89", "\xc3\xa9")); // SQLite folds ASCII only: É is not é
    const std::vector<std::string> cols = {"Seq", "ID", "payload"};
    CHECK(sqlite::find_column(cols, "id") == 1);
    CHECK(sqlite::find_column(cols, "PAYLOAD") == 2);
    CHECK(sqlite::find_column(cols, "type") == sqlite::npos);
    CHECK(sqlite::is_busy(SQLITE_BUSY));
    CHECK(sqlite::is_busy(SQLITE_BUSY_SNAPSHOT));
    CHECK(sqlite::is_busy(SQLITE_LOCKED_SHAREDCACHE));
    CHECK_FALSE(sqlite::is_busy(SQLITE_IOERR));
    CHECK(sqlite::database_label("/tmp/a.db") == "database '/tmp/a.db'");
    CHECK(sqlite::database_label("/tmp/caf\xe9\n.db") == R"(database '/tmp/caf\xe9\x0a.db')");
    CHECK(sqlite::database_label("") == "the database");
}

TEST_CASE("sqlite::table_columns reads a table's columns in order; none for a missing table") {
    MemDb m;
    m.exec("CREATE TABLE t (b INTEGER, \"A b\" TEXT, c)");
    std::vector<std::string> cols = {"stale"};
    REQUIRE(sqlite::table_columns(m.db, "t", &cols) == SQLITE_OK);
    CHECK(cols == std::vector<std::string>{"b", "A b", "c"});
    REQUIRE(sqlite::table_columns(m.db, "T", &cols) == SQLITE_OK); // resolved as SQL does
    CHECK(cols.size() == 3);
    REQUIRE(sqlite::table_columns(m.db, "nope", &cols) == SQLITE_OK);
    CHECK(cols.empty());
}

TEST_CASE("outbox schema: the defaults are DESIGN.md's and the producer's") {
    OutboxSchema s;
    CHECK(s.table == "outbox");
    CHECK(s.name(Column::kSeq) == "seq");
    CHECK(s.name(Column::kId) == "id");
    CHECK(s.name(Column::kAggregateType) == "aggregatetype");
    CHECK(s.name(Column::kAggregateId) == "aggregateid");
    CHECK(s.name(Column::kType) == "type");
    CHECK(s.name(Column::kPayload) == "payload");
    CHECK(s.name(Column::kTimestamp) == "timestamp");
    CHECK_FALSE(s.has(Column::kVersion));
    CHECK(s.index_name() == "outbox_id_idx");
    // The producer's public options spell the defaults out again (an
    // installed header cannot include this internal one): they must agree.
    cdcflow::OutboxWriterOptions o;
    CHECK(o.table == s.table);
    CHECK(o.seq_column == s.name(Column::kSeq));
    CHECK(o.id_column == s.name(Column::kId));
    CHECK(o.aggregate_type_column == s.name(Column::kAggregateType));
    CHECK(o.aggregate_id_column == s.name(Column::kAggregateId));
    CHECK(o.type_column == s.name(Column::kType));
    CHECK(o.payload_column == s.name(Column::kPayload));
    CHECK(o.timestamp_column == s.name(Column::kTimestamp));
    CHECK(std::string(outbox::info(Column::kId).key) == "id_column");
}

TEST_CASE("outbox schema: create_sql makes the table, AUTOINCREMENT seq and one id index, idempotently") {
    MemDb m;
    OutboxSchema s;
    m.exec(s.create_sql());
    m.exec(s.create_sql()); // IF NOT EXISTS: a second creator changes nothing
    CHECK(m.rows("SELECT name, type, \"notnull\", pk FROM pragma_table_info('outbox')") ==
          std::vector<std::string>{"seq|INTEGER|0|1", "id|TEXT|1|0", "aggregatetype|TEXT|1|0",
                                   "aggregateid|TEXT|1|0", "type|TEXT|1|0", "payload|TEXT|1|0",
                                   "timestamp|INTEGER|1|0"});
    CHECK(m.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'") ==
          std::vector<std::string>{"outbox_id_idx"});
    CHECK(m.rows("SELECT name FROM pragma_index_info('outbox_id_idx')") == std::vector<std::string>{"id"});
    // AUTOINCREMENT: a deleted top row's seq is never handed out again.
    m.exec("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
           "VALUES ('e1', 'A', 'a', 'T', '{}', 1)");
    m.exec("DELETE FROM outbox");
    m.exec("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
           "VALUES ('e2', 'A', 'a', 'T', '{}', 1)");
    CHECK(m.rows("SELECT seq FROM outbox") == std::vector<std::string>{"2"});
    CHECK(s.check(m.db).ok());
}

TEST_CASE("outbox schema: configured names, odd characters and the version column") {
    MemDb m;
    OutboxSchema s;
    s.table = "my \"events\"";
    s.name(Column::kId) = "Event Id";
    s.name(Column::kVersion) = std::string("v"); // not = "v": GCC 12 -O3 -Wrestrict false positive
    const std::string index = s.index_name();
    CHECK(index == std::string_view("my \"events\"_Event Id_idx"));
    m.exec(s.create_sql());
    CHECK(m.rows("SELECT name FROM pragma_table_info('my \"events\"')").back() == "v");
    CHECK(m.rows("SELECT name FROM sqlite_master WHERE type = 'index'") ==
          std::vector<std::string>{"my \"events\"_Event Id_idx"});
    CHECK(s.check(m.db).ok());
    CHECK(s.column_list({Column::kSeq, Column::kId, Column::kVersion}) == "\"seq\", \"Event Id\", \"v\"");
    CHECK(s.insert_sql({Column::kId, Column::kVersion}) ==
          "INSERT INTO \"my \"\"events\"\"\" (\"Event Id\", \"v\") VALUES (?1, ?2)");
    s.name(Column::kVersion).clear(); // an unnamed column is left out
    CHECK(s.column_list({Column::kSeq, Column::kVersion}) == "\"seq\"");
    CHECK(s.insert_sql({Column::kId, Column::kVersion, Column::kType}, "INSERT OR ABORT") ==
          "INSERT OR ABORT INTO \"my \"\"events\"\"\" (\"Event Id\", \"type\") VALUES (?1, ?2)");
}

TEST_CASE("outbox schema: check finds columns whatever their case") {
    MemDb m;
    m.exec("CREATE TABLE Outbox (SEQ INTEGER PRIMARY KEY AUTOINCREMENT, Id TEXT, AggregateType TEXT, "
           "AGGREGATEID TEXT, Type TEXT, PayLoad TEXT, TimeStamp INTEGER, Version INTEGER)");
    OutboxSchema s;
    std::vector<std::string> have;
    SchemaProblem p = s.check(m.db, {Column::kSeq, Column::kId, Column::kPayload}, &have);
    CHECK(p.ok());
    CHECK(have.size() == 8);
    CHECK(s.check(m.db).ok());
    s.name(Column::kVersion) = "VERSION";
    CHECK(s.check(m.db).ok());
    s.table = "OUTBOX";
    CHECK(s.check(m.db).ok());
}

TEST_CASE("outbox schema: a missing table or column is named, with its key and what the table has") {
    MemDb m;
    OutboxSchema s;
    SchemaProblem p = s.check(m.db);
    CHECK(p.kind == SchemaProblem::Kind::kNoTable);
    CHECK(p.message == "has no table \"outbox\"");

    m.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, aggregatetype TEXT, "
           "aggregateid TEXT, type TEXT, timestamp INTEGER)");
    p = s.check(m.db);
    CHECK(p.kind == SchemaProblem::Kind::kNoColumn);
    CHECK(std::string(p.key) == "payload_column");
    CHECK(p.message == "table \"outbox\" has no column \"payload\" (payload_column; the table has: seq, id, "
                       "aggregatetype, aggregateid, type, timestamp)");
    // Only the columns asked for are checked.
    CHECK(s.check(m.db, {Column::kId, Column::kTimestamp}).ok());
    // The optional version column only when it is named.
    s.name(Column::kPayload) = "type";
    CHECK(s.check(m.db).ok());
    s.name(Column::kVersion) = "ver";
    p = s.check(m.db);
    CHECK(p.kind == SchemaProblem::Kind::kNoColumn);
    CHECK(std::string(p.key) == "version_column");
    CHECK(p.message.find("has no column \"ver\" (version_column;") != std::string::npos);
    // Names that are not printable are escaped: the message stays one line.
    s.table = "out\nbox";
    p = s.check(m.db);
    CHECK(p.kind == SchemaProblem::Kind::kNoTable);
    CHECK(p.message == R"(has no table "out\x0abox")");
}

TEST_CASE("outbox schema: a database error is reported, not taken for a missing table") {
    MemDb m;
    m.exec("CREATE TABLE gone (x)");
    // A view whose table is gone: reading its columns fails.
    m.exec("CREATE VIEW broken AS SELECT x FROM gone");
    m.exec("DROP TABLE gone");
    OutboxSchema s;
    s.table = "broken";
    SchemaProblem p = s.check(m.db);
    INFO(p.message);
    CHECK(p.kind == SchemaProblem::Kind::kDbError);
    CHECK(p.sqlite_rc != SQLITE_OK);
    CHECK(p.message.find("reading the columns of \"broken\"") == 0);
}

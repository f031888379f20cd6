// See schema.hpp.
#include "schema.hpp"

#include "base/text.hpp"

namespace cdcflow::outbox {

std::string OutboxSchema::index_name() const {
    std::string n = table;
    n.append("_").append(name(Column::kId)).append("_idx");
    return n;
}

std::string OutboxSchema::create_table_sql() const {
    std::string sql = "CREATE TABLE IF NOT EXISTS ";
    sql.append(quoted_table()).append(" (");
    for (size_t i = 0; i < kColumnCount; ++i) {
        if (names[i].empty()) continue;
        if (i) sql.append(", ");
        sql.append(sqlite::quote_ident(names[i])).append(" ").append(kColumns[i].declaration);
    }
    sql.append(");");
    return sql;
}

std::string OutboxSchema::create_index_sql() const {
    std::string sql = "CREATE INDEX IF NOT EXISTS ";
    sql.append(sqlite::quote_ident(index_name()));
    sql.append(" ON ").append(quoted_table()).append(" (").append(quoted(Column::kId)).append(");");
    return sql;
}

std::string OutboxSchema::create_sql() const {
    return create_table_sql() + "\n" + create_index_sql();
}

std::string OutboxSchema::column_list(std::initializer_list<Column> cols) const {
    std::string out;
    for (Column c : cols) {
        if (!has(c)) continue;
        if (!out.empty()) out.append(", ");
        out.append(quoted(c));
    }
    return out;
}

std::string OutboxSchema::insert_sql(std::initializer_list<Column> cols, const char *verb) const {
    std::string sql = verb;
    sql.append(" INTO ").append(quoted_table()).append(" (").append(column_list(cols)).append(") VALUES (");
    int n = 0;
    for (Column c : cols) {
        if (!has(c)) continue;
        if (n > 0) sql.append(", ");
        sql.append("?").append(std::to_string(++n));
    }
    sql.append(")");
    return sql;
}

SchemaProblem OutboxSchema::check(sqlite3 *db, std::initializer_list<Column> needed,
                                  std::vector<std::string> *have) const {
    std::vector<std::string> own;
    std::vector<std::string> &cols = have ? *have : own;
    SchemaProblem p;
    if (int rc = sqlite::table_columns(db, table, &cols); rc != SQLITE_OK) {
        p.kind = SchemaProblem::Kind::kDbError;
        p.sqlite_rc = rc;
        p.message = "reading the columns of ";
        base::append_text(p.message, table, '"');
        p.message.append(": ");
        base::append_text(p.message, sqlite3_errmsg(db));
        return p;
    }
    if (cols.empty()) {
        p.kind = SchemaProblem::Kind::kNoTable;
        p.message = sqlite::missing_table_message(table);
        return p;
    }
    std::vector<sqlite::WantedColumn> want;
    want.reserve(needed.size());
    for (Column c : needed)
        want.push_back({info(c).key, name(c)});
    if (const sqlite::WantedColumn *miss = sqlite::first_missing(cols, want)) {
        p.kind = SchemaProblem::Kind::kNoColumn;
        p.key = miss->key;
        p.message = sqlite::missing_column_message(table, *miss, cols);
    }
    return p;
}

SchemaProblem OutboxSchema::check(sqlite3 *db) const {
    return check(db, {Column::kSeq, Column::kId, Column::kAggregateType, Column::kAggregateId, Column::kType,
                      Column::kPayload, Column::kTimestamp, Column::kVersion});
}

} // namespace cdcflow::outbox

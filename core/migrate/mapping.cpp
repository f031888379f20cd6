#include "mapping.hpp"

#include "migrate/iso8601.hpp"

#include "base/siphash.hpp"
#include "base/text.hpp"
#include "base/utf8.hpp"
#include "sqlite/sqlite_util.hpp"

#include <cstring>

namespace cdcflow::migrate {

std::string LegacySchema::id_sql() const {
    return sqlite::quote_ident(name(LegacyColumn::kId));
}

std::string LegacySchema::table_sql() const {
    return sqlite::quote_ident(table);
}

std::string LegacySchema::select_sql(std::string_view where_and_order) const {
    std::string sql = "SELECT ";
    for (size_t i = 0; i < kLegacyColumnCount; ++i) {
        if (i) sql += ", ";
        sql += sqlite::quote_ident(names[i]);
    }
    sql += " FROM ";
    sql += table_sql();
    sql += where_and_order;
    return sql;
}

std::string LegacySchema::check(sqlite3 *db, int *db_error, int *missing_column) const {
    if (db_error) *db_error = 0;
    if (missing_column) *missing_column = -1;
    std::vector<std::string> have;
    if (int rc = sqlite::table_columns(db, table, &have); rc != SQLITE_OK) {
        if (db_error) *db_error = rc;
        return sqlite3_errmsg(db);
    }
    if (have.empty()) return sqlite::missing_table_message(table);
    std::array<sqlite::WantedColumn, kLegacyColumnCount> want;
    for (size_t i = 0; i < kLegacyColumnCount; ++i)
        want[i] = {kLegacyColumns[i].key, names[i]};
    if (const sqlite::WantedColumn *missing = sqlite::first_missing(have, want)) {
        if (missing_column) *missing_column = static_cast<int>(missing - want.data());
        return sqlite::missing_column_message(table, *missing, have);
    }
    return {};
}

static std::optional<std::string_view> column_text(sqlite3_stmt *s, int i) {
    if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
    // Blob first: its bytes as stored (text() would not change them either,
    // but a BLOB must not be converted through the connection's encoding).
    const void *p = sqlite3_column_type(s, i) == SQLITE_BLOB
                        ? sqlite3_column_blob(s, i)
                        : static_cast<const void *>(sqlite3_column_text(s, i));
    int n = sqlite3_column_bytes(s, i);
    return std::string_view(p ? static_cast<const char *>(p) : "", static_cast<size_t>(n));
}

LegacyRow read_row(sqlite3_stmt *s) {
    LegacyRow r;
    r.id = sqlite3_column_int64(s, 0);
    r.topic = column_text(s, 1);
    r.key = column_text(s, 2);
    r.type = column_text(s, 3);
    r.body = column_text(s, 4);
    r.created_at = column_text(s, 5);
    return r;
}

bool map_row(const LegacyRow &row, const LegacySchema &schema, const Uuid &ns, MappedEvent &out,
             std::string &reason) {
    struct Field {
        LegacyColumn column;
        const std::optional<std::string_view> *value;
        std::string_view *target;
    };
    const Field fields[] = {{LegacyColumn::kTopic, &row.topic, &out.aggregate_type},
                            {LegacyColumn::kKey, &row.key, &out.aggregate_id},
                            {LegacyColumn::kType, &row.type, &out.type},
                            {LegacyColumn::kBody, &row.body, &out.payload}};
    for (const Field &f : fields) {
        const std::string &col = schema.name(f.column);
        if (!*f.value) {
            reason = col + " is NULL";
            return false;
        }
        std::string_view v = **f.value;
        if (v.empty()) {
            reason = col + " is empty";
            return false;
        }
        if (!base::valid_utf8(v)) {
            reason = col + " is not valid UTF-8: ";
            base::append_quoted(reason, v, {'"', 40, true});
            return false;
        }
        *f.target = v;
    }
    const std::string &created = schema.name(LegacyColumn::kCreatedAt);
    if (!row.created_at) {
        reason = created + " is NULL";
        return false;
    }
    std::optional<int64_t> ts = parse_iso8601_us(*row.created_at);
    if (!ts) {
        reason = created + " is not an ISO 8601 date: ";
        base::append_quoted(reason, *row.created_at, {'"', 40, true});
        return false;
    }
    out.timestamp_us = *ts;
    legacy_event_id(ns, row.id, out.id);
    return true;
}

std::string_view reason_class(std::string_view reason) {
    size_t at = reason.find(": ");
    return at == std::string_view::npos ? reason : reason.substr(0, at);
}

int64_t event_checksum(std::string_view id, std::string_view aggregate_type, std::string_view aggregate_id,
                       std::string_view type, std::string_view payload, int64_t timestamp_us,
                       std::string &scratch) {
    // A fixed key: the checksum must be the same in every process and
    // release (it is stored). It detects changes, it does not authenticate.
    static constexpr base::SipKey kKey{0x6364636d69677261ULL, 0x74696f6e2d763101ULL};
    scratch.clear();
    auto put = [&scratch](std::string_view v) {
        uint64_t n = v.size();
        char len[8];
        std::memcpy(len, &n, 8);
        scratch.append(len, 8);
        scratch.append(v);
    };
    put(id);
    put(aggregate_type);
    put(aggregate_id);
    put(type);
    put(payload);
    char ts[8];
    std::memcpy(ts, &timestamp_us, 8);
    scratch.append(ts, 8);
    return static_cast<int64_t>(base::siphash128(scratch, kKey).lo);
}

} // namespace cdcflow::migrate

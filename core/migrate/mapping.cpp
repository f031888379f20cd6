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

std::string LegacySchema::check_id_key(sqlite3 *db, bool *unknown, int *db_error) const {
    *unknown = false;
    if (db_error) *db_error = 0;
    const std::string &id = name(LegacyColumn::kId);
    auto fail = [&](int rc) {
        if (db_error) *db_error = rc;
        return std::string(sqlite3_errmsg(db));
    };
    auto prepare = [&](const std::string &sql, sqlite::StmtPtr &out) {
        sqlite3_stmt *raw = nullptr;
        int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &raw, nullptr);
        out.reset(raw);
        return rc == SQLITE_OK ? SQLITE_OK : sqlite3_extended_errcode(db);
    };
    auto text = [](sqlite3_stmt *s, int i) {
        const unsigned char *p = sqlite3_column_text(s, i);
        return std::string_view(p ? reinterpret_cast<const char *>(p) : "",
                                static_cast<size_t>(sqlite3_column_bytes(s, i)));
    };
    bool keyed = false, declared_not_null = false, rowid_alias = false;
    {
        sqlite::StmtPtr info;
        if (int rc =
                prepare("SELECT name, type, \"notnull\", pk, (SELECT count(*) FROM pragma_table_info(?1) "
                        "WHERE pk > 0) FROM pragma_table_info(?1)",
                        info);
            rc)
            return fail(rc);
        sqlite::bind_text(info.get(), 1, table);
        int rc;
        while ((rc = sqlite3_step(info.get())) == SQLITE_ROW) {
            if (!sqlite::same_name(text(info.get(), 0), id)) continue;
            declared_not_null = sqlite3_column_int(info.get(), 2) != 0;
            const bool sole_pk =
                sqlite3_column_int(info.get(), 3) == 1 && sqlite3_column_int(info.get(), 4) == 1;
            keyed = sole_pk;
            // INTEGER PRIMARY KEY is the rowid itself: never NULL.
            rowid_alias = sole_pk && sqlite::same_name(text(info.get(), 1), "INTEGER");
        }
        if (rc != SQLITE_DONE) return fail(sqlite3_extended_errcode(db));
    }
    if (!keyed) {
        sqlite::StmtPtr list;
        if (int rc =
                prepare("SELECT l.name FROM pragma_index_list(?1) AS l WHERE l.\"unique\" AND NOT l.partial "
                        "AND (SELECT count(*) FROM pragma_index_info(l.name)) = 1 AND "
                        "(SELECT name FROM pragma_index_info(l.name)) = ?2 COLLATE NOCASE",
                        list);
            rc)
            return fail(rc);
        sqlite::bind_text(list.get(), 1, table);
        sqlite::bind_text(list.get(), 2, id);
        int rc = sqlite3_step(list.get());
        if (rc == SQLITE_ROW)
            keyed = true;
        else if (rc != SQLITE_DONE)
            return fail(sqlite3_extended_errcode(db));
    }
    std::string what = "table ";
    base::append_text(what, table, '"');
    what += " column ";
    base::append_text(what, id, '"');
    if (!keyed) {
        sqlite::StmtPtr kind;
        if (int rc = prepare("SELECT type FROM sqlite_schema WHERE name = ?1 COLLATE NOCASE", kind); rc)
            return fail(rc);
        sqlite::bind_text(kind.get(), 1, table);
        if (sqlite3_step(kind.get()) == SQLITE_ROW && text(kind.get(), 0) == "view") {
            *unknown = true;
            return {};
        }
        return what + " (id_column) is neither the primary key nor has a unique index: two rows with one id "
                      "would get one event id";
    }
    if (rowid_alias || declared_not_null) return {};
    sqlite::StmtPtr nulls;
    if (int rc = prepare("SELECT 1 FROM " + table_sql() + " WHERE " + id_sql() + " IS NULL LIMIT 1", nulls);
        rc)
        return fail(rc);
    int rc = sqlite3_step(nulls.get());
    if (rc == SQLITE_ROW) return what + " (id_column) holds NULL: such a row would never be read";
    if (rc != SQLITE_DONE) return fail(sqlite3_extended_errcode(db));
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
    // Numbers as 8 little-endian bytes whatever the machine: a checksum
    // stored on one machine is compared on another.
    auto put_u64 = [&scratch](uint64_t n) {
        char le[8];
        for (int i = 0; i < 8; ++i)
            le[i] = static_cast<char>((n >> (8 * i)) & 0xff);
        scratch.append(le, 8);
    };
    for (std::string_view v : {id, aggregate_type, aggregate_id, type, payload}) {
        put_u64(v.size());
        scratch.append(v);
    }
    put_u64(static_cast<uint64_t>(timestamp_us));
    return static_cast<int64_t>(base::siphash128(scratch, kKey).lo);
}

} // namespace cdcflow::migrate

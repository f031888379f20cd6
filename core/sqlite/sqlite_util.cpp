// See sqlite_util.hpp.
#include "sqlite_util.hpp"

#include "base/text.hpp"

#include <algorithm>

namespace cdcflow::sqlite {

std::string quote_ident(std::string_view name) {
    std::string out;
    out.reserve(name.size() + 2);
    out += '"';
    for (char c : name) {
        if (c == '"') out += '"';
        out += c;
    }
    out += '"';
    return out;
}

bool same_name(std::string_view a, std::string_view b) noexcept {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; };
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
}

size_t find_column(std::span<const std::string> columns, std::string_view name) noexcept {
    for (size_t i = 0; i < columns.size(); ++i)
        if (same_name(columns[i], name)) return i;
    return npos;
}

int table_columns(sqlite3 *db, std::string_view table, std::vector<std::string> *out) {
    out->clear();
    sqlite3_stmt *raw = nullptr;
    static constexpr std::string_view kSql = "SELECT name FROM pragma_table_info(?1)";
    int rc = sqlite3_prepare_v2(db, kSql.data(), static_cast<int>(kSql.size()), &raw, nullptr);
    if (rc != SQLITE_OK) return sqlite3_extended_errcode(db);
    StmtPtr st(raw);
    bind_text(raw, 1, table);
    while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_text(raw, 0);
        out->emplace_back(p ? reinterpret_cast<const char *>(p) : "",
                          static_cast<size_t>(sqlite3_column_bytes(raw, 0)));
    }
    return rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(db);
}

const WantedColumn *first_missing(std::span<const std::string> have, std::span<const WantedColumn> want) {
    for (const WantedColumn &w : want)
        if (!w.name.empty() && find_column(have, w.name) == npos) return &w;
    return nullptr;
}

std::string missing_column_message(std::string_view table, const WantedColumn &missing,
                                   std::span<const std::string> have) {
    std::string msg = "table ";
    base::append_text(msg, table, '"');
    msg.append(" has no column ");
    base::append_text(msg, missing.name, '"');
    msg.append(" (").append(missing.key).append("; the table has: ");
    for (size_t i = 0; i < have.size(); ++i) {
        if (i) msg.append(", ");
        base::append_text(msg, have[i]);
    }
    msg.append(")");
    return msg;
}

std::string database_label(std::string_view path) {
    if (path.empty()) return "the database";
    std::string out = "database ";
    base::append_text(out, path, '\'');
    return out;
}

std::string missing_table_message(std::string_view table) {
    std::string msg = "has no table ";
    base::append_text(msg, table, '"');
    return msg;
}

} // namespace cdcflow::sqlite

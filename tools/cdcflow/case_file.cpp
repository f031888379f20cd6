#include "case_file.hpp"

#include "escape.hpp"
#include "yaml_json.hpp"
#include "yaml_load.hpp"

#include "common/sqlite.hpp"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string_view>

namespace cdcflow::cli::cases {

using host::Converter;
using host::fail;
using host::kind_of;
using host::LoadError;
using host::mark_of;
using host::one_line;
using host::quote;
using host::where;
using Entry = Converter::Entry;

namespace {

// The case file's structure into a CaseFile. Values are never interpolated
// (a case file is data: "${X}" is the text "${X}").
class Reader {
public:
    explicit Reader(const std::string &file) : file_(file), conv_(file, nullptr) {}

    CaseFile read(const YAML::Node &root) {
        if (!root.IsMap())
            fail(mark_of(root),
                 std::string("a case file must be a mapping (cases, aggregate_type), got ") + kind_of(root));
        CaseFile out;
        out.file = file_;
        std::optional<Entry> cases;
        for (Entry &e : conv_.entries(root, false)) {
            if (e.key == "cases")
                cases = std::move(e);
            else if (e.key == "aggregate_type")
                default_aggregate_type_ = string_of(e);
            else
                fail(mark_of(e.k), "unknown key " + quote(e.key) + " (known: cases, aggregate_type)");
        }
        if (!cases) fail(mark_of(root), "missing required key 'cases' (a list of cases)");
        if (!cases->v.IsSequence() || cases->v.size() == 0)
            fail(mark_of(cases->v.IsNull() ? cases->k : cases->v),
                 "'cases' must be a non-empty list, got " + std::string(kind_of(cases->v)));
        std::map<std::string, Mark> names;
        for (const YAML::Node &n : cases->v) {
            Case c = read_case(n, out.cases.size() + 1);
            host::add_unique(names, c.name, c.mark, file_, "case name");
            out.cases.push_back(std::move(c));
        }
        return out;
    }

private:
    // A scalar's text; `what` names it in the message.
    std::string string_of(const Entry &e, const std::string &what = "") {
        if (!e.v.IsScalar())
            fail(mark_of(e.v.IsNull() ? e.k : e.v),
                 quote(what.empty() ? e.key : what) + " must be a string, got " + kind_of(e.v));
        return conv_.text(e.v);
    }

    int64_t int_of(const Entry &e, int64_t min) {
        const std::string what = quote(e.key) + " must be an integer" +
                                 (min == 0          ? " >= 0"
                                  : min > INT64_MIN ? " >= " + std::to_string(min)
                                                    : "") +
                                 ", got ";
        if (!e.v.IsScalar()) fail(mark_of(e.v.IsNull() ? e.k : e.v), what + kind_of(e.v));
        std::string s = conv_.text(e.v);
        std::optional<int64_t> i = e.v.Tag() == "?" ? host::parse_int(s) : std::nullopt;
        if (!i || *i < min)
            fail(mark_of(e.v), what + (e.v.Tag() == "?" ? quote(s) : "the string " + quote(s)));
        return *i;
    }

    const YAML::Node &mapping(const Entry &e, const std::string &what) {
        if (!e.v.IsMap())
            fail(mark_of(e.v.IsNull() ? e.k : e.v), what + " must be a mapping, got " + kind_of(e.v));
        return e.v;
    }

    const YAML::Node &list(const Entry &e, const std::string &what) {
        if (!e.v.IsSequence())
            fail(mark_of(e.v.IsNull() ? e.k : e.v), what + " must be a list, got " + kind_of(e.v));
        return e.v;
    }

    Case read_case(const YAML::Node &n, size_t number) {
        const std::string label = "case #" + std::to_string(number);
        if (!n.IsMap())
            fail(mark_of(n), label + " must be a mapping (name, events, expect), got " + kind_of(n));
        Case c;
        c.mark = mark_of(n);
        std::optional<Entry> events, expect;
        bool named = false;
        for (Entry &e : conv_.entries(n, false)) {
            if (e.key == "name") {
                c.name = string_of(e);
                if (c.name.empty()) fail(mark_of(e.v), "'name' must not be empty");
                named = true;
            } else if (e.key == "events") {
                events = std::move(e);
            } else if (e.key == "expect") {
                expect = std::move(e);
            } else {
                fail(mark_of(e.k),
                     "unknown key " + quote(e.key) + " in " + label + " (known: name, events, expect)");
            }
        }
        if (!named) fail(c.mark, label + " has no 'name'");
        const std::string of = " of case " + quote(c.name);
        if (!events) fail(c.mark, "case " + quote(c.name) + " has no 'events'");
        for (const YAML::Node &ev : list(*events, "'events'" + of))
            c.events.push_back(read_event(ev, number, c.events.size() + 1));
        if (c.events.empty()) fail(mark_of(events->v), "'events'" + of + " must not be empty");
        if (!expect) fail(c.mark, "case " + quote(c.name) + " has no 'expect' (tables, dead_letters)");
        read_expect(mapping(*expect, "'expect'" + of), c);
        return c;
    }

    Event read_event(const YAML::Node &n, size_t case_number, size_t number) {
        const std::string label = "event #" + std::to_string(number);
        if (!n.IsMap())
            fail(mark_of(n),
                 label + " must be a mapping (type, aggregate_id, payload...), got " + kind_of(n));
        Event ev;
        ev.mark = mark_of(n);
        ev.timestamp = kFirstTimestamp + static_cast<int64_t>(number - 1) * 1'000'000;
        bool has_id = false, has_type = false, has_aggregate_id = false, has_aggregate_type = false;
        std::optional<Mark> payload_at;
        for (Entry &e : conv_.entries(n, false)) {
            if (e.key == "id") {
                ev.id = string_of(e);
                has_id = true;
            } else if (e.key == "type") {
                ev.type = string_of(e);
                has_type = true;
            } else if (e.key == "aggregate_id") {
                ev.aggregate_id = string_of(e);
                has_aggregate_id = true;
            } else if (e.key == "aggregate_type") {
                ev.aggregate_type = string_of(e);
                has_aggregate_type = true;
            } else if (e.key == "payload" || e.key == "payload_raw") {
                if (payload_at)
                    fail(mark_of(e.k), label + " has both 'payload' and 'payload_raw' (first at " +
                                           where(file_, *payload_at) + ")");
                payload_at = mark_of(e.k);
                // payload: any YAML value, written as JSON (a mapping for a
                // valid event; a list or a scalar to test that it is refused).
                // payload_raw: the text exactly as given, JSON or not.
                ev.payload = e.key == "payload" ? conv_.value(e.v, mark_of(e.k)).json : string_of(e);
            } else if (e.key == "timestamp") {
                ev.timestamp = int_of(e, INT64_MIN);
            } else if (e.key == "version") {
                ev.version = int_of(e, 0);
                ev.version_mark = mark_of(e.v);
            } else {
                fail(mark_of(e.k),
                     "unknown key " + quote(e.key) + " in " + label +
                         " (known: id, type, aggregate_id, aggregate_type, payload, payload_raw, "
                         "timestamp, version)");
            }
        }
        if (!has_type) fail(ev.mark, label + " has no 'type'");
        if (!has_aggregate_id) fail(ev.mark, label + " has no 'aggregate_id'");
        if (!has_aggregate_type) {
            if (!default_aggregate_type_)
                fail(ev.mark, label + " has no 'aggregate_type' and the file sets no default (a top-level "
                                      "'aggregate_type:')");
            ev.aggregate_type = *default_aggregate_type_;
        }
        if (!payload_at) ev.payload = "{}";
        if (!has_id) ev.id = std::to_string(case_number) + "-" + std::to_string(number);
        return ev;
    }

    void read_expect(const YAML::Node &n, Case &c) {
        for (const Entry &e : conv_.entries(n, false)) {
            if (e.key == "tables") {
                if (e.v.IsNull()) continue;
                for (const Entry &t : conv_.entries(mapping(e, "'tables'"), false)) {
                    ExpectedTable table{t.key, mark_of(t.k), {}};
                    const std::string what = "table " + quote(t.key);
                    for (const YAML::Node &row : list(t, what + " (a list of rows)"))
                        table.rows.push_back(read_row(row, what));
                    c.tables.push_back(std::move(table));
                }
            } else if (e.key == "dead_letters") {
                auto &out = c.dead_letters.emplace();
                for (const YAML::Node &d : list(e, "'dead_letters'"))
                    out.push_back(read_dead_letter(d, c));
            } else {
                fail(mark_of(e.k),
                     "unknown key " + quote(e.key) + " in 'expect' (known: tables, dead_letters)");
            }
        }
    }

    ExpectedRow read_row(const YAML::Node &n, const std::string &what) {
        if (!n.IsMap())
            fail(mark_of(n), "a row of " + what + " must be a mapping (column: value), got " + kind_of(n));
        ExpectedRow row;
        row.mark = mark_of(n);
        for (const Entry &e : conv_.entries(n, false)) {
            if (!e.v.IsScalar() && !e.v.IsNull())
                fail(mark_of(e.v),
                     "column " + quote(e.key) + " of " + what + " must be a scalar, got " + kind_of(e.v));
            row.cells.emplace_back(e.key, expected(e));
        }
        return row;
    }

    // A plain scalar is typed as the pipeline loader types it (put_smart);
    // a quoted one is text.
    Expected expected(const Entry &e) {
        Expected x;
        x.mark = mark_of(e.v.IsNull() ? e.k : e.v);
        if (e.v.IsNull()) {
            x.text = "null";
            return x;
        }
        x.text = conv_.text(e.v);
        if (e.v.Tag() != "?") {
            x.kind = Expected::Kind::text;
            return x;
        }
        std::string json;
        host::put_smart(json, x.text);
        if (json == "null") {
            x.kind = Expected::Kind::null;
        } else if (json == "true" || json == "false") {
            x.kind = Expected::Kind::boolean;
            x.b = json == "true";
        } else if (json.starts_with('"')) {
            x.kind = Expected::Kind::text;
        } else if (std::optional<int64_t> i = host::parse_int(json)) {
            x.kind = Expected::Kind::integer;
            x.i = *i;
        } else {
            x.kind = Expected::Kind::real;
            x.d = host::parse_double(json).value_or(0);
        }
        return x;
    }

    ExpectedDeadLetter read_dead_letter(const YAML::Node &n, const Case &c) {
        if (!n.IsMap())
            fail(mark_of(n), "a dead letter must be a mapping (event or event_id, stage, reason...), got " +
                                 std::string(kind_of(n)));
        ExpectedDeadLetter d;
        d.mark = mark_of(n);
        bool has_event = false;
        std::optional<Mark> reason_at;
        for (const Entry &e : conv_.entries(n, false)) {
            if (e.key == "event_id" || e.key == "event") {
                if (has_event) fail(mark_of(e.k), "a dead letter takes one of 'event' and 'event_id'");
                has_event = true;
                if (e.key == "event_id") {
                    d.event_id = string_of(e);
                } else {
                    int64_t i = int_of(e, 1);
                    if (static_cast<uint64_t>(i) > c.events.size())
                        fail(mark_of(e.v), "'event' must be the number of one of the case's events (1 to " +
                                               std::to_string(c.events.size()) + "), got " +
                                               std::to_string(i));
                    d.event = static_cast<size_t>(i);
                    d.event_id = c.events[static_cast<size_t>(i) - 1].id;
                }
            } else if (e.key == "stage") {
                d.stage = string_of(e);
            } else if (e.key == "reason" || e.key == "reason_contains") {
                if (reason_at)
                    fail(mark_of(e.k),
                         "a dead letter takes one of 'reason' and 'reason_contains' (first at " +
                             where(file_, *reason_at) + ")");
                reason_at = mark_of(e.k);
                (e.key == "reason" ? d.reason : d.reason_contains) = string_of(e);
            } else {
                fail(mark_of(e.k),
                     "unknown key " + quote(e.key) +
                         " in a dead letter (known: event, event_id, stage, reason, reason_contains)");
            }
        }
        if (!has_event) fail(d.mark, "a dead letter needs 'event' (its number in the case) or 'event_id'");
        return d;
    }

    const std::string &file_;
    Converter conv_;
    std::optional<std::string> default_aggregate_type_;
};

bool same(const Expected &x, const Cell &v) {
    using K = Expected::Kind;
    using C = Cell::Kind;
    switch (x.kind) {
    case K::null:
        return v.kind == C::null;
    case K::boolean: // SQLite has no boolean: 1 and 0
        return v.kind == C::integer && v.i == (x.b ? 1 : 0);
    case K::integer:
        return (v.kind == C::integer && v.i == x.i) || (v.kind == C::real && v.d == static_cast<double>(x.i));
    case K::real:
        return (v.kind == C::real && v.d == x.d) || (v.kind == C::integer && static_cast<double>(v.i) == x.d);
    case K::text:
        return v.kind == C::text && v.bytes == x.text;
    }
    return false;
}

size_t column_index(const ActualTable &t, std::string_view name) {
    return sqlite::find_column(t.columns, name);
}

// "account_id='acc-1'" from the expected row's key cells; "" when the row
// does not set every key column.
std::string key_label(const ExpectedRow &row, const ActualTable &t) {
    std::string out;
    for (size_t k : t.key) {
        auto it = std::find_if(row.cells.begin(), row.cells.end(),
                               [&](const auto &c) { return sqlite::same_name(c.first, t.columns[k]); });
        if (it == row.cells.end()) return "";
        out += (out.empty() ? "" : ", ") + t.columns[k] + "=" + shown(it->second);
    }
    return out;
}

std::string row_text(const ActualTable &t, const std::vector<Cell> &row) {
    std::string out;
    for (size_t i = 0; i < row.size(); ++i)
        out += (i ? ", " : "") + t.columns[i] + "=" + shown(row[i]);
    return out;
}

std::string actual_key(const ActualTable &t, const std::vector<Cell> &row) {
    std::string out;
    for (size_t k : t.key)
        out += (out.empty() ? "" : ", ") + t.columns[k] + "=" + shown(row[k]);
    return out;
}

void compare_table(const ExpectedTable &x, const ActualTable &t, const std::string &file,
                   std::vector<std::string> &out) {
    const std::string table = "table " + quote(x.name);
    if (!t.exists) {
        out.push_back(table + ": no such table (expected at " + where(file, x.mark) + ")");
        return;
    }
    // Every column the case names must exist: a typo must not pass as "not compared".
    bool columns_ok = true;
    for (const ExpectedRow &row : x.rows)
        for (const auto &[column, value] : row.cells)
            if (column_index(t, column) == sqlite::npos) {
                std::string have;
                for (const std::string &c : t.columns)
                    have += (have.empty() ? "" : ", ") + c;
                out.push_back(table + " has no column " + quote(column) + " (at " + where(file, value.mark) +
                              "; the table has: " + have + ")");
                columns_ok = false;
            }
    if (!columns_ok) return;
    bool keyed = !t.key.empty() && std::all_of(x.rows.begin(), x.rows.end(), [&](const ExpectedRow &r) {
        return !key_label(r, t).empty();
    });
    std::vector<bool> used(t.rows.size(), false);
    for (size_t n = 0; n < x.rows.size(); ++n) {
        const ExpectedRow &row = x.rows[n];
        const std::string at = " (expected at " + where(file, row.mark) + ")";
        std::optional<size_t> match;
        std::string label;
        if (keyed) {
            label = key_label(row, t);
            for (size_t r = 0; r < t.rows.size() && !match; ++r) {
                if (used[r]) continue;
                bool all = true;
                for (size_t k : t.key)
                    for (const auto &[column, value] : row.cells)
                        if (sqlite::same_name(column, t.columns[k]) && !same(value, t.rows[r][k]))
                            all = false;
                if (all) match = r;
            }
        } else {
            label = "#" + std::to_string(n + 1);
            if (n < t.rows.size()) match = n;
        }
        if (!match) {
            out.push_back(table + ": missing row " + label + at);
            continue;
        }
        used[*match] = true;
        std::vector<std::string> diffs;
        for (const auto &[column, value] : row.cells) {
            const Cell &got = t.rows[*match][column_index(t, column)];
            if (!same(value, got))
                diffs.push_back("    " + column + ": expected " + shown(value) + ", got " + shown(got));
        }
        if (!diffs.empty()) {
            out.push_back(table + ", row " + label + at + ":");
            out.insert(out.end(), diffs.begin(), diffs.end());
        }
    }
    for (size_t r = 0; r < t.rows.size(); ++r)
        if (!used[r])
            out.push_back(table + ": unexpected row " +
                          (t.key.empty() ? "#" + std::to_string(r + 1) : actual_key(t, t.rows[r])) + ": " +
                          row_text(t, t.rows[r]));
}

// "event 3 (id '1-3')" for the event at that position (ids can repeat).
std::string event_label(const Case &c, size_t event) {
    return "event " + std::to_string(event) + " (id " + quote(c.events[event - 1].id) + ")";
}

// "event 3 (id '1-3')", or "id 'x'" for an id no event of the case has.
std::string event_label(const Case &c, const std::string &id) {
    for (size_t i = 0; i < c.events.size(); ++i)
        if (c.events[i].id == id) return "event " + std::to_string(i + 1) + " (id " + quote(id) + ")";
    return "id " + quote(id);
}

std::string expected_text(const ExpectedDeadLetter &d) {
    std::string out;
    if (d.stage) out += ", stage " + quote(*d.stage);
    if (d.reason) out += ", reason " + quote(*d.reason);
    if (d.reason_contains) out += ", reason containing " + quote(*d.reason_contains);
    return out;
}

std::string event_label(const Case &c, const ExpectedDeadLetter &d) {
    return d.event ? event_label(c, *d.event) : event_label(c, d.event_id);
}

std::string event_label(const Case &c, const ActualDeadLetter &a) {
    return a.event && *a.event >= 1 && *a.event <= c.events.size() ? event_label(c, *a.event)
                                                                   : event_label(c, a.event_id);
}

// `event: N` names one event by its position: with ids repeated on purpose
// (duplicates), another event's dead letter under the same id is not it.
bool same_event(const ExpectedDeadLetter &d, const ActualDeadLetter &a) {
    if (d.event) return a.event ? *a.event == *d.event : a.event_id == d.event_id;
    return a.event_id == d.event_id;
}

bool fits(const ExpectedDeadLetter &d, const ActualDeadLetter &a) {
    return same_event(d, a) && (!d.stage || *d.stage == a.stage) && (!d.reason || *d.reason == a.reason) &&
           (!d.reason_contains || a.reason.find(*d.reason_contains) != std::string::npos);
}

void compare_dead_letters(const Case &c, const std::vector<ExpectedDeadLetter> &want,
                          const std::vector<ActualDeadLetter> &got, const std::string &file,
                          std::vector<std::string> &out) {
    std::vector<bool> used(got.size(), false);
    // Exact fits first, so that a near miss below never takes a letter another expectation fits.
    std::vector<std::optional<size_t>> match(want.size());
    for (size_t w = 0; w < want.size(); ++w)
        for (size_t g = 0; g < got.size() && !match[w]; ++g)
            if (!used[g] && fits(want[w], got[g])) {
                match[w] = g;
                used[g] = true;
            }
    for (size_t w = 0; w < want.size(); ++w) {
        if (match[w]) continue;
        const ExpectedDeadLetter &d = want[w];
        const std::string at = " (expected at " + where(file, d.mark) + ")";
        std::optional<size_t> near;
        for (size_t g = 0; g < got.size() && !near; ++g)
            if (!used[g] && same_event(d, got[g])) near = g;
        if (!near) {
            out.push_back("dead letters: missing " + event_label(c, d) + expected_text(d) + at);
            continue;
        }
        used[*near] = true;
        const ActualDeadLetter &a = got[*near];
        out.push_back("dead letters: " + event_label(c, d) + at + ":");
        if (d.stage && *d.stage != a.stage)
            out.push_back("    stage: expected " + quote(*d.stage) + ", got " + quote(a.stage));
        if (d.reason && *d.reason != a.reason)
            out.push_back("    reason: expected " + quote(*d.reason) + ", got " + quote(a.reason));
        if (d.reason_contains && a.reason.find(*d.reason_contains) == std::string::npos)
            out.push_back("    reason: expected to contain " + quote(*d.reason_contains) + ", got " +
                          quote(a.reason));
    }
    for (size_t g = 0; g < got.size(); ++g)
        if (!used[g])
            out.push_back("dead letters: unexpected " + event_label(c, got[g]) + ", stage " +
                          quote(got[g].stage) + ": " + quote(got[g].reason));
}

Cell cell_of(sqlite::Stmt &s, int col) {
    Cell c;
    switch (sqlite3_column_type(s.raw(), col)) {
    case SQLITE_INTEGER:
        c.kind = Cell::Kind::integer;
        c.i = s.int64(col);
        break;
    case SQLITE_FLOAT:
        c.kind = Cell::Kind::real;
        c.d = sqlite3_column_double(s.raw(), col);
        break;
    case SQLITE_TEXT:
        c.kind = Cell::Kind::text;
        c.bytes = s.text(col);
        break;
    case SQLITE_BLOB: {
        c.kind = Cell::Kind::blob;
        const void *p = sqlite3_column_blob(s.raw(), col);
        int n = sqlite3_column_bytes(s.raw(), col);
        if (p && n > 0) c.bytes.assign(static_cast<const char *>(p), static_cast<size_t>(n));
        break;
    }
    default:
        break;
    }
    return c;
}

} // namespace

Result<CaseFile> parse_case_file(const std::string &text, const std::string &file) {
    return host::one_line_errors<CaseFile>(file, "the case file", [&] {
        YAML::Node root = host::load_one_document(text, "case file");
        return Reader(file).read(root);
    });
}

Result<CaseFile> load_case_file(const std::string &path) {
    std::string text;
    std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) return Status::Config("cannot read case file " + quote(path) + ": " + std::strerror(errno));
    char buf[1 << 16];
    // One byte past the loader's limit, so that the parse reports the size.
    while (text.size() <= host::kMaxFileBytes) {
        size_t n = std::fread(buf, 1, sizeof buf, f.get());
        if (n == 0) break;
        text.append(buf, n);
    }
    if (std::ferror(f.get()))
        return Status::Config("cannot read case file " + quote(path) + ": " + std::strerror(errno));
    return parse_case_file(text, path);
}

Result<Actual> read_actual(const std::string &database, const Case &c,
                           const std::string &dead_letters_table) {
    try {
        sqlite::Db db(database, SQLITE_OPEN_READONLY);
        Actual out;
        for (const ExpectedTable &x : c.tables) {
            ActualTable &t = out.tables[x.name];
            if (!db.has_table(x.name)) continue;
            t.exists = true;
            t.columns = db.columns(x.name);
            sqlite::Stmt pk(db, "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk");
            pk.bind(1, std::string_view(x.name));
            std::string order;
            while (pk.step()) {
                std::string name(pk.text(0));
                t.key.push_back(sqlite::find_column(t.columns, name));
                order += (order.empty() ? "" : ", ") + sqlite::quote_ident(name);
            }
            sqlite::Stmt rows(db, "SELECT * FROM " + sqlite::quote_ident(x.name) + " ORDER BY " +
                                      (order.empty() ? std::string("rowid") : order));
            while (rows.step()) {
                std::vector<Cell> row;
                for (int i = 0; i < static_cast<int>(t.columns.size()); ++i)
                    row.push_back(cell_of(rows, i));
                t.rows.push_back(std::move(row));
            }
        }
        if (db.has_table(dead_letters_table)) {
            // source_position: DESIGN.md's column; a table without it
            // (written by another sink) is matched by event id alone.
            const bool has_position =
                sqlite::find_column(db.columns(dead_letters_table), "source_position") != sqlite::npos;
            sqlite::Stmt s(db, std::string("SELECT event_id, stage, reason, ") +
                                   (has_position ? "source_position" : "NULL") + " FROM " +
                                   sqlite::quote_ident(dead_letters_table) + " ORDER BY rowid");
            while (s.step()) {
                ActualDeadLetter d{
                    std::string(s.text(0)), std::string(s.text(1)), std::string(s.text(2)), {}};
                std::string_view pos = s.text(3);
                size_t n = 0;
                auto [end, ec] = std::from_chars(pos.data(), pos.data() + pos.size(), n);
                if (ec == std::errc{} && end == pos.data() + pos.size() && !pos.empty()) d.event = n;
                out.dead_letters.push_back(std::move(d));
            }
        }
        return out;
    } catch (const std::exception &e) {
        return Status::from_abi(CDCFLOW_ERR_IO, one_line(std::string("reading the results: ") + e.what()));
    }
}

std::vector<std::string> compare(const Case &c, const Actual &a, const std::string &file) {
    std::vector<std::string> out;
    for (const ExpectedTable &x : c.tables) {
        auto it = a.tables.find(x.name);
        compare_table(x, it == a.tables.end() ? ActualTable{} : it->second, file, out);
    }
    // Without `dead_letters:` a case expects none: a rejection nobody listed
    // must fail the case, or `expect: {}` would pass with every event
    // rejected.
    static const std::vector<ExpectedDeadLetter> kNone;
    compare_dead_letters(c, c.dead_letters ? *c.dead_letters : kNone, a.dead_letters, file, out);
    return out;
}

std::string shown(const Cell &v) {
    switch (v.kind) {
    case Cell::Kind::null:
        return "null";
    case Cell::Kind::integer:
        return std::to_string(v.i);
    case Cell::Kind::real:
        return nlohmann::json(v.d).dump();
    case Cell::Kind::text:
        return quote(v.bytes);
    case Cell::Kind::blob:
        return "a BLOB " + quote(v.bytes);
    }
    return "?";
}

std::string shown(const Expected &v) {
    return v.kind == Expected::Kind::text ? quote(v.text) : v.text;
}

} // namespace cdcflow::cli::cases

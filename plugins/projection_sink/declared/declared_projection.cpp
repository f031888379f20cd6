#include "declared/declared_projection.hpp"

#include "base/text.hpp"
#include "json_type.hpp"
#include "reasons.hpp"
#include "sqlite/sqlite_util.hpp"

#include <cdcflow/rules.hpp>
#include <nlohmann/json.hpp>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace cdcflow::projection::declared {

using J = nlohmann::ordered_json; // declaration order matters: the first state table is `row`

namespace {

constexpr int64_t kPow10[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};

// JSON Pointer escaping of one reference token (RFC 6901).
std::string token(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '~')
            out += "~0";
        else if (c == '/')
            out += "~1";
        else
            out += c;
    }
    return out;
}

// ---------------------------------------------------------------- parse

class Parser {
public:
    explicit Parser(const Locator &locate) : locate_(locate) {}

    [[noreturn]] void fail(const std::string &pointer, const std::string &why) const {
        fail_at(locate_ ? locate_(pointer) : std::string(), pointer, why);
    }
    [[noreturn]] static void fail_at(const std::string &loc, const std::string &pointer,
                                     const std::string &why) {
        std::string where = pointer.empty() ? std::string() : " " + pointer;
        throw Error(CDCFLOW_ERR_CONFIG,
                    (loc.empty() ? std::string() : loc + ": ") + "model" + where + ": " + why);
    }

    const J &object(const J &v, const std::string &ptr, const char *what) const {
        if (!v.is_object()) fail(ptr, std::string(what) + " must be a mapping");
        return v;
    }
    std::string text(const J &v, const std::string &ptr, const char *what) const {
        if (!v.is_string()) fail(ptr, std::string(what) + " must be a string");
        return v.get<std::string>();
    }
    // Only the listed keys; a mistyped one is named.
    void only(const J &obj, const std::string &ptr, std::initializer_list<const char *> keys) const {
        for (auto it = obj.begin(); it != obj.end(); ++it) {
            bool ok = false;
            for (const char *k : keys)
                ok = ok || it.key() == k;
            if (!ok) {
                std::string list;
                for (const char *k : keys)
                    list += (list.empty() ? "" : ", ") + std::string(k);
                fail(ptr + "/" + token(it.key()), "unknown key '" + it.key() + "' (expected: " + list + ")");
            }
        }
    }

    // "text", "integer", "boolean", "decimal(2)", or {type: decimal, scale: 2}.
    Type type(const J &v, const std::string &ptr) const {
        std::string name;
        int scale = -1;
        std::string at = ptr;
        if (v.is_object()) {
            if (!v.contains("type")) fail(ptr, "missing 'type'");
            at = ptr + "/type";
            name = text(v["type"], at, "type");
            if (v.contains("scale")) {
                if (!v["scale"].is_number_integer()) fail(ptr + "/scale", "scale must be an integer 0..9");
                // Range-checked at full width: get<int>() kept the low 32
                // bits, so 4294967298 became 2 and was accepted.
                const J &sv = v["scale"];
                const bool in_range =
                    sv.is_number_unsigned()
                        ? sv.get<uint64_t>() <= uint64_t{rules::Decimal::kMaxScale}
                        : sv.get<int64_t>() >= 0 && sv.get<int64_t>() <= rules::Decimal::kMaxScale;
                if (!in_range) fail(ptr + "/scale", "scale must be 0..9, got " + sv.dump());
                scale = static_cast<int>(sv.get<int64_t>());
            }
        } else {
            name = text(v, ptr, "a type");
        }
        if (name.starts_with("decimal(") && name.ends_with(")")) {
            std::string digits = name.substr(8, name.size() - 9);
            if (digits.size() != 1 || digits[0] < '0' || digits[0] > '9')
                fail(at, "a decimal's scale is 0..9: decimal(2)");
            scale = digits[0] - '0';
            name = "decimal";
        }
        if (name == "text" || name == "integer" || name == "boolean") {
            if (scale >= 0) fail(at, "only a decimal has a scale");
            return Type{name == "text" ? Kind::text : name == "integer" ? Kind::integer : Kind::boolean, 0};
        }
        if (name == "decimal") {
            if (scale < 0) fail(at, "a decimal needs its scale: decimal(2), or scale: 2");
            return Type{Kind::decimal, scale};
        }
        fail(at, "unknown type '" + name + "' (expected: text, integer, decimal(N), boolean)");
    }

    // An expression's text: a YAML string, or a number/boolean as written.
    std::string expr_text(const J &v, const std::string &ptr) const {
        if (v.is_string()) return v.get<std::string>();
        if (v.is_number_integer() || v.is_boolean()) return v.dump();
        if (v.is_number_float())
            fail(ptr, "write a decimal literal as a string (\"12.50\"): YAML reads it as a binary float");
        fail(ptr, "an expression must be a string");
    }

    void compile_at(const std::string &text, const Scope &scope, Program &out, const std::string &ptr) const {
        std::string err;
        if (!compile(text, scope, out, err)) fail(ptr, quoted_expr(text) + ": " + err);
    }
    static std::string quoted_expr(const std::string &text) {
        return base::quoted(text, base::Quoting{'\'', 80, true});
    }

    const Locator &locate_;
};

// What names mean inside one event type's expressions.
class EventScope : public Scope {
public:
    EventScope(const Model &m, const EventRule &rule) : m_(m), rule_(rule) {}
    bool resolve(std::string_view scope, std::string_view name, Slot &out, std::string &why) const override {
        if (scope.empty()) { // `exists`: the first state table's row
            out = Slot{Source::row, m_.tables[m_.state_tables[0]].base, Type{Kind::boolean}};
            return true;
        }
        if (scope == "payload") {
            for (size_t i = 0; i < rule_.fields.size(); ++i)
                if (rule_.fields[i].name == name) {
                    out = Slot{Source::payload, static_cast<uint32_t>(i), rule_.fields[i].type};
                    return true;
                }
            why = "unknown payload field '" + std::string(name) + "' (event " + rule_.type +
                  " declares: " + list_fields() + ")";
            return false;
        }
        if (scope == "event") {
            static constexpr std::pair<const char *, uint32_t> kNames[] = {
                {"id", kEventId},
                {"aggregate_type", kEventAggregateType},
                {"aggregate_id", kEventAggregateId},
                {"type", kEventType},
                {"timestamp", kEventTimestamp},
                {"version", kEventVersion}};
            for (auto [n, slot] : kNames)
                if (name == n) {
                    Kind k = slot == kEventTimestamp || slot == kEventVersion ? Kind::integer : Kind::text;
                    out = Slot{Source::event, slot, Type{k}};
                    return true;
                }
            why = "unknown event field '" + std::string(name) +
                  "' (expected: id, aggregate_type, aggregate_id, type, timestamp, version)";
            return false;
        }
        const Table *t = nullptr;
        if (scope == "row") {
            t = &m_.tables[m_.state_tables[0]];
        } else {
            for (uint32_t ti : m_.state_tables)
                if (m_.tables[ti].name == scope) t = &m_.tables[ti];
            if (!t) {
                for (const Table &h : m_.tables)
                    if (h.name == scope) {
                        why = "table '" + h.name + "' is a history table: its rows cannot be read";
                        return false;
                    }
                why = "unknown name '" + std::string(scope) + "." + std::string(name) +
                      "' (scopes: payload, row, event, or a state table)";
                return false;
            }
        }
        if (name == "exists") {
            out = Slot{Source::row, t->base, Type{Kind::boolean}};
            return true;
        }
        if (name == t->key) {
            why = "'" + std::string(name) + "' is the key of '" + t->name + "': use event.aggregate_id";
            return false;
        }
        for (size_t i = 0; i < t->columns.size(); ++i)
            if (t->columns[i].name == name) {
                out = Slot{Source::row, t->base + 1 + static_cast<uint32_t>(i), t->columns[i].type};
                return true;
            }
        why = "table '" + t->name + "' has no column '" + std::string(name) + "'";
        return false;
    }

private:
    std::string list_fields() const {
        std::string s;
        for (const Field &f : rule_.fields)
            s += (s.empty() ? "" : ", ") + f.name;
        return s.empty() ? "none" : s;
    }
    const Model &m_;
    const EventRule &rule_;
};

void parse_tables(const Parser &p, const J &tables, Model &m) {
    p.object(tables, "/tables", "tables");
    if (tables.empty()) p.fail("/tables", "declare at least one table");
    uint32_t slots = 0;
    for (auto it = tables.begin(); it != tables.end(); ++it) {
        std::string ptr = "/tables/" + token(it.key());
        const J &t = p.object(it.value(), ptr, "a table");
        p.only(t, ptr, {"key", "history", "columns"});
        Table tab;
        tab.name = it.key();
        tab.pointer = ptr;
        // Kept: the table is checked against the database later, after
        // the config (and its locator) is gone.
        tab.location = p.locate_ ? p.locate_(ptr) : std::string();
        if (tab.name.empty() || tab.name.starts_with("sqlite_") || tab.name.starts_with("cdcflow_") ||
            tab.name == "dead_letters")
            p.fail(ptr, "table name '" + tab.name + "' is reserved");
        if (!t.contains("key")) p.fail(ptr, "missing 'key' (the primary key column)");
        tab.key = p.text(t["key"], ptr + "/key", "key");
        if (tab.key.empty()) p.fail(ptr + "/key", "key must not be empty");
        if (t.contains("history")) {
            if (!t["history"].is_boolean()) p.fail(ptr + "/history", "history must be true or false");
            tab.history = t["history"].get<bool>();
        }
        if (!t.contains("columns")) p.fail(ptr, "missing 'columns'");
        const J &cols = p.object(t["columns"], ptr + "/columns", "columns");
        for (auto c = cols.begin(); c != cols.end(); ++c) {
            std::string cptr = ptr + "/columns/" + token(c.key());
            if (sqlite::same_name(c.key(), tab.key))
                p.fail(cptr, "'" + c.key() + "' is the key column already");
            for (const Column &other : tab.columns)
                if (sqlite::same_name(other.name, c.key()))
                    p.fail(cptr, "column '" + c.key() + "' twice (names are case-insensitive)");
            tab.columns.push_back({c.key(), p.type(c.value(), cptr)});
        }
        for (const Table &other : m.tables)
            if (sqlite::same_name(other.name, tab.name)) p.fail(ptr, "table '" + tab.name + "' twice");
        if (!tab.history) {
            tab.base = slots;
            tab.index = static_cast<uint32_t>(m.state_tables.size());
            slots += 1 + static_cast<uint32_t>(tab.columns.size());
            m.state_tables.push_back(static_cast<uint32_t>(m.tables.size()));
        }
        m.tables.push_back(std::move(tab));
    }
    if (m.state_tables.empty()) p.fail("/tables", "declare at least one state table (history: false)");
    if (m.state_tables.size() > 32) p.fail("/tables", "at most 32 state tables");
    m.row_slots = slots;
}

std::optional<int64_t> bound(const Parser &p, const J &f, const char *key, const Field &field,
                             const std::string &ptr) {
    if (!f.contains(key)) return std::nullopt;
    std::string at = ptr + "/" + key;
    if (field.type.kind == Kind::integer) {
        if (!f[key].is_number_integer()) p.fail(at, std::string(key) + " must be an integer");
        return f[key].get<int64_t>();
    }
    if (field.type.kind == Kind::decimal) {
        std::string s = f[key].is_number_integer() ? f[key].dump() : p.text(f[key], at, key);
        rules::Decimal d;
        auto err = rules::Decimal::parse_within_int64(s, field.type.scale, &d);
        if (err != rules::Decimal::ParseError::kNone)
            p.fail(at, std::string(key) + " '" + s + "' " + rules::Decimal::describe(err));
        return d.units();
    }
    p.fail(at, std::string(key) + " applies to integer and decimal fields");
}

void parse_fields(const Parser &p, const J &payload, const std::string &ptr, EventRule &rule) {
    p.object(payload, ptr, "payload");
    for (auto it = payload.begin(); it != payload.end(); ++it) {
        std::string fptr = ptr + "/" + token(it.key());
        Field f;
        f.name = it.key();
        f.type = p.type(it.value(), fptr);
        if (it.value().is_object()) {
            const J &o = it.value();
            p.only(o, fptr, {"type", "scale", "required", "min", "max", "min_length", "max_length"});
            if (o.contains("required")) {
                if (!o["required"].is_boolean()) p.fail(fptr + "/required", "required must be true or false");
                f.required = o["required"].get<bool>();
            }
            f.min = bound(p, o, "min", f, fptr);
            f.max = bound(p, o, "max", f, fptr);
            for (const char *k : {"min_length", "max_length"}) {
                if (!o.contains(k)) continue;
                if (f.type.kind != Kind::text)
                    p.fail(fptr + "/" + k, std::string(k) + " applies to text fields");
                if (!o[k].is_number_integer() || o[k].get<int64_t>() < 0)
                    p.fail(fptr + "/" + k, std::string(k) + " must be an integer >= 0");
                (std::string_view(k) == "min_length" ? f.min_length : f.max_length) = o[k].get<int64_t>();
            }
        }
        rule.fields.push_back(std::move(f));
    }
}

std::vector<Piece> parse_reason(const Parser &p, const std::string &text, const Scope &scope,
                                const std::string &ptr) {
    std::vector<Piece> out;
    std::string lit;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
            lit += c; // {{ and }}: the brace itself
            ++i;
            continue;
        }
        if (c == '}') p.fail(ptr, "a '}' without its '{' (write '}}' for the brace itself)");
        if (c != '{') {
            lit += c;
            continue;
        }
        // The placeholder ends at the first '}' outside a text literal:
        // `{payload.name == '}'}` holds one. A doubled quote inside a
        // literal closes and reopens it, which this toggling follows.
        size_t end = i + 1;
        for (char quote = 0; end < text.size(); ++end) {
            const char x = text[end];
            if (quote) {
                if (x == quote) quote = 0;
            } else if (x == '\'' || x == '"') {
                quote = x;
            } else if (x == '}') {
                break;
            }
        }
        if (end >= text.size()) p.fail(ptr, "a '{' without its '}' (write '{{' for the brace itself)");
        if (!lit.empty()) out.push_back(Piece{std::move(lit), std::nullopt});
        lit.clear();
        Program prog;
        p.compile_at(text.substr(i + 1, end - i - 1), scope, prog, ptr);
        out.push_back(Piece{{}, std::move(prog)});
        i = end;
    }
    if (!lit.empty()) out.push_back(Piece{std::move(lit), std::nullopt});
    return out;
}

// Checks an assignment's type against its column; the factor that brings a
// smaller decimal scale up to the column's.
void check_assign(const Parser &p, const Column &col, Assign &a, const std::string &ptr) {
    const Type &e = a.expr.type();
    const Type &c = col.type;
    bool ok = e == c;
    if (!ok && c.kind == Kind::decimal && (e.kind == Kind::integer || e.kind == Kind::decimal)) {
        int from = e.kind == Kind::decimal ? e.scale : 0;
        if (from > c.scale)
            p.fail(ptr, Parser::quoted_expr(a.expr.text()) + " is " + type_name(e) +
                            ": it does not fit column '" + col.name + "' " + type_name(c) +
                            " without rounding");
        a.factor = kPow10[c.scale - from];
        ok = true;
    }
    if (!ok)
        p.fail(ptr, "column '" + col.name + "' is " + type_name(c) + ", " +
                        Parser::quoted_expr(a.expr.text()) + " is " + type_name(e));
}

void parse_assigns(const Parser &p, const Model &m, const J &tables, const std::string &ptr,
                   const Scope &scope, bool history,
                   std::vector<std::pair<uint32_t, std::vector<Assign>>> &out) {
    p.object(tables, ptr, history ? "insert" : "set");
    for (auto it = tables.begin(); it != tables.end(); ++it) {
        std::string tptr = ptr + "/" + token(it.key());
        uint32_t ti = 0;
        while (ti < m.tables.size() && m.tables[ti].name != it.key())
            ++ti;
        if (ti == m.tables.size()) p.fail(tptr, "unknown table '" + it.key() + "' (not under tables)");
        const Table &t = m.tables[ti];
        if (history && !t.history)
            p.fail(tptr,
                   "'" + t.name + "' is a state table: write it under set (insert is for history tables)");
        if (!history && t.history) p.fail(tptr, "'" + t.name + "' is a history table: write it under insert");
        std::vector<Assign> values;
        const J &cols = p.object(it.value(), tptr, "a table's columns");
        for (auto c = cols.begin(); c != cols.end(); ++c) {
            std::string cptr = tptr + "/" + token(c.key());
            if (c.key() == t.key)
                p.fail(cptr, "'" + t.key + "' is the key: it holds the " +
                                 (history ? std::string("event id") : std::string("aggregate id")) +
                                 " by itself");
            uint32_t ci = 0;
            while (ci < t.columns.size() && t.columns[ci].name != c.key())
                ++ci;
            if (ci == t.columns.size())
                p.fail(cptr, "table '" + t.name + "' has no column '" + c.key() + "'");
            Assign a;
            a.table = ti;
            a.column = ci;
            p.compile_at(p.expr_text(c.value(), cptr), scope, a.expr, cptr);
            check_assign(p, t.columns[ci], a, cptr);
            values.push_back(std::move(a));
        }
        out.emplace_back(ti, std::move(values));
    }
}

} // namespace

Model parse_model(std::string_view json, const Locator &locate) {
    Parser p(locate);
    J root;
    try {
        root = J::parse(json);
    } catch (const std::exception &e) {
        p.fail("", std::string("not valid JSON: ") + e.what());
    }
    p.object(root, "", "the model");
    p.only(root, "", {"aggregate_type", "tables", "events"});
    Model m;
    if (!root.contains("aggregate_type")) p.fail("", "missing 'aggregate_type'");
    m.aggregate_type = p.text(root["aggregate_type"], "/aggregate_type", "aggregate_type");
    if (m.aggregate_type.empty()) p.fail("/aggregate_type", "aggregate_type must not be empty");
    if (!root.contains("tables")) p.fail("", "missing 'tables'");
    parse_tables(p, root["tables"], m);
    if (!root.contains("events")) p.fail("", "missing 'events'");
    const J &events = p.object(root["events"], "/events", "events");
    if (events.empty()) p.fail("/events", "declare at least one event type");
    m.events.reserve(events.size());
    for (auto it = events.begin(); it != events.end(); ++it) {
        std::string ptr = "/events/" + token(it.key());
        const J &ev = it.value().is_null() ? J::object() : p.object(it.value(), ptr, "an event type");
        p.only(ev, ptr, {"payload", "require", "set", "insert"});
        EventRule rule;
        rule.type = it.key();
        if (ev.contains("payload")) parse_fields(p, ev["payload"], ptr + "/payload", rule);
        m.events.push_back(std::move(rule));
        EventRule &r = m.events.back();
        EventScope scope(m, r);
        if (ev.contains("require")) {
            const J &req = ev["require"];
            if (!req.is_array()) p.fail(ptr + "/require", "require must be a list of {check, reason}");
            for (size_t i = 0; i < req.size(); ++i) {
                std::string cptr = ptr + "/require/" + std::to_string(i);
                const J &c = p.object(req[i], cptr, "a requirement");
                p.only(c, cptr, {"check", "reason"});
                if (!c.contains("check")) p.fail(cptr, "missing 'check'");
                if (!c.contains("reason")) p.fail(cptr, "missing 'reason'");
                Check chk;
                p.compile_at(p.expr_text(c["check"], cptr + "/check"), scope, chk.cond, cptr + "/check");
                if (chk.cond.type().kind != Kind::boolean)
                    p.fail(cptr + "/check", "a check must be boolean, " +
                                                Parser::quoted_expr(chk.cond.text()) + " is " +
                                                type_name(chk.cond.type()));
                chk.reason =
                    parse_reason(p, p.text(c["reason"], cptr + "/reason", "reason"), scope, cptr + "/reason");
                r.checks.push_back(std::move(chk));
            }
        }
        std::vector<std::pair<uint32_t, std::vector<Assign>>> groups;
        if (ev.contains("set")) parse_assigns(p, m, ev["set"], ptr + "/set", scope, false, groups);
        for (auto &[t, values] : groups)
            for (Assign &a : values)
                r.sets.push_back(std::move(a));
        // A state table under set with no columns still creates or touches its row.
        groups.clear();
        if (ev.contains("insert")) parse_assigns(p, m, ev["insert"], ptr + "/insert", scope, true, groups);
        for (auto &[t, values] : groups)
            r.inserts.push_back(Insert{t, std::move(values)});
        // Tables set with no columns are remembered as an empty group: keep
        // them so the row is created.
        if (ev.contains("set"))
            for (auto t = ev["set"].begin(); t != ev["set"].end(); ++t)
                if (t.value().empty())
                    for (uint32_t ti = 0; ti < m.tables.size(); ++ti)
                        if (m.tables[ti].name == t.key()) {
                            Assign touch;
                            touch.table = ti;
                            touch.column = UINT32_MAX; // creates the row, sets nothing
                            r.sets.push_back(std::move(touch));
                        }
        m.max_fields = std::max(m.max_fields, r.fields.size());
    }
    return m;
}

// ------------------------------------------------------------ projection

struct DeclaredProjection::Json {
    simdjson::dom::parser parser;
};

DeclaredProjection::DeclaredProjection(std::string_view model_json, const Locator &locate,
                                       const ProjectionOptions &opts, cdcflow::Context ctx)
    : model_(parse_model(model_json, locate)), rows_(opts.cache_size, ctx), json_(std::make_unique<Json>()) {
    payload_.resize(model_.max_fields);
    unescaped_.resize(model_.max_fields);
    size_t most = 0;
    for (const EventRule &r : model_.events) {
        most = std::max(most, r.sets.size());
        for (const Insert &ins : r.inserts)
            most = std::max(most, ins.values.size());
    }
    staged_.resize(most);
    staged_text_.resize(most);
    size_t inserted = 0;
    for (const EventRule &r : model_.events) {
        size_t n = 0;
        for (const Insert &ins : r.inserts)
            n += ins.values.size();
        inserted = std::max(inserted, n);
    }
    insert_staged_.resize(inserted);
    for (const Table &t : model_.tables)
        most = std::max(most, t.columns.size());
    decimal_bufs_.resize(most);
}

DeclaredProjection::~DeclaredProjection() = default;

std::vector<std::string> DeclaredProjection::tables() const {
    std::vector<std::string> out;
    for (const Table &t : model_.tables)
        out.push_back(t.name);
    return out;
}

namespace {

const char *sql_type(const Type &t) {
    return t.kind == Kind::integer || t.kind == Kind::boolean ? "INTEGER" : "TEXT";
}

// A decimal column as the sink wrote it: Decimal::format's text, which has a
// '-' for a negative result (`row.balance - payload.amount`). The payload
// parser refuses signs (a payload amount is never signed), so the stored
// value is read here with its sign; without it every restart after a
// negative result stopped the pipeline on "malformed" rows. The magnitude of
// INT64_MIN does not fit an int64, so that one value is matched as text.
bool parse_stored_decimal(std::string_view s, int scale, int64_t *units) {
    const bool negative = !s.empty() && s.front() == '-';
    if (negative) s.remove_prefix(1);
    rules::Decimal d;
    auto err = rules::Decimal::parse_within_int64(s, scale, &d);
    if (err == rules::Decimal::ParseError::kNone) {
        *units = negative ? -d.units() : d.units();
        return true;
    }
    if (!negative || err != rules::Decimal::ParseError::kOutOfRange) return false;
    char buf[32];
    std::string_view min(buf, rules::Decimal(INT64_MIN, scale).format(buf));
    if (min.substr(1) != s) return false;
    *units = INT64_MIN;
    return true;
}

} // namespace

void DeclaredProjection::create_schema(sqlite::Db &db) {
    for (const Table &t : model_.tables) {
        std::string sql = "CREATE TABLE IF NOT EXISTS " + sqlite::quote_ident(t.name) + "(" +
                          sqlite::quote_ident(t.key) + " TEXT PRIMARY KEY";
        for (const Column &c : t.columns)
            sql += ", " + sqlite::quote_ident(c.name) + " " + sql_type(c.type);
        db.exec(sql + ")");
    }
}

void DeclaredProjection::check_existing(sqlite::Db &db) {
    check_columns(db, true);
}

void DeclaredProjection::check_columns(sqlite::Db &db, bool only_existing) const {
    // Every table must be the declaration: the same columns (any order,
    // names case-insensitive), nothing missing, nothing more.
    for (const Table &t : model_.tables) {
        if (only_existing && !db.has_table(t.name)) continue;
        std::vector<std::string> have = db.columns(t.name);
        std::vector<std::string> want{t.key};
        for (const Column &c : t.columns)
            want.push_back(c.name);
        auto list = [](const std::vector<std::string> &v) {
            std::string s;
            for (const std::string &x : v)
                s += (s.empty() ? "" : ", ") + base::text(x);
            return s;
        };
        bool same = have.size() == want.size();
        for (const std::string &w : want)
            same = same && sqlite::find_column(have, w) != sqlite::npos;
        if (!same)
            Parser::fail_at(t.location, t.pointer,
                            "table '" + t.name + "' in " + sqlite::database_label(db.path()) +
                                " has columns (" + list(have) + "), the model declares (" + list(want) + ")");
        check_types(db, t);
    }
}

void DeclaredProjection::check_types(sqlite::Db &db, const Table &t) const {
    // The names alone are not enough: a REAL `price` column would turn
    // '12.30' into a binary float (money through floating point), and a
    // table whose key is not its PRIMARY KEY passes the name check but fails
    // every upsert ("ON CONFLICT clause does not match") or, for a history
    // table, takes the same event twice. So each column's type affinity (the
    // SQLite rule: INT -> INTEGER; CHAR, CLOB, TEXT -> TEXT) must be the
    // declared one, and the key must be the whole primary key.
    auto affinity = [](std::string type) {
        for (char &c : type)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (type.find("INT") != std::string::npos) return "INTEGER";
        if (type.find("CHAR") != std::string::npos || type.find("CLOB") != std::string::npos ||
            type.find("TEXT") != std::string::npos)
            return "TEXT";
        return "not TEXT or INTEGER";
    };
    const std::string where = "table '" + t.name + "' in " + sqlite::database_label(db.path());
    auto s = db.prepare("SELECT name, type, pk FROM pragma_table_info(?1)");
    s.bind(1, t.name);
    while (s.step()) {
        const std::string name(s.text(0));
        const std::string type(s.text(1));
        const bool is_key = sqlite::find_column(std::vector<std::string>{t.key}, name) != sqlite::npos;
        const Type *declared = nullptr;
        for (const Column &c : t.columns)
            if (sqlite::find_column(std::vector<std::string>{c.name}, name) != sqlite::npos)
                declared = &c.type;
        const char *want = is_key || !declared ? "TEXT" : sql_type(*declared);
        if (std::string_view(affinity(type)) != want)
            Parser::fail_at(t.location, t.pointer,
                            where + ": column " + base::text(name) + " is " +
                                (type.empty() ? std::string("untyped") : base::text(type)) +
                                ", the model needs " + want +
                                (is_key ? " PRIMARY KEY" : " (for " + type_name(*declared) + ")"));
        if ((s.int64(2) != 0) != is_key)
            Parser::fail_at(t.location, t.pointer,
                            where + ": the primary key must be the key column " + base::text(t.key) +
                                " alone (the upserts and the history rows' event ids rely on it)");
    }
}

void DeclaredProjection::open(sqlite::Db &db) {
    // Checked before any statement exists, so a refusal leaves nothing
    // prepared on a connection the caller is about to close.
    check_columns(db, false);
    const Table *at = nullptr;
    try {
        for (Table &t : model_.tables) {
            at = &t;
            prepare(db, t);
        }
    } catch (const Error &e) {
        close();
        Parser::fail_at(at->location, at->pointer, "table '" + at->name + "': " + e.what());
    }
    db_ = &db;
}

void DeclaredProjection::prepare(sqlite::Db &db, Table &t) {
    const std::string name = sqlite::quote_ident(t.name), key = sqlite::quote_ident(t.key);
    std::string cols, params, updates, excluded;
    for (size_t i = 0; i < t.columns.size(); ++i) {
        std::string c = sqlite::quote_ident(t.columns[i].name);
        std::string n = std::to_string(i + 2);
        cols += ", " + c;
        params += ", ?" + n;
        updates += (i ? ", " : "") + c + " = ?" + n;
        excluded += (i ? ", " : "") + c + " = excluded." + c;
    }
    if (t.history) {
        // A second row for one event id means the event was applied twice:
        // DO NOTHING, and apply() refuses it.
        t.insert = db.prepare("INSERT INTO " + name + "(" + key + cols + ") VALUES(?1" + params +
                              ") ON CONFLICT DO NOTHING");
        // Asked only for a rejected event (applied_before).
        t.select = db.prepare("SELECT 1 FROM " + name + " WHERE " + key + " = ?1");
        return;
    }
    t.select = db.prepare("SELECT rowid" + cols + " FROM " + name + " WHERE " + key + " = ?1");
    // As AccountsProjection: by rowid, guarded by the key against a
    // renumbering (VACUUM); the upsert otherwise.
    std::string last = std::to_string(t.columns.size() + 2);
    if (!t.columns.empty())
        t.update = db.prepare("UPDATE " + name + " SET " + updates + " WHERE rowid = ?" + last + " AND " +
                              key + " = ?1");
    t.upsert = db.prepare("INSERT INTO " + name + "(" + key + cols + ") VALUES(?1" + params +
                          ") ON CONFLICT(" + key + ") DO " +
                          (excluded.empty() ? "NOTHING" : "UPDATE SET " + excluded) + " RETURNING rowid");
}

void DeclaredProjection::close() {
    for (Table &t : model_.tables)
        t.select = {}, t.update = {}, t.upsert = {}, t.insert = {};
    rows_.clear();
    db_ = nullptr;
}

void DeclaredProjection::store(Rows &r, uint32_t cell, const Value &v, const Type &t) {
    if (t.kind == Kind::text && !v.null) {
        std::string &s = r.texts[cell];
        s.assign(v.p, v.n);
        r.cells[cell] = Value::of_text(s);
    } else {
        r.cells[cell] = v;
    }
}

DeclaredProjection::Cache::Node *DeclaredProjection::row(std::string_view id) {
    if (Cache::Node *n = rows_.find(id)) return n;
    Cache::Node *n = rows_.insert(id);
    Rows &r = n->row;
    r.cells.assign(model_.row_slots, Value{});
    r.texts.resize(model_.row_slots);
    r.rowids.assign(model_.state_tables.size(), 0);
    r.dirty = 0;
    for (uint32_t ti : model_.state_tables) {
        Table &t = model_.tables[ti];
        t.select.bind(1, id);
        sqlite::ResetOnExit guard{t.select};
        r.cells[t.base] = Value::of_int(0);
        if (!t.select.step()) continue;
        r.cells[t.base] = Value::of_int(1);
        r.rowids[t.index] = t.select.int64(0);
        for (size_t i = 0; i < t.columns.size(); ++i) {
            const int col = static_cast<int>(i + 1);
            const uint32_t cell = t.base + 1 + static_cast<uint32_t>(i);
            const Type &type = t.columns[i].type;
            if (t.select.is_null(col)) continue;
            switch (type.kind) {
            case Kind::text:
                store(r, cell, Value::of_text(t.select.text(col)), type);
                break;
            case Kind::integer:
            case Kind::boolean:
                r.cells[cell] = Value::of_int(t.select.int64(col));
                break;
            case Kind::decimal: {
                std::string_view s = t.select.text(col);
                int64_t units = 0;
                if (!parse_stored_decimal(s, type.scale, &units))
                    throw Error(CDCFLOW_ERR_IO,
                                t.name + ": row " + base::quoted(id, kValueQuoting) + " has a malformed " +
                                    t.columns[i].name + " " + base::quoted(s, kValueQuoting) + " (not a " +
                                    type_name(type) + "; the table was edited outside cdcflow?)");
                r.cells[cell] = Value::of_int(units);
                break;
            }
            }
        }
    }
    return n;
}

bool DeclaredProjection::read_payload(const EventRule &rule, const cdcflow_payload &parsed,
                                      std::string &reason) {
    if (parsed.result == CDCFLOW_PAYLOAD_INVALID) {
        // The host's parser stops at a number beyond 64 bits with a generic
        // "Problem while parsing a number"; for a model whose integers are
        // 64-bit, say what it most likely is.
        std::string_view why = parsed.error ? parsed.error : "payload is not valid JSON";
        if (why.ends_with(simdjson::error_message(simdjson::NUMBER_ERROR)))
            return reject(reason, "payload has a number out of the 64-bit range, or malformed (", why, ")");
        return reject(reason, why);
    }
    if (parsed.result != CDCFLOW_PAYLOAD_OBJECT) return reject(reason, "payload is not a JSON object");
    const size_t nf = rule.fields.size();
    for (size_t k = 0; k < nf; ++k)
        payload_[k] = Value{};
    uint64_t seen = 0; // bit k: field k found (at most 64 tracked; more fields are checked by null)
    for (uint32_t k = 0; k < parsed.field_count; ++k) {
        const cdcflow_json_field &f = cdcflow::Batch::field(parsed, k);
        std::string_view key(f.key.data, static_cast<size_t>(f.key.len));
        size_t idx = 0;
        while (idx < nf && !same_text(rule.fields[idx].name, key))
            ++idx;
        if (idx == nf) continue; // extra fields are allowed (the host checked their JSON)
        const Field &fd = rule.fields[idx];
        if (idx < 64) {
            if (seen & (uint64_t{1} << idx))
                return reject_quoted(reason, "payload has field ", key, " more than once");
            seen |= uint64_t{1} << idx;
        }
        std::string_view raw(f.value.data, static_cast<size_t>(f.value.len));
        Value &v = payload_[idx];
        switch (fd.type.kind) {
        case Kind::integer: {
            // A JSON integer as written: no fraction, no exponent ("5.0" and
            // "1e2" are numbers, not integers).
            if (f.type != CDCFLOW_JSON_NUMBER)
                return reject_quoted(reason, "field ", key,
                                     std::string(" must be a JSON integer, got ") +
                                         rules::json_type_name(f.type));
            int64_t x = 0;
            auto [end, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), x);
            if (ec == std::errc::result_out_of_range)
                return reject_quoted(reason, "field ", key, " is out of the 64-bit integer range");
            if (ec != std::errc{} || end != raw.data() + raw.size())
                return reject_quoted(reason, "field ", key,
                                     " must be a JSON integer (no fraction or exponent), got " +
                                         std::string(raw.substr(0, 40)));
            v = Value::of_int(x);
            break;
        }
        case Kind::decimal: {
            if (f.type != CDCFLOW_JSON_STRING)
                return reject_quoted(reason, "field ", key,
                                     std::string(" must be a JSON string of digits, got ") +
                                         rules::json_type_name(f.type));
            std::string_view s = raw.substr(1, raw.size() - 2);
            if (f.has_escape) {
                // Read as any JSON parser reads it ("\u0031" is "1"), as the
                // accounts model and the validator do; rare, so unescaped
                // by simdjson here rather than on the common path.
                std::string_view un;
                if (json_->parser.parse(raw.data(), raw.size()).get_string().get(un) != simdjson::SUCCESS)
                    return reject_quoted(reason, "field ", key, " is not a valid JSON string");
                unescaped_[idx].assign(un);
                s = unescaped_[idx];
            }
            rules::Decimal d;
            using E = rules::Decimal::ParseError;
            E err = rules::Decimal::parse_within_int64(s, fd.type.scale, &d);
            if (err != E::kNone) {
                reason.assign("invalid ");
                reason.append(key).append(" ");
                base::append_quoted(reason, s, kValueQuoting);
                if (err == E::kTooManyDecimals)
                    reason.append(": more than ").append(std::to_string(fd.type.scale)).append(" decimals");
                else if (err == E::kOutOfRange)
                    reason.append(": too large");
                else
                    reason.append(": expected digits with at most ")
                        .append(std::to_string(fd.type.scale))
                        .append(" decimals, e.g. \"12.34\"");
                return false;
            }
            v = Value::of_int(d.units());
            break;
        }
        case Kind::text: {
            if (f.type != CDCFLOW_JSON_STRING)
                return reject_quoted(reason, "field ", key,
                                     std::string(" must be a JSON string, got ") +
                                         rules::json_type_name(f.type));
            if (f.has_escape) {
                // Rare: unescaped by simdjson into this field's own buffer.
                std::string_view un;
                if (json_->parser.parse(raw.data(), raw.size()).get_string().get(un) != simdjson::SUCCESS)
                    return reject_quoted(reason, "field ", key, " is not a valid JSON string");
                unescaped_[idx].assign(un);
                v = Value::of_text(unescaped_[idx]);
            } else {
                v = Value::of_text(raw.substr(1, raw.size() - 2));
            }
            break;
        }
        case Kind::boolean:
            if (f.type != CDCFLOW_JSON_BOOL)
                return reject_quoted(reason, "field ", key,
                                     std::string(" must be a JSON boolean, got ") +
                                         rules::json_type_name(f.type));
            v = Value::of_int(raw == "true" ? 1 : 0);
            break;
        }
    }
    for (size_t k = 0; k < nf; ++k) {
        const Field &fd = rule.fields[k];
        const Value &v = payload_[k];
        if (v.null) {
            if (fd.required) return reject_quoted(reason, "missing field ", fd.name);
            continue;
        }
        if (fd.type.kind == Kind::text) {
            if (fd.min_length || fd.max_length) {
                int64_t chars = 0; // code points: the host checked the UTF-8
                for (char c : v.text())
                    chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
                if (fd.min_length && chars < *fd.min_length)
                    return reject_quoted(reason, "field ", fd.name,
                                         *fd.min_length == 1
                                             ? " must be a non-empty string"
                                             : " must have at least " + std::to_string(*fd.min_length) +
                                                   " characters");
                if (fd.max_length && chars > *fd.max_length)
                    return reject_quoted(reason, "field ", fd.name,
                                         " must have at most " + std::to_string(*fd.max_length) +
                                             " characters");
            }
            continue;
        }
        auto show = [&](int64_t x) {
            std::string s;
            append_value(s, Value::of_int(x), fd.type);
            return s;
        };
        if (fd.min && v.i < *fd.min) {
            reason.assign(fd.name)
                .append(" must be at least ")
                .append(show(*fd.min))
                .append(", got ")
                .append(show(v.i));
            return false;
        }
        if (fd.max && v.i > *fd.max) {
            reason.assign(fd.name)
                .append(" must be at most ")
                .append(show(*fd.max))
                .append(", got ")
                .append(show(v.i));
            return false;
        }
    }
    return true;
}

bool DeclaredProjection::eval(const Program &p, const Value *row, Value &out, std::string &reason) {
    if (p.run(payload_.data(), row, event_, out)) return true;
    reason.assign("arithmetic overflow in ");
    base::append_quoted(reason, p.text(), base::Quoting{'\'', 80, true});
    return false;
}

bool DeclaredProjection::apply(const cdcflow_event &e, std::string &reason) {
    (void)e;
    duplicate_ = false;
    // Only an ABI 1/2 host has no shared parse; the declared model reads
    // payloads through it alone (one strict reading, not two).
    return reject(reason, "the declared model needs the host's payload parse (event_payload, ABI 3)");
}

bool DeclaredProjection::apply(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason) {
    duplicate_ = false;
    if (apply_event(e, parsed, reason)) return true;
    // A copy of an applied event (past the deduper's window) can fail its
    // checks now (the product it repriced was delisted since): it is still
    // a copy, not a dead letter. Asked only on this rare path.
    if (!duplicate_ && applied_before(e)) duplicate_ = true;
    return false;
}

bool DeclaredProjection::applied_before(const cdcflow_event &e) {
    const std::string_view type = sv(e.event_type);
    for (const EventRule &r : model_.events) {
        if (!same_text(r.type, type)) continue;
        if (r.inserts.empty()) return false; // no trace of an earlier application
        Table &t = model_.tables[r.inserts.front().table];
        t.select.bind(1, sv(e.event_id));
        sqlite::ResetOnExit guard{t.select};
        return t.select.step();
    }
    return false;
}

bool DeclaredProjection::apply_event(const cdcflow_event &e, const cdcflow_payload &parsed,
                                     std::string &reason) {
    const std::string_view agg_type = sv(e.aggregate_type), id = sv(e.aggregate_id), type = sv(e.event_type);
    if (!same_text(agg_type, model_.aggregate_type))
        return reject_quoted(reason, "aggregate type ", agg_type, " is not " + model_.aggregate_type);
    if (id.empty()) return reject(reason, "empty aggregate id");
    const EventRule *rule = nullptr;
    for (const EventRule &r : model_.events)
        if (same_text(r.type, type)) {
            rule = &r;
            break;
        }
    if (!rule) return reject_quoted(reason, "unknown event type ", type);
    if (!read_payload(*rule, parsed, reason)) return false;

    event_[kEventId] = Value::of_text(sv(e.event_id));
    event_[kEventAggregateType] = Value::of_text(agg_type);
    event_[kEventAggregateId] = Value::of_text(id);
    event_[kEventType] = Value::of_text(type);
    event_[kEventTimestamp] = Value::of_int(e.timestamp_us);
    event_[kEventVersion] = e.aggregate_version >= 0 ? Value::of_int(e.aggregate_version) : Value{};

    Cache::Node *n = row(id);
    Rows &r = n->row;
    const Value *cells = r.cells.data();
    Value v;
    for (const Check &c : rule->checks) {
        if (!eval(c.cond, cells, v, reason)) return false;
        if (!v.null && v.i) continue;
        reason.clear();
        for (const Piece &piece : c.reason) {
            if (!piece.expr) {
                reason.append(piece.text);
            } else if (!piece.expr->run(payload_.data(), cells, event_, v)) {
                reason.append("(overflow)");
            } else {
                append_value(reason, v, piece.expr->type());
            }
        }
        return false;
    }
    // Every effect is computed against the row as it was (like SQL's
    // UPDATE), staged, and only then stored: a failure leaves it untouched.
    const auto &sets = rule->sets;
    for (size_t k = 0; k < sets.size(); ++k) {
        const Assign &a = sets[k];
        if (a.column == UINT32_MAX) continue;
        Value &s = staged_[k];
        if (!eval(a.expr, cells, s, reason)) return false;
        if (a.factor != 1 && !s.null && __builtin_mul_overflow(s.i, a.factor, &s.i))
            return reject(reason, "arithmetic overflow scaling ", a.expr.text());
        if (a.expr.type().kind == Kind::text && !s.null) {
            // Copied: the staged text may point into a cell about to change.
            staged_text_[k].assign(s.p, s.n);
            s = Value::of_text(staged_text_[k]);
        }
    }
    if (!rule->inserts.empty()) {
        // Every history value first: an overflow in the second table's
        // must not leave the first table's row behind.
        size_t v = 0;
        for (const Insert &ins : rule->inserts)
            for (const Assign &a : ins.values) {
                Value &s = insert_staged_[v++];
                if (!eval(a.expr, cells, s, reason)) return false;
                if (a.factor != 1 && !s.null && __builtin_mul_overflow(s.i, a.factor, &s.i))
                    return reject(reason, "arithmetic overflow scaling ", a.expr.text());
            }
        v = 0;
        bool first = true;
        for (const Insert &ins : rule->inserts) {
            Table &t = model_.tables[ins.table];
            sqlite::ResetOnExit guard{t.insert};
            for (size_t k = 0; k < ins.values.size(); ++k) {
                const Assign &a = ins.values[k];
                bind(t.insert, static_cast<int>(a.column + 2), insert_staged_[v++], t.columns[a.column].type,
                     decimal_bufs_[k].data());
            }
            t.insert.bind(1, sv(e.event_id));
            t.insert.step();
            if (t.insert.changes() != 1 && first) {
                // The event id was applied before (a copy the deduper no
                // longer held): nothing of this copy is written yet, so it
                // is skipped whole as a duplicate.
                duplicate_ = true;
                return reject(reason, "a copy of an applied event");
            }
            first = false;
            if (t.insert.changes() != 1)
                // The first history table did not have the id but this one
                // does: the tables were edited outside cdcflow. This one
                // event fails (the batch rolls back, the host's bisection
                // dead-letters the event alone).
                throw Error(CDCFLOW_ERR_EVENT, "table '" + t.name + "' already has a row for event id " +
                                                   base::quoted(sv(e.event_id), kValueQuoting));
        }
    }
    for (size_t k = 0; k < sets.size(); ++k) {
        const Assign &a = sets[k];
        const Table &t = model_.tables[a.table];
        r.cells[t.base] = Value::of_int(1);
        r.dirty |= 1u << t.index;
        if (a.column == UINT32_MAX) continue;
        store(r, t.base + 1 + a.column, staged_[k], t.columns[a.column].type);
    }
    n->dirty = n->dirty || r.dirty != 0;
    return true;
}

void DeclaredProjection::bind(sqlite::Stmt &s, int i, const Value &v, const Type &t, char *buf) {
    if (v.null) {
        s.bind_null(i);
        return;
    }
    switch (t.kind) {
    case Kind::text:
        s.bind(i, v.text());
        return;
    case Kind::integer:
    case Kind::boolean:
        s.bind(i, v.i);
        return;
    case Kind::decimal:
        s.bind(i, std::string_view(buf, rules::Decimal(v.i, t.scale).format(buf)));
        return;
    }
}

void DeclaredProjection::write_batch() {
    auto &bufs = decimal_bufs_;
    for (Cache::Node *n : rows_.touched()) {
        if (!n->dirty) continue;
        Rows &r = n->row;
        for (uint32_t ti : model_.state_tables) {
            Table &t = model_.tables[ti];
            if (!(r.dirty & (1u << t.index))) continue;
            auto bind_row = [&](sqlite::Stmt &s) {
                s.bind(1, std::string_view(n->key));
                for (size_t i = 0; i < t.columns.size(); ++i)
                    bind(s, static_cast<int>(i + 2), r.cells[t.base + 1 + i], t.columns[i].type,
                         bufs[i].data());
            };
            int64_t &rowid = r.rowids[t.index];
            if (rowid != 0 && t.update) {
                bind_row(t.update);
                t.update.bind(static_cast<int>(t.columns.size() + 2), rowid);
                t.update.run();
                if (t.update.changes() == 1) continue;
            }
            if (rowid != 0 && !t.update) continue; // a key-only row that is stored already
            bind_row(t.upsert);
            sqlite::ResetOnExit guard{t.upsert};
            rowid = t.upsert.step() ? t.upsert.int64(0) : rowid;
        }
    }
}

void DeclaredProjection::batch_committed() {
    for (Cache::Node *n : rows_.touched())
        n->row.dirty = 0;
    rows_.committed();
}

void DeclaredProjection::batch_rolled_back() {
    rows_.rolled_back();
}

} // namespace cdcflow::projection::declared

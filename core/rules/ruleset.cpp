// RuleSet::parse: the rules config (cold path, nlohmann-json) -> RuleSet::Impl.
// Every error names the path of the bad rule and says what is expected.
#include "ruleset_impl.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <utility>

namespace cdcflow::rules {

namespace {

using json = nlohmann::json;

// Thrown only inside this file; parse() turns it into its error out-param.
struct RuleError {
    std::string msg;
};

[[noreturn]] void fail(const std::string &path, const std::string &why) {
    throw RuleError{path.empty() ? why : path + ": " + why};
}

// Config names end up in paths and reasons: keep them on one line.
std::string printable(std::string_view name) {
    for (char c : name)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
            std::string out;
            base::append_quoted(out, name, {'\'', 200});
            return out;
        }
    return std::string(name);
}

std::string join_path(const std::string &path, std::string_view key) {
    return path.empty() ? printable(key) : path + "." + printable(key);
}

std::string list(std::initializer_list<const char *> names) {
    std::string out;
    for (const char *n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

// YAML scalars may reach us as strings, so "2" is accepted where 2 is.
std::optional<int64_t> as_int(const json &j) {
    if (j.is_number_unsigned()) {
        auto u = j.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
        return static_cast<int64_t>(u);
    }
    if (j.is_number_integer()) return j.get<int64_t>();
    if (j.is_string()) {
        const auto &s = j.get_ref<const std::string &>();
        int64_t v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (!s.empty() && ec == std::errc() && end == s.data() + s.size()) return v;
    }
    return std::nullopt;
}

std::optional<double> as_number(const json &j) {
    if (j.is_number()) return j.get<double>();
    if (j.is_string()) {
        const auto &s = j.get_ref<const std::string &>();
        double v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (!s.empty() && ec == std::errc() && end == s.data() + s.size()) return v;
    }
    return std::nullopt;
}

bool get_bool(const json &j, const std::string &path) {
    if (j.is_boolean()) return j.get<bool>();
    if (j.is_string() && j.get_ref<const std::string &>() == "true") return true;
    if (j.is_string() && j.get_ref<const std::string &>() == "false") return false;
    fail(path, "must be true or false");
}

int64_t get_int(const json &j, const std::string &path, int64_t lo, int64_t hi, const std::string &expect) {
    auto v = as_int(j);
    if (!v || *v < lo || *v > hi) fail(path, expect);
    return *v;
}

struct TypeInfo {
    const char *name;
    FieldType type;
    std::initializer_list<const char *> keys; // allowed besides type and optional
};

const TypeInfo kTypes[] = {
    {"string", FieldType::kString, {"min_length", "max_length", "pattern"}},
    {"decimal", FieldType::kDecimal, {"max_decimals", "min", "min_exclusive", "max", "max_exclusive"}},
    {"integer", FieldType::kInteger, {"min", "max"}},
    {"number", FieldType::kNumber, {"min", "max"}},
    {"boolean", FieldType::kBoolean, {}},
    {"object", FieldType::kObject, {}},
    {"array", FieldType::kArray, {}},
};

constexpr const char *kTypeList = "string, decimal, integer, number, boolean, object, array";

Bound<Decimal> decimal_bound(const json &j, int scale, const std::string &path) {
    std::string text;
    if (j.is_string()) {
        text = j.get<std::string>();
    } else if (j.is_number_integer()) {
        // Exact, so harmless; the 15-digit limit still applies below.
        text = j.is_number_unsigned() ? std::to_string(j.get<uint64_t>()) : std::to_string(j.get<int64_t>());
    } else if (j.is_number()) {
        fail(path, "must be a decimal string like \"999999999.99\" (quote it: a number with a fraction "
                   "would pass through floating point)");
    } else {
        fail(path, "must be a decimal string like \"999999999.99\"");
    }
    Bound<Decimal> b;
    b.text = text;
    auto err = Decimal::parse(text, scale, &b.value);
    if (err == Decimal::ParseError::kTooManyDecimals) {
        std::string msg;
        base::append_quoted(msg, text);
        fail(path, msg + " has more than " + std::to_string(scale) + " decimals (max_decimals)");
    }
    if (err != Decimal::ParseError::kNone) {
        std::string msg;
        base::append_quoted(msg, text);
        fail(path, msg + " " + Decimal::describe(err));
    }
    return b;
}

// Lower and upper decimal bounds must leave some value possible.
void check_decimal_range(const FieldRule &f, const std::string &path) {
    if (f.dmin && f.dmin_excl) fail(path, "give either min or min_exclusive, not both");
    if (f.dmax && f.dmax_excl) fail(path, "give either max or max_exclusive, not both");
    const auto &lo = f.dmin ? f.dmin : f.dmin_excl;
    const auto &hi = f.dmax ? f.dmax : f.dmax_excl;
    if (!lo || !hi) return;
    bool strict = f.dmin_excl || f.dmax_excl;
    if (lo->value > hi->value || (strict && lo->value == hi->value))
        fail(path, "no value satisfies both " + std::string(f.dmin ? "min " : "min_exclusive ") + lo->text +
                       " and " + (f.dmax ? "max " : "max_exclusive ") + hi->text);
}

FieldRule parse_field(const std::string &event, const std::string &name, const json &spec,
                      const std::string &path) {
    if (name.empty()) fail(path, "a field name must not be empty");
    if (!spec.is_object()) fail(path, "must be a mapping like {type: string}");
    auto type_it = spec.find("type");
    if (type_it == spec.end()) fail(path, std::string("missing 'type' (one of ") + kTypeList + ")");
    const TypeInfo *ti = nullptr;
    if (type_it->is_string())
        for (const auto &t : kTypes)
            if (type_it->get_ref<const std::string &>() == t.name) ti = &t;
    if (!ti) fail(path + ".type", std::string("must be one of ") + kTypeList);

    FieldRule f;
    f.name = name;
    f.label = printable(event) + "." + printable(name);
    f.type = ti->type;

    // Unknown keys first, so a typo is reported as such.
    for (const auto &[key, value] : spec.items()) {
        (void)value;
        if (key == "type" || key == "optional") continue;
        bool known = false;
        for (const char *k : ti->keys)
            known = known || key == k;
        if (!known) {
            std::string allowed = "type, optional";
            for (const char *k : ti->keys)
                allowed += std::string(", ") + k;
            fail(join_path(path, key),
                 std::string("unknown key for type ") + ti->name + " (allowed: " + allowed + ")");
        }
    }
    if (auto it = spec.find("optional"); it != spec.end()) f.optional = get_bool(*it, path + ".optional");

    auto get = [&](const char *key) -> const json * {
        auto it = spec.find(key);
        return it == spec.end() ? nullptr : &*it;
    };
    constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
    switch (f.type) {
    case FieldType::kString: {
        for (auto [key, slot] :
             {std::pair{"min_length", &f.min_length}, std::pair{"max_length", &f.max_length}})
            if (const json *j = get(key)) {
                int64_t v = get_int(*j, path + "." + key, 0, kI64Max, "must be an integer >= 0");
                *slot = Bound<uint64_t>{static_cast<uint64_t>(v), std::to_string(v)};
            }
        if (f.min_length && f.max_length && f.min_length->value > f.max_length->value)
            fail(path,
                 "min_length " + f.min_length->text + " is greater than max_length " + f.max_length->text);
        if (const json *j = get("pattern")) {
            if (!j->is_string() || j->get_ref<const std::string &>().empty())
                fail(path + ".pattern", "must be a non-empty string (a POSIX extended regex)");
            auto re = std::make_unique<Regex>();
            re->text = j->get<std::string>();
            if (re->text.find('\0') != std::string::npos) fail(path + ".pattern", "must not contain NUL");
            int rc = regcomp(&re->re, re->text.c_str(), REG_EXTENDED | REG_NOSUB);
            if (rc != 0) {
                char buf[256];
                regerror(rc, &re->re, buf, sizeof buf);
                re->re = regex_t{}; // nothing to free after a failed regcomp
                fail(path + ".pattern", std::string("invalid regex: ") + buf);
            }
            f.pattern = std::move(re);
        }
        break;
    }
    case FieldType::kDecimal: {
        const json *md = get("max_decimals");
        if (!md) fail(path, "missing 'max_decimals' (an integer 0..9): decimals are exact, give the scale");
        f.scale = static_cast<int>(
            get_int(*md, path + ".max_decimals", 0, Decimal::kMaxScale, "must be an integer 0..9"));
        for (auto [key, slot] : {std::pair{"min", &f.dmin}, std::pair{"min_exclusive", &f.dmin_excl},
                                 std::pair{"max", &f.dmax}, std::pair{"max_exclusive", &f.dmax_excl}})
            if (const json *j = get(key)) *slot = decimal_bound(*j, f.scale, path + "." + key);
        check_decimal_range(f, path);
        break;
    }
    case FieldType::kInteger: {
        for (auto [key, slot] : {std::pair{"min", &f.imin}, std::pair{"max", &f.imax}})
            if (const json *j = get(key)) {
                int64_t v = get_int(*j, path + "." + key, std::numeric_limits<int64_t>::min(), kI64Max,
                                    "must be an integer");
                *slot = Bound<int64_t>{v, std::to_string(v)};
            }
        if (f.imin && f.imax && f.imin->value > f.imax->value)
            fail(path, "min " + f.imin->text + " is greater than max " + f.imax->text);
        break;
    }
    case FieldType::kNumber: {
        for (auto [key, slot] : {std::pair{"min", &f.nmin}, std::pair{"max", &f.nmax}})
            if (const json *j = get(key)) {
                auto v = as_number(*j);
                if (!v) fail(path + "." + key, "must be a number");
                *slot = Bound<double>{*v, j->is_string() ? j->get<std::string>() : j->dump()};
            }
        if (f.nmin && f.nmax && f.nmin->value > f.nmax->value)
            fail(path, "min " + f.nmin->text + " is greater than max " + f.nmax->text);
        break;
    }
    case FieldType::kBoolean:
    case FieldType::kObject:
    case FieldType::kArray:
        break;
    }
    return f;
}

std::shared_ptr<RuleSet::Impl> parse_impl(std::string_view text) {
    json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) fail("", "rules are not valid JSON");
    if (!root.is_object())
        fail("", "must be a mapping with 'events' (and optionally 'aggregate_types', 'max_payload_bytes')");

    auto impl = std::make_shared<RuleSet::Impl>();
    for (const auto &[key, value] : root.items()) {
        if (key == "events") continue;
        if (key == "aggregate_types") {
            if (!value.is_array() || value.empty())
                fail(key, "must be a non-empty list of aggregate type names");
            std::vector<std::string> types;
            for (size_t i = 0; i < value.size(); ++i) {
                if (!value[i].is_string() || value[i].get_ref<const std::string &>().empty())
                    fail(key + "[" + std::to_string(i) + "]", "must be a non-empty string");
                types.push_back(value[i].get<std::string>());
            }
            impl->aggregate_types = std::move(types);
        } else if (key == "max_payload_bytes") {
            impl->max_payload_bytes = static_cast<uint64_t>(
                get_int(value, key, 1, int64_t{1} << 30, "must be an integer 1..1073741824"));
        } else {
            fail(printable(key),
                 "unknown key (allowed: " + list({"aggregate_types", "events", "max_payload_bytes"}) + ")");
        }
    }

    auto events = root.find("events");
    if (events == root.end()) fail("events", "missing (a mapping of event types to their payload fields)");
    if (!events->is_object() || events->empty())
        fail("events", "must be a mapping with at least one event type");
    for (const auto &[type, fields] : events->items()) {
        std::string path = join_path("events", type);
        if (type.empty()) fail(path, "an event type must not be empty");
        // `AccountClosed:` with nothing after it is null in YAML: no fields.
        if (!fields.is_object() && !fields.is_null())
            fail(path, "must be a mapping of payload fields ({} for none)");
        EventRule ev;
        if (fields.is_object())
            for (const auto &[name, spec] : fields.items())
                ev.fields.push_back(parse_field(type, name, spec, join_path(path, name)));
        impl->max_fields = std::max(impl->max_fields, ev.fields.size());
        impl->events.emplace(type, std::move(ev));
    }
    return impl;
}

} // namespace

std::optional<RuleSet> RuleSet::parse(std::string_view rules_json, std::string *error) {
    try {
        return RuleSet(parse_impl(rules_json));
    } catch (const RuleError &e) {
        if (error) *error = e.msg;
        return std::nullopt;
    }
}

bool RuleSet::has_event_type(std::string_view event_type) const {
    return impl_->events.find(event_type) != impl_->events.end();
}

} // namespace cdcflow::rules

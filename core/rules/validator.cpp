// Validator::check: the per-event hot path. One simdjson DOM parse into
// reused buffers (the DOM parser validates the whole document, UTF-8
// included, which a lazy parse would not), then one pass over the payload's
// top-level keys. No allocation in the steady state: the padded copy, the
// parser's tape and the reason string keep their capacity.
#include "base/utf8.hpp"
#include "json_type.hpp"
#include "ruleset_impl.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>

namespace cdcflow::rules {

namespace dom = simdjson::dom;

namespace {

// Initial parser and buffer capacity: typical payloads never grow them.
constexpr size_t kInitialCapacity = 4096;

const char *expected(FieldType t) {
    switch (t) {
    case FieldType::kString:
        return "a string";
    case FieldType::kDecimal:
        return "a decimal string";
    case FieldType::kInteger:
        return "an integer";
    case FieldType::kNumber:
        return "a number";
    case FieldType::kBoolean:
        return "a boolean";
    case FieldType::kObject:
        return "an object";
    case FieldType::kArray:
        return "an array";
    }
    return "a value";
}

template <typename T> void append_num(std::string &out, T v) {
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

// The first bound a value breaks: the comparison as text and the bound as
// written in the rules.
struct Broken {
    const char *op = nullptr;
    const std::string *bound = nullptr;
};

// Unicode code points in valid UTF-8 (simdjson has validated it): count
// the bytes that do not continue a sequence.
uint64_t code_points(std::string_view s) {
    uint64_t n = 0;
    for (char c : s)
        n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
    return n;
}

} // namespace

struct Validator::State {
    std::shared_ptr<const RuleSet::Impl> rules;
    dom::parser parser;
    std::unique_ptr<char[]> buf; // payload copy + SIMDJSON_PADDING
    size_t buf_cap = 0;
    std::vector<uint8_t> seen;           // per rule field of the current event
    char re_input[kMaxPatternInput + 1]; // NUL-terminated copy for regexec
    std::string *reason = nullptr;       // of the current check()
    // The rule check_envelope found last: check_payload, which follows it
    // for the same event, then compares the type once instead of searching
    // the map again (a second search was ~1% of a Kafka sink run).
    const RuleSet::Impl::Events::value_type *last = nullptr;

    const RuleSet::Impl::Events::value_type *find(std::string_view type) {
        if (!last || last->first != type) {
            auto it = rules->events.find(type);
            if (it == rules->events.end()) return nullptr;
            last = &*it;
        }
        return last;
    }

    // Starts a failure reason; returns false so callers can `return fail(...)`.
    bool fail(std::string_view text) {
        reason->assign(text);
        return false;
    }
    std::string &field_reason(const FieldRule &f) {
        reason->assign(f.label);
        *reason += ": ";
        return *reason;
    }
    bool fail_value(const FieldRule &f, std::string_view value, std::string_view why) {
        auto &r = field_reason(f);
        base::append_quoted(r, value);
        r += ' ';
        r += why;
        return false;
    }

    bool check_field(const FieldRule &f, dom::element v);
    // After a pass over the payload's keys: every required field was there.
    bool required_seen(const std::vector<FieldRule> &fields) {
        for (size_t k = 0; k < fields.size(); ++k)
            if (!seen[k] && !fields[k].optional) {
                field_reason(fields[k]) += "missing";
                return false;
            }
        return true;
    }
    bool check_parsed_field(const FieldRule &f, const cdcflow_json_field &v);
    bool check_string(const FieldRule &f, std::string_view s);
    bool check_decimal(const FieldRule &f, std::string_view s);
    bool check_integer(const FieldRule &f, dom::element v);
    bool check_number(const FieldRule &f, dom::element v);
};

Validator::Validator(const RuleSet &rules) : state_(std::make_unique<State>()) {
    state_->rules = rules.impl_;
    state_->seen.resize(state_->rules->max_fields);
    if (state_->parser.allocate(kInitialCapacity) != simdjson::SUCCESS) throw std::bad_alloc();
}

Validator::~Validator() = default;
Validator::Validator(Validator &&) noexcept = default;
Validator &Validator::operator=(Validator &&) noexcept = default;

bool Validator::check_envelope(const EventView &ev, std::string *reason) {
    State &s = *state_;
    const RuleSet::Impl &r = *s.rules;
    std::string scratch;
    s.reason = reason ? reason : &scratch;

    if (ev.event_id.empty()) return s.fail("event id is empty");
    if (ev.aggregate_id.empty()) return s.fail("aggregate id is empty");
    if (ev.event_type.empty()) return s.fail("event type is empty");
    // Envelope text must be UTF-8 like the payload: a read model never
    // stores anything else (the reason shows the bad bytes escaped).
    for (auto [name, text] :
         {std::pair{"event id", ev.event_id}, std::pair{"aggregate type", ev.aggregate_type},
          std::pair{"aggregate id", ev.aggregate_id}, std::pair{"event type", ev.event_type}}) {
        if (base::valid_utf8(text)) continue;
        s.fail(name);
        *s.reason += " is not valid UTF-8: ";
        base::append_quoted(*s.reason, text, {'\''});
        return false;
    }
    if (!s.find(ev.event_type)) {
        s.fail("unknown event type ");
        base::append_quoted(*s.reason, ev.event_type, {'\''});
        return false;
    }
    if (r.aggregate_types && std::find(r.aggregate_types->begin(), r.aggregate_types->end(),
                                       ev.aggregate_type) == r.aggregate_types->end()) {
        s.fail("aggregate type ");
        base::append_quoted(*s.reason, ev.aggregate_type, {'\''});
        *s.reason += " is not in aggregate_types";
        return false;
    }

    const size_t len = ev.payload.size();
    if (len == 0) return s.fail("payload is empty (expected a JSON object)");
    if (len > r.max_payload_bytes) {
        s.fail("payload is ");
        append_num(*s.reason, len);
        *s.reason += " bytes, more than max_payload_bytes ";
        append_num(*s.reason, r.max_payload_bytes);
        return false;
    }
    return true;
}

bool Validator::check(const EventView &ev, std::string *reason) {
    if (!check_envelope(ev, reason)) return false;
    State &s = *state_;
    const RuleSet::Impl &r = *s.rules;
    std::string scratch;
    s.reason = reason ? reason : &scratch;
    const auto *rule = s.find(ev.event_type); // there: check_envelope found it
    const size_t len = ev.payload.size();
    // Parse a padded copy (the batch arena does not promise padding).
    if (len + simdjson::SIMDJSON_PADDING > s.buf_cap) {
        s.buf_cap = std::max(len + simdjson::SIMDJSON_PADDING, std::max(2 * s.buf_cap, kInitialCapacity));
        s.buf.reset(new char[s.buf_cap]);
    }
    std::memcpy(s.buf.get(), ev.payload.data(), len);
    std::memset(s.buf.get() + len, 0, simdjson::SIMDJSON_PADDING);
    // Grow the parser geometrically ourselves; left alone it would
    // reallocate to the exact size of every payload larger than the last.
    if (len > s.parser.capacity()) {
        size_t cap = std::max(len, std::min<size_t>(2 * s.parser.capacity(), r.max_payload_bytes));
        if (s.parser.allocate(cap) != simdjson::SUCCESS) throw std::bad_alloc();
    }
    dom::element root;
    if (auto err = s.parser.parse(reinterpret_cast<const uint8_t *>(s.buf.get()), len, false).get(root)) {
        s.fail("payload is not valid JSON: ");
        *s.reason += simdjson::error_message(err);
        return false;
    }
    dom::object obj;
    if (root.get_object().get(obj)) {
        s.fail("payload is not a JSON object (got ");
        *s.reason += json_type_name(root.type());
        *s.reason += ')';
        return false;
    }

    // One pass over the payload's keys; rules are few, so a linear match.
    const std::vector<FieldRule> &fields = rule->second.fields;
    std::fill_n(s.seen.begin(), fields.size(), uint8_t{0});
    for (dom::key_value_pair kv : obj) {
        for (size_t k = 0; k < fields.size(); ++k) {
            const FieldRule &f = fields[k];
            if (f.name != kv.key) continue;
            if (s.seen[k]) {
                // Consumers disagree on which copy wins: refuse the ambiguity.
                s.field_reason(f) += "duplicate key";
                return false;
            }
            s.seen[k] = 1;
            if (!s.check_field(f, kv.value)) return false;
            break;
        }
    }
    return s.required_seen(fields);
}

bool Validator::check_payload(const EventView &ev, const cdcflow_payload &parsed, std::string *reason) {
    State &s = *state_;
    std::string scratch;
    s.reason = reason ? reason : &scratch;
    const auto *rule = s.find(ev.event_type);
    if (!rule) return check(ev, reason); // check_envelope was skipped: its reason
    if (parsed.result == CDCFLOW_PAYLOAD_INVALID)
        return s.fail(parsed.error ? std::string_view(parsed.error) : "payload is not valid JSON");
    if (parsed.result != CDCFLOW_PAYLOAD_OBJECT) {
        s.fail("payload is not a JSON object (got ");
        *s.reason += json_type_name(parsed.root_type);
        *s.reason += ')';
        return false;
    }
    // As in check(): one pass over the payload's keys.
    const std::vector<FieldRule> &fields = rule->second.fields;
    std::fill_n(s.seen.begin(), fields.size(), uint8_t{0});
    for (uint32_t i = 0; i < parsed.field_count; ++i) {
        const auto &kv = *reinterpret_cast<const cdcflow_json_field *>(
            reinterpret_cast<const char *>(parsed.fields) + size_t(i) * parsed.field_stride);
        std::string_view key(kv.key.data, static_cast<size_t>(kv.key.len));
        for (size_t k = 0; k < fields.size(); ++k) {
            const FieldRule &f = fields[k];
            if (f.name != key) continue;
            if (s.seen[k]) {
                s.field_reason(f) += "duplicate key";
                return false;
            }
            s.seen[k] = 1;
            if (!s.check_parsed_field(f, kv)) return false;
            break;
        }
    }
    return s.required_seen(fields);
}

bool Validator::State::check_parsed_field(const FieldRule &f, const cdcflow_json_field &v) {
    // The common case reads the string straight from the payload's text.
    if (v.type == CDCFLOW_JSON_STRING && !v.has_escape &&
        (f.type == FieldType::kString || f.type == FieldType::kDecimal)) {
        std::string_view sv(v.value.data + 1, static_cast<size_t>(v.value.len) - 2);
        return f.type == FieldType::kString ? check_string(f, sv) : check_decimal(f, sv);
    }
    // Anything else (escapes, numbers, other types): parse just this value,
    // a few bytes, and check it as check() does.
    const size_t len = static_cast<size_t>(v.value.len);
    if (len + simdjson::SIMDJSON_PADDING > buf_cap) {
        buf_cap = std::max(len + simdjson::SIMDJSON_PADDING, std::max(2 * buf_cap, kInitialCapacity));
        buf.reset(new char[buf_cap]);
    }
    std::memcpy(buf.get(), v.value.data, len);
    std::memset(buf.get() + len, 0, simdjson::SIMDJSON_PADDING);
    if (len > parser.capacity() && parser.allocate(len) != simdjson::SUCCESS) throw std::bad_alloc();
    dom::element e;
    if (auto err = parser.parse(reinterpret_cast<const uint8_t *>(buf.get()), len, false).get(e)) {
        fail("payload is not valid JSON: ");
        *reason += simdjson::error_message(err);
        return false;
    }
    return check_field(f, e);
}

bool Validator::State::check_field(const FieldRule &f, dom::element v) {
    dom::element_type t = v.type();
    if (t == dom::element_type::NULL_VALUE && f.optional) return true;
    switch (f.type) {
    case FieldType::kString:
    case FieldType::kDecimal:
        if (t == dom::element_type::STRING) {
            std::string_view sv = v.get_string().value_unsafe(); // type checked above
            return f.type == FieldType::kString ? check_string(f, sv) : check_decimal(f, sv);
        }
        break;
    case FieldType::kInteger:
        return check_integer(f, v);
    case FieldType::kNumber:
        return check_number(f, v);
    case FieldType::kBoolean:
        if (t == dom::element_type::BOOL) return true;
        break;
    case FieldType::kObject:
        if (t == dom::element_type::OBJECT) return true;
        break;
    case FieldType::kArray:
        if (t == dom::element_type::ARRAY) return true;
        break;
    }
    auto &r = field_reason(f);
    r += "expected ";
    r += expected(f.type);
    r += ", got ";
    r += json_type_name(t);
    return false;
}

bool Validator::State::check_string(const FieldRule &f, std::string_view s) {
    if (f.min_length || f.max_length) {
        // A code point takes 1..4 bytes: count only when the byte length
        // does not already decide.
        uint64_t bytes = s.size();
        bool too_long = f.max_length && bytes > 4 * f.max_length->value;
        uint64_t n = too_long ? bytes : code_points(s);
        if (f.min_length && n < f.min_length->value) {
            auto &r = field_reason(f);
            base::append_quoted(r, s);
            r += " is shorter than min_length ";
            r += f.min_length->text;
            return false;
        }
        if (f.max_length && n > f.max_length->value) {
            auto &r = field_reason(f);
            base::append_quoted(r, s);
            r += " is longer than max_length ";
            r += f.max_length->text;
            return false;
        }
    }
    if (f.pattern) {
        const char *why = nullptr;
        if (s.size() > kMaxPatternInput) {
            why = " is longer than 4096 bytes, too long to match ";
        } else if (std::memchr(s.data(), '\0', s.size())) {
            why = " contains NUL, so does not match "; // regexec would stop at it
        } else {
            std::memcpy(re_input, s.data(), s.size());
            re_input[s.size()] = '\0';
            if (regexec(&f.pattern->re, re_input, 0, nullptr, 0) != 0) why = " does not match ";
        }
        if (why) {
            auto &r = field_reason(f);
            base::append_quoted(r, s);
            r += why;
            r += f.pattern->text;
            return false;
        }
    }
    return true;
}

bool Validator::State::check_decimal(const FieldRule &f, std::string_view s) {
    Decimal d;
    auto err = Decimal::parse(s, f.scale, &d);
    if (err == Decimal::ParseError::kTooManyDecimals) {
        auto &r = field_reason(f);
        base::append_quoted(r, s);
        r += " has more than ";
        append_num(r, f.scale);
        r += f.scale == 1 ? " decimal" : " decimals";
        return false;
    }
    if (err != Decimal::ParseError::kNone) return fail_value(f, s, Decimal::describe(err));
    Broken b;
    if (f.dmin && d < f.dmin->value)
        b = {"must be >= ", &f.dmin->text};
    else if (f.dmin_excl && d <= f.dmin_excl->value)
        b = {"must be > ", &f.dmin_excl->text};
    else if (f.dmax && d > f.dmax->value)
        b = {"must be <= ", &f.dmax->text};
    else if (f.dmax_excl && d >= f.dmax_excl->value)
        b = {"must be < ", &f.dmax_excl->text};
    if (!b.op) return true;
    auto &r = field_reason(f);
    base::append_quoted(r, s);
    r += ' ';
    r += b.op;
    r += *b.bound;
    return false;
}

bool Validator::State::check_integer(const FieldRule &f, dom::element v) {
    auto &r = *reason;
    switch (v.type()) {
    case dom::element_type::INT64:
        break;
    case dom::element_type::UINT64: {
        uint64_t u = v.get_uint64().value_unsafe();
        field_reason(f);
        append_num(r, u);
        r += " is out of range for an integer";
        return false;
    }
    case dom::element_type::DOUBLE: {
        double d = v.get_double().value_unsafe();
        field_reason(f) += "expected an integer, got ";
        append_num(r, d);
        return false;
    }
    default:
        field_reason(f) += "expected an integer, got ";
        r += json_type_name(v.type());
        return false;
    }
    int64_t i = v.get_int64().value_unsafe();
    Broken b;
    if (f.imin && i < f.imin->value)
        b = {" must be >= ", &f.imin->text};
    else if (f.imax && i > f.imax->value)
        b = {" must be <= ", &f.imax->text};
    if (!b.op) return true;
    field_reason(f);
    append_num(r, i);
    r += b.op;
    r += *b.bound;
    return false;
}

bool Validator::State::check_number(const FieldRule &f, dom::element v) {
    auto &r = *reason;
    double d = 0;
    switch (v.type()) {
    // The switch checked the type, so the getters cannot fail.
    case dom::element_type::INT64:
        d = static_cast<double>(v.get_int64().value_unsafe());
        break;
    case dom::element_type::UINT64:
        d = static_cast<double>(v.get_uint64().value_unsafe());
        break;
    case dom::element_type::DOUBLE:
        d = v.get_double().value_unsafe();
        break;
    default:
        field_reason(f) += "expected a number, got ";
        r += json_type_name(v.type());
        return false;
    }
    Broken b;
    if (f.nmin && d < f.nmin->value)
        b = {" must be >= ", &f.nmin->text};
    else if (f.nmax && d > f.nmax->value)
        b = {" must be <= ", &f.nmax->text};
    if (!b.op) return true;
    field_reason(f);
    append_num(r, d);
    r += b.op;
    r += *b.bound;
    return false;
}

} // namespace cdcflow::rules

// The rules library (Decimal, RuleSet::parse errors, Validator reasons) and
// the validator stage driven in-process over the real host API.
#include "batch.hpp"
#include "host_api.hpp"
#include "plugin_harness.hpp"
#include "validator/validator_stage.hpp"

#include <cdcflow/rules.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

using cdcflow::rules::Decimal;
using cdcflow::rules::EventView;
using cdcflow::rules::RuleSet;
using cdcflow::rules::Validator;
using PE = Decimal::ParseError;

namespace {

const char *const kAccountRules = R"({
  "aggregate_types": ["Account"],
  "events": {
    "AccountCreated": {
      "owner":    {"type": "string", "min_length": 1, "max_length": 200},
      "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
    },
    "MoneyDeposited": {
      "amount": {"type": "decimal", "max_decimals": 2, "min_exclusive": "0", "max": "999999999.99"}
    },
    "MoneyWithdrawn": {
      "amount": {"type": "decimal", "max_decimals": 2, "min_exclusive": "0", "max": "999999999.99"}
    },
    "AccountClosed": {}
  }
})";

RuleSet must_parse(std::string_view json) {
    std::string err;
    auto rs = RuleSet::parse(json, &err);
    INFO(err);
    REQUIRE(rs.has_value());
    return *rs;
}

// The error of a rules config that must not parse.
std::string parse_error(std::string_view json) {
    std::string err;
    auto rs = RuleSet::parse(json, &err);
    CHECK_FALSE(rs.has_value());
    return err;
}

// Runs events through one Validator; "" means the event passed.
struct Checker {
    RuleSet rules;
    Validator v;
    std::string reason;

    explicit Checker(std::string_view json = kAccountRules) : rules(must_parse(json)), v(rules) {}

    std::string event(const EventView &ev) {
        reason = "stale";
        bool ok = v.check(ev, &reason);
        same_with_shared_parse(ev, ok);
        if (ok) return "";
        // Every reason is one short line, whatever the input.
        CHECK(reason.find('\n') == std::string::npos);
        CHECK(reason.size() < 400);
        return reason;
    }
    // The validator stage's path: envelope, then the payload as the host
    // parsed it once (event_payload). It must decide as check() does, with
    // the same reason (only which JSON error a broken payload names may
    // differ between the two parsers).
    void same_with_shared_parse(const EventView &ev, bool ok) {
        std::string why = "stale";
        bool ok2 = v.check_envelope(ev, &why);
        if (ok2) {
            cdcflow_batch b(1);
            cdcflow_event_init in{};
            in.struct_size = sizeof in;
            in.payload = {ev.payload.data(), ev.payload.size()};
            REQUIRE(b.append(in));
            cdcflow_payload parsed{};
            parsed.struct_size = sizeof parsed;
            REQUIRE(cdcflow::host::host_api()->event_payload(&b, 0, &parsed) == CDCFLOW_OK);
            ok2 = v.check_payload(ev, parsed, &why);
        }
        CHECK_MESSAGE(ok2 == ok, ev.payload);
        if (ok || ok2) return;
        if (reason.rfind("payload is not", 0) == 0)
            CHECK_MESSAGE(why.rfind("payload is not", 0) == 0, ev.payload);
        else
            CHECK_MESSAGE(why == reason, ev.payload);
    }
    std::string payload(std::string_view type, std::string_view payload) {
        return event(EventView{"ev-1", "Account", "acc-1", type, payload});
    }
    std::string amount(std::string_view json_value) {
        std::string p = std::string(R"({"amount": )") + std::string(json_value) + "}";
        return payload("MoneyDeposited", p);
    }
};

} // namespace

// ---------------------------------------------------------------------------
// Decimal

TEST_CASE("Decimal::parse accepts digits with an optional point and scales exactly") {
    Decimal d;
    struct Case {
        const char *text;
        int scale;
        int64_t units;
    };
    for (Case c :
         {Case{"0", 2, 0}, Case{"0.00", 2, 0}, Case{"12", 2, 1200}, Case{"12.5", 2, 1250},
          Case{"12.34", 2, 1234}, Case{"00.10", 2, 10}, Case{"7", 0, 7},
          Case{"999999999999999", 0, 999999999999999}, Case{"999999999999999.999", 3, 999999999999999999},
          Case{"0.000000001", 9, 1}, Case{"123456789.123456789", 9, 123456789123456789}}) {
        INFO(c.text);
        REQUIRE(Decimal::parse(c.text, c.scale, &d) == PE::kNone);
        CHECK(d.units() == c.units);
        CHECK(d.scale() == c.scale);
    }
}

TEST_CASE("Decimal::parse rejects everything else without touching the output") {
    struct Case {
        const char *text;
        int scale;
        PE err;
    };
    for (Case c :
         {Case{"", 2, PE::kEmpty}, Case{"-1", 2, PE::kNotDecimal}, Case{"+1", 2, PE::kNotDecimal},
          Case{"1e3", 2, PE::kNotDecimal}, Case{" 1", 2, PE::kNotDecimal}, Case{"1 ", 2, PE::kNotDecimal},
          Case{"1.2.3", 2, PE::kNotDecimal}, Case{"1,5", 2, PE::kNotDecimal},
          Case{"\xef\xbc\x91\xef\xbc\x92", 2, PE::kNotDecimal}, // full-width "12"
          Case{"NaN", 2, PE::kNotDecimal}, Case{"0x10", 2, PE::kNotDecimal},
          Case{".", 2, PE::kNoIntegerDigit}, Case{".5", 2, PE::kNoIntegerDigit},
          Case{"1.", 2, PE::kNoFractionDigit}, Case{"12.345", 2, PE::kTooManyDecimals},
          Case{"12.340", 2, PE::kTooManyDecimals}, Case{"1.5", 0, PE::kTooManyDecimals},
          Case{"1234567890123456", 2, PE::kTooManyIntegerDigits},
          Case{"0000000000000001", 2, PE::kTooManyIntegerDigits},
          // 15 integer digits at scale 9 do not fit in int64 units.
          Case{"999999999999999", 9, PE::kOutOfRange}, Case{"9223372036.854775808", 9, PE::kOutOfRange},
          Case{"1", -1, PE::kBadScale}, Case{"1", 10, PE::kBadScale}}) {
        INFO(c.text, " scale ", c.scale);
        Decimal d(42, 1);
        CHECK(Decimal::parse(c.text, c.scale, &d) == c.err);
        CHECK(d == Decimal(42, 1));
        CHECK(std::string(Decimal::describe(c.err)).size() > 3);
    }
    // A string_view is not read past its end (no NUL needed).
    Decimal d;
    CHECK(Decimal::parse(std::string_view("12.345", 4), 2, &d) == PE::kNone);
    CHECK(d.units() == 1230);
    // The largest value at scale 9 still parses.
    CHECK(Decimal::parse("9223372036.854775807", 9, &d) == PE::kNone);
    CHECK(d.units() == INT64_MAX);
}

TEST_CASE("Decimal::parse_within_int64 bounds by value, not by digits written; same syntax and precedence") {
    struct Case {
        const char *text;
        int scale;
        PE bounded;   // Decimal::parse
        PE unbounded; // Decimal::parse_within_int64
        int64_t units;
    };
    for (Case c : {
             // Leading zeros are free; 17 integer digits fit in int64 cents.
             Case{"0000000000000001", 2, PE::kTooManyIntegerDigits, PE::kNone, 100},
             Case{"000000000000000000000000009", 0, PE::kTooManyIntegerDigits, PE::kNone, 9},
             Case{"92233720368547758.07", 2, PE::kTooManyIntegerDigits, PE::kNone, INT64_MAX},
             Case{"92233720368547758.08", 2, PE::kTooManyIntegerDigits, PE::kOutOfRange, 0},
             // Around the unchecked fast path's end (18 digits) and uint64's wrap (20 digits).
             Case{"999999999999999999", 0, PE::kTooManyIntegerDigits, PE::kNone, 999999999999999999},
             Case{"9223372036854775807", 0, PE::kTooManyIntegerDigits, PE::kNone, INT64_MAX},
             Case{"9223372036854775808", 0, PE::kTooManyIntegerDigits, PE::kOutOfRange, 0},
             Case{"18446744073709551616", 0, PE::kTooManyIntegerDigits, PE::kOutOfRange, 0},
             // The syntax comes first, then the decimals, then the size.
             Case{"99999999999999999999x", 2, PE::kNotDecimal, PE::kNotDecimal, 0},
             Case{"99999999999999999999.999", 2, PE::kTooManyDecimals, PE::kTooManyDecimals, 0},
             Case{".5x", 2, PE::kNotDecimal, PE::kNotDecimal, 0},
             Case{"1.2.", 2, PE::kNotDecimal, PE::kNotDecimal, 0},
             Case{".", 2, PE::kNoIntegerDigit, PE::kNoIntegerDigit, 0},
             Case{"1.", 2, PE::kNoFractionDigit, PE::kNoFractionDigit, 0},
             Case{"12.34", 2, PE::kNone, PE::kNone, 1234},
         }) {
        INFO(c.text, " scale ", c.scale);
        Decimal d(42, 1);
        CHECK(Decimal::parse(c.text, c.scale, &d) == c.bounded);
        Decimal u(42, 1);
        CHECK(Decimal::parse_within_int64(c.text, c.scale, &u) == c.unbounded);
        CHECK(u == (c.unbounded == PE::kNone ? Decimal(c.units, c.scale) : Decimal(42, 1)));
    }
}

TEST_CASE("Decimal::format writes exactly scale decimals and round-trips") {
    CHECK(Decimal(1230, 2).to_string() == "12.30");
    CHECK(Decimal(5, 2).to_string() == "0.05");
    CHECK(Decimal(0, 2).to_string() == "0.00");
    CHECK(Decimal(-5, 2).to_string() == "-0.05");
    CHECK(Decimal(-1234, 2).to_string() == "-12.34");
    CHECK(Decimal(7, 0).to_string() == "7");
    CHECK(Decimal(0, 0).to_string() == "0");
    CHECK(Decimal(1, 9).to_string() == "0.000000001");
    CHECK(Decimal(INT64_MAX, 9).to_string() == "9223372036.854775807");
    CHECK(Decimal(INT64_MIN, 9).to_string() == "-9223372036.854775808");
    CHECK(Decimal(INT64_MIN, 0).to_string() == "-9223372036854775808");
    CHECK(Decimal(INT64_MIN, 9).to_string().size() <= Decimal::kMaxTextSize);

    for (int scale = 0; scale <= Decimal::kMaxScale; ++scale)
        for (int64_t u : {int64_t{0}, int64_t{1}, int64_t{9}, int64_t{10}, int64_t{123456789},
                          int64_t{999999999999999}}) {
            Decimal back;
            std::string text = Decimal(u, scale).to_string();
            INFO(text);
            REQUIRE(Decimal::parse(text, scale, &back) == PE::kNone);
            CHECK(back.units() == u);
            CHECK(back.scale() == scale);
        }
}

TEST_CASE("Decimal arithmetic is exact and refuses overflow") {
    Decimal out(99, 0);
    CHECK(Decimal(1250, 2).add(Decimal(5, 1), &out));
    CHECK(out.units() == 1300);
    CHECK(out.scale() == 2);
    CHECK(out.to_string() == "13.00");
    CHECK(Decimal(1000, 2).sub(Decimal(1001, 2), &out));
    CHECK(out.to_string() == "-0.01");

    out = Decimal(99, 0);
    CHECK_FALSE(Decimal(INT64_MAX, 2).add(Decimal(1, 2), &out));
    CHECK_FALSE(Decimal(INT64_MIN, 2).sub(Decimal(1, 2), &out));
    CHECK_FALSE(Decimal(INT64_MAX / 10 + 1, 0).add(Decimal(0, 1), &out)); // rescale overflows
    CHECK(out == Decimal(99, 0));

    CHECK(Decimal(1234, 2).rescale(4, &out));
    CHECK(out.units() == 123400);
    CHECK(Decimal(1230, 2).rescale(1, &out));
    CHECK(out.units() == 123);
    CHECK_FALSE(Decimal(1234, 2).rescale(1, &out)); // would drop the 4
    CHECK_FALSE(Decimal(1, 0).rescale(10, &out));
}

TEST_CASE("Decimal comparison is numeric across scales") {
    CHECK(Decimal(120, 2) == Decimal(12, 1));
    CHECK(Decimal(1, 0) != Decimal(1, 2));
    CHECK(Decimal(1, 2) < Decimal(1, 0));
    CHECK(Decimal(-1, 0) < Decimal(0, 9));
    // Rescaling INT64_MAX at scale 0 to scale 9 overflows: the sign decides.
    CHECK(Decimal(INT64_MAX, 0) > Decimal(INT64_MAX, 9));
    CHECK(Decimal(INT64_MIN, 0) < Decimal(INT64_MIN, 9));
    CHECK(Decimal(INT64_MAX, 9) < Decimal(INT64_MAX, 0));
    CHECK(Decimal(INT64_MIN, 9) > Decimal(INT64_MIN, 0));
}

// ---------------------------------------------------------------------------
// RuleSet::parse

TEST_CASE("RuleSet::parse accepts the shipped account rules") {
    RuleSet rs = must_parse(kAccountRules);
    CHECK(rs.has_event_type("MoneyDeposited"));
    CHECK_FALSE(rs.has_event_type("Foo"));
    // YAML `AccountClosed:` with no value arrives as null; integer and bool
    // parameters may arrive as strings.
    must_parse(R"({"events": {"AccountClosed": null,
        "X": {"n": {"type": "integer", "min": "1", "max": 5, "optional": "true"},
              "s": {"type": "string", "max_length": "3"},
              "d": {"type": "decimal", "max_decimals": "2", "min": 0, "max_exclusive": "10"},
              "f": {"type": "number", "min": -1.5, "max": "2.5"},
              "b": {"type": "boolean"}, "o": {"type": "object"}, "a": {"type": "array"}}}})");
}

TEST_CASE("RuleSet::parse names the path of the bad rule") {
    auto with_amount = [](const std::string &amount) {
        return R"({"events": {"MoneyDeposited": {"amount": )" + amount + "}}}";
    };
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 12})")) ==
          "events.MoneyDeposited.amount.max_decimals: must be an integer 0..9");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": -1})")) ==
          "events.MoneyDeposited.amount.max_decimals: must be an integer 0..9");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 1.5})")) ==
          "events.MoneyDeposited.amount.max_decimals: must be an integer 0..9");
    CHECK(parse_error(with_amount(R"({"type": "decimal"})")) ==
          "events.MoneyDeposited.amount: missing 'max_decimals' (an integer 0..9): decimals are exact, give "
          "the "
          "scale");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "max": 999999999.99})"))
              .starts_with(
                  "events.MoneyDeposited.amount.max: must be a decimal string like \"999999999.99\" (quote"));
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "max": "1.234"})")) ==
          "events.MoneyDeposited.amount.max: \"1.234\" has more than 2 decimals (max_decimals)");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "min": "-1"})")) ==
          "events.MoneyDeposited.amount.min: \"-1\" is not a decimal (ASCII digits with an optional '.')");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "min": true})")) ==
          "events.MoneyDeposited.amount.min: must be a decimal string like \"999999999.99\"");
    CHECK(parse_error(
              with_amount(R"({"type": "decimal", "max_decimals": 2, "min": "1", "min_exclusive": "0"})")) ==
          "events.MoneyDeposited.amount: give either min or min_exclusive, not both");
    CHECK(parse_error(
              with_amount(R"({"type": "decimal", "max_decimals": 2, "max": "1", "max_exclusive": "2"})")) ==
          "events.MoneyDeposited.amount: give either max or max_exclusive, not both");
    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "min": "5", "max": "4"})")) ==
          "events.MoneyDeposited.amount: no value satisfies both min 5 and max 4");
    CHECK(parse_error(
              with_amount(R"({"type": "decimal", "max_decimals": 2, "min_exclusive": "5", "max": "5"})")) ==
          "events.MoneyDeposited.amount: no value satisfies both min_exclusive 5 and max 5");
    must_parse(with_amount(R"({"type": "decimal", "max_decimals": 2, "min": "5", "max": "5.00"})"));

    CHECK(parse_error(with_amount(R"({"type": "decimal", "max_decimals": 2, "pattern": "x"})")) ==
          "events.MoneyDeposited.amount.pattern: unknown key for type decimal (allowed: type, optional, "
          "max_decimals, min, min_exclusive, max, max_exclusive)");
    CHECK(parse_error(with_amount(R"({"type": "string", "max_lenght": 3})")) ==
          "events.MoneyDeposited.amount.max_lenght: unknown key for type string (allowed: type, optional, "
          "min_length, max_length, pattern)");
    CHECK(parse_error(with_amount(R"({"max_length": 3})")) ==
          "events.MoneyDeposited.amount: missing 'type' (one of string, decimal, integer, number, boolean, "
          "object, "
          "array)");
    CHECK(parse_error(with_amount(R"({"type": "money"})")) ==
          "events.MoneyDeposited.amount.type: must be one of string, decimal, integer, number, boolean, "
          "object, "
          "array");
    CHECK(parse_error(with_amount(R"("string")")) ==
          "events.MoneyDeposited.amount: must be a mapping like {type: string}");
    CHECK(parse_error(with_amount(R"({"type": "string", "optional": "maybe"})")) ==
          "events.MoneyDeposited.amount.optional: must be true or false");
    CHECK(parse_error(with_amount(R"({"type": "string", "min_length": -1})")) ==
          "events.MoneyDeposited.amount.min_length: must be an integer >= 0");
    CHECK(parse_error(with_amount(R"({"type": "string", "min_length": 3, "max_length": 2})")) ==
          "events.MoneyDeposited.amount: min_length 3 is greater than max_length 2");
    CHECK(parse_error(with_amount(R"({"type": "string", "pattern": "([A-Z"})"))
              .starts_with("events.MoneyDeposited.amount.pattern: invalid regex: "));
    CHECK(parse_error(with_amount(R"({"type": "string", "pattern": ""})")) ==
          "events.MoneyDeposited.amount.pattern: must be a non-empty string (a POSIX extended regex)");
    CHECK(parse_error(with_amount(R"({"type": "integer", "min": 1.5})")) ==
          "events.MoneyDeposited.amount.min: must be an integer");
    CHECK(parse_error(with_amount(R"({"type": "integer", "min": 18446744073709551615})")) ==
          "events.MoneyDeposited.amount.min: must be an integer");
    CHECK(parse_error(with_amount(R"({"type": "integer", "min": 3, "max": 2})")) ==
          "events.MoneyDeposited.amount: min 3 is greater than max 2");
    CHECK(parse_error(with_amount(R"({"type": "number", "max": "lots"})")) ==
          "events.MoneyDeposited.amount.max: must be a number");
    CHECK(parse_error(with_amount(R"({"type": "number", "min": 2, "max": 1})")) ==
          "events.MoneyDeposited.amount: min 2 is greater than max 1");

    CHECK(parse_error(R"({"events": {"A": []}})") ==
          "events.A: must be a mapping of payload fields ({} for none)");
    CHECK(parse_error(R"({"events": {"": {}}})") == "events.: an event type must not be empty");
    CHECK(parse_error(R"({"events": {"A": {"": {"type": "string"}}}})") ==
          "events.A.: a field name must not be empty");
    CHECK(parse_error(R"({"events": {}})") == "events: must be a mapping with at least one event type");
    CHECK(parse_error(R"({"events": []})") == "events: must be a mapping with at least one event type");
    CHECK(parse_error(R"({"aggregate_types": ["Account"]})") ==
          "events: missing (a mapping of event types to their payload fields)");
    CHECK(parse_error(R"({"aggregate_types": [], "events": {"A": {}}})") ==
          "aggregate_types: must be a non-empty list of aggregate type names");
    CHECK(parse_error(R"({"aggregate_types": ["A", ""], "events": {"A": {}}})") ==
          "aggregate_types[1]: must be a non-empty string");
    CHECK(parse_error(R"({"max_payload_bytes": 0, "events": {"A": {}}})") ==
          "max_payload_bytes: must be an integer 1..1073741824");
    CHECK(parse_error(R"({"event": {"A": {}}})") ==
          "event: unknown key (allowed: aggregate_types, events, max_payload_bytes)");
    CHECK(parse_error(R"({"events": {"A\nB": {"x": 1}}})") ==
          R"(events.'A\x0aB'.x: must be a mapping like {type: string})");
    CHECK(parse_error(R"([1])") ==
          "must be a mapping with 'events' (and optionally 'aggregate_types', 'max_payload_bytes')");
    CHECK(parse_error(R"({"events": )") == "rules are not valid JSON");
    CHECK(parse_error("") == "rules are not valid JSON");

    // The out-param is optional.
    CHECK_FALSE(RuleSet::parse("{}", nullptr).has_value());
}

// ---------------------------------------------------------------------------
// Validator: envelope and payload shape

TEST_CASE("Validator accepts valid account events") {
    Checker c;
    CHECK(c.payload("AccountCreated", R"({"owner": "Ada", "currency": "EUR"})") == "");
    CHECK(c.payload("AccountCreated", R"({"currency": "EUR", "owner": "Zoë", "extra": [1, {"x": null}]})") ==
          "");
    CHECK(c.payload("MoneyDeposited", R"({"amount": "12.34"})") == "");
    CHECK(c.payload("MoneyWithdrawn", R"({"amount": "0.01"})") == "");
    CHECK(c.payload("AccountClosed", "{}") == "");
    CHECK(c.payload("AccountClosed", " \n{ \"anything\": 1 }\t") == "");
    // Escaped keys are compared after unescaping.
    CHECK(c.payload("MoneyDeposited", R"({"amo\u0075nt": "1"})") == "");
    // The reason out-param is optional.
    CHECK_FALSE(c.v.check(EventView{"", "Account", "a", "AccountClosed", "{}"}, nullptr));
}

TEST_CASE("Validator: each event meets its own type's rules, whatever was checked before") {
    // check_payload remembers the rule check_envelope found; an event of
    // another type (or an unknown one) must not be held to that rule.
    Checker c;
    std::string why;
    auto payload_of = [&](std::string_view type, std::string_view json) {
        cdcflow_batch b(1);
        cdcflow_event_init in{};
        in.struct_size = sizeof in;
        in.payload = {json.data(), json.size()};
        REQUIRE(b.append(in));
        cdcflow_payload parsed{};
        parsed.struct_size = sizeof parsed;
        REQUIRE(cdcflow::host::host_api()->event_payload(&b, 0, &parsed) == CDCFLOW_OK);
        why.clear();
        return c.v.check_payload(EventView{"e1", "Account", "a1", type, json}, parsed, &why);
    };
    REQUIRE(c.v.check_envelope(EventView{"e1", "Account", "a1", "AccountCreated", "{}"}, &why));
    // AccountCreated's rules would refuse this; MoneyDeposited's take it.
    CHECK(payload_of("MoneyDeposited", R"({"amount": "5"})"));
    CHECK_FALSE(payload_of("AccountCreated", R"({"amount": "5"})"));
    CHECK(why.find("missing") != std::string::npos);
    CHECK_FALSE(payload_of("MoneyWithdrawn", R"({"amount": "-5"})"));
    CHECK(why.rfind("MoneyWithdrawn.amount: ", 0) == 0);
    // A type no rule names: check()'s reason, not the last rule's verdict.
    CHECK_FALSE(payload_of("Nope", "{}"));
    CHECK(why == "unknown event type 'Nope'");
    CHECK(payload_of("AccountClosed", "{}"));
}

TEST_CASE("Validator checks the envelope") {
    Checker c;
    CHECK(c.event({"", "Account", "acc-1", "AccountClosed", "{}"}) == "event id is empty");
    CHECK(c.event({"e", "Account", "", "AccountClosed", "{}"}) == "aggregate id is empty");
    CHECK(c.event({"e", "Account", "acc-1", "", "{}"}) == "event type is empty");
    CHECK(c.event({"e", "Account", "acc-1", "Foo", "{}"}) == "unknown event type 'Foo'");
    CHECK(c.event({"e", "Account", "acc-1", "it's\n", "{}"}) == R"(unknown event type 'it\'s\x0a')");
    CHECK(c.event({"e", "Customer", "acc-1", "AccountClosed", "{}"}) ==
          "aggregate type 'Customer' is not in aggregate_types");
    CHECK(c.event({"e", "", "acc-1", "AccountClosed", "{}"}) ==
          "aggregate type '' is not in aggregate_types");
    // Envelope text that is not UTF-8 never reaches a read model; the reason
    // itself stays ASCII.
    CHECK(c.event({"e", "Account", "acc-\xff", "AccountClosed", "{}"}) ==
          R"(aggregate id is not valid UTF-8: 'acc-\xff')");
    CHECK(c.event({"e\xc3", "Account", "acc-1", "AccountClosed", "{}"}) ==
          R"(event id is not valid UTF-8: 'e\xc3')");
    CHECK(c.event({"e", "Acc\xed\xa0\x80", "acc-1", "AccountClosed", "{}"}) ==
          R"(aggregate type is not valid UTF-8: 'Acc\xed\xa0\x80')"); // a surrogate
    CHECK(c.event({"e", "Account", "acc-1", "Money\xff", "{}"}) ==
          R"(event type is not valid UTF-8: 'Money\xff')");
    CHECK(c.event({"e", "Account", "Zo\xc3\xab", "AccountClosed", "{}"}) == ""); // UTF-8 is fine
    // Without aggregate_types any aggregate type passes.
    Checker any(R"({"events": {"A": {}}})");
    CHECK(any.event({"e", "Whatever", "x", "A", "{}"}) == "");
    CHECK(any.event({"e", "", "x", "A", "{}"}) == "");
}

TEST_CASE("Validator rejects payloads that are not a JSON object, never crashing") {
    Checker c;
    const std::string invalid = "payload is not valid JSON: ";
    CHECK(c.payload("AccountClosed", "") == "payload is empty (expected a JSON object)");
    CHECK(c.payload("AccountClosed", "   ").starts_with(invalid));
    CHECK(c.payload("AccountClosed", "[]") == "payload is not a JSON object (got array)");
    CHECK(c.payload("AccountClosed", R"("{}")") == "payload is not a JSON object (got string)");
    CHECK(c.payload("AccountClosed", "12") == "payload is not a JSON object (got number)");
    CHECK(c.payload("AccountClosed", "null") == "payload is not a JSON object (got null)");
    CHECK(c.payload("AccountClosed", "true") == "payload is not a JSON object (got boolean)");
    CHECK(c.payload("AccountClosed", "{").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({"a": 1,})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({"a": 1} {"b": 2})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({'a': 1})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({"a": 01})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({"a": NaN})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", R"({"a": "\x"})").starts_with(invalid));
    CHECK(c.payload("AccountClosed", "{\"a\": \"tab\there\"}").starts_with(invalid)); // raw control char
    CHECK(c.payload("AccountClosed", R"({"a": 1e999})").starts_with(invalid));
    // Invalid UTF-8: a lone continuation byte, an overlong encoding, a surrogate.
    CHECK(c.payload("AccountClosed", "{\"a\": \"\x80\"}") == invalid + "The input is not valid UTF-8");
    CHECK(c.payload("AccountClosed", "{\"a\": \"\xc0\xaf\"}") == invalid + "The input is not valid UTF-8");
    CHECK(c.payload("AccountClosed", "{\"a\": \"\xed\xa0\x80\"}") ==
          invalid + "The input is not valid UTF-8");
    // A NUL byte in the middle of the payload: the string_view length rules.
    CHECK(c.payload("AccountClosed", std::string_view("{}\0{}", 5)).starts_with(invalid));

    // Deeper than simdjson's 1024 levels: a depth error, not a stack overflow.
    std::string deep = R"({"a": )" + std::string(100000, '[') + std::string(100000, ']') + "}";
    CHECK(c.payload("AccountClosed", deep).starts_with(invalid));
    std::string deep_obj;
    for (int i = 0; i < 5000; ++i)
        deep_obj += R"({"a":)";
    deep_obj += "1" + std::string(5000, '}');
    CHECK(c.payload("AccountClosed", deep_obj).starts_with(invalid));
    // Within the limit is fine.
    std::string ok_deep = R"({"a": )" + std::string(1000, '[') + std::string(1000, ']') + "}";
    CHECK(c.payload("AccountClosed", ok_deep) == "");
}

TEST_CASE("Validator bounds payload size and huge values stay one short line") {
    Checker c;
    std::string huge = R"({"owner": ")" + std::string(10 << 20, 'a') + R"(", "currency": "EUR"})";
    CHECK(c.payload("AccountCreated", huge) ==
          "payload is " + std::to_string(huge.size()) + " bytes, more than max_payload_bytes 1048576");

    Checker big(R"({"max_payload_bytes": 16777216, "events": {"AccountCreated": {
        "owner": {"type": "string", "max_length": 200},
        "currency": {"type": "string", "pattern": "^a*$"}}}})");
    CHECK(
        big.payload("AccountCreated", huge) ==
        R"(AccountCreated.owner: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..." is longer than max_length 200)");
    std::string huge_cur = R"({"owner": "Ada", "currency": ")" + std::string(10 << 20, 'a') + R"("})";
    CHECK(
        big.payload("AccountCreated", huge_cur) ==
        R"(AccountCreated.currency: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..." is longer than 4096 bytes, )"
        "too long to match ^a*$");
    // Exactly 4096 bytes is still matched; the buffers shrink back to normal use.
    std::string edge = R"({"owner": "Ada", "currency": ")" + std::string(4096, 'a') + R"("})";
    CHECK(big.payload("AccountCreated", edge) == "");
    CHECK(big.payload("AccountCreated", R"({"owner": "Ada", "currency": "ab"})") ==
          R"(AccountCreated.currency: "ab" does not match ^a*$)");
}

// ---------------------------------------------------------------------------
// Validator: field rules

TEST_CASE("Validator: required, optional, duplicate and typed fields") {
    Checker c;
    CHECK(c.payload("AccountCreated", R"({"currency": "EUR"})") == "AccountCreated.owner: missing");
    CHECK(c.payload("AccountCreated", R"({"owner": "Ada"})") == "AccountCreated.currency: missing");
    CHECK(c.payload("MoneyDeposited", "{}") == "MoneyDeposited.amount: missing");
    CHECK(c.payload("MoneyDeposited", R"({"Amount": "1"})") == "MoneyDeposited.amount: missing");
    CHECK(c.payload("MoneyDeposited", R"({"amount": "1", "amount": "-1"})") ==
          "MoneyDeposited.amount: duplicate key");
    CHECK(c.payload("MoneyDeposited", R"({"amount": "1", "amo\u0075nt": "2"})") ==
          "MoneyDeposited.amount: duplicate key");
    CHECK(c.payload("AccountCreated", R"({"owner": 12, "currency": "EUR"})") ==
          "AccountCreated.owner: expected a string, got number");
    CHECK(c.payload("AccountCreated", R"({"owner": null, "currency": "EUR"})") ==
          "AccountCreated.owner: expected a string, got null");
    CHECK(c.payload("AccountCreated", R"({"owner": ["Ada"], "currency": "EUR"})") ==
          "AccountCreated.owner: expected a string, got array");

    Checker t(R"({"events": {"T": {
        "b": {"type": "boolean"}, "o": {"type": "object"}, "a": {"type": "array"},
        "opt": {"type": "string", "optional": true, "min_length": 2}}}})");
    CHECK(t.payload("T", R"({"b": false, "o": {}, "a": []})") == "");
    CHECK(t.payload("T", R"({"b": true, "o": {"x": 1}, "a": [1], "opt": null})") == "");
    CHECK(t.payload("T", R"({"b": true, "o": {}, "a": [], "opt": "xy"})") == "");
    CHECK(t.payload("T", R"({"b": true, "o": {}, "a": [], "opt": "x"})") ==
          R"(T.opt: "x" is shorter than min_length 2)");
    CHECK(t.payload("T", R"({"b": 1, "o": {}, "a": []})") == "T.b: expected a boolean, got number");
    CHECK(t.payload("T", R"({"b": "true", "o": {}, "a": []})") == "T.b: expected a boolean, got string");
    CHECK(t.payload("T", R"({"b": true, "o": [], "a": []})") == "T.o: expected an object, got array");
    CHECK(t.payload("T", R"({"b": true, "o": {}, "a": {}})") == "T.a: expected an array, got object");
    CHECK(t.payload("T", R"({"b": true, "o": {}})") == "T.a: missing");
}

TEST_CASE("Validator: string length in code points and patterns") {
    Checker c;
    auto created = [&](const std::string &owner, const std::string &currency) {
        return c.payload("AccountCreated",
                         R"({"owner": ")" + owner + R"(", "currency": ")" + currency + R"("})");
    };
    CHECK(created("", "EUR") == R"(AccountCreated.owner: "" is shorter than min_length 1)");
    CHECK(created(std::string(200, 'x'), "EUR") == "");
    CHECK(
        created(std::string(201, 'x'), "EUR") ==
        R"(AccountCreated.owner: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..." is longer than max_length 200)");
    // 200 two-byte characters are 400 bytes but 200 code points.
    std::string umlauts;
    for (int i = 0; i < 200; ++i)
        umlauts += "\xc3\xa4";
    CHECK(created(umlauts, "EUR") == "");
    CHECK(created(umlauts + "\xc3\xa4", "EUR").ends_with("is longer than max_length 200"));
    // Non-ASCII and control bytes are escaped in reasons.
    CHECK(created("Ada", "eur") == R"(AccountCreated.currency: "eur" does not match ^[A-Z]{3}$)");
    CHECK(created("Ada", "EURO") == R"(AccountCreated.currency: "EURO" does not match ^[A-Z]{3}$)");
    CHECK(created("Ada", "\xc3\x84UR") ==
          R"(AccountCreated.currency: "\xc3\x84UR" does not match ^[A-Z]{3}$)");
    CHECK(created("Ada", R"(E\"R)") == R"(AccountCreated.currency: "E\"R" does not match ^[A-Z]{3}$)");
    CHECK(created("Ada", R"(EU\n)") == R"(AccountCreated.currency: "EU\x0a" does not match ^[A-Z]{3}$)");
    // regexec sees a C string: a NUL must not cut "EUR\0junk" down to "EUR".
    CHECK(created("Ada", R"(EUR\u0000junk)") ==
          R"(AccountCreated.currency: "EUR\x00junk" contains NUL, so does not match ^[A-Z]{3}$)");

    // Unanchored patterns search.
    Checker u(R"({"events": {"T": {"s": {"type": "string", "pattern": "b+"}}}})");
    CHECK(u.payload("T", R"({"s": "abbc"})") == "");
    CHECK(u.payload("T", R"({"s": "ac"})") == R"(T.s: "ac" does not match b+)");
}

TEST_CASE("Validator: amount edge cases") {
    Checker c;
    CHECK(c.amount(R"("12")") == "");
    CHECK(c.amount(R"("12.5")") == "");
    CHECK(c.amount(R"("12.34")") == "");
    CHECK(c.amount(R"("0.01")") == "");
    CHECK(c.amount(R"("00.10")") == "");
    CHECK(c.amount(R"("999999999.99")") == "");
    CHECK(c.amount(R"("0")") == R"(MoneyDeposited.amount: "0" must be > 0)");
    CHECK(c.amount(R"("0.00")") == R"(MoneyDeposited.amount: "0.00" must be > 0)");
    CHECK(c.amount(R"("1000000000")") == R"(MoneyDeposited.amount: "1000000000" must be <= 999999999.99)");
    CHECK(c.amount(R"("999999999999999")") ==
          R"(MoneyDeposited.amount: "999999999999999" must be <= 999999999.99)");
    CHECK(c.amount(R"("1234567890123456")") ==
          R"(MoneyDeposited.amount: "1234567890123456" has more than 15 integer digits)");
    CHECK(c.amount(R"("12.345")") == R"(MoneyDeposited.amount: "12.345" has more than 2 decimals)");
    CHECK(c.amount(R"("1.")") == R"(MoneyDeposited.amount: "1." has no digit after '.')");
    CHECK(c.amount(R"(".5")") == R"(MoneyDeposited.amount: ".5" has no digit before '.')");
    CHECK(c.amount(R"("")") == R"(MoneyDeposited.amount: "" is empty)");
    const std::string not_dec = " is not a decimal (ASCII digits with an optional '.')";
    CHECK(c.amount(R"("-1")") == R"(MoneyDeposited.amount: "-1")" + not_dec);
    CHECK(c.amount(R"("+1")") == R"(MoneyDeposited.amount: "+1")" + not_dec);
    CHECK(c.amount(R"("1e3")") == R"(MoneyDeposited.amount: "1e3")" + not_dec);
    CHECK(c.amount(R"(" 12")") == R"(MoneyDeposited.amount: " 12")" + not_dec);
    CHECK(c.amount(R"("12 ")") == R"(MoneyDeposited.amount: "12 ")" + not_dec);
    CHECK(c.amount(R"("1,5")") == R"(MoneyDeposited.amount: "1,5")" + not_dec);
    CHECK(c.amount(R"("１２")") == R"(MoneyDeposited.amount: "\xef\xbc\x91\xef\xbc\x92")" + not_dec);
    CHECK(c.amount(R"("\u0031\u0032")") == ""); // escapes decode to plain "12"
    CHECK(c.amount("12") == "MoneyDeposited.amount: expected a decimal string, got number");
    CHECK(c.amount("12.34") == "MoneyDeposited.amount: expected a decimal string, got number");
    CHECK(c.amount("null") == "MoneyDeposited.amount: expected a decimal string, got null");
    CHECK(c.amount("true") == "MoneyDeposited.amount: expected a decimal string, got boolean");
    CHECK(c.amount(R"({"value": "1"})") == "MoneyDeposited.amount: expected a decimal string, got object");

    Checker b(R"({"events": {"T": {
        "a": {"type": "decimal", "max_decimals": 1, "min": "1", "max_exclusive": "10"},
        "n": {"type": "decimal", "max_decimals": 0, "optional": true}}}})");
    CHECK(b.payload("T", R"({"a": "1"})") == "");
    CHECK(b.payload("T", R"({"a": "9.9"})") == "");
    CHECK(b.payload("T", R"({"a": "0.9"})") == R"(T.a: "0.9" must be >= 1)");
    CHECK(b.payload("T", R"({"a": "10"})") == R"(T.a: "10" must be < 10)");
    CHECK(b.payload("T", R"({"a": "1.25"})") == R"(T.a: "1.25" has more than 1 decimal)");
    CHECK(b.payload("T", R"({"a": "1", "n": "1.0"})") == R"(T.n: "1.0" has more than 0 decimals)");
    CHECK(b.payload("T", R"({"a": "1", "n": "123456789012345"})") == "");

    Checker s9(R"({"events": {"T": {"a": {"type": "decimal", "max_decimals": 9}}}})");
    CHECK(s9.payload("T", R"({"a": "9223372036.854775807"})") == "");
    CHECK(s9.payload("T", R"({"a": "9223372036.854775808"})") ==
          R"(T.a: "9223372036.854775808" is out of range)");
}

TEST_CASE("Validator: integer and number fields") {
    Checker c(R"({"events": {"T": {
        "i": {"type": "integer", "min": -5, "max": 100},
        "n": {"type": "number", "min": 0.5, "max": 2, "optional": true}}}})");
    CHECK(c.payload("T", R"({"i": 0})") == "");
    CHECK(c.payload("T", R"({"i": -5, "n": 0.5})") == "");
    CHECK(c.payload("T", R"({"i": 100, "n": 2})") == "");
    CHECK(c.payload("T", R"({"i": -6})") == "T.i: -6 must be >= -5");
    CHECK(c.payload("T", R"({"i": 101})") == "T.i: 101 must be <= 100");
    CHECK(c.payload("T", R"({"i": 1.5})") == "T.i: expected an integer, got 1.5");
    CHECK(c.payload("T", R"({"i": 1.0})") == "T.i: expected an integer, got 1");
    CHECK(c.payload("T", R"({"i": "1"})") == "T.i: expected an integer, got string");
    CHECK(c.payload("T", R"({"i": 18446744073709551615})") ==
          "T.i: 18446744073709551615 is out of range for an integer");
    CHECK(c.payload("T", R"({"i": 1, "n": 0.25})") == "T.n: 0.25 must be >= 0.5");
    CHECK(c.payload("T", R"({"i": 1, "n": 3})") == "T.n: 3 must be <= 2");
    CHECK(c.payload("T", R"({"i": 1, "n": 1e300})") == "T.n: 1e+300 must be <= 2");
    CHECK(c.payload("T", R"({"i": 1, "n": "1"})") == "T.n: expected a number, got string");
    Checker big(R"({"events": {"T": {"n": {"type": "number"}, "i": {"type": "integer"}}}})");
    CHECK(big.payload("T", R"({"n": 18446744073709551615, "i": -9223372036854775808})") == "");
}

TEST_CASE("Validator: one RuleSet, many Validators; moves keep working") {
    RuleSet rs = must_parse(kAccountRules);
    Validator a(rs);
    Validator b(rs);
    std::string reason;
    EventView ok{"e", "Account", "a", "MoneyDeposited", R"({"amount": "1"})"};
    CHECK(a.check(ok, &reason));
    CHECK(b.check(ok, &reason));
    Validator moved(std::move(a));
    CHECK(moved.check(ok, &reason));
    b = std::move(moved);
    CHECK_FALSE(b.check(EventView{"e", "Account", "a", "MoneyDeposited", "{}"}, &reason));
    CHECK(reason == "MoneyDeposited.amount: missing");
}

// ---------------------------------------------------------------------------
// The validator stage, configured from pipeline YAML the way the host does it

namespace {

// A pipeline with one validator stage, through the host's YAML parsing and
// schema checking (scalar typing, JSON conversion, defaults).
struct ValidatorPipeline {
    cdcflow::host::PipelineDef def;
    cdcflow::host::PluginSchema val;
    cdcflow_config cfg{};

    explicit ValidatorPipeline(const std::string &rules_yaml) {
        std::string yaml = "pipeline: t\nstages:\n"
                           "  - {id: src, plugin: src}\n"
                           "  - id: validate\n    plugin: validator\n    config:\n      rules:\n" +
                           rules_yaml + "  - {id: snk, plugin: snk}\n";
        auto parsed = cdcflow::host::parse_pipeline(
            yaml, "test.yaml", [](const std::string &) { return std::optional<std::string>(); });
        INFO(yaml, parsed.status().message());
        REQUIRE(parsed.ok());
        def = std::move(parsed.value());
        cdcflow::host::PluginSchema src{"src", CDCFLOW_KIND_SOURCE, {}}, snk{"snk", CDCFLOW_KIND_SINK, {}};
        val = cdcflow::test::declared<cdcflow::validator::ValidatorStage>();
        auto find = [&](const std::string &name) -> const cdcflow::host::PluginSchema * {
            return name == "src" ? &src : name == "snk" ? &snk : name == "validator" ? &val : nullptr;
        };
        auto st = cdcflow::host::check_pipeline(def, find);
        INFO(st.message());
        REQUIRE(st.ok());
        cfg.def = &def.stages[1];
        cfg.schema = &val;
    }
    cdcflow::Configured<cdcflow::validator::ValidatorStage::Settings> config() const {
        return {cdcflow::host::host_api(), &cfg};
    }
};

cdcflow::test::EventSpec event(const char *id, const char *aggregate_type, const char *type,
                               const char *payload) {
    cdcflow::test::EventSpec e;
    e.id = id;
    e.aggregate_type = aggregate_type;
    e.aggregate_id = "acc-1";
    e.type = type;
    e.payload = payload;
    return e;
}

const char *const kAccountRulesYaml = R"(        aggregate_types: [Account]
        events:
          AccountCreated:
            owner:    {type: string, min_length: 1}
            currency: {type: string, pattern: "^[A-Z]{3}$"}
          MoneyDeposited:
            amount:   {type: decimal, max_decimals: 2, min_exclusive: "0", max: "999999999.99"}
          AccountClosed: {}
          AccountNoted:
)";

} // namespace

TEST_CASE("validator stage: YAML rules, rejects with the stage id and reason, metrics") {
    ValidatorPipeline p(kAccountRulesYaml);
    cdcflow::test::StageHarness h("validate", nullptr, 0, {});
    auto stage = std::make_unique<cdcflow::validator::ValidatorStage>(p.config(), h.context());

    cdcflow_batch b(16);
    cdcflow::test::append(b, event("e1", "Account", "AccountCreated", R"({"owner":"Ada","currency":"EUR"})"));
    cdcflow::test::append(b, event("e2", "Account", "MoneyDeposited", R"({"amount":"12.345"})"));
    cdcflow::test::append(b, event("e3", "Account", "MoneyDeposited", R"({"amount":12})"));
    cdcflow::test::append(b, event("e4", "Account", "AccountClosed", "[]"));
    cdcflow::test::append(b, event("e5", "Account", "AccountNoted", R"({"any": 1})"));
    cdcflow::test::append(b, event("e6", "Order", "AccountClosed", "{}"));
    cdcflow::test::append(b, event("e7", "Account", "MoneyDeposited", R"({"amount":"0"})"));
    b.at(6).status = CDCFLOW_EVENT_DUPLICATE; // an earlier verdict: not checked again
    cdcflow::Batch view = h.view(b);
    stage->process(view);

    std::vector<std::string> reasons;
    for (uint32_t i = 0; i < b.size(); ++i) {
        const cdcflow_event &e = b.at(i);
        if (e.status == CDCFLOW_EVENT_REJECTED) CHECK(cdcflow::sv(e.reject_stage) == "validate");
        reasons.push_back(e.status == CDCFLOW_EVENT_REJECTED ? std::string(cdcflow::sv(e.reject_reason))
                          : e.status == CDCFLOW_EVENT_OK     ? "ok"
                                                             : "duplicate");
    }
    CHECK(reasons == std::vector<std::string>{
                         "ok",
                         R"(MoneyDeposited.amount: "12.345" has more than 2 decimals)",
                         "MoneyDeposited.amount: expected a decimal string, got number",
                         "payload is not a JSON object (got array)",
                         "ok",
                         "aggregate type 'Order' is not in aggregate_types",
                         "duplicate",
                     });
    CHECK(h.metric("checked") == 6);
    CHECK(h.metric("rejected") == 4); // counted once, by the host's event_reject

    // Batches are reused: same stage, next batch.
    b.reset();
    cdcflow::test::append(b, event("e8", "Account", "AccountClosed", "{}"));
    view = h.view(b);
    stage->process(view);
    CHECK(b.at(0).status == CDCFLOW_EVENT_OK);
    CHECK(h.metric("checked") == 7);
}

TEST_CASE("validator stage: a bad rule is a config error naming the file position and the rule") {
    cdcflow::test::StageHarness h("validate", nullptr, 0, {});
    auto error_of = [&](const std::string &rules_yaml) -> std::string {
        ValidatorPipeline p(rules_yaml);
        try {
            cdcflow::validator::ValidatorStage stage(p.config(), h.context());
        } catch (const cdcflow::Error &e) {
            CHECK(e.status() == CDCFLOW_ERR_CONFIG);
            return e.what();
        }
        return "no error";
    };
    CHECK(error_of("        events:\n          MoneyDeposited:\n            amount: {type: decimal, "
                   "max_decimals: 12}\n") ==
          "test.yaml:8:9: rules: events.MoneyDeposited.amount.max_decimals: must be an integer 0..9");
    // An unquoted YAML number with a fraction would pass through a double.
    CHECK(error_of("        events:\n          M:\n            a: {type: decimal, max_decimals: 2, max: "
                   "999999999.99}\n")
              .starts_with("test.yaml:8:9: rules: events.M.a.max: must be a decimal string like"));
    CHECK(error_of("        events: {}\n") ==
          "test.yaml:8:9: rules: events: must be a mapping with at least one event type");
    CHECK(error_of("        events:\n          M: {}\n        aggregate_type: [A]\n") ==
          "test.yaml:8:9: rules: aggregate_type: unknown key (allowed: aggregate_types, events, "
          "max_payload_bytes)");
}

// Run with --no-skip to measure: prints ns per event for typical events.
TEST_CASE("Validator benchmark" * doctest::skip()) {
    Checker c;
    std::vector<EventView> events = {
        {"0190a1b2-0000-7000-8000-000000000001", "Account", "acc-42", "AccountCreated",
         R"({"owner": "Ada Lovelace", "currency": "EUR"})"},
        {"0190a1b2-0000-7000-8000-000000000002", "Account", "acc-42", "MoneyDeposited",
         R"({"amount": "12.34"})"},
        {"0190a1b2-0000-7000-8000-000000000003", "Account", "acc-42", "MoneyWithdrawn",
         R"({"amount": "2.30"})"},
        {"0190a1b2-0000-7000-8000-000000000004", "Account", "acc-42", "AccountClosed", "{}"},
    };
    const int n = 2'000'000;
    std::string reason;
    size_t ok = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
        ok += c.v.check(events[static_cast<size_t>(i) % events.size()], &reason);
    auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    CHECK(ok == static_cast<size_t>(n));
    MESSAGE("validator: " << static_cast<double>(ns) / n << " ns/event (mix of 4 account events)");
}

// The declared models' expression language (plugins/projection_sink/
// declared/expr.hpp): types checked at compile, exact arithmetic, overflow
// as a failure, three-valued logic over null.
#include "declared/expr.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>

using namespace cdcflow::projection::declared;

namespace {

// payload: i (integer), d (decimal(2)), t (text), b (boolean), d4 (decimal(4));
// row: exists (boolean), bal (decimal(2)), n (integer), s (text); event: ts (integer).
class TestScope : public Scope {
public:
    bool resolve(std::string_view scope, std::string_view name, Slot &out, std::string &why) const override {
        struct Entry {
            const char *scope, *name;
            Slot slot;
        };
        static const Entry kEntries[] = {
            {"payload", "i", {Source::payload, 0, {Kind::integer, 0}}},
            {"payload", "d", {Source::payload, 1, {Kind::decimal, 2}}},
            {"payload", "t", {Source::payload, 2, {Kind::text, 0}}},
            {"payload", "b", {Source::payload, 3, {Kind::boolean, 0}}},
            {"payload", "d4", {Source::payload, 4, {Kind::decimal, 4}}},
            {"", "exists", {Source::row, 0, {Kind::boolean, 0}}},
            {"row", "bal", {Source::row, 1, {Kind::decimal, 2}}},
            {"row", "n", {Source::row, 2, {Kind::integer, 0}}},
            {"row", "s", {Source::row, 3, {Kind::text, 0}}},
            {"event", "ts", {Source::event, 0, {Kind::integer, 0}}},
        };
        for (const Entry &e : kEntries)
            if (scope == e.scope && name == e.name) {
                out = e.slot;
                return true;
            }
        why = "unknown name '" + std::string(scope) + "." + std::string(name) + "'";
        return false;
    }
};

struct Env {
    Value payload[5];
    Value row[4];
    Value event[1];
    Env() {
        payload[0] = Value::of_int(7);
        payload[1] = Value::of_int(1250); // 12.50
        payload[2] = Value::of_text("Ada");
        payload[3] = Value::of_int(1);
        payload[4] = Value::of_int(5); // 0.0005
        row[0] = Value::of_int(1);
        row[1] = Value::of_int(10005); // 100.05
        row[2] = Value::of_int(3);
        row[3] = Value::of_text("open");
        event[0] = Value::of_int(1000);
    }
};

Program compiled(const std::string &text) {
    Program p;
    std::string err;
    TestScope scope;
    REQUIRE_MESSAGE(compile(text, scope, p, err), text << ": " << err);
    return p;
}

std::string error_of(const std::string &text) {
    Program p;
    std::string err;
    TestScope scope;
    if (compile(text, scope, p, err)) return "(compiled)";
    return err;
}

// The value as a reason shows it, or "overflow".
std::string eval(const std::string &text, const Env &env = Env()) {
    Program p = compiled(text);
    Value v;
    if (!p.run(env.payload, env.row, env.event, v)) return "overflow";
    std::string out;
    append_value(out, v, p.type());
    return out;
}

} // namespace

TEST_CASE("expr: integer arithmetic and precedence") {
    CHECK(eval("1 + 2 * 3") == "7");
    CHECK(eval("(1 + 2) * 3") == "9");
    CHECK(eval("10 - 4 - 3") == "3"); // left-associative
    CHECK(eval("-payload.i + row.n") == "-4");
    CHECK(eval("event.ts * 2") == "2000");
    CHECK(compiled("1 + 2").type() == Type{Kind::integer, 0});
}

TEST_CASE("expr: decimals are exact at a static scale") {
    CHECK(eval("row.bal + payload.d") == "112.55");
    CHECK(compiled("row.bal + payload.d").type() == Type{Kind::decimal, 2});
    CHECK(eval("row.bal - payload.d4") == "100.0495"); // aligned to the larger scale
    CHECK(compiled("row.bal - payload.d4").type() == Type{Kind::decimal, 4});
    CHECK(eval("payload.d * 3") == "37.50");            // integer * decimal keeps the scale
    CHECK(eval("payload.d * payload.d") == "156.2500"); // scales add: no rounding
    CHECK(eval("0.1 + 0.2 == 0.3") == "true");          // what a double gets wrong
    CHECK(eval("payload.d + 1") == "13.50");
    CHECK(eval("12.5 == payload.d") == "true"); // 12.5 at scale 1 equals 12.50
}

TEST_CASE("expr: overflow fails the evaluation, never wraps") {
    CHECK(eval("9223372036854775807 + 1") == "overflow");
    CHECK(eval("9223372036854775807 * 2") == "overflow");
    CHECK(eval("0 - 9223372036854775807 - 2") == "overflow");
    CHECK(eval("9223372036854775807 + 0") == "9223372036854775807");
    Env big;
    big.payload[0] = Value::of_int(std::numeric_limits<int64_t>::min());
    CHECK(eval("-payload.i", big) == "overflow");
    // Aligning scales can overflow too: 92233720368547758.07 at scale 2
    // brought to scale 4.
    Env wide;
    wide.row[1] = Value::of_int(std::numeric_limits<int64_t>::max());
    CHECK(eval("row.bal + payload.d4", wide) == "overflow");
    CHECK(error_of("99999999999999999999").find("malformed number") != std::string::npos);
}

TEST_CASE("expr: a comparison across scales never overflows") {
    Env big;
    big.payload[0] = Value::of_int(1'000'000'000'000'000'000); // payload.i = 10^18
    CHECK(eval("payload.i > 0.5", big) == "true");
    CHECK(eval("0.5 < payload.i", big) == "true");
    CHECK(eval("payload.i == 0.5", big) == "false");
    CHECK(eval("-payload.i < 0.000000001", big) == "true");
    big.payload[0] = Value::of_int(std::numeric_limits<int64_t>::max());
    big.payload[4] = Value::of_int(std::numeric_limits<int64_t>::max()); // decimal(4): INT64_MAX units
    CHECK(eval("payload.i > payload.d4", big) == "true");
    CHECK(eval("payload.d4 >= payload.i", big) == "false");
    CHECK(eval("row.bal * 1 >= 100.05", Env()) == "true"); // equal across scales 2 and 2
    CHECK(eval("row.bal == 100.050", Env()) == "true");
}

TEST_CASE("expr: comparisons and three-valued logic") {
    CHECK(eval("row.s == 'open'") == "true");
    CHECK(eval("row.s != \"open\"") == "false");
    CHECK(eval("'abc' < 'abd'") == "true");
    CHECK(eval("payload.d >= 12.5 and payload.i > 6") == "true");
    CHECK(eval("not exists or payload.b") == "true");
    CHECK(eval("'it''s' == 'it''s'") == "true");
    Env none; // a row that does not exist: its columns are null
    none.row[0] = Value::of_int(0);
    none.row[1] = Value{};
    none.row[2] = Value{};
    CHECK(eval("row.bal + 1", none) == "null");
    CHECK(eval("row.n > 1", none) == "null");
    CHECK(eval("not (row.n > 1)", none) == "null");
    CHECK(eval("row.n > 1 and false", none) == "false"); // false AND null
    CHECK(eval("row.n > 1 or true", none) == "true");    // true OR null
    CHECK(eval("exists and row.n + 1 > 0", none) == "false");
}

TEST_CASE("expr: short-circuit keeps an overflow on the untaken side from failing") {
    Env wide;
    wide.row[2] = Value::of_int(std::numeric_limits<int64_t>::max());
    CHECK(eval("false and row.n + 1 > 0", wide) == "false");
    CHECK(eval("true or row.n + 1 > 0", wide) == "true");
    CHECK(eval("true and row.n + 1 > 0", wide) == "overflow");
}

TEST_CASE("expr: type errors are compile errors that name the column") {
    CHECK(error_of("row.s == payload.d") == "column 7: cannot compare text with decimal(2)");
    CHECK(error_of("payload.t + 1") == "column 11: '+' needs numbers, got text and integer");
    CHECK(error_of("payload.i and true") == "column 11: 'and' needs boolean operands, got integer");
    CHECK(error_of("not payload.t").find("'not' needs boolean operands, got text") != std::string::npos);
    CHECK(error_of("payload.b < true") == "column 11: booleans compare only with == and !=");
    CHECK(error_of("row.missing > 1") == "column 1: unknown name 'row.missing'");
    CHECK(error_of("balance > 1").find("unknown name 'balance'") != std::string::npos);
    CHECK(error_of("payload.d / 2").find("division is not supported") != std::string::npos);
    CHECK(error_of("payload.i = 1").find("write '==' to compare") != std::string::npos);
    CHECK(error_of("1e2").find("malformed number") != std::string::npos);
    CHECK(error_of("(1 + 2").find("expected ')'") != std::string::npos);
    CHECK(error_of("'open").find("closing quote") != std::string::npos);
    CHECK(error_of("1 +") == "column 4: expected a value, found the end of the expression");
    CHECK(error_of("1 2") == "column 3: unexpected '2'");
    CHECK(error_of("") == "column 1: empty expression");
    CHECK(error_of("0.00001 * 0.00001").find("more than 9") != std::string::npos);
    std::string deep(100, '(');
    CHECK(error_of(deep + "1" + std::string(100, ')')) == "(compiled)"); // parentheses need no stack
    std::string wide = "1";
    for (int i = 0; i < 70; ++i)
        wide = "1 + (" + wide + ")";
    CHECK(error_of(wide).find("too deeply nested") != std::string::npos);
}

TEST_CASE("expr: deep nesting of '(', 'not' and '-' is an error at its position, not a stack overflow") {
    // 20,000 of each would overflow the compiler's C++ stack if unbounded.
    const std::string parens(20000, '(');
    CHECK(error_of(parens + "1" + std::string(20000, ')')).find("column 201: expression too deeply nested") ==
          0);
    std::string nots;
    for (int i = 0; i < 20000; ++i)
        nots += "not ";
    CHECK(error_of(nots + "true").find("column 801: expression too deeply nested") == 0);
    CHECK(error_of(std::string(20000, '-') + "1").find("column 201: expression too deeply nested") == 0);
    // 200 levels are fine.
    CHECK(error_of(std::string(200, '(') + "1" + std::string(200, ')')) == "(compiled)");
}

TEST_CASE("expr: values in reasons") {
    std::string out;
    append_value(out, Value::of_int(-5), Type{Kind::decimal, 2});
    CHECK(out == "-0.05");
    out.clear();
    append_value(out, Value::of_text("a\nb"), Type{Kind::text, 0});
    CHECK(out == "a\\x0ab"); // one line
    out.clear();
    append_value(out, Value{}, Type{Kind::integer, 0});
    CHECK(out == "null");
}

TEST_CASE("expr: same_text compares every byte at every length") {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 17, 40}) {
        std::string a(n, 'x');
        CHECK(same_text(a, a));
        for (size_t i = 0; i < n; ++i) {
            std::string b = a;
            b[i] = 'y';
            CHECK_FALSE(same_text(a, b));
        }
        CHECK_FALSE(same_text(a, a + "x"));
    }
    CHECK(eval("'MoneyWithdrawn' == 'MoneyDeposited'") == "false");
    CHECK(eval("'MoneyWithdrawn' != 'MoneyWithdrawX'") == "true");
}

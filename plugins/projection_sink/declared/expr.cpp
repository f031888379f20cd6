#include "declared/expr.hpp"

#include "base/text.hpp"
#include "reasons.hpp"

#include <cdcflow/rules.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>

namespace cdcflow::projection::declared {

namespace {

// 128 bits for comparisons across scales (__extension__: -Wpedantic).
__extension__ using Wide = __int128;

constexpr int64_t kPow10[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};

enum Cmp : uint8_t { eq, ne, lt, le, gt, ge };

bool is_numeric(const Type &t) {
    return t.kind == Kind::integer || t.kind == Kind::decimal;
}
int scale_of(const Type &t) {
    return t.kind == Kind::decimal ? t.scale : 0;
}

} // namespace

std::string type_name(const Type &t) {
    switch (t.kind) {
    case Kind::text:
        return "text";
    case Kind::integer:
        return "integer";
    case Kind::decimal:
        return "decimal(" + std::to_string(t.scale) + ")";
    case Kind::boolean:
        return "boolean";
    }
    return "value";
}

void append_value(std::string &out, const Value &v, const Type &t) {
    if (v.null) {
        out.append("null");
        return;
    }
    switch (t.kind) {
    case Kind::text:
        // Readable (UTF-8 kept), one line, short: as the accounts model
        // writes ids in its reasons.
        base::append_quoted(out, v.text(), kIdQuoting);
        return;
    case Kind::integer:
        out.append(std::to_string(v.i));
        return;
    case Kind::decimal: {
        char buf[rules::Decimal::kMaxTextSize];
        out.append(buf, rules::Decimal(v.i, t.scale).format(buf));
        return;
    }
    case Kind::boolean:
        out.append(v.i ? "true" : "false");
        return;
    }
}

// ------------------------------------------------------------------ run

bool Program::run(const Value *payload, const Value *row, const Value *event, Value &out) const {
    // Most effects are a bare name (event.timestamp, payload.owner): no
    // stack, no loop.
    if (code_.size() == 1 && code_[0].op == Op::load) {
        const Instr &in = code_[0];
        out = (in.aux == static_cast<uint8_t>(Source::payload) ? payload
               : in.aux == static_cast<uint8_t>(Source::row)   ? row
                                                               : event)[in.arg];
        return true;
    }
    // Uninitialised (a Value is an implicit-lifetime aggregate): zeroing
    // kMaxDepth slots on every run cost more than most programs themselves.
    alignas(Value) std::byte storage[sizeof(Value) * kMaxDepth];
    Value *stack = reinterpret_cast<Value *>(storage);
    size_t sp = 0; // next free
    const size_t n = code_.size();
    for (size_t pc = 0; pc < n; ++pc) {
        const Instr &in = code_[pc];
        switch (in.op) {
        case Op::constant:
            stack[sp++] = consts_[static_cast<size_t>(in.arg)];
            break;
        case Op::text: {
            const auto &[off, len] = texts_[static_cast<size_t>(in.arg)];
            stack[sp++] = Value{0, pool_.data() + off, len, false};
            break;
        }
        case Op::load: {
            const Value *from = in.aux == static_cast<uint8_t>(Source::payload) ? payload
                                : in.aux == static_cast<uint8_t>(Source::row)   ? row
                                                                                : event;
            stack[sp++] = from[in.arg];
            break;
        }
        case Op::rescale: {
            Value &v = stack[sp - 1 - in.aux];
            if (!v.null && __builtin_mul_overflow(v.i, kPow10[in.arg], &v.i)) return false;
            break;
        }
        case Op::neg: {
            Value &v = stack[sp - 1];
            if (!v.null && __builtin_sub_overflow(int64_t{0}, v.i, &v.i)) return false;
            break;
        }
        case Op::add:
        case Op::sub:
        case Op::mul: {
            Value &a = stack[sp - 2];
            const Value &b = stack[sp - 1];
            --sp;
            if (a.null || b.null) {
                a.null = true;
                break;
            }
            bool overflow = in.op == Op::add   ? __builtin_add_overflow(a.i, b.i, &a.i)
                            : in.op == Op::sub ? __builtin_sub_overflow(a.i, b.i, &a.i)
                                               : __builtin_mul_overflow(a.i, b.i, &a.i);
            if (overflow) return false;
            break;
        }
        case Op::cmp_num:
        case Op::cmp_text: {
            Value &a = stack[sp - 2];
            const Value &b = stack[sp - 1];
            --sp;
            if (a.null || b.null) {
                a = Value{};
                break;
            }
            int c;
            if (in.op == Op::cmp_num && in.arg != 0) {
                // Scales differ: brought together in 128 bits (10^9 times
                // an int64 fits), so a comparison never overflows.
                Wide x = a.i, y = b.i;
                if (in.arg > 0)
                    x *= kPow10[in.arg];
                else
                    y *= kPow10[-in.arg];
                c = x < y ? -1 : x > y ? 1 : 0;
            } else if (in.op == Op::cmp_num)
                c = a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
            else if (in.aux == eq || in.aux == ne)
                c = same_text(a.text(), b.text()) ? 0 : 1;
            else
                c = a.text().compare(b.text());
            bool r = false;
            switch (in.aux) {
            case eq:
                r = c == 0;
                break;
            case ne:
                r = c != 0;
                break;
            case lt:
                r = c < 0;
                break;
            case le:
                r = c <= 0;
                break;
            case gt:
                r = c > 0;
                break;
            default:
                r = c >= 0;
                break;
            }
            a = Value::of_int(r ? 1 : 0);
            break;
        }
        case Op::not_: {
            Value &v = stack[sp - 1];
            if (!v.null) v.i = !v.i;
            break;
        }
        case Op::and_:
        case Op::or_: {
            // Three-valued: false AND null is false, true OR null is true.
            Value &a = stack[sp - 2];
            const Value &b = stack[sp - 1];
            --sp;
            const int64_t decisive = in.op == Op::and_ ? 0 : 1;
            if ((!a.null && a.i == decisive) || (!b.null && b.i == decisive))
                a = Value::of_int(decisive);
            else if (a.null || b.null)
                a = Value{};
            else
                a = Value::of_int(1 - decisive);
            break;
        }
        case Op::jump_false:
        case Op::jump_true: {
            const Value &v = stack[sp - 1];
            if (!v.null && v.i == (in.op == Op::jump_true ? 1 : 0)) pc = static_cast<size_t>(in.arg) - 1;
            break;
        }
        }
    }
    out = stack[0];
    return true;
}

// -------------------------------------------------------------- compile

// Recursive descent straight to postfix code: each parse_* emits its
// operands' code, then the operator's, and returns the type of what it
// leaves on the stack.
//
//   or      := and ("or" and)*
//   and     := not ("and" not)*
//   not     := "not" not | compare
//   compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
//   sum     := product (("+" | "-") product)*
//   product := unary ("*" unary)*
//   unary   := "-" unary | primary
//   primary := integer | decimal | 'text' | "text" | true | false | exists
//            | scope "." name | "(" or ")"
class Compiler {
public:
    Compiler(std::string_view text, const Scope &scope, Program &out) : s_(text), scope_(scope), p_(out) {}

    bool compile(std::string &error) {
        p_ = Program{};
        p_.text_ = std::string(s_);
        try {
            skip();
            if (pos_ == s_.size()) fail(pos_, "empty expression");
            Type t = parse_or();
            skip();
            if (pos_ != s_.size()) fail(pos_, "unexpected " + describe_here());
            p_.type_ = t;
            p_.depth_ = max_depth_;
        } catch (const Failure &f) {
            error = "column " + std::to_string(f.at + 1) + ": " + f.why;
            return false;
        }
        return true;
    }

private:
    struct Failure {
        size_t at;
        std::string why;
    };
    [[noreturn]] void fail(size_t at, std::string why) { throw Failure{at, std::move(why)}; }

    void skip() {
        while (pos_ < s_.size() &&
               (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    static bool word_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    }
    // The word at pos_ (letters, digits, '_'), not consumed.
    std::string_view peek_word() {
        skip();
        size_t e = pos_;
        while (e < s_.size() && word_char(s_[e]))
            ++e;
        return s_.substr(pos_, e - pos_);
    }
    bool take_word(std::string_view w) {
        if (peek_word() != w) return false;
        pos_ += w.size();
        return true;
    }
    bool take(std::string_view op) {
        skip();
        if (s_.substr(pos_, op.size()) != op) return false;
        pos_ += op.size();
        return true;
    }
    std::string describe_here() {
        if (pos_ >= s_.size()) return "end of expression";
        std::string out = "'";
        base::append_quoted(out, s_.substr(pos_, 20), base::Quoting{0, 20, true});
        return out + "'";
    }

    void emit(Program::Op op, uint8_t aux = 0, int32_t arg = 0) {
        p_.code_.push_back({op, aux, arg});
        switch (op) {
        case Program::Op::constant:
        case Program::Op::text:
        case Program::Op::load:
            if (++depth_ > max_depth_) max_depth_ = depth_;
            if (depth_ > kMaxDepth) fail(pos_, "expression too deeply nested");
            break;
        case Program::Op::add:
        case Program::Op::sub:
        case Program::Op::mul:
        case Program::Op::cmp_num:
        case Program::Op::cmp_text:
        case Program::Op::and_:
        case Program::Op::or_:
            --depth_;
            break;
        default:
            break;
        }
    }
    // Brings a numeric operand `below` slots under the top from scale
    // `from` to scale `to`.
    void rescale(int from, int to, uint8_t below) {
        if (to > from) emit(Program::Op::rescale, below, to - from);
    }

    // The parser recurses once per '(', 'not' and unary '-': bound that
    // recursion, or 20,000 '(' in a model overflow the C++ stack (SIGSEGV in
    // `cdcflow validate`). kMaxDepth bounds only the evaluator's stack, which
    // `((((a))))` never grows.
    static constexpr size_t kMaxNesting = 200;
    struct Nesting {
        Compiler &c;
        Nesting(Compiler &compiler, size_t at) : c(compiler) {
            if (++c.nesting_ > kMaxNesting) {
                --c.nesting_; // the destructor does not run for a throwing constructor
                c.fail(at, "expression too deeply nested (more than " + std::to_string(kMaxNesting) +
                               " parentheses, 'not' or '-' inside each other)");
            }
        }
        ~Nesting() { --c.nesting_; }
        Nesting(const Nesting &) = delete;
        Nesting &operator=(const Nesting &) = delete;
    };

    Type parse_or() {
        Type t = parse_and();
        while (true) {
            size_t at = pos_;
            if (!take_word("or")) return t;
            need_bool(t, at, "or");
            size_t jump = p_.code_.size();
            emit(Program::Op::jump_true);
            need_bool(parse_and(), at, "or");
            emit(Program::Op::or_);
            p_.code_[jump].arg = static_cast<int32_t>(p_.code_.size());
        }
    }
    Type parse_and() {
        Type t = parse_not();
        while (true) {
            size_t at = pos_;
            if (!take_word("and")) return t;
            need_bool(t, at, "and");
            size_t jump = p_.code_.size();
            emit(Program::Op::jump_false);
            need_bool(parse_not(), at, "and");
            emit(Program::Op::and_);
            p_.code_[jump].arg = static_cast<int32_t>(p_.code_.size());
        }
    }
    Type parse_not() {
        skip(); // errors point at the 'not', not at the space before it
        size_t at = pos_;
        if (take_word("not")) {
            Nesting guard(*this, at);
            need_bool(parse_not(), at, "not");
            emit(Program::Op::not_);
            return Type{Kind::boolean};
        }
        return parse_compare();
    }
    void need_bool(const Type &t, size_t at, const char *op) {
        if (t.kind != Kind::boolean)
            fail(at, std::string("'") + op + "' needs boolean operands, got " + type_name(t));
    }

    Type parse_compare() {
        Type a = parse_sum();
        skip();
        size_t at = pos_;
        Cmp c;
        if (take("=="))
            c = eq;
        else if (take("!="))
            c = ne;
        else if (take("<="))
            c = le;
        else if (take(">="))
            c = ge;
        else if (take("<"))
            c = lt;
        else if (take(">"))
            c = gt;
        else if (take("=")) {
            fail(at, "'=' is not an operator: write '==' to compare");
        } else
            return a;
        Type b = parse_sum();
        if (is_numeric(a) && is_numeric(b)) {
            // The scales are brought together by the comparison itself
            // (arg: the left side's scale up, negative: the right's), not by
            // rescale: `payload.a > 0.5` with a = 10^18 must be true, not an
            // overflow that rejects the event.
            emit(Program::Op::cmp_num, c, scale_of(b) - scale_of(a));
        } else if (a.kind == Kind::text && b.kind == Kind::text) {
            emit(Program::Op::cmp_text, c);
        } else if (a.kind == Kind::boolean && b.kind == Kind::boolean) {
            if (c != eq && c != ne) fail(at, "booleans compare only with == and !=");
            emit(Program::Op::cmp_num, c);
        } else {
            fail(at, "cannot compare " + type_name(a) + " with " + type_name(b));
        }
        return Type{Kind::boolean};
    }

    Type parse_sum() {
        Type a = parse_product();
        while (true) {
            skip();
            size_t at = pos_;
            bool plus = take("+");
            if (!plus && !take("-")) return a;
            Type b = parse_product();
            if (!is_numeric(a) || !is_numeric(b))
                fail(at, std::string("'") + (plus ? "+" : "-") + "' needs numbers, got " + type_name(a) +
                             " and " + type_name(b));
            int s = std::max(scale_of(a), scale_of(b));
            rescale(scale_of(a), s, 1);
            rescale(scale_of(b), s, 0);
            emit(plus ? Program::Op::add : Program::Op::sub);
            a = (a.kind == Kind::decimal || b.kind == Kind::decimal) ? Type{Kind::decimal, s}
                                                                     : Type{Kind::integer};
        }
    }
    Type parse_product() {
        Type a = parse_unary();
        while (true) {
            skip();
            size_t at = pos_;
            if (!take("*")) {
                skip();
                if (pos_ < s_.size() && (s_[pos_] == '/' || s_[pos_] == '%'))
                    fail(pos_, "division is not supported (results must stay exact)");
                return a;
            }
            Type b = parse_unary();
            if (!is_numeric(a) || !is_numeric(b))
                fail(at, "'*' needs numbers, got " + type_name(a) + " and " + type_name(b));
            // Units multiply, so scales add: exact, no rounding.
            int s = scale_of(a) + scale_of(b);
            if (s > rules::Decimal::kMaxScale)
                fail(at, "the product has " + std::to_string(s) + " decimals, more than " +
                             std::to_string(rules::Decimal::kMaxScale));
            emit(Program::Op::mul);
            a = (a.kind == Kind::decimal || b.kind == Kind::decimal) ? Type{Kind::decimal, s}
                                                                     : Type{Kind::integer};
        }
    }
    Type parse_unary() {
        skip();
        size_t at = pos_;
        if (take("-")) {
            Nesting guard(*this, at);
            Type t = parse_unary();
            if (!is_numeric(t)) fail(at, "'-' needs a number, got " + type_name(t));
            emit(Program::Op::neg);
            return t;
        }
        return parse_primary();
    }

    Type parse_primary() {
        skip();
        size_t at = pos_;
        if (pos_ >= s_.size()) fail(pos_, "expected a value, found the end of the expression");
        char c = s_[pos_];
        if (c == '(') {
            Nesting guard(*this, at);
            ++pos_;
            Type t = parse_or();
            if (!take(")")) fail(pos_, "expected ')', found " + describe_here());
            return t;
        }
        if (c == '\'' || c == '"') return parse_text(c);
        if (c >= '0' && c <= '9') return parse_number();
        std::string_view w = peek_word();
        if (w.empty()) fail(at, "unexpected " + describe_here());
        pos_ += w.size();
        if (w == "true" || w == "false") {
            p_.consts_.push_back(Value::of_int(w == "true" ? 1 : 0));
            emit(Program::Op::constant, 0, static_cast<int32_t>(p_.consts_.size() - 1));
            return Type{Kind::boolean};
        }
        if (w == "null") fail(at, "'null' is not a value here: test 'exists' for a missing row");
        Slot slot{};
        std::string why;
        if (w == "exists") {
            if (!scope_.resolve("", w, slot, why)) fail(at, why);
        } else {
            if (!take("."))
                fail(at, "unknown name '" + std::string(w) +
                             "' (names are scope.name: payload.x, row.x, event.x)");
            std::string_view name = peek_word();
            if (name.empty()) fail(pos_, "expected a name after '" + std::string(w) + ".'");
            pos_ += name.size();
            if (!scope_.resolve(w, name, slot, why)) fail(at, why);
        }
        emit(Program::Op::load, static_cast<uint8_t>(slot.source), static_cast<int32_t>(slot.index));
        return slot.type;
    }

    Type parse_text(char quote) {
        size_t at = pos_++;
        std::string lit;
        while (true) {
            if (pos_ >= s_.size()) fail(at, "text literal without its closing quote");
            char c = s_[pos_++];
            if (c == quote) {
                // Doubled quote: the quote itself, as in SQL.
                if (pos_ < s_.size() && s_[pos_] == quote) {
                    lit += quote;
                    ++pos_;
                    continue;
                }
                break;
            }
            lit += c;
        }
        p_.texts_.emplace_back(static_cast<uint32_t>(p_.pool_.size()), static_cast<uint32_t>(lit.size()));
        p_.pool_ += lit;
        emit(Program::Op::text, 0, static_cast<int32_t>(p_.texts_.size() - 1));
        return Type{Kind::text};
    }

    Type parse_number() {
        size_t at = pos_;
        size_t e = pos_;
        while (e < s_.size() && ((s_[e] >= '0' && s_[e] <= '9') || s_[e] == '.'))
            ++e;
        if (e < s_.size() && (word_char(s_[e]))) fail(at, "malformed number (no exponents or suffixes)");
        std::string_view lit = s_.substr(at, e - at);
        pos_ = e;
        size_t point = lit.find('.');
        int scale = point == std::string_view::npos ? 0 : static_cast<int>(lit.size() - point - 1);
        if (scale > rules::Decimal::kMaxScale)
            fail(at, "a number with more than " + std::to_string(rules::Decimal::kMaxScale) + " decimals");
        rules::Decimal d;
        auto err = rules::Decimal::parse_within_int64(lit, scale, &d);
        if (err != rules::Decimal::ParseError::kNone)
            fail(at, "malformed number '" + std::string(lit) + "': " + rules::Decimal::describe(err));
        p_.consts_.push_back(Value::of_int(d.units()));
        emit(Program::Op::constant, 0, static_cast<int32_t>(p_.consts_.size() - 1));
        return point == std::string_view::npos ? Type{Kind::integer} : Type{Kind::decimal, scale};
    }

    std::string_view s_;
    const Scope &scope_;
    Program &p_;
    size_t pos_ = 0;
    size_t depth_ = 0, max_depth_ = 0;
    size_t nesting_ = 0; // see Nesting
};

bool compile(std::string_view text, const Scope &scope, Program &out, std::string &error) {
    return Compiler(text, scope, out).compile(error);
}

} // namespace cdcflow::projection::declared

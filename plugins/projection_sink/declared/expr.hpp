// The expression language of declared read models (README.md, "Declared
// models"): parsed and type-checked once, at create (so `cdcflow validate`
// reports every mistake), then run per event as a flat postfix program over
// typed slots: no name look-up, no allocation, no floating point.
//
// Types: text, integer (int64; + - * that overflow fail the evaluation,
// never wrap), decimal at a static scale (int64 units, exact), boolean.
// Any value may be null (a column of a row that does not exist, an optional
// payload field that is absent): arithmetic and comparisons with null give
// null, and/or/not follow SQL's three-valued logic.
//
// Thread-safety: a compiled Program is immutable; run() uses only its
// arguments and the caller's stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cdcflow::projection::declared {

enum class Kind : uint8_t { text, integer, decimal, boolean };

struct Type {
    Kind kind = Kind::integer;
    int scale = 0; // decimal: digits after the point (0..9)
    friend bool operator==(const Type &, const Type &) = default;
};

// "text", "integer", "decimal(2)", "boolean".
std::string type_name(const Type &t);

// A value at run time. Text points into memory that outlives the
// evaluation (the batch's payload, a cached row, a literal); a decimal is
// its units at the scale its expression has; a boolean is 0 or 1.
struct Value {
    int64_t i = 0;
    const char *p = nullptr;
    uint32_t n = 0;
    bool null = true;

    std::string_view text() const { return {p, n}; }
    static Value of_int(int64_t v) { return Value{v, nullptr, 0, false}; }
    static Value of_text(std::string_view s) {
        return Value{0, s.data(), static_cast<uint32_t>(s.size()), false};
    }
};

// Where a name in an expression reads from.
enum class Source : uint8_t { payload, row, event };

struct Slot {
    Source source;
    uint32_t index;
    Type type;
};

// Resolves `scope.name` (payload.amount, row.balance, event.timestamp,
// products.stock) and the bare word `exists`. Returns false with `why` set
// when there is no such name.
class Scope {
public:
    virtual ~Scope() = default;
    virtual bool resolve(std::string_view scope, std::string_view name, Slot &out,
                         std::string &why) const = 0;
};

class Program {
public:
    Type type() const { return type_; }
    // The expression as written (for reasons and messages).
    const std::string &text() const { return text_; }

    // Evaluates over the three slot arrays. false: an arithmetic overflow
    // (the only run-time failure; every type error was refused at compile).
    bool run(const Value *payload, const Value *row, const Value *event, Value &out) const;

private:
    friend class Compiler;
    enum class Op : uint8_t {
        constant,   // push consts_[arg]
        text,       // push the literal text texts_[arg] (an offset into pool_)
        load,       // push slot: source in aux, index in arg
        rescale,    // multiply the value `aux` below the top (0: top) by 10^arg, checked
        neg,        // -x, checked
        add,        // checked int64 +
        sub,        // checked int64 -
        mul,        // checked int64 *
        cmp_num,    // compare two numbers: aux is the comparison; arg > 0: the lower one is
                    // 10^arg finer than the top, arg < 0: the top 10^-arg finer (never overflows)
        cmp_text,   // compare two texts bytewise: aux is the comparison
        not_,       // three-valued not
        and_,       // three-valued and of the two on top
        or_,        // three-valued or of the two on top
        jump_false, // top is false (not null): jump to arg, keeping it
        jump_true,  // top is true: jump to arg, keeping it
    };
    struct Instr {
        Op op;
        uint8_t aux = 0;
        int32_t arg = 0;
    };
    std::vector<Instr> code_;
    std::vector<Value> consts_;                        // numbers and booleans
    std::vector<std::pair<uint32_t, uint32_t>> texts_; // literal texts: offset and size in pool_
    std::string pool_;                                 // (offsets, not pointers: a Program is moved around)
    Type type_;
    std::string text_;
    size_t depth_ = 0; // stack slots run() needs
};

// Compiles `text` against `scope`. On a syntax or type error returns false
// and sets `error` to one line that names the offending part and its column
// in the expression ("column 12: cannot compare text with decimal(2)").
bool compile(std::string_view text, const Scope &scope, Program &out, std::string &error);

// The largest stack a Program may use (deeper expressions are refused).
inline constexpr size_t kMaxDepth = 64;

// a == b for the short names and texts compared per event (event types,
// field names, 'open'): inline 8-byte words instead of a call to memcmp,
// which showed up at several percent of the sink's time.
inline bool same_text(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    size_t n = a.size(), i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        __builtin_memcpy(&x, a.data() + i, 8);
        __builtin_memcpy(&y, b.data() + i, 8);
        if (x != y) return false;
    }
    for (; i < n; ++i)
        if (a[i] != b[i]) return false;
    return true;
}

// Appends v (of type t) as a reason shows it: decimals with their scale,
// text escaped and cut (one line, valid UTF-8), "null".
void append_value(std::string &out, const Value &v, const Type &t);

} // namespace cdcflow::projection::declared

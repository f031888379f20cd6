// DeclaredProjection: a read model declared in the pipeline file
// (`projection: declared` plus `model:`; README.md, "Declared models").
//
// At create the declaration is parsed and checked as a whole (tables,
// payload fields, rules, effects; every expression compiled and
// type-checked), each mistake reported at its file:line:col through the
// host's config_location_at. Per event nothing is looked up by name: the
// payload's fields land in the event type's slots, the aggregate's rows
// (one per state table) sit in the RowCache as typed cells, and the rules
// and effects run as compiled programs over those slots.
//
// As in AccountsProjection, each state-table row a batch changes is written
// once, at the end of the batch, with prepared statements; history rows are
// inserted as their events apply. Everything runs inside the sink's one
// transaction per batch.
#pragma once

#include "batch_rows.hpp"
#include "declared/expr.hpp"
#include "projection.hpp"

#include <cdcflow/rules.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cdcflow::projection::declared {

// "file:line:col" of the node a JSON Pointer names inside `model` ("" when
// unknown).
using Locator = std::function<std::string(const std::string &pointer)>;

struct Column {
    std::string name;
    Type type;
};

struct Table {
    std::string name;
    std::string key; // the primary key column: the aggregate id (state) or the event id (history)
    bool history = false;
    std::vector<Column> columns;
    std::string pointer;  // "/tables/<name>"
    std::string location; // its file:line:col ("" when unknown)
    uint32_t base = 0;    // state: its row slots start here (exists, then the columns)
    uint32_t index = 0;   // state: its index among the state tables
    sqlite::Stmt select, update, upsert, insert;
};

struct Field {
    std::string name;
    Type type;
    bool required = true;
    std::optional<int64_t> min, max;               // integer, or decimal units at the field's scale
    std::optional<int64_t> min_length, max_length; // text, in characters
};

// A reason template: literal text and expressions, in order.
struct Piece {
    std::string text;
    std::optional<Program> expr;
};

struct Check {
    Program cond;
    std::vector<Piece> reason;
};

struct Assign {
    uint32_t table = 0;  // index into tables
    uint32_t column = 0; // index into that table's columns
    Program expr;
    int64_t factor = 1; // decimal column of a larger scale: units times this
};

struct Insert {
    uint32_t table = 0;
    std::vector<Assign> values;
};

struct EventRule {
    std::string type;
    std::vector<Field> fields;
    std::vector<Check> checks;
    std::vector<Assign> sets; // sorted by table
    std::vector<Insert> inserts;
};

// The parsed, checked declaration.
struct Model {
    std::string aggregate_type;
    std::vector<Table> tables;
    std::vector<uint32_t> state_tables; // indexes into tables, declaration order; [0] is `row`
    uint32_t row_slots = 0;             // cells per aggregate (all state tables)
    std::vector<EventRule> events;
    size_t max_fields = 0;
};

// Parses and checks `json` (the model key's value); `locate` is only called
// during the call (the config it reads lives no longer). Throws Error
// (CDCFLOW_ERR_CONFIG) "<file:line:col>: model: <where>: <what>".
Model parse_model(std::string_view json, const Locator &locate);

// The event's fields in the event slot array.
enum EventSlot : uint32_t {
    kEventId,
    kEventAggregateType,
    kEventAggregateId,
    kEventType,
    kEventTimestamp,
    kEventVersion,
    kEventSlots
};

class DeclaredProjection : public Projection {
public:
    DeclaredProjection(std::string_view model_json, const Locator &locate, const ProjectionOptions &opts,
                       cdcflow::Context ctx);
    ~DeclaredProjection() override;

    std::vector<std::string> tables() const override;
    void check_existing(sqlite::Db &db) override;
    void create_schema(sqlite::Db &db) override;
    void open(sqlite::Db &db) override;
    void close() override;

    bool apply(const cdcflow_event &e, std::string &reason) override;
    bool apply(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason) override;
    bool last_was_duplicate() const override { return duplicate_; }
    void write_batch() override;
    void batch_committed() override;
    void batch_rolled_back() override;

    size_t cached_rows() const { return rows_.size(); }
    const Model &model() const { return model_; }

private:
    // One aggregate's rows in every state table, as typed cells (text cells
    // point into `texts`).
    struct Rows {
        std::vector<Value> cells;
        std::vector<std::string> texts;
        std::vector<int64_t> rowids; // per state table; 0: not stored yet
        uint32_t dirty = 0;          // bit per state table: write at the batch's end
    };
    using Cache = BatchRows<Rows>;
    Cache::Node *row(std::string_view id);
    void prepare(sqlite::Db &db, Table &t);
    // Refuses a table whose columns are not the declaration's (only those
    // that exist when only_existing).
    void check_columns(sqlite::Db &db, bool only_existing) const;
    void check_types(sqlite::Db &db, const Table &t) const;
    bool apply_event(const cdcflow_event &e, const cdcflow_payload &parsed, std::string &reason);
    bool applied_before(const cdcflow_event &e);
    bool read_payload(const EventRule &rule, const cdcflow_payload &parsed, std::string &reason);
    bool eval(const Program &p, const Value *row, Value &out, std::string &reason);
    void store(Rows &r, uint32_t cell, const Value &v, const Type &t);
    void bind(sqlite::Stmt &s, int i, const Value &v, const Type &t, char *buf);

    Model model_;
    Cache rows_;
    // Per event, reused: the payload slots, their unescaped text, the
    // event's own slots, the staged results of `set`.
    std::vector<Value> payload_;
    std::vector<std::string> unescaped_;
    Value event_[kEventSlots];
    std::vector<Value> staged_;
    std::vector<std::string> staged_text_;
    std::vector<Value> insert_staged_; // the event's history values, all tables
    // Decimals formatted for binding, one per column of the widest table.
    std::vector<std::array<char, rules::Decimal::kMaxTextSize>> decimal_bufs_;
    struct Json; // simdjson parser for escaped strings
    std::unique_ptr<Json> json_;
    sqlite::Db *db_ = nullptr;
    bool duplicate_ = false; // see last_was_duplicate
};

} // namespace cdcflow::projection::declared

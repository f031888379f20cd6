// projection_sink with `projection: declared` (plugins/projection_sink/
// declared/): the model driven through the plugin harness, over the real
// host API and a real SQLite file.
#include "plugin_harness.hpp"

#include "declared/declared_projection.hpp"
#include "projection_sink.hpp"

#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

using cdcflow::projection::ProjectionSink;
using cdcflow::test::EventSpec;
using cdcflow::test::StageHarness;
using cdcflow::test::TempDir;
using cdcflow::test::Val;
namespace sqlite = cdcflow::sqlite;

namespace {

// A small inventory model: a state table and a history table.
const char *kModel = R"M({
  "aggregate_type": "Product",
  "tables": {
    "products": {"key": "sku", "columns": {"name": "text", "price": "decimal(2)", "stock": "integer",
                 "active": "boolean", "version": "integer", "updated_at": "integer"}},
    "price_changes": {"history": true, "key": "event_id",
                      "columns": {"sku": "text", "old_price": "decimal(2)", "new_price": "decimal(2)"}}
  },
  "events": {
    "Listed": {
      "payload": {"name": {"type": "text", "min_length": 1},
                  "price": {"type": "decimal", "scale": 2, "max": "1000.00"}},
      "require": [{"check": "not exists", "reason": "product {event.aggregate_id} already exists"}],
      "set": {"products": {"name": "payload.name", "price": "payload.price", "stock": 0, "active": true,
                           "version": 1, "updated_at": "event.timestamp"}}
    },
    "Repriced": {
      "payload": {"price": "decimal(2)"},
      "require": [{"check": "exists and row.active", "reason": "product {event.aggregate_id} is not active"}],
      "set": {"products": {"price": "payload.price", "version": "row.version + 1",
                           "updated_at": "event.timestamp"}},
      "insert": {"price_changes": {"sku": "event.aggregate_id", "old_price": "row.price",
                                   "new_price": "payload.price"}}
    },
    "Received": {
      "payload": {"quantity": {"type": "integer", "min": 1}},
      "require": [{"check": "exists", "reason": "no product {event.aggregate_id}"},
                  {"check": "row.stock + payload.quantity <= 100",
                   "reason": "stock would exceed 100: stock {row.stock}, received {payload.quantity}"}],
      "set": {"products": {"stock": "row.stock + payload.quantity", "version": "row.version + 1",
                           "updated_at": "event.timestamp"}}
    },
    "Shipped": {
      "payload": {"quantity": "integer"},
      "require": [{"check": "exists", "reason": "no product {event.aggregate_id}"},
                  {"check": "row.stock >= payload.quantity",
                   "reason": "insufficient stock: stock {row.stock}, shipment {payload.quantity}"}],
      "set": {"products": {"stock": "row.stock - payload.quantity", "version": "row.version + 1",
                           "updated_at": "event.timestamp"}}
    },
    "Delisted": {
      "require": [{"check": "exists and row.active and row.stock == 0",
                   "reason": "cannot delist {event.aggregate_id}: stock {row.stock}"}],
      "set": {"products": {"active": false, "version": "row.version + 1", "updated_at": "event.timestamp"}}
    }
  }
})M";

struct Sink : cdcflow::test::HarnessedStage<ProjectionSink> {
    Sink(std::initializer_list<std::pair<const char *, Val>> cfg) : HarnessedStage("project", cfg) {}
    std::unique_ptr<ProjectionSink> &sink = stage;
};

Sink products_sink(const std::string &path, int64_t cache_size = 1000) {
    return Sink({{"database", path},
                 {"projection", "declared"},
                 {"checkpoint_name", "products"},
                 {"cache_size", cache_size},
                 {"model", Val::json(kModel)}});
}

EventSpec ev(int64_t offset, std::string sku, std::string type, std::string payload) {
    EventSpec e;
    e.id = "ev-" + std::to_string(offset);
    e.aggregate_type = "Product";
    e.aggregate_id = std::move(sku);
    e.type = std::move(type);
    e.payload = std::move(payload);
    e.timestamp_us = 1000 + offset;
    e.offset = offset;
    return e;
}

using ProductRow = std::tuple<std::string, std::string, std::string, int64_t, int64_t, int64_t, int64_t>;

std::vector<ProductRow> products(sqlite::Db &db) {
    std::vector<ProductRow> out;
    auto s =
        db.prepare("SELECT sku, name, price, stock, active, version, updated_at FROM products ORDER BY sku");
    while (s.step())
        out.emplace_back(std::string(s.text(0)), std::string(s.text(1)), std::string(s.text(2)), s.int64(3),
                         s.int64(4), s.int64(5), s.int64(6));
    return out;
}

std::vector<std::string> table_text(sqlite::Db &db, const std::string &sql) {
    std::vector<std::string> out;
    auto s = db.prepare(sql);
    while (s.step())
        out.emplace_back(s.text(0));
    return out;
}

std::string reason_of(const cdcflow_batch &b, uint32_t i) {
    return b.events[i].status == CDCFLOW_EVENT_REJECTED ? std::string(cdcflow::sv(b.events[i].reject_reason))
                                                        : std::string("(applied)");
}

std::string config_error(std::initializer_list<std::pair<const char *, Val>> cfg) {
    try {
        Sink s(cfg);
        s.sink->start();
    } catch (const cdcflow::Error &e) {
        CHECK(e.status() == CDCFLOW_ERR_CONFIG);
        return e.what();
    }
    return "(no error)";
}

std::string model_error(const std::string &path, const std::string &model) {
    return config_error({{"database", path}, {"projection", "declared"}, {"model", Val::json(model)}});
}

// One batch of `events` through the sink; the batch, with each event's outcome.
std::unique_ptr<cdcflow_batch> run(Sink &s, const std::vector<EventSpec> &events) {
    auto b = std::make_unique<cdcflow_batch>(static_cast<uint32_t>(events.size()));
    for (const EventSpec &e : events)
        append(*b, e);
    s.process(*b);
    return b;
}

EventSpec copy_of(EventSpec e, int64_t offset) {
    e.offset = offset; // same id, later position
    return e;
}

// kModel with one piece of text replaced (which must be there).
std::string edited(const std::string &from, const std::string &to) {
    std::string m = kModel;
    size_t at = m.find(from);
    REQUIRE(at != std::string::npos);
    return m.replace(at, from.size(), to);
}

} // namespace

TEST_CASE("declared model: rules, reasons, effects and history rows in one batch") {
    TempDir dir("dm_rules");
    std::string path = dir.file("read.db");
    Sink s = products_sink(path);
    s.sink->start();

    cdcflow_batch b(64);
    append(b, ev(1, "sku-1", "Listed", R"({"name": "Mug", "price": "12.5", "extra": [1, {"x": 2}]})"));
    append(b, ev(2, "sku-1", "Listed", R"({"name": "Mug", "price": "1"})")); // exists
    append(b, ev(3, "sku-1", "Received", R"({"quantity": 60})"));
    append(b, ev(4, "sku-1", "Received", R"({"quantity": 50})")); // over 100
    append(b, ev(5, "sku-1", "Shipped", R"({"quantity": 61})"));  // insufficient
    append(b, ev(6, "sku-1", "Repriced", R"({"price": "9.99"})"));
    append(b, ev(7, "sku-1", "Received", R"({"quantity": 5.0})"));         // not an integer
    append(b, ev(8, "sku-1", "Received", R"({"quantity": 1e2})"));         // not an integer
    append(b, ev(9, "sku-1", "Received", R"({"quantity": "5"})"));         // a string
    append(b, ev(10, "sku-1", "Received", R"({"quantity": 0})"));          // below min
    append(b, ev(11, "sku-1", "Repriced", R"({"price": "1.234"})"));       // 3 decimals
    append(b, ev(12, "sku-1", "Repriced", R"({})"));                       // missing
    append(b, ev(13, "sku-2", "Listed", R"({"name": "", "price": "1"})")); // empty name
    append(b, ev(14, "sku-2", "Teleported", R"({})"));
    append(b, ev(15, "sku-2", "Listed", R"([1])"));
    append(b, ev(16, "sku-1", "Delisted", R"({})")); // stock 60
    append(b, ev(17, "sku-1", "Shipped", R"({"quantity": 60})"));
    append(b, ev(18, "sku-1", "Delisted", R"({})"));
    append(b, ev(19, "sku-1", "Repriced", R"({"price": "1.00"})")); // not active
    append(b, ev(20, "sku-3", "Listed", R"({"name": "caf\u00e9 \"x\"", "price": "1000.00"})"));
    append(b, ev(21, "sku-4", "Listed", R"({"name": "Big", "price": "1000.01"})")); // over max
    {
        EventSpec other = ev(22, "acc-1", "Listed", R"({"name": "x", "price": "1"})");
        other.aggregate_type = "Account";
        append(b, other);
    }
    append(b, ev(23, "sku-1", "Received", R"({"quantity": 99999999999999999999})"));
    append(b, ev(24, "", "Listed", R"({"name": "x", "price": "1"})"));
    s.process(b);

    CHECK(reason_of(b, 0) == "(applied)");
    CHECK(reason_of(b, 1) == "product sku-1 already exists");
    CHECK(reason_of(b, 2) == "(applied)");
    CHECK(reason_of(b, 3) == "stock would exceed 100: stock 60, received 50");
    CHECK(reason_of(b, 4) == "insufficient stock: stock 60, shipment 61");
    CHECK(reason_of(b, 5) == "(applied)");
    CHECK(reason_of(b, 6) == "field \"quantity\" must be a JSON integer (no fraction or exponent), got 5.0");
    CHECK(reason_of(b, 7) == "field \"quantity\" must be a JSON integer (no fraction or exponent), got 1e2");
    CHECK(reason_of(b, 8) == "field \"quantity\" must be a JSON integer, got string");
    CHECK(reason_of(b, 9) == "quantity must be at least 1, got 0");
    CHECK(reason_of(b, 10) == "invalid price \"1.234\": more than 2 decimals");
    CHECK(reason_of(b, 11) == "missing field \"price\"");
    CHECK(reason_of(b, 12) == "field \"name\" must be a non-empty string");
    CHECK(reason_of(b, 13) == "unknown event type \"Teleported\"");
    CHECK(reason_of(b, 14) == "payload is not a JSON object");
    CHECK(reason_of(b, 15) == "cannot delist sku-1: stock 60");
    CHECK(reason_of(b, 16) == "(applied)");
    CHECK(reason_of(b, 17) == "(applied)");
    CHECK(reason_of(b, 18) == "product sku-1 is not active");
    CHECK(reason_of(b, 19) == "(applied)");
    CHECK(reason_of(b, 20) == "price must be at most 1000.00, got 1000.01");
    CHECK(reason_of(b, 21) == "aggregate type \"Account\" is not Product");
    // The host's one parse refuses a number beyond 64 bits (simdjson); the
    // reason says what that most likely is.
    CHECK(reason_of(b, 22) ==
          "payload has a number out of the 64-bit range, or malformed (payload is not valid "
          "JSON: Problem while parsing a number)");
    CHECK(reason_of(b, 23) == "empty aggregate id");

    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(products(db) == std::vector<ProductRow>{{"sku-1", "Mug", "9.99", 0, 0, 5, 1018},
                                                  {"sku-3", "café \"x\"", "1000.00", 0, 1, 1, 1020}});
    CHECK(table_text(db, "SELECT event_id || '|' || sku || '|' || old_price || '|' || new_price FROM "
                         "price_changes") == std::vector<std::string>{"ev-6|sku-1|12.50|9.99"});
    CHECK(table_text(db, "SELECT count(*) FROM dead_letters WHERE stage = 'project'") ==
          std::vector<std::string>{"18"});
}

TEST_CASE("declared model: a rolled-back batch leaves no trace, and its retry gives identical results") {
    TempDir dir("dm_retry");
    std::string a = dir.file("a.db"), b_path = dir.file("b.db");
    auto batch = [](cdcflow_batch &b) {
        append(b, ev(1, "sku-1", "Listed", R"({"name": "Mug", "price": "2.00"})"));
        append(b, ev(2, "sku-1", "Received", R"({"quantity": 10})"));
        append(b, ev(3, "sku-1", "Repriced", R"({"price": "3.00"})"));
        append(b, ev(4, "sku-0", "Listed", R"({"name": "Cup", "price": "1.00"})"));
    };
    // a: one clean run.
    {
        Sink s = products_sink(a);
        s.sink->start();
        cdcflow_batch b(16);
        batch(b);
        s.process(b);
    }
    // b: the same batch fails once (its last event reads a row edited
    // outside cdcflow into something malformed: the transaction rolls back
    // after three events changed the cache), then succeeds.
    Sink s = products_sink(b_path);
    s.sink->start();
    {
        sqlite::Db db(b_path, SQLITE_OPEN_READWRITE);
        db.exec("INSERT INTO products(sku, price) VALUES('sku-0', 'abc')");
    }
    {
        cdcflow_batch b(16);
        batch(b);
        CHECK_THROWS_AS(s.process(b), cdcflow::Error);
    }
    {
        sqlite::Db db(b_path, SQLITE_OPEN_READWRITE);
        CHECK(table_text(db, "SELECT sku FROM products") ==
              std::vector<std::string>{"sku-0"}); // nothing else
        CHECK(table_text(db, "SELECT count(*) FROM price_changes") == std::vector<std::string>{"0"});
        db.exec("DELETE FROM products");
    }
    {
        cdcflow_batch b(16);
        batch(b);
        s.process(b); // the retry: the cache forgot the rolled-back rows
        for (uint32_t i = 0; i < 4; ++i)
            CHECK(reason_of(b, i) == "(applied)");
    }
    sqlite::Db da(a, SQLITE_OPEN_READWRITE), db(b_path, SQLITE_OPEN_READWRITE);
    CHECK(products(db) == products(da));
    CHECK(products(db) == std::vector<ProductRow>{{"sku-0", "Cup", "1.00", 0, 1, 1, 1004},
                                                  {"sku-1", "Mug", "3.00", 10, 1, 3, 1003}});
}

TEST_CASE("declared model: a one-row cache gives the same results as a big one, across batches") {
    TempDir dir("dm_cache");
    std::string small = dir.file("small.db"), big = dir.file("big.db");
    Sink s1 = products_sink(small, 1), s2 = products_sink(big, 1000);
    s1.sink->start();
    s2.sink->start();
    int64_t offset = 0;
    for (int round = 0; round < 5; ++round) {
        cdcflow_batch b1(64), b2(64);
        for (int k = 0; k < 8; ++k) {
            std::string sku = "sku-" + std::to_string((round * 3 + k) % 5);
            ++offset;
            EventSpec e = round == 0 ? ev(offset, sku, "Listed", R"({"name": "n", "price": "1.10"})")
                          : k % 2    ? ev(offset, sku, "Received", R"({"quantity": 7})")
                                     : ev(offset, sku, "Shipped", R"({"quantity": 3})");
            append(b1, e);
            append(b2, e);
        }
        s1.process(b1);
        s2.process(b2);
        for (uint32_t i = 0; i < 8; ++i)
            CHECK(reason_of(b1, i) == reason_of(b2, i));
        auto &p = static_cast<cdcflow::projection::declared::DeclaredProjection &>(s1.sink->projection());
        CHECK(p.cached_rows() <= 1);
    }
    sqlite::Db d1(small, SQLITE_OPEN_READWRITE), d2(big, SQLITE_OPEN_READWRITE);
    CHECK(products(d1) == products(d2));
    CHECK(products(d1).size() == 5);
}

TEST_CASE("declared model: rows written by an earlier process are read back exactly") {
    TempDir dir("dm_reopen");
    std::string path = dir.file("read.db");
    {
        Sink s = products_sink(path);
        s.sink->start();
        cdcflow_batch b(8);
        append(b, ev(1, "sku-1", "Listed", R"({"name": "Mug", "price": "0.10"})"));
        append(b, ev(2, "sku-1", "Received", R"({"quantity": 3})"));
        s.process(b);
    }
    Sink s = products_sink(path);
    s.sink->start();
    cdcflow_batch b(8);
    append(b, ev(3, "sku-1", "Repriced", R"({"price": "0.20"})"));
    append(b, ev(4, "sku-1", "Shipped", R"({"quantity": 4})"));
    s.process(b);
    CHECK(reason_of(b, 0) == "(applied)");
    CHECK(reason_of(b, 1) == "insufficient stock: stock 3, shipment 4");
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(table_text(db, "SELECT old_price || '>' || new_price FROM price_changes") ==
          std::vector<std::string>{"0.10>0.20"});
    // A value edited outside cdcflow into something that is not the column's
    // type stops the batch (it is not this event's fault) rather than guess.
    db.exec("UPDATE products SET price = 'abc'");
    Sink s2 = products_sink(path);
    s2.sink->start();
    cdcflow_batch b2(8);
    append(b2, ev(5, "sku-1", "Shipped", R"({"quantity": 1})"));
    CHECK_THROWS_WITH_AS(s2.process(b2), doctest::Contains("malformed price \"abc\""), cdcflow::Error);
}

TEST_CASE("declared model: config mistakes are refused at create, naming the place") {
    TempDir dir("dm_config");
    std::string path = dir.file("read.db");
    CHECK(config_error({{"database", path}, {"projection", "declared"}})
              .find("model: required with projection: "
                    "declared") != std::string::npos);
    CHECK(config_error({{"database", path}, {"model", Val::json(kModel)}})
              .find("only with projection: declared") != std::string::npos);
    // Each message starts with the position (the harness's test.yaml:1:1),
    // then "model", the JSON Pointer of the mistake, and what is wrong.
    CHECK(model_error(path, edited("row.stock >= payload.quantity", "row.stock >= payload.qty")) ==
          "test.yaml:1:1: model /events/Shipped/require/1/check: 'row.stock >= payload.qty': column 14: "
          "unknown "
          "payload field 'qty' (event Shipped declares: quantity)");
    CHECK(model_error(path,
                      edited("\"row.stock + payload.quantity <= 100\"", "\"row.stock + payload.quantity <= "
                                                                        "row.price\""))
              .find("'row.stock + payload.quantity' ") ==
          std::string::npos); // integer vs decimal compare fine
    CHECK(model_error(path, edited("exists and row.active", "exists and row.name == row.price")) ==
          "test.yaml:1:1: model /events/Repriced/require/0/check: 'exists and row.name == row.price': column "
          "21: "
          "cannot compare text with decimal(2)");
    CHECK(
        model_error(path,
                    edited("\"stock\": \"row.stock + payload.quantity\"", "\"stock\": \"row.price\"")) ==
        "test.yaml:1:1: model /events/Received/set/products/stock: column 'stock' is integer, 'row.price' is "
        "decimal(2)");
    CHECK(model_error(path, edited("\"price\": \"payload.price\", \"version\": \"row.version + 1\"",
                                   "\"price\": \"payload.price * 1.5\", \"version\": \"row.version + 1\"")) ==
          "test.yaml:1:1: model /events/Repriced/set/products/price: 'payload.price * 1.5' is decimal(3): it "
          "does "
          "not fit column 'price' decimal(2) without rounding");
    CHECK(model_error(path, edited("\"products\": {\"stock\"", "\"product\": {\"stock\"")) ==
          "test.yaml:1:1: model /events/Received/set/product: unknown table 'product' (not under tables)");
    CHECK(model_error(path, edited("\"stock\": \"row.stock - payload.quantity\"", "\"stok\": 1")) ==
          "test.yaml:1:1: model /events/Shipped/set/products/stok: table 'products' has no column 'stok'");
    // A scale out of range is refused at full width (4294967298 is 2 in
    // its low 32 bits).
    for (const char *scale : {"4294967298", "-4294967294", "18446744073709551615", "10", "-1"})
        CHECK(model_error(path, edited("\"price\": {\"type\": \"decimal\", \"scale\": 2,",
                                       std::string("\"price\": {\"type\": \"decimal\", \"scale\": ") + scale +
                                           ",")) ==
              "test.yaml:1:1: model /events/Listed/payload/price/scale: scale must be 0..9, got " +
                  std::string(scale));
    CHECK(model_error(path, edited("\"stock\": \"integer\"", "\"stock\": \"int\"")) ==
          "test.yaml:1:1: model /tables/products/columns/stock: unknown type 'int' (expected: text, integer, "
          "decimal(N), boolean)");
    CHECK(model_error(path, edited("\"check\": \"exists\"", "\"check\": \"row.stock\"")) ==
          "test.yaml:1:1: model /events/Received/require/0/check: a check must be boolean, 'row.stock' is "
          "integer");
    CHECK(model_error(path, edited("stock {row.stock}, received", "stock {row.stok}, received"))
              .find("model /events/Received/require/1/reason: 'row.stok': column 1: table 'products' has no "
                    "column "
                    "'stok'") != std::string::npos);
    CHECK(model_error(path, edited("\"require\": [{\"check\": \"not exists\"",
                                   "\"requires\": [{\"check\": \"not exists\"")) ==
          "test.yaml:1:1: model /events/Listed/requires: unknown key 'requires' (expected: payload, require, "
          "set, "
          "insert)");
    CHECK(model_error(path, edited("\"insert\": {\"price_changes\"", "\"set\": {\"price_changes\""))
              .find("is a history table: write it under insert") != std::string::npos);
    CHECK(model_error(path, "[1]") == "test.yaml:1:1: model: the model must be a mapping");
}

TEST_CASE("declared model: a table in the database must match the declaration") {
    TempDir dir("dm_tables");
    std::string path = dir.file("read.db");
    {
        sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE products(sku TEXT PRIMARY KEY, name TEXT, price TEXT, stock INTEGER, "
                "version INTEGER, updated_at INTEGER)"); // no `active`
    }
    std::string err = model_error(path, kModel);
    CHECK(err.find("test.yaml:1:1: model /tables/products: table 'products' in database '") == 0);
    CHECK(
        err.find("has columns (sku, name, price, stock, version, updated_at), the model declares (sku, name, "
                 "price, stock, active, version, updated_at)") != std::string::npos);
    // create_schema false: a missing table is named.
    TempDir dir2("dm_tables2");
    std::string empty = dir2.file("read.db");
    {
        sqlite::Db db(empty, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec("CREATE TABLE x(y)");
    }
    CHECK(config_error({{"database", empty},
                        {"projection", "declared"},
                        {"create_schema", false},
                        {"model", Val::json(kModel)}})
              .find("has no table 'products' (create_schema is false)") != std::string::npos);
}

TEST_CASE("declared model: several state tables per aggregate, optional fields and null") {
    TempDir dir("dm_tables_many");
    std::string path = dir.file("read.db");
    const char *model = R"M({
      "aggregate_type": "Order",
      "tables": {
        "orders": {"key": "order_id", "columns": {"status": "text", "total": "decimal(2)"}},
        "order_flags": {"key": "order_id", "columns": {"paid": "boolean", "note": "text", "gift": "boolean"}},
        "order_totals": {"key": "order_id", "columns": {"with_tax": "decimal(4)", "items": "integer"}}
      },
      "events": {
        "Placed": {
          "payload": {"total": "decimal(2)", "note": {"type": "text", "required": false},
                      "gift": {"type": "boolean", "required": false}, "items": "integer"},
          "require": [{"check": "not exists", "reason": "order {event.aggregate_id} exists"}],
          "set": {"orders": {"status": "'placed'", "total": "payload.total"},
                  "order_flags": {"paid": false, "note": "payload.note", "gift": "payload.gift"},
                  "order_totals": {"with_tax": "payload.total * 1.19", "items": "payload.items"}}
        },
        "Paid": {
          "require": [{"check": "order_flags.exists and not order_flags.paid",
                       "reason": "order {event.aggregate_id}: paid {order_flags.paid}, note {order_flags.note}"}],
          "set": {"order_flags": {"paid": true}, "orders": {"status": "'paid'"}}
        }
      }
    })M";
    Sink s({{"database", path}, {"projection", "declared"}, {"model", Val::json(model)}});
    s.sink->start();
    auto order = [](int64_t offset, std::string id, std::string type, std::string payload) {
        EventSpec e = ev(offset, std::move(id), std::move(type), std::move(payload));
        e.aggregate_type = "Order";
        return e;
    };
    cdcflow_batch b(16);
    append(b, order(1, "o-1", "Placed", R"({"total": "10.00", "items": 2, "gift": true})"));
    append(b, order(2, "o-1", "Paid", "{}"));
    append(b, order(3, "o-1", "Paid", "{}"));
    append(b, order(4, "o-2", "Paid", "{}"));
    append(b, order(5, "o-3", "Placed",
                    R"({"total": "1", "items": 1, "note": "leave at door", "gift": "yes"})"));
    s.process(b);
    CHECK(reason_of(b, 0) == "(applied)");
    CHECK(reason_of(b, 1) == "(applied)");
    CHECK(reason_of(b, 2) == "order o-1: paid true, note null");
    CHECK(reason_of(b, 3) == "order o-2: paid null, note null");
    CHECK(reason_of(b, 4) == "field \"gift\" must be a JSON boolean, got string");
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(table_text(db, "SELECT order_id || status || total FROM orders") ==
          std::vector<std::string>{"o-1paid10.00"});
    CHECK(table_text(db, "SELECT paid || '|' || quote(note) || '|' || gift FROM order_flags") ==
          std::vector<std::string>{"1|NULL|1"});
    CHECK(table_text(db, "SELECT with_tax || '|' || items FROM order_totals") ==
          std::vector<std::string>{"11.9000|2"});
}

TEST_CASE("declared model: an overflow in any effect leaves no history row and no change behind") {
    TempDir dir("dm_overflow");
    std::string path = dir.file("read.db");
    const char *model = R"M({
      "aggregate_type": "Meter",
      "tables": {
        "meters": {"key": "id", "columns": {"total": "integer"}},
        "readings": {"history": true, "key": "event_id", "columns": {"value": "integer"}},
        "doubled": {"history": true, "key": "event_id", "columns": {"value": "integer"}}
      },
      "events": {
        "Read": {
          "payload": {"value": "integer"},
          "set": {"meters": {"total": "payload.value"}},
          "insert": {"readings": {"value": "payload.value"}, "doubled": {"value": "payload.value * 2"}}
        }
      }
    })M";
    Sink s({{"database", path}, {"projection", "declared"}, {"model", Val::json(model)}});
    s.sink->start();
    auto read = [](int64_t offset, std::string value) {
        EventSpec e = ev(offset, "m-1", "Read", "{\"value\": " + value + "}");
        e.aggregate_type = "Meter";
        return e;
    };
    cdcflow_batch b(8);
    append(b, read(1, "5"));
    append(b, read(2, "9223372036854775807")); // doubled overflows
    s.process(b);
    CHECK(reason_of(b, 0) == "(applied)");
    CHECK(reason_of(b, 1) == "arithmetic overflow in 'payload.value * 2'");
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(table_text(db, "SELECT event_id || '=' || value FROM readings") ==
          std::vector<std::string>{"ev-1=5"});
    CHECK(table_text(db, "SELECT event_id || '=' || value FROM doubled") ==
          std::vector<std::string>{"ev-1=10"});
    CHECK(table_text(db, "SELECT total FROM meters") == std::vector<std::string>{"5"});
}

TEST_CASE("declared model: events that carry aggregate versions are applied once per version") {
    TempDir dir("dm_versions");
    std::string path = dir.file("read.db");
    Sink s = products_sink(path);
    s.sink->start();
    auto versioned = [](int64_t offset, std::string type, std::string payload, int64_t version) {
        EventSpec e = ev(offset, "sku-1", std::move(type), std::move(payload));
        e.version = version;
        return e;
    };
    cdcflow_batch b(8);
    append(b, versioned(1, "Listed", R"({"name": "Mug", "price": "1.00"})", 1));
    append(b, versioned(2, "Received", R"({"quantity": 5})", 2));
    append(b, versioned(3, "Received", R"({"quantity": 5})", 2)); // a copy under another event id
    append(b, versioned(4, "Shipped", R"({"quantity": 1})", 3));
    s.process(b);
    CHECK(b.events[2].status == CDCFLOW_EVENT_DUPLICATE);
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(products(db) == std::vector<ProductRow>{{"sku-1", "Mug", "1.00", 4, 1, 3, 1004}});
}

TEST_CASE("declared model: a negative decimal it wrote is read back after a restart") {
    TempDir dir("dm_negative");
    std::string path = dir.file("read.db");
    // A price cut below zero: row.price - payload.price is negative.
    std::string model = edited(R"("set": {"products": {"price": "payload.price", "version")",
                               R"("set": {"products": {"price": "row.price - payload.price", "version")");
    auto open = [&] {
        return Sink({{"database", path}, {"projection", "declared"}, {"model", Val::json(model)}});
    };
    {
        Sink s = open();
        s.sink->start();
        auto b = run(s, {ev(1, "sku-1", "Listed", R"({"name": "Mug", "price": "0.10"})"),
                         ev(2, "sku-1", "Repriced", R"({"price": "0.60"})")});
        CHECK(reason_of(*b, 1) == "(applied)");
    }
    Sink s = open();
    s.sink->start();
    CHECK(reason_of(*run(s, {ev(3, "sku-1", "Repriced", R"({"price": "0.25"})")}), 0) == "(applied)");
    sqlite::Db db(path, SQLITE_OPEN_READWRITE);
    CHECK(table_text(db, "SELECT price FROM products") == std::vector<std::string>{"-0.75"});
    CHECK(table_text(db, "SELECT old_price || '>' || new_price FROM price_changes ORDER BY event_id") ==
          std::vector<std::string>{"0.10>0.60", "-0.50>0.25"});
}

TEST_CASE("declared model: an existing table needs the declared column types and the key as primary key") {
    const std::string history =
        "CREATE TABLE price_changes(event_id TEXT PRIMARY KEY, sku TEXT, old_price TEXT, "
        "new_price TEXT)";
    auto refused = [&](const std::string &products_sql, const std::string &history_sql) {
        TempDir dir("dm_types");
        std::string path = dir.file("read.db");
        {
            sqlite::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
            db.exec(products_sql);
            db.exec(history_sql);
        }
        return model_error(path, kModel);
    };
    // Money in a REAL column would go through floating point.
    std::string err =
        refused("CREATE TABLE products(sku TEXT PRIMARY KEY, name TEXT, price REAL, stock INTEGER, "
                "active INTEGER, version INTEGER, updated_at INTEGER)",
                history);
    CHECK(err.find("test.yaml:1:1: model /tables/products: table 'products' in database '") == 0);
    CHECK(err.find(": column price is REAL, the model needs TEXT (for decimal(2))") != std::string::npos);
    // No primary key: every upsert would fail at run time.
    err = refused("CREATE TABLE products(sku TEXT, name TEXT, price TEXT, stock INTEGER, active INTEGER, "
                  "version INTEGER, updated_at INTEGER)",
                  history);
    CHECK(err.find("the primary key must be the key column sku alone") != std::string::npos);
    // A history table without one would take the same event twice.
    err = refused("CREATE TABLE products(sku TEXT PRIMARY KEY, name TEXT, price TEXT, stock INTEGER, "
                  "active INTEGER, version INTEGER, updated_at INTEGER)",
                  "CREATE TABLE price_changes(event_id TEXT, sku TEXT, old_price TEXT, new_price TEXT)");
    CHECK(err.find("model /tables/price_changes: table 'price_changes'") != std::string::npos);
    CHECK(err.find("the primary key must be the key column event_id alone") != std::string::npos);
    // A boolean in a TEXT column, and a composite key.
    CHECK(refused("CREATE TABLE products(sku TEXT PRIMARY KEY, name TEXT, price TEXT, stock INTEGER, "
                  "active TEXT, version INTEGER, updated_at INTEGER)",
                  history)
              .find("column active is TEXT, the model needs INTEGER (for boolean)") != std::string::npos);
    CHECK(refused("CREATE TABLE products(sku TEXT, name TEXT, price TEXT, stock INTEGER, active INTEGER, "
                  "version INTEGER, updated_at INTEGER, PRIMARY KEY(sku, name))",
                  history)
              .find("the primary key must be the key column sku alone") != std::string::npos);
    // Types spelled as SQLite allows (VARCHAR, BIGINT) are accepted.
    CHECK(refused("CREATE TABLE products(sku VARCHAR(20) PRIMARY KEY, name text, price NUMERIC_TEXT, "
                  "stock BIGINT, active INT, version INTEGER, updated_at INTEGER)",
                  history) == "(no error)");
}

TEST_CASE("declared model: a copy of an applied event with a history row is a duplicate, not a dead letter") {
    TempDir dir("dm_far_duplicate");
    Sink s = products_sink(dir.file("read.db"));
    s.sink->start();
    const EventSpec repriced = ev(2, "sku-1", "Repriced", R"({"price": "0.20"})");
    REQUIRE(reason_of(*run(s, {ev(1, "sku-1", "Listed", R"({"name": "Mug", "price": "0.10"})"), repriced}),
                      1) == "(applied)");
    // Later, past the deduper's window: ev-2 again (it still passes its
    // checks), then a copy of it after the product was delisted (its check
    // fails now), and in one batch an event and its copy.
    const EventSpec again = ev(11, "sku-1", "Repriced", R"({"price": "0.30"})");
    auto b = run(s, {copy_of(repriced, 10), again, copy_of(again, 12), ev(13, "sku-1", "Delisted", "{}"),
                     copy_of(repriced, 14)});
    CHECK(b->events[0].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(reason_of(*b, 1) == "(applied)");
    CHECK(b->events[2].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(reason_of(*b, 3) == "(applied)");
    CHECK(b->events[4].status == CDCFLOW_EVENT_DUPLICATE);
    CHECK(s.h.metric("event_duplicates") == 3);
    sqlite::Db db(dir.file("read.db"), SQLITE_OPEN_READWRITE);
    CHECK(table_text(db, "SELECT count(*) FROM dead_letters") == std::vector<std::string>{"0"});
    CHECK(table_text(db, "SELECT old_price || '>' || new_price FROM price_changes ORDER BY event_id") ==
          std::vector<std::string>{"0.20>0.30", "0.10>0.20"});
    CHECK(table_text(db, "SELECT price || ' v' || version FROM products") ==
          std::vector<std::string>{"0.30 v4"});
}

TEST_CASE("declared model: a '}' inside a text literal does not end a reason's placeholder") {
    TempDir dir("dm_reason_brace");
    std::string path = dir.file("read.db");
    std::string model =
        edited("product {event.aggregate_id} already exists",
               "product {event.aggregate_id}: {payload.name == '}'} {payload.name != \\\"a}}\\\"} "
               "{'it''s }'} {{b}}");
    Sink s({{"database", path}, {"projection", "declared"}, {"model", Val::json(model)}});
    s.sink->start();
    const EventSpec listed = ev(1, "sku-1", "Listed", R"({"name": "}", "price": "1"})");
    auto b = run(s, {listed, ev(2, "sku-1", "Listed", listed.payload)});
    CHECK(reason_of(*b, 1) == "product sku-1: true true it's } {b}");
}

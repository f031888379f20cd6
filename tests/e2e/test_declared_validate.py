"""`cdcflow validate` on declared read models (projection: declared): each
kind of declaration mistake is one line naming the file, a line and column,
the stage, the place inside the model (a JSON Pointer) and what is wrong,
and exits 3 before anything runs.

Mistakes checks each message; ExactPositions checks the exact line:col of
each mistake (the host resolves positions inside the model: ABI 6's
config_location_at)."""
import os
import re
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import SOURCE_ROOT, TempDirTest, env_with, main, run  # noqa: E402
from outbox_gen import open_outbox  # noqa: E402

PRODUCTS = os.path.join(SOURCE_ROOT, "pipelines", "products.yaml")

# (what is wrong, text replaced, replacement, the text that must be on the
# offending line, JSON Pointer, the message's end)
MISTAKES = [
    ("unknown payload field", "row.stock >= payload.quantity", "row.stock >= payload.qty",
     "row.stock >= payload.qty", "/events/StockShipped/require/2/check",
     "'row.stock >= payload.qty': column 14: unknown payload field 'qty' (event StockShipped declares: quantity)"),
    ("unknown column in an expression", "stock: row.stock - payload.quantity", "stock: row.stok - payload.quantity",
     "stock: row.stok", "/events/StockShipped/set/products/stock",
     "'row.stok - payload.quantity': column 1: table 'products' has no column 'stok'"),
    ("unknown column set", "                status: \"'delisted'\"", "                state: \"'delisted'\"",
     "state: \"'delisted'\"", "/events/ProductDelisted/set/products/state",
     "table 'products' has no column 'state'"),
    ("text compared with a decimal", "check: row.status == 'active'\n                reason: \"product {event.aggregate_id} "
     "is delisted\"\n            set:\n              products:\n                price: payload.price",
     "check: row.status == row.price\n                reason: \"product {event.aggregate_id} "
     "is delisted\"\n            set:\n              products:\n                price: payload.price",
     "check: row.status == row.price", "/events/PriceChanged/require/1/check",
     "'row.status == row.price': column 12: cannot compare text with decimal(2)"),
    ("decimal assigned to an integer column", "stock: row.stock + payload.quantity", "stock: row.price",
     "stock: row.price", "/events/StockReceived/set/products/stock",
     "column 'stock' is integer, 'row.price' is decimal(2)"),
    ("more decimals than the column holds", "                price: payload.price\n                version: row.version + 1",
     "                price: payload.price * 1.5\n                version: row.version + 1",
     "price: payload.price * 1.5", "/events/PriceChanged/set/products/price",
     "'payload.price * 1.5' is decimal(3): it does not fit column 'price' decimal(2) without rounding"),
    ("unknown table", "            insert:\n              price_changes:", "            insert:\n              price_history:",
     "price_history:", "/events/PriceChanged/insert/price_history",
     "unknown table 'price_history' (not under tables)"),
    ("expression syntax", "check: row.stock == 0", "check: row.stock = 0",
     "check: row.stock = 0", "/events/ProductDelisted/require/2/check",
     "'row.stock = 0': column 11: '=' is not an operator: write '==' to compare"),
    ("unknown type", "stock: integer", "stock: int", "stock: int", "/tables/products/columns/stock",
     "unknown type 'int' (expected: text, integer, decimal(N), boolean)"),
    ("unknown key", "            require:\n              - check: not exists",
     "            requires:\n              - check: not exists", "requires:", "/events/ProductListed/requires",
     "unknown key 'requires' (expected: payload, require, set, insert)"),
    ("a check that is not boolean", "check: row.stock == 0", "check: row.stock",
     "check: row.stock", "/events/ProductDelisted/require/2/check",
     "a check must be boolean, 'row.stock' is integer"),
    ("a reason naming an unknown value", "shipment {payload.quantity}", "shipment {payload.amount}",
     "shipment {payload.amount}", "/events/StockShipped/require/2/reason",
     "'payload.amount': column 1: unknown payload field 'amount' (event StockShipped declares: quantity)"),
]


class Base(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("shop.db")
        c = sqlite3.connect(self.db)
        open_outbox(c)
        c.close()
        self.env = env_with(CDCFLOW_DB=self.db)
        self.text = open(PRODUCTS).read()
        self.model_line = self.text.splitlines().index("      model:") + 2  # the model's value

    def validate(self, text):
        path = self.write("p.yaml", text)
        r = run(["validate", path], env=self.env)
        self.assertNoCrash(r)
        return path, r

    def edited(self, old, new):
        self.assertEqual(self.text.count(old), 1, old)
        return self.text.replace(old, new)


class DeclaredValidate(Base):
    def test_the_shipped_pipeline_is_valid(self):
        _, r = self.validate(self.text)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_mistakes(self):
        for what, old, new, _, pointer, message in MISTAKES:
            with self.subTest(what):
                path, r = self.validate(self.edited(old, new))
                self.assertEqual(r.returncode, 3, r.stderr)
                line = r.stderr.strip()
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                m = re.match(r"cdcflow: (.*):(\d+):(\d+): stage 'project' \(plugin 'projection_sink'\): "
                             r"model (\S+): (.*)$", line)
                self.assertTrue(m, line)
                self.assertEqual(m.group(1), path)
                self.assertEqual(m.group(4), pointer)
                self.assertEqual(m.group(5), message)
                # The model key's position at least (exactly the mistake's
                # once the host resolves nested positions: ExactPositions).
                self.assertGreaterEqual(int(m.group(2)), self.model_line)

    def test_table_that_does_not_match_the_declaration(self):
        c = sqlite3.connect(self.db)
        c.execute("CREATE TABLE products(sku TEXT PRIMARY KEY, name TEXT, price TEXT, stock INTEGER)")
        c.commit()
        c.close()
        _, r = self.validate(self.text)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertRegex(r.stderr, r":\d+:\d+: stage 'project' \(plugin 'projection_sink'\): model /tables/products: "
                                   r"table 'products' in database '.*shop.db' has columns \(sku, name, price, stock\), "
                                   r"the model declares \(sku, name, price, stock, status, version, updated_at\)")

    def test_missing_table_without_create_schema(self):
        text = self.text.replace("      projection: declared\n",
                                 "      projection: declared\n      create_schema: false\n")
        _, r = self.validate(text)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("has no table 'products' (create_schema is false)", r.stderr)

    def test_model_and_projection_must_go_together(self):
        _, r = self.validate(self.text.replace("projection: declared", "projection: accounts"))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("model: only with projection: declared (projection is 'accounts')", r.stderr)
        start = self.text.index("      model:\n")
        _, r = self.validate(self.text[:start])
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("model: required with projection: declared", r.stderr)


class ExactPositions(Base):
    def test_mistakes(self):
        for what, old, new, marker, pointer, _ in MISTAKES:
            with self.subTest(what):
                text = self.edited(old, new)
                lines = text.splitlines()
                # The line that ends with the marker ("check: row.stock" is
                # also the start of a longer check above), else the first
                # that holds it.
                ends = [i for i, line in enumerate(lines) if line.rstrip().endswith(marker)]
                want_line = (ends or [i for i, line in enumerate(lines) if marker in line])[0] + 1
                _, r = self.validate(text)
                m = re.match(r"cdcflow: .*:(\d+):(\d+): ", r.stderr)
                self.assertTrue(m, r.stderr)
                # A key whose value is a block (a mapping or a list) may
                # be located at the key or where its block starts, below.
                allowed = {want_line, want_line + 1} if marker.endswith(":") else {want_line}
                self.assertIn(int(m.group(1)), allowed, (pointer, r.stderr))


if __name__ == "__main__":
    main()

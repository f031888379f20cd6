"""An independent model of issue 12's inventory domain (pipelines/products.yaml)
for the end-to-end tests: the same rules, written again in Python, plus a
generator of outbox traffic that breaks every rule on purpose and repeats
events (near and far). Amounts are exact: Decimal, never float."""
import json
import random
import time
import uuid
from decimal import Decimal, InvalidOperation

MAX_PRICE = Decimal("1000000.00")
MAX_STOCK = 10_000_000


def parse_dec(v):
    """A "dec": a JSON string of digits, optional point, at most 2 decimals,
    0..1000000.00. None when malformed."""
    if not isinstance(v, str) or not v or v.startswith(".") or v.endswith("."):
        return None
    if any(c not in "0123456789." for c in v) or v.count(".") > 1:
        return None
    if "." in v and len(v.split(".")[1]) > 2:
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        return None
    return d if d <= MAX_PRICE else None


def parse_int(v, lo=1, hi=1_000_000):
    """A JSON integer (not a bool, not a float: json.loads gives 5.0 and 1e2
    as float) in lo..hi."""
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v if lo <= v <= hi else None


def fmt(d):
    return "%.2f" % d if d is not None else None


class Model:
    """products: sku -> dict; price_changes: event_id -> tuple; dead: event_id
    -> reason-free marker (the stage is always 'project')."""

    def __init__(self):
        self.products = {}
        self.price_changes = {}
        self.dead = set()
        self.seen = set()

    def apply(self, eid, agg_type, sku, etype, payload_text, ts):
        if eid in self.seen:
            return "duplicate"
        self.seen.add(eid)
        ok = self._apply(eid, agg_type, sku, etype, payload_text, ts)
        if not ok:
            self.dead.add(eid)
        return "applied" if ok else "rejected"

    def _apply(self, eid, agg_type, sku, etype, payload_text, ts):
        if agg_type != "Product" or not sku:
            return False
        try:
            p = json.loads(payload_text)
        except ValueError:
            return False
        if not isinstance(p, dict):
            return False
        row = self.products.get(sku)
        active = row is not None and row["status"] == "active"
        if etype == "ProductListed":
            name, price = p.get("name"), parse_dec(p.get("price"))
            if not isinstance(name, str) or not name or price is None or row is not None:
                return False
            self.products[sku] = {"name": name, "price": price, "stock": 0, "status": "active",
                                  "version": 1, "updated_at": ts}
            return True
        if etype == "PriceChanged":
            price = parse_dec(p.get("price"))
            if price is None or not active:
                return False
            self.price_changes[eid] = (sku, fmt(row["price"]), fmt(price), ts)
            row["price"] = price
        elif etype == "StockReceived":
            q = parse_int(p.get("quantity"))
            if q is None or not active or row["stock"] + q > MAX_STOCK:
                return False
            row["stock"] += q
        elif etype == "StockShipped":
            q = parse_int(p.get("quantity"))
            if q is None or not active or row["stock"] < q:
                return False
            row["stock"] -= q
        elif etype == "ProductDelisted":
            if not active or row["stock"] != 0:
                return False
            row["status"] = "delisted"
        else:
            return False
        row["version"] += 1
        row["updated_at"] = ts
        return True

    def product_rows(self):
        return sorted((k, r["name"], fmt(r["price"]), r["stock"], r["status"], r["version"], r["updated_at"])
                      for k, r in self.products.items())

    def price_change_rows(self):
        return sorted((k,) + v for k, v in self.price_changes.items())


# Every way an event can be malformed or break a rule, on purpose.
BROKEN = [
    ("Product", "ProductListed", '{"name": "", "price": "1.00"}'),
    ("Product", "ProductListed", '{"name": "X", "price": 12}'),
    ("Product", "ProductListed", '{"name": "X", "price": "1.234"}'),
    ("Product", "ProductListed", '{"name": "X", "price": "1e3"}'),
    ("Product", "ProductListed", '{"name": "X", "price": "-1"}'),
    ("Product", "ProductListed", '{"name": "X", "price": "1000000.01"}'),
    ("Product", "ProductListed", '{"name": 5, "price": "1.00"}'),
    ("Product", "ProductListed", '{"price": "1.00"}'),
    ("Product", "PriceChanged", '{"price": ".5"}'),
    ("Product", "PriceChanged", '{}'),
    ("Product", "StockReceived", '{"quantity": 5.0}'),
    ("Product", "StockReceived", '{"quantity": 1e2}'),
    ("Product", "StockReceived", '{"quantity": "5"}'),
    ("Product", "StockReceived", '{"quantity": true}'),
    ("Product", "StockReceived", '{"quantity": 0}'),
    ("Product", "StockReceived", '{"quantity": 1000001}'),
    ("Product", "StockShipped", '{"quantity": -3}'),
    ("Product", "StockShipped", '{"quantity": 99999999999999999999}'),
    ("Product", "StockShipped", '[1, 2]'),
    ("Product", "ProductDelisted", '"text"'),
    ("Product", "ProductDelisted", '{not json'),
    ("Product", "Teleported", '{}'),
    ("Account", "ProductListed", '{"name": "X", "price": "1.00"}'),
]


class Generator:
    def __init__(self, seed=1, products=200, broken_share=0.05, dup_share=0.04):
        self.rnd = random.Random(seed)
        self.n = products
        self.broken_share = broken_share
        self.dup_share = dup_share
        self.history = []
        self.ts = int(time.time() * 1e6) - 3_600_000_000

    def _id(self):
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))

    def _price(self):
        return "%d.%02d" % (self.rnd.randint(0, 2000), self.rnd.randint(0, 99))

    def next_row(self):
        rnd = self.rnd
        self.ts += 1
        r = rnd.random()
        if self.history and r < self.dup_share:
            near = rnd.random() < 0.5
            src = self.history[-rnd.randint(1, min(20, len(self.history)))] if near else rnd.choice(self.history)
            return src[:5] + (self.ts,)
        sku = "sku-%d" % rnd.randrange(self.n)
        if r < self.dup_share + self.broken_share:
            agg, etype, payload = rnd.choice(BROKEN)
            row = (self._id(), agg, sku, etype, payload, self.ts)
        else:
            k = rnd.random()
            if k < 0.10:
                etype, p = "ProductListed", {"name": rnd.choice(["Mug", "Tea", "Ünïcode ☕", "x'); DROP TABLE products;--"]),
                                             "price": self._price(), "extra": [1]}
            elif k < 0.25:
                etype, p = "PriceChanged", {"price": self._price()}
            elif k < 0.60:
                # Some large: the stock limit is reached now and then.
                q = rnd.choice([rnd.randint(1, 100), rnd.randint(1, 1_000_000)])
                etype, p = "StockReceived", {"quantity": q}
            elif k < 0.97:
                etype, p = "StockShipped", {"quantity": rnd.randint(1, 150)}
            else:
                etype, p = "ProductDelisted", {}
            row = (self._id(), "Product", sku, etype, json.dumps(p), self.ts)
        self.history.append(row)
        return row

    # products.yaml's deduper window_size. Model.apply calls every copy of
    # an event id a duplicate; cdcflow agrees only within the window (past
    # it, only copies of events with a history row, PriceChanged, are still
    # recognised), so a test must stay under it.
    WINDOW = 1_000_000

    def rows(self, n):
        assert len(self.history) + n <= self.WINDOW, "more events than the deduper's window: the model would disagree"
        return [self.next_row() for _ in range(n)]

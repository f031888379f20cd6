"""An independent model of the accounts contract (DESIGN.md), used to
check what cdcflow wrote. It knows nothing of the plugins' code: it replays
the outbox in seq order with the rules from the design table."""
import json
import re

MAX_BALANCE = 99999999999  # 999999999.99 in cents
AMOUNT = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
TYPES = {"AccountCreated", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"}


def cents(text):
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def fmt(c):
    return "%d.%02d" % (c // 100, c % 100)


def validate(agg_type, agg_id, etype, payload_text):
    """The validator stage's rules: None when valid, else a short tag."""
    if agg_type != "Account":
        return "aggregate type"
    if not agg_id:
        return "aggregate id"
    if etype not in TYPES:
        return "type"
    try:
        p = json.loads(payload_text)
    except ValueError:
        return "json"
    if not isinstance(p, dict):
        return "not object"
    if etype == "AccountCreated":
        if not isinstance(p.get("owner"), str) or not p["owner"]:
            return "owner"
        if not isinstance(p.get("currency"), str) or not CURRENCY.match(p["currency"]):
            return "currency"
    elif etype in ("MoneyDeposited", "MoneyWithdrawn"):
        a = p.get("amount")
        if not isinstance(a, str) or not AMOUNT.match(a) or len(a.split(".")[0]) > 15:
            return "amount"
        if cents(a) <= 0 or cents(a) > MAX_BALANCE:
            return "amount range"
    return None


class Model:
    def __init__(self):
        self.accounts = {}  # id -> dict
        self.seen = set()
        self.applied = 0
        self.rejected = {}  # event id -> "validate" | "project"
        self.duplicates = 0

    def apply_row(self, event_id, agg_type, agg_id, etype, payload_text, ts):
        if event_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(event_id)
        if validate(agg_type, agg_id, etype, payload_text):
            self.rejected[event_id] = "validate"
            return
        p = json.loads(payload_text)
        acc = self.accounts.get(agg_id)
        ok = False
        if etype == "AccountCreated":
            if acc is None:
                self.accounts[agg_id] = {"owner": p["owner"], "currency": p["currency"], "balance": 0,
                                         "status": "open", "version": 1, "updated_at": ts}
                ok = True
        elif acc is not None and acc["status"] == "open":
            if etype == "MoneyDeposited":
                nb = acc["balance"] + cents(p["amount"])
                ok = nb <= MAX_BALANCE
            elif etype == "MoneyWithdrawn":
                nb = acc["balance"] - cents(p["amount"])
                ok = nb >= 0
            else:  # AccountClosed
                nb = acc["balance"]
                ok = nb == 0
            if ok:
                acc["balance"] = nb
                if etype == "AccountClosed":
                    acc["status"] = "closed"
                acc["version"] += 1
                acc["updated_at"] = ts
        if ok:
            self.applied += 1
        else:
            self.rejected[event_id] = "project"

    def rows(self):
        return {k: (v["owner"], v["currency"], fmt(v["balance"]), v["status"], v["version"], v["updated_at"])
                for k, v in self.accounts.items()}


def replay(conn, table="outbox"):
    m = Model()
    for row in conn.execute("SELECT id, aggregatetype, aggregateid, type, payload, timestamp FROM %s ORDER BY seq"
                            % table):
        m.apply_row(*row)
    return m

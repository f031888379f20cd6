"""Generates realistic outbox traffic for tests and benchmarks: bank-account
events over many accounts, with a share of invalid events, rule violations
and duplicate copies (near: within a few rows; far: many rows later)."""
import json
import os
import random
import sys
import time
import uuid

# One definition of DESIGN.md's outbox table: the demo generator's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "demo"))
from make_demo_db import SCHEMA  # noqa: E402,F401

INVALID_PAYLOADS = [
    ("MoneyDeposited", '{"amount": "-5"}'), ("MoneyDeposited", '{"amount": 12}'),
    ("MoneyDeposited", '{"amount": "1.234"}'), ("MoneyDeposited", '{"amount": "1e3"}'),
    ("MoneyWithdrawn", '{"amount": ""}'), ("MoneyWithdrawn", '{}'), ("MoneyDeposited", '[1,2]'),
    ("MoneyDeposited", '"just a string"'), ("MoneyDeposited", '{"amount": "0"}'),
    ("AccountCreated", '{"owner": "", "currency": "EUR"}'), ("AccountCreated", '{"owner": "X", "currency": "eur"}'),
    ("MoneyDeposited", '{not json'), ("Teleported", '{"amount": "1.00"}'),
]


def open_outbox(conn):
    conn.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)


class Generator:
    def __init__(self, seed=1, accounts=1000, invalid_share=0.03, dup_share=0.04):
        self.rnd = random.Random(seed)
        self.n_accounts = accounts
        self.invalid_share = invalid_share
        self.dup_share = dup_share
        self.created = []
        self.history = []  # rows written, for duplicates
        # Outbox timestamps are write times: start an hour ago. (They are
        # data only: neither the deduper nor retention reads them.)
        self.ts = int(time.time() * 1e6) - 3_600_000_000

    def _id(self):
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))

    def next_row(self):
        r = self.rnd.random()
        self.ts += 1
        if self.history and r < self.dup_share:
            # a producer retry: near (recent) or far (anywhere earlier)
            if self.rnd.random() < 0.5:
                src = self.history[-self.rnd.randint(1, min(20, len(self.history)))]
            else:
                src = self.history[self.rnd.randrange(len(self.history))]
            row = src[:5] + (self.ts,)
            return row
        acc_nr = self.rnd.randrange(self.n_accounts)
        acc = "acc-%d" % acc_nr
        if r < self.dup_share + self.invalid_share:
            etype, payload = self.rnd.choice(INVALID_PAYLOADS)
            row = (self._id(), "Account", acc, etype, payload, self.ts)
        elif acc not in self.created or self.rnd.random() < 0.002:
            self.created.append(acc)
            owner = self.rnd.choice(["Ada", "Grace", "Alan", "Edsger", "O'Brien'); DROP TABLE accounts;--"])
            row = (self._id(), "Account", acc, "AccountCreated",
                   json.dumps({"owner": owner, "currency": self.rnd.choice(["EUR", "USD", "GBP"])}), self.ts)
        else:
            k = self.rnd.random()
            if k < 0.55:
                etype, amount = "MoneyDeposited", "%d.%02d" % (self.rnd.randint(0, 500), self.rnd.randint(1, 99))
            elif k < 0.98:
                etype, amount = "MoneyWithdrawn", "%d.%02d" % (self.rnd.randint(0, 300), self.rnd.randint(0, 99))
            else:
                etype, amount = "AccountClosed", None
            if amount == "0.00":
                amount = "0.01"
            payload = "{}" if amount is None else json.dumps({"amount": amount})
            row = (self._id(), "Account", acc, etype, payload, self.ts)
        self.history.append(row)
        return row

    def rows(self, n):
        return [self.next_row() for _ in range(n)]


def insert(conn, rows):
    conn.executemany("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) "
                     "VALUES (?,?,?,?,?,?)", rows)
    conn.commit()

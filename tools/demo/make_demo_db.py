#!/usr/bin/env python3
"""Create a demo outbox for pipelines/accounts.yaml.

Writes the outbox table exactly as DESIGN.md defines it (AUTOINCREMENT seq,
index on id) into DATABASE in WAL mode, then N bank-account events over about
ACCOUNTS accounts: creates, deposits, withdrawals and closes, plus some
invalid events (bad amounts, unknown types, payloads that are not JSON
objects, withdrawals exceeding the balance, events for unknown accounts) and
some duplicate copies of earlier event ids (a producer's retries).

The output is deterministic for a given --seed. --valid-only writes only
valid, distinct events (the throughput benchmark: 1,000,000 events over
10,000 accounts is `-n 1000000 --accounts 10000 --valid-only`).

Standard library only.
"""

import argparse
import json
import os
import random
import sqlite3
import sys
import uuid

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  id            TEXT NOT NULL,
  aggregatetype TEXT NOT NULL,
  aggregateid   TEXT NOT NULL,
  type          TEXT NOT NULL,
  payload       TEXT NOT NULL,
  timestamp     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_id_idx ON outbox (id);
"""

BASE_TIME_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z: deterministic output
MAX_BALANCE = 99_999_999_999  # cents: 999999999.99
OWNERS = ["Ada", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Margaret", "Dennis", "Radia",
          "O'Brien", "Zoë", "李雷", "'); DROP TABLE accounts;--"]
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "JPY"]


def cents_text(cents):
    return "%d.%02d" % divmod(cents, 100)


def amount_text(cents, rng):
    """A valid amount in one of the accepted spellings: 12, 12.5, 12.34."""
    if cents % 100 == 0 and rng.random() < 0.3:
        return str(cents // 100)
    if cents % 10 == 0 and rng.random() < 0.3:
        return "%d.%d" % (cents // 100, (cents % 100) // 10)
    return cents_text(cents)


class Generator:
    def __init__(self, rng, accounts, valid_only):
        self.rng = rng
        self.n_accounts = accounts
        self.valid_only = valid_only
        self.accounts = {}  # id -> {"balance": cents, "open": bool}
        self.created = 0
        self.rows = []  # (id, aggregatetype, aggregateid, type, payload, timestamp)
        self.time_us = BASE_TIME_US
        self.target = 0

    def event_id(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def emit(self, agg_id, etype, payload, agg_type="Account", event_id=None):
        self.time_us += self.rng.randint(1, 2_000_000)
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        self.rows.append((event_id or self.event_id(), agg_type, agg_id, etype, text, self.time_us))

    def open_ids(self):
        return [a for a, s in self.accounts.items() if s["open"]]

    def create(self):
        self.created += 1
        agg = "acc-%d" % self.created
        self.accounts[agg] = {"balance": 0, "open": True}
        self.emit(agg, "AccountCreated", {"owner": self.rng.choice(OWNERS), "currency": self.rng.choice(CURRENCIES)})

    def valid(self):
        rng = self.rng
        open_ids = self.open_ids()
        # Keep about `accounts` accounts open: create while below, else mostly money.
        if not open_ids or (self.created < self.n_accounts and rng.random() < 0.15):
            return self.create()
        agg = rng.choice(open_ids)
        acct = self.accounts[agg]
        r = rng.random()
        if r < 0.55:
            cents = rng.randint(1, 500_000)
            if acct["balance"] + cents > MAX_BALANCE:
                cents = MAX_BALANCE - acct["balance"]
            if cents <= 0:
                return self.create() if self.created < self.n_accounts else None
            acct["balance"] += cents
            self.emit(agg, "MoneyDeposited", {"amount": amount_text(cents, rng)})
        elif r < 0.99 or self.valid_only or self.target - len(self.rows) < 2:
            if acct["balance"] == 0:
                cents = rng.randint(1, 100_000)
                acct["balance"] += cents
                return self.emit(agg, "MoneyDeposited", {"amount": amount_text(cents, rng)})
            cents = rng.randint(1, acct["balance"])
            acct["balance"] -= cents
            self.emit(agg, "MoneyWithdrawn", {"amount": amount_text(cents, rng)})
        else:
            # Close: empty the account first, then close it.
            if acct["balance"]:
                self.emit(agg, "MoneyWithdrawn", {"amount": cents_text(acct["balance"])})
                acct["balance"] = 0
            acct["open"] = False
            self.emit(agg, "AccountClosed", {})

    def invalid(self):
        rng = self.rng
        open_ids = self.open_ids() or ["acc-1"]
        agg = rng.choice(open_ids)
        kind = rng.randrange(9)
        if kind == 0:
            self.emit(agg, "MoneyDeposited", {"amount": rng.choice(["12.345", "-5", "1e3", "abc", "", " 1", "1,50"])})
        elif kind == 1:
            self.emit(agg, "MoneyDeposited", {"amount": 12.5})  # a JSON number, not a string
        elif kind == 2:
            self.emit(agg, rng.choice(["AccountFrozen", "MoneyTeleported", "accountcreated"]), {})
        elif kind == 3:
            self.emit(agg, "MoneyDeposited", rng.choice(['[1, 2]', '"12.00"', 'not json', '{"amount": "1"', '']))
        elif kind == 4:
            balance = self.accounts.get(agg, {"balance": 0})["balance"]
            self.emit(agg, "MoneyWithdrawn", {"amount": cents_text(balance + rng.randint(1, 100_000))})
        elif kind == 5:
            self.emit("acc-unknown-%d" % rng.randint(1, 50), "MoneyDeposited", {"amount": "10.00"})
        elif kind == 6:
            self.emit(agg, "AccountCreated", {"owner": "Again", "currency": "EUR"})  # already exists
        elif kind == 7:
            self.emit("acc-new-%d" % rng.randint(1, 1_000_000), "AccountCreated",
                      {"owner": "", "currency": rng.choice(["eur", "EURO", "EUR"])})
        else:
            self.emit(agg, "MoneyDeposited", {"amount": "5.00"}, agg_type="Order")

    def duplicate(self):
        # A producer retry: an earlier row written again with the same id.
        self.rows.append(self.rng.choice(self.rows))

    def run(self, n):
        rng = self.rng
        self.target = n
        while len(self.rows) < n:
            r = rng.random()
            if self.valid_only or r < 0.90 or not self.rows:
                self.valid()
            elif r < 0.96:
                self.invalid()
            else:
                self.duplicate()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("database", help="SQLite file to create (or append to)")
    ap.add_argument("-n", "--events", type=int, default=5000, help="events to write (default 5000)")
    ap.add_argument("--accounts", type=int, default=200, help="about this many accounts (default 200)")
    ap.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    ap.add_argument("--valid-only", action="store_true", help="only valid, distinct events (benchmarks)")
    ap.add_argument("--force", action="store_true", help="delete DATABASE (and its -wal/-shm) first")
    ap.add_argument("--expected", metavar="JSON",
                    help="also write the accounts the pipeline must end with (balance, status) to this file")
    args = ap.parse_args()
    if args.events < 0 or args.accounts < 1:
        sys.exit("make_demo_db: --events must be >= 0 and --accounts >= 1")

    if args.force:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(args.database + suffix)
            except FileNotFoundError:
                pass
    directory = os.path.dirname(args.database)
    if directory:
        os.makedirs(directory, exist_ok=True)

    gen = Generator(random.Random(args.seed), args.accounts, args.valid_only)
    if args.valid_only:
        # Every account first, so the rest spreads over all of them.
        while gen.created < min(args.accounts, args.events):
            gen.create()
    gen.run(args.events)

    db = sqlite3.connect(args.database)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        with db:
            db.executemany("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                           "VALUES (?, ?, ?, ?, ?, ?)", gen.rows)
    finally:
        db.close()
    if args.expected:
        with open(args.expected, "w") as f:
            json.dump({a: {"balance": cents_text(s["balance"]), "status": "open" if s["open"] else "closed"}
                       for a, s in gen.accounts.items()}, f, indent=1, sort_keys=True)
    print("wrote %d events (%d accounts) to %s" % (len(gen.rows), gen.created, args.database))


if __name__ == "__main__":
    main()

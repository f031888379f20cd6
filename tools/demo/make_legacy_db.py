#!/usr/bin/env python3
"""Create a demo legacy outbox for pipelines/migrate-legacy.yaml.

Writes the legacy_outbox table of DESIGN.md ("The legacy outbox") into
DATABASE in WAL mode, then N bank-account messages (topic 'Account', key =
account id, type and body as pipelines/accounts.yaml expects them), with
created_at in several ISO 8601 forms, and (unless --valid-only) what a real
legacy table holds too: unmappable rows (NULL or empty fields, a created_at
that is not a date), a body that is not JSON (migrated as written; the
accounts pipeline's validator dead-letters it later), and holes in the ids
(deleted rows).

    python3 tools/demo/make_legacy_db.py demo/legacy.db --force
    build/tools/cdcflow run pipelines/migrate-legacy.yaml --drain

The output is deterministic for a given --seed. Standard library only.
"""

import argparse
import os
import random
import sqlite3
import sys

SCHEMA = """
CREATE TABLE IF NOT EXISTS legacy_outbox (
  id           INTEGER PRIMARY KEY,
  topic        TEXT,
  message_key  TEXT,
  message_type TEXT,
  body         TEXT,
  created_at   TEXT,
  published    INTEGER
);
"""

BASE = (2024, 1, 1)


def created_at(i, rng):
    """Second i after 2024-01-01 in one of the forms legacy tables use."""
    day, rest = divmod(i, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    date = "2024-%02d-%02d" % (1 + day // 28 % 12, 1 + day % 28)
    form = rng.randrange(4)
    if form == 0:
        return "%sT%02d:%02d:%02dZ" % (date, h, m, s)
    if form == 1:
        return "%s %02d:%02d:%02d" % (date, h, m, s)  # no zone: UTC
    if form == 2:
        return "%sT%02d:%02d:%02d.%03d+00:00" % (date, h, m, s, rng.randrange(1000))
    return "%sT%02d%02d%02dZ" % (date.replace("-", ""), h, m, s)  # basic form


def rows(n, accounts, rng, valid_only):
    balances = {}
    for i in range(1, n + 1):
        acc = "acc-%d" % rng.randrange(accounts)
        if acc not in balances:
            kind, body = "AccountCreated", '{"owner": "Ada", "currency": "EUR"}'
            balances[acc] = 0
        elif balances[acc] > 1000 and rng.random() < 0.3:
            cents = rng.randrange(1, balances[acc])
            balances[acc] -= cents
            kind, body = "MoneyWithdrawn", '{"amount": "%d.%02d"}' % divmod(cents, 100)
        else:
            cents = rng.randrange(1, 100000)
            balances[acc] += cents
            kind, body = "MoneyDeposited", '{"amount": "%d.%02d"}' % divmod(cents, 100)
        row = [i, "Account", acc, kind, body, created_at(i, rng), rng.randrange(2)]
        if not valid_only:
            r = rng.random()
            if r < 0.002:
                row[rng.choice([1, 2, 3, 4])] = None  # unmappable: NULL field
            elif r < 0.003:
                row[rng.choice([1, 2, 3, 4])] = ""  # unmappable: empty field
            elif r < 0.004:
                row[5] = "last tuesday"  # unmappable: not a date
            elif r < 0.005:
                row[4] = "not json"  # migrated as written; the validator rejects it
        yield tuple(row)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("database")
    ap.add_argument("-n", "--rows", type=int, default=5000)
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--valid-only", action="store_true", help="no unmappable rows, no holes")
    ap.add_argument("--force", action="store_true", help="replace an existing file")
    args = ap.parse_args()
    if os.path.exists(args.database):
        if not args.force:
            sys.exit("%s exists (use --force to replace it)" % args.database)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.database + suffix):
                os.remove(args.database + suffix)
    os.makedirs(os.path.dirname(os.path.abspath(args.database)), exist_ok=True)
    rng = random.Random(args.seed)
    db = sqlite3.connect(args.database)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO legacy_outbox VALUES (?, ?, ?, ?, ?, ?, ?)",
                   rows(args.rows, args.accounts, rng, args.valid_only))
    if not args.valid_only:
        db.execute("DELETE FROM legacy_outbox WHERE id % 997 = 0")  # holes: deleted rows
    db.commit()
    count = db.execute("SELECT count(*) FROM legacy_outbox").fetchone()[0]
    db.close()
    print("%s: %d legacy rows" % (args.database, count))


if __name__ == "__main__":
    main()

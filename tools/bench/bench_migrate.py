#!/usr/bin/env python3
"""What the migration costs against the cheapest possible copy: the same
legacy table moved into a CDC outbox by `cdcflow migrate` (UUIDv5 ids,
ISO 8601 parsing, per-row checksums, the map and progress tables, one
transaction per batch) and by one plain SQL statement in SQLite,

    INSERT INTO outbox(id, ...) SELECT printf('legacy-%029d', id), ... FROM legacy_outbox

whose 36-character text id was meant to make the outbox's id index cost the
same. It does not: 'legacy-%029d' rises with the legacy id, so every index
insert is an append, while version 5 UUIDs land anywhere in the index. So a
second baseline runs the same statement with a random 36-character id
(lower(hex(randomblob(18)))): the index work of the migration, nothing else.
The SQL rounds count until their connection has closed (SQLite then copies
the WAL into the database file), as `cdcflow migrate` does before it exits.
Both start from a copy of the same legacy file, in the same WAL/synchronous
mode, and the rounds interleave so that both see the same machine. Prints
rows/s per round, the medians and the ratio (the issue's target: >= 0.7x).

Usage: tools/bench/bench_migrate.py [--build build] [--rows N] [--rounds N] [--workdir DIR]
Prints figures; asserts nothing.
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LEGACY_DDL = ("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
              "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)")
# core/outbox/schema.cpp's create_sql(), as the migration's outbox_sink makes it.
OUTBOX_DDL = ("CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "
              "aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, type TEXT NOT NULL, "
              "payload TEXT NOT NULL, timestamp INTEGER NOT NULL);"
              "CREATE INDEX outbox_id_idx ON outbox(id);")


def make_legacy(path, rows, accounts=10000):
    """Accounts messages as an older outbox holds them: created_at in ISO 8601."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(LEGACY_DDL)

    def gen():
        for i in range(1, rows + 1):
            acc = "acc-%d" % (i % accounts)
            if i <= accounts:
                t, body = "AccountCreated", '{"owner":"Owner %d","currency":"EUR"}' % i
            else:
                t, body = "MoneyDeposited", '{"amount":"%d.%02d"}' % (i % 500 + 1, i % 100)
            sec = i % 86400
            yield (i, "Account", acc, t, body, "2024-05-01T%02d:%02d:%02d.%06dZ" % (sec // 3600, sec // 60 % 60,
                                                                                  sec % 60, i % 1000000), 1)

    db.executemany("INSERT INTO legacy_outbox VALUES(?,?,?,?,?,?,?)", gen())
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


SEQUENTIAL_ID = "printf('legacy-%029d', id)"
RANDOM_ID = "lower(hex(randomblob(18)))"


def plain_sql(path, id_sql):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    t0 = time.monotonic()
    db.execute("BEGIN")
    for stmt in OUTBOX_DDL.split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) "
               "SELECT " + id_sql + ", topic, message_key, message_type, body, "
               "CAST((julianday(created_at) - 2440587.5) * 86400000000 AS INTEGER) "
               "FROM legacy_outbox ORDER BY id")
    db.execute("COMMIT")
    n = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    db.close()
    return time.monotonic() - t0, n


def migrate(build, path):
    env = dict(os.environ, CDCFLOW_DB=path, CDCFLOW_LOG_LEVEL="warn")
    cmd = [os.path.join(build, "tools", "cdcflow"), "migrate", os.path.join(ROOT, "pipelines", "migrate-legacy.yaml"),
           "--progress=none"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("cdcflow migrate failed (exit %d): %s" % (p.returncode, p.stderr.strip()[-500:]))
    db = sqlite3.connect(path)
    n = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    db.close()
    return secs, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench_migrate.")
    os.makedirs(work, exist_ok=True)
    legacy = os.path.join(work, "legacy.db")
    if not os.path.exists(legacy):
        t0 = time.monotonic()
        make_legacy(legacy, args.rows)
        print("generated %d legacy rows in %.1f s (%s)" % (args.rows, time.monotonic() - t0, legacy))
    size = os.path.getsize(legacy)
    print("legacy file: %.1f MiB" % (size / 1048576))
    sql_rates, rnd_rates, cdc_rates = [], [], []
    for rnd in range(1, args.rounds + 1):
        for name, fn, rates in (("INSERT..SELECT, rising", lambda p: plain_sql(p, SEQUENTIAL_ID), sql_rates),
                                ("INSERT..SELECT, random", lambda p: plain_sql(p, RANDOM_ID), rnd_rates),
                                ("cdcflow migrate", lambda p: migrate(args.build, p), cdc_rates)):
            copy = os.path.join(work, "round.db")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(copy + suffix):
                    os.remove(copy + suffix)
            shutil.copyfile(legacy, copy)
            secs, n = fn(copy)
            if n != args.rows:
                sys.exit("%s moved %d rows, expected %d" % (name, n, args.rows))
            rates.append(n / secs)
            print("round %d  %-24s %8.2f s  %10.0f rows/s" % (rnd, name, secs, n / secs), flush=True)
    s, r, c = statistics.median(sql_rates), statistics.median(rnd_rates), statistics.median(cdc_rates)
    print("median  INSERT..SELECT, rising ids %10.0f rows/s" % s)
    print("median  INSERT..SELECT, random ids %10.0f rows/s" % r)
    print("median  cdcflow migrate            %10.0f rows/s" % c)
    print("ratio   %.2fx of the rising-id copy (the issue's baseline; target >= 0.7x)" % (c / s))
    print("ratio   %.2fx of the random-id copy (the same index work as UUIDv5 ids)" % (c / r))
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

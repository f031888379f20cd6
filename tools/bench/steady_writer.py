#!/usr/bin/env python3
"""Writes deposits into an outbox at a steady rate, as an application would:
small transactions every 5 ms. Each event's timestamp is the time its
transaction began; with a COMMITS file, one line per transaction is written
there after the run: "<last seq> <commit time, us>" (the moment COMMIT
returned), which is what end-to-end latency is measured from.
Usage: steady_writer.py DB RATE SECONDS [COMMITS]   (accounts acc-0..acc-999 must exist)"""
import sqlite3
import sys
import time

db, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
commits_path = sys.argv[4] if len(sys.argv) > 4 else None
commits = []
c = sqlite3.connect(db, timeout=30, isolation_level=None)
tick = 0.005
per_tick = max(1, int(rate * tick))
n = 0
t0 = time.monotonic()
next_t = t0
while time.monotonic() - t0 < seconds:
    now_us = int(time.time() * 1e6)
    c.execute("BEGIN IMMEDIATE")
    c.executemany("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES (?,?,?,?,?,?)",
                  [("w%d" % (n + i), "Account", "acc-%d" % ((n + i) % 1000), "MoneyDeposited", '{"amount": "1.00"}',
                    now_us) for i in range(per_tick)])
    last_seq = c.execute("SELECT last_insert_rowid()").fetchone()[0]
    c.execute("COMMIT")
    commits.append((last_seq, int(time.time() * 1e6)))
    n += per_tick
    next_t += tick
    delay = next_t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
elapsed = time.monotonic() - t0
if commits_path:
    with open(commits_path, "w") as f:
        f.writelines("%d %d\n" % c for c in commits)
print("%.0f events/s for %.1f s" % (n / elapsed, elapsed))

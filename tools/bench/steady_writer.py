#!/usr/bin/env python3
"""Writes deposits into an outbox at a steady rate, as an application would:
small transactions every 5 ms, each event's timestamp = its commit time (us).
Usage: steady_writer.py DB RATE SECONDS   (accounts acc-0..acc-999 must exist)"""
import sqlite3
import sys
import time

db, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
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
    c.execute("COMMIT")
    n += per_tick
    next_t += tick
    delay = next_t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
elapsed = time.monotonic() - t0
print("%.0f events/s for %.1f s" % (n / elapsed, elapsed))

#!/usr/bin/env python3
"""Benchmarks the declared accounts model (issue 12) against the built-in one
and the hand-written single loop, on one generated outbox, in the same run.

One all-valid outbox (bench_accounts.make_outbox: 1,000,000 events over
10,000 accounts by default) is copied three times; then, `--rounds` times,
interleaved so that the machine's load falls on all three alike:
  - tools/bench/handwritten_loop on one copy,
  - `cdcflow run pipelines/accounts.yaml --drain` (built-in model),
  - `cdcflow run pipelines/accounts-declarative.yaml --drain`,
each copy restored before its run. Prints the best events/s of each, the
ratios declared/built-in and declared/loop, and whether the built-in and
declared runs left identical accounts tables (updated_at aside).

Usage: tools/bench/bench_declared.py [--build build] [--events N] [--accounts N]
       [--rounds N] [--workdir DIR]
Prints figures; asserts nothing.
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from bench_accounts import make_outbox, timed  # noqa: E402


def accounts(db):
    return sorted(sqlite3.connect(db).execute(
        "SELECT account_id, owner, currency, balance, status, version FROM accounts"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--make-db")
    args = ap.parse_args()
    if args.make_db:
        make_outbox(args.make_db, args.events, args.accounts)
        return
    work = args.workdir or tempfile.mkdtemp(prefix="bench_declared_")
    os.makedirs(work, exist_ok=True)
    base = os.path.join(work, "base.db")
    print("generating %d events over %d accounts..." % (args.events, args.accounts), flush=True)
    # In a child process, as bench_accounts does (peak RSS of the children).
    subprocess.run([sys.executable, __file__, "--make-db", base, "--events", str(args.events),
                    "--accounts", str(args.accounts)], check=True)
    cdcflow = os.path.join(args.build, "tools", "cdcflow")
    runs = {
        "hand-written loop": lambda db: [os.path.join(args.build, "tools", "handwritten_loop"), db],
        "built-in accounts": lambda db: [cdcflow, "run", os.path.join(ROOT, "pipelines", "accounts.yaml"), "--drain"],
        "declared accounts": lambda db: [cdcflow, "run", os.path.join(ROOT, "pipelines", "accounts-declarative.yaml"),
                                         "--drain"],
    }
    best = {}
    for r in range(args.rounds):
        for name, cmd in runs.items():
            db = os.path.join(work, name.split()[0] + ".db")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            shutil.copy(base, db)
            subprocess.run(["sync"])
            env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="warn")
            secs, rss, _ = timed(cmd(db), env)
            print("round %d  %-18s: %9.0f events/s  (%.2f s, %.2f s CPU, peak RSS %.0f MiB)" % (
                r + 1, name, args.events / secs, secs, timed.cpu, rss), flush=True)
            best[name] = min(best.get(name, secs), secs)
    for name, secs in best.items():
        print("best  %-18s: %9.0f events/s" % (name, args.events / secs))
    d, b, h = best["declared accounts"], best["built-in accounts"], best["hand-written loop"]
    print("declared / built-in: %.2fx   declared / loop: %.2fx" % (b / d, h / d))
    same = accounts(os.path.join(work, "built-in.db")) == accounts(os.path.join(work, "declared.db"))
    print("accounts identical (built-in vs declared, updated_at aside): %s" % same)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

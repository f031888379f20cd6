#!/usr/bin/env python3
"""Benchmarks what a restart costs the deduper (issue 8 item 2: stream state
that moves with the stream).

1. Replay: a 1,000,000-event outbox (bench_accounts.py's generator) is
   drained once through pipelines/accounts.yaml (window_size 1,000,000), then
   started again with nothing new (--drain), --rounds times: before anything
   flows the host replays the outbox up to the checkpoint through
   outbox_source into the deduper's restore. Prints the time from "running"
   to "resuming after checkpoint" (host log: ownership, checkpoint, replay),
   the host's own replay figure, and the whole process's wall time.
2. With --baseline-rev REV: the deduper of that git revision, which seeded
   its window by reading the outbox itself (seed_database), is compiled into
   a temporary folder and run the same way on the same file, interleaved
   with (1).
3. With --persist-estimate: the alternative design, the sink persisting each
   event id in its own transaction (one INSERT per event into an append-only
   table keyed by position, and a DELETE of the ids that fell out of the
   window), estimated by timing those statements alone on the outbox's ids
   in 4096-event transactions (the sink's batch) with their fsyncs, against
   the time of the first drain. Python drives the statements, so the figure
   includes its per-row overhead (about 1 us), and the real sink would share
   one fsync per batch instead of paying a second one: an estimate.

Usage: tools/bench/bench_restart.py [--build build] [--events N] [--rounds N]
       [--baseline-rev REV] [--persist-estimate] [--workdir DIR]
Prints figures; asserts nothing.
"""
import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_accounts import make_outbox  # noqa: E402

PIPELINE = os.path.join(ROOT, "pipelines", "accounts.yaml")


def log_ms(stderr, pattern):
    """The host log's timestamp (ms since the epoch) of the first line matching pattern."""
    for line in stderr.splitlines():
        if re.search(pattern, line):
            stamp = line.split(" ", 1)[0].rstrip("Z")
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1000
    raise RuntimeError("no log line matching %r in:\n%s" % (pattern, stderr[-3000:]))


def restart(build, pipeline, db):
    """One start with nothing new: (ms to 'resuming', host's replay ms or None, wall s)."""
    env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="info")
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(build, "tools", "cdcflow"), "run", pipeline, "--drain"], env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0 or "0 events" not in r.stdout:
        raise RuntimeError("restart failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr[-3000:]))
    ready = log_ms(r.stderr, r"resuming after checkpoint") - log_ms(r.stderr, r"\] pipeline '.*' running")
    m = re.search(r"rebuilt stream state from (\d+) events .* in (\d+) ms", r.stderr)
    seeded = re.search(r"seeded (\d+) event ids", r.stderr)
    count = int(m.group(1)) if m else int(seeded.group(1)) if seeded else 0
    return ready, (int(m.group(2)) if m else None), wall, count


def build_baseline(rev, work):
    """Compiles the deduper of git revision `rev` (seeding from the outbox)."""
    src = os.path.join(work, "baseline_src")
    out = os.path.join(work, "baseline_plugins")
    os.makedirs(os.path.join(src, "deduper"), exist_ok=True)
    os.makedirs(os.path.join(src, "common"), exist_ok=True)
    os.makedirs(out, exist_ok=True)
    for path in ["plugins/deduper/deduper.hpp", "plugins/deduper/seed.hpp", "plugins/deduper/window.hpp",
                 "plugins/deduper/siphash.hpp", "plugins/deduper/plugin.cpp", "plugins/common/sqlite.hpp"]:
        text = subprocess.run(["git", "-C", ROOT, "show", "%s:%s" % (rev, path)], check=True,
                              capture_output=True, text=True).stdout
        with open(os.path.join(src, path[len("plugins/"):]), "w") as f:
            f.write(text)
    so = os.path.join(out, "deduper.so")
    subprocess.run(["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-fvisibility=hidden",
                    "-I", os.path.join(ROOT, "core", "include"), "-I", src,
                    os.path.join(src, "deduper", "plugin.cpp"), "-o", so, "-lsqlite3"], check=True)
    return out


def persist_estimate(db, events, batch=4096, window=1_000_000):
    """Seconds to INSERT every id into a seen-ids table and DELETE the one
    that left the window, in `batch`-event transactions (synchronous=FULL,
    WAL: what the sink's commit pays)."""
    ids = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM outbox ORDER BY seq")]
    path = db + ".seen"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    # Append-only by position, no index on the id: the window in memory does
    # the lookups, the table only has to be read back at a restart. (With an
    # index on the id every insert lands on a random page: far slower.)
    c.execute("CREATE TABLE seen (seq INTEGER PRIMARY KEY, id TEXT NOT NULL)")
    t0 = time.monotonic()
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        c.execute("BEGIN")
        c.executemany("INSERT INTO seen (seq, id) VALUES (?, ?)",
                      ((start + k + 1, i) for k, i in enumerate(chunk)))
        c.execute("DELETE FROM seen WHERE seq <= ?", (start + len(chunk) - window,))
        c.execute("COMMIT")
    secs = time.monotonic() - t0
    t0 = time.monotonic()
    n = sum(1 for _ in c.execute("SELECT id FROM seen ORDER BY seq"))
    read = time.monotonic() - t0
    c.close()
    return secs, read, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-rev")
    ap.add_argument("--persist-estimate", action="store_true")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="cdcflow_bench_restart_")
    os.makedirs(work, exist_ok=True)
    try:
        db = os.path.join(work, "restart.db")
        if os.path.exists(db):
            os.remove(db)
        make_outbox(db, args.events, args.accounts)
        env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="warn")
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(args.build, "tools", "cdcflow"), "run", PIPELINE, "--drain"], env=env,
                           capture_output=True, text=True)
        drain = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        print("first drain       : %d events in %.2f s (%.0f events/s)" % (args.events, drain,
                                                                            args.events / drain))
        with open(PIPELINE) as f:
            text = f.read()
        runs = [("replay", PIPELINE)]
        if args.baseline_rev:
            plugins = build_baseline(args.baseline_rev, work)
            assert "window_size: 1000000 " in text
            baseline = text.replace("\nstages:\n", "\nplugin_path: [%s]\nstages:\n" % plugins, 1)
            baseline = baseline.replace("window_size: 1000000 ",
                                        "seed_database: ${CDCFLOW_DB}\n      window_size: 1000000 ", 1)
            assert "plugin_path" in baseline
            path = os.path.join(work, "baseline.yaml")
            with open(path, "w") as f:
                f.write(baseline)
            runs.append(("seed (%s)" % args.baseline_rev, path))
        for rnd in range(args.rounds):
            for name, pipeline in runs:
                ready, host_ms, wall, count = restart(args.build, pipeline, db)
                print("round %d %-16s: %6.0f ms to resume (host replay figure: %s ms), process %.2f s, "
                      "%d ids restored" % (rnd + 1, name, ready, host_ms if host_ms is not None else "-", wall,
                                           count))
        if args.persist_estimate:
            secs, read, n = persist_estimate(db, args.events)
            print("persist ids in the sink (estimate): %.2f s of INSERT+DELETE for %d events = %.1f us/event, "
                  "%.0f%% of the first drain's time; reading %d ids back: %.0f ms" % (
                      secs, args.events, secs / args.events * 1e6, 100 * secs / drain, n, read * 1000))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

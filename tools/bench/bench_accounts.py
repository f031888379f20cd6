#!/usr/bin/env python3
"""Benchmarks the accounts pipeline (issue: exactly-once accounts on SQLite).

1. Throughput: a 1,000,000-event all-valid outbox over 10,000 accounts, copied
   to two files; `cdcflow run pipelines/accounts.yaml --drain` on one and the
   hand-written single-threaded loop (tools/bench/handwritten_loop.cpp) on the
   other, in the same run. Prints events/s, the ratio, and peak RSS; checks
   that both computed the same balances.
2. Latency: another process writes a steady 20,000 events/s into the outbox
   while `cdcflow run` follows it; the moment each event's outbox transaction
   committed (the writer logs it when COMMIT returns) is compared with the
   first time its seq is seen under the sink's checkpoint (polled every ms:
   an upper bound). Prints p50/p99/max.

3. With --ownership-rounds N: the throughput drain N times with and N times
   without the ownership check (one owner per checkpoint), interleaved.

Usage: tools/bench/bench_accounts.py [--build build] [--events N] [--accounts N]
       [--rate 20000] [--seconds 10] [--workdir DIR] [--versions] [--ownership-rounds N]
       [--pipeline FILE]
Prints figures; asserts nothing.
"""
import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from outbox_gen import SCHEMA  # noqa: E402


def make_outbox(path, events, accounts, seed=11):
    rnd = random.Random(seed)
    c = sqlite3.connect(path)
    c.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)
    bal = [0] * accounts
    ts = int(time.time() * 1e6)
    rows = []
    for i in range(accounts):
        rows.append((str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "Account", "acc-%d" % i,
                     "AccountCreated", '{"owner": "Owner %d", "currency": "EUR"}' % i, ts))
    while len(rows) < events:
        a = rnd.randrange(accounts)
        amt = rnd.randint(1, 50000)
        if rnd.random() < 0.4 and bal[a] >= amt:
            bal[a] -= amt
            t = "MoneyWithdrawn"
        else:
            bal[a] += amt
            t = "MoneyDeposited"
        ts += 1
        rows.append((str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "Account", "acc-%d" % a, t,
                     '{"amount": "%d.%02d"}' % (amt // 100, amt % 100), ts))
    c.executemany("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES (?,?,?,?,?,?)",
                  rows)
    c.commit()
    c.close()


def timed(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    out, err = p.stdout.read(), p.stderr.read()
    if status != 0:
        sys.exit("%s failed: %s" % (cmd[0], err[-2000:]))
    timed.cpu = ru.ru_utime + ru.ru_stime  # CPU seconds of the last run (all threads)
    return secs, ru.ru_maxrss / 1024.0, out


def throughput(args, build, work):
    base = os.path.join(work, "base.db")
    print("generating %d events over %d accounts..." % (args.events, args.accounts), flush=True)
    # In a child process: a child forked from a large parent would report the
    # parent's pages in its own peak RSS.
    subprocess.run([sys.executable, __file__, "--make-db", base, "--events", str(args.events),
                    "--accounts", str(args.accounts)], check=True)
    hw, cf = os.path.join(work, "hw.db"), os.path.join(work, "cdcflow.db")
    for dst in (hw, cf):
        shutil.copy(base, dst)
    pipeline = args.pipeline
    if args.versions:
        # Every event carries its aggregate's version (1, 2, ...): the sink
        # then also checks and stores the last version per account.
        c = sqlite3.connect(cf)
        c.executescript("ALTER TABLE outbox ADD COLUMN aggregate_version INTEGER;"
                        "CREATE TEMP TABLE v AS SELECT seq, row_number() OVER (PARTITION BY aggregateid ORDER BY seq)"
                        " AS rn FROM outbox;"
                        "UPDATE outbox SET aggregate_version = v.rn FROM v WHERE v.seq = outbox.seq;")
        c.close()
        text = open(pipeline).read().replace("# version_column:", "version_column:")
        pipeline = os.path.join(work, "accounts-versions.yaml")
        with open(pipeline, "w") as f:
            f.write(text)
    subprocess.run(["sync"])
    hw_secs, hw_rss, _ = timed([os.path.join(build, "tools", "handwritten_loop"), hw])
    hw_cpu = timed.cpu
    env = dict(os.environ, CDCFLOW_DB=cf, CDCFLOW_LOG_LEVEL="warn")
    cf_secs, cf_rss, out = timed([os.path.join(build, "tools", "cdcflow"), "run", pipeline, "--drain"], env)
    cf_cpu = timed.cpu
    a = dict(sqlite3.connect(hw).execute("SELECT account_id, balance_cents FROM hw_accounts"))
    b = {k: int(v.replace(".", "")) for k, v in sqlite3.connect(cf).execute("SELECT account_id, balance FROM accounts")}
    same = a == b
    print("hand-written loop : %9.0f events/s  (%.2f s, %.2f s CPU, peak RSS %.0f MiB)" % (
        args.events / hw_secs, hw_secs, hw_cpu, hw_rss))
    print("cdcflow --drain   : %9.0f events/s  (%.2f s, %.2f s CPU, peak RSS %.0f MiB)  %s" % (
        args.events / cf_secs, cf_secs, cf_cpu, cf_rss, out.strip()))
    print("ratio cdcflow/loop: %.2fx   balances identical: %s" % (hw_secs / cf_secs, same))


def ownership_cost(args, build, work):
    """The same 1M-event drain with and without the ownership check (the
    fence in every batch's transaction, the lease renewals), interleaved so
    that both see the same machine; CDCFLOW_UNSAFE_NO_OWNERSHIP=1 switches it
    off (for this measurement only)."""
    base = os.path.join(work, "base.db")
    if not os.path.exists(base):
        subprocess.run([sys.executable, __file__, "--make-db", base, "--events", str(args.events),
                        "--accounts", str(args.accounts)], check=True)
    pipeline = os.path.join(ROOT, "pipelines", "accounts.yaml")
    rates = {True: [], False: []}
    for r in range(args.ownership_rounds):
        for fenced in ((True, False) if r % 2 == 0 else (False, True)):
            db = os.path.join(work, "own.db")
            for ext in ("", "-wal", "-shm"):
                if os.path.exists(db + ext):
                    os.remove(db + ext)
            shutil.copy(base, db)
            subprocess.run(["sync"])
            env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="error")
            if not fenced:
                env["CDCFLOW_UNSAFE_NO_OWNERSHIP"] = "1"
            secs, _, _ = timed([os.path.join(build, "tools", "cdcflow"), "run", pipeline, "--drain"], env)
            rates[fenced].append(args.events / secs)
    med = lambda v: sorted(v)[len(v) // 2]
    on, off = med(rates[True]), med(rates[False])
    print("ownership check   : %9.0f events/s with, %9.0f without (medians of %d interleaved runs each): "
          "cost %.1f%%" % (on, off, args.ownership_rounds, 100.0 * (off - on) / off))
    print("                    with: %s" % " ".join("%.0f" % x for x in rates[True]))
    print("                    without: %s" % " ".join("%.0f" % x for x in rates[False]))


def latency(args, build, work):
    db = os.path.join(work, "latency.db")
    c = sqlite3.connect(db)
    c.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)
    c.executemany("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) VALUES (?,?,?,?,?,?)",
                  [("c%d" % i, "Account", "acc-%d" % i, "AccountCreated", '{"owner": "O", "currency": "EUR"}',
                    int(time.time() * 1e6)) for i in range(1000)])
    c.commit()
    env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="warn")
    host_started = time.monotonic()
    host = subprocess.Popen([os.path.join(build, "tools", "cdcflow"), "run", args.pipeline], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = {}  # checkpoint position -> first time observed (us)
    stop = threading.Event()

    def poll():
        pc = sqlite3.connect(db, timeout=30)
        last = -1
        while not stop.is_set():
            try:
                row = pc.execute("SELECT MAX(position) FROM cdcflow_checkpoints").fetchone()
            except sqlite3.OperationalError:
                row = (None,)
            now = int(time.time() * 1e6)
            if row[0] is not None and row[0] != last:
                seen[row[0]] = now
                last = row[0]
            time.sleep(0.001)
    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.0)  # caught up with the creates
    commits_file = os.path.join(work, "commits.txt")
    writer = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench", "steady_writer.py"), db,
                             str(args.rate), str(args.seconds), commits_file], capture_output=True, text=True)
    time.sleep(1.0)
    stop.set()
    poller.join()
    host.terminate()
    _, _, usage = os.wait4(host.pid, 0)
    host.returncode = 0
    host_cpu = usage.ru_utime + usage.ru_stime
    host_wall = time.monotonic() - host_started
    # Per event: from the moment its outbox transaction committed to the
    # first time the sink's checkpoint was seen at or past it.
    with open(commits_file) as f:
        commits = [tuple(map(int, line.split())) for line in f]
    rows = sqlite3.connect(db).execute("SELECT seq FROM outbox WHERE id LIKE 'w%' ORDER BY seq").fetchall()
    marks = sorted(seen.items())
    lat, j, k = [], 0, 0
    for (seq,) in rows:
        while k < len(commits) and commits[k][0] < seq:
            k += 1
        while j < len(marks) and marks[j][0] < seq:
            j += 1
        if j == len(marks) or k == len(commits):
            break
        lat.append((marks[j][1] - commits[k][1]) / 1000.0)
    lat.sort()
    if not lat:
        print("latency: no samples (writer: %s)" % writer.stdout.strip())
        return
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print("latency at %s: %d events, p50 %.1f ms, p99 %.1f ms, max %.1f ms (outbox commit -> projection commit, "
          "checkpoint polled every 1 ms)" % (writer.stdout.strip(), len(lat), pct(0.5), pct(0.99), lat[-1]))
    print("host CPU meanwhile: %.1f s, %.1f%% of one core over its %.1f s" % (host_cpu, 100.0 * host_cpu / host_wall, host_wall))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/cdcflow-bench")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--versions", action="store_true",
                    help="throughput: events carry aggregate versions (outbox_source version_column)")
    ap.add_argument("--ownership-rounds", type=int, default=0,
                    help="also time N drains with and N without the ownership check, interleaved")
    ap.add_argument("--pipeline", default=os.path.join(ROOT, "pipelines", "accounts.yaml"),
                    help="the pipeline file to run (default: pipelines/accounts.yaml)")
    ap.add_argument("--make-db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_db:
        make_outbox(args.make_db, args.events, args.accounts)
        return
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    if not args.skip_throughput:
        throughput(args, args.build, args.workdir)
    if args.ownership_rounds:
        ownership_cost(args, args.build, args.workdir)
    if not args.skip_latency:
        latency(args, args.build, args.workdir)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What watching a host costs: the accounts pipeline drains the same outbox
with /metrics scraped every --interval seconds (and /health with it, as a
Prometheus server and a load balancer would) and without any scrape,
interleaved round by round so that both see the same machine. Both runs serve
--http; only the scraping differs. Prints events/s per round, the medians,
the overhead, and what one scrape costs the scraper (page size, latency).

Usage: tools/bench/bench_metrics.py [--build build] [--events N] [--accounts N]
       [--rounds N] [--interval SEC] [--workdir DIR]
Prints figures; asserts nothing.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_accounts import make_outbox  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(build, db, scrape_every):
    """One `run --drain`; returns (seconds, scrapes, scrape latencies, page bytes)."""
    port = free_port()
    env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_LOG_LEVEL="warn")
    cmd = [os.path.join(build, "tools", "cdcflow"), "run", os.path.join(ROOT, "pipelines", "accounts.yaml"),
           "--drain", "--http", "127.0.0.1:%d" % port]
    done = threading.Event()
    lat, size = [], [0]

    def scraper():
        while not done.is_set():
            for path in ("/metrics", "/health"):
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as r:
                        body = r.read()
                    if path == "/metrics":
                        lat.append(time.monotonic() - t0)
                        size[0] = len(body)
                except OSError:
                    pass  # not listening yet, or gone
            done.wait(scrape_every)

    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    th = None
    if scrape_every:
        th = threading.Thread(target=scraper)
        th.start()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    err = p.stderr.read()
    done.set()
    if th:
        th.join()
    if status != 0:
        sys.exit("cdcflow failed: " + err[-2000:])
    # The host's CPU time (all threads): steadier than the wall clock on a
    # shared machine, and it is what the scraping costs the host.
    drain.cpu = ru.ru_utime + ru.ru_stime
    return secs, lat, size[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--accounts", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="cdcflow_bench_metrics_")
    os.makedirs(work, exist_ok=True)
    base = os.path.join(work, "base.db")
    if not os.path.exists(base):
        print("generating %d events over %d accounts..." % (args.events, args.accounts), flush=True)
        make_outbox(base, args.events, args.accounts)
    rates = {"scraped": [], "unscraped": []}
    cpu = {"scraped": [], "unscraped": []}
    lat_all, page = [], 0
    for r in range(args.rounds):
        # Alternate which goes first, so neither always gets the warmer cache.
        order = ("scraped", "unscraped") if r % 2 == 0 else ("unscraped", "scraped")
        for kind in order:
            db = os.path.join(work, "run.db")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            shutil.copy(base, db)
            subprocess.run(["sync"])
            secs, lat, size = drain(args.build, db, args.interval if kind == "scraped" else 0)
            rates[kind].append(args.events / secs)
            cpu[kind].append(drain.cpu)
            lat_all += lat
            page = max(page, size)
            print("round %d %-9s: %9.0f events/s (%.2f s, %.2f s CPU%s)" % (
                r + 1, kind, args.events / secs, secs, drain.cpu, ", %d scrapes" % len(lat) if lat else ""),
                flush=True)
    s, u = statistics.median(rates["scraped"]), statistics.median(rates["unscraped"])
    print("median scraped every %.1f s: %9.0f events/s" % (args.interval, s))
    print("median unscraped         : %9.0f events/s" % u)
    print("overhead (wall)          : %+.1f%%" % ((u - s) / u * 100))
    cs, cu = statistics.median(cpu["scraped"]), statistics.median(cpu["unscraped"])
    print("host CPU, median         : %.3f s scraped, %.3f s unscraped (%+.1f%%)" % (cs, cu, (cs - cu) / cu * 100))
    if lat_all:
        lat_all.sort()
        print("/metrics: %d bytes, %d scrapes, latency p50 %.1f ms, max %.1f ms" % (
            page, len(lat_all), lat_all[len(lat_all) // 2] * 1000, lat_all[-1] * 1000))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What one lease per partition costs a kafka-to-projection host (issue 11).

Each partition a consumer group assigns gets its own checkpoint claim in the
projection database (one cdcflow_owners row; a host renews all of its claims
together every owner_lease_ms / 3, on one thread, in one transaction). For a
topic of P partitions (default 1 and 64) on the mock cluster, one host runs
pipelines/kafka-to-projection.yaml on an empty topic and this prints:

- claim time: seconds from the host's start to the sink's "claimed P
  partitions" line (it includes the group's first assignment, the broker's
  3 s initial rebalance delay on the mock): the difference to P = 1 is what
  P claims add;
- idle CPU: the host's CPU seconds (utime + stime from /proc) over
  --seconds of idling after the assignment, with the shipped lease (15 s)
  and a short one (--short-lease, 3 s): renewals are most of an idle host's
  work; threads and open files: the host's counts then.

Usage: tools/bench/bench_kafka_claims.py [--partitions 1,64] [--seconds 20]
       [--short-lease 3000]
Another build: CDCFLOW_BIN=DIR/tools/cdcflow CDCFLOW_BUILD_ROOT=DIR (as for
the e2e tests).
Prints figures; asserts nothing.
"""
import argparse
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from kafka_helpers import MockKafka  # noqa: E402
from kafka_pipeline import TOPIC, Host, test_pipeline, wait_until  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))


def open_files(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def one(parts, lease_ms, seconds):
    with MockKafka(topics={TOPIC: parts}) as k, tempfile.TemporaryDirectory() as d:
        pipeline = test_pipeline(d, lease_ms=lease_ms, session_ms=10000,
                                 replace=(("heartbeat.interval.ms: 500", "heartbeat.interval.ms: 1000"),))
        env = dict(os.environ, CDCFLOW_KAFKA_BROKERS=k.bootstrap, CDCFLOW_DB=os.path.join(d, "p.db"),
                   CDCFLOW_KAFKA_GROUP="bench-claims")
        t0 = time.monotonic()
        h = Host(pipeline, env)
        try:
            wait_until(lambda: h.has("claimed %d partitions" % parts), 120, "the claims")
            t_claimed = time.monotonic() - t0
            wait_until(lambda: h.has("partitions changed"), 60, "the change")
            time.sleep(1)
            c0, w0 = cpu_seconds(h.pid), time.monotonic()
            time.sleep(seconds)
            c1, w1 = cpu_seconds(h.pid), time.monotonic()
            n, files = threads(h.pid), open_files(h.pid)
        finally:
            h.stop()
        return t_claimed, (c1 - c0) / (w1 - w0), n, files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", default="1,64")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--short-lease", type=int, default=3000)
    args = ap.parse_args()
    for lease in (15000, args.short_lease):
        for p in (int(x) for x in args.partitions.split(",")):
            t, cpu, n, files = one(p, lease, args.seconds)
            print("partitions %3d, owner_lease_ms %5d: start to %d claimed %.2f s; idle CPU %.2f%% of a core "
                  "(%.1f ms/s); %d threads, %d open files" %
                  (p, lease, p, t, cpu * 100, cpu * 1000, n, files),
                  flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmarks kafka_source (issue 11): consuming a topic into the accounts
projection.

N outbox events (default 1,000,000 over 10,000 accounts, all valid) are
published to a mock cluster (cdcflow-kafka-mock, a separate process, 128
partitions so that no partition passes the mock's 5 MiB limit) by
kafka_sink (pipelines/accounts-to-kafka.yaml; not timed). Then, in the same
run and on the same topic:

  1. `cdcflow run --drain pipelines/kafka-to-projection.yaml` (kafka_source,
     deduper, projection_sink into a fresh SQLite file) reads every event and
     commits the projection and each partition's position;
  2. `kcat -C -e -o beginning -t TOPIC > /dev/null` reads the same messages;
  3. `kcat -G GROUP -e TOPIC > /dev/null` reads them as a consumer group
     member, as cdcflow does (a fresh group: it waits for the same first
     assignment).

Prints both rates (events/s, wall clock), CPU seconds and the ratio
cdcflow / kcat. cdcflow's wall clock includes joining the consumer group
(the mock's coordinator waits 3 s for more members before the first
assignment; kcat -C assigns partitions itself): the rate from the
assignment on (the host's "partitions changed" log line to the end) is
printed too, and the whole run is compared with kcat's own group consumer
(3), which waits the same 3 s. With --perf, `cdcflow run` runs under `perf record` and the top
of the report is printed.

Usage: tools/bench/bench_kafka_source.py [--build build] [--events N] [--accounts N]
       [--partitions 128] [--rounds 1] [--workdir DIR] [--perf]
Prints figures; asserts nothing.
"""
import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
from bench_accounts import make_outbox  # noqa: E402

PUBLISH = os.path.join(ROOT, "pipelines", "accounts-to-kafka.yaml")
CONSUME = os.path.join(ROOT, "pipelines", "kafka-to-projection.yaml")
TOPIC = "outbox.event.Account"


def timed(cmd, env=None, stdout=subprocess.DEVNULL):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, text=True)
    err = p.stderr.read()  # until it exits (the log is small)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    p.stderr.close()
    if status != 0:
        sys.exit("%s failed: %s" % (cmd[0], err[-3000:]))
    return secs, ru.ru_utime + ru.ru_stime, err


def stamp(line):
    """A log line's time (ISO 8601, UTC) as seconds since the epoch."""
    t = line.split(" ", 1)[0].rstrip("Z")
    return datetime.datetime.fromisoformat(t).replace(tzinfo=datetime.timezone.utc).timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--perf", action="store_true", help="record cdcflow with perf and print the report's top")
    ap.add_argument("--log", action="store_true", help="print cdcflow's log (without the claims' lines)")
    ap.add_argument("--pipeline", default=CONSUME, help="the consuming pipeline (default: the shipped one)")
    args = ap.parse_args()

    cdcflow = os.path.join(args.build, "tools", "cdcflow")
    mock = os.path.join(args.build, "tools", "cdcflow-kafka-mock")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_kafka_source_")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "outbox.db")
    print("writing %d events (%d accounts) to %s ..." % (args.events, args.accounts, src), flush=True)
    if os.path.exists(src):
        os.remove(src)
    make_outbox(src, args.events, args.accounts)

    m = subprocess.Popen([mock, "--topic", "%s:%d" % (TOPIC, args.partitions)], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(work, "mock.log"), "w"), text=True)
    try:
        bootstrap = m.stdout.readline().strip()
        env = dict(os.environ, CDCFLOW_DB=src, CDCFLOW_KAFKA_BROKERS=bootstrap)
        secs, _, _ = timed([cdcflow, "run", PUBLISH, "--drain"], env)
        print("published with kafka_sink in %.2f s (not timed below)" % secs, flush=True)

        cdc, cdc_assigned, kc, kg = [], [], [], []
        for r in range(args.rounds):
            db = os.path.join(work, "projection-%d.db" % r)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_KAFKA_BROKERS=bootstrap,
                       CDCFLOW_KAFKA_GROUP="bench-%d-%d" % (os.getpid(), r))
            cmd = [cdcflow, "run", args.pipeline, "--drain"]
            if args.perf:
                cmd = ["perf", "record", "-g", "-o", os.path.join(work, "perf.data"), "--"] + cmd
            secs, cpu, err = timed(cmd, env)
            lines = err.splitlines()
            if args.log:
                print("\n".join(l[:300] for l in lines if "owned by this process" not in l))
            assigned = [l for l in lines if "partitions changed" in l]
            done = [l for l in lines if "drained after" in l]
            summary = done[-1].split("drained after", 1)[1].strip() if done else "?"
            cdc.append(args.events / secs)
            from_assign = None
            if assigned and done:
                from_assign = stamp(done[-1]) - stamp(assigned[0])
                cdc_assigned.append(args.events / from_assign)
            print("round %d: cdcflow run --drain: %.2f s, %.0f events/s, %.2f CPU s; from the assignment %s (%s)"
                  % (r + 1, secs, args.events / secs, cpu,
                     "%.2f s, %.0f events/s" % (from_assign, args.events / from_assign) if from_assign else "?",
                     summary), flush=True)
            if args.perf:
                rep = subprocess.run(["perf", "report", "-i", os.path.join(work, "perf.data"), "--no-children",
                                      "--stdio", "--percent-limit", "1.5", "-g", "none"],
                                     capture_output=True, text=True)
                print("\n".join(l for l in rep.stdout.splitlines() if l and not l.startswith("#"))[:6000])

            kcmd = ["kcat", "-C", "-b", bootstrap, "-t", TOPIC, "-e", "-q", "-o", "beginning"]
            secs, cpu, _ = timed(kcmd)
            kc.append(args.events / secs)
            print("round %d: kcat -C -e:          %.2f s, %.0f events/s, %.2f CPU s" %
                  (r + 1, secs, args.events / secs, cpu), flush=True)

            gcmd = ["kcat", "-b", bootstrap, "-G", "bench-kcat-%d-%d" % (os.getpid(), r), "-X",
                    "auto.offset.reset=earliest", "-e", "-q", TOPIC]
            secs, cpu, _ = timed(gcmd)
            kg.append(args.events / secs)
            print("round %d: kcat -G (a group):   %.2f s, %.0f events/s, %.2f CPU s" %
                  (r + 1, secs, args.events / secs, cpu), flush=True)
    finally:
        m.terminate()
        m.wait(30)
        m.stdout.close()
    best_c, best_k = max(cdc), max(kc)
    line = "kafka_source+deduper+projection_sink: %.0f events/s, kcat -C: %.0f events/s, ratio %.2fx" % (
        best_c, best_k, best_c / best_k)
    if cdc_assigned:
        line += "; from the assignment on: %.0f events/s, ratio %.2fx" % (max(cdc_assigned),
                                                                         max(cdc_assigned) / best_k)
    line += "; kcat -G: %.0f events/s, whole runs as group members: ratio %.2fx" % (max(kg), best_c / max(kg))
    print(line + " (best of %d round(s), %d events, %d partitions)" % (args.rounds, args.events, args.partitions))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

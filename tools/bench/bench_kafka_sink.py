#!/usr/bin/env python3
"""Benchmarks kafka_sink (issue 11): publishing an outbox to Kafka.

N all-valid outbox events (default 1,000,000 over 10,000 accounts) are
written to a file first; then, in the same run and against the same mock
cluster (cdcflow-kafka-mock, a separate process, 128 partitions per topic so
that no partition passes the mock's 5 MiB limit):

  1. `cdcflow run --drain pipelines/accounts-to-kafka.yaml` publishes the
     outbox (only the publishing is timed: outbox_source, validator,
     kafka_sink, the checkpoint commits);
  2. `kcat -P` publishes the same messages (key, value, two constant headers:
     what kcat can do) from a file, with the producer settings the sink uses:
     kafka_sink's defaults, then the pipeline's `kafka:` map over them (see
     producer_settings), so that a setting chosen for the pipeline helps or
     hurts both alike.

With --without-validator the pipeline runs without its validator stage
(outbox_source and kafka_sink alone, every other setting as shipped): the
work kcat does, since kcat checks no rules. The sink still checks its own
limits (an event id, envelope text that is UTF-8).

Prints both rates (events/s, wall clock), CPU seconds (cdcflow's peak RSS
too), and the ratio cdcflow / kcat. With --perf, `cdcflow run` runs under `perf stat`.

Usage: tools/bench/bench_kafka_sink.py [--build build] [--events N] [--accounts N]
       [--partitions 128] [--brokers 1] [--rounds 1] [--batch-max-events N] [--without-validator]
       [--workdir DIR] [--perf] [--no-verify]
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
from bench_accounts import make_outbox  # noqa: E402

PIPELINE = os.path.join(ROOT, "pipelines", "accounts-to-kafka.yaml")


def timed(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    err = p.stderr.read()
    p.stderr.close()
    if status != 0:
        sys.exit("%s failed: %s" % (cmd[0], err[-3000:]))
    return secs, ru.ru_utime + ru.ru_stime, err, ru.ru_maxrss  # ru_maxrss: KiB


# kafka_sink's own producer defaults (plugins/kafka_sink/sink_config.cpp,
# producer_properties), without bootstrap.servers and log_level.
SINK_DEFAULTS = {
    "enable.idempotence": "true",
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": "5",
    "compression.codec": "none",
    "message.timeout.ms": "0",
    "enable.gapless.guarantee": "true",
}


def producer_settings(pipeline):
    """The librdkafka properties the pipeline's kafka_sink runs with."""
    import yaml
    with open(pipeline) as f:
        doc = yaml.safe_load(f)
    props = dict(SINK_DEFAULTS)
    for stage in doc["stages"]:
        if stage.get("plugin") == "kafka_sink":
            for k, v in ((stage.get("config") or {}).get("kafka") or {}).items():
                props[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return props


def count(bootstrap, topic):
    """Messages in the topic (high watermarks summed)."""
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-o", "beginning",
                          "-f", "\n"], capture_output=True, text=True, timeout=600)
    return out.stdout.count("\n")


def prepare(src, lines, events, accounts):
    make_outbox(src, events, accounts)
    # kcat's input: the same keys and values, one "key<TAB>value" line each.
    c = sqlite3.connect(src)
    with open(lines, "w") as f:
        for key, value in c.execute("SELECT aggregateid, payload FROM outbox ORDER BY seq"):
            f.write(key + "\t" + value + "\n")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--brokers", type=int, default=1,
                    help="brokers in the mock cluster (an idempotent producer keeps at most 5 requests in "
                         "flight per broker, one partition per request: a batch's last acknowledgements take "
                         "about partitions / (5 x brokers) round trips)")
    ap.add_argument("--batch-max-events", type=int,
                    help="run the pipeline with this settings.batch_max_events instead of the shipped one")
    ap.add_argument("--without-validator", action="store_true",
                    help="run the pipeline without its validator stage: outbox_source and kafka_sink alone, "
                         "the work kcat -P does (no rules checked)")
    ap.add_argument("--workdir")
    ap.add_argument("--perf", action="store_true", help="run cdcflow under perf stat")
    ap.add_argument("--no-verify", action="store_true", help="do not count the messages read back")
    ap.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare[0], args.prepare[1], args.events, args.accounts)
        return

    cdcflow = os.path.join(args.build, "tools", "cdcflow")
    mock = os.path.join(args.build, "tools", "cdcflow-kafka-mock")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_kafka_sink_")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "outbox.db")
    print("writing %d events (%d accounts) to %s ..." % (args.events, args.accounts, src), flush=True)
    if os.path.exists(src):
        os.remove(src)
    lines = os.path.join(work, "messages.tsv")
    # In a child process: a child forked from a large parent reports the
    # parent's pages in its own peak RSS (this one's was ~395 MB whatever
    # cdcflow used).
    subprocess.run([sys.executable, __file__, "--prepare", src, lines, "--events", str(args.events),
                    "--accounts", str(args.accounts)], check=True)

    pipeline = PIPELINE
    if args.batch_max_events or args.without_validator:
        with open(PIPELINE) as f:
            text = f.read()
        if args.batch_max_events:
            text = re.sub(r"batch_max_events: \d+", "batch_max_events: %d" % args.batch_max_events, text)
        if args.without_validator:
            # The stage's whole block: from its "- id:" line to the next one.
            text, n = re.subn(r"\n  - id: validate\n(?:    .*\n|\s*\n)*?(?=  - id:)", "\n", text)
            if n != 1:
                sys.exit("cannot find the validate stage in " + PIPELINE)
        pipeline = os.path.join(work, "pipeline.yaml")
        with open(pipeline, "w") as f:
            f.write(text)

    settings = producer_settings(pipeline)
    print("producer settings (both): " + ", ".join("%s=%s" % kv for kv in sorted(settings.items())), flush=True)
    cdc_rates, kcat_rates = [], []
    for r in range(args.rounds):
        # A fresh cluster per round: the mock keeps every message in memory.
        m = subprocess.Popen([mock, "--brokers", str(args.brokers), "--topic", "outbox.event.Account:%d" % args.partitions,
                              "--topic", "kcat:%d" % args.partitions],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            bootstrap = m.stdout.readline().strip()
            db = os.path.join(work, "run.db")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            shutil.copy(src, db)
            # The copy's dirty pages out first: else the run's first sync of
            # the file (a WAL checkpoint) writes the whole copy, ~60 ms of it.
            subprocess.run(["sync"])
            env = dict(os.environ, CDCFLOW_DB=db, CDCFLOW_KAFKA_BROKERS=bootstrap)
            cmd = [cdcflow, "run", pipeline, "--drain"]
            if args.perf:
                cmd = ["perf", "stat", "-e", "task-clock,context-switches,cpu-migrations,page-faults"] + cmd
            secs, cpu, err, rss = timed(cmd, env)
            if args.perf:
                print("\n".join(l for l in err.splitlines() if not l.startswith("20")))
            cdc_rates.append(args.events / secs)
            print("round %d: cdcflow run --drain: %.2f s, %.0f events/s, %.2f CPU s, peak RSS %.0f MB" %
                  (r + 1, secs, args.events / secs, cpu, rss / 1024.0), flush=True)

            kcmd = ["kcat", "-P", "-b", bootstrap, "-t", "kcat", "-K", "\t", "-H", "id=00000000-0000-4000-8000-000000000000",
                    "-H", "type=MoneyDeposited"]
            for k, v in settings.items():
                kcmd += ["-X", "%s=%s" % (k, v)]
            kcmd += ["-l", lines]
            secs, cpu, _, _ = timed(kcmd)
            kcat_rates.append(args.events / secs)
            print("round %d: kcat -P:                %.2f s, %.0f events/s, %.2f CPU s" %
                  (r + 1, secs, args.events / secs, cpu), flush=True)
            print("round %d: ratio %.2fx, load average %.2f" % (r + 1, cdc_rates[-1] / kcat_rates[-1], os.getloadavg()[0]),
                  flush=True)
            if not args.no_verify:
                print("round %d: read back: %d in outbox.event.Account, %d in kcat" %
                      (r + 1, count(bootstrap, "outbox.event.Account"), count(bootstrap, "kcat")), flush=True)
        finally:
            m.stdin and m.stdin.close()
            m.terminate()
            m.wait(30)
            m.stdout.close()
    best_c, best_k = max(cdc_rates), max(kcat_rates)
    ratios = sorted(c / k for c, k in zip(cdc_rates, kcat_rates))
    print("per-round ratios (same round, same load): %s; median %.2fx" %
          (", ".join("%.2fx" % x for x in ratios), ratios[len(ratios) // 2]))
    print("kafka_sink: %.0f events/s, kcat -P: %.0f events/s, ratio %.2fx (best of %d round(s), %d events, "
          "%d partitions, %d broker(s)%s)" % (best_c, best_k, best_c / best_k, args.rounds, args.events,
                                        args.partitions, args.brokers,
                                        ", without the validator" if args.without_validator else ""))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

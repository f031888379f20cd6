"""kafka_sink end to end (issue 11): pipelines/accounts-to-kafka.yaml on a
real outbox file, publishing into cdcflow-kafka-mock (librdkafka's mock
cluster, a real Kafka protocol endpoint), read back with kcat: Debezium's
outbox-router contract, dead letters and the checkpoint in the outbox file,
no republication after a restart, delivery errors and a broker away retried
without loss or reordering, a permanent failure that stops with nothing
committed past it, kill -9 mid-stream, and two hosts on one outbox."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BIN, SOURCE_ROOT, TempDirTest, env_with, main, run, wait_for  # noqa: E402
from kafka_helpers import MockKafka, kcat_consume  # noqa: E402
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "accounts-to-kafka.yaml")
TOPIC = "outbox.event.Account"
PARTITIONS = 8


def checkpoint(db):
    c = sqlite3.connect(db, timeout=30)
    try:
        row = c.execute("SELECT position FROM cdcflow_checkpoints WHERE name = 'kafka'").fetchone()
        return row[0] if row else 0
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        c.close()


def read(path):
    with open(path) as f:
        return f.read()


def read_topic(bootstrap):
    """Every message: (partition, offset, key, headers dict, value), in
    partition then offset order."""
    out = []
    text = kcat_consume(bootstrap, TOPIC, fmt="%p\t%o\t%k\t%h\t%s\n")
    for line in text.splitlines():
        p, o, k, h, v = line.split("\t", 4)
        headers = dict(kv.split("=", 1) for kv in h.split(",")) if h else {}
        out.append((int(p), int(o), k, headers, v))
    out.sort(key=lambda m: (m[0], m[1]))
    return out


class OutboxKafkaTest(TempDirTest):
    """An outbox file (outbox.db) filled by the accounts generator, published
    by the shipped pipeline (test_deferred_commit.py shares it)."""
    SEED, ACCOUNTS = 7, 200

    def setUp(self):
        super().setUp()
        self.db = self.path("outbox.db")
        c = sqlite3.connect(self.db)
        open_outbox(c)
        c.close()
        self.gen = Generator(seed=self.SEED, accounts=self.ACCOUNTS)

    def add(self, n):
        c = sqlite3.connect(self.db, timeout=30)
        insert(c, self.gen.rows(n))
        c.close()

    def env(self, k):
        return env_with(CDCFLOW_DB=self.db, CDCFLOW_KAFKA_BROKERS=k.bootstrap)


class KafkaSinkTest(OutboxKafkaTest):

    def pipeline(self, **kafka):
        """The shipped pipeline, with extra librdkafka properties."""
        text = read(PIPELINE)
        extra = "".join("        %s: %s\n" % (k.replace("_", "."), v) for k, v in kafka.items())
        text = re.sub(r"( +linger\.ms: \d+\n)", lambda m: m.group(1) + extra, text)
        self.assertTrue(not extra or extra in text)
        return self.write("pipeline.yaml", text)

    def drain(self, k, pipeline=PIPELINE, timeout=60):
        r = run(["run", pipeline, "--drain"], env=self.env(k), timeout=timeout)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return r

    def outbox(self):
        c = sqlite3.connect(self.db, timeout=30)
        rows = c.execute("SELECT seq, id, aggregateid, type, payload FROM outbox ORDER BY seq").fetchall()
        c.close()
        return rows

    def dead_letters(self):
        c = sqlite3.connect(self.db, timeout=30)
        rows = c.execute("SELECT event_id, source_position, stage, reason FROM dead_letters ORDER BY seq").fetchall()
        c.close()
        return rows

    def expected_per_key(self):
        """Per key, the (id, type, payload) of every event not dead-lettered, in outbox order."""
        dead = {int(p) for _, p, _, _ in self.dead_letters()}
        want = {}
        for seq, eid, key, etype, payload in self.outbox():
            if seq not in dead:
                want.setdefault(key, []).append((eid, etype, payload))
        return want

    def published_per_key(self, msgs):
        got, parts = {}, {}
        for p, _, key, headers, value in msgs:
            got.setdefault(key, []).append((headers.get("id"), headers.get("type"), value))
            parts.setdefault(key, set()).add(p)
        return got, parts

    def assert_exactly_published(self, k):
        msgs = read_topic(k.bootstrap)
        got, parts = self.published_per_key(msgs)
        want = self.expected_per_key()
        self.assertEqual(sum(len(v) for v in got.values()), sum(len(v) for v in want.values()))
        self.assertEqual(set(got), set(want))
        for key in want:
            self.assertEqual(got[key], want[key], "key %s: order or content differs" % key)
            self.assertEqual(len(parts[key]), 1, "key %s spread over partitions %s" % (key, parts[key]))
        return msgs

    def assert_at_least_once(self, k):
        """Every event present, per key the order of first occurrences is the
        outbox order, no gap (duplicates allowed: at-least-once)."""
        got, parts = self.published_per_key(read_topic(k.bootstrap))
        want = self.expected_per_key()
        self.assertEqual(set(got), set(want))
        for key, events in want.items():
            # Copies in the outbox are the same event again: compare the
            # distinct events, in first-seen order.
            firsts, distinct = [], []
            for e in got[key]:
                if e not in firsts:
                    firsts.append(e)
            for e in events:
                if e not in distinct:
                    distinct.append(e)
            self.assertEqual(firsts, distinct, "key %s" % key)
            self.assertEqual(len(parts[key]), 1)

    def test_contract_dead_letters_checkpoint_and_restart(self):
        self.add(3000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            r = self.drain(k)
            msgs = self.assert_exactly_published(k)
            # Debezium's router: headers id and type, key = aggregate id,
            # value = the payload bytes as written, spread over partitions.
            self.assertEqual(set(msgs[0][3]), {"id", "type"})
            self.assertGreater(len({m[0] for m in msgs}), PARTITIONS // 2)
            dead = self.dead_letters()
            self.assertGreater(len(dead), 30)  # the generator's invalid share
            self.assertTrue(all(stage == "validate" for _, _, stage, _ in dead))
            self.assertEqual(checkpoint(self.db), 3000)
            self.assertIn("3000 events", r.stderr)
            # A restart publishes nothing again: it resumes after the checkpoint.
            self.drain(k)
            self.assertEqual(len(read_topic(k.bootstrap)), len(msgs))
            # New events: only those.
            self.add(500)
            self.drain(k)
            self.assert_exactly_published(k)
            self.assertEqual(checkpoint(self.db), 3500)

    def test_injected_produce_errors_are_retried_without_loss_or_reordering(self):
        self.add(2000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            k.command("errors Produce " + " ".join(
                ["NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE"] * 5))
            self.drain(k)
            self.assert_exactly_published(k)
            self.assertEqual(checkpoint(self.db), 2000)

    def test_a_broker_away_holds_the_checkpoint_then_everything_arrives_in_order(self):
        self.add(1000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            k.command("broker-down 1")
            # Deliveries time out quickly: the sink produces them again (its
            # own retry rounds), nothing committed meanwhile.
            pipeline = self.pipeline(message_timeout_ms=1000)
            errf = open(self.path("err.txt"), "w")
            p = subprocess.Popen([BIN, "run", pipeline, "--drain"], env=self.env(k), stdout=subprocess.DEVNULL,
                                 stderr=errf)
            try:
                wait_for(lambda: "producing them again" in read(self.path("err.txt")), timeout=20,
                         what="a retry round")
                self.assertIsNone(p.poll())
                self.assertEqual(checkpoint(self.db), 0)
                k.command("broker-up 1")
                p.wait(40)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                errf.close()
            err = read(self.path("err.txt"))
            self.assertEqual(p.returncode, 0, err[-3000:])
            self.assertEqual(checkpoint(self.db), 1000)
            self.assert_at_least_once(k)

    def test_a_permanent_failure_stops_with_a_clear_error_and_nothing_committed_past_it(self):
        self.add(100)
        big = ("b1g-0000-4000-8000-000000000000", "Account", "acc-big", "AccountCreated",
               '{"owner": "%s", "currency": "EUR"}' % ("x" * 3000), 1700000000000000)
        c = sqlite3.connect(self.db)
        insert(c, [big])
        c.close()
        self.add(100)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            r = run(["run", self.pipeline(message_max_bytes=2000), "--drain"], env=self.env(k), timeout=60)
            self.assertNoCrash(r)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("event 'b1g-0000-4000-8000-000000000000' at position 101", r.stderr)
            self.assertIn("MSG_SIZE_TOO_LARGE", r.stderr)
            self.assertLess(checkpoint(self.db), 101)
            # A restart without the cause publishes everything from the checkpoint.
            self.drain(k)
            self.assertEqual(checkpoint(self.db), 201)
            self.assert_at_least_once(k)

    def test_kill_9_mid_stream_then_restart_loses_nothing(self):
        self.add(20000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            # Small batches, so that the kill lands between commits.
            text = re.sub(r"batch_max_events: \d+", "batch_max_events: 512", read(PIPELINE))
            text = re.sub(r"batch_size: \d+", "batch_size: 256", text)
            self.assertIn("batch_max_events: 512", text)
            pipeline = self.write("small.yaml", text)
            p = subprocess.Popen([BIN, "run", pipeline], env=self.env(k), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: checkpoint(self.db) > 2000, timeout=30, what="a checkpoint mid-stream")
            finally:
                p.send_signal(signal.SIGKILL)
                p.wait()
            at_kill = checkpoint(self.db)
            self.assertLess(at_kill, 20000, "the kill came too late to be mid-stream")
            self.drain(k, pipeline)
            self.assertEqual(checkpoint(self.db), 20000)
            self.assert_at_least_once(k)

    def test_two_hosts_one_publishes_the_other_waits(self):
        self.add(1000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            ea, eb = open(self.path("a.txt"), "w"), open(self.path("b.txt"), "w")
            a = subprocess.Popen([BIN, "run", PIPELINE], env=self.env(k), stdout=subprocess.DEVNULL, stderr=ea)
            b = None
            try:
                wait_for(lambda: checkpoint(self.db) == 1000, timeout=20, what="host A's publication")
                b = subprocess.Popen([BIN, "run", PIPELINE], env=self.env(k), stdout=subprocess.DEVNULL,
                                     stderr=eb)
                wait_for(lambda: "standby: checkpoint 'kafka'" in read(self.path("b.txt")), timeout=20,
                         what="host B waiting as a standby")
                self.add(300)
                wait_for(lambda: checkpoint(self.db) == 1300, timeout=20, what="host A publishing more")
                self.assertIsNone(b.poll())
                self.assert_exactly_published(k)  # nothing twice: B published nothing
                # A stops: B takes over and publishes what follows.
                a.send_signal(signal.SIGTERM)
                self.assertEqual(a.wait(30), 0)
                self.add(200)
                wait_for(lambda: checkpoint(self.db) == 1500, timeout=30, what="host B taking over")
                self.assert_exactly_published(k)
            finally:
                for p in (a, b):
                    if p and p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                        try:
                            p.wait(20)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            p.wait()
                ea.close()
                eb.close()


if __name__ == "__main__":
    main()

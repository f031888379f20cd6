"""kafka_source end to end: pipelines/kafka-to-projection.yaml run by the real
cdcflow binary against the mock cluster (cdcflow-kafka-mock), into a real
SQLite projection, checked against the independent accounts model
(accounts_model.py): a drain builds exactly the model's projection (copies
of an event in its partition applied once), a restart applies nothing
twice, kill -9 mid-stream loses and repeats nothing, and a message without
its id header becomes a dead letter with a clear reason."""
import os
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TempDirTest, env_with, main, run, start, wait_for  # noqa: E402
from kafka_events import Producer, partition_of, send_rows  # noqa: E402
from kafka_helpers import MockKafka  # noqa: E402
from kafka_pipeline import TOPIC, model_of, positions, test_pipeline  # noqa: E402
from outbox_gen import Generator  # noqa: E402


class KafkaSourceTest(TempDirTest):
    PARTITIONS = 8

    def setUp(self):
        super().setUp()
        self.kafka = MockKafka(topics={TOPIC: self.PARTITIONS})
        self.db = self.path("projection.db")
        self.pipeline = test_pipeline(self.dir)
        self.env = env_with(CDCFLOW_DB=self.db, CDCFLOW_KAFKA_BROKERS=self.kafka.bootstrap,
                            CDCFLOW_KAFKA_GROUP="g-" + self.id().rsplit(".", 1)[-1])

    def tearDown(self):
        self.kafka.close()
        super().tearDown()

    def produce(self, rows):
        with Producer(self.kafka.bootstrap) as p:
            send_rows(p, rows, self.PARTITIONS)

    def drain(self):
        r = run(["run", self.pipeline, "--drain"], env=self.env, timeout=120)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return r

    def assert_matches(self, model):
        c = sqlite3.connect(self.db, timeout=30)
        got = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        want = model.rows()
        self.assertEqual(len(got), len(want))
        diff = [k for k in want if got.get(k) != want[k]]
        self.assertEqual(diff[:5], [], "first differing accounts: %r" % [(k, got.get(k), want[k]) for k in diff[:5]])
        ids = [r[0] for r in c.execute("SELECT event_id FROM dead_letters")]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual(set(ids), set(model.rejected))
        c.close()


class Drain(KafkaSourceTest):
    def test_drain_builds_the_model_and_a_restart_applies_nothing_twice(self):
        gen = Generator(seed=11, accounts=300)
        rows = gen.rows(12_000)
        self.produce(rows)
        model = model_of(rows)
        self.assertGreater(model.duplicates, 300)  # copies in their partition, near and far

        r = self.drain()
        self.assertIn("12000 events", r.stdout + r.stderr)
        self.assert_matches(model)
        self.assertEqual(positions(self.db), 12_000)  # every partition at its end

        # Again: every position is stored, nothing is read twice.
        r = self.drain()
        self.assertIn("0 events", r.stdout + r.stderr)
        self.assert_matches(model)

        # More events later: only those are read (and copies of old ones are
        # recognised: the deduper's window was rebuilt by the replay).
        more = gen.rows(3_000) + rows[100:150]  # the last 50: copies from long ago
        self.produce(more)
        r = self.drain()
        self.assertIn("3050 events", r.stdout + r.stderr)
        self.assert_matches(model_of(rows + more))

    def test_a_message_without_its_id_header_is_a_dead_letter(self):
        with Producer(self.kafka.bootstrap) as p:
            key = b"acc-1"
            part = partition_of(key, self.PARTITIONS)
            p.send(TOPIC, b'{"owner": "Ada", "currency": "EUR"}', key=key, partition=part,
                   headers=[("id", b"e-1"), ("type", b"AccountCreated")])
            p.send(TOPIC, b'{"amount": "5.00"}', key=key, partition=part, headers=[("type", b"MoneyDeposited")])
            p.send(TOPIC, b'{"amount": "7.00"}', key=key, partition=part,
                   headers=[("id", b"e-3"), ("type", b"MoneyDeposited")])
        r = self.drain()
        self.assertIn("messages without the \"id\" header", r.stderr)
        c = sqlite3.connect(self.db)
        self.assertEqual(c.execute("SELECT balance, version FROM accounts WHERE account_id='acc-1'").fetchone(),
                         ("7.00", 2))
        letters = c.execute("SELECT event_id, type, reason, source_position FROM dead_letters").fetchall()
        self.assertEqual(len(letters), 1, letters)
        self.assertEqual(letters[0][:2], ("", "MoneyDeposited"))
        self.assertIn("event id is empty", letters[0][2])
        self.assertEqual(letters[0][3], "%s/%d@1" % (TOPIC, part))
        c.close()


class LoadChecks(KafkaSourceTest):
    def test_a_lease_and_replay_that_could_outlast_the_rebalance_timeout_are_refused_at_load(self):
        # The host tells the source settings.owner_lease_ms (ABI 7): a claim
        # wait plus a replay above half of max.poll.interval.ms is refused by
        # `validate` and `run` (exit 3, invalid pipeline), naming all three.
        long_lease = test_pipeline(self.dir, lease_ms=200000)
        for cmd in (["validate", long_lease], ["run", long_lease, "--drain"]):
            r = run(cmd, env=self.env, timeout=60)
            self.assertNoCrash(r)
            self.assertEqual(r.returncode, 3, r.stderr[-2000:])
            last = r.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"kafka-to-projection\.yaml:\d+:\d+: stage 'kafka' \(plugin 'kafka_source'\): "
                                   r"replay_timeout_ms: 30000 plus settings\.owner_lease_ms 200000 must stay well "
                                   r"under the consumer's max\.poll\.interval\.ms \(300000, librdkafka's default\)")
        # Room made under kafka: (or a shorter lease): valid.
        roomy = test_pipeline(self.dir, lease_ms=200000, replace=(
            ("session.timeout.ms: 4000", "session.timeout.ms: 4000\n        max.poll.interval.ms: 500000"),))
        r = run(["validate", roomy], env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        r = run(["validate", test_pipeline(self.dir, lease_ms=100000)], env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])


class Crashes(KafkaSourceTest):
    def test_kill_9_mid_stream_then_restart_gives_the_exact_projection(self):
        # A killed member stays in the group until its session times out: a
        # short one (not below the mock's 3 s wait for a new group's members),
        # so that each restart is assigned the partitions soon.
        self.pipeline = test_pipeline(self.dir, session_ms=3000)
        gen = Generator(seed=29, accounts=500)
        rows = gen.rows(50_000)
        self.produce(rows[:15_000])

        # The rest is published while hosts are killed and restarted: each
        # kill lands while events stream in.
        def writer():
            with Producer(self.kafka.bootstrap) as p:
                for i in range(15_000, len(rows), 500):
                    send_rows(p, rows[i:i + 500], self.PARTITIONS)
                    time.sleep(0.25)  # 2,000 events/s: the hosts keep up, then wait for more
        feed = threading.Thread(target=writer)
        feed.start()
        kills = 0
        try:
            for target in (8_000, 16_000, 24_000):
                proc = start(["run", self.pipeline], env=self.env)
                try:
                    wait_for(lambda: positions(self.db) >= target or proc.poll() is not None, timeout=60,
                             what="%d events committed" % target)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        kills += 1
                    _, err = proc.communicate()
                self.assertEqual(proc.returncode, -9, err[-2000:])
        finally:
            feed.join()
        self.assertEqual(kills, 3)
        self.assertLess(positions(self.db), 50_000)  # the last kill was mid-stream
        self.drain()
        self.assert_matches(model_of(rows))
        self.assertEqual(positions(self.db), 50_000)


if __name__ == "__main__":
    main()

"""Deferred sink commits end to end (ABI 6, issue 11): kafka_sink's process
returns before Kafka acknowledged a batch, the host keeps the batch until
settle reports it durable. Here the mock's acknowledgements are slow (`rtt`)
or stop (a broker down) while batches are accepted; the process is killed
with SIGKILL or stopped, and the outbox file's checkpoint must never pass an
event that is not in the topic; the restart publishes the rest: every
event at least once, per key in outbox order."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BIN, SOURCE_ROOT, main, run, wait_for  # noqa: E402
from kafka_helpers import MockKafka  # noqa: E402
from test_kafka_sink import TOPIC, OutboxKafkaTest, checkpoint, read, read_topic  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "accounts-to-kafka.yaml")
PARTITIONS = 8


class DeferredCommitTest(OutboxKafkaTest):
    SEED, ACCOUNTS = 11, 100

    def small_batches(self):
        """The shipped pipeline with small batches: many accepted batches
        wait for their acknowledgements at any moment."""
        text = re.sub(r"batch_max_events: \d+", "batch_max_events: 256", read(PIPELINE))
        text = re.sub(r"batch_size: \d+", "batch_size: 128", text)
        self.assertIn("batch_max_events: 256", text)
        return self.write("small.yaml", text)

    def rows(self):
        c = sqlite3.connect(self.db, timeout=30)
        out = c.execute("SELECT seq, id, aggregateid FROM outbox ORDER BY seq").fetchall()
        dead = {int(p) for (p,) in c.execute("SELECT source_position FROM dead_letters")}
        c.close()
        return out, dead

    def assert_checkpoint_only_covers_published(self, k, at):
        """Every event up to the checkpoint `at` that is not a dead letter is
        in the topic (the checkpoint never passes an unacknowledged event)."""
        ids = {m[3].get("id") for m in read_topic(k.bootstrap)}
        rows, dead = self.rows()
        missing = [seq for seq, eid, _ in rows if seq <= at and seq not in dead and eid not in ids]
        self.assertEqual(missing, [], "checkpoint %d passes events that are not in the topic" % at)

    def assert_at_least_once_in_order(self, k):
        """Every event that is not a dead letter is in the topic, and per key
        the first occurrences are in outbox order."""
        got = {}
        for _, _, key, headers, _ in read_topic(k.bootstrap):
            got.setdefault(key, []).append(headers.get("id"))
        rows, dead = self.rows()
        want = {}
        for seq, eid, key in rows:
            if seq not in dead and eid not in want.setdefault(key, []):
                want[key].append(eid)
        for key, ids in want.items():
            firsts = []
            for eid in got.get(key, []):
                if eid not in firsts:
                    firsts.append(eid)
            self.assertEqual(firsts, ids, "key %s: missing events or out of order" % key)

    def host(self, k, pipeline):
        """`cdcflow run PIPELINE` in the background, its stderr in err.txt;
        killed at the test's end if still running."""
        errf = open(self.path("err.txt"), "w")
        self.addCleanup(errf.close)
        p = subprocess.Popen([BIN, "run", pipeline], env=self.env(k), stdout=subprocess.DEVNULL, stderr=errf)

        def reap():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.addCleanup(reap)
        return p

    def kill_9(self, p):
        p.send_signal(signal.SIGKILL)
        p.wait()

    def restart_publishes_the_rest(self, k, pipeline, total):
        """A restart (--drain) republishes from the checkpoint: the topic then
        holds every event at least once, per key in outbox order."""
        r = run(["run", pipeline, "--drain"], env=self.env(k), timeout=60)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertEqual(checkpoint(self.db), total)
        self.assert_at_least_once_in_order(k)

    def test_kill_9_while_batches_wait_for_slow_acknowledgements(self):
        self.add(6000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            k.command("rtt 1 150")  # every acknowledgement 150 ms late
            pipeline = self.small_batches()
            p = self.host(k, pipeline)
            wait_for(lambda: checkpoint(self.db) > 500, timeout=30, what="a checkpoint mid-stream")
            # More batches accepted meanwhile (each waits >= 150 ms for its
            # acknowledgements): the kill lands while some still wait.
            time.sleep(0.3)
            self.kill_9(p)
            at_kill = checkpoint(self.db)
            self.assertLess(at_kill, 6000, "the kill came too late to be mid-stream")
            k.command("rtt 1 0")
            self.assert_checkpoint_only_covers_published(k, at_kill)
            self.restart_publishes_the_rest(k, pipeline, 6000)

    def test_a_broker_down_mid_stream_commits_nothing_past_the_last_acknowledged_event(self):
        self.add(3000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            pipeline = self.small_batches()
            p = self.host(k, pipeline)
            wait_for(lambda: checkpoint(self.db) == 3000, timeout=30, what="the first events published")
            k.command("broker-down 1")
            self.add(3000)  # accepted by the sink, never acknowledged while the broker is down
            time.sleep(1.5)
            held = checkpoint(self.db)
            time.sleep(1.0)
            self.assertEqual(checkpoint(self.db), held, "the checkpoint moved with the broker down")
            self.assertLess(held, 6000)
            self.assertIsNone(p.poll())
            # Nothing the killed process held can land any more: what the
            # checkpoint covers must be in the topic.
            self.kill_9(p)
            k.command("broker-up 1")
            self.assert_checkpoint_only_covers_published(k, checkpoint(self.db))
            self.restart_publishes_the_rest(k, pipeline, 6000)

    def test_a_stop_while_acknowledgements_are_slow_commits_what_arrives_and_exits_cleanly(self):
        """Acknowledgements 400 ms late (within kafka_sink's 5 s grace, far
        past one settle call's wait): the batches accepted before SIGTERM
        are committed, none abandoned; the restart publishes the rest."""
        self.add(4000)
        with MockKafka(topics={TOPIC: PARTITIONS}) as k:
            k.command("rtt 1 400")
            pipeline = self.small_batches()
            p = self.host(k, pipeline)
            wait_for(lambda: checkpoint(self.db) > 0, timeout=30, what="a first checkpoint")
            time.sleep(0.5)  # more batches accepted, their acknowledgements on their way
            at_term = checkpoint(self.db)
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(30), 0, read(self.path("err.txt"))[-3000:])
            at_stop = checkpoint(self.db)
            self.assertGreater(at_stop, at_term, "nothing acknowledged during the grace was committed")
            self.assertNotIn("not committed", read(self.path("err.txt")))
            k.command("rtt 1 0")
            self.assert_checkpoint_only_covers_published(k, at_stop)
            self.restart_publishes_the_rest(k, pipeline, 4000)

if __name__ == "__main__":
    main()

"""Three kafka-to-projection hosts in one consumer group, sharing one
projection database, over 64 partitions (more than any fixed-size array in
the runtime) while the stream is still being written: one is killed with
SIGKILL mid-stream, one is frozen with SIGSTOP past its session timeout and
its ownership lease, so that the others take its partitions over, and then
resumed. Its late commits are fenced (it steps down and says so), a fourth
host with --drain finishes once every partition's committed position is at
the partition's end, whichever host committed it, and the projection equals
the in-test model: nothing twice, nothing missing."""
import os
import signal
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TempDirTest, env_with, main  # noqa: E402
from kafka_events import Producer, send_rows  # noqa: E402
from kafka_helpers import MockKafka  # noqa: E402
from kafka_pipeline import TOPIC, Host, model_of, positions, test_pipeline, wait_until  # noqa: E402
from outbox_gen import Generator  # noqa: E402

PARTITIONS = 64
SESSION_MS = 3000
LEASE_MS = 2000


def owners(db):
    """partition -> pid of its live (unreleased) owner, from cdcflow_owners:
    the database, not the hosts' logs (which rate-limit a burst of claims)."""
    try:
        c = sqlite3.connect(db, timeout=30)
        try:
            return dict(c.execute("SELECT \"partition\", pid FROM cdcflow_owners WHERE released = 0"))
        finally:
            c.close()
    except sqlite3.OperationalError:
        return {}  # not created yet


class Group(TempDirTest):
    def setUp(self):
        super().setUp()
        self.kafka = MockKafka(topics={TOPIC: PARTITIONS})
        self.db = self.path("projection.db")
        self.pipeline = test_pipeline(self.dir, lease_ms=LEASE_MS, session_ms=SESSION_MS)
        self.env = env_with(CDCFLOW_DB=self.db, CDCFLOW_KAFKA_BROKERS=self.kafka.bootstrap,
                            CDCFLOW_KAFKA_GROUP="accounts-group")
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.kill()
            if os.environ.get("CDCFLOW_TEST_LOGS"):  # to see what each host went through
                sys.stderr.write("---- host pid %d\n%s\n" % (h.pid, h.log()))
        self.kafka.close()
        super().tearDown()

    def host(self, *args):
        h = Host(self.pipeline, self.env, args)
        self.hosts.append(h)
        return h

    def test_kill_and_freeze_hosts_mid_stream(self):
        gen = Generator(seed=64, accounts=2000)
        first = gen.rows(30_000)
        rest = gen.rows(30_000)
        with Producer(self.kafka.bootstrap) as p:
            send_rows(p, first, PARTITIONS)

        # The rest keeps coming while hosts die and freeze.
        def writer():
            with Producer(self.kafka.bootstrap) as p:
                for i in range(0, len(rest), 1000):
                    send_rows(p, rest[i:i + 1000], PARTITIONS)
                    time.sleep(0.25)
        feed = threading.Thread(target=writer)

        a, b, c = self.host(), self.host(), self.host()
        claimed = lambda h: h.has(" partitions of checkpoint ")  # noqa: E731
        wait_until(lambda: all(claimed(h) for h in (a, b, c)), 30, "each host to claim partitions")
        feed.start()

        # kill -9 one host mid-stream: its partitions move to the others, whose
        # sinks take the claims over at once (its process is gone).
        wait_until(lambda: positions(self.db) >= 35_000, 30, "35,000 events committed")
        self.assertIn(a.pid, owners(self.db).values())
        self.assertEqual(a.kill(), -signal.SIGKILL)
        self.assertLess(positions(self.db), 60_000)
        wait_until(lambda: a.pid not in owners(self.db).values(), 30, "the killed host's partitions taken over")

        # Freeze another past its session timeout and its lease: the group
        # gives its partitions to the third, whose sink takes each claim over
        # once it went LEASE_MS without a renewal. A host frozen inside a
        # commit holds SQLite's write lock and nobody can take anything
        # over until it resumes: then it is let go and frozen again.
        for attempt in range(5):
            wait_until(lambda: b.pid in owners(self.db).values(), 30, "the host to be frozen to own partitions")
            b.signal(signal.SIGSTOP)
            held = sorted(p for p, pid in owners(self.db).items() if pid == b.pid)
            try:
                # Frozen, it cannot release anything: a partition of it
                # changing hands is a takeover from a live, silent owner.
                # (The sink claims one partition after another, each after
                # the lease: waiting for the first is enough here.)
                wait_until(lambda: any(owners(self.db).get(p) == c.pid for p in held),
                           SESSION_MS / 1000 + LEASE_MS / 1000 + 10, "a frozen host's partition taken over")
                break
            except AssertionError:
                if attempt == 4:
                    raise AssertionError("the frozen host's partitions were never taken over; logs:\n" +
                                         b.log()[-3000:] + "\n----\n" + c.log()[-3000:])
                b.signal(signal.SIGCONT)
                time.sleep(0.3)
        self.assertTrue(held)
        mark = len(b.lines)
        b.signal(signal.SIGCONT)
        # Awake, it finds its claims gone: it commits nothing more and steps
        # down, then joins the group again with fresh state.
        since = lambda text: any(text in line for line in b.lines[mark:])  # noqa: E731
        wait_until(lambda: since("stepping down to standby"), 30, "the resumed host to step down")
        self.assertTrue(since("commits nothing more"), b.log()[-3000:])

        feed.join()
        # A fourth host drains: it exits once every partition is committed
        # to its end, by whichever host.
        d = self.host("--drain")
        self.assertEqual(d.wait(60), 0, d.log()[-3000:])
        self.assertEqual(positions(self.db), 60_000)
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        self.assertEqual(c.stop(), 0, c.log()[-3000:])

        model = model_of(first + rest)
        conn = sqlite3.connect(self.db)
        got = {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        want = model.rows()
        diff = [k for k in want if got.get(k) != want[k]]
        self.assertEqual(diff[:5], [], "first differing accounts: %r" % [(k, got.get(k), want[k]) for k in diff[:5]])
        self.assertEqual(len(got), len(want))
        ids = [r[0] for r in conn.execute("SELECT event_id FROM dead_letters")]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual(set(ids), set(model.rejected))
        parts = conn.execute("SELECT COUNT(*) FROM cdcflow_checkpoints WHERE name = 'accounts'").fetchone()[0]
        self.assertEqual(parts, PARTITIONS)
        conn.close()


if __name__ == "__main__":
    main()

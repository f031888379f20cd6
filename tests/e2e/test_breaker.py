"""Breakers and poison events on the real binary and real SQLite files: the
accounts pipeline while another process holds the projection database's
write lock (/health goes to 503 with the sink's breaker open, back to 200
after, nothing lost or doubled), SIGTERM while the breaker is open (exit 0,
the restart completes the projection), and a poison event in the middle of
a batch (the only dead letter, with the stage's message)."""
import json
import os
import signal
import sqlite3
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from accounts_model import Model, validate  # noqa: E402
from helpers import (SOURCE_ROOT, TEST_PLUGINS, TempDirTest, env_with, free_port, main, run, start,  # noqa: E402
                     wait_for)
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
SINK = "project"
DB_LINE = "      database: ${CDCFLOW_DB:-demo/accounts.db}\n"


def get_health(port):
    """(status code, JSON) of /health; (None, None) while nothing answers."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return None, None


def sink_breaker(port):
    code, body = get_health(port)
    if body is None:
        return code, None
    stage = [s for s in body["stages"] if s["id"] == SINK]
    return code, stage[0]["breaker"] if stage else None


def checkpoint(db):
    try:
        c = sqlite3.connect(db, timeout=30)
        try:
            return c.execute("SELECT MAX(position) FROM cdcflow_checkpoints").fetchone()[0] or 0
        finally:
            c.close()
    except sqlite3.OperationalError:
        return 0


class Breakers(TempDirTest):
    def setUp(self):
        super().setUp()
        # The outbox and the read model in two files: the lock taken on the
        # read model leaves the application (and the source) free to go on.
        self.outbox = self.path("outbox.db")
        self.proj = self.path("proj.db")
        c = sqlite3.connect(self.outbox)
        open_outbox(c)
        c.close()
        c = sqlite3.connect(self.proj)
        c.execute("PRAGMA journal_mode=WAL")
        c.close()
        self.env = env_with(CDCFLOW_DB=self.outbox, PROJ_DB=self.proj)
        self.gen = Generator(seed=91, accounts=150)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        super().tearDown()

    def pipeline(self, cooldown_ms, extra_stage="", shutdown_ms=10000):
        with open(PIPELINE) as f:
            text = f.read()
        first = text.index(DB_LINE)
        second = text.index(DB_LINE, first + 1)
        text = text[:second] + "      database: ${PROJ_DB}\n" + text[second + len(DB_LINE):]
        # A short busy timeout: the sink answers "locked" quickly, so the
        # breaker (2 failures, a test-sized cool-down) opens at once.
        text = text.replace("      synchronous: normal", "      synchronous: normal\n      busy_timeout_ms: 50")
        text = text.replace("    plugin: projection_sink\n",
                            "    plugin: projection_sink\n"
                            "    retry: {backoff_ms: 20, max_backoff_ms: 100}\n"
                            "    breaker: {failures: 2, cooldown_ms: %d}\n" % cooldown_ms)
        text = text.replace("  shutdown_timeout_ms: 10000", "  shutdown_timeout_ms: %d" % shutdown_ms)
        if extra_stage:
            text = text.replace("  - id: project\n", extra_stage + "  - id: project\n")
            text = text.replace("stages:\n", "plugin_path: [%s]\n\nstages:\n" % json.dumps(TEST_PLUGINS), 1)
        return self.write("p.yaml", text)

    def add(self, n):
        c = sqlite3.connect(self.outbox, timeout=30)
        insert(c, self.gen.rows(n))
        c.close()

    def host(self, pipeline, port):
        p = start(["run", pipeline, "--http", "127.0.0.1:%d" % port], env=self.env)
        self.procs.append(p)
        return p

    def assert_projection(self, poison=None):
        """The read model equals the model's replay of the outbox; `poison`
        (offset, stage): that event is dead-lettered by that stage instead."""
        o = sqlite3.connect(self.outbox)
        m = Model()
        for seq, *row in o.execute("SELECT seq, id, aggregatetype, aggregateid, type, payload, timestamp "
                                   "FROM outbox ORDER BY seq"):
            if poison and seq == poison[0]:
                m.seen.add(row[0])
                m.rejected[row[0]] = poison[1]
                continue
            m.apply_row(*row)
        o.close()
        p = sqlite3.connect(self.proj)
        got = {r[0]: tuple(r[1:]) for r in p.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        self.assertEqual(got, m.rows())
        letters = list(p.execute("SELECT event_id, stage, reason, source_position FROM dead_letters"))
        ids = [e for e, *_ in letters]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual({e: s for e, s, *_ in letters}, m.rejected)
        p.close()
        return letters

    def test_a_locked_read_model_opens_the_breaker_and_health_says_so_until_it_is_released(self):
        self.add(1000)
        port = free_port()
        proc = self.host(self.pipeline(cooldown_ms=500), port)
        wait_for(lambda: checkpoint(self.proj) == 1000 and get_health(port)[0] == 200, timeout=25,
                 what="the first 1000 events committed, /health 200")
        locker = sqlite3.connect(self.proj, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        try:
            self.add(1000)
            wait_for(lambda: sink_breaker(port) == (503, "open"), timeout=10,
                     what="/health 503 with the sink's breaker open")
            code, body = get_health(port)
            self.assertFalse(body["healthy"])
            stage = [s for s in body["stages"] if s["id"] == SINK][0]
            self.assertGreaterEqual(stage["breaker_trips"], 1)
            self.assertIn("locked", stage["last_error"])
            self.assertEqual(checkpoint(self.proj), 1000)  # nothing past the lock
            time.sleep(max(0.0, 4.0 - (time.monotonic() - locked_at)))
            self.assertIsNone(proc.poll(), "a transient failure must not stop the pipeline")
        finally:
            locker.execute("COMMIT")
            locker.close()
        wait_for(lambda: checkpoint(self.proj) == 2000 and sink_breaker(port) == (200, "closed"), timeout=15,
                 what="the breaker closed again and everything committed")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        self.assertEqual(proc.returncode, 0, err[-3000:])
        self.assertIn("breaker open after 2 consecutive failures of process", err)
        self.assertIn("breaker closed: process succeeded again", err)
        self.assert_projection()

    def test_sigterm_while_the_breaker_is_open_exits_0_and_a_restart_completes(self):
        self.add(1000)
        port = free_port()
        # An hour-long cool-down: only the stop can end it; a shutdown
        # timeout that it must not outlast (past it the exit code is 4). It
        # leaves room for the sink's release of its claim, which meets the
        # same lock (its busy timeout is a third of owner_lease_ms: 3.3 s).
        pipeline = self.pipeline(cooldown_ms=3600000, shutdown_ms=6000)
        proc = self.host(pipeline, port)
        wait_for(lambda: checkpoint(self.proj) == 1000, timeout=25, what="the first 1000 events committed")
        locker = sqlite3.connect(self.proj, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            self.add(1000)
            wait_for(lambda: sink_breaker(port) == (503, "open"), timeout=10, what="the sink's breaker open")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        finally:
            locker.execute("COMMIT")
            locker.close()
        self.assertEqual(proc.returncode, 0, err[-3000:])
        self.assertRegex(err, r"(?im)^.*warn.*project.*stopped while the breaker was open for process "
                              r"\(.*locked.*\): what this stage held is not committed; it is replayed from the "
                              r"checkpoint on the next start")
        self.assertEqual(checkpoint(self.proj), 1000)
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertEqual(checkpoint(self.proj), 2000)
        self.assert_projection()

    def test_a_poison_event_in_the_middle_of_a_batch_is_the_only_one_dead_lettered_for_it(self):
        rows = self.gen.rows(2000)
        # A valid, first-seen event around the middle of the first batch
        # (1024 events), so that no other stage had a verdict on it.
        seen = set()
        poison = None
        for seq, row in enumerate(rows, start=1):
            if seq >= 500 and row[0] not in seen and not validate(*row[1:5]) and poison is None:
                poison = seq
            seen.add(row[0])
        c = sqlite3.connect(self.outbox)
        insert(c, rows)
        c.close()
        stage = "  - id: pass\n    plugin: passthrough\n    config: {throw_at: %d}\n\n" % poison
        r = run(["run", self.pipeline(cooldown_ms=500, extra_stage=stage), "--drain"], env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        letters = self.assert_projection(poison=(poison, "pass"))
        mine = [(e, s, reason, pos) for e, s, reason, pos in letters if s == "pass"]
        self.assertEqual(len(mine), 1)
        self.assertEqual(mine[0][2], "injected exception at offset %d" % poison)
        self.assertEqual(mine[0][3], str(poison))
        self.assertIn("poison event: offset %d" % poison, r.stderr)
        self.assertEqual(checkpoint(self.proj), 2000)


if __name__ == "__main__":
    main()

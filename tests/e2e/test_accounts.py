"""The accounts pipeline (pipelines/accounts.yaml) end to end on real SQLite
files, checked against an independent model of the rules (accounts_model.py):
exactly-once effect under kill -9, duplicates across restarts, hostile
input, and clear start-up errors."""
import os
import random
import re
import signal
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(__file__))
from accounts_model import replay  # noqa: E402
from helpers import (SOURCE_ROOT, TempDirTest, checkpoint, env_with, kill_9_at, main, run, start,  # noqa: E402
                     wait_for, write_in_background)
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
VALIDATOR_STAGE = "validate"
SINK_STAGE = "project"


class AccountsTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("accounts.db")
        self.env = env_with(CDCFLOW_DB=self.db)
        conn = sqlite3.connect(self.db)
        open_outbox(conn)
        conn.close()

    def conn(self):
        return sqlite3.connect(self.db, timeout=30)

    def drain(self):
        r = run(["run", PIPELINE, "--drain"], env=self.env, timeout=600)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return r

    def assert_matches_model(self):
        c = self.conn()
        model = replay(c)
        got = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        want = model.rows()
        self.assertEqual(len(got), len(want))
        diff = [k for k in want if got.get(k) != want[k]]
        self.assertEqual(diff[:5], [], "first differing accounts: %r" % [(k, got.get(k), want[k]) for k in diff[:5]])
        letters = list(c.execute("SELECT event_id, stage FROM dead_letters"))
        ids = [e for e, _ in letters]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual(set(ids), set(model.rejected))
        stage_of = {"validate": VALIDATOR_STAGE, "project": SINK_STAGE}
        wrong = [(e, s) for e, s in letters if s != stage_of[model.rejected[e]]]
        self.assertEqual(wrong[:5], [])
        c.close()
        return model

    def kill_while_writing(self, start_host, gen, first, then, kills, seed, timeout=120):
        """`first` events of `gen` in the outbox, then `then` more written by
        the application (write_in_background) while hosts from start_host()
        are killed at `kills` random checkpoints between 2.5% and 95% of all
        (kill_9_at). Returns each run's (return code, stderr)."""
        c = self.conn()
        insert(c, gen.rows(first))
        rest = gen.rows(then)
        c.close()
        writer = write_in_background(self.db, rest)
        rnd = random.Random(seed)
        total = first + then
        targets = sorted(rnd.sample(range(total // 40, total * 19 // 20), kills))
        ends = kill_9_at(start_host, self.db, targets, rnd, timeout)
        writer.join()
        return ends


class ExactlyOnce(AccountsTest):
    def test_kill_9_at_random_moments_while_the_application_writes(self):
        # The application keeps writing while cdcflow is killed and restarted.
        ends = self.kill_while_writing(lambda: start(["run", PIPELINE], env=self.env),
                                       Generator(seed=2026, accounts=2000), 150_000, 50_000, kills=7, seed=7)
        for code, err in ends:
            self.assertNotEqual(code, 1, err[-2000:])
        self.assertGreaterEqual(sum(code == -9 for code, _ in ends), 5)
        self.drain()
        model = self.assert_matches_model()
        self.assertEqual(checkpoint(self.db), 200_000)
        # The mix really exercised every outcome.
        self.assertGreater(model.applied, 150_000)
        self.assertGreater(len(model.rejected), 5_000)
        self.assertGreater(model.duplicates, 5_000)


class Restarts(AccountsTest):
    def test_copies_after_a_restart_are_duplicates(self):
        gen = Generator(seed=5, accounts=50, dup_share=0)
        c = self.conn()
        first = gen.rows(3000)
        insert(c, first)
        r = self.drain()
        self.assertIn("3000 events", r.stdout)
        before = list(c.execute("SELECT * FROM accounts ORDER BY account_id"))
        # Retried copies of events applied in the previous run (near and far).
        copies = [row[:5] + (row[5] + 10_000_000,) for row in first[::7]]
        insert(c, copies)
        r = self.drain()
        self.assertIn("%d events: 0 applied, 0 rejected, %d duplicates" % (len(copies), len(copies)), r.stdout)
        self.assertEqual(before, list(c.execute("SELECT * FROM accounts ORDER BY account_id")))
        c.close()
        self.assert_matches_model()


    def test_kill_9_then_copies_written_after_the_restart_are_duplicates(self):
        # The deduper's window lives in memory. After a kill -9 the host
        # rebuilds it before anything flows, by replaying the outbox up to the
        # sink's checkpoint through the source: the deduper reads no database.
        gen = Generator(seed=8, accounts=500, dup_share=0)
        rows = gen.rows(100_000)
        c = self.conn()
        insert(c, rows)
        proc = start(["run", PIPELINE], env=self.env)
        try:
            wait_for(lambda: checkpoint(self.db) >= 5_000 or proc.poll() is not None, timeout=120,
                     what="checkpoint 5000")
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        self.assertEqual(proc.returncode, -signal.SIGKILL, err[-2000:])
        cp = checkpoint(self.db)

        proc = start(["run", PIPELINE], env=self.env)
        try:
            wait_for(lambda: checkpoint(self.db) >= len(rows) or proc.poll() is not None, timeout=120,
                     what="checkpoint %d" % len(rows))
            before = list(c.execute("SELECT * FROM accounts ORDER BY account_id"))
            # Retried copies (same event id, a later stamp) of events committed
            # before the crash, near and far, the very last one included,
            # written after the restart.
            committed = rows[:cp]
            copies = [row[:5] + (row[5] + 10_000_000,) for row in committed[::97] + committed[-1:]]
            insert(c, copies)
            wait_for(lambda: checkpoint(self.db) >= len(rows) + len(copies) or proc.poll() is not None,
                     timeout=60, what="the copies")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        # Nothing in `rows` repeats an id: every duplicate of this run is a copy.
        m = re.search(r"(\d+) events: \d+ applied, \d+ rejected, (\d+) duplicates", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(1)), len(rows) - cp + len(copies))
        self.assertEqual(int(m.group(2)), len(copies))
        self.assertEqual(before, list(c.execute("SELECT * FROM accounts ORDER BY account_id")))
        c.close()
        self.assert_matches_model()
        self.assertIn("rebuilt stream state from %d events up to the checkpoint" % cp, err)


class AggregateVersions(AccountsTest):
    def test_a_copy_under_a_new_id_is_a_duplicate_by_its_version(self):
        # The shipped pipeline with its commented version_column switched on.
        with open(PIPELINE) as f:
            text = f.read()
        self.assertIn("# version_column: aggregate_version", text)
        pipeline = self.write("versions.yaml", text.replace("# version_column:", "version_column:"))
        c = self.conn()
        c.execute("ALTER TABLE outbox ADD COLUMN aggregate_version INTEGER")

        def add(event_id, version, type_, payload):
            c.execute("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp, "
                      "aggregate_version) VALUES (?, 'Account', 'acc-1', ?, ?, ?, ?)",
                      (event_id, type_, payload, 1000 + version, version))
            c.commit()

        add("e1", 1, "AccountCreated", '{"owner": "Ada", "currency": "EUR"}')
        add("e2", 2, "MoneyDeposited", '{"amount": "10.00"}')
        add("e2-resent", 2, "MoneyDeposited", '{"amount": "10.00"}')  # new id: the deduper cannot see it
        add("e3", 3, "MoneyDeposited", '{"amount": "0.50"}')
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("4 events: 3 applied, 0 rejected, 1 duplicates", r.stdout)
        # A stale replay after a restart is dropped by the stored version.
        add("e2-replayed", 2, "MoneyDeposited", '{"amount": "10.00"}')
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("1 events: 0 applied, 0 rejected, 1 duplicates", r.stdout)
        self.assertEqual(c.execute("SELECT balance, version FROM accounts").fetchall(), [("10.50", 3)])
        self.assertEqual(c.execute("SELECT count(*) FROM dead_letters").fetchone()[0], 0)
        c.close()


class HostileInput(AccountsTest):
    def test_hostile_rows_become_dead_letters_or_correct_rows(self):
        evil = "x'); DROP TABLE accounts; --"
        rows = [
            ("h1", "Account", evil, "AccountCreated", '{"owner": "%s", "currency": "EUR"}' % evil.replace('"', ''), 1),
            ("h2", "Account", evil, "MoneyDeposited", '{"amount": "10.50"}', 2),
            ("h3", "Account", evil, "MoneyDeposited", '{"amount": "' + "9" * 10_000_000 + '"}', 3),  # 10 MB
            ("h5", "Account", evil, "MoneyDeposited", "", 5),
            ("h6", "Account", evil, "MoneyDeposited", "[]", 6),
            ("h7", "Account", evil, "MoneyDeposited", '"12.00"', 7),
            ("h8", "Account", evil, "MoneyWithdrawn", '{"amount": "10.51"}', 8),
            ("h9", "Account", evil, "MoneyWithdrawn", '{"amount": "10.50"}', 9),
            ("h10", "Account", evil, "AccountClosed", "{}", 10),
            ("h11", "Account", evil, "MoneyDeposited", '{"amount": "1.00"}', 11),
        ]
        c = self.conn()
        insert(c, rows)
        # Invalid UTF-8 in TEXT columns, as a careless application may write.
        for eid, agg, etype, payload, ts in [
                ("h4", evil, "MoneyDeposited", b'{"amount": "1.00", "note": "\xff\xfe"}', 4),
                ("h12", "acc-u", "AccountCreated", b'{"owner": "\xff", "currency": "EUR"}', 12)]:
            c.execute("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) "
                      "VALUES (?, 'Account', ?, ?, CAST(? AS TEXT), ?)", (eid, agg, etype, payload, ts))
        c.commit()
        r = self.drain()
        self.assertIn("12 events: 4 applied, 8 rejected, 0 duplicates", r.stdout)
        acc = c.execute("SELECT owner, balance, status, version FROM accounts WHERE account_id = ?", (evil,)).fetchone()
        self.assertEqual(acc, (evil.replace('"', ''), "0.00", "closed", 4))
        dead = {row[0]: row[1] for row in c.execute("SELECT event_id, stage FROM dead_letters")}
        self.assertEqual(set(dead), {"h3", "h4", "h5", "h6", "h7", "h8", "h11", "h12"})
        self.assertEqual(dead["h8"], SINK_STAGE)   # insufficient funds
        self.assertEqual(dead["h11"], SINK_STAGE)  # closed account
        big = c.execute("SELECT length(payload) FROM dead_letters WHERE event_id = 'h3'").fetchone()[0]
        self.assertGreater(big, 10_000_000)  # the whole original event is kept
        c.close()


class StartupErrors(TempDirTest):
    def test_missing_table_and_column_are_clear_errors_at_start(self):
        db = self.path("empty.db")
        sqlite3.connect(db).close()
        r = run(["run", PIPELINE, "--drain"], env=env_with(CDCFLOW_DB=db))
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("outbox", r.stderr)
        self.assertEqual(r.stderr.strip().count("\n"), 0, r.stderr)

        db2 = self.path("nocol.db")
        c = sqlite3.connect(db2)
        c.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, aggregatetype TEXT, "
                  "aggregateid TEXT, type TEXT, timestamp INTEGER)")
        c.close()
        r = run(["run", PIPELINE, "--drain"], env=env_with(CDCFLOW_DB=db2))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("payload", r.stderr)


if __name__ == "__main__":
    main()

"""pipelines/migrate-legacy.yaml end to end with the real cdcflow binary on
real SQLite files: follow mode while an application commits legacy rows out
of order through two connections (held back within the grace period, late
after it), kill -9 in the middle of a 300,000-row migration and resume, and
two hosts on one target. Every legacy row must end up in the outbox exactly
once (or recorded as unmappable), in legacy id order except rows that came
late."""
import os
import re
import signal
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "migrate-legacy.yaml")
NAMESPACE = uuid.UUID("0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4d6")  # README: the default namespace


def event_id(legacy_id):
    return str(uuid.uuid5(NAMESPACE, str(legacy_id)))


def legacy_row(i):
    return (i, "Account", "acc-%d" % (i % 97), "MoneyDeposited", '{"amount":"%d.%02d"}' % (i % 1000, i % 100),
            "2024-05-01T12:%02d:%02dZ" % (i // 60 % 60, i % 60), 0)


class MigrateTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("legacy.db")
        c = sqlite3.connect(self.db)
        c.execute("PRAGMA journal_mode=WAL")  # the application's choice; readers then never block it
        c.execute("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
                  "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)")
        c.commit()
        c.close()
        self.env = env_with(CDCFLOW_DB=self.db)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        super().tearDown()

    def pipeline(self, **config):
        """A copy of the shipped pipeline with some keys changed (test-sized
        periods): `gap_grace_ms=800` replaces that key's value, `when_owned`
        turns the commented setting on."""
        with open(PIPELINE) as f:
            text = f.read()
        for key, value in config.items():
            if key == "when_owned":
                text, n = re.subn(r"^  # when_owned: refuse$", "  when_owned: %s" % value, text, flags=re.M)
            else:
                text, n = re.subn(r"^(\s+%s:) \S+" % key, r"\g<1> %s" % value, text, flags=re.M)
            self.assertEqual(n, 1, key)
        return self.write("pipeline-%d.yaml" % len(os.listdir(self.dir)), text)

    def conn(self):
        return sqlite3.connect(self.db, timeout=30, isolation_level=None)

    def insert(self, conn, rows):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO legacy_outbox VALUES(?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")

    def host(self, pipeline, *extra):
        p = start(["run", pipeline] + list(extra), env=self.env)
        self.procs.append(p)
        return p

    def migrated(self):
        """{legacy id: (outbox seq, late)} of every migrated event, checking
        on the way that the outbox holds each event id once and that each
        map row points at the event its legacy id names."""
        c = self.conn()
        try:
            # One read transaction: a host that commits between the two
            # reads would otherwise make them disagree (300 mapped rows
            # against 400 outbox ids, seen once in CI).
            c.execute("BEGIN")
            rows = c.execute("SELECT m.legacy_id, m.seq, m.late, o.id FROM cdcflow_migration_map m "
                             "JOIN outbox o ON o.seq = m.seq").fetchall()
            ids = [r[0] for r in c.execute("SELECT id FROM outbox")]
        except sqlite3.OperationalError:
            return {}  # not created yet
        finally:
            c.close()
        self.assertEqual(len(ids), len(set(ids)), "an event id is in the outbox twice")
        self.assertEqual(len(rows), len(ids))
        out = {}
        for legacy_id, seq, late, eid in rows:
            self.assertEqual(eid, event_id(legacy_id))
            self.assertNotIn(legacy_id, out)
            out[legacy_id] = (seq, late)
        return out

    def last_migrated(self):
        """The committed progress (one indexed row: cheap to poll)."""
        c = self.conn()
        try:
            row = c.execute("SELECT max(last_legacy_id) FROM cdcflow_migration_progress").fetchone()
            return row[0] or 0
        except sqlite3.OperationalError:
            return 0  # not created yet
        finally:
            c.close()

    def assert_in_order(self, migrated, late=()):
        """Outbox seq order is legacy id order for every row but the late ones."""
        in_order = sorted((lid, seq) for lid, (seq, is_late) in migrated.items() if not is_late)
        seqs = [seq for _, seq in in_order]
        self.assertEqual(seqs, sorted(seqs), "rows in the outbox out of legacy id order")
        self.assertEqual(sorted(lid for lid, (_, is_late) in migrated.items() if is_late), sorted(late))

    def finish(self, proc, timeout=60):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
        self.assertGreaterEqual(proc.returncode, 0, err[-3000:])
        return proc.returncode, out, err


class FollowMode(MigrateTest):
    def test_out_of_order_commits_go_out_in_order_within_the_grace_and_late_after_it(self):
        a, b = self.conn(), self.conn()
        self.insert(a, [legacy_row(i) for i in range(1, 51)])
        grace_s = 2.0
        proc = self.host(self.pipeline(gap_grace_ms=int(grace_s * 1000), poll_interval_ms=20))
        try:
            wait_for(lambda: len(self.migrated()) == 50, timeout=20, what="the first 50 rows")

            # Within the grace period: 52 commits first, 51 a moment later.
            # Both go out in order.
            self.insert(a, [legacy_row(52)])
            time.sleep(0.3)
            self.assertNotIn(52, self.migrated(), "52 went out before the grace period")
            self.insert(b, [legacy_row(51)])
            wait_for(lambda: {51, 52} <= set(self.migrated()), timeout=10, what="51 and 52")

            # A burst of pairs, each higher id committed first by the other connection.
            for n in range(53, 73, 2):
                self.insert(a, [legacy_row(n + 1)])
                self.insert(b, [legacy_row(n)])
            wait_for(lambda: len(self.migrated()) == 72, timeout=10, what="rows up to 72")

            # After the grace period: 74 goes out (a gap opens at 73), and 73
            # comes late.
            self.insert(a, [legacy_row(74)])
            wait_for(lambda: 74 in self.migrated(), timeout=grace_s + 10, what="74 after the grace period")
            self.insert(b, [legacy_row(73), legacy_row(75)])
            wait_for(lambda: {73, 75} <= set(self.migrated()), timeout=10, what="73 late and 75")
            c = self.conn()
            gaps = c.execute("SELECT gaps, last_legacy_id, late FROM cdcflow_migration_progress").fetchone()
            c.close()
            self.assertEqual(gaps[0], "")  # the gap closed when 73 came
            self.assertEqual(gaps[1], 75)
            self.assertEqual(gaps[2], 1)
        finally:
            code, out, err = self.finish(proc)
        self.assertEqual(code, 0, err[-3000:])
        m = self.migrated()
        self.assertEqual(sorted(m), list(range(1, 76)))
        self.assert_in_order(m, late=[73])
        self.assertGreater(m[73][0], m[74][0])  # written after 74: late, and recorded as such

    def test_two_hosts_on_one_target_the_second_refuses_or_waits_and_nothing_is_written_twice(self):
        c = self.conn()
        self.insert(c, [legacy_row(i) for i in range(1, 201)])
        a = self.host(self.pipeline(poll_interval_ms=20))
        try:
            wait_for(lambda: len(self.migrated()) == 200, timeout=20, what="host A migrated the table")
            r = run(["run", self.pipeline(when_owned="refuse"), "--drain"], env=self.env, timeout=60)
            self.assertGreaterEqual(r.returncode, 0)
            self.assertEqual(r.returncode, 6, r.stderr[-2000:])
            self.assertRegex(r.stderr.strip().splitlines()[-1],
                             r"checkpoint 'legacy-migration' of '.*' is owned by host '.+' pid %d" % a.pid)
            # A standby: it writes nothing while A runs, takes over when A stops.
            b = self.host(self.pipeline(poll_interval_ms=20))
            time.sleep(1.0)
            self.assertIsNone(b.poll(), "the second host did not wait")
            self.insert(c, [legacy_row(i) for i in range(201, 301)])
            wait_for(lambda: len(self.migrated()) == 300, timeout=20, what="host A migrated the new rows")
            code_a, out_a, err_a = self.finish(a)
            self.assertEqual(code_a, 0, err_a[-2000:])
            self.insert(c, [legacy_row(i) for i in range(301, 401)])
            wait_for(lambda: len(self.migrated()) == 400, timeout=20, what="host B took over")
            code_b, out_b, err_b = self.finish(b)
            self.assertEqual(code_b, 0, err_b[-2000:])
        finally:
            c.close()
        self.assertIn("standby: checkpoint 'legacy-migration'", err_b)
        m = self.migrated()
        self.assertEqual(sorted(m), list(range(1, 401)))
        self.assert_in_order(m)
        # B migrated only what came after A stopped.
        self.assertRegex(out_b, r"\b100 events\b")


class SecondFile(MigrateTest):
    def test_with_the_outbox_in_a_second_file_the_legacy_file_is_never_written(self):
        c = self.conn()
        self.insert(c, [legacy_row(i) for i in range(1, 1001)])
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()

        def files():
            out = {}
            for suffix in ("", "-wal"):
                if os.path.exists(self.db + suffix):
                    with open(self.db + suffix, "rb") as f:
                        out[suffix] = f.read()
            return out

        before = files()
        with open(PIPELINE) as f:
            text = f.read()
        # The sink's database (the second `database:` key) points elsewhere.
        head, sink = text.rsplit("database: ${CDCFLOW_DB:-demo/legacy.db}", 1)
        target = self.path("outbox.db")
        pipeline = self.write("second.yaml", head + "database: " + target + sink)
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        after = files()
        self.assertEqual(after[""], before[""])
        # A read-only connection to a WAL database may leave an empty -wal
        # file behind (SQLite needs one to read): never any content.
        self.assertEqual(after.get("-wal", b""), before.get("-wal", b""))
        t = sqlite3.connect(target)
        n, distinct = t.execute("SELECT count(*), count(DISTINCT id) FROM outbox").fetchone()
        t.close()
        self.assertEqual((n, distinct), (1000, 1000))


class KillAndResume(MigrateTest):
    def test_kill_9_in_the_middle_of_300000_rows_then_resume_migrates_every_row_once_in_order(self):
        n = 300_000
        c = self.conn()
        rows = [legacy_row(i) for i in range(1, n + 1)]
        # Unmappable rows and holes (deleted rows) along the way.
        for i in range(5_000, n, 50_000):
            rows[i - 1] = (i, None, "k", "T", "{}", "2024-05-01", 0)
        self.insert(c, rows)
        c.execute("DELETE FROM legacy_outbox WHERE id % 9973 = 0")
        legacy = {r[0]: r[1] for r in c.execute("SELECT id, topic FROM legacy_outbox")}
        c.close()

        proc = self.host(PIPELINE, "--drain")
        wait_for(lambda: proc.poll() is not None or self.last_migrated() >= 60_000, timeout=60,
                 what="a fifth of the migration")
        self.assertIsNone(proc.poll(), "the migration finished before it could be killed")
        proc.kill()  # SIGKILL: no clean stop, no final checkpoint
        proc.communicate()
        part = len(self.migrated())
        self.assertLess(part, len(legacy))

        r = run(["run", PIPELINE, "--drain"], env=self.env, timeout=300)
        self.assertGreaterEqual(r.returncode, 0)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("resuming after checkpoint", r.stderr)

        m = self.migrated()
        mappable = sorted(i for i, topic in legacy.items() if topic is not None)
        self.assertEqual(sorted(m), mappable)
        self.assert_in_order(m)
        c = self.conn()
        skipped = dict(c.execute("SELECT legacy_id, reason FROM cdcflow_migration_skipped"))
        progress = c.execute("SELECT last_legacy_id, migrated, skipped, gaps FROM cdcflow_migration_progress"
                             ).fetchone()
        c.close()
        self.assertEqual(skipped, {i: "topic is NULL" for i, topic in legacy.items() if topic is None})
        self.assertEqual(progress[0], max(legacy))
        self.assertEqual(progress[1], len(mappable))
        self.assertEqual(progress[2], len(skipped))
        # The deleted rows were holes below the highest id at the start:
        # watched as gaps, never waited for.
        self.assertEqual(len(progress[3].split(",")), n // 9973)

        # A third run changes nothing.
        r = run(["run", PIPELINE, "--drain"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertRegex(r.stdout, r"\b0 events\b")
        self.assertEqual(len(self.migrated()), len(mappable))


if __name__ == "__main__":
    main()

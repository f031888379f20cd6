"""cdcflow verify and cdcflow migrate --cleanup on a real migration
(pipelines/migrate-legacy.yaml): tampering with the target is named with the
right class and legacy ids (text, stderr's last line and --json); events that
outbox_source's retention deleted are retired, not missing; cleanup never
deletes an unverified row, an unmappable row, a row younger than the
retention or the highest id, and verify passes afterwards."""
import json
import os
import signal
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402
from test_migrate import LEGACY_DDL, pipeline_text  # noqa: E402

MIGRATE = os.path.join(SOURCE_ROOT, "pipelines", "migrate-legacy.yaml")
NS = uuid.UUID("0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4d6")


class VerifyTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("legacy.db")
        self.env = env_with(CDCFLOW_DB=self.db)
        self.now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        c = sqlite3.connect(self.db)
        c.execute(LEGACY_DDL)
        rows = [(i, "Account", "acc-%d" % (i % 7), "MoneyDeposited", '{"amount":"%d.00"}' % i,
                 "2020-01-01T00:00:00Z") for i in range(1, 201)]
        rows += [(i, "Account", "acc-1", "MoneyDeposited", '{"amount":"1.00"}', self.now) for i in range(201, 211)]
        rows.append((211, None, "acc-1", "MoneyDeposited", '{"amount":"1.00"}', "2020-01-01"))  # unmappable
        rows.append((212, "Account", "acc-1", "MoneyDeposited", '{"amount":"2.00"}', "2020-01-01"))  # highest
        c.executemany("INSERT INTO legacy_outbox VALUES (?, ?, ?, ?, ?, ?, 0)", rows)
        c.commit()
        c.close()
        r = run(["migrate", MIGRATE, "--progress=none"], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(self.verify()[0].returncode, 0)

    def sql(self, *statements):
        c = sqlite3.connect(self.db, timeout=30)
        try:
            out = None
            for s in statements:
                out = c.execute(s).fetchall()
            c.commit()
            return out
        finally:
            c.close()

    def seq_of(self, legacy_id):
        return self.sql("SELECT seq FROM outbox WHERE id = '%s'" % uuid.uuid5(NS, str(legacy_id)))[0][0]

    def verify(self, *args, pipeline=MIGRATE):
        r = run(["verify", pipeline] + list(args), env=self.env)
        self.assertNoCrash(r)
        j = run(["verify", pipeline, "--json"] + list(args), env=self.env)
        self.assertEqual(j.returncode, r.returncode)
        return r, json.loads(j.stdout)

    def assert_names(self, cls, ids, last_line, count=None):
        r, report = self.verify()
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(r.stderr.strip().splitlines()[-1], "cdcflow verify: FAILED: " + last_line)
        self.assertFalse(report["ok"])
        self.assertEqual(report["classes"][cls]["ids"], ids)
        self.assertEqual(report["classes"][cls]["count"], len(ids) if count is None else count)
        self.assertTrue(report["classes"][cls]["error"])
        self.assertEqual(report["failure"], last_line)
        bad = [k for k, v in report["classes"].items() if v["error"]]
        self.assertEqual(bad, [cls])
        return report


class Tampering(VerifyTest):
    def test_a_deleted_event_is_missing(self):
        self.sql("DELETE FROM outbox WHERE seq = %d" % self.seq_of(7))
        self.assert_names("missing", [7], "1 missing (legacy id 7)")

    def test_a_changed_payload_is_a_content_mismatch(self):
        self.sql("UPDATE outbox SET payload = '{\"amount\":\"9999.00\"}' WHERE seq = %d" % self.seq_of(42))
        self.assert_names("mismatches", [42], "1 content mismatch(es) (legacy id 42)")

    def test_a_foreign_row_fails_unless_other_events_are_allowed(self):
        self.sql("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) "
                 "VALUES ('app-1', 'Account', 'acc-1', 'MoneyDeposited', '{}', 1)")
        seq = self.sql("SELECT max(seq) FROM outbox")[0][0]
        report = self.assert_names("other_events", [], "1 other event(s) (not from a migration) (outbox seq %d)" % seq,
                                   count=1)
        self.assertEqual(report["classes"]["other_events"]["seqs"], [seq])
        r, report = self.verify("--allow-other-events")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(report["classes"]["other_events"]["count"], 1)

    def test_two_swapped_rows_are_an_order_violation_of_both(self):
        a, b = self.seq_of(30), self.seq_of(31)
        cols = "id, aggregatetype, aggregateid, type, payload, timestamp"
        ra = self.sql("SELECT %s FROM outbox WHERE seq = %d" % (cols, a))[0]
        rb = self.sql("SELECT %s FROM outbox WHERE seq = %d" % (cols, b))[0]
        c = sqlite3.connect(self.db, timeout=30)
        for seq, row in ((a, rb), (b, ra)):
            c.execute("UPDATE outbox SET id=?, aggregatetype=?, aggregateid=?, type=?, payload=?, timestamp=? "
                      "WHERE seq=?", row + (seq,))
        c.commit()
        c.close()
        self.assert_names("order_violations", [30, 31], "2 order violation(s) (legacy ids 30, 31)")

    def test_a_deleted_legacy_row_leaves_an_unexpected_event(self):
        self.sql("DELETE FROM legacy_outbox WHERE id = 99")
        self.assert_names("unexpected", [99], "1 unexpected (legacy id 99)")

    def test_a_version_5_event_of_no_legacy_row_is_unexpected(self):
        self.sql("INSERT INTO outbox(id, aggregatetype, aggregateid, type, payload, timestamp) "
                 "VALUES ('%s', 'Account', 'acc-1', 'MoneyDeposited', '{}', 1)" % uuid.uuid5(NS, "5000"))
        seq = self.sql("SELECT max(seq) FROM outbox")[0][0]
        self.assert_names("unexpected", [], "1 unexpected (outbox seq %d)" % seq, count=1)
        report = self.verify()[1]
        self.assertEqual(report["classes"]["unexpected"]["seqs"], [seq])

    def test_a_legacy_row_written_after_the_migration_is_not_yet_migrated(self):
        self.sql("INSERT INTO legacy_outbox VALUES (300, 'Account', 'acc-1', 'MoneyDeposited', '{}', '2020-01-01', 0)")
        self.assert_names("not_yet_migrated", [300], "1 not yet migrated (legacy id 300)")
        r = run(["migrate", MIGRATE, "--progress=none"], env=self.env)
        self.assertIn("1 migrated this run", r.stdout)
        self.assertEqual(self.verify()[0].returncode, 0)

    def test_verify_writes_nothing(self):
        # Read-only on every database: the file and its WAL stay byte for byte
        # (through a passing and a failing report).
        import hashlib

        def digest():
            out = []
            for name in (self.db, self.db + "-wal"):
                # (An empty WAL and none are the same content: SQLite removes
                # an empty one when the last connection closes.)
                if os.path.exists(name) and os.path.getsize(name) > 0:
                    with open(name, "rb") as f:
                        out.append(hashlib.sha256(f.read()).hexdigest())
                else:
                    out.append(None)
            return out

        self.sql("DELETE FROM legacy_outbox WHERE id = 5")
        before = digest()
        for args in ((), ("--json",), ("--allow-other-events",)):
            r = run(["verify", MIGRATE] + list(args), env=self.env)
            self.assertEqual(r.returncode, 1)
        self.assertEqual(digest(), before)


class Retired(VerifyTest):
    def test_events_deleted_by_retention_are_retired_not_missing(self):
        p = self.write("retire.yaml", """pipeline: retire
stages:
  - id: outbox
    plugin: outbox_source
    config: {database: %s, retention_seconds: 1, poll_interval_ms: 10}
  - id: project
    plugin: projection_sink
    config: {database: %s, projection: accounts, checkpoint_name: accounts, create_schema: true}
""" % (self.db, self.db))
        last = self.sql("SELECT max(seq) FROM outbox")[0][0]
        proc = start(["run", p], env=self.env)
        try:
            def retired():
                try:
                    got = self.sql("SELECT up_to_seq FROM cdcflow_outbox_retired WHERE outbox = 'outbox'")
                except sqlite3.OperationalError:
                    return False
                return bool(got) and got[0][0] == last
            wait_for(retired, timeout=40, what="retention to delete every committed row")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(self.sql("SELECT count(*) FROM outbox"), [(0,)])
        r, report = self.verify()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(report["classes"]["retired"]["count"], 211)
        self.assertEqual(report["classes"]["missing"]["count"], 0)
        self.assertEqual(report["retired_up_to_seq"], last)
        # A legacy row that changed after its event was retired: the map's checksum tells.
        self.sql("UPDATE legacy_outbox SET body = '{\"amount\":\"5.00\"}' WHERE id = 3")
        r, report = self.verify()
        self.assertEqual(r.returncode, 1)
        self.assertEqual(report["classes"]["mismatches"]["ids"], [3])


class Cleanup(VerifyTest):
    def remaining(self):
        return [i for (i,) in self.sql("SELECT id FROM legacy_outbox ORDER BY id")]

    def test_only_verified_old_rows_go_never_the_highest_id(self):
        event_50 = self.sql("SELECT payload FROM outbox WHERE seq = %d" % self.seq_of(50))[0][0]
        self.sql("UPDATE outbox SET payload = '{}' WHERE seq = %d" % self.seq_of(50))  # unverified
        r = run(["migrate", MIGRATE, "--cleanup", "--older-than", "30d", "--batch", "16"], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(),
                         "cleanup of migration 'legacy-migration': deleted 199 legacy rows older than 30d; kept 13: "
                         "1 event differs, 1 the highest id, 1 unmappable, 10 younger than the retention")
        self.assertEqual(self.remaining(), [50] + list(range(201, 213)))
        # Verify: the tampered event is still named; the deleted rows are cleaned.
        r, report = self.verify()
        self.assertEqual(r.returncode, 1)
        self.assertEqual(report["classes"]["mismatches"]["ids"], [50])
        self.assertEqual(report["classes"]["cleaned"]["count"], 199)
        # Repaired, everything passes, and the cleaned rows are reported.
        self.sql("UPDATE outbox SET payload = '%s' WHERE seq = %d" % (event_50, self.seq_of(50)))
        r, report = self.verify()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(report["classes"]["cleaned"]["count"], 199)
        self.assertEqual(report["classes"]["cleaned"]["ids"][:3], [1, 2, 3])
        self.assertIn("cleaned", r.stdout)
        # The migrator's cleanup_older_than instead of --older-than.
        p = self.write("p.yaml", pipeline_text(cleanup_older_than="30d"))
        r = run(["migrate", p, "--cleanup"], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("deleted 1 legacy rows", r.stdout)
        self.assertEqual(self.remaining(), list(range(201, 213)))
        self.assertEqual(self.verify()[0].returncode, 0)
        # A new highest row: the old highest may go now, the new one stays.
        self.sql("INSERT INTO legacy_outbox VALUES (213, 'Account', 'acc-1', 'MoneyDeposited', '{}', "
                 "'2020-01-01', 0)")
        self.assertEqual(run(["migrate", MIGRATE, "--progress=none"], env=self.env).returncode, 0)
        r = run(["migrate", p, "--cleanup"], env=self.env)
        self.assertIn("deleted 1 legacy rows", r.stdout)
        self.assertEqual(self.remaining(), list(range(201, 212)) + [213])
        self.assertEqual(self.verify()[0].returncode, 0)

    def test_kill_9_during_cleanup_then_verify_and_finish(self):
        # More old rows, so that the cleanup is killed half-way.
        c = sqlite3.connect(self.db, timeout=30)
        c.executemany("INSERT INTO legacy_outbox VALUES (?, 'Account', 'acc-2', 'MoneyDeposited', "
                      "'{\"amount\":\"3.00\"}', '2020-01-01T00:00:00Z', 0)", [(i,) for i in range(1000, 21000)])
        c.commit()
        c.close()
        self.assertEqual(run(["migrate", MIGRATE, "--progress=none"], env=self.env).returncode, 0)
        proc = start(["migrate", MIGRATE, "--cleanup", "--older-than", "1d", "--batch", "50", "--pause-ms", "5"],
                     env=self.env)
        try:
            wait_for(lambda: self.sql("SELECT count(*) FROM cdcflow_migration_map WHERE cleaned_at IS NOT NULL")
                     [0][0] >= 2000, timeout=60, what="cleanup under way")
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        left = self.sql("SELECT count(*) FROM legacy_outbox")[0][0]
        self.assertGreater(left, 100, "the cleanup finished before it was killed: nothing tested")
        # Whatever moment it died at: marked rows that still exist are normal.
        r, report = self.verify()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        marked = self.sql("SELECT count(*) FROM cdcflow_migration_map WHERE cleaned_at IS NOT NULL")[0][0]
        self.assertEqual(report["classes"]["cleaned"]["count"], 20212 - left)
        self.assertGreaterEqual(marked, report["classes"]["cleaned"]["count"])
        r = run(["migrate", MIGRATE, "--cleanup", "--older-than", "1d"], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Left: 201..211 (young, unmappable) and the highest id.
        self.assertEqual(self.remaining(), list(range(201, 212)) + [20999])
        self.assertEqual(self.verify()[0].returncode, 0)

    def test_a_locked_legacy_database_is_waited_for(self):
        app = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        app.execute("BEGIN IMMEDIATE")
        proc = start(["migrate", MIGRATE, "--cleanup", "--older-than", "1d"], env=self.env)
        time.sleep(1.0)
        self.assertIsNone(proc.poll(), "cleanup did not wait for the application's lock")
        app.execute("COMMIT")
        app.close()
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("deleted 200 legacy rows", out)

    def test_a_bad_duration_in_the_pipeline_is_a_config_error(self):
        p = self.write("p.yaml", pipeline_text(cleanup_older_than="30 days"))
        r = run(["migrate", p, "--cleanup"], env=self.env)
        self.assertIn(r.returncode, (3,))
        self.assertEqual(self.remaining()[:3], [1, 2, 3])


if __name__ == "__main__":
    main()

"""cdcflow migrate on generated legacy outboxes (DESIGN.md, "The legacy
outbox"; README, "Migrating a legacy outbox"): unmappable rows of every kind,
duplicate content under different legacy ids, unicode, 1 MB bodies, created_at
in several ISO 8601 forms. Migrate, migrate again (nothing changes), verify;
event ids are Python's uuid.uuid5(namespace, str(id)); a second namespace;
then pipelines/accounts.yaml on the migrated outbox equals what the legacy
messages describe; the progress display as lines and as a bar on a terminal."""
import datetime
import json
import os
import pty
import re
import signal
import sqlite3
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from accounts_model import Model  # noqa: E402
from helpers import BIN, SOURCE_ROOT, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402
from outbox_gen import Generator  # noqa: E402

MIGRATE = os.path.join(SOURCE_ROOT, "pipelines", "migrate-legacy.yaml")
ACCOUNTS = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
DEFAULT_NS = uuid.UUID("0bb2b36a-fdc6-5a9f-b464-1cb2ccc4e4d6")
OTHER_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")

LEGACY_DDL = ("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
              "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)")

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def iso_forms(us):
    """created_at texts for one instant (microseconds), in the forms legacy
    applications write; each with the instant it denotes."""
    dt = EPOCH + datetime.timedelta(microseconds=us)
    plus2 = dt.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    return [
        (dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), us),
        (dt.strftime("%Y-%m-%d %H:%M:%S.%f"), us),  # no zone: UTC
        (plus2.strftime("%Y-%m-%dT%H:%M:%S.%f+02:00"), us),
        (dt.strftime("%Y%m%dT%H%M%S.%fZ"), us),  # basic form
        (dt.strftime("%Y-%m-%dT%H:%M:%SZ"), us - us % 1_000_000),
        (dt.strftime("%Y-%m-%d"), us - us % 86_400_000_000),  # a date: midnight UTC
    ]


# Unmappable rows: (topic, key, type, body, created_at) and the reason class
# the migration records.
UNMAPPABLE = [
    ((None, "acc-1", "MoneyDeposited", '{"amount":"1.00"}', "2024-01-01"), "topic is NULL"),
    (("", "acc-1", "MoneyDeposited", '{"amount":"1.00"}', "2024-01-01"), "topic is empty"),
    (("Account", None, "MoneyDeposited", '{"amount":"1.00"}', "2024-01-01"), "message_key is NULL"),
    (("Account", "", "MoneyDeposited", '{"amount":"1.00"}', "2024-01-01"), "message_key is empty"),
    (("Account", "acc-1", None, '{"amount":"1.00"}', "2024-01-01"), "message_type is NULL"),
    (("Account", "acc-1", "", '{"amount":"1.00"}', "2024-01-01"), "message_type is empty"),
    (("Account", "acc-1", "MoneyDeposited", None, "2024-01-01"), "body is NULL"),
    (("Account", "acc-1", "MoneyDeposited", "", "2024-01-01"), "body is empty"),
    (("Account", "acc-1", "MoneyDeposited", b'{"amount":"\xff1.00"}', "2024-01-01"), "body is not valid UTF-8"),
    (("Account", b"acc-\xc3", "MoneyDeposited", '{"amount":"1.00"}', "2024-01-01"),
     "message_key is not valid UTF-8"),
    (("Account", "acc-1", "MoneyDeposited", '{"amount":"1.00"}', None), "created_at is NULL"),
    (("Account", "acc-1", "MoneyDeposited", '{"amount":"1.00"}', "yesterday"),
     "created_at is not an ISO 8601 date"),
    (("Account", "acc-1", "MoneyDeposited", '{"amount":"1.00"}', "2023-02-29T10:00:00Z"),
     "created_at is not an ISO 8601 date"),
]


def legacy_rows(n, seed=7):
    """n generated legacy rows (accounts traffic, with its invalid events and
    duplicate content under new ids), unicode, two 1 MB bodies and every kind
    of unmappable row, in legacy id order: (id, topic, key, type, body,
    created_at, expected timestamp or None, reason class or None)."""
    gen = Generator(seed=seed, accounts=300)
    rows = []
    legacy_id = 0
    for i, (_, agg_type, agg_id, etype, payload, ts) in enumerate(gen.rows(n)):
        legacy_id += 1 + (i % 17 == 0)  # holes in the ids, as deleted rows leave
        text, expected = iso_forms(ts)[i % 6]
        rows.append((legacy_id, agg_type, agg_id, etype, payload, text, expected, None))
        if i % 500 == 250:
            for (topic, key, mtype, body, created), reason in UNMAPPABLE:
                legacy_id += 1
                rows.append((legacy_id, topic, key, mtype, body, created, None, reason))
        if i == 100:
            # Unicode in keys and bodies; an aggregate created under its name.
            for text_ in ("Zoë Ñandú", "李小龙", "🙂 emoji"):
                legacy_id += 1
                body = json.dumps({"owner": text_, "currency": "EUR"}, ensure_ascii=False)
                rows.append((legacy_id, "Account", "acc-ü-" + text_, "AccountCreated", body,
                             "2024-05-01T12:00:00Z", 1714564800000000, None))
        if i in (200, 300):
            # 1 MB bodies: a valid deposit with a long note, and a body that is
            # not JSON (migrated as written; the validator dead-letters it).
            legacy_id += 1
            # (Under the validator's max_payload_bytes, 1 MiB, so that the first one is applied.)
            big = (json.dumps({"amount": "1.00", "note": "ä" * 520_000}, ensure_ascii=False)
                   if i == 200 else "x" * 1_048_576)
            rows.append((legacy_id, "Account", "acc-1", "MoneyDeposited", big, "2024-05-01T12:00:00Z",
                         1714564800000000, None))
    return rows


def write_legacy(path, rows, table="legacy_outbox"):
    c = sqlite3.connect(path)
    c.execute(LEGACY_DDL.replace("legacy_outbox", table))
    c.executemany("INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?, 0)" % table, [r[:6] for r in rows])
    c.commit()
    c.close()


def pipeline_text(**replace):
    with open(MIGRATE) as f:
        text = f.read()
    for key, value in replace.items():
        text, n = re.subn(r"(\n      %s: )[^\n#]*" % key, r"\g<1>%s " % value, text, count=1)
        assert n == 1, key
    return text


class MigrateTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("legacy.db")
        self.env = env_with(CDCFLOW_DB=self.db)

    def conn(self):
        c = sqlite3.connect(self.db, timeout=30)
        c.text_factory = bytes
        return c

    def migrate(self, *args, pipeline=MIGRATE, env=None):
        r = run(["migrate", pipeline, "--progress=lines"] + list(args), env=env or self.env, timeout=300)
        self.assertNoCrash(r)
        return r

    def outbox(self, table="outbox"):
        c = self.conn()
        try:
            return c.execute("SELECT id, aggregatetype, aggregateid, type, payload, timestamp FROM %s ORDER BY seq"
                             % table).fetchall()
        finally:
            c.close()


def as_bytes(v):
    return v.encode() if isinstance(v, str) else v


class Migrate(MigrateTest):
    def test_migrate_twice_verify_and_project(self):
        rows = legacy_rows(6000)
        write_legacy(self.db, rows)
        mappable = [r for r in rows if r[7] is None]
        unmappable = [r for r in rows if r[7] is not None]
        self.assertGreater(len(unmappable), 100)

        r = self.migrate()
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("migration 'legacy-migration': %d migrated this run, 0 already migrated before it (%d in all)"
                      % (len(mappable), len(mappable)), r.stdout)
        self.assertIn("unmappable: %d this run" % len(unmappable), r.stdout)
        self.assertIn("%d topic is NULL" % (len(unmappable) // len(UNMAPPABLE)), r.stdout)

        # Every mappable row, in legacy id order, as an event whose id is
        # uuid5(namespace, "<id>"), its columns as written, created_at as the
        # timestamp it denotes.
        want = [(str(uuid.uuid5(DEFAULT_NS, str(x[0]))).encode(), as_bytes(x[1]), as_bytes(x[2]), as_bytes(x[3]),
                 as_bytes(x[4]), x[6]) for x in mappable]
        got = self.outbox()
        self.assertEqual(len(got), len(want))
        diff = [i for i in range(len(want)) if got[i] != want[i]]
        self.assertEqual(diff[:3], [], "first differences: %r" % [(got[i][:4], want[i][:4]) for i in diff[:3]])
        # Unmappable rows are recorded with their reason.
        c = self.conn()
        skipped = {lid: reason.decode() for lid, reason in c.execute(
            "SELECT legacy_id, reason FROM cdcflow_migration_skipped WHERE migration = 'legacy-migration'")}
        c.close()
        self.assertEqual(sorted(skipped), [x[0] for x in unmappable])
        wrong = [(x[0], skipped[x[0]], x[7]) for x in unmappable if not skipped[x[0]].startswith(x[7])]
        self.assertEqual(wrong[:3], [])

        # Again: nothing changes, and the summary says so.
        r = self.migrate()
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("0 migrated this run, %d already migrated before it" % len(mappable), r.stdout)
        self.assertIn("unmappable: 0 this run; %d in all" % len(unmappable), r.stdout)
        self.assertEqual(self.outbox(), got)

        r = run(["verify", MIGRATE], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run(["verify", MIGRATE, "--json"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads(r.stdout)
        self.assertTrue(report["ok"])
        self.assertEqual(report["legacy_rows"], len(rows))
        self.assertEqual(report["classes"]["migrated"]["count"], len(mappable))
        self.assertEqual(report["classes"]["unmappable"]["count"], len(unmappable))
        self.assertEqual(report["classes"]["unmappable"]["reasons"]["created_at is not an ISO 8601 date"],
                         2 * len(unmappable) // len(UNMAPPABLE))
        self.assertEqual(report["last_legacy_id"], rows[-1][0])

        # The accounts pipeline on the migrated outbox: the projection is
        # what the legacy messages describe (in legacy id order, under their
        # uuid5 ids).
        r = run(["run", ACCOUNTS, "--drain"], env=self.env, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        model = Model()
        for x in mappable:
            body = x[4] if isinstance(x[4], str) else x[4].decode()
            model.apply_row(str(uuid.uuid5(DEFAULT_NS, str(x[0]))), x[1], x[2], x[3], body, x[6])
        c = sqlite3.connect(self.db)
        got_accounts = {a[0]: tuple(a[1:]) for a in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        letters = {e for (e,) in c.execute("SELECT event_id FROM dead_letters")}
        c.close()
        self.assertEqual(got_accounts, model.rows())
        self.assertEqual(letters, set(model.rejected))
        self.assertIn("李小龙", {a[0] for a in got_accounts.values()})

    def test_a_second_namespace_and_two_legacy_tables_in_one_outbox(self):
        first = [r for r in legacy_rows(300, seed=1) if r[7] is None]
        second = [r for r in legacy_rows(200, seed=2) if r[7] is None]
        write_legacy(self.db, first)
        write_legacy(self.db, second, table="legacy_two")
        two = self.write("two.yaml", pipeline_text(table="legacy_two", namespace=str(OTHER_NS),
                                                   checkpoint_name="second-migration"))
        self.assertEqual(self.migrate().returncode, 0)
        r = self.migrate(pipeline=two)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("migration 'second-migration': %d migrated this run" % len(second), r.stdout)
        ids = [e[0].decode() for e in self.outbox()]
        self.assertEqual(ids, [str(uuid.uuid5(DEFAULT_NS, str(x[0]))) for x in first] +
                         [str(uuid.uuid5(OTHER_NS, str(x[0]))) for x in second])
        # The same legacy ids in both tables: different events.
        self.assertEqual(len(set(ids)), len(ids))
        # Each migration verifies on its own; the other's events are not its concern.
        for p, other in ((MIGRATE, len(second)), (two, len(first))):
            r = run(["verify", p, "--json"], env=self.env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(json.loads(r.stdout)["classes"]["other_migrations"]["count"], other)

    def test_holes_in_an_old_table_are_not_warned_about(self):
        # 1500 rows, every other id deleted long ago: 1499 holes, more than
        # max_open_gaps (here 100). A plain one-shot migration of such a table
        # is normal: one info line, no warning (the warning is for gaps among
        # rows written while the migration runs).
        rows = [(i, "Account", "acc-%d" % i, "AccountCreated", '{"owner":"A","currency":"EUR"}',
                 "2024-05-01T12:00:00Z") for i in range(1, 3000, 2)]
        c = sqlite3.connect(self.db)
        c.execute(LEGACY_DDL)
        c.executemany("INSERT INTO legacy_outbox VALUES (?, ?, ?, ?, ?, ?, 0)", rows)
        c.commit()
        c.close()
        pipe = self.write("capped.yaml", pipeline_text(max_open_gaps=100))
        r = self.migrate(pipeline=pipe, env=env_with(CDCFLOW_DB=self.db, CDCFLOW_LOG_LEVEL="info"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1500 migrated this run", r.stdout)
        warnings = [line for line in r.stderr.splitlines() if " warn " in line]
        self.assertEqual(warnings, [], r.stderr)
        self.assertIn("among the rows that existed at the start", r.stderr)
        self.assertEqual(run(["verify", pipe], env=self.env).returncode, 0)

    def test_a_namespace_that_is_not_a_uuid_is_a_config_error(self):
        write_legacy(self.db, legacy_rows(10))
        bad = self.write("bad.yaml", pipeline_text(namespace="not-a-uuid"))
        for cmd in (["migrate", bad], ["verify", bad]):
            r = run(cmd, env=self.env)
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("namespace", r.stderr.strip().splitlines()[-1])

    def test_not_a_migration_pipeline_and_usage_errors(self):
        write_legacy(self.db, legacy_rows(10))
        r = run(["verify", ACCOUNTS], env=self.env)
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stderr.strip().splitlines()[-1],
                         "cdcflow: %s: not a migration pipeline: it has no stage whose plugin is 'migrator'" % ACCOUNTS)
        r = run(["migrate", MIGRATE, "--cleanup"], env=self.env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--older-than", r.stderr)
        r = run(["migrate", MIGRATE, "--progress=sometimes"], env=self.env)
        self.assertEqual(r.returncode, 2)
        r = run(["migrate", MIGRATE, "--cleanup", "--older-than", "30 days"], env=self.env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a duration", r.stderr)
        r = run(["verify", MIGRATE], env=env_with(CDCFLOW_DB=self.path("nothing.db")))
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not exist", r.stderr.strip().splitlines()[-1])
        self.assertFalse(os.path.exists(self.path("nothing.db")))


class Stop(MigrateTest):
    def test_a_signal_stops_it_exit_1_and_the_next_run_resumes(self):
        c = sqlite3.connect(self.db)
        c.execute(LEGACY_DDL)
        n = 400_000
        c.executemany("INSERT INTO legacy_outbox VALUES (?, 'Account', ?, 'MoneyDeposited', ?, "
                      "'2024-05-01T12:00:00Z', 0)",
                      (("%d" % i, "acc-%d" % (i % 100), '{"amount":"%d.00"}' % (i % 90 + 1)) for i in range(1, n + 1)))
        c.commit()
        c.close()

        def migrated():
            try:
                return self.conn().execute("SELECT count(*) FROM cdcflow_migration_map").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
        proc = start(["migrate", MIGRATE, "--progress=lines"], env=self.env)
        wait_for(lambda: migrated() > 0 or proc.poll() is not None, timeout=60, what="the first batch")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        done = migrated()
        if done == n:
            self.skipTest("the migration finished before the signal arrived")
        self.assertEqual(proc.returncode, 1, err[-2000:])
        self.assertEqual(err.strip().splitlines()[-1], "cdcflow: migrate: stopped before the end; run it again to resume")
        self.assertIn("%d migrated this run, 0 already migrated before it" % done, out)
        r = self.migrate()
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn("%d migrated this run, %d already migrated before it (%d in all)" % (n - done, done, n), r.stdout)
        self.assertEqual(run(["verify", MIGRATE], env=self.env).returncode, 0)


class Progress(MigrateTest):
    def test_plain_lines_when_not_a_terminal(self):
        write_legacy(self.db, legacy_rows(2000))
        n = len(legacy_rows(2000))
        r = run(["migrate", MIGRATE], env=self.env, timeout=300)  # --progress=auto, stderr a pipe
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertNotIn("\r", r.stderr)
        last = [line for line in r.stderr.splitlines() if line.startswith("migrate: ")][-1]
        self.assertRegex(last, r"^migrate: %d/%d rows \(100\.0%%\), \d+ rows/s, ETA 0:00:00$" % (n, n))
        r = run(["migrate", MIGRATE, "--progress=none"], env=self.env)
        self.assertEqual(r.returncode, 0)
        self.assertFalse([line for line in r.stderr.splitlines() if line.startswith("migrate: ")])
        # Nothing left: the total is what lies above the progress point.
        r = run(["migrate", MIGRATE, "--progress=lines"], env=self.env)
        self.assertIn("migrate: 0/0 rows (100.0%)", r.stderr)

    def test_a_bar_on_a_terminal(self):
        try:
            master, slave = pty.openpty()
        except OSError as e:
            self.skipTest("no pseudo-terminal here (%s)" % e)
        write_legacy(self.db, legacy_rows(2000))
        n = len(legacy_rows(2000))
        import subprocess
        got = []

        def reader():
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                got.append(chunk)

        t = threading.Thread(target=reader)
        t.start()
        try:
            r = subprocess.run([BIN, "migrate", MIGRATE], stdout=subprocess.PIPE, stderr=slave, env=self.env,
                               timeout=300)
        finally:
            os.close(slave)
            t.join(timeout=30)
            os.close(master)
        text = b"".join(got).decode(errors="replace")
        self.assertEqual(r.returncode, 0, text[-2000:])
        # Redrawn in place: carriage return, erase the line, the bar; the last
        # state stays on its own line.
        self.assertRegex(text, r"\r\x1b\[Kmigrate \[#{30}\] 100\.0%% %d/%d rows, \d+ rows/s, ETA 0:00:00\r?\n"
                         % (n, n))
        # Log lines never run into the bar: each line of the terminal, from its
        # last erase on, is a whole log line or a whole bar.
        lines = [line.split("\x1b[K")[-1].rstrip("\r") for line in text.split("\n") if line.strip()]
        logs = [line for line in lines if not line.startswith("migrate [")]
        self.assertTrue(logs)
        for line in logs:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z \x1b\[\d+m(info |warn )", repr(line))
        self.assertRegex(logs[-1], r"pipeline 'migrate-legacy' drained after")
        self.assertIn(b"migrated this run", r.stdout)


if __name__ == "__main__":
    main()

"""End-to-end tests of `cdcflow produce`: JSON lines on stdin -> rows in an
outbox table, with refused lines reported by line number on stderr."""
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import time
import unittest

import helpers

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SUMMARY = re.compile(r"^produced: (\d+) written, (\d+) duplicates, (\d+) refused$")

# The accounts rules of DESIGN.md, as a rules file (the `rules:` mapping itself).
RULES_YAML = """\
# accounts: what an event must look like
aggregate_types: [Account]
events:
  AccountCreated:
    owner: {type: string, min_length: 1}
    currency: {type: string, pattern: "^[A-Z]{3}$"}
  MoneyDeposited:
    amount: {type: decimal, max_decimals: 2, min_exclusive: "0", max: "999999999.99"}
  MoneyWithdrawn:
    amount: {type: decimal, max_decimals: 2, min_exclusive: "0"}
  AccountClosed: {}
"""

PIPELINE_YAML = """\
pipeline: accounts
stages:
  - id: outbox
    plugin: outbox_source
    config: {database: "${CDCFLOW_DB:-demo.db}"}
  - id: rules
    plugin: validator
    config:
      rules:
""" + "".join("        " + line + "\n" for line in RULES_YAML.splitlines()) + """\
  - id: sink
    plugin: projection_sink
"""


def event(type_, payload, id_=None, aggregate_id="acc-1", timestamp=None):
    e = {"aggregatetype": "Account", "aggregateid": aggregate_id, "type": type_, "payload": payload}
    if id_ is not None:
        e["id"] = id_
    if timestamp is not None:
        e["timestamp"] = timestamp
    return json.dumps(e)


def created(id_=None, owner="Ada", currency="EUR", aggregate_id="acc-1"):
    return event("AccountCreated", {"owner": owner, "currency": currency}, id_, aggregate_id)


def deposit(amount, id_=None, aggregate_id="acc-1"):
    return event("MoneyDeposited", {"amount": amount}, id_, aggregate_id)


class ProduceTest(helpers.TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("app.db")
        self.rules = self.write("rules.yaml", RULES_YAML)

    def produce(self, lines, *args, db=None, stdin=None):
        text = stdin if stdin is not None else "".join(line + "\n" for line in lines)
        proc = helpers.run(["produce", "--db", db or self.db] + list(args), stdin=text)
        self.assertNoCrash(proc)
        return proc

    def query(self, sql, db=None):
        con = sqlite3.connect(db or self.db)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def ids(self, table="outbox"):
        return [r[0] for r in self.query('SELECT id FROM "%s" ORDER BY seq' % table)]

    def summary(self, proc):
        m = SUMMARY.match(proc.stdout.strip())
        self.assertIsNotNone(m, "no summary line in: " + proc.stdout)
        return tuple(int(x) for x in m.groups())

    def test_mixed_lines_write_the_valid_ones_and_report_the_others_by_line(self):
        lines = [
            created("e1"),                                                    # 1 ok
            deposit("-5", "e2"),                                              # 2 rule
            "not json",                                                       # 3 malformed
            json.dumps({"aggregatetype": "Account", "type": "MoneyDeposited",
                        "payload": {"amount": "1.00"}}),                      # 4 missing field
            deposit("12.34", "e5"),                                           # 5 ok
            "",                                                               # 6 blank: skipped
            event("MoneyDeposited", [1, 2], "e7"),                            # 7 payload not an object
            deposit("7"),                                                     # 8 ok, id generated
            event("Teleported", {}, "e9"),                                    # 9 unknown type
            '{"id": "e10", "aggregatetype": "Account", "aggregateid": "a", "type": "AccountClosed", '
            '"payload": {}, "colour": "red"}',                                # 10 unknown field
            deposit("1.234", "e11"),                                          # 11 rule
            '{"id": "e12", "aggregatetype": "Account", "aggregateid": "a", "type": "AccountClosed", '
            '"payload": {}} trailing',                                        # 12 malformed
        ]
        proc = self.produce(lines, "--rules", self.rules, "--create-schema")
        self.assertEqual(proc.returncode, 5, proc.stderr)
        err = proc.stderr.splitlines()
        self.assertEqual([e.split(":")[0] for e in err],
                         ["line 2", "line 3", "line 4", "line 7", "line 9", "line 10", "line 11", "line 12"])
        self.assertTrue(err[0].startswith('line 2: MoneyDeposited.amount: "-5" '), err[0])
        self.assertTrue(err[1].startswith("line 3: not valid JSON: "), err[1])
        self.assertEqual(err[2], 'line 4: missing field "aggregateid"')
        self.assertEqual(err[3], "line 7: payload: expected a JSON object, got array")
        self.assertEqual(err[4], "line 9: unknown event type 'Teleported'")
        self.assertEqual(err[5], 'line 10: unknown field "colour" '
                                 '(known: id, aggregatetype, aggregateid, type, payload, timestamp)')
        self.assertEqual(err[6], 'line 11: MoneyDeposited.amount: "1.234" has more than 2 decimals')
        self.assertTrue(err[7].startswith("line 12: not valid JSON: "), err[7])

        rows = self.query("SELECT id, aggregatetype, aggregateid, type, payload FROM outbox ORDER BY seq")
        self.assertEqual([r[0] for r in rows[:2]], ["e1", "e5"])
        self.assertEqual(len(rows), 3)
        self.assertRegex(rows[2][0], UUID4)
        self.assertEqual(rows[1][1:], ("Account", "acc-1", "MoneyDeposited", '{"amount": "12.34"}'))
        self.assertEqual(self.summary(proc), (3, 0, 8))

    def test_all_valid_exits_0(self):
        lines = [created("c%d" % i, aggregate_id="acc-%d" % i) for i in range(50)]
        lines += [deposit("%d.50" % i, "d%d" % i, "acc-%d" % i) for i in range(50)]
        proc = self.produce(lines, "--rules", self.rules, "--create-schema", "--batch-size", "7")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")
        self.assertEqual(self.summary(proc), (100, 0, 0))
        self.assertEqual(self.ids(), ["c%d" % i for i in range(50)] + ["d%d" % i for i in range(50)])

    def test_a_repeated_event_id_is_written_once(self):
        lines = [deposit("1.00", "same"), deposit("2.00", "other"), deposit("1.00", "same"),
                 deposit("3.00", "third"), deposit("1.00", "same")]
        # A batch of 2: the copies arrive while the first is buffered and after it is written.
        proc = self.produce(lines, "--create-schema", "--batch-size", "2")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.ids(), ["same", "other", "third"])
        self.assertEqual(self.summary(proc), (3, 2, 0))

    def test_rules_from_the_accounts_pipeline(self):
        shipped = os.path.join(helpers.SOURCE_ROOT, "pipelines", "accounts.yaml")
        pipeline = shipped if os.path.exists(shipped) else self.write("accounts.yaml", PIPELINE_YAML)
        lines = [created("a1"), deposit("-5", "a2"), deposit("1.234", "a3"), created("a4", currency="eur"),
                 event("Teleported", {}, "a5"), deposit("12.34", "a6"),
                 event("MoneyWithdrawn", {"amount": "1.50"}, "a7"), event("AccountClosed", {}, "a8")]
        proc = self.produce(lines, "--rules", pipeline, "--create-schema")
        self.assertEqual(proc.returncode, 5, proc.stderr)
        self.assertEqual([e.split(":")[0] for e in proc.stderr.splitlines()],
                         ["line 2", "line 3", "line 4", "line 5"])
        self.assertEqual(self.ids(), ["a1", "a6", "a7", "a8"])

    def test_pipeline_rules_yaml_rules_and_json_rules_decide_alike(self):
        rules_json = self.write("rules.json", json.dumps({
            "aggregate_types": ["Account"],
            "events": {"AccountCreated": {"owner": {"type": "string", "min_length": 1},
                                          "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                       "MoneyDeposited": {"amount": {"type": "decimal", "max_decimals": 2,
                                                     "min_exclusive": "0", "max": "999999999.99"}},
                       "MoneyWithdrawn": {"amount": {"type": "decimal", "max_decimals": 2,
                                                     "min_exclusive": "0"}},
                       "AccountClosed": {}}}))
        pipeline = self.write("pipeline.yaml", PIPELINE_YAML)
        lines = [created("x1"), created("x2", owner=""), deposit("0", "x3"), deposit("1000000000.00", "x4"),
                 deposit("5", "x5")]
        results = []
        for rules in (self.rules, rules_json, pipeline):
            db = self.path(os.path.basename(rules) + ".db")
            proc = self.produce(lines, "--rules", rules, "--create-schema", db=db)
            self.assertEqual(proc.returncode, 5, proc.stderr)
            results.append((proc.stderr, self.ids_of(db)))
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0], results[2])
        self.assertEqual(results[0][1], ["x1", "x5"])

    def ids_of(self, db):
        return [r[0] for r in self.query("SELECT id FROM outbox ORDER BY seq", db=db)]

    def test_bad_rules_exit_3_with_one_line(self):
        bad = self.write("bad.yaml",
                         "events:\n  MoneyDeposited:\n    amount: {type: decimal, max_decimals: 12}\n")
        proc = self.produce([], "--rules", bad, "--create-schema")
        self.assertEqual(proc.returncode, 3)
        self.assertEqual(len(proc.stderr.splitlines()), 1)
        self.assertIn("bad.yaml", proc.stderr)
        self.assertIn("max_decimals", proc.stderr)

        broken = self.write("broken.yaml", "events:\n  A: {x: {type: string}\n")
        proc = self.produce([], "--rules", broken)
        self.assertEqual(proc.returncode, 3)
        self.assertRegex(proc.stderr, r"^cdcflow produce: .*broken\.yaml:\d+:\d+: ")

        no_validator = self.write("nov.yaml", "pipeline: p\nstages:\n  - {id: s, plugin: outbox_source}\n")
        proc = self.produce([], "--rules", no_validator)
        self.assertEqual(proc.returncode, 3)
        self.assertIn("no stage with plugin 'validator'", proc.stderr)

        proc = self.produce([], "--rules", self.path("missing.yaml"))
        self.assertEqual(proc.returncode, 3)
        self.assertIn("cannot read rules file", proc.stderr)
        self.assertFalse(os.path.exists(self.db))

    def test_quiet_when_not_a_terminal(self):
        lines = [deposit("1.00", "q%d" % i) for i in range(3000)] + ["{oops"]
        proc = self.produce(lines, "--create-schema", "--batch-size", "100")
        self.assertEqual(proc.returncode, 5)
        # Only the refusal: no progress line, no carriage return, no escape codes.
        self.assertEqual(proc.stderr.splitlines(), [proc.stderr.strip()])
        self.assertTrue(proc.stderr.startswith("line 3001: not valid JSON"), proc.stderr)
        self.assertNotIn("\r", proc.stderr + proc.stdout)
        self.assertEqual(proc.stdout, "produced: 3000 written, 0 duplicates, 1 refused\n")

    def start_produce(self, stderr):
        proc = subprocess.Popen([helpers.BIN, "produce", "--db", self.db, "--create-schema"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        # Three events, then the input pauses (stdin stays open).
        proc.stdin.write(("\n".join(deposit("1.00", "p%d" % i) for i in range(3)) + "\n").encode())
        proc.stdin.flush()
        return proc

    def finish_produce(self, proc):
        # The buffered events are written without waiting for a full batch
        # or the end of the input.
        helpers.wait_for(lambda: self.count_rows() == 3, what="the paused input's events to be written")
        proc.stdin.close()
        self.assertEqual(proc.wait(timeout=60), 0)
        self.assertEqual(proc.stdout.read().decode(), "produced: 3 written, 0 duplicates, 0 refused\n")

    def stop_produce(self, proc):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def test_events_are_written_while_input_pauses(self):
        proc = self.start_produce(subprocess.DEVNULL)
        try:
            self.finish_produce(proc)
        finally:
            self.stop_produce(proc)

    def test_progress_on_a_terminal(self):
        try:
            master, slave = pty.openpty()
        except OSError as e:
            # Some containers have no /dev/pts; CI and developer machines do.
            self.skipTest("no pseudo-terminal here (%s)" % e)
        proc = self.start_produce(slave)
        os.close(slave)
        try:
            # While the input pauses, the progress line appears on the terminal.
            seen = b""
            deadline = time.monotonic() + 30
            while b"events/s" not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    seen += os.read(master, 4096)
            self.assertIn(b"events/s", seen)
            self.assertIn(b"\r", seen)
            self.finish_produce(proc)
        finally:
            self.stop_produce(proc)
            os.close(master)

    def count_rows(self):
        try:
            return self.query("SELECT count(*) FROM outbox")[0][0]
        except sqlite3.OperationalError:
            return -1

    def test_empty_input(self):
        proc = self.produce([], "--create-schema", stdin="")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "")
        self.assertEqual(proc.stdout, "produced: 0 written, 0 duplicates, 0 refused\n")
        self.assertEqual(self.ids(), [])

    def test_missing_table_without_create_schema_is_a_clear_error(self):
        con = sqlite3.connect(self.db)
        con.execute("CREATE TABLE something_else (x)")
        con.close()
        proc = self.produce([deposit("1.00", "m1")])
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(len(proc.stderr.splitlines()), 1)
        self.assertIn('has no table "outbox"', proc.stderr)
        self.assertIn("--create-schema", proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE name = 'outbox'"), [])

    def test_missing_database_file_is_not_created(self):
        db = self.path("nope.db")
        proc = self.produce([deposit("1.00", "m1")], db=db)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("cannot open database", proc.stderr)
        self.assertFalse(os.path.exists(db))

    def test_a_locked_database_fails_with_the_lines_not_written(self):
        self.assertEqual(self.produce([], "--create-schema").returncode, 0)
        locker = sqlite3.connect(self.db, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            lines = [deposit("1.00", "l1"), deposit("2.00", "l2"), "{bad", deposit("3.00", "l4")]
            proc = self.produce(lines, "--batch-size", "2", "--busy-timeout-ms", "20")
            self.assertEqual(proc.returncode, 1)
            err = proc.stderr.splitlines()
            self.assertEqual(len(err), 1, proc.stderr)
            self.assertIn("database is locked", err[0])
            self.assertTrue(err[0].endswith("input up to line 0 is done, line 1 and later not written"), err[0])
            self.assertEqual(proc.stdout, "produced: 0 written, 0 duplicates, 0 refused\n")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        self.assertEqual(self.ids(), []) # nothing written behind the message's back

    def test_create_schema_with_a_custom_table(self):
        proc = self.produce([deposit("1.00", "c1")], "--table", "my events", "--create-schema")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.ids("my events"), ["c1"])
        index = self.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'my events'")
        self.assertEqual(index, [("my events_id_idx",)])

    def test_command_line_errors_exit_2(self):
        for args in (["produce"], ["produce", "--db", self.db, "--batch-size", "0"],
                     ["produce", "--db", self.db, "--no-such-option"], ["produce", "--db", self.db, "extra"]):
            proc = helpers.run(args, stdin="")
            self.assertEqual(proc.returncode, 2, args)
            self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)
        proc = helpers.run(["produce", "--help"])
        self.assertEqual(proc.returncode, 0)
        self.assertIn("--create-schema", proc.stdout)

    def test_generated_ids_and_timestamps(self):
        before = int(time.time() * 1e6)
        given = event("MoneyDeposited", {"amount": "3.00"}, "given", timestamp=1700000000000001)
        proc = self.produce([deposit("1.00"), deposit("2.00"), given], "--create-schema")
        after = int(time.time() * 1e6)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        rows = self.query("SELECT id, timestamp FROM outbox ORDER BY seq")
        self.assertRegex(rows[0][0], UUID4)
        self.assertRegex(rows[1][0], UUID4)
        self.assertNotEqual(rows[0][0], rows[1][0])
        for _, ts in rows[:2]:
            self.assertTrue(before <= ts <= after, (before, ts, after))
        self.assertEqual(rows[2], ("given", 1700000000000001))

    def test_timestamps_outside_the_range_are_refused_with_the_range(self):
        now = int(time.time() * 1e6)
        hour, day = 3600 * 10**6, 86400 * 10**6
        lines = [event("AccountClosed", {}, "t0", timestamp=0),                      # 1 ok: 1970-01-01
                 event("AccountClosed", {}, "t1", timestamp=9223372036854775807),    # 2 far future
                 event("AccountClosed", {}, "t2", timestamp=-1),                     # 3 before 1970
                 event("AccountClosed", {}, "t3", timestamp=now + 2 * day),          # 4 two days ahead
                 event("AccountClosed", {}, "t4", timestamp=now + hour),             # 5 ok
                 event("AccountClosed", {}, "t5", timestamp=18446744073709551615),   # 6 not an int64
                 event("AccountClosed", {}, "t6", timestamp=-9223372036854775808),   # 7 far past
                 event("AccountClosed", {}, "t7")]                                   # 8 ok: now
        proc = self.produce(lines, "--create-schema")
        self.assertEqual(proc.returncode, 5, proc.stderr)
        err = proc.stderr.splitlines()
        self.assertEqual([e.split(":")[0] for e in err], ["line 2", "line 3", "line 4", "line 6", "line 7"])
        rng = re.compile(r" is outside the allowed range 1970-01-01T00:00:00Z to "
                         r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z \(now \+ 1 day\)$")
        self.assertTrue(err[0].startswith("line 2: timestamp 9223372036854775807 (294247-01-10T04:00:54.775807Z)"),
                        err[0])
        self.assertTrue(err[1].startswith("line 3: timestamp -1 (1969-12-31T23:59:59.999999Z)"), err[1])
        self.assertTrue(err[2].startswith("line 4: timestamp %d (" % (now + 2 * day)), err[2])
        for e in (err[0], err[1], err[2], err[4]):
            self.assertRegex(e, rng)
        self.assertEqual(err[3], "line 6: timestamp: 18446744073709551615 is more than 9223372036854775807 "
                                 "(microseconds since the epoch)")
        rows = self.query("SELECT id, timestamp FROM outbox ORDER BY seq")
        self.assertEqual([r[0] for r in rows], ["t0", "t4", "t7"])
        self.assertEqual(rows[0][1], 0)
        self.assertEqual(rows[1][1], now + hour)
        self.assertEqual(self.summary(proc), (3, 0, 5))

    def test_timestamp_range_flags(self):
        now = int(time.time() * 1e6)
        lines = [event("AccountClosed", {}, "f1", timestamp=1699999999999999),      # 1 before the minimum
                 event("AccountClosed", {}, "f2", timestamp=1700000000000000),      # 2 ok: the minimum
                 event("AccountClosed", {}, "f3", timestamp=now + 120 * 10**6),     # 3 2 min ahead
                 event("AccountClosed", {}, "f4", timestamp=now - 10**6)]           # 4 ok
        proc = self.produce(lines, "--create-schema", "--min-timestamp", "1700000000000000",
                            "--max-timestamp-ahead", "60")
        self.assertEqual(proc.returncode, 5, proc.stderr)
        err = proc.stderr.splitlines()
        self.assertEqual([e.split(":")[0] for e in err], ["line 1", "line 3"])
        self.assertIn("outside the allowed range 2023-11-14T22:13:20Z to ", err[0])
        self.assertTrue(err[0].endswith("(now + 1 min)"), err[0])
        self.assertEqual(self.ids(), ["f2", "f4"])

        # Before 1970 when asked for; a negative allowance is a usage error.
        proc = self.produce([event("AccountClosed", {}, "old", timestamp=-86400 * 10**6)],
                            "--min-timestamp", "-100000000000")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("old", self.ids())
        for bad in ("-1", "9223372036854776"):
            proc = self.produce([], "--max-timestamp-ahead", bad)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)
            self.assertIn("--max-timestamp-ahead must be from 0 to", proc.stderr)
        proc = helpers.run(["produce", "--help"])
        self.assertIn("--min-timestamp", proc.stdout)
        self.assertIn("--max-timestamp-ahead", proc.stdout)

    def produce_bytes(self, data, *args):
        """Runs produce on raw bytes; returns (returncode, stdout, stderr) with
        stderr as bytes, so that its encoding can be checked."""
        proc = subprocess.run([helpers.BIN, "produce", "--db", self.db] + list(args), input=data,
                              capture_output=True, timeout=120)
        self.assertGreaterEqual(proc.returncode, 0, "killed by signal")
        return proc.returncode, proc.stdout.decode(), proc.stderr

    def assertLinesOfUtf8(self, stderr):
        text = stderr.decode("utf-8")  # raises on invalid UTF-8
        for line in text.splitlines():
            self.assertTrue(line.startswith("line "), line)
        return text.splitlines()

    def test_invalid_utf8_and_lone_surrogates_are_refused_never_written(self):
        good = event("AccountClosed", {}, "u1").encode()
        lines = [
            good,                                                                         # 1 ok
            b'{"id": "u2", "aggregatetype": "Account", "aggregateid": "acc-\xff", '
            b'"type": "AccountClosed", "payload": {}}',                                  # 2 raw byte
            b'{"id": "u3", "aggregatetype": "Account", "aggregateid": "acc-\\ud800", '
            b'"type": "AccountClosed", "payload": {}}',                                  # 3 lone surrogate
            b'{"id": "u4", "aggregatetype": "Account", "aggregateid": "acc-1", '
            b'"type": "AccountClosed", "payload": {"n": "\\udc00x"}}',                   # 4 in the payload
            b'{"id": "u5", "aggregatetype": "Account", "aggregateid": "acc-1", '
            b'"type": "AccountClosed", "payload": {"n": "\xed\xa0\x80"}}',               # 5 UTF-8-encoded surrogate
            b'{"id": "u6", "aggregatetype": "Account", "aggregateid": "acc-1", '
            b'"type": "AccountClosed", "payload": {}, "c\xc3\xb6l\\"our": 1}',            # 6 unknown field
            b'{"id": "u7", "aggregatetype": "Account", "aggregateid": "k\xc3\xb6nto-\\ud83d\\ude00", '
            b'"type": "AccountClosed", "payload": {}}',                                  # 7 ok: valid UTF-8
        ]
        rc, out, err = self.produce_bytes(b"\n".join(lines) + b"\n", "--create-schema")
        self.assertEqual(rc, 5, err)
        err = self.assertLinesOfUtf8(err)
        self.assertEqual([e.split(":")[0] for e in err], ["line 2", "line 3", "line 4", "line 5", "line 6"])
        self.assertEqual(err[0], "line 2: not valid JSON: The input is not valid UTF-8")
        self.assertTrue(err[1].startswith("line 3: not valid JSON: "), err[1])
        self.assertTrue(err[2].startswith("line 4: not valid JSON: "), err[2])
        self.assertEqual(err[3], "line 5: not valid JSON: The input is not valid UTF-8")
        self.assertEqual(err[4], 'line 6: unknown field "c\\xc3\\xb6l\\"our" '
                                 '(known: id, aggregatetype, aggregateid, type, payload, timestamp)')
        self.assertEqual(self.ids(), ["u1", "u7"])
        self.assertEqual(self.query("SELECT aggregateid FROM outbox WHERE id = 'u7'"),
                         [("k\u00f6nto-\U0001F600",)])
        self.assertEqual(out, "produced: 2 written, 0 duplicates, 5 refused\n")

    def test_reasons_from_the_database_are_one_line_of_valid_utf8(self):
        self.assertEqual(self.produce([], "--create-schema").returncode, 0)
        # A trigger message with a stray byte and a line break (the sqlite3
        # shell takes the bytes as they are; Python's driver would not).
        sql = (b"CREATE TRIGGER odd BEFORE INSERT ON outbox WHEN NEW.aggregateid = 'odd' "
               b"BEGIN SELECT RAISE(ABORT, 'odd \xff\naccount'); END;\n")
        shell = subprocess.run(["sqlite3", self.db], input=sql, capture_output=True, timeout=60)
        self.assertEqual(shell.returncode, 0, shell.stderr)
        lines = [deposit("1.00", "d1"), deposit("2.00", "d2", aggregate_id="odd"), deposit("3.00", "d3")]
        rc, out, err = self.produce_bytes("".join(line + "\n" for line in lines).encode())
        self.assertEqual(rc, 5, err)
        err = self.assertLinesOfUtf8(err)
        self.assertEqual(err, ['line 2: refused by the database: "odd \\xff\\x0aaccount"'])
        self.assertEqual(self.ids(), ["d1", "d3"])

    def test_crlf_lines_and_field_types(self):
        lines = [deposit("1.00", "r1"),
                 '{"id": 5, "aggregatetype": "A", "aggregateid": "a", "type": "T", "payload": {}}',
                 '{"id": "", "aggregatetype": "A", "aggregateid": "a", "type": "T", "payload": {}}',
                 '{"aggregatetype": "A", "aggregateid": "a", "type": "T", "payload": {}, "timestamp": "now"}',
                 '{"aggregatetype": "A", "aggregateid": "a", "type": "T", "payload": {}, "type": "U"}',
                 '[1, 2]']
        proc = self.produce([], "--create-schema", stdin="\r\n".join(lines) + "\r\n")
        self.assertEqual(proc.returncode, 5)
        self.assertEqual(proc.stderr.splitlines(), [
            "line 2: id: expected a string, got number",
            "line 3: id: is empty (leave it out to have one generated)",
            "line 4: timestamp: expected an integer (microseconds since the epoch), got string",
            'line 5: duplicate field "type"',
            "line 6: not a JSON object (got array)",
        ])
        self.assertEqual(self.ids(), ["r1"])


if __name__ == "__main__":
    helpers.main()

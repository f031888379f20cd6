"""`cdcflow test PIPELINE CASES` end to end, on the real binary: the shipped
accounts cases pass; failing cases print the diff and exit 1; malformed case
files and pipelines exit 3 with the position; usage errors exit 2; the
pipeline's own database is never touched and the temporary files go away."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TEST_PLUGINS, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402

ACCOUNTS = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
ACCOUNTS_CASES = os.path.join(SOURCE_ROOT, "pipelines", "tests", "accounts.cases.yaml")
PRODUCTS = os.path.join(SOURCE_ROOT, "pipelines", "products.yaml")
PRODUCTS_CASES = os.path.join(SOURCE_ROOT, "pipelines", "tests", "products.cases.yaml")
# A sink that waits for a Kafka broker: nothing listens on port 1.
TO_KAFKA = os.path.join(SOURCE_ROOT, "pipelines", "accounts-to-kafka.yaml")

# Two cases: the first holds, the second expects what does not happen.
CASES = """\
aggregate_type: Account
cases:
  - name: opened and credited
    events:
      - {type: AccountCreated, aggregate_id: a1, payload: {owner: Ada, currency: EUR}}
      - {type: MoneyDeposited, aggregate_id: a1, payload: {amount: "5"}}
    expect:
      tables:
        accounts: [{account_id: a1, balance: "5.00", version: 2}]
      dead_letters: []
  - name: wrong on purpose
    events:
      - {type: AccountCreated, aggregate_id: a1, payload: {owner: Ada, currency: EUR}}
      - {type: MoneyWithdrawn, aggregate_id: a1, payload: {amount: "1"}}
      - {type: AccountCreated, aggregate_id: a2, payload: {owner: Bob, currency: usd}}
      - {type: AccountCreated, aggregate_id: a3, payload: {owner: Cy, currency: EUR}}
    expect:
      tables:
        accounts:
          - {account_id: a1, balance: "1.00", status: open}
          - {account_id: a2, owner: Bob}
      dead_letters:
        - {event: 2, stage: validate, reason_contains: funds}
"""


class CdcflowTest(TempDirTest):
    def setUp(self):
        super().setUp()
        # The pipeline's own database: cdcflow test must never open or create it.
        self.real_db = self.path("real.db")
        self.tmp = self.path("tmp")
        os.makedirs(self.tmp)
        self.env = env_with(CDCFLOW_DB=self.real_db, TMPDIR=self.tmp)

    def tearDown(self):
        self.assertFalse(os.path.exists(self.real_db), "cdcflow test touched the pipeline's database")
        self.assertEqual(os.listdir(self.tmp), [], "cdcflow test left temporary files")
        super().tearDown()

    def run_test(self, *args, **kw):
        return run(["test"] + list(args), env=kw.get("env", self.env), timeout=60)

    def assert_all_pass(self, pipeline, cases, at_least):
        r = self.run_test(pipeline, cases)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[-1], "%d passed, 0 failed" % (len(lines) - 1))
        self.assertGreaterEqual(len(lines) - 1, at_least)
        for line in lines[:-1]:
            self.assertTrue(line.startswith("ok   "), line)
        self.assertEqual(r.stderr, "")  # quiet unless --verbose

    def test_the_shipped_accounts_cases_pass(self):
        self.assert_all_pass(ACCOUNTS, ACCOUNTS_CASES, 7)

    def test_the_shipped_products_cases_pass(self):
        # Every row of issue 12's inventory table kept and broken, malformed
        # payloads, other types and duplicates near and far.
        self.assert_all_pass(PRODUCTS, PRODUCTS_CASES, 9)

    def test_the_readme_case_file_passes(self):
        # The README's example case file is a real one: it must keep passing.
        with open(os.path.join(SOURCE_ROOT, "README.md")) as f:
            readme = f.read()
        block = re.search(r"\*\*The case file\.\*\*\n\n```yaml\n(.*?)```", readme, re.S)
        self.assertIsNotNone(block)
        r = self.run_test(ACCOUNTS, self.write("readme.yaml", block.group(1)))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], "1 passed, 0 failed")

    def test_failing_cases_print_a_diff_and_exit_1(self):
        cases = self.write("c.yaml", CASES)
        r = self.run_test(ACCOUNTS, cases)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "ok   opened and credited",
            "FAIL wrong on purpose",
            "  table 'accounts', row account_id='a1' (expected at %s:20:13):" % cases,
            "      balance: expected '1.00', got '0.00'",
            "  table 'accounts': missing row account_id='a2' (expected at %s:21:13)" % cases,
            "  table 'accounts': unexpected row account_id='a3': account_id='a3', owner='Cy', currency='EUR', "
            "balance='0.00', status='open', version=1, updated_at=1700000003000000",
            "  dead letters: event 2 (id '2-2') (expected at %s:23:11):" % cases,
            "      stage: expected 'validate', got 'project'",
            "  dead letters: unexpected event 3 (id '2-3'), stage 'validate': "
            "'AccountCreated.currency: \"usd\" does not match ^[A-Z]{3}$'",
            "1 passed, 1 failed",
        ])
        self.assertEqual(r.stderr, "")

    def test_verbose_shows_the_pipeline_logs(self):
        cases = self.write("c.yaml", CASES.split("  - name: wrong on purpose")[0])
        r = self.run_test(ACCOUNTS, cases, "--verbose")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("[test] case 'opened and credited': 2 events into a fresh outbox in ", r.stderr)
        self.assertIn("[project] checkpoint 'accounts' of ", r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], "1 passed, 0 failed")

    def test_malformed_case_files_exit_3_with_the_position(self):
        for text, error in (
                ("cases:\n  - name: n\n    events: [{aggregate_id: a}]\n    expect: {}\n",
                 "3:14: event #1 has no 'type'"),
                ("aggregate_type: Account\ncases:\n  - name: n\n    events: [{type: T, aggregate_id: a}]\n"
                 "    expect: {tables: {accounts: []}, dead_letter: []}\n",
                 "5:38: unknown key 'dead_letter' in 'expect' (known: tables, dead_letters)"),
                ("aggregate_type: Account\ncases:\n  - name: n\n    events: [{type: T, aggregate_id: a, "
                 "timestamp: [1]}]\n    expect: {}\n",
                 "4:52: 'timestamp' must be an integer, got a sequence"),
                ("cases: {name: n}\n", "1:8: 'cases' must be a non-empty list, got a mapping"),
                ("cases: [\n", "2:1: invalid YAML: "),
        ):
            cases = self.write("bad.yaml", text)
            r = self.run_test(ACCOUNTS, cases)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertEqual(r.stdout, "")
            self.assertTrue(r.stderr.startswith("cdcflow: %s:%s" % (cases, error)), r.stderr)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        r = self.run_test(ACCOUNTS, self.path("missing.yaml"))
        self.assertEqual(r.returncode, 3)
        self.assertIn("cannot read case file '%s'" % self.path("missing.yaml"), r.stderr)

    def test_versions_reach_the_outbox_only_where_the_pipeline_reads_them(self):
        with open(ACCOUNTS) as f:
            text = f.read()
        # A version column: the sink then skips a version not above the account's last.
        versioned = self.write("versioned.yaml", text.replace(
            "      # version_column: aggregate_version", "      version_column: aggregate_version"))
        cases = self.write("v.yaml", """\
aggregate_type: Account
cases:
  - name: versions
    events:
      - {type: AccountCreated, aggregate_id: a1, payload: {owner: Ada, currency: EUR}, version: 1}
      - {type: MoneyDeposited, aggregate_id: a1, payload: {amount: "5"}, version: 2}
      - {type: MoneyDeposited, aggregate_id: a1, payload: {amount: "7"}, version: 2}
      - {type: MoneyDeposited, aggregate_id: a1, payload: {amount: "1"}, version: 3}
    expect:
      tables:
        accounts: [{account_id: a1, balance: "6.00", version: 3}]
      dead_letters: []
""")
        r = self.run_test(versioned, cases)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.run_test(ACCOUNTS, cases)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "cdcflow: %s:5:97: 'version' needs a version column, and stage 'outbox' names "
                                   "none (its version_column)\n" % cases)

    def test_the_outbox_is_written_as_the_source_names_it(self):
        with open(ACCOUNTS) as f:
            text = f.read()
        custom = self.write("custom.yaml", text.replace(
            "      table: outbox ", "      table: \"my events\"\n      id_column: event_id\n"
            "      payload_column: body\n      #"))
        r = self.run_test(custom, ACCOUNTS_CASES)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_pipelines_it_cannot_test(self):
        cases = self.write("c.yaml", CASES)
        # Not an outbox_source first: nothing to write the events into.
        gen = self.write("gen.yaml", "pipeline: g\nstages:\n  - id: src\n    plugin: gen_source\n"
                                     "  - id: sink\n    plugin: file_sink\n")
        r = self.run_test(gen, cases, env=env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS, CDCFLOW_DB=self.real_db,
                                               TMPDIR=self.tmp))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "cdcflow: %s:4:13: cdcflow test needs an outbox_source first stage "
                                   "(stage 'src' is plugin 'gen_source')\n" % gen)
        # An invalid pipeline: what validate says.
        with open(ACCOUNTS) as f:
            bad = self.write("bad.yaml", f.read().replace("window_size: 1000000", "window_size: lots"))
        r = self.run_test(bad, cases)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        v = run(["validate", bad], env=self.env)
        self.assertEqual(v.returncode, 3)
        self.assertEqual(r.stderr, v.stderr)
        self.assertIn("config key 'window_size' for plugin 'deduper' must be an integer", r.stderr)

    def test_a_case_that_cannot_drain_is_stopped_at_its_deadline(self):
        env = env_with(CDCFLOW_DB=self.real_db, TMPDIR=self.tmp, CDCFLOW_KAFKA_BROKERS="127.0.0.1:1")
        began = time.monotonic()
        r = self.run_test(TO_KAFKA, ACCOUNTS_CASES, "--timeout", "1", env=env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "FAIL an account is opened, credited, debited and closed")
        self.assertEqual(lines[1], "  stopped after 1 s without draining (--timeout): does a stage wait for "
                                   "something outside the file?")
        self.assertRegex(lines[2], r"^0 passed, 1 failed, \d+ not run$")
        self.assertLess(time.monotonic() - began, 40)  # a hang would be the test's timeout, not a figure

    def test_sigint_stops_the_running_case_and_removes_the_temporary_files(self):
        env = env_with(CDCFLOW_DB=self.real_db, TMPDIR=self.tmp, CDCFLOW_KAFKA_BROKERS="127.0.0.1:1")
        proc = start(["test", TO_KAFKA, ACCOUNTS_CASES, "--verbose"], env=env)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        # The case runs once its outbox file exists in the temporary folder.
        wait_for(lambda: any(f.endswith(".db") for _, _, files in os.walk(self.tmp) for f in files),
                 what="the first case's file")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=40)
        self.assertEqual(proc.returncode, 1, out + err)
        self.assertEqual(out.splitlines()[:2], ["FAIL an account is opened, credited, debited and closed",
                                                "  interrupted"])
        self.assertRegex(out.splitlines()[-1], r"^0 passed, 1 failed, \d+ not run$")

    def test_a_sink_without_a_database_cannot_be_tested(self):
        cases = self.write("c.yaml", CASES)
        p = self.write("p.yaml", "pipeline: p\nstages:\n  - id: outbox\n    plugin: outbox_source\n"
                                 "    config: {database: x.db}\n"
                                 "  - id: sink\n    plugin: file_sink\n")
        r = self.run_test(p, cases, env=env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS, CDCFLOW_DB=self.real_db,
                                                  TMPDIR=self.tmp))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "cdcflow: %s:7:13: cdcflow test reads the results from the sink's SQLite "
                                   "database, and stage 'sink' (plugin 'file_sink') has no 'database' config key\n"
                         % p)

    def test_a_stage_that_refuses_its_config_at_create_is_exit_3(self):
        # config_probe (a test plugin) refuses the value fail_at points at,
        # with its nested position (config_location_at), when it is created.
        with open(ACCOUNTS) as f:
            text = f.read()
        probe = ("  - id: probe\n    plugin: config_probe\n    config:\n      extra: {a: [1, 2]}\n"
                 "      fail_at: /a/1\n\n  - id: project\n")
        p = self.write("p.yaml", text.replace("  - id: project\n", probe))
        line = text[:text.index("  - id: project\n")].count("\n") + 4
        r = self.run_test(p, self.write("c.yaml", CASES),
                          env=env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS, CDCFLOW_DB=self.real_db, TMPDIR=self.tmp))
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr, "cdcflow: %s:%d:22: stage 'probe' (plugin 'config_probe'): extra/a/1: refused "
                                   "on purpose (fail_at)\n" % (p, line))

    def test_usage_errors_exit_2(self):
        for args in ([], [ACCOUNTS], [ACCOUNTS, ACCOUNTS_CASES, "third"], [ACCOUNTS, ACCOUNTS_CASES, "--fast"],
                     [ACCOUNTS, ACCOUNTS_CASES, "--timeout", "0"], [ACCOUNTS, ACCOUNTS_CASES, "--timeout", "x"]):
            r = self.run_test(*args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn("usage: cdcflow test PIPELINE.yaml CASES.yaml", r.stderr)
            self.assertEqual(r.stdout, "")
        r = self.run_test("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: cdcflow test PIPELINE.yaml CASES.yaml [--verbose] [--timeout SEC]", r.stdout)
        r = run(["--help"])
        self.assertRegex(r.stdout, r"\n  test +run a pipeline's stages on the cases of a YAML file")


if __name__ == "__main__":
    main()

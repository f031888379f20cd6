"""/metrics end to end: the page a running host serves passes Prometheus's own
`promtool check metrics`, its counters match what the pipeline did, stage ids
that would once have collided stay apart, the README lists every family, and
the shipped alert rules pass `promtool check rules` and their unit tests."""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TEST_PLUGINS, TempDirTest, env_with, free_port, main, run, start, wait_for  # noqa: E402
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

PROMTOOL = shutil.which("promtool")
ACCOUNTS = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
ALERTS = os.path.join(SOURCE_ROOT, "deploy", "prometheus", "cdcflow-alerts.yaml")
ALERT_TESTS = os.path.join(SOURCE_ROOT, "tests", "e2e", "alerts_test.yaml")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(page):
    """{family: {"type": t, "samples": [(name, {labels}, value)]}} from the text format."""
    families, types = {}, {}
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split(" ", 3)
            types[name] = t
            families.setdefault(name, {"type": t, "samples": []})
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels = m.group(1), dict(LABEL.findall(m.group(3) or ""))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        families[family]["samples"].append((name, labels, float(m.group(4))))
    return families


def value(families, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    family = families.get(name) or families.get(re.sub(r"_(sum|count|bucket)$", "", name), {"samples": []})
    return sum(v for n, l, v in family["samples"] if n == name and all(l.get(k) == x for k, x in labels.items()))


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
        return resp.read().decode()


def promtool_check(test, page):
    if not PROMTOOL:
        test.skipTest("promtool not installed (Debian package prometheus; scripts/setup.sh installs it)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=page, capture_output=True, text=True)
    test.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), "promtool check metrics")


class Metrics(TempDirTest):
    def start_host(self, pipeline, env=None):
        port = free_port()
        proc = start(["run", pipeline, "--http", "127.0.0.1:%d" % port], env=env)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc, port

    def wait_events(self, port, n, timeout):
        """Until /health counts `n` events (committed)."""
        def drained():
            try:
                return json.loads(scrape(port, "/health")).get("events") == n
            except OSError:
                return False
        wait_for(drained, timeout=timeout, what="%d events committed" % n)

    def stop_host(self, proc):
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        return out

    def test_accounts_page_is_promtool_clean_and_counts_what_happened(self):
        db = self.path("accounts.db")
        conn = sqlite3.connect(db)
        open_outbox(conn)
        insert(conn, Generator(seed=9, accounts=200).rows(5000))
        conn.close()
        proc, port = self.start_host(ACCOUNTS, env_with(CDCFLOW_DB=db))
        self.wait_events(port, 5000, timeout=60)
        page = scrape(port)
        health = json.loads(scrape(port, "/health"))
        self.stop_host(proc)
        promtool_check(self, page)
        f = parse(page)
        # Every counter ends in _total; no name carries an abbreviated unit.
        for name, fam in f.items():
            if fam["type"] == "counter":
                self.assertTrue(name.endswith("_total"), name)
            self.assertNotRegex(name, r"_(us|ms|ns|kb|mb)(_|$)")
        # Events by stage and outcome match /health's totals and the database.
        c = sqlite3.connect(db)
        applied = value(f, "cdcflow_events_total", stage="project", outcome="applied")
        self.assertEqual(applied, health["applied"])
        dead = c.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        self.assertEqual(value(f, "cdcflow_dead_letters_total"), dead)
        self.assertEqual(value(f, "cdcflow_dead_letters_total"), health["rejected"])
        by_stage = dict(c.execute("SELECT stage, COUNT(*) FROM dead_letters GROUP BY stage").fetchall())
        for stage, n in by_stage.items():
            self.assertEqual(value(f, "cdcflow_dead_letters_total", stage=stage), n, stage)
        c.close()
        self.assertEqual(value(f, "cdcflow_events_total", stage="outbox", outcome="passed"), 5000)
        self.assertEqual(value(f, "cdcflow_events_total", stage="dedupe", outcome="duplicate"), health["duplicates"])
        for stage in ("validate", "dedupe", "project"):
            # Each stage saw every event once (no stage marks an event twice here).
            self.assertEqual(value(f, "cdcflow_events_total", stage=stage), 5000, stage)
        self.assertEqual(value(f, "cdcflow_commits_total"), health["batches"])
        self.assertEqual(value(f, "cdcflow_batch_events_sum"), 5000)
        self.assertEqual(value(f, "cdcflow_end_to_end_latency_seconds_count"), 5000)
        self.assertEqual(value(f, "cdcflow_owner_role"), 1)
        self.assertEqual(value(f, "cdcflow_breaker_state"), 0)
        self.assertGreater(value(f, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(f, "process_open_fds"), 2)
        self.assertEqual(value(f, "cdcflow_queue_capacity_batches", queue="outbox->validate"),
                         value(f, "cdcflow_queue_capacity_batches", queue="dedupe->project"))
        # Plugin metrics live under their own namespace, labelled like the host's.
        self.assertEqual(value(f, "cdcflow_plugin_outbox_source_rows_read_total", stage="outbox"), 5000)
        for name in f:
            self.assertTrue(name.startswith(("cdcflow_", "process_")), name)

    def test_stage_ids_that_once_collided_stay_apart(self):
        # v-x and v.x were one metric name, and a stage named "pipeline"
        # added to the host's totals (twice the events reported).
        out = self.path("out.txt")
        p = self.write("p.yaml", "pipeline: collide\nplugin_path: [%s]\nstages:\n"
                       "  - {id: src, plugin: gen_source, config: {count: 2000, idle_after: 2000}}\n"
                       "  - {id: v-x, plugin: passthrough, config: {drop_every: 10}}\n"
                       "  - {id: v.x, plugin: passthrough, config: {reject_every: 7}}\n"
                       "  - {id: pipeline, plugin: passthrough, config: {duplicate_every: 5}}\n"
                       "  - {id: sink, plugin: file_sink, config: {output: '%s'}}\n" % (TEST_PLUGINS, out))
        proc, port = self.start_host(p)
        self.wait_events(port, 2000, timeout=30)
        page = scrape(port)
        health = json.loads(scrape(port, "/health"))
        stdout = self.stop_host(proc)
        promtool_check(self, page)
        f = parse(page)
        self.assertEqual(value(f, "cdcflow_events_total", stage="v-x", outcome="dropped"), 200)
        self.assertEqual(value(f, "cdcflow_events_total", stage="v.x", outcome="dropped"), 0)
        self.assertEqual(value(f, "cdcflow_events_total", stage="v.x", outcome="rejected"), 2000 // 7 - 2000 // 70)
        self.assertEqual(value(f, "cdcflow_events_total", stage="pipeline", outcome="passed"),
                         health["applied"])
        self.assertEqual(health["events"], 2000)
        self.assertIn("pipeline 'collide': 2000 events:", stdout)

    def test_readme_lists_every_host_family(self):
        p = self.write("p.yaml", "pipeline: doc\nplugin_path: [%s]\nstages:\n"
                       "  - {id: src, plugin: gen_source, config: {count: 10, idle_after: 10}}\n"
                       "  - {id: sink, plugin: file_sink, config: {}}\n" % TEST_PLUGINS)
        proc, port = self.start_host(p)
        wait_for(lambda: _try(lambda: json.loads(scrape(port, "/health"))["events"] == 10), what="10 events")
        page = scrape(port)
        self.stop_host(proc)
        with open(os.path.join(SOURCE_ROOT, "README.md")) as fh:
            readme = fh.read()
        section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"`(cdcflow_[a-z_]+|process_[a-z_]+)`", section))
        documented.discard("cdcflow_plugin_")
        served = {n for n in parse(page) if not n.startswith("cdcflow_plugin_")}
        # Families that only exist with ABI 4 plugins that report them.
        optional = {"cdcflow_cache_entries", "cdcflow_cache_capacity", "cdcflow_cache_hits_total",
                    "cdcflow_cache_misses_total", "cdcflow_source_lag_events"}
        self.assertEqual(sorted(served - documented), [], "families served but not in the README")
        self.assertEqual(sorted(documented - served - optional), [], "families in the README but not served")


class AlertRules(unittest.TestCase):
    def setUp(self):
        if not PROMTOOL:
            self.skipTest("promtool not installed (Debian package prometheus; scripts/setup.sh installs it)")

    def test_rules_are_valid(self):
        r = subprocess.run([PROMTOOL, "check", "rules", ALERTS], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS: 7 rules found", r.stdout)

    def test_rules_fire_on_what_they_are_for(self):
        r = subprocess.run([PROMTOOL, "test", "rules", ALERT_TESTS], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_rules_use_only_metrics_the_host_serves(self):
        with open(ALERTS) as fh:
            rules = fh.read()
        with open(os.path.join(SOURCE_ROOT, "README.md")) as fh:
            readme = fh.read()
        for name in set(re.findall(r"\b(cdcflow_[a-z_]+)", rules)):
            self.assertIn("`" + name, readme, name + " is used by an alert but not a documented family")


def _try(f):
    try:
        return f()
    except (OSError, ValueError, KeyError):
        return False


if __name__ == "__main__":
    main()

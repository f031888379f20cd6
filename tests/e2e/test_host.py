"""End-to-end tests of the host: the real cdcflow binary, real plugins
(tests/plugins) loaded from disk, real signals and kill -9."""
import json
import os
import random
import shutil
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import (ABI_V1_PLUGINS, BAD_PLUGINS, TEST_PLUGINS, TempDirTest, env_with, free_port, main, run,  # noqa: E402
                     start, wait_for)

ENV = env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS)


def pipeline(src="count: 1000", passcfg="", sink="", settings=""):
    return ("pipeline: e2e\n" + settings + "stages:\n"
            "  - id: src\n    plugin: gen_source\n    config: {" + src + "}\n"
            "  - id: pass\n    plugin: passthrough\n    config: {" + passcfg + "}\n"
            "  - id: sink\n    plugin: file_sink\n    config: {" + sink + "}\n")


def read_offsets(path):
    with open(path) as f:
        return [int(line.split()[0]) for line in f if line.strip()]


def read_checkpoint(path):
    try:
        with open(path + ".checkpoint") as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


class Cli(TempDirTest):
    def test_version_and_help(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^cdcflow \d+\.\d+\.\d+ \(plugin ABI 1\.\.7\)")
        for cmd in ["run", "validate", "plugins", "status"]:
            h = run([cmd, "--help"])
            self.assertEqual(h.returncode, 0, cmd)
            self.assertIn("usage: cdcflow " + cmd, h.stdout)
        self.assertEqual(run(["--help"]).returncode, 0)

    def test_usage_errors_exit_2(self):
        r = run(["frobnicate"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        self.assertEqual(run([]).returncode, 2)
        r = run(["run"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("pipeline", r.stderr)
        r = run(["run", "x.yaml", "--bogus"])
        self.assertEqual(r.returncode, 2)

    def test_validate(self):
        good = self.write("good.yaml", pipeline())
        r = run(["validate", good], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("is valid (3 stages)", r.stdout)
        bad = self.write("bad.yaml", pipeline(src="count: 10, colour: red"))
        r = run(["validate", bad], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertRegex(r.stderr, r"^cdcflow: .*bad\.yaml:5:\d+: unknown config key 'colour' for plugin 'gen_source'")
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        r = run(["validate", self.path("missing.yaml")], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("cannot read pipeline file", r.stderr)

    def test_plugins_lists_kinds_abi_and_keys(self):
        r = run(["plugins"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("gen_source  (source, ABI 7", r.stdout)
        self.assertIn("passthrough  (transform, ABI 7", r.stdout)
        self.assertIn("file_sink  (sink, ABI 7", r.stdout)
        self.assertRegex(r.stdout, r"count\s+int\s+default 1000; at least 0\s+events to generate")
        self.assertIn("file: " + TEST_PLUGINS, r.stdout)

    def test_plugins_reports_broken_files(self):
        r = run(["plugins", "--path", BAD_PLUGINS], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("bad_abi.so': unsupported ABI version 999 (this host supports 1..7)", r.stdout)
        self.assertIn("no_symbol.so': no entry symbol 'cdcflow_plugin_entry'", r.stdout)

    def test_a_plugin_whose_name_is_not_its_file_name_is_listed_as_broken(self):
        # `run` and `validate` refuse such a file; `plugins` must not call it fine.
        os.makedirs(self.path("renamed"))
        shutil.copy(os.path.join(TEST_PLUGINS, "passthrough.so"), self.path("renamed/other.so"))
        r = run(["plugins", "--path", self.path("renamed")], env=ENV)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("! plugin '" + self.path("renamed/other.so") +
                      "': declares the name 'passthrough', expected 'other' (its file name)", r.stdout)
        p = self.write("p.yaml", "plugin_path: renamed\n" + pipeline().replace("plugin: passthrough", "plugin: other"))
        r = run(["validate", p], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("declares the name 'passthrough', expected 'other' (its file name)", r.stderr)

    def test_text_file_named_so_is_refused(self):
        os.makedirs(self.path("plugins"))
        with open(self.path("plugins/file_sink.so"), "w") as f:
            f.write("not an ELF file\n")
        p = self.write("p.yaml", "plugin_path: plugins\n" + pipeline())
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("plugins/file_sink.so': not a loadable shared object", r.stderr)
        self.assertEqual(r.stderr.strip().count("\n"), 0, r.stderr)

    def test_wrong_abi_plugin_in_a_pipeline(self):
        p = self.write("p.yaml", "plugin_path: [" + BAD_PLUGINS + "]\n" + pipeline().replace("passthrough", "bad_abi"))
        r = run(["run", p], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("p.yaml:8:13: stage 'pass': plugin '", r.stderr)
        self.assertIn("unsupported ABI version 999 (this host supports 1..7)", r.stderr)


class Run(TempDirTest):
    def test_drain_prints_totals(self):
        p = self.write("p.yaml", pipeline("count: '${N:-20000}'", "reject_every: 10, duplicate_every: 7"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pipeline 'e2e': 20000 events: 15428 applied, 1715 rejected, 2857 duplicates", r.stdout)
        r = run(["run", p, "--drain"], env=env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS, N="5"))
        self.assertIn("pipeline 'e2e': 5 events: 5 applied", r.stdout)

    def test_dropped_events_are_totalled_and_an_abi_1_stage_sees_them_as_skipped(self):
        out = self.path("events.txt")
        # A dropping transform, then a transform built against the frozen ABI 1
        # header, then an ABI 3 sink that writes each event's status.
        p = self.write("p.yaml", "plugin_path: [%s]\n" % ABI_V1_PLUGINS +
                       pipeline("count: 100", "drop_every: 10", "output: '%s'" % out).replace(
                           "  - id: sink\n", "  - id: old\n    plugin: v1_pass\n  - id: sink\n"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pipeline 'e2e': 100 events: 90 applied, 0 rejected, 0 duplicates, 10 dropped", r.stdout)
        with open(out) as f:
            statuses = [line.split()[1] for line in f]
        self.assertEqual(statuses.count("3"), 10)  # DROPPED again after the ABI 1 stage
        self.assertEqual(read_checkpoint(out), 100)  # the last event was dropped: still processed
        # An ABI 1 sink behind the dropping transform: the run and its totals are the same.
        p = self.write("p1.yaml", "plugin_path: [%s]\n" % ABI_V1_PLUGINS +
                       pipeline("count: 100", "drop_every: 10").replace("plugin: file_sink", "plugin: v1_sink"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("100 events: 90 applied, 0 rejected, 0 duplicates, 10 dropped", r.stdout)

    def test_undefined_variable_is_an_error_with_position(self):
        p = self.write("p.yaml", pipeline("count: '${NOPE_NOT_SET}'"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 3)
        self.assertIn("p.yaml:5:21: undefined environment variable 'NOPE_NOT_SET'", r.stderr)
        self.assertIn("NOPE_NOT_SET", r.stderr)

    def test_stage_failure_exits_1_with_reason(self):
        # An I/O error is the stage's (an exception would blame the event:
        # test_breaker.py), so it stops the pipeline.
        p = self.write("p.yaml", pipeline("count: 5000", "io_error_at: 777"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cdcflow: stage 'pass' (plugin 'passthrough'): injected I/O error at offset 777", r.stderr)

    def test_a_plugin_that_retries_forever_stops_at_its_bound_and_at_sigint(self):
        bounded = pipeline("count: 100", "retry_forever_at: 50").replace(
            "plugin: passthrough\n",
            "plugin: passthrough\n    retry: {max_attempts: 3, backoff_ms: 10}\n    breaker: {failures: 0}\n")
        r = run(["run", self.write("bounded.yaml", bounded), "--drain"], env=ENV, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.strip().splitlines()[-1],
                         "cdcflow: stage 'pass' (plugin 'passthrough'): injected transient failure that never ends "
                         "(gave up after 3 attempts; see the stage's retry.max_attempts)")
        self.assertEqual(r.stderr.count("process retry"), 2)
        # The default policy (the breaker) would keep trying forever; a stop
        # request ends it at once and cleanly: exit 0, nothing committed past
        # the stage, a WARN line saying it is replayed on the next start.
        proc = start(["run", self.write("forever.yaml", pipeline("count: 100", "retry_forever_at: 50"))], env=ENV)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)  # the shutdown timeout is 10 s: well within
        self.assertEqual(proc.returncode, 0, err)
        self.assertRegex(err, r"(?im)^.*warn.*pass.*stopped while (retrying|the breaker was open for) process "
                              r"\(injected transient failure that never ends\): what this stage held is not "
                              r"committed; it is replayed from the checkpoint on the next start")
        self.assertIn("0 events", out)

    def test_signals_while_the_process_exits_never_crash_it(self):
        # A signal can arrive at any moment, also while `run` is tearing the
        # pipeline down after a drain: it must never touch what is gone.
        p = self.write("p.yaml", pipeline("count: 3000"))
        for _ in range(5):
            proc = start(["run", p, "--drain"], env=ENV)
            deadline = time.monotonic() + 30
            # Before main() blocks the signals (the dynamic loader, a sanitizer's
            # start-up) SIGTERM's default action ends any process: wait for the
            # first log line, written once the host is up and watching signals.
            proc.stderr.readline()
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(0.0005)
            out, err = proc.communicate(timeout=30)
            self.assertGreaterEqual(proc.returncode, 0, "killed by a signal: " + err[-2000:])
            self.assertIn(proc.returncode, (0, 4), err[-2000:])

    def test_exceptions_from_stop_and_committed_are_logged_not_swallowed(self):
        p = self.write("p.yaml", pipeline("count: 300, throw_in_committed: true", "throw_in_stop: true"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("300 events", r.stdout)
        self.assertRegex(r.stderr, r"error \[src\] committed failed: injected exception in committed")
        self.assertRegex(r.stderr, r"error \[pass\] stop failed: injected exception in stop")

    def test_sigterm_and_sigint_drain_and_commit(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            out = self.path("events-%d.txt" % sig)
            p = self.write("p.yaml", pipeline("count: 0", "", "output: " + out, "settings: {batch_size: 100}\n"))
            proc = start(["run", p], env=ENV)
            wait_for(lambda: read_checkpoint(out) >= 2000, what="events committed")
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=30)
            self.assertEqual(proc.returncode, 0, stderr)
            offsets = read_offsets(out)
            # Everything read was committed: no gap, and the checkpoint is the last line.
            self.assertEqual(offsets, list(range(1, len(offsets) + 1)))
            self.assertEqual(read_checkpoint(out), offsets[-1])
            self.assertIn("%d events" % len(offsets), stdout)

    def test_shutdown_timeout_exits_4(self):
        out = self.path("events.txt")
        p = self.write("p.yaml", pipeline("count: 0", "", "output: " + out + ", slow_us: 3000000",
                                          "settings: {batch_size: 10, shutdown_timeout_ms: 300}\n"))
        proc = start(["run", p], env=ENV)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 4, stderr)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertIn("shutdown did not finish within 300 ms", stderr)

    def test_kill_9_at_random_moments_loses_nothing(self):
        # file_sink fsyncs its lines before its checkpoint: after any kill -9
        # every offset up to the checkpoint is on disk, and a restart resumes
        # right after it. Final: every offset 1..N present, in order, each
        # once up to the last checkpoint written before each crash.
        out = self.path("events.txt")
        n = 200000
        p = self.write("p.yaml", pipeline("count: %d" % n, "", "output: " + out, "settings: {batch_size: 512}\n"))
        rnd = random.Random(42)
        for _ in range(6):
            proc = start(["run", p], env=ENV)
            time.sleep(rnd.uniform(0.05, 0.6))
            proc.kill()
            proc.wait()
        r = run(["run", p, "--drain"], env=ENV, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        offsets = read_offsets(out)
        self.assertEqual(sorted(set(offsets)), list(range(1, n + 1)))
        self.assertEqual(read_checkpoint(out), n)

    def test_http_status_and_metrics(self):
        port = free_port()
        p = self.write("p.yaml", pipeline("count: 1000, idle_after: 1000", "drop_every: 10"))
        proc = start(["run", p, "--http", "127.0.0.1:%d" % port], env=ENV)
        try:
            def healthy():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as resp:
                        return json.loads(resp.read()).get("applied") == 900
                except OSError:
                    return False
            wait_for(healthy, what="/health to report 900 applied")
            r = run(["status", "127.0.0.1:%d" % port, "--metrics"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("pipeline  e2e", r.stdout)
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as resp:
                health = json.loads(resp.read())
            self.assertEqual(health["state"], "running")
            self.assertEqual(health["pipeline"], "e2e")
            self.assertEqual(health["dropped"], 100)
            self.assertIn('cdcflow_events_total{pipeline="e2e",stage="sink",outcome="applied"} 900', r.stdout)
            self.assertIn('cdcflow_events_total{pipeline="e2e",stage="sink",outcome="skipped"} 100', r.stdout)
            self.assertIn('cdcflow_events_total{pipeline="e2e",stage="pass",outcome="dropped"} 100', r.stdout)
            self.assertIn('cdcflow_events_total{pipeline="e2e",stage="src",outcome="passed"} 1000', r.stdout)
            # Idle now (the source has nothing): the host must park, not spin.
            pid = proc.pid
            def cpu_ticks():
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            t0, c0 = time.monotonic(), cpu_ticks()
            time.sleep(2.0)
            used = (cpu_ticks() - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
            self.assertLess(used, 0.10, "idle pipeline used %.1f%% of a core" % (used * 100))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0)
        r = run(["status", "127.0.0.1:%d" % port])
        self.assertEqual(r.returncode, 2)  # cannot be reached
        self.assertIn("cannot reach", r.stderr)


class HostileFiles(TempDirTest):
    CASES = {
        "empty.yaml": b"",
        "garbage.yaml": bytes(random.Random(7).randrange(256) for _ in range(100000)),
        "deep_flow.yaml": b"[" * 100000,
        "deep_map.yaml": b"{a: " * 100000,
        "deep_seq.yaml": b"- " * 100000 + b"x\n",
        "alias_bomb.yaml": (b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
            b"%c: &%c [%s]\n" % (ord("b") + i, ord("b") + i, b",".join([b"*" + bytes([ord("a") + i])] * 10))
            for i in range(12)) + b"pipeline: boom\nstages: []\n"),
        "scalar.yaml": b"just a string\n",
        "stages_map.yaml": b"pipeline: x\nstages: {a: 1}\n",
    }

    def test_every_hostile_file_is_a_one_line_error(self):
        for name, data in self.CASES.items():
            with self.subTest(name):
                with open(self.path(name), "wb") as f:
                    f.write(data)
                t0 = time.monotonic()
                r = run(["validate", self.path(name)], env=ENV, timeout=60)
                self.assertNoCrash(r)
                self.assertEqual(r.returncode, 3, r.stderr[:500])
                self.assertIn(name, r.stderr)
                self.assertEqual(r.stderr.strip().count("\n"), 0, r.stderr[:1000])
                self.assertLess(time.monotonic() - t0, 30)


if __name__ == "__main__":
    main()

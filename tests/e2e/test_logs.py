"""End-to-end tests of the host's logs (README, "Logs"): the text and JSON
formats on the real binary's stderr, how the level and format are chosen
(command line, environment, the pipeline file's `log:`), hostile plugin
messages that try to forge lines, the per-stage rate limit on plugin lines,
and a stderr that is full or closed."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BIN, TEST_PLUGINS, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402
from outbox_gen import Generator, insert  # noqa: E402
from test_accounts import PIPELINE, AccountsTest, checkpoint  # noqa: E402

ENV = env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS)
for var in ("CDCFLOW_LOG_LEVEL", "CDCFLOW_LOG_FORMAT", "NO_COLOR"):
    ENV.pop(var, None)

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info |warn |error) \[([^\]]+)\] (.*)$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# What log_spam's `hostile` option logs (tests/plugins/log_spam.cpp), as bytes.
HOSTILE = (b"hostile start\n2026-01-01T00:00:00.000Z error [host] forged text line\n"
           b"{\"ts\":\"x\",\"level\":\"error\",\"stage\":\"host\",\"msg\":\"forged json\"}\r"
           b"\x1b[31mred\x1b[m \xff\xfe bad utf8 \xc3\x28 caf\xc3\xa9 quote\" back\\slash nel\xc2\x85 end")


def pipeline(middle="plugin: passthrough\n    config: {}", count=1000, head="", output=""):
    return ("pipeline: e2e\n" + head + "stages:\n"
            "  - id: src\n    plugin: gen_source\n    config: {count: %d}\n"
            "  - id: spam\n    " % count + middle + "\n"
            "  - id: sink\n    plugin: file_sink\n    config: {output: '" + output + "'}\n")


def spam(cfg):
    return "plugin: log_spam\n    config: {" + cfg + "}"


def run_bytes(args, env=ENV, timeout=60, stderr=subprocess.PIPE):
    """Runs cdcflow; stderr as bytes (to check what was written, byte for byte)."""
    return subprocess.run([BIN] + args, stdout=subprocess.PIPE, stderr=stderr, env=env, timeout=timeout)


def read_all(fd):
    """Everything left to read on fd (a pipe, or a terminal's master side, which
    answers EIO once its other side is closed)."""
    got = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got


class Formats(TempDirTest):
    def json_lines(self, err):
        """Every line of `err` (bytes) as a parsed JSON object; fails on any line that is not one."""
        out = []
        for line in err.split(b"\n")[:-1]:
            try:
                obj = json.loads(line.decode("utf-8"))  # strict: the bytes must be UTF-8
            except (ValueError, UnicodeDecodeError) as e:
                self.fail("not a JSON line: %r (%s)" % (line[:300], e))
            self.assertIsInstance(obj, dict)
            self.assertRegex(obj["ts"], TS)
            self.assertIn(obj["level"], ("debug", "info", "warn", "error"))
            self.assertIsInstance(obj["stage"], str)
            self.assertIsInstance(obj["msg"], str)
            out.append(obj)
        self.assertTrue(err.endswith(b"\n") or not err, err[-200:])
        return out

    def text_lines(self, err):
        lines = err.decode("utf-8").split("\n")  # strict: valid UTF-8
        self.assertEqual(lines[-1], "", "the last line ends with a newline")
        for line in lines[:-1]:
            self.assertTrue(TEXT_LINE.match(line) or line.startswith("cdcflow: "), "not a log line: %r" % line)
        return lines[:-1]

    def test_json_lines_with_start_and_stop(self):
        p = self.write("p.yaml", pipeline(output=self.path("out")))
        r = run_bytes(["run", p, "--drain", "--log-format", "json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"1000 events: 1000 applied", r.stdout)  # stdout keeps its summary
        lines = self.json_lines(r.stderr)
        self.assertTrue(all(o["pipeline"] == "e2e" for o in lines), lines)
        start, stop = lines[0], lines[-1]
        self.assertEqual(start["event"], "start")
        self.assertEqual(start["stage"], "host")
        self.assertEqual(start["stages"], "src,spam,sink")
        self.assertEqual(start["stage_count"], 3)
        self.assertRegex(start["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(start["pid"], int(start["pid"]))
        self.assertEqual(stop["event"], "stop")
        self.assertEqual(stop["level"], "info")
        self.assertEqual((stop["outcome"], stop["exit_code"], stop["events"], stop["applied"]),
                         ("drained", 0, 1000, 1000))
        self.assertGreaterEqual(stop["duration_s"], 0)
        self.assertNotIn("error", stop)
        # The file_sink does not fence its checkpoint: a warning without an event name.
        self.assertTrue(any(o["level"] == "warn" and "does not fence" in o["msg"] for o in lines), lines)

    def test_text_format_as_documented(self):
        p = self.write("p.yaml", pipeline(output=self.path("out")))
        for args in ([], ["--log-format", "text"], ["--log-format", "auto"]):
            r = run_bytes(["run", p, "--drain"] + args)
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = self.text_lines(r.stderr)
            self.assertNotIn("\x1b", r.stderr.decode(), "no colours when stderr is not a terminal")
            first, last = TEXT_LINE.match(lines[0]), TEXT_LINE.match(lines[-1])
            self.assertEqual(first.group(1, 2), ("info ", "host"))
            self.assertRegex(first.group(3), r"^pipeline 'e2e' starting: 3 stages \(src: gen_source, "
                                             r"spam: passthrough, sink: file_sink\); cdcflow \d+\.\d+\.\d+, pid \d+$")
            self.assertEqual(last.group(1, 2), ("info ", "host"))
            self.assertRegex(last.group(3), r"^pipeline 'e2e' (drained|stopped) after \d+\.\d{3} s: \d+ events "
                                            r"\(\d+ applied, 0 rejected, 0 duplicates, 0 dropped\), exit 0$")

    def test_colours_only_on_a_terminal_without_no_color(self):
        import pty
        try:
            for fd in pty.openpty():
                os.close(fd)
        except OSError as e:
            # Some containers have no /dev/pts; CI and developer machines do.
            self.skipTest("no pseudo-terminal here (%s)" % e)
        p = self.write("p.yaml", pipeline(count=10))
        for no_color, coloured in ((None, True), ("", True), ("1", False)):
            with self.subTest(no_color=no_color):
                env = dict(ENV)
                if no_color is not None:
                    env["NO_COLOR"] = no_color
                master, slave = pty.openpty()
                try:
                    r = run_bytes(["run", p, "--drain"], env=env, stderr=slave)
                    os.close(slave)
                    slave = None
                    got = read_all(master)
                finally:
                    os.close(master)
                    if slave is not None:
                        os.close(slave)
                self.assertEqual(r.returncode, 0, got)
                text = got.decode().replace("\r\n", "\n")
                if coloured:
                    # Only the level is coloured; the rest of the line is as in a file.
                    self.assertRegex(text, r"Z \x1b\[32minfo \x1b\[m \[host\] pipeline 'e2e' starting")
                    self.assertRegex(text, r"Z \x1b\[33m\x1b\[1mwarn \x1b\[m \[host\] ")
                    self.assertEqual(re.sub(r"\x1b\[[0-9;]*m", "", text).count("\x1b"), 0)
                else:
                    self.assertNotIn("\x1b", text)
                    self.text_lines(text.encode())
        # JSON never carries colours.
        master, slave = pty.openpty()
        try:
            r = run_bytes(["run", p, "--drain", "--log-format", "json"], stderr=slave)
        finally:
            os.close(slave)
        got = read_all(master)
        os.close(master)
        self.assertEqual(r.returncode, 0, got)
        self.json_lines(got.replace(b"\r\n", b"\n"))

    def test_a_failure_ends_with_the_reason_in_both_formats(self):
        # An I/O error (a thrown exception would be isolated as a poison event).
        p = self.write("p.yaml", pipeline("plugin: passthrough\n    config: {io_error_at: 77}"))
        r = run_bytes(["run", p, "--drain"])
        self.assertEqual(r.returncode, 1)
        lines = self.text_lines(r.stderr)
        # Scripts read the last line: the reason, as before.
        self.assertEqual(lines[-1], "cdcflow: stage 'spam' (plugin 'passthrough'): injected I/O error at offset 77")
        self.assertRegex(lines[-2], r"error \[host\] pipeline 'e2e' failed after .* exit 1$")
        self.assertRegex(r.stderr.decode(), r"error \[spam\] injected I/O error at offset 77\n")
        r = run_bytes(["run", p, "--drain", "--log-format", "json", "--log-level", "error"])
        self.assertEqual(r.returncode, 1)
        lines = self.json_lines(r.stderr)
        err = [o for o in lines if o.get("event") == "error"]
        self.assertEqual([(o["stage"], o["msg"]) for o in err], [("spam", "injected I/O error at offset 77")])
        stop = lines[-1]
        self.assertEqual((stop["event"], stop["level"], stop["outcome"], stop["exit_code"]),
                         ("stop", "error", "failed", 1))
        self.assertEqual(stop["error"], "stage 'spam' (plugin 'passthrough'): injected I/O error at offset 77")
        # An invalid file: one JSON error line with the exit code.
        bad = self.write("bad.yaml", pipeline().replace("count: 1000", "count: many"))
        r = run_bytes(["run", bad, "--log-format", "json"])
        self.assertEqual(r.returncode, 3)
        lines = self.json_lines(r.stderr)
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual((lines[0]["event"], lines[0]["exit_code"]), ("error", 3))
        self.assertIn("bad.yaml:5:21: config key 'count'", lines[0]["msg"])

    def test_a_stop_cut_short_by_the_timeout_is_a_json_line_too(self):
        p = self.write("p.yaml", pipeline(count=0, output=self.path("out")).replace(
            "output: '" + self.path("out") + "'", "output: '" + self.path("out") + "', slow_us: 3000000")
            .replace("stages:", "settings: {batch_size: 10, shutdown_timeout_ms: 300}\nstages:"))
        proc = subprocess.Popen([BIN, "run", p, "--log-format", "json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=ENV)
        try:
            self.assertEqual(json.loads(proc.stderr.readline())["event"], "start")
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 4, err)
        lines = self.json_lines(err)
        self.assertEqual([(o["event"], o["signal"]) for o in lines if o.get("event") == "signal"],
                         [("signal", "SIGTERM")])
        last = lines[-1]
        self.assertEqual((last["event"], last["level"], last["outcome"], last["exit_code"], last["pipeline"]),
                         ("stop", "error", "timeout", 4, "e2e"))
        self.assertIn("shutdown did not finish within 300 ms", last["msg"])

    def test_retries_are_events(self):
        p = self.write("p.yaml", pipeline("plugin: passthrough\n    retry: {backoff_ms: 1}\n"
                                          "    config: {retry_at: 50}"))
        r = run_bytes(["run", p, "--drain", "--log-format", "json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        retries = [o for o in self.json_lines(r.stderr) if o.get("event") == "retry"]
        self.assertEqual([(o["stage"], o["level"], o["call"], o["attempt"]) for o in retries],
                         [("spam", "warn", "process", 1), ("spam", "warn", "process", 2)])
        self.assertEqual(retries[0]["error"], "injected transient failure")

    def test_hostile_plugin_message_cannot_forge_a_line(self):
        p = self.write("p.yaml", pipeline(spam("hostile: true"), count=10))
        r = run_bytes(["run", p, "--drain"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = self.text_lines(r.stderr)
        hostile = [ln for ln in lines if "hostile start" in ln]
        self.assertEqual(len(hostile), 1, lines)
        self.assertEqual([ln for ln in lines if "forged" in ln], hostile)
        m = TEXT_LINE.match(hostile[0])
        self.assertEqual(m.group(1, 2), ("info ", "spam"))
        # Control bytes and invalid UTF-8 as \xNN, valid UTF-8 kept.
        self.assertEqual(m.group(3), "hostile start\\x0a2026-01-01T00:00:00.000Z error [host] forged text line\\x0a"
                                     "{\"ts\":\"x\",\"level\":\"error\",\"stage\":\"host\",\"msg\":\"forged json\"}"
                                     "\\x0d\\x1b[31mred\\x1b[m \\xff\\xfe bad utf8 \\xc3( café quote\" back\\slash "
                                     "nel\\xc2\\x85 end")
        self.assertNotIn(b"\x1b", r.stderr)
        self.assertNotIn(b"\r", r.stderr)
        self.assertNotIn(b"\xc2\x85", r.stderr)

        r = run_bytes(["run", p, "--drain", "--log-format", "json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = self.json_lines(r.stderr)
        hostile = [o for o in lines if "hostile start" in o["msg"]]
        self.assertEqual(len(hostile), 1, lines)
        self.assertEqual([o for o in lines if "forged" in json.dumps(o)], hostile)
        self.assertEqual((hostile[0]["level"], hostile[0]["stage"]), ("info", "spam"))
        # JSON carries the text itself (newlines included); invalid bytes as the text \xNN.
        self.assertEqual(hostile[0]["msg"], HOSTILE.decode("utf-8", "backslashreplace"))
        self.assertNotIn(b"\x1b", r.stderr)
        self.assertNotIn(b"\xc2\x85", r.stderr)  # NEL as \u0085: a line break to Python's splitlines()


class Choosing(TempDirTest):
    def levels(self, err):
        return {m.group(1).strip() for m in map(TEXT_LINE.match, err.splitlines()) if m}

    def test_log_level_warn_hides_info(self):
        p = self.write("p.yaml", pipeline(spam("hostile: true"), count=10))
        r = run(["run", p, "--drain", "--log-level", "warn"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.levels(r.stderr), {"warn"}, r.stderr)  # the unfenced sink's warning
        self.assertNotIn("hostile", r.stderr)  # a plugin's info line too
        r = run(["run", p, "--drain"], env=dict(ENV, CDCFLOW_LOG_LEVEL="warn"))
        self.assertEqual(self.levels(r.stderr), {"warn"}, r.stderr)
        # The command line wins over the environment.
        r = run(["run", p, "--drain", "--log-level", "info"], env=dict(ENV, CDCFLOW_LOG_LEVEL="error"))
        self.assertEqual(self.levels(r.stderr), {"info", "warn"}, r.stderr)

    def test_log_mapping_in_the_pipeline_file(self):
        p = self.write("p.yaml", pipeline(head="log: {level: warn, format: json}\n", count=10))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(ln) for ln in r.stderr.splitlines()]
        self.assertEqual({o["level"] for o in lines}, {"warn"}, r.stderr)
        # The command line and the environment win over the file.
        r = run(["run", p, "--drain", "--log-format", "text", "--log-level", "info"], env=ENV)
        self.assertEqual(self.levels(r.stderr), {"info", "warn"}, r.stderr)
        r = run(["run", p, "--drain"], env=dict(ENV, CDCFLOW_LOG_FORMAT="text", CDCFLOW_LOG_LEVEL="info"))
        self.assertEqual(self.levels(r.stderr), {"info", "warn"}, r.stderr)
        # validate reads it too, and what is wrong with a stage's config is said in its format.
        bad = self.write("bad.yaml", pipeline(head="log: {level: warn, format: json}\n").replace("count: 1000",
                                                                                                 "count: many"))
        r = run(["validate", bad], env=ENV)
        self.assertEqual(r.returncode, 3, r.stderr)
        line = json.loads(r.stderr)
        self.assertEqual((line["level"], line["event"], line["exit_code"]), ("error", "error", 3))
        self.assertIn("bad.yaml:6:21: config key 'count'", line["msg"])

    def test_bad_values_in_the_file_name_their_position(self):
        cases = [
            ("log: {format: xml}\n", "p.yaml:2:15: log.format must be one of text, json, auto, got 'xml'"),
            ("log: {level: loud}\n", "p.yaml:2:14: log.level must be one of debug, info, warn, error, got 'loud'"),
            ("log: {colour: red}\n", "p.yaml:2:7: unknown log key 'colour' (known: level, format, "
                                     "plugin_lines_per_second)"),
            ("log: json\n", "p.yaml:2:1: 'log' must be a mapping, got a scalar"),
            ("log: {plugin_lines_per_second: -1}\n", "p.yaml:2:32: log.plugin_lines_per_second must be an integer "
                                                     "from 0 to 1000000, got '-1'"),
        ]
        for head, want in cases:
            with self.subTest(head=head):
                p = self.write("p.yaml", pipeline(head=head))
                for cmd in (["run", p, "--drain"], ["validate", p]):
                    r = run(cmd, env=ENV)
                    self.assertEqual(r.returncode, 3, r.stderr)
                    self.assertEqual(r.stderr, "cdcflow: " + self.path(want) + "\n")

    def test_bad_log_format_is_a_usage_error(self):
        p = self.write("p.yaml", pipeline())
        r = run(["run", p, "--log-format", "xml"], env=ENV)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "cdcflow run: --log-format: 'xml' is not one of text, json, auto\n")
        r = run(["validate", p], env=dict(ENV, CDCFLOW_LOG_FORMAT="yaml"))
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "cdcflow validate: CDCFLOW_LOG_FORMAT: 'yaml' is not one of text, json, auto\n")
        r = run(["run", p, "--log-level", "loud"], env=ENV)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "cdcflow run: --log-level: 'loud' is not one of debug, info, warn, error\n")
        for cmd in (["plugins"], ["status", "127.0.0.1:1"]):
            r = run(cmd + ["--log-format", "xml"], env=ENV)
            self.assertEqual(r.returncode, 2, cmd)


class Limits(TempDirTest):
    def test_a_plugin_logging_in_a_loop_is_rate_limited(self):
        # 5000 lines in a loop at start and 500 from a thread of its own.
        p = self.write("p.yaml", pipeline(spam("start_lines: 5000, thread_lines: 500"), count=10))
        t0 = time.monotonic()
        r = run_bytes(["run", p, "--drain", "--log-format", "json"])
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(ln) for ln in r.stderr.splitlines()]
        spam_lines = [o for o in lines if o["stage"] == "spam" and "event" not in o]
        notes = [o for o in lines if o.get("event") == "log_suppressed"]
        self.assertTrue(notes, "no 'suppressed' line")
        self.assertTrue(all(o["stage"] == "spam" and o["limit"] == 100 and o["level"] == "warn" for o in notes))
        # Nothing unaccounted for: each line was written or counted as suppressed.
        self.assertEqual(len(spam_lines) + sum(o["suppressed"] for o in notes), 5500)
        # At most 100 a second (each second that began during the run).
        self.assertLessEqual(len(spam_lines), 100 * (int(took) + 1))
        self.assertEqual(lines[-1]["event"], "stop")  # what is suppressed is said before it
        # log.plugin_lines_per_second: 0 lifts the limit.
        p = self.write("p.yaml", pipeline(spam("start_lines: 5000, thread_lines: 500"), count=10,
                                          head="log: {plugin_lines_per_second: 0}\n"))
        r = run(["run", p, "--drain"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.count("] spam line "), 5000)
        self.assertEqual(r.stderr.count("] thread line "), 500)
        self.assertNotIn("suppressed", r.stderr)

    def noisy(self, fmt):
        # 20,000 lines of about 300 bytes: 6 MB, a hundred times what a pipe holds.
        return self.write("p.yaml", pipeline(spam("start_lines: 20000, batch_lines: 20, line_bytes: 300"),
                                             count=2000, output=self.path("out"),
                                             head="log: {plugin_lines_per_second: 0, format: %s}\n" % fmt))

    def assert_all_committed(self, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"2000 events: 2000 applied", r.stdout)
        with open(self.path("out")) as f:
            offsets = [int(line.split()[0]) for line in f]
        self.assertEqual(offsets, list(range(1, 2001)))  # nothing but events in the sink's file

    def test_a_full_stderr_pipe_nobody_reads_does_not_stall_the_host(self):
        for fmt in ("json", "text"):
            with self.subTest(fmt=fmt):
                for name in os.listdir(self.dir):
                    os.remove(self.path(name))
                p = self.noisy(fmt)
                rd, wr = os.pipe()
                try:
                    r = run_bytes(["run", p, "--drain"], stderr=wr, timeout=25)
                    os.close(wr)
                    wr = None
                    self.assert_all_committed(r)
                    # What the pipe took is whole lines.
                    got = read_all(rd)
                    self.assertGreater(len(got), 1000)
                    self.assertTrue(got.endswith(b"\n"))
                    for line in got.split(b"\n")[:-1]:
                        if fmt == "json":
                            json.loads(line)
                        else:
                            self.assertRegex(line.decode(), TEXT_LINE)
                finally:
                    os.close(rd)
                    if wr is not None:
                        os.close(wr)

    def test_a_closed_stderr_does_not_kill_the_host(self):
        # The pipe's reader is gone (EPIPE; SIGPIPE would kill the host).
        p = self.noisy("text")
        rd, wr = os.pipe()
        os.close(rd)
        try:
            r = run_bytes(["run", p, "--drain"], stderr=wr, timeout=25)
        finally:
            os.close(wr)
        self.assert_all_committed(r)
        # No stderr at all (fd 2 closed): the log must not land in the first file opened (the sink's).
        os.remove(self.path("out"))
        os.remove(self.path("out.checkpoint"))
        r = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", BIN, "run", p, "--drain"], stdout=subprocess.PIPE,
                           env=ENV, timeout=25)
        self.assert_all_committed(r)


class OwnerChanges(AccountsTest):
    def test_standby_and_take_over_are_json_events(self):
        c = self.conn()
        insert(c, Generator(seed=5, accounts=50).rows(500))
        c.close()
        a = start(["run", PIPELINE], env=self.env)
        b = None
        try:
            wait_for(lambda: checkpoint(self.db) == 500, what="host A applied the outbox")
            b = start(["run", PIPELINE, "--drain", "--log-format", "json"], env=self.env)
            lines = []
            reader = threading.Thread(target=lambda: lines.extend(b.stderr))
            reader.start()
            wait_for(lambda: any('"owner_change"' in ln for ln in lines), what="host B waits as a standby")
            a.send_signal(signal.SIGTERM)
            a.communicate(timeout=60)
            self.assertEqual(a.returncode, 0)
            out_b = b.stdout.read()
            b.wait(timeout=60)
            reader.join(timeout=60)
            self.assertEqual(b.returncode, 0, "".join(lines)[-3000:])
            self.assertIn("'accounts': 0 events:", out_b)  # A had applied everything
        finally:
            for proc in (a, b):
                if proc and proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for f in (proc.stdout, proc.stderr) if proc else ():
                    f.close()
        events = [json.loads(ln) for ln in lines]
        changes = [o for o in events if o.get("event") == "owner_change"]
        self.assertEqual([o["role"] for o in changes], ["standby", "owner"], changes)
        self.assertIn("pid %d" % a.pid, changes[0]["owner"])
        self.assertEqual((changes[0]["stage"], changes[0]["pipeline"]), ("host", "accounts"))
        self.assertEqual(events[-1]["event"], "stop")


if __name__ == "__main__":
    main()

"""Operations attacked as an operator and an attacker would: the endpoints
scraped hard while a backlog drains, hostile pipeline names, a port already
held, a soft memory limit below the host's own size, SIGTERM twice. Each test
here is a finding that once failed (or a check that it cannot)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TEST_PLUGINS, TempDirTest, free_port, main, run, start, wait_for  # noqa: E402
from test_metrics import parse, promtool_check, value  # noqa: E402
import test_breaker  # noqa: E402  (its helpers; its test class is not imported, so not run twice)
from outbox_gen import Generator, insert, open_outbox  # noqa: E402
import sqlite3  # noqa: E402

# A sanitized build is several times slower: the same scenarios on a
# smaller backlog, so that each stays well within its time limits.
SANITIZED = os.environ.get("CDCFLOW_SANITIZE", "none") not in ("", "none")
BACKLOG = 40_000 if SANITIZED else 200_000

TOTALS = re.compile(r"^pipeline (.*): (\d+) events: (\d+) applied, (\d+) rejected, (\d+) duplicates, "
                    r"(\d+) dropped$", re.M)


def get(port, path, timeout=5):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as resp:
        return resp.status, resp.read()


class Operations(TempDirTest):
    def gen_pipeline(self, name, count, extra_settings="", sink_cfg="", idle=True):
        # idle: the source stays idle after `count` (a running host), else
        # it is exhausted there (--drain ends).
        return self.write("p.yaml", "pipeline: %s\nplugin_path: [%s]\n%sstages:\n"
                          "  - {id: src, plugin: gen_source, config: {count: %d, idle_after: %d}}\n"
                          "  - {id: pass, plugin: passthrough, config: {reject_every: 10}}\n"
                          "  - {id: sink, plugin: file_sink, config: {%s}}\n"
                          % (name, TEST_PLUGINS, extra_settings, count, count if idle else 0, sink_cfg))

    def start_host(self, pipeline, *args):
        port = free_port()
        proc = start(["run", pipeline, "--http", "127.0.0.1:%d" % port] + list(args))
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        wait_for(lambda: self.answers(port), timeout=10, what="the endpoints")
        return proc, port

    @staticmethod
    def answers(port, path="/health"):
        try:
            return get(port, path, timeout=1)[0] == 200
        except OSError:
            return False

    def test_a_hostile_pipeline_name_keeps_the_page_clean_and_the_totals_line_one_line(self):
        # Quotes, a backslash, a newline, U+2028, a control byte: the YAML
        # loader takes any string as the pipeline's name.
        name = 'q"b\\s\nnl \u00e9\u2028 \x01 end'
        yaml_name = '"q\\"b\\\\s\\nnl \\u00e9\\u2028 \\x01 end"'
        proc, port = self.start_host(self.gen_pipeline(yaml_name, 500))
        wait_for(lambda: json.loads(get(port, "/health")[1]).get("events") == 500, timeout=20,
                 what="500 events committed")
        page = get(port, "/metrics")[1].decode()
        health = json.loads(get(port, "/health")[1])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        promtool_check(self, page)
        self.assertEqual(health["pipeline"], name)
        # The label value reads back as the name (the format's escapes: \\ \" \n).
        labels = re.findall(r'cdcflow_events_total\{pipeline="((?:[^"\\]|\\.)*)"', page)
        self.assertTrue(labels)
        unescaped = re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), labels[0])
        self.assertEqual(unescaped, name)
        # The totals line is one line that scripts can read; the name in it
        # is escaped as in the log lines.
        totals = TOTALS.findall(out)
        self.assertEqual(len(totals), 1, out)
        self.assertEqual(totals[0][1:], ("500", "450", "50", "0", "0"))
        self.assertNotIn("\n", totals[0][0])

    def test_scraped_hard_while_a_backlog_drains_the_counters_equal_the_totals_line(self):
        proc, port = self.start_host(self.gen_pipeline("hard", BACKLOG))
        # /ready answers 503 until every stage started and the checkpoint is
        # claimed (slow under the sanitizers): the scraping starts once it is
        # ready, so that any error from then on is a finding.
        wait_for(lambda: self.answers(port, "/ready"), timeout=10, what="/ready 200")
        stop = threading.Event()
        errors, scrapes = [], [0]
        lock = threading.Lock()

        def client(path):
            while not stop.is_set():
                try:
                    status, body = get(port, path)
                    if path == "/health":
                        json.loads(body)
                    with lock:
                        scrapes[0] += 1
                except (OSError, ValueError) as e:  # a refused or cut connection is a finding too
                    with lock:
                        errors.append("%s: %r" % (path, e))
        threads = [threading.Thread(target=client, args=(("/metrics", "/health", "/ready")[i % 3],))
                   for i in range(20)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: json.loads(get(port, "/health", timeout=10)[1]).get("events") == BACKLOG,
                     timeout=25, what="the backlog committed")
        finally:
            stop.set()
            for t in threads:
                t.join()
        page = get(port, "/metrics")[1].decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        # Past the server's max_connections a connection may be closed at
        # once (documented); anything else is an error.
        self.assertGreater(scrapes[0], 20)
        for e in errors:
            self.assertRegex(e, r"Connection reset|RemoteDisconnected|closed connection|BadStatusLine", e)
        totals = TOTALS.findall(out)
        self.assertEqual(len(totals), 1, out)
        events, applied, rejected = (int(x) for x in totals[0][1:4])
        self.assertEqual((events, applied, rejected), (BACKLOG, BACKLOG * 9 // 10, BACKLOG // 10))
        f = parse(page)
        self.assertEqual(value(f, "cdcflow_events_total", stage="sink", outcome="applied"), applied)
        self.assertEqual(value(f, "cdcflow_events_total", stage="pass", outcome="rejected"), rejected)
        self.assertEqual(value(f, "cdcflow_events_total", stage="src"), events)
        self.assertEqual(value(f, "cdcflow_batch_events_sum"), events)

    def test_a_port_another_process_holds_is_a_one_line_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            r = run(["run", self.gen_pipeline("held", 10), "--http", "127.0.0.1:%d" % port, "--drain"],
                    timeout=20)
        self.assertNoCrash(r)
        self.assertNotEqual(r.returncode, 0)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("127.0.0.1:%d" % port, last)
        self.assertRegex(last, r"in use")
        self.assertNotIn("pipeline 'held': 10 events", r.stdout)  # nothing ran

    def test_a_soft_memory_limit_below_the_start_size_slows_the_source_and_still_finishes(self):
        # 1 MiB: far below any host's resident size from the start. The
        # source reads batch_size events at a time; it must not wait forever.
        p = self.gen_pipeline("tight", 20_000, "settings: {memory_soft_limit_bytes: 1MiB, batch_size: 100}\n",
                              idle=False)
        r = run(["run", p, "--drain"], timeout=25)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        totals = TOTALS.findall(r.stdout)
        self.assertEqual(totals[0][1:3], ("20000", "18000"), r.stdout)
        self.assertRegex(r.stderr, r"the source slows down")

    def test_sigterm_twice_under_load_exits_at_once_without_a_crash(self):
        # A slow sink (20 ms a batch) behind an endless source: the drain
        # after the first SIGTERM takes a while; the second ends it at once.
        p = self.gen_pipeline("twice", 0, "settings: {shutdown_timeout_ms: 20000}\n", "slow_us: 20000")
        proc, port = self.start_host(p)
        wait_for(lambda: json.loads(get(port, "/health")[1]).get("events", 0) > 0, timeout=10,
                 what="events committed")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=15)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertGreaterEqual(proc.returncode, 0, err[-2000:])  # an exit, not a crash
        self.assertNotIn("AddressSanitizer", err)


    def test_a_source_breaker_while_the_outbox_is_locked_for_reads_shows_in_health_and_resumes(self):
        # The outbox in rollback-journal mode: an application's exclusive
        # lock then blocks the source's reads too (in WAL nothing can).
        outbox, proj = self.path("outbox.db"), self.path("proj.db")
        c = sqlite3.connect(outbox)
        open_outbox(c)
        c.execute("PRAGMA journal_mode=DELETE")
        gen = Generator(seed=93, accounts=100)
        insert(c, gen.rows(1000))
        c.close()
        with open(test_breaker.PIPELINE) as f:
            text = f.read()
        first = text.index(test_breaker.DB_LINE)
        second = text.index(test_breaker.DB_LINE, first + 1)
        text = text[:second] + "      database: %s\n" % proj + text[second + len(test_breaker.DB_LINE):]
        text = text.replace("      database: ${CDCFLOW_DB:-demo/accounts.db}\n",
                            "      database: %s\n      busy_timeout_ms: 50\n" % outbox)
        text = text.replace("    plugin: outbox_source\n",
                            "    plugin: outbox_source\n"
                            "    retry: {backoff_ms: 20, max_backoff_ms: 100}\n"
                            "    breaker: {failures: 2, cooldown_ms: 300}\n")
        proc, port = self.start_host(self.write("acc.yaml", text), "--log-format", "json")

        def source_breaker():
            code, body = test_breaker.get_health(port)
            return code, body and [s["breaker"] for s in body["stages"] if s["id"] == "outbox"][0]
        wait_for(lambda: test_breaker.checkpoint(proj) == 1000, timeout=20, what="the first 1000 committed")
        locker = sqlite3.connect(outbox, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            wait_for(lambda: source_breaker() == (503, "open"), timeout=10,
                     what="/health 503 with the source's breaker open")
            self.assertIsNone(proc.poll(), "a locked outbox must not stop the pipeline")
        finally:
            locker.execute("COMMIT")
            locker.close()
        c = sqlite3.connect(outbox)
        insert(c, gen.rows(500))
        c.close()
        wait_for(lambda: test_breaker.checkpoint(proj) == 1500 and source_breaker() == (200, "closed"),
                 timeout=15, what="the breaker closed and the rest committed")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        self.assertEqual(proc.returncode, 0, err[-3000:])
        # Every log line stays one valid JSON object while the breaker trips.
        lines = [json.loads(line) for line in err.splitlines()]
        events = [(o.get("event"), o.get("stage"), o.get("call")) for o in lines]
        self.assertIn(("breaker_open", "outbox", "poll"), events)
        self.assertIn(("breaker_closed", "outbox", "poll"), events)
        self.assertLess(events.index(("breaker_open", "outbox", "poll")),
                        events.index(("breaker_closed", "outbox", "poll")))


    def test_sigterm_under_a_backlog_while_scraped_exits_0_in_time_and_a_restart_gives_the_model(self):
        from accounts_model import replay
        db = self.path("accounts.db")
        c = sqlite3.connect(db)
        open_outbox(c)
        insert(c, Generator(seed=97, accounts=3000).rows(BACKLOG))
        c.close()
        with open(test_breaker.PIPELINE) as f:
            text = f.read().replace("${CDCFLOW_DB:-demo/accounts.db}", db)
        p = self.write("acc.yaml", text.replace("shutdown_timeout_ms: 10000", "shutdown_timeout_ms: 5000"))
        proc, port = self.start_host(p)
        stop = threading.Event()

        def scraper():
            while not stop.is_set():
                try:
                    get(port, "/metrics", timeout=2)
                    get(port, "/health", timeout=2)
                except OSError:
                    pass  # the endpoints close with the stop
        threads = [threading.Thread(target=scraper) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: test_breaker.checkpoint(db) > 0, timeout=20, what="a first commit")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
            took = time.monotonic() - t0
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(proc.returncode, 0, err[-3000:])
        self.assertLess(took, 5 + 3)  # within shutdown_timeout_ms (and the exit's own second or two)
        totals = TOTALS.findall(out)
        self.assertEqual(len(totals), 1, out)
        stopped_at = test_breaker.checkpoint(db)
        # What the totals line counted is what the checkpoint covers (the
        # last batch's events are all in; the deduper marks none here).
        self.assertEqual(int(totals[0][1]), stopped_at)
        r = run(["run", p, "--drain"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        c = sqlite3.connect(db)
        model = replay(c)
        got = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        self.assertEqual(got, model.rows())
        self.assertEqual({r[0] for r in c.execute("SELECT event_id FROM dead_letters")}, set(model.rejected))
        self.assertEqual(test_breaker.checkpoint(db), BACKLOG)
        c.close()


    def test_many_poison_events_in_the_validator_position_are_dead_lettered_and_the_rest_is_the_model(self):
        # A transform before the validator throws on every 97th event: each
        # is isolated by bisection and dead-lettered by it; a later copy of
        # an id it rejected is a duplicate, as for any rejected id.
        from accounts_model import Model
        db = self.path("accounts.db")
        c = sqlite3.connect(db)
        open_outbox(c)
        insert(c, Generator(seed=98, accounts=300).rows(20_000))
        with open(test_breaker.PIPELINE) as f:
            text = f.read().replace("${CDCFLOW_DB:-demo/accounts.db}", db)
        text = text.replace("  - id: validate\n", "  - id: pass\n    plugin: passthrough\n"
                            "    config: {throw_every: 97}\n\n  - id: validate\n")
        text = text.replace("stages:\n", "plugin_path: [%s]\n\nstages:\n" % json.dumps(TEST_PLUGINS), 1)
        r = run(["run", self.write("acc.yaml", text), "--drain"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        m = Model()
        for seq, *row in c.execute("SELECT seq, id, aggregatetype, aggregateid, type, payload, timestamp "
                                   "FROM outbox ORDER BY seq"):
            if seq % 97 == 0:
                if row[0] not in m.seen:
                    m.seen.add(row[0])
                    m.rejected[row[0]] = "pass"
                continue
            m.apply_row(*row)
        got = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        self.assertEqual(got, m.rows())
        letters = list(c.execute("SELECT event_id, stage, reason, source_position FROM dead_letters"))
        ids = [e for e, *_ in letters]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual({e: s for e, s, *_ in letters}, m.rejected)
        for e, stage, reason, pos in letters:
            if stage == "pass":
                self.assertEqual(reason, "injected exception at offset %s" % pos)
        self.assertEqual(test_breaker.checkpoint(db), 20_000)
        c.close()


    def test_the_smallest_byte_bounds_with_events_larger_than_them_still_move_every_event(self):
        # 1 KiB (the smallest batch_max_bytes, and so queue_max_bytes) and
        # events of ~300 kB: one event at a time, nothing stalls or is lost.
        p = self.write("big.yaml", "pipeline: big\nplugin_path: [%s]\n"
                       "settings: {batch_max_bytes: 1024, queue_max_bytes: 1024, batch_size: 1000}\nstages:\n"
                       "  - {id: src, plugin: gen_source, config: {count: 200, payload_bytes: 300000}}\n"
                       "  - {id: pass, plugin: passthrough, config: {}}\n"
                       "  - {id: sink, plugin: file_sink, config: {}}\n" % TEST_PLUGINS)
        r = run(["run", p, "--drain"], timeout=25)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(TOTALS.findall(r.stdout)[0][1:3], ("200", "200"), r.stdout)


    def test_status_against_a_hostile_host_prints_clean_lines_and_never_crashes(self):
        # A fake host: escape sequences in every text field of /health, a
        # /metrics page past the client's 64 MiB limit, then a malformed one.
        import http.server
        pages = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = pages.get(self.path.split("?")[0], b"")
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client stops reading past its limit
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        addr = "127.0.0.1:%d" % server.server_address[1]
        pages["/health"] = json.dumps({
            "pipeline": "\x1b[2J\x1b]0;owned\x07", "state": "running\x1b[5m", "role": "owner",
            "healthy": True, "stages": [{"id": "\x1b[31mred", "state": "running", "breaker": "open"}],
            "events": 1}).encode()
        pages["/metrics"] = b"cdcflow_events_total 1\n" * (3 << 20)  # 72 MB
        # Three times: Beast's own body limit let such a page through in
        # most runs, not all.
        for _ in range(3):
            r = run(["status", addr], timeout=30)
            self.assertNoCrash(r)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("\x1b", r.stdout + r.stderr)  # shown as \x1b, never sent to the terminal
            self.assertIn("\\x1b[31mred", r.stdout)
            self.assertIn("/metrics: body limit exceeded", r.stdout + r.stderr)
        pages["/metrics"] = (b'cdcflow_events_total{stage="a} 1\n\xff\xfe {{{\n'
                             b'cdcflow_queue_depth_batches{queue="\x1bq"} NaN\n')
        r = run(["status", addr], timeout=30)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("\x1b", r.stdout + r.stderr)
        pages["/health"] = b'{"state": "running", "stages": [{"id": 5}], "events": "many"'  # cut short
        r = run(["status", addr], timeout=30)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("without cdcflow's health JSON", r.stderr)


if __name__ == "__main__":
    main()

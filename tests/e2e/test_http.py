"""The HTTP endpoints and `cdcflow status`, end to end on the real binary:
/health, /ready and /metrics served on an ephemeral port (`--http
127.0.0.1:0`; the address is read from the host's log line), slow and idle
clients that must neither starve the endpoints nor delay a stop, the request
limits, the strict address grammar, the pipeline file's `http:` mapping,
owner and standby readiness, and status's summary, --watch and exit codes."""
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BIN, TEST_PLUGINS, TempDirTest, env_with, main, run, start, wait_for  # noqa: E402
from outbox_gen import Generator, insert  # noqa: E402
from test_accounts import PIPELINE, AccountsTest  # noqa: E402

ENV = env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS)
SERVING = re.compile(r"serving /health, /ready and /metrics on http://(\S+)")


def pipeline(settings="", http="", count=1000):
    """gen_source -> passthrough -> file_sink; the source idles after `count`."""
    return ("pipeline: e2e\n" + settings + http + "stages:\n"
            "  - id: src\n    plugin: gen_source\n    config: {count: %d, idle_after: %d}\n"
            "  - id: pass\n    plugin: passthrough\n"
            "  - id: sink\n    plugin: file_sink\n    config: {output: OUT}\n") % (count, count)


class Host:
    """A running `cdcflow run`; stderr is collected on a thread (the pipe
    never fills) and the bound address taken from the log line."""

    def __init__(self, args, env=ENV):
        self.proc = start(args, env=env)
        self.lines = []
        self.found = threading.Event()
        self.addr = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = SERVING.search(line)
            if m and not self.addr:
                self.addr = m.group(1)
                self.found.set()
        self.found.set()

    def wait_serving(self, timeout=20):
        self.found.wait(timeout)
        if not self.addr:
            raise AssertionError("no 'serving' line; stderr:\n" + "".join(self.lines)[-3000:])
        return self.addr

    def port(self):
        return int(self.addr.rsplit(":", 1)[1])

    def url(self, path):
        return "http://%s%s" % (self.addr, path)

    def finish(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        return self.proc.returncode, out, "".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()


def get(url, timeout=2.0, method="GET", data=None):
    """(status, body text); HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Trickler(threading.Thread):
    """A client that sends a request's first line, then one header byte every
    `every` seconds; records when the server cut it."""

    def __init__(self, port, every=0.3, family=socket.AF_INET, host="127.0.0.1"):
        super().__init__(daemon=True)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.connect((host, port))
        self.connected_at = time.monotonic()
        self.every = every
        self.cut_at = None
        self.done = threading.Event()

    def run(self):
        try:
            self.sock.sendall(b"GET /health HTTP/1.1\r\nX-a: ")
            while not self.done.is_set():
                self.sock.sendall(b"a")
                # A cut shows as EOF or a reset on the next read or write.
                self.sock.settimeout(self.every)
                try:
                    if self.sock.recv(1) == b"":
                        break
                except socket.timeout:
                    pass
        except OSError:
            pass
        self.cut_at = time.monotonic()
        self.sock.close()


class Endpoints(TempDirTest):
    def host(self, settings="", http="", args=None, count=1000):
        text = pipeline(settings, http, count).replace("OUT", self.path("events.txt"))
        p = self.write("p.yaml", text)
        h = Host(["run", p] + (args if args is not None else ["--http", "127.0.0.1:0"]))
        self.addCleanup(h.kill)
        h.wait_serving()
        return h

    def test_health_ready_metrics(self):
        h = self.host()
        wait_for(lambda: json.loads(get(h.url("/health"))[1]).get("applied") == 1000, what="1000 applied")
        status, body = get(h.url("/health"))
        self.assertEqual(status, 200)
        j = json.loads(body)
        for key in ("pipeline", "state", "role", "healthy", "ready", "stages", "events", "applied", "rejected",
                    "duplicates", "dropped", "batches"):
            self.assertIn(key, j)
        self.assertEqual((j["pipeline"], j["state"], j["role"], j["healthy"], j["ready"]),
                         ("e2e", "running", "owner", True, True))
        self.assertNotIn("owner", j)  # only while a standby
        self.assertNotIn("last_error", j)
        self.assertEqual([s["id"] for s in j["stages"]], ["src", "pass", "sink"])
        self.assertEqual([s["kind"] for s in j["stages"]], ["source", "transform", "sink"])
        for s in j["stages"]:
            self.assertEqual((s["state"], s["breaker"], s["retries"], s["breaker_trips"]),
                             ("running", "closed", 0, 0))
            self.assertNotIn("last_error", s)
        self.assertEqual(get(h.url("/ready")), (200, '{"ready":true}'))
        with urllib.request.urlopen(h.url("/metrics"), timeout=2) as r:
            self.assertEqual(r.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
            self.assertIn("# TYPE", r.read().decode())
        code, out, err = h.finish()
        self.assertEqual(code, 0, err)

    def test_methods_paths_and_limits(self):
        h = self.host()
        self.assertEqual(get(h.url("/nope"))[0], 404)
        self.assertEqual(get(h.url("/health"), method="POST", data=b"x=1")[0], 405)
        self.assertEqual(get(h.url("/health"), method="DELETE")[0], 405)
        with urllib.request.urlopen(urllib.request.Request(h.url("/health"), method="HEAD"), timeout=2) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.read(), b"")
        # Headers over the limit (8 KiB): 431, then the connection closes.
        with socket.create_connection(("127.0.0.1", h.port()), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n")
            answer = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 431"), answer[:200])
        self.assertEqual(get(h.url("/health"))[0], 200)  # and the host serves on

    def test_trickling_clients_neither_starve_health_nor_outlive_their_deadline(self):
        h = self.host(http="http: {request_timeout_ms: 1500}\n")
        slow = [Trickler(h.port()) for _ in range(3)]
        for t in slow:
            t.start()
        # While all three trickle, /health answers, each time within 2 s.
        for _ in range(3):
            status, _ = get(h.url("/health"), timeout=2)
            self.assertEqual(status, 200)
            time.sleep(0.3)
        for t in slow:
            t.join(timeout=10)
            self.assertIsNotNone(t.cut_at, "a trickling client was never cut")
            # Cut at its deadline: not before it (bytes kept arriving), and
            # not long after (a byte arriving never extended it).
            lived = t.cut_at - t.connected_at
            self.assertGreater(lived, 1.2)
            self.assertLess(lived, 6.0)
        code, _, err = h.finish()
        self.assertEqual(code, 0, err)

    def test_sigterm_is_not_delayed_by_connected_clients(self):
        # The request deadline (10 s) is longer than the shutdown timeout
        # (3 s): exit 0 proves the stop did not wait for the clients.
        h = self.host(settings="settings: {shutdown_timeout_ms: 3000}\n",
                      http="http: {request_timeout_ms: 10000}\n")
        slow = [Trickler(h.port()) for _ in range(3)]
        for t in slow:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        code, out, err = h.finish(timeout=20)
        took = time.monotonic() - t0
        for t in slow:
            t.done.set()
        self.assertEqual(code, 0, err[-2000:])
        self.assertNotIn("shutdown did not finish", err)
        self.assertIn("1000 events", out)
        self.assertLess(took, 3.0)

    def test_past_max_connections_health_is_back_after_one_deadline(self):
        h = self.host(http="http: {request_timeout_ms: 1000, max_connections: 4}\n")
        idle = [socket.create_connection(("127.0.0.1", h.port())) for _ in range(6)]
        try:
            time.sleep(0.3)  # the host has accepted them: 4 held, 2 closed at once
            with self.assertRaises(OSError):
                get(h.url("/health"), timeout=1)
            # Each held connection ends at its deadline; then /health answers.
            t0 = time.monotonic()
            wait_for(lambda: self._ok(h), timeout=5, what="/health after the idle connections' deadline")
            self.assertLess(time.monotonic() - t0, 3.0)
        finally:
            for s in idle:
                s.close()

    def _ok(self, h):
        try:
            return get(h.url("/health"), timeout=1)[0] == 200
        except OSError:
            return False

    def test_ipv6_loopback(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError as e:
            self.skipTest("no IPv6 loopback on this machine: %s" % e)
        h = self.host(args=["--http", "[::1]:0"])
        self.assertTrue(h.addr.startswith("[::1]:"), h.addr)
        wait_for(lambda: get(h.url("/ready"))[0] == 200, what="/ready 200 over IPv6")
        r = run(["status", h.addr])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_addresses_are_parsed_strictly(self):
        p = self.write("p.yaml", pipeline().replace("OUT", self.path("events.txt")))
        for bad in ["127.0.0.1:19464x", "127.0.0.1:70000", "[::1", "host:", "1.2.3:80", "example.com:80", ""]:
            with self.subTest(bad):
                r = run(["run", p, "--http", bad], env=ENV, timeout=20)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("--http: '%s' is not an address" % bad, r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertNotIn("running", r.stderr)  # refused before anything started
                r = run(["status", bad], timeout=20)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("'%s' is not an address" % bad, r.stderr)

    def test_an_address_in_use_is_an_error_before_the_pipeline_starts(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            p = self.write("p.yaml", pipeline().replace("OUT", self.path("events.txt")))
            r = run(["run", p, "--http", "127.0.0.1:%d" % port], env=ENV, timeout=20)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("cannot listen on http://127.0.0.1:%d: Address already in use (--http)" % port, r.stderr)
            self.assertNotIn("pipeline 'e2e' running", r.stderr)
            self.assertFalse(os.path.exists(self.path("events.txt")) and os.path.getsize(self.path("events.txt")))

    def test_http_listen_from_the_pipeline_file(self):
        h = self.host(http="http:\n  listen: 127.0.0.1:0\n", args=[])
        self.assertEqual(get(h.url("/health"))[0], 200)
        h.finish()
        # --http overrides listen (here: one that could never bind).
        h = self.host(http="http: {listen: '192.0.2.1:9'}\n", args=["--http", ":0"])
        self.assertTrue(h.addr.startswith("127.0.0.1:"), h.addr)
        h.finish()
        # A bad listen is the file's fault: FILE:LINE:COL, exit 3.
        p = self.write("bad.yaml", pipeline(http="http:\n  listen: 'host:'\n").replace("OUT", "x"))
        r = run(["run", p], env=ENV, timeout=20)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("bad.yaml:3:11: http.listen: 'host:' is not an address: ", r.stderr)
        r = run(["validate", p], env=ENV, timeout=20)
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_status_summary_and_exit_codes(self):
        h = self.host()
        wait_for(lambda: json.loads(get(h.url("/health"))[1]).get("applied") == 1000, what="1000 applied")
        r = run(["status", h.addr], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pipeline  e2e", r.stdout)
        self.assertIn("running (owner), healthy, ready", r.stdout)
        for stage, kind in (("src", "source"), ("pass", "transform"), ("sink", "sink")):
            self.assertRegex(r.stdout, r"\n  %s +%s +running +closed " % (stage, kind))
        self.assertIn("1000 events: 1000 applied", r.stdout)
        # --metrics: the raw page after the summary.
        r = run(["status", h.addr, "--metrics"], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("# TYPE", r.stdout)
        # --watch on a pipe: blocks one after another; SIGTERM ends it with 0.
        w = start(["status", h.addr, "--watch", "--interval", "0.2"])
        time.sleep(1.5)
        w.send_signal(signal.SIGTERM)
        out, err = w.communicate(timeout=10)
        self.assertEqual(w.returncode, 0, err)
        self.assertGreaterEqual(out.count("pipeline  e2e"), 2, out)
        self.assertNotIn("\x1b[", out)  # no terminal control on a pipe
        code, _, err = h.finish()
        self.assertEqual(code, 0, err)
        # The host is gone: 2, at once.
        t0 = time.monotonic()
        r = run(["status", h.addr], timeout=20)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot reach http://%s/health" % h.addr, r.stderr)
        self.assertLess(time.monotonic() - t0, 5)
        # --watch keeps watching a host that is away (it may come back).
        w = start(["status", h.addr, "--watch", "--interval", "0.2"])
        time.sleep(1.0)
        w.send_signal(signal.SIGINT)
        out, err = w.communicate(timeout=10)
        self.assertEqual(w.returncode, 0, err)
        self.assertGreaterEqual(out.count("cannot reach http://%s/health" % h.addr), 2, out)

    def test_status_against_an_unhealthy_and_a_silent_host(self):
        # A failing host exits; its 503 is shown by a stand-in that answers
        # what a failed host's /health says.
        body = json.dumps({"pipeline": "p", "state": "failed", "role": "owner", "healthy": False, "ready": False,
                           "last_error": "stage 'sink': disk full\x1b[2J",
                           "stages": [{"id": "sink", "plugin": "x", "kind": "sink", "state": "failed",
                                       "breaker": "open", "retries": 2, "breaker_trips": 1}],
                           "events": 1, "applied": 0, "rejected": 0, "duplicates": 0, "dropped": 0, "batches": 0})

        scrapes = [0]

        class Failed(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                # The sink's counter grows by 100 between two scrapes.
                if self.path == "/metrics":
                    scrapes[0] += 1
                payload = body.encode() if self.path == "/health" else (
                    "# TYPE cdcflow_events_total counter\n"
                    "cdcflow_events_total{pipeline=\"p\",stage=\"sink\",outcome=\"applied\"} %d\n"
                    "cdcflow_events_total{pipeline=\"p\",stage=\"sink\",outcome=\"rejected\"} 2\n"
                    "cdcflow_events_total{pipeline=\"other\",stage=\"sink\",outcome=\"applied\"} 1e9\n"
                    "cdcflow_queue_depth_batches{pipeline=\"p\",queue=\"src->sink\"} 3\n"
                    "cdcflow_queue_capacity_batches{pipeline=\"p\",queue=\"src->sink\"} 8\n"
                    "cdcflow_source_lag_events{pipeline=\"p\",stage=\"sink\",partition=\"\"} 42\n"
                    "process_resident_memory_bytes 10485760\n" % (100 * scrapes[0])).encode()
                self.send_response(503 if self.path == "/health" else 200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), Failed)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            r = run(["status", "127.0.0.1:%d" % srv.server_address[1], "--interval", "0.5"], timeout=20)
        finally:
            srv.shutdown()
            srv.server_close()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("failed (owner), NOT healthy (503)", r.stdout)
        self.assertIn("disk full\\x1b[2J", r.stdout)  # host text cannot drive the terminal
        self.assertNotIn("\x1b", r.stdout)
        # Events summed over outcomes (another pipeline's samples ignored);
        # the rate from two readings: 100 events in about 0.5 s.
        m = re.search(r"\n  sink +sink +failed +open +202 +(\d+\.\d) +2 +- +42\n", r.stdout)
        self.assertTrue(m, r.stdout)
        self.assertGreater(float(m.group(1)), 20)
        self.assertLess(float(m.group(1)), 400)
        self.assertIn("queues    src->sink 3/8", r.stdout)
        self.assertIn("memory    10.0 MiB resident", r.stdout)
        # A host that accepts and never answers: 2 within the deadline.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(4)
            t0 = time.monotonic()
            r = run(["status", "127.0.0.1:%d" % silent.getsockname()[1]], timeout=20)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("no answer within", r.stderr)
            self.assertLess(time.monotonic() - t0, 10)


class Readiness(AccountsTest):
    def test_owner_is_ready_and_a_standby_is_not(self):
        c = self.conn()
        insert(c, Generator(seed=3, accounts=50).rows(500))
        c.close()
        a = Host(["run", PIPELINE, "--http", "127.0.0.1:0"], env=self.env)
        self.addCleanup(a.kill)
        a.wait_serving()
        wait_for(lambda: get(a.url("/ready"))[0] == 200, what="the owner is ready")
        self.assertEqual(get(a.url("/ready")), (200, '{"ready":true}'))
        b = Host(["run", PIPELINE, "--http", "127.0.0.1:0"], env=self.env)
        self.addCleanup(b.kill)
        b.wait_serving()
        wait_for(lambda: json.loads(get(b.url("/health"))[1]).get("role") == "standby", what="B stands by")
        status, body = get(b.url("/ready"))
        self.assertEqual(status, 503)
        ready = json.loads(body)
        self.assertEqual(ready["ready"], False)
        self.assertTrue(ready["reason"].startswith("standby: "), ready)
        self.assertIn("pid %d" % a.proc.pid, ready["reason"])
        # A standby is healthy (200): it is doing what it should.
        status, body = get(b.url("/health"))
        self.assertEqual(status, 200)
        hb = json.loads(body)
        self.assertEqual((hb["state"], hb["role"], hb["ready"]), ("standby", "standby", False))
        self.assertIn("pid %d" % a.proc.pid, hb["owner"])
        r = run(["status", b.addr], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("standby (standby), healthy, not ready", r.stdout)
        self.assertIn("owner     ", r.stdout)
        for h in (b, a):
            code, _, err = h.finish()
            self.assertEqual(code, 0, err[-2000:])


if __name__ == "__main__":
    main()

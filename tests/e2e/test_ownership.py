"""One owner per checkpoint, end to end: several real `cdcflow run` processes
on one SQLite file, a standby that takes over, an owner frozen with SIGSTOP
past its lease that wakes up, and `when_owned: refuse`. The projection is
checked against the independent model (accounts_model.py) every time:
nothing applied twice, nothing missing."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BIN, env_with, free_port, main, run, start, wait_for  # noqa: E402
from accounts_model import replay  # noqa: E402
from outbox_gen import Generator, insert  # noqa: E402
from test_accounts import PIPELINE, AccountsTest, checkpoint  # noqa: E402

SANITIZED = bool(os.environ.get("CDCFLOW_SANITIZE", "none") not in ("", "none"))


def health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def totals(stdout):
    m = re.search(r"(\d+) events: (\d+) applied, (\d+) rejected, (\d+) duplicates", stdout)
    assert m, stdout
    return [int(x) for x in m.groups()]


class Ownership(AccountsTest):
    def pipeline(self, **settings):
        """The shipped pipeline with extra host settings."""
        with open(PIPELINE) as f:
            text = f.read()
        anchor = "settings:                     # host settings"
        self.assertIn(anchor, text)
        extra = "".join("  %s: %s\n" % kv for kv in settings.items())
        head, tail = text.split(anchor, 1)
        line_end = tail.index("\n") + 1
        return self.write("p%d.yaml" % len(os.listdir(self.dir)),
                          head + anchor + tail[:line_end] + extra + tail[line_end:])

    def host(self, pipeline, *extra, port=None):
        args = ["run", pipeline] + list(extra)
        if port:
            args += ["--http", "127.0.0.1:%d" % port]
        return start(args, env=self.env)

    def reap(self, *procs):
        """Whatever a test left running (frozen or not) is killed."""
        for proc in procs:
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.communicate()

    def finish(self, proc, sig=signal.SIGTERM, timeout=60):
        if proc.poll() is None:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def outbox_rows(self):
        c = self.conn()
        n = c.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
        c.close()
        return n

    def test_three_hosts_draining_one_outbox_apply_everything_once(self):
        gen = Generator(seed=11, accounts=2000)
        c = self.conn()
        insert(c, gen.rows(60_000))
        c.close()
        procs = [start(["run", PIPELINE, "--drain"], env=self.env) for _ in range(3)]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, results):
            self.assertEqual(p.returncode, 0, err[-3000:])
        # Every event was handled by exactly one of them.
        self.assertEqual(sum(totals(out)[0] for out, _ in results), 60_000)
        standbys = sum("standby: checkpoint 'accounts'" in err for _, err in results)
        self.assertGreaterEqual(standbys, 1)
        self.assert_matches_model()
        self.assertEqual(checkpoint(self.db), 60_000)

    def test_a_standby_waits_and_takes_over_when_the_owner_stops(self):
        gen = Generator(seed=12, accounts=300)
        c = self.conn()
        insert(c, gen.rows(5_000))
        c.close()
        pa, pb = free_port(), free_port()
        a = self.host(PIPELINE, port=pa)
        try:
            wait_for(lambda: (health(pa) or {}).get("role") == "owner", what="host A owns the checkpoint")
            b = self.host(PIPELINE, "--drain", port=pb)
            try:
                wait_for(lambda: (health(pb) or {}).get("role") == "standby", what="host B is a standby")
                hb = health(pb)
                self.assertEqual(hb["state"], "standby")
                self.assertIn("pid %d" % a.pid, hb["owner"])
                # Events keep arriving while two hosts run: only the owner
                # applies them. (The producer, as an application would.)
                events = "".join(json.dumps({"aggregatetype": "Account", "aggregateid": "acc-%d" % (i % 50),
                                             "type": "MoneyDeposited", "payload": {"amount": "1.00"}}) + "\n"
                                 for i in range(1000))
                r = run(["produce", "--db", self.db], env=self.env, stdin=events)
                self.assertEqual(r.returncode, 0, r.stderr)
                wait_for(lambda: checkpoint(self.db) == self.outbox_rows(), what="host A caught up")
                self.assertEqual((health(pb) or {}).get("role"), "standby")
                # A stops: B takes over at once, drains what is left, exits 0.
                insert(self.conn(), gen.rows(2_000))
                code_a, out_a, err_a = self.finish(a)
                self.assertEqual(code_a, 0, err_a[-3000:])
                out_b, err_b = b.communicate(timeout=120)
                self.assertEqual(b.returncode, 0, err_b[-3000:])
            finally:
                self.reap(b)
        finally:
            self.reap(a)
        self.assertEqual(err_b.count("standby: checkpoint 'accounts'"), 1, err_b)  # said once, not every poll
        self.assertIn("released by host", err_b)
        self.assertEqual(totals(out_a)[0] + totals(out_b)[0], self.outbox_rows())
        self.assert_matches_model()

    def test_refuse_exits_6_and_names_the_owner(self):
        insert(self.conn(), Generator(seed=13, accounts=10).rows(100))
        port = free_port()
        a = self.host(PIPELINE, port=port)
        try:
            wait_for(lambda: (health(port) or {}).get("role") == "owner", what="host A owns the checkpoint")
            r = run(["run", self.pipeline(when_owned="refuse"), "--drain"], env=self.env, timeout=60)
            self.assertNoCrash(r)
            self.assertEqual(r.returncode, 6, r.stderr)
            last = r.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^cdcflow: stage 'project' \(plugin 'projection_sink'\): checkpoint 'accounts' "
                                   r"of '.*' is owned by host '.+' pid %d \(since \d{4}-\d\d-\d\dT.*Z, epoch 1\) "
                                   r"\(settings.when_owned is 'refuse'" % a.pid)
            self.assertIn("0 events", r.stdout)
        finally:
            self.assertEqual(self.finish(a)[0], 0)
        self.assert_matches_model()

    def test_a_killed_owner_is_replaced_at_once_on_the_same_machine(self):
        insert(self.conn(), Generator(seed=14, accounts=100).rows(2_000))
        port = free_port()
        a = self.host(PIPELINE, port=port)
        wait_for(lambda: (health(port) or {}).get("role") == "owner", what="host A owns the checkpoint")
        a.kill()
        a.communicate()
        insert(self.conn(), Generator(seed=15, accounts=100).rows(2_000))
        t0 = time.monotonic()
        r = run(["run", PIPELINE, "--drain"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        # The default lease is 10 s: the takeover did not wait for it.
        self.assertLess(time.monotonic() - t0, 8)
        self.assertIn("its process is gone", r.stderr)
        self.assert_matches_model()

    def test_a_standby_on_a_separate_read_model_file_resumes_where_the_owner_stopped(self):
        # The read model in a file of its own that no host has made yet, two
        # hosts started together: the standby must resume from the owner's
        # checkpoint, not from the beginning. (Whether the standby's sink is
        # made before the file exists is a race here; the unit test
        # "a standby made before its database existed" forces that order.)
        read_db = self.path("read.db")
        with open(PIPELINE) as f:
            text = f.read()
        sink_line = "      database: ${CDCFLOW_DB:-demo/accounts.db}\n      projection: accounts"
        self.assertIn(sink_line, text)
        p = self.write("separate.yaml", text.replace(sink_line, "      database: " + read_db + "\n      projection: accounts"))
        gen = Generator(seed=17, accounts=300)
        insert(self.conn(), gen.rows(4_000))
        pa, pb = free_port(), free_port()
        a, b = self.host(p, port=pa), self.host(p, port=pb)
        try:
            roles = lambda: sorted((health(x) or {}).get("role", "") for x in (pa, pb))
            wait_for(lambda: roles() == ["owner", "standby"], what="one owner, one standby")
            owner, standby = (a, b) if health(pa)["role"] == "owner" else (b, a)
            wait_for(lambda: checkpoint(read_db) == 4_000, what="the owner caught up")
            self.assertEqual(self.finish(owner)[0], 0)
            insert(self.conn(), gen.rows(1_000))
            wait_for(lambda: checkpoint(read_db) == 5_000, what="the standby took over and went on")
            code, out, err = self.finish(standby)
            self.assertEqual(code, 0, err[-3000:])
            self.assertIn("1000 events", out)  # only what came after the owner's checkpoint
        finally:
            self.reap(a, b)
        model = replay(self.conn())
        r = sqlite3.connect(read_db)
        got = {row[0]: tuple(row[1:]) for row in r.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        r.close()
        self.assertEqual(got, model.rows())

    def test_a_standby_keeps_waiting_while_the_store_stays_locked(self):
        # Its sink's retry budget is two attempts; a standby must not give up
        # on a lock (a backup, a frozen owner inside a commit): it waits.
        insert(self.conn(), Generator(seed=18, accounts=50).rows(500))
        p = self.pipeline(owner_lease_ms=300)
        with open(p) as f:
            text = f.read()
        q = self.write("tight.yaml", text.replace("    plugin: projection_sink\n",
                                                  "    plugin: projection_sink\n    retry: {max_attempts: 2, backoff_ms: 10}\n"))
        pa, pb = free_port(), free_port()
        a = self.host(p, port=pa)
        b = None
        locker = None
        try:
            wait_for(lambda: (health(pa) or {}).get("role") == "owner" and checkpoint(self.db) == 500,
                     what="host A owns the checkpoint")
            a.send_signal(signal.SIGSTOP)  # its claim will go stale...
            locker = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # ...but nobody can write to take it
            b = self.host(q, port=pb)
            wait_for(lambda: (health(pb) or {}).get("role") == "standby", what="host B is a standby")
            time.sleep(2.0)  # many claim attempts meet the lock
            self.assertIsNone(b.poll(), "the standby gave up")
            self.assertEqual((health(pb) or {}).get("role"), "standby")
            locker.execute("COMMIT")
            wait_for(lambda: (health(pb) or {}).get("role") == "owner", timeout=30, what="host B takes over")
            a.send_signal(signal.SIGCONT)
            wait_for(lambda: (health(pa) or {}).get("role") == "standby", timeout=30, what="host A steps down")
            self.assertEqual(self.finish(b)[0], 0)
            self.assertEqual(self.finish(a)[0], 0)
        finally:
            if locker:
                locker.close()
            self.reap(a, b)
        self.assert_matches_model()

    def test_an_owner_frozen_past_its_lease_cannot_commit_when_it_wakes(self):
        if SANITIZED:
            self.skipTest("timing-bound; runs in the plain pass")
        gen = Generator(seed=16, accounts=500)
        insert(self.conn(), gen.rows(5_000))
        p = self.pipeline(owner_lease_ms=600)
        pa, pb = free_port(), free_port()
        a = self.host(p, port=pa)
        b = None
        # Both hosts scraped all along: a scrape while A steps down (its
        # stage instances destroyed and made again) or takes over must
        # neither crash it nor fail (ABI 4's collectors read live state).
        stop_scraping = threading.Event()
        scrape_errors = []

        def scraper(port):
            while not stop_scraping.is_set():
                for path in ("/metrics", "/health", "/ready"):
                    try:
                        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                            r.read()
                    except urllib.error.HTTPError as e:
                        if e.code != 503:  # a standby's /ready
                            scrape_errors.append("%d%s: %d" % (port, path, e.code))
                    except OSError:
                        pass  # not listening yet (B), or frozen (A)
        scrapers = [threading.Thread(target=scraper, args=(port,)) for port in (pa, pb)]
        for t in scrapers:
            t.start()
        try:
            wait_for(lambda: (health(pa) or {}).get("role") == "owner" and checkpoint(self.db) == 5_000,
                     what="host A owns the checkpoint and caught up")
            # A freezes with work to come; B takes over once A's claim has gone
            # 600 ms without renewal, and applies the new events.
            a.send_signal(signal.SIGSTOP)
            b = self.host(p, port=pb)
            wait_for(lambda: (health(pb) or {}).get("role") == "owner", timeout=30, what="host B takes over")
            applied_by_b = gen.rows(3_000)
            insert(self.conn(), applied_by_b)
            wait_for(lambda: checkpoint(self.db) == self.outbox_rows(), what="host B applied the new events")
            # A wakes up with a stale claim and an outbox full of rows it has
            # not read: its next commit must fail, and it must step down.
            a.send_signal(signal.SIGCONT)
            wait_for(lambda: (health(pa) or {}).get("role") == "standby", timeout=30, what="host A steps down")
            insert(self.conn(), gen.rows(1_000))
            wait_for(lambda: checkpoint(self.db) == self.outbox_rows(), what="host B applies the rest")
            self.assertEqual((health(pb) or {}).get("role"), "owner")
            self.assertEqual((health(pa) or {}).get("role"), "standby")
            code_b, _, err_b = self.finish(b)
            self.assertEqual(code_b, 0, err_b[-3000:])
            self.assertIn("no renewal for", err_b)
            # B's deduper was rebuilt from what A had committed; now A takes
            # over again with new stage instances, whose deduper is rebuilt
            # from what B committed: copies of B's events are duplicates.
            wait_for(lambda: (health(pa) or {}).get("role") == "owner", timeout=30, what="host A takes over")
            insert(self.conn(), [row[:5] + (row[5] + 1,) for row in applied_by_b[::50]])
            wait_for(lambda: checkpoint(self.db) == self.outbox_rows(), what="host A applies the copies")
            code_a, _, err_a = self.finish(a)
            self.assertEqual(code_a, 0, err_a[-3000:])
            self.assertIn("commits nothing more", err_a)
            self.assertIn("stepping down to standby", err_a)
            self.assertEqual(err_a.count("rebuilt stream state from"), 1, err_a[-3000:])
            self.assertIn("rebuilt stream state from 5000 events", err_b)
        finally:
            stop_scraping.set()
            for t in scrapers:
                t.join()
            self.reap(a, b)
        self.assertEqual(scrape_errors, [])
        self.assert_matches_model()


if __name__ == "__main__":
    main()

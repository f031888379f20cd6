"""The example application (examples/embedded_accounts): built out of tree
against an installed copy (`pkg-config cdcflow-host cdcflow-outbox`), it
takes commands over its own HTTP endpoint, writes them through the outbox
writer and projects them with the accounts pipeline in the same process;
its /health and /metrics are the embedded host's. SIGTERM stops it with
everything committed."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TempDirTest, install_host, main, sanitize_flags, wait_for  # noqa: E402
from test_accounts import PIPELINE  # noqa: E402

EXAMPLE = os.path.join(SOURCE_ROOT, "examples", "embedded_accounts", "main.cpp")


def get(port, target):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, target), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def accounts(db):
    try:
        c = sqlite3.connect(db, timeout=10)
        try:
            return {r[0]: r[1:] for r in c.execute("SELECT account_id, balance, status, version FROM accounts")}
        finally:
            c.close()
    except sqlite3.OperationalError:
        return {}  # the sink has not created it yet


class EmbeddedAccounts(TempDirTest):
    def test_builds_against_the_install_and_serves_its_own_health(self):
        env, _ = install_host(self.path("root"))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "cdcflow-host", "cdcflow-outbox"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()
        app = self.path("embedded_accounts")
        subprocess.run(["c++", "-std=c++20", "-Wall", "-Wextra", "-Werror", "-o", app, EXAMPLE] + flags +
                       sanitize_flags(), check=True)

        db = self.path("service.db")
        proc = subprocess.Popen([app, db, PIPELINE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, errors="replace")
        try:
            line = proc.stdout.readline()
            self.assertTrue(line.startswith("listening on 127.0.0.1:"), line)
            port = int(line.rsplit(":", 1)[1])
            for target in ["/open?account=acc-1&owner=Ada&currency=EUR", "/deposit?account=acc-1&amount=10.50",
                           "/withdraw?account=acc-1&amount=3.25", "/open?account=acc-2&owner=Bob&currency=USD",
                           "/withdraw?account=acc-2&amount=1.00"]:  # past the balance: dead-lettered
                code, body = get(port, target)
                self.assertEqual(code, 202, body)
            self.assertEqual(get(port, "/deposit?amount=1")[0], 400)  # no account
            # Every event written is applied (or dead-lettered) in the end.
            want = {"acc-1": ("7.25", "open", 3), "acc-2": ("0.00", "open", 1)}
            wait_for(lambda: accounts(db) == want, timeout=20, what="both accounts projected")

            code, body = get(port, "/health")
            self.assertEqual(code, 200, body)
            health = json.loads(body)
            self.assertEqual((health["pipeline"], health["state"], health["role"]), ("accounts", "running", "owner"))
            wait_for(lambda: json.loads(get(port, "/health")[1])["events"] == 5, timeout=10, what="5 events counted")
            code, page = get(port, "/metrics")
            self.assertEqual(code, 200)
            self.assertIn('cdcflow_events_total{pipeline="accounts",stage="project",outcome="applied"} 4', page)
            self.assertIn('cdcflow_dead_letters_total{pipeline="accounts",stage="project"} 1', page)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err[-3000:])
        # Its state callback saw the run start (the first sample is taken at
        # once) and end, whatever happened in between.
        seen = [l.split("pipeline ", 1)[1] for l in err.splitlines() if l.startswith("embedded_accounts: pipeline ")]
        self.assertIn(seen[0], ("starting", "running"), err[-3000:])
        self.assertEqual(seen[-1], "stopped", err[-3000:])
        self.assertIn("pipeline 'accounts' stopped after", err)  # the host's own stop line


if __name__ == "__main__":
    main()

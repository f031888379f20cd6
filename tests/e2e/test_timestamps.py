"""DESIGN.md: "Timestamps are data, not truth". The accounts pipeline on a
backlog stamped 30 days ago, with a few rows stamped absurdly (9e18 twice, 0,
-5, 400 days ahead) and producer retries spread through it. No timestamp may
make the deduper forget an id (live, or after a kill -9 when the host
rebuilds its window by replaying the outbox), and retention deletes rows by
how long they have been committed, never by their timestamp. Checked against the independent
model (accounts_model.py)."""
import os
import random
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from accounts_model import Model  # noqa: E402
from helpers import main, run, start, wait_for  # noqa: E402
from outbox_gen import Generator, insert  # noqa: E402
from test_accounts import PIPELINE, AccountsTest, checkpoint  # noqa: E402

DAY_US = 86_400 * 1_000_000
NOW_US = int(time.time() * 1e6)
FAR_FUTURE = 9_000_000_000_000_000_000
HOSTILE = [FAR_FUTURE, 0, -5, FAR_FUTURE, NOW_US + 400 * DAY_US]


def backlog(seed, n=50_000, accounts=3_000):
    """n rows over `accounts` accounts stamped from 30 days ago (a backlog
    after an outage), ~5% of them retried copies of earlier rows, near and
    far. The rows at n/12, 2n/12, ... 5n/12 get the hostile stamps; each of
    those events is retried twice in the second half, once with an ordinary
    stamp and once with its own hostile one."""
    gen = Generator(seed=seed, accounts=accounts, dup_share=0.05)
    gen.ts = NOW_US - 30 * DAY_US
    rows = gen.rows(n)
    for k, ts in enumerate(HOSTILE):
        i = (k + 1) * n // 12
        rows[i] = rows[i][:5] + (ts,)
        retry = n // 2 + k * (n // 50)
        rows[retry] = rows[i][:5] + (rows[retry][5],)
        rows[n - 500 + k * 50] = rows[i]
    return rows


def model_of(rows):
    m = Model()
    for row in rows:
        m.apply_row(*row)
    return m


class Timestamps(AccountsTest):
    def pipeline(self, retention_seconds, window_size=None):
        with open(PIPELINE) as f:
            text = f.read()
        self.assertIn("retention_seconds: 0\n", text)
        text = text.replace("retention_seconds: 0\n", "retention_seconds: %d\n" % retention_seconds)
        if window_size is not None:
            self.assertIn("window_size: 1000000 ", text)
            text = text.replace("window_size: 1000000 ", "window_size: %d " % window_size)
        return self.write("accounts_retention_%d_%s.yaml" % (retention_seconds, window_size), text)

    def outbox_rows(self):
        c = self.conn()
        try:
            return c.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            c.close()

    def check(self, rows, stdout=None):
        """The projection and dead letters equal the model of `rows`; every
        row is still in the outbox (the model is replayed from it too)."""
        want = model_of(rows)
        self.assertEqual(self.outbox_rows(), len(rows), "outbox rows were deleted")
        if stdout is not None:
            self.assertIn("%d events: %d applied, %d rejected, %d duplicates" %
                          (len(rows), want.applied, len(want.rejected), want.duplicates), stdout)
        got = self.assert_matches_model()
        self.assertEqual(got.rows(), want.rows())
        self.assertEqual(checkpoint(self.db), len(rows))
        # The backlog really holds what the test is about.
        self.assertGreater(want.duplicates, 2_000)
        self.assertGreater(len(want.accounts), 2_000)

    def test_backlog_with_hostile_timestamps_drains_to_the_model(self):
        rows = backlog(seed=30)
        c = self.conn()
        insert(c, rows)
        c.close()
        r = self.drain()
        self.check(rows, r.stdout)

    def test_kill_9_mid_backlog_then_restart_rebuilds_the_window(self):
        # Retention of an hour: the 30-day-old rows must stay (they were
        # committed moments ago), so the host can replay them to the restarted
        # deduper.
        pipeline = self.pipeline(3600)
        rows = backlog(seed=31)
        cut = len(rows) // 2  # every hostile stamp is before it, their retries after it
        c = self.conn()
        insert(c, rows[:cut])

        def run_until(target):
            proc = start(["run", pipeline], env=self.env)
            try:
                wait_for(lambda: checkpoint(self.db) >= target or proc.poll() is not None, timeout=60,
                         what="checkpoint %d" % target)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                _, err = proc.communicate()
            self.assertEqual(proc.returncode, -signal.SIGKILL, err[-2000:])

        # Killed once the first half is committed: everything after the
        # restart that copies it must be caught by the rebuilt window alone.
        run_until(cut)
        self.assertEqual(checkpoint(self.db), cut)
        insert(c, rows[cut:])
        c.close()
        # Killed again somewhere in the second half (wherever it has got to).
        run_until(cut + random.Random(31).randrange(1_000, cut - 1_000))
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.check(rows)

    def run_then_stop(self, pipeline, until, what):
        """Runs the pipeline until `until()` holds, then stops it with SIGTERM
        (a graceful stop: exit 0)."""
        proc = start(["run", pipeline], env=self.env)
        try:
            wait_for(lambda: until() or proc.poll() is not None, timeout=20, what=what)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err[-2000:])

    def test_retention_counts_from_the_commit_not_from_the_timestamp(self):
        rows = backlog(seed=32, n=5_000, accounts=300)
        c = self.conn()
        insert(c, rows)
        c.close()
        self.drain()  # the shipped pipeline keeps every row
        # Restarted with an hour's retention: the checkpoint was committed
        # moments ago, so nothing may go, however old the stamps, though
        # cleanup looks at least once a second.
        started = time.monotonic()
        self.run_then_stop(self.pipeline(3600), lambda: time.monotonic() - started > 1.5, "1.5 s")
        self.assertEqual(self.outbox_rows(), len(rows))
        # With a retention of one second every committed row goes, the ones
        # stamped in the far future included, except the newest ones the
        # deduper needs replayed at the next start (twice its window_size).
        self.run_then_stop(self.pipeline(1, window_size=1000), lambda: self.outbox_rows() == 2000,
                           "2000 rows left")
        c = self.conn()
        self.assertEqual(c.execute("SELECT count(*), min(seq) FROM outbox").fetchone(), (2000, len(rows) - 1999))
        c.close()
        self.assertTrue(any(r[5] == FAR_FUTURE for r in rows[:len(rows) - 2000]))


if __name__ == "__main__":
    main()

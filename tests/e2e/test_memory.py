"""Memory bounds end to end (README, "Memory"): the real accounts pipeline
with a small byte bound on its queues and a soft memory limit just above the
host's own start-up size still builds the exact projection (the source slows
down, it never stalls or drops anything), and byte settings that cannot work
are refused at load with their position."""
import os
import re
import resource
import sqlite3
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from accounts_model import replay  # noqa: E402
from helpers import BIN, SOURCE_ROOT, TempDirTest, env_with, main, run  # noqa: E402
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")

# The peak resident memory of one `cdcflow run` (a child of a fresh Python,
# so that no earlier child's peak counts): RUSAGE_CHILDREN's ru_maxrss, KiB.
PEAK_RSS = r"""
import os, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write("%d %d\n" % (r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.stdout.write(r.stderr)
"""


def with_settings(text, extra):
    """The shipped pipeline with `extra` (YAML lines "key: value") first in
    its settings (line 15), each replacing the shipped line of its key."""
    lines = text.splitlines(keepends=True)
    keys = {e.split(":")[0] for e in extra}
    lines = [line for line in lines if line.strip().split(":")[0] not in keys or not line.startswith("  ")]
    at = next(i for i, line in enumerate(lines) if line.startswith("settings:")) + 1
    return "".join(lines[:at] + ["  %s\n" % e for e in extra] + lines[at:])


class Memory(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("accounts.db")
        self.env = env_with(CDCFLOW_DB=self.db)
        c = sqlite3.connect(self.db)
        open_outbox(c)
        c.close()
        with open(PIPELINE) as f:
            self.shipped = f.read()

    def peak_rss_kib(self, pipeline):
        r = subprocess.run([sys.executable, "-c", PEAK_RSS, BIN, "run", pipeline, "--drain"], env=self.env,
                           capture_output=True, text=True, timeout=300)
        first, _, stderr = r.stdout.partition("\n")
        code, kib = (int(x) for x in first.split())
        self.assertEqual(code, 0, stderr[-3000:])
        return kib, stderr

    def test_a_small_byte_bound_and_a_soft_limit_above_the_start_size_still_build_the_exact_projection(self):
        # The host's size with nothing to do: the same pipeline on the empty outbox.
        start_kib, _ = self.peak_rss_kib(self.write("empty.yaml", self.shipped.replace(
            "${CDCFLOW_DB:-demo/accounts.db}", self.db)))
        c = sqlite3.connect(self.db)
        insert(c, Generator(seed=99, accounts=2000).rows(150_000))
        c.close()
        # 4 MiB above it: the dedupe window, the row cache and the batches
        # of the backlog pass 90% of that within the first few thousand
        # events. The source reads the resident size every 100 ms: even at
        # full speed, 150,000 events take several of those.
        limit = start_kib * 1024 + (4 << 20)
        p = self.write("p.yaml", with_settings(self.shipped, [
            "batch_max_bytes: 64KiB", "queue_max_bytes: 256KiB", "memory_soft_limit_bytes: %d" % limit]))
        _, stderr = self.peak_rss_kib(p)
        warn = re.search(r"warn  \[host\] memory: resident ([0-9.]+ [KMG]?i?B) passed 90% of "
                         r"settings\.memory_soft_limit_bytes \(([0-9.]+ [KMG]iB)\): the source slows down", stderr)
        self.assertIsNotNone(warn, stderr[-3000:])
        # Exactly what the independent model of the rules says.
        c = sqlite3.connect(self.db)
        model = replay(c)
        got = {r[0]: tuple(r[1:]) for r in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        self.assertEqual(got, model.rows())
        self.assertEqual({r[0] for r in c.execute("SELECT event_id FROM dead_letters")}, set(model.rejected))
        self.assertEqual(c.execute("SELECT max(position) FROM cdcflow_checkpoints").fetchone()[0],
                         c.execute("SELECT max(seq) FROM outbox").fetchone()[0])
        c.close()
        # Soft: the source slowed down, and the resident memory may still
        # pass the limit (the dedupe window and the caches are bounded by
        # their own settings, not by this one): nothing more is promised.

    def test_a_queue_byte_bound_below_one_batch_is_refused_with_its_position(self):
        p = self.write("p.yaml", with_settings(self.shipped, ["queue_max_bytes: 1MiB"]))
        for cmd in (["validate", p], ["run", p, "--drain"]):
            r = run(cmd, env=self.env)
            self.assertNoCrash(r)
            self.assertEqual(r.returncode, 3, r.stderr)
            # Line 15: the first line of settings, where the key was added.
            self.assertEqual(r.stderr.strip().splitlines()[-1],
                             "cdcflow: " + p + ":15:20: settings.queue_max_bytes (1048576) must be at least "
                             "settings.batch_max_bytes (8388608): the event bytes in flight must hold at least "
                             "one full batch")

    def test_byte_settings_take_binary_units_and_refuse_others(self):
        p = self.write("p.yaml", with_settings(self.shipped, ["memory_soft_limit_bytes: 512MB"]))
        r = run(["validate", p], env=self.env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(":15:28: settings.memory_soft_limit_bytes must be a number of bytes from 0 to "
                      "1125899906842624 (e.g. 67108864 or 64MiB), got '512MB'", r.stderr)
        p = self.write("q.yaml", with_settings(self.shipped, ["memory_soft_limit_bytes: 512MiB",
                                                             "queue_max_bytes: 16 MiB"]))
        r = run(["validate", p], env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)

    @unittest.skipIf(os.environ.get("CDCFLOW_SANITIZE", "none") not in ("", "none"),
                     "the sanitizers reserve terabytes of address space: no limit on it can be set")
    def test_running_out_of_address_space_ends_with_an_error_line_never_a_signal(self):
        # Found with `ulimit -v`: a stage's failure whose message the host
        # could not allocate, the run's end report, the state watcher: each
        # let std::bad_alloc out of a thread, and std::terminate killed the
        # process with SIGABRT. Every limit from the least the binary needs
        # to start (`--version`) up to one the run fits in: exit 0 with the
        # exact projection, or exit 1 with the reason as the last line,
        # never a signal or a hang.
        c = sqlite3.connect(self.db)
        insert(c, Generator(seed=7, accounts=200).rows(5000))
        c.close()
        p = self.write("p.yaml", self.shipped.replace("${CDCFLOW_DB:-demo/accounts.db}", self.db))

        def limited(mib, args):
            def preexec():
                resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))
            return subprocess.run([BIN] + args, env=self.env, capture_output=True, text=True, timeout=60,
                                  preexec_fn=preexec)

        # The least that starts, to 8 MiB: below it the libraries' own
        # initialisers fail before cdcflow runs any code.
        lo, hi = 8, 2048
        self.assertEqual(limited(hi, ["--version"]).returncode, 0)
        while hi - lo > 8:
            mid = (lo + hi) // 2
            if limited(mid, ["--version"]).returncode == 0:
                hi = mid
            else:
                lo = mid
        c = sqlite3.connect(self.db)
        model = replay(c)
        c.close()
        outcomes = []
        mib = hi
        # Up by 16 MiB until four runs in a row fit (what fits depends on
        # the machine: thread stacks, the allocator); 4 GiB at most.
        while mib < 4096 and outcomes[-4:] != [0, 0, 0, 0]:
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.db + suffix):
                    os.remove(self.db + suffix)
            c = sqlite3.connect(self.db)
            for t in ("accounts", "dead_letters", "cdcflow_checkpoints", "cdcflow_owners"):
                c.execute("DROP TABLE IF EXISTS " + t)
            c.commit()
            c.close()
            r = limited(mib, ["run", p, "--drain"])
            self.assertGreaterEqual(r.returncode, 0, "%d MiB: killed by signal %d: %s" % (
                mib, -r.returncode, r.stderr[-2000:]))
            self.assertIn(r.returncode, (0, 1), "%d MiB: %s" % (mib, r.stderr[-2000:]))
            if r.returncode == 1:
                self.assertTrue(r.stderr.strip(), "%d MiB: exit 1 without a reason" % mib)
                self.assertTrue(r.stderr.strip().splitlines()[-1].startswith("cdcflow"),
                                "%d MiB: %s" % (mib, r.stderr[-2000:]))
            else:
                # Every run that fit built exactly the projection.
                c = sqlite3.connect(self.db)
                got = {row[0]: tuple(row[1:]) for row in c.execute(
                    "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
                self.assertEqual(got, model.rows(), "%d MiB" % mib)
                self.assertEqual({row[0] for row in c.execute("SELECT event_id FROM dead_letters")},
                                 set(model.rejected), "%d MiB" % mib)
                c.close()
            outcomes.append(r.returncode)
            mib += 16
        # The sweep reached both ends: runs that ran out, and runs that fit.
        self.assertIn(1, outcomes, outcomes)
        self.assertEqual(outcomes[-4:], [0, 0, 0, 0], outcomes)

if __name__ == "__main__":
    main()

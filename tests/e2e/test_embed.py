"""An application that embeds cdcflow (tests/embed/c_smoke.c, linked with
the build's libcdcflow-host.so) is killed with kill -9 at random moments
while it runs the accounts pipeline and the application's writer keeps
writing; run again, the read model is exactly what the independent model
of the rules says (accounts_model.py): nothing lost, nothing applied twice.
A graceful stop (the application closes the host) commits what was read.
And `cdcflow run`, which runs its pipeline through the same host code, with
a plugin stuck in process: a SIGTERM ends it within the shutdown timeout."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import (BUILD_ROOT, SOURCE_ROOT, TEST_PLUGINS, TempDirTest, env_with, main, sanitize_flags, start,  # noqa: E402
                     wait_for)
from outbox_gen import Generator  # noqa: E402
from test_accounts import PIPELINE, AccountsTest, checkpoint  # noqa: E402

LIBDIR = os.path.join(BUILD_ROOT, "core", "embed")


class EmbeddedKill9(AccountsTest):
    def setUp(self):
        super().setUp()
        # Built against the source tree's header and the build's library; the
        # library finds the build's plugins relative to itself.
        self.app = self.path("c_smoke")
        subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", self.app,
                        os.path.join(SOURCE_ROOT, "tests", "embed", "c_smoke.c"),
                        "-I" + os.path.join(SOURCE_ROOT, "core", "include"), "-L" + LIBDIR, "-lcdcflow-host"] +
                       sanitize_flags(), check=True)
        self.app_env = env_with(CDCFLOW_DB=self.db, LD_LIBRARY_PATH=LIBDIR)
        self.app_env.pop("CDCFLOW_PLUGIN_PATH", None)

    def start_app(self):
        return subprocess.Popen([self.app, PIPELINE, "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.app_env, errors="replace")

    def test_kill_9_of_the_embedding_process_then_rerun_is_exactly_once(self):
        ends = self.kill_while_writing(self.start_app, Generator(seed=77, accounts=1000), 60_000, 20_000, kills=5,
                                       seed=11, timeout=60)
        # Each run was killed (SIGKILL: no stop, no close): a run of the
        # embedding application never ends by itself.
        for code, err in ends:
            self.assertEqual(code, -9, err[-2000:])
        self.assertEqual(len(ends), 5)

        # Graceful: started, then the application closes the host (stdin closes).
        proc = self.start_app()
        wait_for(lambda: checkpoint(self.db) == 80_000 or proc.poll() is not None, timeout=60,
                 what="everything committed")
        out, err = proc.communicate(input="", timeout=60)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        self.assertIn("state: stopped", err)
        self.assertIn('"state":"stopped"', out)
        self.assert_matches_model()
        self.assertEqual(checkpoint(self.db), 80_000)

        # A drain after all that finds nothing new.
        r = subprocess.run([self.app, PIPELINE, "drain"], capture_output=True, text=True, env=self.app_env,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn('"events":0', r.stdout)
        self.assert_matches_model()


def stuck_pipeline(out, hang_at, timeout_ms):
    """gen_source -> passthrough (never returns from process at offset
    `hang_at`) -> file_sink, from the test plugins."""
    return ("pipeline: stuck\nplugin_path: ['%s']\nsettings: {batch_size: 1, batch_max_events: 1, shutdown_timeout_ms: %d}\n"
            "stages:\n"
            "  - id: src\n    plugin: gen_source\n    config: {count: 0}\n"
            "  - id: pass\n    plugin: passthrough\n    config: {hang_at: %d}\n"
            "  - id: sink\n    plugin: file_sink\n    config: {output: '%s'}\n" % (TEST_PLUGINS, timeout_ms, hang_at, out))


def lines(path):
    try:
        with open(path) as f:
            return [int(line.split()[0]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class CliStuckPlugin(TempDirTest):
    def test_sigterm_with_a_plugin_stuck_in_process_exits_4_within_the_shutdown_timeout(self):
        out = self.path("events.txt")
        p = self.write("stuck.yaml", stuck_pipeline(out, 5, 400))
        proc = start(["run", p])
        # One event a batch; the source reads ahead: offset 5 is in the
        # transform's hands (or its queue) by the time 4 is committed.
        wait_for(lambda: len(lines(out)) >= 4, what="offsets 1..4 committed")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(proc.returncode, 4, err[-2000:])
        self.assertGreaterEqual(took, 0.35)  # the graceful stop was given its time
        self.assertLess(took, 0.4 + 3.0, err[-2000:])
        self.assertIn("SIGTERM: draining in-flight batches (timeout 400 ms)", err)
        self.assertIn("shutdown did not finish within 400 ms; exiting: uncommitted work will be replayed "
                      "from the checkpoint", err)
        # Nothing at or past the stuck offset was committed.
        self.assertTrue(all(o < 5 for o in lines(out)), lines(out))


if __name__ == "__main__":
    main()

"""An application that embeds cdcflow (tests/embed/c_smoke.c, linked with
the build's libcdcflow-host.so) is killed with kill -9 at random moments
while it runs the accounts pipeline and the application's writer keeps
writing; run again, the read model is exactly what the independent model
of the rules says (accounts_model.py): nothing lost, nothing applied twice.
A graceful stop (the application closes the host) commits what was read."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import BUILD_ROOT, SOURCE_ROOT, env_with, main, sanitize_flags, wait_for  # noqa: E402
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


if __name__ == "__main__":
    main()

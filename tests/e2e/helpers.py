"""Shared helpers for the end-to-end tests: paths from meson's environment,
running the real cdcflow binary, temporary folders."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("CDCFLOW_BIN", "build/tools/cdcflow")
TEST_PLUGINS = os.environ.get("CDCFLOW_TEST_PLUGIN_DIR", "build/tests/plugins")
BAD_PLUGINS = os.environ.get("CDCFLOW_BAD_PLUGIN_DIR", "build/tests/plugins/bad")
SOURCE_ROOT = os.environ.get("CDCFLOW_SOURCE_ROOT", ".")
BUILD_ROOT = os.environ.get("CDCFLOW_BUILD_ROOT", "build")


def env_with(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(args, timeout=120, env=None, stdin=None, cwd=None):
    """Runs cdcflow to completion; returns CompletedProcess (text)."""
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env, input=stdin, cwd=cwd, errors="replace")


def start(args, env=None, cwd=None):
    return subprocess.Popen([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cdcflow_e2e_")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def assertNoCrash(self, proc):
        # A negative return code is a signal (crash); the contract is a
        # non-zero exit with a one-line reason, never a signal.
        self.assertGreaterEqual(proc.returncode, 0, "killed by signal: " + proc.stderr[-2000:])


def main():
    unittest.main(verbosity=2)

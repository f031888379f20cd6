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
ABI_V1_PLUGINS = os.environ.get("CDCFLOW_ABI_V1_PLUGIN_DIR", "build/tests/plugins/abi_v1")
SOURCE_ROOT = os.environ.get("CDCFLOW_SOURCE_ROOT", ".")
BUILD_ROOT = os.environ.get("CDCFLOW_BUILD_ROOT", "build")


def env_with(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def install_tree(root):
    """`meson install --destdir root` of the build being tested, as a user
    installs cdcflow. Returns (host, env): the installed `cdcflow` binary and
    an environment in which `pkg-config cdcflow` (and cdcflow-outbox) answer
    for that install: PKG_CONFIG_PATH names its pkgconfig folder, and
    PKG_CONFIG_SYSROOT_DIR puts `root` in front of the -I paths, since the
    .pc files hold the configured prefix (/usr/local), not the staging root."""
    import glob
    subprocess.run(["meson", "install", "-C", BUILD_ROOT, "--destdir", root, "--no-rebuild", "--quiet"],
                   check=True, capture_output=True)
    pcs = glob.glob(root + "/**/pkgconfig/cdcflow.pc", recursive=True)
    bins = glob.glob(root + "/**/bin/cdcflow", recursive=True)
    if len(pcs) != 1 or len(bins) != 1:
        raise AssertionError("expected one cdcflow.pc and one bin/cdcflow under %s: %s %s" % (root, pcs, bins))
    return bins[0], env_with(PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=root)


def install_host(root):
    """install_tree for an application that embeds cdcflow: returns (env,
    libdir), env answering `pkg-config cdcflow-host` for the staged install,
    running programs with its libcdcflow-host.so (LD_LIBRARY_PATH), and
    without CDCFLOW_PLUGIN_PATH: the library must find its shipped plugins
    relative to itself."""
    import glob
    _, env = install_tree(root)
    libs = glob.glob(root + "/**/libcdcflow-host.so", recursive=True)
    if len(libs) != 1:
        raise AssertionError("expected one libcdcflow-host.so under %s: %s" % (root, libs))
    env.pop("CDCFLOW_PLUGIN_PATH", None)
    env["LD_LIBRARY_PATH"] = os.path.dirname(libs[0])
    return env, os.path.dirname(libs[0])


def sanitize_flags():
    """A sanitized build installs sanitized libraries; what links them links
    the same sanitizer runtime, as a user's sanitized build would."""
    sanitize = os.environ.get("CDCFLOW_SANITIZE", "none")
    return ["-fsanitize=" + sanitize] if sanitize not in ("", "none") else []


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


def checkpoint(db):
    """The highest position any sink has committed in db's
    cdcflow_checkpoints (0 before the first commit)."""
    import sqlite3
    try:
        c = sqlite3.connect(db, timeout=30)
        try:
            row = c.execute("SELECT MAX(position) FROM cdcflow_checkpoints").fetchone()
            return row[0] or 0
        finally:
            c.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def write_in_background(db, rows, chunk=500, pause=0.01):
    """The application keeps writing: `rows` go into db's outbox `chunk` at
    a time, `pause` seconds apart, on a thread of their own (returned,
    started; join it)."""
    import sqlite3
    import threading
    from outbox_gen import insert

    def app():
        w = sqlite3.connect(db, timeout=60)
        for i in range(0, len(rows), chunk):
            insert(w, rows[i:i + chunk])
            time.sleep(pause)
        w.close()
    writer = threading.Thread(target=app)
    writer.start()
    return writer


def kill_9_at(start_host, db, targets, rnd, timeout=120):
    """Crashes at random moments: for each target position, a host from
    start_host() runs until db's checkpoint reaches the target (or the
    process ends), up to 50 ms more, then is killed with SIGKILL. Returns
    each run's (return code, stderr)."""
    ends = []
    for target in targets:
        proc = start_host()
        try:
            wait_for(lambda: checkpoint(db) >= target or proc.poll() is not None, timeout=timeout,
                     what="checkpoint %d" % target)
            time.sleep(rnd.uniform(0, 0.05))
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        ends.append((proc.returncode, err))
    return ends


def kill_9_runs(test, args, env, db, targets, rnd):
    """kill_9_at with `cdcflow args` as the host: a run that ended by
    itself must not have failed. Returns how many runs were killed."""
    ends = kill_9_at(lambda: start(args, env=env), db, targets, rnd)
    for code, err in ends:
        test.assertNotEqual(code, 1, err[-2000:])
    return sum(code == -9 for code, _ in ends)


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

"""The embedded host's C API as applications in other languages use it: an
installed copy (`meson install --destdir`, as test_sdk.py does), a C program
(tests/embed/c_smoke.c) built out of tree with `pkg-config cdcflow-host`,
and Python calling the library directly through ctypes. The library finds
its shipped plugins relative to where it is (the staging root, not the
configured prefix), with CDCFLOW_PLUGIN_PATH unset."""
import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TEST_PLUGINS, env_with, free_port, install_host, main, run, sanitize_flags, start, wait_for  # noqa: E402
from outbox_gen import Generator, insert  # noqa: E402
from test_accounts import PIPELINE, AccountsTest, checkpoint  # noqa: E402
from test_metrics import parse, promtool_check, scrape  # noqa: E402

C_SMOKE = os.path.join(SOURCE_ROOT, "tests", "embed", "c_smoke.c")


class Installed:
    """One install for the whole file (each test only reads it)."""
    root = None
    env = None
    libdir = None
    app = None

    @classmethod
    def get(cls):
        if cls.root is None:
            cls.root = tempfile.mkdtemp(prefix="cdcflow_embed_install_")
            cls.env, cls.libdir = install_host(cls.root)
            cls.flags = subprocess.run(["pkg-config", "--cflags", "--libs", "cdcflow-host"], env=cls.env,
                                       check=True, capture_output=True, text=True).stdout.split()
            cls.app = os.path.join(cls.root, "c_smoke")
            subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", cls.app, C_SMOKE] + cls.flags +
                           sanitize_flags(), check=True)
        return cls

    @classmethod
    def cleanup(cls):
        if cls.root:
            shutil.rmtree(cls.root, ignore_errors=True)


def tearDownModule():
    Installed.cleanup()


def pipeline_text():
    with open(PIPELINE) as f:
        return f.read()


def app_run(args, env, timeout=300):
    return subprocess.run([Installed.get().app] + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout, errors="replace")


def store(db):
    """What a run leaves in the store: the read model, the dead letters and the checkpoint."""
    c = sqlite3.connect(db)
    try:
        return (sorted(c.execute("SELECT * FROM accounts")),
                sorted(c.execute("SELECT event_id, aggregateid, type, payload, source_position, stage, reason "
                                 "FROM dead_letters")),
                sorted(c.execute("SELECT name, partition, position FROM cdcflow_checkpoints")))
    finally:
        c.close()


class CProgram(AccountsTest):
    def test_pkg_config_names_the_staged_install(self):
        inst = Installed.get()
        self.assertIn("-lcdcflow-host", inst.flags)
        self.assertTrue(any(f.startswith("-I" + inst.root) for f in inst.flags), inst.flags)
        self.assertTrue(any(f.startswith("-L" + inst.root) for f in inst.flags), inst.flags)
        # The library exports the API only: no host internals, no yaml-cpp or
        # SQLite symbols of its own that could clash with the application's.
        syms = subprocess.run(["nm", "-D", "--defined-only", os.path.join(inst.libdir, "libcdcflow-host.so")],
                              check=True, capture_output=True, text=True).stdout
        c_api = sorted(l.split()[-1] for l in syms.splitlines() if " T cdcflow_" in l)
        self.assertIn("cdcflow_host_open", c_api)
        self.assertNotIn("sqlite3_open_v2", syms)
        self.assertNotIn("_ZN7cdcflow4host7Runtime", syms)
        # Exactly the API (host.map): no std template instantiations, no
        # typeinfo of internals that an application's own copies could bind to.
        demangled = subprocess.run(["nm", "-D", "--defined-only", "-C",
                                    os.path.join(inst.libdir, "libcdcflow-host.so")],
                                   check=True, capture_output=True, text=True).stdout
        names = [l.split(" ", 2)[2] for l in demangled.splitlines() if l.split(" ", 2)[1] != "A"]
        self.assertEqual([n for n in names if not n.startswith(("cdcflow_host_", "cdcflow::embed::"))], [])
        self.assertIn("cdcflow::embed::Host::start()", names)

    def test_drains_like_cdcflow_run_drain(self):
        gen = Generator(seed=13, accounts=300)
        c = self.conn()
        insert(c, gen.rows(20_000))
        c.close()
        twin = self.path("twin.db")
        shutil.copy(self.db, twin)

        r = app_run([PIPELINE, "drain"], env=dict(Installed.get().env, CDCFLOW_DB=self.db))
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        health = json.loads(r.stdout)
        self.assertEqual((health["state"], health["events"]), ("stopped", 20_000))
        self.assertIn("state: stopped", r.stderr)
        self.assert_matches_model()

        cli = run(["run", PIPELINE, "--drain"], env=env_with(CDCFLOW_DB=twin), timeout=300)
        self.assertEqual(cli.returncode, 0, cli.stderr[-3000:])
        self.assertIn("pipeline 'accounts': %d events: %d applied" % (health["events"], health["applied"]),
                      cli.stdout)
        embedded, by_cli = store(self.db), store(twin)
        self.assertEqual(len(embedded[0]), len(by_cli[0]))
        self.assertEqual(embedded, by_cli)

    def test_pipeline_errors_and_codes(self):
        bad = self.write("bad.yaml", pipeline_text().replace("poll_interval_ms: 10", "poll_intervl_ms: 10"))
        r = app_run([bad, "drain"], env=dict(Installed.get().env, CDCFLOW_DB=self.db))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertRegex(r.stderr, r"c_smoke: open: %s:\d+:\d+: unknown config key 'poll_intervl_ms'" % bad)
        # The CLI says the same about the same file.
        v = run(["validate", bad], env=env_with(CDCFLOW_DB=self.db))
        self.assertEqual(v.returncode, 3)
        self.assertIn(r.stderr.split("open: ", 1)[1].strip(), v.stderr)


STATE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
MIGRATION = os.path.join(SOURCE_ROOT, "pipelines", "migrate-legacy.yaml")


def load_api(path):
    lib = ctypes.CDLL(path)
    H = ctypes.c_void_p
    sig = {
        "cdcflow_host_open": (H, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_open_string": (H, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_start": (ctypes.c_int, [H, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_drain": (ctypes.c_int, [H, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_stop": (ctypes.c_int, [H, ctypes.c_uint32]),
        "cdcflow_host_health_json": (ctypes.c_size_t, [H, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_metrics_text": (ctypes.c_size_t, [H, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_last_error": (ctypes.c_size_t, [H, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_on_state": (ctypes.c_int, [H, STATE_FN, ctypes.c_void_p]),
        "cdcflow_host_migrate": (ctypes.c_int, [H, ctypes.c_uint32, PROGRESS_FN, ctypes.c_void_p, ctypes.c_char_p,
                                                ctypes.c_size_t]),
        "cdcflow_host_verify": (ctypes.c_int, [H, ctypes.c_uint32, PROGRESS_FN, ctypes.c_void_p, ctypes.c_char_p,
                                               ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p,
                                               ctypes.c_size_t]),
        "cdcflow_host_close": (None, [H]),
        "cdcflow_host_close_ex": (ctypes.c_int, [H, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]),
        "cdcflow_host_version": (ctypes.c_char_p, []),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


def text_of(fn, h):
    """The buffer protocol as host.h says: a running host's text can grow
    between two calls, so call again until what it needs fits."""
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        need = fn(h, buf, size)
        assert need > 0
        if need <= size:
            return buf.value.decode()
        assert len(buf.value) < size  # a cut copy, NUL-terminated
        size = need


# Loads the library by a relative path from its own folder, then changes
# directory: the library must still find its shipped plugins (its folder is
# resolved when it is loaded). Also prints what an unknown plugin's message
# lists as searched. argv: pipeline file, outbox, scratch folder.
RELATIVE_LOAD = r"""
import ctypes, os, sys
lib = ctypes.CDLL("./libcdcflow-host.so")
lib.cdcflow_host_open.restype = ctypes.c_void_p
lib.cdcflow_host_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.cdcflow_host_open_string.restype = ctypes.c_void_p
lib.cdcflow_host_open_string.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.cdcflow_host_drain.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
lib.cdcflow_host_close.argtypes = [ctypes.c_void_p]
os.chdir(sys.argv[3])
os.environ["CDCFLOW_DB"] = sys.argv[2]
err = ctypes.create_string_buffer(2048)
h = lib.cdcflow_host_open(sys.argv[1].encode(), err, len(err))
if not h:
    sys.exit("open: " + err.value.decode())
rc = lib.cdcflow_host_drain(h, 60000, err, len(err))
lib.cdcflow_host_close(h)
if rc != 0:
    sys.exit("drain %d: %s" % (rc, err.value.decode()))
bad = "pipeline: p\nstages:\n  - id: s\n    plugin: no_such_plugin\n"
if lib.cdcflow_host_open_string(bad.encode(), b"p.yaml", err, len(err)):
    sys.exit("an unknown plugin opened")
print(err.value.decode())
"""


# CPython is not built with the sanitizers: a sanitized library cannot be
# loaded into it (the runtime must come first). The release pass runs these.
@unittest.skipIf(sanitize_flags(), "ctypes in a CPython without the sanitizer runtime")
class PythonCtypes(AccountsTest):
    def test_relative_load_then_chdir_finds_the_shipped_plugins(self):
        inst = Installed.get()
        c = self.conn()
        insert(c, Generator(seed=5, accounts=20).rows(300))
        c.close()
        scratch = self.path("elsewhere")
        os.makedirs(scratch)
        env = dict(inst.env)
        env.pop("LD_LIBRARY_PATH", None)  # the relative path alone names the library
        r = subprocess.run([sys.executable, "-c", RELATIVE_LOAD, PIPELINE, self.db, scratch], cwd=inst.libdir,
                           env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assert_matches_model()
        # Searched: the install's own plugin folder, and not the build tree's
        # guess (<libdir>/../../plugins), which an installed library has no business in.
        message = r.stdout.strip()
        self.assertIn("no_such_plugin", message)
        self.assertIn(os.path.realpath(os.path.join(inst.libdir, "cdcflow", "plugins")), message)
        self.assertNotIn("../../plugins", message)

    def test_close_with_a_plugin_stuck_in_process_is_bounded(self):
        inst = Installed.get()
        api = load_api(os.path.join(inst.libdir, "libcdcflow-host.so"))
        out = self.path("events.txt")
        yaml = ("pipeline: stuck\nplugin_path: ['%s']\nsettings: {batch_size: 1, batch_max_events: 1, shutdown_timeout_ms: 300}\n"
                "stages:\n"
                "  - id: src\n    plugin: gen_source\n    config: {count: 0}\n"
                "  - id: pass\n    plugin: passthrough\n    config: {hang_at: 4}\n"
                "  - id: sink\n    plugin: file_sink\n    config: {output: '%s'}\n" % (TEST_PLUGINS, out))
        err = ctypes.create_string_buffer(1024)
        h = api.cdcflow_host_open_string(yaml.encode(), b"stuck.yaml", err, len(err))
        self.assertTrue(h, err.value)
        self.assertEqual(api.cdcflow_host_start(h, err, len(err)), 0, err.value)
        # One event a batch; the source reads ahead: offset 4 is in the
        # transform's hands (or its queue) by the time 3 is committed.
        def committed():
            try:
                with open(out) as f:
                    return sum(1 for line in f if line.strip())
            except FileNotFoundError:
                return 0
        wait_for(lambda: committed() >= 3, what="offsets 1..3 committed")
        t0 = time.monotonic()
        code = api.cdcflow_host_close_ex(h, 0, err, len(err))  # 0: settings.shutdown_timeout_ms + 1 s
        took = time.monotonic() - t0
        self.assertEqual(code, 4, err.value)
        self.assertLess(took, 1.3 + 3.0)
        self.assertIn(b"did not stop within 1300 ms: stage 'pass' (passthrough) is stuck in a plugin call", err.value)
        self.assertEqual(api.cdcflow_host_close_ex(None, 0, err, len(err)), 2)

    def test_drain_health_metrics_and_misuse(self):
        inst = Installed.get()
        os.environ.pop("CDCFLOW_PLUGIN_PATH", None)
        api = load_api(os.path.join(inst.libdir, "libcdcflow-host.so"))
        self.assertEqual(api.cdcflow_host_version().decode(), "0.1.0")
        gen = Generator(seed=21, accounts=100)
        c = self.conn()
        insert(c, gen.rows(3_000))
        c.close()
        err = ctypes.create_string_buffer(1024)
        yaml = pipeline_text().replace("${CDCFLOW_DB:-demo/accounts.db}", self.db)
        h = api.cdcflow_host_open_string(yaml.encode(), b"accounts.yaml", err, len(err))
        self.assertTrue(h, err.value)
        states = []
        cb = STATE_FN(lambda user, state, js: states.append((state.decode(), json.loads(js)["state"])))
        self.assertEqual(api.cdcflow_host_on_state(h, cb, None), 0)
        self.assertEqual(api.cdcflow_host_drain(h, 60000, err, len(err)), 0, err.value)
        self.assert_matches_model()
        health = json.loads(text_of(api.cdcflow_host_health_json, h))
        self.assertEqual((health["state"], health["events"]), ("stopped", 3_000))
        self.assertEqual(states[-1], ("stopped", "stopped"))
        page = text_of(api.cdcflow_host_metrics_text, h)
        applied = [l for l in page.splitlines()
                   if l.startswith('cdcflow_events_total{pipeline="accounts",stage="project",outcome="applied"}')]
        self.assertEqual(len(applied), 1)
        self.assertEqual(float(applied[0].split()[-1]), health["applied"])

        # Misuse: a status, never a crash.
        self.assertEqual(api.cdcflow_host_stop(h, 1000), 0)
        self.assertEqual(api.cdcflow_host_stop(h, 1000), 0)
        self.assertEqual(api.cdcflow_host_start(h, err, len(err)), 2)
        self.assertIn(b"runs once", err.value)
        self.assertEqual(api.cdcflow_host_on_state(h, STATE_FN(), None), 0)  # NULL: removed
        api.cdcflow_host_close(h)
        self.assertEqual(api.cdcflow_host_start(None, err, len(err)), 2)
        self.assertEqual(api.cdcflow_host_drain(None, 0, err, len(err)), 2)
        self.assertEqual(api.cdcflow_host_stop(None, 0), 2)
        self.assertEqual(api.cdcflow_host_health_json(None, None, 0), 0)
        api.cdcflow_host_close(None)
        self.assertFalse(api.cdcflow_host_open(None, err, len(err)))
        self.assertFalse(api.cdcflow_host_open_string(b"stages: [", None, err, len(err)))
        self.assertTrue(err.value.startswith(b"<string>:1:"), err.value)

    def test_migrate_and_verify_with_progress_like_the_cli(self):
        inst = Installed.get()
        api = load_api(os.path.join(inst.libdir, "libcdcflow-host.so"))
        legacy = self.path("legacy.db")
        c = sqlite3.connect(legacy)
        c.execute("CREATE TABLE legacy_outbox(id INTEGER PRIMARY KEY, topic TEXT, message_key TEXT, "
                  "message_type TEXT, body TEXT, created_at TEXT, published INTEGER)")
        c.executemany("INSERT INTO legacy_outbox VALUES (?, ?, ?, 'AccountCreated', '{}', '2020-01-01T00:00:00Z', 0)",
                      [(i, "Account" if i % 50 else None, "acc-%d" % i) for i in range(1, 2001)])
        c.commit()
        c.close()
        twin = self.path("twin.db")
        shutil.copy(legacy, twin)

        os.environ["CDCFLOW_DB"] = legacy
        self.addCleanup(os.environ.pop, "CDCFLOW_DB", None)
        err = ctypes.create_string_buffer(1024)
        h = api.cdcflow_host_open(MIGRATION.encode(), err, len(err))
        self.assertTrue(h, err.value)
        calls = []
        progress = PROGRESS_FN(lambda user, done, total: calls.append((done, total)))
        try:
            self.assertEqual(api.cdcflow_host_migrate(h, 60000, progress, None, err, len(err)), 0, err.value)
            self.assertTrue(err.value.startswith(b"1960 migrated this run, 1960 in all; 40 unmappable"), err.value)
            self.assertEqual(calls[-1], (2000, 2000))
            self.assertEqual([d for d, _ in calls], sorted(d for d, _ in calls))
            calls.clear()
            needed = ctypes.c_size_t(0)
            self.assertEqual(api.cdcflow_host_verify(h, 0, progress, None, None, 0, ctypes.byref(needed), err,
                                                     len(err)), 0, err.value)
            buf = ctypes.create_string_buffer(needed.value)
            self.assertEqual(api.cdcflow_host_verify(h, 0, progress, None, buf, len(buf), None, err, len(err)), 0)
            embedded = json.loads(buf.value)
            self.assertEqual(calls[-1], (2000, 2000))
        finally:
            api.cdcflow_host_close(h)

        # The CLI on a copy: the same outbox, and the same report.
        r = run(["migrate", MIGRATION, "--progress=none"], env=env_with(CDCFLOW_DB=twin), timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("1960 migrated this run", r.stdout)
        v = run(["verify", MIGRATION, "--json"], env=env_with(CDCFLOW_DB=twin), timeout=120)
        self.assertEqual(v.returncode, 0, v.stderr[-3000:])
        self.assertEqual(embedded, json.loads(v.stdout))
        rows = "SELECT id, aggregatetype, aggregateid, type, payload FROM outbox ORDER BY id"
        a, b = sqlite3.connect(legacy), sqlite3.connect(twin)
        try:
            self.assertEqual(a.execute(rows).fetchall(), b.execute(rows).fetchall())
        finally:
            a.close()
            b.close()

    def test_metrics_equal_the_clis_for_the_same_run(self):
        inst = Installed.get()
        api = load_api(os.path.join(inst.libdir, "libcdcflow-host.so"))
        c = self.conn()
        insert(c, Generator(seed=8, accounts=200).rows(5_000))
        c.close()
        twin = self.path("twin.db")
        shutil.copy(self.db, twin)

        err = ctypes.create_string_buffer(1024)
        os.environ["CDCFLOW_DB"] = self.db  # the library reads this process's environment
        self.addCleanup(os.environ.pop, "CDCFLOW_DB", None)
        h = api.cdcflow_host_open(PIPELINE.encode(), err, len(err))
        self.assertTrue(h, err.value)
        try:
            self.assertEqual(api.cdcflow_host_drain(h, 60000, err, len(err)), 0, err.value)
            embedded = text_of(api.cdcflow_host_metrics_text, h)
        finally:
            api.cdcflow_host_close(h)
        if shutil.which("promtool"):
            promtool_check(self, embedded)  # the page is valid exposition text

        # The CLI on a copy of the same outbox, scraped once everything is committed.
        port = free_port()
        proc = start(["run", PIPELINE, "--http", "127.0.0.1:%d" % port], env=env_with(CDCFLOW_DB=twin))
        try:
            wait_for(lambda: checkpoint(twin) == 5_000 and
                     json.loads(scrape(port, "/health"))["events"] == 5_000, timeout=60, what="the CLI's run")
            served = scrape(port)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        mine, cli = parse(embedded), parse(served)
        self.assertEqual(sorted(mine), sorted(cli), "the same families")
        for family in ("cdcflow_events_total", "cdcflow_dead_letters_total", "cdcflow_checkpoint_offset"):
            self.assertIn(family, mine)
            self.assertEqual(sorted((n, sorted(l.items()), v) for n, l, v in mine[family]["samples"]),
                             sorted((n, sorted(l.items()), v) for n, l, v in cli[family]["samples"]), family)


if __name__ == "__main__":
    main()

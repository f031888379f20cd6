"""The plugin author's guide's example plugins, built as its reader builds
them: install cdcflow (meson install into a temporary root), take the
examples from that install (share/doc/cdcflow/examples), build each with its
own meson.build against the installed SDK found by pkg-config
(PKG_CONFIG_PATH + PKG_CONFIG_SYSROOT_DIR), and run the example pipeline
with the installed host on a real SQLite outbox. Every complete plugin printed
in the installed guide is compiled as printed and loaded, and the stateful
ones (section 5) are run across a restart."""
import glob
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TempDirTest, install_tree, main  # noqa: E402
from outbox_gen import open_outbox  # noqa: E402


def add_events(db, rows):
    """rows: (event id, type, payload); aggregate 'Account'/'acc-1'."""
    conn = sqlite3.connect(db)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone():
        open_outbox(conn)
    conn.executemany("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) "
                     "VALUES (?, 'Account', 'acc-1', ?, ?, 1700000000000000)", rows)
    conn.commit()
    conn.close()


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


class GuideExamples(TempDirTest):
    def test_examples_build_against_the_installed_sdk_and_run(self):
        host, env = install_tree(self.path("root"))
        installed = glob.glob(self.path("root") + "/**/share/doc/cdcflow/examples/plugins", recursive=True)
        self.assertEqual(len(installed), 1, "the examples are installed with the guide")
        self.assertTrue(glob.glob(self.path("root") + "/**/share/doc/cdcflow/plugin-authoring.md", recursive=True))
        ex = self.path("examples")
        shutil.copytree(installed[0], ex)
        for name in ("mask", "jsonl_sink"):
            d = os.path.join(ex, name)
            for cmd in (["meson", "setup", "build"], ["ninja", "-C", "build"]):
                r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, "%s in %s:\n%s%s" % (cmd, name, r.stdout[-3000:], r.stderr[-3000:]))
            self.assertTrue(os.path.isfile(os.path.join(d, "build", name + ".so")))

        # Every complete plugin in the guide (a cpp block with CDCFLOW_PLUGIN)
        # compiles as printed, with the command the guide gives, and loads;
        # every other cpp block says that it is a fragment.
        guide = glob.glob(self.path("root") + "/**/share/doc/cdcflow/plugin-authoring.md", recursive=True)[0]
        with open(guide) as f:
            blocks = re.findall(r"```cpp\n(.*?)```", f.read(), re.S)
        complete = [b for b in blocks if "CDCFLOW_PLUGIN(" in b]
        for b in blocks:
            if b not in complete:
                self.assertTrue(b.startswith("// fragment"), "a cpp block in the guide is neither a complete "
                                "plugin nor marked as a fragment:\n" + b)
        # The guide's copy of mask's declaration is the example's own.
        decl = [b for b in blocks
                if b.startswith("// fragment: the declaration of examples/plugins/mask/mask.cpp")]
        self.assertEqual(len(decl), 1)
        struct = decl[0][decl[0].index("struct MaskSettings {"):decl[0].index("};\n") + 3]
        with open(os.path.join(ex, "mask", "mask.cpp")) as f:
            self.assertIn(struct, f.read(), "the guide's MaskSettings differs from examples/plugins/mask/mask.cpp")
        names = [re.search(r'kName = "(\w+)"', b).group(1) for b in complete]
        self.assertIn("max_id_length", names)  # the first example, built with the guide's own command
        self.assertGreaterEqual(len(complete), 3)
        cflags = subprocess.run(["pkg-config", "--cflags", "cdcflow"], env=env, check=True, capture_output=True,
                                text=True).stdout.split()
        own = self.path("own")
        os.makedirs(own)
        for name, b in zip(names, complete):
            src = self.write(name + ".cpp", b)
            subprocess.run(["g++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                            "-fvisibility=hidden", "-o", os.path.join(own, name + ".so"), src] + cflags, check=True)
        r = subprocess.run([host, "plugins", "--path", own], capture_output=True, text=True)
        self.assertIn("max_id_length  (transform, ABI 7, version 1.0.0)", r.stdout)
        for name in names:
            self.assertRegex(r.stdout, r"(?m)^%s  \(" % name)

        # The installed host lists them with their declared config.
        r = subprocess.run([host, "plugins", "--path", os.path.join(ex, "mask", "build"), "--path",
                            os.path.join(ex, "jsonl_sink", "build")], capture_output=True, text=True)
        self.assertIn("mask  (transform, ABI 7, version 1.0.0)", r.stdout)
        self.assertIn("jsonl_sink  (sink, ABI 7, version 1.0.0)", r.stdout)
        self.assertRegex(r.stdout, r"field\s+string\s+required")

        # Run from another folder: the pipeline's plugin_path is relative to
        # the file, the sink's output paths to the working directory.
        work = self.path("work")
        os.makedirs(work)
        db = os.path.join(work, "app.db")
        add_events(db, [
            ("e1", "AccountCreated", '{"owner": "Ada Lovelace", "currency": "EUR"}'),
            ("e2", "MoneyDeposited", '{"amount": "12.50"}'),
            ("e3", "AccountCreated", "{not json"),                 # cannot be masked: a dead letter
            ("e4", "AccountClosed", '{"owner": "Ada Lovelace"}'),  # dropped
        ])
        run_env = dict(os.environ, CDCFLOW_DB=db)
        pipeline = os.path.join(ex, "pipeline.yaml")

        def run():
            r = subprocess.run([host, "run", pipeline, "--drain"], cwd=work, env=run_env,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            return r

        r = run()
        self.assertIn("4 events: 2 applied, 1 rejected, 0 duplicates, 1 dropped", r.stdout)
        out = os.path.join(work, "events.jsonl")
        lines = read_lines(out)
        self.assertEqual([l["event_id"] for l in lines], ["e1", "e2"])  # the dropped e4 is absent
        self.assertEqual(json.loads(lines[0]["payload"]), {"owner": "***", "currency": "EUR"})
        self.assertEqual(json.loads(lines[1]["payload"]), {"amount": "12.50"})  # no field: untouched
        dead = read_lines(out + ".dead")
        self.assertEqual(len(dead), 1)
        self.assertEqual((dead[0]["event_id"], dead[0]["stage"], dead[0]["payload"]), ("e3", "mask", "{not json"))
        self.assertIn("cannot be masked", dead[0]["reason"])
        with open(out + ".checkpoint") as f:
            self.assertEqual(json.load(f)["positions"], {"": 4})  # past the dropped last event

        # More input: the second run starts after the checkpoint.
        add_events(db, [("e5", "MoneyWithdrawn", '{"amount": "2.50"}')])
        r = run()
        self.assertIn("1 events: 1 applied, 0 rejected, 0 duplicates, 0 dropped", r.stdout)
        self.assertEqual([l["event_id"] for l in read_lines(out)], ["e1", "e2", "e5"])

        # A crash between writing lines and replacing the checkpoint leaves
        # lines past it: the next start cuts them off and writes the replayed
        # events once.
        with open(out, "a") as f:
            f.write('{"event_id": "written after the last commit"}\n')
        add_events(db, [("e6", "AccountCreated", '{"owner": "Grace", "currency": "USD"}')])
        r = run()
        self.assertIn("1 events: 1 applied", r.stdout)
        lines = read_lines(out)
        self.assertEqual([l["event_id"] for l in lines], ["e1", "e2", "e5", "e6"])
        self.assertEqual(json.loads(lines[-1]["payload"])["owner"], "***")
        self.assertEqual(len(read_lines(out + ".dead")), 1)

        # The examples' declarations reach the host through the installed
        # SDK: a value outside mask's declared choices is refused before any
        # stage starts, with the value's file:line:col (exit 3).
        with open(pipeline) as f:
            text = f.read()
        self.assertIn("      field: owner", text)
        bad = os.path.join(ex, "bad.yaml")
        with open(bad, "w") as f:
            f.write(text.replace("      field: owner", "      field: owner\n      on_unparsable: pass"))
        line = text[:text.index("      field: owner")].count("\n") + 2
        r = subprocess.run([host, "validate", bad], cwd=work, env=run_env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"bad\.yaml:%d:\d+: config key 'on_unparsable' for plugin 'mask' must be one of "
                                   r"'reject', 'drop', got 'pass'" % line)

        # ... and a value inside them is honoured: unparsable payloads are
        # filtered out instead of dead-lettered.
        dropping = os.path.join(ex, "dropping.yaml")
        with open(dropping, "w") as f:
            f.write(text.replace("      field: owner", "      field: owner\n      on_unparsable: drop"))
        r = subprocess.run([host, "run", dropping, "--drain"], cwd=work, timeout=120, capture_output=True, text=True,
                           env=dict(run_env, CDCFLOW_OUT=os.path.join(work, "dropping.jsonl")))
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("6 events: 4 applied, 0 rejected, 0 duplicates, 2 dropped", r.stdout)
        self.assertEqual(read_lines(os.path.join(work, "dropping.jsonl.dead")), [])

        # The guide's stateful examples do what section 5 says: recent_ids
        # behind outbox_source recognises, after a restart, a copy of an
        # event committed before it (its memory rebuilt from the replay) ...
        sink_dir = os.path.join(ex, "jsonl_sink", "build")
        state_db = os.path.join(work, "state.db")
        add_events(state_db, [("s1", "AccountCreated", "{}"), ("s2", "MoneyDeposited", "{}")])

        def stateful(name, source, config):
            path = self.write(name + ".yaml", """
pipeline: %s
plugin_path: [%s, %s]
stages:
  - {id: src, plugin: %s, config: %s}
  - {id: recent, plugin: recent_ids, config: {remember: 3}}
  - {id: out, plugin: jsonl_sink, config: {output: %s.jsonl, dead_letters: %s.dead, checkpoint: %s.cp}}
""" % (name, own, sink_dir, source, config, name, name, name))
            r = subprocess.run([host, "run", path, "--drain"], cwd=work, timeout=120, capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            return r

        outbox = "{database: %s}" % json.dumps(state_db)
        stateful("recent", "outbox_source", outbox)
        add_events(state_db, [("s2", "MoneyDeposited", "{}"), ("s3", "MoneyDeposited", "{}")])
        r = stateful("recent", "outbox_source", outbox)
        self.assertIn("2 events: 1 applied, 0 rejected, 1 duplicates, 0 dropped", r.stdout)
        self.assertIn("rebuilt stream state from 2 events up to the checkpoint", r.stderr)

        # ... and counter_source replays the last `remember` events up to the checkpoint.
        r = stateful("counted", "counter_source", "{count: 5}")
        self.assertIn("5 events: 5 applied", r.stdout)
        r = stateful("counted", "counter_source", "{count: 8}")
        self.assertIn("3 events: 3 applied, 0 rejected, 0 duplicates", r.stdout)
        self.assertIn("rebuilt stream state from 3 events up to the checkpoint", r.stderr)
        self.assertEqual([l["event_id"] for l in read_lines(os.path.join(work, "counted.jsonl"))],
                         ["ev-%d" % k for k in range(1, 9)])


if __name__ == "__main__":
    main()

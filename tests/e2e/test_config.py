"""End-to-end tests of declared config: what `cdcflow plugins` shows, what the
host enforces before create (bounds, choices, required keys, typos), that a
secret's value is never printed, that values reach the plugin's members, and
that every plugin README's key table matches the plugin's declaration."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import SOURCE_ROOT, TEST_PLUGINS, BIN, TempDirTest, env_with, main, run  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE_ROOT, "tools"))
import config_tables  # noqa: E402

ENV = env_with(CDCFLOW_PLUGIN_PATH=TEST_PLUGINS)
SECRET = "s3cr3t-Value-xyz"


def pipeline(probe):
    """The probe's config lines start at line 9."""
    return ("pipeline: cfg\nstages:\n"
            "  - id: src\n    plugin: gen_source\n    config: {count: 10}\n"
            "  - id: probe\n    plugin: config_probe\n    config:\n" +
            "".join("      %s\n" % line for line in probe) +
            "  - id: sink\n    plugin: file_sink\n")


class Plugins(TempDirTest):
    def test_plugins_shows_type_default_bounds_choices_secret(self):
        r = run(["plugins"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertIn("config_probe  (transform, ABI 7", out)
        self.assertRegex(out, r"\n    mode\s+string\s+default safe; one of: 'fast', 'safe'\s+how to run\n")
        self.assertRegex(out, r"\n    level\s+int\s+default 0; -5 to 5\s+a bounded integer\n")
        self.assertRegex(out, r"\n    ratio\s+double\s+default 0.5; 0 to 1\s+a bounded double\n")
        self.assertRegex(out, r"\n    extra\s+json\s+default \[\]\s+any YAML value, as JSON\n")
        self.assertRegex(out, r"\n    limit\s+int\s+at least 1\s+optional")
        self.assertRegex(out, r"\n    old_knob\s+int\s+deprecated\s+the probe no longer has a knob")
        # A secret is marked, and its default is not shown.
        self.assertRegex(out, r"\n    token\s+string\s+secret; default \(secret: not shown\)\s+a secret string\n")
        self.assertNotIn("probe-default-token", out)
        # ABI 1-style keys (kConfig) are listed the same way.
        self.assertRegex(out, r"\n    reject_every\s+int\s+default 0\s+reject events")

    def test_plugins_markdown(self):
        r = run(["plugins", "--markdown", "config_probe"], env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "| key | type | default | allowed | notes | description |")
        self.assertEqual(lines[1], "|---|---|---|---|---|---|")
        self.assertIn("| `mode` | string | `safe` | one of: `fast`, `safe` |  | how to run |", lines)
        self.assertIn("| `level` | int | `0` | -5 to 5 |  | a bounded integer |", lines)
        self.assertIn("| `token` | string | (secret: not shown) |  | secret | a secret string |", lines)
        self.assertIn("| `pin` | int |  | 1000 to 9999 | secret | a secret, bounded integer |", lines)
        self.assertNotIn("probe-default-token", r.stdout)
        self.assertEqual(len(lines), 2 + 11)  # one row per declared key

        every = run(["plugins", "--markdown"], env=ENV)
        self.assertEqual(every.returncode, 0, every.stderr)
        self.assertIn("## config_probe\n", every.stdout)
        self.assertIn("## gen_source\n", every.stdout)

        missing = run(["plugins", "--markdown", "nope"], env=ENV)
        self.assertEqual(missing.returncode, 3)
        self.assertIn("plugin 'nope' not found", missing.stderr)


class Enforcement(TempDirTest):
    def error_of(self, probe):
        p = self.write("p.yaml", pipeline(probe))
        r = run(["validate", p], env=ENV)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)  # one line
        self.assertEqual(r.stdout, "")
        return r.stderr.strip()

    def test_bounds_choices_types_and_typos_are_one_line_errors_with_position(self):
        where = lambda line, col: "cdcflow: %s:%d:%d: " % (self.path("p.yaml"), line, col)  # noqa: E731
        self.assertEqual(self.error_of(["level: 6"]),
                         where(9, 14) + "config key 'level' for plugin 'config_probe' must be from -5 to 5, got '6'")
        self.assertEqual(self.error_of(["level: -5", "ratio: 1.5"]),
                         where(10, 14) + "config key 'ratio' for plugin 'config_probe' must be from 0 to 1, got '1.5'")
        self.assertEqual(self.error_of(["mode: fsat"]),
                         where(9, 13) + "config key 'mode' for plugin 'config_probe' must be one of 'fast', 'safe', "
                         "got 'fsat' (did you mean 'fast'?)")
        self.assertEqual(self.error_of(["levle: 1"]),
                         where(9, 7) + "unknown config key 'levle' for plugin 'config_probe': did you mean 'level'?")
        self.assertEqual(self.error_of(["port: 70000"]),
                         where(9, 13) + "config key 'port' for plugin 'config_probe' must be from 1 to 65535, "
                         "got '70000'")

    def test_a_plugin_error_inside_a_json_value_names_the_nested_position(self):
        # config_location_at (ABI 6): the probe refuses the value fail_at points
        # at, and validate prints where that value is, not where 'extra' is.
        probe = ["extra:",                                # line 9
                 "  rules:",                              # 10
                 "    - {name: a, when: [x, y]}",         # 11
                 "    - name: b",                         # 12
                 "      when:",                           # 13
                 "        a/b: &anc {q: 1}",              # 14
                 "        al: *anc"]                      # 15
        path = self.path("p.yaml")

        def at(line, token, nth=1):
            text = pipeline(probe).splitlines()[line - 1]
            col = -1
            for _ in range(nth):
                col = text.index(token, col + 1)
            return "cdcflow: %s:%d:%d: " % (path, line, col + 1)

        for pointer, where in (("/rules/0/when/1", at(11, "y")),
                               ("/rules/1/when/a~1b/q", at(14, "1")),
                               ("/rules/1/when/al/q", at(14, "1")),      # an alias: where the anchored text is
                               ("/rules/1/nope", at(12, "name")),       # a missing key: the mapping that lacks it
                               ("/rules/7", at(11, "-")),               # past the end: the sequence
                               ("", at(10, "rules"))):
            err = self.error_of(probe + ["fail_at: '%s'" % pointer])
            self.assertEqual(err, where + "stage 'probe' (plugin 'config_probe'): extra%s: refused on purpose "
                             "(fail_at)" % pointer)

    def test_a_secret_is_never_echoed(self):
        for probe, why in ((["pin: 12345678"], "must be from 1000 to 9999, got (secret: not shown)"),
                           (["pin: " + SECRET], "must be an integer (int64), got (secret: not shown)"),
                           (["token: [" + SECRET + "]"], "must be a string, got (secret: not shown)")):
            err = self.error_of(probe)
            self.assertIn(why, err)
            self.assertNotIn(SECRET, err)
            self.assertNotIn("12345678", err)

    def test_a_secret_repeated_by_a_yaml_alias_is_not_echoed(self):
        # The alias repeats the secret under a key that is not secret, even in
        # another stage: the message about that key must not show it either.
        err = self.error_of(["token: &t " + SECRET, "mode: *t"])
        self.assertIn("config key 'mode' for plugin 'config_probe' must be one of 'fast', 'safe', "
                      "got (secret: not shown)", err)
        self.assertNotIn(SECRET, err)
        p = self.write("p.yaml", pipeline(["token: &t " + SECRET]).replace(
            "plugin: file_sink\n", "plugin: file_sink\n    config: {slow_us: *t}\n"))
        r = run(["validate", p], env=ENV)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("config key 'slow_us' for plugin 'file_sink' must be an integer (int64), "
                      "got (secret: not shown)", r.stderr)
        self.assertNotIn(SECRET, r.stdout + r.stderr)

    def test_values_reach_the_members_and_a_deprecated_key_warns(self):
        p = self.write("p.yaml", pipeline(["mode: fast", "level: -3", "ratio: 0.25", "loud: yes",
                                           "extra: {a: [1, 2]}", "token: " + SECRET, "pin: 4321",
                                           "old_knob: 7"]))
        r = run(["run", p, "--drain"], env=ENV, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("read: mode=fast level=-3 ratio=0.250000 loud=true extra={\"a\":[1,2]} token_length=%d "
                      "pin_set=yes limit=unset port=8080" % len(SECRET), r.stderr)
        self.assertRegex(r.stderr, r"warn  \[host\] .*p\.yaml:16:7: stage 'probe': config key 'old_knob' is "
                                   r"deprecated: the probe no longer has a knob; remove this key")
        self.assertNotIn(SECRET, r.stdout + r.stderr)
        self.assertNotIn("4321", r.stdout + r.stderr)

        # validate creates the stages too: it prints no value either.
        v = run(["validate", p], env=ENV)
        self.assertEqual(v.returncode, 0, v.stderr)
        self.assertNotIn(SECRET, v.stdout + v.stderr)

    def test_defaults_and_optional_keys(self):
        p = self.write("p.yaml", pipeline(["limit: 3"]))
        r = run(["run", p, "--drain"], env=ENV, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("read: mode=safe level=0 ratio=0.500000 loud=false extra=[] token_length=%d pin_set=no "
                      "limit=3 port=8080" % len("probe-default-token"), r.stderr)
        self.assertNotIn("deprecated", r.stderr)  # old_knob is not set: nothing to warn about


class Readmes(TempDirTest):
    def test_every_plugin_readme_carries_its_declared_table(self):
        problems = config_tables.check(SOURCE_ROOT, BIN)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_the_check_fails_on_drift(self):
        # A copy of the tree's READMEs with one table edited by hand: the check names it.
        root = self.path("tree")
        for name, path in config_tables.readmes(SOURCE_ROOT):
            os.makedirs(os.path.join(root, "plugins", name))
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if name == "deduper":
                text = re.sub(r"\| `window_size` \| int \| `1000000`", "| `window_size` | int | `5`", text)
            with open(os.path.join(root, "plugins", name, "README.md"), "w", encoding="utf-8") as f:
                f.write(text)
        problems = config_tables.check(root, BIN)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("plugins/deduper/README.md: the config table differs from the declaration of plugin "
                      "'deduper'; regenerate it with: python3 tools/config_tables.py --update", problems[0])
        # --update puts it back.
        config_tables.update(root, BIN)
        self.assertEqual(config_tables.check(root, BIN), [])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The config key table in each plugin README is generated from the plugin's
own declaration (`cdcflow plugins --markdown NAME`), between two marker
comments, so that it cannot drift from what the host enforces.

    python3 tools/config_tables.py            # check: exit 1 and name each README that differs
    python3 tools/config_tables.py --update   # rewrite the tables from the declarations

Options: --cdcflow PATH (default build/tools/cdcflow, or $CDCFLOW_BIN),
--root DIR (the source tree, default: this file's parent's parent). The
plugins are found the way `cdcflow` finds them (next to the binary, or
CDCFLOW_PLUGIN_PATH). tests/e2e/test_config.py runs the check.
"""
import argparse
import glob
import os
import subprocess
import sys

BEGIN = ("<!-- BEGIN config table: generated from the plugin's declaration by "
         "`python3 tools/config_tables.py --update` (cdcflow plugins --markdown {name}); do not edit -->")
END = "<!-- END config table -->"
REGENERATE = "python3 tools/config_tables.py --update"


def readmes(root):
    """(plugin name, README path) for every plugins/NAME/README.md."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "plugins", "*", "README.md"))):
        out.append((os.path.basename(os.path.dirname(path)), path))
    return out


def declared_table(cdcflow, name, env=None):
    r = subprocess.run([cdcflow, "plugins", "--markdown", name], capture_output=True, text=True, env=env,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("%s plugins --markdown %s failed (%d): %s" % (cdcflow, name, r.returncode,
                                                                         r.stderr.strip()))
    return r.stdout


def split(text, name):
    """(before, table, after) around the markers, or None when they are missing."""
    begin = BEGIN.format(name=name)
    b = text.find(begin)
    e = text.find(END, b + len(begin)) if b >= 0 else -1
    if b < 0 or e < 0:
        return None
    return text[:b + len(begin)], text[b + len(begin):e], text[e:]


def check(root, cdcflow, env=None):
    """One message per README whose table is missing or differs; [] when all match."""
    problems = []
    for name, path in readmes(root):
        with open(path, encoding="utf-8") as f:
            parts = split(f.read(), name)
        rel = os.path.relpath(path, root)
        if parts is None:
            problems.append("%s: no generated config table (markers %r ... %r); add the markers, then run: %s"
                            % (rel, BEGIN.format(name=name), END, REGENERATE))
            continue
        want = "\n" + declared_table(cdcflow, name, env)
        if parts[1] != want:
            problems.append("%s: the config table differs from the declaration of plugin '%s'; regenerate "
                            "it with: %s" % (rel, name, REGENERATE))
    return problems


def update(root, cdcflow, env=None):
    changed = []
    for name, path in readmes(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        parts = split(text, name)
        if parts is None:
            print("%s: no markers; add these two lines where the table belongs:\n  %s\n  %s"
                  % (path, BEGIN.format(name=name), END), file=sys.stderr)
            continue
        new = parts[0] + "\n" + declared_table(cdcflow, name, env) + parts[2]
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed.append(path)
    return changed


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true", help="rewrite the tables")
    ap.add_argument("--cdcflow", default=os.environ.get("CDCFLOW_BIN", "build/tools/cdcflow"))
    ap.add_argument("--root", default=os.path.dirname(here))
    args = ap.parse_args()
    if args.update:
        for path in update(args.root, args.cdcflow):
            print("updated " + path)
        return 0
    problems = check(args.root, args.cdcflow)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Summarise the accounts read model in DATABASE (after `cdcflow run
pipelines/accounts.yaml --drain`): accounts open/closed, five sample
accounts, the checkpoint, and dead letters with their most common reasons.
(Applied/rejected/duplicate totals are printed by cdcflow itself.)

Standard library only.
"""

import argparse
import re
import sqlite3
import sys


def has_table(db, name):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()


def reason_kind(reason):
    """Group reasons that differ only in their values."""
    r = re.sub(r'"(?:[^"\\]|\\.)*"(\.\.\.)?', '"…"', reason or "")
    r = re.sub(r"account \S+", "account <id>", r)
    return re.sub(r"\d+(\.\d+)?", "N", r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("database")
    ap.add_argument("--top", type=int, default=5, help="how many reasons to list (default 5)")
    args = ap.parse_args()
    try:
        db = sqlite3.connect("file:%s?mode=ro" % args.database, uri=True)
        if not has_table(db, "accounts"):
            sys.exit("summary: %s has no accounts table (has the pipeline run?)" % args.database)
    except sqlite3.Error as e:
        sys.exit("summary: %s: %s" % (args.database, e))

    counts = dict(db.execute("SELECT status, count(*) FROM accounts GROUP BY status").fetchall())
    total = sum(counts.values())
    print("accounts: %d (open %d, closed %d)" % (total, counts.get("open", 0), counts.get("closed", 0)))
    print("sample accounts:")
    rows = db.execute("SELECT account_id, owner, currency, balance, status, version FROM accounts "
                      "ORDER BY rowid LIMIT 5").fetchall()
    for acc, owner, cur, bal, status, version in rows:
        print("  %-12s %-16s %s %15s  %-6s  %d events" % (acc, owner, cur, bal, status, version))

    if has_table(db, "cdcflow_checkpoints"):
        for name, part, pos in db.execute('SELECT name, "partition", position FROM cdcflow_checkpoints'):
            print("checkpoint %s: %s" % (name, ("%s@%d" % (part, pos)) if part else "offset %d" % pos))

    if has_table(db, "dead_letters"):
        letters = db.execute("SELECT stage, reason FROM dead_letters").fetchall()
        print("dead letters: %d" % len(letters))
        groups = {}
        for stage, reason in letters:
            key = (stage, reason_kind(reason))
            n, example = groups.get(key, (0, reason))
            groups[key] = (n + 1, example)
        for (stage, _), (n, example) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print("  %5d  [%s] %s" % (n, stage, example))
    db.close()


if __name__ == "__main__":
    main()

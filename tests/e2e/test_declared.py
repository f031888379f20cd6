"""pipelines/accounts-declarative.yaml (DESIGN.md's accounts model, declared)
against the built-in model (pipelines/accounts.yaml) on the same generated
outbox: every accounts column but updated_at, and the set of dead-lettered
event ids with their rejecting stage, must be equal."""
import os
import shutil
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import SOURCE_ROOT, TempDirTest, env_with, main, run  # noqa: E402
from outbox_gen import Generator, insert, open_outbox  # noqa: E402

BUILT_IN = os.path.join(SOURCE_ROOT, "pipelines", "accounts.yaml")
DECLARED = os.path.join(SOURCE_ROOT, "pipelines", "accounts-declarative.yaml")


class DeclaredAccounts(TempDirTest):
    def drain(self, pipeline, db):
        r = run(["run", pipeline, "--drain"], env=env_with(CDCFLOW_DB=db), timeout=300)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])

    def results(self, db):
        c = sqlite3.connect(db)
        accounts = sorted(c.execute("SELECT account_id, owner, currency, balance, status, version FROM accounts"))
        letters = sorted(c.execute("SELECT event_id, stage FROM dead_letters"))
        reasons = dict(c.execute("SELECT event_id, reason FROM dead_letters"))
        c.close()
        return accounts, letters, reasons

    def compare(self, rows_fn):
        a, b = self.path("built_in.db"), self.path("declared.db")
        c = sqlite3.connect(a)
        open_outbox(c)
        rows_fn(c)
        c.close()
        shutil.copy(a, b)
        self.drain(BUILT_IN, a)
        self.drain(DECLARED, b)
        want, got = self.results(a), self.results(b)
        self.assertEqual(len(got[0]), len(want[0]))
        diff = [(g, w) for g, w in zip(got[0], want[0]) if g != w]
        self.assertEqual(diff[:3], [])
        self.assertEqual(got[1], want[1])
        return want, got

    def test_same_rows_and_dead_letters_on_a_generated_outbox(self):
        def fill(c):
            gen = Generator(seed=4242, accounts=800)
            insert(c, gen.rows(60_000))
        want, got = self.compare(fill)
        stages = {s for _, s in want[1]}
        self.assertEqual(stages, {"validate", "project"})  # both stages reject something
        self.assertGreater(len(want[0]), 500)
        # Beyond the contract: the declared reasons are the built-in ones.
        self.assertEqual(got[2], want[2])

    def test_limits_and_hostile_values(self):
        big = "999999999.99"
        rows = [
            ("e1", "Account", "a-1", "AccountCreated", '{"owner": "O\'Brien\'); DROP TABLE accounts;--", '
                                                      '"currency": "EUR"}', 1),
            ("e2", "Account", "a-1", "MoneyDeposited", '{"amount": "%s"}' % big, 2),
            ("e3", "Account", "a-1", "MoneyDeposited", '{"amount": "0.01"}', 3),  # over the balance limit
            ("e4", "Account", "a-1", "MoneyWithdrawn", '{"amount": "999999999.98"}', 4),
            ("e5", "Account", "a-1", "AccountClosed", '{}', 5),  # balance 0.01
            ("e6", "Account", "a-1", "MoneyWithdrawn", '{"amount": "0.01"}', 6),
            ("e7", "Account", "a-1", "AccountClosed", '{}', 7),
            ("e8", "Account", "a-1", "MoneyDeposited", '{"amount": "1"}', 8),  # closed
            ("e9", "Account", "a-1", "AccountCreated", '{"owner": "X", "currency": "USD"}', 9),  # exists
            ("e10", "Account", "a-2", "AccountCreated", '{"owner": "caf\\u00e9 \\"q\\"", "currency": "GBP"}', 10),
            ("e11", "Account", "a-2", "MoneyDeposited", '{"amount": "12.5", "note": {"deep": [1, 2]}}', 11),
            ("e12", "Account", "a-3", "MoneyWithdrawn", '{"amount": "1"}', 12),  # no account
            ("e13", "Account", "", "AccountCreated", '{"owner": "X", "currency": "USD"}', 13),
        ]
        want, got = self.compare(lambda c: insert(c, rows))
        self.assertEqual([a[0] for a in got[0]], ["a-1", "a-2"])
        self.assertEqual(got[0][1][1:], ('café "q"', "GBP", "12.50", "open", 2))
        self.assertEqual(got[2]["e3"], "balance would exceed 999999999.99")
        self.assertEqual(got[2]["e5"], "cannot close account a-1 with balance 0.01")


if __name__ == "__main__":
    main()

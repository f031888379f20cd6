"""pipelines/products.yaml (issue 12's inventory domain, declared in the
pipeline file): generated outboxes with every rule broken on purpose and
duplicates near and far, compared with an independent Python model
(products_model.py), also across kill -9 at random moments."""
import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import (SOURCE_ROOT, TempDirTest, checkpoint, env_with, kill_9_runs, main, run,  # noqa: E402
                     write_in_background)
from outbox_gen import insert, open_outbox  # noqa: E402
from products_model import BROKEN, Generator, Model  # noqa: E402

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "products.yaml")


class ProductsTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.db = self.path("shop.db")
        self.env = env_with(CDCFLOW_DB=self.db)
        c = sqlite3.connect(self.db)
        open_outbox(c)
        c.close()

    def conn(self):
        return sqlite3.connect(self.db, timeout=30)

    def drain(self):
        r = run(["run", PIPELINE, "--drain"], env=self.env, timeout=300)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return r

    def assert_matches_model(self):
        c = self.conn()
        model = Model()
        outcomes = [model.apply(*r) for r in c.execute(
            "SELECT id, aggregatetype, aggregateid, type, payload, timestamp FROM outbox ORDER BY seq")]
        got = sorted(c.execute("SELECT sku, name, price, stock, status, version, updated_at FROM products"))
        want = model.product_rows()
        self.assertEqual(len(got), len(want))
        diff = [(g, w) for g, w in zip(got, want) if g != w]
        self.assertEqual(diff[:3], [])
        got_pc = sorted(c.execute("SELECT event_id, sku, old_price, new_price, changed_at FROM price_changes"))
        self.assertEqual(got_pc, model.price_change_rows())
        letters = list(c.execute("SELECT event_id, stage, reason FROM dead_letters"))
        ids = [e for e, _, _ in letters]
        self.assertEqual(len(ids), len(set(ids)), "an event was dead-lettered twice")
        self.assertEqual(set(ids), model.dead)
        self.assertEqual({s for _, s, _ in letters}, {"project"})
        self.assertTrue(all(r and "\n" not in r for _, _, r in letters))
        c.close()
        return model, outcomes


class Rules(ProductsTest):
    def test_every_rule_broken_and_duplicates_near_and_far(self):
        gen = Generator(seed=12, products=150)
        c = self.conn()
        insert(c, gen.rows(30_000))
        c.close()
        r = self.drain()
        model, outcomes = self.assert_matches_model()
        self.assertIn("30000 events", r.stdout + r.stderr)
        # The mix exercised every outcome, and every broken shape.
        self.assertGreater(outcomes.count("applied"), 10_000)
        self.assertGreater(outcomes.count("duplicate"), 500)
        self.assertGreater(len(model.price_changes), 500)
        c = self.conn()
        reasons = [r for (r,) in c.execute("SELECT reason FROM dead_letters")]
        for needle in ["already exists", "does not exist", "is delisted", "insufficient stock",
                       "stock would exceed 10000000", "cannot delist", "must be a JSON integer",
                       "more than 2 decimals", "must be at most 1000000.00", "missing field",
                       "unknown event type", "is not Product", "payload is not a JSON object",
                       "must be a non-empty string"]:
            self.assertTrue(any(needle in r for r in reasons), needle)
        c.close()

    def test_each_broken_shape_alone_is_dead_lettered_with_a_reason(self):
        rows = [("e-list", "Product", "sku-1", "ProductListed", '{"name": "Mug", "price": "5.00"}', 1),
                ("e-stock", "Product", "sku-1", "StockReceived", '{"quantity": 10}', 2)]
        for i, (agg, etype, payload) in enumerate(BROKEN):
            rows.append(("e-broken-%d" % i, agg, "sku-1", etype, payload, 10 + i))
        c = self.conn()
        insert(c, rows)
        c.close()
        self.drain()
        self.assert_matches_model()
        c = self.conn()
        dead = {e for (e,) in c.execute("SELECT event_id FROM dead_letters")}
        self.assertEqual(dead, {"e-broken-%d" % i for i in range(len(BROKEN))})
        self.assertEqual(c.execute("SELECT stock, version FROM products").fetchone(), (10, 2))
        c.close()


class ExactlyOnce(ProductsTest):
    def test_kill_9_at_random_moments_while_the_application_writes(self):
        gen = Generator(seed=2027, products=500)
        c = self.conn()
        insert(c, gen.rows(80_000))
        rest = gen.rows(20_000)
        c.close()

        writer = write_in_background(self.db, rest)  # the application keeps writing
        rnd = random.Random(9)
        kills = kill_9_runs(self, ["run", PIPELINE], self.env, self.db,
                            sorted(rnd.sample(range(3_000, 95_000), 6)), rnd)
        writer.join()
        self.assertGreaterEqual(kills, 4)
        self.drain()
        model, outcomes = self.assert_matches_model()
        self.assertEqual(checkpoint(self.db), 100_000)
        self.assertGreater(outcomes.count("duplicate"), 1_000)
        self.assertGreater(len(model.price_changes), 1_000)


if __name__ == "__main__":
    main()

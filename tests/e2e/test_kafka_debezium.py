"""kafka-to-projection behind an existing Debezium deployment: a topic written
the way Debezium's outbox event router writes it with JsonConverter (the
payload column as an escaped string in the {"schema":...,"payload":...}
envelope, or, with schemas.enable=false, as a bare JSON string, or expanded
into JSON by expand.json.payload; the key as a JSON string with JsonConverter
as key converter; the event type in an `eventType` header) is consumed with
value_format debezium_json and type_header eventType into exactly the model's
projection. The same topic read as raw values is refused event by event
(dead letters), never applied as garbage."""
import json
import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import TempDirTest, env_with, main, run  # noqa: E402
from kafka_events import Producer, partition_of  # noqa: E402
from kafka_helpers import MockKafka  # noqa: E402
from kafka_pipeline import TOPIC, model_of, test_pipeline  # noqa: E402
from outbox_gen import Generator  # noqa: E402

PARTITIONS = 4


def debezium_value(payload, style):
    """What JsonConverter writes for the outbox's payload column."""
    if style == "envelope":  # schemas.enable=true, the column as a string
        return json.dumps({"schema": {"type": "string", "optional": True, "name": "io.debezium.data.Json"},
                           "payload": payload})
    if style == "string":  # schemas.enable=false
        return json.dumps(payload)
    # expand.json.payload=true: the payload as JSON (with a schema Debezium infers)
    return '{"schema":{"type":"struct","fields":[]},"payload":%s}' % payload


class Debezium(TempDirTest):
    def setUp(self):
        super().setUp()
        self.kafka = MockKafka(topics={TOPIC: PARTITIONS})
        self.db = self.path("projection.db")
        self.env = env_with(CDCFLOW_DB=self.db, CDCFLOW_KAFKA_BROKERS=self.kafka.bootstrap)

    def tearDown(self):
        self.kafka.close()
        super().tearDown()

    def test_debezium_outbox_router_output_is_consumed(self):
        rows = Generator(seed=7, accounts=100).rows(3_000)
        rnd = random.Random(3)
        with Producer(self.kafka.bootstrap) as p:
            for eid, _t, agg_id, etype, payload, ts in rows:
                style = rnd.choice(["envelope", "string", "expanded"])
                try:
                    expandable = isinstance(json.loads(payload), (dict, list))
                except ValueError:
                    expandable = False
                if not expandable:  # Debezium expands JSON documents only
                    style = rnd.choice(["envelope", "string"])
                key = agg_id.encode()
                if rnd.random() < 0.5:
                    key_bytes = json.dumps(agg_id).encode()  # JsonConverter as key converter
                else:
                    key_bytes = key
                p.send(TOPIC, debezium_value(payload, style).encode(), key=key_bytes,
                       partition=partition_of(key, PARTITIONS), timestamp_ms=ts // 1000,
                       headers=[("id", eid.encode()), ("eventType", etype.encode())])
        pipeline = test_pipeline(self.dir, replace=(("type_header: type ", "type_header: eventType "),
                                                    ("value_format: raw", "value_format: debezium_json")))
        r = run(["run", pipeline, "--drain"], env=self.env, timeout=120)
        self.assertNoCrash(r)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])

        model = model_of(rows)
        c = sqlite3.connect(self.db)
        got = {row[0]: tuple(row[1:]) for row in c.execute(
            "SELECT account_id, owner, currency, balance, status, version, updated_at FROM accounts")}
        want = model.rows()
        diff = [k for k in want if got.get(k) != want[k]]
        self.assertEqual(diff[:5], [], "first differing accounts: %r" % [(k, got.get(k), want[k]) for k in diff[:5]])
        self.assertEqual(len(got), len(want))
        self.assertGreater(model.applied, 2000)
        letters = dict(c.execute("SELECT event_id, payload FROM dead_letters"))
        self.assertEqual(set(letters), set(model.rejected))
        # A dead letter keeps the payload as the application wrote it (the
        # envelope unwrapped), not Debezium's wrapping.
        original = {row[0]: row[4] for row in rows}
        self.assertEqual([e for e in letters if letters[e] != original[e]][:5], [])
        c.close()

        # The same topic read as raw values: every value is refused as it
        # is (an envelope is not an account event), none applied.
        raw_db = self.path("raw.db")
        raw = test_pipeline(self.dir, replace=(("type_header: type ", "type_header: eventType "),))
        r = run(["run", raw, "--drain"], timeout=120,
                env=env_with(CDCFLOW_DB=raw_db, CDCFLOW_KAFKA_BROKERS=self.kafka.bootstrap,
                             CDCFLOW_KAFKA_GROUP="raw-readers"))
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        c = sqlite3.connect(raw_db)
        self.assertEqual(c.execute("SELECT COUNT(*) FROM accounts").fetchone()[0], 0)
        self.assertEqual(c.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] +
                         model.duplicates, len(rows))
        c.close()


if __name__ == "__main__":
    main()

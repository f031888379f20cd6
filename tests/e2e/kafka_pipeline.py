"""The Kafka consumer tests' side of pipelines/kafka-to-projection.yaml: the
shipped pipeline with test-sized group timings, the accounts model of what was
published, the committed positions, and hosts run in the background with
their logs collected as they come."""
import os
import signal
import sqlite3
import subprocess
import threading
import time

from accounts_model import Model
from helpers import BIN, SOURCE_ROOT

PIPELINE = os.path.join(SOURCE_ROOT, "pipelines", "kafka-to-projection.yaml")
TOPIC = "outbox.event.Account"


def test_pipeline(dir_path, lease_ms=3000, session_ms=4000, replace=()):
    """The shipped pipeline with test-sized group timings (a session timeout
    of seconds, a short ownership lease) and any other (old, new) text
    replacements; everything else as shipped."""
    with open(PIPELINE) as f:
        text = f.read()
    for old, new in (("session.timeout.ms: 10000", "session.timeout.ms: %d" % session_ms),
                     ("heartbeat.interval.ms: 1000", "heartbeat.interval.ms: 500"),
                     ("owner_lease_ms: 15000", "owner_lease_ms: %d" % lease_ms)) + tuple(replace):
        assert old in text, old
        text = text.replace(old, new)
    path = os.path.join(dir_path, "kafka-to-projection.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def model_of(rows):
    """The model over outbox rows in the order written (each key's events are
    in one partition, in order, so any interleaving of partitions gives the
    same accounts); timestamps as Kafka keeps them (milliseconds)."""
    m = Model()
    for eid, agg_type, agg_id, etype, payload, ts in rows:
        m.apply_row(eid, agg_type, agg_id, etype, payload, ts // 1000 * 1000)
    return m


def positions(db):
    """Events committed over every partition (sum of position + 1)."""
    try:
        c = sqlite3.connect(db, timeout=30)
        try:
            return c.execute("SELECT COALESCE(SUM(position + 1), 0) FROM cdcflow_checkpoints").fetchone()[0]
        finally:
            c.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


class Host:
    """`cdcflow run PIPELINE [args]` in the background; its stderr lines are
    collected by a thread (a full pipe would block it)."""

    def __init__(self, pipeline, env, args=()):
        self.proc = subprocess.Popen([BIN, "run", pipeline] + list(args), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, errors="replace")
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return "\n".join(self.lines)

    def has(self, text):
        return any(text in line for line in list(self.lines))

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=30):
        """SIGTERM (SIGCONT first: a frozen host cannot act on it); the exit code."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=30):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self.reader.join(10)
        return rc

    def kill(self):
        self.signal(signal.SIGKILL)
        return self.wait(10)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))

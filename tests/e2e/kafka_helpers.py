"""The Kafka tests' peer: librdkafka's mock cluster (cdcflow-kafka-mock), a real
Kafka protocol endpoint on loopback, and kcat to read and write it as any
Kafka client would."""
import os
import subprocess

from helpers import BUILD_ROOT

KAFKA_MOCK = os.environ.get("CDCFLOW_KAFKA_MOCK", os.path.join(BUILD_ROOT, "tools", "cdcflow-kafka-mock"))


class MockKafka:
    """A running mock cluster in --control mode (ends with the test: its
    stdin closing stops it). `bootstrap` is the list to give clients.

        with MockKafka(topics={"outbox.event.Account": 8}) as k:
            k.command("errors Produce NOT_LEADER_FOR_PARTITION")
    """

    def __init__(self, topics=None, brokers=1):
        args = [KAFKA_MOCK, "--control", "--brokers", str(brokers)]
        for name, parts in (topics or {}).items():
            args += ["--topic", "%s:%d" % (name, parts)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            err = self.proc.stderr.read()
            self.proc.wait(10)
            raise RuntimeError("cdcflow-kafka-mock did not start: " + err)

    def command(self, line):
        """One control command; raises unless the mock answers ok."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError("cdcflow-kafka-mock: %s: %s" % (line, answer))

    def create_topic(self, name, partitions):
        self.command("topic %s %d" % (name, partitions))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def kcat_consume(bootstrap, topic, fmt="%p\t%o\t%k\t%s\t%h\n", timeout=60):
    """Every message of `topic` from the beginning, as kcat prints them with
    `fmt` (one line per message unless fmt says otherwise); kcat exits at the
    end of every partition (-e)."""
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-o", "beginning",
                          "-f", fmt], capture_output=True, text=True, timeout=timeout, errors="replace")
    if out.returncode != 0:
        raise RuntimeError("kcat -C failed: " + out.stderr)
    return out.stdout


def kcat_produce(bootstrap, topic, lines, key_delim="\t", headers=(), timeout=60):
    """Produces `lines` ("key<delim>value" each) to `topic` with kcat -P."""
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", key_delim]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args, input="".join(l + "\n" for l in lines), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("kcat -P failed: " + out.stderr)

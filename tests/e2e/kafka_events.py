"""Writes events into Kafka the way an outbox publisher does, one message each
with its own headers, key, partition and timestamp (kcat -P sets the same
headers on every message, so it cannot write an event stream). It calls
librdkafka itself (the library the project builds against) through ctypes:
no Python Kafka client is needed.

    with Producer(bootstrap) as p:
        p.send("outbox.event.Account", value=b'{"amount": "1.00"}', key=b"acc-1",
               headers=[("id", b"e-1"), ("type", b"MoneyDeposited")], partition=3, timestamp_ms=...)
"""
import ctypes
import zlib

_lib = ctypes.CDLL("librdkafka.so.1")

# rdkafka.h's rd_kafka_vtype_t
_V_TOPIC, _V_PARTITION, _V_VALUE, _V_KEY, _V_MSGFLAGS, _V_TIMESTAMP, _V_HEADER = 1, 3, 4, 5, 7, 8, 9
_MSG_F_COPY = 0x2
_ERR_QUEUE_FULL = -184


class _Mem(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("val", ctypes.c_void_p), ("size", ctypes.c_ssize_t)]


class _U(ctypes.Union):
    _fields_ = [("cstr", ctypes.c_char_p), ("i32", ctypes.c_int32), ("i", ctypes.c_int), ("i64", ctypes.c_int64),
                ("mem", _Mem), ("header", _Header), ("_pad", ctypes.c_char * 64)]


class _VU(ctypes.Structure):  # rd_kafka_vu_t
    _fields_ = [("vtype", ctypes.c_int), ("u", _U)]


_lib.rd_kafka_conf_new.restype = ctypes.c_void_p
_lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_lib.rd_kafka_new.restype = ctypes.c_void_p
_lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
_lib.rd_kafka_produceva.restype = ctypes.c_void_p
_lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.POINTER(_VU), ctypes.c_size_t]
_lib.rd_kafka_error_code.restype = ctypes.c_int
_lib.rd_kafka_error_code.argtypes = [ctypes.c_void_p]
_lib.rd_kafka_error_string.restype = ctypes.c_char_p
_lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
_lib.rd_kafka_error_destroy.argtypes = [ctypes.c_void_p]
_lib.rd_kafka_poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.rd_kafka_flush.restype = ctypes.c_int
_lib.rd_kafka_outq_len.argtypes = [ctypes.c_void_p]
_lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]


def partition_of(key, partitions):
    """A stable partition per key (one key, one partition: per-key order)."""
    return zlib.crc32(key) % partitions


class Producer:
    def __init__(self, bootstrap, **props):
        conf = _lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        settings = {"bootstrap.servers": bootstrap, "enable.idempotence": "true", "linger.ms": "5",
                    "queue.buffering.max.messages": "1000000"}
        settings.update({k: str(v) for k, v in props.items()})
        for k, v in settings.items():
            if _lib.rd_kafka_conf_set(conf, k.encode(), v.encode(), err, 512) != 0:
                raise RuntimeError("librdkafka: %s: %s" % (k, err.value.decode()))
        self.rk = _lib.rd_kafka_new(0, conf, err, 512)  # RD_KAFKA_PRODUCER
        if not self.rk:
            raise RuntimeError("librdkafka: " + err.value.decode())

    def send(self, topic, value, key=None, headers=(), partition=None, timestamp_ms=None):
        """Queues one message (librdkafka copies every byte)."""
        vus = [(_V_TOPIC, "cstr", topic.encode())]
        if partition is not None:
            vus.append((_V_PARTITION, "i32", partition))
        keep = []  # the buffers stay alive until produceva copied them

        def mem(b):
            buf = ctypes.create_string_buffer(b, len(b)) if b else None
            keep.append(buf)
            return _Mem(ctypes.cast(buf, ctypes.c_void_p) if buf is not None else None, len(b) if b else 0)
        if value is not None:
            vus.append((_V_VALUE, "mem", mem(value)))
        if key is not None:
            vus.append((_V_KEY, "mem", mem(key)))
        vus.append((_V_MSGFLAGS, "i", _MSG_F_COPY))
        if timestamp_ms is not None:
            vus.append((_V_TIMESTAMP, "i64", timestamp_ms))
        for name, val in headers:
            m = mem(val)
            nm = name.encode()
            keep.append(nm)
            vus.append((_V_HEADER, "header", _Header(nm, m.ptr, len(val))))
        arr = (_VU * len(vus))()
        for i, (t, field, v) in enumerate(vus):
            arr[i].vtype = t
            setattr(arr[i].u, field, v)
        while True:
            e = _lib.rd_kafka_produceva(self.rk, arr, len(vus))
            if not e:
                return
            code = _lib.rd_kafka_error_code(e)
            text = _lib.rd_kafka_error_string(e).decode()
            _lib.rd_kafka_error_destroy(e)
            if code != _ERR_QUEUE_FULL:
                raise RuntimeError("librdkafka produce: " + text)
            _lib.rd_kafka_poll(self.rk, 50)

    def flush(self, timeout_ms=60000):
        if _lib.rd_kafka_flush(self.rk, timeout_ms) != 0:
            raise RuntimeError("librdkafka: %d messages not delivered in time" % _lib.rd_kafka_outq_len(self.rk))

    def close(self):
        if self.rk:
            self.flush()
            _lib.rd_kafka_destroy(self.rk)
            self.rk = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send_rows(producer, rows, partitions, topic="outbox.event.Account", id_header="id", type_header="type"):
    """Outbox rows (id, aggregatetype, aggregateid, type, payload, timestamp_us), as
    kafka_sink publishes them: key = aggregate id, value = payload, headers id
    and type; the partition from the key, the timestamp in milliseconds."""
    for eid, _agg_type, agg_id, etype, payload, ts in rows:
        key = agg_id.encode()
        producer.send(topic, payload.encode(), key=key, partition=partition_of(key, partitions),
                      headers=[(id_header, eid.encode()), (type_header, etype.encode())], timestamp_ms=ts // 1000)

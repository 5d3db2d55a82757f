"""Shared by the durability tests: a publisher thread we can stop, queue reading, audits."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from edgefwd import _core
from edgefwd.queue import Queue
from edgefwd_dev.services import free_port

TELEMETRY = {"mqtt_filter": "vehicles/+/telemetry/#", "kafka_key": "${1}", "priority": 0}
ALARMS = {"mqtt_filter": "vehicles/+/alarms", "kafka_key": "${1}", "priority": 10}


def closed_bootstrap() -> str:
    """A Kafka bootstrap address nobody listens on: the drainer can never deliver."""
    return f"127.0.0.1:{free_port()}"


def topics(kafka, *names: str, partitions: int = 3) -> list[str]:
    suffix = uuid.uuid4().hex[:8]
    out = [f"dur.{n}.{suffix}" for n in names]
    for t in out:
        kafka.create_topic(t, partitions=partitions)
    return out


def message_id(payload: bytes) -> tuple[str, int]:
    doc = json.loads(payload)
    return doc["device"], doc["n"]


class Stream:
    """Publishes with `pub` on a thread until stopped (FleetPublisher.run has a fixed count)."""

    def __init__(self, pub, rate: float, alarm_every: int = 0):
        self.pub, self.rate, self.alarm_every = pub, rate, alarm_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="durability-stream")
        self.sent = 0

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            delay = t0 + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sent += 1
            if self.alarm_every and self.sent % self.alarm_every == 0:
                self.pub.alarm()
            else:
                self.pub.publish_next()

    def start(self) -> "Stream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "publisher thread did not stop"


def read_queue(data_dir: str | Path, max_bytes: int) -> tuple[list[tuple[int, int, list]], dict[str, int], int]:
    """With the agent stopped: every stored batch (id, priority, decoded records) in batch
    order, the counters, and LMDB's map size."""
    q = Queue(data_dir, max_bytes, readonly=True)
    try:
        out = []
        after = 0
        while batches := q.read_batches(after, 256):
            for b in batches:
                after = b.id
                out.append((b.id, b.priority, _core.decode_batch(bytes(b.data))[1]))
        return out, q.counters(), q.env.info()["map_size"]
    finally:
        q.close()


def queue_audit(acked: list[tuple[str, bytes]], batches: list[tuple[int, int, list]]) -> dict:
    """Every acked (device, n) in the queue exactly once; seq strictly increasing in batch
    order (one priority only); per-device n increasing in queue order."""
    wanted = {message_id(p) for _, p in acked}
    ids = []
    seqs = []
    for _, _, records in batches:
        for rec in records:
            seqs.append(rec[0])
            ids.append(message_id(rec[10]))
    got = Counter(ids)
    last: dict[str, int] = {}
    order_violations = 0
    for device, n in ids:
        if device in last and n <= last[device]:
            order_violations += 1
        last[device] = n
    seq_violations = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
    return {
        "acked": len(wanted),
        "records": len(ids),
        "missing_count": len(wanted - set(got)),
        "missing": sorted(wanted - set(got))[:10],
        "duplicates": sum(n - 1 for n in got.values() if n > 1),
        "unacked_extra": len(set(got) - wanted),  # persisted, PUBACK never seen by the publisher
        "seq_violations": seq_violations,
        "order_violations": order_violations,
    }


def kafka_ids(records) -> Counter:
    return Counter(message_id(r.value) for r in records)


def raw_books(c: dict[str, int]) -> bool:
    """The queue's own counters: received = stored + forwarded + dead-lettered + dropped."""
    return c["received"] == (
        c["stored_records"] + c["forwarded"] + c["dead_lettered"] + c["dropped.queue_full"] + c["dropped.expired"]
    )


def status_books(doc: dict) -> bool:
    """What `edgefwd status --json` shows: received = forwarded + queued + in flight +
    dead-lettered + dropped."""
    c = doc["counters"]
    return c["received"] == (
        c["forwarded"] + c["queued"] + c["in_flight"] + c["dead_lettered"] + sum(c["dropped"].values())
    )


def by_device_kind(acked: list[tuple[str, bytes]]) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for topic, payload in acked:
        out["alarms" if topic.endswith("/alarms") else "telemetry"].add(message_id(payload))
    return out

"""Drainer: queue -> Kafka, deleting a batch only once Kafka acknowledged every record in it.

Runs in its own process (see agent.py): producing and delivery-report callbacks would
otherwise compete with ingest for the GIL.  It reads batches in arrival order, decodes them in
one Rust call each, produces every record with ``acks=all`` and idempotence (so librdkafka
keeps order per partition through its own retries), and deletes a batch when all its
delivery reports are in.

When Kafka fails a record with a transient error (down for longer than ``message.timeout.ms``,
say), the drainer stops producing, lets every outstanding report come back, waits, and then
produces again from the oldest batch it still holds, skipping the records that did succeed:
order per key is kept and no record is sent twice because of the outage.  A record Kafka
refuses for good (too large, invalid topic, not authorised) goes to the dead-letter store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

from edgefwd import _core
from edgefwd.config import Config
from edgefwd.faults import crash_point
from edgefwd.kafka_props import producer_config
from edgefwd.queue import DeadLetter, Queue, StoredBatch
from edgefwd.snapshot import write_snapshot

log = logging.getLogger("edgefwd.drainer")

# Errors after which retrying the same record cannot help.
_PERMANENT_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError._INVALID_ARG,
    KafkaError.INVALID_TIMESTAMP,
    KafkaError.RECORD_LIST_TOO_LARGE,
}

_READ_BATCHES = 16
_MAX_IN_FLIGHT_RECORDS = 10_000
_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 15.0
_STATE_INTERVAL_S = 1.0
_IDLE_PROBE_S = 10.0
_EXPIRE_INTERVAL_S = 5.0
_DELETE_GROUP_BATCHES = 64
_DELETE_GROUP_DELAY_S = 0.25


@dataclass
class _InFlight:
    batch: StoredBatch
    records: list  # decode_for_produce tuples
    delivered: set[int] = field(default_factory=set)
    outstanding: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    dead_indexes: set[int] = field(default_factory=set)
    failed: bool = False

    def refuse(self, index: int, letter: DeadLetter) -> None:
        self.dead.append(letter)
        self.dead_indexes.add(index)


@dataclass
class KafkaState:
    connected: bool | None = None
    last_error: str | None = None
    since: float | None = None
    in_flight: int = 0

    def set_connected(self, connected: bool, error: str | None = None) -> None:
        if connected != self.connected:
            self.since = time.time()
        self.connected = connected
        if error is not None or connected:
            self.last_error = error


class Drainer:
    def __init__(self, config: Config, queue: Queue):
        self.config = config
        self.queue = queue
        self.state = KafkaState()
        self._stopping = False
        self._producer = self._make_producer()
        self._in_flight: dict[int, _InFlight] = {}
        self._in_flight_records = 0
        self._read_after = 0  # highest batch id handed to the producer
        self._retry_at: float | None = None  # set while backing off after a failure
        self._backoff = _BACKOFF_MIN_S
        self._last_success = 0.0
        self._last_probe = 0.0
        self._last_expire = 0.0
        self._first_done_at: float | None = None
        self._state_failed = False

    def _make_producer(self) -> Producer:
        conf = producer_config(self.config)
        conf["error_cb"] = self._on_error
        return Producer(conf)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._AUTHENTICATION):
            self.state.set_connected(False, err.str())
            log.warning("event=kafka_error code=%s error=%r", err.name(), err.str())
        elif err.fatal():
            self.state.set_connected(False, err.str())
            log.error("event=kafka_fatal error=%r", err.str())

    # ---------------------------------------------------------------- main loop
    def stop(self) -> None:
        self._stopping = True

    def run(self, state_path: str | None = None) -> None:
        last_state = 0.0
        while not self._stopping:
            worked = self._step()
            now = time.monotonic()
            if state_path and now - last_state >= _STATE_INTERVAL_S:
                self.write_state(state_path)
                last_state = now
            if not worked:
                self._producer.poll(0.02)
        self._finish()
        if state_path:
            self.write_state(state_path)

    def _step(self) -> bool:
        """One round: serve callbacks, delete finished batches, produce more. True if busy."""
        self._producer.poll(0)
        finished = self._collect_finished()
        self._expire_old()
        if self._retry_at is not None:
            if self._in_flight_outstanding() or time.monotonic() < self._retry_at:
                return bool(finished)
            self._retry_at = None
            return self._reproduce_held() or bool(finished)
        if self._in_flight_records >= _MAX_IN_FLIGHT_RECORDS:
            return bool(finished)
        batches = self.queue.read_batches(self._read_after, _READ_BATCHES)
        if not batches:
            self._probe_when_idle()
            return bool(finished)
        for batch in batches:
            self._read_after = batch.id
            try:
                records = _core.decode_for_produce(batch.data, self.config.gateway_id, self.queue.epoch)
            except _core.CorruptBatchError as exc:
                self._quarantine(batch, exc)
                continue
            entry = _InFlight(batch=batch, records=records)
            self._in_flight[batch.id] = entry
            self._in_flight_records += len(records)
            self._produce(entry, range(len(records)))
            crash_point("drainer.after_produce")
            if self._retry_at is not None:
                break
        return True

    def _produce(self, entry: _InFlight, indexes) -> None:
        produce = self._producer.produce
        for i in indexes:
            topic, value, key, ts, headers = entry.records[i]
            while True:
                try:
                    produce(topic, value, key, timestamp=ts, headers=headers, on_delivery=self._callback(entry, i))
                    entry.outstanding += 1
                    break
                except BufferError:  # librdkafka's local queue is full: let it drain
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    entry.refuse(i, self._dead_letter(entry, i, f"produce refused: {exc}"))
                    break

    def _callback(self, entry: _InFlight, index: int):
        def on_delivery(err: KafkaError | None, msg) -> None:
            entry.outstanding -= 1
            if err is None:
                entry.delivered.add(index)
                self._last_success = time.monotonic()
                if not self.state.connected:
                    self.state.set_connected(True)
                self._backoff = _BACKOFF_MIN_S
            elif err.code() in _PERMANENT_ERRORS:
                entry.refuse(index, self._dead_letter(entry, index, f"Kafka refused the record: {err.name()}: {err.str()}"))
            else:
                entry.failed = True
                self.state.set_connected(False, f"{err.name()}: {err.str()}")
                if self._retry_at is None:
                    log.warning("event=kafka_delivery_failed error=%r backoff_s=%.1f", err.str(), self._backoff)
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

        return on_delivery

    def _dead_letter(self, entry: _InFlight, index: int, reason: str) -> DeadLetter:
        topic, value, key, ts, headers = entry.records[index]
        header = dict(headers)
        return DeadLetter(
            reason=reason,
            source="drain",
            data=json.dumps({"kafka_topic": topic, "timestamp_ms": ts}).encode() + b"\n" + value,
            mqtt_topic=header.get("mqtt.topic", b"").decode("utf-8", "replace"),
            seq=int(header.get("edgefwd.seq", b"0")),
            batch_id=entry.batch.id,
        )

    def _collect_finished(self, force: bool = False) -> bool:
        """Delete the batches Kafka has fully acknowledged, in one transaction.

        Deletes are grouped (up to _DELETE_GROUP_DELAY_S after the first batch finished, or
        _DELETE_GROUP_BATCHES batches): every write transaction rewrites a few LMDB pages
        whatever it deletes, and the gateway's flash wears with every page. A crash in
        between re-sends at most that group (at-least-once).
        """
        done: list[tuple[StoredBatch, int]] = []
        dead: list[DeadLetter] = []
        for entry in self._in_flight.values():
            if entry.outstanding == 0 and not entry.failed:
                if len(entry.delivered) + len(entry.dead) == len(entry.records):
                    done.append((entry.batch, len(entry.records)))
                    dead.extend(entry.dead)
        if not done:
            return False
        now = time.monotonic()
        if self._first_done_at is None:
            self._first_done_at = now
        group_full = len(done) >= _DELETE_GROUP_BATCHES or sum(n for _, n in done) >= _MAX_IN_FLIGHT_RECORDS // 2
        if not force and not group_full and now - self._first_done_at < _DELETE_GROUP_DELAY_S:
            return False
        self._first_done_at = None
        crash_point("drainer.before_delete")
        self.queue.complete_batches(done, dead)
        for batch, n in done:
            del self._in_flight[batch.id]
            self._in_flight_records -= n
        return True

    def _in_flight_outstanding(self) -> bool:
        return any(e.outstanding for e in self._in_flight.values())

    def _reproduce_held(self) -> bool:
        """After a failure: send again, in order, every record not yet acknowledged."""
        log.info("event=kafka_retry batches=%d", len(self._in_flight))
        for entry in sorted(self._in_flight.values(), key=lambda e: e.batch.id):
            entry.failed = False
            todo = [i for i in range(len(entry.records)) if i not in entry.delivered and i not in entry.dead_indexes]
            self._produce(entry, todo)
        return True

    def _quarantine(self, batch: StoredBatch, exc: Exception) -> None:
        try:
            n = _core.batch_record_count(batch.data)
        except _core.CorruptBatchError:
            n = 0  # the header itself is damaged: how many it held is unknown
        log.error("event=batch_quarantined batch=%d records=%d error=%r", batch.id, n, str(exc))
        self.queue.complete_batches([], corrupt=[(batch, n)])

    def _expire_old(self) -> None:
        """queue.max_age: drop batches older than that which are not on their way to Kafka."""
        max_age = self.config.queue.max_age_s
        now = time.monotonic()
        if max_age is None or now - self._last_expire < _EXPIRE_INTERVAL_S:
            return
        self._last_expire = now
        cutoff_ms = int((time.time() - max_age) * 1000)
        while dropped := self.queue.expire(cutoff_ms, keep=set(self._in_flight)):
            log.warning("event=records_expired count=%d max_age_s=%s", dropped, max_age)

    def _probe_when_idle(self) -> None:
        """With nothing to send, ask Kafka for metadata now and then so status stays true."""
        now = time.monotonic()
        if now - self._last_probe < _IDLE_PROBE_S or now - self._last_success < _IDLE_PROBE_S:
            return
        self._last_probe = now
        try:
            self._producer.list_topics(timeout=2.0)
            self.state.set_connected(True)
        except KafkaException as exc:
            self.state.set_connected(False, str(exc.args[0].str() if exc.args else exc))

    def _finish(self) -> None:
        """On shutdown: wait a little for outstanding reports and delete what completed."""
        deadline = time.monotonic() + 10.0
        while self._in_flight_outstanding() and time.monotonic() < deadline:
            self._producer.poll(0.1)
        self._collect_finished(force=True)

    def write_state(self, path: str) -> None:
        self.state.in_flight = self._in_flight_records
        try:
            self._write_state(path)
            self._state_failed = False
        except OSError as exc:  # a full disk must not kill the drainer (it would restart-loop)
            if not self._state_failed:
                log.error("event=state_write_failed error=%r", str(exc))
            self._state_failed = True

    def _write_state(self, path: str) -> None:
        write_snapshot(
            path,
            {
                "pid": os.getpid(),
                "time": time.time(),
                "kafka": {
                    "connected": self.state.connected,
                    "last_error": self.state.last_error,
                    "since": self.state.since,
                },
                "in_flight": self._in_flight_records,
            },
        )


def drainer_process_main(config: Config, state_path: str) -> None:
    """Entry point of the drainer process started by the agent."""
    from edgefwd.agent import die_with_parent, setup_logging

    die_with_parent()
    setup_logging(config.log_level, role="drainer")
    queue = Queue(config.data_dir, config.queue.max_bytes)
    drainer = Drainer(config, queue)
    signal.signal(signal.SIGTERM, lambda *_: drainer.stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    log.info("event=drainer_started pid=%d", os.getpid())
    drainer.run(state_path)
    queue.close()
    log.info("event=drainer_stopped")

"""Ingest: MQTT -> route -> durable queue -> PUBACK.

paho's network thread only appends arriving messages to a list.  The committer thread takes
what has arrived (up to ``commit_max_messages``), routes it in one Rust call, encodes one batch,
commits it to LMDB with fsync, and only then acknowledges the messages to the broker.  A batch
closes on size or when the messages already waiting have been taken, never by waiting for
more, so it can never wait on the broker's in-flight window (Mosquitto stops sending once
``max_inflight_messages`` are unacknowledged).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgefwd import _core
from edgefwd.clock import boot_id, clock_synchronized
from edgefwd.faults import crash_point
from edgefwd.config import Config
from edgefwd.queue import DeadLetter, NewBatch, Queue

log = logging.getLogger("edgefwd.ingest")

_CLOCK_RECHECK_S = 10.0
_BLOCKED_RETRY_S = 0.5
_DISK_FULL_BYTES = 1 << 20


@dataclass(slots=True)
class Arrival:
    """One message as paho handed it over, with the gateway's receive times."""

    mid: int
    qos: int
    retain: bool
    dup: bool
    topic: bytes
    payload: bytes
    user_properties: list[tuple[str, str]]
    wall_ms: int
    mono_ns: int


@dataclass
class ConnectionState:
    connected: bool = False
    session_present: bool | None = None
    last_error: str | None = None
    since: float | None = None  # wall time of the last change of `connected`
    blocked: str | None = None  # why ingest is not acknowledging, if it is not
    session_lost_at: float | None = None

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected or self.since is None:
            self.since = time.time()
        self.connected = connected


def message_digest(topic: bytes, payload: bytes) -> bytes:
    return hashlib.blake2b(topic + b"\0" + payload, digest_size=8).digest()


@dataclass
class _Batch:
    records: list[tuple] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    mid_entries: list[tuple[int, bytes, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class Ingest:
    def __init__(self, config: Config, queue: Queue):
        self.config = config
        self.queue = queue
        self.state = ConnectionState()
        self.router = _core.Router(
            [(r.mqtt_filter, r.kafka_topic, r.kafka_key) for r in config.routes], config.gateway_id
        )
        self._skip_retained = [r.skip_retained for r in config.routes]
        self._priority = [r.priority for r in config.routes]
        self.subscriptions = _core.disjoint_cover([r.mqtt_filter for r in config.routes])
        self._boot_id = boot_id()
        self.clock_synced = clock_synchronized()
        self._clock_checked = time.monotonic()
        self._next_seq = queue.next_seq()
        self._message_number = queue.counters()["messages"]
        self._pending: list[Arrival] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._committer = threading.Thread(target=self._commit_loop, name="edgefwd-commit", daemon=True)
        self.client = self._make_client()

    # ---------------------------------------------------------------- MQTT client
    def _make_client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # 3.1.1: a persistent session; MQTT 5 passes clean_start=False to connect() below
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.reveal() if cfg.password else None)
        if cfg.tls is not None:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        cfg = self.config.mqtt
        self._committer.start()
        kwargs: dict = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(min(cfg.session_expiry_s, 0xFFFFFFFF))
            # Explicit, or paho's default (clean start on the first connect) throws away the
            # broker's queue of what arrived while we were down.
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(cfg.host, cfg.port, keepalive=int(cfg.keepalive_s), **kwargs)
        self.client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, finish the commit in progress, ack it, disconnect."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._committer.join(timeout)
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.state.last_error = f"broker refused the connection: {reason_code}"
            self.state.set_connected(False)
            log.error("event=mqtt_connect_refused reason=%r", str(reason_code))
            return
        self.state.set_connected(True)
        self.state.session_present = bool(flags.session_present)
        self.state.last_error = None
        subscribed = self.queue.get_meta_json("subscriptions")
        log.info(
            "event=mqtt_connected session_present=%s subscriptions=%d",
            flags.session_present,
            len(self.subscriptions),
        )
        if not flags.session_present and subscribed is not None:
            # The broker forgot us (expiry, restart without persistence): whatever it held for
            # us while we were away is gone, and we cannot count it.
            self.state.session_lost_at = time.time()
            self.queue.put_meta_json("subscriptions", None, count={"sessions_lost": 1})
            log.warning("event=mqtt_session_lost detail='messages may have been dropped upstream'")
            subscribed = None
        if flags.session_present and subscribed == self.subscriptions:
            return  # the broker kept our subscriptions: resubscribing would replay retained
        stale = [f for f in (subscribed or []) if f not in self.subscriptions]
        if stale:
            client.unsubscribe(stale)
        if self.config.mqtt.protocol == "5":
            # retain handling 1: retained messages only for a subscription that is new
            opts = [(f, SubscribeOptions(qos=1, retainHandling=1)) for f in self.subscriptions]
        else:
            opts = [(f, 1) for f in self.subscriptions]
        client.subscribe(opts)

    def _on_connect_fail(self, client, userdata) -> None:
        cfg = self.config.mqtt
        self.state.set_connected(False)
        self.state.last_error = f"cannot connect to {cfg.host}:{cfg.port} (retrying)"

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self.state.last_error = f"subscription refused: {', '.join(failed)}"
            log.error("event=mqtt_subscribe_refused reasons=%r", failed)
            return
        self.queue.put_meta_json("subscriptions", self.subscriptions)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.state.connected
        self.state.set_connected(False)
        # After a refused CONNECT paho reports a disconnect too; the refusal says more.
        if not self._stopping and was_connected:
            self.state.last_error = f"disconnected: {reason_code}"
            log.warning("event=mqtt_disconnected reason=%r", str(reason_code))

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        user_props: list[tuple[str, str]] = []
        props = getattr(message, "properties", None)
        if props is not None and hasattr(props, "UserProperty"):
            user_props = list(props.UserProperty)
        arrival = Arrival(
            mid=message.mid,
            qos=message.qos,
            retain=bool(message.retain),
            dup=bool(message.dup),
            topic=message._topic,  # raw bytes: a topic that is not UTF-8 is dead-lettered, not fatal
            payload=message.payload,
            user_properties=user_props,
            wall_ms=time.time_ns() // 1_000_000,
            mono_ns=time.monotonic_ns(),
        )
        with self._cond:
            self._pending.append(arrival)
            if len(self._pending) == 1:
                self._cond.notify()

    # ---------------------------------------------------------------- group commit
    def _commit_loop(self) -> None:
        limit = self.config.queue.commit_max_messages
        delay = self.config.queue.commit_max_delay_s
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                # Let a burst gather briefly; never longer than `delay` after the first one.
                deadline = time.monotonic() + delay
                while len(self._pending) < limit and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                taken = self._pending[:limit]
                del self._pending[:limit]
            while not self._commit_and_ack(taken):
                if self._stopping:
                    return  # unacked: the broker redelivers them to the next run
                time.sleep(_BLOCKED_RETRY_S)

    def _commit_and_ack(self, taken: list[Arrival]) -> bool:
        """Persist `taken`, then ack it. False: nothing was persisted or acked (retry)."""
        now = time.monotonic()
        if now - self._clock_checked > _CLOCK_RECHECK_S:
            self.clock_synced = clock_synchronized()
            self._clock_checked = now
        batch, next_seq, number = self._build_batch(taken)
        try:
            result = self.queue.commit_ingest(
                self._encode_by_priority(batch.records),
                next_seq,
                batch.mid_entries,
                batch.dead_letters,
                batch.counts,
                self.config.queue.on_full,
            )
        except Exception as exc:  # a full disk, an I/O error: hold on, ack nothing, retry
            self.state.blocked = f"queue write failed: {exc}{self._disk_space_note()}"
            log.error("event=queue_commit_failed error=%r", str(exc))
            return False
        if result.blocked:
            self.state.blocked = "queue full (on_full: block): not acknowledging; the broker holds new messages"
            return False
        crash_point("ingest.after_commit")
        self.state.blocked = None
        self._next_seq = next_seq
        self._message_number = number
        self._ack_all(taken)
        crash_point("ingest.after_ack")
        return True

    def _disk_space_note(self) -> str:
        """LMDB reports a short write on a full disk as EIO: say when the disk is full."""
        try:
            st = os.statvfs(self.config.data_dir)
        except OSError:
            return ""
        free = st.f_bavail * st.f_frsize
        if free < _DISK_FULL_BYTES:
            return f" (No space left on device: {free} bytes free under {self.config.data_dir})"
        return ""

    def _ack_all(self, taken: list[Arrival]) -> None:
        """PUBACKs for a whole commit, with one wake-up of paho's network thread.

        paho 2.2 writes a byte to its wake-up socket for every packet queued from another
        thread: one syscall and one wake-up of its loop per ack (a profile at 12k msg/s
        spent 2.7 s of 4.9 s in them). The acks are queued with the wake-up socket set
        aside, then the loop is woken once. paho is pinned (requirements-dev.txt,
        pyproject.toml); the end-to-end tests break if its internals change.
        """
        client = self.client
        wake = getattr(client, "_sockpairW", None)
        client._sockpairW = None
        try:
            for arrival in taken:
                if arrival.qos > 0:
                    client.ack(arrival.mid, arrival.qos)
        finally:
            client._sockpairW = wake
        if wake is not None:
            try:
                wake.send(b"0")
            except BlockingIOError:
                pass  # the loop is already due to wake

    def _encode_by_priority(self, records: list[tuple]) -> list[NewBatch]:
        """One stored batch per route priority, so eviction can take the lowest first."""
        groups: dict[int, list[tuple]] = {}
        for record in records:
            groups.setdefault(self._priority[record[6]], []).append(record)
        compression = self.config.queue.compression
        return [
            NewBatch(priority, _core.encode_batch(group, self._boot_id, compression), len(group))
            for priority, group in groups.items()
        ]

    def _build_batch(self, taken: list[Arrival]) -> tuple[_Batch, int, int]:
        batch = _Batch()
        seq = self._next_seq
        number = self._message_number
        redeliveries = self._known_redeliveries(taken)
        topics: list[str | None] = []
        for arrival in taken:
            try:
                topics.append(arrival.topic.decode("utf-8"))
            except UnicodeDecodeError:
                topics.append(None)
        routable = [(t, a.payload) for t, a in zip(topics, taken) if t is not None]
        routed = iter(self.router.route_many(routable))
        seen_in_batch: dict[int, bytes] = {}
        for arrival, topic in zip(taken, topics):
            matches = next(routed) if topic is not None else None
            digest = message_digest(arrival.topic, arrival.payload) if arrival.qos > 0 else b""
            if arrival.dup and arrival.qos > 0:
                if redeliveries.get(arrival.mid) == digest or seen_in_batch.get(arrival.mid) == digest:
                    batch.count("duplicates_skipped")
                    continue
            record_base = (arrival.wall_ms, arrival.mono_ns, self.clock_synced, arrival.qos, arrival.retain)
            if matches is None:
                batch.dead_letters.append(
                    DeadLetter(
                        reason="MQTT topic is not valid UTF-8",
                        source="ingest",
                        data=arrival.topic + b"\0" + arrival.payload,
                        seq=seq,
                    )
                )
            else:
                matches = [m for m in matches if not (arrival.retain and self._skip_retained[m[0]])]
                if not matches:
                    batch.count("unrouted")
                    continue
                for route, kafka_topic, kafka_key, error in matches:
                    record = (
                        seq,
                        *record_base,
                        route,
                        kafka_topic or "",
                        kafka_key,
                        topic,
                        arrival.payload,
                        arrival.user_properties,
                    )
                    if error is None:
                        batch.records.append(record)
                    else:
                        batch.dead_letters.append(
                            DeadLetter(
                                reason=error,
                                source="ingest",
                                data=_core.encode_batch([record], self._boot_id, "none"),
                                mqtt_topic=topic,
                                seq=seq,
                            )
                        )
            seq += 1
            number += 1
            batch.count("messages")
            if arrival.qos > 0:
                batch.mid_entries.append((arrival.mid, digest, number))
                seen_in_batch[arrival.mid] = digest
        return batch, seq, number

    def _known_redeliveries(self, taken: list[Arrival]) -> dict[int, bytes]:
        """Digests of persisted messages that DUP arrivals in `taken` may be copies of."""
        dup_mids = [a.mid for a in taken if a.dup and a.qos > 0]
        if not dup_mids:
            return {}
        entries = self.queue.redelivery_entries(dup_mids, self._message_number)
        return {mid: digest for mid, (digest, _number) in entries.items()}

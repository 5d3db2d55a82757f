"""A simulated fleet of devices publishing MQTT to the gateway's broker (paho-mqtt 2.2).

    pub = FleetPublisher("127.0.0.1", mq.port, devices=10)
    pub.run(5000, rate=2000)       # returns at once; publishes on its own thread
    pub.join()                     # all handed to paho
    assert pub.wait_acked(30)      # every publish got its PUBACK
    acked = pub.acked_snapshot()   # [(topic, payload_bytes), ...] in PUBACK order

Only messages whose PUBACK arrived are in ``acked``: DESIGN.md counts a message as lost if
the broker acknowledged it and it is neither in Kafka nor counted as dropped. The client
reconnects after a broker restart and paho re-sends what was not acknowledged (DUP), so a
message may reach the broker twice; it is listed once, when its PUBACK arrives.

Payloads are JSON: {"device": "dev0003", "n": <per-device counter from 0>, "ts": <unix s>}.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TELEMETRY_FMT = "vehicles/{device}/telemetry/engine"
ALARMS_FMT = "vehicles/{device}/alarms"


class FleetPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        devices: int = 10,
        protocol: str = "5",
        qos: int = 1,
        topic_fmt: str = TELEMETRY_FMT,
        client_id: str | None = None,
        device_fmt: str = "dev{:04d}",
        alarm_fmt: str = ALARMS_FMT,
        max_inflight: int = 1000,
        max_pending: int = 20000,
        connect_timeout: float = 10.0,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError("protocol must be '5' or '3.1.1'")
        self.host, self.port, self.qos = host, port, qos
        self.devices = [device_fmt.format(i) for i in range(devices)]
        self.topic_fmt, self.alarm_fmt = topic_fmt, alarm_fmt
        self.protocol = protocol
        self.client_id = client_id or f"fleet-{uuid.uuid4().hex[:10]}"
        self.max_pending = max_pending

        self._lock = threading.Condition()
        self._pending: dict[int, tuple[str, bytes]] = {}  # mid -> message awaiting PUBACK
        self._early: dict[int, Any] = {}                  # PUBACK before mid registered
        self.acked: list[tuple[str, bytes]] = []           # PUBACK arrived, in that order
        self.published = 0                                 # handed to paho
        self.failed: list[tuple[str, bytes, Any]] = []    # PUBACK with an error reason code
        self.connects = 0
        self.disconnects = 0
        self.counters: dict[str, int] = {d: 0 for d in self.devices}
        self._rr = itertools.cycle(self.devices)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()

        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        kw: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2,
                              "client_id": self.client_id, "protocol": proto}
        if proto == mqtt.MQTTv311:
            kw["clean_session"] = True
        c = mqtt.Client(**kw)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)  # unlimited: paho keeps what it could not send yet
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c
        c.connect_async(host, port, keepalive=30)
        c.loop_start()
        if not self._connected.wait(connect_timeout):
            c.loop_stop()
            raise TimeoutError(f"fleet publisher could not connect to {host}:{port}")

    # ------------------------------------------------------------------ callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connects += 1
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnects += 1
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            msg = self._pending.pop(mid, None)
            if msg is None:
                self._early[mid] = reason_code
            else:
                self._record(mid, msg, reason_code)
            self._lock.notify_all()

    def _record(self, mid: int, msg: tuple[str, bytes], reason_code) -> None:
        if reason_code is not None and reason_code.is_failure:
            self.failed.append((msg[0], msg[1], reason_code))
        else:
            self.acked.append(msg)

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: bytes | str, qos: int | None = None,
                retain: bool = False) -> int:
        """Publish one message (any topic); returns its mid. Waits while more than
        ``max_pending`` messages are unacknowledged (e.g. the broker is down)."""
        if isinstance(payload, str):
            payload = payload.encode()
        qos = self.qos if qos is None else qos
        with self._lock:
            while len(self._pending) >= self.max_pending and not self._stop.is_set():
                self._lock.wait(0.1)
        # Not under self._lock: paho calls on_publish holding its own mutex, which
        # publish() takes too, so holding ours here could deadlock. A PUBACK can thus
        # arrive before the mid is registered: _on_publish parks it in _early.
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            self.published += 1
            if qos == 0:
                self.acked.append((topic, payload))
            elif info.mid in self._early:
                self._record(info.mid, (topic, payload), self._early.pop(info.mid))
            else:
                self._pending[info.mid] = (topic, payload)
        return info.mid

    def _next_payload(self, device: str, extra: dict | None = None) -> bytes:
        with self._lock:
            n = self.counters.get(device, 0)
            self.counters[device] = n + 1
        body = {"device": device, "n": n, "ts": time.time()}
        if extra:
            body.update(extra)
        return json.dumps(body, separators=(",", ":")).encode()

    def publish_next(self) -> int:
        """The next telemetry message, round-robin over the devices."""
        device = next(self._rr)
        return self.publish(self.topic_fmt.format(device=device), self._next_payload(device))

    def alarm(self, device: str | int | None = None, level: str = "critical",
              text: str = "engine overheat", qos: int | None = None) -> int:
        """One alarm to vehicles/{device}/alarms (payload also carries "alarm" and "level")."""
        if device is None:
            device = next(self._rr)
        elif isinstance(device, int):
            device = self.devices[device]
        self.counters.setdefault(device, 0)
        payload = self._next_payload(device, {"alarm": text, "level": level})
        return self.publish(self.alarm_fmt.format(device=device), payload, qos=qos)

    def run(self, count: int, rate: float | None = None, alarm_every: int = 0) -> "FleetPublisher":
        """Publish ``count`` telemetry messages on a background thread, optionally at
        ``rate`` msg/s; every ``alarm_every``-th message is an alarm instead. Returns at
        once; join() waits until all were handed to paho."""
        if self._thread and self._thread.is_alive():
            raise RuntimeError("already running")
        self._stop.clear()

        def loop() -> None:
            t0 = time.monotonic()
            for i in range(count):
                if self._stop.is_set():
                    return
                if rate:
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if alarm_every and (i + 1) % alarm_every == 0:
                    self.alarm()
                else:
                    self.publish_next()

        self._thread = threading.Thread(target=loop, name=f"fleet-{self.client_id}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        if self._thread:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # ------------------------------------------------------------------ results

    @property
    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def acked_snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.acked)

    def wait_acked(self, timeout: float = 30.0) -> bool:
        """Wait until the run thread has finished and every publish got its PUBACK."""
        deadline = time.monotonic() + timeout
        if not self.join(timeout):
            return False
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
        return True

    def stop(self) -> None:
        """Stop publishing and disconnect. Unacknowledged messages stay unacked."""
        self._stop.set()
        self.join(5)
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def __enter__(self) -> "FleetPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

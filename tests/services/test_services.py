"""Tests of the dev/test servers themselves (dev/edgefwd_dev), against real Mosquitto and
Kafka. Fixtures come from edgefwd_dev.pytest_fixtures (see conftest.py here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Producer
from paho.mqtt.enums import CallbackAPIVersion

from edgefwd_dev.fleet import FleetPublisher
from edgefwd_dev.services import (
    FaultInjector,
    Kafka,
    Mosquitto,
    _pid_alive,
    ensure_kafka_jars,
    free_port,
    port_open,
)

DEV = Path(__file__).resolve().parents[2] / "dev"


class Subscriber:
    """A paho QoS 1 subscriber collecting (topic, payload, dup)."""

    def __init__(self, port: int, client_id: str, protocol: str = "3.1.1",
                 clean: bool = True, topic: str = "#") -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.session_present: bool | None = None
        self.cond = threading.Condition()
        self.v5 = protocol == "5"
        kw = dict(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                  protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311)
        if not self.v5:
            kw["clean_session"] = clean
        self.c = mqtt.Client(**kw)
        self.subscribed = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.topic = topic
        self.clean = clean
        self.port = port

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        self.session_present = flags.session_present
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.got.append((msg.topic, msg.payload, msg.dup))
            self.cond.notify_all()

    def connect(self) -> "Subscriber":
        if self.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            p = Properties(PacketTypes.CONNECT)
            p.SessionExpiryInterval = 0 if self.clean else 3600
            self.c.connect("127.0.0.1", self.port, clean_start=self.clean, properties=p)
        else:
            self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"
        return self

    def disconnect(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def wait_for(self, n: int, timeout: float = 20) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.got) < n and time.monotonic() < deadline:
                self.cond.wait(0.1)
            return list(self.got)


# ------------------------------------------------------------------------ Mosquitto


def test_free_port_is_bindable():
    p = free_port()
    assert 1024 <= p <= 65535 and not port_open(p)


def test_mosquitto_config_is_ours(mosquitto: Mosquitto):
    conf = mosquitto.conf_path.read_text()
    assert f"listener {mosquitto.port} 127.0.0.1" in conf
    for line in ("max_queued_messages 1000000", "max_queued_bytes 0",
                 "max_inflight_messages 1000", "persistence true", "allow_anonymous true"):
        assert line in conf.splitlines()
    assert str(mosquitto.workdir) in conf  # persistence_location and log inside workdir
    assert mosquitto.host == "127.0.0.1"
    assert mosquitto.log_path.exists()


def test_mosquitto_publish_subscribe_qos1(mosquitto: Mosquitto):
    sub = Subscriber(mosquitto.port, "sub-basic", topic="vehicles/#").connect()
    try:
        with FleetPublisher(mosquitto.host, mosquitto.port, devices=5, protocol="3.1.1") as pub:
            pub.run(500)
            assert pub.wait_acked(20)
            assert pub.published == pub.acked_count == 500
        got = sub.wait_for(500)
        assert len(got) == 500
        assert {(t, p) for t, p, _ in got} == set(pub.acked)
        first = json.loads(got[0][1])
        assert set(first) == {"device", "n", "ts"} and got[0][0].endswith("/telemetry/engine")
    finally:
        sub.disconnect()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_mosquitto_graceful_restart_keeps_persistent_session(mosquitto: Mosquitto, protocol):
    # 3000 > Mosquitto's default max_queued_messages (1000): nothing may be dropped.
    sub = Subscriber(mosquitto.port, f"sub-persist-{protocol}", protocol=protocol,
                     clean=False, topic="vehicles/+/telemetry/#").connect()
    sub.disconnect()
    with FleetPublisher(mosquitto.host, mosquitto.port, devices=3, protocol=protocol) as pub:
        pub.run(3000)
        assert pub.wait_acked(20)
    mosquitto.restart()  # SIGTERM: the broker saves its database
    assert (mosquitto.data_dir / "mosquitto.db").exists()
    sub2 = Subscriber(mosquitto.port, f"sub-persist-{protocol}", protocol=protocol,
                      clean=False, topic="vehicles/+/telemetry/#").connect()
    try:
        got = sub2.wait_for(3000)
        assert sub2.session_present is True
        assert len(got) == 3000
        assert [(t, p) for t, p, _ in got] == pub.acked  # in order, none lost
    finally:
        sub2.disconnect()


def test_mosquitto_pause_resume_kill(mosquitto: Mosquitto):
    with FleetPublisher(mosquitto.host, mosquitto.port, devices=1) as pub:
        mosquitto.pause()
        pub.publish("vehicles/x/alarms", b"{}")
        time.sleep(0.5)
        assert pub.acked_count == 0  # a stopped broker acknowledges nothing
        mosquitto.resume()
        assert pub.wait_acked(10)
    pid = mosquitto.pid
    mosquitto.kill()
    assert not _pid_alive(pid) and not port_open(mosquitto.port)
    mosquitto.start()
    assert port_open(mosquitto.port)


def test_fleet_publisher_survives_broker_kill9(mosquitto: Mosquitto):
    sub = Subscriber(mosquitto.port, "sub-chaos", topic="vehicles/#").connect()
    pub = FleetPublisher(mosquitto.host, mosquitto.port, devices=4, protocol="5")
    try:
        pub.run(1500, rate=3000)
        while pub.published < 500:
            time.sleep(0.01)
        mosquitto.kill()
        time.sleep(0.3)
        mosquitto.start()
        assert pub.wait_acked(30), f"{pub.pending_count} never acked"
        assert pub.acked_count == 1500 and pub.connects >= 2 and pub.disconnects >= 1
        assert len({p for _, p in pub.acked}) == 1500
        alarms_mid = pub.alarm(0)
        assert alarms_mid and pub.wait_acked(10)
        assert pub.acked[-1][0] == "vehicles/dev0000/alarms"
    finally:
        pub.stop()
        sub.disconnect()


def test_no_stray_broker_when_python_dies(tmp_workdir: Path):
    """A Python process that started Mosquitto and died by SIGKILL (no atexit) leaves no
    broker behind: the spawner uses PR_SET_PDEATHSIG."""
    code = (
        "import sys, os, time; sys.path.insert(0, %r)\n"
        "from edgefwd_dev.services import Mosquitto\n"
        "m = Mosquitto(%r).start(); print(m.pid, flush=True); time.sleep(60)\n"
    ) % (str(DEV), str(tmp_workdir / "m"))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(child.stdout.readline())
        assert _pid_alive(pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(pid)
    finally:
        child.kill()


# ---------------------------------------------------------------------------- Kafka


def test_kafka_jars_cached_and_logging_bound(kafka: Kafka):
    t0 = time.monotonic()
    libs = ensure_kafka_jars()
    assert time.monotonic() - t0 < 1.0  # no Maven when complete
    names = {p.name for p in libs.glob("*.jar")}
    assert any(n.startswith("slf4j-api-2.0.") for n in names), names
    assert not any(n.startswith("slf4j-api-1.") for n in names)
    log = kafka.log_path.read_text()
    assert "Kafka Server started" in log  # log4j2 receives slf4j logging (not NOP)


def test_kafka_produce_and_read_all(kafka: Kafka):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=3)
    assert topic in kafka.topics()
    p = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    ts = int(time.time() * 1000) - 60_000
    for i in range(10):
        p.produce(topic, key=f"k{i % 2}".encode(), value=f"v{i}".encode(), timestamp=ts + i,
                  headers=[("mqtt.topic", b"vehicles/a/telemetry"), ("n", str(i).encode())])
    p.produce(topic, key=None, value=b"no-key", timestamp=ts)
    assert p.flush(10) == 0
    recs = kafka.read_all(topic, expected=11, timeout=20)
    assert len(recs) == 11
    by_value = {r.value: r for r in recs}
    r3 = by_value[b"v3"]
    assert r3.key == b"k1" and r3.timestamp_ms == ts + 3 and r3.topic == topic
    assert r3.headers == {"mqtt.topic": b"vehicles/a/telemetry", "n": b"3"}
    assert by_value[b"no-key"].key is None
    # per key, offsets keep the produce order
    k1 = [int(r.value[1:]) for r in recs if r.key == b"k1"]
    assert k1 == sorted(k1)
    # without expected: stops once caught up, quickly
    t0 = time.monotonic()
    assert len(kafka.read_all(topic, timeout=20)) == 11
    assert time.monotonic() - t0 < 5


def test_kafka_read_committed_skips_aborted(kafka: Kafka):
    topic = f"tx-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=1)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"aborted")
    p.flush(10)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, value=b"committed")
    p.commit_transaction(30)
    t0 = time.monotonic()
    recs = kafka.read_all(topic, timeout=20)
    assert [r.value for r in recs] == [b"committed"]
    assert time.monotonic() - t0 < 5
    assert {r.value for r in kafka.read_all(topic, timeout=20,
                                            isolation_level="read_uncommitted")} == {
        b"aborted", b"committed"}


def test_kafka_stop_start_and_kill9_keep_data(kafka: Kafka):
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic)
    kafka.produce(topic, [(b"a", b"1", [("h", b"x")]), (b"b", b"2")])
    bootstrap = kafka.bootstrap
    kafka.stop()
    assert kafka.last_stop_s < 30 and not port_open(kafka.port)
    kafka.start()
    assert kafka.bootstrap == bootstrap
    assert sorted(r.value for r in kafka.read_all(topic, expected=2, timeout=20)) == [b"1", b"2"]
    kafka.produce(topic, [(b"c", b"3")])
    pid = kafka.pid
    kafka.kill()
    assert not _pid_alive(pid)
    kafka.start()
    recs = kafka.read_all(topic, expected=3, timeout=30)
    assert sorted(r.value for r in recs) == [b"1", b"2", b"3"]
    assert [r.headers for r in recs if r.value == b"1"] == [{"h": b"x"}]


def test_kafka_no_auto_create(kafka: Kafka):
    name = f"absent-{uuid.uuid4().hex[:8]}"
    assert kafka.read_all(name, timeout=0.3) == []
    assert name not in kafka.topics()


# -------------------------------------------------------------------- fault injector


def test_fault_injector_seed_replay(capsys, monkeypatch):
    monkeypatch.delenv("EDGEFWD_SEED", raising=False)
    f1 = FaultInjector(1234)
    assert "fault seed=1234, replay with EDGEFWD_SEED=1234" in capsys.readouterr().out
    monkeypatch.setenv("EDGEFWD_SEED", "1234")
    f2 = FaultInjector()  # env wins: replays the run
    assert [f1.rng.random() for _ in range(5)] == [f2.rng.random() for _ in range(5)]
    monkeypatch.delenv("EDGEFWD_SEED")
    f3 = FaultInjector()
    assert f"EDGEFWD_SEED={f3.seed}" in capsys.readouterr().out
    assert 0.01 <= f3.random_sleep(0.01, 0.02) <= 0.02


def test_fault_injector_signals(mosquitto: Mosquitto):
    f = FaultInjector(7)
    proc = subprocess.Popen(["sleep", "30"])
    f.sigstop(proc)
    f.sigcont(proc)
    f.kill9(proc)
    assert proc.wait(5) == -signal.SIGKILL
    f.outage(mosquitto, 0.05, 0.1, graceful=False)
    assert port_open(mosquitto.port)
    f.restart(mosquitto)
    assert port_open(mosquitto.port) and len(f.actions) >= 5
    assert "seed=7" in f.summary()

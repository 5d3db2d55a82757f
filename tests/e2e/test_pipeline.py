"""End to end against a real Mosquitto and a real Kafka: MQTT -> edgefwd -> Kafka."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from .helpers import audit, message_id


def _topics(kafka, *names: str, partitions: int = 3) -> list[str]:
    suffix = uuid.uuid4().hex[:8]
    out = [f"{n}.{suffix}" for n in names]
    for t in out:
        kafka.create_topic(t, partitions=partitions)
    return out


@pytest.mark.parametrize("protocol,count", [("5", 10_000), ("3.1.1", 2_000)])
def test_every_message_once_per_route_with_headers_timestamps_and_order(
    kafka, mosquitto, tmp_workdir, protocol, count
):
    telemetry, everything = _topics(kafka, "telemetry", "all")
    routes = [
        # overlapping filters: one message matches both routes and must reach each topic once
        {"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": telemetry, "kafka_key": "${1}"},
        {"mqtt_filter": "vehicles/#", "kafka_topic": everything, "kafka_key": "${1}"},
    ]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes,
                         protocol=protocol, gateway_id="truck-0042")
    with AgentRunner(tmp_workdir, config) as agent:
        agent.start()
        agent.wait_connected()
        t0_ms = time.time() * 1000
        with FleetPublisher("127.0.0.1", mosquitto.port, devices=100, protocol=protocol) as pub:
            pub.run(count)
            assert pub.wait_acked(120), f"publisher got {pub.acked_count}/{count} PUBACKs"
            acked = pub.acked_snapshot()
        doc = agent.wait_drained(2 * count, timeout=180)
        assert agent.stop() == 0

    assert doc["counters"]["received"] == 2 * count
    assert doc["counters"]["forwarded"] == 2 * count
    assert doc["counters"]["dropped"] == {"queue_full": 0, "expired": 0}
    assert doc["counters"]["dead_lettered"] == 0

    t_end_ms = time.time() * 1000
    tele = kafka.read_all(telemetry, expected=count, timeout=60)
    allr = kafka.read_all(everything, expected=count, timeout=60)
    for records in (tele, allr):
        result = audit(acked, records)
        assert result["lost_count"] == 0, result
        assert result["duplicates"] == 0, result
        assert result["order_violations"] == 0, result["order_examples"]
        assert len(records) == count

    epochs = set()
    seq_by_message: dict[tuple[str, int], bytes] = {}
    for r in tele:
        device, n = message_id(r.value)
        assert r.key == device.encode()
        h = r.headers
        assert h["mqtt.topic"] == f"vehicles/{device}/telemetry/engine".encode()
        assert h["mqtt.qos"] == b"1"
        assert h["mqtt.retain"] == b"false"
        assert h["edgefwd.gateway"] == b"truck-0042"
        epochs.add(h["edgefwd.epoch"])
        seq_by_message[(device, n)] = h["edgefwd.seq"]
        # CreateTime is when the gateway received it: after publishing started, and close
        # to the publisher's own timestamp in the payload
        assert t0_ms - 1000 <= r.timestamp_ms <= t_end_ms
        published_ms = json.loads(r.value)["ts"] * 1000
        assert abs(r.timestamp_ms - published_ms) < 10_000
    assert len(epochs) == 1
    # a message fanned out to two routes keeps one seq
    for r in allr:
        assert r.headers["edgefwd.seq"] == seq_by_message[message_id(r.value)]
        assert r.key == r.headers["mqtt.topic"][len(b"vehicles/"):]
    seqs = sorted(int(s) for s in seq_by_message.values())
    assert len(set(seqs)) == count


def test_kafka_outage_longer_than_producer_timeouts(kafka, mosquitto, tmp_workdir, fault_injector):
    (topic,) = _topics(kafka, "outage")
    routes = [{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": topic, "kafka_key": "${1}"}]
    # Short librdkafka timeouts, so that the outage below outlasts every one of them
    # (message.timeout.ms is edgefwd's: unlimited, so librdkafka keeps order while it retries).
    producer = {"request.timeout.ms": 2000, "socket.timeout.ms": 2000, "reconnect.backoff.max.ms": 1000}
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes,
                         producer_properties=producer)
    with AgentRunner(tmp_workdir, config) as agent, \
            FleetPublisher("127.0.0.1", mosquitto.port, devices=20) as pub:
        agent.start()
        agent.wait_connected()
        pub.run(1500, rate=500)
        fault_injector.random_sleep(1.0, 2.0)
        kafka.stop()
        down_at_ms = time.time() * 1000
        pub.join(30)
        pub.run(1500, rate=500)  # published while Kafka is down
        doc = agent.wait_for(lambda d: not d["kafka"]["connected"] and d["queue"]["messages"] > 0,
                             timeout=30, what="Kafka seen down with a backlog")
        _, rc = agent.status()
        assert rc in (1, 2)  # degraded (or critical if it also looks full): never ok
        backlog_during = doc["queue"]["messages"]
        pub.join(30)
        assert pub.wait_acked(60)
        time.sleep(6)  # longer than message.timeout.ms and request.timeout.ms together
        grown = agent.status()[0]["queue"]["messages"]
        assert grown >= backlog_during and grown > 0
        up_at_ms = time.time() * 1000
        kafka.start()
        acked = pub.acked_snapshot()
        doc = agent.wait_drained(len(acked), timeout=180)
        assert doc["kafka"]["connected"]
        assert agent.stop() == 0

    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    assert result["lost_count"] == 0, result
    assert result["order_violations"] == 0, result["order_examples"]
    # timestamps are receive times: every record received while Kafka was down carries a
    # time before Kafka came back, not the time of the drain
    late = [r for r in records if json.loads(r.value)["ts"] * 1000 > down_at_ms + 1000]
    assert late, "expected records published during the outage"
    assert all(r.timestamp_ms < up_at_ms for r in late)


def test_sigkill_mid_stream_loses_nothing(kafka, mosquitto, tmp_workdir, fault_injector):
    (topic,) = _topics(kafka, "kill")
    routes = [{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": topic, "kafka_key": "${1}"}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes)
    kills = 6
    with AgentRunner(tmp_workdir, config) as agent, \
            FleetPublisher("127.0.0.1", mosquitto.port, devices=50) as pub:
        agent.start()
        agent.wait_connected()
        pub.run(4000 * (kills + 1), rate=4000)
        for _ in range(kills):
            fault_injector.random_sleep(0.3, 1.2)
            agent.kill9()
            fault_injector.random_sleep(0.0, 0.5)
            agent.start()
        assert pub.join(120)
        assert pub.wait_acked(120)
        acked = pub.acked_snapshot()
        doc = agent.wait_drained(len(acked), timeout=240)
        assert agent.stop() == 0

    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    print(f"sigkill x{kills}: {result['records']} records for {result['acked']} acked, "
          f"{result['duplicates']} duplicates, status counters {doc['counters']}")
    assert result["lost_count"] == 0, result
    assert result["order_violations"] == 0, result["order_examples"]
    # At most one in-flight window per kill: Mosquitto's 1000 unacked messages plus what the
    # drainer had produced but not yet deleted.
    assert result["duplicates"] <= kills * (1000 + 10_000), result
    # the books balance after every crash
    c = doc["counters"]
    assert c["received"] == c["forwarded"] + c["queued"] + c["in_flight"] + c["dead_lettered"] + sum(c["dropped"].values())


def test_mosquitto_restart_resumes_the_session(kafka, mosquitto, tmp_workdir):
    (topic,) = _topics(kafka, "mqttrestart")
    routes = [{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": topic, "kafka_key": "${1}"}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes)
    with AgentRunner(tmp_workdir, config) as agent, \
            FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        agent.start()
        agent.wait_connected()
        pub.run(3000, rate=1000)
        time.sleep(1.0)
        mosquitto.restart()  # graceful: Mosquitto saves its persistent sessions
        assert pub.join(60)
        assert pub.wait_acked(60)
        acked = pub.acked_snapshot()
        doc = agent.wait_drained(len({message_id(p) for _, p in acked}), timeout=120)
        assert doc["mqtt"]["connected"]
        assert doc["mqtt"]["session_present"] is True
        assert doc["counters"]["sessions_lost"] == 0
        assert agent.stop() == 0

    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    assert result["lost_count"] == 0, result
    # Arrival order at the gateway is kept per key. The devices' own order is not checked
    # here: a publisher resending after the broker restart can reorder its messages upstream.
    assert result["seq_order_violations"] == 0, result


def test_sigterm_stops_cleanly_and_status_says_not_running(kafka, mosquitto, tmp_workdir):
    (topic,) = _topics(kafka, "term")
    routes = [{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": topic, "kafka_key": "${1}"}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes)
    agent = AgentRunner(tmp_workdir, config)
    agent.start()
    doc = agent.wait_for(lambda d: d["health"] == "ok", timeout=60, what="health ok")
    _, rc = agent.status()
    assert rc == 0
    assert agent.stop() == 0
    doc, rc = agent.status()
    assert rc == 2
    assert doc["health"] == "critical"
    assert doc["agent"]["running"] is False
    assert "agent not running" in doc["problems"]

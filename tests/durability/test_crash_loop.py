"""Crash loop: SIGKILL the agent at random moments, over and over, while devices publish.

Short form by default (CI); the long form is `scripts/crash-loop.sh` (EDGEFWD_CRASH_LOOP_KILLS,
at least 50 kills, both variants). The fault seed is printed; EDGEFWD_SEED=<seed> replays it.

- queue variant: Kafka unreachable, so nothing drains and the queue itself can be audited
  afterwards: every message the broker acknowledged to its publisher is in the queue exactly
  once, seq strictly increasing in batch order, each device's counter increasing.
- Kafka variant: every acknowledged message reaches Kafka; duplicates (at-least-once after a
  crash between produce and delete) are counted and reported.
"""

from __future__ import annotations

import os

from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from tests.e2e.helpers import audit

from .helpers import TELEMETRY, Stream, closed_bootstrap, queue_audit, raw_books, read_queue, status_books, topics

KILLS = int(os.environ.get("EDGEFWD_CRASH_LOOP_KILLS", "12"))
RATE = float(os.environ.get("EDGEFWD_CRASH_LOOP_RATE", "3000"))
MAX_BYTES = 256 << 20


def _kill_loop(agent: AgentRunner, fault_injector, kills: int) -> None:
    for i in range(kills):
        # anywhere: during start-up, mid group commit, between commit and ack, mid drain
        fault_injector.random_sleep(0.2, 1.5)
        fault_injector.note(f"kill {i + 1}/{kills}: SIGKILL agent pid {agent.pid}")
        agent.kill9()
        fault_injector.random_sleep(0.0, 0.3)
        agent.start()


def test_crash_loop_queue_holds_every_acked_message_exactly_once(mosquitto, tmp_workdir, fault_injector):
    routes = [{**TELEMETRY, "kafka_topic": "telemetry"}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue={"max_bytes": MAX_BYTES})
    with AgentRunner(tmp_workdir, config) as agent, \
            FleetPublisher("127.0.0.1", mosquitto.port, devices=20) as pub:
        agent.start()
        agent.wait_connected()
        stream = Stream(pub, RATE).start()
        _kill_loop(agent, fault_injector, KILLS)
        stream.stop()
        assert pub.wait_acked(60), f"{pub.pending_count} publishes without PUBACK"
        acked = pub.acked_snapshot()
        # the agent takes what the broker held for it while it was down
        doc = agent.wait_for(lambda d: d["counters"]["received"] >= len(acked), timeout=90,
                             what=f"{len(acked)} messages received")
        assert status_books(doc), doc["counters"]
        assert agent.stop() == 0

    batches, counters, _ = read_queue(config["data_dir"], MAX_BYTES)
    result = queue_audit(acked, batches)
    print(f"crash loop (queue): {KILLS} kills, {len(acked)} acked, {result}, "
          f"duplicates_skipped={counters['duplicates_skipped']} counters={counters}")
    assert result["missing_count"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["seq_violations"] == 0, result
    assert result["order_violations"] == 0, result["order_examples"]
    assert counters["received"] == result["records"]
    assert counters["stored_records"] == result["records"]
    assert counters["dropped.queue_full"] == counters["dropped.expired"] == counters["dead_lettered"] == 0
    assert raw_books(counters), counters


def test_crash_loop_with_kafka_delivers_every_acked_message(kafka, mosquitto, tmp_workdir, fault_injector):
    (topic,) = topics(kafka, "crashloop")
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes,
                         queue={"max_bytes": MAX_BYTES})
    with AgentRunner(tmp_workdir, config) as agent, \
            FleetPublisher("127.0.0.1", mosquitto.port, devices=20) as pub:
        agent.start()
        agent.wait_connected()
        stream = Stream(pub, RATE).start()
        _kill_loop(agent, fault_injector, KILLS)
        stream.stop()
        assert pub.wait_acked(60), f"{pub.pending_count} publishes without PUBACK"
        acked = pub.acked_snapshot()
        doc = agent.wait_drained(len(acked), timeout=180)
        assert agent.stop() == 0

    c = doc["counters"]
    assert status_books(doc), c
    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    print(f"crash loop (kafka): {KILLS} kills, {len(acked)} acked, {result['records']} records in Kafka, "
          f"{result['duplicates']} duplicates ({result['duplicates'] / KILLS:.1f} per kill), "
          f"duplicates_skipped={c['duplicates_skipped']}")
    assert result["lost_count"] == 0, result
    assert result["order_violations"] == 0, result["order_examples"]
    # the queue itself held each message once: the only duplicates are re-produced batches
    assert c["received"] == c["forwarded"] == len(acked)
    assert c["dropped"] == {"queue_full": 0, "expired": 0} and c["dead_lettered"] == 0

"""Deterministic crash points (EDGEFWD_CRASH_AT=<point>:<n>, python/edgefwd/faults.py).

Each test runs the real agent with the crash point armed, checks that the process that
passes the point really died of SIGKILL, restarts without it, and then checks what a user
would see: nothing the broker acknowledged is lost (it is in Kafka, or counted as dropped by
the configured policy), nothing is queued twice, and the counters balance.

Ingest and queue points crash while Kafka is unreachable (nothing can have been produced
before the crash), so after the restart Kafka must hold every surviving message exactly once.
"""

from __future__ import annotations

import time

import pytest
from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from tests.e2e.helpers import audit

from .helpers import (
    TELEMETRY,
    closed_bootstrap,
    kafka_ids,
    message_id,
    queue_audit,
    raw_books,
    read_queue,
    status_books,
    topics,
)


def _wait_dead(agent: AgentRunner, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while agent.running():
        assert time.monotonic() < deadline, f"the agent did not crash at its crash point:\n{agent.log_tail()}"
        time.sleep(0.05)
    return agent.proc.returncode


def _drainer_killed(agent: AgentRunner) -> bool:
    return "event=drainer_died exitcode=-9" in agent.log_path.read_text(errors="replace")


def _restart(tmp_workdir, config: dict, name: str, **changes) -> AgentRunner:
    """The same data directory under a changed config, without EDGEFWD_CRASH_AT."""
    new = {**config, **{k: v for k, v in changes.items() if k not in ("bootstrap", "queue")}}
    if "bootstrap" in changes:
        new["kafka"] = {**config["kafka"], "bootstrap_servers": changes["bootstrap"]}
    if "queue" in changes:
        new["queue"] = {**config["queue"], **changes["queue"]}
    return AgentRunner(tmp_workdir, new, name=name)


def _drained(total: int):
    def check(d: dict) -> bool:
        c = d["counters"]
        done = c["forwarded"] + c["dead_lettered"] + sum(c["dropped"].values())
        return c["received"] >= total and done >= total and d["queue"]["messages"] == 0
    return check


@pytest.mark.parametrize("point", ["ingest.after_commit:5", "ingest.after_ack:5"])
def test_ingest_crash_points_queue_nothing_twice(kafka, mosquitto, tmp_workdir, point):
    (topic,) = topics(kafka, point.split(":")[0].replace(".", "-"))
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue={"commit_max_messages": 100})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config, env={"EDGEFWD_CRASH_AT": point}) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(4000, rate=2000)
            assert _wait_dead(agent) == -9  # SIGKILL, from the crash point
        assert pub.wait_acked(60)
        acked = pub.acked_snapshot()
        with _restart(tmp_workdir, config, "restarted", bootstrap=kafka.bootstrap) as agent:
            agent.start()
            doc = agent.wait_for(_drained(len(acked)), timeout=120, what="every acked message forwarded")
            assert agent.stop() == 0

    c = doc["counters"]
    assert status_books(doc), c
    # one route: one record per message, each queued once although the broker redelivered
    assert c["received"] == c["forwarded"] == len(acked), c
    if point.startswith("ingest.after_commit"):
        assert c["duplicates_skipped"] > 0, "a crash between commit and PUBACK must cause redeliveries"
    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    print(f"{point}: duplicates_skipped={c['duplicates_skipped']} {result}")
    assert result["lost_count"] == 0, result
    assert result["duplicates"] == 0, result  # nothing was produced before the crash
    assert result["order_violations"] == 0, result["order_examples"]


def test_crash_during_eviction(kafka, mosquitto, tmp_workdir):
    """SIGKILL inside the eviction transaction: it never commits, nothing is half-evicted."""
    (topic,) = topics(kafka, "evict")
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue={"max_bytes": "1MiB", "compression": "none", "on_full": "drop_oldest", "commit_max_messages": 200})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config, env={"EDGEFWD_CRASH_AT": "queue.evict:1"}) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(15000, rate=5000)  # ~2 MB of records into a queue that holds ~0.75 MB
            assert _wait_dead(agent) == -9
        assert pub.wait_acked(60)
        acked = pub.acked_snapshot()
        batches, counters, _ = read_queue(config["data_dir"], 1 << 20)
        assert counters["dropped.queue_full"] == 0  # the eviction that crashed did not commit
        assert raw_books(counters), counters
        assert queue_audit(acked, batches)["duplicates"] == 0
        with _restart(tmp_workdir, config, "restarted", bootstrap=kafka.bootstrap) as agent:
            agent.start()
            doc = agent.wait_for(_drained(len(acked)), timeout=120, what="every acked message accounted for")
            assert agent.stop() == 0

    c = doc["counters"]
    assert status_books(doc), c
    assert c["received"] == len(acked), c
    records = kafka.read_all(topic, expected=c["forwarded"], timeout=60)
    got = kafka_ids(records)
    acked_ids = {message_id(p) for _, p in acked}
    assert set(got) <= acked_ids
    assert all(n == 1 for n in got.values()), "duplicates in Kafka"
    # every acked message is in Kafka or counted as dropped by the policy: no third way
    assert len(acked_ids - set(got)) == c["dropped"]["queue_full"], (len(acked_ids - set(got)), c)
    print(f"queue.evict: {len(acked)} acked, {len(got)} in Kafka, {c['dropped']['queue_full']} dropped (queue_full)")


def test_crash_during_expiry(kafka, mosquitto, tmp_workdir):
    """SIGKILL inside the max_age expiry transaction (drainer process): nothing expires half."""
    (topic,) = topics(kafka, "expire")
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue={"max_age": "1s"})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config, env={"EDGEFWD_CRASH_AT": "queue.expire:1"}) as agent:
            agent.start()
            agent.wait_connected()
            # more than the drainer's 10,000 in flight, which max_age leaves alone
            pub.run(14000, rate=7000)
            assert pub.wait_acked(60)
            agent.wait_for(lambda d: _drainer_killed(agent), timeout=60, what="the drainer killed at queue.expire")
            assert agent.running()  # the agent outlives its drainer
            assert agent.stop() == 0
        acked = pub.acked_snapshot()
    _, counters, _ = read_queue(config["data_dir"], 256 << 20)
    assert counters["dropped.expired"] == 0 and counters["stored_records"] == len(acked), counters
    assert raw_books(counters), counters

    # restarted without the crash point: with the same max_age every one of them is too old
    # now, so all are counted as expired; a message published after the restart still flows
    with _restart(tmp_workdir, config, "restarted", bootstrap=kafka.bootstrap) as agent:
        agent.start()
        agent.wait_for(lambda d: d["counters"]["dropped"]["expired"] >= len(acked), timeout=60,
                       what="the backlog expired")
        pub2 = FleetPublisher("127.0.0.1", mosquitto.port, devices=3, device_fmt="late{:02d}")
        with pub2:
            pub2.run(300)
            assert pub2.wait_acked(30)
        late = pub2.acked_snapshot()
        doc = agent.wait_for(_drained(len(acked) + len(late)), timeout=60, what="late messages forwarded")
        assert agent.stop() == 0
    c = doc["counters"]
    assert status_books(doc), c
    assert c["dropped"]["expired"] == len(acked) and c["forwarded"] == len(late), c
    records = kafka.read_all(topic, expected=len(late), timeout=60)
    result = audit(late, records)
    assert result["lost_count"] == 0 and result["duplicates"] == 0 and result["records"] == len(late), result


@pytest.mark.parametrize("point", ["drainer.after_produce:3", "drainer.before_delete:1"])
def test_drainer_crash_points_lose_nothing(kafka, mosquitto, tmp_workdir, point):
    (topic,) = topics(kafka, point.split(":")[0].replace(".", "-"))
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes,
                         queue={"commit_max_messages": 100})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config, env={"EDGEFWD_CRASH_AT": point}) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(5000, rate=2500)
            agent.wait_for(lambda d: _drainer_killed(agent), timeout=60, what=f"the drainer killed at {point}")
            assert agent.running()
            assert pub.wait_acked(60)
            assert agent.stop() == 0
        acked = pub.acked_snapshot()
        with _restart(tmp_workdir, config, "restarted") as agent:
            agent.start()
            doc = agent.wait_drained(len(acked), timeout=120)
            assert agent.stop() == 0

    c = doc["counters"]
    assert status_books(doc), c
    assert c["received"] == c["forwarded"] == len(acked), c
    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    print(f"{point}: {result['duplicates']} duplicates in Kafka (at-least-once re-produce) {result}")
    assert result["lost_count"] == 0, result
    assert result["order_violations"] == 0, result["order_examples"]


def test_restart_with_larger_max_bytes_after_crash_with_full_queue(mosquitto, tmp_workdir, fault_injector):
    """'During a map resize': the map size is queue.max_bytes, fixed while running, so the
    resize happens at open. Crash with a full queue (on_full: block), reopen larger: every
    record kept, the new size in force, the blocked messages taken."""
    routes = [{**TELEMETRY, "kafka_topic": "t"}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue={"max_bytes": "1MiB", "compression": "none", "on_full": "block"})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(12000, rate=6000)
            doc = agent.wait_for(lambda d: d["mqtt"]["blocked"], timeout=60, what="blocked: queue full")
            assert doc["health"] == "critical"
            fault_injector.note("SIGKILL agent with a full queue")
            agent.kill9()
        assert pub.wait_acked(60)
        acked = pub.acked_snapshot()
        before, counters_before, _ = read_queue(config["data_dir"], 1 << 20)
        assert counters_before["received"] < len(acked)
        with _restart(tmp_workdir, config, "bigger", queue={"max_bytes": "8MiB"}) as agent:
            agent.start()
            doc = agent.wait_for(lambda d: d["counters"]["received"] >= len(acked), timeout=60,
                                 what="the messages the broker held, taken")
            assert not doc["mqtt"]["blocked"]
            assert doc["queue"]["capacity_bytes"] == 8 << 20
            assert agent.stop() == 0

    batches, counters, map_size = read_queue(config["data_dir"], 8 << 20)
    assert map_size == 8 << 20
    result = queue_audit(acked, batches)
    assert result["missing_count"] == 0 and result["duplicates"] == 0, result
    assert result["seq_violations"] == 0 and result["order_violations"] == 0, result
    # every record stored before the crash is still there, first, unchanged
    assert [b[2] for b in batches[: len(before)]] == [b[2] for b in before]
    assert counters["dropped.queue_full"] == 0 and raw_books(counters), counters

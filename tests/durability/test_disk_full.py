"""A full queue, both ways.

(a) queue.max_bytes reached (a tiny 1 MiB queue, Kafka unreachable): each on_full policy
    does what it says, with route priorities (alarms 10, telemetry 0) and a max_age set,
    every drop is counted by reason, and the books balance.
(b) the disk itself full (ENOSPC) on a small tmpfs the test mounts, with queue.max_bytes
    larger than the filesystem: the agent keeps running, stops acknowledging, says critical
    and why, and resumes by itself once space returns. Nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections import defaultdict

import pytest
from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from tests.e2e.helpers import audit

from .helpers import (
    ALARMS,
    TELEMETRY,
    by_device_kind,
    closed_bootstrap,
    kafka_ids,
    message_id,
    raw_books,
    read_queue,
    status_books,
    topics,
)

SMALL = 1 << 20


@contextlib.contextmanager
def kafka_down(kafka):
    """The session's Kafka stopped for a while; always started again (later tests share it)."""
    kafka.stop()
    try:
        yield
    finally:
        if not kafka.running:
            kafka.start()


def _routes(tele: str, alarms: str) -> list[dict]:
    return [{**TELEMETRY, "kafka_topic": tele}, {**ALARMS, "kafka_topic": alarms}]


def _drained(total: int):
    def check(d: dict) -> bool:
        c = d["counters"]
        done = c["forwarded"] + c["dead_lettered"] + sum(c["dropped"].values())
        return c["received"] >= total and done >= total and d["queue"]["messages"] == 0
    return check


@pytest.mark.parametrize("on_full", ["drop_oldest", "drop_newest"])
def test_tiny_queue_drop_policies(kafka, mosquitto, tmp_workdir, on_full):
    tele, alarms = topics(kafka, f"tele-{on_full}", f"alarms-{on_full}")
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(),
                         routes=_routes(tele, alarms),
                         queue={"max_bytes": SMALL, "compression": "none", "on_full": on_full, "max_age": "1h", "commit_max_messages": 100})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=7) as pub:
        with AgentRunner(tmp_workdir, config) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(15000, rate=6000, alarm_every=10)  # ~2 MB of records into ~0.75 MB
            assert pub.wait_acked(60)
            acked = pub.acked_snapshot()
            doc = agent.wait_for(lambda d: d["counters"]["received"] >= len(acked), timeout=60,
                                 what="every message taken")
            assert status_books(doc), doc["counters"]
            assert doc["counters"]["dropped"]["queue_full"] > 0
            assert doc["counters"]["dropped"]["expired"] == 0
            assert agent.stop() == 0

    batches, counters, _ = read_queue(config["data_dir"], SMALL)
    assert raw_books(counters), counters
    assert counters["stored_bytes"] <= SMALL
    kept = {"alarms": set(), "telemetry": set()}
    for _, priority, records in batches:
        for rec in records:
            kept["alarms" if priority == 10 else "telemetry"].add(message_id(rec[10]))
    sent = by_device_kind(acked)
    dropped = {k: sent[k] - kept[k] for k in sent}
    assert not kept["alarms"] - sent["alarms"] and not kept["telemetry"] - sent["telemetry"]
    assert len(dropped["alarms"]) + len(dropped["telemetry"]) == counters["dropped.queue_full"]
    print(f"{on_full}: acked {len(sent['telemetry'])} telemetry + {len(sent['alarms'])} alarms; kept "
          f"{len(kept['telemetry'])} + {len(kept['alarms'])}; dropped {counters['dropped.queue_full']}")

    def oldest(ids):
        out = defaultdict(lambda: 1 << 60)
        for d, n in ids:
            out[d] = min(out[d], n)
        return out

    if on_full == "drop_oldest":
        assert kept["alarms"] == sent["alarms"], "alarms (priority 10) must outlive telemetry"
        assert dropped["telemetry"]
        # the oldest telemetry went: per device, every dropped one is older than every kept one
        lo = oldest(kept["telemetry"])
        assert all(n < lo[d] for d, n in dropped["telemetry"])
    else:
        # drop_newest: what arrived first stays. Every message before the first refused one
        # is kept; after it only a few fit, in the room a larger refused batch left.
        everything_kept = kept["alarms"] | kept["telemetry"]
        arrival = {message_id(p): i for i, (_, p) in enumerate(acked)}
        first_drop = min(arrival[x] for x in dropped["alarms"] | dropped["telemetry"])
        assert all(message_id(p) in everything_kept for _, p in acked[:first_drop])
        late = sum(1 for x in everything_kept if arrival[x] > first_drop)
        print(f"drop_newest: first refused message #{first_drop}; {late} later ones fitted in the room left")
        assert late < len(everything_kept) // 10

    # Kafka back (restart with the real bootstrap): what was kept arrives, once
    config["kafka"]["bootstrap_servers"] = kafka.bootstrap
    with AgentRunner(tmp_workdir, config, name="agent-kafka") as agent:
        agent.start()
        doc = agent.wait_for(_drained(len(acked)), timeout=120, what="kept messages forwarded")
        assert agent.stop() == 0
    c = doc["counters"]
    assert status_books(doc), c
    assert c["forwarded"] == len(kept["alarms"]) + len(kept["telemetry"])
    got_t = kafka_ids(kafka.read_all(tele, expected=len(kept["telemetry"]), timeout=60))
    got_a = kafka_ids(kafka.read_all(alarms, expected=len(kept["alarms"]), timeout=60))
    assert set(got_t) == kept["telemetry"] and set(got_a) == kept["alarms"]
    assert all(n == 1 for n in (got_t + got_a).values())


def test_tiny_queue_block_stops_acking_and_resumes_when_kafka_returns(kafka, mosquitto, tmp_workdir):
    tele, alarms = topics(kafka, "tele-block", "alarms-block")
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap,
                         routes=_routes(tele, alarms),
                         queue={"max_bytes": SMALL, "compression": "none", "on_full": "block", "max_age": "1h"},
                         producer_properties={"reconnect.backoff.max.ms": 500})
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub, \
            AgentRunner(tmp_workdir, config) as agent:
        agent.start()
        agent.wait_connected()
        with kafka_down(kafka):
            pub.run(12000, rate=6000, alarm_every=10)
            doc = agent.wait_for(lambda d: d["mqtt"]["blocked"], timeout=60, what="ingest blocked")
            assert pub.wait_acked(60)  # Mosquitto acknowledges the devices and holds the rest
            acked = pub.acked_snapshot()
            doc = agent.wait_for(lambda d: d["health"] == "critical" and d["mqtt"]["blocked"], timeout=30,
                                 what="status critical: blocked")
            _, rc = agent.status()
            assert rc == 2
            assert "on_full: block" in doc["mqtt"]["blocked"]
            assert any("on_full: block" in p for p in doc["problems"])
            assert doc["counters"]["received"] < len(acked)  # the rest waits at the broker, unacked
            assert sum(doc["counters"]["dropped"].values()) == 0
            assert status_books(doc), doc["counters"]
        # Kafka is back: the queue drains, ingest acknowledges again, the broker's backlog flows
        doc = agent.wait_for(_drained(len(acked)), timeout=180, what="everything forwarded after Kafka returned")
        assert not doc["mqtt"]["blocked"]
        assert agent.stop() == 0
    c = doc["counters"]
    assert status_books(doc), c
    assert c["received"] == c["forwarded"] == len(acked), c
    assert sum(c["dropped"].values()) == 0
    records = kafka.read_all(tele, expected=len(acked) * 9 // 10, timeout=60) + kafka.read_all(alarms, timeout=60)
    result = audit(acked, records)
    print(f"block: {len(acked)} acked, {result}")
    assert result["lost_count"] == 0 and result["order_violations"] == 0, result


# ------------------------------------------------------------------ (b) real ENOSPC

TMPFS_SIZE = "24m"


@pytest.fixture
def small_disk(tmp_workdir):
    """A 24 MiB tmpfs of our own. CI runs as root on the same kind of machine: if mounting
    is refused, that is a broken test environment, not a reason to skip."""
    path = tmp_workdir / "disk"
    path.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"cannot mount a tmpfs for the ENOSPC test (needs root): {out.stderr}"
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path) -> int:
    """Write until the filesystem refuses: ENOSPC for real. Returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for chunk in (1 << 20, 4096, 512):
            block = b"\xa5" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                written += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    return written


def test_real_enospc_blocks_then_resumes_by_itself(kafka, mosquitto, tmp_workdir, small_disk):
    (topic,) = topics(kafka, "enospc")
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=kafka.bootstrap, routes=routes,
                         queue={"max_bytes": "64MiB"},  # more than the 24 MiB filesystem
                         producer_properties={"reconnect.backoff.max.ms": 500})
    config["data_dir"] = str(small_disk / "data")
    filler = small_disk / "filler"
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub, \
            AgentRunner(tmp_workdir, config) as agent:
        agent.start()
        agent.wait_connected()
        with kafka_down(kafka):
            pub.run(2000, rate=2000)
            assert pub.wait_acked(30)
            agent.wait_for(lambda d: d["counters"]["received"] >= 2000, timeout=30, what="first messages stored")
            written = _fill(filler)
            pub.run(4000, rate=2000)
            doc = agent.wait_for(lambda d: d["mqtt"]["blocked"] and d["health"] == "critical", timeout=60,
                                 what="critical: queue write failed (ENOSPC)")
            print(f"enospc: filler {written} bytes; blocked: {doc['mqtt']['blocked']!r}")
            assert "No space left on device" in doc["mqtt"]["blocked"] or "ENOSPC" in doc["mqtt"]["blocked"]
            assert doc["counters"]["received"] < 6000
            assert pub.wait_acked(30)
            acked = pub.acked_snapshot()
            assert agent.running()
            _, rc = agent.status()
            assert rc == 2
            # space returns; then Kafka
            filler.unlink()
            doc = agent.wait_for(lambda d: d["counters"]["received"] >= len(acked), timeout=60,
                                 what="ingest resumed by itself once space returned")
            assert not doc["mqtt"]["blocked"]
        doc = agent.wait_drained(len(acked), timeout=120)
        assert doc["drainer"]["restarts"] == 0, "the full disk killed the drainer"
        assert agent.stop() == 0
    c = doc["counters"]
    assert status_books(doc), c
    assert c["received"] == c["forwarded"] == len(acked), c
    records = kafka.read_all(topic, expected=len(acked), timeout=60)
    result = audit(acked, records)
    print(f"enospc: {len(acked)} acked, {result}")
    assert result["lost_count"] == 0 and result["order_violations"] == 0, result

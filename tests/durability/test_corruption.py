"""Corruption injection: damaged batches in a stored backlog are quarantined, counted once,
and never stop the rest from reaching Kafka or crash the agent (DESIGN.md invariant 7)."""

from __future__ import annotations

import json
import subprocess
import sys

from edgefwd import _core
from edgefwd.queue import Queue
from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from .helpers import TELEMETRY, closed_bootstrap, kafka_ids, message_id, status_books, topics

MAX_BYTES = 64 << 20


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


# what is done to the i-th stored batch
DAMAGE = {
    2: ("bit flipped in the body", lambda d: _flip(d, _core.BATCH_HEADER_LEN + len(d) // 3 % 200, 3)),
    5: ("value truncated to half", lambda d: d[: len(d) // 2]),
    9: ("bit flipped in the header (record count unreadable)", lambda d: _flip(d, 9, 1)),
    13: ("value truncated inside the header", lambda d: d[:20]),
    17: ("last byte flipped (payload of the last record)", lambda d: _flip(d, len(d) - 1, 7)),
}


def test_corrupt_batches_are_quarantined_counted_once_and_the_rest_delivered(kafka, mosquitto, tmp_workdir):
    (topic,) = topics(kafka, "corrupt")
    routes = [{**TELEMETRY, "kafka_topic": topic}]
    queue = {"max_bytes": MAX_BYTES, "commit_max_messages": 50}
    config = make_config(tmp_workdir, mqtt_port=mosquitto.port, bootstrap=closed_bootstrap(), routes=routes,
                         queue=queue)
    # 1. a backlog: Kafka unreachable while the devices publish
    with FleetPublisher("127.0.0.1", mosquitto.port, devices=10) as pub:
        with AgentRunner(tmp_workdir, config) as agent:
            agent.start()
            agent.wait_connected()
            pub.run(3000, rate=3000)
            assert pub.wait_acked(60)
            agent.wait_for(lambda d: d["counters"]["received"] >= 3000, timeout=60, what="backlog stored")
            assert agent.stop() == 0
        acked = pub.acked_snapshot()

    # 2. the agent stopped: damage some stored batches in place
    q = Queue(config["data_dir"], MAX_BYTES)
    try:
        batches = q.read_batches(0, 10_000)
        assert len(batches) > max(DAMAGE) + 1, f"only {len(batches)} batches"
        damaged_ids: set[tuple[str, int]] = set()
        damaged_records = 0
        with q.env.begin(write=True) as txn:
            for index, (what, damage) in DAMAGE.items():
                b = batches[index]
                records = _core.decode_batch(bytes(b.data))[1]
                damaged_records += len(records)
                damaged_ids |= {message_id(r[10]) for r in records}
                txn.put(b.key, damage(bytes(b.data)), db=q._batches)
        for index in DAMAGE:  # each really is corrupt now
            try:
                _core.decode_batch(bytes(q.read_batches(batches[index].id - 1, 1)[0].data))
                raise AssertionError(f"batch {index} still decodes")
            except _core.CorruptBatchError:
                pass
    finally:
        q.close()

    # 3. start with Kafka up: the corrupt ones go to the dead-letter store, the rest to Kafka
    config["kafka"]["bootstrap_servers"] = kafka.bootstrap
    with AgentRunner(tmp_workdir, config, name="agent-kafka") as agent:
        agent.start()
        doc = agent.wait_for(
            lambda d: d["queue"]["messages"] == 0 and d["counters"]["forwarded"] + d["counters"]["dead_lettered"]
            >= len(acked),
            timeout=120,
            what="backlog drained or quarantined",
        )
        assert agent.running()
        assert doc["drainer"]["restarts"] == 0, "the drainer died on a corrupt batch"
        text, _ = agent.status_text()
        dlq = subprocess.run([sys.executable, "-m", "edgefwd", "dlq", "list", "--config", str(agent.config_path)],
                             capture_output=True, text=True, timeout=30)
        assert dlq.returncode == 0, dlq.stderr
        assert agent.stop() == 0
        log = agent.log_path.read_text(errors="replace")

    c = doc["counters"]
    print(f"corruption: {len(DAMAGE)} batches damaged holding {damaged_records} records; counters {c}")
    assert c["dead_lettered"] == damaged_records, c  # counted once, with the right number
    assert c["forwarded"] == len(acked) - damaged_records, c
    assert status_books(doc), c
    assert f"dead-lettered {damaged_records}" in text
    assert log.count("event=batch_quarantined") == len(DAMAGE)
    letters = [json.loads(line) for line in dlq.stdout.splitlines()]
    assert len(letters) == len(DAMAGE), dlq.stdout
    assert all(x["reason"] == "batch CRC mismatch" and x["source"] == "corrupt" for x in letters), letters

    records = kafka.read_all(topic, expected=c["forwarded"], timeout=60)
    got = kafka_ids(records)
    assert all(n == 1 for n in got.values())
    assert set(got) == {message_id(p) for _, p in acked} - damaged_ids

"""Ingest's group commit on its own (no broker): dedup of redeliveries, fan-out, acks."""

from __future__ import annotations

import textwrap

import pytest

from edgefwd import _core
from edgefwd.config import load_config
from edgefwd.ingest import Arrival, Ingest, message_digest
from edgefwd.queue import REDELIVERY_WINDOW, Queue


class AckRecorder:
    def __init__(self):
        self.acked: list[int] = []

    def ack(self, mid, qos):
        self.acked.append(mid)


@pytest.fixture
def ingest(tmp_path):
    cfg = tmp_path / "edgefwd.yaml"
    cfg.write_text(textwrap.dedent(f"""
        gateway_id: gw1
        data_dir: {tmp_path / 'data'}
        kafka: {{bootstrap_servers: "127.0.0.1:1"}}
        routes:
          - {{mqtt_filter: "v/+/t", kafka_topic: "tele", kafka_key: "${{1}}"}}
          - {{mqtt_filter: "v/#", kafka_topic: "all"}}
          - {{mqtt_filter: "j/+", kafka_topic: "x", kafka_key: "${{payload.id}}"}}
    """))
    config = load_config(cfg)
    queue = Queue(config.data_dir, config.queue.max_bytes)
    ing = Ingest(config, queue)
    ing.client = AckRecorder()
    yield ing
    queue.close()


def arrival(mid, topic=b"v/d1/t", payload=b"p", dup=False, qos=1):
    return Arrival(mid=mid, qos=qos, retain=False, dup=dup, topic=topic, payload=payload,
                   user_properties=[], wall_ms=1, mono_ns=1)


def stored(ingest) -> list[tuple]:
    out = []
    for batch in ingest.queue.read_batches(0, 1000):
        out.extend(_core.decode_batch(batch.data)[1])
    return out


def test_fan_out_keeps_one_seq_and_acks_after_commit(ingest):
    assert ingest._commit_and_ack([arrival(1), arrival(2, topic=b"v/d2/t")])
    recs = stored(ingest)
    assert [(r[0], r[7]) for r in recs] == [(1, "tele"), (1, "all"), (2, "tele"), (2, "all")]
    assert ingest.client.acked == [1, 2]
    assert ingest.queue.counters()["received"] == 4


def test_redelivery_of_a_persisted_message_is_acked_not_queued(ingest):
    assert ingest._commit_and_ack([arrival(7, payload=b"A")])
    # the agent crashed before its PUBACK left; the broker sends it again with DUP
    assert ingest._commit_and_ack([arrival(7, payload=b"A", dup=True)])
    assert len(stored(ingest)) == 2  # the first copy's two routes only
    assert ingest.client.acked == [7, 7]
    assert ingest.queue.counters()["duplicates_skipped"] == 1


def test_dup_with_other_content_is_a_new_message(ingest):
    assert ingest._commit_and_ack([arrival(7, payload=b"A")])
    assert ingest._commit_and_ack([arrival(7, payload=b"B", dup=True)])
    assert len(stored(ingest)) == 4


def test_dup_copy_inside_the_same_batch_is_skipped(ingest):
    assert ingest._commit_and_ack([arrival(3, payload=b"A"), arrival(3, payload=b"A", dup=True)])
    assert len(stored(ingest)) == 2


def test_old_packet_id_entry_does_not_swallow_a_new_message(ingest):
    # The same content under the same packet id, but far more messages ago than the
    # broker's id space allows: the broker has long reused the id; it is a new message.
    ingest.queue.commit_ingest([], 1, [(9, message_digest(b"v/d1/t", b"A"), 1)], [], {}, "drop_oldest")
    ingest._message_number = REDELIVERY_WINDOW + 10
    assert ingest._commit_and_ack([arrival(9, payload=b"A", dup=True)])
    assert len(stored(ingest)) == 2


def test_non_utf8_topic_and_bad_payload_go_to_dead_letters(ingest):
    assert ingest._commit_and_ack([arrival(1, topic=b"v/\xff/t"), arrival(2, topic=b"j/a", payload=b"not json")])
    letters = ingest.queue.dead_letters()
    reasons = [m["reason"] for _, m, _ in letters]
    assert any("UTF-8" in r for r in reasons)
    assert any("JSON" in r or "json" in r for r in reasons)
    c = ingest.queue.counters()
    assert c["dead_lettered"] == 2 and c["received"] == 2
    assert ingest.client.acked == [1, 2]


def test_unrouted_messages_are_acked_and_counted(ingest):
    assert ingest._commit_and_ack([arrival(4, topic=b"other/x")])
    assert stored(ingest) == []
    assert ingest.client.acked == [4]
    assert ingest.queue.counters()["unrouted"] == 1


def test_qos0_messages_are_queued_but_not_acked(ingest):
    assert ingest._commit_and_ack([arrival(0, qos=0)])
    assert len(stored(ingest)) == 2
    assert ingest.client.acked == []

"""The LMDB queue on its own: commits, counters, eviction, dead letters, reopening."""

from __future__ import annotations

import pytest

from edgefwd import _core
from edgefwd.errors import QueueOpenError
from edgefwd.queue import REDELIVERY_WINDOW, DeadLetter, NewBatch, Queue

BOOT = bytes(16)


def records(first_seq: int, n: int, payload: bytes = b"x" * 200) -> list[tuple]:
    return [
        (first_seq + i, 1_700_000_000_000 + i, 10 + i, True, 1, False, 0, "t", b"k", "a/b", payload, [])
        for i in range(n)
    ]


def ingest(q: Queue, seq: int, n: int, on_full: str = "drop_oldest", mids=(), priority: int = 0, wall_ms=None):
    recs = records(seq, n)
    if wall_ms is not None:
        recs = [(r[0], wall_ms, *r[2:]) for r in recs]
    batch = _core.encode_batch(recs, BOOT)
    return q.commit_ingest([NewBatch(priority, batch, n)], seq + n, list(mids), [], {"messages": n}, on_full), len(batch)


def first_seqs(q: Queue) -> list[int]:
    return [_core.decode_batch(b.data)[1][0][0] for b in q.read_batches(0, 10_000)]


def test_commit_read_complete_keeps_the_books(tmp_path):
    q = Queue(tmp_path, 64 << 20)
    r1, size1 = ingest(q, 1, 10)
    r2, size2 = ingest(q, 11, 5)
    assert (r1.batch_ids, r2.batch_ids) == ([1], [2])
    got = q.read_batches(0, 10)
    assert [b.id for b in got] == [1, 2]
    assert _core.decode_batch(got[1].data)[1][0][0] == 11
    assert q.read_batches(1, 10)[0].id == 2
    q.complete_batches([(got[0], 10)])
    c = q.counters()
    assert c["received"] == 15 and c["forwarded"] == 10 and c["stored_records"] == 5
    assert c["stored_bytes"] == size2
    assert q.next_seq() == 16
    q.close()
    # reopened: same epoch, same books
    q2 = Queue(tmp_path, 64 << 20)
    assert q2.counters()["stored_records"] == 5
    assert q2.read_batches(0, 1)[0].id == 2


def test_epoch_is_random_per_queue_and_kept(tmp_path):
    a = Queue(tmp_path / "a", 8 << 20)
    b = Queue(tmp_path / "b", 8 << 20)
    assert a.epoch != b.epoch and len(a.epoch) == 16
    epoch = a.epoch
    a.close()
    assert Queue(tmp_path / "a", 8 << 20).epoch == epoch


def test_drop_oldest_evicts_and_counts(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    n = 0
    for i in range(400):  # ~400 x 100 x 230 bytes: far over the limit
        res, _ = ingest(q, 1 + i * 100, 100)
        n += 100
    c = q.counters()
    assert c["stored_bytes"] <= q.logical_limit
    assert c["dropped.queue_full"] > 0
    assert c["received"] == n == c["stored_records"] + c["dropped.queue_full"]
    # the survivors are the newest
    assert first_seqs(q)[0] > 1


def test_drop_newest_refuses_and_counts(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    for i in range(400):
        ingest(q, 1 + i * 100, 100, on_full="drop_newest")
    c = q.counters()
    assert c["dropped.queue_full"] > 0
    assert c["received"] == c["stored_records"] + c["dropped.queue_full"]
    assert first_seqs(q)[0] == 1  # the oldest survived


def test_block_refuses_without_counting(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    blocked = None
    for i in range(400):
        res, _ = ingest(q, 1 + i * 100, 100, on_full="block")
        if res.blocked:
            blocked = i
            break
    assert blocked is not None
    c = q.counters()
    assert c["dropped.queue_full"] == 0
    assert c["received"] == c["stored_records"]


def test_dead_letters_are_stored_and_counted(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    letter = DeadLetter(reason="bad topic", source="ingest", data=b"raw", mqtt_topic="a/b", seq=7)
    q.commit_ingest([], 8, [], [letter], {}, "drop_oldest")
    (lid, meta, data), = q.dead_letters()
    assert meta["reason"] == "bad topic" and meta["seq"] == 7 and data == b"raw"
    c = q.counters()
    assert c["dead_lettered"] == 1 and c["received"] == 1


def test_corrupt_batch_moves_to_dead_letters_once(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    ingest(q, 1, 10)
    (batch,) = q.read_batches(0, 1)
    q.complete_batches([], corrupt=[(batch, 10)])
    q.complete_batches([], corrupt=[(batch, 10)])  # already gone: not counted again
    c = q.counters()
    assert c["dead_lettered"] == 10 and c["stored_records"] == 0
    assert len(q.dead_letters()) == 1


def test_redelivery_entries_round_trip(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    ingest(q, 1, 2, mids=[(5, b"d" * 8, 1), (6, b"e" * 8, 2)])
    ingest(q, 3, 1, mids=[(5, b"f" * 8, 3)])  # packet id 5 reused later: the newest counts
    assert q.redelivery_entries([5, 6, 7], current_number=3) == {5: (b"f" * 8, 3), 6: (b"e" * 8, 2)}
    # outside the window (the broker reused every id since): nothing
    assert q.redelivery_entries([5, 6], current_number=3 + REDELIVERY_WINDOW) == {}


def test_packed_redelivery_records_are_pruned(tmp_path):
    q = Queue(tmp_path, 64 << 20)
    number = 0
    for i in range(300):  # 300 commits of 250 QoS 1 messages: far past the window
        entries = [((number + j) % 65535 + 1, b"x" * 8, number + j + 1) for j in range(250)]
        number += 250
        q.commit_ingest([], 1, entries, [], {}, "drop_oldest")
    with q.env.begin() as txn:
        kept = sum(1 for _ in txn.cursor(db=q._mids))
    assert kept * 250 <= 2 * REDELIVERY_WINDOW + 250


def test_unknown_format_version_refuses_to_open(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    with q.env.begin(write=True) as txn:
        txn.put(b"format", b"99", db=q._meta)
    q.close()
    with pytest.raises(QueueOpenError, match="format version 99"):
        Queue(tmp_path, 8 << 20)


def test_unreadable_queue_refuses_to_open(tmp_path):
    Queue(tmp_path, 8 << 20).close()  # a queue that was completed once (it has its marker)
    (tmp_path / "queue" / "data.mdb").write_bytes(b"this is not an LMDB file" * 100)
    with pytest.raises(QueueOpenError, match="cannot open the queue"):
        Queue(tmp_path, 8 << 20)
    assert (tmp_path / "queue" / "data.mdb").read_bytes().startswith(b"this is not"), "never deleted"


def test_a_queue_whose_creation_never_completed_is_created_afresh(tmp_path):
    # a power cut before LMDB's first fsync of a new file leaves meta pages it rejects;
    # without the "created" marker nothing in it can have been acknowledged
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "data.mdb").write_bytes(bytes(8192))
    q = Queue(tmp_path, 8 << 20)
    assert q.counters()["received"] == 0
    assert (tmp_path / "queue" / "created").read_text().strip() == q.epoch


def test_drop_oldest_takes_low_priority_first_and_never_higher(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    for i in range(150):  # alarms (priority 10) and telemetry (0), interleaved: ~7.4 MB
        ingest(q, 1 + i * 200, 100, priority=10 if i % 4 == 0 else 0)
        ingest(q, 101 + i * 200, 100, priority=0)
    kept = q.read_batches(0, 10_000)
    alarms = [b for b in kept if b.priority == 10]
    assert len(alarms) == 38, "no alarm batch may be evicted while telemetry remains"
    c = q.counters()
    assert c["dropped.queue_full"] > 0
    assert c["received"] == c["stored_records"] + c["dropped.queue_full"]
    # telemetry alone cannot push alarms out: it is dropped itself instead
    while len([b for b in q.read_batches(0, 10_000) if b.priority == 0]):
        q.complete_batches([(b, 100) for b in q.read_batches(0, 10_000) if b.priority == 0])
    for i in range(250):
        ingest(q, 50_000 + i * 100, 100, priority=10)
    before = q.counters()["dropped.queue_full"]
    # the alarms filled the queue up to less than one alarm batch of room: a telemetry
    # batch twice that size can only get in by evicting alarms, which it may not
    res, _ = ingest(q, 90_000, 200, priority=0)
    assert res.dropped_new_records == 200
    assert q.counters()["dropped.queue_full"] == before + 200
    assert all(b.priority == 10 for b in q.read_batches(0, 10_000))


def test_expire_drops_old_batches_and_keeps_in_flight(tmp_path):
    q = Queue(tmp_path, 8 << 20)
    ingest(q, 1, 10, wall_ms=1_000)
    ingest(q, 11, 10, wall_ms=2_000)
    ingest(q, 21, 10, wall_ms=10_000)
    assert q.expire(cutoff_ms=5_000, keep={2}) == 10
    assert [b.id for b in q.read_batches(0, 10)] == [2, 3]
    c = q.counters()
    assert c["dropped.expired"] == 10 and c["stored_records"] == 20

"""The durable queue: an LMDB environment under ``data_dir/queue``.

Databases inside the environment:

``batches``   u64 big-endian batch id (arrival order) + u8 priority -> a batch encoded by the
              Rust core; every record of a batch has the same route priority
``evict``     u8 priority + u64 batch id -> u32 record count: the eviction order (lowest
              priority, oldest); the count, kept apart from the batch, still tells how many
              records a batch held when its own header is damaged (empty in queues written
              before the count was kept: then unknown)
``counters``  counter name -> u64; updated in the same transaction as the data it counts
``meta``      format version, queue epoch, next seq / batch id, subscriptions
``mids``      u64 number of a commit's first message -> the (packet id, digest, message
              number) of each QoS 1 message in that commit, packed; the last
              REDELIVERY_WINDOW messages' worth is kept, to recognise broker redeliveries
``dlq``       u64 id -> dead letter (JSON meta + the encoded single-record batch or raw bytes)

Every write is one LMDB transaction committed with fsync (``sync=True, metasync=True``), so
when ``commit_ingest`` returns, the data and its counters are durable and the messages may be
acknowledged to the broker.  No ``writemap``: it turns ENOSPC into SIGBUS.

Two processes use the environment: the agent's ingest (appends) and the drainer (reads and
deletes).  LMDB serialises the writers; readers are short transactions that copy what they
read, so no reader pins pages while the other process writes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import lmdb

from edgefwd import _core
from edgefwd.errors import QueueOpenError
from edgefwd.faults import crash_point

log = logging.getLogger("edgefwd.queue")

QUEUE_FORMAT_VERSION = 1
# Written (and fsynced, with its directory) once a new queue is durable; before it exists
# nothing in the queue can have been acknowledged.
CREATED_MARKER = "created"
_U64 = struct.Struct(">Q")
_BATCH_KEY = struct.Struct(">QB")
_EVICT_KEY = struct.Struct(">BQ")
_EVICT_VAL = struct.Struct(">I")
_MID_ENTRY = struct.Struct(">H8sI")  # packet id, digest, message number - the record's key

# A redelivered message matches a stored packet id only if fewer than this many messages
# arrived since: Mosquitto hands out packet ids in sequence, so an entry older than half the
# 16-bit id space belongs to an earlier message that the broker has long seen acknowledged.
REDELIVERY_WINDOW = 32768

# queue.max_bytes bounds the file (LMDB's map size).  The stored batches themselves are
# capped below it; the rest is headroom for LMDB's page rounding, tree pages and free list.
LOGICAL_FRACTION = 0.75
_MIN_MAP_SIZE = 4 * 1024 * 1024

COUNTER_NAMES = (
    "received",  # records accepted from MQTT: one per (message, matching route)
    "forwarded",  # records Kafka acknowledged and that were deleted from the queue
    "dead_lettered",  # records moved to the dead-letter store
    "dropped.queue_full",
    "dropped.expired",
    "stored_records",  # records in `batches` now (queued + in flight)
    "stored_bytes",  # bytes of the encoded batches in `batches` now
    "messages",  # MQTT messages persisted (numbering for the redelivery window)
    "duplicates_skipped",  # broker redeliveries recognised and not queued again
    "unrouted",  # messages that matched no route (over-subscription of the filter cover)
    "sessions_lost",  # reconnects where the broker had lost our persistent session
)


@dataclass(frozen=True, slots=True)
class NewBatch:
    """An encoded batch about to be stored; all its records share the route priority."""

    priority: int
    data: bytes
    records: int


@dataclass(frozen=True, slots=True)
class StoredBatch:
    id: int
    priority: int
    data: bytes

    @property
    def key(self) -> bytes:
        return _BATCH_KEY.pack(self.id, self.priority)

    @property
    def evict_key(self) -> bytes:
        return _EVICT_KEY.pack(self.priority, self.id)


class _Blocked(Exception):
    """on_full: block and no room: abort the transaction, write nothing."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    source: str  # "ingest" | "drain" | "corrupt"
    data: bytes  # an encoded one-record batch, or the raw stored bytes of a corrupt batch
    mqtt_topic: str | None = None
    seq: int | None = None
    batch_id: int | None = None  # the stored batch it came from (drain), if any


@dataclass(slots=True)
class IngestResult:
    blocked: bool = False  # True: nothing was written; nothing may be acked
    batch_ids: list[int] = field(default_factory=list)
    dropped_new_records: int = 0
    dropped_old_records: int = 0


class Queue:
    """One process's handle on the queue environment."""

    def __init__(self, data_dir: str | os.PathLike[str], max_bytes: int, *, readonly: bool = False):
        self.path = Path(data_dir) / "queue"
        self.max_bytes = int(max_bytes)
        self.logical_limit = int(self.max_bytes * LOGICAL_FRACTION)
        map_size = max(self.max_bytes, _MIN_MAP_SIZE)
        marker = self.path / CREATED_MARKER
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True, mode=0o750)
            elif not (self.path / "data.mdb").exists():
                raise QueueOpenError(f"{self.path}: no queue here (the agent has not run yet?)")
            try:
                self.env = self._open_env(map_size, readonly)
            except lmdb.Error:
                if readonly or marker.exists() or not (self.path / "data.mdb").exists():
                    raise
                # LMDB writes a new file's meta pages unsynced: a power cut before its first
                # fsync leaves a file it rejects. Without the marker, the queue was never
                # completed, so nothing in it was ever acknowledged: start it afresh.
                log.warning("event=queue_recreated path=%s reason='creation never completed'", self.path)
                for name in ("data.mdb", "lock.mdb"):
                    (self.path / name).unlink(missing_ok=True)
                self.env = self._open_env(map_size, readonly)
        except QueueOpenError:
            raise
        except (lmdb.Error, OSError) as exc:
            raise QueueOpenError(f"cannot open the queue at {self.path}: {exc}") from exc
        try:
            self.env.reader_check()  # forget readers of processes that died
            create = not readonly
            self._batches = self.env.open_db(b"batches", create=create)
            self._evict_index = self.env.open_db(b"evict", create=create)
            self._counters = self.env.open_db(b"counters", create=create)
            self._meta = self.env.open_db(b"meta", create=create)
            self._mids = self.env.open_db(b"mids", create=create)
            self._dlq = self.env.open_db(b"dlq", create=create)
            if not readonly:
                self._init_meta()
            self.epoch = self._read_meta(b"epoch").decode()
            version = int(self._read_meta(b"format"))
            if not readonly and not marker.exists():
                self._mark_created(marker)
        except QueueOpenError:
            self.env.close()
            raise
        except (lmdb.Error, ValueError, AttributeError) as exc:
            self.env.close()
            raise QueueOpenError(f"cannot open the queue at {self.path}: {exc}") from exc
        if version != QUEUE_FORMAT_VERSION:
            self.env.close()
            raise QueueOpenError(
                f"{self.path}: queue format version {version}, this edgefwd reads version "
                f"{QUEUE_FORMAT_VERSION}; see docs/queue-format.md for the upgrade path"
            )

    # ---------------------------------------------------------------- set-up
    def _open_env(self, map_size: int, readonly: bool) -> lmdb.Environment:
        return lmdb.open(
            str(self.path),
            map_size=map_size,
            subdir=True,
            max_dbs=8,
            sync=True,
            metasync=True,
            writemap=False,
            map_async=False,
            readahead=False,
            meminit=False,
            max_readers=64,
            readonly=readonly,
            create=not readonly,
        )

    def _mark_created(self, marker: Path) -> None:
        """Make the new queue durable, file names included, then say so with the marker.

        POSIX makes a new file's name durable only with an fsync of its directory.
        """
        self.env.sync(True)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, f"{self.epoch}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        for directory in (self.path, self.path.parent):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    def _init_meta(self) -> None:
        with self.env.begin(write=True) as txn:
            if txn.get(b"format", db=self._meta) is None:
                txn.put(b"format", str(QUEUE_FORMAT_VERSION).encode(), db=self._meta)
                txn.put(b"epoch", secrets.token_hex(8).encode(), db=self._meta)
                txn.put(b"created_ms", str(int(time.time() * 1000)).encode(), db=self._meta)
                txn.put(b"next_seq", _U64.pack(1), db=self._meta)
                txn.put(b"next_batch", _U64.pack(1), db=self._meta)

    def _read_meta(self, key: bytes) -> bytes:
        with self.env.begin() as txn:
            value = txn.get(key, db=self._meta)
        if value is None:
            raise QueueOpenError(f"{self.path}: queue metadata '{key.decode()}' missing")
        return bytes(value)

    def close(self) -> None:
        self.env.close()

    # ---------------------------------------------------------------- counters
    @staticmethod
    def _get_u64(txn: lmdb.Transaction, key: bytes, db) -> int:
        value = txn.get(key, db=db)
        return _U64.unpack(value)[0] if value is not None else 0

    def _add(self, txn: lmdb.Transaction, deltas: dict[str, int]) -> None:
        for name, delta in deltas.items():
            if delta:
                key = name.encode()
                txn.put(key, _U64.pack(self._get_u64(txn, key, self._counters) + delta), db=self._counters)

    def counters(self) -> dict[str, int]:
        with self.env.begin() as txn:
            return {name: self._get_u64(txn, name.encode(), self._counters) for name in COUNTER_NAMES}

    def next_seq(self) -> int:
        with self.env.begin() as txn:
            return self._get_u64(txn, b"next_seq", self._meta)

    def get_meta_json(self, key: str) -> object:
        with self.env.begin() as txn:
            value = txn.get(key.encode(), db=self._meta)
        return json.loads(value) if value is not None else None

    def put_meta_json(self, key: str, value: object, *, count: dict[str, int] | None = None) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), json.dumps(value).encode(), db=self._meta)
            self._add(txn, count or {})

    # ---------------------------------------------------------------- redelivery
    def redelivery_entries(self, mids: Iterable[int], current_number: int) -> dict[int, tuple[bytes, int]]:
        """The newest (digest, message number) persisted under each packet id in `mids`,
        looking back at most REDELIVERY_WINDOW messages from `current_number`.

        Only called for DUP arrivals (after a reconnect), so it scans rather than keeping an
        index: the packed commits of the window are a few hundred kilobytes at most.
        """
        wanted = set(mids)
        out: dict[int, tuple[bytes, int]] = {}
        oldest = current_number - REDELIVERY_WINDOW
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._mids)
            if not cursor.last():
                return out
            for key, value in cursor.iterprev():
                first = _U64.unpack(key)[0]
                entries = list(_MID_ENTRY.iter_unpack(value))
                for mid, digest, offset in reversed(entries):
                    number = first + offset
                    if mid in wanted and mid not in out and number > oldest:
                        out[mid] = (digest, number)
                if first <= oldest or len(out) == len(wanted):
                    break
        return out

    def _put_mid_entries(self, txn: lmdb.Transaction, entries: Sequence[tuple[int, bytes, int]]) -> None:
        """One packed record per commit (one page touched, not one key per message), and
        the records that fell out of the redelivery window deleted."""
        if not entries:
            return
        first = entries[0][2]
        txn.put(
            _U64.pack(first),
            b"".join(_MID_ENTRY.pack(mid, digest, number - first) for mid, digest, number in entries),
            db=self._mids,
        )
        cutoff = entries[-1][2] - 2 * REDELIVERY_WINDOW
        cursor = txn.cursor(db=self._mids)
        while cursor.first() and _U64.unpack(cursor.key())[0] < cutoff:
            cursor.delete()

    # ---------------------------------------------------------------- ingest
    def commit_ingest(
        self,
        batches: Sequence[NewBatch],
        next_seq: int,
        mid_entries: Sequence[tuple[int, bytes, int]],
        dead_letters: Sequence[DeadLetter],
        counts: dict[str, int],
        on_full: str,
    ) -> IngestResult:
        """Persist one group commit: its batches, counters and packet-id entries, durably.

        ``mid_entries`` are (packet id, digest, message number) of the messages this commit
        holds.  On return the commit is on disk (fsync), so those messages may be acked.
        A full queue is handled by ``on_full``; ``blocked`` in the result means nothing was
        written and nothing may be acked.
        """
        drop_all = False
        for attempt in range(4):
            try:
                with self.env.begin(write=True) as txn:
                    return self._write_ingest(
                        txn, batches, next_seq, mid_entries, dead_letters, counts, on_full, drop_all
                    )
            except _Blocked:
                return IngestResult(blocked=True)
            except lmdb.MapFullError:
                # LMDB's file is full although the stored bytes are under the limit (page
                # rounding, fragmentation). Pages freed inside a transaction are not
                # reusable by it: evict in a transaction of its own, then write again.
                if on_full == "block" or drop_all:
                    break
                freed = 0
                if on_full == "drop_oldest":
                    need = sum(len(b.data) for b in batches) * 2 + (attempt + 1) * 65536
                    with self.env.begin(write=True) as txn:
                        freed = self._evict(txn, need, max(b.priority for b in batches))[1]
                drop_all = not freed  # nothing we may evict: the new batches are the ones to go
        return IngestResult(blocked=True)

    def _write_ingest(self, txn, batches, next_seq, mid_entries, dead_letters, counts, on_full, drop_all):
        result = IngestResult()
        deltas = dict(counts)
        stored_bytes = self._get_u64(txn, b"stored_bytes", self._counters)
        next_id = self._get_u64(txn, b"next_batch", self._meta)
        # Highest priority first, so that when room runs out it is the lower ones that go.
        for batch in sorted(batches, key=lambda b: -b.priority):
            size = len(batch.data)
            if stored_bytes + size > self.logical_limit or drop_all:
                if on_full == "block":
                    raise _Blocked
                room = False
                if on_full == "drop_oldest" and not drop_all:
                    need = stored_bytes + size - self.logical_limit
                    dropped, freed = self._evict(txn, need, batch.priority)
                    result.dropped_old_records += dropped
                    stored_bytes -= freed
                    room = stored_bytes + size <= self.logical_limit
                if not room:
                    result.dropped_new_records += batch.records
                    deltas["dropped.queue_full"] = deltas.get("dropped.queue_full", 0) + batch.records
                    deltas["received"] = deltas.get("received", 0) + batch.records
                    continue
            stored = StoredBatch(next_id, batch.priority, batch.data)
            txn.put(stored.key, batch.data, db=self._batches)
            txn.put(stored.evict_key, _EVICT_VAL.pack(batch.records), db=self._evict_index)
            result.batch_ids.append(next_id)
            next_id += 1
            stored_bytes += size
            deltas["received"] = deltas.get("received", 0) + batch.records
            deltas["stored_records"] = deltas.get("stored_records", 0) + batch.records
            deltas["stored_bytes"] = deltas.get("stored_bytes", 0) + size
        txn.put(b"next_batch", _U64.pack(next_id), db=self._meta)
        txn.put(b"next_seq", _U64.pack(next_seq), db=self._meta)
        self._put_mid_entries(txn, mid_entries)
        if dead_letters:
            self._put_dead_letters(txn, dead_letters)
            deltas["dead_lettered"] = deltas.get("dead_lettered", 0) + len(dead_letters)
            deltas["received"] = deltas.get("received", 0) + len(dead_letters)
        self._add(txn, deltas)
        return result

    def _evict(self, txn: lmdb.Transaction, need_bytes: int, max_priority: int) -> tuple[int, int]:
        """Delete batches, lowest priority and oldest first, never above `max_priority`,
        until `need_bytes` are freed. Counts the records as dropped (queue full).
        Returns (records dropped, bytes freed)."""
        freed = dropped = 0
        cursor = txn.cursor(db=self._evict_index)
        if not cursor.first():
            return 0, 0
        while freed < need_bytes:
            evict_key = cursor.key()
            if not evict_key:
                break  # past the last entry (delete() of the last one leaves no current)
            priority, batch_id = _EVICT_KEY.unpack(evict_key)
            if priority > max_priority:
                break
            key = _BATCH_KEY.pack(batch_id, priority)
            value = txn.get(key, db=self._batches)
            if value is not None:
                freed += len(value)
                dropped += _record_count(value, cursor.value())
                txn.delete(key, db=self._batches)
            if not cursor.delete():
                break
        if freed:
            self._add(txn, {"stored_bytes": -freed, "stored_records": -dropped, "dropped.queue_full": dropped})
            crash_point("queue.evict")
        return dropped, freed

    def expire(self, cutoff_ms: int, keep: set[int] = frozenset(), limit: int = 64) -> int:
        """Delete up to `limit` of the oldest batches whose newest record arrived before
        `cutoff_ms` (queue.max_age), except the ids in `keep` (the drainer's in flight).
        Counts them as dropped (expired); returns the number of records dropped."""
        dropped = freed = 0
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self._batches)
            seen = 0
            if cursor.first():
                while seen < limit:
                    key = cursor.key()
                    if not key:
                        break  # past the last batch (delete() of the last one leaves no current)
                    batch_id, priority = _BATCH_KEY.unpack(key)
                    if batch_id in keep:
                        # On its way to Kafka: skipped, and not counted against `limit`, or a
                        # window of in-flight batches wider than `limit` (10,000 one-message
                        # batches at a low rate) would hide every batch behind it for good.
                        if not cursor.next():
                            break
                        continue
                    value = cursor.value()
                    seen += 1
                    newest = _newest_receive_ms(value)
                    if newest is None or newest >= cutoff_ms:
                        break  # arrival order: all after it is newer; a corrupt one is the drainer's
                    freed += len(value)
                    dropped += _record_count(value)
                    txn.delete(_EVICT_KEY.pack(priority, batch_id), db=self._evict_index)
                    if not cursor.delete():
                        break
            if freed:
                self._add(txn, {"stored_bytes": -freed, "stored_records": -dropped, "dropped.expired": dropped})
                crash_point("queue.expire")
        return dropped

    # ---------------------------------------------------------------- drain
    def read_batches(self, after_id: int, limit: int) -> list[StoredBatch]:
        """Up to ``limit`` batches with id > ``after_id``, oldest first, copied out."""
        out: list[StoredBatch] = []
        with self.env.begin(buffers=False) as txn:
            cursor = txn.cursor(db=self._batches)
            if cursor.set_range(_U64.pack(after_id + 1)):
                for key, value in cursor:
                    batch_id, priority = _BATCH_KEY.unpack(key)
                    out.append(StoredBatch(batch_id, priority, value))
                    if len(out) >= limit:
                        break
        return out

    def complete_batches(
        self,
        done: Sequence[tuple[StoredBatch, int]],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        corrupt: Sequence[tuple[StoredBatch, int]] = (),
    ) -> None:
        """Delete drained batches and count them, in one transaction.

        ``done``: (batch, records in it) for batches whose every record Kafka acknowledged
        or refused for good; the refused ones are ``dead_letters``.  ``corrupt``: (batch,
        records per its header) for batches whose CRC failed; they move whole to the
        dead-letter store.  A batch already gone was evicted (counted as dropped) after the
        producer had it; Kafka took its records anyway, so they move from dropped to
        forwarded: `dropped` counts what did not reach Kafka.
        """
        with self.env.begin(write=True) as txn:
            removed_records = freed = refused = evicted_delivered = 0
            gone: set[int] = set()
            for batch, n_records in done:
                n_refused = sum(1 for d in dead_letters if d.batch_id == batch.id)
                if txn.delete(batch.key, db=self._batches):
                    txn.delete(batch.evict_key, db=self._evict_index)
                    removed_records += n_records
                    freed += len(batch.data)
                    refused += n_refused
                else:
                    # Evicted (on_full: drop_oldest) after it was handed to the producer, and
                    # Kafka then took it: it was counted as dropped, but it was delivered.
                    # (max_age never expires a batch in flight, so only eviction gets here.)
                    evicted_delivered += n_records - n_refused
                    gone.add(batch.id)
            # clamp: a counter never goes below zero, whatever the history
            evicted_delivered = min(evicted_delivered, self._get_u64(txn, b"dropped.queue_full", self._counters))
            letters = [d for d in dead_letters if d.batch_id not in gone]
            corrupt_records = 0
            for batch, n_records in corrupt:
                if not n_records:  # the header is damaged too: the count kept beside it
                    n_records = _record_count(b"", txn.get(batch.evict_key, db=self._evict_index))
                if not txn.delete(batch.key, db=self._batches):
                    continue
                txn.delete(batch.evict_key, db=self._evict_index)
                letters.append(DeadLetter(reason="batch CRC mismatch", source="corrupt", data=batch.data))
                corrupt_records += n_records
                freed += len(batch.data)
            if letters:
                self._put_dead_letters(txn, letters)
            self._add(
                txn,
                {
                    "forwarded": removed_records - refused + evicted_delivered,
                    "dropped.queue_full": -evicted_delivered,
                    "dead_lettered": refused + corrupt_records,
                    "stored_records": -(removed_records + corrupt_records),
                    "stored_bytes": -freed,
                },
            )

    # ---------------------------------------------------------------- dead letters
    def _put_dead_letters(self, txn: lmdb.Transaction, letters: Sequence[DeadLetter]) -> None:
        cursor = txn.cursor(db=self._dlq)
        next_id = _U64.unpack(cursor.key())[0] + 1 if cursor.last() else 1
        for letter in letters:
            meta = json.dumps(
                {
                    "reason": letter.reason,
                    "source": letter.source,
                    "time_ms": int(time.time() * 1000),
                    "mqtt_topic": letter.mqtt_topic,
                    "seq": letter.seq,
                }
            ).encode()
            txn.put(_U64.pack(next_id), struct.pack(">I", len(meta)) + meta + letter.data, db=self._dlq)
            next_id += 1

    def dead_letters(self, limit: int = 100) -> list[tuple[int, dict, bytes]]:
        out = []
        with self.env.begin(buffers=False) as txn:
            for key, value in txn.cursor(db=self._dlq):
                (n,) = struct.unpack_from(">I", value)
                out.append((_U64.unpack(key)[0], json.loads(value[4 : 4 + n]), value[4 + n :]))
                if len(out) >= limit:
                    break
        return out

    # ---------------------------------------------------------------- inspection
    def stats(self) -> dict[str, object]:
        """Counters plus the age of the oldest batch, from one short read transaction."""
        with self.env.begin(buffers=False) as txn:
            counters = {name: self._get_u64(txn, name.encode(), self._counters) for name in COUNTER_NAMES}
            cursor = txn.cursor(db=self._batches)
            oldest = cursor.value() if cursor.first() else None
        oldest_ms = _oldest_receive_ms(oldest) if oldest is not None else None
        return {"counters": counters, "oldest_receive_ms": oldest_ms}


def _record_count(data: bytes | memoryview, evict_value: bytes | memoryview | None = None) -> int:
    """Records in a stored batch: from its CRC-checked header, else from the count kept in
    the eviction index, else 0 (unknown)."""
    try:
        return _core.batch_record_count(bytes(data))
    except _core.CorruptBatchError:
        if evict_value is not None and len(evict_value) == _EVICT_VAL.size:
            return _EVICT_VAL.unpack(evict_value)[0]
        return 0


def _receive_times(data: bytes) -> list[int]:
    try:
        return [record[1] for record in _core.decode_batch(bytes(data))[1]]
    except _core.CorruptBatchError:
        return []


def _oldest_receive_ms(data: bytes) -> int | None:
    times = _receive_times(data)
    return min(times) if times else None


def _newest_receive_ms(data: bytes) -> int | None:
    times = _receive_times(data)
    return max(times) if times else None

"""Power-cut simulation, ALICE-style: replay a recorded trace of writes and syncs.

The LD_PRELOAD shim (pcshim.c) records, for files under one directory, every write with its
offset and bytes and every fsync/fdatasync/msync/sync_file_range, each with a begin and a
done record.  From that trace this module builds "what a power cut at log position p would
have left on disk", for many p and several disk behaviours, and checks a queue there.

Model (see docs/powercut.md):

- A write is *durable* at p if it completed (done record before p, result >= 0) and either
  it was synchronous itself (O_DSYNC/O_SYNC fd or RWF_DSYNC) or a full sync of its file
  (fsync, fdatasync, syncfs, sync) *began* after the write completed and *completed* before
  p.  sync_file_range is not a barrier (it flushes neither the disk cache nor metadata).
- Every other write that began before p is *pending*: the disk may hold all of it, none of
  it, or any sectors of it, in any order - except that a pending write never overwrites a
  durable write that came after it (the page cache holds only the newest bytes; fsync
  waits for writeback in flight before it returns).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import mmap
import os
import pickle
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

HERE = Path(__file__).resolve().parent
SHIM_SRC = HERE / "pcshim.c"

HDR = struct.Struct("<IHHQIIQiIqqqIIQ")
MAGIC = 0x54554350
T_OPEN, T_WRITE, T_WRITE_DONE, T_TRUNC, T_TRUNC_DONE, T_SYNC, T_SYNC_DONE, T_CLOSE, T_MMAP_W, T_FALLOC, T_FALLOC_DONE = range(1, 12)
S_FSYNC, S_FDATASYNC, S_SYNC_FILE_RANGE, S_MSYNC, S_SYNCFS, S_SYNC = range(1, 7)
F_DSYNC, F_CREATED, F_DIR = 1, 2, 4
BARRIER_KINDS = {S_FSYNC, S_FDATASYNC, S_SYNCFS, S_SYNC}

# What a reconstruction does with the pending writes.
VARIANTS = ("none", "all", "subset", "subset2", "prefix", "torn512", "torn4k", "reorder")


def build_shim(outdir: Path) -> Path:
    """Compile pcshim.c into outdir (never into the repository)."""
    out = Path(outdir) / "pcshim.so"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(out), str(SHIM_SRC), "-ldl"],
                   check=True, capture_output=True, text=True)
    return out


def shim_env(shim: Path, root: Path, log: Path) -> dict[str, str]:
    return {"LD_PRELOAD": str(shim), "PCSHIM_DIR": str(root), "PCSHIM_LOG": str(log)}


# ------------------------------------------------------------------------------- trace


@dataclasses.dataclass
class Rec:
    idx: int
    type: int
    flags: int
    ts: float  # CLOCK_MONOTONIC seconds
    pid: int
    opid: int
    fd: int
    aux: int
    off: int
    len: int
    result: int
    path: str
    data_off: int
    data_len: int


@dataclasses.dataclass
class Write:
    begin: int  # log index of the intent
    done: int | None  # log index of the done record, None if the caller never got back
    path: str
    off: int
    data_off: int  # into the log mapping
    length: int  # bytes the kernel reported written (full length if not done)
    dsync: bool
    ok: bool


@dataclasses.dataclass
class Trunc:
    begin: int
    done: int | None
    path: str
    size: int
    ok: bool


@dataclasses.dataclass
class Sync:
    begin: int
    done: int | None
    path: str
    kind: int
    ok: bool


class Trace:
    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self._f = open(self.log_path, "rb")
        size = os.fstat(self._f.fileno()).st_size
        self.buf = mmap.mmap(self._f.fileno(), size, prot=mmap.PROT_READ) if size else b""
        self.recs: list[Rec] = []
        pos = 0
        while pos + HDR.size <= size:
            (magic, typ, flags, ts, pid, _tid, opid, fd, aux, off, ln, result, plen, _hi, dlen) = HDR.unpack_from(self.buf, pos)
            if magic != MAGIC:
                raise ValueError(f"{log_path}: bad record at byte {pos}")
            end = pos + HDR.size + plen + dlen
            if end > size:
                break  # cannot happen with O_APPEND writev; tolerate a torn tail anyway
            path = bytes(self.buf[pos + HDR.size: pos + HDR.size + plen]).decode("utf-8", "replace")
            self.recs.append(Rec(len(self.recs), typ, flags, ts / 1e9, pid, opid, fd, aux, off, ln, result, path,
                                 pos + HDR.size + plen, dlen))
            pos = end
        self.ts = [r.ts for r in self.recs]
        self.writes: list[Write] = []
        self.truncs: list[Trunc] = []
        self.syncs: list[Sync] = []
        self.mmap_writable: set[str] = set()
        self.created: dict[str, int] = {}
        self.dirs: set[str] = set()
        open_ops: dict[tuple[int, int], object] = {}
        for r in self.recs:
            key = (r.pid, r.opid)
            if r.type == T_WRITE:
                w = Write(r.idx, None, r.path, r.off, r.data_off, r.data_len, bool(r.flags & F_DSYNC), True)
                self.writes.append(w)
                open_ops[key] = w
            elif r.type in (T_TRUNC, T_FALLOC):
                t = Trunc(r.idx, None, r.path, r.len if r.type == T_TRUNC else r.off + r.len, True)
                if r.type == T_TRUNC:
                    self.truncs.append(t)
                open_ops[key] = t
            elif r.type == T_SYNC:
                s = Sync(r.idx, None, r.path, r.aux, True)
                self.syncs.append(s)
                open_ops[key] = s
            elif r.type in (T_WRITE_DONE, T_TRUNC_DONE, T_FALLOC_DONE, T_SYNC_DONE):
                op = open_ops.pop(key, None)
                if op is None:
                    continue
                op.done = r.idx
                op.ok = r.result >= 0
                if isinstance(op, Write) and r.result >= 0:
                    op.length = min(op.length, r.result)
            elif r.type == T_MMAP_W:
                self.mmap_writable.add(r.path)
            elif r.type == T_OPEN:
                if r.flags & F_CREATED:
                    self.created.setdefault(r.path, r.idx)
                if r.flags & F_DIR:
                    self.dirs.add(r.path)
        self.dir_syncs = [s for s in self.syncs if s.path in self.dirs and s.done is not None]
        self.files = sorted({w.path for w in self.writes} | {t.path for t in self.truncs})

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self._f.close()

    def __len__(self) -> int:
        return len(self.recs)

    def index_at(self, t_mono: float) -> int:
        """The first log index whose record was stamped at or after t_mono."""
        return bisect.bisect_left(self.ts, t_mono)

    def interesting_points(self) -> list[int]:
        """Log positions where a power cut hurts most: just before a sync completes, just
        after a synchronous (meta page) write, in the middle of a multi-page write."""
        pts = []
        for s in self.syncs:
            if s.done is not None:
                pts += [s.done, s.begin + 1]
        for w in self.writes:
            if w.dsync and w.done is not None:
                pts += [w.begin + 1, w.done + 1]
            elif w.done is not None and w.length > 4096:
                pts.append(w.begin + 1)
        return sorted({p for p in pts if 0 < p <= len(self.recs)})

    # ------------------------------------------------------------------ crash states

    def _barrier(self, path: str, p: int) -> int:
        """Begin index of the latest full sync of `path` that completed before p (-1: none)."""
        best = -1
        for s in self.syncs:
            if s.done is None or s.done >= p or not s.ok or s.kind not in BARRIER_KINDS:
                continue
            if s.path == path or (s.kind in (S_SYNCFS, S_SYNC) and path.startswith(s.path)):
                best = max(best, s.begin)
        return best

    def split(self, path: str, p: int) -> tuple[list, list]:
        """(durable, pending) operations on `path` for a power cut at log position p."""
        barrier = self._barrier(path, p)
        durable: list = []
        pending: list = []
        for op in [w for w in self.writes if w.path == path] + [t for t in self.truncs if t.path == path]:
            if op.begin >= p:
                continue
            completed = op.done is not None and op.done < p
            if completed and not op.ok:
                continue  # the call failed: nothing written
            if completed and (op.done < barrier or (isinstance(op, Write) and op.dsync)):
                durable.append(op)
            else:
                pending.append(op)
        durable.sort(key=lambda o: o.begin)
        pending.sort(key=lambda o: o.begin)
        return durable, pending

    def materialize(self, path: str, p: int, variant: str, rng: random.Random) -> tuple[bytes, dict]:
        """The content of `path` after a power cut at p, under one disk behaviour."""
        durable, pending = self.split(path, p)
        if variant == "none":
            chosen = []
        elif variant in ("all", "torn512", "torn4k"):
            chosen = list(pending)
        elif variant in ("subset", "subset2", "reorder"):
            chosen = [op for op in pending if rng.random() < 0.5]
        elif variant == "prefix":
            chosen = pending[: rng.randint(0, len(pending))]
        else:
            raise ValueError(variant)
        gran = {"torn512": 512, "torn4k": 4096}.get(variant)
        if variant == "reorder":
            rng.shuffle(chosen)
            plan = [(op, True) for op in durable] + [(op, False) for op in chosen]
        else:
            plan = sorted([(op, True) for op in durable] + [(op, False) for op in chosen], key=lambda x: x[0].begin)
        content = bytearray()
        pieces = 0
        for op, is_durable in plan:
            if isinstance(op, Trunc):
                if op.size < len(content):
                    del content[op.size:]
                else:
                    content.extend(b"\0" * (op.size - len(content)))
                continue
            data = self.buf[op.data_off: op.data_off + op.length]
            end = op.off + op.length
            if end > len(content):
                content.extend(b"\0" * (end - len(content)))  # size may reach the disk without the data
            # never let a pending write overwrite a durable write issued after it
            masks = [] if is_durable else [(d.off, d.off + d.length) for d in durable
                                           if isinstance(d, Write) and d.begin > op.begin and d.off < end and d.off + d.length > op.off]
            ranges = [(op.off, end)]
            if gran:
                ranges = []
                s = op.off
                while s < end:
                    e = min(end, (s // gran + 1) * gran)
                    if is_durable or rng.random() < 0.5:
                        ranges.append((s, e))
                    s = e
            for s, e in ranges:
                for ms, me in masks:
                    if ms < e and me > s:
                        # keep the parts outside the mask
                        if s < ms:
                            content[s:ms] = data[s - op.off: ms - op.off]
                        if me < e:
                            content[me:e] = data[me - op.off: e - op.off]
                        break
                else:
                    content[s:e] = data[s - op.off: e - op.off]
                pieces += 1
        info = {"durable": len(durable), "pending": len(pending), "chosen": len(chosen), "pieces": pieces,
                "size": len(content)}
        return bytes(content), info


def reconstruct(trace: Trace, root: Path, p: int, variant: str, seed: int, dest_root: Path,
                skip_names: Iterable[str] = ("lock.mdb",), only_under: str = "") -> dict:
    """Write the post-power-cut state of every traced file under `root` to `dest_root`.

    LMDB's lock.mdb is not rebuilt: it holds only the reader table, lives in a shared
    mapping (not recorded) and is re-initialised by the first process that opens the
    environment after a reboot."""
    rng = random.Random(f"{seed}-{p}-{variant}")
    root = str(root)
    infos = {}
    for path in trace.files:
        rel = os.path.relpath(path, root)
        if rel.startswith("..") or os.path.basename(path) in skip_names or not rel.startswith(only_under):
            continue
        if path in trace.mmap_writable:
            raise AssertionError(f"{path} was written through a shared writable mapping: the trace cannot see those stores")
        first = min([w.begin for w in trace.writes if w.path == path] + [t.begin for t in trace.truncs if t.path == path])
        if first >= p:
            continue
        content, info = trace.materialize(path, p, variant, rng)
        out = Path(dest_root) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
        infos[rel] = info
    return infos


# ------------------------------------------------------------------------------- checking


@dataclasses.dataclass
class Outcome:
    point: int
    variant: str
    status: str  # "ok" | "refused" | "FAIL"
    detail: str
    acked: int
    present: int
    info: dict


def check_queue(data_dir: Path, max_bytes: int, acked: list[bytes], published: set[bytes] | None) -> tuple[str, str, int]:
    """Open the reconstructed queue as the agent would and check the promise.

    Returns (status, detail, records present).  "refused" = QueueOpenError (loud, allowed by
    the invariant "never silently wrong"); anything silently wrong is "FAIL"."""
    from edgefwd import _core
    from edgefwd.errors import QueueOpenError
    from edgefwd.queue import COUNTER_NAMES, Queue

    try:
        q = Queue(data_dir, max_bytes)
    except QueueOpenError as exc:
        return "refused", f"QueueOpenError: {exc}", 0
    except Exception as exc:  # noqa: BLE001 - anything but the clear error is a failure
        return "FAIL", f"open raised {type(exc).__name__}: {exc}", 0
    problems: list[str] = []
    try:
        payloads: list[bytes] = []
        seqs: list[int] = []
        n_bytes = 0
        after = 0
        while True:
            batches = q.read_batches(after, 256)
            if not batches:
                break
            for b in batches:
                after = b.id
                n_bytes += len(b.data)
                try:
                    _boot, records = _core.decode_batch(bytes(b.data))
                except _core.CorruptBatchError as exc:
                    problems.append(f"batch {b.id} corrupt: {exc}")
                    continue
                for rec in records:
                    seqs.append(rec[0])
                    payloads.append(bytes(rec[10]))
        c = q.counters()
        dead = q.dead_letters(1000)
    finally:
        q.close()
    counts: dict[bytes, int] = {}
    for pl in payloads:
        counts[pl] = counts.get(pl, 0) + 1
    missing = [a for a in acked if a not in counts]
    if missing:
        problems.append(f"{len(missing)} of {len(acked)} acked messages missing, e.g. {missing[:3]!r}")
    dups = [pl for pl, n in counts.items() if n > 1]
    if dups:
        problems.append(f"{len(dups)} messages stored more than once, e.g. {dups[:3]!r}")
    if published is not None:
        alien = [pl for pl in counts if pl not in published]
        if alien:
            problems.append(f"{len(alien)} stored payloads were never published, e.g. {alien[:3]!r}")
    if any(b <= a for a, b in zip(seqs, seqs[1:])):
        problems.append("seq not strictly increasing in batch order")
    dropped = c["dropped.queue_full"] + c["dropped.expired"]
    if c["received"] != c["forwarded"] + c["stored_records"] + c["dead_lettered"] + dropped:
        problems.append(f"counters do not balance: {c}")
    if c["stored_records"] != len(payloads):
        problems.append(f"stored_records={c['stored_records']} but {len(payloads)} records in the batches")
    if c["stored_bytes"] != n_bytes:
        problems.append(f"stored_bytes={c['stored_bytes']} but the batches hold {n_bytes}")
    if dead:
        problems.append(f"{len(dead)} dead letters after a power cut: {[d[1] for d in dead[:3]]}")
    assert set(COUNTER_NAMES) <= set(c)
    return ("FAIL" if problems else "ok"), "; ".join(problems), len(payloads)


class CheckWorker:
    """Runs check_queue in a separate Python process, as the agent would open the queue.

    LMDB maps the file: a damaged one can kill the opener with SIGBUS/SIGSEGV, which must
    not take the test runner down - and which is itself a finding (the agent would crash at
    start instead of refusing with a clear error).  The worker is restarted after a crash."""

    def __init__(self, scratch: Path):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self._published_path: Path | None = None
        self._published_id: int | None = None

    def _start(self) -> None:
        root = HERE.parents[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(root / "python"), os.environ.get("PYTHONPATH", "")]))
        env.pop("LD_PRELOAD", None)
        self.proc = subprocess.Popen([sys.executable, "-c", "import pcut; pcut._worker_main()"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, cwd=str(self.scratch))

    def check(self, data_dir: Path, max_bytes: int, acked: list[bytes], published: set[bytes] | None) -> tuple[str, str, int]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        if published is not None and id(published) != self._published_id:
            self._published_path = self.scratch / "published.pickle"
            self._published_path.write_bytes(pickle.dumps(published))
            self._published_id = id(published)
        req = self.scratch / "request.pickle"
        req.write_bytes(pickle.dumps((str(data_dir), max_bytes, acked,
                                      str(self._published_path) if published is not None else None)))
        self.proc.stdin.write(str(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            return "FAIL", f"the process opening the queue died (exit {rc}, signal {-rc if rc < 0 else None})", 0
        status, detail, present = json.loads(line)
        return status, detail, present

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(10)


def _worker_main() -> None:
    cache: dict[str, set] = {}
    for line in sys.stdin:
        data_dir, max_bytes, acked, pub_path = pickle.loads(Path(line.strip()).read_bytes())
        published = None
        if pub_path:
            if pub_path not in cache:
                cache.clear()
                cache[pub_path] = pickle.loads(Path(pub_path).read_bytes())
            published = cache[pub_path]
        try:
            res = check_queue(Path(data_dir), max_bytes, acked, published)
        except Exception as exc:  # noqa: BLE001 - an lmdb error after a successful open: silent damage
            res = ("FAIL", f"reading the queue raised {type(exc).__name__}: {exc}", 0)
        sys.stdout.write(json.dumps(list(res)) + "\n")
        sys.stdout.flush()


def replay_point(trace: Trace, root: Path, queue_rel: str, p: int, acked: list[bytes], published: set[bytes] | None,
                 scratch: Path, max_bytes: int, seed: int, variants: Iterable[str] = VARIANTS,
                 worker: CheckWorker | None = None) -> list[Outcome]:
    out = []
    own = worker is None
    worker = worker or CheckWorker(scratch)
    for variant in variants:
        dest = scratch / f"p{p}-{variant}"
        shutil.rmtree(dest, ignore_errors=True)
        info = reconstruct(trace, root, p, variant, seed, dest, only_under=queue_rel.rstrip("/") + "/")
        (dest / queue_rel).mkdir(parents=True, exist_ok=True)
        status, detail, present = worker.check(dest, max_bytes, acked, published)
        out.append(Outcome(p, variant, status, detail, len(acked), present, info))
        shutil.rmtree(dest, ignore_errors=True)
    if own:
        worker.close()
    return out


def pick_points(trace: Trace, n: int, rng: random.Random, must: Iterable[int] = ()) -> list[int]:
    """`n` crash points: the given ones, half of the rest at interesting places, half uniform."""
    pts = set(must)
    interesting = trace.interesting_points()
    first_write = min((w.begin for w in trace.writes), default=0)
    while len(pts) < n and len(trace) > first_write + 1:
        if interesting and rng.random() < 0.5:
            pts.add(rng.choice(interesting))
        else:
            pts.add(rng.randint(first_write + 1, len(trace)))
    return sorted(pts)


def summarize(outcomes: list[Outcome]) -> str:
    by: dict[tuple[str, str], int] = {}
    for o in outcomes:
        by[(o.variant, o.status)] = by.get((o.variant, o.status), 0) + 1
    points = len({o.point for o in outcomes})
    lines = [f"{len(outcomes)} replays at {points} crash points"]
    for v in VARIANTS:
        row = {s: by.get((v, s), 0) for s in ("ok", "refused", "FAIL")}
        if any(row.values()):
            lines.append(f"  {v:8s} ok={row['ok']} refused={row['refused']} FAIL={row['FAIL']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- MQTT proxy


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    mult, value = 1, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + i + 1
        mult *= 128
    raise ValueError("malformed remaining length")


class AckProxy:
    """A TCP proxy between the agent and Mosquitto that watches the MQTT packets.

    The fleet publisher's PUBACKs come from Mosquitto when *it* has the message: they say
    nothing about edgefwd's disk.  What edgefwd promises is about *its* PUBACKs to the
    broker.  The proxy remembers each PUBLISH the broker sends (packet id -> topic,
    payload) before forwarding it, and records every PUBACK the agent sends, with the
    CLOCK_MONOTONIC time it arrived, before forwarding it.  A PUBACK seen here was sent, so
    (invariant 1) the commit holding its message had completed its fsync before."""

    def __init__(self, upstream_port: int, protocol: str = "5"):
        self.upstream = ("127.0.0.1", upstream_port)
        self.v5 = protocol == "5"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.acks: list[tuple[float, str, bytes]] = []  # (monotonic time, topic, payload)
        self.delivered = 0
        self.unknown_acks = 0
        self._conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="ackproxy").start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns += [client, upstream]
            inflight: dict[int, tuple[str, bytes]] = {}
            threading.Thread(target=self._pump, args=(upstream, client, inflight, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, inflight, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inflight: dict, from_broker: bool) -> None:
        buf = b""
        try:
            while True:
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                pos = 0
                while True:
                    if pos + 2 > len(buf):
                        break
                    rl = _varint(buf, pos + 1)
                    if rl is None:
                        break
                    length, body = rl
                    if body + length > len(buf):
                        break
                    self._packet(buf[pos], buf[body: body + length], inflight, from_broker)
                    pos = body + length
                if pos:
                    dst.sendall(buf[:pos])  # forward whole packets only, after recording them
                    buf = buf[pos:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _packet(self, first: int, body: bytes, inflight: dict, from_broker: bool) -> None:
        ptype = first >> 4
        if from_broker and ptype == 3:
            qos = (first >> 1) & 3
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2: 2 + tlen].decode("utf-8", "replace")
            pos = 2 + tlen
            if qos == 0:
                return
            mid = int.from_bytes(body[pos: pos + 2], "big")
            pos += 2
            if self.v5:
                plen, pos = _varint(body, pos)
                pos += plen
            with self.lock:
                inflight[mid] = (topic, bytes(body[pos:]))
                self.delivered += 1
        elif not from_broker and ptype == 4:
            mid = int.from_bytes(body[:2], "big")
            t = time.monotonic()
            with self.lock:
                msg = inflight.pop(mid, None)
                if msg is None:
                    self.unknown_acks += 1
                else:
                    self.acks.append((t, msg[0], msg[1]))

    def acked_before(self, t_mono: float | None = None) -> list[bytes]:
        with self.lock:
            return [pl for t, _topic, pl in self.acks if t_mono is None or t < t_mono]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for s in self._conns:
            try:
                s.close()
            except OSError:
                pass

"""Where the bytes written per payload byte go: edgefwd's Queue.commit_ingest alone (no
broker, no drainer), group commits of 200-byte payloads, /proc/self/io write_bytes per commit.

Variants change one thing at a time: messages per commit (100 / 250 / 500), whether the
commit carries the per-message packet-id entries (the `mids` table that recognises broker
redeliveries; "no_mids" passes none, as a what-if), and queue.compression (none/lz4/zstd).
Each variant commits `-n` messages into a fresh queue; the figure of the second half (the
`mids` table full, its keys being overwritten) is reported beside the whole run.

    .venv/bin/python bench/bench_queue_writes.py            # 150k messages per variant (~30 s)
    .venv/bin/python bench/bench_queue_writes.py --short    # 20k (~5 s)

Writes bench/results/queue_writes.json (schema of bench/common.py; results[variant][metric]).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import log, make_payloads, new_doc, summarize, write_doc  # noqa: E402

PAGE = 4096


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes"):
                return int(line.split(":")[1])
    return 0


def run(workdir: Path, n: int, per_commit: int, mids: bool, compression: str, size: int) -> dict:
    from edgefwd import _core
    from edgefwd.queue import NewBatch, Queue

    q = Queue(workdir, 1 << 30)
    payloads = make_payloads(size, 256)
    boot = bytes(16)
    seq = number = 0
    mid = 1
    commits = n // per_commit
    w_start = w_half = write_bytes()
    t0 = time.perf_counter()
    encoded = 0
    for c in range(commits):
        if c == commits // 2:
            w_half = write_bytes()
        records, entries = [], []
        for _ in range(per_commit):
            seq += 1
            number += 1
            p = payloads[seq % len(payloads)]
            dev = f"dev{seq % 100:03d}"
            records.append((seq, 1795600000000 + seq, 1, True, 1, False, 0, "bench", dev.encode(),
                            f"bench/{dev}/telemetry", p, []))
            if mids:
                entries.append((mid, hashlib.blake2b(p, digest_size=8).digest(), number))
            mid = mid % 65535 + 1
        data = _core.encode_batch(records, boot, compression)
        encoded += len(data)
        q.commit_ingest([NewBatch(0, data, per_commit)], seq + 1, entries, [], {"messages": per_commit}, "drop_oldest")
    elapsed = time.perf_counter() - t0
    w_end = write_bytes()
    q.close()
    payload = commits * per_commit * size
    half = commits - commits // 2
    return {
        "messages_per_commit": per_commit,
        "encoded_per_payload_byte": round(encoded / payload, 4),
        "write_bytes_per_commit": round((w_end - w_start) / commits),
        "pages_per_commit": round((w_end - w_start) / commits / PAGE, 2),
        "write_bytes_per_payload_byte": round((w_end - w_start) / payload, 4),
        "write_bytes_per_payload_byte_second_half": round((w_end - w_half) / (half * per_commit * size), 4),
        "commits_per_s": round(commits / elapsed),
    }


VARIANTS = [
    # (name, per_commit, mids, compression)
    ("c100", 100, True, "none"),
    ("c250", 250, True, "none"),
    ("c500", 500, True, "none"),
    ("c250_no_mids", 250, False, "none"),
    ("c250_lz4", 250, True, "lz4"),
    ("c250_lz4_no_mids", 250, False, "lz4"),
    ("c250_zstd", 250, True, "zstd"),
    ("c250_zstd_no_mids", 250, False, "zstd"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true")
    ap.add_argument("-n", type=int)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    n = a.n or (20_000 if a.short else 150_000)
    rounds = a.rounds or (1 if a.short else 2)
    doc = new_doc("queue_writes", a.short, {
        "n": n, "payload_bytes": a.size, "rounds": rounds, "variants": [v[0] for v in VARIANTS],
        "method": "Queue.commit_ingest in a loop (one route, one batch per commit), fresh queue per variant "
                  "on ext4 under /tmp; write_bytes from /proc/self/io; LMDB sync+metasync as the agent opens it",
    })
    per_variant: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="edgefwd-bench-qw-") as tmp:
        for rnd in range(1, rounds + 1):
            for name, per_commit, mids, comp in VARIANTS:
                res = run(Path(tmp) / f"{name}-{rnd}", n, per_commit, mids, comp, a.size)
                res.update(variant=name, round=rnd, mids=mids, compression=comp)
                doc["runs"].append(res)
                per_variant.setdefault(name, []).append(res)
                log(f"round {rnd} {name:18s} pages/commit={res['pages_per_commit']:6.1f} "
                    f"wb/pb={res['write_bytes_per_payload_byte']:.2f} (2nd half {res['write_bytes_per_payload_byte_second_half']:.2f}) "
                    f"encoded/pb={res['encoded_per_payload_byte']:.2f}")
    for name, runs in per_variant.items():
        doc["results"][name] = {
            k: summarize([r[k] for r in runs])
            for k in ("pages_per_commit", "write_bytes_per_payload_byte", "write_bytes_per_payload_byte_second_half",
                      "encoded_per_payload_byte", "commits_per_s")
        }
    med = {k: v["write_bytes_per_payload_byte"]["median"] for k, v in doc["results"].items()}
    doc["ratios"] = {
        "no_mids/with_mids (250, none)": round(med["c250_no_mids"] / med["c250"], 3),
        "zstd/none (250, mids)": round(med["c250_zstd"] / med["c250"], 3),
        "zstd_no_mids/none_mids (250)": round(med["c250_zstd_no_mids"] / med["c250"], 3),
    }
    path = write_doc(doc, a.out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Assertions shared by the end-to-end tests: what a consumer of the Kafka topics would see."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from edgefwd_dev.services import KafkaRecord


def message_id(payload: bytes) -> tuple[str, int]:
    doc = json.loads(payload)
    return doc["device"], doc["n"]


def audit(acked: list[tuple[str, bytes]], records: list[KafkaRecord]) -> dict:
    """Compare what the publisher got PUBACKs for with what a topic holds.

    Returns lost (acked, not in Kafka), duplicates (extra copies), and order violations:
    per key, in partition-offset order, the first copies of a device's messages must have
    increasing per-device counters.
    """
    wanted = {message_id(p) for _, p in acked}
    got = Counter(message_id(r.value) for r in records)
    lost = wanted - set(got)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    by_key: dict[tuple[int, bytes | None], list[KafkaRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[(r.partition, r.key)].append(r)
    order_violations = 0
    examples: list[str] = []
    for rs in by_key.values():
        seen: set[tuple[str, int]] = set()
        last: dict[str, int] = {}
        last_seq: dict[str, bytes | None] = {}
        for r in rs:
            mid = message_id(r.value)
            if mid in seen:
                continue  # a duplicate copy: counted above, not an order violation
            seen.add(mid)
            device, n = mid
            if device in last and n < last[device]:
                order_violations += 1
                examples.append(f"{device}: n={n} (edgefwd.seq {r.headers.get('edgefwd.seq')!r}, offset {r.offset}) "
                                f"after n={last[device]} (edgefwd.seq {last_seq[device]!r})")
            last[device] = n
            last_seq[device] = r.headers.get("edgefwd.seq")
    # edgefwd's own promise: per key, Kafka's order is the order of arrival at the gateway
    # (edgefwd.seq). The publisher's counter n can be reordered upstream of edgefwd, e.g. by
    # a device's own resends after a broker restart.
    seq_order_violations = 0
    for rs in by_key.values():
        seqs = [int(r.headers["edgefwd.seq"]) for r in rs]
        seq_order_violations += sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
    return {"seq_order_violations": seq_order_violations, "lost": sorted(lost)[:20], "lost_count": len(lost), "duplicates": duplicates,
            "order_violations": order_violations, "order_examples": examples[:5], "records": len(records),
            "acked": len(wanted)}

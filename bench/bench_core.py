"""Benchmarks of edgefwd._core through the Python binding.

Measures what the agent pays per call from Python: routing (10 / 1,000 / 10,000 filters),
batch encode / decode / decode_for_produce for 200 B and 2 KiB payloads (MB/s and
messages/s), the fixed overhead of one call per batch, and a profile of the drainer's
inner loop (decode_for_produce + confluent_kafka Producer.produce per record) that shows
where the time goes.

Usage: .venv/bin/python bench/bench_core.py [--quick] [--out bench/results/python_core.json]
Timings are best-of-N wall clock on a shared machine: compare runs on one machine only.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import sys
import time
from pathlib import Path

from edgefwd import _core as c

ROOT = Path(__file__).resolve().parent.parent
BOOT = bytes(range(16))


def best_ns(fn, repeat: int, number: int = 1) -> float:
    """Best time of one call of fn, in ns, over `repeat` rounds of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / number)
    return best


def filters(n: int) -> list[str]:
    out = []
    for i in range(n):
        out.append(
            [
                f"vehicles/v{i}/telemetry/#",
                f"vehicles/v{i}/alarms",
                f"site/s{i}/+/temperature",
                f"+/dev{i}/status",
            ][i % 4]
        )
    return out


def topics(n: int, rng: random.Random, count: int = 1024) -> list[str]:
    out = []
    for _ in range(count):
        i = rng.randrange(max(n, 1) * 2)
        out.append(
            rng.choice(
                [
                    f"vehicles/v{i}/telemetry/engine/temp",
                    f"vehicles/v{i}/alarms",
                    f"site/s{i}/room{rng.randrange(10)}/temperature",
                    f"gw/dev{i}/status",
                ]
            )
        )
    return out


def bench_routing(repeat: int) -> list[dict]:
    results = []
    rng = random.Random(1)
    for n in (10, 1_000, 10_000):
        routes = [(f, "telemetry.${gateway_id}", "${topic}") for f in filters(n)]
        t0 = time.perf_counter_ns()
        router = c.Router(routes, "gw")
        build_ns = time.perf_counter_ns() - t0
        ts = topics(n, rng)
        msgs = [(t, b"{}") for t in ts]
        many = best_ns(lambda: router.route_many(msgs), repeat)
        single = best_ns(lambda: [router.route(t, b"{}") for t in ts], repeat)
        match_only = best_ns(lambda: [router.matching_routes(t) for t in ts], repeat)
        results.append(
            {
                "filters": n,
                "router_build_ms": build_ns / 1e6,
                "route_many_ns_per_msg": many / len(ts),
                "route_ns_per_call": single / len(ts),
                "matching_routes_ns_per_call": match_only / len(ts),
            }
        )
    return results


def make_records(payload: int, count: int) -> list[tuple]:
    rng = random.Random(2)
    text = b'{"temp": 21.5, "rpm": 3000, "ok": true, "vin": "WDB1234567"}'
    recs = []
    for i in range(count):
        body = bytes(text[(k + rng.randrange(3)) % len(text)] for k in range(payload))
        recs.append(
            (
                i,
                1_700_000_000_000 + i,
                5_000_000_000 + i * 1000,
                True,
                1,
                False,
                i % 4,
                "telemetry",
                f"v{i % 50}".encode(),
                f"vehicles/v{i % 50}/telemetry/engine",
                body,
                [],
            )
        )
    return recs


def bench_codec(repeat: int) -> list[dict]:
    results = []
    for payload, count in ((200, 1000), (2048, 250)):
        recs = make_records(payload, count)
        payload_bytes = sum(len(r[10]) for r in recs)
        for comp in ("none", "lz4", "zstd"):
            data = c.encode_batch(recs, BOOT, comp)
            enc = best_ns(lambda: c.encode_batch(recs, BOOT, comp), repeat)
            dec = best_ns(lambda: c.decode_batch(data), repeat)
            prod = best_ns(lambda: c.decode_for_produce(data, "truck-0042", "epoch-1"), repeat)
            row = {
                "payload_bytes": payload,
                "records_per_batch": count,
                "compression": comp,
                "batch_bytes": len(data),
                "stored_ratio": len(data) / (payload_bytes or 1),
            }
            for name, ns in (("encode_batch", enc), ("decode_batch", dec), ("decode_for_produce", prod)):
                row[name] = {
                    "ns_per_batch": ns,
                    "ns_per_msg": ns / count,
                    "msgs_per_s": count / ns * 1e9,
                    "payload_mb_per_s": payload_bytes / ns * 1e3,
                }
            results.append(row)
    return results


def bench_call_overhead(repeat: int) -> dict:
    one = make_records(200, 1)
    data1 = c.encode_batch(one, BOOT)
    empty = c.encode_batch([], BOOT)
    router = c.Router([("a/+", "t", None)], "gw")
    return {
        "note": "fixed cost of one call from Python, in ns (tiny inputs)",
        "batch_record_count": best_ns(lambda: c.batch_record_count(data1), repeat, 2000),
        "decode_for_produce_empty_batch": best_ns(lambda: c.decode_for_produce(empty, "gw", "ep"), repeat, 2000),
        "decode_for_produce_1_record": best_ns(lambda: c.decode_for_produce(data1, "gw", "ep"), repeat, 2000),
        "decode_batch_1_record": best_ns(lambda: c.decode_batch(data1), repeat, 2000),
        "encode_batch_1_record": best_ns(lambda: c.encode_batch(one, BOOT), repeat, 2000),
        "route_many_1_message": best_ns(lambda: router.route_many([("a/b", b"")]), repeat, 2000),
        "topic_matches": best_ns(lambda: c.topic_matches("a/+", "a/b"), repeat, 2000),
    }


def drainer_profile(batches: int) -> dict:
    """The drainer's hot loop against a real librdkafka producer (its local queue; the
    broker address is a closed loopback port, so nothing leaves the machine)."""
    try:
        from confluent_kafka import Producer
    except ImportError:  # pragma: no cover - the dev venv has it
        return {"skipped": "confluent_kafka not installed"}
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "log_level": 0,
            "reconnect.backoff.ms": 10_000,
        }
    )
    data = c.encode_batch(make_records(200, 1000), BOOT, "lz4")

    def drain_once() -> None:
        for topic, value, key, ts, headers in c.decode_for_produce(data, "truck-0042", "epoch-1"):
            producer.produce(topic, value, key, timestamp=ts, headers=headers)

    drain_once()  # warm up
    prof = cProfile.Profile()
    t0 = time.perf_counter_ns()
    prof.enable()
    for _ in range(batches):
        drain_once()
    prof.disable()
    wall = time.perf_counter_ns() - t0
    producer.purge()
    producer.flush(0)
    stats = pstats.Stats(prof)
    by_name: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_name[f"{Path(file).name}:{func}" if file != "~" else func] = tt
    total = sum(by_name.values()) or 1.0
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
    decode_s = sum(v for k, v in by_name.items() if "decode_for_produce" in k)
    produce_s = sum(v for k, v in by_name.items() if "produce" in k and "decode_for_produce" not in k)
    n = batches * 1000
    return {
        "records": n,
        "wall_ns_per_record_profiled": wall / n,
        "decode_for_produce_share": decode_s / total,
        "producer_produce_share": produce_s / total,
        "python_loop_share": 1 - (decode_s + produce_s) / total,
        "top_self_time_s": top,
        "unprofiled_ns_per_record": best_ns(drain_once, 3) / 1000,
        "decode_only_ns_per_record": best_ns(lambda: c.decode_for_produce(data, "truck-0042", "epoch-1"), 5) / 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "python_core.json"))
    args = ap.parse_args()
    repeat = 3 if args.quick else 10
    doc = {
        "tool": "bench/bench_core.py",
        "edgefwd_core_version": c.__version__,
        "python": sys.version.split()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "unix_time": int(time.time()),
        "routing": bench_routing(repeat),
        "codec": bench_codec(repeat),
        "call_overhead_ns": bench_call_overhead(repeat),
        "drainer_profile": drainer_profile(5 if args.quick else 20),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(doc, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

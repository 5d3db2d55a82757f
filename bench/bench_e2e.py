"""End to end, MQTT -> Kafka, messages per second: edgefwd (the real agent, `edgefwd run`)
against a do-it-yourself paho -> confluent-kafka bridge with no disk queue, both draining the
same N QoS 1 messages from the same Mosquitto into the same Kafka, in the same run.

Modes:
  live     the consumer is connected; a publisher (its own process) then sends N as fast as
           paho can. Rate = N / (last record acknowledged by Kafka - first publish).
  catchup  the broker already holds N for the consumer's persistent session (it was away);
           the consumer starts and drains. Rate over first-to-last record.

    .venv/bin/python bench/bench_e2e.py            # default: 100k x 200 B, 3 rounds (~4 min)
    .venv/bin/python bench/bench_e2e.py --short    # CI: 5k, 1 round, MQTT 5, live (~30 s)

Writes bench/results/e2e.json (e2e_short.json for --short); schema in bench/common.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PRODUCER_PROPS, Bench, Brokers, add_ratio, aggregate, log, new_doc, run_rounds, write_and_report,
)

VARIANTS = ["edgefwd", "diy_bridge"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="small counts for CI")
    ap.add_argument("-n", type=int, help="messages per run")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--protocols", default=None, help="comma list of 5,3.1.1")
    ap.add_argument("--modes", default=None, help="comma list of live,catchup")
    ap.add_argument("--out", help="output JSON path")
    a = ap.parse_args(argv)
    n = a.n or (5_000 if a.short else 100_000)
    rounds = a.rounds or (1 if a.short else 3)
    protocols = (a.protocols or ("5" if a.short else "5,3.1.1")).split(",")
    modes = (a.modes or ("live" if a.short else "live,catchup")).split(",")

    with tempfile.TemporaryDirectory(prefix="edgefwd-bench-e2e-") as tmp:
        work = Path(tmp)
        log(f"starting Mosquitto and Kafka in {work}")
        with Brokers(work) as brokers:
            brokers.kafka.create_topic("bench", partitions=3)
            settings = {
                "n": n, "payload_bytes": a.size, "devices": a.devices, "qos": 1, "rounds": rounds,
                "protocols": protocols, "modes": modes, "variants": VARIANTS,
                **brokers.settings(),
                "kafka_topic": {"name": "bench", "partitions": 3, "key": "device id"},
                "agent": {"queue": "defaults (commit_max_messages 500, commit_max_delay 20ms, compression zstd, "
                                   "sync+metasync)", "producer": "edgefwd defaults (acks=all, idempotent, lz4, linger.ms 5)",
                          "layout": "agent process (ingest) + drainer child process"},
                "diy_producer": PRODUCER_PROPS,
                "diy_ack": "paho auto-ack QoS 1 (PUBACK when on_message returns; no headers, no disk)",
                "method": "rates from wall-clock: edgefwd from its LMDB counters polled every 10 ms by the "
                          "bench process; DIY from its own delivery-report times; publisher in its own process",
            }
            doc = new_doc("e2e", a.short, settings)
            bench = Bench(brokers, work, n, a.size, a.devices, "e2e")
            run_rounds(bench, doc, VARIANTS, protocols, modes, rounds)
    aggregate(doc, ["e2e_rate", "ingest_rate", "publisher_rate", "rss_max_mb.main", "rss_max_mb.drainer",
                    "rss_max_mb.process", "write_bytes_per_payload_byte.total"])
    add_ratio(doc, "edgefwd/diy_bridge", ("edgefwd", "e2e_rate"), ("diy_bridge", "e2e_rate"))
    write_and_report(doc, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

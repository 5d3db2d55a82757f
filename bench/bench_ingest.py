"""Durable ingest against a bare paho subscriber, threads against processes, and bytes written
to disk per payload byte, all in one run against the same Mosquitto (and Kafka).

Variants, each draining the same N QoS 1 messages that the broker holds for its persistent
session (mode "catchup"; "live" = the publisher runs concurrently, optional):
  bare_paho            paho, manual ack right away, nothing else: the receive ceiling
  edgefwd              the agent as shipped (`edgefwd run`): ingest in the agent process,
                       drainer in a child process, draining to Kafka concurrently
  edgefwd_threads      edgefwd's Queue + Ingest + Drainer in ONE process, the drainer on a
                       thread (the layout issue 2 asked to measure against processes)
  edgefwd_ingest_only  Queue + Ingest alone, no drainer: the cost of persist+ack by itself
  edgefwd+none         the agent with queue.compression: none (any variant takes +none/+lz4/+zstd)

Ingest rate = records committed to LMDB (and so acked) per second, from the queue's own
counters polled every 10 ms by this process. Bytes written: /proc/PID/io write_bytes of each
process (the agent or the single process; the drainer process separately), divided by the
payload bytes (N x size).

    .venv/bin/python bench/bench_ingest.py            # default: 100k x 200 B, 3 rounds (~3 min)
    .venv/bin/python bench/bench_ingest.py --short    # CI: 5k, 1 round, MQTT 5 (~20 s)

Writes bench/results/ingest.json (ingest_short.json for --short); schema in bench/common.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Bench, Brokers, add_ratio, aggregate, log, new_doc, run_rounds, write_and_report  # noqa: E402

VARIANTS = ["bare_paho", "edgefwd", "edgefwd_threads", "edgefwd_ingest_only", "edgefwd+none"]

METRICS = [
    "ingest_rate", "e2e_rate", "publisher_rate", "messages_per_commit", "main_write_bytes_per_commit",
    "write_bytes_per_payload_byte.main", "write_bytes_per_payload_byte.drainer",
    "write_bytes_per_payload_byte.total", "rss_max_mb.main", "rss_max_mb.drainer", "rss_max_mb.process",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="small counts for CI")
    ap.add_argument("-n", type=int, help="messages per run")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--protocols", default=None, help="comma list of 5,3.1.1")
    ap.add_argument("--modes", default="catchup", help="comma list of catchup,live")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", help="output JSON path")
    a = ap.parse_args(argv)
    n = a.n or (5_000 if a.short else 100_000)
    rounds = a.rounds or (1 if a.short else 3)
    protocols = (a.protocols or ("5" if a.short else "5,3.1.1")).split(",")
    modes = a.modes.split(",")
    variants = a.variants.split(",")

    with tempfile.TemporaryDirectory(prefix="edgefwd-bench-ingest-") as tmp:
        work = Path(tmp)
        log(f"starting Mosquitto and Kafka in {work}")
        with Brokers(work) as brokers:
            brokers.kafka.create_topic("bench", partitions=3)
            settings = {
                "n": n, "payload_bytes": a.size, "devices": a.devices, "qos": 1, "rounds": rounds,
                "protocols": protocols, "modes": modes, "variants": variants,
                **brokers.settings(),
                "agent": {"queue": "defaults (commit_max_messages 500, commit_max_delay 20ms, compression zstd, "
                                   "sync+metasync)", "data_dir": f"ext4 under {tmp}"},
                "method": "ingest rate from the LMDB counters polled every 10 ms by the bench process over "
                          "[first commit seen, N received]; bare paho from its own first/Nth message times; "
                          "write_bytes from /proc/PID/io (a new process starts at 0) read when all N were "
                          "received and forwarded",
            }
            doc = new_doc("ingest", a.short, settings)
            bench = Bench(brokers, work, n, a.size, a.devices, "ingest")
            run_rounds(bench, doc, variants, protocols, modes, rounds)
    aggregate(doc, METRICS)
    for v in ("edgefwd", "edgefwd_threads", "edgefwd_ingest_only", "edgefwd+none"):
        add_ratio(doc, f"{v}/bare_paho", (v, "ingest_rate"), ("bare_paho", "ingest_rate"))
    add_ratio(doc, "ingest: edgefwd_threads/edgefwd", ("edgefwd_threads", "ingest_rate"), ("edgefwd", "ingest_rate"))
    add_ratio(doc, "e2e: edgefwd_threads/edgefwd", ("edgefwd_threads", "e2e_rate"), ("edgefwd", "e2e_rate"))
    write_and_report(doc, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

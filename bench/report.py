"""Print the Markdown tables of bench/README.md from the latest results JSON.

    .venv/bin/python bench/report.py [bench/results/e2e.json] [bench/results/ingest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def fmt_rate(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f})"


def fmt_ratio(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['of_medians']:.2f} (rounds {s['min']:.2f}–{s['max']:.2f})"


def fmt_num(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "–"
    return f"{s['median']:.{digits}f}"


def header(doc: dict) -> str:
    v, m, st = doc["versions"], doc["machine"], doc["settings"]
    return (
        f"_{doc['bench']} ({doc['form']}), {doc['time']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"kernel {m['kernel']}, load {m['loadavg_start'][0]}→{m['loadavg_end'][0]}; Mosquitto {v['mosquitto']}, "
        f"Kafka {v['kafka']}, paho {v['paho_mqtt']}, confluent-kafka {v['confluent_kafka']}, "
        f"LMDB {v['lmdb']}; {st['n']:,} × {st['payload_bytes']} B QoS 1 over {st['devices']} topics, "
        f"{st['rounds']} rounds, median (min–max) msgs/s._"
    )


def e2e_table(doc: dict) -> str:
    rows = ["| MQTT | mode | edgefwd msgs/s | DIY bridge msgs/s | edgefwd / DIY |", "|---|---|---|---|---|"]
    for protocol, modes in doc["results"].items():
        for mode, vs in modes.items():
            ratio = doc["ratios"].get(protocol, {}).get(mode, {}).get("edgefwd/diy_bridge")
            rows.append(
                f"| {protocol} | {mode} | {fmt_rate(vs.get('edgefwd', {}).get('e2e_rate'))} | "
                f"{fmt_rate(vs.get('diy_bridge', {}).get('e2e_rate'))} | {fmt_ratio(ratio)} |"
            )
    return header(doc) + "\n\n" + "\n".join(rows)


def ingest_table(doc: dict) -> str:
    rows = [
        "| MQTT | variant | ingest msgs/s | / bare paho | end to end msgs/s | msgs per commit | "
        "written / payload byte: ingest + drainer = total | max RSS MB (main, drainer) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for protocol, modes in doc["results"].items():
        for mode, vs in modes.items():
            ratios = doc["ratios"].get(protocol, {}).get(mode, {})
            for variant, m in vs.items():
                wb = (
                    f"{fmt_num(m.get('write_bytes_per_payload_byte.main'))} + "
                    f"{fmt_num(m.get('write_bytes_per_payload_byte.drainer'))} = "
                    f"{fmt_num(m.get('write_bytes_per_payload_byte.total'))}"
                    if m.get("write_bytes_per_payload_byte.main") else "–"
                )
                rss = ", ".join(
                    fmt_num(m.get(k), 0) for k in ("rss_max_mb.main", "rss_max_mb.drainer", "rss_max_mb.process")
                    if m.get(k)
                )
                rows.append(
                    f"| {protocol} {mode} | {variant} | {fmt_rate(m.get('ingest_rate'))} | "
                    f"{fmt_ratio(ratios.get(f'{variant}/bare_paho')) if variant != 'bare_paho' else '1'} | "
                    f"{fmt_rate(m.get('e2e_rate'))} | {fmt_num(m.get('messages_per_commit'), 0)} | {wb} | {rss} |"
                )
            for name in ("ingest: edgefwd_threads/edgefwd", "e2e: edgefwd_threads/edgefwd"):
                if name in ratios:
                    rows.append(f"| {protocol} {mode} | **{name}** | {fmt_ratio(ratios[name])} | | | | | |")
    return header(doc) + "\n\n" + "\n".join(rows)


def queue_writes_table(doc: dict) -> str:
    rows = [
        f"_queue_writes ({doc['form']}), {doc['time']}: Queue.commit_ingest alone, {doc['settings']['n']:,} x "
        f"{doc['settings']['payload_bytes']} B per variant; write_bytes per payload byte (whole run / second half)._",
        "",
        "| variant | msgs per commit | packet-id entries | compression | encoded / payload | pages per commit "
        "| written / payload byte |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in doc["results"].items():
        run = next(r for r in doc["runs"] if r["variant"] == name)
        rows.append(
            f"| {name} | {run['messages_per_commit']} | {'yes' if run['mids'] else 'no'} | {run['compression']} | "
            f"{m['encoded_per_payload_byte']['median']:.2f} | {m['pages_per_commit']['median']:.1f} | "
            f"{m['write_bytes_per_payload_byte']['median']:.2f} / {m['write_bytes_per_payload_byte_second_half']['median']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or [
        RESULTS / "e2e.json", RESULTS / "ingest.json", RESULTS / "ingest_threads_vs_processes.json",
        RESULTS / "queue_writes.json",
    ]
    tables = {"e2e": e2e_table, "ingest": ingest_table, "queue_writes": queue_writes_table}
    for p in paths:
        if not p.exists():
            continue
        doc = json.loads(p.read_text())
        print(f"`{p.name}`\n")
        print(tables[doc["bench"]](doc))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Smoke test of the MQTT -> Kafka benchmarks: their short forms run to the end against real
brokers and write JSON in the schema of bench/common.py with positive rates.

No timing thresholds: the figures of a shared CI machine mean nothing on their own (see
bench/README.md for how the benchmarks are meant to be read).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench_common():
    """bench/common.py under a name of its own (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("edgefwd_bench_common", ROOT / "bench" / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_common = _bench_common()
REQUIRED_KEYS, SCHEMA = _common.REQUIRED_KEYS, _common.SCHEMA


def run_short(script: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--short", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def rates(doc: dict) -> dict[str, float]:
    """Every median *_rate in results, by protocol/mode/variant/metric."""
    out = {}
    for protocol, modes in doc["results"].items():
        for mode, variants in modes.items():
            for variant, metrics in variants.items():
                for metric, summary in metrics.items():
                    if metric.endswith("_rate"):
                        out[f"{protocol}/{mode}/{variant}/{metric}"] = summary["median"]
    return out


def check_schema(doc: dict, bench: str, variants: set[str]) -> None:
    assert set(REQUIRED_KEYS) <= set(doc), f"missing keys: {set(REQUIRED_KEYS) - set(doc)}"
    assert doc["schema"] == SCHEMA
    assert doc["bench"] == bench and doc["form"] == "short"
    for key in ("cpus", "python", "kernel"):
        assert doc["machine"][key]
    for key in ("edgefwd", "paho_mqtt", "confluent_kafka", "lmdb", "mosquitto", "kafka"):
        assert doc["versions"][key], key
    assert doc["settings"]["n"] > 0 and doc["settings"]["payload_bytes"] > 0
    seen = {v for modes in doc["results"].values() for vs in modes.values() for v in vs}
    assert variants <= seen, f"variants missing from results: {variants - seen}"
    r = rates(doc)
    assert r and all(v > 0 for v in r.values()), r
    assert doc["runs"] and doc["ratios"]


def test_e2e_short(tmp_path: Path) -> None:
    doc = run_short("bench_e2e.py", tmp_path / "e2e.json")
    check_schema(doc, "e2e", {"edgefwd", "diy_bridge"})


def test_ingest_short(tmp_path: Path) -> None:
    doc = run_short("bench_ingest.py", tmp_path / "ingest.json")
    check_schema(doc, "ingest", {"bare_paho", "edgefwd", "edgefwd_threads", "edgefwd_ingest_only"})
    runs = [r for r in doc["runs"] if r["variant"] == "edgefwd"]
    # present, not necessarily > 0: /proc/PID/io counts nothing on a tmpfs
    assert runs and {"main", "drainer"} <= set(runs[0]["write_bytes"])


def test_queue_writes_short(tmp_path: Path) -> None:
    doc = run_short("bench_queue_writes.py", tmp_path / "queue_writes.json")
    assert set(REQUIRED_KEYS) <= set(doc) and doc["schema"] == SCHEMA and doc["bench"] == "queue_writes"
    for name, metrics in doc["results"].items():
        assert metrics["commits_per_s"]["median"] > 0, name
        assert metrics["write_bytes_per_payload_byte"]["median"] >= 0, name  # 0 on a tmpfs

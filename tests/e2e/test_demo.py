"""The demo in its short form, as CI runs it: `python -m edgefwd_dev.demo --short`.

It starts its own Mosquitto and Kafka (a few seconds), the real agent, a simulated fleet,
stops Kafka for a while and starts it again, and audits both topics. Its summary JSON is
what this test asserts on: nothing lost, order kept, and the outage really happened and
was visible in `edgefwd status`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_demo_loses_nothing_through_a_kafka_outage(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "dev"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("EDGEFWD_SEED", None)
    proc = subprocess.run(
        [sys.executable, "-m", "edgefwd_dev.demo", "--short", "--no-color",
         "--dir", str(tmp_path / "demo"), "--json-summary", str(summary_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    output = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert summary_path.exists(), output
    s = json.loads(summary_path.read_text())
    assert proc.returncode == 0, output
    assert s["ok"] is True and s["exit_code"] == 0, output
    assert "\033[" not in proc.stdout  # no ANSI colour when stdout is not a terminal

    # the audit: every message the fleet got a PUBACK for is in Kafka, in order per key
    assert s["lost"] == 0, s["topics"]
    assert s["order_violations"] == 0, s["topics"]
    t = s["totals"]
    assert t["acked"] > 1000 and t["records"] >= t["acked"], t
    assert t["garbage"] == 0 and t["wrong_key"] == 0 and t["keys_on_several_partitions"] == 0, t
    assert s["topics"]["telemetry"]["acked"] > 0 and s["topics"]["alarms"]["acked"] > 0, s["topics"]

    # the outage really happened and status told the truth about it
    o = s["outage"]
    assert o["actual_s"] >= o["planned_s"] - 0.5, o
    assert o["kafka_disconnected_seen"] and o["degraded_seen"], o
    assert "degraded" in o["health_during"], o
    assert o["backlog_grew"] and o["backlog_max"] > o["backlog_first"], o
    assert s["drain"]["backlog_at_restart"] > 0, s["drain"]

    # records that waited out the outage carry their receive time, not the drain time
    ts = s["timestamps"]
    assert ts["records_during_outage"] > 0, ts
    assert ts["after_kafka_back"] == 0 and ts["bad_skew"] == 0, ts

    # healthy at the end, and the agent stopped cleanly on SIGTERM
    assert s["final"]["health"] == "ok", s["final"]
    assert s["final"]["queue_messages"] == 0, s["final"]
    c = s["final"]["counters"]
    assert c["dropped"] == {"queue_full": 0, "expired": 0} and c["dead_lettered"] == 0, c
    assert c["received"] == c["forwarded"] == t["acked"], c
    assert s["agent_exit_code"] == 0
    assert all(s["checks"].values()), s["checks"]

    # what a person reads: the phases and the real CLI's status, and the verdict
    out = proc.stdout
    for heading in ("== Kafka uplink goes down ==", "== Kafka is back: draining the backlog ==",
                    "== Audit: read Kafka back and compare with every PUBACK =="):
        assert heading in out, out
    assert "health: DEGRADED" in out and "kafka: DISCONNECTED" in out, out
    assert "health: OK" in out and "RESULT: PASS. Every one of the" in out, out

"""`edgefwd status`: the status contract (DESIGN.md, version 1) and its health rules.

Built from the snapshot the agent writes atomically every second (runtime_dir/status.json,
on tmpfs), so it never opens LMDB while the agent writes. With the agent stopped and no
snapshot (after a reboot), the counters come from the queue itself: no writer to disturb.  Whether the agent runs is asked of the kernel
(the agent's flock on data_dir/agent.lock), not inferred from a pid that may be reused.
When the agent is down the last snapshot still tells the counters as they were at its stop.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgefwd.agent import DRAINER_STATE_FILE, STATUS_FILE, agent_running
from edgefwd.config import Config
from edgefwd.queue import LOGICAL_FRACTION
from edgefwd.snapshot import read_json
from edgefwd.units import format_duration, format_size

STATUS_VERSION = 1
EXIT_CODES = {"ok": 0, "degraded": 1, "critical": 2, "unknown": 3}

HEARTBEAT_STALE_S = 10.0  # the agent writes every second; 10 s of silence means it hangs
QUEUE_NEAR_FULL = 0.90
BACKLOG_GROWING_AGE_S = 60.0


def _age(now: float, t: float | None) -> float | None:
    return None if t is None else round(max(0.0, now - t), 1)


def _read_snapshot(path: Path) -> object | None:
    """On a full disk the agent rewrites its snapshot in place (agent.write_snapshot), so a
    read may catch it half-written: read again before believing there is none."""
    for _ in range(5):
        snap = read_json(path)
        if snap is not None or not path.exists():
            return snap
        time.sleep(0.02)
    return None


def build_status(config: Config, now: float | None = None) -> dict:
    """The status document; `health` and `problems` say what a technician must look at."""
    now = time.time() if now is None else now
    data_dir = Path(config.data_dir)
    snap = _read_snapshot(Path(config.runtime_dir) / STATUS_FILE)
    running = agent_running(data_dir)
    if not isinstance(snap, dict) and not running:
        snap = _snapshot_from_queue(config)
    if not isinstance(snap, dict):
        doc = _empty(config, running)
        doc["health"] = "critical" if not running else "unknown"
        doc["problems"] = ["agent not running" if not running else "agent running but has written no status yet"]
        if not running and not data_dir.exists():
            doc["health"] = "unknown"
            doc["problems"] = [f"no state at {data_dir}: the agent has never run here, or the path is wrong"]
        return doc

    c = snap.get("counters", {})
    drainer_state = read_json(Path(config.runtime_dir) / DRAINER_STATE_FILE) or {}
    in_flight = min(int(snap.get("in_flight", 0) if running else 0), int(c.get("stored_records", 0)))
    stored = int(c.get("stored_records", 0))
    heartbeat_age = _age(now, snap.get("written_at"))
    mqtt = snap.get("mqtt", {})
    kafka = snap.get("kafka", {})
    queue = snap.get("queue", {})
    rates = snap.get("rates", {})
    capacity = int(queue.get("capacity_bytes") or config.queue.max_bytes)
    oldest_ms = queue.get("oldest_receive_ms")
    received_rate = float(rates.get("received_per_s", 0.0))
    forwarded_rate = float(rates.get("forwarded_per_s", 0.0))
    net_drain = forwarded_rate - received_rate
    doc = {
        "version": STATUS_VERSION,
        "health": "ok",
        "gateway_id": config.gateway_id,
        "agent": {
            "running": running,
            "pid": snap.get("agent", {}).get("pid") if running else None,
            "uptime_s": _age(now, snap.get("agent", {}).get("started_at")) if running else None,
            "heartbeat_age_s": heartbeat_age,
        },
        "clock": {"synchronized": bool(snap.get("clock", {}).get("synchronized", True))},
        "mqtt": {
            "connected": bool(mqtt.get("connected")) and running,
            "session_present": mqtt.get("session_present"),
            "last_error": mqtt.get("last_error"),
            "since": mqtt.get("since"),
            "blocked": mqtt.get("blocked"),
        },
        "kafka": {
            "connected": bool(kafka.get("connected")) and running,
            "delivery": kafka.get("delivery", config.kafka.delivery),
            "last_error": kafka.get("last_error"),
            "since": kafka.get("since"),
        },
        "queue": {
            "messages": stored,
            "bytes": int(c.get("stored_bytes", 0)),
            "capacity_bytes": capacity,
            "oldest_age_s": None if oldest_ms is None else round(max(0.0, now - oldest_ms / 1000.0), 1),
        },
        "counters": {
            "received": int(c.get("received", 0)),
            "forwarded": int(c.get("forwarded", 0)),
            "queued": stored - in_flight,
            "in_flight": in_flight,
            "dead_lettered": int(c.get("dead_lettered", 0)),
            "dropped": {
                "queue_full": int(c.get("dropped.queue_full", 0)),
                "expired": int(c.get("dropped.expired", 0)),
            },
            "duplicates_skipped": int(c.get("duplicates_skipped", 0)),
            "unrouted": int(c.get("unrouted", 0)),
            "sessions_lost": int(c.get("sessions_lost", 0)),
        },
        "rates": {
            "received_per_s": round(received_rate, 1),
            "forwarded_per_s": round(forwarded_rate, 1),
            "drain_eta_s": _drain_eta(stored, forwarded_rate, net_drain),
        },
        "downlink": {"lag": 0, "delivered": 0, "expired": 0},
        "drainer": {"running": bool(snap.get("drainer", {}).get("alive")) and running,
                    "restarts": snap.get("drainer", {}).get("restarts", 0),
                    "heartbeat_age_s": _age(now, drainer_state.get("time")) if running else None},
    }
    doc["health"], doc["problems"] = _health(doc, snap, now)
    return doc


def _snapshot_from_queue(config: Config) -> dict | None:
    """The counters as the queue holds them, for when the agent is down and left no snapshot."""
    from edgefwd.errors import QueueOpenError
    from edgefwd.queue import Queue

    try:
        queue = Queue(config.data_dir, config.queue.max_bytes, readonly=True)
    except (QueueOpenError, OSError):
        return None
    try:
        stats = queue.stats()
    finally:
        queue.close()
    return {
        "counters": stats["counters"],
        "queue": {"capacity_bytes": config.queue.max_bytes, "oldest_receive_ms": stats["oldest_receive_ms"]},
        "kafka": {"delivery": config.kafka.delivery},
    }


def _drain_eta(stored: int, forwarded_rate: float, net_drain: float) -> float | None:
    """Seconds until the queue is empty at the present rates; None while it does not shrink.

    A net rate that is a sliver of the outflow (in ~= out, a live stream passing through)
    says nothing about the backlog, so it gives no ETA either.
    """
    if not stored:
        return 0
    if net_drain <= 0 or net_drain < 0.05 * forwarded_rate:
        return None
    return round(stored / net_drain, 1)


def _empty(config: Config, running: bool) -> dict:
    return {
        "version": STATUS_VERSION,
        "health": "unknown",
        "gateway_id": config.gateway_id,
        "agent": {"running": running, "pid": None, "uptime_s": None, "heartbeat_age_s": None},
        "clock": {"synchronized": None},
        "mqtt": {"connected": False, "session_present": None, "last_error": None, "since": None},
        "kafka": {"connected": False, "delivery": config.kafka.delivery, "last_error": None, "since": None},
        "queue": {"messages": None, "bytes": None, "capacity_bytes": config.queue.max_bytes, "oldest_age_s": None},
        "counters": None,
        "rates": None,
        "downlink": None,
    }


def _health(doc: dict, snap: dict, now: float) -> tuple[str, list[str]]:
    critical: list[str] = []
    degraded: list[str] = []
    if not doc["agent"]["running"]:
        critical.append("agent not running")
    elif (doc["agent"]["heartbeat_age_s"] or 0) > HEARTBEAT_STALE_S:
        critical.append(f"agent has not written status for {doc['agent']['heartbeat_age_s']:.0f}s (hung?)")
    q = doc["queue"]
    if q["capacity_bytes"] and q["bytes"] >= QUEUE_NEAR_FULL * q["capacity_bytes"] * LOGICAL_FRACTION:
        critical.append(f"queue near full: {format_size(q['bytes'], exact=False)} of {format_size(q['capacity_bytes'], exact=False)}")
    blocked = doc["mqtt"].get("blocked")
    if blocked and doc["agent"]["running"]:
        critical.append(blocked)
    dropping = float(snap.get("rates", {}).get("dropped_per_s", 0.0))
    if dropping > 0 and doc["agent"]["running"]:
        critical.append(f"dropping messages now ({dropping:.0f}/s, queue.on_full={snap.get('queue', {}).get('on_full')}"
                        " or queue.max_age): see counters.dropped")
    if doc["agent"]["running"]:
        if not doc["mqtt"]["connected"]:
            degraded.append(f"MQTT broker not connected: {doc['mqtt']['last_error'] or 'connecting'}")
        if not doc["kafka"]["connected"]:
            degraded.append(f"Kafka not reachable: {doc['kafka']['last_error'] or 'connecting'}")
        if not doc["drainer"]["running"]:
            critical.append("drainer process not running (restarting)")
    age = q["oldest_age_s"]
    if age is not None and age > BACKLOG_GROWING_AGE_S:
        degraded.append(f"backlog of {q['messages']} messages, oldest {format_duration(age, exact=False)} old")
    lost_at = snap.get("mqtt", {}).get("session_lost_at")
    if lost_at is not None and now - lost_at < 24 * 3600:
        degraded.append("the broker had lost edgefwd's MQTT session: messages may have been dropped upstream")
    if critical:
        return "critical", critical + degraded
    if degraded:
        return "degraded", degraded
    return "ok", []


def exit_code(doc: dict) -> int:
    return EXIT_CODES.get(doc.get("health", "unknown"), 3)


def render_text(doc: dict) -> str:
    """The form a technician reads on the gateway's console: health first."""
    lines = [f"health: {doc['health'].upper()}    gateway: {doc['gateway_id']}"]
    for problem in doc.get("problems", []):
        lines.append(f"  ! {problem}")
    agent = doc["agent"]
    if agent["running"]:
        lines.append(f"agent: running (pid {agent['pid']}, up {format_duration(agent['uptime_s'] or 0, exact=False)})")
    else:
        lines.append("agent: NOT running")
    m, k = doc["mqtt"], doc["kafka"]
    lines.append(f"mqtt:  {'connected' if m['connected'] else 'DISCONNECTED'}" + (f"  ({m['last_error']})" if m.get("last_error") else ""))
    lines.append(f"kafka: {'connected' if k['connected'] else 'DISCONNECTED'}  delivery={k['delivery']}" + (f"  ({k['last_error']})" if k.get("last_error") else ""))
    q = doc["queue"]
    if q["messages"] is not None:
        used = f"{format_size(q['bytes'], exact=False)} of {format_size(q['capacity_bytes'], exact=False)}"
        oldest = f", oldest {format_duration(q['oldest_age_s'], exact=False)}" if q["oldest_age_s"] is not None else ""
        noun = "message" if q["messages"] == 1 else "messages"
        lines.append(f"queue: {q['messages']} {noun}, {used}{oldest}")
    c = doc.get("counters")
    if c:
        lines.append(
            f"counters: received {c['received']}  forwarded {c['forwarded']}  queued {c['queued']}  "
            f"in flight {c['in_flight']}  dead-lettered {c['dead_lettered']}  "
            f"dropped {c['dropped']['queue_full']} full / {c['dropped']['expired']} expired"
        )
    r = doc.get("rates")
    if r:
        eta = r["drain_eta_s"]
        eta_text = "-" if eta is None else format_duration(eta, exact=False)
        lines.append(f"rates: in {r['received_per_s']}/s  out {r['forwarded_per_s']}/s  drain ETA {eta_text}")
    if doc["clock"]["synchronized"] is False:
        lines.append("clock: not synchronized (records carry edgefwd.clock=unsynced)")
    return "\n".join(lines)

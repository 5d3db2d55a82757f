"""Start-up time and memory of the agent with a large backlog (issue 5, item 6).

    .venv/bin/python bench/bench_startup.py            # backlogs 0, 1M, 10M (needs ~3 GB)
    .venv/bin/python bench/bench_startup.py --short    # backlogs 0, 1M (CI smoke)
    .venv/bin/python bench/bench_startup.py --messages 0,1000000,10000000 --rounds 3

For each backlog (same run, one queue grown in place: 0 -> 1M -> 10M) it measures

- ``queue_open_s``: ``edgefwd.queue.Queue(...)`` construction (lmdb.open + meta reads);
  ``first_read_s``: the first ``read_batches(0, 64)``; ``stats_s``: ``Queue.stats()`` (what
  the status snapshot calls every second); all in this process, page cache warm.
- ``startup_s``: wall time from spawning ``python -m edgefwd run`` until the agent's status
  snapshot (runtime_dir/status.json, written atomically every status_interval) says
  ``agent.running`` and ``mqtt.connected``; Mosquitto runs, Kafka is unreachable
  (bootstrap 127.0.0.1:9), so nothing drains and the backlog stays whole.  The status
  interval is set to 0.1 s so that it adds at most 0.1 s.  Python's own start-up and
  imports are part of it, so the empty queue's figure is the floor; the ratio to it is what
  the backlog costs.
- RSS (VmRSS, and its anonymous and file-backed parts) of the agent and of its drainer
  process right after start-up and after ``--settle`` seconds (default 30).  The LMDB map
  is file-backed: pages the drainer reads count as RssFile (page cache, reclaimable), heap
  as RssAnon.  "Memory stays flat" is judged on RssAnon.

The queue is built directly with ``Queue.commit_ingest`` (500 records of 100-200 payload
bytes per batch, one fsync'd commit per batch) - no broker needed.  The queue folder is
deleted at the end (``--keep`` keeps it).  JSON goes to bench/results/startup.json (or
startup_short.json) in the schema of bench/common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))

import common  # noqa: E402
from common import log, new_doc, ratio_of_medians, summarize, write_doc  # noqa: E402

BATCH = 500
MAX_BYTES = 6 << 30  # logical cap 4.5 GiB: room for 10M records of ~210 bytes encoded
TOPIC_FMT = "vehicles/dev{:04d}/telemetry/engine"


def proc_mem(pid: int | None) -> dict[str, float] | None:
    """VmRSS / RssAnon / RssFile / VmHWM in MiB from /proc/PID/status."""
    if not pid:
        return None
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        return None
    return out


def build_queue(data_dir: Path, start: int, stop: int, compression: str) -> float:
    """Append messages [start, stop) to the queue; returns seconds taken."""
    from edgefwd import _core
    from edgefwd.queue import NewBatch, Queue

    if stop <= start:
        return 0.0
    q = Queue(data_dir, MAX_BYTES)
    boot = os.urandom(16)
    rnd = random.Random(start)
    pads = [b"x" * n for n in range(0, 201)]
    t0 = time.monotonic()
    now_ms = int(time.time() * 1000)
    seq = q.next_seq()
    done = start
    last_log = t0
    while done < stop:
        n = min(BATCH, stop - done)
        records = []
        for i in range(n):
            m = done + i
            dev = m % 100
            body = b'{"device":"dev%04d","n":%d,"ts":%d,"rpm":%d,"pad":"' % (dev, m, now_ms + m, 800 + m % 4000)
            payload = body + pads[max(0, rnd.randint(100, 200) - len(body) - 2)] + b'"}'
            records.append((seq + i, now_ms, 0, True, 1, False, 0, "telemetry", b"dev%04d" % dev,
                            TOPIC_FMT.format(dev), payload, []))
        data = _core.encode_batch(records, boot, compression)
        res = q.commit_ingest([NewBatch(0, data, n)], seq + n, [], [], {"messages": n}, "block")
        if res.blocked:
            raise RuntimeError(f"queue full after {done} messages: raise MAX_BYTES")
        seq += n
        done += n
        if time.monotonic() - last_log > 15:
            last_log = time.monotonic()
            log(f"  built {done:,} / {stop:,} messages ({(done - start) / (last_log - t0):,.0f}/s)")
    q.close()
    return time.monotonic() - t0


def direct_open(data_dir: Path) -> dict[str, float]:
    from edgefwd.queue import Queue

    t0 = time.perf_counter()
    q = Queue(data_dir, MAX_BYTES)
    t1 = time.perf_counter()
    batches = q.read_batches(0, 64)
    t2 = time.perf_counter()
    stats = q.stats()
    t3 = time.perf_counter()
    counters = q.counters()
    q.close()
    assert batches or counters["stored_records"] == 0
    return {"queue_open_s": t1 - t0, "first_read_s": t2 - t1, "stats_s": t3 - t2,
            "stored_records": counters["stored_records"], "stored_bytes": counters["stored_bytes"],
            "oldest_receive_ms_present": stats["oldest_receive_ms"] is not None}


def agent_start(workdir: Path, config: dict, settle: float, tag: str) -> dict:
    from edgefwd_dev.agent_runner import AgentRunner

    runner = AgentRunner(workdir, config, name=f"agent-{tag}")
    status = Path(config["runtime_dir"]) / "status.json"
    status.unlink(missing_ok=True)
    t_spawn = time.time()
    t0 = time.monotonic()
    runner.start()
    startup = running_s = None
    try:
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if not runner.running():
                raise RuntimeError(f"agent exited:\n{runner.log_tail()}")
            try:
                doc = json.loads(status.read_text())
            except (OSError, ValueError):
                doc = None
            if doc and doc.get("written_at", 0) >= t_spawn and doc["agent"]["running"]:
                if running_s is None:
                    running_s = time.monotonic() - t0
                if doc["mqtt"]["connected"]:
                    startup = time.monotonic() - t0
                    break
            time.sleep(0.005)
        if startup is None:
            raise RuntimeError(f"agent not running+connected after 120 s:\n{runner.log_tail()}")
        main_pid = runner.pid
        dpid = None
        for _ in range(200):
            dpid = common.drainer_pid(main_pid)
            if dpid:
                break
            time.sleep(0.01)
        time.sleep(0.5)  # let the drainer do its first read and its Kafka connect attempt
        mem_start = {"agent": proc_mem(main_pid), "drainer": proc_mem(dpid)}
        mem_settled = None
        if settle > 0:
            time.sleep(settle)
            mem_settled = {"agent": proc_mem(main_pid), "drainer": proc_mem(dpid)}
        doc = json.loads(status.read_text())
    finally:
        if runner.running():
            runner.stop(timeout=30)
    return {"running_s": running_s, "startup_s": startup, "mem_start": mem_start,
            "mem_settled": mem_settled, "queue_counters": doc.get("counters"),
            "drainer_alive": doc.get("drainer", {}).get("alive"),
            "kafka_connected": doc.get("kafka", {}).get("connected")}


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="backlogs 0 and 1M, 5 s settle (CI smoke)")
    ap.add_argument("--messages", help="comma-separated backlogs, ascending (default 0,1000000,10000000)")
    ap.add_argument("--rounds", type=int, default=3, help="agent starts per backlog (the first one also settles)")
    ap.add_argument("--settle", type=float, default=None, help="seconds before the second RSS reading (30)")
    ap.add_argument("--compression", default="none", choices=("none", "lz4", "zstd"))
    ap.add_argument("--workdir", help="where the queue goes (default: a temp dir under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the queue afterwards")
    ap.add_argument("--cold", action="store_true", help="also measure one start after dropping the page cache")
    ap.add_argument("--out", help="JSON path (default bench/results/startup[_short].json)")
    args = ap.parse_args()

    backlogs = [int(x) for x in (args.messages or ("0,1000000" if args.short else "0,1000000,10000000")).split(",")]
    if backlogs != sorted(backlogs):
        ap.error("--messages must be ascending: one queue is grown in place")
    settle = args.settle if args.settle is not None else (5.0 if args.short else 30.0)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="edgefwd-startup-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    need = max(backlogs) * 260  # ~210 B encoded per record + LMDB pages, with margin
    free = shutil.disk_usage(workdir).free
    log(f"workdir {workdir}: {free / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB")
    if free < need * 1.2:
        log("not enough disk space for the largest backlog; use --messages")
        return 2

    from edgefwd_dev.agent_runner import make_config
    from edgefwd_dev.services import Mosquitto

    settings = {
        "backlogs": backlogs, "rounds": args.rounds, "settle_s": settle, "records_per_batch": BATCH,
        "payload_bytes": "100-200 (uniform)", "compression": args.compression, "max_bytes": MAX_BYTES,
        "kafka": "unreachable (127.0.0.1:9): nothing drains", "status_interval_s": 0.1,
        "method": "one queue grown in place 0 -> 1M -> 10M with Queue.commit_ingest; per backlog "
                  "`rounds` agent starts (python -m edgefwd run), start-up = spawn until status.json "
                  "shows agent.running and mqtt.connected; RSS from /proc/PID/status right after "
                  "start-up (+0.5 s) and after settle_s; page cache warm unless cold=true",
    }
    doc = new_doc("startup", args.short, settings)
    data_dir = workdir / "data"
    mq = Mosquitto(workdir / "mosquitto").start()
    built = 0
    try:
        for backlog in backlogs:
            log(f"backlog {backlog:,}: building (have {built:,})")
            build_s = build_queue(data_dir, built, backlog, args.compression)
            if backlog > built:
                doc["runs"].append({"backlog": backlog, "kind": "build", "messages_added": backlog - built,
                                    "build_s": round(build_s, 1),
                                    "data_mdb_bytes": (data_dir / "queue" / "data.mdb").stat().st_size})
                log(f"  built in {build_s:.0f} s; data.mdb {(data_dir / 'queue' / 'data.mdb').stat().st_size / 2**30:.2f} GiB")
            built = max(built, backlog)
            for rnd in range(1, args.rounds + 1):
                d = direct_open(data_dir)
                d.update(backlog=backlog, kind="direct", round=rnd)
                doc["runs"].append(d)
                config = make_config(workdir, mqtt_port=mq.port, bootstrap="127.0.0.1:9",
                                     routes=[{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": "telemetry",
                                              "kafka_key": "${1}"}],
                                     gateway_id=f"startup-{backlog}", queue={"max_bytes": MAX_BYTES},
                                     log_level="warning", status_interval="100ms")
                config["data_dir"] = str(data_dir)
                a = agent_start(workdir, config, settle if rnd == 1 else 0.0, f"{backlog}-{rnd}")
                a.update(backlog=backlog, kind="agent", round=rnd)
                doc["runs"].append(a)
                log(f"  round {rnd}: open {d['queue_open_s'] * 1000:.1f} ms, first read {d['first_read_s'] * 1000:.1f} ms, "
                    f"agent start-up {a['startup_s']:.2f} s, RSS start {a['mem_start']}, settled {a['mem_settled']}")
            if args.cold:
                cold = drop_caches()
                d = direct_open(data_dir)
                d.update(backlog=backlog, kind="direct_cold", dropped_caches=cold)
                doc["runs"].append(d)
                cold = drop_caches()
                a = agent_start(workdir, config, 0.0, f"{backlog}-cold")
                a.update(backlog=backlog, kind="agent_cold", dropped_caches=cold)
                doc["runs"].append(a)
                log(f"  cold (drop_caches={cold}): open {d['queue_open_s'] * 1000:.1f} ms, start-up {a['startup_s']:.2f} s")
    finally:
        mq.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            log(f"deleted {workdir}")

    # results[backlog][metric] = SUMMARY over rounds
    def vals(backlog: int, kind: str, path: str) -> list[float]:
        out = []
        for r in doc["runs"]:
            if r.get("backlog") != backlog or r.get("kind") != kind:
                continue
            v = r
            for part in path.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
        return out

    metrics = [("direct", "queue_open_s"), ("direct", "first_read_s"), ("direct", "stats_s"),
               ("agent", "startup_s"), ("agent", "running_s")]
    for who in ("agent", "drainer"):
        for when in ("mem_start", "mem_settled"):
            for k in ("VmRSS", "RssAnon", "RssFile"):
                metrics.append(("agent", f"{when}.{who}.{k}"))
    for kind in ("direct_cold", "agent_cold"):
        metrics += [(kind, "queue_open_s"), (kind, "startup_s")]
    for backlog in backlogs:
        res = doc["results"].setdefault(str(backlog), {})
        for kind, m in metrics:
            v = vals(backlog, kind, m)
            if v:
                res[m if kind in ("direct", "agent") else f"{kind}.{m}"] = summarize(v)
    base = backlogs[0]
    for backlog in backlogs[1:]:
        rat = doc["ratios"].setdefault(f"{backlog}/{base}", {})
        for kind, m in metrics:
            a, b = vals(backlog, kind, m), vals(base, kind, m)
            if a and b and len(a) == len(b) and all(b):
                rat[m] = ratio_of_medians(a, b)
    path = write_doc(doc, args.out)
    log(f"wrote {path}")
    for backlog in backlogs:
        r = doc["results"][str(backlog)]
        log(f"backlog {backlog:>10,}: start-up {r['startup_s']['median']:.2f} s, open {r['queue_open_s']['median'] * 1000:.1f} ms, "
            f"first read {r['first_read_s']['median'] * 1000:.1f} ms, RSS agent {r.get('mem_start.agent.VmRSS', {}).get('median')} -> "
            f"{r.get('mem_settled.agent.VmRSS', {}).get('median')} MiB (anon {r.get('mem_settled.agent.RssAnon', {}).get('median')}), "
            f"drainer {r.get('mem_start.drainer.VmRSS', {}).get('median')} -> {r.get('mem_settled.drainer.VmRSS', {}).get('median')} MiB "
            f"(anon {r.get('mem_settled.drainer.RssAnon', {}).get('median')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

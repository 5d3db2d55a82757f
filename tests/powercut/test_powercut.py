"""Power-cut tests: record the agent's writes and syncs, replay what a power cut would leave.

kill -9 leaves the page cache intact, so it cannot show a missing fsync.  Here an LD_PRELOAD
shim (pcshim.c, compiled by the fixture into the test's tmp dir) records every write and
sync on the queue's files while the real agent runs under it, and pcut.py rebuilds "the disk
after a power cut at log position p" keeping only what was synced plus an arbitrary choice
of the rest (none, all, random subsets, a prefix, sectors torn at 512 B / 4 KiB, reordered).
Each rebuilt queue is opened with edgefwd.queue.Queue and must hold every message the agent
had acknowledged to the broker by then, exactly once, with balanced counters - or refuse to
open with QueueOpenError, never be silently wrong.  A negative control proves the method
catches a missing fsync.  See docs/powercut.md.

Short form (CI): 3 real SIGKILLs, 24 crash points x 8 disk behaviours = 192 replays.
Long form:  EDGEFWD_POWERCUT_KILLS=20 EDGEFWD_POWERCUT_POINTS=300 \
            .venv/bin/python -m pytest tests/powercut -s
Reproduce:  EDGEFWD_POWERCUT_SEED=<seed printed on failure>
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgefwd_dev.agent_runner import AgentRunner, make_config
from edgefwd_dev.fleet import FleetPublisher

from . import pcut

KILLS = int(os.environ.get("EDGEFWD_POWERCUT_KILLS", "3"))
POINTS = int(os.environ.get("EDGEFWD_POWERCUT_POINTS", "24"))
SEED = int(os.environ.get("EDGEFWD_POWERCUT_SEED", str(random.SystemRandom().randrange(1 << 30))))
MAX_BYTES = 64 << 20
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    return pcut.build_shim(tmp_path_factory.mktemp("pcshim"))


def _report(outcomes: list[pcut.Outcome], what: str) -> str:
    fails = [o for o in outcomes if o.status == "FAIL"]
    lines = [f"[{what}] seed={SEED}", pcut.summarize(outcomes)]
    for o in fails[:10]:
        lines.append(f"  FAIL p={o.point} {o.variant}: acked={o.acked} present={o.present} {o.info}: {o.detail[:400]}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- controls


def _run_writer(shim: Path, workdir: Path, sync: int, seconds: float) -> tuple[pcut.Trace, list[tuple[float, int]], Path]:
    data_dir = (workdir / f"writer-sync{sync}").resolve()
    data_dir.mkdir(parents=True)
    log = workdir / f"writer-sync{sync}.trace"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), **pcut.shim_env(shim, data_dir, log))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("writer.py")), str(data_dir), "--sync", str(sync)],
                            stdout=subprocess.PIPE, env=env, text=True)
    acks: list[tuple[float, int]] = []  # (time read, last message number acked)

    def reader() -> None:
        for line in proc.stdout:
            if line.startswith("ACK"):
                acks.append((time.monotonic(), int(line.split()[2])))

    assert proc.stdout.readline().strip() == "READY"
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(seconds)
    proc.kill()
    proc.wait()
    t.join(5)
    assert acks, "the writer acknowledged nothing"
    return pcut.Trace(log), acks, data_dir


def _writer_replays(trace, acks, data_dir, scratch, variants, points) -> list[pcut.Outcome]:
    rng = random.Random(SEED)
    outcomes = []
    end = time.monotonic()
    worker = pcut.CheckWorker(scratch)
    for p in pcut.pick_points(trace, points, rng, must=[len(trace)]):
        t = trace.recs[p].ts if p < len(trace) else end
        last = max([n for ts, n in acks if ts < t], default=-1)
        acked = [b"msg-%08d" % i for i in range(last + 1)]
        outcomes += pcut.replay_point(trace, data_dir, "queue", p, acked, None, scratch, 64 << 20, SEED, variants, worker)
    worker.close()
    return outcomes


def test_negative_control_missing_fsync_is_caught(shim, tmp_path):
    """sync=False "acks" after a commit that was never fsynced: the replay must fail."""
    trace, acks, data_dir = _run_writer(shim, tmp_path, sync=0, seconds=1.0)
    # the one sync of a new queue's creation (Queue._mark_created) is all there is
    assert len([s for s in trace.syncs if s.kind in pcut.BARRIER_KINDS and s.path.endswith("/data.mdb")]) <= 1, \
        "sync=False must not fsync the commits"
    outcomes = _writer_replays(trace, acks, data_dir, tmp_path / "scratch", ("none", "all", "subset"), 8)
    print(_report(outcomes, "negative control (sync=False)"))
    none = [o for o in outcomes if o.variant == "none"]
    assert none and all(o.status == "FAIL" and "acked messages missing" in o.detail for o in none if o.acked), \
        "the simulation did not catch acknowledged-but-unsynced messages"
    # the page-cache view (what kill -9 leaves) has them all: kill -9 alone could not catch it
    assert all(o.status == "ok" for o in outcomes if o.variant == "all")


def test_positive_control_same_writer_with_fsync(shim, tmp_path):
    """The same writer with edgefwd's settings (sync=True, metasync=True) survives every replay."""
    trace, acks, data_dir = _run_writer(shim, tmp_path, sync=1, seconds=1.0)
    outcomes = _writer_replays(trace, acks, data_dir, tmp_path / "scratch", pcut.VARIANTS, 12)
    print(_report(outcomes, "positive control (sync=True)"))
    assert not [o for o in outcomes if o.status != "ok"], _report(outcomes, "positive control")
    assert max(o.acked for o in outcomes) > 0


# ----------------------------------------------------------------------------- the agent

UNSAFE_SITECUSTOMIZE = """
# Injected by the power-cut negative control: the agent's LMDB env opened with sync=False.
import lmdb
_open = lmdb.open
def _unsafe_open(*a, **kw):
    kw.update(sync=False, metasync=False)
    return _open(*a, **kw)
lmdb.open = _unsafe_open
"""


def _agent_powercut(shim, mosquitto, workdir: Path, kills: int, points: int, variants=pcut.VARIANTS,
                    unsafe: bool = False) -> tuple[list[pcut.Outcome], pcut.Trace, str]:
    """Run the real agent under the shim (Kafka unreachable), SIGKILL it `kills` times at
    random moments while a fleet publishes, then replay power cuts at `points` crash points:
    the real kill moments plus positions drawn from the trace."""
    rng = random.Random(SEED)
    data_dir = (workdir / "data").resolve()
    trace_log = workdir / "trace.log"
    env = pcut.shim_env(shim, data_dir / "queue", trace_log)
    if unsafe:
        site = workdir / "unsafe-site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(UNSAFE_SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    proxy = pcut.AckProxy(mosquitto.port, protocol="5")
    config = make_config(
        workdir, mqtt_port=proxy.port, bootstrap="127.0.0.1:9",  # nothing listens: nothing drains
        routes=[{"mqtt_filter": "vehicles/+/telemetry/#", "kafka_topic": "telemetry", "kafka_key": "${1}"}],
        gateway_id="powercut", queue={"max_bytes": MAX_BYTES},
    )
    config["data_dir"] = str(data_dir)
    agent = AgentRunner(workdir, config, env=env)
    pub = FleetPublisher("127.0.0.1", mosquitto.port, devices=20)
    kill_times: list[float] = []
    try:
        started = False
        for _ in range(kills):
            before = len(proxy.acks)
            agent.start()
            if not started:
                agent.wait_connected(60)
                pub.run(10**9, rate=1500)
                started = True
            deadline = time.monotonic() + 60
            while len(proxy.acks) <= before + 50:
                assert agent.running(), agent.log_tail()
                assert time.monotonic() < deadline, f"no acks from the agent:\n{agent.log_tail()}"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 1.5))
            agent.kill9()
            time.sleep(0.3)  # PUBACKs the agent sent before it died reach the proxy
            kill_times.append(time.monotonic())
    finally:
        pub.stop()
        if agent.running():
            agent.kill9()
        proxy.close()
    published = {m[1] for m in pub.acked_snapshot()} | {pl for _t, _tp, pl in proxy.acks}
    lines = [f"seed={SEED} kills={kills} points={points} unsafe={unsafe}",
             f"publisher: {pub.published} published, {pub.acked_count} PUBACKed by Mosquitto; "
             f"agent: {len(proxy.acks)} PUBACKs to the broker, {proxy.delivered} deliveries"]
    trace = pcut.Trace(trace_log)
    assert any(f.endswith("/data.mdb") for f in trace.files), trace.files
    syncs = [s for s in trace.syncs if s.kind in pcut.BARRIER_KINDS and s.done is not None]
    lines.append(f"trace: {len(trace)} records, {len(trace.writes)} writes "
                 f"({sum(1 for w in trace.writes if w.dsync)} O_DSYNC), {len(syncs)} completed fsync/fdatasync, "
                 f"{len(trace.dir_syncs)} directory fsyncs; files {[os.path.basename(f) for f in trace.files]}")
    real_points = [trace.index_at(t) for t in kill_times]
    outcomes: list[pcut.Outcome] = []
    worker = pcut.CheckWorker(workdir / "scratch")
    for p in pcut.pick_points(trace, max(points, len(real_points)), rng, must=real_points):
        t = trace.recs[p].ts if p < len(trace) else kill_times[-1]
        outcomes += pcut.replay_point(trace, data_dir, "queue", p, proxy.acked_before(t), published,
                                      workdir / "scratch", MAX_BYTES, SEED, variants, worker)
    worker.close()
    lines.append(f"real kill points {real_points}; acked by the agent at the last one: {len(proxy.acked_before(kill_times[-1]))}")
    return outcomes, trace, "\n".join(lines)


def test_powercut_agent(shim, mosquitto, tmp_workdir):
    """The real agent under the shim, Kafka unreachable, random SIGKILLs; replay power cuts."""
    outcomes, trace, header = _agent_powercut(shim, mosquitto, tmp_workdir, KILLS, POINTS)
    try:
        report = header + "\n" + _report(outcomes, "agent")
        print(report)
        assert not [o for o in outcomes if o.status == "FAIL"], report
        assert len(outcomes) >= 20
        assert sum(1 for o in outcomes if o.acked) >= len(outcomes) // 2, "too few crash points with acked messages"
        # A refusal is loud, not silent; it is tolerated only for a power cut before the new
        # environment's first completed fdatasync (see test_power_cut_while_creating_the_queue),
        # when nothing can have been acknowledged yet.
        first_sync = min((s.done for s in trace.syncs if s.kind in pcut.BARRIER_KINDS and s.done is not None
                          and s.path.endswith("/data.mdb")), default=len(trace))
        refused = [o for o in outcomes if o.status == "refused"]
        bad = [o for o in refused if o.point > first_sync or o.acked]
        assert not bad, f"the queue refused to open after a power cut:\n{report}\n{bad[0].detail}"
        if refused:
            print(f"{len(refused)} refusals, all before the queue's first fdatasync")
    finally:
        trace.close()


def test_negative_control_agent_without_fsync(shim, mosquitto, tmp_workdir):
    """The same agent test with the agent's LMDB env forced to sync=False (via an injected
    sitecustomize): power cuts must lose acknowledged messages, and the test must see it."""
    outcomes, trace, header = _agent_powercut(shim, mosquitto, tmp_workdir, 1, 6, ("none", "all"), unsafe=True)
    try:
        report = header + "\n" + _report(outcomes, "agent, sync=False")
        print(report)
        # the one sync of a new queue's creation (Queue._mark_created) is all there is
        assert len([s for s in trace.syncs if s.kind in pcut.BARRIER_KINDS and s.path.endswith("/data.mdb")]) <= 1, \
            "sync=False must not fsync the commits"
        lost = [o for o in outcomes if o.variant == "none" and o.status == "FAIL" and "acked messages missing" in o.detail]
        assert lost and all(o in lost for o in outcomes if o.variant == "none" and o.acked), report
        assert all(o.status == "ok" for o in outcomes if o.variant == "all"), "kill -9's view should be complete"
    finally:
        trace.close()


def test_new_queue_file_name_is_made_durable(shim, tmp_path):
    """POSIX makes a new file's name durable only with an fsync of its directory."""
    trace, _acks, data_dir = _run_writer(shim, tmp_path, sync=1, seconds=0.3)
    try:
        created = trace.created.get(str(data_dir / "queue" / "data.mdb"))
        assert created is not None, trace.created
        assert any(s.path == str(data_dir / "queue") and s.begin > created for s in trace.dir_syncs), \
            "no fsync of the queue directory after data.mdb was created"
    finally:
        trace.close()


def test_power_cut_while_creating_the_queue(shim, tmp_path):
    """A power cut before a new queue's first fsync leaves a file LMDB rejects; nothing was
    acknowledged then, so the queue must open (created afresh), never refuse forever."""
    trace, acks, data_dir = _run_writer(shim, tmp_path, sync=1, seconds=0.3)
    try:
        first_sync = min(s.done for s in trace.syncs if s.kind in pcut.BARRIER_KINDS and s.done is not None)
        first_write = min(w.begin for w in trace.writes if w.path.endswith("/data.mdb"))
        outcomes = []
        for p in range(first_write + 1, first_sync + 1):
            outcomes += pcut.replay_point(trace, data_dir, "queue", p, [], None, tmp_path / "scratch", 64 << 20, SEED,
                                          ("all", "subset", "subset2", "torn512", "torn4k", "reorder"))
        print(_report(outcomes, "queue creation"))
        assert all(o.status == "ok" for o in outcomes), [o.detail for o in outcomes if o.status != "ok"][:2]
    finally:
        trace.close()

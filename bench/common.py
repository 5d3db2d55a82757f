"""What the MQTT -> Kafka benchmarks share: the result schema, the brokers, the processes.

Result schema (version 1), one JSON file per benchmark run under bench/results/:

    {"schema": 1,
     "bench": "e2e" | "ingest" | "queue_writes",
     "form": "default" | "short",
     "time": ISO-8601 UTC start of the run, "duration_s": float,
     "machine": {"cpus", "python", "kernel", "platform", "loadavg_start", "loadavg_end"},
     "versions": {"edgefwd", "paho_mqtt", "confluent_kafka", "librdkafka", "py_lmdb", "lmdb",
                  "mosquitto", "kafka"},
     "settings": {"n", "payload_bytes", "devices", "rounds", "protocols", "modes", "variants",
                  "qos", "mosquitto": {...conf lines that matter}, "kafka": {...},
                  "agent": {...queue settings}, "diy_producer": {...}, "method": "..."},
     "results": {<protocol>: {<mode>: {<variant>: {<metric>: SUMMARY}}}},
     "ratios":  {<protocol>: {<mode>: {"<a>/<b>": SUMMARY-of-the-medians-ratio}}},
     "runs": [one dict per measured run, raw figures]}

SUMMARY = {"median", "min", "max", "spread_pct" (= (max - min) / median * 100), "runs": [...]}.
Rates are messages per second; every variant of a run is measured against the same brokers,
rounds interleaved (round 1 of every variant, then round 2, ...), so ratios compare like
with like on a noisy shared machine.  Later benchmarks extend "results"/"ratios", never
rename keys.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SCHEMA = 1
REQUIRED_KEYS = ("schema", "bench", "form", "time", "machine", "versions", "settings", "results", "ratios", "runs")
TOPIC_FMT = "bench/dev{:03d}/telemetry"
FILTER = "bench/+/telemetry"

if str(ROOT / "dev") not in sys.path:
    sys.path.insert(0, str(ROOT / "dev"))


# --------------------------------------------------------------------------- payloads


def device_topics(devices: int) -> list[str]:
    return [TOPIC_FMT.format(i) for i in range(devices)]


def make_payloads(size: int, count: int) -> list[bytes]:
    """`count` distinct JSON telemetry payloads of exactly `size` bytes, padded with a field of
    pseudo-random hex digits (sensor samples), so compression sees realistic, not
    repetitive, bytes."""
    import random

    rng = random.Random(size)
    out = []
    for i in range(count):
        body = (
            f'{{"device":"dev{i % 100:03d}","n":{i},"ts":{1795600000.123 + i:.3f},'
            f'"rpm":{800 + (i * 37) % 4000},"temp_c":{60 + (i * 7) % 50}.{i % 10},'
            f'"lat":48.{(i * 7919) % 1000000:06d},"lon":11.{(i * 104729) % 1000000:06d},"samples":"'
        )
        pad = size - len(body) - 2
        if pad < 0:
            raise ValueError(f"payload size {size} too small")
        out.append((body + "".join(rng.choice("0123456789abcdef") for _ in range(pad)) + '"}').encode())
    return out


# --------------------------------------------------------------------------- statistics


def summarize(values: list[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    med = statistics.median(vals)
    return {
        "median": round(med, 4),
        "min": round(min(vals), 4),
        "max": round(max(vals), 4),
        "spread_pct": round((max(vals) - min(vals)) / med * 100, 1) if med else None,
        "runs": [round(v, 4) for v in vals],
    }


def ratio_of_medians(a: list[float], b: list[float]) -> dict[str, Any]:
    """median(a)/median(b), plus the per-round ratios (a[i]/b[i]) and their spread."""
    per_round = [x / y for x, y in zip(a, b) if y]
    out = summarize(per_round) if per_round else {}
    out["of_medians"] = round(statistics.median(a) / statistics.median(b), 4) if statistics.median(b) else None
    return out


# --------------------------------------------------------------------------- environment


def _cmd_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else None


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    import confluent_kafka
    import lmdb

    from edgefwd_dev.services import kafka_version

    def dist(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    mosq = _cmd_version([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"])
    return {
        "edgefwd": dist("edgefwd"),
        "paho_mqtt": dist("paho-mqtt"),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "py_lmdb": lmdb.__version__,
        "lmdb": ".".join(map(str, lmdb.version())),
        "mosquitto": mosq.replace("mosquitto version ", "") if mosq else None,
        "kafka": kafka_version(),
    }


def new_doc(bench: str, short: bool, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "bench": bench,
        "form": "short" if short else "default",
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": None,
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "results": {},
        "ratios": {},
        "runs": [],
        "_t0": time.monotonic(),
    }


def write_doc(doc: dict[str, Any], out: str | os.PathLike[str] | None) -> Path:
    doc["duration_s"] = round(time.monotonic() - doc.pop("_t0"), 1)
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    path = Path(out) if out else RESULTS / f"{doc['bench']}{'_short' if doc['form'] == 'short' else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path



def write_and_report(doc: dict[str, Any], out: str | os.PathLike[str] | None) -> Path:
    """Write the result document and log every ratio in it."""
    path = write_doc(doc, out)
    log(f"wrote {path}")
    for protocol, modes in doc["ratios"].items():
        for mode, ratios in modes.items():
            for name, r in ratios.items():
                log(f"MQTT {protocol} {mode}: {name} = {r['of_medians']}")
    return path

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- brokers


class Brokers:
    """One Mosquitto and one Kafka for the whole benchmark run (the dev harness's defaults:
    Mosquitto max_inflight_messages 1000, max_queued_messages 1000000, persistence on)."""

    def __init__(self, workdir: Path, kafka: bool = True):
        from edgefwd_dev.services import Kafka, Mosquitto

        self.workdir = Path(workdir)
        self.mq = Mosquitto(self.workdir / "mosquitto")
        self.kafka = Kafka(self.workdir / "kafka") if kafka else None

    def __enter__(self) -> "Brokers":
        self.mq.start()
        if self.kafka is not None:
            self.kafka.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        self.mq.stop()

    def settings(self) -> dict[str, Any]:
        conf = dict(self.mq.DEFAULT_CONF)
        keep = ("max_inflight_messages", "max_queued_messages", "max_queued_bytes", "persistence", "set_tcp_nodelay")
        out: dict[str, Any] = {"mosquitto": {k: conf[k] for k in keep if k in conf}}
        if self.kafka is not None:
            props = self.kafka._props()
            out["kafka"] = {
                "nodes": 1,
                "mode": "KRaft broker+controller",
                "partitions": 3,
                "replication_factor": 1,
                "heap": "-Xmx512m -Xms256m, SerialGC",
                "log.flush": "OS default (no fsync per message)",
                "num.partitions": props.get("num.partitions"),
            }
        return out


def prime_session(host: str, port: int, client_id: str, protocol: str, filt: str = FILTER) -> None:
    """Create a persistent session with a QoS 1 subscription and leave, so that the broker
    queues what is published from now on for `client_id` (an agent, or a bench subscriber)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    v5 = protocol == "5"
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    kwargs: dict = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86400
        kwargs = {"clean_start": True, "properties": props}
    c.connect(host, port, keepalive=30, **kwargs)
    c.loop_start()
    opts = SubscribeOptions(qos=1, retainHandling=1) if v5 else 1
    c.subscribe([(filt, opts)])
    if not subscribed.wait(10):
        raise RuntimeError(f"priming {client_id}: no SUBACK")
    c.disconnect()
    c.loop_stop()


# --------------------------------------------------------------------------- processes


class Role:
    """A bench/roles.py process; its stdout carries JSON event lines."""

    def __init__(self, role: str, args: dict[str, Any], workdir: Path):
        self.role = role
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self.err_path = Path(workdir) / f"{role}-{time.monotonic_ns()}.err"
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "roles.py"), role, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=open(self.err_path, "wb"),
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exit"})
            self._cond.notify_all()

    def wait(self, event: str, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if ev.get("event") == event:
                        return ev
                    if ev.get("event") in ("error", "exit"):
                        raise RuntimeError(f"{self.role} failed: {ev}; stderr:\n{self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.role}: no '{event}' after {timeout}s; stderr:\n{self.stderr_tail()}")
                self._cond.wait(min(left, 1.0))

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.err_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def join(self, timeout: float = 30.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.terminate()


def proc_io(pid: int | None) -> dict[str, int]:
    if not pid:
        return {}
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def rss_mb(pid: int | None) -> float | None:
    import psutil

    if not pid:
        return None
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def drainer_pid(agent_pid: int) -> int | None:
    """The agent's drainer child (multiprocessing spawn), not its resource tracker."""
    import psutil

    try:
        for child in psutil.Process(agent_pid).children():
            cmd = " ".join(child.cmdline())
            if "spawn_main" in cmd:
                return child.pid
    except psutil.Error:
        pass
    return None


class QueueWatcher:
    """Polls an edgefwd queue's counters (short LMDB read transactions, from this process)
    every `interval` seconds; records when `received` and `forwarded` first reached values."""

    def __init__(self, data_dir: Path, max_bytes: int, interval: float = 0.01):
        self.data_dir = Path(data_dir)
        self.max_bytes = max_bytes
        self.interval = interval
        self.queue = None
        self.samples: list[tuple[float, int, int]] = []  # (wall time, received, forwarded)

    def _open(self, deadline: float) -> None:
        from edgefwd.errors import QueueOpenError
        from edgefwd.queue import Queue

        while self.queue is None:
            try:
                self.queue = Queue(self.data_dir, self.max_bytes, readonly=True)
            except QueueOpenError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def sample(self) -> tuple[float, int, int]:
        c = self.queue.counters()
        s = (time.time(), c["received"], c["forwarded"])
        self.samples.append(s)
        return s

    def wait(self, received: int, forwarded: int, timeout: float, on_tick=None) -> None:
        deadline = time.monotonic() + timeout
        self._open(deadline)
        while True:
            _, r, f = self.sample()
            if on_tick is not None:
                on_tick()
            if r >= received and f >= forwarded:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue counters received={r} forwarded={f}, wanted {received}/{forwarded}")
            time.sleep(self.interval)

    def commits(self) -> int:
        """Batches ever committed by ingest (the queue's next batch id - 1)."""
        import struct

        return struct.unpack(">Q", self.queue._read_meta(b"next_batch"))[0] - 1

    def first(self, index: int, at_least: int) -> tuple[float, int] | None:
        """(time, value) of the first sample whose counter `index` (1 received, 2 forwarded)
        was >= at_least."""
        for s in self.samples:
            if s[index] >= at_least:
                return s[0], s[index]
        return None

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
            self.queue = None


class RssSampler:
    """Max RSS of some pids, sampled at most every `every` seconds (call tick() often)."""

    def __init__(self, every: float = 0.25):
        self.every = every
        self.last = 0.0
        self.pids: dict[str, int | None] = {}
        self.max: dict[str, float] = {}

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        for name, pid in self.pids.items():
            r = rss_mb(pid)
            if r is not None:
                self.max[name] = max(self.max.get(name, 0.0), r)


def wipe(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


# --------------------------------------------------------------------------- one run

PRODUCER_PROPS = {
    # The same producer settings edgefwd uses (python/edgefwd/kafka_props.py), so that the
    # DIY bridge differs from edgefwd only by the disk queue and the ack discipline.
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
    "compression.type": "lz4",
    "linger.ms": 5,
}

AGENT_VARIANTS = ("edgefwd", "edgefwd_threads", "edgefwd_ingest_only")


class Bench:
    """Runs one variant at a time against shared brokers and returns its raw figures."""

    def __init__(self, brokers: Brokers, workdir: Path, n: int, size: int, devices: int, name: str,
                 kafka_topic: str = "bench", timeout: float = 240.0):
        self.b = brokers
        self.workdir = Path(workdir)
        self.n, self.size, self.devices = n, size, devices
        self.name = name
        self.kafka_topic = kafka_topic
        self.timeout = timeout
        self.max_bytes = 1 << 30

    # ids --------------------------------------------------------------------------
    def ids(self, variant: str, protocol: str, mode: str, rnd: int) -> tuple[str, str]:
        gw = f"{self.name}-{variant.replace('+', '-')}-{'v5' if protocol == '5' else 'v311'}-{mode}-r{rnd}"
        client_id = f"edgefwd-{gw}" if variant.split("+")[0] in AGENT_VARIANTS else f"bench-{gw}"
        return gw, client_id

    def prime(self, variant: str, protocol: str, mode: str, rnd: int) -> None:
        prime_session(self.b.mq.host, self.b.mq.port, self.ids(variant, protocol, mode, rnd)[1], protocol)

    def publish(self, protocol: str) -> Role:
        return Role("publish", {
            "host": self.b.mq.host, "port": self.b.mq.port, "protocol": protocol, "n": self.n,
            "size": self.size, "devices": self.devices, "client_id": f"bench-pub-{time.monotonic_ns()}",
            "timeout": self.timeout,
        }, self.workdir)

    def agent_config(self, gw: str, protocol: str, rundir: Path, compression: str | None = None) -> dict:
        """The agent's config as shipped; `compression` set only when a variant asks."""
        from edgefwd_dev.agent_runner import make_config

        queue = {"max_bytes": "1GiB"}
        if compression:
            queue["compression"] = compression
        return make_config(
            rundir, mqtt_port=self.b.mq.port, bootstrap=self.b.kafka.bootstrap if self.b.kafka else "127.0.0.1:9",
            routes=[{"mqtt_filter": FILTER, "kafka_topic": self.kafka_topic, "kafka_key": "${1}"}],
            gateway_id=gw, protocol=protocol, queue=queue, log_level="warning",
        )

    # one variant --------------------------------------------------------------------
    def run(self, variant: str, protocol: str, mode: str, rnd: int) -> dict[str, Any]:
        """mode "catchup": the broker already holds N messages for this variant's session.
        mode "live": the publisher starts once the variant is connected."""
        gw, client_id = self.ids(variant, protocol, mode, rnd)
        rundir = self.workdir / gw
        rundir.mkdir(parents=True, exist_ok=True)
        if mode == "live":
            prime_session(self.b.mq.host, self.b.mq.port, client_id, protocol)
        try:
            if variant.split("+")[0] in AGENT_VARIANTS:
                out = self._run_edgefwd(variant, gw, protocol, mode, rundir)
            else:
                out = self._run_client(variant, client_id, protocol, mode, rundir)
        finally:
            wipe(rundir)
        out.update(variant=variant, protocol=protocol, mode=mode, round=rnd, n=self.n)
        return out

    def _run_client(self, variant: str, client_id: str, protocol: str, mode: str, rundir: Path) -> dict:
        args = {"host": self.b.mq.host, "port": self.b.mq.port, "protocol": protocol, "n": self.n,
                "client_id": client_id, "filter": FILTER, "timeout": self.timeout}
        if variant == "diy_bridge":
            args.update(kafka_topic=self.kafka_topic, producer={"bootstrap.servers": self.b.kafka.bootstrap, **PRODUCER_PROPS})
        role = Role("diy" if variant == "diy_bridge" else "bare", args, rundir)
        rss = RssSampler()
        rss.pids["process"] = role.pid
        try:
            role.wait("ready", 30)
            pub = self.publish(protocol) if mode == "live" else None
            deadline = time.monotonic() + self.timeout
            while True:  # sample RSS while it runs
                rss.tick()
                if any(e.get("event") in ("done", "error", "exit") for e in role.events):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{variant} did not finish")
                time.sleep(0.05)
            done = role.wait("done", 5)
            pub_done = pub.wait("done", self.timeout) if pub else None
        finally:
            role.join(10)
        out: dict[str, Any] = {"rss_max_mb": {"process": round(rss.max.get("process", done["maxrss_mb"]), 1)}}
        t0 = pub_done["t_start"] if pub_done else done["t_first"]
        n_eff = self.n if pub_done else self.n - 1
        out["e2e_s" if variant == "diy_bridge" else "ingest_s"] = done["t_last"] - t0
        out["e2e_rate" if variant == "diy_bridge" else "ingest_rate"] = n_eff / (done["t_last"] - t0)
        if pub_done:
            out["publisher_rate"] = pub_done["rate"]
        return out

    def _run_edgefwd(self, variant: str, gw: str, protocol: str, mode: str, rundir: Path) -> dict:
        from edgefwd_dev.agent_runner import AgentRunner

        # "edgefwd+none": the same variant with queue.compression set
        variant, _, compression = variant.partition("+")
        runner = AgentRunner(rundir, self.agent_config(gw, protocol, rundir, compression or None))
        watcher = QueueWatcher(runner.data_dir, self.max_bytes)
        rss = RssSampler()
        role = None
        t_spawn = time.time()
        if variant == "edgefwd":
            runner.start()
            main_pid = runner.pid
        else:
            role = Role("inproc", {"config": str(runner.config_path),
                                   "drainer": "thread" if variant == "edgefwd_threads" else "none"}, rundir)
            main_pid = role.pid
        rss.pids["main"] = main_pid
        try:
            if mode == "live":
                self._wait_ready(variant, runner, role)
            pub = self.publish(protocol) if mode == "live" else None
            want_fwd = 0 if variant == "edgefwd_ingest_only" else self.n
            dpid: list[int | None] = [None]

            def tick() -> None:
                if variant == "edgefwd" and dpid[0] is None:
                    dpid[0] = drainer_pid(main_pid)
                    rss.pids["drainer"] = dpid[0]
                rss.tick()

            watcher.wait(self.n, want_fwd, self.timeout, on_tick=tick)
            commits = watcher.commits()
            io = {"main": proc_io(main_pid)}
            if dpid[0]:
                io["drainer"] = proc_io(dpid[0])
            pub_done = pub.wait("done", self.timeout) if pub else None
        finally:
            if role is not None:
                role.terminate()
            elif runner.running():
                runner.stop()
            watcher.close()
        r_first = watcher.first(1, 1)
        t_recv = watcher.first(1, self.n)[0]
        if pub_done:
            t0, c0 = pub_done["t_start"], 0
        else:
            t0, c0 = r_first
        out: dict[str, Any] = {
            "ingest_s": t_recv - t0,
            "ingest_rate": (self.n - c0) / (t_recv - t0),
            "first_commit_after_start_s": round(r_first[0] - t_spawn, 3),
            "commits": commits,
            "messages_per_commit": round(self.n / commits, 1) if commits else None,
        }
        if want_fwd:
            t_fwd = watcher.first(2, self.n)[0]
            out["e2e_s"] = t_fwd - t0
            out["e2e_rate"] = (self.n - c0) / (t_fwd - t0)
        if pub_done:
            out["publisher_rate"] = pub_done["rate"]
        payload_bytes = self.n * self.size
        wb = {k: v.get("write_bytes", 0) for k, v in io.items()}
        out["write_bytes"] = wb
        out["write_bytes_per_payload_byte"] = {k: round(v / payload_bytes, 4) for k, v in wb.items()}
        out["write_bytes_per_payload_byte"]["total"] = round(sum(wb.values()) / payload_bytes, 4)
        if commits:
            out["main_write_bytes_per_commit"] = round(wb["main"] / commits)
        out["rss_max_mb"] = {k: round(v, 1) for k, v in rss.max.items()}
        return out

    def _wait_ready(self, variant: str, runner, role, timeout: float = 30.0) -> None:
        if role is not None:
            role.wait("ready", timeout)
            return
        status = runner.runtime_dir / "status.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                doc = json.loads(status.read_text())
                if doc["mqtt"]["connected"]:
                    return
            except (OSError, ValueError, KeyError):
                pass
            if not runner.running():
                raise RuntimeError(f"agent exited:\n{runner.log_tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"agent not connected after {timeout}s:\n{runner.log_tail()}")


def run_rounds(bench: Bench, doc: dict, variants: list[str], protocols: list[str], modes: list[str],
               rounds: int) -> None:
    """Every variant once per round, rounds interleaved; the order of variants rotates from
    round to round so that none always runs first (or right after the publisher)."""
    for rnd in range(1, rounds + 1):
        for protocol in protocols:
            for mode in modes:
                order = variants[(rnd - 1) % len(variants):] + variants[: (rnd - 1) % len(variants)]
                if mode == "catchup":
                    for v in order:
                        bench.prime(v, protocol, mode, rnd)
                    pub = bench.publish(protocol)
                    pub_done = pub.wait("done", bench.timeout)
                    pub.join()
                    log(f"round {rnd} MQTT {protocol} catchup: {bench.n} published for {len(order)} sessions "
                        f"at {pub_done['rate']:.0f}/s")
                for v in order:
                    res = bench.run(v, protocol, mode, rnd)
                    doc["runs"].append(res)
                    log(f"round {rnd} MQTT {protocol} {mode:7s} {v:20s} "
                        + " ".join(f"{k}={res[k]:.0f}" for k in ("ingest_rate", "e2e_rate") if k in res)
                        + (f" wb/pb={res['write_bytes_per_payload_byte']}" if "write_bytes_per_payload_byte" in res else "")
                        + f" rss={res.get('rss_max_mb')}")


def aggregate(doc: dict, metrics: list[str]) -> None:
    """results[protocol][mode][variant][metric] = summary over rounds."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        groups.setdefault((r["protocol"], r["mode"], r["variant"]), []).append(r)
    for (protocol, mode, variant), runs in groups.items():
        dst = doc["results"].setdefault(protocol, {}).setdefault(mode, {}).setdefault(variant, {})
        for m in metrics:
            vals = _metric_values(runs, m)
            if vals:
                dst[m] = summarize(vals)


def _metric_values(runs: list[dict], metric: str) -> list[float]:
    out = []
    for r in sorted(runs, key=lambda r: r["round"]):
        v: Any = r
        for part in metric.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            out.append(v)
    return out


def add_ratio(doc: dict, name: str, metric_a: tuple[str, str], metric_b: tuple[str, str]) -> None:
    """ratios[protocol][mode][name] from (variant, metric) pairs, per round and of medians."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in doc["runs"]:
        groups.setdefault((r["protocol"], r["mode"]), {}).setdefault(r["variant"], []).append(r)
    for (protocol, mode), by_variant in groups.items():
        (va, ma), (vb, mb) = metric_a, metric_b
        if va not in by_variant or vb not in by_variant:
            continue
        a = _metric_values(by_variant[va], ma)
        b = _metric_values(by_variant[vb], mb)
        if a and b and len(a) == len(b):
            doc["ratios"].setdefault(protocol, {}).setdefault(mode, {})[name] = ratio_of_medians(a, b)

"""What the MQTT -> Kafka benchmarks share: the result schema, the brokers, the processes.

Result schema (version 1), one JSON file per benchmark run under bench/results/:

    {"schema": 1,
     "bench": "e2e" | "ingest",
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
    """`count` distinct JSON telemetry payloads of exactly `size` bytes (padded)."""
    out = []
    for i in range(count):
        body = (
            f'{{"device":"dev{i % 100:03d}","n":{i},"ts":{1795600000.123 + i:.3f},'
            f'"rpm":{800 + (i * 37) % 4000},"temp_c":{60 + (i * 7) % 50}.{i % 10},'
            f'"lat":48.{(i * 7919) % 1000000:06d},"lon":11.{(i * 104729) % 1000000:06d},"pad":"'
        )
        pad = size - len(body) - 2
        if pad < 0:
            raise ValueError(f"payload size {size} too small")
        out.append((body + "x" * pad + '"}').encode())
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
        "confluent_kafka": confluent_kafka.version()[0],
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

"""`edgefwd run`: the agent process.

The main process holds the data directory's lock, runs ingest (paho's network thread and the
committer thread) and, once a second, writes the status snapshot.  The drainer runs in a child
process so that producing to Kafka never takes the GIL from ingest; the child dies with the
agent (PR_SET_PDEATHSIG) and the agent restarts it if it dies alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

from edgefwd.config import Config
from edgefwd.errors import QueueOpenError
from edgefwd.snapshot import read_json, write_snapshot

log = logging.getLogger("edgefwd.agent")

EX_OK = 0
EX_SOFTWARE = 70
EX_CANTCREAT = 73  # the queue cannot be opened: refuse to run (never fall back to memory)
EX_TEMPFAIL = 75  # another agent holds the data directory
EX_CONFIG = 78

STATUS_FILE = "status.json"
DRAINER_STATE_FILE = "drainer.json"
LOCK_FILE = "agent.lock"
_RATE_WINDOW_S = 10.0
_DRAINER_RESTART_MAX_S = 30.0


def setup_logging(level: str, role: str = "agent") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s level=%(levelname)s role={role} logger=%(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class DataDirLock:
    """An exclusive flock on data_dir/agent.lock: one agent per queue.

    `edgefwd status` asks for a shared lock without blocking: refused means an agent runs.
    """

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(self.fd)
                self.fd = None
                return False
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return True


def agent_running(data_dir: Path) -> bool:
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


class RateMeter:
    """Per-second rates of counters over a sliding window."""

    def __init__(self, window_s: float = _RATE_WINDOW_S):
        self.samples: deque[tuple[float, dict[str, int]]] = deque()
        self.window_s = window_s

    def add(self, now: float, counters: dict[str, int]) -> dict[str, float]:
        self.samples.append((now, counters))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        dt = now - t0
        if dt <= 0:
            return {name: 0.0 for name in counters}
        return {name: (counters[name] - c0.get(name, 0)) / dt for name in counters}


class Agent:
    def __init__(self, config: Config):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.runtime_dir = Path(config.runtime_dir)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._rates = RateMeter()
        self._drainer: multiprocessing.process.BaseProcess | None = None
        self._drainer_restarts = 0
        self._drainer_next_start = 0.0

    # ---------------------------------------------------------------- lifecycle
    def run(self) -> int:
        from edgefwd.ingest import Ingest
        from edgefwd.queue import Queue

        for directory in (self.data_dir, self.runtime_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            except OSError as exc:
                log.error("event=directory_unusable path=%s error=%r", directory, str(exc))
                return EX_CANTCREAT
        lock = DataDirLock(self.data_dir)
        if not lock.acquire():
            log.error("event=already_running data_dir=%s detail='another edgefwd agent holds its lock'", self.data_dir)
            return EX_TEMPFAIL
        try:
            self.queue = Queue(self.data_dir, self.config.queue.max_bytes)
        except QueueOpenError as exc:
            log.error("event=queue_open_failed error=%r detail='refusing to run without the durable queue'", str(exc))
            return EX_CANTCREAT
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        self.ingest = Ingest(self.config, self.queue)
        log.info(
            "event=agent_started pid=%d gateway=%s epoch=%s protocol=%s routes=%d subscriptions=%r",
            os.getpid(),
            self.config.gateway_id,
            self.queue.epoch,
            self.config.mqtt.protocol,
            len(self.config.routes),
            self.ingest.subscriptions,
        )
        self._start_drainer()
        self.ingest.start()
        interval = self.config.status_interval_s
        status_failed = False
        while not self._stop.wait(interval):
            self._supervise_drainer()
            try:
                self.write_status()
                status_failed = False
            except OSError as exc:  # never let a status file stop the agent that guards the data
                if not status_failed:
                    log.error("event=status_write_failed error=%r", str(exc))
                status_failed = True
        log.info("event=agent_stopping")
        self.ingest.stop()
        self._stop_drainer()
        with contextlib.suppress(OSError):
            self.write_status(running=False)
        self.queue.close()
        log.info("event=agent_stopped")
        return EX_OK

    def _start_drainer(self) -> None:
        from edgefwd.drainer import drainer_process_main

        ctx = multiprocessing.get_context("spawn")
        self._drainer = ctx.Process(
            target=drainer_process_main,
            args=(self.config, str(self.runtime_dir / DRAINER_STATE_FILE)),
            name="edgefwd-drainer",
            daemon=False,
        )
        self._drainer.start()

    def _supervise_drainer(self) -> None:
        if self._drainer is None or self._drainer.is_alive():
            return
        now = time.monotonic()
        if self._drainer_next_start == 0.0:
            log.error("event=drainer_died exitcode=%s", self._drainer.exitcode)
            delay = min(2.0**self._drainer_restarts, _DRAINER_RESTART_MAX_S)
            self._drainer_next_start = now + delay
        if now >= self._drainer_next_start:
            self._drainer_restarts += 1
            self._drainer_next_start = 0.0
            self._start_drainer()

    def _stop_drainer(self) -> None:
        if self._drainer is None:
            return
        if self._drainer.is_alive():
            self._drainer.terminate()  # SIGTERM: the drainer finishes what Kafka confirms
            self._drainer.join(20)
        if self._drainer.is_alive():
            self._drainer.kill()
            self._drainer.join(5)

    # ---------------------------------------------------------------- status
    def write_status(self, running: bool = True) -> None:
        stats = self.queue.stats()
        counters = stats["counters"]
        drainer_state = read_json(self.runtime_dir / DRAINER_STATE_FILE) or {}
        now = time.time()
        rates = self._rates.add(
            now,
            {
                "received": counters["received"],
                "forwarded": counters["forwarded"],
                "dropped": counters["dropped.queue_full"] + counters["dropped.expired"],
            },
        )
        mqtt_state = self.ingest.state
        snapshot = {
            "written_at": now,
            "gateway_id": self.config.gateway_id,
            "agent": {"running": running, "pid": os.getpid(), "started_at": self.started_at},
            "clock": {"synchronized": self.ingest.clock_synced},
            "mqtt": {
                "connected": mqtt_state.connected,
                "session_present": mqtt_state.session_present,
                "last_error": mqtt_state.last_error,
                "since": mqtt_state.since,
                "blocked": mqtt_state.blocked,
                "session_lost_at": mqtt_state.session_lost_at,
            },
            "drainer": {
                "pid": drainer_state.get("pid"),
                "alive": bool(self._drainer and self._drainer.is_alive()),
                "restarts": self._drainer_restarts,
                "written_at": drainer_state.get("time"),
            },
            "kafka": {"delivery": self.config.kafka.delivery, **drainer_state.get("kafka", {})},
            "in_flight": drainer_state.get("in_flight", 0),
            "queue": {
                "capacity_bytes": self.config.queue.max_bytes,
                "on_full": self.config.queue.on_full,
                "oldest_receive_ms": stats["oldest_receive_ms"],
            },
            "counters": counters,
            "rates": {
                "received_per_s": rates["received"],
                "forwarded_per_s": rates["forwarded"],
                "dropped_per_s": rates["dropped"],
            },
        }
        write_snapshot(self.runtime_dir / STATUS_FILE, snapshot)


def run(config: Config) -> int:
    setup_logging(config.log_level)
    return Agent(config).run()

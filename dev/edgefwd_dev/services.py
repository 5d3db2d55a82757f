"""Real Mosquitto and Kafka servers for development, tests, benchmarks and the demo.

Every server listens on 127.0.0.1 only, on a free port, with all its files (config, data,
logs, stdout/stderr) inside the workdir it is given. Each process runs in its own process
group (its own session), so signals sent to it never reach the test runner, and:

- an atexit hook SIGKILLs every server this Python process started and did not stop;
- the servers are spawned from one long-lived daemon thread through
  ``setpriv --pdeathsig KILL``, so the kernel kills them even when this Python process dies
  without running atexit (SIGKILL of pytest, a CI timeout). ``detached=True`` (used by
  scripts/services.sh) turns both off and writes a state file instead.

Command line (what scripts/services.sh calls)::

    python -m edgefwd_dev up|down|status [--dir /tmp/edgefwd-dev]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

DEV_DIR = Path(__file__).resolve().parent.parent  # <repo>/dev
KAFKA_POM = DEV_DIR / "kafka-pom.xml"
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cache_dir() -> Path:
    """EDGEFWD_CACHE, or ~/.cache/edgefwd."""
    env = os.environ.get("EDGEFWD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgefwd"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text[-lines:])


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(-1 or 0, ...) would address many processes
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ process spawning

_SETPRIV = shutil.which("setpriv")


class _Spawner:
    """Runs Popen on one daemon thread that lives as long as the process: PR_SET_PDEATHSIG
    fires when the *thread* that forked the child exits, so children must not be forked
    from short-lived threads (a chaos thread that restarts a broker, for example)."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            fn, box, done = self._q.get()
            try:
                box.append((True, fn()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append((False, e))
            done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="edgefwd-dev-spawner", daemon=True
                )
                self._thread.start()
        box: list = []
        done = threading.Event()
        self._q.put((fn, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value


_spawner = _Spawner()
_live: set["_Service"] = set()
_live_lock = threading.Lock()


def _cleanup_all() -> None:
    with _live_lock:
        services = list(_live)
    for svc in services:
        with contextlib.suppress(Exception):
            svc.kill()


atexit.register(_cleanup_all)


def _spawn(argv: list[str], cwd: Path, log_stem: str, env: dict | None, detached: bool):
    """Start argv in its own session; stdout/stderr appended to cwd/<log_stem>.out/.err."""
    if not detached and _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--"] + argv
    out = open(cwd / f"{log_stem}.out", "ab")
    err = open(cwd / f"{log_stem}.err", "ab")

    def popen() -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,  # own session and process group
            close_fds=True,
        )

    try:
        return popen() if detached else _spawner.call(popen)
    finally:
        out.close()
        err.close()


class _Service:
    """Common process handling of Mosquitto and Kafka."""

    name = "service"
    stop_timeout = 10.0

    def __init__(self, workdir: Path, detached: bool) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.detached = detached
        self.proc: subprocess.Popen | None = None
        self._paused = False

    # subclasses: _argv(), _wait_ready(deadline), port
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        pass

    def _wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    def _env(self) -> dict | None:
        return None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> "_Service":
        if self.running:
            return self
        self._prepare()
        t0 = time.monotonic()
        self.proc = _spawn(self._argv(), self.workdir, self.name, self._env(), self.detached)
        self._paused = False
        if not self.detached:
            with _live_lock:
                _live.add(self)
        try:
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.kill()
            raise
        self.last_start_s = time.monotonic() - t0
        return self

    def _check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode} while {what}; "
                f"log tail:\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        return _tail(self.workdir / f"{self.name}.err")

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: SIGTERM, wait (the server saves its state), SIGKILL after timeout."""
        if self.proc is None:
            return
        t0 = time.monotonic()
        if self._paused:
            self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        self.last_stop_s = time.monotonic() - t0
        self._forget()

    def kill(self) -> None:
        """SIGKILL the whole process group, no chance to save anything."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._paused = False
        self._forget()

    def restart(self, graceful: bool = True, timeout: float = 60.0) -> "_Service":
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_port(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive(f"waiting for port {port}")
            if port_open(port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not open port {port}; log tail:\n{self._log_tail()}")


# ------------------------------------------------------------------------ Mosquitto


class Mosquitto(_Service):
    """Our own Mosquitto (never the Debian system service), configured not to lose data.

    ``extra_conf`` overrides or adds mosquitto.conf lines: ``{"autosave_interval": 5}``;
    a value of None removes a default line, a list repeats the key.
    """

    name = "mosquitto"
    stop_timeout = 10.0

    DEFAULT_CONF: dict[str, Any] = {
        "allow_anonymous": "true",
        # A graceful stop (SIGTERM) writes the database, so a restart keeps persistent
        # sessions and the messages queued for them. Between saves (autosave_interval,
        # default 1800 s) a SIGKILL or power cut loses what was queued: see NOTES.md.
        "persistence": "true",
        "persistence_file": "mosquitto.db",
        # The default (1000) drops messages for a slow or absent subscriber without a
        # word, QoS 1 included (NOTES.md). Queue practically without limit instead.
        "max_queued_messages": 1000000,
        "max_queued_bytes": 0,
        # Per-client window of unacknowledged QoS 1 messages the broker sends before it
        # waits for PUBACKs (default 20). edgefwd acks only after an LMDB group commit, so
        # a wider window keeps throughput up with batches of hundreds; its batches also
        # close on a time limit, so they never wait for the window to fill.
        "max_inflight_messages": 1000,
        "set_tcp_nodelay": "true",
        "log_type": ["error", "warning", "notice", "information"],
        "connection_messages": "true",
        "log_timestamp": "true",
        "log_timestamp_format": "%Y-%m-%dT%H:%M:%S",
    }

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_conf: dict | None = None,
        detached: bool = False,
    ) -> None:
        super().__init__(workdir, detached)
        self.port = port or free_port()
        self.host = LOOPBACK
        self.extra_conf = dict(extra_conf or {})
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.data_dir = self.workdir / "mosquitto-data"

    def _conf_text(self) -> str:
        conf: dict[str, Any] = dict(self.DEFAULT_CONF)
        conf["persistence_location"] = str(self.data_dir) + "/"
        conf["log_dest"] = f"file {self.log_path}"
        if os.geteuid() == 0:
            # As root, Mosquitto drops to user "mosquitto", which cannot write our workdir.
            conf["user"] = "root"
        conf.update(self.extra_conf)
        lines = ["# written by edgefwd_dev.services.Mosquitto", f"listener {self.port} {LOOPBACK}"]
        for key, value in conf.items():
            if value is None:
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, bool):
                    v = "true" if v else "false"
                lines.append(f"{key} {v}")
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._conf_text())

    def _argv(self) -> list[str]:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [exe, "-c", str(self.conf_path)]

    def _wait_ready(self, deadline: float) -> None:
        self._wait_port(self.port, deadline)

    def _log_tail(self) -> str:
        return _tail(self.log_path) + "\n" + _tail(self.workdir / "mosquitto.err")

    def __repr__(self) -> str:
        return f"Mosquitto({self.host}:{self.port}, pid={self.pid}, workdir={self.workdir})"


# ---------------------------------------------------------------------------- Kafka


def kafka_version(pom: Path = KAFKA_POM) -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not m:
        raise RuntimeError(f"no <kafka.version> in {pom}")
    return m.group(1).strip()


def ensure_kafka_jars(cache: Path | None = None, pom: Path = KAFKA_POM, quiet: bool = True) -> Path:
    """Fetch Kafka's runtime jars with Maven once; return the libs folder.

    The folder is complete when its stamp file holds the hash of dev/kafka-pom.xml, so
    editing the pom (a new Kafka, a pinned slf4j) fetches again; otherwise Maven is skipped.
    A file lock makes parallel callers (pytest-xdist, setup.sh) wait for one another.
    """
    cache = Path(cache) if cache else cache_dir()
    root = cache / f"kafka-{kafka_version(pom)}"
    libs = root / "libs"
    stamp = libs / ".edgefwd-complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()

    def complete() -> bool:
        try:
            return stamp.read_text().strip() == digest and any(libs.glob("kafka_2.13-*.jar"))
        except OSError:
            return False

    if complete():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError("mvn not found: run scripts/setup.sh (installs maven)")
        tmp = root / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
        if quiet:
            cmd.insert(1, "-q")
        subprocess.run(cmd, check=True)
        (tmp / ".edgefwd-complete").write_text(digest + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    return libs


@dataclasses.dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: dict[str, bytes]


LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="[%d{{ISO8601}}] %-5p %c{{1}} - %m%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
    <Logger name="kafka.server.ControllerServer" level="INFO"/>
    <Logger name="kafka.server.SharedServer" level="INFO"/>
    <Logger name="kafka.Kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


def _new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): URL-safe base64 of 16 bytes, no padding,
    # never starting with "-" (it would read as a command-line option).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class Kafka(_Service):
    """A single-node KRaft Kafka (broker+controller) from Maven Central jars.

    Topics are NOT auto-created (``auto_create_topics=False``), like most production
    clusters: call create_topic(). ``extra_props`` adds or overrides server.properties.
    JVM options: ``jvm_opts`` or env EDGEFWD_KAFKA_JVM_OPTS (appended).
    """

    name = "kafka"
    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        extra_props: dict | None = None,
        auto_create_topics: bool = False,
        jvm_opts: Iterable[str] = (),
        detached: bool = False,
    ) -> None:
        super().__init__(workdir, detached)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.host = LOOPBACK
        self.extra_props = dict(extra_props or {})
        self.auto_create_topics = auto_create_topics
        self.jvm_opts = list(jvm_opts)
        self.data_dir = self.workdir / "kafka-data"
        self.props_path = self.workdir / "server.properties"
        self.log4j_path = self.workdir / "log4j2.xml"
        self.log_path = self.workdir / "kafka.log"
        self.libs: Path | None = None
        self._admin = None

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _props(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 3,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 5,  # 50 by default: slow first group lookup
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # After a SIGKILL the restarted broker cannot register again until the old
            # registration's session expires (default 9 s): keep kill -9 restarts quick.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
        }
        p.update(self.extra_props)
        return p

    def _prepare(self) -> None:
        self.libs = ensure_kafka_jars()
        self.props_path.write_text(
            "# written by edgefwd_dev.services.Kafka\n"
            + "".join(f"{k}={v}\n" for k, v in self._props().items() if v is not None)
        )
        self.log4j_path.write_text(LOG4J2_XML.format(log=self.log_path))
        if not (self.data_dir / "meta.properties").exists():
            self._format()

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        if home and (Path(home) / "bin" / "java").exists():
            return str(Path(home) / "bin" / "java")
        return shutil.which("java") or "java"

    def _jvm_common(self) -> list[str]:
        return [
            self._java(),
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp", f"{self.libs}/*",
        ]

    def _format(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cid = _new_cluster_id()
        argv = self._jvm_common()
        argv[1:1] = ["-Xmx256m", "-XX:TieredStopAtLevel=1"]
        argv += ["kafka.tools.StorageTool", "format", "-t", cid, "-c", str(self.props_path)]
        with open(self.workdir / "kafka-format.log", "ab") as out:
            r = subprocess.run(argv, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(
                f"kafka storage format failed ({r.returncode}):\n"
                f"{_tail(self.workdir / 'kafka-format.log')}"
            )
        (self.workdir / "cluster.id").write_text(cid + "\n")

    def _argv(self) -> list[str]:
        argv = self._jvm_common()
        extra = self.jvm_opts + os.environ.get("EDGEFWD_KAFKA_JVM_OPTS", "").split()
        argv[1:1] = ["-Xmx512m", "-Xms256m"] + extra
        return argv + ["kafka.Kafka", str(self.props_path)]

    def _log_tail(self) -> str:
        return _tail(self.log_path) + "\n" + _tail(self.workdir / "kafka.err")

    def admin_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 300,
            "socket.connection.setup.timeout.ms": 2000,
        }

    def admin(self):
        """A confluent_kafka AdminClient for this broker (cached)."""
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self.admin_config())
        return self._admin

    def _wait_ready(self, deadline: float) -> None:
        self._wait_port(self.port, deadline)
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.admin_config())
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive("waiting for metadata")
            try:
                md = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                if md.brokers:
                    self._admin = admin
                    return
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"kafka metadata not answered ({last}); log tail:\n{self._log_tail()}")

    def start(self, timeout: float = 90.0) -> "Kafka":
        self._admin = None
        return super().start(timeout=timeout)  # type: ignore[return-value]

    def stop(self, timeout: float | None = None) -> None:
        self._admin = None
        super().stop(timeout)

    def kill(self) -> None:
        self._admin = None
        super().kill()

    # -------------------------------------------------------------- topics and records

    def create_topic(
        self, name: str, partitions: int = 3, config: dict | None = None, timeout: float = 30.0
    ) -> None:
        """Create a topic (replication 1) and wait until every partition has a leader.
        An existing topic is accepted as it is."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        futs = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        try:
            futs[name].result(timeout=timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = admin.list_topics(topic=name, timeout=5)
            t = md.topics.get(name)
            if t is not None and t.error is None and t.partitions and all(
                p.leader >= 0 and p.error is None for p in t.partitions.values()
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"topic {name} has no leaders after {timeout}s")

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        self.admin().delete_topics([name], operation_timeout=timeout)[name].result(timeout)

    def topics(self) -> set[str]:
        return set(self.admin().list_topics(timeout=10).topics)

    def produce(self, topic: str, records: Iterable[tuple], timeout: float = 30.0) -> None:
        """Test helper: produce (key, value[, headers]) tuples with acks=all and flush."""
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                      "enable.idempotence": True, "partitioner": "murmur2_random"})
        errors: list = []

        def report(err, _msg) -> None:
            if err is not None:
                errors.append(err)

        for rec in records:
            key, value, *rest = rec
            p.produce(topic, value=value, key=key, headers=rest[0] if rest else None,
                      on_delivery=report)
            p.poll(0)
        left = p.flush(timeout)
        if left or errors:
            raise RuntimeError(f"produce to {topic}: {left} undelivered, errors {errors[:3]}")

    def read_all(
        self,
        topic: str,
        expected: int | None = None,
        timeout: float = 30.0,
        idle: float = 0.5,
        isolation_level: str = "read_committed",
    ) -> list[KafkaRecord]:
        """Read a topic from the beginning with a fresh consumer group (read_committed).

        With ``expected``: stops once it has at least that many records AND has reached
        the end of every partition (so extra records already there, such as duplicates,
        are returned too), or when ``timeout`` passes (returning what it has).
        Without: stops once every partition is at its end and nothing new came for
        ``idle`` seconds, or at ``timeout``. Records are sorted by (partition, offset).
        """
        from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
        from confluent_kafka import OFFSET_BEGINNING

        deadline = time.monotonic() + timeout
        c = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"edgefwd-dev-read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": isolation_level,
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.max.ms": 500,
        })
        records: list[KafkaRecord] = []
        try:
            parts: list[int] = []
            while not parts:
                md = c.list_topics(topic=topic, timeout=max(0.1, min(5.0, deadline - time.monotonic())))
                t = md.topics.get(topic)
                if t is not None and t.error is None and t.partitions:
                    parts = sorted(t.partitions)
                elif time.monotonic() >= deadline:
                    return records
                else:
                    time.sleep(0.1)
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            at_end: set[int] = set()
            last_new = time.monotonic()
            while True:
                now = time.monotonic()
                caught_up = len(at_end) == len(parts)
                if expected is not None:
                    if len(records) >= expected and caught_up:
                        break
                elif caught_up and now - last_new >= idle:
                    break
                if now >= deadline:
                    break
                for m in c.consume(num_messages=10000, timeout=min(0.2, deadline - now)):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            at_end.add(m.partition())
                            continue
                        if err.retriable() or not err.fatal():
                            continue
                        raise KafkaException(err)
                    at_end.discard(m.partition())
                    last_new = time.monotonic()
                    records.append(KafkaRecord(
                        topic=m.topic(),
                        partition=m.partition(),
                        offset=m.offset(),
                        key=m.key(),
                        value=m.value() if m.value() is not None else b"",
                        timestamp_ms=m.timestamp()[1],
                        headers={k: v for k, v in (m.headers() or [])},
                    ))
        finally:
            c.close()
        records.sort(key=lambda r: (r.partition, r.offset))
        return records

    def __repr__(self) -> str:
        return f"Kafka({self.bootstrap}, pid={self.pid}, workdir={self.workdir})"


# -------------------------------------------------------------------- fault injection


class FaultInjector:
    """Seeded faults. The seed comes from env EDGEFWD_SEED when set (to replay a run),
    else from ``seed``, else at random, and is printed so a failure can be replayed."""

    def __init__(self, seed: int | None = None, log: Callable[[str], None] | None = None) -> None:
        env = os.environ.get("EDGEFWD_SEED")
        if env:
            seed = int(env)
        elif seed is None:
            seed = random.SystemRandom().randrange(2**32)
        self.seed = seed
        self.rng = random.Random(seed)
        self.actions: list[tuple[float, str]] = []
        self._t0 = time.monotonic()
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        print(f"fault seed={seed}, replay with EDGEFWD_SEED={seed}", flush=True)

    def note(self, what: str) -> None:
        t = time.monotonic() - self._t0
        self.actions.append((t, what))
        self._log(f"[fault +{t:7.3f}s] {what}")

    @staticmethod
    def _pid(target: Any) -> int:
        if isinstance(target, int):
            return target
        if isinstance(target, _Service):
            if target.pid is None:
                raise ValueError(f"{target!r} is not running")
            return target.pid
        pid = getattr(target, "pid", None)
        if isinstance(pid, int):
            return pid
        raise TypeError(f"no pid in {target!r}")

    def _send(self, target: Any, sig: int, name: str) -> None:
        pid = self._pid(target)
        self.note(f"{name} pid {pid} ({type(target).__name__})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def kill9(self, target: Any) -> None:
        """SIGKILL a Popen, psutil.Process, pid, or a Mosquitto/Kafka (its whole group)."""
        if isinstance(target, _Service):
            self.note(f"SIGKILL {target.name} pid {target.pid}")
            target.kill()
            return
        self._send(target, signal.SIGKILL, "SIGKILL")
        waiter = getattr(target, "wait", None)
        if callable(waiter):
            with contextlib.suppress(Exception):
                waiter(10)

    def sigterm(self, target: Any) -> None:
        self._send(target, signal.SIGTERM, "SIGTERM")

    def sigstop(self, target: Any) -> None:
        if isinstance(target, _Service):
            self.note(f"SIGSTOP {target.name}")
            target.pause()
        else:
            self._send(target, signal.SIGSTOP, "SIGSTOP")

    def sigcont(self, target: Any) -> None:
        if isinstance(target, _Service):
            self.note(f"SIGCONT {target.name}")
            target.resume()
        else:
            self._send(target, signal.SIGCONT, "SIGCONT")

    def random_sleep(self, lo: float, hi: float) -> float:
        d = self.rng.uniform(lo, hi)
        time.sleep(d)
        return d

    def stop(self, service: _Service) -> None:
        self.note(f"stop {service.name}")
        service.stop()

    def start(self, service: _Service) -> None:
        self.note(f"start {service.name}")
        service.start()

    def restart(self, service: _Service, graceful: bool = True) -> None:
        self.note(f"restart {service.name} ({'graceful' if graceful else 'kill -9'})")
        service.restart(graceful=graceful)

    def outage(self, service: _Service, lo: float, hi: float, graceful: bool = True) -> float:
        """Stop (or kill -9) a service for a random while, then start it again."""
        self.note(f"outage {service.name} ({'graceful' if graceful else 'kill -9'})")
        service.stop() if graceful else service.kill()
        d = self.random_sleep(lo, hi)
        service.start()
        self.note(f"outage {service.name} over after {d:.2f}s")
        return d

    def summary(self) -> str:
        return f"seed={self.seed}\n" + "\n".join(f"+{t:.3f}s {a}" for t, a in self.actions)


# ------------------------------------------------------------- services.sh backend

STATE_FILE = "services.json"


def dev_up(root: Path) -> dict:
    root = Path(root)
    state = _read_state(root)
    if state and all(_pid_alive(s["pid"]) for s in state.values()):
        return state
    dev_down(root, quiet=True)
    mq = Mosquitto(root / "mosquitto", port=_port_or(state, "mosquitto", 1883), detached=True).start()
    kf = Kafka(root / "kafka", port=_port_or(state, "kafka", 9092), detached=True).start()
    state = {
        "mosquitto": {"pid": mq.pid, "host": mq.host, "port": mq.port, "log": str(mq.log_path),
                      "workdir": str(mq.workdir)},
        "kafka": {"pid": kf.pid, "bootstrap": kf.bootstrap, "port": kf.port,
                  "controller_port": kf.controller_port, "log": str(kf.log_path),
                  "workdir": str(kf.workdir)},
    }
    (root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    return state


def _port_or(state: dict | None, name: str, preferred: int) -> int:
    if state and name in state:
        return state[name]["port"]
    return preferred if not port_open(preferred) and _bindable(preferred) else free_port()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def _read_state(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def dev_down(root: Path, quiet: bool = False) -> None:
    state = _read_state(root) or {}
    for name in ("kafka", "mosquitto"):  # reverse order of start
        s = state.get(name)
        if not s or not _pid_alive(s["pid"]):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(s["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(s["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(s["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s["pid"], signal.SIGKILL)
        if not quiet:
            print(f"{name}: stopped (pid {s['pid']})")
    # keep the state file: the next `up` reuses its ports (and Kafka its data)
    if state:
        for s in state.values():
            s["pid"] = -1
        (Path(root) / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def _print_state(state: dict) -> None:
    mq, kf = state["mosquitto"], state["kafka"]
    print(f"mosquitto: {mq['host']}:{mq['port']}  pid {mq['pid']}  log {mq['log']}")
    print(f"kafka:     {kf['bootstrap']}  pid {kf['pid']}  log {kf['log']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="services", description="edgefwd dev servers")
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--dir", default=os.environ.get("EDGEFWD_DEV_DIR", "/tmp/edgefwd-dev"))
    a = ap.parse_args(argv)
    root = Path(a.dir)
    if a.command == "up":
        root.mkdir(parents=True, exist_ok=True)
        _print_state(dev_up(root))
        print(f"export EDGEFWD_MQTT_PORT={_read_state(root)['mosquitto']['port']} "
              f"EDGEFWD_KAFKA_BOOTSTRAP={_read_state(root)['kafka']['bootstrap']}")
        return 0
    if a.command == "down":
        dev_down(root)
        return 0
    state = _read_state(root)
    if not state:
        print(f"nothing started in {root}")
        return 3
    rc = 0
    for name, s in state.items():
        up = s["pid"] > 0 and _pid_alive(s["pid"]) and port_open(s["port"])
        rc |= 0 if up else 1
        print(f"{name}: {'up' if up else 'down'}  port {s['port']}  pid {s['pid']}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Run the real agent (`python -m edgefwd run`) as a process, as systemd would.

Used by the end-to-end tests, the crash loops, the demo and the benchmarks:

    agent = AgentRunner(workdir, make_config(workdir, mqtt_port=mq.port, bootstrap=kafka.bootstrap,
                                             routes=[...]))
    agent.start(); agent.wait_connected()
    agent.kill9(); agent.start()
    doc, rc = agent.status()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def make_config(
    workdir: Path,
    *,
    mqtt_port: int,
    bootstrap: str,
    routes: list[dict[str, Any]],
    gateway_id: str = "gw-test",
    protocol: str = "5",
    queue: dict[str, Any] | None = None,
    producer_properties: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A config document for a test agent; `extra` adds or replaces top-level keys."""
    config: dict[str, Any] = {
        "gateway_id": gateway_id,
        "data_dir": str(Path(workdir) / "data"),
        "runtime_dir": str(Path(workdir) / "run"),
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "protocol": protocol, "session_expiry": "1d"},
        "kafka": {"bootstrap_servers": bootstrap, "producer_properties": producer_properties or {}},
        "queue": {"max_bytes": "256MiB", **(queue or {})},
        "routes": routes,
    }
    config.update(extra)
    return config


class AgentRunner:
    def __init__(self, workdir: Path, config: dict[str, Any], name: str = "agent", env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # extra environment for the next start(), e.g. {"EDGEFWD_CRASH_AT": "ingest.after_commit:3"}
        self.env: dict[str, str] = dict(env or {})

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    @property
    def runtime_dir(self) -> Path:
        return Path(self.config.get("runtime_dir", "/run/edgefwd"))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        return env

    def start(self) -> "AgentRunner":
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        log = open(self.log_path, "ab")
        log.write(f"---- start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgefwd", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(),
        )
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop within {timeout}s of SIGTERM; log:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL the agent; its drainer child dies with it (PR_SET_PDEATHSIG)."""
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._wait_children_gone()

    def _wait_children_gone(self, timeout: float = 10.0) -> None:
        # The drainer holds LMDB's reader slot and the Kafka producer: a new agent must not
        # overlap with it. Its pid is in the state file it writes.
        state = self.runtime_dir / "drainer.json"
        try:
            pid = json.loads(state.read_text()).get("pid")
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            try:
                with open(f"/proc/{pid}/status") as f:
                    if "State:\tZ" in f.read():
                        return
            except OSError:
                return
            time.sleep(0.02)

    def status(self, timeout: float = 30.0) -> tuple[dict, int]:
        out = subprocess.run(
            [sys.executable, "-m", "edgefwd", "status", "--json", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
        )
        try:
            return json.loads(out.stdout), out.returncode
        except ValueError as exc:
            raise AssertionError(f"status printed no JSON (rc={out.returncode}): {out.stdout!r} {out.stderr!r}") from exc

    def status_text(self) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-m", "edgefwd", "status", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            env=self._env(),
        )
        return out.stdout, out.returncode

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.5) -> dict:
        """Poll `edgefwd status --json` until predicate(doc) holds; return that doc."""
        deadline = time.monotonic() + timeout
        doc: dict = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}) while waiting for {what}:\n{self.log_tail()}")
            doc, _ = self.status()
            try:
                if predicate(doc):
                    return doc
            except (KeyError, TypeError):
                pass
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last status: {json.dumps(doc)}\n{self.log_tail()}")

    def wait_connected(self, timeout: float = 60.0) -> dict:
        return self.wait_for(
            lambda d: d["mqtt"]["connected"] and d["agent"]["running"], timeout, "MQTT connected"
        )

    def wait_drained(self, forwarded: int, timeout: float = 120.0) -> dict:
        """Until `forwarded` records went to Kafka and nothing is left in the queue."""
        return self.wait_for(
            lambda d: d["counters"]["forwarded"] >= forwarded and d["queue"]["messages"] == 0,
            timeout,
            f"{forwarded} records forwarded and the queue empty",
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "AgentRunner":
        return self

    def __exit__(self, *exc) -> None:
        if self.running():
            try:
                self.stop(timeout=20)
            except AssertionError:
                pass

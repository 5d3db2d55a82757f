"""pytest fixtures for real servers. In a conftest.py (with <repo>/dev on sys.path):

    from edgefwd_dev.pytest_fixtures import *  # noqa: F401,F403

- ``kafka`` (session): one KRaft Kafka for the whole run, shared by every conftest that
  imports these fixtures (a process-wide singleton, so importing them in several conftest
  files does not start several brokers). Topics are not auto-created: use create_topic()
  with a name unique to the test. A test that stops or kills it must start it again; a
  test that wants to break Kafka for good should use ``kafka_factory`` instead.
- ``mosquitto`` (function): a fresh broker per test, stopped afterwards.
- ``tmp_workdir`` (function): an empty folder for the test's files.
- ``mosquitto_factory`` / ``kafka_factory`` (function): make more, private servers;
  each is killed at teardown.
- ``fault_injector`` (function): a FaultInjector; its seed is printed (shown on failure).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from .services import FaultInjector, Kafka, Mosquitto

__all__ = ["kafka", "mosquitto", "tmp_workdir", "mosquitto_factory", "kafka_factory",
           "fault_injector", "shared_kafka"]

_shared: Kafka | None = None
_shared_lock = threading.Lock()


def shared_kafka(tmp_path_factory: pytest.TempPathFactory) -> Kafka:
    """The session's Kafka; started on first use, started again if a test left it down."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Kafka(tmp_path_factory.mktemp("kafka"))
        if not _shared.running:
            _shared.start()
        return _shared


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory):
    k = shared_kafka(tmp_path_factory)
    yield k
    k.stop()  # a second finalizer (another conftest) finds it stopped: no-op


@pytest.fixture
def tmp_workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def mosquitto(tmp_workdir: Path):
    m = Mosquitto(tmp_workdir / "mosquitto")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path):
    made: list[Mosquitto] = []

    def make(**kw) -> Mosquitto:
        m = Mosquitto(tmp_path / f"mosquitto-{len(made)}", **kw)
        made.append(m)
        return m.start()

    yield make
    for m in made:
        with contextlib.suppress(Exception):
            m.kill()


@pytest.fixture
def kafka_factory(tmp_path: Path):
    made: list[Kafka] = []

    def make(**kw) -> Kafka:
        k = Kafka(tmp_path / f"kafka-{len(made)}", **kw)
        made.append(k)
        return k.start()

    yield make
    for k in made:
        with contextlib.suppress(Exception):
            k.kill()


@pytest.fixture
def fault_injector() -> FaultInjector:
    return FaultInjector()

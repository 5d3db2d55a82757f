"""The exception tree of edgefwd.

Everything edgefwd raises on purpose derives from ``EdgefwdError``, so a caller can catch
what it can handle (``QueueFullError``, ``ConfigError``) and nothing it cannot::

    EdgefwdError                      (defined by the Rust extension edgefwd._core)
    +-- TopicError                    invalid MQTT topic name or filter      (_core)
    +-- TemplateError                 a route template that cannot compile   (_core)
    +-- CorruptBatchError             a queued batch that fails its checks   (_core)
    +-- ConfigError                   the config file is wrong: file, key, line
    +-- QueueError                    the durable queue
        +-- QueueOpenError            cannot open it: the agent refuses to run
        +-- QueueFullError            full under on_full: block (or a caller asked)
        +-- DiskFullError             the disk under data_dir is full (ENOSPC)

The four root classes come from the native module so that errors raised in Rust and in
Python are one tree.
"""

from __future__ import annotations

__all__ = [
    "NATIVE_ERRORS",
    "EX_CONFIG",
    "EdgefwdError",
    "TopicError",
    "TemplateError",
    "CorruptBatchError",
    "ConfigError",
    "QueueError",
    "QueueOpenError",
    "QueueFullError",
    "DiskFullError",
]

#: Exit status for a configuration error (sysexits.h EX_CONFIG). systemd's unit lists it
#: in RestartPreventExitStatus= so a broken config does not restart-loop.
EX_CONFIG = 78

try:
    from edgefwd._core import CorruptBatchError, EdgefwdError, TemplateError, TopicError

    #: True when the exception classes are the native ones (always, in a built package).
    NATIVE_ERRORS = True
except ModuleNotFoundError as exc:
    # ------------------------------------------------------------------------------------
    # DEVELOPMENT FALLBACK ONLY. Used solely while the Rust extension has not been built
    # yet (a fresh checkout before `maturin develop`), so that pure-Python unit tests can
    # run. A built or installed edgefwd always has edgefwd._core, and then the import above
    # must succeed: if the module exists but is broken or lacks one of these names, the
    # error is raised, never papered over with these stand-ins.
    # ------------------------------------------------------------------------------------
    if exc.name != "edgefwd._core":
        raise
    NATIVE_ERRORS = False

    class EdgefwdError(Exception):  # type: ignore[no-redef]
        """Root of edgefwd's exceptions (fallback: extension not built)."""

    class TopicError(EdgefwdError):  # type: ignore[no-redef]
        """Invalid MQTT topic name or filter (fallback: extension not built)."""

    class TemplateError(EdgefwdError):  # type: ignore[no-redef]
        """A template that cannot be compiled (fallback: extension not built)."""

    class CorruptBatchError(EdgefwdError):  # type: ignore[no-redef]
        """A queued batch failed its checks (fallback: extension not built)."""


class ConfigError(EdgefwdError):
    """The configuration is wrong. Says where and what was expected.

    ``str(err)`` is ``FILE:LINE: KEY: what is wrong (what was expected)``; parts that do
    not apply are left out (``FILE: cannot read ...`` for a missing file). The message
    never contains a secret's value: values are quoted as written in the file.

    Attributes: ``path`` (the config file), ``key`` (dotted key path such as
    ``routes[1].kafka_key``, or None), ``line`` (1-based, or None), ``column`` (1-based,
    YAML syntax errors only), ``problem`` and ``expected`` (the two halves of the message).
    """

    exit_code = EX_CONFIG

    def __init__(
        self,
        path: object,
        key: str | None,
        line: int | None,
        problem: str,
        expected: str | None = None,
        *,
        column: int | None = None,
    ) -> None:
        self.path = str(path)
        self.key = key
        self.line = line
        self.column = column
        self.problem = problem
        self.expected = expected
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.key:
            parts.append(self.key)
        text = self.problem
        if self.expected:
            text += f" ({self.expected})"
        parts.append(text)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self):  # keep pickling (multiprocessing) working with keyword args
        return (
            _rebuild_config_error,
            (self.path, self.key, self.line, self.problem, self.expected, self.column),
        )


def _rebuild_config_error(path, key, line, problem, expected, column):  # pragma: no cover
    return ConfigError(path, key, line, problem, expected, column=column)


class QueueError(EdgefwdError):
    """Something is wrong with the durable queue."""


class QueueOpenError(QueueError):
    """The queue cannot be opened. The agent refuses to run; it never falls back to memory."""


class QueueFullError(QueueError):
    """The queue reached queue.max_bytes and the policy did not make room."""


class DiskFullError(QueueError):
    """The file system holding data_dir is full (ENOSPC) before queue.max_bytes was reached."""

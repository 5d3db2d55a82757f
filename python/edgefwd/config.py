"""The configuration: one YAML file, parsed once into frozen, typed objects.

``load_config(path)`` reads the file, checks every key and value, resolves secrets and
returns a :class:`Config`. Every problem is a :class:`~edgefwd.errors.ConfigError` whose
message names the file, the key path and the line, and says what was expected. The
reference of every key is docs/config.md.

Rules that apply everywhere:

* Unknown keys are errors (with the nearest known key suggested); so are duplicate keys.
* Strings where strings are meant: YAML 1.1 reads ``0042`` as a number and ``off`` as
  false, so a number/boolean/null/date where a string belongs is an error quoting the
  source text, never a guess.
* ``${env:NAME}`` and ``${file:PATH}`` in any string value are replaced by the variable /
  the file's content (one trailing newline stripped). ``$${`` is a literal ``${``. Any
  other ``${...}`` (route templates such as ``${1}``) is left for the router. In template
  values (routes[].kafka_topic/kafka_key, downlink[].kafka_topic/mqtt_topic) ``$${`` is
  passed through unchanged, so the router's template syntax sees the escape.
* Relative paths (data_dir, *_file, ``${file:...}``) are relative to the config file's
  directory.
* Error messages quote values as written in the file, never a resolved value, so no
  secret can reach a message, a log or a status output.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgefwd.errors import ConfigError, TemplateError, TopicError
from edgefwd.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Secret",
    "Properties",
    "FrozenMap",
    "TlsConfig",
    "SaslConfig",
    "MqttConfig",
    "KafkaConfig",
    "QueueConfig",
    "Route",
    "DownlinkRoute",
    "Config",
    "REFUSED_PRODUCER_PROPERTIES",
    "REFUSED_CONSUMER_PROPERTIES",
    "load_config",
    "validate_routes",
    "dump_effective",
]

DEFAULT_CONFIG_PATH: Final = "/etc/edgefwd/edgefwd.yaml"

GATEWAY_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
KAFKA_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
MIN_QUEUE_BYTES: Final = 1 << 20
MAX_PRIORITY: Final = 255
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------


class Secret:
    """A secret string. ``repr``/``str``/``format`` give ``***``; ``.reveal()`` the value.

    ``source`` says where it came from (``file /etc/edgefwd/mqtt.secret``,
    ``env MQTT_PASSWORD``, ``config file``) and is safe to show.
    """

    __slots__ = ("_value", "_source")

    def __init__(self, value: str, source: str = "") -> None:
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_source", source)

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        return self._source

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self):
        # Pickled only to hand the config to the agent's own spawned drainer process.
        return (Secret, (self._value, self._source))


_SENSITIVE_PROPERTY_RE = re.compile(r"password|secret|token|credential|oauthbearer\.config|\.pem$", re.I)


class FrozenMap(Mapping[str, Any]):
    """An immutable, picklable mapping (MappingProxyType cannot be pickled, and the
    agent hands its Config to a spawned process)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __reduce__(self):
        return (type(self), (self._data,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))


class Properties(FrozenMap):
    """An immutable str -> str mapping of librdkafka properties.

    Its repr masks values whose key looks sensitive (``*password*``, ``*secret*``, ...).
    ``dict(props)`` gives the real values for confluent-kafka.
    """

    __slots__ = ()

    def masked(self) -> dict[str, str]:
        return {k: ("***" if _SENSITIVE_PROPERTY_RE.search(k) else v) for k, v in self._data.items()}

    def __repr__(self) -> str:
        return f"Properties({self.masked()!r})"


# --------------------------------------------------------------------------------------
# The typed config
# --------------------------------------------------------------------------------------

_dc = dataclass(frozen=True, slots=True, kw_only=True)


@_dc
class TlsConfig:
    """TLS for one connection. All None (``tls: {}``) = TLS with the system's CA store.

    File paths are absolute ``str`` (what librdkafka's ``ssl.*.location`` and paho take).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: Secret | None = None


@_dc
class SaslConfig:
    mechanism: str  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    username: str
    password: Secret


@_dc
class MqttConfig:
    client_id: str  # default in the file: edgefwd-<gateway_id>
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"  # "5" | "3.1.1"
    session_expiry_s: float = 7 * 86400.0
    keepalive_s: float = 30.0
    connect_timeout_s: float = 10.0
    qos: int = 1
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None


@_dc
class KafkaConfig:
    bootstrap_servers: str
    delivery: str = "at_least_once"  # at_least_once | exactly_once
    tls: TlsConfig | None = None
    sasl: SaslConfig | None = None
    producer_properties: Mapping[str, str] = field(default_factory=Properties)
    consumer_properties: Mapping[str, str] = field(default_factory=Properties)


@_dc
class QueueConfig:
    max_bytes: int = 2 * (1 << 30)
    on_full: str = "drop_oldest"  # drop_oldest | drop_newest | block
    max_age_s: float | None = None
    commit_max_messages: int = 500
    commit_max_delay_s: float = 0.02
    compression: str = "zstd"  # none | lz4 | zstd: flash is small and wears; zstd halves JSON


@_dc
class Route:
    mqtt_filter: str
    kafka_topic: str  # template
    kafka_key: str | None = None  # template; None = no key
    priority: int = 0  # 0..255, higher survives eviction longer
    skip_retained: bool = False


@_dc
class DownlinkRoute:
    kafka_topic: str  # template: only ${gateway_id}
    mqtt_topic: str  # template: ${key}, ${gateway_id}
    max_age_s: float | None = None


@_dc
class Config:
    path: Path
    gateway_id: str
    data_dir: Path
    mqtt: MqttConfig
    kafka: KafkaConfig
    queue: QueueConfig
    routes: tuple[Route, ...]
    downlink: tuple[DownlinkRoute, ...] = ()
    log_level: str = "info"
    status_interval_s: float = 1.0
    #: the status snapshots, rewritten every second: on tmpfs, not on the gateway's flash
    runtime_dir: Path = Path("/run/edgefwd")
    #: 1-based line of every key path read from the file ("routes[1].kafka_key" -> 14).
    key_lines: Mapping[str, int] = field(default_factory=FrozenMap, repr=False, compare=False)

    def line_of(self, key: str) -> int | None:
        """The line of a key path in the file, or of its nearest parent that has one."""
        while key:
            if key in self.key_lines:
                return self.key_lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


# --------------------------------------------------------------------------------------
# librdkafka properties that edgefwd refuses (docs/config.md explains each)
# --------------------------------------------------------------------------------------

_DEDICATED = "has its own key in this file"
_COMMON_REFUSED: dict[str, str] = {
    "bootstrap.servers": f"{_DEDICATED}: kafka.bootstrap_servers",
    "metadata.broker.list": f"{_DEDICATED}: kafka.bootstrap_servers",
    "security.protocol": f"{_DEDICATED}: set by kafka.tls and kafka.sasl",
    "ssl.ca.location": f"{_DEDICATED}: kafka.tls.ca_file",
    "ssl.ca.pem": f"{_DEDICATED}: kafka.tls.ca_file",
    "ssl.certificate.location": f"{_DEDICATED}: kafka.tls.cert_file",
    "ssl.certificate.pem": f"{_DEDICATED}: kafka.tls.cert_file",
    "ssl.key.location": f"{_DEDICATED}: kafka.tls.key_file",
    "ssl.key.pem": f"{_DEDICATED}: kafka.tls.key_file",
    "ssl.key.password": f"{_DEDICATED}: kafka.tls.key_password_file",
    "sasl.mechanism": f"{_DEDICATED}: kafka.sasl.mechanism",
    "sasl.mechanisms": f"{_DEDICATED}: kafka.sasl.mechanism",
    "sasl.username": f"{_DEDICATED}: kafka.sasl.username",
    "sasl.password": f"{_DEDICATED}: kafka.sasl.password_file",
    "error_cb": "edgefwd installs its own callbacks",
    "throttle_cb": "edgefwd installs its own callbacks",
    "stats_cb": "edgefwd installs its own callbacks",
    "logger": "edgefwd installs its own callbacks",
    "oauth_cb": "edgefwd installs its own callbacks",
}

#: producer property -> why edgefwd refuses it
REFUSED_PRODUCER_PROPERTIES: Final[Mapping[str, str]] = types.MappingProxyType({
    **_COMMON_REFUSED,
    "acks": "edgefwd always uses acks=all: a record leaves the queue only once all in-sync replicas have it",
    "request.required.acks": "edgefwd always uses acks=all: a record leaves the queue only once all in-sync replicas have it",
    "enable.idempotence": "edgefwd always enables idempotence (no duplicates from librdkafka's retries, order kept)",
    "enable.gapless.guarantee": "set by edgefwd according to kafka.delivery",
    "transactional.id": "derived from gateway_id in exactly_once mode; set kafka.delivery instead",
    "transaction.timeout.ms": "set by edgefwd together with message.timeout.ms (librdkafka requires one to bound the other)",
    "partitioner": "edgefwd uses murmur2_random so a key lands on the partition the Java client would choose",
    "queuing.strategy": "lifo would break the order per key",
    "message.timeout.ms": "set by edgefwd (0: retry until Kafka is back), so a record that timed out cannot be overtaken by later records of its key",
    "delivery.timeout.ms": "set by edgefwd (0: retry until Kafka is back), so a record that timed out cannot be overtaken by later records of its key",
    "retries": "set by edgefwd: idempotent delivery relies on librdkafka's retries",
    "message.send.max.retries": "set by edgefwd: idempotent delivery relies on librdkafka's retries",
    "delivery.report.only.error": "edgefwd deletes a record from the queue only on its success report",
    "dr_cb": "edgefwd deletes a record from the queue only on its own delivery report",
    "dr_msg_cb": "edgefwd deletes a record from the queue only on its own delivery report",
    "on_delivery": "edgefwd deletes a record from the queue only on its own delivery report",
})

#: consumer (downlink) property -> why edgefwd refuses it
REFUSED_CONSUMER_PROPERTIES: Final[Mapping[str, str]] = types.MappingProxyType({
    **_COMMON_REFUSED,
    "enable.auto.commit": "edgefwd commits an offset only after the MQTT broker's PUBACK",
    "enable.auto.offset.store": "edgefwd stores an offset only after the MQTT broker's PUBACK",
    "isolation.level": "edgefwd reads read_committed: commands from aborted transactions are never delivered",
    "group.id": "derived from gateway_id, so two gateways never share (and split) commands",
    "group.instance.id": "derived from gateway_id",
    "auto.offset.reset": "set by edgefwd (earliest): downlink[].max_age drops stale commands instead",
    "on_commit": "edgefwd installs its own callbacks",
})

_MAX_IN_FLIGHT_KEYS = ("max.in.flight.requests.per.connection", "max.in.flight")


# --------------------------------------------------------------------------------------
# Schema: known keys per section (for unknown-key suggestions too)
# --------------------------------------------------------------------------------------

_TOP_KEYS = ("gateway_id", "data_dir", "runtime_dir", "log_level", "status_interval",
             "mqtt", "kafka", "queue", "routes", "downlink")
_MQTT_KEYS = ("host", "port", "client_id", "protocol", "session_expiry", "keepalive",
              "connect_timeout", "qos", "username", "password", "password_file", "tls")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "key_password", "key_password_file")
_KAFKA_KEYS = ("bootstrap_servers", "delivery", "tls", "sasl",
               "producer_properties", "consumer_properties")
_SASL_KEYS = ("mechanism", "username", "password", "password_file")
_QUEUE_KEYS = ("max_bytes", "on_full", "max_age", "commit_max_messages",
               "commit_max_delay", "compression")
_ROUTE_KEYS = ("mqtt_filter", "kafka_topic", "kafka_key", "priority", "skip_retained")
_DOWNLINK_KEYS = ("kafka_topic", "mqtt_topic", "max_age")

_SECTIONS = {"": _TOP_KEYS, "mqtt": _MQTT_KEYS, "mqtt.tls": _TLS_KEYS, "kafka": _KAFKA_KEYS,
             "kafka.tls": _TLS_KEYS, "kafka.sasl": _SASL_KEYS, "queue": _QUEUE_KEYS,
             "routes[]": _ROUTE_KEYS, "downlink[]": _DOWNLINK_KEYS}

_TAG_NAMES = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:binary": "binary data",
}
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_SUBST_RE = re.compile(r"\$\$\{|\$\{(env|file):")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_NAMES.get(node.tag, f"a value tagged {node.tag}")


def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _join(parent: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{parent}.{key}" if parent else key
    return f'{parent}["{key}"]'


class _Text:
    """A string value after substitution, with the text as written (for messages)."""

    __slots__ = ("value", "source", "substituted", "secret_source")

    def __init__(self, value: str, source: str, substituted: bool, secret_source: str) -> None:
        self.value = value
        self.source = source
        self.substituted = substituted
        self.secret_source = secret_source

    def shown(self) -> str:
        """How to quote this value in a message: as written, never resolved."""
        if self.substituted:
            return f"{self.source!r} (resolved value not shown)"
        return repr(self.source)


class _Map:
    """One YAML mapping of the file, its key path, and which keys it may have."""

    def __init__(self, doc: _Doc, node: MappingNode | None, path: str, section: str, anchor: Node | None) -> None:
        self.doc = doc
        self.path = path
        self.node = node
        self.anchor = anchor  # where to point for a missing key
        self.entries: dict[str, tuple[Node, Node]] = {}
        known = _SECTIONS[section]
        if node is None:
            return
        own: dict[str, Node] = {}
        for knode, _ in node.value:
            if isinstance(knode, ScalarNode) and knode.tag == _STR:
                if knode.value in own:
                    raise doc.error(
                        _join(path, knode.value), knode,
                        f"duplicate key (first at line {_line(own[knode.value])})",
                        "each key once per mapping",
                    )
                own[knode.value] = knode
        doc.loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor); later keys win
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag != _STR:
                raise doc.error(path, knode, f"a key must be a string, not {_kind(knode)}")
            key = knode.value
            if key not in known:
                raise doc.error(_join(path, key), knode, "unknown key", _suggest(key, known, section))
            self.entries[key] = (knode, vnode)
            doc.lines[_join(path, key)] = _line(vnode) or 0

    def get(self, key: str) -> Node | None:
        """The value node of key, or None when absent or null."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        vnode = entry[1]
        if isinstance(vnode, ScalarNode) and vnode.tag == _NULL:
            return None
        return vnode

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def key_node(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[0] if entry else None

    def sub(self, key: str) -> str:
        return _join(self.path, key)

    def missing(self, key: str, expected: str) -> ConfigError:
        if key in self.entries:  # written, but with no value (null)
            return self.doc.error(self.sub(key), self.entries[key][0], "is empty (null) but required", expected)
        return self.doc.error(self.sub(key), self.anchor, "is required but missing", expected)


def _suggest(key: str, known: tuple[str, ...], section: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    for other, keys in _SECTIONS.items():
        if other != section and key in keys:
            where = other.replace("[]", "[N]")
            return f"{key!r} belongs under {where}:"
    return "known keys here: " + ", ".join(known)


class _Doc:
    """State of one load: the file, its text, the environment, the lines seen."""

    def __init__(self, path: Path, text: str, env: Mapping[str, str], read_secrets: bool) -> None:
        self.path = path
        self.base = path.parent
        self.text = text
        self.env = env
        self.read_secrets = read_secrets
        self.lines: dict[str, int] = {}
        self.loader = yaml.SafeLoader(text)

    # -- errors ---------------------------------------------------------------------

    def error(self, key: str | None, node: Node | None, problem: str, expected: str | None = None) -> ConfigError:
        return ConfigError(self.path, key, _line(node), problem, expected)

    def source(self, node: Node) -> str:
        """The scalar exactly as written in the file (quotes included)."""
        return self.text[node.start_mark.index:node.end_mark.index]

    # -- substitution ---------------------------------------------------------------

    def substitute(self, key: str, node: ScalarNode, template: bool = False) -> _Text:
        raw = node.value
        out: list[str] = []
        pos = 0
        substituted = False
        secret_sources: list[str] = []
        for m in _SUBST_RE.finditer(raw):
            if m.start() < pos:
                continue
            out.append(raw[pos:m.start()])
            if m.group(0) == "$${":
                out.append("$${" if template else "${")
                pos = m.end()
                continue
            end = raw.find("}", m.end())
            if end < 0:
                raise self.error(key, node, f"unterminated ${{{m.group(1)}:...}}",
                                 "${env:NAME} or ${file:PATH}; write $${ for a literal ${")
            arg = raw[m.end():end]
            if m.group(1) == "env":
                if not _ENV_NAME_RE.fullmatch(arg):
                    raise self.error(key, node, f"${{env:{arg}}}: not a variable name",
                                     "letters, digits and _, not starting with a digit")
                if arg not in self.env:
                    raise self.error(key, node, f"environment variable {arg} is not set",
                                     "set it in the agent's environment, e.g. systemd EnvironmentFile=")
                out.append(self.env[arg])
                secret_sources.append(f"env {arg}")
            else:
                fpath = self.resolve_path(arg)
                out.append(self.read_text_file(key, node, fpath, f"${{file:{arg}}}"))
                secret_sources.append(f"file {fpath}")
            substituted = True
            pos = end + 1
        out.append(raw[pos:])
        return _Text("".join(out), raw, substituted, ", ".join(secret_sources) or "config file")

    def resolve_path(self, text: str) -> Path:
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else (self.base / p)

    def read_text_file(self, key: str, node: Node, fpath: Path, what: str) -> str:
        try:
            data = fpath.read_bytes()
        except OSError as exc:
            raise self.error(key, node, f"{what}: cannot read {fpath}: {exc.strerror or exc}",
                             "a file readable by the agent's user") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(key, node, f"{what}: {fpath} is not UTF-8 text") from None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        return text

    # -- typed readers ----------------------------------------------------------------

    def string(self, key: str, node: Node, *, template: bool = False, allow_empty: bool = False) -> _Text:
        if not isinstance(node, ScalarNode):
            raise self.error(key, node, f"expected a string, got {_kind(node)}")
        if node.tag != _STR:
            raise self.not_a_string(key, node)
        text = self.substitute(key, node, template)
        if not text.value and not allow_empty:
            raise self.error(key, node, "must not be empty")
        return text

    def not_a_string(self, key: str, node: ScalarNode, also: str = "") -> ConfigError:
        leaf = re.split(r"[.\[]", key)[-1].rstrip("]") or key
        if node.tag == _NULL:
            return self.error(key, node, "expected a string, got nothing (null)", also or "a value")
        src = self.source(node)
        return self.error(
            key, node,
            f"expected a string, but YAML reads {src} as {_kind(node)}",
            f'{also}{"; " if also else ""}quote it: {leaf}: "{node.value}"',
        )

    def scalar_text(self, key: str, node: Node, what: str, forms: str) -> _Text:
        """The text of a scalar that is parsed further (number, size, duration)."""
        if not isinstance(node, ScalarNode) or node.tag in (_BOOL, _NULL) or node.tag not in _TAG_NAMES:
            raise self.error(key, node, f"expected {what}, got {_kind(node)}", forms)
        if node.tag == _STR:
            return self.substitute(key, node)
        return _Text(node.value, node.value, False, "")

    def integer(self, key: str, node: Node, lo: int, hi: int) -> int:
        text = self.scalar_text(key, node, "an integer", f"a whole number from {lo} to {hi}")
        if not re.fullmatch(r"\s*[-+]?\d+\s*", text.value):
            raise self.error(key, node, f"{text.shown()} is not a whole number",
                             f"a whole number from {lo} to {hi}")
        value = int(text.value)
        if not lo <= value <= hi:
            raise self.error(key, node, f"{text.shown()} is out of range", f"from {lo} to {hi}")
        return value

    def boolean(self, key: str, node: Node) -> bool:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self.loader.construct_object(node))
        if isinstance(node, ScalarNode) and node.tag == _STR:
            text = self.substitute(key, node)
            low = text.value.strip().lower()
            if low in ("true", "false"):
                return low == "true"
            raise self.error(key, node, f"{text.shown()} is not a boolean", "true or false")
        raise self.error(key, node, f"expected a boolean, got {_kind(node)}", "true or false")

    def duration(self, key: str, node: Node, lo: float = 0.0, hi: float | None = None,
                 whole: bool = False) -> float:
        text = self.scalar_text(key, node, "a duration", DURATION_FORMS)
        try:
            value = parse_duration(text.value)
        except UnitError as exc:
            raise self.error(key, node, f"{text.shown()}: {exc.reason}", DURATION_FORMS) from None
        if value < lo or (hi is not None and value > hi):
            rng = f"at least {format_duration(lo)}" if hi is None else \
                f"from {format_duration(lo)} to {format_duration(hi)}"
            raise self.error(key, node, f"{text.shown()} is out of range", rng)
        if whole and value != int(value):
            raise self.error(key, node, f"{text.shown()} is not a whole number of seconds",
                             "MQTT counts this in whole seconds")
        return value

    def size(self, key: str, node: Node, lo: int = 0) -> int:
        text = self.scalar_text(key, node, "a size", SIZE_FORMS)
        try:
            value = parse_size(text.value)
        except UnitError as exc:
            raise self.error(key, node, f"{text.shown()}: {exc.reason}", SIZE_FORMS) from None
        if value < lo:
            raise self.error(key, node, f"{text.shown()} is too small", f"at least {format_size(lo)}")
        return value

    def choice(self, key: str, node: Node, choices: tuple[str, ...]) -> str:
        listed = " | ".join(choices)
        if isinstance(node, ScalarNode) and node.tag != _STR:
            raise self.not_a_string(key, node, f"one of {listed}")
        text = self.string(key, node, allow_empty=True)
        if text.value not in choices:
            close = difflib.get_close_matches(text.value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.error(key, node, f"{text.shown()} is not allowed{hint}", f"one of {listed}")
        return text.value

    def path_value(self, key: str, node: Node) -> Path:
        return self.resolve_path(self.string(key, node).value)

    def mapping(self, key: str, node: Node | None, section: str) -> _Map:
        if node is not None and not isinstance(node, MappingNode):
            raise self.error(key, node, f"expected a mapping of keys, got {_kind(node)}",
                             "keys: " + ", ".join(_SECTIONS[section]))
        return _Map(self, node, key, section, node)

    def secret(self, m: _Map, key: str) -> Secret | None:
        """``key`` (a value, may use ${env:}/${file:}) or ``key_file`` (a file's content)."""
        fkey = f"{key}_file"
        inline, from_file = m.get(key), m.get(fkey)
        if inline is not None and from_file is not None:
            raise self.error(m.sub(fkey), m.key_node(fkey), f"both {key} and {fkey} are set",
                             "set one of them")
        if from_file is not None:
            fpath = self.path_value(m.sub(fkey), from_file)
            if not self.read_secrets:
                return Secret("", f"file {fpath} (not read)")
            value = self.read_text_file(m.sub(fkey), from_file, fpath, fkey)
            if not value:
                raise self.error(m.sub(fkey), from_file, f"{fpath} is empty", "the secret on one line")
            return Secret(value, f"file {fpath}")
        if inline is not None:
            if not self.read_secrets:
                if not isinstance(inline, ScalarNode) or inline.tag != _STR:
                    raise self.error(m.sub(key), inline, f"expected a string, got {_kind(inline)}")
                return Secret("", "not read")
            text = self.string(m.sub(key), inline)
            return Secret(text.value, text.secret_source)
        return None


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def _tls(doc: _Doc, parent: _Map, section: str) -> TlsConfig | None:
    entry = parent.entries.get("tls")
    if entry is None:
        return None
    node = entry[1]
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        return None
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        if doc.loader.construct_object(node):
            return TlsConfig()
        return None
    m = doc.mapping(parent.sub("tls"), node, section)
    files: dict[str, str | None] = {}
    for k in ("ca_file", "cert_file", "key_file"):
        n = m.get(k)
        files[k] = None
        if n is not None:
            p = doc.path_value(m.sub(k), n)
            if doc.read_secrets and not os.access(p, os.R_OK):
                why = "does not exist" if not p.exists() else "is not readable by this user"
                raise doc.error(m.sub(k), n, f"{p} {why}", "a PEM file readable by the agent's user")
            files[k] = str(p)
    if files["key_file"] is not None and files["cert_file"] is None:
        raise doc.error(m.sub("key_file"), m.get("key_file"), "key_file without cert_file",
                        "set cert_file too (the client certificate the key belongs to)")
    key_password = doc.secret(m, "key_password")
    if key_password is not None and files["key_file"] is None and files["cert_file"] is None:
        node_kp = m.key_node("key_password") or m.key_node("key_password_file")
        raise doc.error(m.sub("key_password"), node_kp, "a key password without a key",
                        "set key_file (or cert_file holding the key)")
    return TlsConfig(ca_file=files["ca_file"], cert_file=files["cert_file"],
                     key_file=files["key_file"], key_password=key_password)


def _mqtt(doc: _Doc, top: _Map, gateway_id: str) -> MqttConfig:
    m = doc.mapping("mqtt", top.get("mqtt"), "mqtt")
    kw: dict[str, Any] = {}
    if (n := m.get("host")) is not None:
        kw["host"] = doc.string(m.sub("host"), n).value
    if (n := m.get("port")) is not None:
        kw["port"] = doc.integer(m.sub("port"), n, 1, 65535)
    kw["client_id"] = f"edgefwd-{gateway_id}"
    if (n := m.get("client_id")) is not None:
        cid = doc.string(m.sub("client_id"), n)
        if "\0" in cid.value or len(cid.value.encode()) > 65535:
            raise doc.error(m.sub("client_id"), n, "not a valid MQTT client id",
                            "1 to 65535 bytes of UTF-8 without NUL")
        kw["client_id"] = cid.value
    if (n := m.get("protocol")) is not None:
        # YAML reads a plain 5 as a number: accepted, since that is what people write.
        proto = None
        if isinstance(n, ScalarNode) and n.tag == _INT:
            proto = n.value.strip()
        elif isinstance(n, ScalarNode) and n.tag == _STR:
            proto = doc.substitute(m.sub("protocol"), n).value
        if proto not in ("5", "3.1.1"):
            shown = doc.source(n) if isinstance(n, ScalarNode) else _kind(n)
            raise doc.error(m.sub("protocol"), n, f"{shown} is not a supported MQTT protocol version",
                            '"5" or "3.1.1"')
        kw["protocol"] = proto
    if (n := m.get("session_expiry")) is not None:
        kw["session_expiry_s"] = doc.duration(m.sub("session_expiry"), n, 1.0, 4294967295.0, whole=True)
    if (n := m.get("keepalive")) is not None:
        kw["keepalive_s"] = doc.duration(m.sub("keepalive"), n, 1.0, 65535.0, whole=True)
    if (n := m.get("connect_timeout")) is not None:
        kw["connect_timeout_s"] = doc.duration(m.sub("connect_timeout"), n, 0.001, 3600.0)
    if (n := m.get("qos")) is not None:
        qos = doc.integer(m.sub("qos"), n, 0, 2)
        if qos != 1:
            why = ("QoS 0 messages are never redelivered, so one lost in a crash is gone"
                   if qos == 0 else
                   "paho acknowledges a QoS 2 message (PUBREC) before edgefwd has stored it and "
                   "keeps it only in memory until PUBREL, so a crash in between would lose it")
            raise doc.error(m.sub("qos"), n, f"QoS {qos} is not supported: {why}",
                            "1: edgefwd's at-least-once guarantee needs QoS 1 subscriptions")
        kw["qos"] = qos
    if (n := m.get("username")) is not None:
        kw["username"] = doc.string(m.sub("username"), n).value
    kw["password"] = doc.secret(m, "password")
    if kw["password"] is not None and "username" not in kw:
        raise doc.error(m.sub("password"), m.key_node("password") or m.key_node("password_file"),
                        "a password without a username", "set mqtt.username too")
    kw["tls"] = _tls(doc, m, "mqtt.tls")
    return MqttConfig(**kw)


def _properties(doc: _Doc, kafka: _Map, key: str, refused: Mapping[str, str]) -> Properties:
    node = kafka.get(key)
    path = kafka.sub(key)
    if node is None:
        return Properties()
    if not isinstance(node, MappingNode):
        raise doc.error(path, node, f"expected a mapping of librdkafka properties, got {_kind(node)}",
                        'e.g. {linger.ms: "20"}')
    doc.loader.flatten_mapping(node)
    out: dict[str, str] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or knode.tag != _STR:
            raise doc.error(path, knode, f"a property name must be a string, not {_kind(knode)}")
        name = knode.value
        kp = _join(path, name)
        doc.lines[kp] = _line(vnode) or 0
        if name.lower() in refused:
            raise doc.error(kp, knode, f"refused: {refused[name.lower()]}",
                            "see docs/config.md, refused librdkafka properties")
        if name.startswith("default.topic.config"):
            raise doc.error(kp, knode, "nested topic configs are not supported",
                            "set topic-level properties at this level")
        if name in out:
            raise doc.error(kp, knode, "duplicate property", "each property once")
        if not isinstance(vnode, ScalarNode) or vnode.tag == _NULL:
            raise doc.error(kp, vnode, f"expected a value, got {_kind(vnode)}", "a string, number or boolean")
        if vnode.tag == _BOOL:
            value = "true" if doc.loader.construct_object(vnode) else "false"
            shown = repr(value)
        elif vnode.tag == _STR:
            text = doc.substitute(kp, vnode)
            value, shown = text.value, text.shown()
        else:  # numbers as written (0042 stays 0042, as librdkafka would read a string)
            value = vnode.value
            shown = repr(value)
        if name.lower() in _MAX_IN_FLIGHT_KEYS:
            if not re.fullmatch(r"\d+", value.strip()) or not 1 <= int(value) <= 5:
                raise doc.error(kp, vnode, f"{shown} is refused: idempotent delivery keeps the order "
                                "per partition only with at most 5 requests in flight", "1 to 5")
        out[name] = value
    return Properties(out)


def _kafka(doc: _Doc, top: _Map) -> KafkaConfig:
    node = top.get("kafka")
    if node is None:
        raise top.missing("kafka", "a kafka: section with at least bootstrap_servers")
    m = doc.mapping("kafka", node, "kafka")
    kw: dict[str, Any] = {}
    n = m.get("bootstrap_servers")
    if n is None:
        raise m.missing("bootstrap_servers", 'host:port[,host:port...], e.g. "k1:9092,k2:9092"')
    if isinstance(n, SequenceNode):
        items = [doc.string(f"{m.sub('bootstrap_servers')}[{i}]", x).value for i, x in enumerate(n.value)]
        if not items:
            raise doc.error(m.sub("bootstrap_servers"), n, "the list is empty", "at least one host:port")
        servers = ",".join(s.strip() for s in items)
    else:
        servers = doc.string(m.sub("bootstrap_servers"), n).value
        servers = ",".join(s.strip() for s in servers.split(","))
    if any(not s or " " in s for s in servers.split(",")):
        raise doc.error(m.sub("bootstrap_servers"), n, "an empty or malformed server in the list",
                        'host:port[,host:port...], e.g. "k1:9092,k2:9092"')
    kw["bootstrap_servers"] = servers
    if (n := m.get("delivery")) is not None:
        kw["delivery"] = doc.choice(m.sub("delivery"), n, ("at_least_once", "exactly_once"))
    kw["tls"] = _tls(doc, m, "kafka.tls")
    if (n := m.get("sasl")) is not None:
        s = doc.mapping(m.sub("sasl"), n, "kafka.sasl")
        mech_node = s.get("mechanism")
        if mech_node is None:
            raise s.missing("mechanism", " | ".join(SASL_MECHANISMS))
        mechanism = doc.choice(s.sub("mechanism"), mech_node, SASL_MECHANISMS)
        user_node = s.get("username")
        if user_node is None:
            raise s.missing("username", "the SASL user name")
        username = doc.string(s.sub("username"), user_node).value
        password = doc.secret(s, "password")
        if password is None:
            raise s.missing("password_file", "password_file: a file holding the password "
                            "(or password: ${env:NAME})")
        kw["sasl"] = SaslConfig(mechanism=mechanism, username=username, password=password)
    kw["producer_properties"] = _properties(doc, m, "producer_properties", REFUSED_PRODUCER_PROPERTIES)
    kw["consumer_properties"] = _properties(doc, m, "consumer_properties", REFUSED_CONSUMER_PROPERTIES)
    return KafkaConfig(**kw)


def _queue(doc: _Doc, top: _Map) -> QueueConfig:
    m = doc.mapping("queue", top.get("queue"), "queue")
    kw: dict[str, Any] = {}
    if (n := m.get("max_bytes")) is not None:
        kw["max_bytes"] = doc.size(m.sub("max_bytes"), n, MIN_QUEUE_BYTES)
    if (n := m.get("on_full")) is not None:
        kw["on_full"] = doc.choice(m.sub("on_full"), n, ("drop_oldest", "drop_newest", "block"))
    if (n := m.get("max_age")) is not None:
        kw["max_age_s"] = doc.duration(m.sub("max_age"), n, 1.0)
    if (n := m.get("commit_max_messages")) is not None:
        kw["commit_max_messages"] = doc.integer(m.sub("commit_max_messages"), n, 1, 100_000)
    if (n := m.get("commit_max_delay")) is not None:
        kw["commit_max_delay_s"] = doc.duration(m.sub("commit_max_delay"), n, 0.0, 1.0)
    if (n := m.get("compression")) is not None:
        kw["compression"] = doc.choice(m.sub("compression"), n, ("none", "lz4", "zstd"))
    return QueueConfig(**kw)


def _seq(doc: _Doc, top: _Map, key: str) -> list[tuple[str, Node]]:
    node = top.get(key)
    if node is None:
        return []
    if not isinstance(node, SequenceNode):
        raise doc.error(key, node, f"expected a list, got {_kind(node)}", f"a list of {key} entries, each starting with -")
    out = []
    for i, item in enumerate(node.value):
        kp = f"{key}[{i}]"
        doc.lines[kp] = _line(item) or 0
        out.append((kp, item))
    return out


def _routes(doc: _Doc, top: _Map) -> tuple[Route, ...]:
    items = _seq(doc, top, "routes")
    if not items:
        anchor = top.key_node("routes")
        raise doc.error("routes", anchor or top.anchor, "at least one route is required",
                        'a list of {mqtt_filter: ..., kafka_topic: ...}')
    routes = []
    for kp, item in items:
        m = doc.mapping(kp, item, "routes[]")
        if item is None or not isinstance(item, MappingNode):  # pragma: no cover - mapping() raised
            continue
        if (n := m.get("mqtt_filter")) is None:
            raise m.missing("mqtt_filter", 'an MQTT topic filter, e.g. "vehicles/+/telemetry/#"')
        mqtt_filter = doc.string(m.sub("mqtt_filter"), n).value
        if (n := m.get("kafka_topic")) is None:
            raise m.missing("kafka_topic", 'a Kafka topic name or template, e.g. "telemetry"')
        kafka_topic = doc.string(m.sub("kafka_topic"), n, template=True).value
        kafka_key = None
        if (n := m.get("kafka_key")) is not None:
            kafka_key = doc.string(m.sub("kafka_key"), n, template=True).value
        priority = 0
        if (n := m.get("priority")) is not None:
            priority = doc.integer(m.sub("priority"), n, 0, MAX_PRIORITY)
        skip_retained = False
        if (n := m.get("skip_retained")) is not None:
            skip_retained = doc.boolean(m.sub("skip_retained"), n)
        routes.append(Route(mqtt_filter=mqtt_filter, kafka_topic=kafka_topic, kafka_key=kafka_key,
                            priority=priority, skip_retained=skip_retained))
    return tuple(routes)


_PLACEHOLDER_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def _placeholders(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER_RE.finditer(template) if m.group(0) != "$${"]


def _render_gateway(template: str, gateway_id: str) -> str:
    return _PLACEHOLDER_RE.sub(
        lambda m: "${" if m.group(0) == "$${" else (gateway_id if m.group(1) == "gateway_id" else m.group(0)),
        template,
    )


def _downlink(doc: _Doc, top: _Map, gateway_id: str) -> tuple[DownlinkRoute, ...]:
    out = []
    for kp, item in _seq(doc, top, "downlink"):
        m = doc.mapping(kp, item, "downlink[]")
        if (n := m.get("kafka_topic")) is None:
            raise m.missing("kafka_topic", 'the Kafka topic commands come from, e.g. "commands.${gateway_id}"')
        kt_key, kt_node = m.sub("kafka_topic"), n
        kafka_topic = doc.string(kt_key, n, template=True).value
        bad = [p for p in _placeholders(kafka_topic) if p != "gateway_id"]
        if bad:
            raise doc.error(kt_key, kt_node, f"${{{bad[0]}}} cannot be used in a downlink Kafka topic",
                            "only ${gateway_id}: the topic is subscribed once at start-up")
        rendered = _render_gateway(kafka_topic, gateway_id)
        if not KAFKA_TOPIC_RE.fullmatch(rendered) or rendered in (".", ".."):
            raise doc.error(kt_key, kt_node, f"{rendered!r} is not a valid Kafka topic name",
                            "1 to 249 characters from A-Z a-z 0-9 . _ -")
        if (n := m.get("mqtt_topic")) is None:
            raise m.missing("mqtt_topic", 'the MQTT topic to publish to, e.g. "vehicles/${key}/commands"')
        mt_key = m.sub("mqtt_topic")
        mqtt_topic = doc.string(mt_key, n, template=True).value
        bad = [p for p in _placeholders(mqtt_topic) if p not in ("key", "gateway_id")]
        if bad:
            raise doc.error(mt_key, n, f"${{{bad[0]}}} cannot be used in a downlink MQTT topic",
                            "${key} (the Kafka record's key) and ${gateway_id}")
        literal = _PLACEHOLDER_RE.sub("", mqtt_topic)
        if "+" in literal or "#" in literal or "\0" in literal:
            raise doc.error(mt_key, n, "an MQTT topic to publish to cannot contain + # or NUL",
                            "a topic name, not a filter")
        max_age = None
        if (n := m.get("max_age")) is not None:
            max_age = doc.duration(m.sub("max_age"), n, 0.001)
        out.append(DownlinkRoute(kafka_topic=kafka_topic, mqtt_topic=mqtt_topic, max_age_s=max_age))
    return tuple(out)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _read_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, None, "config file not found",
                          f"pass --config FILE; the default is {DEFAULT_CONFIG_PATH}") from None
    except IsADirectoryError:
        raise ConfigError(path, None, None, "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(path, None, None, "permission denied reading the config file",
                          "run as root or as the edgefwd user") from None
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read the config file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(path, None, line, f"not UTF-8 text (byte {exc.start})",
                          "save the file as UTF-8") from None


def _compose(path: Path, text: str, loader: yaml.SafeLoader) -> Node | None:
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            problem = f"{exc.context}: {problem}"
        raise ConfigError(path, None, mark.line + 1 if mark else None, f"not valid YAML: {problem}",
                          "check indentation and quoting; quote strings containing ': ' '#' '{' or '${'",
                          column=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *,
                read_secrets: bool = True, compile_routes: Callable[..., Any] | None = None) -> Config:
    """Read and check the config file; return the typed, frozen Config.

    env: the environment for ``${env:NAME}`` (default ``os.environ``).
    read_secrets: False leaves password/key-password files and values unread (``Secret``
        with an empty value) and skips TLS file checks, for ``edgefwd status`` run by a
        user who may read the state directory but not the secrets.
    compile_routes: the route compiler for :func:`validate_routes`; default the Rust
        ``edgefwd._core.Router`` (skipped only while the extension is not built).
    Raises ConfigError.
    """
    path = Path(path)
    text = _read_file(path)
    doc = _Doc(path.absolute(), text, os.environ if env is None else env, read_secrets)
    doc.path = path  # messages show the path as the user gave it
    root = _compose(path, text, doc.loader)
    if root is None:
        raise ConfigError(path, None, None, "the file is empty",
                          "a mapping with at least gateway_id, kafka and routes")
    if not isinstance(root, MappingNode):
        raise doc.error(None, root, f"the top level must be a mapping of keys, not {_kind(root)}",
                        "gateway_id: ..., kafka: ..., routes: ...")
    top = _Map(doc, root, "", "", root)

    n = top.get("gateway_id")
    if n is None:
        raise top.missing("gateway_id", 'a unique name for this gateway, e.g. gateway_id: "truck-0042"')
    gid = doc.string("gateway_id", n)
    if not GATEWAY_ID_RE.fullmatch(gid.value):
        raise doc.error("gateway_id", n, f"{gid.shown()} is not a valid gateway id",
                        "1 to 64 characters from A-Z a-z 0-9 . _ - (it names the MQTT session "
                        "and the Kafka transactional id)")
    gateway_id = gid.value

    data_dir = Path("/var/lib/edgefwd")
    if (n := top.get("data_dir")) is not None:
        data_dir = doc.path_value("data_dir", n)
    runtime_dir = Path("/run/edgefwd")
    if (n := top.get("runtime_dir")) is not None:
        runtime_dir = doc.path_value("runtime_dir", n)
    log_level = "info"
    if (n := top.get("log_level")) is not None:
        log_level = doc.choice("log_level", n, LOG_LEVELS)
    status_interval = 1.0
    if (n := top.get("status_interval")) is not None:
        status_interval = doc.duration("status_interval", n, 0.1, 60.0)

    config = Config(
        path=path,
        gateway_id=gateway_id,
        data_dir=data_dir,
        runtime_dir=runtime_dir,
        mqtt=_mqtt(doc, top, gateway_id),
        kafka=_kafka(doc, top),
        queue=_queue(doc, top),
        routes=_routes(doc, top),
        downlink=_downlink(doc, top, gateway_id),
        log_level=log_level,
        status_interval_s=status_interval,
        key_lines=FrozenMap(doc.lines),
    )
    validate_routes(config, compile_routes)
    return config


# --------------------------------------------------------------------------------------
# Route templates: compiled by the Rust router, errors pointed at the file
# --------------------------------------------------------------------------------------

_ROUTE_PREFIX_RE = re.compile(r"^\s*route\s*\[?\d+\]?\s*[:,-]?\s*", re.I)
_ROUTE_INDEX_RE = re.compile(r"\broutes?\s*\[?(\d+)\]?", re.I)
_PROBE_TOPIC = "edgefwd-probe"
_TEMPLATE_FORMS = ("templates: ${topic}, ${1}..${N} for the filter's N wildcards in order, "
                   "${gateway_id}, ${payload.a.b}; $${ for a literal ${")
_FILTER_FORMS = "an MQTT topic filter: levels split by /, + a whole level, # only as the last level"


def _native_router() -> Callable[..., Any] | None:
    try:
        from edgefwd._core import Router
    except ModuleNotFoundError as exc:
        if exc.name != "edgefwd._core":
            raise
        return None  # DEVELOPMENT ONLY: the Rust extension is not built yet
    return Router


def validate_routes(config: Config, compile_fn: Callable[..., Any] | None = None) -> Any:
    """Compile the routes; turn a TopicError/TemplateError into a ConfigError at its line.

    compile_fn(rules, gateway_id) with rules = [(mqtt_filter, kafka_topic, kafka_key), ...]
    (default ``edgefwd._core.Router``). Returns what compile_fn returned (None if the
    extension is not built). A failure is narrowed to the route and the field it is about
    by compiling that route's parts alone.
    """
    if compile_fn is None:
        compile_fn = _native_router()
        if compile_fn is None:
            return None
    rules = [(r.mqtt_filter, r.kafka_topic, r.kafka_key) for r in config.routes]
    try:
        return compile_fn(rules, config.gateway_id)
    except (TopicError, TemplateError) as exc:
        whole = exc
    for i, r in enumerate(config.routes):
        steps = [("mqtt_filter", (r.mqtt_filter, _PROBE_TOPIC, None), _FILTER_FORMS),
                 ("kafka_topic", (r.mqtt_filter, r.kafka_topic, None), _TEMPLATE_FORMS)]
        if r.kafka_key is not None:
            steps.append(("kafka_key", (r.mqtt_filter, r.kafka_topic, r.kafka_key), _TEMPLATE_FORMS))
        for fname, rule, forms in steps:
            try:
                compile_fn([rule], config.gateway_id)
            except (TopicError, TemplateError) as exc:
                raise _route_error(config, f"routes[{i}].{fname}", exc, forms) from None
    m = _ROUTE_INDEX_RE.search(str(whole))
    key = f"routes[{m.group(1)}]" if m and int(m.group(1)) < len(config.routes) else "routes"
    raise _route_error(config, key, whole, _TEMPLATE_FORMS) from None


def _route_error(config: Config, key: str, exc: BaseException, forms: str | None) -> ConfigError:
    message = _ROUTE_PREFIX_RE.sub("", str(exc)) or type(exc).__name__
    if "known:" in message:  # the router already listed what is accepted
        forms = None
    return ConfigError(config.path, key, config.line_of(key), message, forms)


# --------------------------------------------------------------------------------------
# The effective configuration, for `edgefwd check`
# --------------------------------------------------------------------------------------


def _esc(value: str | None) -> str | None:
    """Re-escape ${ in a non-template string so the dump reads back to the same value."""
    return None if value is None else value.replace("${", "$${")


def _secret_out(s: Secret | None) -> str | None:
    return None if s is None else "***"


def _tls_out(t: TlsConfig | None) -> dict[str, Any] | None:
    if t is None:
        return None
    out: dict[str, Any] = {}
    for k in ("ca_file", "cert_file", "key_file"):
        v = getattr(t, k)
        if v is not None:
            out[k] = _esc(str(v))
    if t.key_password is not None:
        out["key_password"] = "***"
    return out


def _dur(v: float | None) -> str | None:
    return None if v is None else format_duration(v)


def dump_effective(config: Config) -> dict[str, Any]:
    """The configuration in effect, defaults filled in, as the YAML keys of the file.

    Secrets are ``***``; librdkafka properties whose name looks sensitive are masked.
    Durations and sizes are written in the forms the file accepts, so (secrets aside)
    the output is itself a valid config of the same meaning.
    """
    mq, kf, q = config.mqtt, config.kafka, config.queue
    mqtt: dict[str, Any] = {
        "host": _esc(mq.host), "port": mq.port, "client_id": _esc(mq.client_id), "protocol": mq.protocol,
        "session_expiry": _dur(mq.session_expiry_s), "keepalive": _dur(mq.keepalive_s),
        "connect_timeout": _dur(mq.connect_timeout_s), "qos": mq.qos,
        "username": _esc(mq.username), "password": _secret_out(mq.password), "tls": _tls_out(mq.tls),
    }
    kafka: dict[str, Any] = {
        "bootstrap_servers": _esc(kf.bootstrap_servers), "delivery": kf.delivery, "tls": _tls_out(kf.tls),
        "sasl": None if kf.sasl is None else {
            "mechanism": kf.sasl.mechanism, "username": _esc(kf.sasl.username), "password": "***"},
        "producer_properties": _masked(kf.producer_properties),
        "consumer_properties": _masked(kf.consumer_properties),
    }
    return {
        "gateway_id": config.gateway_id,
        "data_dir": _esc(str(config.data_dir)),
        "runtime_dir": _esc(str(config.runtime_dir)),
        "log_level": config.log_level,
        "status_interval": _dur(config.status_interval_s),
        "mqtt": {k: v for k, v in mqtt.items() if v is not None},
        "kafka": {k: v for k, v in kafka.items() if v is not None},
        "queue": {
            "max_bytes": format_size(q.max_bytes), "on_full": q.on_full,
            **({"max_age": _dur(q.max_age_s)} if q.max_age_s is not None else {}),
            "commit_max_messages": q.commit_max_messages,
            "commit_max_delay": _dur(q.commit_max_delay_s), "compression": q.compression,
        },
        "routes": [
            {"mqtt_filter": _esc(r.mqtt_filter), "kafka_topic": r.kafka_topic,
             **({"kafka_key": r.kafka_key} if r.kafka_key is not None else {}),
             "priority": r.priority, "skip_retained": r.skip_retained}
            for r in config.routes
        ],
        "downlink": [
            {"kafka_topic": d.kafka_topic, "mqtt_topic": d.mqtt_topic,
             **({"max_age": _dur(d.max_age_s)} if d.max_age_s is not None else {})}
            for d in config.downlink
        ],
    }


def _masked(props: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if _SENSITIVE_PROPERTY_RE.search(k) else _esc(v)) for k, v in props.items()}

"""edgefwd._core: the Rust core (topics, routing, templates, batch codec).

Built by maturin from rust/ (binding) over rust/core (edgefwd-core). Keep this stub and
the binary in step: `python -m mypy.stubtest edgefwd._core` checks them.
"""

from typing import Final, Self, TypeAlias, final

__all__ = [
    "__version__",
    "BATCH_FORMAT_VERSION",
    "BATCH_HEADER_LEN",
    "MAX_BATCH_BODY_LEN",
    "EdgefwdError",
    "TopicError",
    "TemplateError",
    "InvalidInputError",
    "CorruptBatchError",
    "UnsupportedBatchVersionError",
    "validate_topic_name",
    "validate_topic_filter",
    "topic_matches",
    "disjoint_cover",
    "filters_overlap",
    "Router",
    "encode_batch",
    "decode_batch",
    "batch_record_count",
    "decode_for_produce",
]

__version__: Final[str]
BATCH_FORMAT_VERSION: Final[int]
BATCH_HEADER_LEN: Final[int]
MAX_BATCH_BODY_LEN: Final[int]

class EdgefwdError(Exception):
    """Root of every edgefwd exception."""

class TopicError(EdgefwdError, ValueError):
    """An invalid MQTT topic name or filter; the message says what and where."""

class TemplateError(EdgefwdError, ValueError):
    """A template that cannot be compiled; the message names the route index and the template."""

class InvalidInputError(EdgefwdError, ValueError):
    """An argument the core cannot use (a boot id that is not 16 bytes, QoS 3, ...)."""

class CorruptBatchError(EdgefwdError):
    """A queue batch that fails a check."""

    offset: int
    reason: str
    record_count: int | None
    def __init__(self, message: str, offset: int = 0, reason: str = "", record_count: int | None = None) -> None: ...

class UnsupportedBatchVersionError(CorruptBatchError):
    """An intact batch in a format version this build does not read."""

    version: int
    def __init__(
        self,
        message: str,
        offset: int = 4,
        reason: str = "",
        record_count: int | None = None,
        version: int = 0,
    ) -> None: ...

def validate_topic_name(topic: str) -> None: ...
def validate_topic_filter(filter: str) -> None: ...
def topic_matches(filter: str, topic: str) -> bool: ...
def disjoint_cover(filters: list[str]) -> list[str]: ...
def filters_overlap(a: str, b: str) -> bool: ...

_RouteResult: TypeAlias = tuple[int, str | None, bytes | None, str | None]
"""(route_index, kafka_topic, kafka_key, error): topic and key are None when error is set."""

@final
class Router:
    """The compiled route table. routes[i] = (mqtt_filter, kafka_topic_template, kafka_key_template)."""

    def __new__(cls, routes: list[tuple[str, str, str | None]], gateway_id: str) -> Self: ...
    def route(self, topic: str, payload: bytes) -> list[_RouteResult]: ...
    def route_many(self, messages: list[tuple[str, bytes]]) -> list[list[_RouteResult]]: ...
    def matching_routes(self, topic: str) -> list[int]: ...
    def __len__(self) -> int: ...

_RecordTuple: TypeAlias = tuple[
    int,  # seq (u64)
    int,  # recv_wall_ms (i64)
    int,  # recv_mono_ns (u64)
    bool,  # clock_synced
    int,  # qos
    bool,  # retain
    int,  # route (u16)
    str,  # kafka_topic
    bytes | None,  # kafka_key
    str,  # mqtt_topic
    bytes,  # payload
    list[tuple[str, str]],  # user_properties
]

_ProduceTuple: TypeAlias = tuple[str, bytes, bytes | None, int, list[tuple[str, bytes]]]
"""(kafka_topic, payload, kafka_key, recv_wall_ms, headers) for Producer.produce."""

def encode_batch(records: list[_RecordTuple], boot_id: bytes, compression: str = "none") -> bytes: ...
def decode_batch(data: bytes) -> tuple[bytes, list[_RecordTuple]]: ...
def batch_record_count(data: bytes) -> int: ...
def decode_for_produce(data: bytes, gateway_id: str, epoch: str) -> list[_ProduceTuple]: ...

"""Smoke test of every function of edgefwd._core, as the agent calls them."""

import pickle

import pytest

from edgefwd import _core as c

BOOT = bytes(range(16))


def rec(seq=1, *, synced=True, key=b"v1", props=(), payload=b'{"t":21.5}', qos=1, retain=False, route=0):
    return (
        seq,
        1_700_000_000_123,
        987_654_321,
        synced,
        qos,
        retain,
        route,
        "telemetry",
        key,
        "vehicles/v1/telemetry",
        payload,
        list(props),
    )


def test_module_constants():
    assert isinstance(c.__version__, str) and c.__version__
    assert c.BATCH_FORMAT_VERSION == 1


def test_exception_tree():
    for cls in (c.TopicError, c.TemplateError, c.CorruptBatchError, c.InvalidInputError):
        assert issubclass(cls, c.EdgefwdError)
    assert issubclass(c.TopicError, ValueError)
    assert issubclass(c.TemplateError, ValueError)
    assert issubclass(c.UnsupportedBatchVersionError, c.CorruptBatchError)
    assert c.EdgefwdError.__module__ == "edgefwd._core"


def test_validate_topic_name():
    c.validate_topic_name("vehicles/v1/telemetry")
    c.validate_topic_name("/")
    with pytest.raises(c.TopicError, match=r"level 1, byte offset 3"):
        c.validate_topic_name("a/b+")
    with pytest.raises(c.TopicError, match="empty"):
        c.validate_topic_name("")
    with pytest.raises(c.TopicError, match="NUL"):
        c.validate_topic_name("a\0b")
    with pytest.raises(c.TopicError, match="65535"):
        c.validate_topic_name("a" * 65536)


def test_validate_topic_filter():
    for ok in ["#", "+/x/#", "$share/grp/a/+", "a//b"]:
        c.validate_topic_filter(ok)
    with pytest.raises(c.TopicError, match="whole level"):
        c.validate_topic_filter("a/b#")
    with pytest.raises(c.TopicError, match="last level"):
        c.validate_topic_filter("#/a")
    with pytest.raises(c.TopicError, match="share"):
        c.validate_topic_filter("$share//a")
    with pytest.raises(ValueError):  # TopicError is a ValueError
        c.validate_topic_filter("")


def test_topic_matches():
    assert c.topic_matches("a/#", "a")
    assert c.topic_matches("a/+/c", "a/b/c")
    assert not c.topic_matches("#", "$SYS/x")
    assert not c.topic_matches("+/x", "$a/x")
    assert c.topic_matches("$SYS/#", "$SYS/x")
    assert c.topic_matches("$share/g/a/+", "a/b")
    with pytest.raises(c.TopicError):
        c.topic_matches("a", "a/#")


def test_disjoint_cover():
    assert c.disjoint_cover(["a/b/+", "a/+/c"]) == ["a/+/+"]
    assert c.disjoint_cover(["x", "a/#", "a/b", "x"]) == ["x", "a/#"]
    assert c.disjoint_cover(["c/1", "b/+", "a/#"]) == ["c/1", "b/+", "a/#"]
    with pytest.raises(c.TopicError):
        c.disjoint_cover(["ok", "bad#"])


def test_router_route():
    r = c.Router(
        [
            ("vehicles/+/telemetry/#", "telemetry", "${1}"),
            ("vehicles/+/telemetry/#", "raw.${gateway_id}", None),
            ("devices/+", "dev.${payload.kind}", "${payload.id}"),
            ("#", "x.${1}", None),
        ],
        "gw-1",
    )
    assert len(r) == 4
    assert r.route("vehicles/v9/telemetry/temp", b"") == [
        (0, "telemetry", b"v9", None),
        (1, "raw.gw-1", None, None),
        (3, None, None, r.route("vehicles/v9/telemetry/temp", b"")[2][3]),
    ]
    # '#' gave the whole topic: '/' is not allowed in a Kafka topic -> dead letter with reason
    assert "'/'" in r.route("vehicles/v9/telemetry/temp", b"")[2][3]
    assert r.route("devices/d1", b'{"kind":"temp","id":42}')[0] == (2, "dev.temp", b"42", None)
    idx, topic, key, err = r.route("devices/d1", b"not json")[0]
    assert (idx, topic, key) == (2, None, None) and "not JSON" in err
    idx, topic, key, err = r.route("devices/d1", b'{"kind":"t"}')[0]
    assert topic is None and "'id' is missing" in err
    assert r.route("$SYS/x", b"") == []


def test_router_route_many_equals_route():
    r = c.Router([("a/+", "t.${1}", "${topic}"), ("a/#", "all", None)], "gw")
    msgs = [("a/1", b"x"), ("a/b/c", b""), ("b", b""), ("a/ bad", b"")]
    assert r.route_many(msgs) == [r.route(t, p) for t, p in msgs]


def test_router_template_errors():
    with pytest.raises(c.TemplateError, match=r"route 1.*\$\{2\}"):
        c.Router([("a", "ok", None), ("a/+", "t", "${2}")], "gw")
    with pytest.raises(c.TemplateError, match="unterminated"):
        c.Router([("a", "t${topic", None)], "gw")
    with pytest.raises(c.TopicError):
        c.Router([("a/#/b", "t", None)], "gw")


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_encode_decode_round_trip(compression):
    recs = [
        rec(1),
        rec(2, synced=False, key=None, props=[("k", "v"), ("k", "w")], qos=0, retain=True, route=65535),
        rec(3, payload=b"\x00\xff" * 1000),
    ]
    data = c.encode_batch(recs, BOOT, compression)
    assert isinstance(data, bytes)
    boot, got = c.decode_batch(data)
    assert boot == BOOT
    assert got == recs
    assert c.batch_record_count(data) == 3


def test_encode_refuses_bad_input():
    with pytest.raises(c.InvalidInputError, match="16 bytes"):
        c.encode_batch([rec()], b"short")
    with pytest.raises(c.InvalidInputError, match="compression"):
        c.encode_batch([rec()], BOOT, "gzip")
    with pytest.raises(c.InvalidInputError, match="qos"):
        c.encode_batch([rec(qos=3)], BOOT)


def test_corrupt_batches():
    data = c.encode_batch([rec(1), rec(2)], BOOT)
    body_damaged = bytearray(data)
    body_damaged[-1] ^= 0x40
    with pytest.raises(c.CorruptBatchError) as ei:
        c.decode_batch(bytes(body_damaged))
    assert ei.value.offset == c.BATCH_HEADER_LEN
    assert ei.value.record_count == 2
    assert "CRC" in ei.value.reason
    assert c.batch_record_count(bytes(body_damaged)) == 2

    header_damaged = bytearray(data)
    header_damaged[9] ^= 1
    with pytest.raises(c.CorruptBatchError) as ei:
        c.decode_batch(bytes(header_damaged))
    assert ei.value.record_count is None
    with pytest.raises(c.CorruptBatchError):
        c.batch_record_count(bytes(header_damaged))

    for n in (0, 3, 20, len(data) - 1):
        with pytest.raises(c.CorruptBatchError):
            c.decode_batch(data[:n])
    with pytest.raises(c.CorruptBatchError):
        c.decode_for_produce(data + b"x", "gw", "ep")

    e = pickle.loads(pickle.dumps(ei.value))
    assert isinstance(e, c.CorruptBatchError)


def test_decode_for_produce_headers():
    recs = [rec(7, synced=False, props=[("a", "1"), ("b", "é")], qos=2, retain=True), rec(8, key=None)]
    out = c.decode_for_produce(c.encode_batch(recs, BOOT, "lz4"), "truck-0042", "ep-1")
    topic, value, key, ts, headers = out[0]
    assert (topic, value, key, ts) == ("telemetry", recs[0][10], b"v1", 1_700_000_000_123)
    assert headers == [
        ("mqtt.topic", b"vehicles/v1/telemetry"),
        ("mqtt.qos", b"2"),
        ("mqtt.retain", b"true"),
        ("edgefwd.gateway", b"truck-0042"),
        ("edgefwd.epoch", b"ep-1"),
        ("edgefwd.seq", b"7"),
        ("edgefwd.clock", b"unsynced"),
        ("mqtt.user.a", b"1"),
        ("mqtt.user.b", "é".encode()),
    ]
    topic, value, key, ts, headers = out[1]
    assert key is None
    assert [n for n, _ in headers] == [
        "mqtt.topic",
        "mqtt.qos",
        "mqtt.retain",
        "edgefwd.gateway",
        "edgefwd.epoch",
        "edgefwd.seq",
    ]
    assert dict(headers)["mqtt.retain"] == b"false"
    assert dict(headers)["edgefwd.seq"] == b"8"

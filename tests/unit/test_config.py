"""The config loader: what a person sees when the file is right, and when it is wrong.

Every error test checks the three things a message must name: the file, the key path and
the line (the line as counted in the text written here), and that secrets never show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import pickle
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from edgefwd import config as cfgmod
from edgefwd.config import (
    Config,
    DownlinkRoute,
    KafkaConfig,
    MqttConfig,
    QueueConfig,
    Route,
    SaslConfig,
    Secret,
    TlsConfig,
    dump_effective,
    load_config,
    validate_routes,
)
from edgefwd.errors import EX_CONFIG, ConfigError, EdgefwdError, TemplateError, TopicError

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-Sup3rS3cret"  # must never appear in an error message, repr or dump

MINIMAL = """\
gateway_id: "truck-0042"
kafka:
  bootstrap_servers: "k1:9092"
routes:
  - mqtt_filter: "vehicles/+/telemetry/#"
    kafka_topic: "telemetry"
"""


def write(tmp_path: Path, text: str, name: str = "edgefwd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **kw) -> Config:
    return load_config(write(tmp_path, text), env=env or {}, compile_routes=kw.pop("compile_routes", _accept_all), **kw)


def _accept_all(rules, gateway_id):
    """A stand-in route compiler for tests that are not about templates."""
    return ("compiled", tuple(rules), gateway_id)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of text containing needle."""
    for i, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


def expect_error(tmp_path: Path, text: str, key: str | None, line_needle: str | None,
                 *fragments: str, env: dict[str, str] | None = None, **kw) -> ConfigError:
    path = tmp_path / "edgefwd.yaml"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env=env, **kw)
    err = info.value
    msg = str(err)
    assert err.path == str(path)
    assert err.key == key, msg
    if line_needle is not None:
        line = line_of(text, line_needle)
        assert err.line == line, msg
        assert msg.startswith(f"{path}:{line}"), msg
    if key is not None:
        assert f": {key}: " in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert SECRET not in msg and SECRET not in repr(err)
    assert isinstance(err, EdgefwdError) and err.exit_code == EX_CONFIG == 78
    return err


# ---------------------------------------------------------------------------------------
# A full valid example
# ---------------------------------------------------------------------------------------

FULL = """\
gateway_id: "truck-0042"
data_dir: state
log_level: debug
status_interval: 500ms
mqtt:
  host: broker.local
  port: 8883
  protocol: "3.1.1"
  session_expiry: 2d
  keepalive: 1m
  connect_timeout: 5s
  qos: 1
  username: edgefwd
  password_file: mqtt.secret
  tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}
kafka:
  bootstrap_servers: "k1:9092, k2:9092"
  delivery: exactly_once
  tls: {}
  sasl:
    mechanism: SCRAM-SHA-512
    username: gw
    password: "${env:KAFKA_PASSWORD}"
  producer_properties:
    linger.ms: 20
    compression.type: zstd
    max.in.flight.requests.per.connection: 5
    client.rack: 0042
    socket.keepalive.enable: true
  consumer_properties:
    fetch.wait.max.ms: "100"
queue:
  max_bytes: 1.5 GiB
  on_full: block
  max_age: 7d
  commit_max_messages: 200
  commit_max_delay: 2ms
  compression: lz4
routes:
  - mqtt_filter: "vehicles/+/telemetry/#"
    kafka_topic: "telemetry"
    kafka_key: "${1}"
  - mqtt_filter: "vehicles/+/alarms"
    kafka_topic: "alarms.${gateway_id}"
    kafka_key: "${1}"
    priority: 10
    skip_retained: yes
downlink:
  - kafka_topic: "commands.${gateway_id}"
    mqtt_topic: "vehicles/${key}/commands"
    max_age: 5m
"""


@pytest.fixture
def full_dir(tmp_path: Path) -> Path:
    (tmp_path / "mqtt.secret").write_text(SECRET + "\n")
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    return tmp_path


def test_full_example_parses_to_the_expected_objects(full_dir: Path):
    seen = []
    c = load(full_dir, FULL, env={"KAFKA_PASSWORD": SECRET},
             compile_routes=lambda rules, gid: seen.append((rules, gid)) or "router")
    expected = Config(
        path=full_dir / "edgefwd.yaml",
        gateway_id="truck-0042",
        data_dir=full_dir / "state",
        log_level="debug",
        status_interval_s=0.5,
        mqtt=MqttConfig(
            host="broker.local", port=8883, client_id="edgefwd-truck-0042", protocol="3.1.1",
            session_expiry_s=2 * 86400.0, keepalive_s=60.0, connect_timeout_s=5.0, qos=1,
            username="edgefwd", password=Secret(SECRET),
            tls=TlsConfig(ca_file=str(full_dir / "ca.pem"), cert_file=str(full_dir / "client.pem"),
                          key_file=str(full_dir / "client.key")),
        ),
        kafka=KafkaConfig(
            bootstrap_servers="k1:9092,k2:9092", delivery="exactly_once", tls=TlsConfig(),
            sasl=SaslConfig(mechanism="SCRAM-SHA-512", username="gw", password=Secret(SECRET)),
            producer_properties={"linger.ms": "20", "compression.type": "zstd",
                                 "max.in.flight.requests.per.connection": "5",
                                 "client.rack": "0042", "socket.keepalive.enable": "true"},
            consumer_properties={"fetch.wait.max.ms": "100"},
        ),
        queue=QueueConfig(max_bytes=1536 * 2**20, on_full="block", max_age_s=7 * 86400.0,
                          commit_max_messages=200, commit_max_delay_s=0.002, compression="lz4"),
        routes=(
            Route(mqtt_filter="vehicles/+/telemetry/#", kafka_topic="telemetry", kafka_key="${1}"),
            Route(mqtt_filter="vehicles/+/alarms", kafka_topic="alarms.${gateway_id}",
                  kafka_key="${1}", priority=10, skip_retained=True),
        ),
        downlink=(DownlinkRoute(kafka_topic="commands.${gateway_id}",
                                mqtt_topic="vehicles/${key}/commands", max_age_s=300.0),),
    )
    assert c == expected
    assert c.mqtt.password.reveal() == SECRET
    assert c.kafka.sasl.password.reveal() == SECRET
    assert c.kafka.sasl.password.source == "env KAFKA_PASSWORD"
    assert c.mqtt.password.source == f"file {full_dir / 'mqtt.secret'}"
    # the route compiler saw exactly the routes, in order, with the gateway id
    assert seen == [([("vehicles/+/telemetry/#", "telemetry", "${1}"),
                      ("vehicles/+/alarms", "alarms.${gateway_id}", "${1}")], "truck-0042")]
    # lines are kept for later messages (e.g. a route that fails at run time)
    assert c.line_of("routes[1].kafka_key") == line_of(FULL, "kafka_key") + 3
    assert c.line_of("routes[1]") == line_of(FULL, '"vehicles/+/alarms"')
    assert c.line_of("mqtt.tls.ca_file") == line_of(FULL, "ca_file")


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path):
    c = load(tmp_path, MINIMAL)
    assert c.data_dir == Path("/var/lib/edgefwd")
    assert c.log_level == "info" and c.status_interval_s == 1.0
    assert c.mqtt == MqttConfig(client_id="edgefwd-truck-0042")
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.protocol, c.mqtt.qos) == ("127.0.0.1", 1883, "5", 1)
    assert c.mqtt.session_expiry_s == 7 * 86400 and c.mqtt.keepalive_s == 30
    assert c.mqtt.connect_timeout_s == 10 and c.mqtt.password is None and c.mqtt.tls is None
    assert c.kafka == KafkaConfig(bootstrap_servers="k1:9092")
    assert c.kafka.delivery == "at_least_once" and dict(c.kafka.producer_properties) == {}
    assert c.queue == QueueConfig()
    assert c.queue.max_bytes == 2 * 2**30 and c.queue.on_full == "drop_oldest"
    assert c.queue.max_age_s is None and c.queue.commit_max_messages == 500
    assert c.queue.commit_max_delay_s == 0.02 and c.queue.compression == "zstd"
    assert c.routes == (Route(mqtt_filter="vehicles/+/telemetry/#", kafka_topic="telemetry"),)
    assert c.routes[0].kafka_key is None and c.routes[0].priority == 0
    assert c.downlink == ()


def test_config_is_frozen_and_picklable_for_the_drainer_process(full_dir: Path):
    c = load(full_dir, FULL, env={"KAFKA_PASSWORD": SECRET})
    with pytest.raises(AttributeError):
        c.gateway_id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.kafka.producer_properties["acks"] = "0"  # type: ignore[index]
    again = pickle.loads(pickle.dumps(c))
    assert again == c and again.mqtt.password.reveal() == SECRET
    assert again.line_of("routes[1].kafka_key") == c.line_of("routes[1].kafka_key")


def test_protocol_accepts_5_as_number_or_string(tmp_path: Path):
    for written in ("5", '"5"', '"3.1.1"', "3.1.1"):
        c = load(tmp_path, MINIMAL + f"mqtt:\n  protocol: {written}\n")
        assert c.mqtt.protocol == written.strip('"')


def test_client_id_can_be_set(tmp_path: Path):
    assert load(tmp_path, MINIMAL + "mqtt: {client_id: gw-a}\n").mqtt.client_id == "gw-a"


def test_bootstrap_servers_as_a_list(tmp_path: Path):
    text = MINIMAL.replace('bootstrap_servers: "k1:9092"', 'bootstrap_servers: ["k1:9092", "k2:9092"]')
    assert load(tmp_path, text).kafka.bootstrap_servers == "k1:9092,k2:9092"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir("/")
    c = load(tmp_path, MINIMAL + "data_dir: ./q\n")
    assert c.data_dir == tmp_path / "q"


def test_yaml_merge_keys_work(tmp_path: Path):
    text = MINIMAL.replace("routes:\n", "").replace(
        '  - mqtt_filter: "vehicles/+/telemetry/#"\n    kafka_topic: "telemetry"\n', "")
    text += textwrap.dedent("""\
        routes:
          - &base {mqtt_filter: "a/+", kafka_topic: "t", priority: 3}
          - <<: *base
            mqtt_filter: "b/+"
        """)
    c = load(tmp_path, text)
    assert c.routes[1] == Route(mqtt_filter="b/+", kafka_topic="t", priority=3)


# ---------------------------------------------------------------------------------------
# The file itself
# ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.path == str(path) and err.key is None and err.line is None
    assert str(err).startswith(f"{path}: config file not found")


def test_directory_instead_of_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_unreadable_file(tmp_path: Path):
    path = write(tmp_path, MINIMAL)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match="permission denied"):
            load_config(path)
        return
    # root reads any file: drop the capabilities that let it (as systemd's hardening would)
    code = ("import sys\nfrom edgefwd.config import load_config\nfrom edgefwd.errors import ConfigError\n"
            "try:\n    load_config(sys.argv[1])\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, check=True,
    )
    assert "permission denied" in out.stdout, out


def test_not_yaml_reports_line_and_column(tmp_path: Path):
    text = 'gateway_id: "gw"\nmqtt:\n  host: [a, b\nqueue: {}\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert err.line is not None and err.column is not None
    assert str(err).startswith(f"{path}:{err.line}:{err.column}: not valid YAML")
    assert err.line in (3, 4)


def test_bad_indentation_is_not_yaml(tmp_path: Path):
    path = write(tmp_path, 'gateway_id: "gw"\nmqtt:\n  host: a\n port: 1\n')
    with pytest.raises(ConfigError, match=r":4:\d+: not valid YAML"):
        load_config(path, env={})


def test_top_level_not_a_mapping(tmp_path: Path):
    err = expect_error(tmp_path, "- gateway_id: a\n", None, "- gateway_id", "top level must be a mapping")
    assert "a list" in str(err)


def test_empty_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="the file is empty"):
        load(tmp_path, "# nothing here\n")


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "edgefwd.yaml"
    path.write_bytes(b'gateway_id: "gw"\nmqtt:\n  host: \xff\xfe\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.line == 3 and "not UTF-8" in str(info.value)


def test_two_documents(tmp_path: Path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path, MINIMAL + "---\nfoo: 1\n")


# ---------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------


def test_unknown_key_suggests_the_nearest(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  hots: broker\n"
    expect_error(tmp_path, text, "mqtt.hots", "hots:", "unknown key", "did you mean 'host'?")


def test_unknown_key_with_unit_suffix_suggests_the_real_key(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  session_expiry_s: 3600\n"
    expect_error(tmp_path, text, "mqtt.session_expiry_s", "session_expiry_s", "did you mean 'session_expiry'?")


def test_key_in_the_wrong_section_says_where_it_belongs(tmp_path: Path):
    text = MINIMAL + "max_bytes: 1GiB\n"
    expect_error(tmp_path, text, "max_bytes", "max_bytes", "unknown key", "belongs under queue")


def test_unknown_key_in_a_route(tmp_path: Path):
    text = MINIMAL + "    kafka_keys: x\n"
    expect_error(tmp_path, text, "routes[0].kafka_keys", "kafka_keys", "did you mean 'kafka_key'?")


def test_duplicate_key(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  port: 1883\n  port: 1884\n"
    err = expect_error(tmp_path, text, "mqtt.port", "1884", "duplicate key")
    assert f"first at line {line_of(text, '1883')}" in str(err)


def test_missing_gateway_id(tmp_path: Path):
    text = MINIMAL.replace('gateway_id: "truck-0042"\n', "")
    expect_error(tmp_path, text, "gateway_id", "kafka:", "is required", 'gateway_id: "truck-0042"')


def test_missing_kafka_section(tmp_path: Path):
    text = 'gateway_id: gw\nroutes: [{mqtt_filter: a, kafka_topic: b}]\n'
    expect_error(tmp_path, text, "kafka", "gateway_id", "is required")


def test_missing_bootstrap_servers(tmp_path: Path):
    text = 'gateway_id: gw\nkafka:\n  delivery: at_least_once\nroutes: [{mqtt_filter: a, kafka_topic: b}]\n'
    expect_error(tmp_path, text, "kafka.bootstrap_servers", "delivery", "is required")


def test_no_routes(tmp_path: Path):
    text = 'gateway_id: gw\nkafka: {bootstrap_servers: "k:9092"}\nroutes: []\n'
    expect_error(tmp_path, text, "routes", "routes:", "at least one route")
    text = 'gateway_id: gw\nkafka: {bootstrap_servers: "k:9092"}\n'
    expect_error(tmp_path, text, "routes", "gateway_id", "at least one route")


def test_route_missing_kafka_topic(tmp_path: Path):
    text = 'gateway_id: gw\nkafka: {bootstrap_servers: "k:9092"}\nroutes:\n  - mqtt_filter: a/#\n'
    expect_error(tmp_path, text, "routes[0].kafka_topic", "mqtt_filter", "is required")


# ---------------------------------------------------------------------------------------
# Strings where strings are meant
# ---------------------------------------------------------------------------------------


def test_gateway_id_read_as_number(tmp_path: Path):
    text = MINIMAL.replace('gateway_id: "truck-0042"', "gateway_id: 0042")
    expect_error(tmp_path, text, "gateway_id", "gateway_id", "expected a string",
                 "YAML reads 0042 as a number", 'quote it: gateway_id: "0042"')


def test_off_read_as_boolean(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  username: off\n"
    expect_error(tmp_path, text, "mqtt.username", "username", "YAML reads off as a boolean",
                 'quote it: username: "off"')


def test_choice_read_as_boolean(tmp_path: Path):
    text = MINIMAL + "queue:\n  compression: no\n"
    expect_error(tmp_path, text, "queue.compression", "compression", "YAML reads no as a boolean",
                 "one of none | lz4 | zstd")


def test_date_where_a_string_belongs(tmp_path: Path):
    text = MINIMAL.replace('kafka_topic: "telemetry"', "kafka_topic: 2024-01-01")
    expect_error(tmp_path, text, "routes[0].kafka_topic", "2024-01-01", "YAML reads 2024-01-01 as a date")


def test_null_where_a_string_belongs(tmp_path: Path):
    text = MINIMAL.replace('gateway_id: "truck-0042"', "gateway_id:")
    expect_error(tmp_path, text, "gateway_id", "gateway_id:", "is empty (null)")


def test_invalid_gateway_id(tmp_path: Path):
    for bad in ('"truck 42"', '"a/b"', '"' + "x" * 65 + '"'):
        text = MINIMAL.replace('"truck-0042"', bad)
        expect_error(tmp_path, text, "gateway_id", "gateway_id", "not a valid gateway id",
                     "1 to 64 characters from A-Z a-z 0-9 . _ -")


def test_mapping_where_a_string_belongs(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  host: {a: 1}\n"
    expect_error(tmp_path, text, "mqtt.host", "host", "expected a string, got a mapping")


# ---------------------------------------------------------------------------------------
# Wrong types and values
# ---------------------------------------------------------------------------------------


def test_port_not_a_number(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  port: http\n", "mqtt.port", "port",
                 "'http' is not a whole number", "from 1 to 65535")


def test_port_out_of_range(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  port: 70000\n", "mqtt.port", "port", "out of range")


def test_section_not_a_mapping(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt: [a]\n", "mqtt", "mqtt: [a]", "expected a mapping of keys, got a list")


def test_routes_not_a_list(tmp_path: Path):
    text = 'gateway_id: gw\nkafka: {bootstrap_servers: "k:9092"}\nroutes: {mqtt_filter: a}\n'
    expect_error(tmp_path, text, "routes", "routes:", "expected a list")


def test_bad_choice_suggests(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "queue:\n  on_full: drop_olds\n", "queue.on_full", "on_full",
                 "did you mean 'drop_oldest'?", "drop_oldest | drop_newest | block")


def test_bad_delivery(tmp_path: Path):
    expect_error(tmp_path, MINIMAL.replace('"k1:9092"', '"k1:9092"\n  delivery: exactly-once'),
                 "kafka.delivery", "delivery", "did you mean 'exactly_once'?")


def test_protocol_that_is_not_supported(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  protocol: 3.1\n", "mqtt.protocol", "protocol",
                 "3.1 is not a supported MQTT protocol version", '"5" or "3.1.1"')
    expect_error(tmp_path, MINIMAL + "mqtt:\n  protocol: 4\n", "mqtt.protocol", "protocol")


@pytest.mark.parametrize("qos,why", [(0, "never redelivered"), (2, "PUBREC")])
def test_qos_other_than_1_is_refused_with_the_reason(tmp_path: Path, qos: int, why: str):
    expect_error(tmp_path, MINIMAL + f"mqtt:\n  qos: {qos}\n", "mqtt.qos", "qos",
                 f"QoS {qos} is not supported", "at-least-once", why, "(1: ")


def test_priority_out_of_range(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "    priority: 300\n", "routes[0].priority", "priority",
                 "out of range", "from 0 to 255")


def test_skip_retained_not_a_boolean(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "    skip_retained: maybe\n", "routes[0].skip_retained",
                 "skip_retained", "not a boolean", "true or false")


def test_tls_file_missing(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  tls: {ca_file: /nonexistent/ca.pem}\n",
                 "mqtt.tls.ca_file", "ca_file", "/nonexistent/ca.pem does not exist")


def test_tls_key_without_cert(tmp_path: Path):
    (tmp_path / "k.pem").write_text("x")
    text = MINIMAL.replace('bootstrap_servers: "k1:9092"', 'bootstrap_servers: "k1:9092"\n  tls:\n    key_file: k.pem')
    expect_error(tmp_path, text, "kafka.tls.key_file", "key_file", "key_file without cert_file")


def test_password_without_username(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  password: ${env:PW}\n", "mqtt.password", "password",
                 "without a username", env={"PW": SECRET})


# ---------------------------------------------------------------------------------------
# Sizes and durations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("written,expected", [
    ("2GiB", 2 * 2**30), ("500MB", 500 * 10**6), ("1.5 GiB", 1536 * 2**20),
    ("1073741824", 2**30), ('"64MiB"', 64 * 2**20),
])
def test_sizes(tmp_path: Path, written: str, expected: int):
    assert load(tmp_path, MINIMAL + f"queue:\n  max_bytes: {written}\n").queue.max_bytes == expected


@pytest.mark.parametrize("written,fragment", [
    ("2G", "write GB (powers of 1000) or GiB (powers of 1024)"),
    ("lots", "not a size"),
    ("-1GiB", "cannot be negative"),
    ("1.5", "must be whole"),
    ("true", "expected a size, got a boolean"),
])
def test_bad_sizes(tmp_path: Path, written: str, fragment: str):
    expect_error(tmp_path, MINIMAL + f"queue:\n  max_bytes: {written}\n", "queue.max_bytes",
                 "max_bytes", fragment, "KiB, MiB, GiB")


def test_size_too_small(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "queue:\n  max_bytes: 1000\n", "queue.max_bytes", "max_bytes",
                 "too small", "at least 1MiB")


@pytest.mark.parametrize("written,expected", [
    ("30s", 30.0), ("5m", 300.0), ("7d", 7 * 86400.0), ("1h30m", 5400.0), ("3600", 3600.0),
    ("1.5h", 5400.0), ('"1m 30s"', 90.0),
])
def test_durations(tmp_path: Path, written: str, expected: float):
    assert load(tmp_path, MINIMAL + f"mqtt:\n  session_expiry: {written}\n").mqtt.session_expiry_s == expected


@pytest.mark.parametrize("written,fragment", [
    ("7 days", "not a duration"),
    ("1:30", "not a duration"),  # YAML 1.1 would read this as 90 (base 60): never guessed
    ("30m1h", "largest first"),
    ("0", "out of range"),
    ("1500ms", "whole number of seconds"),
])
def test_bad_durations(tmp_path: Path, written: str, fragment: str):
    expect_error(tmp_path, MINIMAL + f"mqtt:\n  session_expiry: {written}\n", "mqtt.session_expiry",
                 "session_expiry", fragment)


def test_commit_delay_limit(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "queue:\n  commit_max_delay: 2s\n", "queue.commit_max_delay",
                 "commit_max_delay", "out of range", "from 0s to 1s")


def test_numbers_from_the_environment(tmp_path: Path):
    c = load(tmp_path, MINIMAL + "mqtt:\n  port: ${env:PORT}\n  keepalive: ${env:KA}\n",
             env={"PORT": "8883", "KA": "45s"})
    assert c.mqtt.port == 8883 and c.mqtt.keepalive_s == 45.0


# ---------------------------------------------------------------------------------------
# librdkafka properties that would change delivery semantics
# ---------------------------------------------------------------------------------------

KAFKA_WITH = 'gateway_id: gw\nroutes: [{{mqtt_filter: a, kafka_topic: b}}]\nkafka:\n  bootstrap_servers: "k:9092"\n  {section}:\n    {prop}: {value}\n'


@pytest.mark.parametrize("prop,value,key", [
    ("acks", "1", "kafka.producer_properties.acks"),
    ("request.required.acks", "0", 'kafka.producer_properties["request.required.acks"]'),
    ("enable.idempotence", "false", 'kafka.producer_properties["enable.idempotence"]'),
    ("transactional.id", "x", 'kafka.producer_properties["transactional.id"]'),
    ("partitioner", "consistent_random", "kafka.producer_properties.partitioner"),
    ("queuing.strategy", "lifo", 'kafka.producer_properties["queuing.strategy"]'),
    ("message.timeout.ms", "1000", 'kafka.producer_properties["message.timeout.ms"]'),
    ("enable.gapless.guarantee", "false", 'kafka.producer_properties["enable.gapless.guarantee"]'),
    ("bootstrap.servers", "x:1", 'kafka.producer_properties["bootstrap.servers"]'),
    ("sasl.password", "${env:PW}", 'kafka.producer_properties["sasl.password"]'),
    ("Acks", "all", "kafka.producer_properties.Acks"),
])
def test_refused_producer_properties(tmp_path: Path, prop: str, value: str, key: str):
    text = KAFKA_WITH.format(section="producer_properties", prop=prop, value=value)
    expect_error(tmp_path, text, key, f"{prop}:", "refused", "docs/config.md", env={"PW": SECRET})


@pytest.mark.parametrize("prop,value", [
    ("enable.auto.commit", "true"), ("isolation.level", "read_uncommitted"),
    ("enable.auto.offset.store", "true"), ("group.id", "shared"),
])
def test_refused_consumer_properties(tmp_path: Path, prop: str, value: str):
    text = KAFKA_WITH.format(section="consumer_properties", prop=prop, value=value)
    expect_error(tmp_path, text, f'kafka.consumer_properties["{prop}"]', f"{prop}:", "refused")


def test_max_in_flight_above_5_is_refused(tmp_path: Path):
    for prop in ("max.in.flight.requests.per.connection", "max.in.flight"):
        text = KAFKA_WITH.format(section="producer_properties", prop=prop, value="10")
        expect_error(tmp_path, text, f'kafka.producer_properties["{prop}"]', f"{prop}:",
                     "at most 5 requests in flight", "1 to 5")
    text = KAFKA_WITH.format(section="producer_properties", prop="max.in.flight", value="5")
    assert load(tmp_path, text).kafka.producer_properties["max.in.flight"] == "5"


def test_property_without_value(tmp_path: Path):
    text = KAFKA_WITH.format(section="producer_properties", prop="linger.ms", value="")
    expect_error(tmp_path, text, 'kafka.producer_properties["linger.ms"]', "linger.ms", "expected a value")


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------


def test_secret_repr_and_str_are_masked():
    s = Secret(SECRET, "env X")
    assert repr(s) == str(s) == f"{s}" == "***" and s.reveal() == SECRET
    assert SECRET not in repr([s]) and SECRET not in repr({"p": s})
    with pytest.raises(AttributeError):
        s._value = "x"  # type: ignore[misc]


def test_secrets_never_in_repr_or_dump(full_dir: Path):
    text = FULL.replace("    linger.ms: 20\n", "    linger.ms: 20\n    ssl.keystore.password: ${env:KAFKA_PASSWORD}\n")
    c = load(full_dir, text, env={"KAFKA_PASSWORD": SECRET})
    assert c.kafka.producer_properties["ssl.keystore.password"] == SECRET  # passed through...
    assert SECRET not in repr(c)  # ...but never shown
    assert SECRET not in str(dump_effective(c))
    assert dump_effective(c)["mqtt"]["password"] == "***"
    assert dump_effective(c)["kafka"]["sasl"]["password"] == "***"


def test_password_file_strips_one_trailing_newline(tmp_path: Path):
    (tmp_path / "pw").write_text("a b \r\n")
    c = load(tmp_path, MINIMAL + "mqtt:\n  username: u\n  password_file: pw\n")
    assert c.mqtt.password.reveal() == "a b "


def test_missing_env_var_names_the_key_and_variable(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  username: u\n  password: ${env:MQTT_PASSWORD}\n"
    expect_error(tmp_path, text, "mqtt.password", "password:", "environment variable MQTT_PASSWORD is not set")


def test_missing_password_file(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  username: u\n  password_file: /nonexistent/mqtt.secret\n"
    expect_error(tmp_path, text, "mqtt.password_file", "password_file", "cannot read /nonexistent/mqtt.secret")


def test_missing_file_substitution(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  username: u\n  password: ${file:nope.txt}\n"
    expect_error(tmp_path, text, "mqtt.password", "password:", "${file:nope.txt}", "cannot read")


def test_empty_password_file(tmp_path: Path):
    (tmp_path / "pw").write_text("\n")
    expect_error(tmp_path, MINIMAL + "mqtt:\n  username: u\n  password_file: pw\n",
                 "mqtt.password_file", "password_file", "is empty")


def test_password_and_password_file_both_set(tmp_path: Path):
    (tmp_path / "pw").write_text(SECRET)
    text = MINIMAL.replace('bootstrap_servers: "k1:9092"', 'bootstrap_servers: "k1:9092"\n  sasl:\n    mechanism: PLAIN\n    username: u\n    password: ${env:PW}\n    password_file: pw')
    expect_error(tmp_path, text, "kafka.sasl.password_file", "password_file", "both password and password_file",
                 env={"PW": SECRET})


def test_sasl_without_password(tmp_path: Path):
    text = MINIMAL.replace('bootstrap_servers: "k1:9092"', 'bootstrap_servers: "k1:9092"\n  sasl: {mechanism: PLAIN, username: u}')
    expect_error(tmp_path, text, "kafka.sasl.password_file", "sasl:", "is required")


@pytest.mark.parametrize("addition,key", [
    ("mqtt:\n  port: ${env:PW}\n", "mqtt.port"),
    ("mqtt:\n  port: ${file:pw}\n", "mqtt.port"),
    ("mqtt:\n  keepalive: ${env:PW}\n", "mqtt.keepalive"),
    ("queue:\n  max_bytes: ${env:PW}\n", "queue.max_bytes"),
    ("queue:\n  on_full: ${env:PW}\n", "queue.on_full"),
    ("routes_gateway", "gateway_id"),
])
def test_resolved_values_are_never_quoted_in_messages(tmp_path: Path, addition: str, key: str):
    # A value that came from the environment or a file is shown as written, not resolved.
    (tmp_path / "pw").write_text(SECRET)
    if addition == "routes_gateway":
        text = MINIMAL.replace('"truck-0042"', '"${env:PW}x"')
        env = {"PW": "bad id with spaces " + SECRET}
    else:
        text, env = MINIMAL + addition, {"PW": SECRET}
    err = expect_error(tmp_path, text, key, "${", env=env)
    assert "resolved value not shown" in str(err)


def test_read_secrets_false_does_not_read_secret_files(tmp_path: Path):
    text = MINIMAL + "mqtt:\n  username: u\n  password_file: /root-only/mqtt.secret\n  tls: {ca_file: /root-only/ca.pem}\n"
    c = load(tmp_path, text, read_secrets=False)
    assert c.mqtt.password is not None and c.mqtt.password.reveal() == ""
    assert c.mqtt.tls.ca_file == "/root-only/ca.pem"


def test_dollar_dollar_is_a_literal_and_templates_are_left_alone(tmp_path: Path):
    text = MINIMAL.replace('kafka_topic: "telemetry"', 'kafka_topic: "t.${env:SITE}"\n    kafka_key: "$${1}-${1}-${topic}"')
    text += "mqtt:\n  username: \"a$${env:X}b\"\n"
    c = load(tmp_path, text, env={"SITE": "north"})
    assert c.mqtt.username == "a${env:X}b"  # literal after unescaping, not substituted
    assert c.routes[0].kafka_topic == "t.north"
    # template fields keep $${ for the router (which reads it as a literal ${)
    assert c.routes[0].kafka_key == "$${1}-${1}-${topic}"


def test_unterminated_substitution(tmp_path: Path):
    expect_error(tmp_path, MINIMAL + "mqtt:\n  host: ${env:HOST\n", "mqtt.host", "host", "unterminated")


# ---------------------------------------------------------------------------------------
# Route templates: the router's errors point at the route's line
# ---------------------------------------------------------------------------------------

ROUTES = """\
gateway_id: gw
kafka: {bootstrap_servers: "k:9092"}
routes:
  - mqtt_filter: "vehicles/+/telemetry/#"
    kafka_topic: "telemetry"
    kafka_key: "${1}"
  - mqtt_filter: "vehicles/+/alarms"
    kafka_topic: "alarms"
    kafka_key: "${2}"
"""


def _fake_router(rules, gateway_id):
    """Checks like the Rust router: wildcards in the filter vs ${N}; errors name the route."""
    for i, (flt, topic, key) in enumerate(rules):
        levels = flt.split("/")
        if any(("#" in lv or "+" in lv) and len(lv) > 1 for lv in levels) or "#" in levels[:-1]:
            raise TopicError(f"invalid topic filter {flt!r}: # must be the last level")
        wildcards = sum(lv in ("+", "#") for lv in levels)
        for field_name, tpl in (("kafka_topic", topic), ("kafka_key", key)):
            for n in re.findall(r"(?<!\$)\$\{(\d+)\}", tpl or ""):
                if int(n) > wildcards:
                    raise TemplateError(f"route {i}: {field_name} template {tpl!r}: ${{{n}}} but the filter has {wildcards} wildcards")
    return "router"


def test_template_error_points_at_the_route_key(tmp_path: Path):
    text = ROUTES
    err = expect_error(tmp_path, text, "routes[1].kafka_key", '"${2}"', "${2} but the filter has 1 wildcards",
                       "${1}..${N}", compile_routes=_fake_router)
    assert "route 1:" not in str(err)  # the index is in the key path, not repeated


def test_topic_error_points_at_the_filter(tmp_path: Path):
    text = ROUTES.replace('"vehicles/+/alarms"', '"vehicles/#/alarms"').replace("${2}", "${1}")
    expect_error(tmp_path, text, "routes[1].mqtt_filter", "vehicles/#/alarms", "# must be the last level",
                 compile_routes=_fake_router)


def test_validate_routes_returns_the_compiled_router(tmp_path: Path):
    c = load(tmp_path, ROUTES.replace("${2}", "${1}"))
    assert validate_routes(c, _fake_router) == "router"


def test_error_not_attributable_to_one_route_uses_the_index_in_the_message(tmp_path: Path):
    def picky(rules, gid):
        if len(rules) > 1:
            raise TemplateError("route 1: conflicts with route 0")
        return "ok"

    expect_error(tmp_path, ROUTES.replace("${2}", "${1}"), "routes[1]", "vehicles/+/alarms",
                 "conflicts with route 0", compile_routes=picky)


def test_native_router_template_error(tmp_path: Path):
    from edgefwd import _core as core
    assert hasattr(core, "Router"), "edgefwd._core must export Router"
    path = write(tmp_path, ROUTES)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "routes[1].kafka_key"
    assert info.value.line == line_of(ROUTES, '"${2}"')


def test_native_router_topic_error(tmp_path: Path):
    text = ROUTES.replace('"vehicles/+/alarms"', '"vehicles/#/alarms"').replace("${2}", "${1}")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.key == "routes[1].mqtt_filter"
    assert info.value.line == line_of(text, "vehicles/#/alarms")


def test_native_router_accepts_the_shipped_routes(tmp_path: Path):
    c = load_config(write(tmp_path, ROUTES.replace("${2}", "${1}")), env={})
    assert validate_routes(c) is not None


# ---------------------------------------------------------------------------------------
# Downlink
# ---------------------------------------------------------------------------------------


def test_downlink_kafka_topic_only_gateway_id(tmp_path: Path):
    text = MINIMAL + 'downlink:\n  - kafka_topic: "commands.${1}"\n    mqtt_topic: "a/${key}"\n'
    expect_error(tmp_path, text, "downlink[0].kafka_topic", "commands.", "${1} cannot be used",
                 "only ${gateway_id}")


def test_downlink_mqtt_topic_no_wildcards(tmp_path: Path):
    text = MINIMAL + 'downlink:\n  - kafka_topic: "commands"\n    mqtt_topic: "a/+/b"\n'
    expect_error(tmp_path, text, "downlink[0].mqtt_topic", "a/+/b", "cannot contain + #")


def test_downlink_rendered_topic_must_be_a_kafka_name(tmp_path: Path):
    text = MINIMAL + 'downlink:\n  - kafka_topic: "commands/${gateway_id}"\n    mqtt_topic: "a"\n'
    expect_error(tmp_path, text, "downlink[0].kafka_topic", "commands/", "not a valid Kafka topic name")


# ---------------------------------------------------------------------------------------
# The effective config, the shipped default config, the docs
# ---------------------------------------------------------------------------------------


def test_dump_effective_reads_back_to_the_same_config(full_dir: Path):
    text = FULL.replace("  password_file: mqtt.secret\n", "")
    text = text.replace("  username: edgefwd\n", "  username: \"ed$${gefwd\"\n")
    c = load(full_dir, text, env={"KAFKA_PASSWORD": SECRET})
    dumped = dump_effective(c)
    again_path = full_dir / "again.yaml"
    again_path.write_text(yaml.safe_dump(dumped, sort_keys=False))
    again = load_config(again_path, env={}, compile_routes=_accept_all)
    # secrets are masked in the dump, so they differ; everything else is the same
    assert again.kafka.sasl.password.reveal() == "***"
    import dataclasses
    fixed = dataclasses.replace(again, path=c.path, kafka=dataclasses.replace(again.kafka, sasl=c.kafka.sasl))
    assert fixed == c


def test_shipped_default_config_asks_for_gateway_id_and_is_valid_once_set(tmp_path: Path):
    shipped = (REPO / "packaging" / "edgefwd.yaml").read_text()
    path = write(tmp_path, shipped)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, compile_routes=_accept_all)
    assert info.value.key == "gateway_id" and "is required" in str(info.value)
    assert re.search(r"^# *gateway_id:", shipped, re.M), "the shipped file shows where gateway_id goes"
    edited = re.sub(r"^# *gateway_id:.*$", 'gateway_id: "truck-0042"', shipped, count=1, flags=re.M)
    c = load_config(write(tmp_path, edited), env={}, compile_routes=_accept_all)
    assert c.gateway_id == "truck-0042" and c.data_dir == Path("/var/lib/edgefwd")
    assert c.queue == QueueConfig() and c.mqtt.protocol == "5" and c.routes


def test_shipped_default_config_passes_the_native_router(tmp_path: Path):
    shipped = (REPO / "packaging" / "edgefwd.yaml").read_text()
    edited = re.sub(r"^# *gateway_id:.*$", 'gateway_id: "truck-0042"', shipped, count=1, flags=re.M)
    load_config(write(tmp_path, edited), env={})


def test_docs_cover_every_key_and_every_refused_property():
    doc = (REPO / "docs" / "config.md").read_text()
    for section, keys in cfgmod._SECTIONS.items():
        for key in keys:
            assert f"`{key}`" in doc, f"docs/config.md does not document {section}.{key}"
    for prop in {**cfgmod.REFUSED_PRODUCER_PROPERTIES, **cfgmod.REFUSED_CONSUMER_PROPERTIES}:
        assert f"`{prop}`" in doc, f"docs/config.md does not list refused property {prop}"

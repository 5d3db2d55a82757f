"""`edgefwd check`: try both connections the way the agent makes them, and say what failed."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from edgefwd.config import Config
from edgefwd.kafka_props import producer_config


def check_mqtt(config: Config, timeout: float) -> str | None:
    """None if the broker accepted a connection with our credentials, else what went wrong."""
    cfg = config.mqtt
    done = threading.Event()
    outcome: list[str | None] = []
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        # a separate client id: connecting as the agent's would take over its session
        client_id=f"{cfg.client_id}-check",
        protocol=mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311,
    )
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password.reveal() if cfg.password else None)
    if cfg.tls is not None:
        client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file)

    def on_connect(c, userdata, flags, reason_code, properties):
        outcome.append(f"broker refused: {reason_code}" if reason_code.is_failure else None)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, keepalive=10)
    except OSError as exc:
        return f"cannot reach {cfg.host}:{cfg.port}: {exc}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return f"no answer from {cfg.host}:{cfg.port} within {timeout:.0f}s"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()


def check_kafka(config: Config, timeout: float) -> str | None:
    props = {k: v for k, v in producer_config(config).items() if not k.startswith(("acks", "enable.", "partitioner", "linger", "compression", "message."))}
    try:
        metadata = AdminClient(props).list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        return f"{config.kafka.bootstrap_servers}: {getattr(err, 'str', lambda: str(err))()}"
    if not metadata.brokers:
        return f"{config.kafka.bootstrap_servers}: no brokers in the metadata"
    return None


def check_connections(config: Config, timeout: float = 10.0) -> int:
    failures = 0
    for name, fn in (("mqtt", check_mqtt), ("kafka", check_kafka)):
        problem = fn(config, timeout)
        print(f"{name}: {'ok' if problem is None else 'FAILED: ' + problem}")
        failures += problem is not None
    return 0 if failures == 0 else 1

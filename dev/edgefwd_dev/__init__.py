"""Development helpers for edgefwd: real Mosquitto and Kafka servers on 127.0.0.1, fault
injection, and an MQTT fleet publisher. Put the repository's dev/ folder on sys.path."""

from .services import (  # noqa: F401
    FaultInjector,
    Kafka,
    KafkaRecord,
    Mosquitto,
    ensure_kafka_jars,
    free_port,
)

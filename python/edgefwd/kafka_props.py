"""librdkafka settings built from the config: the delivery-deciding ones are ours alone."""

from __future__ import annotations

from edgefwd.config import Config


def _security(config: Config) -> dict[str, str]:
    kafka = config.kafka
    props: dict[str, str] = {}
    if kafka.tls is not None:
        if kafka.tls.ca_file:
            props["ssl.ca.location"] = str(kafka.tls.ca_file)
        if kafka.tls.cert_file:
            props["ssl.certificate.location"] = str(kafka.tls.cert_file)
        if kafka.tls.key_file:
            props["ssl.key.location"] = str(kafka.tls.key_file)
        if kafka.tls.key_password is not None:
            props["ssl.key.password"] = kafka.tls.key_password.reveal()
    if kafka.sasl is not None:
        props["sasl.mechanism"] = kafka.sasl.mechanism
        props["sasl.username"] = kafka.sasl.username
        props["sasl.password"] = kafka.sasl.password.reveal()
        props["security.protocol"] = "SASL_SSL" if kafka.tls is not None else "SASL_PLAINTEXT"
    elif kafka.tls is not None:
        props["security.protocol"] = "SSL"
    return props


def producer_config(config: Config) -> dict[str, object]:
    """The uplink producer: acks from all in-sync replicas, idempotent, Java's partitioner."""
    props: dict[str, object] = {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "client.id": f"edgefwd-{config.gateway_id}",
        "compression.type": "lz4",
        "linger.ms": 5,
        # Retry inside librdkafka for as long as Kafka is away: a record that timed out while
        # later ones of its partition still got through would reorder the key.
        "message.timeout.ms": 0,
    }
    props.update(config.kafka.producer_properties)
    props.update(_security(config))
    props.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )
    return props

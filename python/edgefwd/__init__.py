"""edgefwd: store-and-forward from a gateway's MQTT broker to Apache Kafka.

Data flows one way: ingest -> queue -> drainer (and downlink, Kafka -> MQTT).
"""

from edgefwd._core import __version__

__all__ = ["__version__"]

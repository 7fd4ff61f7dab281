"""MQTT for fleetwatch ingest: a QoS 1 subscription whose acknowledgements wait for durability.

The one place that speaks MQTT.  Use :class:`MqttSource`; see docs/mqtt.md.

* :mod:`ingest.mqtt.protocol` -- the sans-I/O codec (bytes in, events out);
* :mod:`ingest.mqtt.source` -- the asyncio shell (connection, reconnect, backpressure, acks);
* :mod:`ingest.mqtt.settings` -- settings, URL and topic rules.
"""

from ingest.mqtt.settings import (
    UNIT_ID_RE,
    BadTopic,
    MqttConnectFailed,
    MqttError,
    MqttRefusedError,
    MqttSettings,
    MqttUrlError,
    parse_mqtt_url,
    unit_id_from_topic,
)
from ingest.mqtt.source import AckToken, MqttSource, MqttStats, Received

__all__ = [
    "UNIT_ID_RE",
    "AckToken",
    "BadTopic",
    "MqttConnectFailed",
    "MqttError",
    "MqttRefusedError",
    "MqttSettings",
    "MqttSource",
    "MqttStats",
    "MqttUrlError",
    "Received",
    "parse_mqtt_url",
    "unit_id_from_topic",
]

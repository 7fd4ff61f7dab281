"""Settings, URL and topic rules of the MQTT shell: values only, no I/O."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field, replace

#: A unit id as it may appear in a topic and as a broker user name (see deploy/mosquitto).
UNIT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

#: CONNACK reason codes that retrying cannot fix: wrong credentials or a refused client id.
PERMANENT_REFUSALS = {
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8A: "banned",
    0x8C: "bad authentication method",
}


class MqttError(Exception):
    """Base class of the errors this module raises."""


class BadTopic(MqttError, ValueError):
    """A topic that is not ``fleet/<unit_id>/nmea``: the unit (or an ACL) is misconfigured."""


class MqttUrlError(MqttError, ValueError):
    """An MQTT URL fleetwatch cannot use (the message says which part is wrong)."""


class MqttRefusedError(MqttError):
    """The broker refused our credentials or client id: retrying will not help, fix config."""


class MqttConnectFailed(MqttError):
    """One connection attempt failed in a way that a retry may fix (broker down, timeout,
    protocol error): the source retries these itself, with backoff."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Where and how to subscribe.  Times carry their unit in the name."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "fleetwatch-ingest"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # a secret: never in repr or logs
    topic: str = "fleet/+/nmea"
    qos: int = 1
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    receive_maximum: int = 65535
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_payload_bytes: int = 64 * 1024
    connect_timeout_s: float = 10.0
    #: 5 (default) or 4 (= 3.1.1, for brokers without MQTT 5 such as the embedded test broker;
    #: then the broker's max_inflight_messages bounds how many messages can await an ack).
    mqtt_version: int = 5

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos}")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be in 1..65535, not {self.receive_maximum}")
        if self.mqtt_version not in (4, 5):
            raise ValueError(f"mqtt_version must be 5 or 4 (3.1.1), not {self.mqtt_version}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")


def parse_mqtt_url(url: str, base: MqttSettings | None = None) -> MqttSettings:
    """``mqtt://user:pass@host:port`` -> settings (other fields from *base*).

    User and password are percent-decoded, so a password may contain ``@`` or ``:`` as
    ``%40`` / ``%3A``.  TLS (``mqtts://``) is not supported yet: refused rather than ignored.
    """
    base = base or MqttSettings()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt":
        raise MqttUrlError(
            f"unsupported MQTT URL scheme {parts.scheme!r} in {_redact(url)!r}: "
            "use mqtt://[user:password@]host[:port]"
        )
    try:
        port = parts.port
    except ValueError as e:
        raise MqttUrlError(f"bad port in MQTT URL {_redact(url)!r}: {e}") from None
    if not parts.hostname:
        raise MqttUrlError(f"no host in MQTT URL {_redact(url)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttUrlError(
            f"MQTT URL {_redact(url)!r} has a path or query; only "
            "mqtt://[user:password@]host[:port] is understood"
        )
    unquote = urllib.parse.unquote
    return replace(
        base,
        host=parts.hostname,
        port=port if port is not None else 1883,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def unit_id_from_topic(topic: str) -> str:
    """``fleet/<unit>/nmea`` -> ``<unit>``; anything else raises :class:`BadTopic`."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "fleet" or parts[2] != "nmea":
        raise BadTopic(f"topic {topic[:200]!r} is not fleet/<unit_id>/nmea")
    if not UNIT_ID_RE.fullmatch(parts[1]):
        raise BadTopic(
            f"unit id {parts[1][:80]!r} in topic {topic[:200]!r} is not "
            f"1-64 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return parts[1]

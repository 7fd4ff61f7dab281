"""A new user's first run: every documented command works with its defaults, and bad input is
one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from fleetwatch.cmd_check_broker import publish_backlog

# -- fleetwatch check-broker ---------------------------------------------------------------

QUEUE_SIZE = 15  # paho's MQTT_ERR_QUEUE_SIZE


class _FakeInfo:
    """paho's MQTTMessageInfo, acknowledged when waited for (a broker slower than the queue)."""

    def __init__(self, client: _FakePahoClient, mid: int, rc: int) -> None:
        self.client, self.mid, self.rc = client, mid, rc
        self.published = False

    def wait_for_publish(self, timeout: float | None = None) -> None:
        if self.rc == QUEUE_SIZE:
            raise ValueError("Message is not queued due to ERR_QUEUE_SIZE")
        if self.client.acks:
            self.published = True
            self.client.in_flight.discard(self.mid)

    def is_published(self) -> bool:
        return self.published


class _FakePahoClient:
    """paho's rule that broke the default probe: packet ids are 16 bits, and a publish whose id
    is still unacknowledged is refused with MQTT_ERR_QUEUE_SIZE."""

    def __init__(self, *, acks: bool = True) -> None:
        self.acks = acks
        self.sent = 0
        self.in_flight: set[int] = set()
        self.most_in_flight = 0

    def publish(self, topic: str, payload: bytes, qos: int) -> _FakeInfo:
        mid = self.sent % 65535 + 1
        self.sent += 1
        if mid in self.in_flight:
            return _FakeInfo(self, mid, QUEUE_SIZE)
        self.in_flight.add(mid)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return _FakeInfo(self, mid, 0)


def test_check_broker_default_probe_outgrows_16_bit_packet_ids() -> None:
    # the default probe: 150 units x 1 Hz x 15 min; queued in one go it crashed with
    # "ValueError: Message is not queued due to ERR_QUEUE_SIZE" on a first run
    client = _FakePahoClient()
    publish_backlog(client, "fleetwatch-check/t", b"$x", 150 * 15 * 60)  # type: ignore[arg-type]
    assert client.sent == 135_000
    assert not client.in_flight
    assert client.most_in_flight < 65535


def test_check_broker_broker_that_stops_acknowledging_is_a_connection_error() -> None:
    client = _FakePahoClient(acks=False)
    with pytest.raises(ConnectionError, match="acknowledged nothing"):
        publish_backlog(client, "t", b"$x", 20, window=5, ack_timeout_s=0.01)  # type: ignore[arg-type]

"""A publish-only MQTT 3.1.1 client for load generation: bytes in, bytes out, one select loop.

Why not paho for the load tester: paho spends ~40 µs per QoS 1 publish and as much per PUBACK
in Python (a send() per message, per-message bookkeeping), so a load tester built on it
measures itself, not fleetwatch (see docs/bench/simulator.md for both, measured in one run).
This client only ever sends CONNECT, PUBLISH (QoS 1), PINGREQ and DISCONNECT and only reads
CONNACK, PUBACK and PINGRESP, so it can batch: publishes are encoded into a per-connection
buffer and written with one ``sendall`` per pump, and acknowledgements are counted by a small
incremental parser (:class:`AckParser`, sans-I/O, tested on its own).

It has the same surface as :class:`simulators.publish.PublisherPool` (``connect``,
``publish``, ``pump``, ``outstanding``, ``drain``, ``close``), so either can drive a run.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from ingest.mqtt.protocol import encode_varint as varint
from simulators.publish import AckWaits, BrokerUnavailable, PoolStats

CONNACK, PUBLISH, PUBACK, PINGRESP = 0x20, 0x30, 0x40, 0xD0
MAX_PACKET_ID = 65535
#: an inbound packet larger than this is a protocol error for a publish-only client
MAX_INBOUND_PACKET = 1024


class MqttProtocolError(RuntimeError):
    """The broker sent something a publish-only MQTT 3.1.1 client cannot accept."""


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def encode_connect(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    keepalive_s: int = 30,
) -> bytes:
    flags = 0x02  # clean session: a load generator keeps no state across connections
    payload = _str(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _str(password.encode())
    var = _str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s)
    body = var + payload
    return bytes([0x10]) + varint(len(body)) + body


def encode_publish_qos1(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH; ``topic`` is the UTF-8 topic name without its length prefix."""
    rest = len(topic) + 4 + len(payload)
    return b"\x32" + varint(rest) + _str(topic) + struct.pack("!H", packet_id) + payload


@dataclass(slots=True)
class AckParser:
    """Incremental parser of what a broker sends a publisher.  ``feed`` returns nothing;
    counters say what arrived.  The buffer never holds more than one partial packet."""

    connack_rc: int | None = None
    pubacks: int = 0
    pingresps: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        i = 0
        n = len(buf)
        while i + 2 <= n:
            kind = buf[i] & 0xF0
            # remaining length
            mult, rem, j = 1, 0, i + 1
            while True:
                if j >= n:
                    del buf[:i]
                    return
                b = buf[j]
                rem += (b & 0x7F) * mult
                j += 1
                if not b & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise MqttProtocolError("malformed remaining length from the broker")
            if rem > MAX_INBOUND_PACKET:
                raise MqttProtocolError(f"unexpected {rem}-byte packet (type {kind >> 4})")
            if j + rem > n:
                break
            if kind == PUBACK:
                self.pubacks += 1
            elif kind == CONNACK:
                if rem != 2:
                    raise MqttProtocolError("malformed CONNACK")
                self.connack_rc = buf[j + 1]
            elif kind == PINGRESP:
                self.pingresps += 1
            else:
                raise MqttProtocolError(f"unexpected packet type {kind >> 4} for a publisher")
            i = j + rem
        del buf[:i]


@dataclass(slots=True)
class _Conn:
    sock: socket.socket
    parser: AckParser
    out: list[bytes]
    next_id: int = 1
    last_io: float = 0.0


class RawPublisherPool(AckWaits):
    """``connections`` sockets speaking :mod:`mqtt_wire`; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int,
        client_id_prefix: str,
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 1000,
        keepalive_s: int = 30,
        send_timeout_s: float = 10.0,
    ) -> None:
        if connections < 1:
            raise ValueError(f"need at least one connection, got {connections}")
        if not 1 <= max_inflight <= 30_000:
            raise ValueError("max_inflight must be 1..30000 (packet ids are 16-bit)")
        self.host, self.port = host, port
        self.stats = PoolStats()
        self.max_inflight = max_inflight
        self._n = connections
        self._prefix = client_id_prefix
        self._user, self._pw = username, password
        self._keepalive = keepalive_s
        self._timeout = send_timeout_s
        self._conns: list[_Conn] = []
        self._topics: dict[str, bytes] = {}

    @property
    def connections(self) -> int:
        return self._n

    @property
    def outstanding(self) -> int:
        return self.stats.published - self.stats.acked

    def connect(self, *, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for i in range(self._n):
            try:
                s = socket.create_connection((self.host, self.port), timeout=timeout_s)
            except OSError as exc:
                raise BrokerUnavailable(
                    f"cannot connect to {self.host}:{self.port}: {exc}"
                ) from None
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(self._timeout)
            s.sendall(
                encode_connect(
                    f"{self._prefix}-{i}",
                    username=self._user,
                    password=self._pw,
                    keepalive_s=self._keepalive,
                )
            )
            self._conns.append(_Conn(s, AckParser(), [], last_io=time.monotonic()))
        for i, c in enumerate(self._conns):
            while c.parser.connack_rc is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerUnavailable(f"no CONNACK on connection {i} within {timeout_s:g} s")
                r, _, _ = select.select([c.sock], [], [], left)
                if r:
                    self._read(c)
            if c.parser.connack_rc != 0:
                raise BrokerUnavailable(
                    f"broker refused connection {i}: CONNACK return code {c.parser.connack_rc}"
                )

    def publish(self, conn: int, topic: str, payload: bytes) -> None:
        c = self._conns[conn]
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = topic.encode()
        c.out.append(encode_publish_qos1(t, c.next_id, payload))
        c.next_id = c.next_id % MAX_PACKET_ID + 1
        self.stats.published += 1

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(1 << 16)
        except OSError as exc:
            raise BrokerUnavailable(
                f"connection to {self.host}:{self.port} failed: {exc}"
            ) from None
        if not data:
            raise BrokerUnavailable(f"{self.host}:{self.port} closed the connection")
        before = c.parser.pubacks
        c.parser.feed(data)
        self.stats.acked += c.parser.pubacks - before

    def pump(self, timeout_s: float) -> None:
        now = time.monotonic()
        for c in self._conns:
            if c.out:
                data = b"".join(c.out)
                c.out.clear()
                try:
                    c.sock.sendall(data)
                except OSError as exc:
                    raise BrokerUnavailable(f"sending to {self.host}:{self.port}: {exc}") from None
                c.last_io = now
            elif now - c.last_io > self._keepalive / 2:
                c.sock.sendall(b"\xc0\x00")  # PINGREQ
                c.last_io = now
        r, _, _ = select.select([c.sock for c in self._conns], [], [], max(0.0, timeout_s))
        by_sock = {c.sock: c for c in self._conns}
        for s in r:
            self._read(by_sock[s])

    def close(self) -> None:
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.sock.sendall(b"\xe0\x00")  # DISCONNECT
            c.sock.close()
        self._conns.clear()

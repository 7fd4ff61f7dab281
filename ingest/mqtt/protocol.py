"""The part of MQTT 5 / 3.1.1 a QoS 1 subscriber needs, as bytes in -> events out (sans-I/O).

Why our own codec instead of a client library: fleetwatch must send a PUBACK only when the
data of a message is durable, in batches, and must stop reading when its consumer is slow.
paho-mqtt can ack manually but reads the socket one byte-sized ``recv()`` at a time and wakes
once per message (~18k msg/s through asyncio here); gmqtt parses fast but acks per message from
a callback.  A subscriber needs eight packet types; parsing all complete packets of one socket
read in a tight loop and writing one buffer of PUBACKs per batch is what makes the receive path
broker-bound (see docs/bench/mqtt_receive.md).

Nothing here does I/O or reads a clock: :class:`Parser` takes bytes and returns events, the
``encode_*`` functions return bytes.  Only the client side of the handshake is implemented;
anything a broker may not send to a subscriber is a :class:`ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MQTT_5 = 5
MQTT_311 = 4

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0

#: The largest packet we accept from a broker (the spec's limit is 256 MiB): a guard against a
#: corrupt length eating memory, far above any NMEA burst.
MAX_PACKET_BYTES = 16 * 1024 * 1024

# MQTT 5 property identifiers we write or must know the size of to skip.
_PROP_SESSION_EXPIRY = 0x11
_PROP_RECEIVE_MAXIMUM = 0x21


class ProtocolError(Exception):
    """The broker sent bytes that are not valid MQTT for a subscriber: the connection must be
    dropped (the broker redelivers what was not acked)."""


# ------------------------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnAck:
    session_present: bool
    reason: int  # MQTT 5 reason code; 3.1.1 return codes are mapped onto it (see below)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubAck:
    packet_id: int
    reasons: tuple[int, ...]  # per filter: granted QoS (0-2) or a failure code >= 0x80


@dataclass(frozen=True, slots=True)
class Publish:
    """One application message (positional: built once per message on the hot path)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 for QoS 0
    dup: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The broker sent DISCONNECT (MQTT 5) with this reason code."""

    reason: int


Event = ConnAck | SubAck | Publish | PingResp | Disconnected

# 3.1.1 CONNACK return codes -> the MQTT 5 reason codes with the same meaning.
_V311_CONNACK = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


# ----------------------------------------------------------------------------------- encoders
def encode_varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining length): 1–4 bytes."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"variable byte integer {n} out of range")
    out = bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 65535:
        raise ValueError("MQTT string longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(
    *,
    client_id: str,
    keepalive_s: int,
    clean_start: bool,
    username: str | None = None,
    password: str | None = None,
    session_expiry_s: int = 0,
    receive_maximum: int = 65535,
    version: int = MQTT_5,
) -> bytes:
    """CONNECT.  With 3.1.1, ``clean_start=False`` is a persistent session that never expires
    and ``receive_maximum`` cannot be sent (the broker's max_inflight_messages applies)."""
    if version not in (MQTT_5, MQTT_311):
        raise ValueError(f"unsupported MQTT protocol level {version}")
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    if not 0 <= keepalive_s <= 65535:
        raise ValueError("keepalive_s must be 0..65535")
    body = _str("MQTT") + bytes((version, flags)) + keepalive_s.to_bytes(2, "big")
    if version == MQTT_5:
        props = b""
        if session_expiry_s:
            props += bytes((_PROP_SESSION_EXPIRY,)) + min(session_expiry_s, 0xFFFFFFFF).to_bytes(
                4, "big"
            )
        if receive_maximum != 65535:
            props += bytes((_PROP_RECEIVE_MAXIMUM,)) + receive_maximum.to_bytes(2, "big")
        body += encode_varint(len(props)) + props
    body += _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(CONNECT, body)


def encode_subscribe(
    packet_id: int, topic_filter: str, qos: int, *, version: int = MQTT_5
) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == MQTT_5:
        body += b"\x00"  # no properties
    body += _str(topic_filter) + bytes((qos,))
    return _packet(SUBSCRIBE, body)


def encode_pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs (success; the 2-byte form, valid in 3.1.1 and 5) for *packet_ids*, in order,
    as one buffer: one write for a whole batch."""
    out = bytearray(4 * len(packet_ids))
    for i, mid in enumerate(packet_ids):
        if not 0 < mid < 65536:
            raise ValueError(f"packet id {mid} out of range 1..65535")
        out[4 * i : 4 * i + 4] = (PUBACK, 2, mid >> 8, mid & 0xFF)
    return bytes(out)


PINGREQ_BYTES = bytes((PINGREQ, 0))
DISCONNECT_BYTES = bytes((DISCONNECT, 0))  # reason 0: normal; the session is kept


# ------------------------------------------------------------------------------------- parser
class Parser:
    """Incremental parser of broker -> client packets.

    ``feed()`` appends bytes (any split: a packet may arrive one byte at a time or many per
    read); ``next_events(max_publishes)`` parses complete packets until it has produced that
    many PUBLISH events, leaving the rest buffered.  That lets the shell stop at its buffer
    bound without losing bytes it already read.  After a :class:`ProtocolError` the parser is
    unusable and the connection must go; events of the same call before the bad packet are
    dropped with it (the broker redelivers every unacknowledged PUBLISH).
    """

    def __init__(self, *, version: int = MQTT_5) -> None:
        self.version = version
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_events(self, max_publishes: int = 1 << 30) -> list[Event]:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        v5 = self.version == MQTT_5
        events: list[Event] = []
        n_pub = 0
        while n_pub < max_publishes and end - pos >= 2:
            first = buf[pos]
            # remaining length: 1-4 bytes, 7 bits each
            length = 0
            shift = 0
            i = pos + 1
            complete = False
            while i < end:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                if not b & 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if not complete:
                break
            if length > MAX_PACKET_BYTES:
                raise ProtocolError(f"packet of {length} bytes exceeds {MAX_PACKET_BYTES}")
            stop = i + length
            if stop > end:
                break  # body incomplete
            kind = first & 0xF0
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                if qos == 3:
                    raise ProtocolError("PUBLISH with QoS 3")
                if length < 2:
                    raise ProtocolError("PUBLISH without a topic length")
                tlen = (buf[i] << 8) | buf[i + 1]
                j = i + 2 + tlen
                try:
                    topic = buf[i + 2 : j].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ProtocolError(f"PUBLISH topic is not UTF-8: {e}") from None
                mid = 0
                if qos:
                    if j + 2 > stop:
                        raise ProtocolError("PUBLISH without its packet id")
                    mid = (buf[j] << 8) | buf[j + 1]
                    j += 2
                if v5:
                    plen, j = _read_varint(buf, j, stop)
                    j += plen
                if j > stop:
                    raise ProtocolError("PUBLISH header longer than its packet")
                events.append(Publish(topic, bytes(buf[j:stop]), qos, mid, bool(first & 8)))
                n_pub += 1
            else:
                events.append(self._control(first, bytes(buf[i:stop])))
            pos = stop
        self._pos = pos
        if pos > 65536 and pos * 2 > end:  # compact now and then, not on every call
            del buf[:pos]
            self._pos = 0
        return events

    def _control(self, first: int, body: bytes) -> Event:
        kind = first & 0xF0
        v5 = self.version == MQTT_5
        if kind == CONNACK:
            if len(body) < 2:
                raise ProtocolError("CONNACK shorter than 2 bytes")
            reason = body[1] if v5 else _V311_CONNACK.get(body[1], 0x80)
            return ConnAck(session_present=bool(body[0] & 1), reason=reason)
        if kind == SUBACK:
            if len(body) < 3:
                raise ProtocolError("SUBACK shorter than 3 bytes")
            j = 2
            if v5:
                plen, j = _read_varint(body, 2, len(body))
                j += plen
            return SubAck(packet_id=int.from_bytes(body[:2], "big"), reasons=tuple(body[j:]))
        if kind == PINGRESP:
            return PingResp()
        if kind == DISCONNECT:
            return Disconnected(reason=body[0] if body else 0)
        raise ProtocolError(f"unexpected packet type {kind >> 4} from broker for a subscriber")


def _read_varint(buf: bytes | bytearray, i: int, stop: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if i >= stop:
            raise ProtocolError("truncated variable byte integer")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ProtocolError("variable byte integer longer than 4 bytes")

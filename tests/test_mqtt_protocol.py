"""The sans-I/O MQTT codec: packets fed whole, byte by byte or in any split give the same
events; garbage gives a ProtocolError (or waits for more bytes), never another exception."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.mqtt import protocol as p


def publish_packet(
    topic: str,
    payload: bytes,
    *,
    qos: int,
    mid: int,
    dup: bool = False,
    version: int = p.MQTT_5,
    props: bytes = b"",
) -> bytes:
    """A broker -> client PUBLISH, written independently of the parser under test."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t
    if qos:
        body += mid.to_bytes(2, "big")
    if version == p.MQTT_5:
        body += p.encode_varint(len(props)) + props
    body += payload
    first = p.PUBLISH | (8 if dup else 0) | (qos << 1)
    return bytes((first,)) + p.encode_varint(len(body)) + body


topics = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00+#/"), min_size=1, max_size=30
).map(lambda u: f"fleet/{u}/nmea")
messages = st.tuples(
    topics, st.binary(max_size=300), st.sampled_from([0, 1]), st.integers(1, 65535), st.booleans()
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(
    st.lists(messages, max_size=20),
    st.lists(st.integers(0, 10_000), max_size=15),
    st.sampled_from([p.MQTT_5, p.MQTT_311]),
)
def test_publishes_parse_the_same_in_any_split(
    msgs: list[tuple[str, bytes, int, int, bool]], cuts: list[int], version: int
) -> None:
    props = b"\x01\x01" if version == p.MQTT_5 else b""  # payload format indicator: skipped
    wire = b"".join(
        publish_packet(t, pl, qos=q, mid=m, dup=d, version=version, props=props)
        for t, pl, q, m, d in msgs
    )
    parser = p.Parser(version=version)
    events: list[p.Event] = []
    for chunk in split(wire, cuts):
        parser.feed(chunk)
        events += parser.next_events()
    assert events == [p.Publish(t, pl, q, m if q else 0, d) for t, pl, q, m, d in msgs]
    assert parser.buffered_bytes == 0


@given(st.lists(messages, min_size=1, max_size=30), st.integers(1, 10))
def test_next_events_stops_at_the_publish_budget_and_keeps_the_rest(
    msgs: list[tuple[str, bytes, int, int, bool]], budget: int
) -> None:
    parser = p.Parser()
    parser.feed(b"".join(publish_packet(t, pl, qos=q, mid=m) for t, pl, q, m, _d in msgs))
    seen: list[p.Event] = []
    while True:
        batch = parser.next_events(budget)
        assert len(batch) <= budget
        if not batch:
            break
        seen += batch
    assert [e.payload for e in seen if isinstance(e, p.Publish)] == [m[1] for m in msgs]


@given(st.binary(max_size=400), st.sampled_from([p.MQTT_5, p.MQTT_311]))
def test_garbage_never_raises_anything_but_protocol_error(data: bytes, version: int) -> None:
    parser = p.Parser(version=version)
    parser.feed(data)
    with contextlib.suppress(p.ProtocolError):
        parser.next_events()


def test_control_packets() -> None:
    parser = p.Parser()
    parser.feed(
        bytes((p.CONNACK, 3, 1, 0, 0))
        + bytes((p.SUBACK, 4, 0, 1, 0, 1))
        + bytes((p.PINGRESP, 0))
        + bytes((p.DISCONNECT, 1, 0x8B))
    )
    assert parser.next_events() == [
        p.ConnAck(session_present=True, reason=0),
        p.SubAck(packet_id=1, reasons=(1,)),
        p.PingResp(),
        p.Disconnected(reason=0x8B),
    ]


def test_v311_connack_codes_map_to_v5_reasons() -> None:
    parser = p.Parser(version=p.MQTT_311)
    parser.feed(bytes((p.CONNACK, 2, 0, 4)) + bytes((p.CONNACK, 2, 0, 5)))
    assert [e.reason for e in parser.next_events() if isinstance(e, p.ConnAck)] == [0x86, 0x87]


def test_packets_a_subscriber_never_receives_are_protocol_errors() -> None:
    parser = p.Parser()
    parser.feed(bytes((p.SUBSCRIBE, 0)))
    with pytest.raises(p.ProtocolError, match="unexpected packet type"):
        parser.next_events()


def test_oversized_length_is_refused_before_buffering() -> None:
    parser = p.Parser()
    parser.feed(bytes((p.PUBLISH | 2,)) + p.encode_varint(p.MAX_PACKET_BYTES + 1))
    with pytest.raises(p.ProtocolError, match="exceeds"):
        parser.next_events()


@given(st.integers(0, 268_435_455))
def test_varint_round_trip(n: int) -> None:
    assert p._read_varint(p.encode_varint(n), 0, 4) == (n, len(p.encode_varint(n)))


@given(st.lists(st.integers(1, 65535), max_size=50))
def test_pubacks_are_in_order_one_per_id(mids: list[int]) -> None:
    data = p.encode_pubacks(mids)
    assert len(data) == 4 * len(mids)
    assert [int.from_bytes(data[i + 2 : i + 4], "big") for i in range(0, len(data), 4)] == mids
    assert all(data[i : i + 2] == b"\x40\x02" for i in range(0, len(data), 4))


def test_puback_refuses_packet_id_zero() -> None:
    with pytest.raises(ValueError, match="out of range"):
        p.encode_pubacks([0])


def test_connect_v5_asks_for_a_persistent_session_and_receive_maximum() -> None:
    pkt = p.encode_connect(
        client_id="ing",
        keepalive_s=30,
        clean_start=False,
        username="u",
        password="pw",
        session_expiry_s=3600,
        receive_maximum=100,
    )
    assert pkt[0] == p.CONNECT
    body = pkt[2:]
    assert body[:7] == b"\x00\x04MQTT\x05"
    flags = body[7]
    assert flags & 0x02 == 0  # no clean start
    assert flags & 0xC0 == 0xC0  # user name and password present
    assert body[8:10] == (30).to_bytes(2, "big")
    assert body[10:19] == bytes((8, 0x11)) + (3600).to_bytes(4, "big") + bytes((0x21, 0, 100))
    assert body.endswith(b"\x00\x03ing\x00\x01u\x00\x02pw")


def test_connect_v311_has_no_properties() -> None:
    pkt = p.encode_connect(client_id="c", keepalive_s=5, clean_start=True, version=p.MQTT_311)
    assert pkt == bytes((p.CONNECT, 13)) + b"\x00\x04MQTT\x04\x02\x00\x05\x00\x01c"


def test_subscribe_encoding() -> None:
    assert p.encode_subscribe(1, "a/+", 1) == bytes((p.SUBSCRIBE, 9, 0, 1, 0, 0, 3)) + b"a/+\x01"
    assert (
        p.encode_subscribe(1, "a/+", 1, version=p.MQTT_311)
        == bytes((p.SUBSCRIBE, 8, 0, 1, 0, 3)) + b"a/+\x01"
    )

"""MqttSource against a scripted fake broker: the failures a real broker will not produce on
demand (a silent half-open peer, garbage bytes, a server DISCONNECT) end in a reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from ingest.mqtt import MqttSettings, MqttSource

pytestmark = pytest.mark.anyio

CONNACK_OK = bytes((0x20, 3, 0, 0, 0))  # MQTT 5: no session, success, no properties
SUBACK_QOS1 = bytes((0x90, 4, 0, 1, 0, 1))
PUBLISH_1 = bytes((0x32, 18, 0, 12)) + b"fleet/u/nmea" + bytes((0, 7, 0)) + b"x"


@asynccontextmanager
async def fake_broker(after_handshake: bytes | None) -> AsyncIterator[tuple[int, list[int]]]:
    """A broker that answers CONNECT and SUBSCRIBE, sends one PUBLISH, waits for the client's
    next packet, then sends *after_handshake* (None: goes silent, reading and ignoring
    everything, PINGREQ included)."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.read(1024)  # CONNECT
            writer.write(CONNACK_OK)
            await reader.read(1024)  # SUBSCRIBE
            writer.write(SUBACK_QOS1 + PUBLISH_1)
            await writer.drain()
            await reader.read(1024)  # the client's next packet (a PUBACK or PINGREQ)
            if after_handshake is not None:
                writer.write(after_handshake)
                await writer.drain()
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        await server.wait_closed()


def settings(port: int, **kw: object) -> MqttSettings:
    base = {
        "port": port,
        "client_id": "t-fake",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.1,
        "connect_timeout_s": 2.0,
    }
    return MqttSettings(**{**base, **kw})  # type: ignore[arg-type]


async def reconnected(src: MqttSource, connections: list[int]) -> None:
    with anyio.fail_after(10):
        while len(connections) < 2 or src.statistics().reconnects < 1:  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.parametrize(
    "after",
    [
        None,  # silent half-open peer: caught by our keepalive
        b"\xf0\x00",  # packet type 15 (AUTH) is not for a subscriber: ProtocolError
        bytes((0xE0, 1, 0x8B)),  # server DISCONNECT "server shutting down"
    ],
    ids=["silent", "garbage", "disconnect"],
)
async def test_connection_failures_end_in_a_reconnect(after: bytes | None) -> None:
    async with (
        fake_broker(after) as (port, connections),
        MqttSource(settings(port, keepalive_s=1)) as src,
    ):
        with anyio.fail_after(10):
            first = await src.receive_batch(10)
        assert [m.payload for m in first] == [b"x"]
        await reconnected(src, connections)
        # the token of the dead connection is not acked on the new one
        src.ack([first[0].token])
        assert src.statistics().stale_acks_dropped == 1
        assert src.statistics().acked == 0

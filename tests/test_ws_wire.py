"""Prepared frames (ws/wire.py): built once per content and encoding, decoded by real clients
exactly as what the socket's own send path writes, with and without permessage-deflate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.test_ws_server import World, recv, running
from tests.ws_helpers import alert, pos
from ws.wire import (
    PLAIN,
    WIRE_SCOPE_KEY,
    Deflate,
    Encoding,
    FrameCache,
    WireClosed,
    WireProtocol,
    frame_bytes,
)

# -- the frame bytes ------------------------------------------------------------------------------


def parse(data: bytes, encoding: Encoding) -> list[Frame]:
    """Whole server frames in *data*, as a client's sans-I/O parser reads them."""
    exts: list[PerMessageDeflate] = []
    if isinstance(encoding, Deflate):  # the client's side: the server resets per message
        exts = [PerMessageDeflate(True, False, encoding.window_bits, 15)]
    pos_ = 0
    frames = []

    def read_exact(n: int) -> Generator[None, None, bytes]:
        nonlocal pos_
        if len(data) - pos_ < n:
            raise EOFError("truncated frame")
        pos_ += n
        return data[pos_ - n : pos_]
        yield  # pragma: no cover  (a generator, as Frame.parse expects)

    while pos_ < len(data):
        gen = Frame.parse(read_exact, mask=False, extensions=exts)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            frames.append(stop.value)
    return frames


ENCODINGS: list[Encoding] = [PLAIN, Deflate(15), Deflate(9, level=1)]


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(
        st.one_of(
            st.text(max_size=300),
            # around the 7-bit / 16-bit / 64-bit length boundaries of the header
            st.integers(120, 130).map(lambda n: "x" * n),
            st.integers((1 << 16) - 4, (1 << 16) + 4).map(lambda n: "é" * (n // 2) + "y" * (n % 2)),
        ),
        min_size=1,
        max_size=4,
    ),
    encoding=st.sampled_from(ENCODINGS),
)
def test_prepared_frames_are_whole_text_frames_a_client_decodes(
    texts: list[str], encoding: Encoding
) -> None:
    """Several prepared frames back to back (one transport write) decode, in order, to the
    texts; each is one whole text frame, compressed (RSV1) exactly when deflate is asked."""
    data = b"".join(frame_bytes(t, encoding) for t in texts)
    frames = parse(data, encoding)
    assert [bytes(f.data).decode() for f in frames] == texts
    assert all(f.fin and f.opcode is Opcode.TEXT for f in frames)


def test_deflate_compresses_and_each_frame_stands_alone() -> None:
    """A context-free message inflates with a fresh decompressor whatever came before: the
    same bytes can follow anything on any socket."""
    text = json.dumps(
        {"type": "positions", "vehicles": [{"vehicle_id": f"V{k:04d}"} for k in range(500)]}
    )
    plain, packed = frame_bytes(text, PLAIN), frame_bytes(text, Deflate(15))
    assert len(packed) < len(plain) // 5
    first = frame_bytes('{"type":"hello"}', Deflate(15))
    assert [bytes(f.data).decode() for f in parse(first + packed, Deflate(15))][1] == text


def test_the_cache_builds_once_per_text_and_encoding_and_stays_bounded() -> None:
    cache = FrameCache(max_bytes=20_000)  # frames and their texts count
    t = "a" * 1000
    f1 = cache.frame(t, PLAIN)
    assert cache.frame("a" * 1000, PLAIN) is f1  # equal content: the same bytes
    assert cache.frame(t, Deflate(15)) is not f1
    assert (cache.stats.built, cache.stats.hits) == (2, 1)
    for k in range(30):
        cache.frame(f"{k:04d}" + "b" * 996, PLAIN)
    assert cache.size_bytes <= 20_000
    assert len(cache) <= 10
    assert cache.stats.evicted >= 20
    assert cache.frame(t, PLAIN) is not f1  # evicted first (oldest), rebuilt equal
    assert cache.frame(t, PLAIN) == f1
    with pytest.raises(ValueError, match="bounds"):
        FrameCache(max_entries=0)


# -- real clients against the real server ---------------------------------------------------


async def open_console(w: World, *, deflate: bool) -> tuple[ClientConnection, list[str]]:
    ws = await connect(w.url("D01"), compression="deflate" if deflate else None)
    hello = await recv(ws)
    assert hello["type"] == "hello"
    exts = ws.protocol.extensions
    if deflate:  # negotiated, and context-free on the server's side
        assert len(exts) == 1
        assert isinstance(exts[0], PerMessageDeflate)
        assert exts[0].remote_no_context_takeover is True
    else:
        assert exts == []
    return ws, []


async def collect(ws: ClientConnection, got: list[str], n_alerts: int) -> None:
    """Texts until the console has every alert and a positions frame after them."""
    while sum('"type":"alert"' in t for t in got) < n_alerts or '"type":"positions"' not in got[-1]:
        text = await ws.recv()
        assert isinstance(text, str)
        got.append(text)


@pytest.mark.anyio
async def test_every_path_delivers_the_same_texts_and_the_library_frames_still_decode() -> None:
    """Four consoles on one server: prepared frames or the socket's own ``send_text``, each
    with and without permessage-deflate.  After one publish of alerts and positions they hold
    exactly the same texts (the snapshot, the alerts in order, the positions last).  The two
    prepared consoles took the prepared path for every frame after ``hello`` (which the
    library sent, compressed on its own): then an invalid command makes the library send an
    ``error`` frame, which still decodes after the prepared ones (no compression context is
    shared between the library's frames and ours)."""
    async with running() as w:
        for _ in range(200):  # the engine's start-up output (data delayed) is out first
            if w.server.hub.data_delayed:
                break
            await w.live.call(lambda e, now: [])
        assert w.server.hub.data_delayed
        consoles: list[tuple[str, ClientConnection, list[str]]] = []
        for prepared in (True, False):
            w.server.options = dataclasses.replace(w.server.options, prepared_frames=prepared)
            for deflate in (True, False):
                ws, got = await open_console(w, deflate=deflate)
                got.append(await ws.recv())  # type: ignore[arg-type]
                consoles.append((f"prepared={prepared} deflate={deflate}", ws, got))
        assert all('"type":"snapshot"' in got[0] for _, _, got in consoles)
        big = "z" * 3000  # a compressible alert body: deflate must matter
        records: list[Any] = [dataclasses.replace(alert(n, 1), summary=big) for n in range(1, 41)]
        records += [pos(f"V{k:03d}", 30, lon=37.0 + k / 1000) for k in range(300)]
        w.server.publish(records)
        for _, ws, got in consoles:
            await collect(ws, got, 40)
        texts = [got for _, _, got in consoles]
        assert all(t == texts[0] for t in texts[1:]), [c[0] for c in consoles]
        types = [json.loads(t)["type"] for t in texts[0]]
        assert types == ["snapshot"] + ["alert"] * 40 + ["positions"]
        assert w.server.counts.frames_prepared == 2 * len(texts[0])
        assert w.server.frames.stats.built == 2 * len(texts[0])  # once per text and encoding
        for name, ws, _ in consoles:
            await ws.send("not json")
            err = json.loads(await ws.recv())  # type: ignore[arg-type]
            assert err["type"] == "error", name
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason[:8]) == (1007, "not JSON"), name


# -- the protocol's states, at the byte boundary -------------------------------------------------


class Transport(asyncio.Transport):
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclasses.dataclass
class Wired:
    proto: WireProtocol
    transport: Transport
    client: ClientProtocol
    send: Any  # the app's ASGI send

    def client_texts(self) -> list[str]:
        self.client.receive_data(self.transport.take())
        return [
            bytes(e.data).decode()
            for e in self.client.events_received()
            if isinstance(e, Frame) and e.opcode is Opcode.TEXT
        ]


async def wired(*, offer_deflate: bool, server_deflate: bool = True) -> Wired:
    """A WireProtocol on a fake transport, a sans-I/O client, an app that accepts."""
    accepted = asyncio.Event()
    sends: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        assert isinstance(scope[WIRE_SCOPE_KEY], WireProtocol)
        sends.append(send)
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.Event().wait()  # hold the connection (cancelled with the loop)

    config = Config(
        app,
        ws=WireProtocol,
        lifespan="off",
        log_config=None,
        ws_per_message_deflate=server_deflate,
    )
    config.load()
    proto = WireProtocol(config, ServerState(), {})
    transport = Transport()
    proto.connection_made(transport)
    exts = [ClientPerMessageDeflateFactory()] if offer_deflate else None
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/ws"), extensions=exts)
    client.send_request(client.connect())
    assert proto.encoding() is None  # no handshake yet
    proto.data_received(b"".join(client.data_to_send()))
    async with asyncio.timeout(5):
        await accepted.wait()
    client.receive_data(transport.take())
    assert client.state is State.OPEN
    return Wired(proto, transport, client, sends[0])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("offer", "server", "expected"),
    [(True, True, Deflate(15)), (False, True, PLAIN), (True, False, PLAIN)],
)
async def test_the_encoding_follows_the_negotiation(
    offer: bool, server: bool, expected: Encoding
) -> None:
    w = await wired(offer_deflate=offer, server_deflate=server)
    assert w.proto.encoding() == expected
    if isinstance(expected, Deflate):
        assert w.client.extensions[0].remote_no_context_takeover is True  # type: ignore[attr-defined]
    enc = expected
    assert await w.proto.write_prepared([frame_bytes("a", enc), frame_bytes("bb", enc)], enc)
    await w.send({"type": "websocket.send", "text": "via the library"})
    assert await w.proto.write_prepared([frame_bytes("c" * 500, enc)], enc)
    assert w.client_texts() == ["a", "bb", "via the library", "c" * 500]


@pytest.mark.anyio
async def test_no_prepared_write_while_paused_closing_or_gone() -> None:
    """The transport's flow control holds a prepared write as it holds ``send``; after the
    app's close nothing is prepared (the caller's fallback raises as ``send`` does); a lost
    connection raises :class:`WireClosed`."""
    w = await wired(offer_deflate=True)
    enc = w.proto.encoding()
    assert enc == Deflate(15)
    w.proto.pause_writing()
    write = asyncio.ensure_future(w.proto.write_prepared([frame_bytes("held", enc)], enc))
    for _ in range(5):
        await asyncio.sleep(0)  # (yield to the loop: no wall-clock wait)
    assert not write.done()
    assert w.transport.out == b""
    w.proto.resume_writing()
    assert await write is True
    assert w.client_texts() == ["held"]
    await w.send({"type": "websocket.close", "code": 1000})
    assert w.proto.encoding() is None
    assert await w.proto.write_prepared([frame_bytes("late", enc)], enc) is False
    w.proto.connection_lost(None)
    with pytest.raises(WireClosed):
        await w.proto.write_prepared([frame_bytes("gone", enc)], enc)
    assert "late" not in w.client_texts()

"""Prepared websocket frames: a message is framed (and compressed) once, not once per console.

Why: the hub already encodes each message once and hands the same text to every console
(ws/hub.py), but the normal send path then does the per-socket work 200 times over: the
``websockets`` protocol frames the text, and with permessage-deflate negotiated (every browser
offers it) compresses it **per connection** — a 300 KB ``positions`` frame compressed 200 times
a second.  Here a text becomes the bytes of a complete server frame once per *encoding* (plain,
or deflate with given window bits) and those same bytes are written to every console's
transport.

That is only correct when a message's compressed bytes do not depend on the connection, i.e.
when the server does not use **context takeover** (RFC 7692 §7.1.1.1): each message is
compressed by a fresh compressor, so any client can inflate it whatever it received before.
:class:`WireProtocol` — uvicorn's websocket protocol over the ``websockets`` sans-I/O
``ServerProtocol``, selected by fleetwatch/web.py — therefore negotiates
``server_no_context_takeover``; the messages the library still sends itself (``hello``,
``error``, close frames) are then context-free too, so both kinds may interleave on one socket.

The shell asks :meth:`WireProtocol.encoding` before each write; it answers ``None`` (use the
normal ``send_text`` path) when the connection is not open, is closing, or negotiated an
extension other than permessage-deflate without context takeover.  A connection served by any
other ASGI server or websocket implementation has no :data:`WIRE_SCOPE_KEY` in its scope and
always uses the normal path.

Coupling: :class:`WireProtocol` relies on uvicorn's ``WebSocketsSansIOProtocol`` internals
(``conn``, ``transport``, ``writable``, ``close_sent``, ``handshake_complete``,
``disconnected``, ``initial_response``; uvicorn 0.54.0) and on ``websockets``'
``PerMessageDeflate`` attributes (``local_no_context_takeover``, ``local_max_window_bits``;
websockets 17.4).  Both are pinned in pyproject.toml; tests/test_ws_wire.py fails if the
prepared path stops being taken.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

#: the ASGI scope key under which a :class:`WireProtocol` connection offers itself
WIRE_SCOPE_KEY: Final = "fleetwatch.wire"

_EMPTY_BLOCK = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class Plain:
    """Frames without compression."""


@dataclass(frozen=True, slots=True)
class Deflate:
    """permessage-deflate without context takeover, the server's window *window_bits*."""

    window_bits: int
    #: zlib level of the shared compression: paid once per message, not per console
    level: int = 6


Encoding = Plain | Deflate
PLAIN: Final = Plain()


def frame_bytes(text: str, encoding: Encoding) -> bytes:
    """A whole unmasked server text frame (FIN set) carrying *text* in *encoding*."""
    payload = text.encode()
    first = 0x81  # FIN + text
    if isinstance(encoding, Deflate):
        comp = zlib.compressobj(encoding.level, zlib.DEFLATED, -encoding.window_bits)
        payload = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
        if payload.endswith(_EMPTY_BLOCK):  # RFC 7692 §7.2.1: the sender removes it
            payload = payload[:-4]
        first |= 0x40  # RSV1: compressed
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


@dataclass(slots=True)
class FrameCacheStats:
    built: int = 0
    hits: int = 0
    evicted: int = 0
    text_bytes_in: int = 0  # UTF-8 bytes of the texts framed
    frame_bytes_out: int = 0  # bytes of the frames built (compressed when deflate)


class FrameCache:
    """Frames by encoding and text, built on first use; bounded by bytes (frames and their key
    texts) and entries, the oldest built dropped first.  Why a cache and not a field on the
    hub's message: the encodings are only known once consoles connect (one per negotiated
    window size), and a text framed for the first console is framed for the 199 others.
    Keys are the hub's own ``str`` objects: their hash is computed once and lookups compare
    by identity first, so a console's alert burst costs a dict lookup per message."""

    def __init__(self, *, max_bytes: int = 8 << 20, max_entries: int = 20_000) -> None:
        if max_bytes < 1 or max_entries < 1:
            raise ValueError("FrameCache bounds must be >= 1")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._by_encoding: dict[Encoding, dict[str, bytes]] = {}
        #: (cache, text, bytes held) oldest built first; the key text counts too (a 300 KB
        #: positions text stays alive as long as its 27 KB compressed frame)
        self._order: deque[tuple[dict[str, bytes], str, int]] = deque()
        self._bytes = 0
        self.stats = FrameCacheStats()

    def __len__(self) -> int:
        return len(self._order)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def frame(self, text: str, encoding: Encoding) -> bytes:
        return self.frames((text,), encoding)[0]

    def frames(self, texts: Sequence[str], encoding: Encoding) -> list[bytes]:
        """The frames of *texts*, in order."""
        cache = self._by_encoding.get(encoding)
        if cache is None:
            cache = self._by_encoding[encoding] = {}
        out: list[bytes] = []
        hits = 0
        for text in texts:
            data = cache.get(text)
            if data is None:
                data = self._build(cache, text, encoding)
            else:
                hits += 1
            out.append(data)
        self.stats.hits += hits
        return out

    def _build(self, cache: dict[str, bytes], text: str, encoding: Encoding) -> bytes:
        data = frame_bytes(text, encoding)
        st = self.stats
        st.built += 1
        st.text_bytes_in += len(text)
        st.frame_bytes_out += len(data)
        cache[text] = data
        held = len(data) + len(text)
        self._order.append((cache, text, held))
        self._bytes += held
        order = self._order
        while len(order) > 1 and (self._bytes > self.max_bytes or len(order) > self.max_entries):
            old_cache, old, old_held = order.popleft()
            del old_cache[old]
            self._bytes -= old_held
            st.evicted += 1
        return data


class WireClosed(ConnectionError):
    """The connection closed under a prepared write (the peer left, or we sent close)."""


class WireProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol that negotiates permessage-deflate *without server context
    takeover* and can write prepared frames; passed to uvicorn as ``ws=`` (fleetwatch/web.py).

    With ``ws_per_message_deflate`` off it negotiates no compression, like uvicorn's own."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if self.config.ws_per_message_deflate:
            # uvicorn's own factory, but context-free on the server side (see the module doc);
            # the client's side keeps uvicorn's 4 KiB window: its messages are small commands
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        client_max_window_bits=12,
                        compress_settings={"memLevel": 5},
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            )

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            # the ASGI task was created but has not run yet: it sees the key
            scope[WIRE_SCOPE_KEY] = self

    def encoding(self) -> Encoding | None:
        """How prepared frames must be encoded for this connection now, or None when they
        cannot be written (not open, closing, or an extension we cannot prepare for)."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return None
        exts = self.conn.extensions
        if not exts:
            return PLAIN
        if len(exts) == 1:
            ext = exts[0]
            if isinstance(ext, PerMessageDeflate) and ext.local_no_context_takeover:
                return Deflate(ext.local_max_window_bits)
        return None

    async def write_prepared(self, frames: Sequence[bytes], encoding: Encoding) -> bool:
        """Write whole frames prepared in *encoding*, in order, in one transport write, once
        the transport takes data (the same flow control as ``send``: wait until the buffer is
        below its low-water mark).  False when the connection's encoding changed meanwhile
        (closing): nothing was written and the caller uses the normal path, which raises."""
        await self.writable.wait()
        if self.disconnected:
            raise WireClosed("the console disconnected")
        if self.encoding() != encoding:
            return False
        if self.conn.expect_continuation_frame:  # never: we send whole messages only
            return False
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return True

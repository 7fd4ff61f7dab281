"""The async shell around :mod:`ingest.mqtt.protocol`: one persistent-session subscription.

It only moves bytes and owns the timers; the protocol module decides what they mean.  What it
adds for fleetwatch:

* **acks wait for durability**: nothing is acknowledged on receipt; :meth:`MqttSource.ack`
  writes the PUBACKs of a batch, in receive order, as one buffer (reliability #1, #2);
* **backpressure**: at most ``max_buffered_messages`` parsed messages wait for the consumer
  (plus at most one socket read of unparsed bytes); then the transport stops reading, TCP
  fills, and the broker keeps the backlog in the session queue;
* **generations**: each connection has a number carried by every :class:`AckToken`, so a token
  of a dead connection is never acked on a new one (the broker redelivers those messages);
* **reconnect** with capped exponential backoff and jitter (``stamina``), fixed client id,
  ``clean_start=False``, a session expiry longer than an outage, and a fresh SUBSCRIBE on every
  connection (harmless on a resumed session, essential when the broker lost it).

MQTT 5 is the default so that the broker honours our Receive Maximum (65535): with 3.1.1
Mosquitto keeps ``max_inflight_messages`` (default 20) unacked messages in flight, and batch
acking would stall.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import stamina

from ingest.mqtt import protocol as p
from ingest.mqtt.settings import (
    PERMANENT_REFUSALS,
    MqttConnectFailed,
    MqttRefusedError,
    MqttSettings,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AckToken:
    """What :meth:`MqttSource.ack` needs: connection generation, packet id and QoS."""

    generation: int
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class Received:
    """One message as it arrived.  ``recv_us``: µs since epoch UTC, read by this shell."""

    topic: str
    payload: bytes
    recv_us: int
    token: AckToken
    #: True when the payload exceeded ``max_payload_bytes``: ``payload`` is then cut to that
    #: size, for the dead-letter table; the message must still be acked like any other.
    oversize: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttStats:
    """Counters for /metrics (monotonic since the source was created, except gauges)."""

    received: int
    acked: int
    reconnects: int
    stale_acks_dropped: int
    connected: bool
    buffered: int  # gauge: parsed, not yet taken by the consumer
    purged_on_reconnect: int  # buffered messages of a dead connection: the broker resends them
    oversize: int
    connect_failures: int
    redelivered: int  # PUBLISH with DUP set: the broker resent an unacked message


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _Wire(asyncio.Protocol):
    """One TCP connection: bytes in -> parser -> the source; bytes out via the transport."""

    def __init__(self, source: MqttSource, generation: int, version: int) -> None:
        self.source = source
        self.generation = generation
        self.parser = p.Parser(version=version)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[p.ConnAck] = loop.create_future()
        self.suback: asyncio.Future[p.SubAck] = loop.create_future()
        for fut in (self.connack, self.suback):  # a handshake may end before anyone awaits
            fut.add_done_callback(_retrieve)
        self.paused = False
        self.last_rx = time.monotonic()
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.parser.feed(data)
        self.source._drain_parser(self)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        if not self.connack.done():
            self.connack.set_exception(
                MqttConnectFailed(
                    f"connection closed before CONNACK ({exc or 'EOF'}); a broker that does not "
                    "speak MQTT 5 does this: then set mqtt_version=4"
                )
            )
        if not self.suback.done():
            self.suback.set_exception(
                MqttConnectFailed(f"connection closed before SUBACK: {exc or 'EOF'}")
            )

    def write(self, data: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(data)
        return True

    def abort(self, why: BaseException | None = None) -> None:
        if why is not None and self.error is None:
            self.error = why
        if self.transport is not None:
            self.transport.abort()
        self.lost.set()


class MqttSource:
    """Owns the connection, its reconnect loop and its one task; yields :class:`Received`.

    ``async with MqttSource(settings) as src:`` then ``async for m in src.messages()`` (or
    ``await src.receive_batch(n)``, cheaper per message) and ``src.ack(tokens)`` once the data
    of those messages is durable, in receive order.
    """

    def __init__(self, settings: MqttSettings, *, max_buffered_messages: int = 8192) -> None:
        if max_buffered_messages < 1:
            raise ValueError("max_buffered_messages must be >= 1")
        self.settings = settings
        self.max_buffered_messages = max_buffered_messages
        self._resume_at = max(max_buffered_messages // 2, 1)
        self._buffer: deque[Received] = deque()
        self._nonempty = asyncio.Event()
        self._connected = asyncio.Event()
        self._wire: _Wire | None = None
        self._generation = 0
        self._fatal: BaseException | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._received = 0
        self._acked = 0
        self._reconnects = 0
        self._stale = 0
        self._purged = 0
        self._oversize = 0
        self._connect_failures = 0
        self._redelivered = 0
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> MqttSource:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        name = f"mqtt-source[{self.settings.client_id}]"
        self._task = self._tg.create_task(self._run(), name=name)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._tg is not None
        assert self._task is not None
        self._closing = True
        wire = self._wire
        if wire is not None and not wire.lost.is_set() and wire.write(p.DISCONNECT_BYTES):
            # Let the broker read our last PUBACKs and the DISCONNECT before we go: Mosquitto
            # handles a few packets per client per loop turn, and a client id taken over by
            # a new connection would lose acks still unread in the old one (-> redelivery).
            with anyio.move_on_after(self.settings.connect_timeout_s):
                await wire.lost.wait()
        self._task.cancel()
        await self._tg.__aexit__(*exc_info)

    async def wait_connected(self) -> None:
        """Wait until subscribed on a live connection (wrap it in a timeout)."""
        while True:
            self._raise_fatal()
            if self._connected.is_set():
                return
            await self._connected.wait()

    # -- consumer API ------------------------------------------------------------------------
    async def messages(self) -> AsyncIterator[Received]:
        """Every message, in receive order; waits while none is buffered."""
        while True:
            if not self._buffer:
                await self._wait_nonempty()
            msg = self._buffer.popleft()
            self._after_take()
            yield msg

    async def receive_batch(self, max_messages: int) -> list[Received]:
        """1..max_messages buffered messages, in receive order (the efficient form)."""
        if not self._buffer:
            await self._wait_nonempty()
        buf = self._buffer
        if len(buf) <= max_messages:
            out = list(buf)
            buf.clear()
        else:
            out = [buf.popleft() for _ in range(max_messages)]
        self._after_take()
        return out

    def ack(self, tokens: Sequence[AckToken]) -> None:
        """Write PUBACKs for *tokens* (pass them in receive order) as one buffer; never blocks.

        Tokens of an earlier connection are dropped and counted: the broker redelivers those
        messages on the new connection, and a packet id of an old connection may name another
        message on the new one.
        """
        wire = self._wire
        if wire is None or wire.lost.is_set():
            self._stale += len(tokens)
            return
        gen = wire.generation
        mids = [t.mid for t in tokens if t.generation == gen and t.qos == 1]
        self._stale += sum(1 for t in tokens if t.generation != gen)
        if mids and wire.write(p.encode_pubacks(mids)):
            self._acked += len(mids)
        elif mids:
            self._stale += len(mids)

    def statistics(self) -> MqttStats:
        wire = self._wire
        return MqttStats(
            received=self._received,
            acked=self._acked,
            reconnects=self._reconnects,
            stale_acks_dropped=self._stale,
            connected=self._connected.is_set() and wire is not None and not wire.lost.is_set(),
            buffered=len(self._buffer),
            purged_on_reconnect=self._purged,
            oversize=self._oversize,
            connect_failures=self._connect_failures,
            redelivered=self._redelivered,
        )

    # -- consumer side internals -------------------------------------------------------------
    async def _wait_nonempty(self) -> None:
        while not self._buffer:
            self._raise_fatal()
            self._nonempty.clear()
            await self._nonempty.wait()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _after_take(self) -> None:
        if not self._buffer:
            self._nonempty.clear()
        wire = self._wire
        if (
            wire is not None
            and wire.paused
            and not wire.lost.is_set()
            and len(self._buffer) <= self._resume_at
        ):
            self._drain_parser(wire)  # bytes already read first, then the socket again
            if len(self._buffer) < self.max_buffered_messages and not wire.lost.is_set():
                wire.paused = False
                wire.last_rx = time.monotonic()  # silence while paused was ours, not the broker's
                if wire.transport is not None and not wire.transport.is_closing():
                    wire.transport.resume_reading()

    # -- connection side internals ------------------------------------------------------------
    def _drain_parser(self, wire: _Wire) -> None:
        """Parse buffered bytes into messages while the buffer has room; pause when full."""
        room = self.max_buffered_messages - len(self._buffer)
        try:
            events = wire.parser.next_events(max(room, 0)) if room > 0 else []
        except p.ProtocolError as e:
            log.error("MQTT protocol error from broker, dropping connection: %s", e)
            wire.abort(e)
            return
        if events:
            self._dispatch(wire, events)
        if len(self._buffer) >= self.max_buffered_messages and not wire.paused:
            wire.paused = True
            if wire.transport is not None and not wire.transport.is_closing():
                wire.transport.pause_reading()

    def _dispatch(self, wire: _Wire, events: list[p.Event]) -> None:
        buf = self._buffer
        was_empty = not buf
        gen = wire.generation
        limit = self.settings.max_payload_bytes
        recv_us = time.time_ns() // 1000  # the only wall-clock read in ingest: once per read
        for ev in events:
            if type(ev) is p.Publish:
                payload = ev.payload
                oversize = len(payload) > limit
                if oversize:
                    payload = payload[:limit]
                    self._oversize += 1
                if ev.dup:
                    self._redelivered += 1
                buf.append(
                    Received(
                        ev.topic, payload, recv_us, AckToken(gen, ev.packet_id, ev.qos), oversize
                    )
                )
                self._received += 1
            elif isinstance(ev, p.ConnAck):
                if not wire.connack.done():
                    wire.connack.set_result(ev)
            elif isinstance(ev, p.SubAck):
                if not wire.suback.done():
                    wire.suback.set_result(ev)
            elif isinstance(ev, p.Disconnected):
                log.warning("broker sent DISCONNECT, reason %#x", ev.reason)
                wire.abort()
        if was_empty and buf:
            self._nonempty.set()

    async def _run(self) -> None:
        try:
            while True:
                wire = await self._connect_with_retry()
                try:
                    await self._serve(wire)
                finally:
                    self._close(wire)
                if self._closing:  # the broker closed after our DISCONNECT: we are leaving
                    return
                self._reconnects += 1
                log.warning(
                    "MQTT connection to %s:%d lost (%s); reconnecting",
                    self.settings.host,
                    self.settings.port,
                    wire.error or "closed",
                )
        except MqttRefusedError as e:
            self._fatal = e
            self._nonempty.set()
            self._connected.set()

    async def _connect_with_retry(self) -> _Wire:
        s = self.settings
        async for attempt in stamina.retry_context(
            on=(MqttConnectFailed, OSError),
            attempts=None,
            timeout=None,
            wait_initial=s.reconnect_min_s,
            wait_max=s.reconnect_max_s,
            wait_jitter=s.reconnect_min_s,
        ):
            with attempt:
                try:
                    return await self._connect_once()
                except (MqttConnectFailed, OSError) as e:
                    self._connect_failures += 1
                    log.info("MQTT connect to %s:%d failed: %s", s.host, s.port, e)
                    raise
        raise AssertionError("unreachable: retry_context with attempts=None never gives up")

    async def _connect_once(self) -> _Wire:
        s = self.settings
        self._generation += 1
        wire = _Wire(self, self._generation, s.mqtt_version)
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(s.connect_timeout_s):
                await loop.create_connection(lambda: wire, s.host, s.port)
                wire.write(
                    p.encode_connect(
                        client_id=s.client_id,
                        keepalive_s=s.keepalive_s,
                        clean_start=False,
                        username=s.username,
                        password=s.password,
                        session_expiry_s=s.session_expiry_s,
                        receive_maximum=s.receive_maximum,
                        version=s.mqtt_version,
                    )
                )
                self._wire = wire
                connack = await wire.connack
                if 0 < connack.reason < 0x80 and s.mqtt_version == p.MQTT_5:
                    # Not an MQTT 5 reason code: a 3.1.1-only broker refusing protocol level 5.
                    raise MqttRefusedError(
                        f"broker {s.host}:{s.port} answered CONNECT with 3.1.1 return code "
                        f"{connack.reason}: it does not speak MQTT 5; use a broker that does "
                        "(Mosquitto >= 1.6) or set mqtt_version=4 (then the broker's "
                        "max_inflight_messages limits unacked messages)"
                    )
                if connack.reason >= 0x80:
                    what = PERMANENT_REFUSALS.get(connack.reason)
                    if what is not None:
                        raise MqttRefusedError(
                            f"broker {s.host}:{s.port} refused client {s.client_id!r} (user "
                            f"{s.username!r}): {what} (reason {connack.reason:#x}); fix the "
                            "credentials or the broker's password file"
                        )
                    raise MqttConnectFailed(
                        f"broker refused connection, reason {connack.reason:#x}"
                    )
                wire.write(p.encode_subscribe(1, s.topic, s.qos, version=s.mqtt_version))
                suback = await wire.suback
                if not suback.reasons or max(suback.reasons) >= 0x80:
                    raise MqttRefusedError(
                        f"broker {s.host}:{s.port} refused the subscription to {s.topic!r} for "
                        f"user {s.username!r} (reasons {suback.reasons}): check the ACL"
                    )
        except TimeoutError:
            wire.abort()
            raise MqttConnectFailed(f"no CONNACK/SUBACK within {s.connect_timeout_s} s") from None
        except BaseException:
            wire.abort()
            raise
        self._connected.set()
        log.info(
            "MQTT connected to %s:%d as %s (generation %d, session present: %s)",
            s.host,
            s.port,
            s.client_id,
            wire.generation,
            connack.session_present,
        )
        return wire

    async def _serve(self, wire: _Wire) -> None:
        """Keepalive until the connection is lost (reads run as protocol callbacks).

        A PINGREQ every half keepalive; no bytes from the broker for 1.5 keepalives (while we
        are reading) means a dead peer."""
        s = self.settings
        period = max(s.keepalive_s / 2, 0.5) if s.keepalive_s else 3600.0
        while not wire.lost.is_set():
            with anyio.move_on_after(period):
                await wire.lost.wait()
            if wire.lost.is_set():
                break
            if (
                s.keepalive_s
                and not wire.paused
                and (time.monotonic() - wire.last_rx > 1.5 * s.keepalive_s)
            ):
                wire.abort(MqttConnectFailed("keepalive timeout: broker silent"))
                break
            wire.write(p.PINGREQ_BYTES)

    def _close(self, wire: _Wire) -> None:
        """Forget a connection: its buffered messages will be redelivered by the broker."""
        self._connected.clear()
        if not wire.lost.is_set():
            wire.write(p.DISCONNECT_BYTES)  # normal disconnect: the session is kept
            if wire.transport is not None:
                wire.transport.close()
            wire.lost.set()
        gen = wire.generation
        kept = [m for m in self._buffer if m.token.generation != gen]
        self._purged += len(self._buffer) - len(kept)
        self._buffer.clear()
        self._buffer.extend(kept)
        if not self._buffer:
            self._nonempty.clear()

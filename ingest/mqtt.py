"""The MQTT shell: one persistent-session subscription whose PUBACKs wait for durability.

Why not aiomqtt's ``Client``: reliability promise #1 says a QoS 1 message is acknowledged to
the broker only after its data is durable.  aiomqtt 2.5 acknowledges on receipt and hands
messages to a queue that *discards* on overflow; paho-mqtt (which aiomqtt wraps) has manual
acknowledgement.  So this module drives paho directly on the asyncio loop (the technique
aiomqtt itself uses: the socket is registered with ``add_reader``/``add_writer``; no threads
except the short blocking TCP connect) and adds what fleetwatch needs:

* **manual, batched, in-order PUBACKs** (:meth:`MqttSource.ack`), written as one buffer per
  batch instead of one ``send()`` per message;
* **backpressure**: at most ``max_buffered_messages`` received messages wait for the consumer;
  when the buffer is full the socket is not read, TCP fills, and the broker holds the backlog
  (its queue for a persistent session);
* **generations**: every connection has a number; an :class:`AckToken` carries it, so a token
  from a dead connection is never acked on a new one (the broker redelivers those messages);
* **a reconnect loop** with capped exponential backoff and jitter (``stamina``), a fixed client
  id, ``clean_start=False`` and a session expiry longer than any outage we plan for.

MQTT 5 is used so the broker honours our Receive Maximum (65535 by default): with MQTT 3.1.1
Mosquitto would keep at most ``max_inflight_messages`` (20) unacknowledged messages in flight,
and acknowledging in batches would stall the stream.

The library is kept behind this module: nothing else in fleetwatch imports paho.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import paho.mqtt.client as paho
import stamina
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

#: A unit id as it may appear in a topic and as a broker user name (see deploy/mosquitto).
UNIT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

# CONNACK reason codes that retrying cannot fix: wrong credentials or a refused client id.
_PERMANENT_REFUSALS = {
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8A: "banned",
    0x8C: "bad authentication method",
}
_PUBACK = 0x40


class MqttError(Exception):
    """Base class of the errors this module raises."""


class BadTopic(MqttError, ValueError):
    """A topic that is not ``fleet/<unit_id>/nmea``: the unit (or an ACL) is misconfigured."""


class MqttUrlError(MqttError, ValueError):
    """An MQTT URL fleetwatch cannot use (the message says which part is wrong)."""


class MqttRefusedError(MqttError):
    """The broker refused our credentials or client id: retrying will not help, fix config."""


class _ConnectFailed(MqttError):
    """One connection attempt failed in a way that a retry may fix (broker down, timeout)."""


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
        raise MqttUrlError(f"unsupported MQTT URL scheme {parts.scheme!r} in {_redact(url)!r}: "
                           "use mqtt://[user:password@]host[:port]")
    try:
        port = parts.port
    except ValueError as e:
        raise MqttUrlError(f"bad port in MQTT URL {_redact(url)!r}: {e}") from None
    if not parts.hostname:
        raise MqttUrlError(f"no host in MQTT URL {_redact(url)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttUrlError(f"MQTT URL {_redact(url)!r} has a path or query; only "
                           "mqtt://[user:password@]host[:port] is understood")
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
        raise BadTopic(f"unit id {parts[1][:80]!r} in topic {topic[:200]!r} is not "
                       f"1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return parts[1]


def encode_pubacks(mids: Sequence[int]) -> bytes:
    """PUBACK packets (success, no properties: the 2-byte form valid in 3.1.1 and 5) for
    *mids*, concatenated, in the given order."""
    out = bytearray(4 * len(mids))
    for i, mid in enumerate(mids):
        if not 0 < mid < 65536:
            raise ValueError(f"packet id {mid} out of range 1..65535")
        out[4 * i : 4 * i + 4] = (_PUBACK, 2, mid >> 8, mid & 0xFF)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class AckToken:
    """What :meth:`MqttSource.ack` needs: the connection generation and the packet id."""

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
    #: size, for the dead-letter table; the message still has to be acked.
    oversize: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttStats:
    """Counters for /metrics (monotonic since the source was created, except gauges)."""

    received: int
    acked: int
    reconnects: int
    stale_acks_dropped: int
    connected: bool
    buffered: int  # gauge: received, not yet taken by the consumer
    purged_on_reconnect: int  # buffered messages of a dead connection: the broker resends them
    oversize: int
    connect_failures: int


class _Connection:
    """One paho client on one socket; lives from TCP connect to connection loss."""

    def __init__(self, source: MqttSource, generation: int) -> None:
        s = source.settings
        self.generation = generation
        self.lost = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[int, bool]] = loop.create_future()
        self.suback: asyncio.Future[int] = loop.create_future()
        version = paho.MQTTv5 if s.mqtt_version == 5 else paho.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=version,
            clean_session=None if version == paho.MQTTv5 else False,
            manual_ack=True,
        )
        self.client.connect_timeout = s.connect_timeout_s
        if s.username is not None:
            self.client.username_pw_set(s.username, s.password)
        self.sock: socket.socket | None = None
        self.reading = False
        self.writing = False


class MqttSource:
    """Owns the connection, its reconnect loop and its one task; yields :class:`Received`.

    Use as ``async with MqttSource(settings) as src: async for m in src.messages(): ...`` and
    call :meth:`ack` with the tokens of messages whose data is durable, in receive order.
    """

    def __init__(self, settings: MqttSettings, *, max_buffered_messages: int = 8192) -> None:
        if max_buffered_messages < 1:
            raise ValueError("max_buffered_messages must be >= 1")
        self.settings = settings
        self._max_buffered = max_buffered_messages
        self._resume_at = max(max_buffered_messages // 2, 1)
        self._buffer: deque[Received] = deque()
        self._nonempty = asyncio.Event()
        self._connected = asyncio.Event()
        self._conn: _Connection | None = None
        self._generation = 0
        self._fatal: BaseException | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._received = 0
        self._acked = 0
        self._reconnects = 0
        self._stale = 0
        self._purged = 0
        self._oversize = 0
        self._connect_failures = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> MqttSource:
        self._loop = asyncio.get_running_loop()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        name = f"mqtt-source[{self.settings.client_id}]"
        self._task = self._tg.create_task(self._run(), name=name)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._tg is not None
        assert self._task is not None
        self._task.cancel()
        await self._tg.__aexit__(*exc_info)

    async def wait_connected(self) -> None:
        """Wait until subscribed on a live connection (wrap it in a timeout)."""
        while not self._connected.is_set():
            self._raise_fatal()
            await self._connected.wait()
        self._raise_fatal()

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
        """Send PUBACKs for *tokens* (in receive order) as one write; never blocks.

        Tokens of an earlier connection are dropped and counted: the broker redelivers those
        messages on the new connection, and acking a reused packet id would ack the wrong one.
        """
        conn = self._conn
        if conn is None or conn.sock is None or conn.lost.is_set():
            self._stale += len(tokens)
            return
        gen = conn.generation
        mids = [t.mid for t in tokens if t.generation == gen and t.qos == 1]
        self._stale += sum(1 for t in tokens if t.generation != gen)
        if not mids:
            return
        self._write(conn, encode_pubacks(mids))
        self._acked += len(mids)

    def statistics(self) -> MqttStats:
        conn = self._conn
        return MqttStats(
            received=self._received,
            acked=self._acked,
            reconnects=self._reconnects,
            stale_acks_dropped=self._stale,
            connected=self._connected.is_set() and conn is not None and not conn.lost.is_set(),
            buffered=len(self._buffer),
            purged_on_reconnect=self._purged,
            oversize=self._oversize,
            connect_failures=self._connect_failures,
        )

    # -- internals: consumer side -------------------------------------------------------------
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
        conn = self._conn
        if (conn is not None and not conn.reading and conn.sock is not None
                and not conn.lost.is_set() and len(self._buffer) <= self._resume_at):
            self._start_reading(conn)

    # -- internals: connection side -----------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                conn = await self._connect_with_retry()
                try:
                    await self._serve(conn)
                finally:
                    self._close(conn)
                self._reconnects += 1
                log.warning("MQTT connection to %s:%d lost; reconnecting",
                            self.settings.host, self.settings.port)
        except MqttRefusedError as e:
            self._fatal = e
            self._nonempty.set()
            self._connected.set()

    async def _connect_with_retry(self) -> _Connection:
        s = self.settings
        async for attempt in stamina.retry_context(
            on=(_ConnectFailed, OSError),
            attempts=None,
            timeout=None,
            wait_initial=s.reconnect_min_s,
            wait_max=s.reconnect_max_s,
            wait_jitter=s.reconnect_min_s,
        ):
            with attempt:
                try:
                    return await self._connect_once()
                except (_ConnectFailed, OSError) as e:
                    self._connect_failures += 1
                    log.info("MQTT connect to %s:%d failed: %s", s.host, s.port, e)
                    raise
        raise AssertionError("unreachable: retry_context with attempts=None never gives up")

    async def _connect_once(self) -> _Connection:
        s = self.settings
        self._generation += 1
        conn = _Connection(self, self._generation)
        c = conn.client
        c.on_connect = self._make_on_connect(conn)
        c.on_subscribe = self._make_on_subscribe(conn)
        c.on_message = self._make_on_message(conn)
        c.on_disconnect = lambda *_a: conn.lost.set()
        props: Properties | None = None
        if s.mqtt_version == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
        # paho's connect() is a blocking TCP connect (+ CONNECT write): a worker thread, awaited.
        kwargs: dict[str, Any] = {"keepalive": s.keepalive_s}
        if s.mqtt_version == 5:
            kwargs.update(clean_start=False, properties=props)
        await anyio.to_thread.run_sync(lambda: c.connect(s.host, s.port, **kwargs))
        sock = c.socket()
        if not isinstance(sock, socket.socket):
            raise _ConnectFailed("paho returned no socket after connect")
        conn.sock = sock
        c.on_socket_close = lambda *_a: self._unregister(conn)
        c.on_socket_register_write = lambda *_a: self._want_write(conn)
        c.on_socket_unregister_write = lambda *_a: self._stop_writing(conn)
        self._conn = conn
        self._start_reading(conn)
        if c.want_write():
            self._want_write(conn)
        try:
            with anyio.fail_after(s.connect_timeout_s):
                code, _session_present = await conn.connack
            if code >= 0x80:
                if code in _PERMANENT_REFUSALS:
                    raise MqttRefusedError(
                        f"broker {s.host}:{s.port} refused client {s.client_id!r} "
                        f"(user {s.username!r}): {_PERMANENT_REFUSALS[code]} (reason {code:#x})")
                raise _ConnectFailed(f"broker refused connection, reason {code:#x}")
            # Always (re)subscribe: harmless on a resumed session, essential on a lost one.
            rc, _mid = c.subscribe(s.topic, qos=s.qos)
            if rc != paho.MQTT_ERR_SUCCESS:
                raise _ConnectFailed(f"subscribe failed: {paho.error_string(rc)}")
            with anyio.fail_after(s.connect_timeout_s):
                granted = await conn.suback
            if granted >= 0x80:
                raise MqttRefusedError(
                    f"broker {s.host}:{s.port} refused the subscription to {s.topic!r} for user "
                    f"{s.username!r} (reason {granted:#x}): check the ACL (deploy/mosquitto/acl)")
        except TimeoutError:
            self._close(conn)
            raise _ConnectFailed(f"no CONNACK/SUBACK within {s.connect_timeout_s} s") from None
        except BaseException:
            self._close(conn)
            raise
        self._connected.set()
        log.info("MQTT connected to %s:%d as %s (generation %d)", s.host, s.port, s.client_id,
                 conn.generation)
        return conn

    def _make_on_connect(self, conn: _Connection) -> Any:
        def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
            if not conn.connack.done():
                conn.connack.set_result((int(reason.value), bool(flags.session_present)))
        return on_connect

    def _make_on_subscribe(self, conn: _Connection) -> Any:
        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
            if not conn.suback.done():
                conn.suback.set_result(max(int(r.value) for r in reasons) if reasons else 0x80)
        return on_subscribe

    def _make_on_message(self, conn: _Connection) -> Any:
        gen = conn.generation
        buf = self._buffer
        limit = self.settings.max_payload_bytes

        def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
            recv_us = time.time_ns() // 1000  # the only wall-clock read in ingest
            payload = bytes(m.payload)
            oversize = len(payload) > limit
            if oversize:
                payload = payload[:limit]
                self._oversize += 1
            buf.append(Received(m.topic, payload, recv_us, AckToken(gen, m.mid, m.qos), oversize))
            self._received += 1
            if len(buf) == 1:
                self._nonempty.set()
            if len(buf) >= self._max_buffered and conn.reading:
                self._stop_reading(conn)
        return on_message

    async def _serve(self, conn: _Connection) -> None:
        """Drive keepalive until the connection is lost (reads/writes run as loop callbacks)."""
        while not conn.lost.is_set():
            with anyio.move_on_after(1.0):
                await conn.lost.wait()
            if not conn.lost.is_set():
                rc = conn.client.loop_misc()
                if rc != paho.MQTT_ERR_SUCCESS:
                    conn.lost.set()

    def _on_readable(self, conn: _Connection) -> None:
        rc = conn.client.loop_read()
        if rc != paho.MQTT_ERR_SUCCESS:
            conn.lost.set()

    def _on_writable(self, conn: _Connection) -> None:
        rc = conn.client.loop_write()
        if rc != paho.MQTT_ERR_SUCCESS:
            conn.lost.set()

    def _start_reading(self, conn: _Connection) -> None:
        assert self._loop is not None
        assert conn.sock is not None
        self._loop.add_reader(conn.sock.fileno(), self._on_readable, conn)
        conn.reading = True

    def _stop_reading(self, conn: _Connection) -> None:
        if conn.reading and conn.sock is not None and self._loop is not None:
            self._loop.remove_reader(conn.sock.fileno())
        conn.reading = False

    def _want_write(self, conn: _Connection) -> None:
        if not conn.writing and conn.sock is not None and self._loop is not None:
            self._loop.add_writer(conn.sock.fileno(), self._on_writable, conn)
            conn.writing = True

    def _stop_writing(self, conn: _Connection) -> None:
        if conn.writing and conn.sock is not None and self._loop is not None:
            self._loop.remove_writer(conn.sock.fileno())
        conn.writing = False

    def _write(self, conn: _Connection, data: bytes) -> None:
        # One queued buffer of many PUBACKs: paho writes it with one send() and no
        # per-packet bookkeeping (PUBACK needs none).  paho==2.2.0 is pinned for this.
        conn.client._packet_queue(_PUBACK, data, 0, 0)

    def _unregister(self, conn: _Connection) -> None:
        self._stop_reading(conn)
        self._stop_writing(conn)
        conn.lost.set()

    def _close(self, conn: _Connection) -> None:
        """Forget a connection: its buffered messages will be redelivered by the broker."""
        self._connected.clear()
        if conn.sock is not None and not conn.lost.is_set():
            with contextlib.suppress(Exception):
                conn.client.disconnect()  # DISCONNECT keeps the session (expiry unchanged)
                conn.client.loop_write()
        self._unregister(conn)
        with contextlib.suppress(OSError):
            if conn.sock is not None:
                conn.sock.close()
        conn.sock = None
        gen = conn.generation
        kept = deque(m for m in self._buffer if m.token.generation != gen)
        self._purged += len(self._buffer) - len(kept)
        self._buffer.clear()
        self._buffer.extend(kept)
        if not self._buffer:
            self._nonempty.clear()

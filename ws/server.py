"""The console's websocket endpoint: moves frames between one socket and the hub.

The hub (ws/hub.py) decides what each console gets; this module only does I/O, as
``websockets``' asyncio connection does around its sans-I/O protocol:

* **Auth on connect**: the token (``?token=`` or ``Authorization: Bearer``) is checked by an
  injected function (``fleetwatch.auth`` in the service); the handshake is accepted and closed
  at once with **4401** (no or unknown token) or **4403** (no console scope), so a browser sees
  the code and the reason, not a bare HTTP 403.
* **One writer task per console** takes what the hub has for it and sends it, each take under
  ``send_timeout_s``: a console whose socket takes nothing for that long while it owes a read of
  ``resync`` is closed with **4408** ``too slow: resync``.  A take goes out as **prepared
  frames** when the connection allows it (ws/wire.py): each distinct message is framed, and
  compressed when permessage-deflate was negotiated, once for all consoles, and the take's
  frames are one transport write; otherwise one ``send_text`` per message.  The writer sleeps
  until the hub has news (an :class:`asyncio.Event` per console, set by
  :meth:`ConsoleServer.publish`) or the console's next positions are due; nothing polls.
* **The reader** (the endpoint's own task) parses each frame (ws/protocol.py), answers
  ``subscribe``/``track``/``ping`` from the hub, and hands acting commands to the engine
  (``submit``) one at a time; refusals become a ``reply`` with the engine's code.  A command's
  changes reach every console through the normal publish path, before its reply.

Nothing here blocks the engine: :meth:`ConsoleServer.publish` (the engine's publisher) only
folds records into the hub and sets events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from core.fixes import iso_utc
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CancelStop,
    Command,
    CommandRefused,
    ReassignStop,
    ReorderRoute,
)
from ws.hub import Hub, HubFull
from ws.protocol import (
    ACTING,
    AcknowledgeCmd,
    ActingCommand,
    BadFrame,
    CancelCmd,
    CommentCmd,
    ConsoleCommand,
    PingCmd,
    ReassignCmd,
    Refused,
    ReorderCmd,
    SubscribeCmd,
    TrackCmd,
    alert_json,
    error_frame,
    parse_command,
    reply_error,
    reply_ok,
)
from ws.track import Tracks
from ws.wire import WIRE_SCOPE_KEY, FrameCache, WireProtocol

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_TRY_LATER = 1013


class Principal(Protocol):
    """What the authenticator returns (``fleetwatch.auth.Principal``)."""

    @property
    def user(self) -> str: ...

    @property
    def console_role(self) -> str | None: ...


Authenticate = Callable[[str | None], Principal | None]
Submit = Callable[[Command], Awaitable[Sequence[Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """Timeouts of the endpoint; defaults in docs/console.md."""

    #: one take (the frames a console had waiting) not taken by the socket in this long: the
    #: console is closed (4408 when it owes a resync, 1011 otherwise) and its writer ends; the
    #: others never waited for it
    send_timeout_s: float = 30.0
    #: an acting command not answered by the engine in this long: ``reply`` with ``timeout``
    command_timeout_s: float = 10.0
    #: write each distinct message's frame bytes, built (and compressed) once, to every
    #: console whose connection allows it (ws/wire.py); off: one ``send_text`` per console
    #: per message, the socket's own framing and compression
    prepared_frames: bool = True


@dataclass(slots=True)
class ServerCounts:
    """What the endpoint saw (read by the metrics collector)."""

    connects: int = 0
    refused_auth: int = 0
    refused_forbidden: int = 0
    refused_full: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    #: of ``frames_sent``, written as prepared bytes (ws/wire.py), and those bytes
    frames_prepared: int = 0
    prepared_bytes: int = 0
    invalid_messages: int = 0
    bad_frames: int = 0
    send_timeouts: int = 0
    too_slow: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)


class ConsoleServer:
    """The endpoint and the publisher; register :meth:`endpoint` on the web shell and
    :meth:`publish` on the live engine (fleetwatch/console.py does both)."""

    def __init__(
        self,
        hub: Hub,
        *,
        authenticate: Authenticate,
        submit: Submit,
        clock_us: Callable[[], int],
        options: ServerOptions | None = None,
        tracks: Tracks | None = None,
    ) -> None:
        self.hub = hub
        #: ``track`` answers: from the store when the wiring gives a loader, else memory only
        self.tracks = tracks or Tracks(hub, load=None, clock_us=clock_us)
        self._authenticate = authenticate
        self._submit = submit
        self._clock_us = clock_us
        self.options = options or ServerOptions()
        self._wake: dict[int, asyncio.Event] = {}
        self.counts = ServerCounts()
        #: frames by content and encoding, shared by every console (ws/wire.py)
        self.frames = FrameCache()

    # -- the engine's side ---------------------------------------------------------------------

    def publish(self, records: Sequence[Any]) -> None:
        """The live engine's publisher: fold in and wake the consoles concerned; never waits."""
        woken = self.hub.publish(records, self._clock_us())
        for sid in woken:
            ev = self._wake.get(sid)
            if ev is not None:
                ev.set()

    # -- the console's side --------------------------------------------------------------------

    async def endpoint(self, websocket: WebSocket) -> None:
        """``/ws/console``: authenticate, then run one writer task and read commands."""
        token = websocket.query_params.get("token")
        if token is None:
            auth = websocket.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
        principal = self._authenticate(token)
        await websocket.accept()
        if principal is None:
            self.counts.refused_auth += 1
            why = "no token" if not token else "unknown token"
            await websocket.close(CLOSE_UNAUTHORIZED, f"unauthorized: {why}")
            return
        role = principal.console_role
        if role is None:
            self.counts.refused_forbidden += 1
            await websocket.close(
                CLOSE_FORBIDDEN, f"forbidden: {principal.user} has no console scope"
            )
            return
        after = _after(websocket.query_params.get("after"))
        batch = websocket.query_params.get("batch") == "1"
        try:
            sid = self.hub.open_session(
                user=principal.user, role=role, after=after, now_us=self._clock_us()
            )
        except HubFull as exc:
            self.counts.refused_full += 1
            await websocket.close(CLOSE_TRY_LATER, f"try again later: {exc}")
            return
        self.counts.connects += 1
        wake = self._wake[sid] = asyncio.Event()
        wake.set()
        try:
            await websocket.send_text(self.hub.hello(sid, self._clock_us()))
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(
                    self._writer(websocket, sid, wake, batch=batch), name=f"console-{sid}"
                )
                try:
                    await self._reader(websocket, sid, principal.user, role)
                finally:
                    writer.cancel()
        except* (WebSocketDisconnect, ConnectionError, _Closed):
            pass
        finally:
            self._wake.pop(sid, None)
            self.hub.close_session(sid)

    async def _writer(
        self, websocket: WebSocket, sid: int, wake: asyncio.Event, *, batch: bool
    ) -> None:
        hub = self.hub
        timeout = self.options.send_timeout_s
        wire = websocket.scope.get(WIRE_SCOPE_KEY) if self.options.prepared_frames else None
        if not isinstance(wire, WireProtocol):
            wire = None
        while True:
            wake.clear()
            now = self._clock_us()
            frames = hub.take(sid, now)
            if frames:
                try:
                    async with asyncio.timeout(timeout):
                        await self._send(websocket, wire, _batched(frames) if batch else frames)
                except TimeoutError:
                    await self._too_slow(websocket, sid)
                    raise _Closed() from None
                continue  # more may have come while sending
            deadline = hub.deadline_us(sid)
            if deadline is None:
                await wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, (deadline - now) / 1e6)):
                        await wake.wait()

    async def _send(
        self, websocket: WebSocket, wire: WireProtocol | None, texts: list[str]
    ) -> None:
        """One take's frames, in order: prepared bytes in one write when the connection
        allows it, else one ``send_text`` each (the library frames and compresses)."""
        c = self.counts
        encoding = wire.encoding() if wire is not None else None
        if wire is not None and encoding is not None:
            data = self.frames.frames(texts, encoding)
            if await wire.write_prepared(data, encoding):
                c.frames_sent += len(texts)
                c.frames_prepared += len(texts)
                c.bytes_sent += sum(map(len, texts))
                c.prepared_bytes += sum(map(len, data))
                return
        for text in texts:
            await websocket.send_text(text)
            c.frames_sent += 1
            c.bytes_sent += len(text)

    async def _too_slow(self, websocket: WebSocket, sid: int) -> None:
        self.counts.send_timeouts += 1
        owes_resync = self.hub.resync_pending(sid)
        if owes_resync:
            self.counts.too_slow += 1
        code, reason = (
            (CLOSE_TOO_SLOW, "too slow: resync")
            if owes_resync
            else (1011, "too slow: the socket took nothing")
        )
        log.warning("console %s closed: %s", sid, reason)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await websocket.close(code, reason)

    async def _reader(self, websocket: WebSocket, sid: int, user: str, role: str) -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            frame: str | bytes | None = msg.get("text")
            if frame is None:
                frame = msg.get("bytes") or b""
            try:
                cmd = parse_command(frame)
            except BadFrame as exc:
                self.counts.bad_frames += 1
                await websocket.send_text(error_frame("invalid", str(exc)))
                await websocket.close(exc.close_code, str(exc)[:120])
                raise _Closed() from None
            except Refused as exc:
                self.counts.invalid_messages += 1
                self._answer(sid, reply_error(exc.id, exc.code, str(exc)))
                continue
            await self._command(sid, cmd, user, role)

    def _answer(self, sid: int, text: str) -> None:
        self.hub.reply(sid, text)
        ev = self._wake.get(sid)
        if ev is not None:
            ev.set()

    async def _command(self, sid: int, cmd: ConsoleCommand, user: str, role: str) -> None:
        kind = type(cmd).__name__.removesuffix("Cmd").lower()
        self.counts.commands[kind] += 1
        if isinstance(cmd, PingCmd):
            self._answer(sid, reply_ok(cmd.id, {"server_time": iso_utc(self._clock_us())}))
            return
        if isinstance(cmd, SubscribeCmd):
            self.hub.subscribe(sid, cmd.scope)
            self._answer(sid, reply_ok(cmd.id, {"subscribed": True}))
            return
        if isinstance(cmd, TrackCmd):
            answer = await self.tracks.answer(cmd)
            if answer.refusal is not None:
                self.counts.refusals[answer.refusal] += 1
            for text in answer.frames:
                self._answer(sid, text)
            return
        assert isinstance(cmd, ACTING)
        if role == "viewer":
            self.counts.refusals["not_allowed"] += 1
            self._answer(sid, reply_error(cmd.id, "not_allowed", f"{user} is a viewer: watch only"))
            return
        try:
            async with asyncio.timeout(self.options.command_timeout_s):
                records = await self._submit(_engine_command(cmd, user))
        except CommandRefused as exc:
            self.counts.refusals[exc.code] += 1
            self._answer(sid, reply_error(cmd.id, exc.code, str(exc)))
            return
        except TimeoutError:
            self.counts.refusals["timeout"] += 1
            self._answer(sid, reply_error(cmd.id, "timeout", "the engine did not answer"))
            return
        self._answer(sid, reply_ok(cmd.id, _result(records)))


#: a ``batch`` frame holds at most this many characters of messages (one message may exceed it)
BATCH_CHARS = 1 << 20


def _batched(frames: list[str]) -> list[str]:
    """Frames joined into ``batch`` frames (opt-in, ``?batch=1``): what one take holds, in
    order, as one websocket message.  Why: an alert burst is N messages per console, and each
    websocket message costs the server a Python round through the ASGI stack and a ``send``
    syscall; a batch costs one."""
    if len(frames) < 2:
        return frames
    out: list[str] = []
    group: list[str] = []
    size = 0
    for f in frames:
        if group and size + len(f) > BATCH_CHARS:
            out.append('{"type":"batch","messages":[' + ",".join(group) + "]}")
            group, size = [], 0
        group.append(f)
        size += len(f) + 1
    if len(group) == 1:
        out.append(group[0])
    else:
        out.append('{"type":"batch","messages":[' + ",".join(group) + "]}")
    return out


class _Closed(Exception):
    """We closed the connection (bad frame, too slow): end the endpoint quietly."""


def _after(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return -1  # unusable: the hub answers resync + snapshot
    return value


def _engine_command(cmd: ActingCommand, user: str) -> Command:
    if isinstance(cmd, AcknowledgeCmd):
        return Acknowledge(alert_id=cmd.alert_id, version=cmd.version, by=user)
    if isinstance(cmd, CommentCmd):
        return AddComment(alert_id=cmd.alert_id, text=cmd.text, by=user)
    if isinstance(cmd, ReassignCmd):
        return ReassignStop(stop_id=cmd.stop_id, to_vehicle=cmd.to_vehicle, by=user)
    if isinstance(cmd, ReorderCmd):
        return ReorderRoute(route_id=cmd.route_id, stop_ids=cmd.stop_ids, by=user)
    assert isinstance(cmd, CancelCmd)
    return CancelStop(stop_id=cmd.stop_id, reason=cmd.reason, by=user)


def _result(records: Sequence[Any]) -> dict[str, Any]:
    """What a reply says was changed: the new alert versions in full, the rest by id."""
    from alerts.records import AlertVersion
    from schedule.stop_events import RouteProgress, StopChanged

    alerts = [alert_json(r) for r in records if isinstance(r, AlertVersion)]
    stops = [r.stop_id for r in records if isinstance(r, StopChanged)]
    routes = [r.route_id for r in records if isinstance(r, RouteProgress)]
    return {"alerts": alerts, "stops": stops, "routes": routes}

"""The console websocket against the real server on a real port, with a real websocket client.

A real :class:`~schedule.engine.Engine` (the schedule board of tests/schedule_world.py and the
alert desk of tests/alerts_helpers.py) runs in a real :class:`LiveEngine` task; the web shell
serves ``/ws/console`` through uvicorn; clients are the ``websockets`` library.  The engine's
driver clock is fixed at 10:00 of the test day (the board and desk decide on it); the console's
own clock (position pacing) is the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from shapely.geometry import Point
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from alerts.desk import AlertDesk
from core.fixes import Fix, FixBatch
from fleetwatch.auth import Authenticator, mint
from fleetwatch.console import register_console
from fleetwatch.engine_metrics import EngineMetrics
from fleetwatch.live_engine import LiveEngine
from fleetwatch.web import WebShell, open_web_server
from geofence.sites import Site
from schedule.engine import Engine
from tests import schedule_world as W
from tests.alerts_helpers import roster
from tests.test_web import http_get
from tests.ws_helpers import ConsoleView, alert, pos
from ws.hub import HubLimits
from ws.pages import page_router
from ws.server import ConsoleServer, ServerOptions

pytestmark = pytest.mark.anyio

DATE = "2026-11-23"
PLAN = W.plan(
    {
        "V001": [("S1", 9, 10), ("S2", 10, 11)],
        "V002": [("S3", 9, 10)],
        "V003": [("S4", 9.5, 10.5)],
    }
)


@dataclass
class World:
    server: ConsoleServer
    live: LiveEngine
    port: int
    tokens: dict[str, str]
    tasks: list[asyncio.Task[None]]

    def url(self, who: str | None = "D01", **query: object) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        tok = f"token={self.tokens[who]}" if who else ""
        return f"ws://127.0.0.1:{self.port}/ws/console?{tok}{'&' if q and tok else ''}{q}"


async def world_of(
    tg: asyncio.TaskGroup,
    *,
    limits: HubLimits | None = None,
    options: ServerOptions | None = None,
    page: bool = False,
    **console: Any,
) -> World:
    """The world; *page*: serve the console page at ``/`` too (tests/test_page_scope.py);
    *console*: more arguments of :func:`register_console` (tests/test_ws_track.py gives it a
    store and a clock)."""
    sites = W.sites()
    engine = Engine(
        matcher=lambda lon, lat, m: np.empty((2, 0), np.intp),
        site_ids=list(sites),
        unit_to_vehicle={},
        board=W.board(vehicles=("V001", "V002", "V003")),
        stages=[AlertDesk(roster=roster())],
    )
    shell = WebShell()
    live = LiveEngine(engine, EngineMetrics(shell.registry), clock_us=lambda: W.at(10))
    tokens, entries = {}, []
    for user, scopes in [
        ("D01", ["dispatcher"]),
        ("D02", ["dispatcher"]),
        ("D00", ["head_dispatcher"]),
        ("VW", ["console:view"]),
        ("crm", ["crm:read"]),
    ]:
        tokens[user], entry = mint(user, scopes)
        entries.append(entry)
    geo = [
        Site(
            site_id=s.site_id,
            client_id=s.client_id or "",
            name=s.site_id,
            geometry=Point(s.lon, s.lat),
            radius_m=60.0,
        )
        for s in sites.values()
    ]
    server = register_console(
        shell,
        live,
        tokens=Authenticator(entries),
        sites=geo,
        roster=roster(),
        limits=limits,
        options=options,
        **console,
    )
    if page:
        shell.include_router(page_router())
    web = open_web_server(shell, host="127.0.0.1", port=0)
    tasks = [tg.create_task(live.run(), name="engine"), tg.create_task(web.serve(), name="web")]
    async with asyncio.timeout(5):
        await web.wait_started()
    await live.call(lambda e, now: e.board.load_plan(PLAN, W.at(8)))  # type: ignore[union-attr]
    await live.call(lambda e, now: advance(e, W.at(9.8)))
    return World(server=server, live=live, port=web.port, tokens=tokens, tasks=tasks)


def advance(engine: Engine, t_us: int) -> list[Any]:
    """Move the engine's data clock to *t_us* and run a round: one fix of a clock unit far from
    every site (the engine takes no decision on time that no detection round has seen)."""
    fix = Fix(unit_id="CLOCK", t_us=t_us, recv_us=t_us, lat=0.0, lon=0.0)
    return engine.feed(FixBatch.from_fixes([fix]), t_us) + engine.flush(t_us)


@contextlib.asynccontextmanager
async def running(**kw: Any) -> AsyncIterator[World]:
    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        w = await world_of(tg, **kw)
        try:
            yield w
        finally:
            for t in w.tasks:
                t.cancel()


class SlowConsole:
    """A console that reads nothing until asked: a raw socket with a 4 KiB receive buffer and
    a reader that stops at 8 KiB, driving the ``websockets`` sans-I/O client protocol (the
    asyncio client keeps reading into its own buffers, and loopback buffers hold tens of MB)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.proto: ClientProtocol | None = None
        self.texts: list[str] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, url: str, port: int) -> SlowConsole:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        self = cls(reader, writer)
        self.proto = ClientProtocol(parse_uri(url), max_size=None)
        self.proto.send_request(self.proto.connect())
        writer.write(b"".join(self.proto.data_to_send()))
        while self.proto.state is State.CONNECTING:
            self._feed(await reader.read(4096))
        return self

    def _feed(self, data: bytes) -> None:
        assert self.proto is not None
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        for ev in self.proto.events_received():
            if isinstance(ev, Frame) and ev.opcode is Opcode.TEXT:
                self.texts.append(bytes(ev.data).decode())
            elif isinstance(ev, Frame) and ev.opcode is Opcode.CLOSE:
                self.close_code = Close.parse(ev.data).code
        self.writer.write(b"".join(self.proto.data_to_send()))

    async def recv(self) -> str:
        while not self.texts:
            data = await self.reader.read(65536)
            if not data and self.proto is not None and self.proto.state is State.CLOSED:
                raise ConnectionError("closed")
            self._feed(data)
        return self.texts.pop(0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def recv(ws: ClientConnection, view: ConsoleView | None = None) -> dict[str, Any]:
    async with asyncio.timeout(5):
        text = await ws.recv()
    assert isinstance(text, str)
    return view.apply(text) if view is not None else dict(json.loads(text))


async def until(
    ws: ClientConnection, view: ConsoleView, pred: Any, *, skip_positions: bool = True
) -> dict[str, Any]:
    while True:
        m = await recv(ws, view)
        if pred(m):
            return m


async def opened(
    w: World, who: str = "D01", **query: object
) -> tuple[ClientConnection, ConsoleView]:
    ws = await connect(w.url(who, **query))
    view = ConsoleView()
    hello = await recv(ws)
    assert hello["type"] == "hello"
    snap = await recv(ws, view)
    assert snap["type"] == "snapshot"
    return ws, view


async def command(
    ws: ClientConnection, view: ConsoleView, **msg: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send one command; (its reply, what came before the reply)."""
    await ws.send(json.dumps(msg))
    before: list[dict[str, Any]] = []
    while True:
        m = await recv(ws, view)
        if m["type"] == "reply" and m["id"] == msg.get("id"):
            return m, before
        before.append(m)


def aid(site: str) -> str:
    return f"stop/{DATE}/{site}"


# -- connect, snapshot, deltas ------------------------------------------------------------------


async def test_hello_then_a_snapshot_of_the_day_then_deltas_with_increasing_seq() -> None:
    async with running() as w:
        ws = await connect(w.url("D01"))
        hello = await recv(ws)
        assert hello["type"] == "hello"
        assert (hello["protocol"], hello["user"], hello["role"]) == (1, "D01", "dispatcher")
        assert hello["lang_default"] == "ru"
        view = ConsoleView()
        snap = await recv(ws, view)
        assert snap["type"] == "snapshot"
        assert len(snap["sites"]) == 6
        assert {s["site_id"] for s in snap["stops"]} == {"S1", "S2", "S3", "S4"}
        assert {r["route_id"] for r in snap["routes"]} == {f"{DATE}/V00{k}" for k in (1, 2, 3)}
        assert aid("S1") in view.alerts
        s1 = next(s for s in snap["sites"] if s["site_id"] == "S1")
        assert (s1["state"], s1["radius_m"]) == ("at_risk", 60.0)
        before = snap["seq"]
        await w.live.call(lambda e, now: advance(e, W.at(10.6)))  # windows end: late
        m = await until(ws, view, lambda m: m["type"] == "alert" and m["alert"]["kind"] == "missed")
        assert m["seq"] > before
        assert view.stops[f"{DATE}/S1"] == "missed"
        await ws.close()


# -- commands -----------------------------------------------------------------------------------


async def test_an_accepted_acknowledge_reaches_every_console_and_refusals_are_specific() -> None:
    async with running() as w:
        d01, v1 = await opened(w, "D01")
        d02, v2 = await opened(w, "D02")
        version = v1.alerts[aid("S1")]
        reply, before = await command(
            d01, v1, type="acknowledge", id="a1", alert_id=aid("S1"), version=version
        )
        assert reply["ok"] is True
        assert reply["result"]["alerts"][0]["status"] == "acknowledged"
        # the change came to the sender before its reply, and to the other console
        assert any(m["type"] == "alert" and m["alert"]["alert_id"] == aid("S1") for m in before)
        other = await until(d02, v2, lambda m: m["type"] == "alert")
        assert (other["alert"]["alert_id"], other["alert"]["acknowledged_by"]) == (aid("S1"), "D01")
        assert v2.alerts[aid("S1")] == v1.alerts[aid("S1")] == version + 1

        async def refused(ws: ClientConnection, view: ConsoleView, **msg: Any) -> str:
            reply, _ = await command(ws, view, **msg)
            assert reply["ok"] is False, reply
            assert reply["error"]["message"]
            return str(reply["error"]["code"])

        ack = {"type": "acknowledge", "id": 2}
        assert await refused(d02, v2, **ack, alert_id="stop/x/y", version=1) == "unknown_id"
        assert await refused(d02, v2, **ack, alert_id=aid("S3"), version=99) == "stale_version"
        assert await refused(d02, v2, **ack, alert_id=aid("S1"), version=1) == "stale_version"
        com = {"type": "comment", "id": "c"}
        assert await refused(d02, v2, **com, alert_id="nope", text="x") == "unknown_id"
        assert await refused(d02, v2, **com, alert_id=aid("S1"), text=" ") == "invalid"
        assert await refused(d02, v2, **com, alert_id=aid("S1"), text="x" * 2001) == "invalid"
        reply, _ = await command(d02, v2, **com, alert_id=aid("S1"), text="called the driver")
        assert reply["ok"] is True
        seen = await until(d01, v1, lambda m: m["type"] == "alert" and m["alert"]["comments"])
        assert seen["alert"]["comments"][0] == {
            "by": "D02",
            "at": seen["alert"]["comments"][0]["at"],
            "text": "called the driver",
        }
        await d01.close()
        await d02.close()


async def test_route_commands_and_their_refusals() -> None:
    async with running() as w:
        ws, view = await opened(w, "D01")
        other, oview = await opened(w, "D00")
        re = {"type": "reassign", "id": "r"}
        stop_s3 = f"{DATE}/S3"
        reply, _ = await command(ws, view, **re, stop_id=stop_s3, to_vehicle="V003")
        assert reply["ok"] is True, reply
        assert stop_s3 in reply["result"]["stops"]
        moved = await until(
            other, oview, lambda m: m["type"] == "stop" and m["stop"]["stop_id"] == stop_s3
        )
        assert moved["stop"]["vehicle_id"] == "V003"
        codes = []
        for msg in (
            {**re, "stop_id": "2026-11-23/S9", "to_vehicle": "V001"},
            {**re, "stop_id": stop_s3, "to_vehicle": "V999"},
            {"type": "reorder", "id": "o", "route_id": "nope", "stop_ids": ["a"]},
            {"type": "reorder", "id": "o", "route_id": f"{DATE}/V001", "stop_ids": [stop_s3]},
            {"type": "cancel", "id": "x", "stop_id": "2026-11-23/S9", "reason": "closed"},
        ):
            reply, _ = await command(ws, view, **msg)
            assert reply["ok"] is False
            codes.append(reply["error"]["code"])
        assert codes == ["unknown_id", "unknown_id", "unknown_id", "invalid", "unknown_id"]
        order = [f"{DATE}/S2", f"{DATE}/S1"]
        reply, _ = await command(
            ws, view, type="reorder", id="o2", route_id=f"{DATE}/V001", stop_ids=order
        )
        assert reply["ok"] is True, reply
        route = await until(
            other,
            oview,
            lambda m: m["type"] == "route" and m["route"]["route_id"] == f"{DATE}/V001",
        )
        assert [s["stop_id"] for s in route["route"]["stops"]][-2:] == order
        reply, _ = await command(
            ws, view, type="cancel", id="k", stop_id=f"{DATE}/S4", reason="client closed today"
        )
        assert reply["ok"] is True, reply
        reply, _ = await command(
            ws, view, type="cancel", id="k2", stop_id=f"{DATE}/S4", reason="again"
        )
        assert reply["error"]["code"] == "already_final"
        await ws.close()
        await other.close()


async def test_a_viewer_watches_but_cannot_act() -> None:
    async with running() as w:
        ws, view = await opened(w, "VW")
        for msg in (
            {"type": "acknowledge", "id": 1, "alert_id": aid("S1"), "version": 1},
            {"type": "comment", "id": 2, "alert_id": aid("S1"), "text": "hi"},
            {"type": "cancel", "id": 3, "stop_id": f"{DATE}/S1", "reason": "x"},
            {"type": "reassign", "id": 4, "stop_id": f"{DATE}/S1", "to_vehicle": "V002"},
            {"type": "reorder", "id": 5, "route_id": f"{DATE}/V001", "stop_ids": ["a"]},
        ):
            reply, _ = await command(ws, view, **msg)
            assert (reply["ok"], reply["error"]["code"]) == (False, "not_allowed")
        reply, _ = await command(ws, view, type="ping", id="p")
        assert reply["ok"] is True
        await ws.close()


async def test_invalid_messages_are_refused_and_the_connection_stays() -> None:
    async with running() as w:
        ws, view = await opened(w, "D01")
        for msg, says in (
            ({"type": "dance", "id": 1}, "unknown type"),
            ({"type": "acknowledge", "id": 1, "alert_id": aid("S1")}, "version: missing"),
            ({"type": "acknowledge", "id": 1, "alert_id": 5, "version": 1}, "alert_id"),
            ({"type": "ping"}, "id"),
            ({"type": "ping", "id": 1, "extra": True}, "unknown fields"),
            ({"type": "subscribe", "id": 1, "scope": {"region": [1, 2]}}, "scope"),
            ({"type": "track", "id": 1, "vehicle_id": "V001", "minutes": 241}, "minutes"),
            ({"type": "comment", "id": 1, "alert_id": "a", "text": "x" * 17_000}, "16384"),
        ):
            await ws.send(json.dumps(msg))
            reply = await until(ws, view, lambda m: m["type"] == "reply")
            assert reply["ok"] is False
            assert reply["error"]["code"] == "invalid"
            assert says in reply["error"]["message"], (says, reply)
        await ws.send("[1, 2]")
        assert (await until(ws, view, lambda m: m["type"] == "reply"))["id"] is None
        reply, _ = await command(ws, view, type="track", id="t", vehicle_id="V999")
        assert reply["error"]["code"] == "unknown_id"
        reply, _ = await command(ws, view, type="ping", id="still-here")
        assert reply["ok"] is True
        assert w.server.counts.invalid_messages == 9
        await ws.send("{not json")
        err = await until(ws, view, lambda m: m["type"] == "error")
        assert "not JSON" in err["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007
        _, body = await http_get(w.port, "/metrics")
        assert b"fleetwatch_console_invalid_messages_total 9.0" in body
        assert b'fleetwatch_console_command_refusals_total{code="unknown_id"} 1.0' in body


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "token", "code", "says"),
    [
        (None, None, 4401, "unauthorized: no token"),
        (None, "wrong", 4401, "unauthorized: unknown token"),
        ("crm", None, 4403, "forbidden: crm has no console scope"),
    ],
)
async def test_auth_refusals_close_with_a_code_and_a_reason(
    who: str | None, token: str | None, code: int, says: str
) -> None:
    async with running() as w:
        url = w.url(who) if token is None else w.url(None, token=token)
        ws = await connect(url)
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, says)


async def test_the_bearer_header_works_too() -> None:
    async with running() as w:
        ws = await connect(
            f"ws://127.0.0.1:{w.port}/ws/console",
            additional_headers={"Authorization": f"Bearer {w.tokens['D00']}"},
        )
        hello = await recv(ws)
        assert (hello["user"], hello["role"]) == ("D00", "head_dispatcher")
        await ws.close()


# -- slow consoles, resync, resume --------------------------------------------------------------


async def test_a_console_that_never_reads_blocks_nothing_and_resyncs_without_losing_alerts() -> (
    None
):
    """The slow console's client reads nothing (a 1-frame client queue, so TCP fills): the
    engine keeps taking commands at once and the fast console gets everything promptly; when
    the slow one finally reads it gets resync + snapshot, its alerts equal the hub's, and its
    positions came at most once per second."""
    async with running(limits=HubLimits(queue_messages=50)) as w:
        slow = await SlowConsole.open(w.url("D02"), w.port)
        fast, fview = await opened(w, "D01")
        big = "x" * 10_000  # more than the kernel's send buffer (up to 4 MiB) can hide
        t0 = time.monotonic()
        engine_waits = []
        for k in range(60):
            records: list[Any] = [
                dataclasses.replace(alert(100 + n, 1 + k), summary=big) for n in range(20)
            ]
            records += [pos(f"V{v:03d}", k * 0.05, lon=37.0 + k / 100) for v in range(50)]
            w.server.publish(records)
            t1 = time.monotonic()
            await w.live.call(lambda e, now: [])  # the engine task is free at once
            engine_waits.append(time.monotonic() - t1)
            await asyncio.sleep(0.05)  # a wall-clock pace for the hub's 1 s position rule
            while True:  # the fast console drains what is there
                try:
                    async with asyncio.timeout(0.01):
                        text = await fast.recv()
                except TimeoutError:
                    break
                fview.apply(str(text))
        assert max(engine_waits) < 2.0  # (a blocked engine would wait forever)
        expected = {a.id: a.version for a in w.server.hub.alerts.values()}
        while fview.alerts != expected:
            await recv(fast, fview)
        elapsed = time.monotonic() - t0
        assert w.server.hub.statistics().overflows >= 1
        # the slow console reads now
        sview = ConsoleView()
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while sview.alerts != expected or not any(m["type"] == "resync" for m in seen):
                text = await slow.recv()
                m = json.loads(text)
                if m["type"] == "hello":
                    continue
                seen.append(sview.apply(str(text)))
        types = [m["type"] for m in seen]
        k = types.index("resync")
        assert types[k + 1] == "snapshot"
        positions = [m for m in seen if m["type"] == "positions"]
        assert len(positions) <= elapsed / 0.9 + 2  # coalesced: ≤ 1 per 0.9-1 s
        for m in positions:
            ids = [v["vehicle_id"] for v in m["vehicles"]]
            assert len(ids) == len(set(ids))
        fast_positions = [m for m in fview.frames if m["type"] == "positions"]
        assert 1 <= len(fast_positions) <= elapsed / 0.9 + 2
        await slow.close()
        await fast.close()


async def test_a_console_that_ignores_even_the_resync_is_closed_4408() -> None:
    async with running(
        limits=HubLimits(queue_messages=5), options=ServerOptions(send_timeout_s=0.3)
    ) as w:
        slow = await SlowConsole.open(w.url("D02"), w.port)
        big = "y" * 4000
        version = 0
        async with asyncio.timeout(20):
            while w.server.counts.send_timeouts == 0:
                version += 1
                w.server.publish(
                    [dataclasses.replace(alert(n, version), summary=big) for n in range(30)]
                )
                await asyncio.sleep(0.05)
        assert w.server.counts.too_slow == 1
        for _ in range(100):  # the endpoint ends (within its 1 s close timeout)
            if not w.server.hub.consoles:
                break
            await asyncio.sleep(0.05)
        assert w.server.hub.consoles == 0
        await slow.close()


async def test_resume_after_reconnect_gets_every_alert_in_between() -> None:
    async with running() as w:
        ws, view = await opened(w, "D01")
        last = view.last_seq
        await ws.close()
        await w.live.call(lambda e, now: advance(e, W.at(10.6)))  # late alerts while away
        changed = {
            a.id: a.version for a in w.server.hub.alerts.values() if a.version > 1 or a.change
        }
        ws = await connect(w.url("D01", after=last))
        assert (await recv(ws))["type"] == "hello"
        got = []
        while True:
            m = await recv(ws, view)
            got.append(m)
            if view.alerts == changed:
                break
        assert "snapshot" not in [m["type"] for m in got]
        assert all(m["seq"] > last for m in got)
        assert w.server.hub.counts["replay_resumes"] == 1
        await ws.close()
        ws = await connect(w.url("D01", after=10**9))  # not of this process
        assert [(await recv(ws))["type"] for _ in range(3)] == ["hello", "resync", "snapshot"]
        await ws.close()


async def test_subscriptions_narrow_what_a_console_gets() -> None:
    async with running() as w:
        ws, view = await opened(w, "D02")
        reply, before = await command(ws, view, type="subscribe", id="s", scope="mine")
        assert reply["ok"] is True
        snap = before[-1]  # a fresh snapshot under the new scope, then the reply
        # D02 (roster: V003) sees its vehicle's stop S4 and the alerts assigned to it
        assert {s["site_id"] for s in snap["stops"]} == {"S4"}
        assert {a["assignee"] for a in snap["alerts"]} == {"D02"}
        reply, before = await command(
            ws, view, type="subscribe", id="v", scope={"vehicles": ["V002"]}
        )
        snap = before[-1]
        assert {s["site_id"] for s in snap["stops"]} == {"S3"}
        lon = W.sites()["S2"].lon
        reply, before = await command(
            ws, view, type="subscribe", id="r", scope={"region": [lon - 0.001, 55, lon + 0.001, 56]}
        )
        snap = before[-1]
        assert [s["site_id"] for s in snap["sites"]] == ["S2"]
        assert {s["site_id"] for s in snap["stops"]} == {"S2"}
        await w.live.call(lambda e, now: advance(e, W.at(11.5)))
        m = await until(ws, view, lambda m: m["type"] == "stop")
        assert m["stop"]["site_id"] == "S2"
        await ws.close()


async def test_batch_mode_joins_a_take_into_one_frame_in_order() -> None:
    async with running() as w:
        ws = await connect(w.url("D01", batch=1))
        assert (await recv(ws))["type"] == "hello"
        view = ConsoleView()
        assert (await recv(ws, view))["type"] == "snapshot"
        w.server.publish([alert(n, 1) for n in range(1, 31)])
        m = json.loads(await ws.recv())
        while m["type"] == "status":  # the engine's data-delayed notice: any time (its tick)
            view.apply(json.dumps(m))
            m = json.loads(await ws.recv())
        assert m["type"] == "batch"
        for inner in m["messages"]:
            view.apply(json.dumps(inner))  # seq strictly increasing inside
        while len([a for a in view.alerts if a.startswith("stop/2026-11-23/S00")]) < 30:
            m = json.loads(await ws.recv())
            for inner in m["messages"] if m["type"] == "batch" else [m]:
                view.apply(json.dumps(inner))
        await ws.close()

"""A small console server speaking docs/console-protocol.md, for testing the page alone.

Why a fake: the page and the real server (ws/) are built at the same time; the page is tested
against the protocol document, not against the server's internals.  This is a real
``websockets`` server on a free loopback port (real frames, real close codes), holding a tiny
world (sites, vehicles, stops, routes, alerts) and answering the commands the page sends with
the protocol's replies and broadcasts.  Every command is recorded exactly as received, so a
test can check the page sends exactly what the protocol says.

The end-to-end test against the real service lives elsewhere (the lead's): it uses only
:mod:`tests.support.browser`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve

Json = dict[str, Any]
MOSCOW = (55.7558, 37.6173)  # lat, lon
DAY = "2026-12-02"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class World:
    """What the fake server knows; its records have the protocol's shapes."""

    now: datetime
    sites: dict[str, Json] = field(default_factory=dict)
    vehicles: dict[str, Json] = field(default_factory=dict)
    stops: dict[str, Json] = field(default_factory=dict)
    routes: dict[str, Json] = field(default_factory=dict)
    alerts: dict[str, Json] = field(default_factory=dict)
    depots: list[Json] = field(default_factory=list)
    data_delayed: bool = False

    def snapshot(self, seq: int) -> Json:
        return {
            "type": "snapshot",
            "seq": seq,
            "vehicles": list(self.vehicles.values()),
            "sites": list(self.sites.values()),
            "stops": list(self.stops.values()),
            "alerts": list(self.alerts.values()),
            "routes": list(self.routes.values()),
            "depots": self.depots,
            "data_delayed": self.data_delayed,
        }


def make_world(
    *, vehicles: int = 6, sites: int = 24, stops_per_route: int = 4, seed: int = 7
) -> World:
    """A deterministic little city around Moscow's centre: sites (circles, every fifth a
    polygon), vehicles with one route each over the first sites, a depot."""
    rnd = random.Random(seed)
    now = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)  # 12:30 in Moscow
    w = World(now=now)
    w.depots.append({"depot_id": "D1", "name": "Depot North", "lat": 55.84, "lon": 37.55})
    spread = 0.18 if sites > 100 else 0.08
    for i in range(sites):
        lat = MOSCOW[0] + rnd.uniform(-spread, spread) * 0.6
        lon = MOSCOW[1] + rnd.uniform(-spread, spread)
        sid = f"S{i + 1:04d}"
        site: Json = {
            "site_id": sid,
            "client_id": f"C{(i % 40) + 1:03d}",
            "name": f"БЦ «Site {i + 1}»",
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "state": None,
        }
        if i % 5 == 4:
            d = 0.0006
            site["polygon"] = [
                [round(lon - d, 6), round(lat - d / 2, 6)],
                [round(lon + d, 6), round(lat - d / 2, 6)],
                [round(lon + d, 6), round(lat + d / 2, 6)],
                [round(lon - d, 6), round(lat + d / 2, 6)],
                [round(lon - d, 6), round(lat - d / 2, 6)],
            ]
        else:
            site["radius_m"] = 40.0
        w.sites[sid] = site
    site_ids = list(w.sites)
    for v in range(vehicles):
        vid = f"V{v + 1:02d}" if vehicles < 100 else f"V{v + 1:04d}"
        lat = MOSCOW[0] + rnd.uniform(-spread, spread) * 0.6
        lon = MOSCOW[1] + rnd.uniform(-spread, spread)
        rid = f"R-{DAY}-{vid}"
        w.vehicles[vid] = {
            "vehicle_id": vid,
            "t": iso(now),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": 32.0,
            "state": "moving",
            "site_id": None,
            "route_id": rid,
        }
        route_stops: list[Json] = []
        for k in range(stops_per_route):
            idx = v * stops_per_route + k
            if idx >= len(site_ids):
                break
            sid = site_ids[idx]
            start = now + timedelta(minutes=30 * k - 30)
            stop = {
                "stop_id": f"{DAY}/{sid}",
                "site_id": sid,
                "client_id": w.sites[sid]["client_id"],
                "service_date": DAY,
                "vehicle_id": vid,
                "state": "visited" if k == 0 else "pending",
                "previous": None,
                "window_start": iso(start),
                "window_end": iso(start + timedelta(minutes=60)),
                "planned_arrival": iso(start + timedelta(minutes=10)),
                "eta": None if k == 0 else iso(start + timedelta(minutes=15)),
                "arrival": iso(start + timedelta(minutes=12)) if k == 0 else None,
                "departure": iso(start + timedelta(minutes=20)) if k == 0 else None,
                "outcome": "on_time" if k == 0 else None,
                "minutes_late": None,
                "reason": "",
                "cause": "fix",
                "at": iso(now),
            }
            w.stops[stop["stop_id"]] = stop
            w.sites[sid]["state"] = stop["state"]
            route_stops.append(route_stop(stop))
        w.routes[rid] = {
            "route_id": rid,
            "vehicle_id": vid,
            "service_date": DAY,
            "stops": route_stops,
            "behind_s": 0.0,
            "at": iso(now),
        }
    return w


def route_stop(stop: Json) -> Json:
    return {
        k: stop[k]
        for k in (
            "stop_id",
            "site_id",
            "planned_arrival",
            "window_start",
            "window_end",
            "eta",
            "arrival",
            "state",
        )
    }


def make_alert(
    world: World,
    *,
    alert_id: str,
    kind: str,
    severity: str,
    opened: datetime,
    site_id: str | None = None,
    vehicle_id: str | None = None,
    summary: str = "",
) -> Json:
    """An alert version 1 in the desk's JSON form (alerts/records.py + ws alert_json)."""
    facts: Json = {}
    if site_id:
        facts["site_id"] = site_id
    if vehicle_id:
        facts["vehicle_id"] = vehicle_id
    a: Json = {
        "id": alert_id,
        "alert_id": alert_id,
        "version": 1,
        "subject": "stop" if site_id else "vehicle",
        "kind": kind,
        "severity": severity,
        "status": "open",
        "summary": summary or f"{site_id or vehicle_id} {kind}",
        "facts": facts,
        "assignee": "ivanova",
        "escalation_level": 0,
        "hops": [],
        "history": [],
        "acknowledged_by": None,
        "acknowledged_at": None,
        "comments": [],
        "detected_late": False,
        "opened_at": iso(opened),
        "change": "raised",
        "by": "engine:test",
        "at": iso(opened),
    }
    world.alerts[alert_id] = a
    return a


@dataclass
class Conn:
    ws: ServerConnection
    user: str
    role: str
    after: int | None
    scope: Any = "all"


class FakeConsoleServer:
    """The protocol's server side, small: tokens → (user, role), one shared ``seq``.

    ``commands`` holds every frame a console sent (parsed), in order; ``connects`` the query
    of every accepted connection (``after`` included).  ``accept_commands`` False leaves
    commands unanswered (to test a page waiting for a reply).
    """

    def __init__(self, world: World, tokens: dict[str, tuple[str, str]]) -> None:
        self.world = world
        self.tokens = tokens
        self.seq = 100
        self.conns: list[Conn] = []
        self.commands: list[Json] = []
        self.connects: list[dict[str, str]] = []
        self.replay: list[Json] = []  # non-position messages, for after=SEQ
        self.replay_floor = self.seq  # a console that saw at least this seq can resume
        self.accept_commands = True
        self.broadcast_accepted = True  # False: an accepted change reaches only the reply
        self.mine: dict[str, set[str]] = {"ivanova": {"V01", "V02"}}  # the roster's "mine"
        #: None: ``track`` answers from the store; "store_error" / "unavailable": from memory
        self.track_error: str | None = None
        self.changed = asyncio.Event()
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/console"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeConsoleServer]:
        async with serve(self._handler, "127.0.0.1", 0, max_size=2**24) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self

    # -- what a test does ---------------------------------------------------------------------
    async def broadcast(self, msg: Json) -> Json:
        """Give *msg* the next seq and send it to every console; returns it."""
        self.seq += 1
        msg = {
            "type": msg["type"],
            "seq": self.seq,
            **{k: v for k, v in msg.items() if k != "type"},
        }
        if msg["type"] != "positions":
            self.replay.append(msg)
        text = json.dumps(msg, ensure_ascii=False)
        for c in list(self.conns):
            with contextlib.suppress(Exception):
                await c.ws.send(text)
        return msg

    async def publish_alert(self, alert: Json) -> Json:
        self.world.alerts[alert["alert_id"]] = alert
        return await self.broadcast({"type": "alert", "alert": alert})

    async def move_vehicles(self, dlat: float, dlon: float, ids: list[str] | None = None) -> Json:
        moved = []
        for vid in ids or list(self.world.vehicles):
            v = self.world.vehicles[vid]
            v["lat"] = round(v["lat"] + dlat, 6)
            v["lon"] = round(v["lon"] + dlon, 6)
            moved.append(dict(v))
        return await self.broadcast({"type": "positions", "vehicles": moved})

    async def resync(self, reason: str = "behind") -> None:
        """Tell every console it is behind, then send each a fresh snapshot."""
        for c in list(self.conns):
            await c.ws.send(json.dumps({"type": "resync", "reason": reason}))
            await c.ws.send(json.dumps(self.world.snapshot(self.seq), ensure_ascii=False))

    async def drop_connections(self, code: int = 1012, reason: str = "restart") -> None:
        for c in list(self.conns):
            await c.ws.close(code, reason)

    async def wait_for_command(self, n: int, timeout_s: float = 10.0) -> Json:
        """The *n*-th command (1-based) other than pings, once it has arrived."""
        async with asyncio.timeout(timeout_s):
            while True:
                acting = [c for c in self.commands if c.get("type") != "ping"]
                if len(acting) >= n:
                    return acting[n - 1]
                self.changed.clear()
                await self.changed.wait()

    async def wait_for_connects(self, n: int, timeout_s: float = 10.0) -> dict[str, str]:
        async with asyncio.timeout(timeout_s):
            while len(self.connects) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.connects[n - 1]

    # -- the protocol -------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        q = {k: v[0] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        who = self.tokens.get(q.get("token", ""))
        if who is None:
            await ws.close(4401, "unauthorized: unknown token")
            return
        user, role = who
        after = int(q["after"]) if "after" in q else None
        conn = Conn(ws, user, role, after)
        self.connects.append(q)
        self.changed.set()
        await ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "protocol": 1,
                    "user": user,
                    "role": role,
                    "server_time": iso(self.world.now),
                    "lang_default": "ru",
                }
            )
        )
        if after is not None and after >= self.replay_floor:
            # resume: every non-position message after SEQ, then the current positions (a
            # positions frame gets a seq of its own when it is built, as in ws/hub.py)
            for m in self.replay:
                if m["seq"] > after:
                    await ws.send(json.dumps(m, ensure_ascii=False))
            self.seq += 1
            vehicles = list(self.world.vehicles.values())
            await ws.send(json.dumps({"type": "positions", "seq": self.seq, "vehicles": vehicles}))
        else:
            if after is not None:
                await ws.send(json.dumps({"type": "resync", "reason": "too old"}))
            await ws.send(json.dumps(self.world.snapshot(self.seq), ensure_ascii=False))
        self.conns.append(conn)
        try:
            async for frame in ws:
                msg = json.loads(frame)
                self.commands.append(msg)
                self.changed.set()
                if self.accept_commands:
                    await self._answer(conn, msg)
        finally:
            self.conns.remove(conn)

    async def _reply(
        self, conn: Conn, cid: Any, result: Any = None, error: Json | None = None
    ) -> None:
        body: Json = {"type": "reply", "id": cid, "ok": error is None}
        if error is None:
            body["result"] = result
        else:
            body["error"] = error
        await conn.ws.send(json.dumps(body, ensure_ascii=False))

    async def _answer(self, conn: Conn, msg: Json) -> None:
        kind, cid = msg.get("type"), msg.get("id")
        acting = kind in ("acknowledge", "comment", "reassign", "reorder", "cancel")
        if acting and conn.role == "viewer":
            await self._reply(conn, cid, error={"code": "not_allowed", "message": "a viewer"})
            return
        if kind == "ping":
            await self._reply(conn, cid, {"pong": True})
        elif kind in ("acknowledge", "comment"):
            a = self.world.alerts.get(msg.get("alert_id", ""))
            if a is None:
                await self._reply(conn, cid, error={"code": "unknown_id", "message": "no alert"})
                return
            if kind == "acknowledge" and msg.get("version") != a["version"]:
                await self._reply(
                    conn, cid, error={"code": "stale_version", "message": "newer version"}
                )
                return
            new = dict(a, version=a["version"] + 1, at=iso(self.world.now), by=conn.user)
            if kind == "acknowledge":
                new.update(
                    status="acknowledged",
                    change="acknowledged",
                    acknowledged_by=conn.user,
                    acknowledged_at=iso(self.world.now),
                )
            else:
                new["comments"] = [
                    *a["comments"],
                    {"by": conn.user, "at": iso(self.world.now), "text": msg["text"]},
                ]
                new["change"] = "commented"
            self.world.alerts[new["alert_id"]] = new
            # ws/server.py: the new alert versions in full, the other changes by id
            await self._reply(conn, cid, {"alerts": [new], "stops": [], "routes": []})
            if self.broadcast_accepted:
                await self.broadcast({"type": "alert", "alert": new})
        elif kind in ("reassign", "cancel"):
            stop = self.world.stops.get(msg.get("stop_id", ""))
            if stop is None:
                await self._reply(conn, cid, error={"code": "unknown_id", "message": "no stop"})
                return
            if kind == "cancel":
                stop.update(state="cancelled", previous=stop["state"], eta=None)
                stop["cancel_reason"] = msg["reason"]
            else:
                stop["vehicle_id"] = msg["to_vehicle"]
            self.world.sites[stop["site_id"]]["state"] = stop["state"]
            await self._reply(conn, cid, {"alerts": [], "stops": [stop["stop_id"]], "routes": []})
            await self.broadcast({"type": "stop", "stop": stop})
            for r in self.world.routes.values():
                for rs in r["stops"]:
                    if rs["stop_id"] == stop["stop_id"]:
                        rs.update(route_stop(stop))
                        await self.broadcast({"type": "route", "route": r})
        elif kind == "reorder":
            route = self.world.routes.get(msg.get("route_id", ""))
            if route is None:
                await self._reply(conn, cid, error={"code": "unknown_id", "message": "no route"})
                return
            final = [
                rs for rs in route["stops"] if rs["state"] in ("visited", "missed", "cancelled")
            ]
            by_id = {rs["stop_id"]: rs for rs in route["stops"]}
            if sorted(msg["stop_ids"]) != sorted(set(by_id) - {rs["stop_id"] for rs in final}):
                await self._reply(
                    conn, cid, error={"code": "invalid", "message": "not the remaining stops"}
                )
                return
            route["stops"] = final + [by_id[x] for x in msg["stop_ids"]]
            await self._reply(conn, cid, {"alerts": [], "stops": [], "routes": [route["route_id"]]})
            await self.broadcast({"type": "route", "route": route})
        elif kind == "subscribe":
            conn.scope = msg["scope"]
            await self._reply(conn, cid, {"subscribed": True})
            snap = self.world.snapshot(self.seq)
            if conn.scope == "mine":
                mine = self.mine.get(conn.user, set())
                snap["vehicles"] = [v for v in snap["vehicles"] if v["vehicle_id"] in mine]
                snap["routes"] = [r for r in snap["routes"] if r["vehicle_id"] in mine]
            await conn.ws.send(json.dumps(snap, ensure_ascii=False))
        elif kind == "track":
            v = self.world.vehicles.get(msg.get("vehicle_id", ""))
            if v is None:
                await self._reply(conn, cid, error={"code": "unknown_id", "message": "no vehicle"})
                return
            points = [
                {
                    "t": iso(self.world.now - timedelta(minutes=60 - i)),
                    "lat": round(v["lat"] - 0.01 * math.cos(i / 9), 6),
                    "lon": round(v["lon"] - 0.02 + i * 0.0004, 6),
                    "speed_kmh": 30.0,
                }
                for i in range(0, 61, 2)
            ]
            mid = points[len(points) // 2]
            stops = [
                {
                    "stop_id": "det-1",
                    "site_id": None,
                    "start": mid["t"],
                    "end": points[len(points) // 2 + 2]["t"],
                    "lat": mid["lat"],
                    "lon": mid["lon"],
                }
            ]
            source = "store" if self.track_error is None else "memory"
            await conn.ws.send(
                json.dumps(
                    {
                        "type": "track",
                        "id": cid,
                        "vehicle_id": v["vehicle_id"],
                        "minutes": msg.get("minutes", 60),
                        "source": source,
                        "error": self.track_error,
                        "message": None if self.track_error is None else "connection refused",
                        "since": points[0]["t"],
                        "until": points[-1]["t"],
                        "fixes": len(points),
                        "points": points,
                        "stops": stops,
                        "visits": [],
                    }
                )
            )
            await self._reply(  # as ws/track.py does
                conn, cid, {"points": len(points), "source": source, "error": self.track_error}
            )
        else:
            await self._reply(conn, cid, error={"code": "invalid", "message": f"type {kind}"})

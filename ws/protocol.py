"""The console protocol (docs/console-protocol.md) as values: parse what a console sends,
encode what the server sends.  No I/O: the server (ws/server.py) moves the bytes.

Why a module of its own: every field a console sends is checked here, once, with a specific
refusal (``invalid`` with a message naming the field), so the endpoint never touches an
unchecked value and a fuzzer can drive this module alone (the rule: a parse returns a command
or raises :class:`Refused`/:class:`BadFrame`, never anything else).  Encoding lives here too so
that every record has exactly one JSON form, made once per message and shared by every console.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from alerts.records import AlertVersion
from core.fixes import iso_utc
from geofence.sites import Site
from schedule.stop_events import RouteProgress, StopChanged

PROTOCOL_VERSION = 1
#: a command over this many bytes (UTF-8) is refused with ``invalid`` (the connection stays)
MAX_COMMAND_BYTES = 16 * 1024
#: a frame over this many bytes is not read at all: ``error`` then close 1009
MAX_FRAME_BYTES = 256 * 1024
MAX_ID_CHARS = 64
MAX_KEY_CHARS = 200  # alert / stop / route / vehicle ids
MAX_COMMENT_CHARS = 2000
MAX_REASON_CHARS = 500
MAX_REORDER_STOPS = 500
MAX_SUBSCRIBED_VEHICLES = 5000
#: ``track``: minutes back from the vehicle's newest fix, and points at most (thinned)
MAX_TRACK_MINUTES = 240
DEFAULT_TRACK_MINUTES = 60
MIN_TRACK_POINTS = 2
MAX_TRACK_POINTS = 2000
DEFAULT_TRACK_POINTS = 500
CommandId = str | int


class BadFrame(Exception):
    """The frame itself is unusable (not JSON, not text, too large): the console is broken.

    ``close_code`` is the websocket close code to use after an ``error`` message."""

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code


class Refused(Exception):
    """A well-formed frame with a command we refuse; answered with a ``reply``, not a close."""

    def __init__(self, code: str, message: str, *, id: CommandId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.id = id


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AcknowledgeCmd:
    id: CommandId
    alert_id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommentCmd:
    id: CommandId
    alert_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReassignCmd:
    id: CommandId
    stop_id: str
    to_vehicle: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReorderCmd:
    id: CommandId
    route_id: str
    stop_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelCmd:
    id: CommandId
    stop_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeAll:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeMine:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeVehicles:
    vehicles: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeRegion:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lon: float, lat: float) -> bool:
        return self.min_lon <= lon <= self.max_lon and self.min_lat <= lat <= self.max_lat


Scope = ScopeAll | ScopeMine | ScopeVehicles | ScopeRegion


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeCmd:
    id: CommandId
    scope: Scope


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackCmd:
    id: CommandId
    vehicle_id: str
    minutes: int = DEFAULT_TRACK_MINUTES
    max_points: int = DEFAULT_TRACK_POINTS


@dataclass(frozen=True, slots=True, kw_only=True)
class PingCmd:
    id: CommandId


ActingCommand = AcknowledgeCmd | CommentCmd | ReassignCmd | ReorderCmd | CancelCmd
ConsoleCommand = ActingCommand | SubscribeCmd | TrackCmd | PingCmd
ACTING = (AcknowledgeCmd, CommentCmd, ReassignCmd, ReorderCmd, CancelCmd)

_FIELDS: dict[str, frozenset[str]] = {
    "acknowledge": frozenset({"type", "id", "alert_id", "version"}),
    "comment": frozenset({"type", "id", "alert_id", "text"}),
    "reassign": frozenset({"type", "id", "stop_id", "to_vehicle"}),
    "reorder": frozenset({"type", "id", "route_id", "stop_ids"}),
    "cancel": frozenset({"type", "id", "stop_id", "reason"}),
    "subscribe": frozenset({"type", "id", "scope"}),
    "track": frozenset({"type", "id", "vehicle_id", "minutes", "max_points"}),
    "ping": frozenset({"type", "id"}),
}


def parse_command(frame: str | bytes) -> ConsoleCommand:
    """One console frame → a command; raises :class:`BadFrame` or :class:`Refused`."""
    if isinstance(frame, bytes):
        if len(frame) > MAX_FRAME_BYTES:
            raise BadFrame(1009, f"frame of {len(frame)} bytes > {MAX_FRAME_BYTES}")
        raise BadFrame(1003, "binary frames are not part of the protocol; send JSON text")
    size = len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise BadFrame(1009, f"frame of {size} bytes > {MAX_FRAME_BYTES}")
    if size > MAX_COMMAND_BYTES:
        raise Refused("invalid", f"message of {size} bytes > {MAX_COMMAND_BYTES}")
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(1007, f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise Refused("invalid", "a message is a JSON object")
    raw_id = msg.get("id")
    cid: CommandId | None = None
    if (isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID_CHARS) or (
        isinstance(raw_id, int) and not isinstance(raw_id, bool) and abs(raw_id) < 2**53
    ):
        cid = raw_id
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise Refused("invalid", f"unknown type {str(kind)[:40]!r}", id=cid)
    if cid is None:
        raise Refused("invalid", f"id: a string of 1-{MAX_ID_CHARS} characters or an integer")
    extra = set(msg) - _FIELDS[kind]
    if extra:
        raise Refused("invalid", f"unknown fields {sorted(extra)[:5]}", id=cid)
    f = _Fields(msg, cid)
    if kind == "acknowledge":
        return AcknowledgeCmd(id=cid, alert_id=f.key("alert_id"), version=f.int_("version", 1))
    if kind == "comment":
        return CommentCmd(
            id=cid, alert_id=f.key("alert_id"), text=f.text("text", MAX_COMMENT_CHARS)
        )
    if kind == "reassign":
        return ReassignCmd(id=cid, stop_id=f.key("stop_id"), to_vehicle=f.key("to_vehicle"))
    if kind == "reorder":
        return ReorderCmd(id=cid, route_id=f.key("route_id"), stop_ids=f.keys("stop_ids"))
    if kind == "cancel":
        return CancelCmd(
            id=cid, stop_id=f.key("stop_id"), reason=f.text("reason", MAX_REASON_CHARS)
        )
    if kind == "subscribe":
        return SubscribeCmd(id=cid, scope=f.scope("scope"))
    if kind == "track":
        vehicle_id = f.key("vehicle_id")
        minutes = (
            f.int_("minutes", 1, MAX_TRACK_MINUTES) if "minutes" in msg else DEFAULT_TRACK_MINUTES
        )
        points = (
            f.int_("max_points", MIN_TRACK_POINTS, MAX_TRACK_POINTS)
            if "max_points" in msg
            else DEFAULT_TRACK_POINTS
        )
        return TrackCmd(id=cid, vehicle_id=vehicle_id, minutes=minutes, max_points=points)
    return PingCmd(id=cid)


class _Fields:
    """Typed access to one message's fields; every failure names the field."""

    def __init__(self, msg: Mapping[str, Any], cid: CommandId) -> None:
        self.msg = msg
        self.cid = cid

    def _refuse(self, name: str, what: str) -> Refused:
        return Refused("invalid", f"{name}: {what}", id=self.cid)

    def _get(self, name: str) -> Any:
        if name not in self.msg:
            raise self._refuse(name, "missing")
        return self.msg[name]

    def key(self, name: str) -> str:
        v = self._get(name)
        if not isinstance(v, str) or not 0 < len(v) <= MAX_KEY_CHARS:
            raise self._refuse(name, f"a string of 1-{MAX_KEY_CHARS} characters")
        return v

    def text(self, name: str, most: int) -> str:
        v = self._get(name)
        if not isinstance(v, str) or not v.strip() or len(v) > most:
            raise self._refuse(name, f"a non-blank string of at most {most} characters")
        return v

    def int_(self, name: str, least: int, most: int = 2**53) -> int:
        v = self._get(name)
        if not isinstance(v, int) or isinstance(v, bool) or not least <= v <= most:
            raise self._refuse(name, f"an integer in [{least}, {most}]")
        return v

    def keys(self, name: str) -> tuple[str, ...]:
        v = self._get(name)
        if (
            not isinstance(v, list)
            or not 0 < len(v) <= MAX_REORDER_STOPS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_KEY_CHARS for s in v)
            or len(set(v)) != len(v)
        ):
            raise self._refuse(name, f"1-{MAX_REORDER_STOPS} distinct ids")
        return tuple(v)

    def scope(self, name: str) -> Scope:
        v = self._get(name)
        if v == "all":
            return ScopeAll()
        if v == "mine":
            return ScopeMine()
        if isinstance(v, dict) and set(v) == {"vehicles"}:
            vs = v["vehicles"]
            if (
                isinstance(vs, list)
                and len(vs) <= MAX_SUBSCRIBED_VEHICLES
                and all(isinstance(x, str) and 0 < len(x) <= MAX_KEY_CHARS for x in vs)
            ):
                return ScopeVehicles(vehicles=frozenset(vs))
        if isinstance(v, dict) and set(v) == {"region"}:
            box = v["region"]
            if (
                isinstance(box, list)
                and len(box) == 4
                and all(
                    isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                    for x in box
                )
            ):
                lo_lon, lo_lat, hi_lon, hi_lat = (float(x) for x in box)
                if -180 <= lo_lon <= hi_lon <= 180 and -90 <= lo_lat <= hi_lat <= 90:
                    return ScopeRegion(
                        min_lon=lo_lon, min_lat=lo_lat, max_lon=hi_lon, max_lat=hi_lat
                    )
        raise self._refuse(
            name,
            '"all", "mine", {"vehicles": [...]} or '
            '{"region": [min_lon, min_lat, max_lon, max_lat]}',
        )


# -- encoding ----------------------------------------------------------------------------------


def dumps(obj: Mapping[str, Any]) -> str:
    """Compact JSON; NaN/Infinity never reach a console (they are not JSON)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    return v


def record_json(record: Any) -> dict[str, Any]:
    """A frozen record's fields, ``*_us`` times as ISO strings under the name without
    ``_us``; non-finite floats as null."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if f.name.endswith("_us"):
            out[f.name[:-3]] = None if v is None else iso_utc(int(v))
        else:
            out[f.name] = _value(v)
    return out


def stop_json(stop: StopChanged) -> dict[str, Any]:
    return record_json(stop)


def alert_json(alert: AlertVersion) -> dict[str, Any]:
    """The desk's JSON form, plus ``alert_id``, ``title`` (the summary) and ``history`` (the
    escalation hops) as the protocol names them."""
    d = alert.to_json_dict()
    d.pop("type", None)
    d["alert_id"] = alert.id
    d["title"] = alert.summary
    d["history"] = d["hops"]
    return d


def route_json(route: RouteProgress, stops: Mapping[str, StopChanged]) -> dict[str, Any]:
    """A route with its stops in order: those done (by arrival), then the remaining ones in
    the route's current order with their ETAs."""
    remaining = set(route.stop_ids)
    done = sorted(
        (
            s
            for s in stops.values()
            if s.vehicle_id == route.vehicle_id
            and s.service_date == route.service_date
            and s.stop_id not in remaining
        ),
        key=lambda s: (s.arrival_us or s.planned_arrival_us or 0, s.stop_id),
    )
    items = [_route_stop(s.stop_id, stops.get(s.stop_id), s.eta_us) for s in done]
    items += [
        _route_stop(sid, stops.get(sid), eta)
        for sid, eta in zip(route.stop_ids, route.eta_us, strict=False)
    ]
    return {
        "route_id": route.route_id,
        "vehicle_id": route.vehicle_id,
        "service_date": route.service_date,
        "stops": items,
        "behind_s": _value(route.behind_s),
        "at": iso_utc(route.at_us),
    }


def _route_stop(stop_id: str, s: StopChanged | None, eta_us: int | None) -> dict[str, Any]:
    def t(x: int | None) -> str | None:
        return None if x is None else iso_utc(x)

    return {
        "stop_id": stop_id,
        "site_id": None if s is None else s.site_id,
        "planned_arrival": None if s is None else t(s.planned_arrival_us),
        "window_start": None if s is None else t(s.window_start_us),
        "window_end": None if s is None else t(s.window_end_us),
        "eta": t(eta_us),
        "arrival": None if s is None else t(s.arrival_us),
        "state": None if s is None else s.state,
    }


VehicleState = Literal["moving", "stopped", "at_site", "silent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteInfo:
    """A site as the console draws it (the fence's geometry reduced to JSON)."""

    site_id: str
    client_id: str
    name: str
    lat: float
    lon: float
    radius_m: float | None
    polygon: tuple[tuple[float, float], ...] | None

    @classmethod
    def of(cls, site: Site) -> SiteInfo:
        geom = site.geometry
        c = geom.centroid
        polygon = None
        if site.radius_m is None:
            outer = max(getattr(geom, "geoms", [geom]), key=lambda p: p.area)
            polygon = tuple((round(x, 7), round(y, 7)) for x, y in outer.exterior.coords)
        return cls(
            site_id=site.site_id,
            client_id=site.client_id,
            name=site.name,
            lat=round(float(c.y), 7),
            lon=round(float(c.x), 7),
            radius_m=site.radius_m,
            polygon=polygon,
        )

    def to_json(self, state: str | None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "site_id": self.site_id,
            "client_id": self.client_id,
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "state": state,
        }
        if self.radius_m is not None:
            d["radius_m"] = self.radius_m
        else:
            d["polygon"] = [list(p) for p in self.polygon or ()]
        return d


def reply_ok(cid: CommandId, result: Any) -> str:
    return dumps({"type": "reply", "id": cid, "ok": True, "result": result})


def reply_error(cid: CommandId | None, code: str, message: str) -> str:
    return dumps(
        {"type": "reply", "id": cid, "ok": False, "error": {"code": code, "message": message}}
    )


def error_frame(code: str, message: str) -> str:
    return dumps({"type": "error", "code": code, "message": message})

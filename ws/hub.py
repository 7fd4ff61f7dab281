"""The console hub: what every console should see, and what each one has yet to get.

Sans-I/O (the ``websockets`` habit): the hub takes the engine's records and the consoles'
reads as plain calls with a ``now_us``, and hands back text frames.  The server
(ws/server.py) owns the sockets, the writer tasks and the timers.

Why it looks like this:

* **One state, many views.**  The hub folds the engine's output (positions, detection events,
  stop/route records, alert versions, data-delayed status) into the state a console needs on
  connect: vehicles, sites with today's stop state, stops, routes, alerts.  Every change gets
  the next value of one sequence number ``seq`` and is encoded to JSON **once**; each console
  gets the same text (the fan-out cost per console is a deque append).
* **Positions are coalesced, not queued.**  Positions are the bulk (2,000 vehicles at 1 Hz)
  and only the newest matters: the hub keeps the newest position per vehicle with a version
  counter, and a console gets, at most once per ``position_interval_s``, one ``positions``
  frame with every vehicle that changed since its last one.  Consoles in step share that frame
  (cached by scope and cursor), so 200 consoles cost one encode, not 200.
* **Everything else is never dropped** — except by replacing a backlog with something
  better: when a console's queue of alert/stop/route/vehicle/status messages passes
  ``queue_messages`` (it stopped reading), the queue is thrown away and the console gets
  ``resync`` + a fresh ``snapshot`` when it reads again.  Ingestion and the other consoles never
  wait: :meth:`Hub.publish` only appends.
* **Resume.**  The last ``replay_messages`` non-position messages are kept; a console that
  reconnects with ``after=SEQ`` gets those with a larger ``seq`` (and the current positions), or
  ``resync`` + ``snapshot`` when SEQ is older than the buffer or not of this process.

Ordering: a console's frames have strictly increasing ``seq``.  A ``positions`` frame gets a
``seq`` of its own when it is built (positions are "the newest as of this seq"), and goes
**last** in a take: after every queued alert/stop/route/vehicle/status message and reply (a
shared frame older than one of them is rebuilt under a new ``seq``), so the bulk never sits in
front of an alert on the wire.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.records import AlertVersion
from core.fixes import iso_utc
from schedule.engine import DataDelayed
from schedule.events import StopEnded, StopStarted, VisitCompleted, VisitStarted
from schedule.stop_events import (
    RouteProgress,
    StopChanged,
    VehicleCondition,
    VehiclePosition,
)
from ws.protocol import (
    PROTOCOL_VERSION,
    Scope,
    ScopeAll,
    ScopeMine,
    ScopeRegion,
    ScopeVehicles,
    SiteInfo,
    VehicleState,
    alert_json,
    dumps,
    route_json,
    stop_json,
)

US = 1_000_000
#: below this speed (km/h) a vehicle with no open stop still counts as stopped
STOPPED_BELOW_KMH = 3.0


class UnknownSession(KeyError):
    """A session id the hub does not hold (closed, or never opened): a bug of the shell."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HubLimits:
    """Bounds and rates; defaults documented in docs/console.md."""

    #: non-position messages waiting per console; beyond it: resync + snapshot
    queue_messages: int = 2000
    #: non-position messages kept for resume after reconnect (``after=SEQ``)
    replay_messages: int = 20_000
    #: at most one ``positions`` frame per console this often (so ≤ 1 per vehicle)
    position_interval_s: float = 1.0
    #: resolved / retracted alerts kept in snapshots (newest first out)
    finished_alerts: int = 500
    #: consoles at once; one more is refused (the server closes it with 1013)
    max_consoles: int = 1000
    #: track history per vehicle: one point per ``track_step_s`` for ``track_minutes``
    track_minutes: int = 240
    track_step_s: float = 30.0
    #: detection stops kept per vehicle for the ``track`` answer
    track_stops: int = 50

    def __post_init__(self) -> None:
        for name in ("queue_messages", "replay_messages", "max_consoles"):
            if getattr(self, name) < 1:
                raise ValueError(f"HubLimits.{name} must be >= 1, got {getattr(self, name)}")
        if not self.position_interval_s >= 0:
            raise ValueError("HubLimits.position_interval_s must be >= 0")


@dataclass(frozen=True, slots=True)
class _Msg:
    """One delta, encoded once; the filter fields say whom it concerns."""

    seq: int
    text: str
    vehicles: frozenset[str]
    assignee: str | None
    points: tuple[tuple[float, float], ...]
    everyone: bool = False  # status messages


#: a vehicle's fields as of a position change: t_us, lat, lon, speed_kmh, state, site_id,
#: route_id (what its fragment shows)
_FragOf = tuple[int, float, float, float, str, str | None, str | None]


def _fragment(
    vehicle_id: str,
    iso: str | None,
    lat_f: float,
    lon_f: float,
    speed_kmh: float,
    state: str,
    site_id: str | None,
    route_id: str | None,
) -> str:
    """A vehicle's JSON (``_Vehicle.to_json``) as text; see :meth:`_Vehicle.fragment`."""
    if math.isfinite(lat_f) and math.isfinite(lon_f):
        lat, lon = repr(round(lat_f, 6)), repr(round(lon_f, 6))
    else:
        lat = lon = "null"
    sp = repr(round(speed_kmh, 1)) if math.isfinite(speed_kmh) else "null"
    t = "null" if iso is None else f'"{iso}"'
    return (
        f'{{"vehicle_id":{_js(vehicle_id)},"t":{t},"lat":{lat},"lon":{lon},'
        f'"speed_kmh":{sp},"state":"{state}","site_id":{_js(site_id)},'
        f'"route_id":{_js(route_id)}}}'
    )


@dataclass(slots=True)
class _Vehicle:
    vehicle_id: str
    t_us: int = 0
    lat: float = math.nan
    lon: float = math.nan
    speed_kmh: float = math.nan
    site_id: str | None = None
    visit_id: str | None = None
    stop_id: str | None = None  # open detection stop
    silent: bool = False
    route_id: str | None = None
    state: VehicleState = "moving"
    pos_version: int = 0
    #: the vehicle's JSON as of its last position change, made when a positions frame first
    #: needs it ("" until then); ``frag_of`` holds that change's fields meanwhile
    frag: str = ""
    frag_of: _FragOf | None = None

    def derive(self) -> VehicleState:
        if self.silent:
            return "silent"
        if self.site_id is not None:
            return "at_site"
        if self.stop_id is not None or (
            math.isfinite(self.speed_kmh) and self.speed_kmh < STOPPED_BELOW_KMH
        ):
            return "stopped"
        return "moving"

    def fragment(self, iso: str | None) -> str:
        """:meth:`to_json` as text, without the json module: 2,000 vehicles a second go
        through here, and building the dict and encoding it was most of the hub's cost."""
        return _fragment(
            self.vehicle_id, iso, self.lat, self.lon, self.speed_kmh, self.state,
            self.site_id, self.route_id,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        has_pos = math.isfinite(self.lat) and math.isfinite(self.lon)
        return {
            "vehicle_id": self.vehicle_id,
            "t": iso_utc(self.t_us) if self.t_us else None,
            "lat": round(self.lat, 6) if has_pos else None,
            "lon": round(self.lon, 6) if has_pos else None,
            "speed_kmh": round(self.speed_kmh, 1) if math.isfinite(self.speed_kmh) else None,
            "state": self.state,
            "site_id": self.site_id,
            "route_id": self.route_id,
        }


class _Track:
    """A vehicle's recent path, thinned: parallel arrays, not one object per point."""

    __slots__ = ("lat", "lon", "speed", "t")

    def __init__(self) -> None:
        self.t = array("q")
        self.lat = array("d")
        self.lon = array("d")
        self.speed = array("d")

    def add(self, p: VehiclePosition, step_us: int, keep_us: int) -> None:
        if self.t and p.t_us < self.t[-1] + step_us:
            return
        self.t.append(p.t_us)
        self.lat.append(p.lat)
        self.lon.append(p.lon)
        self.speed.append(p.speed_kmh)
        if p.t_us - self.t[0] > keep_us * 5 // 4:  # trim in chunks: amortised O(1)
            cut = next(i for i, t in enumerate(self.t) if p.t_us - t <= keep_us)
            for a in (self.t, self.lat, self.lon, self.speed):
                del a[:cut]


@dataclass(slots=True)
class _Session:
    id: int
    user: str
    role: str
    scope: Scope
    mine: frozenset[str]
    #: (seq, text) of messages and replies (seq None) waiting for the writer
    queue: deque[tuple[int | None, str]] = field(default_factory=deque)
    queued_messages: int = 0  # of them, with a seq (replies do not count)
    resync: str | None = None  # reason, when the next take starts with resync + snapshot
    snapshot: bool = True  # the next take sends a snapshot
    pos_cursor: int = 0
    pos_due_us: int = 0
    last_seq: int = 0
    sent_frames: int = 0
    resyncs: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    consoles: int
    seq: int
    messages: int
    position_frames_built: int
    position_frames_shared: int
    resyncs: int
    overflows: int
    replay_resumes: int
    replay_misses: int
    queued_max: int
    bad_records: int


class Hub:
    """See the module docstring.  Single-threaded: call it from one event loop only."""

    def __init__(
        self,
        *,
        sites: Sequence[SiteInfo] = (),
        limits: HubLimits | None = None,
        vehicles_of: Callable[[str], frozenset[str]] | None = None,
        lang_default: str = "ru",
    ) -> None:
        self.limits = limits or HubLimits()
        self.lang_default = lang_default
        self._vehicles_of = vehicles_of or (lambda _user: frozenset())
        self.sites: dict[str, SiteInfo] = {s.site_id: s for s in sites}
        self.seq = 0
        self.vehicles: dict[str, _Vehicle] = {}
        self.stops: dict[str, StopChanged] = {}
        self._site_stop: dict[str, str] = {}  # site -> newest stop id (today's)
        self.routes: dict[str, RouteProgress] = {}
        self.alerts: dict[str, AlertVersion] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.data_delayed = False
        self._replay: deque[_Msg] = deque()
        self._replay_floor = 0  # every message with seq > floor is in the buffer
        self._pos_version = 0
        self._pos_published_us = 0  # when the newest positions were published
        self._iso_cache: dict[int, str] = {}
        self._newest_date = ""  # ISO service dates compare as text
        self._dates: set[str] = set()
        self._track_step_us = round(self.limits.track_step_s * US)
        self._track_keep_us = self.limits.track_minutes * 60 * US
        self._pos_order: OrderedDict[str, int] = OrderedDict()  # vehicle -> pos version
        self._pos_cache: dict[tuple[Any, int], tuple[int, str]] = {}
        self._tracks: dict[str, _Track] = {}
        self._det_stops: dict[str, deque[StopStarted | StopEnded]] = {}
        self._sessions: dict[int, _Session] = {}
        self._ids = itertools.count(1)
        self._snap_cache: dict[Any, str] = {}
        self._snap_cache_seq = -1
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "messages",
                "position_frames_built",
                "position_frames_shared",
                "resyncs",
                "overflows",
                "replay_resumes",
                "replay_misses",
                "bad_records",
            ),
            0,
        )

    # -- sessions ----------------------------------------------------------------------------

    @property
    def consoles(self) -> int:
        return len(self._sessions)

    def open_session(self, *, user: str, role: str, after: int | None, now_us: int) -> int:
        """A new console; raises :class:`HubFull` at ``max_consoles``.  ``after``: the last
        ``seq`` the console saw on an earlier connection (resume), or None."""
        if len(self._sessions) >= self.limits.max_consoles:
            raise HubFull(f"{len(self._sessions)} consoles connected (max_consoles)")
        sid = next(self._ids)
        s = _Session(id=sid, user=user, role=role, scope=ScopeAll(), mine=self._vehicles_of(user))
        s.pos_due_us = now_us
        if after is not None:
            if after > self.seq:
                s.resync = "unknown seq (the server restarted)"
                self.counts["replay_misses"] += 1
            elif after < self._replay_floor:
                s.resync = "seq older than the replay buffer"
                self.counts["replay_misses"] += 1
            else:
                s.snapshot = False
                s.last_seq = after
                s.pos_cursor = 0  # every vehicle's current position at the first take
                for m in self._replay:
                    if m.seq > after and self._visible(s, m):
                        s.queue.append((m.seq, m.text))
                        s.queued_messages += 1
                self.counts["replay_resumes"] += 1
                self._check_overflow(s)
        self._sessions[sid] = s
        return sid

    def close_session(self, sid: int) -> None:
        self._sessions.pop(sid, None)

    def subscribe(self, sid: int, scope: Scope) -> None:
        """Narrow (or widen) what a console gets; a fresh snapshot under the new scope follows
        at the next take (the old view may hold things the new scope excludes)."""
        s = self._session(sid)
        s.scope = scope
        s.queue = deque(x for x in s.queue if x[0] is None)  # replies stay
        s.queued_messages = 0
        s.snapshot = True

    def reply(self, sid: int, text: str) -> None:
        """A command's answer (or a ``track`` frame): in order with the deltas before it."""
        s = self._sessions.get(sid)
        if s is not None:
            s.queue.append((None, text))

    def resync_pending(self, sid: int) -> bool:
        """True while the console owes us a read of ``resync``: the server closes it (4408)
        when even that cannot be written within its send timeout."""
        return self._session(sid).resync is not None

    def hello(self, sid: int, now_us: int) -> str:
        s = self._session(sid)
        return dumps(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "user": s.user,
                "role": s.role,
                "server_time": iso_utc(now_us),
                "lang_default": self.lang_default,
            }
        )

    def _session(self, sid: int) -> _Session:
        try:
            return self._sessions[sid]
        except KeyError:
            raise UnknownSession(sid) from None

    # -- reads -------------------------------------------------------------------------------

    def deadline_us(self, sid: int) -> int | None:
        """When this console will next have positions to send (None: only on news)."""
        s = self._session(sid)
        if self._pos_version > s.pos_cursor:
            return s.pos_due_us
        return None

    def pending(self, sid: int, now_us: int) -> bool:
        s = self._session(sid)
        return bool(
            s.queue
            or s.snapshot
            or s.resync
            or (self._pos_version > s.pos_cursor and now_us >= s.pos_due_us)
        )

    def take(self, sid: int, now_us: int) -> list[str]:
        """Every frame this console should get now, in order; the caller sends them all."""
        s = self._session(sid)
        out: list[str] = []
        if s.resync is not None:
            out.append(dumps({"type": "resync", "reason": s.resync}))
            s.resync = None
            s.snapshot = True
            s.resyncs += 1
            self.counts["resyncs"] += 1
        if s.snapshot:
            # replies survive a snapshot; messages queued before it are in it
            replies = [t for q, t in s.queue if q is None]
            s.queue.clear()
            s.queued_messages = 0
            out.append(self._snapshot_text(s))
            s.snapshot = False
            s.last_seq = self.seq
            s.pos_cursor = self._pos_version
            s.pos_due_us = self._pos_published_us + self._interval_us()
            out.extend(replies)
        pos: tuple[int, str] | None = None
        if self._pos_version > s.pos_cursor and now_us >= s.pos_due_us:
            pos = self._positions_frame(s, after=max(s.last_seq, _newest_seq(s.queue)))
            s.pos_cursor = self._pos_version
            s.pos_due_us = self._pos_published_us + self._interval_us()
        while s.queue:
            q, text = s.queue.popleft()
            if q is not None:
                s.queued_messages -= 1
                s.last_seq = q
            out.append(text)
        if pos is not None:  # last: its seq is above every queued message's (see _positions_frame)
            out.append(pos[1])
            s.last_seq = pos[0]
        s.sent_frames += len(out)
        return out

    def _interval_us(self) -> int:
        """The wait after a positions frame, counted from when its newest positions were
        *published* (not from when this console took them, so a console that took a frame
        late does not drift into up to a second of extra delay): the interval less a 10 %
        allowance for the engine's round jitter (rounds are 1 s apart)."""
        return round(self.limits.position_interval_s * US * 0.9)

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, records: Iterable[Any], now_us: int) -> set[int]:
        """Fold the engine's records in; returns the sessions that have something new."""
        woken: set[int] = set()
        positions = False
        pos_version = self._pos_version
        for r in records:
            try:
                if isinstance(r, VehiclePosition):
                    positions |= self._on_position(r, woken)
                elif isinstance(r, AlertVersion):
                    self._on_alert(r, woken)
                elif isinstance(r, StopChanged):
                    self._on_stop(r, woken)
                elif isinstance(r, RouteProgress):
                    self._on_route(r, woken)
                elif isinstance(r, VehicleCondition):
                    if r.kind == "gps_silent":
                        self._vehicle_change(r.vehicle_id, woken, silent=r.active)
                elif isinstance(r, VisitStarted | VisitCompleted):
                    self._on_visit(r, woken)
                elif isinstance(r, StopStarted | StopEnded):
                    self._on_det_stop(r, woken)
                elif isinstance(r, DataDelayed) and r.active != self.data_delayed:
                    self.data_delayed = r.active
                    self._emit(
                        {"type": "status", "data_delayed": r.active},
                        woken,
                        everyone=True,
                    )
            except (ValueError, TypeError, AttributeError):
                # a malformed record must not stop the console; counted, the rest goes on
                self.counts["bad_records"] += 1
        if positions:
            self._pos_published_us = now_us
        if self._pos_version != pos_version:  # positions, or a vehicle's state or route
            self._pos_cache.clear()
            woken.update(self._sessions)
        return woken

    def _emit(
        self,
        body: dict[str, Any],
        woken: set[int],
        *,
        vehicles: frozenset[str] = frozenset(),
        assignee: str | None = None,
        points: tuple[tuple[float, float], ...] = (),
        everyone: bool = False,
    ) -> None:
        self.seq += 1
        text = dumps({"type": body.pop("type"), "seq": self.seq, **body})
        m = _Msg(self.seq, text, vehicles, assignee, points, everyone)
        self.counts["messages"] += 1
        self._replay.append(m)
        while len(self._replay) > self.limits.replay_messages:
            self._replay_floor = self._replay.popleft().seq
        for s in self._sessions.values():
            if s.snapshot or s.resync is not None or not self._visible(s, m):
                continue
            s.queue.append((m.seq, text))
            s.queued_messages += 1
            woken.add(s.id)
            self._check_overflow(s)

    def _check_overflow(self, s: _Session) -> None:
        if s.queued_messages <= self.limits.queue_messages:
            return
        s.queue = deque(x for x in s.queue if x[0] is None)
        s.queued_messages = 0
        s.resync = "behind: the console's queue overflowed"
        self.counts["overflows"] += 1

    def _veh(self, vehicle_id: str) -> _Vehicle:
        v = self.vehicles.get(vehicle_id)
        if v is None:
            v = self.vehicles[vehicle_id] = _Vehicle(vehicle_id)
        return v

    def _on_position(self, p: VehiclePosition, woken: set[int]) -> bool:
        if not (math.isfinite(p.lat) and math.isfinite(p.lon)):
            self.counts["bad_records"] += 1
            return False
        v = self._veh(p.vehicle_id)
        if p.t_us < v.t_us:  # a late fix never rewinds the position
            return False
        v.t_us, v.lat, v.lon, v.speed_kmh = p.t_us, p.lat, p.lon, p.speed_kmh
        track = self._tracks.get(p.vehicle_id)
        if track is None:
            track = self._tracks[p.vehicle_id] = _Track()
        track.add(p, self._track_step_us, self._track_keep_us)
        self._restate(v, woken)
        self._touch_position(v)
        return True

    def _touch_position(self, v: _Vehicle) -> None:
        self._pos_version += 1
        v.pos_version = self._pos_version
        # the text is made when a positions frame first needs it (_vehicle_frag), from the
        # fields as they are now: with no console, or one that takes a frame a second, a
        # vehicle reporting every round is not rendered every round (30,000 vehicles: ~3.5 us
        # each, ~0.1 s of the event loop per round)
        v.frag = ""
        v.frag_of = (v.t_us, v.lat, v.lon, v.speed_kmh, v.state, v.site_id, v.route_id)
        self._pos_order[v.vehicle_id] = v.pos_version
        self._pos_order.move_to_end(v.vehicle_id)

    def _vehicle_frag(self, v: _Vehicle) -> str:
        """The vehicle's fragment as of its last position change (made once, then kept)."""
        if v.frag_of is None:  # never touched: as it is
            return v.fragment(self._iso(v.t_us) if v.t_us else None)
        t_us, lat, lon, speed, state, site_id, route_id = v.frag_of
        iso = self._iso(t_us) if t_us else None
        v.frag = _fragment(v.vehicle_id, iso, lat, lon, speed, state, site_id, route_id)
        return v.frag

    def _iso(self, t_us: int) -> str:
        """ISO time of a position, memoised: a round's positions share few distinct times."""
        iso = self._iso_cache.get(t_us)
        if iso is None:
            if len(self._iso_cache) > 8192:
                self._iso_cache.clear()
            iso = self._iso_cache[t_us] = iso_utc(t_us)
        return iso

    def _restate(self, v: _Vehicle, woken: set[int]) -> None:
        state = v.derive()
        if state != v.state:
            v.state = state
            self._emit(
                {"type": "vehicle", "vehicle": v.to_json()},
                woken,
                vehicles=frozenset({v.vehicle_id}),
                points=_point(v.lon, v.lat),
            )

    def _vehicle_change(self, vehicle_id: str, woken: set[int], **changes: Any) -> None:
        v = self._veh(vehicle_id)
        for k, x in changes.items():
            setattr(v, k, x)
        before = v.state
        self._restate(v, woken)
        if v.state != before or "route_id" in changes:
            self._touch_position(v)

    def _on_visit(self, e: VisitStarted | VisitCompleted, woken: set[int]) -> None:
        v = self._veh(e.vehicle_id)
        if isinstance(e, VisitStarted) and not e.retracted:
            self._vehicle_change(e.vehicle_id, woken, site_id=e.site_id, visit_id=e.visit_id)
        elif v.visit_id == e.visit_id:
            self._vehicle_change(e.vehicle_id, woken, site_id=None, visit_id=None)

    def _on_det_stop(self, e: StopStarted | StopEnded, woken: set[int]) -> None:
        v = self._veh(e.vehicle_id)
        q = self._det_stops.setdefault(e.vehicle_id, deque(maxlen=self.limits.track_stops))
        q.append(e)
        if isinstance(e, StopStarted) and not e.retracted:
            self._vehicle_change(e.vehicle_id, woken, stop_id=e.stop_id)
        elif v.stop_id == e.stop_id:
            self._vehicle_change(e.vehicle_id, woken, stop_id=None)

    def _new_day(self, service_date: str) -> None:
        """Keep the state of the newest two service dates only: a long-running service's
        snapshots hold today (and yesterday, for the hours after midnight), not every day
        since the start.  Versions of older days that still arrive go out as deltas."""
        if service_date <= self._newest_date:
            return
        self._newest_date = service_date
        self._dates.add(service_date)
        while len(self._dates) > 2:
            gone = min(self._dates)
            self._dates.discard(gone)
            keep = min(self._dates)
            for sid in [k for k, st in self.stops.items() if st.service_date < keep]:
                st = self.stops.pop(sid)
                if self._site_stop.get(st.site_id) == sid:
                    del self._site_stop[st.site_id]
            for rid in [k for k, r in self.routes.items() if r.service_date < keep]:
                del self.routes[rid]
            for aid in [k for k in self.alerts if _alert_date(k) < keep]:
                del self.alerts[aid]
                self._finished.pop(aid, None)

    def _on_stop(self, r: StopChanged, woken: set[int]) -> None:
        self._new_day(r.service_date)
        if r.service_date < min(self._dates):  # a late record of a forgotten day
            self._emit_stop(r, woken)
            return
        self.stops[r.stop_id] = r
        cur = self._site_stop.get(r.site_id)
        if cur is None or self.stops[cur].service_date <= r.service_date:
            self._site_stop[r.site_id] = r.stop_id  # the site shows its newest day's stop
        self._emit_stop(r, woken)

    def _emit_stop(self, r: StopChanged, woken: set[int]) -> None:
        site = self.sites.get(r.site_id)
        self._emit(
            {"type": "stop", "stop": stop_json(r)},
            woken,
            vehicles=frozenset(x for x in (r.vehicle_id, r.visited_by) if x),
            points=() if site is None else ((site.lon, site.lat),),
        )

    def _on_route(self, r: RouteProgress, woken: set[int]) -> None:
        self._new_day(r.service_date)
        if r.service_date >= min(self._dates):
            self.routes[r.route_id] = r
        v = self._veh(r.vehicle_id)
        if v.route_id != r.route_id:
            self._vehicle_change(r.vehicle_id, woken, route_id=r.route_id)
        self._emit(
            {"type": "route", "route": route_json(r, self.stops)},
            woken,
            vehicles=frozenset({r.vehicle_id}),
            points=self._route_points(r),
        )

    def _route_points(self, r: RouteProgress) -> tuple[tuple[float, float], ...]:
        pts = [
            (site.lon, site.lat)
            for sid in r.stop_ids
            if (st := self.stops.get(sid)) is not None
            and (site := self.sites.get(st.site_id)) is not None
        ]
        v = self.vehicles.get(r.vehicle_id)
        if v is not None:
            pts += _point(v.lon, v.lat)
        return tuple(pts)

    def _on_alert(self, a: AlertVersion, woken: set[int]) -> None:
        old = self.alerts.get(a.id)
        if old is not None and old.version >= a.version:
            return  # a re-delivered or older version changes nothing
        if self._dates and _alert_date(a.id) < min(self._dates):
            vehicles, points = self._alert_subject(a)  # a forgotten day: news, not state
            self._emit(
                {"type": "alert", "alert": alert_json(a)},
                woken,
                vehicles=vehicles,
                assignee=a.assignee,
                points=points,
            )
            return
        self.alerts[a.id] = a
        if a.active:
            self._finished.pop(a.id, None)
        else:
            self._finished[a.id] = None
            self._finished.move_to_end(a.id)
            while len(self._finished) > self.limits.finished_alerts:
                gone, _ = self._finished.popitem(last=False)
                self.alerts.pop(gone, None)
        vehicles, points = self._alert_subject(a)
        self._emit(
            {"type": "alert", "alert": alert_json(a)},
            woken,
            vehicles=vehicles,
            assignee=a.assignee,
            points=points,
        )

    def _alert_subject(
        self, a: AlertVersion
    ) -> tuple[frozenset[str], tuple[tuple[float, float], ...]]:
        """(vehicles, places) an alert concerns, from its id (docs/alerts.md: ids)."""
        parts = a.id.split("/")
        if a.subject == "vehicle" and len(parts) >= 3:
            vid = parts[2]
            v = self.vehicles.get(vid)
            return frozenset({vid}), () if v is None else _point(v.lon, v.lat)
        if len(parts) >= 3:
            st = self.stops.get(f"{parts[1]}/{parts[2]}")
            site = self.sites.get(parts[2])
            vs = frozenset() if st is None else frozenset(x for x in (st.vehicle_id,) if x)
            return vs, () if site is None else ((site.lon, site.lat),)
        return frozenset(), ()

    # -- views ---------------------------------------------------------------------------------

    def _visible(self, s: _Session, m: _Msg) -> bool:
        scope = s.scope
        if m.everyone or isinstance(scope, ScopeAll):
            return True
        if isinstance(scope, ScopeMine):
            return m.assignee == s.user or not s.mine.isdisjoint(m.vehicles)
        if isinstance(scope, ScopeVehicles):
            return not scope.vehicles.isdisjoint(m.vehicles)
        return any(scope.contains(lon, lat) for lon, lat in m.points)

    def _vehicle_visible(self, s: _Session, v: _Vehicle) -> bool:
        scope = s.scope
        if isinstance(scope, ScopeAll):
            return True
        if isinstance(scope, ScopeMine):
            return v.vehicle_id in s.mine
        if isinstance(scope, ScopeVehicles):
            return v.vehicle_id in scope.vehicles
        return scope.contains(v.lon, v.lat)

    def _scope_key(self, s: _Session) -> Any:
        return (s.scope, s.mine if isinstance(s.scope, ScopeMine) else None)

    def _positions_frame(self, s: _Session, *, after: int) -> tuple[int, str]:
        """The positions changed since the console's cursor: shared by consoles in step.

        The frame's seq is above *after* (the newest seq the console has or is about to get),
        so the positions go out **after** every queued alert/stop/route message: a 300 KB
        positions frame never delays an alert queued before it.  A shared frame built before
        such a message is not reused; a fresh one (the same positions under a new seq) is,
        and the consoles in the same state share that one."""
        key = (self._scope_key(s), s.pos_cursor)
        hit = self._pos_cache.get(key)
        if hit is not None and hit[0] > after:
            self.counts["position_frames_shared"] += 1
            return hit
        frags = []
        for vid, ver in reversed(self._pos_order.items()):
            if ver <= s.pos_cursor:
                break
            v = self.vehicles[vid]
            if self._vehicle_visible(s, v):
                frags.append(v.frag or self._vehicle_frag(v))
        self.seq += 1
        frame = (
            self.seq,
            f'{{"type":"positions","seq":{self.seq},"vehicles":[{",".join(frags)}]}}',
        )
        self._pos_cache[key] = frame
        self.counts["position_frames_built"] += 1
        return frame

    def _snapshot_text(self, s: _Session) -> str:
        if self._snap_cache_seq != self.seq or len(self._snap_cache) > 64:
            self._snap_cache.clear()
            self._snap_cache_seq = self.seq
        key = self._scope_key(s)
        text = self._snap_cache.get(key)
        if text is None:
            text = self._snap_cache[key] = dumps(self.snapshot_json(s))
        return text

    def snapshot_json(self, s: _Session) -> dict[str, Any]:
        vehicles = [v for v in self.vehicles.values() if self._vehicle_visible(s, v)]
        if isinstance(s.scope, ScopeAll):
            stops = list(self.stops.values())
            routes = list(self.routes.values())
            alerts = list(self.alerts.values())
            sites = list(self.sites.values())
        else:
            stops = [st for st in self.stops.values() if self._stop_visible(s, st)]
            routes = [
                r
                for r in self.routes.values()
                if self._visible(
                    s, _Msg(0, "", frozenset({r.vehicle_id}), None, self._route_points(r))
                )
            ]
            alerts = [
                a
                for a in self.alerts.values()
                if self._visible(s, _Msg(0, "", *self._alert_parts(a)))
            ]
            if isinstance(s.scope, ScopeRegion):
                region = s.scope
                sites = [x for x in self.sites.values() if region.contains(x.lon, x.lat)]
            else:
                sites = list(self.sites.values())
        return {
            "type": "snapshot",
            "seq": self.seq,
            "vehicles": [v.to_json() for v in vehicles],
            "sites": [x.to_json(self._site_state(x.site_id)) for x in sites],
            "stops": [stop_json(st) for st in stops],
            "alerts": [alert_json(a) for a in alerts],
            "routes": [route_json(r, self.stops) for r in routes],
            "data_delayed": self.data_delayed,
        }

    def _alert_parts(
        self, a: AlertVersion
    ) -> tuple[frozenset[str], str, tuple[tuple[float, float], ...]]:
        vehicles, points = self._alert_subject(a)
        return vehicles, a.assignee, points

    def _stop_visible(self, s: _Session, st: StopChanged) -> bool:
        site = self.sites.get(st.site_id)
        return self._visible(
            s,
            _Msg(
                0,
                "",
                frozenset(x for x in (st.vehicle_id, st.visited_by) if x),
                None,
                () if site is None else ((site.lon, site.lat),),
            ),
        )

    def _site_state(self, site_id: str) -> str | None:
        sid = self._site_stop.get(site_id)
        return None if sid is None else self.stops[sid].state

    # -- track ---------------------------------------------------------------------------------

    def track_json(self, vehicle_id: str, minutes: int, cid: Any) -> dict[str, Any] | None:
        """The ``track`` frame of one vehicle's last *minutes* (None: unknown vehicle)."""
        if vehicle_id not in self.vehicles:
            return None
        tr = self._tracks.get(vehicle_id)
        points: list[dict[str, Any]] = []
        stops: list[dict[str, Any]] = []
        if tr is not None and tr.t:
            since = tr.t[-1] - minutes * 60 * US
            for i in range(len(tr.t)):
                if tr.t[i] >= since:
                    sp = tr.speed[i]
                    points.append(
                        {
                            "t": iso_utc(tr.t[i]),
                            "lat": round(tr.lat[i], 6),
                            "lon": round(tr.lon[i], 6),
                            "speed_kmh": round(sp, 1) if math.isfinite(sp) else None,
                        }
                    )
            latest: dict[str, StopStarted | StopEnded] = {}
            for e in self._det_stops.get(vehicle_id, ()):
                latest[e.stop_id] = e
            for e in latest.values():
                if e.retracted or e.start_us < since:
                    continue
                stops.append(
                    {
                        "stop_id": e.stop_id,
                        "site_id": e.site_id,
                        "start": iso_utc(e.start_us),
                        "end": iso_utc(e.end_us) if isinstance(e, StopEnded) else None,
                        "lat": round(e.lat, 6),
                        "lon": round(e.lon, 6),
                    }
                )
        return {
            "type": "track",
            "id": cid,
            "vehicle_id": vehicle_id,
            "points": points,
            "stops": stops,
        }

    # -- numbers -------------------------------------------------------------------------------

    def statistics(self) -> HubStats:
        c = self.counts
        return HubStats(
            consoles=len(self._sessions),
            seq=self.seq,
            messages=c["messages"],
            position_frames_built=c["position_frames_built"],
            position_frames_shared=c["position_frames_shared"],
            resyncs=c["resyncs"],
            overflows=c["overflows"],
            replay_resumes=c["replay_resumes"],
            replay_misses=c["replay_misses"],
            queued_max=max((s.queued_messages for s in self._sessions.values()), default=0),
            bad_records=c["bad_records"],
        )

    def known_alert(self, alert_id: str) -> AlertVersion | None:
        return self.alerts.get(alert_id)

    def session_user(self, sid: int) -> tuple[str, str]:
        s = self._session(sid)
        return s.user, s.role

    def mine_of(self) -> Mapping[int, frozenset[str]]:
        return {sid: s.mine for sid, s in self._sessions.items()}


class HubFull(Exception):
    """``max_consoles`` reached: one more console is refused (the others keep working)."""


def _alert_date(alert_id: str) -> str:
    """The service date in an alert id (``stop/<date>/<site>``, ``vehicle/<date>/...``)."""
    parts = alert_id.split("/")
    return parts[1] if len(parts) > 1 else ""


@functools.lru_cache(maxsize=65536)
def _js(value: str | None) -> str:
    """A JSON string literal (or null), cached: ids repeat every second."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _newest_seq(queue: deque[tuple[int | None, str]]) -> int:
    """The largest seq queued (replies carry none); 0 when none.  Seqs are queued in order,
    so the scan stops at the last message from the right."""
    for q, _ in reversed(queue):
        if q is not None:
            return q
    return 0


def _point(lon: float, lat: float) -> tuple[tuple[float, float], ...]:
    return ((lon, lat),) if math.isfinite(lon) and math.isfinite(lat) else ()

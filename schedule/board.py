"""The schedule board: every planned stop's state, ETAs, vehicle conditions — sans-I/O.

The board is fed values and a data-time "now" (µs UTC; it never reads a clock) and returns the
events of :mod:`schedule.stop_events`.  Three sources move it: detection events (visits and
stops, with their corrections), vehicle positions, and the clock (:meth:`ScheduleBoard.tick`,
at the instants :meth:`ScheduleBoard.next_deadline_us` names), plus plan imports and dispatcher
commands.  Stop states move only through the table in :mod:`schedule.stop_states`.

Why final states do not depend on arrival order: a stop's state is *settled* from facts, never
from the sequence in which they came — the serving visit is the earliest-arriving live visit of
any vehicle to the site on the service date (detection corrections folded by highest version),
and the time inputs (window end, grace end) are replayed against "now" after every fact.  A
``missed`` decided by the clock is retracted by a visit that arrives later; a ``visited`` whose
visit is retracted goes back through the table to whatever the clock now justifies.

Per-tick work is proportional to what changes: every instant at which a decision could fall
(window ends, grace ends, a route's ETA reaching its margin, a vehicle's silence threshold, an
unscheduled stop's threshold, a depot departure) sits in one heap; ``tick`` pops what is due.
ETAs are computed per route with numpy (:mod:`schedule.eta`) and re-computed only for routes
whose vehicle moved, whose stops changed, or whose margin the clock reached.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import math
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from schedule.contracts import SiteContract, local_day_us, local_minutes_us
from schedule.eta import F64, I64, TravelModel, distance_m, hour_of, route_eta, routes_eta
from schedule.events import DetectionEvent, StopEnded, StopStarted, VisitCompleted, VisitStarted
from schedule.plans import DayPlan
from schedule.schedule_params import ScheduleParams
from schedule.stop_events import (
    CancelStop,
    Cause,
    CommandRefused,
    Outcome,
    ReassignStop,
    ReorderRoute,
    RouteProgress,
    ScheduleEvent,
    StopChanged,
    StopState,
    UnplannedDue,
    UnplannedVisit,
    VehicleCondition,
    VehicleConditionKind,
    VehiclePosition,
    route_id_of,
    stop_id_of,
)
from schedule.stop_states import TERMINAL, StopInput, transition

_MIN_US = 60_000_000
#: a RouteProgress is re-sent when an ETA moved at least this much (or the stops changed)
_PROGRESS_STEP_US = 60_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSnapshot:
    """What the console shows on connect: every stop's current record, every route's progress,
    the active vehicle conditions and the unresolved unplanned-due sites."""

    stops: tuple[StopChanged, ...]
    routes: tuple[RouteProgress, ...]
    conditions: tuple[VehicleCondition, ...]
    unplanned_due: tuple[UnplannedDue, ...]


@dataclass(slots=True)
class _Visit:
    visit_id: str
    vehicle_id: str
    site_id: str
    arrival_us: int
    departure_us: int | None = None
    data_us: int = 0  # the newest data time behind this fact (for detected_late)
    started_v: int = 0
    started_retracted: bool = False
    completed_v: int = 0
    completed_retracted: bool = False

    @property
    def live(self) -> bool:
        if self.started_v:
            return not self.started_retracted
        return self.completed_v > 0 and not self.completed_retracted


@dataclass(slots=True)
class _Stop:
    stop_id: str
    site_id: str
    client_id: str | None
    date: dt.date
    vehicle_id: str
    window_start_us: int
    window_end_us: int
    planned_arrival_us: int | None
    service_s: float
    day_start_us: int
    day_end_us: int
    grace_end_us: int
    state: StopState = "pending"
    eta_us: int | None = None
    visit: _Visit | None = None  # serving visit (a snapshot of its facts when decided)
    visit_key: tuple[str, int, int | None] | None = None
    cancel_reason: str | None = None
    last: StopChanged | None = None
    plan_prev: str | None = None  # the planned predecessor (stop id, or "" for the depot)


@dataclass(slots=True)
class _Route:
    route_id: str
    vehicle_id: str
    date: dt.date
    stop_ids: list[str]
    departure_us: int | None = None
    return_us: int | None = None
    eta_at_us: int | None = None
    due_us: int | None = None
    progress: RouteProgress | None = None
    behind_s: float = 0.0
    cache: _RouteArrays | None = None
    #: the refresh slot after ``eta_at_us`` (``slot_of``): a position only asks for it
    slot_of: int | None = None
    slot_us: int = 0
    phase_us: int = -1  # the slots' phase (crc32 of the id; -1: not computed yet)


@dataclass(frozen=True, slots=True)
class _RouteArrays:
    ids: tuple[str, ...]
    lon: F64
    lat: F64
    window_start_us: I64
    window_end_us: I64
    service_s: F64
    planned_leg_s: F64
    first_prev: tuple[float, float] | None


@dataclass(slots=True)
class _Vehicle:
    vehicle_id: str
    last_t_us: int | None = None
    lon: float = math.nan
    lat: float = math.nan
    open_visit: tuple[str, str, int] | None = None  # visit_id, site_id, arrival
    last_departure: tuple[str, int] | None = None  # site_id, departure
    open_stops: dict[str, int] = field(default_factory=dict)  # stop id → start (unscheduled)
    conditions: dict[str, VehicleCondition] = field(default_factory=dict)
    visited_today: bool = False
    silent_due_us: int | None = None
    silent_queued_us: int | None = None


class ScheduleBoard:
    """See the module docstring; the public methods are the engine's whole interface."""

    def __init__(
        self,
        *,
        sites: Mapping[str, SiteContract],
        vehicles: Collection[str],
        depots: Mapping[str, tuple[float, float]] | None,
        params: ScheduleParams,
    ) -> None:
        self.sites = sites
        self.vehicles = frozenset(vehicles)
        self.depots = dict(depots or {})
        self.params = params
        self.travel = TravelModel(params)
        self.now_us = 0
        self._stops: dict[str, _Stop] = {}
        self._stops_by_site: dict[str, list[str]] = {}
        self._routes: dict[str, _Route] = {}
        self._routes_by_vehicle: dict[str, set[str]] = {}
        #: vehicle → its routes in id order (what _routes_of names), rebuilt with the index
        self._vehicle_routes: dict[str, tuple[_Route, ...]] = {}
        self._refresh_us = max(1, round(params.eta_refresh_s * 1e6))
        self._silent_us = round(params.gps_silent_min * _MIN_US)
        self._vehicles: dict[str, _Vehicle] = {v: _Vehicle(v) for v in sorted(self.vehicles)}
        self._visits: dict[str, _Visit] = {}
        self._site_visits: dict[str, set[str]] = {}
        self._unplanned: dict[str, UnplannedVisit] = {}
        self._due: dict[str, UnplannedDue] = {}
        self._heap: list[tuple[int, str, str]] = []
        self.bad_input = 0  # detection events for unknown sites/vehicles (counted, ignored)
        #: typical service minutes per site learned from past visits (the store's analytics):
        #: used for ETAs instead of the plan's estimate where known
        self.learned_service_min: dict[str, float] = {}

    # -- time --------------------------------------------------------------------------------

    def _advance(self, now_us: int) -> int:
        if now_us > self.now_us:
            self.now_us = now_us
        return self.now_us

    def _push(self, t_us: int, kind: str, key: str) -> None:
        heapq.heappush(self._heap, (t_us, kind, key))

    def next_deadline_us(self) -> int | None:
        """The earliest instant at which :meth:`tick` could change something."""
        while self._heap and not self._live_deadline(*self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _live_deadline(self, t: int, kind: str, key: str) -> bool:
        if kind in ("window_end", "grace_end"):
            s = self._stops.get(key)
            return s is not None and s.state not in TERMINAL
        if kind == "route":
            r = self._routes.get(key)
            return r is not None and r.due_us == t
        return True

    def tick(self, now_us: int) -> list[ScheduleEvent]:
        """Let the clock decide what is due by ``now_us`` (window and grace ends, silences…)."""
        now = self._advance(now_us)
        out: list[ScheduleEvent] = []
        routes: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            t, kind, key = heapq.heappop(self._heap)
            if kind in ("window_end", "grace_end"):
                stop = self._stops.get(key)
                if stop is not None and stop.state not in TERMINAL:
                    before = stop.state
                    out += self._settle(stop, "tick")
                    r = self._routes.get(route_id_of(stop.date.isoformat(), stop.vehicle_id))
                    if stop.state != before and r is not None:
                        # at the route's next slot: a minute at which 1,000 windows end must
                        # not re-compute 1,000 routes in one tick
                        self._schedule_refresh(r)
            elif kind == "route":
                r = self._routes.get(key)
                if r is not None and r.due_us == t:
                    routes.add(key)
            elif kind == "silent":
                out += self._check_silent(key, now)
            elif kind == "unsched":
                vid, sid = key.split("|", 1)
                out += self._check_unscheduled(vid, sid, now)
            elif kind == "depot":
                out += self._check_depot(key, now)
        out += self._refresh_routes([self._routes[rid] for rid in sorted(routes)], "tick")
        return out

    def restore_conditions(self, conditions: Iterable[VehicleCondition]) -> int:
        """After a restart, before the re-run: the vehicle conditions that were active (from
        the alert desk's stored threads).  The board then neither raises them again with a
        new ``since`` nor forgets to end them; returns how many it took (known vehicles)."""
        n = 0
        for c in conditions:
            veh = self._vehicles.get(c.vehicle_id)
            if veh is None or not c.active:
                continue
            veh.conditions[c.kind] = c
            n += 1
        return n

    def restore_stop_states(self, states: Iterable[StopChanged]) -> list[StopChanged]:
        """After a restart, once the plans are loaded and before the re-run: each stop's stored
        state (``store.outbox.load_stop_states``), so that the re-run continues from it instead
        of deciding the day again from "pending" — a stop decided late, missed or cancelled
        stays so until a visit (or a command) changes it, as it would have without the
        restart.  A visited stop is left to its visit (the stored detection events bring it
        back); one whose visit retracted a decision goes back to that decision, so the
        re-derived visit retracts it again, with the same record.  "At risk" is not taken: it
        is the ETA's judgement, made again at the route's next refresh (a restarted board's
        ETA would clear it at once where an uninterrupted one still has it at risk).  Stops
        not in the plan, or already moved by the re-run, are left alone.  Returns the records
        it took, to be published again (the plan's import said "pending" about them; the
        outbox knows their content and stores nothing)."""
        taken: list[StopChanged] = []
        for rec in states:
            stop = self._stops.get(rec.stop_id)
            if stop is None or stop.state != "pending":
                continue
            state: StopState | None = rec.state
            if rec.state == "visited":
                state = rec.previous if rec.retraction else None
            if state not in ("late", "missed", "cancelled"):
                continue  # pending and at risk are the ETA's to decide again (at the next refresh)
            stop.state = state
            stop.cancel_reason = rec.cancel_reason if state == "cancelled" else None
            stop.last = rec
            taken.append(rec)
        return taken

    # -- plans -------------------------------------------------------------------------------

    def learn_service_minutes(self, minutes: Mapping[str, float]) -> None:
        """Typical service time per site from past visits (analytics fed back into the ETA
        model); plans imported after this use it instead of their own estimate."""
        self.learned_service_min = {
            k: float(v) for k, v in minutes.items() if 0.0 < float(v) <= 24 * 60
        }

    def _service_min(self, site_id: str, planned: float) -> float:
        return self.learned_service_min.get(site_id, planned)

    def load_plan(self, plan: DayPlan, now_us: int) -> list[ScheduleEvent]:
        """Import or replace one date's plan.  Stops already decided keep their state (and
        visits seen before the import count); stops dropped from the plan and still open are
        cancelled ("removed from the plan"); due-but-unplanned sites raise UnplannedDue."""
        now = self._advance(now_us)
        day = plan.service_date
        date_s = day.isoformat()
        out: list[ScheduleEvent] = []
        planned: set[str] = set()
        new_routes: dict[str, _Route] = {}
        for vid, stops in plan.routes.items():
            rid = route_id_of(date_s, vid)
            route = _Route(
                route_id=rid,
                vehicle_id=vid,
                date=day,
                stop_ids=[],
                departure_us=plan.departures_us.get(vid),
                return_us=plan.returns_us.get(vid),
            )
            self._vehicles.setdefault(vid, _Vehicle(vid))
            prev_sid = ""
            for ps in stops:
                site = self.sites.get(ps.site_id)
                if site is None:
                    continue  # the plan loader names unknown sites; a DayPlan built by hand
                sid = stop_id_of(date_s, ps.site_id)
                planned.add(sid)
                route.stop_ids.append(sid)
                stop = self._stops.get(sid)
                d0, d1 = local_day_us(day, site.tz)
                grace = self._grace_end(ps.window_end_us, day, site.tz)
                if stop is None:
                    stop = _Stop(
                        stop_id=sid,
                        site_id=ps.site_id,
                        client_id=site.client_id,
                        date=day,
                        vehicle_id=vid,
                        window_start_us=ps.window_start_us,
                        window_end_us=ps.window_end_us,
                        planned_arrival_us=ps.planned_arrival_us,
                        service_s=self._service_min(ps.site_id, ps.service_min) * 60.0,
                        day_start_us=d0,
                        day_end_us=d1,
                        grace_end_us=grace,
                    )
                    self._stops[sid] = stop
                    self._stops_by_site.setdefault(ps.site_id, []).append(sid)
                elif stop.state not in TERMINAL:
                    stop.vehicle_id = vid
                    stop.window_start_us = ps.window_start_us
                    stop.window_end_us = ps.window_end_us
                    stop.planned_arrival_us = ps.planned_arrival_us
                    stop.service_s = self._service_min(ps.site_id, ps.service_min) * 60.0
                    stop.grace_end_us = grace
                else:
                    stop.vehicle_id = vid  # a served stop keeps its state and facts
                stop.plan_prev = prev_sid
                prev_sid = sid
                if stop.state not in TERMINAL:
                    self._push(stop.window_end_us, "window_end", sid)
                    self._push(stop.grace_end_us, "grace_end", sid)
                out += self._settle(stop, "import", force=stop.last is None)
            new_routes[rid] = route
            if route.departure_us is not None and vid in self.depots:
                self._push(
                    route.departure_us + round(self.params.not_left_depot_min * _MIN_US),
                    "depot",
                    vid,
                )
            if self._vehicles[vid].last_t_us is None:
                self._queue_silent(self._vehicles[vid], self._work_start(route))
        for sid, stop in list(self._stops.items()):
            if stop.date == day and sid not in planned and stop.state not in TERMINAL:
                out += self._apply(
                    stop, ["cancel"], "import", cancel_reason="removed from the plan"
                )
        for rid in [r for r, x in self._routes.items() if x.date == day]:
            if rid not in new_routes:
                del self._routes[rid]
        self._routes.update(new_routes)
        self._index_routes()
        # unplanned visits that a stop now holds
        for vid_, uv in list(self._unplanned.items()):
            if not uv.retracted and stop_id_of(uv.service_date, uv.site_id) in planned:
                rec = dataclasses.replace(uv, retracted=True, at_us=now)
                self._unplanned[vid_] = rec
                out.append(rec)
        out += self._unplanned_due(day, planned, now)
        out += self._refresh_routes([new_routes[rid] for rid in sorted(new_routes)], "import")
        return out

    def _grace_end(self, window_end_us: int, day: dt.date, tz: str) -> int:
        p = self.params
        if p.grace_until_end_of_day:
            return max(window_end_us, local_minutes_us(day, p.working_day_end_local_min, tz))
        return window_end_us + p.grace_us

    def _unplanned_due(self, day: dt.date, planned: set[str], now: int) -> list[ScheduleEvent]:
        out: list[ScheduleEvent] = []
        date_s = day.isoformat()
        for site_id in sorted(self.sites):
            site = self.sites[site_id]
            if not site.is_due(day) or site.contract is None:
                continue
            sid = stop_id_of(date_s, site_id)
            prev = self._due.get(sid)
            if sid in planned:
                if prev is not None and not prev.resolved:
                    rec = dataclasses.replace(prev, resolved=True, at_us=now)
                    self._due[sid] = rec
                    out.append(rec)
            elif prev is None or prev.resolved:
                ws, we = site.contract.window_us(day)
                rec = UnplannedDue(
                    site_id=site_id,
                    client_id=site.client_id,
                    service_date=date_s,
                    window_start_us=ws,
                    window_end_us=we,
                    at_us=now,
                )
                self._due[sid] = rec
                out.append(rec)
        return out

    # -- the stop lifecycle ------------------------------------------------------------------

    def _serving(self, stop: _Stop) -> _Visit | None:
        best: _Visit | None = None
        for vid in self._site_visits.get(stop.site_id, ()):
            v = self._visits[vid]
            if not v.live or not stop.day_start_us <= v.arrival_us < stop.day_end_us:
                continue
            if best is None or (v.arrival_us, v.visit_id) < (best.arrival_us, best.visit_id):
                best = v
        return best

    def _settle(self, stop: _Stop, cause: Cause, *, force: bool = False) -> list[ScheduleEvent]:
        """Bring the stop to the state its facts and "now" justify, through the table."""
        inputs: list[StopInput] = []
        serving = self._serving(stop)
        state = stop.state
        key = (serving.visit_id, serving.arrival_us, serving.departure_us) if serving else None
        if serving is None and state == "visited":
            inputs.append("visit_gone")
            state = "pending"
        elif (
            serving is not None
            and state != "cancelled"
            and (state != "visited" or key != stop.visit_key)
        ):
            inputs.append("visit")
            state = "visited"
        now = self.now_us
        if state in ("pending", "at_risk") and now >= stop.window_end_us:
            inputs.append("window_end")
            state = "late"
        if state == "late" and now >= stop.grace_end_us:
            inputs.append("grace_end")
        if not inputs and not force:
            return []
        return self._apply(stop, inputs, cause, serving=serving, force=force)

    def _apply(
        self,
        stop: _Stop,
        inputs: Sequence[StopInput],
        cause: Cause,
        *,
        serving: _Visit | None = None,
        cancel_reason: str | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> list[ScheduleEvent]:
        before = stop.state
        state = stop.state
        retraction = changed = False
        for inp in inputs:
            nxt, action = transition(state, inp)
            if action == "refuse":
                raise CommandRefused("already_final", f"stop {stop.stop_id} is already {state}")
            if action == "retract":
                retraction = True
            if action in ("emit", "retract", "update"):
                changed = True
            state = nxt
        if not changed and not force:
            return []
        stop.state = state
        if before in TERMINAL and state not in TERMINAL:
            # re-opened by a retraction: its clock deadlines were dropped while it was final
            self._push(stop.window_end_us, "window_end", stop.stop_id)
            self._push(stop.grace_end_us, "grace_end", stop.stop_id)
        detected_late = False
        if state == "visited" and serving is not None:
            stop.visit = dataclasses.replace(serving)
            stop.visit_key = (serving.visit_id, serving.arrival_us, serving.departure_us)
            detected_late = self.now_us - serving.data_us > self.params.detected_late_after_s * 1e6
        elif state != "visited":
            stop.visit = None
            stop.visit_key = None
        if state == "cancelled" and cancel_reason is not None:
            stop.cancel_reason = cancel_reason
        if retraction and state != "visited":
            detected_late = True  # a retracted visit is by nature late news
        rec = self._record(
            stop, before, cause, retraction=retraction, detected_late=detected_late, reason=reason
        )
        return [rec]

    def _record(
        self,
        stop: _Stop,
        before: StopState,
        cause: Cause,
        *,
        retraction: bool = False,
        detected_late: bool = False,
        reason: str | None = None,
    ) -> StopChanged:
        v = stop.visit if stop.state == "visited" else None
        outcome: Outcome | None = None
        minutes_late: float | None = None
        if v is not None:
            if v.arrival_us < stop.window_start_us:
                outcome = "early"
            elif v.arrival_us <= stop.window_end_us:
                outcome = "on_time"
            else:
                outcome = "late"
                minutes_late = round((v.arrival_us - stop.window_end_us) / _MIN_US, 2)
        if cause == "fix" and detected_late:
            cause = "late_data"
        rec = StopChanged(
            stop_id=stop.stop_id,
            site_id=stop.site_id,
            client_id=stop.client_id,
            service_date=stop.date.isoformat(),
            vehicle_id=stop.vehicle_id,
            state=stop.state,
            previous=before if stop.last is not None else None,
            window_start_us=stop.window_start_us,
            window_end_us=stop.window_end_us,
            planned_arrival_us=stop.planned_arrival_us,
            eta_us=None if stop.state in TERMINAL else stop.eta_us,
            arrival_us=v.arrival_us if v else None,
            departure_us=v.departure_us if v else None,
            visited_by=v.vehicle_id if v else None,
            visit_id=v.visit_id if v else None,
            outcome=outcome,
            minutes_late=minutes_late,
            reason=reason or self._reason(stop, v),
            cause=cause,
            at_us=self.now_us,
            detected_late=detected_late,
            retraction=retraction,
            cancel_reason=stop.cancel_reason if stop.state == "cancelled" else None,
        )
        stop.last = rec
        return rec

    def _reason(self, stop: _Stop, v: _Visit | None) -> str:
        s = stop.state
        if s == "visited" and v is not None:
            return f"visited by {v.vehicle_id} (visit {v.visit_id})"
        if s == "missed":
            return "not visited by window end + grace"
        if s == "late":
            return "window ended, not arrived"
        if s == "at_risk":
            return "ETA after window end − margin"
        if s == "cancelled":
            return f"cancelled: {stop.cancel_reason}"
        return "open"

    # -- detection ---------------------------------------------------------------------------

    def on_detection(self, events: Sequence[DetectionEvent], now_us: int) -> list[ScheduleEvent]:
        """Visits (with corrections: highest version wins) and unscheduled stops."""
        now = self._advance(now_us)
        out: list[ScheduleEvent] = []
        touched_sites: set[str] = set()
        routes: set[str] = set()
        for ev in events:
            if isinstance(ev, VisitStarted | VisitCompleted):
                if ev.site_id not in self.sites:
                    self.bad_input += 1
                    continue
                if self._visit_fact(ev):
                    touched_sites.add(ev.site_id)
                    veh = self._vehicles.setdefault(ev.vehicle_id, _Vehicle(ev.vehicle_id))
                    self._vehicle_visit(veh, ev)
                    routes.update(self._routes_of(ev.vehicle_id))
            elif isinstance(ev, StopStarted | StopEnded):
                out += self._stop_fact(ev, now)
        for site_id in sorted(touched_sites):
            out += self._settle_site(site_id, routes)
        for rid in sorted(routes):
            route = self._routes.get(rid)
            if route is not None:
                self._schedule_refresh(route)
        return out

    def _visit_fact(self, ev: VisitStarted | VisitCompleted) -> bool:
        v = self._visits.get(ev.visit_id)
        if v is None:
            v = _Visit(
                visit_id=ev.visit_id,
                vehicle_id=ev.vehicle_id,
                site_id=ev.site_id,
                arrival_us=ev.arrival_us,
            )
            self._visits[ev.visit_id] = v
            self._site_visits.setdefault(ev.site_id, set()).add(ev.visit_id)
        if isinstance(ev, VisitStarted):
            if ev.version <= v.started_v:
                return False
            v.started_v = ev.version
            v.started_retracted = ev.retracted
            if not v.completed_v or v.completed_retracted:
                v.arrival_us = ev.arrival_us
            v.data_us = max(v.data_us, ev.confirmed_us)
        else:
            if ev.version <= v.completed_v:
                return False
            v.completed_v = ev.version
            v.completed_retracted = ev.retracted
            if not ev.retracted:
                v.arrival_us = ev.arrival_us
                v.departure_us = ev.departure_us
            else:
                v.departure_us = None
            v.data_us = max(v.data_us, ev.departure_us)
        return True

    def _vehicle_visit(self, veh: _Vehicle, ev: VisitStarted | VisitCompleted) -> None:
        if ev.retracted:
            if veh.open_visit and veh.open_visit[0] == ev.visit_id:
                veh.open_visit = None
            return
        veh.visited_today = True
        if isinstance(ev, VisitStarted):
            if veh.open_visit is None or ev.arrival_us >= veh.open_visit[2]:
                if veh.last_departure is not None:
                    a_site, dep = veh.last_departure
                    if a_site != ev.site_id and ev.arrival_us > dep:
                        a, b = self.sites[a_site], self.sites[ev.site_id]
                        d = float(distance_m(a.lon, a.lat, np.array([b.lon]), np.array([b.lat]))[0])
                        self.travel.learn(
                            d,
                            (ev.arrival_us - dep) / 1e6,
                            hour_of(dep),
                            self._planned_leg(ev.vehicle_id, a_site, ev.site_id),
                            ev.vehicle_id,
                        )
                veh.open_visit = (ev.visit_id, ev.site_id, ev.arrival_us)
        else:
            if veh.open_visit and veh.open_visit[0] == ev.visit_id:
                veh.open_visit = None
            if veh.last_departure is None or ev.departure_us >= veh.last_departure[1]:
                veh.last_departure = (ev.site_id, ev.departure_us)
                if veh.last_t_us is None or ev.departure_us > veh.last_t_us:
                    s = self.sites[ev.site_id]
                    veh.last_t_us, veh.lon, veh.lat = ev.departure_us, s.lon, s.lat

    def _planned_leg(self, vehicle_id: str, from_site: str, to_site: str) -> float | None:
        """The plan's drive time A → B when B's planned predecessor on this vehicle is A."""
        for sid in self._stops_by_site.get(to_site, ()):
            b = self._stops[sid]
            a = self._stops.get(b.plan_prev or "")
            if b.vehicle_id == vehicle_id and a is not None and a.site_id == from_site:
                return self._leg_s(a, b)
        return None

    @staticmethod
    def _leg_s(a: _Stop | None, b: _Stop, departure_us: int | None = None) -> float | None:
        if b.planned_arrival_us is None:
            return None
        if a is None:
            if departure_us is None:
                return None
            leg = (b.planned_arrival_us - departure_us) / 1e6
        elif a.planned_arrival_us is None:
            return None
        else:
            leg = (b.planned_arrival_us - a.planned_arrival_us) / 1e6 - a.service_s
        return leg if 0.0 <= leg <= 3 * 3600.0 else None

    def _settle_site(self, site_id: str, routes: set[str]) -> list[ScheduleEvent]:
        out: list[ScheduleEvent] = []
        held_days: set[dt.date] = set()
        for sid in self._stops_by_site.get(site_id, ()):
            stop = self._stops[sid]
            held_days.add(stop.date)
            before = (stop.state, stop.visit_key)
            out += self._settle(stop, "fix")
            if (stop.state, stop.visit_key) != before:
                routes.add(route_id_of(stop.date.isoformat(), stop.vehicle_id))
        site = self.sites[site_id]
        for vid in sorted(self._site_visits.get(site_id, ())):
            v = self._visits[vid]
            local = _local_date(v.arrival_us, site.tz or "UTC")
            prev = self._unplanned.get(vid)
            if local in held_days or self._has_stop(site_id, local):
                if prev is not None and not prev.retracted:
                    rec = dataclasses.replace(prev, retracted=True, at_us=self.now_us)
                    self._unplanned[vid] = rec
                    out.append(rec)
                continue
            if v.live:
                rec = UnplannedVisit(
                    visit_id=vid,
                    site_id=site_id,
                    client_id=site.client_id,
                    service_date=local.isoformat(),
                    vehicle_id=v.vehicle_id,
                    arrival_us=v.arrival_us,
                    departure_us=v.departure_us,
                    at_us=self.now_us,
                    detected_late=self.now_us - v.data_us > self.params.detected_late_after_s * 1e6,
                )
                if (
                    prev is None
                    or prev.retracted
                    or (prev.arrival_us, prev.departure_us) != (rec.arrival_us, rec.departure_us)
                ):
                    self._unplanned[vid] = rec
                    out.append(rec)
            elif prev is not None and not prev.retracted:
                rec = dataclasses.replace(prev, retracted=True, at_us=self.now_us)
                self._unplanned[vid] = rec
                out.append(rec)
        return out

    def _has_stop(self, site_id: str, day: dt.date) -> bool:
        return stop_id_of(day.isoformat(), site_id) in self._stops

    def _routes_of(self, vehicle_id: str) -> list[str]:
        return sorted(self._routes_by_vehicle.get(vehicle_id, ()))

    def _index_routes(self) -> None:
        """Called whenever ``_routes`` changes (a plan's import, a reassignment to a vehicle
        without a route): the only places routes come and go."""
        self._routes_by_vehicle = {}
        for rid, r in self._routes.items():
            self._routes_by_vehicle.setdefault(r.vehicle_id, set()).add(rid)
        self._vehicle_routes = {
            v: tuple(self._routes[r] for r in sorted(rids))
            for v, rids in self._routes_by_vehicle.items()
        }

    # -- unscheduled stops -------------------------------------------------------------------

    def _in_depot(self, vehicle_id: str, lon: float, lat: float) -> bool:
        depot = self.depots.get(vehicle_id)
        if depot is None or math.isnan(lon):
            return False
        d = distance_m(depot[0], depot[1], np.array([lon]), np.array([lat]))[0]
        return bool(d <= self.params.depot_radius_m)

    def _stop_fact(self, ev: StopStarted | StopEnded, now: int) -> list[ScheduleEvent]:
        veh = self._vehicles.get(ev.vehicle_id)
        if veh is None:
            self.bad_input += 1
            return []
        if ev.site_id is not None or self._in_depot(ev.vehicle_id, ev.lon, ev.lat):
            return []
        limit_us = round(self.params.unscheduled_stop_min * _MIN_US)
        out: list[ScheduleEvent] = []
        if isinstance(ev, StopStarted):
            if ev.retracted:
                veh.open_stops.pop(ev.stop_id, None)
                out += self._end_condition(veh, "unscheduled_stop", now, "fix", ev.stop_id)
            else:
                veh.open_stops[ev.stop_id] = ev.start_us
                self._push(ev.start_us + limit_us, "unsched", f"{ev.vehicle_id}|{ev.stop_id}")
                out += self._check_unscheduled(ev.vehicle_id, ev.stop_id, now)
            return out
        veh.open_stops.pop(ev.stop_id, None)
        cur = veh.conditions.get("unscheduled_stop")
        if ev.retracted or (cur is not None and cur.detail.endswith(ev.stop_id)):
            return self._end_condition(veh, "unscheduled_stop", now, "fix", ev.stop_id)
        if ev.end_us - ev.start_us >= limit_us and cur is None:
            late = now - ev.end_us > self.params.detected_late_after_s * 1e6
            on = self._condition(
                veh,
                "unscheduled_stop",
                True,
                ev.start_us,
                (ev.end_us - ev.start_us) / _MIN_US,
                f"stood still outside every site, stop {ev.stop_id}",
                "late_data" if late else "fix",
                detected_late=late,
            )
            out += on
            out += self._end_condition(veh, "unscheduled_stop", now, "fix", ev.stop_id)
        return out

    def _check_unscheduled(self, vid: str, stop_id: str, now: int) -> list[ScheduleEvent]:
        veh = self._vehicles[vid]
        start = veh.open_stops.get(stop_id)
        limit_us = round(self.params.unscheduled_stop_min * _MIN_US)
        if start is None or now - start < limit_us or "unscheduled_stop" in veh.conditions:
            return []
        return self._condition(
            veh,
            "unscheduled_stop",
            True,
            start,
            (now - start) / _MIN_US,
            f"stood still outside every site, stop {stop_id}",
            "tick",
        )

    # -- vehicle conditions ------------------------------------------------------------------

    def _condition(
        self,
        veh: _Vehicle,
        kind: VehicleConditionKind,
        active: bool,
        since_us: int,
        minutes: float,
        detail: str,
        cause: Cause,
        *,
        detected_late: bool = False,
    ) -> list[ScheduleEvent]:
        rec = VehicleCondition(
            vehicle_id=veh.vehicle_id,
            service_date=self._service_date(veh.vehicle_id),
            kind=kind,
            active=active,
            since_us=since_us,
            at_us=self.now_us,
            minutes=round(minutes, 2),
            detail=detail,
            cause=cause,
            detected_late=detected_late,
        )
        if active:
            veh.conditions[kind] = rec
        else:
            veh.conditions.pop(kind, None)
        return [rec]

    def _end_condition(
        self, veh: _Vehicle, kind: VehicleConditionKind, now: int, cause: Cause, why: str
    ) -> list[ScheduleEvent]:
        cur = veh.conditions.get(kind)
        if cur is None or cur.at_us > self.now_us:
            # (a condition restored after a restart stands as of its record: the re-imported
            # plan at data time 0 or older re-read data cannot end it)
            return []
        return self._condition(
            veh, kind, False, cur.since_us, (now - cur.since_us) / _MIN_US, f"ended: {why}", cause
        )

    def _service_date(self, vehicle_id: str) -> str:
        days = [self._routes[r].date for r in self._routes_by_vehicle.get(vehicle_id, ())]
        return max(days).isoformat() if days else ""

    def _work_start(self, route: _Route) -> int:
        if route.departure_us is not None:
            return route.departure_us
        firsts = [self._stops[s].window_start_us for s in route.stop_ids]
        return min(firsts) - 3600 * 1_000_000 if firsts else self.now_us

    def _work_end(self, route: _Route) -> int:
        if route.return_us is not None:
            return route.return_us
        lasts = [self._stops[s].window_end_us for s in route.stop_ids]
        return max(lasts) if lasts else self.now_us

    def _queue_silent(self, veh: _Vehicle, due_us: int) -> None:
        """One heap entry per vehicle at a time: a fix only moves the due time, and the
        popped entry re-queues itself at the moved time (1,000 vehicles × a fix a second
        must not fill the heap)."""
        veh.silent_due_us = due_us
        if veh.silent_queued_us is None or due_us < veh.silent_queued_us:
            veh.silent_queued_us = due_us
            self._push(due_us, "silent", veh.vehicle_id)

    def _check_silent(self, vid: str, now: int) -> list[ScheduleEvent]:
        veh = self._vehicles.get(vid)
        if veh is not None:
            if veh.silent_queued_us is not None and veh.silent_queued_us > now:
                return []  # a stale entry: an earlier-queued one is still in the heap
            veh.silent_queued_us = None
            if veh.silent_due_us is not None and veh.silent_due_us > now:
                self._queue_silent(veh, veh.silent_due_us)
                return []
        routes = [self._routes[r] for r in self._routes_of(vid)]
        if veh is None or not routes or "gps_silent" in veh.conditions:
            return []
        limit = round(self.params.gps_silent_min * _MIN_US)
        starts = [self._work_start(r) for r in routes]
        ends = [self._work_end(r) for r in routes]
        working = any(s <= now <= e for s, e in zip(starts, ends, strict=True))
        since = veh.last_t_us if veh.last_t_us is not None else min(starts)
        if now - since < limit:
            self._queue_silent(veh, since + limit)
            return []
        if not working:
            later = [s for s in starts if s > now]
            if later:
                self._queue_silent(veh, min(later) + limit)
            return []
        return self._condition(
            veh, "gps_silent", True, since, (now - since) / _MIN_US, "no fix received", "tick"
        )

    def _check_depot(self, vid: str, now: int) -> list[ScheduleEvent]:
        veh = self._vehicles.get(vid)
        if veh is None or "not_left_depot" in veh.conditions or veh.visited_today:
            return []
        if veh.last_t_us is None or not self._in_depot(vid, veh.lon, veh.lat):
            return []
        deps = [
            r.departure_us
            for r in (self._routes[x] for x in self._routes_of(vid))
            if r.departure_us is not None
        ]
        since = min(deps) if deps else now
        return self._condition(
            veh,
            "not_left_depot",
            True,
            since,
            (now - since) / _MIN_US,
            "still in the depot after the planned departure",
            "tick",
        )

    def on_positions(
        self, positions: Sequence[VehiclePosition], now_us: int
    ) -> list[ScheduleEvent]:
        """The newest fix per vehicle of a batch: ETAs, silence, depot departure.

        Runs for every vehicle every round (30,000 a second at fleet scale), so the per-vehicle
        work is a few attribute reads and writes: the engine's batches are one position per
        vehicle in id order (no de-duplication pass then), each vehicle's routes are held as
        objects (``_vehicle_routes``), a route's next refresh slot is kept until its ETAs are
        re-computed, and a condition is looked at only when the vehicle has one.  The same
        events and state as :meth:`_on_positions_reference` (tests/test_board_batch.py)."""
        now = self._advance(now_us)
        ids = [p.vehicle_id for p in positions]
        if ids == sorted(set(ids)):
            items: Sequence[VehiclePosition] = positions
        else:
            newest: dict[str, VehiclePosition] = {}
            for p in positions:
                cur = newest.get(p.vehicle_id)
                if cur is None or p.t_us > cur.t_us:
                    newest[p.vehicle_id] = p
            items = [newest[v] for v in sorted(newest)]
        out: list[ScheduleEvent] = []
        vehicles = self._vehicles
        vroutes = self._vehicle_routes
        silent_us = self._silent_us
        heap = self._heap
        push = heapq.heappush
        for p in items:
            vid = p.vehicle_id
            veh = vehicles.get(vid)
            if veh is None:
                self.bad_input += 1
                continue
            t = p.t_us
            last = veh.last_t_us
            if last is not None and t <= last:
                continue  # the current position never rewinds
            veh.last_t_us = t
            veh.lon = p.lon
            veh.lat = p.lat
            conds = veh.conditions
            if conds and "gps_silent" in conds:
                out += self._end_condition(veh, "gps_silent", now, "fix", "fixes again")
            # _queue_silent, inline
            due = t + silent_us
            veh.silent_due_us = due
            queued = veh.silent_queued_us
            if queued is None or due < queued:
                veh.silent_queued_us = due
                push(heap, (due, "silent", vid))
            if conds and "not_left_depot" in conds and not self._in_depot(vid, p.lon, p.lat):
                out += self._end_condition(veh, "not_left_depot", now, "fix", "left the depot")
            for route in vroutes.get(vid, ()):
                self._schedule_refresh(route)
        return out

    def _on_positions_reference(
        self, positions: Sequence[VehiclePosition], now_us: int
    ) -> list[ScheduleEvent]:
        """:meth:`on_positions` as it was, without its caches: the rule it keeps (tests)."""
        now = self._advance(now_us)
        newest: dict[str, VehiclePosition] = {}
        for p in positions:
            cur = newest.get(p.vehicle_id)
            if cur is None or p.t_us > cur.t_us:
                newest[p.vehicle_id] = p
        out: list[ScheduleEvent] = []
        for vid in sorted(newest):
            p = newest[vid]
            veh = self._vehicles.get(vid)
            if veh is None:
                self.bad_input += 1
                continue
            if veh.last_t_us is not None and p.t_us <= veh.last_t_us:
                continue  # the current position never rewinds
            veh.last_t_us, veh.lon, veh.lat = p.t_us, p.lon, p.lat
            if "gps_silent" in veh.conditions:
                out += self._end_condition(veh, "gps_silent", now, "fix", "fixes again")
            self._queue_silent(veh, p.t_us + round(self.params.gps_silent_min * _MIN_US))
            if "not_left_depot" in veh.conditions and not self._in_depot(vid, p.lon, p.lat):
                out += self._end_condition(veh, "not_left_depot", now, "fix", "left the depot")
            for rid in self._routes_of(vid):
                self._schedule_refresh_reference(self._routes[rid])
        return out

    # -- ETA ---------------------------------------------------------------------------------

    def _slot_after(self, route: _Route, t_us: int) -> int:
        """The route's first refresh slot after ``t_us`` (slots every eta_refresh_s, phase
        fixed per route: computed once per route id)."""
        refresh_us = self._refresh_us
        phase = route.phase_us
        if phase < 0:
            phase = route.phase_us = zlib.crc32(route.route_id.encode()) % refresh_us
        return ((t_us - phase) // refresh_us + 1) * refresh_us + phase

    def _schedule_refresh(self, route: _Route) -> None:
        """A moved vehicle's route is re-computed at its next refresh slot, not at once: slots
        are every ``eta_refresh_s`` at a phase fixed per route (crc32 of its id), so 1,000
        vehicles reporting in the same second spread their ETA work evenly over the interval
        instead of all landing on one tick.  The slot after the last refresh is kept on the
        route while ``eta_at_us`` stays (every position of the vehicle asks for it)."""
        now = self.now_us
        eta_at = route.eta_at_us
        if eta_at is None:
            slot = self._slot_after(route, now - self._refresh_us)
        else:
            if route.slot_of != eta_at:
                route.slot_us = self._slot_after(route, eta_at)
                route.slot_of = eta_at
            slot = route.slot_us
        due = slot if slot > now else now
        cur = route.due_us
        if cur is None or due < cur:
            route.due_us = due
            heapq.heappush(self._heap, (due, "route", route.route_id))

    def _schedule_refresh_reference(self, route: _Route) -> None:
        """:meth:`_schedule_refresh` without its caches (tests)."""
        refresh_us = max(1, round(self.params.eta_refresh_s * 1e6))
        base = route.eta_at_us if route.eta_at_us is not None else self.now_us - refresh_us
        phase = zlib.crc32(route.route_id.encode()) % refresh_us
        due = max(((base - phase) // refresh_us + 1) * refresh_us + phase, self.now_us)
        if route.due_us is None or due < route.due_us:
            route.due_us = due
            self._push(due, "route", route.route_id)

    def _route_arrays(self, route: _Route, remaining: list[_Stop]) -> _RouteArrays:
        """The remaining stops' static columns, cached while the remaining stops are the same
        (a position only moves the start: the per-refresh cost is then a few numpy calls)."""
        ids = tuple(s.stop_id for s in remaining)
        cache = route.cache
        if cache is not None and cache.ids == ids:
            return cache
        sites = [self.sites[s.site_id] for s in remaining]
        planned = np.full(len(remaining), np.nan)
        order = {sid: k for k, sid in enumerate(route.stop_ids)}
        first_prev: tuple[float, float] | None = None
        for i, stop in enumerate(remaining):
            k = order[stop.stop_id]
            prev_id = route.stop_ids[k - 1] if k > 0 else ""
            if stop.plan_prev != prev_id:
                continue
            a = self._stops[prev_id] if prev_id else None
            leg = self._leg_s(a, stop, route.departure_us)
            if leg is not None:
                planned[i] = leg
            if i == 0:
                if a is not None:
                    sa = self.sites[a.site_id]
                    first_prev = (sa.lon, sa.lat)
                elif route.vehicle_id in self.depots:
                    first_prev = self.depots[route.vehicle_id]
        cache = _RouteArrays(
            ids=ids,
            lon=np.array([x.lon for x in sites]),
            lat=np.array([x.lat for x in sites]),
            window_start_us=np.array([s.window_start_us for s in remaining], np.int64),
            window_end_us=np.array([s.window_end_us for s in remaining], np.int64),
            service_s=np.array([s.service_s for s in remaining]),
            planned_leg_s=planned,
            first_prev=first_prev,
        )
        route.cache = cache
        return cache

    def _route_start(self, route: _Route, first: _Stop) -> tuple[float, float, int]:
        """Where and when the vehicle sets off towards its remaining stops."""
        now = self.now_us
        veh = self._vehicles[route.vehicle_id]
        if veh.open_visit is not None and veh.open_visit[1] in self.sites:
            s = self.sites[veh.open_visit[1]]
            return s.lon, s.lat, max(now, veh.open_visit[2] + round(s.service_min * _MIN_US))
        if veh.last_t_us is not None:
            # a vehicle without fixes is not assumed to stand still for ever: its ETAs slide
            # with the clock for at most eta_silent_slide_max_min (gps_silent and the window
            # end speak for it after that)
            slide_us = round(self.params.eta_silent_slide_max_min * _MIN_US)
            return veh.lon, veh.lat, max(min(now, veh.last_t_us + slide_us), veh.last_t_us)
        if route.vehicle_id in self.depots:
            lon0, lat0 = self.depots[route.vehicle_id]
            return lon0, lat0, max(now, route.departure_us or now)
        site = self.sites[first.site_id]
        return site.lon, site.lat, max(now, first.planned_arrival_us or first.window_start_us)

    def _refresh_route(self, route: _Route, cause: Cause) -> list[ScheduleEvent]:
        return self._refresh_routes([route], cause)

    def _refresh_routes(self, routes: Sequence[_Route], cause: Cause) -> list[ScheduleEvent]:
        """Re-compute the ETAs of *routes* (in this order) in one vectorised pass.

        The same decisions and events, in the same order, as :meth:`_refresh_route_reference`
        route by route (tests/test_board_batch.py): at 30,000 vehicles ~1,000 routes fall due
        every second, and ~15 numpy calls per route on arrays of a few stops were ~5 us per
        vehicle-round.  Here the Python work per route is its bookkeeping (which stops remain,
        where it starts, its events); the arithmetic runs once per group of routes with the
        same number of remaining stops (:func:`schedule.eta.routes_eta`, rows exactly as
        :func:`route_eta`).  Routes sharing a stop (a hand-built plan can list a site on two
        vehicles) are refreshed one by one, because one's decisions are the other's input."""
        if len(routes) > 1:
            n_ids = sum(len(r.stop_ids) for r in routes)
            if len({s for r in routes for s in r.stop_ids}) < n_ids:
                out_: list[ScheduleEvent] = []
                for r in routes:
                    out_ += self._refresh_routes([r], cause)
                return out_
        now = self.now_us
        stops = self._stops
        n_routes = len(routes)
        pre: list[list[ScheduleEvent]] = [[] for _ in range(n_routes)]
        rems: list[list[_Stop]] = [[] for _ in range(n_routes)]
        cols: list[_RouteArrays | None] = [None] * n_routes
        starts: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * n_routes
        by_len: dict[int, list[int]] = {}
        for j, route in enumerate(routes):
            route.eta_at_us = now
            route.due_us = None
            # stops before the last one this route's vehicle served were driven past (see
            # _refresh_route_reference)
            last_served = -1
            for k, sid_ in enumerate(route.stop_ids):
                st_ = stops[sid_]
                if (
                    st_.state == "visited"
                    and st_.visit is not None
                    and st_.visit.vehicle_id == route.vehicle_id
                ):
                    last_served = k
            for sid_ in route.stop_ids[: max(last_served, 0)]:
                st_ = stops[sid_]
                if st_.state == "pending":
                    st_.eta_us = None
                    pre[j] += self._apply(
                        st_,
                        ["eta_late"],
                        cause,
                        reason="the vehicle went past it (served later stops)",
                    )
            remaining = [
                stops[s]
                for s in route.stop_ids[last_served + 1 :]
                if stops[s].state not in TERMINAL
            ]
            rems[j] = remaining
            if remaining:
                cols[j] = self._route_arrays(route, remaining)
                starts[j] = self._route_start(route, remaining[0])
                by_len.setdefault(len(remaining), []).append(j)
        etas_of: list[I64 | None] = [None] * n_routes
        flips_of: dict[int, list[int]] = {}
        risky_of: dict[int, list[bool]] = {}
        min_calm: dict[int, int] = {}
        moved: list[bool] = [True] * n_routes
        margin_us = self.params.margin_us
        for n, js in by_len.items():
            arrs = [c for c in (cols[j] for j in js) if c is not None]
            st0 = [starts[j] for j in js]
            lon0 = np.array([x[0] for x in st0])
            lat0 = np.array([x[1] for x in st0])
            start = np.array([x[2] for x in st0], np.int64)
            hours = [hour_of(x[2]) for x in st0]
            lon = np.stack([a.lon for a in arrs])
            lat = np.stack([a.lat for a in arrs])
            fp_lon = np.array([math.nan if a.first_prev is None else a.first_prev[0] for a in arrs])
            fp_lat = np.array([math.nan if a.first_prev is None else a.first_prev[1] for a in arrs])
            d = distance_m(np.stack([fp_lon, lon0]), np.stack([fp_lat, lat0]), lon[:, 0], lat[:, 0])
            far = d[0] > 100.0  # NaN (no planned predecessor) is not far: share 1
            share = np.ones(len(js))
            share[far] = np.minimum(d[1][far] / d[0][far], 1.0)
            etas = routes_eta(
                start_us=start,
                start_lon=lon0,
                start_lat=lat0,
                lon=lon,
                lat=lat,
                window_start_us=np.stack([a.window_start_us for a in arrs]),
                service_s=np.stack([a.service_s for a in arrs]),
                speed_mps=np.array([self.travel.speed_mps(h) for h in hours]),
                planned_leg_s=np.stack([a.planned_leg_s for a in arrs]),
                ratio=np.array([self.travel.ratio(h) for h in hours]),
                first_share=share,
            )
            slack = np.stack([a.window_end_us for a in arrs]) - margin_us - etas
            risky = slack < 0
            flat = [s.state for j in js for s in rems[j]]
            states = np.array(flat, dtype=object).reshape(len(js), n)
            open_ = (states == "pending") | (states == "at_risk")
            at_risk = states == "at_risk"
            rows, idx = np.nonzero(open_ & (risky != at_risk))
            for r_, i_ in zip(rows.tolist(), idx.tolist(), strict=True):
                flips_of.setdefault(js[r_], []).append(i_)
            risky_rows = risky.tolist()
            calm = open_ & ~risky
            has_calm = calm.any(axis=1)
            lowest = np.where(calm, slack, np.iinfo(np.int64).max).min(axis=1)
            for r_ in np.flatnonzero(has_calm).tolist():
                min_calm[js[r_]] = int(lowest[r_])
            # RouteProgress is re-sent when the stops changed or an ETA moved a step
            same = [
                r_
                for r_, j in enumerate(js)
                if (pg := routes[j].progress) is not None and pg.stop_ids == arrs[r_].ids
            ]
            if same:
                prev = np.array([routes[js[r_]].progress.eta_us for r_ in same], np.int64)  # type: ignore[union-attr]
                step = (np.abs(prev - etas[same]) >= _PROGRESS_STEP_US).any(axis=1)
                for r_, big in zip(same, step.tolist(), strict=True):
                    moved[js[r_]] = big
            for r_, j in enumerate(js):
                etas_of[j] = etas[r_]
                risky_of[j] = risky_rows[r_]
        out: list[ScheduleEvent] = []
        for j, route in enumerate(routes):
            out += pre[j]
            remaining = rems[j]
            veh = self._vehicles[route.vehicle_id]
            etas_j = etas_of[j]
            ids: tuple[str, ...] = ()
            eta_t: tuple[int, ...] = ()
            if remaining and etas_j is not None:
                arr = cols[j]
                assert arr is not None
                ids = arr.ids
                eta_l: list[int] = etas_j.tolist()
                eta_t = tuple(eta_l)
                for stop, eta in zip(remaining, eta_l, strict=True):
                    stop.eta_us = eta
                risky_l = risky_of[j]
                for i in flips_of.get(j, ()):
                    stop = remaining[i]
                    inp: StopInput = "eta_late" if risky_l[i] else "eta_ok"
                    out += self._apply(stop, [inp], cause, reason=_risk_reason(stop, self.params))
                low = min_calm.get(j)
                if low is not None:
                    due = max(now + low, self._slot_after(route, now))
                    route.due_us = due
                    self._push(due, "route", route.route_id)
            else:
                moved[j] = route.progress is None or route.progress.stop_ids != ()
            behind = 0.0
            if remaining and remaining[0].planned_arrival_us is not None:
                behind = (eta_t[0] - remaining[0].planned_arrival_us) / 1e6
            route.behind_s = behind
            if route.progress is None or moved[j]:
                route.progress = RouteProgress(
                    route_id=route.route_id,
                    vehicle_id=route.vehicle_id,
                    service_date=route.date.isoformat(),
                    stop_ids=ids,
                    eta_us=eta_t,
                    behind_s=round(behind, 1),
                    at_us=now,
                )
                out.append(route.progress)
            out += self._behind(veh, behind, cause)
        return out

    def _refresh_route_reference(self, route: _Route, cause: Cause) -> list[ScheduleEvent]:
        """One route's refresh as it was before :meth:`_refresh_routes`: the rule that keeps
        (tests/test_board_batch.py), not used by the board."""
        now = self.now_us
        route.eta_at_us = now
        route.due_us = None
        stops = self._stops
        # stops before the last one this route's vehicle served were driven past (skipped):
        # they are not on the way any more, so they neither delay the ETAs of the stops after
        # it nor get one; they are at risk, and the clock will make them late and missed
        last_served = -1
        for k, sid_ in enumerate(route.stop_ids):
            st_ = stops[sid_]
            if (
                st_.state == "visited"
                and st_.visit is not None
                and st_.visit.vehicle_id == route.vehicle_id
            ):
                last_served = k
        out: list[ScheduleEvent] = []
        for sid_ in route.stop_ids[: max(last_served, 0)]:
            st_ = stops[sid_]
            if st_.state == "pending":
                st_.eta_us = None
                out += self._apply(
                    st_, ["eta_late"], cause, reason="the vehicle went past it (served later stops)"
                )
        remaining = [
            stops[s] for s in route.stop_ids[last_served + 1 :] if stops[s].state not in TERMINAL
        ]
        veh = self._vehicles[route.vehicle_id]
        etas = np.zeros(0, np.int64)
        ids: tuple[str, ...] = ()
        if remaining:
            arr = self._route_arrays(route, remaining)
            ids = arr.ids
            lon0, lat0, start = self._route_start(route, remaining[0])
            share = 1.0
            if arr.first_prev is not None:
                d = distance_m(
                    np.array([arr.first_prev[0], lon0]),
                    np.array([arr.first_prev[1], lat0]),
                    arr.lon[:1],
                    arr.lat[:1],
                )
                if d[0] > 100.0:
                    share = min(float(d[1] / d[0]), 1.0)
            hour = hour_of(start)
            etas = route_eta(
                start_us=start,
                start_lon=lon0,
                start_lat=lat0,
                lon=arr.lon,
                lat=arr.lat,
                window_start_us=arr.window_start_us,
                service_s=arr.service_s,
                speed_mps=self.travel.speed_mps(hour),
                planned_leg_s=arr.planned_leg_s,
                ratio=self.travel.ratio(hour),
                first_share=share,
            )
            eta_list = etas.tolist()
            for stop, eta in zip(remaining, eta_list, strict=True):
                stop.eta_us = eta
            slack = arr.window_end_us - self.params.margin_us - etas
            risky = slack < 0
            open_ = np.array([s.state in ("pending", "at_risk") for s in remaining])
            at_risk = np.array([s.state == "at_risk" for s in remaining])
            flip = np.flatnonzero(open_ & (risky != at_risk))
            for i in flip.tolist():
                stop = remaining[i]
                inp: StopInput = "eta_late" if risky[i] else "eta_ok"
                out += self._apply(stop, [inp], cause, reason=_risk_reason(stop, self.params))
            calm = open_ & ~risky
            if calm.any():
                due = max(now + int(slack[calm].min()), self._slot_after(route, now))
                route.due_us = due
                self._push(due, "route", route.route_id)
        behind = 0.0
        if remaining and remaining[0].planned_arrival_us is not None:
            behind = (int(etas[0]) - remaining[0].planned_arrival_us) / 1e6
        route.behind_s = behind
        prev = route.progress
        if (
            prev is None
            or prev.stop_ids != ids
            or bool(np.any(np.abs(np.array(prev.eta_us, np.int64) - etas) >= _PROGRESS_STEP_US))
        ):
            route.progress = RouteProgress(
                route_id=route.route_id,
                vehicle_id=route.vehicle_id,
                service_date=route.date.isoformat(),
                stop_ids=ids,
                eta_us=tuple(etas.tolist()),
                behind_s=round(behind, 1),
                at_us=now,
            )
            out.append(route.progress)
        out += self._behind(veh, behind, cause)
        return out

    def _behind(self, veh: _Vehicle, behind_s: float, cause: Cause) -> list[ScheduleEvent]:
        limit_s = self.params.behind_schedule_min * 60
        cur = veh.conditions.get("behind_schedule")
        if cur is None and behind_s >= limit_s:
            return self._condition(
                veh,
                "behind_schedule",
                True,
                self.now_us,
                behind_s / 60,
                f"{behind_s / 60:.0f} min behind the plan",
                cause,
            )
        if cur is not None and behind_s < limit_s / 2:
            return self._end_condition(veh, "behind_schedule", self.now_us, cause, "caught up")
        return []

    # -- dispatcher commands -----------------------------------------------------------------

    def command(
        self, cmd: ReassignStop | ReorderRoute | CancelStop, now_us: int
    ) -> list[ScheduleEvent]:
        """Carry out a dispatcher command or raise :class:`CommandRefused` (nothing changed)."""
        self._advance(now_us)
        if isinstance(cmd, CancelStop):
            stop = self._stop_or_refuse(cmd.stop_id)
            if not cmd.reason.strip():
                raise CommandRefused(
                    "invalid", "a cancellation needs a reason (e.g. client closed)"
                )
            out = self._apply(stop, ["cancel"], "command", cancel_reason=cmd.reason.strip())
            route = self._routes.get(route_id_of(stop.date.isoformat(), stop.vehicle_id))
            if route is not None:
                out += self._refresh_route(route, "command")
            return out
        if isinstance(cmd, ReassignStop):
            stop = self._stop_or_refuse(cmd.stop_id)
            if cmd.to_vehicle not in self._vehicles:
                raise CommandRefused("unknown_id", f"unknown vehicle {cmd.to_vehicle!r}")
            if stop.state in TERMINAL:
                raise CommandRefused(
                    "already_final", f"stop {stop.stop_id} is already {stop.state}"
                )
            if cmd.to_vehicle == stop.vehicle_id:
                raise CommandRefused(
                    "invalid", f"stop {stop.stop_id} is already on {cmd.to_vehicle}"
                )
            date_s = stop.date.isoformat()
            old = self._routes[route_id_of(date_s, stop.vehicle_id)]
            rid = route_id_of(date_s, cmd.to_vehicle)
            new = self._routes.get(rid)
            if new is None:
                new = _Route(route_id=rid, vehicle_id=cmd.to_vehicle, date=stop.date, stop_ids=[])
                self._routes[rid] = new
                self._index_routes()
            old.stop_ids.remove(stop.stop_id)
            pos = len(new.stop_ids)
            for i, s in enumerate(new.stop_ids):
                other = self._stops[s]
                if other.state not in TERMINAL and other.window_end_us > stop.window_end_us:
                    pos = i
                    break
            new.stop_ids.insert(pos, stop.stop_id)
            stop.vehicle_id = cmd.to_vehicle
            out = [self._record(stop, stop.state, "command", reason=f"reassigned by {cmd.by}")]
            out += self._refresh_route(old, "command")
            out += self._refresh_route(new, "command")
            return out
        route = self._routes.get(cmd.route_id)
        if route is None:
            raise CommandRefused("unknown_id", f"unknown route {cmd.route_id!r}")
        open_ids = [s for s in route.stop_ids if self._stops[s].state not in TERMINAL]
        if sorted(cmd.stop_ids) != sorted(open_ids) or len(set(cmd.stop_ids)) != len(cmd.stop_ids):
            missing = sorted(set(open_ids) - set(cmd.stop_ids))
            extra = sorted(set(cmd.stop_ids) - set(open_ids))
            raise CommandRefused(
                "invalid",
                f"the new order must hold exactly the route's open stops "
                f"(missing: {missing or 'none'}, not open or not on it: {extra or 'none'})",
            )
        done = [s for s in route.stop_ids if self._stops[s].state in TERMINAL]
        route.stop_ids = done + list(cmd.stop_ids)
        route.progress = None
        return self._refresh_route(route, "command")

    def _stop_or_refuse(self, stop_id: str) -> _Stop:
        stop = self._stops.get(stop_id)
        if stop is None:
            raise CommandRefused("unknown_id", f"unknown stop {stop_id!r}")
        return stop

    # -- console -----------------------------------------------------------------------------

    def snapshot(self) -> ScheduleSnapshot:
        return ScheduleSnapshot(
            stops=tuple(s.last for s in self._stops.values() if s.last is not None),
            routes=tuple(r.progress for r in self._routes.values() if r.progress is not None),
            conditions=tuple(c for v in self._vehicles.values() for c in v.conditions.values()),
            unplanned_due=tuple(d for d in self._due.values() if not d.resolved),
        )

    def states(self) -> dict[str, StopState]:
        """stop id → current state (tests and evaluation)."""
        return {sid: s.state for sid, s in self._stops.items()}

    def live_visit_sites(self, day_start_us: int, day_end_us: int) -> set[str]:
        """Sites with a live visit arriving in [start, end) (the stateful test's oracle)."""
        return {
            v.site_id
            for v in self._visits.values()
            if v.live and day_start_us <= v.arrival_us < day_end_us
        }


def _risk_reason(stop: _Stop, params: ScheduleParams) -> str:
    margin_us = params.margin_us
    if stop.eta_us is None:
        return "ETA unknown"
    return (
        f"ETA {_hhmm(stop.eta_us)} vs window end {_hhmm(stop.window_end_us)} "
        f"− {margin_us // _MIN_US} min margin"
    )


def _hhmm(t_us: int) -> str:
    return dt.datetime.fromtimestamp(t_us / 1e6, tz=dt.UTC).strftime("%H:%MZ")


def _local_date(t_us: int, tz: str) -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(t_us / 1e6, tz=ZoneInfo(tz)).date()


def iter_stop_records(events: Iterable[ScheduleEvent]) -> Iterable[StopChanged]:
    return (e for e in events if isinstance(e, StopChanged))

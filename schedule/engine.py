"""The engine: fix batches, clock ticks and dispatcher commands in; events out.

One object for live operation and for replay (design.md: "one object, live and replay").  It
joins the logic stages in the order of the flow — fence matching, visit/stop detection
(:class:`~schedule.tracker.FleetTracker`), the schedule board (stop states, ETA, vehicle
conditions) and the downstream stages (the alert desk) — and owns the two clocks that drive
them:

* the **driver's clock** ``now_us``, given with every call: the wall clock in ``fleetwatch
  run``, the receive time of the data in ``fleetwatch replay``.  The engine never reads a clock
  itself (sans-I/O, as ``h11`` and ``websockets`` do): it says when it next wants to be called
  (:meth:`Engine.next_deadline_us`), and the shell schedules a timer for that.
* the **data clock** ``data_now = min(now_us, newest fix fed)``: what the fleet has shown so
  far.  Every decision about lateness is taken on the data clock, so a fleet whose data stops
  (an outage of ours, the broker, the network) cannot be turned into false "missed" alerts:
  while no fix arrives for ``data_delayed_after_s`` the engine reports :class:`DataDelayed` and
  the schedule waits.  When the data resumes — live, or a backlog released hours late — time
  moves on from the fixes themselves, and decisions taken from data older than now are flagged
  as late corrections by the stages.

Detection runs in *rounds*: fixes accumulate in a bounded buffer and a round runs once
``round_interval_s`` of driver time has passed (or the buffer is full), because the tracker
pays a fixed cost per vehicle per call.  The same rule applies live and in replay, so replay is
the live engine run offline; with the tracker's guarantee that any chunking and arrival order
give the same folded events, both end in the same final states (tests/test_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from schedule.events import (
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
    latest,
)
from schedule.params import DetectionParams
from schedule.stop_events import (
    AlertCommand,
    CancelStop,
    Command,
    CommandRefused,
    ReassignStop,
    ReorderRoute,
    ScheduleCommand,
    ScheduleEvent,
    StopChanged,
    VehicleCondition,
    VehiclePosition,
)
from schedule.tracker import FleetTracker, TrackerStats

F64 = npt.NDArray[np.float64]
#: (lon, lat, margin_m) -> (2, K) containment pairs (fix index, site index), like
#: ``geofence.FenceIndex.query``
Matcher = Callable[[F64, F64, float], npt.NDArray[np.integer[Any]]]

DEFAULT_MAX_PENDING_FIXES = 500_000


class _Index(Protocol):
    def query(self, lon: F64, lat: F64, *, margin_m: float = ...) -> npt.NDArray[np.intp]: ...


def fence_matcher(index: _Index) -> Matcher:
    """A :data:`Matcher` over a fence index (``geofence.FenceIndex`` or anything shaped so)."""

    def match(lon: F64, lat: F64, margin_m: float) -> npt.NDArray[np.integer[Any]]:
        return index.query(lon, lat, margin_m=margin_m)

    return match


class InvalidEngineParams(ValueError):
    """An engine setting that cannot work (a non-positive interval or bound)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineParams:
    """How often the engine works, in driver time; defaults documented in docs/engine.md."""

    #: detection runs at most once per this much driver time (fixes wait in the buffer)
    round_interval_s: float = 1.0
    #: silent vehicles' open visits/stops are checked for closing this often
    advance_interval_s: float = 10.0
    #: no fix from any unit for this long -> :class:`DataDelayed` (decisions wait for data)
    data_delayed_after_s: float = 120.0
    #: fixes held for the next round; beyond it a round runs at once (never a drop)
    max_pending_fixes: int = DEFAULT_MAX_PENDING_FIXES

    def __post_init__(self) -> None:
        for name in ("round_interval_s", "advance_interval_s", "data_delayed_after_s"):
            value = getattr(self, name)
            if not value > 0:
                raise InvalidEngineParams(f"EngineParams.{name} must be > 0, got {value!r}")
        if self.max_pending_fixes < 1:
            raise InvalidEngineParams(
                f"EngineParams.max_pending_fixes must be >= 1, got {self.max_pending_fixes}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataDelayed:
    """No fix from any unit for a while (``active``), or data flows again (not ``active``).

    While active, the data clock does not advance (it is the newest fix), so nothing is
    declared late or missed on the strength of silence that may be ours; consoles and
    operators are told.
    """

    active: bool
    newest_fix_us: int | None
    at_us: int  # driver time

    def to_json_dict(self) -> dict[str, Any]:
        from core.fixes import iso_utc

        return {
            "event": "DataDelayed",
            "active": self.active,
            "newest_fix": None if self.newest_fix_us is None else iso_utc(self.newest_fix_us),
            "at": iso_utc(self.at_us),
        }


class Board(Protocol):
    """The schedule stage (schedule/board.py): stop states, ETA, vehicle conditions."""

    def load_plan(self, plan: Any, now_us: int) -> Sequence[ScheduleEvent]: ...

    def learn_service_minutes(self, minutes: Mapping[str, float]) -> None: ...

    def on_detection(
        self, events: Sequence[DetectionEvent], now_us: int
    ) -> Sequence[ScheduleEvent]: ...

    def on_positions(
        self, positions: Sequence[VehiclePosition], now_us: int
    ) -> Sequence[ScheduleEvent]: ...

    def tick(self, now_us: int) -> Sequence[ScheduleEvent]: ...

    def command(self, cmd: ScheduleCommand, now_us: int) -> Sequence[ScheduleEvent]: ...

    def next_deadline_us(self) -> int | None: ...


class Stage(Protocol):
    """A stage after the schedule (the alert desk): schedule events in, its records out."""

    def consume(self, events: Sequence[ScheduleEvent], now_us: int) -> Sequence[Any]: ...

    def tick(self, now_us: int) -> Sequence[Any]: ...

    def command(self, cmd: AlertCommand, now_us: int) -> Sequence[Any]: ...

    def next_deadline_us(self) -> int | None: ...


@runtime_checkable
class RestorableStage(Stage, Protocol):
    """A stage that can be rebuilt from its stored records after a restart (the alert desk:
    ``AlertDesk.restore`` / ``finish_restore``)."""

    def restore(self, stored: Sequence[Any]) -> Sequence[Any]: ...

    def active_conditions(self) -> Sequence[VehicleCondition]: ...

    def finish_restore(self, now_us: int) -> Sequence[Any]: ...


@dataclass(slots=True)
class EngineStats:
    """Counters for metrics and the replay summary."""

    batches_in: int = 0
    fixes_in: int = 0
    rounds: int = 0
    fixes_matched: int = 0
    ticks: int = 0
    commands: int = 0
    commands_refused: int = 0
    detection_events: int = 0
    schedule_events: int = 0
    stage_records: int = 0
    unknown_units: int = 0
    tracker: TrackerStats = field(default_factory=TrackerStats)


def _position_factory() -> Callable[[str, int, float, float, float], VehiclePosition]:
    """A :class:`VehiclePosition` maker ~2.5x cheaper than its ``__init__``.

    A round at 30,000 vehicles makes 30,000 positions; a frozen dataclass's generated
    ``__init__`` (keyword arguments, one ``object.__setattr__`` per field) was ~1.4 us of the
    ~4 us per vehicle-round that :func:`newest_positions` cost.  Filling the slots through
    their descriptors gives the same object (equal, hashable, pickled alike).  Only while the
    class is exactly the five slots with no ``__post_init__``: otherwise the constructor."""
    names = ("vehicle_id", "t_us", "lon", "lat", "speed_kmh")
    cls = VehiclePosition
    plain = (
        tuple(f.name for f in dataclass_fields(cls)) == names
        and getattr(cls, "__slots__", None) == names
        and not hasattr(cls, "__post_init__")
    )
    if not plain:

        def construct(v: str, t: int, lon: float, lat: float, sp: float) -> VehiclePosition:
            return cls(vehicle_id=v, t_us=t, lon=lon, lat=lat, speed_kmh=sp)

        return construct
    new = object.__new__
    set_v, set_t, set_lon, set_lat, set_sp = (getattr(cls, n).__set__ for n in names)

    def make(v: str, t: int, lon: float, lat: float, sp: float) -> VehiclePosition:
        p = new(cls)
        set_v(p, v)
        set_t(p, t)
        set_lon(p, lon)
        set_lat(p, lat)
        set_sp(p, sp)
        return p

    return make


_make_position = _position_factory()


def newest_positions(fixes: FixBatch, unit_to_vehicle: Mapping[str, str]) -> list[VehiclePosition]:
    """The newest fix of each vehicle in *fixes*, sorted by vehicle id.

    Per vehicle, the greatest ``t_us`` (of equal times, the one fed last; across units of one
    vehicle, of equal times the unit first in id order).  Every round hands each vehicle's
    position on, so this runs once per vehicle-round: one sort, then plain lists (no numpy
    scalar per field); :func:`newest_positions_reference` is the one-by-one rule it keeps
    (tests/test_engine_positions.py)."""
    n = len(fixes)
    if n == 0:
        return []
    order = np.lexsort((fixes.t_us, fixes.unit_id))
    units = fixes.unit_id[order]
    last = np.flatnonzero(np.concatenate((units[1:] != units[:-1], [True])))
    pick = order[last]
    unit_l: list[str] = fixes.unit_id[pick].tolist()
    vehicles = [unit_to_vehicle.get(u, u) for u in unit_l]
    t_l: list[int] = fixes.t_us[pick].tolist()
    lon_l: list[float] = fixes.lon[pick].astype(np.float64).tolist()
    lat_l: list[float] = fixes.lat[pick].astype(np.float64).tolist()
    sp_l: list[float] = fixes.speed_kmh[pick].astype(np.float64).tolist()
    rows = range(len(unit_l))
    if len(set(vehicles)) < len(vehicles):  # units sharing a vehicle: the newest of them
        best: dict[str, int] = {}
        for i in rows:
            j = best.get(vehicles[i])
            if j is None or t_l[i] > t_l[j]:
                best[vehicles[i]] = i
        keep = sorted(best.values(), key=vehicles.__getitem__)
    else:
        keep = sorted(rows, key=vehicles.__getitem__)
    make = _make_position
    return [make(vehicles[i], t_l[i], lon_l[i], lat_l[i], sp_l[i]) for i in keep]


def newest_positions_reference(
    fixes: FixBatch, unit_to_vehicle: Mapping[str, str]
) -> list[VehiclePosition]:
    """:func:`newest_positions` one fix at a time, in feed order: the rule it must keep."""
    best: dict[str, tuple[int, str, int]] = {}  # vehicle -> (t, unit, index)
    for i in range(len(fixes)):
        unit = str(fixes.unit_id[i])
        vehicle = unit_to_vehicle.get(unit, unit)
        t = int(fixes.t_us[i])
        cur = best.get(vehicle)
        # newest time; of equal times, the unit first in id order, then the later fix
        if cur is None or t > cur[0] or (t == cur[0] and unit <= cur[1]):
            best[vehicle] = (t, unit, i)
    return [
        VehiclePosition(
            vehicle_id=v,
            t_us=int(fixes.t_us[i]),
            lon=float(fixes.lon[i]),
            lat=float(fixes.lat[i]),
            speed_kmh=float(fixes.speed_kmh[i]),
        )
        for v, (_, _, i) in sorted(best.items())
    ]


class Engine:
    """Matching, detection, schedule and the stages after it, as one sans-I/O object.

    Call :meth:`feed` with every decoded batch, :meth:`tick` when :meth:`next_deadline_us` is
    reached (or at any time: extra ticks change nothing), :meth:`command` for a dispatcher's
    command.  Each returns the events it caused, in flow order: detection events, each
    vehicle's newest position of the round (:class:`VehiclePosition`), schedule events, the
    stages' records, then engine status (:class:`DataDelayed`).
    """

    def __init__(
        self,
        *,
        matcher: Matcher,
        site_ids: Sequence[str],
        unit_to_vehicle: Mapping[str, str],
        detection: DetectionParams | None = None,
        params: EngineParams | None = None,
        board: Board | None = None,
        stages: Sequence[Stage] = (),
    ) -> None:
        self.params = params or EngineParams()
        self.detection = detection or DetectionParams()
        self._matcher = matcher
        self.unit_to_vehicle = dict(unit_to_vehicle)
        self.tracker = FleetTracker(site_ids, self.unit_to_vehicle, self.detection)
        self.board = board
        self.stages = tuple(stages)
        self._pending: list[FixBatch] = []
        self._pending_fixes = 0
        self._next_round_us: int | None = None  # set when the first fix waits
        self._next_advance_us: int | None = None
        self.newest_fix_us: int | None = None  # received (fed), capped by the driver's clock
        #: the newest fix a detection round has seen: the data clock (see :meth:`data_now`)
        self.detected_fix_us: int | None = None
        self.last_now_us: int | None = None
        self.data_delayed = False
        self.stats = EngineStats()

    # -- inputs --------------------------------------------------------------------------------

    def feed(self, fixes: FixBatch, now_us: int) -> list[Any]:
        """Take one decoded batch; runs a round when one is due."""
        now_us = self._clock(now_us)
        n = len(fixes)
        self.stats.batches_in += 1
        self.stats.fixes_in += n
        if n:
            self._pending.append(fixes)
            self._pending_fixes += n
            newest = int(fixes.t_us.max())
            # a unit whose clock runs ahead cannot move the data clock past the driver's
            newest = min(newest, now_us)
            if self.newest_fix_us is None or newest > self.newest_fix_us:
                self.newest_fix_us = newest
            if self._next_round_us is None:
                self._next_round_us = now_us + round(self.params.round_interval_s * 1e6)
        return self._work(now_us, force_round=self._pending_fixes >= self.params.max_pending_fixes)

    def tick(self, now_us: int) -> list[Any]:
        """The driver's clock moved to *now_us* (a timer fired); do what is due."""
        now_us = self._clock(now_us)
        self.stats.ticks += 1
        return self._work(now_us, force_round=False)

    def flush(self, now_us: int) -> list[Any]:
        """Run a round now, whatever is due (end of a replay, graceful shutdown)."""
        now_us = self._clock(now_us)
        return self._work(now_us, force_round=True)

    def finish(self, now_us: int) -> list[Any]:
        """End of data (offline replay only): flush, close every open visit and stop, and let
        the data clock catch up with *now_us* — no more data is coming, so silence from here on
        is real, and the schedule may decide what is missed by then."""
        out = self.flush(now_us)
        now_us = self._clock(now_us)
        det = self.tracker.finish()
        if self.newest_fix_us is None or self.newest_fix_us < now_us:
            self.newest_fix_us = now_us
        self.detected_fix_us = self.newest_fix_us
        self.data_delayed = False
        out += self._downstream(det, [], self.data_now(now_us))
        return out

    def learn_service_minutes(self, minutes: Mapping[str, float]) -> None:
        """Typical service minutes per site learned from the store (fed back into ETAs)."""
        if self.board is not None:
            self.board.learn_service_minutes(minutes)

    def load_plan(self, plan: Any, now_us: int) -> list[Any]:
        """Import (or replace, during the day) one date's plan; its events flow on as usual
        (e.g. ``UnplannedDue`` for a site due today that no route holds)."""
        now_us = self._clock(now_us)
        if self.board is None:
            raise CommandRefused("not_allowed", "the engine runs without a schedule board")
        data_now = self.data_now(now_us)
        sched = list(self.board.load_plan(plan, data_now))
        self.stats.schedule_events += len(sched)
        return [*sched, *self._to_stages(sched, data_now)]

    def restore_alerts(self, stored: Sequence[Any]) -> list[Any]:
        """First step of a restart: the stages after the schedule (the alert desk) take their
        stored records back (``store.outbox.load_alert_records``) and stay *restoring* — what
        the engine then re-derives (plans, :meth:`restore`, re-applied commands) is compared
        with them instead of being announced again — until :meth:`finish_restore`.  Returns
        the records adopted, for consumers that start empty (the console); the outbox knows
        their content and stores nothing."""
        out: list[Any] = []
        for stage in self.stages:
            if isinstance(stage, RestorableStage):
                out += stage.restore(stored)
                if self.board is not None and hasattr(self.board, "restore_conditions"):
                    # the board's condition clocks are only in the store: take them back
                    self.board.restore_conditions(stage.active_conditions())
        return out

    def restore_stop_states(self, states: Sequence[StopChanged], now_us: int) -> list[Any]:
        """After the plans of a restart: the board takes back each stop's stored state
        (``store.outbox.load_stop_states``; ``ScheduleBoard.restore_stop_states``).  The
        records it took flow on as usual (the console learns the state the plan's import
        hid; a restoring desk and the outbox recognise them)."""
        if self.board is None or not hasattr(self.board, "restore_stop_states"):
            return []
        now_us = self._clock(now_us)
        sched: list[ScheduleEvent] = list(self.board.restore_stop_states(states))
        self.stats.schedule_events += len(sched)
        return [*sched, *self._to_stages(sched, self.data_now(now_us))]

    def finish_restore(self, now_us: int) -> list[Any]:
        """Last step of a restart (also when reading fixes failed): the stages apply what the
        re-run decided differently from their stored state and return those records (none
        when the re-run agrees); from here they run as if they had never stopped."""
        now_us = self._clock(now_us)
        data_now = self.data_now(now_us)
        out: list[Any] = []
        for stage in self.stages:
            if isinstance(stage, RestorableStage):
                out += stage.finish_restore(data_now)
        self.stats.stage_records += len(out)
        return out

    def restore(
        self, fixes: FixBatch, now_us: int, previous: Sequence[DetectionEvent] = ()
    ) -> list[Any]:
        """Rebuild state after a restart from the stored fixes of the last ``horizon_s``.

        *previous*: the detection events published before the restart (the latest version of
        each, from the store).  The tracker adopts them, so re-derived visits keep their ids
        and an unchanged one emits nothing, and visits that began before the re-read fixes
        stand as they were; the board learns from them which stops were already served, so a
        stop visited before the re-read window is not decided "missed" anew.  Without
        *previous*, each unit's fixes are taken from its first settled moment only (a visit in
        progress at the edge of the window would otherwise be re-derived truncated, under a
        new id).  The re-read fixes then go through the same path as live ones (one round).
        """
        out: list[Any] = []
        prev = [e for e in latest(list(previous)).values() if not e.retracted]
        if prev:
            self.tracker.restore(prev)
            if self.board is not None:
                t = max(_event_time(e) for e in prev)
                sched = list(self.board.on_detection(prev, t))
                self.stats.schedule_events += len(sched)
                out += [*sched, *self._to_stages(sched, t)]
        else:
            fixes = self._from_idle(fixes)
        out += self.feed(fixes, now_us)
        return out + self.flush(now_us)

    def _from_idle(self, fixes: FixBatch, *, settle_s: float = 60.0) -> FixBatch:
        """Each unit's fixes from its first *settled* moment on: moving at crawl speed or more
        and outside every fence (plus the exit margin) for *settle_s*.  Whatever the unit did
        before it (a visit or stop in progress at the edge of the window) was published before
        the restart and would be re-derived truncated, under a wrong id; from a settled moment
        on, every visit and stop is re-derived whole, as it was."""
        n = len(fixes)
        if n == 0:
            return fixes
        p = self.detection
        near = np.zeros(n, dtype=bool)
        pairs = self._matcher(fixes.lon, fixes.lat, p.exit_margin_m)
        near[np.asarray(pairs[0], dtype=np.intp)] = True
        moving = (fixes.speed_kmh >= p.crawl_speed_kmh) & ~near
        order = np.lexsort((fixes.t_us, fixes.unit_id))
        units = fixes.unit_id[order]
        bounds = np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1], [True])))
        keep: list[npt.NDArray[np.intp]] = []
        settle_us = round(settle_s * 1e6)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            idx = order[a:b]
            t = fixes.t_us[idx]
            mv = moving[idx]
            # first i such that every fix in [t_i, t_i + settle] is moving and away
            bad = np.flatnonzero(~mv)
            for i in np.flatnonzero(mv).tolist():
                j = int(np.searchsorted(t, t[i] + settle_us, side="right"))
                k = int(np.searchsorted(bad, i))
                if j - i >= 2 and (k == len(bad) or bad[k] >= j):
                    keep.append(idx[i:])
                    break
        if not keep:
            return FixBatch.empty()
        sel = np.sort(np.concatenate(keep))
        return fixes.take(sel)

    def command(self, cmd: Command, now_us: int) -> list[Any]:
        """A dispatcher's command; raises :class:`CommandRefused` with a specific code."""
        now_us = self._clock(now_us)
        self.stats.commands += 1
        data_now = self.data_now(now_us)
        out: list[Any] = []
        try:
            if isinstance(cmd, ReassignStop | ReorderRoute | CancelStop):
                if self.board is None:
                    raise CommandRefused("not_allowed", "no day plan is loaded: nothing to change")
                sched = list(self.board.command(cmd, data_now))
                out += sched
                out += self._to_stages(sched, data_now)
            else:
                if not self.stages:
                    raise CommandRefused("not_allowed", "no alert desk is running")
                refused: CommandRefused | None = None
                for stage in self.stages:
                    try:
                        out += list(stage.command(cmd, data_now))
                        refused = None
                        break
                    except CommandRefused as exc:
                        refused = exc
                if refused is not None:
                    raise refused
        except CommandRefused:
            self.stats.commands_refused += 1
            raise
        self.stats.stage_records += sum(1 for _ in out)
        return out

    # -- the index and the registry can change while running -------------------------------------

    def set_sites(self, matcher: Matcher, site_ids: Sequence[str], now_us: int) -> list[Any]:
        """Swap in a new fence index (a new day's site list, a site edited during the day).

        Sites are known by id: a visit in progress at a site still listed goes on under its id,
        whatever position the new index gives the site; one to a site no longer listed closes
        (``closed_by="site_removed"``).  Fixes waiting for the next round are matched with the
        new index, which is the current truth."""
        now_us = self._clock(now_us)
        self._matcher = matcher
        det = self.tracker.use_sites(site_ids)
        return self._downstream(det, [], self.data_now(now_us))

    def set_units(self, unit_to_vehicle: Mapping[str, str]) -> None:
        """The unit registry was reloaded: later rounds map units to vehicles with this."""
        self.unit_to_vehicle = dict(unit_to_vehicle)
        self.tracker.unit_to_vehicle = dict(unit_to_vehicle)

    # -- time ------------------------------------------------------------------------------------

    def data_now(self, now_us: int) -> int:
        """``min(now_us, newest fix a detection round has seen)``.  Before the first round the
        data clock has not started (0): no data at all is the extreme case of "data delayed",
        and a plan imported then starts with every stop pending instead of every past window
        missed.

        Fixes received but still waiting for their round do not move it: a backlog (the
        broker's after a restart, a store-and-forward burst) arrives much faster than real
        time, and minutes of data may wait between two rounds; a deadline decided at their
        time ("missed" at window end + grace) would not know the visit they hold, and would
        be retracted one round later -- a false exception in the CRM feed
        (tests/test_engine_pace.py)."""
        return 0 if self.detected_fix_us is None else min(now_us, self.detected_fix_us)

    def next_deadline_us(self) -> int | None:
        """The driver time at which the engine next wants :meth:`tick` (None: only on input)."""
        cands: list[int] = []
        if self._pending_fixes and self._next_round_us is not None:
            cands.append(self._next_round_us)
        if self._next_advance_us is not None:
            cands.append(self._next_advance_us)
        if self.newest_fix_us is not None and not self.data_delayed:
            cands.append(self.newest_fix_us + round(self.params.data_delayed_after_s * 1e6))
        # the schedule's deadlines are in data time: reachable now only up to the newest fix a
        # round has seen; beyond it, the next round moves the data clock and runs them
        horizon = self.detected_fix_us
        for d in self._stage_deadlines():
            if horizon is not None and d <= horizon:
                cands.append(d)
        return min(cands) if cands else None

    def _stage_deadlines(self) -> list[int]:
        out: list[int] = []
        if self.board is not None:
            d = self.board.next_deadline_us()
            if d is not None:
                out.append(d)
        for stage in self.stages:
            d = stage.next_deadline_us()
            if d is not None:
                out.append(d)
        return out

    def _clock(self, now_us: int) -> int:
        if self.last_now_us is not None and now_us < self.last_now_us:
            now_us = self.last_now_us  # a driver clock never runs backwards for the engine
        self.last_now_us = now_us
        return now_us

    # -- the work --------------------------------------------------------------------------------

    def _work(self, now_us: int, *, force_round: bool) -> list[Any]:
        status = self._status(now_us)
        det: list[DetectionEvent] = []
        positions: list[VehiclePosition] = []
        due_round = self._next_round_us is not None and now_us >= self._next_round_us
        if self._pending_fixes and (force_round or due_round):
            fixes = self._take()
            det += self._detect(fixes)
            positions = newest_positions(fixes, self.unit_to_vehicle)
            seen = min(int(fixes.t_us.max()), now_us) if len(fixes) else None
            if seen is not None and (self.detected_fix_us is None or seen > self.detected_fix_us):
                self.detected_fix_us = seen
        data_now = self.data_now(now_us)
        if self._next_advance_us is None and self.newest_fix_us is not None:
            self._next_advance_us = now_us + round(self.params.advance_interval_s * 1e6)
        elif self._next_advance_us is not None and now_us >= self._next_advance_us:
            det += self.tracker.advance(data_now)
            self._next_advance_us = now_us + round(self.params.advance_interval_s * 1e6)
        out = self._downstream(det, positions, data_now)
        return out + status

    def _take(self) -> FixBatch:
        fixes = FixBatch.concat(self._pending)
        self._pending = []
        self._pending_fixes = 0
        self._next_round_us = None
        return fixes

    def _detect(self, fixes: FixBatch) -> list[DetectionEvent]:
        self.stats.rounds += 1
        self.stats.fixes_matched += len(fixes)
        events = self.tracker.feed_matched(fixes, self._matcher)
        self.stats.unknown_units = len(self.tracker.unknown_units)
        return events

    def _downstream(
        self,
        det: list[DetectionEvent],
        positions: list[VehiclePosition],
        data_now: int,
    ) -> list[Any]:
        out: list[Any] = list(det)
        out += positions  # the console's moving trucks: newest fix per vehicle per round
        self.stats.detection_events += len(det)
        sched: list[ScheduleEvent] = []
        if self.board is not None:
            if det:
                sched += self.board.on_detection(det, data_now)
            if positions:
                sched += self.board.on_positions(positions, data_now)
            # no gate on "data delayed": the data clock itself stalls while nothing arrives,
            # so silence cannot make anything late; old data that flows (a backlog, a replayed
            # day) moves it, and its decisions are due
            sched += self.board.tick(data_now)
        self.stats.schedule_events += len(sched)
        out += sched
        out += self._to_stages(sched, data_now, tick=True)
        return out

    def _to_stages(
        self, sched: Sequence[ScheduleEvent], data_now: int, *, tick: bool = False
    ) -> list[Any]:
        out: list[Any] = []
        for stage in self.stages:
            if sched:
                out += stage.consume(sched, data_now)
            if tick:
                out += stage.tick(data_now)
        self.stats.stage_records += len(out)
        return out

    def _status(self, now_us: int) -> list[Any]:
        if self.newest_fix_us is None:
            return []
        silent = now_us - self.newest_fix_us >= self.params.data_delayed_after_s * 1e6
        if silent == self.data_delayed:
            return []
        self.data_delayed = silent
        return [DataDelayed(active=silent, newest_fix_us=self.newest_fix_us, at_us=now_us)]

    # -- reading -------------------------------------------------------------------------------

    @property
    def pending_fixes(self) -> int:
        return self._pending_fixes

    def statistics(self) -> EngineStats:
        self.stats.tracker = self.tracker.statistics()
        return self.stats

    def vehicles(self) -> Collection[str]:
        return tuple(self.tracker.vehicles)


def _event_time(ev: DetectionEvent) -> int:
    if isinstance(ev, VisitCompleted):
        return ev.departure_us
    if isinstance(ev, StopEnded):
        return ev.end_us
    if isinstance(ev, VisitStarted):
        return ev.confirmed_us
    assert isinstance(ev, StopStarted)
    return ev.start_us


def drive(
    engine: Engine, batches: Sequence[tuple[int, FixBatch]] | Any, *, end_us: int | None = None
) -> list[Any]:
    """Run *engine* over ``(now_us, fixes)`` pairs in driver-time order, ticking at every
    deadline in between — exactly what the live shell does with a real timer.  Used by replay
    and by tests that compare live and offline runs."""
    out: list[Any] = []
    for now_us, fixes in batches:
        out += tick_until(engine, now_us)
        out += engine.feed(fixes, now_us)
    if end_us is not None:
        out += tick_until(engine, end_us)
    return out


def tick_until(engine: Engine, now_us: int) -> list[Any]:
    """Tick at each deadline up to *now_us* (bounded: each tick must move the deadline)."""
    out: list[Any] = []
    last: int | None = None
    while True:
        d = engine.next_deadline_us()
        if d is None or d > now_us or (last is not None and d <= last):
            break
        out += engine.tick(d)
        last = d
    return out

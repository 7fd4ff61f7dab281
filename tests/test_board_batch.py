"""The board's vectorised and cached paths against the one-route-at-a-time rules they replace.

* :func:`schedule.eta.routes_eta` gives every row exactly :func:`schedule.eta.route_eta`'s
  ETAs (not "close": a refresh's decisions must not depend on which routes share it).
* A board (``ScheduleBoard``) and a reference board whose route refreshes run one by one
  through ``_refresh_route_reference``, and whose positions and refresh slots are taken
  without any cache (``_on_positions_reference``, ``_schedule_refresh_reference``), emit the
  same events, in the same order, have the same deadlines after every step and end in the
  same states, across random plans (sites shared between vehicles included), plan reloads
  (routes replaced), positions (batches in id order or not, repeated vehicles, unknown
  vehicles, rewinds), visits and their corrections, ticks and dispatcher commands.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedule.board import ScheduleBoard, _Route
from schedule.contracts import Contract, SiteContract
from schedule.eta import route_eta, routes_eta
from schedule.plans import DayPlan, PlannedStop
from schedule.schedule_params import ScheduleParams
from schedule.stop_events import (
    CancelStop,
    Cause,
    CommandRefused,
    ReassignStop,
    ReorderRoute,
    ScheduleEvent,
    VehiclePosition,
)
from tests.schedule_world import DAY, M, at, visit

# -- routes_eta ------------------------------------------------------------------------------


@st.composite
def route_rows(draw: st.DrawFn) -> dict[str, Any]:
    r = draw(st.integers(1, 6))
    n = draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    planned = rng.uniform(0, 3600, (r, n))
    planned[rng.random((r, n)) < draw(st.floats(0, 1))] = np.nan
    return {
        "start_us": at(8) + rng.integers(-3 * 3600, 3 * 3600, r) * 1_000_000,
        "start_lon": 37.5 + rng.random(r) * 0.3,
        "start_lat": 55.6 + rng.random(r) * 0.3,
        "lon": 37.5 + rng.random((r, n)) * 0.3,
        "lat": 55.6 + rng.random((r, n)) * 0.3,
        "window_start_us": at(8) + rng.integers(-4 * 3600, 8 * 3600, (r, n)) * 1_000_000,
        "service_s": rng.choice([0.0, 300.0, 600.0, 1234.5], (r, n)),
        "speed_mps": rng.choice([0.0, 1e-4, 4.96, 12.3], r),
        "planned_leg_s": planned,
        "ratio": rng.choice([1.0, 0.25, 1.37, 6.0], r),
        "first_share": rng.choice([1.0, 0.0, 0.42], r),
    }


@settings(max_examples=200, deadline=None)
@given(route_rows())
def test_routes_eta_rows_are_exactly_route_eta(a: dict[str, Any]) -> None:
    got = routes_eta(**a)
    for i in range(len(a["start_us"])):
        one = route_eta(
            start_us=int(a["start_us"][i]),
            start_lon=float(a["start_lon"][i]),
            start_lat=float(a["start_lat"][i]),
            lon=a["lon"][i],
            lat=a["lat"][i],
            window_start_us=a["window_start_us"][i],
            service_s=a["service_s"][i],
            speed_mps=float(a["speed_mps"][i]),
            planned_leg_s=a["planned_leg_s"][i].copy(),
            ratio=float(a["ratio"][i]),
            first_share=float(a["first_share"][i]),
        )
        assert got[i].tolist() == one.tolist()


# -- the board against its reference ---------------------------------------------------------

SITES = {
    f"S{i}": SiteContract(
        site_id=f"S{i}",
        client_id=f"C{i}",
        lon=37.55 + 0.013 * i,
        lat=55.70 + 0.007 * (i % 3),
        contract=Contract(
            weekdays=frozenset(range(1, 8)), window_start_min=0, window_end_min=1440, tz="UTC"
        ),
        service_min=10.0,
        tz="UTC",
    )
    for i in range(1, 9)
}
VEHICLES = ("V1", "V2", "V3", "V4")
DEPOTS = {"V1": (37.55, 55.70), "V3": (37.60, 55.71)}


class ReferenceBoard(ScheduleBoard):
    """The board with every uncached, one-at-a-time rule the fast paths replace."""

    def _refresh_routes(self, routes: Sequence[_Route], cause: Cause) -> list[ScheduleEvent]:
        out: list[ScheduleEvent] = []
        for r in routes:
            out += self._refresh_route_reference(r, cause)
        return out

    def on_positions(
        self, positions: Sequence[VehiclePosition], now_us: int
    ) -> list[ScheduleEvent]:
        return self._on_positions_reference(positions, now_us)

    def _schedule_refresh(self, route: _Route) -> None:
        self._schedule_refresh_reference(route)


def make(cls: type[ScheduleBoard], refresh_s: float) -> ScheduleBoard:
    return cls(
        sites=SITES,
        vehicles=VEHICLES,
        depots=DEPOTS,
        params=ScheduleParams(eta_refresh_s=refresh_s),
    )


@st.composite
def plans(draw: st.DrawFn) -> DayPlan:
    shared = draw(st.booleans())  # a hand-built plan may list a site on two vehicles
    free = list(SITES)
    routes: dict[str, tuple[PlannedStop, ...]] = {}
    for v in draw(st.lists(st.sampled_from(VEHICLES), min_size=1, max_size=4, unique=True)):
        pool = list(SITES) if shared else free
        if not pool:
            break
        picks = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
        free = [s for s in free if s not in picks]
        stops = []
        for k, s in enumerate(picks):
            ws = draw(st.floats(6.0, 15.0))
            we = ws + draw(st.floats(0.25, 4.0))
            pa = None if draw(st.integers(0, 4)) == 0 else at(ws + draw(st.floats(0, 0.5)))
            stops.append(
                PlannedStop(
                    service_date=DAY,
                    vehicle_id=v,
                    seq=k + 1,
                    site_id=s,
                    planned_arrival_us=pa,
                    window_start_us=at(ws),
                    window_end_us=at(we),
                    service_min=draw(st.sampled_from([5.0, 10.0, 30.0])),
                )
            )
        routes[v] = tuple(stops)
    # a departure (the first leg is then the plan's, scaled by the share still to drive)
    deps = {
        v: stops[0].window_start_us - round(draw(st.floats(0.1, 2.5)) * 60 * M)
        for v, stops in routes.items()
        if draw(st.integers(0, 3)) > 0
    }
    return DayPlan(service_date=DAY, routes=routes, departures_us=deps)


positions = st.tuples(
    st.just("pos"),
    st.lists(
        st.tuples(
            st.sampled_from((*VEHICLES, "V9")),  # V9: not in the fleet
            st.sampled_from(["move", "move", "depot"]),
            st.sampled_from([-0.02, -0.007, 0.0, 0.004, 0.011]),  # degrees moved
            st.sampled_from([-0.013, -0.002, 0.0, 0.006, 0.02]),
            st.sampled_from([0, 0, 0, 5, 700]),  # seconds before now (a rewind, a backlog)
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 600),
    st.booleans(),  # as the engine sends them: one per vehicle, in id order
)
visits = st.tuples(
    st.just("visit"),
    st.sampled_from(VEHICLES),
    st.sampled_from(list(SITES)),
    st.integers(0, 3),  # 0 started, 1 completed, 2 retract the start, 3 started 20 min ago
)
ticks = st.tuples(st.just("tick"), st.integers(0, 90))
commands = st.tuples(
    st.just("cmd"),
    st.sampled_from(["cancel", "reassign", "reorder"]),
    st.sampled_from(list(SITES)),
    st.sampled_from(VEHICLES),
    st.integers(0, 2**16),  # the reorder's shuffle
)
ops = st.lists(
    st.one_of(positions, visits, ticks, commands, st.tuples(st.just("replan"), plans())),
    max_size=40,
)


def run(b: ScheduleBoard, first: DayPlan, steps: list[Any], in_depots: bool) -> list[Any]:
    """The whole log of what *b* emitted (and refused), step by step."""
    now = at(6)
    log: list[Any] = [b.load_plan(first, now)]
    n_visits = 0
    where = {v: DEPOTS.get(v, (37.6, 55.72)) for v in VEHICLES}
    if in_depots:  # the trucks report from their yards before they set off
        log.append(
            b.on_positions(
                [
                    VehiclePosition(vehicle_id=v, t_us=now, lon=x, lat=y, speed_kmh=0)
                    for v, (x, y) in sorted(where.items())
                ],
                now,
            )
        )
    for op in steps:
        kind = op[0]
        if kind == "pos":
            now += op[2] * 1_000_000
            batch = []
            for v, mode, dlon, dlat, back_s in op[1]:
                lon, lat = where.get(v, (37.6, 55.72))
                if mode == "depot":
                    lon, lat = DEPOTS.get(v, (37.55, 55.70))
                else:
                    lon, lat = lon + dlon, lat + dlat
                where[v] = (lon, lat)
                t = now - back_s * 1_000_000
                batch.append(VehiclePosition(vehicle_id=v, t_us=t, lon=lon, lat=lat, speed_kmh=20))
            if op[3]:
                newest: dict[str, VehiclePosition] = {}
                for p in batch:
                    if p.vehicle_id not in newest or p.t_us > newest[p.vehicle_id].t_us:
                        newest[p.vehicle_id] = p
                batch = [newest[v] for v in sorted(newest)]
            log.append(b.on_positions(batch, now))
        elif kind == "visit":
            n_visits += 1
            _, veh, site, how = op
            h = (now - at(0)) / (60 * M)
            if how == 0:
                evs = [visit(f"x{n_visits}", veh, site, h - 0.05)]
            elif how == 1:
                evs = [visit(f"x{n_visits}", veh, site, h - 0.3, completed=True)]
            elif how == 2:
                evs = [
                    visit(f"x{n_visits}", veh, site, h - 0.05),
                    visit(f"x{n_visits}", veh, site, h - 0.05, version=2, retracted=True),
                ]
            else:
                evs = [visit(f"x{n_visits}", veh, site, h - 0.33)]
            log.append(b.on_detection(evs, now))
        elif kind == "tick":
            now += op[1] * M
            while (d := b.next_deadline_us()) is not None and d <= now:
                log.append(("tick", d, b.tick(d)))
            log.append(b.tick(now))
        elif kind == "replan":
            log.append(b.load_plan(op[1], now))
        else:
            _, what, site, veh, seed = op
            sid = f"{DAY.isoformat()}/{site}"
            try:
                if what == "cancel":
                    log.append(b.command(CancelStop(stop_id=sid, reason="closed", by="d"), now))
                elif what == "reassign":
                    log.append(b.command(ReassignStop(stop_id=sid, to_vehicle=veh, by="d"), now))
                else:
                    rid = f"{DAY.isoformat()}/{veh}"
                    open_ = [
                        s for s, x in sorted(b.states().items()) if x in ("pending", "at_risk")
                    ]
                    mine = [s for s in open_ if b._stops[s].vehicle_id == veh]
                    random.Random(seed).shuffle(mine)
                    log.append(
                        b.command(ReorderRoute(route_id=rid, stop_ids=tuple(mine), by="d"), now)
                    )
            except CommandRefused as exc:
                log.append(("refused", exc.code))
        log.append(("deadline", b.next_deadline_us()))
    log.append(("states", b.states(), b.snapshot()))
    return log


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans(), ops, st.sampled_from([30.0, 1.0, 600.0]), st.booleans())
def test_board_equals_its_one_route_at_a_time_reference(
    first: DayPlan, steps: list[Any], refresh_s: float, in_depots: bool
) -> None:
    got = run(make(ScheduleBoard, refresh_s), first, steps, in_depots)
    want = run(make(ReferenceBoard, refresh_s), first, steps, in_depots)
    assert got == want


def test_a_tick_refreshes_many_routes_in_one_batch() -> None:
    """Not a vacuous property: the random runs above do put several routes in one refresh."""
    calls: list[int] = []

    class Counting(ScheduleBoard):
        def _refresh_routes(self, routes: Sequence[_Route], cause: Cause) -> list[ScheduleEvent]:
            calls.append(len(routes))
            return super()._refresh_routes(routes, cause)

    b = make(Counting, 30.0)
    p = DayPlan(
        service_date=DAY,
        routes={
            v: (
                PlannedStop(
                    service_date=DAY,
                    vehicle_id=v,
                    seq=1,
                    site_id=f"S{i + 1}",
                    planned_arrival_us=at(10),
                    window_start_us=at(9),
                    window_end_us=at(11),
                    service_min=10.0,
                ),
            )
            for i, v in enumerate(VEHICLES)
        },
    )
    b.load_plan(p, at(6))
    assert calls == [4]
    b.on_positions(
        [
            VehiclePosition(vehicle_id=v, t_us=at(7), lon=37.6, lat=55.7, speed_kmh=9)
            for v in VEHICLES
        ],
        at(7),
    )
    b.tick(at(7) + 31_000_000)
    assert calls[-1] == 4
    assert dt.date.fromisoformat(b.snapshot().routes[0].service_date) == DAY

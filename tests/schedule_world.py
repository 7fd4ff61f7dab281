"""A small hand-made world for the schedule board's unit and property tests."""

from __future__ import annotations

import datetime as dt

from schedule.board import ScheduleBoard
from schedule.contracts import Contract, SiteContract
from schedule.events import VisitCompleted, VisitStarted
from schedule.plans import DayPlan, PlannedStop
from schedule.schedule_params import ScheduleParams

DAY = dt.date(2026, 11, 23)  # a Monday
H = 3_600_000_000
M = 60_000_000
T0 = int(dt.datetime(2026, 11, 23, tzinfo=dt.UTC).timestamp()) * 1_000_000  # local midnight, UTC


def at(hh: float) -> int:
    """µs of ``hh`` hours after midnight of DAY (UTC)."""
    return T0 + round(hh * H)


CONTRACT = Contract(
    weekdays=frozenset({1, 2, 3, 4, 5}), window_start_min=0, window_end_min=1440, tz="UTC"
)


def sites(n: int = 6) -> dict[str, SiteContract]:
    return {
        f"S{i}": SiteContract(
            site_id=f"S{i}",
            client_id=f"C{i}",
            lon=37.60 + 0.01 * i,
            lat=55.75,
            contract=CONTRACT,
            service_min=10.0,
            tz="UTC",
        )
        for i in range(1, n + 1)
    }


def plan(routes: dict[str, list[tuple[str, float, float]]], *, first_hour: float = 9.0) -> DayPlan:
    """routes: vehicle → [(site, window start h, window end h)]; planned arrival = start + 0.5."""
    out = {}
    for v, stops in routes.items():
        out[v] = tuple(
            PlannedStop(
                service_date=DAY,
                vehicle_id=v,
                seq=k + 1,
                site_id=s,
                planned_arrival_us=at(ws + 0.5),
                window_start_us=at(ws),
                window_end_us=at(we),
                service_min=10.0,
            )
            for k, (s, ws, we) in enumerate(stops)
        )
    return DayPlan(service_date=DAY, routes=out, departures_us={v: at(first_hour - 1) for v in out})


def board(
    n_sites: int = 6, vehicles: tuple[str, ...] = ("V1", "V2"), **kw: object
) -> ScheduleBoard:
    return ScheduleBoard(
        sites=sites(n_sites),
        vehicles=vehicles,
        depots={v: (37.55, 55.75) for v in vehicles},
        params=ScheduleParams(**kw),  # type: ignore[arg-type]
    )


def visit(
    vid: str,
    veh: str,
    site: str,
    arrive_h: float,
    *,
    version: int = 1,
    retracted: bool = False,
    completed: bool = False,
    dwell_min: float = 10,
) -> VisitStarted | VisitCompleted:
    a = at(arrive_h)
    sup = version - 1 if version > 1 else None
    if completed:
        return VisitCompleted(
            visit_id=vid,
            version=version,
            supersedes=sup,
            retracted=retracted,
            vehicle_id=veh,
            site_id=site,
            arrival_us=a,
            departure_us=a + round(dwell_min * M),
            fix_count=100,
            inside_share=1.0,
            median_hdop=1.0,
            closed_by="exit",
        )
    return VisitStarted(
        visit_id=vid,
        version=version,
        supersedes=sup,
        retracted=retracted,
        vehicle_id=veh,
        site_id=site,
        arrival_us=a,
        confirmed_us=a + 2 * M,
    )

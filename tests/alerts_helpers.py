"""Builders for schedule-stage records, so the alert tests do not wait for the engine."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alerts.roster import Roster, parse_roster
from core.fixes import datetime_to_us
from schedule.stop_events import StopChanged, StopState, VehicleCondition, stop_id_of

DATE = "2026-11-23"  # a Monday
MIN = 60_000_000


def utc(hhmm: str) -> int:
    h, m = map(int, hhmm.split(":"))
    return datetime_to_us(dt.datetime(2026, 11, 23, h, m, tzinfo=dt.UTC))


ROSTER_TOML = """\
tz = "Europe/Moscow"

[[dispatcher]]
id = "D00"
name = "Head H."
role = "head"
shifts = [{days = [1, 2, 3, 4, 5, 6], start = "06:00", end = "20:00"}]

[[dispatcher]]
id = "D01"
name = "Ivanov I."
shifts = [{days = [1, 2, 3, 4, 5, 6], start = "06:00", end = "15:00"}]
vehicles = ["V001", "V002"]

[[dispatcher]]
id = "D02"
name = "Petrov P."
shifts = [{days = [1, 2, 3, 4, 5, 6], start = "06:00", end = "15:00"}]
vehicles = ["V003"]

[[dispatcher]]
id = "D03"
name = "Late L."
shifts = [{days = [1, 2, 3, 4, 5, 6], start = "12:00", end = "21:00"}]

[[dispatcher]]
id = "VW"
name = "Viewer V."
role = "viewer"
"""


def roster() -> Roster:
    return parse_roster(ROSTER_TOML)


def stop(
    site: str = "S0001",
    state: StopState = "at_risk",
    *,
    at: str | int = "09:00",
    previous: StopState | None = None,
    vehicle: str | None = "V001",
    **kw: Any,
) -> StopChanged:
    at_us = utc(at) if isinstance(at, str) else at
    fields: dict[str, Any] = {
        "stop_id": stop_id_of(DATE, site),
        "site_id": site,
        "client_id": "C" + site[1:],
        "service_date": DATE,
        "vehicle_id": vehicle,
        "state": state,
        "previous": previous,
        "window_start_us": utc("07:00"),
        "window_end_us": utc("09:30"),
        "planned_arrival_us": utc("08:00"),
        "eta_us": None,
        "arrival_us": None,
        "departure_us": None,
        "visited_by": None,
        "visit_id": None,
        "outcome": None,
        "minutes_late": None,
        "reason": f"{state}",
        "cause": "tick",
        "at_us": at_us,
    }
    fields.update(kw)
    return StopChanged(**fields)


def visited(
    site: str = "S0001",
    *,
    at: str | int = "10:00",
    arrival: str = "09:50",
    outcome: str = "late",
    **kw: Any,
) -> StopChanged:
    minutes = (utc(arrival) - utc("09:30")) / MIN if outcome == "late" else None
    base: dict[str, Any] = {
        "arrival_us": utc(arrival),
        "visited_by": kw.pop("visited_by", "V001"),
        "visit_id": f"V001/{site}/{arrival}",
        "outcome": outcome,
        "minutes_late": minutes,
        "cause": "fix",
    }
    base.update(kw)
    return stop(site, "visited", at=at, **base)


def condition(
    kind: str = "gps_silent", *, active: bool = True, at: str = "09:00", vehicle: str = "V001"
) -> VehicleCondition:
    return VehicleCondition(
        vehicle_id=vehicle,
        service_date=DATE,
        kind=kind,  # type: ignore[arg-type]
        active=active,
        since_us=utc("08:40"),
        at_us=utc(at),
        minutes=20.0,
        detail="no fix for 20 min",
        cause="tick",
    )

"""Contracts (due dates, windows in local time) and plan import with every bad-row kind."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import pytest

from geofence.sites import load_sites_geojson
from schedule.contracts import (
    Contract,
    ContractError,
    SiteContract,
    contract_from_schedule,
    site_contracts,
)
from schedule.plans import PlanFormatError, parse_plans_csv, parse_plans_json, parse_schedule_inputs

MON = dt.date(2026, 11, 23)


def _utc(h: int, m: int) -> int:
    return int(dt.datetime(2026, 11, 23, h, m, tzinfo=dt.UTC).timestamp()) * 1_000_000


def _feature(
    site_id: str, schedule: Mapping[str, object] | None, lon: float = 37.6
) -> dict[str, object]:
    props: dict[str, object] = {
        "site_id": site_id,
        "client_id": "C1",
        "name": site_id,
        "radius_m": 40,
        "service_min": 12,
    }
    if schedule is not None:
        props["schedule"] = schedule
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, 55.75]},
        "properties": props,
    }


SCHED = {
    "weekdays": [1, 3, 5],
    "window_start": "09:00",
    "window_end": "12:30",
    "tz": "Europe/Moscow",
}


def _geojson(*features: dict[str, object]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def test_weekdays_closed_days_and_every_n_weeks() -> None:
    c = contract_from_schedule(
        {**SCHED, "every_weeks": 2, "anchor_date": "2026-11-25", "closed": ["2026-12-09"]}
    )
    assert c.is_due(MON)  # the anchor's week
    assert not c.is_due(MON + dt.timedelta(days=1))  # Tuesday: not a contract day
    assert not c.is_due(MON + dt.timedelta(days=7))  # the off week
    assert c.is_due(MON + dt.timedelta(days=14))
    assert not c.is_due(dt.date(2026, 12, 9))  # a holiday in an on week


def test_window_is_local_time_through_the_zone() -> None:
    c = contract_from_schedule(SCHED)
    ws, we = c.window_us(MON)
    assert dt.datetime.fromtimestamp(ws / 1e6, dt.UTC).strftime("%H:%M") == "06:00"
    assert dt.datetime.fromtimestamp(we / 1e6, dt.UTC).strftime("%H:%M") == "09:30"
    berlin = Contract(
        weekdays=frozenset({1}), window_start_min=540, window_end_min=600, tz="Europe/Berlin"
    )
    summer = berlin.window_us(dt.date(2026, 7, 6))[0]
    winter = berlin.window_us(dt.date(2026, 12, 7))[0]
    assert dt.datetime.fromtimestamp(summer / 1e6, dt.UTC).hour == 7
    assert dt.datetime.fromtimestamp(winter / 1e6, dt.UTC).hour == 8


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"every_weeks": 0}, "every_weeks"),
        ({"every_weeks": 2}, "anchor_date"),
        ({"closed": ["2026-13-01"]}, "closed"),
        ({"anchor_date": "soon", "every_weeks": 2}, "anchor_date"),
    ],
)
def test_bad_schedule_extensions_are_named(extra: dict[str, object], words: str) -> None:
    with pytest.raises(ContractError, match=words):
        contract_from_schedule({**SCHED, **extra})
    load = load_sites_geojson(_geojson(_feature("S1", {**SCHED, **extra})))
    assert load.sites[0].schedule is None
    assert any(words in p.message and not p.fatal for p in load.problems)


def _sites() -> dict[str, SiteContract]:
    load = load_sites_geojson(
        _geojson(
            _feature("S1", SCHED),
            _feature("S2", SCHED, lon=37.61),
            _feature("S3", {**SCHED, "weekdays": [2]}, lon=37.62),
        )
    )
    return site_contracts(load.sites)


HEADER = "date,vehicle_id,seq,site_id,planned_arrival,window_start,window_end,service_min\n"


def test_every_bad_row_kind_is_named_and_the_good_rows_load() -> None:
    day = "2026-11-23"
    w = f"{day}T06:00:00Z,{day}T09:30:00Z,10"
    rows = [
        f"{day},V1,1,S1,{day}T06:30:00Z,{w}",  # ok
        f"{day},V1,2,S9,{day}T06:40:00Z,{w}",  # unknown site
        f"{day},V7,1,S2,{day}T06:40:00Z,{w}",  # unknown vehicle
        f"{day},V1,3,S2,{day}T06:40:00Z,{day}T09:30:00Z,{day}T06:00:00Z,10",  # window order
        f"{day},V1,4,S1,{day}T07:00:00Z,{w}",  # duplicate in the route
        f"{day},V2,1,S2,2026-11-24T06:40:00Z,{w}",  # outside the day
        f"{day},V2,2,S3,{day}T06:40:00Z,{w}",  # not due on Mondays
        f"{day},V2,3,S2,yesterday,{w}",  # malformed
        f"{day},V2,4,S2,{day}T06:50:00Z,,,",  # ok: contract window, site service
    ]
    load = parse_plans_csv(HEADER + "\n".join(rows) + "\n", sites=_sites(), vehicles={"V1", "V2"})
    codes = [(p.source, p.code) for p in load.problems]
    assert codes == [
        ("plans.csv:line 3", "unknown_site"),
        ("plans.csv:line 4", "unknown_vehicle"),
        ("plans.csv:line 5", "window_order"),
        ("plans.csv:line 6", "duplicate_stop"),
        ("plans.csv:line 7", "outside_day"),
        ("plans.csv:line 8", "not_due"),
        ("plans.csv:line 9", "malformed"),
    ]
    assert all(str(p).startswith(p.source) for p in load.problems)
    plan = load.plans[MON]
    assert [s.site_id for s in plan.routes["V1"]] == ["S1"]
    (s2,) = plan.routes["V2"]
    assert s2.service_min == 12.0
    assert dt.datetime.fromtimestamp(s2.window_end_us / 1e6, dt.UTC).strftime("%H:%M") == "09:30"


def test_a_site_twice_on_two_routes_is_a_duplicate() -> None:
    w = "2026-11-23T06:00:00Z,2026-11-23T09:30:00Z,10"
    rows = [
        f"2026-11-23,V1,1,S1,,{w}",
        f"2026-11-23,V2,1,S1,,{w}",
    ]
    load = parse_plans_csv(HEADER + "\n".join(rows), sites=_sites())
    (p,) = load.problems
    assert p.code == "duplicate_stop"
    assert "V1's route" in p.message


def test_missing_columns_and_broken_json_raise_for_the_whole_document() -> None:
    with pytest.raises(PlanFormatError, match="window_end"):
        parse_plans_csv("date,vehicle_id,seq,site_id,window_start\n", sites=_sites())
    with pytest.raises(PlanFormatError, match="not JSON"):
        parse_plans_json("{", sites=_sites())


def test_json_plans() -> None:
    doc = {
        "date": "2026-11-23",
        "routes": [
            {
                "vehicle_id": "V1",
                "planned_departure": "2026-11-23T05:00:00Z",
                "stops": [
                    {"site_id": "S2", "planned_arrival": "2026-11-23T06:20:00Z"},
                    {
                        "site_id": "S1",
                        "planned_arrival": "2026-11-23T06:40:00Z",
                        "window_start": "2026-11-23T06:00:00Z",
                        "window_end": "2026-11-23T08:00:00Z",
                    },
                    {"site_id": "S3"},
                ],
            },
            {"vehicle_id": "V2"},
        ],
    }
    load = parse_plans_json(json.dumps(doc), sites=_sites(), vehicles={"V1"})
    assert [p.code for p in load.problems] == ["not_due", "malformed"]
    plan = load.plans[MON]
    assert [(s.seq, s.site_id) for s in plan.routes["V1"]] == [(1, "S2"), (2, "S1")]
    assert plan.departures_us["V1"] == _utc(5, 0)


def test_inputs_from_scenario_texts() -> None:
    sites = _geojson(_feature("S1", SCHED), _feature("S2", SCHED, lon=37.61))
    plans = HEADER + "2026-11-23,V1,1,S1,,2026-11-23T06:00:00Z,2026-11-23T09:30:00Z,10\n"
    depots = (
        "vehicle_id,depot_id,lat,lon,radius_m,planned_departure,planned_return\n"
        "V1,D1,55.70,37.50,120,2026-11-23T04:30:00Z,2026-11-23T13:00:00Z\n"
    )
    inp = parse_schedule_inputs(sites_geojson=sites, plans_text=plans, depots_csv=depots)
    assert inp.vehicles == frozenset({"V1"})
    assert inp.depots == {"V1": (37.50, 55.70)}
    assert inp.plans[MON].departures_us["V1"] == _utc(4, 30)
    assert inp.sites["S1"].service_min == 12.0
    assert not inp.problems

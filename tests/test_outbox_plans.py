"""Sites, vehicles, plans and the roster through PostgreSQL: imported from a scenario's files,
loaded back equal to what the file loaders return (so the engine cannot tell the source)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import psycopg
import pytest
import shapely.geometry

from alerts.roster import generate_roster
from geofence import load_sites_csv, load_sites_geojson
from schedule.plans import read_schedule_inputs
from simulators.scenario import ScenarioParams, write_scenario
from store import Store
from store.outbox_plans import (
    import_plans,
    import_roster,
    import_sites,
    import_vehicles,
    load_plans_from_db,
    load_roster_from_db,
    load_sites_from_db,
    load_vehicles_from_db,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
DAY = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outbox-plans-scenario")
    write_scenario(ScenarioParams(seed=5, date=DAY, sites=80, vehicles=4), out)
    return out


async def test_sites_plans_vehicles_and_roster_round_trip(pg_dsn: str, scenario: Path) -> None:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    sites = load_sites_geojson(scenario / "sites.geojson").sites
    assert any(s.is_circle for s in sites)
    assert any(not s.is_circle for s in sites)
    inputs = read_schedule_inputs(scenario)
    roster = generate_roster(sorted(inputs.vehicles), vehicles_per_dispatcher=2)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await import_sites(conn, sites) == len(sites)
        await import_vehicles(conn, inputs.vehicles, inputs.depots)
        n_stops = await import_plans(conn, inputs.plans.values())
        await import_roster(conn, roster)
        assert n_stops == sum(p.stop_count for p in inputs.plans.values()) > 0

        back = await load_sites_from_db(conn)
        assert back == sorted(sites, key=lambda s: s.site_id)
        for a, b in zip(back, sorted(sites, key=lambda s: s.site_id), strict=True):
            assert shapely.geometry.mapping(a.geometry) == shapely.geometry.mapping(b.geometry)
        assert await load_plans_from_db(conn, [DAY, DAY + dt.timedelta(days=1)]) == inputs.plans
        assert await load_vehicles_from_db(conn) == (inputs.vehicles, inputs.depots)
        assert await load_roster_from_db(conn) == roster

        # a re-import of a changed plan replaces the day; a site dropped from the list is
        # inactive (kept for the visits that refer to it)
        plan = inputs.plans[DAY]
        first = sorted(plan.routes)[0]
        shorter = dataclasses.replace(
            plan,
            routes={first: plan.routes[first][:1]},
            departures_us={k: v for k, v in plan.departures_us.items() if k == first},
            returns_us={k: v for k, v in plan.returns_us.items() if k == first},
        )
        assert await import_plans(conn, [shorter]) == 1
        assert await load_plans_from_db(conn, [DAY]) == {DAY: shorter}
        await import_sites(conn, sites[1:])
        assert [s.site_id for s in await load_sites_from_db(conn)] == sorted(
            s.site_id for s in sites[1:]
        )


async def test_csv_sites_round_trip(pg_dsn: str, tmp_path: Path) -> None:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    csv = tmp_path / "sites.csv"
    csv.write_text(
        "site_id,client_id,name,lat,lon,radius_m\n"
        "A1,C1,Mall east,55.75,37.61,40\n"
        "A2,C2,Office,55.76,37.62,25.5\n"
    )
    sites = load_sites_csv(csv).sites
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await import_sites(conn, sites)
        assert await load_sites_from_db(conn) == sites
        assert await load_roster_from_db(conn) is None

"""Sites, vehicles, day plans and the roster in PostgreSQL (migration 0006).

Issue 9 asks that the service load the day's sites and plans "from the database as well as from
files".  The file loaders stay the one place where input is validated; this module imports what
they accepted and loads back **the same values** (``geofence.sites.Site``,
``schedule.plans.DayPlan``, ``alerts.roster.Roster``), so whatever is built on them (the fence
index, the schedule board, the alert desk) cannot tell where they came from.  Each import is
one transaction; a re-import replaces a site's row, a day's routes, the roster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import psycopg
import shapely.geometry

from alerts.roster import Dispatcher, Roster, Shift
from core.fixes import us_to_datetime
from geofence.sites import Site
from schedule.plans import DayPlan, PlannedStop

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _plain(value: Any) -> Any:
    """Mappings (MappingProxyType too) and tuples as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _us(t: dt.datetime | None) -> int | None:
    if t is None:
        return None
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ts(t_us: int | None) -> dt.datetime | None:
    return None if t_us is None else us_to_datetime(t_us)


# -- sites ----------------------------------------------------------------------------------------


async def import_sites(
    conn: psycopg.AsyncConnection[Any], sites: Sequence[Site], *, deactivate_missing: bool = True
) -> int:
    """Upsert *sites* (and their clients) in one transaction; with ``deactivate_missing``
    the sites not in the list are marked inactive (kept: visits and exceptions refer to them).
    Returns the number of sites written."""
    rows = [
        (
            s.site_id,
            s.client_id,
            s.name,
            json.dumps(shapely.geometry.mapping(s.geometry)),
            s.radius_m,
            None if s.schedule is None else json.dumps(_plain(s.schedule)),
            s.service_min,
            json.dumps(_plain(s.attributes)),
        )
        for s in sites
    ]
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO clients (client_id) VALUES (%s) ON CONFLICT DO NOTHING",
                [(c,) for c in sorted({s.client_id for s in sites})],
            )
            await cur.executemany(
                "INSERT INTO sites (site_id, client_id, name, geometry, radius_m, schedule, "
                "service_min, attributes, active, updated_at) "
                "VALUES (%s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, %s::jsonb, true, now()) "
                "ON CONFLICT (site_id) DO UPDATE SET client_id = excluded.client_id, "
                "name = excluded.name, geometry = excluded.geometry, radius_m = excluded.radius_m, "
                "schedule = excluded.schedule, service_min = excluded.service_min, "
                "attributes = excluded.attributes, active = true, updated_at = now()",
                rows,
            )
        if deactivate_missing:
            await conn.execute(
                "UPDATE sites SET active = false, updated_at = now() "
                "WHERE active AND NOT site_id = ANY(%s::text[])",
                ([s.site_id for s in sites],),
            )
    return len(rows)


async def load_sites_from_db(conn: psycopg.AsyncConnection[Any]) -> list[Site]:
    """The active sites, ordered by id, as the file loaders build them."""
    cur = await conn.execute(
        "SELECT site_id, client_id, name, geometry, radius_m, schedule, service_min, attributes "
        "FROM sites WHERE active ORDER BY site_id"
    )
    out: list[Site] = []
    for sid, client, name, geom, radius, schedule, service_min, attrs in await cur.fetchall():
        out.append(
            Site(
                site_id=sid,
                client_id=client,
                name=name,
                geometry=shapely.geometry.shape(geom),
                radius_m=radius,
                schedule=None if schedule is None else _schedule(schedule),
                service_min=service_min,
                attributes=MappingProxyType(attrs),
            )
        )
    return out


def _schedule(value: dict[str, Any]) -> Mapping[str, Any]:
    """The contract schedule frozen as ``geofence.sites`` freezes it (weekdays and closed days
    as tuples): the round-trip test compares with the file loader's value."""
    sched = dict(value)
    for key in ("weekdays", "closed"):
        if key in sched:
            sched[key] = tuple(sched[key])
    return MappingProxyType(sched)


# -- vehicles and plans ---------------------------------------------------------------------------


async def import_vehicles(
    conn: psycopg.AsyncConnection[Any],
    vehicles: Iterable[str],
    depots: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Upsert the fleet (``depots``: vehicle → (lon, lat), as ``ScheduleInputs.depots``)."""
    depots = depots or {}
    rows = [(v, *depots.get(v, (None, None))) for v in sorted(set(vehicles) | set(depots))]
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO vehicles (vehicle_id, depot_lon, depot_lat) VALUES (%s, %s, %s) "
            "ON CONFLICT (vehicle_id) DO UPDATE SET depot_lon = excluded.depot_lon, "
            "depot_lat = excluded.depot_lat, updated_at = now()",
            rows,
        )


async def load_vehicles_from_db(
    conn: psycopg.AsyncConnection[Any],
) -> tuple[frozenset[str], dict[str, tuple[float, float]]]:
    """(the fleet, depots) as ``ScheduleInputs.vehicles`` / ``.depots``."""
    cur = await conn.execute("SELECT vehicle_id, depot_lon, depot_lat FROM vehicles")
    rows = await cur.fetchall()
    depots = {v: (lon, lat) for v, lon, lat in rows if lon is not None and lat is not None}
    return frozenset(v for v, _, _ in rows), depots


async def import_plans(conn: psycopg.AsyncConnection[Any], plans: Iterable[DayPlan]) -> int:
    """Replace each given day's routes and stops, in one transaction; returns stops written."""
    plans = list(plans)
    routes: list[tuple[Any, ...]] = []
    stops: list[tuple[Any, ...]] = []
    for plan in plans:
        for vehicle, route in plan.routes.items():
            routes.append((plan.service_date, vehicle, _ts(plan.departures_us.get(vehicle)),
                           _ts(plan.returns_us.get(vehicle))))  # fmt: skip
            stops.extend(
                (s.service_date, s.vehicle_id, s.seq, s.site_id, _ts(s.planned_arrival_us),
                 _ts(s.window_start_us), _ts(s.window_end_us), s.service_min)
                for s in route
            )  # fmt: skip
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM day_routes WHERE service_date = ANY(%s::date[])",
            ([p.service_date for p in plans],),
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO day_routes (service_date, vehicle_id, departure, return_at) "
                "VALUES (%s, %s, %s, %s)",
                routes,
            )
            await cur.executemany(
                "INSERT INTO plan_stops (service_date, vehicle_id, seq, site_id, planned_arrival,"
                " window_start, window_end, service_min) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                stops,
            )
    return len(stops)


async def load_plans_from_db(
    conn: psycopg.AsyncConnection[Any], service_dates: Iterable[dt.date]
) -> dict[dt.date, DayPlan]:
    """The plans of *service_dates* (days without a plan are absent), as the file loaders
    build them: routes in vehicle order as imported, stops by ``seq``."""
    days = sorted(set(service_dates))
    cur = await conn.execute(
        "SELECT service_date, vehicle_id, departure, return_at FROM day_routes "
        "WHERE service_date = ANY(%s::date[]) ORDER BY service_date, vehicle_id",
        (days,),
    )
    route_rows = await cur.fetchall()
    cur = await conn.execute(
        "SELECT service_date, vehicle_id, seq, site_id, planned_arrival, window_start, "
        "window_end, service_min FROM plan_stops WHERE service_date = ANY(%s::date[]) "
        "ORDER BY service_date, vehicle_id, seq",
        (days,),
    )
    stops: dict[tuple[dt.date, str], list[PlannedStop]] = {}
    for day, vehicle, seq, site, planned, ws, we, service_min in await cur.fetchall():
        stops.setdefault((day, vehicle), []).append(
            PlannedStop(
                service_date=day,
                vehicle_id=vehicle,
                seq=seq,
                site_id=site,
                planned_arrival_us=_us(planned),
                window_start_us=_us(ws) or 0,
                window_end_us=_us(we) or 0,
                service_min=service_min,
            )
        )
    out: dict[dt.date, DayPlan] = {}
    parts: dict[dt.date, tuple[dict[str, tuple[PlannedStop, ...]], dict[str, int], dict[str, int]]]
    parts = {}
    for day, vehicle, dep, ret in route_rows:
        r, d, b = parts.setdefault(day, ({}, {}, {}))
        r[vehicle] = tuple(stops.get((day, vehicle), ()))
        if dep is not None:
            d[vehicle] = _us(dep) or 0
        if ret is not None:
            b[vehicle] = _us(ret) or 0
    for day, (r, d, b) in parts.items():
        out[day] = DayPlan(service_date=day, routes=r, departures_us=d, returns_us=b)
    return out


# -- roster ---------------------------------------------------------------------------------------


async def import_roster(conn: psycopg.AsyncConnection[Any], roster: Roster) -> None:
    """Replace the roster (dispatchers, shifts, time zone) in one transaction."""
    async with conn.transaction():
        await conn.execute("DELETE FROM dispatchers")
        await conn.execute(
            "INSERT INTO roster (singleton, tz) VALUES (true, %s) "
            "ON CONFLICT (singleton) DO UPDATE SET tz = excluded.tz",
            (roster.tz,),
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO dispatchers (dispatcher_id, name, role, vehicles, position) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(d.id, d.name, d.role, list(d.vehicles), i)
                 for i, d in enumerate(roster.dispatchers)],
            )  # fmt: skip
            await cur.executemany(
                "INSERT INTO shifts (dispatcher_id, position, days, start_min, end_min) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(d.id, i, list(s.days), s.start_min, s.end_min)
                 for d in roster.dispatchers for i, s in enumerate(d.shifts)],
            )  # fmt: skip


async def load_roster_from_db(conn: psycopg.AsyncConnection[Any]) -> Roster | None:
    """The stored roster, or None when none was imported."""
    cur = await conn.execute("SELECT tz FROM roster")
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT dispatcher_id, days, start_min, end_min FROM shifts "
        "ORDER BY dispatcher_id, position"
    )
    shifts: dict[str, list[Shift]] = {}
    for did, days, start, end in await cur.fetchall():
        shifts.setdefault(did, []).append(Shift(days=tuple(days), start_min=start, end_min=end))
    cur = await conn.execute(
        "SELECT dispatcher_id, name, role, vehicles FROM dispatchers ORDER BY position"
    )
    people = tuple(
        Dispatcher(id=did, name=name, role=role, shifts=tuple(shifts.get(did, ())),
                   vehicles=tuple(vehicles))
        for did, name, role, vehicles in await cur.fetchall()
    )  # fmt: skip
    return Roster(tz=row[0], dispatchers=people)

"""Route-planning analytics over the outbox's current tables (views of migration 0007).

Three questions a planner asks, each one query over a view: how arrivals fall against a
site's window, how long a site's service typically takes, how long legs between consecutive
stops take by hour of day (the ETA model's input).  Rows are frozen values; minutes are floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteArrivals:
    site_id: str
    visits: int
    early: int
    on_time: int
    late: int
    mean_min_after_start: float
    p50_min_after_start: float
    p90_min_after_end: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTime:
    site_id: str
    visits: int
    mean_min: float
    p50_min: float
    p90_min: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TravelTime:
    hour_of_day: int
    legs: int
    mean_min: float
    p50_min: float
    p90_min: float


async def site_arrivals(conn: psycopg.AsyncConnection[Any]) -> list[SiteArrivals]:
    """Per site: visited stops by outcome and arrival minutes against the window."""
    cur = await conn.execute(
        "SELECT site_id, visits, early, on_time, late, mean_min_after_start::float8, "
        "p50_min_after_start, p90_min_after_end FROM site_arrival_vs_window ORDER BY site_id"
    )
    return [
        SiteArrivals(site_id=r[0], visits=r[1], early=r[2], on_time=r[3], late=r[4],
                     mean_min_after_start=r[5], p50_min_after_start=r[6],
                     p90_min_after_end=r[7])
        for r in await cur.fetchall()
    ]  # fmt: skip


async def service_times(conn: psycopg.AsyncConnection[Any]) -> list[ServiceTime]:
    """Per site: completed visits and their dwell minutes (mean, median, p90)."""
    cur = await conn.execute(
        "SELECT site_id, visits, mean_min::float8, p50_min, p90_min FROM site_service_time "
        "ORDER BY site_id"
    )
    return [
        ServiceTime(site_id=r[0], visits=r[1], mean_min=r[2], p50_min=r[3], p90_min=r[4])
        for r in await cur.fetchall()
    ]


async def travel_times_by_hour(
    conn: psycopg.AsyncConnection[Any], *, tz: str = "UTC"
) -> list[TravelTime]:
    """Legs between consecutive visits of a vehicle, by hour of departure in *tz*."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('TimeZone', %s, true)", (tz,))
        cur = await conn.execute(
            "SELECT hour_of_day, legs, mean_min::float8, p50_min, p90_min "
            "FROM travel_time_by_hour ORDER BY hour_of_day"
        )
        rows = await cur.fetchall()
    return [
        TravelTime(hour_of_day=r[0], legs=r[1], mean_min=r[2], p50_min=r[3], p90_min=r[4])
        for r in rows
    ]

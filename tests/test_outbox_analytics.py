"""Route-planning analytics (migration 0007 views, store/analytics.py) over records written
through the outbox: the numbers follow from the records' times (tests/outbox_world.py)."""

from __future__ import annotations

import psycopg
import pytest

from store import Store
from store.analytics import (
    ServiceTime,
    TravelTime,
    service_times,
    site_arrivals,
    travel_times_by_hour,
)
from store.outbox import records_from_events, write_records
from tests.outbox_world import stop_life

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_arrivals_service_and_travel_times(pg_dsn: str) -> None:
    """Stop n: window [n, n+30) min, arrival n+40, departure n+50 (late by 10 min, 10 min of
    service); vehicle V(n % 50) serves n then n+50, so each of 50 legs takes 40 min, departing
    between 15:03 and 15:52 UTC (18:xx in Moscow)."""
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await write_records(conn, records_from_events(
            [ev for n in range(100) for ev in stop_life(n)]))  # fmt: skip
        arrivals = await site_arrivals(conn)
        assert len(arrivals) == 100
        a = arrivals[0]
        assert (a.visits, a.early, a.on_time, a.late) == (1, 0, 0, 1)
        assert (a.mean_min_after_start, a.p50_min_after_start, a.p90_min_after_end) == (
            40.0, 40.0, 10.0)  # fmt: skip
        services = await service_times(conn)
        assert services[7] == ServiceTime(site_id="S00007", visits=1, mean_min=10.0,
                                          p50_min=10.0, p90_min=10.0)  # fmt: skip
        assert await travel_times_by_hour(conn) == [
            TravelTime(hour_of_day=15, legs=50, mean_min=40.0, p50_min=40.0, p90_min=40.0)
        ]
        moscow = await travel_times_by_hour(conn, tz="Europe/Moscow")
        assert [t.hour_of_day for t in moscow] == [18]

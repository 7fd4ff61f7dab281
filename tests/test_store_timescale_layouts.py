"""The store's promises on BOTH fixes layouts: native day partitions and a TimescaleDB
hypertable (``layout`` / ``layout_dsn`` fixtures, tests/support/pg.py).

Exact round trips, idempotence across and within batches (reliability promise 6), racing
writers, and the ``fixes_hourly`` analytics relation, which is a view on native and a
continuous aggregate on TimescaleDB but must answer the same.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from functools import partial
from typing import cast

import psycopg
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import FixBatch
from store import Store, WriteResult
from store.partitions import Partitioning
from tests.test_store_write import (
    DAY_US,
    NOW_S,
    NOW_US,
    assert_batches_equal,
    batch_st,
    count_all,
    fix,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def open_layout_store(dsn: str, layout: str) -> Store:
    store = await Store.open(
        dsn, partitioning=cast(Partitioning, layout), clock=lambda: float(NOW_S)
    )
    assert store.layout == layout
    return store


async def test_round_trip_is_exact_on_both_layouts(layout: str, layout_dsn: str) -> None:
    full = fix("u1", 0.25, speed_kmh=42.5, course=359.9, quality=2, sats=11, hdop=0.7,
               alt_m=-12.3, talker="GN", lat=-33.868820123456789, lon=151.2092959876)  # fmt: skip
    sparse = fix("u1", 1.0)
    late = fix("u1", -3 * 86_400 + 0.000001)
    ancient = fix("u1", -400 * 86_400.0)  # native: DEFAULT partition; hypertable: a chunk
    other = fix("ünit-2", 0.25, talker="QZ")
    async with await open_layout_store(layout_dsn, layout) as store:
        result = await store.write_batch(FixBatch.from_fixes([full, sparse, late, ancient, other]))
        assert result == WriteResult(inserted=5, duplicates=0, dead_letters=0)
        got = await store.fixes_for_unit("u1", NOW_US - 401 * DAY_US, NOW_US + DAY_US)
        assert_batches_equal(got, FixBatch.from_fixes([ancient, late, full, sparse]))
        assert math.isnan(got.to_fixes()[3].speed_kmh)
        assert_batches_equal(
            await store.fixes_for_unit("ünit-2", NOW_US, NOW_US + DAY_US),
            FixBatch.from_fixes([other]),
        )


async def test_idempotent_across_and_within_batches(layout: str, layout_dsn: str) -> None:
    async with await open_layout_store(layout_dsn, layout) as store:
        batch = FixBatch.from_fixes([fix("u1", i) for i in range(50)] + [fix("u2", 0)])
        assert (await store.write_batch(batch)).inserted == 51
        assert (await store.write_batch(batch)).duplicates == 51
        gprmc, gnrmc = fix("u3", 0, talker="GP"), fix("u3", 0, talker="GN")
        result = await store.write_batch(FixBatch.from_fixes([gprmc, gnrmc, gprmc]))
        assert (result.inserted, result.duplicates) == (1, 2)
        assert await store.count_fixes() == 52


def test_row_count_equals_distinct_unit_times(layout: str, layout_dsn: str) -> None:
    with start_blocking_portal(backend="asyncio") as portal:
        store = portal.call(open_layout_store, layout_dsn, layout)

        @settings(max_examples=25)
        @given(batches=st.lists(batch_st, min_size=1, max_size=3))
        def check(batches: list[FixBatch]) -> None:
            with psycopg.connect(layout_dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE fixes")
            seen: set[tuple[str, int]] = set()
            for b in batches:
                keys = set(zip(b.unit_id.tolist(), b.t_us.tolist(), strict=True))
                result = portal.call(store.write_batch, b)
                assert result.inserted == len(keys - seen)
                assert result.inserted + result.duplicates == len(b)
                seen |= keys
            assert portal.call(store.count_fixes) == len(seen)

        try:
            check()
        finally:
            portal.call(partial(store.aclose))


async def test_two_writers_racing_store_each_fix_once(layout: str, layout_dsn: str) -> None:
    days = [-20.0 * 86_400, -3.0 * 86_400, 0.0]
    batches = [
        FixBatch.from_fixes([fix(f"u{u}", d + s) for u in range(30) for d in days for s in (0, k)])
        for k in range(1, 5)
    ]
    a = await open_layout_store(layout_dsn, layout)
    b = await open_layout_store(layout_dsn, layout)
    try:
        async with asyncio.TaskGroup() as tg:
            results = [
                tg.create_task(store.write_batch(batch), name=f"writer-{i}-{j}")
                for j, batch in enumerate(batches)
                for i, store in enumerate((a, b))
            ]
    finally:
        await a.aclose()
        await b.aclose()
    distinct = {
        (u, t) for bt in batches for u, t in zip(bt.unit_id.tolist(), bt.t_us.tolist(), strict=True)
    }
    assert sum(r.result().inserted for r in results) == len(distinct)
    assert await count_all(layout_dsn) == len(distinct)


async def test_fixes_hourly_counts_fixes_per_unit_and_utc_hour(
    layout: str, layout_dsn: str
) -> None:
    fixes = [
        fix(f"u{u}", h * 3600.0 + s * 7.0, speed_kmh=float(s))
        for u in range(3)
        for h in range(-30, 2, 5)
        for s in range(u + h % 4 + 1)
    ]
    want = Counter((f.unit_id, (f.t_us // 3_600_000_000) * 3600) for f in fixes)
    async with await open_layout_store(layout_dsn, layout) as store:
        await store.write_batch(FixBatch.from_fixes(fixes))
        await store.run_timescaledb_jobs()  # materialise what the policy would (no-op native)
    with psycopg.connect(layout_dsn) as conn:
        conn.execute("SET TimeZone = 'America/Caracas'")  # buckets are UTC whatever the session
        rows = conn.execute(
            "SELECT unit_id, extract(epoch FROM hour)::bigint, fixes FROM fixes_hourly"
        ).fetchall()
    assert {(str(u), int(h)): int(n) for u, h, n in rows} == dict(want)

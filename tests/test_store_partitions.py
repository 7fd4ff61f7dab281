"""Day partitions: ahead of time, on demand for late data, DEFAULT for the rest, retention."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.fixes import Fix, FixBatch
from store import Store, UnitRow
from store.partitions import (
    detach_partitions_older_than,
    existing_partition_days,
    partition_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW_S = 1_790_000_000  # 2026-09-21T14:13:20Z
TODAY = NOW_S // 86_400
DAY_US = 86_400 * 1_000_000


def fix_on(day: int, unit: str = "u1", second: int = 3600) -> Fix:
    t = day * DAY_US + second * 1_000_000
    return Fix(unit_id=unit, t_us=t, recv_us=NOW_S * 1_000_000, lat=50.0, lon=8.0)


async def open_store(dsn: str, now_s: float = NOW_S, **kw: Any) -> Store:
    return await Store.open(
        dsn, partitioning="native", clock=lambda: now_s, partition_days_ahead=2, **kw
    )


def where_rows_are(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tableoid::regclass::text, count(*) FROM fixes GROUP BY 1")
        return {str(k): int(v) for k, v in rows.fetchall()}


async def partition_days(dsn: str) -> set[int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await existing_partition_days(conn)


async def test_partitions_are_created_ahead_at_open(pg_dsn: str) -> None:
    async with await open_store(pg_dsn):
        assert await partition_days(pg_dsn) == {TODAY, TODAY + 1, TODAY + 2}
    with psycopg.connect(pg_dsn) as conn:
        kind = conn.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass"
        ).fetchone()
    assert kind == ("r",), "fixes is RANGE-partitioned"


async def test_late_data_gets_its_own_day_partition(pg_dsn: str) -> None:
    async with await open_store(pg_dsn, partition_max_late_days=30) as store:
        late = [fix_on(TODAY - 9), fix_on(TODAY - 9, second=7200), fix_on(TODAY - 30)]
        assert (await store.write_batch(FixBatch.from_fixes(late))).inserted == 3
    assert where_rows_are(pg_dsn) == {
        partition_name(TODAY - 9): 2,
        partition_name(TODAY - 30): 1,
    }


async def test_default_partition_catches_far_past_and_future(pg_dsn: str) -> None:
    async with await open_store(pg_dsn, partition_max_late_days=30) as store:
        batch = [fix_on(TODAY - 31), fix_on(3650), fix_on(TODAY + 3), fix_on(TODAY + 400)]
        batch.append(fix_on(TODAY))
        assert (await store.write_batch(FixBatch.from_fixes(batch))).inserted == 5
    assert where_rows_are(pg_dsn) == {"fixes_default": 4, partition_name(TODAY): 1}
    assert await partition_days(pg_dsn) == {TODAY, TODAY + 1, TODAY + 2}


async def test_rows_in_default_move_when_their_day_gets_a_partition(pg_dsn: str) -> None:
    future = TODAY + 5
    async with await open_store(pg_dsn) as store:
        await store.write_batch(FixBatch.from_fixes([fix_on(future), fix_on(future, "u2")]))
    assert where_rows_are(pg_dsn) == {"fixes_default": 2}
    # five days later, that day is today: its partition is created, the rows move into it
    async with await open_store(pg_dsn, now_s=NOW_S + 5 * 86_400) as store:
        assert (await store.write_batch(FixBatch.from_fixes([fix_on(future, "u3")]))).inserted == 1
        # and the moved rows still count as duplicates
        assert (await store.write_batch(FixBatch.from_fixes([fix_on(future)]))).duplicates == 1
    assert where_rows_are(pg_dsn) == {partition_name(future): 3}


async def test_detach_partitions_older_than(pg_dsn: str) -> None:
    async with await open_store(pg_dsn) as store:
        days = [TODAY - 20, TODAY - 8, TODAY - 7, TODAY - 1, TODAY]
        await store.write_batch(FixBatch.from_fixes([fix_on(d) for d in days]))
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        gone = await detach_partitions_older_than(conn, 7, now_us=NOW_S * 1_000_000)
        assert gone == [partition_name(TODAY - 20), partition_name(TODAY - 8)]
        assert await detach_partitions_older_than(conn, 7, now_us=NOW_S * 1_000_000) == []
        assert await existing_partition_days(conn) == {
            TODAY - 7,
            TODAY - 1,
            TODAY,
            TODAY + 1,
            TODAY + 2,
        }
        cur = await conn.execute("SELECT count(*) FROM fixes")
        assert await cur.fetchone() == (3,)
        # detached, not dropped: the day's rows are kept in a plain table for archiving
        cur = await conn.execute(f"SELECT count(*) FROM {partition_name(TODAY - 20)}")
        assert await cur.fetchone() == (1,)
        dropped = await detach_partitions_older_than(conn, 0, now_us=NOW_S * 1_000_000, drop=True)
        assert dropped == [partition_name(TODAY - 7), partition_name(TODAY - 1)]
        cur = await conn.execute("SELECT to_regclass(%s)", (partition_name(TODAY - 1),))
        assert await cur.fetchone() == (None,)


async def test_late_fix_for_a_detached_day_goes_to_default(pg_dsn: str) -> None:
    async with await open_store(pg_dsn) as store:
        await store.write_batch(FixBatch.from_fixes([fix_on(TODAY - 10)]))
        assert await store.detach_partitions_older_than(7) == [partition_name(TODAY - 10)]
        result = await store.write_batch(FixBatch.from_fixes([fix_on(TODAY - 10, "u2")]))
        assert result.inserted == 1
    assert where_rows_are(pg_dsn) == {"fixes_default": 1}


async def test_one_vehicle_over_a_time_range_uses_an_index(pg_dsn: str) -> None:
    async with await open_store(pg_dsn) as store:
        await store.upsert_units([UnitRow(unit_id=f"u{i}", vehicle_id=f"v{i}") for i in range(20)])
        await store.write_batch(
            FixBatch.from_fixes([fix_on(TODAY, f"u{i}", s) for i in range(20) for s in range(50)])
        )
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("ANALYZE fixes")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM fixes WHERE vehicle_id = 'v1' "
                "AND t >= to_timestamp(%s) AND t < to_timestamp(%s)",
                (TODAY * 86_400, TODAY * 86_400 + 3600),
            ).fetchall()
        )
    assert f"Index Scan on {partition_name(TODAY)}_vehicle_id_t_idx" in plan or (
        f"Index Scan using {partition_name(TODAY)}_vehicle_id_t_idx" in plan
    ), plan
    assert "fixes_default" not in plan, "the other partitions are pruned"
    assert partition_name(TODAY + 1) not in plan, plan


async def test_retention_drops_whole_days_on_both_layouts(layout: str, layout_dsn: str) -> None:
    """Native: day partitions detached and dropped; hypertable: drop_chunks.  Either way the
    rows of days older than the retention go, by whole days, and newer rows stay."""
    async with await Store.open(
        layout_dsn,
        partitioning=layout,  # type: ignore[arg-type]
        clock=lambda: NOW_S,
        partition_days_ahead=2,
    ) as store:
        assert store.layout == layout
        days = [TODAY - 20, TODAY - 8, TODAY - 7, TODAY]
        await store.write_batch(
            FixBatch.from_fixes([fix_on(d, second=s) for d in days for s in (10, 80_000)])
        )
        gone = await store.detach_partitions_older_than(7, drop=True)
        assert len(gone) == 2, gone
        if layout == "native":
            assert gone == [partition_name(TODAY - 20), partition_name(TODAY - 8)]
        assert await store.count_fixes() == 4
        left = await store.fixes_for_unit("u1", -(2**62), 2**62)
        assert sorted({int(t) // DAY_US for t in left.t_us}) == [TODAY - 7, TODAY]

"""Writing fixes and dead letters into a real PostgreSQL (private server, fresh database)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import psycopg
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import FIX_COLUMNS, DeadLetter, Fix, FixBatch
from store import Store, StoreWriteError, UnitRow, WriteResult

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW_S = 1_790_000_000  # 2026-09-21T14:13:20Z: the stores here run on this fixed clock
NOW_US = NOW_S * 1_000_000
DAY_US = 86_400 * 1_000_000


def fix(unit: str = "u1", dt_s: float = 0.0, **kw: Any) -> Fix:
    t = NOW_US + round(dt_s * 1_000_000)
    return Fix(
        **{"unit_id": unit, "t_us": t, "recv_us": t + 700_000, "lat": 55.75, "lon": 37.62, **kw}
    )


def assert_batches_equal(got: FixBatch, want: FixBatch) -> None:
    for name in FIX_COLUMNS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


async def open_fixed_clock_store(dsn: str) -> Store:
    return await Store.open(dsn, partitioning="native", clock=lambda: float(NOW_S))


async def test_round_trip_is_exact_including_nan_and_minus_one(pg_dsn: str) -> None:
    full = fix(
        "u1",
        0.25,
        speed_kmh=42.5,
        course=359.9,
        quality=2,
        sats=11,
        hdop=0.7,
        alt_m=-12.3,
        talker="GN",
        lat=-33.868820123456789,
        lon=151.209295987654321,
    )
    sparse = fix("u1", 1.0)  # NaN floats, -1 integers: stored as NULL, read back as NaN / -1
    late = fix("u1", -3 * 86_400 + 0.000001)  # a buffered fix from three days ago, µs precision
    other = fix("ünit-2", 0.25, talker="QZ")
    async with await open_fixed_clock_store(pg_dsn) as store:
        result = await store.write_batch(FixBatch.from_fixes([full, sparse, late, other]))
        assert result == WriteResult(inserted=4, duplicates=0, dead_letters=0)
        got = await store.fixes_for_unit("u1", NOW_US - 4 * DAY_US, NOW_US + DAY_US)
        assert_batches_equal(got, FixBatch.from_fixes([late, full, sparse]))
        assert got.to_fixes()[2].quality == -1
        assert math.isnan(got.to_fixes()[2].speed_kmh)
        assert_batches_equal(
            await store.fixes_for_unit("ünit-2", NOW_US, NOW_US + DAY_US),
            FixBatch.from_fixes([other]),
        )
        # the range is half-open: [start, end)
        assert len(await store.fixes_for_unit("u1", NOW_US + 250_000, NOW_US + 1_000_000)) == 1
    with psycopg.connect(pg_dsn) as conn:
        nulls = conn.execute(
            "SELECT speed_kmh, course, quality, sats, hdop, alt_m FROM fixes "
            "WHERE unit_id = 'u1' AND t = to_timestamp(%s)",
            (NOW_S + 1,),
        ).fetchall()
    assert nulls == [(None, None, None, None, None, None)], "unknowns are SQL NULL in the table"


async def test_same_batch_twice_is_stored_once(store: Store) -> None:
    batch = FixBatch.from_fixes([fix("u1", i) for i in range(50)] + [fix("u2", 0)])
    assert await store.write_batch(batch) == WriteResult(inserted=51, duplicates=0, dead_letters=0)
    assert await store.write_batch(batch) == WriteResult(inserted=0, duplicates=51, dead_letters=0)
    assert await store.count_fixes() == 51
    assert await store.count_fixes("u1") == 50


async def test_duplicates_within_one_batch_keep_the_first(store: Store) -> None:
    first = fix("u1", 0, talker="GP", speed_kmh=10.0)
    again = fix("u1", 0, talker="GP", speed_kmh=10.0)
    gnrmc = fix("u1", 0, talker="GN", speed_kmh=11.0)  # GPRMC + GNRMC of one epoch
    batch = FixBatch.from_fixes([first, fix("u1", 1), again, gnrmc, fix("u1", 1)])
    result = await store.write_batch(batch)
    assert result == WriteResult(inserted=2, duplicates=3, dead_letters=0)
    got = (await store.fixes_for_unit("u1", NOW_US - DAY_US, NOW_US + DAY_US)).to_fixes()
    assert len(got) == 2
    assert (got[0].t_us, got[0].talker, got[0].speed_kmh) == (first.t_us, "GP", 10.0)
    assert got[1].t_us == first.t_us + 1_000_000


async def test_vehicle_id_is_joined_from_the_unit_registry(store: Store, pg_dsn: str) -> None:
    await store.upsert_units(
        [
            UnitRow(unit_id="u1", vehicle_id="truck-7", driver="Ann"),
            UnitRow(unit_id="u2", vehicle_id="truck-8"),
        ]
    )
    await store.upsert_units([UnitRow(unit_id="u2", vehicle_id="truck-9", driver="Bo")])
    assert await store.load_units() == {
        "u1": UnitRow(unit_id="u1", vehicle_id="truck-7", driver="Ann"),
        "u2": UnitRow(unit_id="u2", vehicle_id="truck-9", driver="Bo"),
    }
    await store.write_batch(FixBatch.from_fixes([fix("u1"), fix("u2"), fix("u3")]))
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT unit_id, vehicle_id FROM fixes ORDER BY unit_id").fetchall()
    assert rows == [("u1", "truck-7"), ("u2", "truck-9"), ("u3", None)]


def dead_letter(reason: str = "bad_checksum", unit: str | None = "u1") -> DeadLetter:
    return DeadLetter(
        topic=f"fleet/{unit}/nmea",
        unit_id=unit,
        reason=reason,
        detail="checksum *4A, computed *4B\x00",
        payload=b"$GPRMC,\x00\xff*4A\r\n",
        recv_us=NOW_US,
    )


async def test_dead_letters_are_stored_with_the_fixes(store: Store, pg_dsn: str) -> None:
    other = replace(dead_letter(), payload=b"$GPRMC,garbled*00\r\n")
    dls = [dead_letter(), other, dead_letter("unknown_unit", None)]
    result = await store.write_batch(FixBatch.from_fixes([fix()]), dls)
    assert result == WriteResult(inserted=1, duplicates=0, dead_letters=3)
    assert await store.dead_letter_counts() == {"bad_checksum": 2, "unknown_unit": 1}
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT topic, unit_id, detail, payload, recv_at = to_timestamp(%s) "
            "FROM dead_letters WHERE unit_id IS NULL",
            (NOW_S,),
        ).fetchone()
    assert row == (
        "fleet/None/nmea",
        None,
        "checksum *4A, computed *4B\ufffd",
        b"$GPRMC,\x00\xff*4A\r\n",
        True,
    )
    # a batch of only dead letters is fine too
    assert await store.write_batch(FixBatch.empty(), [dead_letter("oversize")]) == WriteResult(
        inserted=0, duplicates=0, dead_letters=1
    )


async def test_redelivered_dead_letters_are_kept_once(store: Store, pg_dsn: str) -> None:
    """A QoS 1 redelivery decodes to the same rejects: stored once, last_recv_at moves."""
    first = dead_letter()
    again = replace(first, recv_us=first.recv_us + 3_600_000_000)
    # twice in one batch (a redelivery that lands in the batch of its original) ...
    assert (await store.write_batch(FixBatch.empty(), [first, first])).dead_letters == 1
    # ... and again an hour later, after a crash
    assert (await store.write_batch(FixBatch.empty(), [again])).dead_letters == 0
    assert await store.dead_letter_counts() == {"bad_checksum": 1}
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM last_recv_at - recv_at) FROM dead_letters"
        ).fetchone()
    assert row is not None
    assert float(row[0]) == 3600.0
    # the same bytes refused for another reason, from another topic, or in another message
    # (another source) are other rows
    other_reason = replace(first, reason="malformed")
    other_topic = replace(first, topic="fleet/u2/nmea", unit_id="u2")
    other_message = replace(first, source=b"another message")
    result = await store.write_batch(FixBatch.empty(), [other_reason, other_topic, other_message])
    assert result.dead_letters == 3


async def test_failure_mid_transaction_stores_neither_fixes_nor_dead_letters(
    store: Store, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON dead_letters FOR EACH ROW EXECUTE FUNCTION fail()"
        )
    with pytest.raises(StoreWriteError, match="injected failure"):
        await store.write_batch(
            FixBatch.from_fixes([fix("u1", i) for i in range(10)]), [dead_letter()]
        )
    assert await store.count_fixes() == 0, "the fixes were rolled back with the dead letter"
    assert await store.dead_letter_counts() == {}
    # the store (and its pooled connection's staging table) is still usable afterwards
    assert (await store.write_batch(FixBatch.from_fixes([fix("u1", 0)]))).inserted == 1


async def test_nul_in_unit_id_is_a_write_error(store: Store) -> None:
    with pytest.raises(StoreWriteError, match="NUL"):
        await store.write_batch(FixBatch.from_fixes([fix("u\x001")]))


# --- Hypothesis: random batches with duplicates, against a plain set of (unit, t) ----------

batch_st = st.lists(
    st.builds(
        fix,
        unit=st.sampled_from(["u1", "u2", "ü3", "long-unit-id-0000000000042"]),
        dt_s=st.sampled_from([-5 * 86_400.0, -1.0, 0.0, 0.5, 1.0, 2.0, 86_400.0]),
        talker=st.sampled_from(["GP", "GN", "BD"]),
        speed_kmh=st.one_of(st.just(math.nan), st.floats(0, 300, width=32)),
        quality=st.integers(-1, 8),
    ),
    max_size=30,
).map(FixBatch.from_fixes)


def test_row_count_equals_distinct_unit_times(pg_dsn: str) -> None:
    with start_blocking_portal(backend="asyncio") as portal:
        store = portal.call(open_fixed_clock_store, pg_dsn)
        call: Callable[..., Any] = portal.call

        @settings(max_examples=60)
        @given(batches=st.lists(batch_st, min_size=1, max_size=4))
        def check(batches: list[FixBatch]) -> None:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE fixes")
            seen: set[tuple[str, int]] = set()
            for b in batches:
                keys = set(zip(b.unit_id.tolist(), b.t_us.tolist(), strict=True))
                result = call(store.write_batch, b)
                assert result.inserted == len(keys - seen)
                assert result.inserted + result.duplicates == len(b)
                seen |= keys
            assert call(store.count_fixes) == len(seen)

        try:
            check()
        finally:
            portal.call(partial(store.aclose))


async def test_two_writers_racing_on_the_same_fixes_store_each_once(pg_dsn: str) -> None:
    """Two ingesters (e.g. a redelivery to a restarted one while the old one still commits):
    overlapping batches, new day partitions on both sides; no error, every fix once."""
    days = [-20.0 * 86_400, -3.0 * 86_400, 0.0]
    batches = [
        FixBatch.from_fixes([fix(f"u{u}", d + s) for u in range(30) for d in days for s in (0, k)])
        for k in range(1, 7)
    ]
    a, b = await open_fixed_clock_store(pg_dsn), await open_fixed_clock_store(pg_dsn)
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
    assert await count_all(pg_dsn) == len(distinct)


async def count_all(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM fixes")
        row = await cur.fetchone()
    return int(row[0]) if row else -1


f32 = st.one_of(st.just(math.nan), st.floats(width=32, allow_nan=False, allow_infinity=False))
exact_fix_st = st.builds(
    Fix,
    unit_id=st.sampled_from(["u1", "ü-2", "unit-with-a-rather-long-identifier-3"]),
    t_us=st.integers(NOW_US - 400 * DAY_US, NOW_US + 30 * DAY_US),  # day partitions + DEFAULT
    recv_us=st.integers(0, 2**53),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed_kmh=f32,
    course=f32,
    quality=st.integers(-1, 8),
    sats=st.integers(-1, 127),
    hdop=f32,
    alt_m=f32,
    talker=st.sampled_from(["GP", "GN", "GL", "GA", "GB", "BD", "QZ"]),
)


def test_random_batches_round_trip_exactly(pg_dsn: str) -> None:
    with start_blocking_portal(backend="asyncio") as portal:
        store = portal.call(open_fixed_clock_store, pg_dsn)

        @settings(max_examples=40)
        @given(fixes=st.lists(exact_fix_st, max_size=25, unique_by=lambda f: (f.unit_id, f.t_us)))
        def check(fixes: list[Fix]) -> None:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE fixes")
            portal.call(store.write_batch, FixBatch.from_fixes(fixes))
            for unit in {f.unit_id for f in fixes}:
                want = sorted((f for f in fixes if f.unit_id == unit), key=lambda f: f.t_us)
                got = portal.call(store.fixes_for_unit, unit, -(2**62), 2**62)
                assert_batches_equal(got, FixBatch.from_fixes(want))

        try:
            check()
        finally:
            portal.call(partial(store.aclose))

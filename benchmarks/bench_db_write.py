"""Fix write throughput into PostgreSQL: Store.write_batch vs the usual ways, same run, same table.

Every method writes into the same schema (the store's migrations: ``fixes`` RANGE-partitioned by
day, primary key (unit_id, t), index (vehicle_id, t)), truncated before every repeat, on a
private PostgreSQL started for the run with **fsync on** (durability as in production; the test
fixture's fsync=off is not used here).  Each method commits once per batch, so every figure
includes the cost of a durable commit.

Methods:
  store_1k / store_10k   Store.write_batch: numpy-built binary COPY into a TEMP staging table,
                         then fleetwatch_insert_staged_fixes(): INSERT … SELECT, falling back
                         to ON CONFLICT DO NOTHING on a duplicate (idempotent)
  store_1k_half_redelivered  the same, when half of the fixes are already stored
  write_row_stage_1k     the same staging + INSERT function, but the COPY rows sent with
                         psycopg's copy.write_row (one Python tuple per fix)
  write_row_direct_1k    psycopg copy.write_row COPY straight into fixes (NOT idempotent:
                         a redelivered fix would abort the batch)
  executemany_1k         cursor.executemany(INSERT … ON CONFLICT DO NOTHING), a batch per commit
  insert_per_row         one INSERT and one COMMIT per fix (the naive pipeline's writer)

Run: python benchmarks/bench_db_write.py [--repeats 5] [--rows 50000] [--per-row-rows 2000]
     [--dsn DSN]  (default: a private server from store.embedded, fsync on)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import positive_int

from core.fixes import FixBatch, us_to_datetime
from store import Store, UnitRow
from store.embedded import open_embedded_postgres
from store.fixes import COPY_STAGE_SQL, STAGE_TABLE_DDL, encode_fix_copy

T0_US = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z
UNITS = 1_500


def make_batch(n: int, *, first: int = 0) -> FixBatch:
    """n fixes of 1,500 units at 1 Hz from T0, as the ingest shell hands them over."""
    rng = np.random.default_rng(first + n)
    idx = np.arange(first, first + n)
    unit = np.array([f"unit-{i:05d}" for i in range(UNITS)])[idx % UNITS]
    t = T0_US + (idx // UNITS) * 1_000_000
    return FixBatch(
        unit_id=unit,
        t_us=t.astype(np.int64),
        recv_us=(t + 700_000).astype(np.int64),
        lat=rng.uniform(50.0, 50.2, n),
        lon=rng.uniform(8.5, 8.8, n),
        speed_kmh=rng.uniform(0, 90, n).astype(np.float32),
        course=rng.uniform(0, 360, n).astype(np.float32),
        quality=np.ones(n, dtype=np.int8),
        sats=rng.integers(4, 14, n).astype(np.int8),
        hdop=rng.uniform(0.6, 2.0, n).astype(np.float32),
        alt_m=rng.uniform(90, 130, n).astype(np.float32),
        talker=np.where(rng.random(n) < 0.5, "GP", "GN"),
    )


def split(batch: FixBatch, size: int) -> list[FixBatch]:
    return [batch.take(np.arange(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]


def nan_none(x: float) -> float | None:
    return None if x != x else x


def neg_none(x: int) -> int | None:
    return None if x < 0 else x


def rows_of(b: FixBatch) -> list[tuple[Any, ...]]:
    """Row tuples for the baselines (built before timing: only the writing is measured)."""
    return [
        (
            u,
            us_to_datetime(t),
            us_to_datetime(r),
            la,
            lo,
            nan_none(s),
            nan_none(c),
            neg_none(q),
            neg_none(sa),
            nan_none(h),
            nan_none(a),
            tk,
        )
        for u, t, r, la, lo, s, c, q, sa, h, a, tk in zip(
            b.unit_id.tolist(),
            b.t_us.tolist(),
            b.recv_us.tolist(),
            b.lat.tolist(),
            b.lon.tolist(),
            b.speed_kmh.tolist(),
            b.course.tolist(),
            b.quality.tolist(),
            b.sats.tolist(),
            b.hdop.tolist(),
            b.alt_m.tolist(),
            b.talker.tolist(),
            strict=True,
        )
    ]


COLS = "unit_id, t, recv_at, lat, lon, speed_kmh, course, quality, sats, hdop, alt_m, talker"
INSERT_ROW = f"INSERT INTO fixes ({COLS}) VALUES ({', '.join(['%s'] * 12)}) ON CONFLICT DO NOTHING"
TYPES = [
    "text",
    "timestamptz",
    "timestamptz",
    "float8",
    "float8",
    "float4",
    "float4",
    "int2",
    "int2",
    "float4",
    "float4",
    "text",
]
STAGE_TYPES = [
    "int4",
    "timestamptz",
    "timestamptz",
    "float8",
    "float8",
    "float4",
    "float4",
    "int2",
    "int2",
    "float4",
    "float4",
    "text",
    "text",
]


async def run_store(store: Store, batches: list[FixBatch]) -> None:
    for b in batches:
        await store.write_batch(b)


async def run_write_row_stage(conn: psycopg.AsyncConnection[Any], batches: list[FixBatch]) -> None:
    """Same SQL as the store (staging, then fleetwatch_insert_staged_fixes()); only the COPY
    stream differs: built by psycopg's write_row, one tuple per fix (and no numpy dedupe: the
    data has no duplicates)."""
    for b in batches:
        n = len(b)
        rows = zip(
            range(n),
            (us_to_datetime(t) for t in b.t_us.tolist()),
            (us_to_datetime(t) for t in b.recv_us.tolist()),
            b.lat.tolist(),
            b.lon.tolist(),
            b.speed_kmh.tolist(),
            b.course.tolist(),
            b.quality.tolist(),
            b.sats.tolist(),
            b.hdop.tolist(),
            b.alt_m.tolist(),
            b.unit_id.tolist(),
            b.talker.tolist(),
            strict=True,
        )
        async with conn.transaction(), conn.cursor() as cur:
            async with cur.copy(COPY_STAGE_SQL) as copy:
                copy.set_types(STAGE_TYPES)
                for row in rows:
                    await copy.write_row(row)
            await cur.execute("SELECT fleetwatch_insert_staged_fixes()")


async def run_write_row_direct(
    conn: psycopg.AsyncConnection[Any], batches: list[list[tuple[Any, ...]]]
) -> None:
    for rows in batches:
        async with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY fixes ({COLS}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(TYPES)
            for row in rows:
                await copy.write_row(row)


async def run_executemany(
    conn: psycopg.AsyncConnection[Any], batches: list[list[tuple[Any, ...]]]
) -> None:
    for rows in batches:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(INSERT_ROW, rows)


async def run_per_row(conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        async with conn.transaction():
            await conn.execute(INSERT_ROW, row)


async def timed(
    conn: psycopg.AsyncConnection[Any],
    n_rows: int,
    fn: Callable[[], Awaitable[None]],
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> float:
    await conn.execute("TRUNCATE fixes")
    if prepare is not None:
        await prepare()
    await conn.execute("CHECKPOINT")  # each repeat starts from the same WAL state
    t0 = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - t0
    cur = await conn.execute("SELECT count(*) FROM fixes")
    row = await cur.fetchone()
    if row is None or row[0] != n_rows:
        raise RuntimeError(f"wrote {row}, expected {n_rows}: the benchmark is wrong")
    return n_rows / elapsed


async def bench(dsn: str, *, repeats: int, n_rows: int, per_row_rows: int) -> dict[str, float]:
    store = await Store.open(dsn, partitioning="native", clock=lambda: T0_US / 1e6)
    await store.upsert_units(
        [UnitRow(unit_id=f"unit-{i:05d}", vehicle_id=f"truck-{i:04d}") for i in range(UNITS)]
    )
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(STAGE_TABLE_DDL)
    data = make_batch(n_rows)
    b1k, b10k = split(data, 1_000), split(data, 10_000)
    rows1k = [rows_of(b) for b in b1k]
    per_row = rows_of(make_batch(per_row_rows))
    half = split(data.take(np.arange(n_rows // 2)), 1_000)
    Fn = Callable[[], Awaitable[None]]
    methods: dict[str, tuple[int, Fn] | tuple[int, Fn, Fn]] = {
        "store_1k": (n_rows, lambda: run_store(store, b1k)),
        # a redelivery: the first half of the rows is already stored (ON CONFLICT fallback)
        "store_1k_half_redelivered": (
            n_rows,
            lambda: run_store(store, b1k),
            lambda: run_store(store, half),
        ),
        "store_10k": (n_rows, lambda: run_store(store, b10k)),
        "write_row_stage_1k": (n_rows, lambda: run_write_row_stage(conn, b1k)),
        "write_row_direct_1k": (n_rows, lambda: run_write_row_direct(conn, rows1k)),
        "executemany_1k": (n_rows, lambda: run_executemany(conn, rows1k)),
        "insert_per_row": (per_row_rows, lambda: run_per_row(conn, per_row)),
    }
    results: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):  # interleaved, so machine-load drift hits every method alike
        for name, (n, fn, *prepare) in methods.items():
            results[name].append(await timed(conn, n, fn, *prepare))
    enc = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in b10k:
            encode_fix_copy(b)
        enc.append(n_rows / (time.perf_counter() - t0))
    await conn.close()
    await store.aclose()
    medians = {name: statistics.median(v) for name, v in results.items()}
    medians["encode_only_10k"] = statistics.median(enc)
    for name, v in results.items():
        print(f"  {name:22s} " + " ".join(f"{x:>10,.0f}" for x in v), file=sys.stderr)
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--rows", type=positive_int, default=50_000)
    ap.add_argument("--per-row-rows", type=positive_int, default=2_000)
    ap.add_argument("--dsn", default=os.environ.get("FLEETWATCH_BENCH_DATABASE_URL"))
    args = ap.parse_args()
    kw = {"repeats": args.repeats, "n_rows": args.rows, "per_row_rows": args.per_row_rows}
    if args.dsn:
        med = asyncio.run(bench(args.dsn, **kw))
        where = "given server"
    else:
        base = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-pg-"))
        try:
            with open_embedded_postgres(base, fsync=True) as pg:
                with psycopg.connect(pg.dsn, autocommit=True) as c:
                    c.execute("CREATE DATABASE bench TEMPLATE template0")
                dsn = psycopg.conninfo.make_conninfo(pg.dsn, dbname="bench")
                med = asyncio.run(bench(dsn, **kw))
                where = f"private PostgreSQL ({pg.bindir}), fsync on"
        finally:
            shutil.rmtree(base, ignore_errors=True)
    base_rate = med["executemany_1k"]
    print(f"fix writes, rows/s, median of {args.repeats} ({where}, {os.cpu_count()} CPUs)")
    print(f"{'method':24s} {'rows/s':>12s} {'vs executemany':>15s}")
    for name, v in med.items():
        if name != "encode_only_10k":
            print(f"{name:24s} {v:>12,.0f} {v / base_rate:>14.2f}x")
    print(f"(encode_fix_copy alone, no database: {med['encode_only_10k']:,.0f} rows/s)")
    print(
        f"store_1k / write_row_stage_1k = {med['store_1k'] / med['write_row_stage_1k']:.2f}x; "
        f"store_1k / insert_per_row = {med['store_1k'] / med['insert_per_row']:.0f}x"
    )


if __name__ == "__main__":
    main()

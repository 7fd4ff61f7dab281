"""The fixes table's two layouts, same server, same data, same run: native day partitions vs a
TimescaleDB hypertable (1-day chunks, compressed after the day).

One private PostgreSQL 15 server of the TimescaleDB-enabled copy (scripts/timescaledb.sh),
``timescaledb`` preloaded, **fsync on**, no TimescaleDB background workers (jobs run when we
say); two databases on it: ``native`` (``Store.open(partitioning="native")``) and
``hypertable`` (``partitioning="timescaledb"``).  Both get the same fleet days.

Measured, per layout:
  ingest     rows/s through the store's real path (Store.write_batch: binary COPY into the
             staging table, INSERT … SELECT, one commit per batch), repeats interleaved
             between the layouts, tables truncated before each repeat
  storage    bytes per fleet day: the day partition (native) vs the day's chunk before and
             after compression (table + indexes + TOAST)
  analytics  "fixes per unit per hour over one day" from fixes_hourly (a view over the
             partitions on native; the continuous aggregate, refreshed, on the hypertable),
             and the same GROUP BY over the raw (compressed) chunks; and one unit's day track
             (the application's own read), median of --query-repeats

Run: python benchmarks/bench_store_layouts.py [--days 2] [--units 100] [--per-unit-day 5760]
     [--batch 10000] [--repeats 3] [--query-repeats 15]
     (needs $FLEETWATCH_PG_TSDB_BINDIR or builds the copy with scripts/timescaledb.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import positive_int

from core.fixes import FixBatch
from store import Store, UnitRow
from store.embedded import open_embedded_postgres
from store.partitions import Partitioning

DAY_US = 86_400 * 1_000_000
T0_DAY = 20_000  # 2024-10-04: far enough in the past for every policy, a fixed date
LAYOUTS: dict[str, Partitioning] = {"native": "native", "hypertable": "timescaledb"}


def tsdb_bindir() -> Path:
    env = os.environ.get("FLEETWATCH_PG_TSDB_BINDIR")
    if env:
        return Path(env)
    script = Path(__file__).resolve().parents[1] / "scripts" / "timescaledb.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"no TimescaleDB build: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


def fleet_day(day: int, *, units: int, per_unit: int, seed: int) -> FixBatch:
    """A working day (from 07:00 UTC) of *units* trucks, *per_unit* fixes each, evenly spaced:
    positions are random walks (what GPS tracks look like to a compressor), speeds piecewise."""
    rng = np.random.default_rng(seed)
    step_us = (10 * 3_600_000_000) // per_unit
    t = day * DAY_US + 7 * 3_600_000_000 + np.arange(per_unit, dtype=np.int64) * step_us
    n = units * per_unit
    lat = (50.0 + rng.uniform(0, 0.2, units))[:, None] + np.cumsum(
        rng.normal(0, 2e-5, (units, per_unit)), axis=1
    )
    lon = (8.5 + rng.uniform(0, 0.3, units))[:, None] + np.cumsum(
        rng.normal(0, 3e-5, (units, per_unit)), axis=1
    )
    speed = np.repeat(rng.uniform(0, 70, (units, per_unit // 20 + 1)), 20, axis=1)[:, :per_unit]
    return FixBatch(
        unit_id=np.repeat(np.array([f"unit-{u:05d}" for u in range(units)]), per_unit),
        t_us=np.tile(t, units),
        recv_us=np.tile(t + 700_000, units),
        lat=lat.reshape(-1),
        lon=lon.reshape(-1),
        speed_kmh=speed.reshape(-1).astype(np.float32),
        course=rng.uniform(0, 360, n).astype(np.float32),
        quality=np.ones(n, dtype=np.int8),
        sats=rng.integers(6, 12, n).astype(np.int8),
        hdop=np.round(rng.uniform(0.6, 1.6, n), 1).astype(np.float32),
        alt_m=np.round(rng.uniform(90, 130, n), 1).astype(np.float32),
        talker=np.where(rng.random(n) < 0.8, "GN", "GP"),
    )


def in_time_order(batch: FixBatch, size: int) -> list[FixBatch]:
    """The day as the ingest shell hands it over: batches of *size* fixes in time order."""
    order = np.argsort(batch.t_us, kind="stable")
    return [batch.take(order[i : i + size]) for i in range(0, len(order), size)]


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args or None).fetchone()
    assert row is not None
    return row[0]


def timed_query(conn: psycopg.Connection[Any], query: str, args: tuple[Any, ...], n: int) -> float:
    conn.execute(query, args).fetchall()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute(query, args).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def ingest(dsn: str, layout: str, batches: list[FixBatch]) -> float:
    store = await Store.open(
        dsn,
        partitioning=LAYOUTS[layout],
        clock=lambda: float(T0_DAY * 86_400),
        partition_max_late_days=10,
        compress_after_days=None,
    )
    try:
        t0 = time.perf_counter()
        for b in batches:
            await store.write_batch(b)
        return sum(len(b) for b in batches) / (time.perf_counter() - t0)
    finally:
        await store.aclose()


async def bench(dsns: dict[str, str], args: argparse.Namespace) -> None:
    days = [T0_DAY + d for d in range(args.days)]
    data = [fleet_day(d, units=args.units, per_unit=args.per_unit_day, seed=d) for d in days]
    batches = [b for day in data for b in in_time_order(day, args.batch)]
    n_rows = sum(len(b) for b in batches)
    units = [
        UnitRow(unit_id=f"unit-{u:05d}", vehicle_id=f"truck-{u:04d}") for u in range(args.units)
    ]
    for layout, dsn in dsns.items():
        async with await Store.open(
            dsn, partitioning=LAYOUTS[layout], compress_after_days=None
        ) as s:
            await s.upsert_units(units)
    rates: dict[str, list[float]] = {layout: [] for layout in dsns}
    for _ in range(args.repeats):  # interleaved: machine-load drift hits both layouts alike
        for layout, dsn in dsns.items():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE fixes")
                conn.execute("CHECKPOINT")
            rates[layout].append(await ingest(dsn, layout, batches))
            with psycopg.connect(dsn) as conn:
                if one(conn, "SELECT count(*) FROM fixes") != n_rows:
                    raise RuntimeError("row count mismatch: the benchmark is wrong")
    print(
        f"fixes: {args.days} days x {args.units} units x {args.per_unit_day} fixes, "
        f"batches of {args.batch}, fsync on, {os.cpu_count()} CPUs"
    )
    print(
        f"{'ingest rows/s (Store.write_batch)':38s} "
        + "  ".join(
            f"{k}: median {statistics.median(v):,.0f} (runs {', '.join(f'{x:,.0f}' for x in v)})"
            for k, v in rates.items()
        )
    )
    ratio = statistics.median(rates["hypertable"]) / statistics.median(rates["native"])
    print(f"{'hypertable / native ingest':38s} {ratio:.2f}x")

    day_lo = f"{days[0] * 86_400}"
    with psycopg.connect(dsns["native"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE fixes")
        native_day = statistics.median(
            one(conn, "SELECT pg_total_relation_size(%s::regclass)", f"fixes_p{d}")
            for d in [time.strftime("%Y%m%d", time.gmtime(x * 86_400)) for x in days]
        )
    with psycopg.connect(dsns["hypertable"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE fixes")
        before = statistics.median(
            int(r[0])
            for r in conn.execute(
                "SELECT total_bytes FROM chunks_detailed_size('fixes')"
            ).fetchall()
        )
        t0 = time.perf_counter()
        conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('fixes') c")
        compress_s = time.perf_counter() - t0
        after = statistics.median(
            int(r[0])
            for r in conn.execute(
                "SELECT after_compression_total_bytes FROM chunk_compression_stats('fixes')"
            ).fetchall()
        )
        conn.execute("CALL refresh_continuous_aggregate('fixes_hourly', NULL, NULL)")
        conn.execute("VACUUM ANALYZE fixes")
    mb = 1024 * 1024
    per_day = args.units * args.per_unit_day
    print(
        f"{'storage per fleet day (MB)':38s} native partition {native_day / mb:.1f}; "
        f"hypertable chunk {before / mb:.1f} uncompressed, {after / mb:.1f} compressed "
        f"({before / after:.1f}x smaller; compressing took {compress_s / args.days:.2f} s/day)"
    )
    print(
        f"{'bytes per fix':38s} native {native_day / per_day:.0f}; hypertable "
        f"{before / per_day:.0f} uncompressed, {after / per_day:.1f} compressed"
    )

    hourly = (
        "SELECT unit_id, hour, fixes FROM fixes_hourly "
        "WHERE hour >= to_timestamp(%s) AND hour < to_timestamp(%s) + interval '1 day'"
    )
    raw_hourly = (
        "SELECT unit_id, date_bin('1 hour', t, timestamptz '2000-01-01+00'), count(*) FROM fixes "
        "WHERE t >= to_timestamp(%s) AND t < to_timestamp(%s) + interval '1 day' GROUP BY 1, 2"
    )
    track = (
        "SELECT t, lat, lon, speed_kmh FROM fixes WHERE unit_id = 'unit-00007' "
        "AND t >= to_timestamp(%s) AND t < to_timestamp(%s) + interval '1 day' ORDER BY t"
    )
    q = (day_lo, day_lo)
    results: dict[str, dict[str, float]] = {}
    for layout, dsn in dsns.items():
        with psycopg.connect(dsn, autocommit=True) as conn:
            results[layout] = {
                "fixes_hourly, one day": timed_query(conn, hourly, q, args.query_repeats),
                "GROUP BY over raw fixes": timed_query(conn, raw_hourly, q, args.query_repeats),
                "one unit's day track": timed_query(conn, track, q, args.query_repeats),
            }
    for name in results["native"]:
        nat, hyp = results["native"][name], results["hypertable"][name]
        print(
            f"{'query ms (median): ' + name:38s} native {nat:8.2f}   hypertable {hyp:8.2f}   "
            f"native/hypertable {nat / hyp:.1f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--days", type=positive_int, default=2)
    ap.add_argument("--units", type=positive_int, default=100)
    ap.add_argument("--per-unit-day", type=positive_int, default=5_760, help="fixes per unit a day")
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--query-repeats", type=positive_int, default=15)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-layouts-"))
    settings = {
        "shared_preload_libraries": "timescaledb",
        "timescaledb.telemetry_level": "off",
        "timescaledb.max_background_workers": "0",
    }
    try:
        with open_embedded_postgres(
            base, fsync=True, bindir=tsdb_bindir(), settings=settings
        ) as pg:
            dsns = {}
            with psycopg.connect(pg.dsn, autocommit=True) as c:
                for name in LAYOUTS:
                    c.execute(f"CREATE DATABASE {name} TEMPLATE template0")
                    dsns[name] = make_conninfo(pg.dsn, dbname=name)
            print(f"server: {pg.bindir} (PostgreSQL 15 + TimescaleDB 2.28.3)")
            asyncio.run(bench(cast(dict[str, str], dsns), args))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The console's "last hour's track" from the store: latency of one request, against the naive
read in the same run.

A private PostgreSQL (native day partitions) holds --vehicles trucks × --hours of fixes at 1 Hz,
written by the real writer (``Store.write_batch``), and each truck's detection stops and
visits (one stop and one visit every 10 minutes, two versions each) in the outbox, written by
the real outbox writer.  Requests are for random trucks, the window ending at their newest fix.

Methods (ms per request: median and p95 over --requests random trucks; rows sent to Python):
  naive           every fix of the window sent to Python (no thinning), then the stops and
                  visits without migration 0008's index (it is dropped for this method)
  store_track     store.tracks.load_track: the window thinned in SQL to --points, stops and
                  visits through the 0008 index

Run: python benchmarks/bench_track.py [--vehicles 200] [--hours 3] [--requests 200]
     [--points 500] [--minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import psycopg
from _args import positive_int
from psycopg_pool import AsyncConnectionPool

from core.fixes import FixBatch, us_to_datetime
from schedule.events import StopEnded, StopStarted, VisitCompleted, VisitStarted
from store import Store
from store.embedded import open_embedded_postgres
from store.outbox import records_from_events, write_records
from store.tracks import load_track

S = 1_000_000
T0 = 1_795_424_400 * S  # 2026-11-23 09:00 UTC

NAIVE_FIXES = """
SELECT t, lat, lon, speed_kmh FROM fixes
 WHERE vehicle_id = %(v)s AND t >= %(since)s AND t <= %(until)s ORDER BY t
"""
NAIVE_EVENTS = """
SELECT DISTINCT ON (kind, id) kind, body FROM record_versions
 WHERE kind IN ('stop', 'visit') AND (body->>'vehicle_id') = %(v)s
   AND at >= %(since)s AND at <= %(until)s
 ORDER BY kind, id, version DESC
"""


def batch_of_minute(vehicles: int, minute: int) -> FixBatch:
    """Every truck's 60 fixes of one minute, as one columnar batch."""
    n = vehicles * 60
    k = np.arange(n)
    veh = k // 60
    t = T0 + (minute * 60 + k % 60) * S
    units = np.array([f"U{v:04d}" for v in range(vehicles)])[veh]
    step = minute * 60 + k % 60
    return FixBatch(
        unit_id=units,
        t_us=t.astype(np.int64),
        recv_us=t.astype(np.int64),
        lat=55.6 + 0.0005 * veh + 1e-5 * np.sin(step / 50.0),
        lon=37.4 + 1.5e-4 * (step % 3000),
        speed_kmh=np.full(n, 30.0, np.float32),
        course=np.full(n, np.nan, np.float32),
        quality=np.full(n, 1, np.int8),
        sats=np.full(n, 9, np.int8),
        hdop=np.full(n, 0.9, np.float32),
        alt_m=np.full(n, np.nan, np.float32),
        talker=np.full(n, "GP"),
    )


def detection(vehicle: str, hours: int) -> list[Any]:
    out: list[Any] = []
    for j in range(hours * 6):
        a = T0 + j * 600 * S
        sid, vid = f"{vehicle}/st{j}", f"{vehicle}/vi{j}"
        out += [
            StopStarted(stop_id=sid, vehicle_id=vehicle, site_id=None, start_us=a,
                        lat=55.7, lon=37.5),
            StopEnded(stop_id=sid, version=2, supersedes=1, vehicle_id=vehicle, site_id=None,
                      start_us=a, end_us=a + 120 * S, lat=55.7, lon=37.5, fix_count=120,
                      closed_by="movement"),
            VisitStarted(visit_id=vid, vehicle_id=vehicle, site_id=f"S{j}", arrival_us=a,
                         confirmed_us=a + 60 * S),
            VisitCompleted(visit_id=vid, version=2, supersedes=1, vehicle_id=vehicle,
                           site_id=f"S{j}", arrival_us=a, departure_us=a + 300 * S,
                           fix_count=300, inside_share=1.0, median_hdop=0.9,
                           closed_by="exit"),
        ]  # fmt: skip
    return out


async def fill(dsn: str, vehicles: int, hours: int) -> float:
    store = await Store.open(dsn, partitioning="native")
    t = time.perf_counter()
    try:
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            await cur.executemany(
                "INSERT INTO units (unit_id, vehicle_id) VALUES (%s, %s)",
                [(f"U{v:04d}", f"V{v:04d}") for v in range(vehicles)],
            )
        for minute in range(hours * 60):
            await store.write_batch(batch_of_minute(vehicles, minute))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for v in range(vehicles):
                await write_records(conn, records_from_events(detection(f"V{v:04d}", hours)))
            await conn.execute("ANALYZE")
    finally:
        await store.aclose()
    return time.perf_counter() - t


async def naive(pool: AsyncConnectionPool[Any], vehicle: str, until_us: int, minutes: int) -> int:
    args = {"v": vehicle, "since": us_to_datetime(until_us - minutes * 60 * S),
            "until": us_to_datetime(until_us)}  # fmt: skip
    async with pool.connection() as conn:
        rows = await (await conn.execute(NAIVE_FIXES, args)).fetchall()
        events = await (await conn.execute(NAIVE_EVENTS, args)).fetchall()
    return len(rows) + len(events)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="fw-bench-track-"))
    try:
        with open_embedded_postgres(base, fsync=True) as pg:
            load_s = await fill(pg.dsn, args.vehicles, args.hours)
            until = T0 + args.hours * 3600 * S
            rng = random.Random(7)
            picks = [f"V{rng.randrange(args.vehicles):04d}" for _ in range(args.requests)]
            out: dict[str, Any] = {
                "vehicles": args.vehicles, "hours": args.hours,
                "fixes": args.vehicles * args.hours * 3600, "load_s": round(load_s, 1),
                "minutes": args.minutes, "points": args.points,
            }  # fmt: skip
            async with AsyncConnectionPool(
                pg.dsn, min_size=2, max_size=2, kwargs={"autocommit": True}, open=False
            ) as pool:
                await pool.open(wait=True)
                for v in picks[:5]:  # warm the caches for both methods
                    await load_track(pool, v, until_us=until, minutes=args.minutes)
                ms: list[float] = []
                rows = 0
                for v in picks:
                    t = time.perf_counter()
                    tr = await load_track(
                        pool, v, until_us=until, minutes=args.minutes, max_points=args.points
                    )
                    ms.append((time.perf_counter() - t) * 1000)
                    assert tr is not None
                    rows = len(tr.t_us) + len(tr.stops) + len(tr.visits)
                out["store_track"] = summary(ms, rows)
                async with pool.connection() as conn:
                    await conn.execute("DROP INDEX record_versions_detection_vehicle_at")
                for v in picks[:5]:
                    await naive(pool, v, until, args.minutes)
                ms = []
                for v in picks:
                    t = time.perf_counter()
                    rows = await naive(pool, v, until, args.minutes)
                    ms.append((time.perf_counter() - t) * 1000)
                out["naive"] = summary(ms, rows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def summary(ms: list[float], rows: int) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "rows_to_python": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=positive_int, default=200)
    ap.add_argument("--hours", type=positive_int, default=3)
    ap.add_argument("--requests", type=positive_int, default=200)
    ap.add_argument("--points", type=positive_int, default=500)
    ap.add_argument("--minutes", type=positive_int, default=60)
    print(json.dumps(asyncio.run(run(ap.parse_args())), indent=2))


if __name__ == "__main__":
    main()

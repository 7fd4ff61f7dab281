"""The spool's costs at 2,000-fix batches, against a direct PostgreSQL write in the same run.

Everything fsyncs, on the same disk: a private PostgreSQL with **fsync on** (as in production)
and the spool file in a temp directory beside its data directory.

Methods (rows/s, median of the repeats, each repeat writes --rows fixes):
  pg_direct        Store.write_batch, one COMMIT per batch (the baseline: what ingest does today)
  sink_fast_path   SpoolingSink.write_batch with the database up and the spool empty (the
                   fast path: pg_direct plus the sink's bookkeeping, no spool fsync)
  spool_append     SpoolingSink.write_batch with the database down: encode, SQLite INSERT,
                   COMMIT (WAL fsync) on the sink's worker thread - what an outage costs a batch
  sqlite_append    SpoolFile.append alone (body encoded beforehand): SQLite's share of the above
  segment_append   the alternative design: the same body with a CRC header appended to a plain
                   file and fdatasync'ed - how much a hand-written segment log would save
  drain            SpoolingSink.drain_once from a full spool into PostgreSQL (20,000 fixes a
                   transaction): how fast a backlog empties after an outage

Run: python benchmarks/bench_spool.py [--repeats 5] [--rows 100000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import psycopg
from _args import positive_int

from benchmarks.bench_db_write import T0_US, UNITS, make_batch, split
from core.fixes import DeadLetter, FixBatch
from store import Store, StoreUnavailable, UnitRow, WriteResult
from store.embedded import open_embedded_postgres
from store.spool import SpoolingSink
from store.spool_codec import encode_batch
from store.spool_file import SpoolFile


class Down:
    """A database that is down: every write fails at once (the spool path, without the wait
    for a connection timeout that a real outage costs the first batch only)."""

    async def write_batch(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        raise StoreUnavailable("benchmark: database down")


async def truncate(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE fixes")


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


def sqlite_append(path: Path, batches: list[FixBatch], bodies: list[bytes]) -> None:
    f = SpoolFile(path)
    for b, body in zip(batches, bodies, strict=True):
        f.append(body, n_fixes=len(b), n_dead=0, appended_us=0)
    f.close()


def segment_append(path: Path, bodies: list[bytes]) -> None:
    seg = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for body in bodies:
            os.write(seg, struct.pack("<II", len(body), zlib.crc32(body)) + body)
            os.fdatasync(seg)
    finally:
        os.close(seg)


async def run(dsn: str, work: Path, rows: int, batch: int, repeats: int) -> dict[str, object]:
    batches = split(make_batch(rows), batch)
    bodies = [encode_batch(b, []) for b in batches]
    store = await Store.open(dsn, partitioning="native", clock=lambda: T0_US / 1e6)
    await store.upsert_units(
        [UnitRow(unit_id=f"unit-{i:05d}", vehicle_id=f"V{i:05d}") for i in range(UNITS)]
    )
    results: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(rows / seconds)

    try:
        for r in range(repeats):
            await truncate(dsn)

            async def pg_direct() -> None:
                for b in batches:
                    await store.write_batch(b, [])

            add("pg_direct", await timed(pg_direct))
            await truncate(dsn)
            async with await SpoolingSink.open(work / f"fast{r}.db", store) as fast:

                async def sink_fast_path() -> None:
                    for b in batches:
                        assert not (await fast.write_batch(b, [])).spooled

                add("sink_fast_path", await timed(sink_fast_path))
            await truncate(dsn)
            path = work / f"spool{r}.db"
            async with await SpoolingSink.open(path, Down()) as down:

                async def spool_append() -> None:
                    for b in batches:
                        await down.write_batch(b, [])

                add("spool_append", await timed(spool_append))
            async with await SpoolingSink.open(path, store, drain_max_fixes=20_000) as up:

                async def drain() -> None:
                    while up.statistics().batches:
                        await up.drain_once()

                add("drain", await timed(drain))
                assert up.statistics().drained_fixes_inserted == rows
            t0 = time.perf_counter()
            sqlite_append(work / f"raw{r}.db", batches, bodies)
            add("sqlite_append", time.perf_counter() - t0)
            t0 = time.perf_counter()
            segment_append(work / f"seg{r}.log", bodies)
            add("segment_append", time.perf_counter() - t0)
    finally:
        await store.aclose()
    base = statistics.median(results["pg_direct"])
    return {
        "rows": rows,
        "batch_fixes": batch,
        "repeats": repeats,
        "bytes_per_fix": round(sum(len(b) for b in bodies) / rows, 1),
        "rows_per_s_median": {k: round(statistics.median(v)) for k, v in results.items()},
        "ratio_to_pg_direct": {
            k: round(statistics.median(v) / base, 2) for k, v in results.items()
        },
        "rows_per_s_all": {k: [round(x) for x in v] for k, v in results.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--rows", type=positive_int, default=100_000)
    ap.add_argument("--batch", type=positive_int, default=2_000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-spool-pg-"))
    work = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-spool-"))
    try:
        with open_embedded_postgres(base, fsync=True) as pg:
            out = asyncio.run(run(pg.dsn, work, args.rows, args.batch, args.repeats))
        out["where"] = f"private PostgreSQL ({pg.bindir}), fsync on; spool in {work} (same disk)"
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The outbox: records/s into record_versions (+ the *_current tables) at realistic batch sizes,
against a per-record INSERT + COMMIT baseline in the same run.

A private PostgreSQL with **fsync on** (as in production).  The records are the life of a stop
as the engine publishes it (tests/outbox_world.py: stop states, an alert, a visit, exception
versions), converted once beforehand.  Each repeat starts from empty tables.

Methods (records/s, median of the repeats):
  per_record      the naive writer: for each record, one transaction: SELECT the highest
                  version of its id, INSERT version + 1, COMMIT (no dedup, no current tables);
                  over the first --baseline-records records (it is slow)
  outbox_B        store.outbox.write_records in batches of B records (one transaction each:
                  advisory lock, content dedup, versions, record_versions + *_current)
  rederived_B     the same records again (a restarted engine's re-derived day): all skipped
  writer          fleetwatch.store_writer.StoreWriter end to end: publish every stop's life
                  (8 records a call), then wait until all are committed (default batches)

Run: python benchmarks/bench_outbox.py [--repeats 3] [--stops 500] [--batches 100,1000,5000]
     [--baseline-records 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import psycopg
from _args import positive_int

from store import Store
from store.embedded import open_embedded_postgres
from store.outbox import OutboxRecord, canonical_json, records_from_events, write_records
from tests.outbox_world import stop_life

TABLES = (
    "visit_exceptions_current, alerts_current, stop_states_current, visits_current, "
    "commands_journal, record_versions"
)


async def truncate(conn: psycopg.AsyncConnection[object]) -> None:
    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    await conn.commit()


async def per_record(conn: psycopg.AsyncConnection[object], recs: list[OutboxRecord]) -> None:
    for r in recs:
        cur = await conn.execute(
            "SELECT coalesce(max(version), 0) FROM record_versions WHERE kind = %s AND id = %s",
            (r.kind, r.id),
        )
        row = await cur.fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO record_versions (kind, id, version, body, body_sha256, at) "
            "VALUES (%s, %s, %s, %s::jsonb, %s, 'epoch'::timestamptz + %s * interval '1 us')",
            (r.kind, r.id, row[0] + 1, canonical_json(r.body), r.content_sha256(), r.at_us),
        )
        await conn.commit()


async def batched(
    conn: psycopg.AsyncConnection[object], recs: list[OutboxRecord], size: int
) -> None:
    for i in range(0, len(recs), size):
        await write_records(conn, recs[i : i + size])


async def through_writer(dsn: str, lives: list[list[object]], journal: Path) -> float:
    from fleetwatch.store_writer import StoreWriter

    writer = StoreWriter(dsn, journal_path=journal, clock_us=lambda: time.time_ns() // 1000)
    task = asyncio.create_task(writer.run(), name="store-writer")
    t0 = time.perf_counter()
    for life in lives:
        writer.publish(life)
    await writer.wait_idle()
    took = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await writer.aclose()
    return took


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--stops", type=positive_int, default=500)
    ap.add_argument("--batches", default="100,1000,5000")
    ap.add_argument("--baseline-records", type=positive_int, default=1000)
    args = ap.parse_args()
    lives = [stop_life(n) for n in range(args.stops)]
    recs = records_from_events([ev for life in lives for ev in life])
    sizes = [int(x) for x in args.batches.split(",")]
    base = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-outbox-"))
    results: dict[str, list[float]] = {}
    try:
        with open_embedded_postgres(base, fsync=True) as pg:
            store = await Store.open(pg.dsn, partitioning="native")
            await store.aclose()
            async with await psycopg.AsyncConnection.connect(pg.dsn) as conn:
                for _ in range(args.repeats):
                    await truncate(conn)
                    t0 = time.perf_counter()
                    base_recs = recs[: args.baseline_records]
                    await per_record(conn, base_recs)
                    results.setdefault("per_record", []).append(
                        len(base_recs) / (time.perf_counter() - t0)
                    )
                    for size in sizes:
                        await truncate(conn)
                        t0 = time.perf_counter()
                        await batched(conn, recs, size)
                        results.setdefault(f"outbox_{size}", []).append(
                            len(recs) / (time.perf_counter() - t0)
                        )
                        t0 = time.perf_counter()
                        await batched(conn, recs, size)
                        results.setdefault(f"rederived_{size}", []).append(
                            len(recs) / (time.perf_counter() - t0)
                        )
                    await truncate(conn)
                    took = await through_writer(pg.dsn, lives, base / "outbox.db")
                    results.setdefault("writer", []).append(len(recs) / took)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    baseline = statistics.median(results["per_record"])
    out = {
        name: {
            "records_per_s": round(statistics.median(v)),
            "x_per_record": round(statistics.median(v) / baseline, 2),
            "runs": [round(x) for x in v],
        }
        for name, v in results.items()
    }
    print(json.dumps({"records": len(recs), "results": out}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())

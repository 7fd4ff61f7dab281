"""A restart's alert desk: read the latest version of N alerts (and their visit exceptions)
from PostgreSQL and rebuild the desk from them (issue 9), against re-deriving the same threads
from their schedule records (what a restart did before: every alert raised again) in the same
run.

The desk's day: N stops go late (one thread each, half of them missed later, with a missed
visit exception), a third acknowledged, a fifth commented, the rest escalated once.  All its
records are stored with ``store.outbox.write_records`` in a private PostgreSQL (fsync on).

Measured (seconds, median of the repeats; CPU of this process for the pure steps):
  read        store.outbox.load_alert_records(conn, service_date=...) -> records (wall clock:
              the server's work included; read_cpu: this process's CPU, decoding the bodies)
  restore     AlertDesk.restore(records) + finish_restore (nothing re-derived)
  rederive    a fresh desk consuming the N stops' schedule records (the old restart), for scale

Run: python benchmarks/bench_alerts_restore.py [--alerts 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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

from alerts.desk import AlertDesk
from alerts.records import AlertRecord, AlertVersion
from schedule.stop_events import Acknowledge, AddComment, ScheduleEvent
from store import Store
from store.embedded import open_embedded_postgres
from store.outbox import load_alert_records, records_from_events, write_records
from tests.alerts_helpers import DATE, roster, stop, utc


def a_day(n: int) -> tuple[list[ScheduleEvent], list[AlertRecord], AlertDesk]:
    desk = AlertDesk(roster=roster())
    vehicles = ("V001", "V002", "V003", "V004")
    late = [stop(f"S{i:05d}", "late", at="09:40", vehicle=vehicles[i % 4]) for i in range(n)]
    out: list[AlertRecord] = desk.consume(late, utc("09:40"))
    for i in range(n):
        aid = f"stop/{DATE}/S{i:05d}"
        if i % 3 == 0:
            out += desk.command(Acknowledge(alert_id=aid, version=1, by="D01"), utc("09:45"))
        elif i % 5 == 0:
            out += desk.command(AddComment(alert_id=aid, text="called", by="D02"), utc("09:45"))
    out += desk.tick(utc("09:51"))
    missed = [stop(f"S{i:05d}", "missed", at="10:10", vehicle=vehicles[i % 4])
              for i in range(0, n, 2)]  # fmt: skip
    out += desk.consume(missed, utc("10:10"))
    return late + missed, out, desk


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=positive_int, default=10_000)
    ap.add_argument("--repeats", type=positive_int, default=5)
    args = ap.parse_args()
    events, out, desk = a_day(args.alerts)
    recs = records_from_events(out)
    threads = len({r.id for r in out if isinstance(r, AlertVersion)})
    base = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-alerts-restore-"))
    res: dict[str, list[float]] = {"read": [], "read_cpu": [], "restore": [], "rederive": []}
    try:
        with open_embedded_postgres(base, fsync=True) as pg:
            store = await Store.open(pg.dsn, partitioning="native")
            await store.aclose()
            async with await psycopg.AsyncConnection.connect(pg.dsn) as conn:
                for i in range(0, len(recs), 5000):
                    await write_records(conn, recs[i : i + 5000])
                day = dt.date.fromisoformat(DATE)
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    stored = await load_alert_records(conn, service_date=day)
                    res["read"].append(time.perf_counter() - t0)
                    res["read_cpu"].append(time.process_time() - c0)
                    t0 = time.process_time()
                    again = AlertDesk(roster=roster())
                    again.restore(stored)
                    assert again.finish_restore(utc("10:10")) == []
                    res["restore"].append(time.process_time() - t0)
                    assert again.loads() == desk.loads()
                    t0 = time.process_time()
                    fresh = AlertDesk(roster=roster())
                    fresh.consume(events, utc("10:10"))
                    res["rederive"].append(time.process_time() - t0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({
        "alerts": threads,
        "records_read": len(stored),
        "stored_versions": len(recs),
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in res.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in res.items()},
        "per_alert_us": {k: round(statistics.median(v) / threads * 1e6, 1) for k, v in res.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

"""The CRM feed under a month of data, and the API's latency while records are being written.

1. **Drain**: a month of visit exceptions (``--sites`` 1,500 × ``--days`` 22 working days, every
   site-day one exception, a third of them with a second version and a ninth with a third:
   ~48,000 versions) is pulled from cursor 0 to the head through the real HTTP API (web shell +
   uvicorn + the CRM router) with ``limit=1000`` and ``limit=100``: items/s.  Baseline in the
   same run: the same pages read by SQL alone (``store.crm_queries.feed_page``, no HTTP/JSON).
2. **API under writes**: p50/p99 of a CRM client's requests (a feed page at the head, and a
   service-quality query over the month) while a writer publishes exception versions for
   ``--write-seconds``: (a) the outbox way, transactions of ``--batch`` versions under 0005's
   lock, (b) a per-row INSERT writer (one transaction per version, same lock), (c) no writer.
   Writer rows/s are reported for (a) and (b).

Private PostgreSQL with fsync on (as in production).  Run:
    python benchmarks/bench_crm_feed.py [--sites 1500 --days 22 --write-seconds 15 --batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import positive_float, positive_int

from store import Store
from store import crm_queries as q
from store.embedded import open_embedded_postgres
from tests.crm_world import (
    CRM_TOKEN,
    LOCK_SQL,
    exception_body,
    http_get,
    publish_exceptions_batched,
    publish_stop_states,
    serving_crm,
    upsert_exception,
)


def working_days(n: int) -> list[dt.date]:
    d, out = dt.date(2026, 11, 2), []
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


async def fill_month(dsn: str, sites: int, days: int) -> int:
    """Publish the month through 0005's rules (lock, version = max + 1), one transaction per
    day; returns the number of versions."""
    n = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for d in working_days(days):
            bodies: list[dict[str, Any]] = []
            stops: list[dict[str, Any]] = []
            for s in range(sites):
                site, client = f"S{s:04d}", f"C{s // 5:04d}"
                r = (s * 7919 + d.toordinal()) % 9
                if r < 3:
                    b = exception_body(
                        service_date=d, site_id=site, kind="missed", client_id=client, status="open"
                    )
                    bodies.append(b)
                    bodies.append({**b, "status": "confirmed" if r else "retracted"})
                    if r == 0:
                        bodies.append(
                            exception_body(
                                service_date=d,
                                site_id=site,
                                kind="late",
                                client_id=client,
                                minutes_late=40.0,
                            )
                        )
                    stops.append(
                        dict(site_id=site, client_id=client, service_date=d, state="missed")
                    )
                else:
                    bodies.append(
                        exception_body(
                            service_date=d,
                            site_id=site,
                            kind="late",
                            client_id=client,
                            minutes_late=float(r),
                        )
                    )
                    stops.append(
                        dict(
                            site_id=site,
                            client_id=client,
                            service_date=d,
                            state="visited",
                            outcome="late",
                            minutes_late=float(r),
                        )
                    )
            await publish_exceptions_batched(conn, bodies)
            await publish_stop_states(conn, stops)
            n += len(bodies)
    return n


async def drain_http(port: int, limit: int) -> tuple[int, float]:
    cursor, n, t0 = "0", 0, time.perf_counter()
    while True:
        status, _, body = await http_get(
            port, f"/api/crm/v1/visit-exceptions?after={cursor}&limit={limit}", token=CRM_TOKEN
        )
        assert status == 200, body[:200]
        page = json.loads(body)
        n += len(page["items"])
        cursor = page["next"]
        if not page["more"]:
            return n, time.perf_counter() - t0


async def skip_to_head(port: int, cursor: str) -> str:
    """Read (unmeasured) what the last writer left, so the next round's pages carry only its
    own writer's rows."""
    while True:
        status, _, body = await http_get(
            port, f"/api/crm/v1/visit-exceptions?after={cursor}&limit=1000", token=CRM_TOKEN
        )
        assert status == 200
        page = json.loads(body)
        cursor = page["next"]
        if not page["more"]:
            return str(cursor)


async def drain_sql(pool: Any, limit: int) -> tuple[int, float]:
    after, n, t0 = 0, 0, time.perf_counter()
    while True:
        page = await q.feed_page(pool, after_seq=after, limit=limit)
        n += len(page.items)
        after = page.next_seq
        if not page.more:
            return n, time.perf_counter() - t0


async def _write_for(dsn: str, seconds: float, batch: int, tag: str) -> tuple[int, float]:
    """Publish new versions for *seconds*: *batch* per transaction the outbox way, or
    (batch 1) one transaction per version with one INSERT per row."""
    day = dt.date(2026, 12, 1)
    n, k, t0 = 0, 0, time.perf_counter()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.perf_counter() - t0 < seconds:
            bodies = []
            for _ in range(batch):
                k += 1
                bodies.append(
                    exception_body(
                        service_date=day, site_id=f"{tag}{k:07d}", kind="missed", status="open"
                    )
                )
            if batch == 1:
                async with conn.transaction():
                    await conn.execute(LOCK_SQL)
                    await upsert_exception(conn, bodies[0])
            else:
                await publish_exceptions_batched(conn, bodies)
            n += batch
    return n, time.perf_counter() - t0


def writer_process(dsn: str, seconds: float, batch: int, tag: str, out: Any) -> None:
    """The writer runs in a process of its own: the API's latency then shows database
    contention, not a shared event loop or the GIL."""
    out.put(asyncio.run(_write_for(dsn, seconds, batch, tag)))


async def api_latencies(port: int, stop: asyncio.Event, head: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"feed": [], "quality": [], "items": []}
    cursor = head
    while not stop.is_set():
        t = time.perf_counter()
        status, _, body = await http_get(
            port, f"/api/crm/v1/visit-exceptions?after={cursor}&limit=1000", token=CRM_TOKEN
        )
        out["feed"].append(time.perf_counter() - t)
        assert status == 200
        page = json.loads(body)
        cursor = page["next"]
        out["items"].append(len(page["items"]))
        t = time.perf_counter()
        status, _, _ = await http_get(
            port,
            "/api/crm/v1/service-quality?from=2026-11-01&to=2026-12-31&limit=100",
            token=CRM_TOKEN,
        )
        out["quality"].append(time.perf_counter() - t)
        assert status == 200
    out["head"] = [cursor]
    return out


def pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1000
    return {
        "n": len(xs),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


async def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    store = await Store.open(dsn, partitioning="native")
    await store.aclose()
    t0 = time.perf_counter()
    versions = await fill_month(dsn, args.sites, args.days)
    fill_s = time.perf_counter() - t0
    res: dict[str, Any] = {"versions": versions, "fill_s": round(fill_s, 1)}
    async with serving_crm(dsn) as server:
        from fleetwatch.crm_api import open_crm_pool

        async with open_crm_pool(dsn) as pool:
            for limit in (1000, 100):
                runs_http, runs_sql = [], []
                for _ in range(args.repeats):
                    n, s = await drain_http(server.port, limit)
                    assert n == versions
                    runs_http.append(n / s)
                    n, s = await drain_sql(pool, limit)
                    runs_sql.append(n / s)
                res[f"drain_limit{limit}"] = {
                    "http_items_per_s": round(statistics.median(runs_http)),
                    "sql_only_items_per_s": round(statistics.median(runs_sql)),
                }
        _status, _, body = await http_get(
            server.port, "/api/crm/v1/visit-exceptions/summary", token=CRM_TOKEN
        )
        head = json.loads(body)["head"]
        ctx = multiprocessing.get_context("spawn")
        plan = [("no_writer", 0), ("outbox_batches", args.batch), ("per_row", 1)]
        for rnd in range(args.rounds):  # alternate, so that machine noise hits every mode
            for name, batch in plan:
                stop = asyncio.Event()
                box = ctx.Queue()
                proc = None
                if batch:
                    proc = ctx.Process(
                        target=writer_process,
                        args=(dsn, args.write_seconds, batch, f"W{rnd}{name[0]}", box),
                    )
                    proc.start()
                    await asyncio.sleep(0.5)  # let it connect
                reading = asyncio.create_task(api_latencies(server.port, stop, head))
                await asyncio.sleep(args.write_seconds - (0.5 if batch else 0))
                stop.set()
                lat = await reading
                head = lat.pop("head")[0]
                entry = res.setdefault(
                    f"api_while_{name}",
                    {"feed": [], "quality": [], "writer_rows_per_s": [], "items": []},
                )
                entry["items"] += lat["items"]
                entry["feed"] += lat["feed"]
                entry["quality"] += lat["quality"]
                if proc is not None:
                    n, s = await asyncio.to_thread(box.get, True, 120)
                    await asyncio.to_thread(proc.join, 30)
                    entry["writer_rows_per_s"].append(round(n / s))
                head = await skip_to_head(server.port, head)  # the next round starts level
        for name, _ in plan:
            e = res[f"api_while_{name}"]
            e["feed"] = pct(e["feed"])
            # pages at the head carry what the writer added since the last one
            e["feed"]["mean_items_per_page"] = round(float(np.mean(e.pop("items"))), 1)
            e["quality"] = pct(e["quality"])
            if not e["writer_rows_per_s"]:
                del e["writer_rows_per_s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=positive_int, default=1500)
    ap.add_argument("--days", type=positive_int, default=22)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--write-seconds", type=positive_float, default=15.0)
    ap.add_argument("--batch", type=positive_int, default=500)
    ap.add_argument("--rounds", type=positive_int, default=2)
    ap.add_argument("--dsn", default=None, help="an empty database (default: a private server)")
    args = ap.parse_args()
    if args.dsn:
        print(json.dumps(asyncio.run(run(args.dsn, args)), indent=1))
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-crm-") as base,
        open_embedded_postgres(Path(base), fsync=True) as pg,
    ):
        out = asyncio.run(run(pg.dsn, args))
        out["where"] = f"private PostgreSQL ({pg.bindir}), fsync on"
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

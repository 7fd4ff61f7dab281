"""The last hour's track from the store (store/tracks.py) and the console's ``track`` request
answered from it (ws/track.py), against a real PostgreSQL and through the real server.

The store's fixes are written by the real writer (``Store.write_batch``), its stops and visits
by the real outbox writer; the console is the ``websockets`` client of tests/test_ws_server.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from core.fixes import Fix, FixBatch, iso_utc
from schedule.events import StopEnded, StopStarted, VisitCompleted, VisitStarted
from schedule.stop_events import VehiclePosition
from store import Store
from store.embedded import EmbeddedPostgres
from store.outbox import records_from_events, write_records
from store.tracks import MAX_TRACK_POINTS, bucket_us, load_track
from tests import schedule_world as W
from tests.support.pg import fresh_database
from tests.test_web import http_get
from tests.test_ws_server import World, command, opened, running
from ws.track import TrackOptions, thin

pytestmark = pytest.mark.anyio

S = 1_000_000
T9 = W.at(9)  # the stored fixes run 09:00:00 - 09:55:00 at 1 Hz
T_END = W.at(9) + 55 * 60 * S
LON0, LAT0 = 37.60, 55.75


def fixes(unit: str, start_us: int, end_us: int, step_s: int = 1) -> FixBatch:
    """A unit driving east at ~36 km/h, one fix per *step_s*."""
    out = []
    for k, t in enumerate(range(start_us, end_us + 1, step_s * S)):
        out.append(
            Fix(unit_id=unit, t_us=t, recv_us=t, lat=LAT0, lon=LON0 + k * 1.6e-4 * step_s,
                speed_kmh=36.0 if k % 7 else math.nan)
        )  # fmt: skip
    return FixBatch.from_fixes(out)


def detection(vehicle: str) -> list[Any]:
    """Two stops and a visit of *vehicle* in the window, one stop before it, one retracted."""
    return [
        StopEnded(stop_id=f"{vehicle}/old", vehicle_id=vehicle, site_id=None,
                  start_us=W.at(7), end_us=W.at(7.1), lat=LAT0, lon=LON0, fix_count=9,
                  closed_by="movement"),
        StopStarted(stop_id=f"{vehicle}/s1", vehicle_id=vehicle, site_id="S1",
                    start_us=W.at(9.2), lat=LAT0, lon=LON0 + 0.1),
        StopEnded(stop_id=f"{vehicle}/s1", version=2, supersedes=1, vehicle_id=vehicle,
                  site_id="S1", start_us=W.at(9.2), end_us=W.at(9.3), lat=LAT0,
                  lon=LON0 + 0.1, fix_count=360, closed_by="movement"),
        StopStarted(stop_id=f"{vehicle}/s2", vehicle_id=vehicle, site_id=None,
                    start_us=W.at(9.8), lat=LAT0, lon=LON0 + 0.2),
        StopStarted(stop_id=f"{vehicle}/gone", vehicle_id=vehicle, site_id=None,
                    start_us=W.at(9.5), lat=LAT0, lon=LON0 + 0.15),
        StopStarted(stop_id=f"{vehicle}/gone", version=2, supersedes=1, retracted=True,
                    vehicle_id=vehicle, site_id=None, start_us=W.at(9.5), lat=LAT0,
                    lon=LON0 + 0.15),
        VisitStarted(visit_id=f"{vehicle}/v1", vehicle_id=vehicle, site_id="S1",
                     arrival_us=W.at(9.2), confirmed_us=W.at(9.21)),
        VisitCompleted(visit_id=f"{vehicle}/v1", version=2, supersedes=1, vehicle_id=vehicle,
                       site_id="S1", arrival_us=W.at(9.2), departure_us=W.at(9.3),
                       fix_count=360, inside_share=1.0, median_hdop=math.nan,
                       closed_by="exit"),
    ]  # fmt: skip


async def fill(dsn: str, layout: str = "native") -> None:
    """V001 (unit U1, mapped in ``units``) and U77 (unmapped: its vehicle is its unit id):
    55 minutes at 1 Hz; V002: a few fixes yesterday only; detection records of V001 and V002."""
    store = await Store.open(dsn, partitioning=layout)  # type: ignore[arg-type]
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("INSERT INTO units (unit_id, vehicle_id) VALUES ('U1', 'V001')")
            await conn.execute("INSERT INTO units (unit_id, vehicle_id) VALUES ('U2', 'V002')")
        await store.write_batch(fixes("U1", T9, T_END))
        await store.write_batch(fixes("U77", T9, T_END, step_s=5))
        yesterday = W.at(9) - 86_400 * S * 3
        await store.write_batch(fixes("U2", yesterday, yesterday + 60 * S))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await write_records(conn, records_from_events(detection("V001") + detection("V002")))
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def pool_of(dsn: str, *, timeout_s: float = 5.0) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}, timeout=timeout_s
    )
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


# -- store/tracks.py ------------------------------------------------------------------------------


async def test_the_store_track_ends_at_the_newest_fix_thinned_with_its_stops_and_visits(
    layout: str, layout_dsn: str
) -> None:
    """On both layouts of ``fixes``: native day partitions and a TimescaleDB hypertable."""
    await fill(layout_dsn, layout)
    async with pool_of(layout_dsn) as pool:
        tr = await load_track(pool, "V001", until_us=W.at(10), minutes=60, max_points=100)
        assert tr is not None
        assert tr.until_us == T_END  # the newest fix, not the clock
        assert tr.since_us == T_END - 3600 * S
        assert tr.fixes == 55 * 60 + 1  # every fix of the window was counted ...
        assert 90 <= len(tr.t_us) <= 100  # ... and at most max_points came back
        assert tr.t_us[-1] == T_END  # the track reaches the truck
        assert list(tr.t_us) == sorted(tr.t_us)
        assert all(T9 <= t <= T_END for t in tr.t_us)
        gaps = {b - a for a, b in zip(tr.t_us, tr.t_us[1:], strict=False)}
        assert max(gaps) <= 2 * bucket_us(3600 * S, 100)  # evenly spread, no hole
        assert any(math.isnan(s) for s in tr.speed_kmh)
        assert 36.0 in tr.speed_kmh
        assert [(s.stop_id, s.end_us) for s in tr.stops] == [
            ("V001/s1", W.at(9.3)),  # the newest version: ended
            ("V001/s2", None),  # still standing
        ]  # not the one before the window, not the retracted one, not V002's
        assert [(v.visit_id, v.departure_us) for v in tr.visits] == [("V001/v1", W.at(9.3))]
        # the clock before the data's end: the window ends at the newest fix before it
        early = await load_track(pool, "V001", until_us=W.at(9.5), minutes=10, max_points=2000)
        assert early is not None
        assert early.until_us == W.at(9.5)
        assert early.fixes == len(early.t_us) == 601  # fewer fixes than max_points: all
        assert [s.stop_id for s in early.stops] == []  # s1 ended 9.3, before 9.5 - 10 min
        # a unit the registry does not map: its vehicle is its unit id
        u77 = await load_track(pool, "U77", until_us=W.at(10), minutes=60, max_points=2000)
        assert u77 is not None
        assert u77.fixes == len(u77.t_us) == 55 * 12 + 1
        # nothing within the lookback (V002: three days ago), or nothing at all
        assert await load_track(pool, "V002", until_us=W.at(10), minutes=60) is None
        assert await load_track(pool, "V999", until_us=W.at(10), minutes=60) is None
        old = await load_track(pool, "V002", until_us=W.at(10), lookback_s=7 * 86_400)
        assert old is not None
        assert old.fixes == 61
        with pytest.raises(ValueError, match="max_points"):
            await load_track(pool, "V001", until_us=W.at(10), max_points=1)
        with pytest.raises(ValueError, match="minutes"):
            await load_track(pool, "V001", until_us=W.at(10), minutes=0)


async def test_the_detection_query_uses_the_index_of_migration_0008(pg_dsn: str) -> None:
    """The query's expression and predicate match the index: with sequential scans made
    expensive, the plan names it (on a table this small the planner would scan otherwise)."""
    from store import tracks

    await fill(pg_dsn)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute(
            ("EXPLAIN " + tracks._EVENTS).encode(),
            {"v": "V001", "since": dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC),
             "until": dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)},
        )  # fmt: skip
        plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "record_versions_detection_vehicle_at" in plan, plan


@given(
    window_s=st.integers(1, 240 * 60),
    max_points=st.integers(2, MAX_TRACK_POINTS),
)
def test_buckets_never_exceed_max_points(window_s: int, max_points: int) -> None:
    width = bucket_us(window_s * S, max_points)
    assert window_s * S // width + 1 <= max_points  # buckets over [since, since + window]


@given(n=st.integers(0, 3000), max_points=st.integers(2, 500))
def test_thin_keeps_the_ends_and_the_bound(n: int, max_points: int) -> None:
    pts = list(range(n))
    out = thin(pts, max_points)
    assert len(out) == min(n, max_points)
    assert out == sorted(set(out))
    if n:
        assert (out[0], out[-1]) == (0, n - 1)


# -- through the real server ----------------------------------------------------------------------


def data_clock() -> Any:
    """The console's clock: 10:00 of the test day, moving with the wall clock (the hub paces
    positions on it; the track request uses it when the hub has no fix of the vehicle)."""
    start = time.monotonic_ns() // 1000
    return lambda: W.at(10) + time.monotonic_ns() // 1000 - start


async def track(ws: Any, view: Any, **msg: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    reply, before = await command(ws, view, type="track", **msg)
    frames = [m for m in before if m["type"] == "track"]
    return reply, frames[-1] if frames else None


def remember(w: World, vehicle: str, minutes: int) -> None:
    """The hub's memory track: a position every 30 s over the last *minutes* to 09:59."""
    end = W.at(9) + 59 * 60 * S
    w.server.publish(
        [
            VehiclePosition(vehicle_id=vehicle, t_us=end - k * 30 * S, lat=LAT0, lon=LON0,
                            speed_kmh=20.0)
            for k in range(minutes * 2, -1, -1)
        ]
    )  # fmt: skip


async def test_a_restarted_console_gets_the_hour_from_the_store(pg_dsn: str) -> None:
    """The hub knows nothing older than itself; the answer comes from the store, says so, and
    is bounded; requests are validated."""
    await fill(pg_dsn)
    async with pool_of(pg_dsn) as pool, running(track_source=pool, clock_us=data_clock()) as w:
        ws, view = await opened(w, "VW")  # watching is enough
        reply, frame = await track(ws, view, id="t1", vehicle_id="V001", max_points=200)
        assert reply["ok"] is True
        assert frame is not None
        assert (frame["source"], frame["error"]) == ("store", None)
        assert reply["result"] == {"points": len(frame["points"]), "source": "store",
                                   "error": None}  # fmt: skip
        assert frame["minutes"] == 60
        assert (frame["since"], frame["until"]) == (iso_utc(T_END - 3600 * S), iso_utc(T_END))
        assert frame["fixes"] == 3301
        assert 180 <= len(frame["points"]) <= 200
        assert frame["points"][-1]["t"] == iso_utc(T_END)
        assert [s["stop_id"] for s in frame["stops"]] == ["V001/s1", "V001/s2"]
        assert frame["stops"][0]["end"] == iso_utc(W.at(9.3))
        assert frame["visits"] == [{"visit_id": "V001/v1", "site_id": "S1",
                                    "arrival": iso_utc(W.at(9.2)),
                                    "departure": iso_utc(W.at(9.3))}]  # fmt: skip
        # a vehicle only the store knows (its data came while this process was away)
        reply, frame = await track(ws, view, id="t2", vehicle_id="U77", minutes=15)
        assert reply["ok"]
        assert frame is not None
        assert frame["source"] == "store"
        assert frame["fixes"] == 15 * 12 + 1
        # the hub knows V003 (its route) but has no fix: the store has none either: memory
        reply, frame = await track(ws, view, id="t3", vehicle_id="V003")
        assert reply["ok"]
        assert frame is not None
        assert (frame["source"], frame["error"], frame["points"]) == ("memory", None, [])
        # unknown to both
        reply, frame = await track(ws, view, id="t4", vehicle_id="V999")
        assert frame is None
        assert (reply["ok"], reply["error"]["code"]) == (False, "unknown_id")
        for bad, says in (
            ({"minutes": 0}, "minutes"),
            ({"minutes": 241}, "minutes"),
            ({"minutes": "60"}, "minutes"),
            ({"max_points": 1}, "max_points"),
            ({"max_points": 2001}, "max_points"),
            ({"vehicle_id": ""}, "vehicle_id"),
            ({"vehicle_id": "V" * 201}, "vehicle_id"),
            ({"since": "2026-11-23"}, "unknown fields"),
        ):
            msg = {"id": "bad", "vehicle_id": "V001", **bad}
            reply, frame = await track(ws, view, **msg)
            assert frame is None
            assert (reply["ok"], reply["error"]["code"]) == (False, "invalid"), bad
            assert says in reply["error"]["message"], (says, reply)
        counts = w.server.tracks.counts
        assert (counts.store, counts.memory, counts.unknown) == (2, 1, 1)
        _, body = await http_get(w.port, "/metrics")
        assert b'fleetwatch_console_track_answers_total{error="none",source="store"} 2.0' in body
        assert b'fleetwatch_console_track_answers_total{error="none",source="memory"} 1.0' in body
        await ws.close()


async def test_while_the_store_is_down_the_memory_track_answers_and_says_so(
    private_pg_server: EmbeddedPostgres,
) -> None:
    """A real outage: the server stops, the answer comes from memory with ``store_error``;
    it starts again, and the store answers again."""
    for dsn in _fresh(private_pg_server.dsn):
        await fill(dsn)
        async with (
            pool_of(dsn, timeout_s=1.0) as pool,
            running(track_source=pool, clock_us=data_clock(),
                    track_options=TrackOptions(timeout_s=3.0)) as w,
        ):  # fmt: skip
            remember(w, "V001", minutes=20)
            ws, view = await opened(w, "D01")
            _, frame = await track(ws, view, id=1, vehicle_id="V001")
            assert frame is not None
            assert frame["source"] == "store"
            private_pg_server.stop()
            try:
                reply, frame = await track(ws, view, id=2, vehicle_id="V001")
                assert reply["ok"] is True
                assert frame is not None
                assert (frame["source"], frame["error"]) == ("memory", "store_error")
                assert frame["message"]
                assert reply["result"]["error"] == "store_error"
                assert len(frame["points"]) == 41  # every 30 s for 20 minutes: memory
                assert frame["points"][-1]["t"] == iso_utc(W.at(9) + 59 * 60 * S)
                # a vehicle the hub does not know: the store might; an empty track, not a refusal
                reply, frame = await track(ws, view, id=3, vehicle_id="U77")
                assert reply["ok"] is True
                assert frame is not None
                assert (frame["source"], frame["error"], frame["points"]) == (
                    "memory", "store_error", [])  # fmt: skip
            finally:
                private_pg_server.start()
            for attempt in range(50):  # the pool reconnects in the background
                _, frame = await track(ws, view, id=f"again{attempt}", vehicle_id="V001")
                if frame is not None and frame["source"] == "store":
                    break
            assert frame is not None
            assert frame["source"] == "store"
            assert frame["fixes"] == 3301
            await ws.close()


def _fresh(admin_dsn: str) -> Iterator[str]:
    yield from fresh_database(admin_dsn)


async def test_without_a_store_the_memory_track_says_unavailable() -> None:
    async with running(clock_us=data_clock()) as w:
        remember(w, "V002", minutes=90)
        ws, view = await opened(w, "D01")
        reply, frame = await track(ws, view, id=1, vehicle_id="V002", minutes=60, max_points=50)
        assert reply["ok"] is True
        assert frame is not None
        assert (frame["source"], frame["error"]) == ("memory", "unavailable")
        assert frame["fixes"] == 121  # 60 minutes of the memory's 30 s points ...
        assert len(frame["points"]) == 50  # ... thinned to max_points, ends kept
        assert frame["points"][-1]["t"] == iso_utc(W.at(9) + 59 * 60 * S)
        assert frame["points"][0]["t"] == iso_utc(W.at(8) + 59 * 60 * S)
        assert json.loads(json.dumps(frame)) == frame
        await ws.close()

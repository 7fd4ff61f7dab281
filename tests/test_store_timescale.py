"""TimescaleDB against real private servers: issue 13's matrix and the hypertable layout.

Three servers: the system PostgreSQL (TimescaleDB not installed), a private copy with
TimescaleDB 2.28.3 installed but NOT preloaded, and the same copy preloading it (see
tests/support/pg.py; the copy comes from scripts/timescaledb.sh).  Each is asked for ``auto``,
``native`` and ``timescaledb``.  Policy jobs run through ``run_job`` (the test servers have no
background workers): TimescaleDB's scheduler records jobs as failed on PostgreSQL 15.20.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.fixes import Fix, FixBatch
from store import Store
from store.embedded import EmbeddedPostgres
from store.partitions import TimescaleDBUnavailable
from tests.support.broker import Broker
from tests.support.pg import ExternalPostgres, fresh_database
from tests.test_ingest_service_integration import (
    counts,
    eventually,
    fleet_items,
    publish,
    running,
    settings_for,
    units_csv,
)
from tests.test_store_write import assert_batches_equal

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DAY_US = 86_400 * 1_000_000


@pytest.fixture(params=["not_installed", "installed_not_preloaded", "preloaded"])
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def kind_dsn(server_kind: str, request: pytest.FixtureRequest) -> Iterator[str]:
    name = {
        "not_installed": "pg_server",
        "installed_not_preloaded": "tsdb_unloaded_server",
        "preloaded": "tsdb_server",
    }[server_kind]
    server: EmbeddedPostgres | ExternalPostgres = request.getfixturevalue(name)
    yield from fresh_database(server.dsn)


def server_facts(dsn: str) -> tuple[bool, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
            "current_setting('shared_preload_libraries')"
        ).fetchone()
    assert row is not None
    return bool(row[0]), str(row[1])


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(r[0]) for r in rows.fetchall()}


def fixes_kind(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
            "WHERE partrelid = 'fixes'::regclass), "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        assert row is not None
        if row[0]:
            return "native"
        hyper = conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'fixes'"
        ).fetchone()
    return "timescaledb" if hyper == (1,) else "plain?"


def some_fixes(now_us: int) -> FixBatch:
    return FixBatch.from_fixes(
        [
            Fix(unit_id=f"u{u}", t_us=now_us - k * 1_000_000, recv_us=now_us, lat=50.0, lon=8.0)
            for u in range(3)
            for k in range(5)
        ]
    )


EXPECTED = {
    # (server, partitioning) -> layout, or the error text a user reads
    ("not_installed", "auto"): "native",
    ("not_installed", "native"): "native",
    ("not_installed", "timescaledb"): "not installed on this PostgreSQL server",
    ("installed_not_preloaded", "auto"): "native",
    ("installed_not_preloaded", "native"): "native",
    ("installed_not_preloaded", "timescaledb"): (
        "TimescaleDB 2.28.3 is installed but not preloaded; add shared_preload_libraries = "
        "'timescaledb' to postgresql.conf and restart PostgreSQL"
    ),
    ("preloaded", "auto"): "timescaledb",
    ("preloaded", "native"): "native",
    ("preloaded", "timescaledb"): "timescaledb",
}


@pytest.mark.parametrize("partitioning", ["auto", "native", "timescaledb"])
async def test_issue_13_matrix(
    server_kind: str,
    kind_dsn: str,
    partitioning: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    installed, preload = server_facts(kind_dsn)
    assert (installed, "timescaledb" in preload) == {
        "not_installed": (False, False),
        "installed_not_preloaded": (True, False),
        "preloaded": (True, True),
    }[server_kind], "the fixture servers are what this test claims"
    want = EXPECTED[(server_kind, partitioning)]
    caplog.set_level(logging.INFO, logger="store.partitions")
    if want not in ("native", "timescaledb"):
        with pytest.raises(TimescaleDBUnavailable) as err:
            await Store.open(kind_dsn, partitioning=partitioning)  # type: ignore[arg-type]
        assert want in str(err.value)
        assert "\n" not in str(err.value)
        assert tables(kind_dsn) <= {"schema_migrations"}, "nothing was created"
        return
    async with await Store.open(kind_dsn, partitioning=partitioning) as store:  # type: ignore[arg-type]
        assert store.layout == want
        # the connection survived the decision and the store works
        with psycopg.connect(kind_dsn) as conn:
            row = conn.execute("SELECT (extract(epoch FROM now()) * 1e6)::bigint").fetchone()
        assert row is not None
        result = await store.write_batch(some_fixes(int(row[0])))
        assert result.inserted == 15
        assert await store.count_fixes() == 15
    assert fixes_kind(kind_dsn) == want
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if (server_kind, partitioning) == ("installed_not_preloaded", "auto"):
        assert len(warnings) == 1, "ONE clear log line"
        assert "add shared_preload_libraries = 'timescaledb' to postgresql.conf" in (
            warnings[0].getMessage()
        )
    else:
        assert warnings == []
    # a second start on the same database decides nothing and warns nothing
    caplog.clear()
    async with await Store.open(kind_dsn, partitioning=partitioning) as store:  # type: ignore[arg-type]
        assert store.layout == want
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_old_migration_would_have_killed_the_connection(
    tsdb_unloaded_server: EmbeddedPostgres,
) -> None:
    """Why issue 13 needed a decision *before* SQL: on a server that does not preload
    TimescaleDB, CREATE EXTENSION ends the backend; an EXCEPTION block cannot catch it."""
    for dsn in fresh_database(tsdb_unloaded_server.dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.Error):
                conn.execute(
                    "DO $$ BEGIN CREATE EXTENSION timescaledb; "
                    "EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'caught'; END $$"
                )
            assert conn.closed or conn.broken, "the session is gone, not rolled back"


# --- the hypertable layout: chunks, compression, retention, the hourly aggregate -----------


def db_now_us(dsn: str) -> int:
    """The server's now(): TimescaleDB's policies measure chunk age against it."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT (extract(epoch FROM now()) * 1e6)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def on_days_ago(now_us: int, days: list[int], units: int = 4, per_unit: int = 60) -> FixBatch:
    """Fixes at midday UTC of each of *days* days before now, per_unit a unit, 1 s apart."""
    today_us = now_us - now_us % DAY_US
    return FixBatch.from_fixes(
        [
            Fix(
                unit_id=f"u{u}",
                t_us=today_us - d * DAY_US + 12 * 3_600_000_000 + s * 1_000_000,
                recv_us=now_us,
                lat=50.0 + s * 1e-5,
                lon=8.0,
                speed_kmh=float(s % 50),
                talker="GN",
            )
            for d in days
            for u in range(units)
            for s in range(per_unit)
        ]
    )


def chunks(dsn: str) -> list[tuple[str, bool]]:
    """(range start day ISO, compressed?) of fixes' chunks, oldest first."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'), is_compressed "
            "FROM timescaledb_information.chunks WHERE hypertable_name = 'fixes' "
            "ORDER BY range_start"
        ).fetchall()
    return [(str(d), bool(c)) for d, c in rows]


@pytest.fixture
def tsdb_dsn(tsdb_server: EmbeddedPostgres) -> Iterator[str]:
    yield from fresh_database(tsdb_server.dsn)


async def test_hypertable_has_one_day_chunks(tsdb_dsn: str) -> None:
    now = db_now_us(tsdb_dsn)
    async with await Store.open(tsdb_dsn, partitioning="timescaledb") as store:
        await store.write_batch(on_days_ago(now, [0, 1, 2]))
    with psycopg.connect(tsdb_dsn) as conn:
        interval = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'fixes' AND column_name = 't'"
        ).fetchone()
    assert interval is not None
    assert interval[0].days == 1
    assert interval[0].seconds == 0
    assert len(chunks(tsdb_dsn)) == 3, "one chunk per UTC day written"


async def test_compression_policy_compresses_old_chunks_and_keeps_rows_exact(
    tsdb_dsn: str,
) -> None:
    now = db_now_us(tsdb_dsn)
    batch = on_days_ago(now, [12, 9, 1])
    async with await Store.open(
        tsdb_dsn, partitioning="timescaledb", compress_after_days=7
    ) as store:
        await store.write_batch(batch)
        before = await store.fixes_for_unit("u1", -(2**62), 2**62)
        jobs = store.timescaledb_jobs
        assert jobs is not None
        assert jobs.compression is not None
        assert jobs.retention is None
        await store.run_timescaledb_jobs()
        assert [c for _, c in chunks(tsdb_dsn)] == [True, True, False], "older than 7 days only"
        after = await store.fixes_for_unit("u1", -(2**62), 2**62)
        assert_batches_equal(after, before)  # compressed rows read back exactly
        # a redelivered fix into a compressed day is a duplicate; a late new one is stored
        old = before.to_fixes()[0]
        late = Fix(unit_id="u1", t_us=old.t_us + 500_000, recv_us=now, lat=1.0, lon=2.0)
        result = await store.write_batch(FixBatch.from_fixes([old, late]))
        assert (result.inserted, result.duplicates) == (1, 1)
        assert await store.count_fixes() == len(batch) + 1
    with psycopg.connect(tsdb_dsn) as conn:
        sizes = conn.execute(
            "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes) "
            "FROM chunk_compression_stats('fixes') WHERE compression_status = 'Compressed'"
        ).fetchone()
    assert sizes is not None
    assert sizes[1] < sizes[0]


async def test_policies_follow_the_settings_across_restarts(tsdb_dsn: str) -> None:
    async with await Store.open(tsdb_dsn, partitioning="timescaledb") as store:
        first = store.timescaledb_jobs
    assert first is not None
    assert first.compression is not None
    assert first.retention is None
    async with await Store.open(tsdb_dsn, partitioning="timescaledb") as store:
        assert store.timescaledb_jobs == first, "same settings: same jobs, not new ones"
    async with await Store.open(
        tsdb_dsn, partitioning="timescaledb", compress_after_days=3, retention_days=30
    ) as store:
        changed = store.timescaledb_jobs
    assert changed is not None
    assert changed.retention is not None
    assert changed.compression != first.compression, "a new interval replaces the job"
    with psycopg.connect(tsdb_dsn) as conn:
        rows = conn.execute(
            "SELECT proc_name, config->>'compress_after', config->>'drop_after' "
            "FROM timescaledb_information.jobs WHERE hypertable_name = 'fixes' ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("policy_compression", "3 days", None),
        ("policy_retention", None, "30 days"),
    ]
    async with await Store.open(
        tsdb_dsn, partitioning="timescaledb", compress_after_days=None, retention_days=None
    ) as store:
        none = store.timescaledb_jobs
    assert none is not None
    assert (none.compression, none.retention) == (None, None)


async def test_retention_policy_drops_whole_old_chunks_and_keeps_the_aggregate(
    tsdb_dsn: str,
) -> None:
    now = db_now_us(tsdb_dsn)
    async with await Store.open(
        tsdb_dsn, partitioning="timescaledb", compress_after_days=2, retention_days=5
    ) as store:
        await store.write_batch(on_days_ago(now, [20, 9, 1]))
        # as if each day had been materialised while it was young (the refresh policy looks
        # back 3 days; in service, every hour is refreshed within the hour after it ends)
        with psycopg.connect(tsdb_dsn, autocommit=True) as conn:
            conn.execute("CALL refresh_continuous_aggregate('fixes_hourly', NULL, now())")
        await store.run_timescaledb_jobs()
        assert len(chunks(tsdb_dsn)) == 1, "the 20- and 9-day-old chunks are dropped"
        assert await store.count_fixes() == 4 * 60
    with psycopg.connect(tsdb_dsn) as conn:
        hourly = conn.execute("SELECT count(*), sum(fixes) FROM fixes_hourly").fetchone()
    assert hourly == (3 * 4, 3 * 4 * 60), "the aggregate keeps the hours of dropped chunks"


def materialised_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        name = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema, "
            "materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates "
            "WHERE view_name = 'fixes_hourly'"
        ).fetchone()
        assert name is not None
        row = conn.execute(f"SELECT count(*) FROM {name[0]}").fetchone()
    assert row is not None
    return int(row[0])


async def test_hourly_aggregate_is_materialised_by_its_job_and_real_time_on_top(
    tsdb_dsn: str,
) -> None:
    now = db_now_us(tsdb_dsn)
    async with await Store.open(tsdb_dsn, partitioning="timescaledb") as store:
        await store.write_batch(on_days_ago(now, [2, 1]))
        assert materialised_rows(tsdb_dsn) == 0
        await store.run_timescaledb_jobs()
        assert materialised_rows(tsdb_dsn) == 2 * 4, "4 units x 2 hours"
        # newer fixes appear at once through the real-time part, before any refresh
        fresh = FixBatch.from_fixes(
            [Fix(unit_id="u9", t_us=now - 60_000_000, recv_us=now, lat=1.0, lon=1.0)]
        )
        await store.write_batch(fresh)
    with psycopg.connect(tsdb_dsn) as conn:
        rows = conn.execute(
            "SELECT unit_id, fixes FROM fixes_hourly WHERE unit_id IN ('u1', 'u9') "
            "ORDER BY unit_id, hour"
        ).fetchall()
    assert rows == [("u1", 60), ("u1", 60), ("u9", 1)]


# --- issue 13 end to end: the service itself (fleetwatch run's run_ingest) -----------------


@pytest.fixture(params=["tsdb_unloaded_server", "tsdb_server"])
def service_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(fixture name, fresh database DSN) on a TimescaleDB server: not preloaded, preloaded."""
    pg: EmbeddedPostgres = request.getfixturevalue(request.param)
    databases = fresh_database(pg.dsn)
    yield str(request.param), next(databases)
    next(databases, None)  # drop it


async def test_the_service_starts_and_stores_on_timescaledb_servers(
    service_server: tuple[str, str],
    mqtt_broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 13 as reported: ``fleetwatch run`` (default partitioning=auto) died at start on a
    server with TimescaleDB installed but not preloaded.  Now it starts (native, one warning)
    and stores what units publish; on a preloading server it gets the hypertable."""
    server, dsn = service_server
    caplog.set_level(logging.INFO, logger="store.partitions")
    items = fleet_items(units=5, seconds=20)
    settings = settings_for(mqtt_broker, dsn, units_csv(tmp_path / "u.csv", 5))
    async with running(settings) as h:
        await publish(mqtt_broker, items)
        await eventually(lambda: h.service.statistics().messages_acked >= len(items))
        want = "native" if server == "tsdb_unloaded_server" else "timescaledb"
        assert h.store.layout == want
    assert counts(dsn)[0] == len(items)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if server == "tsdb_unloaded_server":
        assert len(warnings) == 1
        assert "shared_preload_libraries = 'timescaledb'" in warnings[0]
    else:
        assert warnings == []

"""The store writer (engine publisher + outbox task) against a real PostgreSQL: the fast path, a
database outage under load (records journaled, publishing never waits, every version stored
exactly once and in order afterwards), a SIGKILL mid-batch and a restart that re-derives the day.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from fleetwatch.store_writer import StoreWriter
from schedule.stop_events import Acknowledge, AddComment
from store import Store, StoreUnavailable
from store.embedded import EmbeddedPostgres
from store.outbox import records_from_events
from tests.outbox_world import MIN, T0, check_versions, stop_life, stored_versions

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
REPO = Path(__file__).resolve().parents[1]


def _clock() -> int:
    return time.time_ns() // 1000


def _expected(lives: range, *, shift_us: int = 0) -> set[tuple[str, str, bytes]]:
    recs = records_from_events([ev for n in lives for ev in stop_life(n, shift_us=shift_us)])
    return {(r.kind, r.id, r.content_sha256()) for r in recs}


async def _migrated(dsn: str) -> None:
    store = await Store.open(dsn, partitioning="native")
    await store.aclose()


async def _run_until_idle(writer: StoreWriter, body: Callable[[], Any]) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run, name="store-writer")
        await body()
        with anyio.fail_after(120):
            await writer.wait_idle()
        tg.cancel_scope.cancel()


async def test_published_records_are_stored_once_with_metrics(pg_dsn: str, tmp_path: Path) -> None:
    await _migrated(pg_dsn)
    registry = CollectorRegistry()
    writer = StoreWriter(pg_dsn, journal_path=tmp_path / "outbox.db", clock_us=_clock,
                         registry=registry, batch_records=300)  # fmt: skip

    async def body() -> None:
        for n in range(100):
            writer.publish(stop_life(n))
        for n in range(100):  # a redelivered / re-derived copy: nothing new
            writer.publish(stop_life(n, shift_us=60_000_000))

    await _run_until_idle(writer, body)
    await writer.aclose()
    rows = await stored_versions(pg_dsn)
    check_versions(rows)
    assert {(k, i, h) for _, k, i, _, h in rows} == _expected(range(100))
    s = writer.statistics()
    assert (s.versions_inserted, s.unchanged, s.dropped_records) == (800, 800, 0)
    assert registry.get_sample_value("fleetwatch_outbox_versions_inserted_total") == 800
    assert registry.get_sample_value("fleetwatch_outbox_dropped_records_total") == 0


async def test_a_full_memory_queue_drops_are_counted(pg_dsn: str, tmp_path: Path) -> None:
    """No database answer yet and no journal: the bound holds and every drop is counted; a
    publish call's records are kept or dropped together."""
    writer = StoreWriter(pg_dsn, journal_path=None, clock_us=_clock, max_queued_records=100)
    for n in range(20):
        writer.publish(stop_life(n))  # 8 records each
    s = writer.statistics()
    assert (s.queued, s.dropped_records) == (96, 64)
    await writer.aclose()


async def test_one_publish_call_commits_in_one_transaction(pg_dsn: str, tmp_path: Path) -> None:
    """An alert version and the exception version it causes commit together, even when the
    batch size would split them."""
    await _migrated(pg_dsn)
    writer = StoreWriter(pg_dsn, journal_path=tmp_path / "outbox.db", clock_us=_clock,
                         batch_records=1)  # fmt: skip

    async def body() -> None:
        for n in range(3):
            writer.publish(stop_life(n))

    await _run_until_idle(writer, body)
    await writer.aclose()
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT count(DISTINCT xmin::text), count(*) FROM record_versions")
        assert await cur.fetchone() == (3, 24)


async def _outage(pg: EmbeddedPostgres, journal: Path, seconds: float) -> None:
    """Publish 400 records/s (a day's busiest minute of the design fleet is ~50) while the
    database is stopped for *seconds*; nothing waits, nothing is dropped; after recovery every
    version is stored once and in the order published."""
    await _migrated(pg.dsn)
    writer = StoreWriter(pg.dsn, journal_path=journal, clock_us=_clock, batch_records=500,
                         retry_initial_s=0.05, retry_max_s=0.5, write_timeout_s=5)  # fmt: skip
    lives = 0
    worst_publish_s = total_publish_s = 0.0

    async def body() -> None:
        nonlocal lives, worst_publish_s, total_publish_s
        writer.publish(stop_life(0))
        lives = 1
        pg.stop()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:  # the load generator's pace, not a synchronisation
            t0 = time.perf_counter()
            for _ in range(5):
                writer.publish(stop_life(lives))
                lives += 1
            took = time.perf_counter() - t0
            worst_publish_s = max(worst_publish_s, took)
            total_publish_s += took
            await anyio.sleep(0.1)
        s = writer.statistics()
        assert s.unavailable >= 1
        assert s.journaled_records > 0, "the outage went to the journal"
        assert s.queued <= 5 * 8 * 20, "memory stays bounded during the outage"
        pg.start()

    await _run_until_idle(writer, body)
    await writer.aclose()
    s = writer.statistics()
    assert s.dropped_records == 0
    # publish never awaits: its time is conversion only, never the database's 5 s timeout
    # (the bounds leave room for a machine shared with other work)
    assert worst_publish_s < 0.5, f"publishing took {worst_publish_s:.3f} s"
    assert total_publish_s / (lives // 5) < 0.01, "publishing 40 records takes well under 10 ms"
    rows = await stored_versions(pg.dsn)
    check_versions(rows)
    stored = {(k, i, h) for _, k, i, _, h in rows}
    assert stored == _expected(range(lives))
    exceptions = [r for r in rows if r[1] == "exception"]
    assert len(exceptions) == 2 * lives, "every exception version exactly once"
    # in the order published: per stop, the exception's versions follow its life
    pos = {(k, i, h): p for p, (_, k, i, _, h) in enumerate(rows)}
    for n in range(lives):
        life = records_from_events(stop_life(n))
        order = [pos[(r.kind, r.id, r.content_sha256())] for r in life]
        assert order == sorted(order)


async def test_an_outage_under_load_stores_every_version_once(
    private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    await _outage(private_pg_server, tmp_path / "outbox.db", 3.0)


@pytest.mark.slow
async def test_a_60_s_outage_under_load_stores_every_exception_version_once(
    private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    await _outage(private_pg_server, tmp_path / "outbox.db", 60.0)


_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time
    import psycopg
    from fleetwatch.store_writer import StoreWriter
    from store.outbox import write_records
    from tests.outbox_world import stop_life

    dsn, journal = sys.argv[1], sys.argv[2]
    calls = 0

    class KillAfterInsert:
        # forwards to the connection; SIGKILLs the process once the versions are inserted,
        # before the *_current rows and the COMMIT: abandoned mid-batch
        def __init__(self, conn):
            self.conn = conn
        def transaction(self):
            return self.conn.transaction()
        async def execute(self, query, *args, **kwargs):
            cur = await self.conn.execute(query, *args, **kwargs)
            if "INSERT INTO record_versions" in query:
                os.kill(os.getpid(), signal.SIGKILL)
            return cur

    async def write(conn, items):
        global calls
        calls += 1
        if calls <= 3:  # the first commits (fast path) see an outage: the journal takes them
            if calls > 1:
                raise psycopg.OperationalError("simulated outage")
            return await write_records(conn, items)
        return await write_records(KillAfterInsert(conn), items)

    async def main():
        w = StoreWriter(dsn, journal_path=journal, clock_us=lambda: time.time_ns() // 1000,
                        batch_records=400, retry_initial_s=0.01, retry_max_s=0.02, write=write)
        task = asyncio.create_task(w.run())
        for n in range(300):
            w.publish(stop_life(n))
            await asyncio.sleep(0)
        await task

    asyncio.run(main())
    """
)


async def test_sigkill_mid_batch_then_restart_announces_everything_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The writer's process dies (SIGKILL) inside a transaction, with a journal holding an
    outage's batches.  The restarted writer drains the journal first, then gets the day as the
    restarted engine re-derives it (other decision ticks) plus what happens next: every record
    version is stored exactly once, versions 1, 2, ... per id in seq order."""
    await _migrated(pg_dsn)
    journal = tmp_path / "outbox.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = await anyio.run_process(
        [sys.executable, "-c", _CHILD, pg_dsn, str(journal)], env=env, check=False
    )
    assert child.returncode == -9, child.stderr[-2000:].decode()
    before = await stored_versions(pg_dsn)
    assert 0 < len(before) < 300 * 8, "some batches committed before the kill, not all"
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert await cur.fetchone() == (0,), "the killed transaction left no lock behind"

    writer = StoreWriter(pg_dsn, journal_path=journal, clock_us=_clock)
    assert writer.statistics().journal_batches >= 1, "the outage's batches were journaled"

    async def body() -> None:
        for n in range(300):  # re-derived after restart: decided at other ticks
            writer.publish(stop_life(n, shift_us=120_000_000))
        for n in range(300, 350):  # the rest of the day
            writer.publish(stop_life(n))

    await _run_until_idle(writer, body)
    await writer.aclose()
    rows = await stored_versions(pg_dsn)
    check_versions(rows)
    assert {(k, i, h) for _, k, i, _, h in rows} == _expected(range(350))
    assert len(rows) == 350 * 8


async def test_commands_are_durable_through_an_outage(
    private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A command is committed when the database answers, journaled (fsynced) when it does not,
    and loaded back for the restart hook in journal order either way."""
    pg = private_pg_server
    await _migrated(pg.dsn)
    ack = Acknowledge(alert_id="stop/2026-09-21/S00001", version=1, by="d1")
    note = AddComment(alert_id="stop/2026-09-21/S00001", text="driver called", by="d1")
    writer = StoreWriter(pg.dsn, journal_path=tmp_path / "outbox.db", clock_us=_clock,
                         retry_initial_s=0.05, retry_max_s=0.2)  # fmt: skip

    async def body() -> None:
        await writer.record_command(ack, at_us=T0)
        assert await writer.commands_since(T0) == [(T0, ack)], "committed at once"
        pg.stop()
        await writer.record_command(note, at_us=T0 + MIN)
        assert writer.statistics().journal_records == 1, "journaled while the database is down"
        pg.start()

    await _run_until_idle(writer, body)
    await writer.aclose()
    assert await StoreWriter(pg.dsn, journal_path=None, clock_us=_clock).commands_since(T0) == [
        (T0, ack), (T0 + MIN, note)]  # fmt: skip
    pg.stop()
    bare = StoreWriter(pg.dsn, journal_path=None, clock_us=_clock)
    with pytest.raises(StoreUnavailable, match="no outbox journal"):
        await bare.record_command(note, at_us=T0 + 2 * MIN)
    await bare.aclose()

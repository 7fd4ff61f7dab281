"""The feed's cursor never skips a row that a concurrent transaction commits late.

0005's rule: every writer takes ``pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))`` before
drawing a seq, so seq order is commit order.  These tests race real writer transactions (their
own connections, held open between steps) against a reader paging through the real HTTP API,
and check that the reader ends with every committed version exactly once, in seq order.  The
control shows the same checker catching a skip when a writer breaks the rule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from typing import Any

import psycopg
import pytest

from store import Store
from tests.crm_world import (
    CRM_TOKEN,
    LOCK_SQL,
    exception_body,
    http_get,
    serving_crm,
    upsert_exception,
)

pytestmark = pytest.mark.anyio
D = dt.date(2026, 11, 23)


@pytest.fixture
async def migrated(pg_dsn: str) -> str:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    return pg_dsn


class Reader:
    """A CRM client: pages from its cursor, remembers everything it was given."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.limit = limit
        self.cursor = "0"
        self.seen: list[tuple[str, int]] = []

    async def page(self) -> bool:
        status, _, body = await http_get(
            self.port,
            f"/api/crm/v1/visit-exceptions?after={self.cursor}&limit={self.limit}",
            token=CRM_TOKEN,
        )
        assert status == 200, body
        page = json.loads(body)
        self.seen.extend((i["id"], i["version"]) for i in page["items"])
        self.cursor = page["next"]
        return bool(page["more"])

    async def drain(self) -> None:
        while await self.page():
            pass


async def committed(dsn: str) -> list[tuple[str, int]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT id, version FROM record_versions WHERE kind = 'exception' ORDER BY seq"
        )
        return [(str(i), int(v)) for i, v in await cur.fetchall()]


async def test_late_committer_is_not_skipped_when_writers_take_the_lock(migrated: str) -> None:
    """A starts first and B commits first: B's row comes first, A's after, none skipped."""
    a = await psycopg.AsyncConnection.connect(migrated)
    b = await psycopg.AsyncConnection.connect(migrated)
    try:
        async with serving_crm(migrated) as server:
            reader = Reader(server.port, limit=10)
            # A opens its transaction first and takes the lock ...
            await a.execute(LOCK_SQL)
            await upsert_exception(a, exception_body(service_date=D, site_id="SA", kind="missed"))
            # ... B starts later; its lock waits for A
            b_task = asyncio.create_task(
                _locked_insert(b, exception_body(service_date=D, site_id="SB", kind="late"))
            )
            await asyncio.sleep(0.2)
            assert not b_task.done()
            await reader.page()
            assert reader.seen == []  # nothing committed yet
            await a.commit()
            await b_task
            await reader.drain()
            # the other order: B takes the lock and commits first, A (older transaction) later
            await a.execute("SELECT 1")  # A's transaction begins before B's
            await b.execute(LOCK_SQL)
            await upsert_exception(b, exception_body(service_date=D, site_id="SB2", kind="late"))
            await b.commit()
            await reader.page()
            await a.execute(LOCK_SQL)
            await upsert_exception(a, exception_body(service_date=D, site_id="SA2", kind="late"))
            await reader.page()  # A holds the lock, not committed: invisible, not skipped
            await a.commit()
            await reader.drain()
            assert reader.seen == await committed(migrated)
            assert [i for i, _ in reader.seen] == [
                "2026-11-23/SA/missed",
                "2026-11-23/SB/late",
                "2026-11-23/SB2/late",
                "2026-11-23/SA2/late",
            ]
    finally:
        await a.close()
        await b.close()


async def _locked_insert(conn: psycopg.AsyncConnection[Any], body: dict[str, Any]) -> None:
    await conn.execute(LOCK_SQL)
    await upsert_exception(conn, body)
    await conn.commit()


async def test_control_a_writer_without_the_lock_is_skipped(migrated: str) -> None:
    """The checker can fail: without the lock, a late commit lands behind the cursor."""
    a = await psycopg.AsyncConnection.connect(migrated)
    b = await psycopg.AsyncConnection.connect(migrated)
    try:
        async with serving_crm(migrated) as server:
            reader = Reader(server.port, limit=10)
            await upsert_exception(a, exception_body(service_date=D, site_id="SA", kind="missed"))
            await upsert_exception(b, exception_body(service_date=D, site_id="SB", kind="late"))
            await b.commit()
            await reader.drain()  # sees B (the higher seq), cursor moves past A's seq
            await a.commit()
            await reader.drain()
            assert reader.seen != await committed(migrated)
            assert reader.seen == [("2026-11-23/SB/late", 1)]
    finally:
        await a.close()
        await b.close()


async def test_racing_writers_and_a_paging_reader_lose_nothing(migrated: str) -> None:
    """6 writers × 25 transactions (1-3 versions each, random pauses before the lock and
    between insert and commit) while a reader pages with a small limit."""
    rng = random.Random(7)
    sites = [f"S{k:03d}" for k in range(40)]
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        seed = rng.random()
        r = random.Random(seed)
        async with await psycopg.AsyncConnection.connect(migrated) as conn:
            for _ in range(25):
                await conn.execute("SELECT 1")  # the transaction begins before the lock
                await asyncio.sleep(r.uniform(0, 0.01))
                await conn.execute(LOCK_SQL)
                for _ in range(r.randint(1, 3)):
                    site = r.choice(sites)
                    kind = r.choice(["late", "missed", "cancelled"])
                    body = exception_body(
                        service_date=D,
                        site_id=site,
                        kind=kind,
                        comments=[
                            {"by": f"D{w}", "at": "2026-11-23T12:00:00Z", "text": str(r.random())}
                        ],
                    )
                    await upsert_exception(conn, body)
                await asyncio.sleep(r.uniform(0, 0.005))
                await conn.commit()

    async with serving_crm(migrated) as server:
        reader = Reader(server.port, limit=7)

        async def read_while_writing() -> int:
            pages = 0
            while not stop.is_set():
                await reader.page()
                pages += 1
            return pages

        reading = asyncio.create_task(read_while_writing())
        async with asyncio.TaskGroup() as tg:
            for w in range(6):
                tg.create_task(writer(w))
        stop.set()
        pages_during = await reading
        await reader.drain()
    expected = await committed(migrated)
    assert len(expected) >= 6 * 25
    assert len(set(reader.seen)) == len(reader.seen)  # nothing twice
    assert reader.seen == expected  # nothing skipped, commit order
    assert pages_during > 5  # the reader really raced the writers

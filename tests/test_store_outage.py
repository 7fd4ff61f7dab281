"""The database goes away (clean stop, SIGKILL) and comes back: the store says so, then heals.

Each test has a server of its own (``private_pg_server``): stopping the session server would
break every other test.
"""

from __future__ import annotations

import pytest

from core.fixes import DeadLetter, Fix, FixBatch
from store import Store, StoreUnavailable, WriteResult
from store.embedded import EmbeddedPostgres

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW_S = 1_790_000_000


def batch(first: int, n: int) -> FixBatch:
    return FixBatch.from_fixes(
        Fix(
            unit_id="u1",
            t_us=(NOW_S + i) * 1_000_000,
            recv_us=(NOW_S + i) * 1_000_000,
            lat=1.0,
            lon=2.0,
        )
        for i in range(first, first + n)
    )


DEAD = DeadLetter(
    topic="fleet/u1/nmea", unit_id="u1", reason="bad_checksum", detail="x", payload=b"$", recv_us=0
)


async def open_store(pg: EmbeddedPostgres) -> Store:
    return await Store.open(pg.dsn, partitioning="native", timeout_s=2.0, clock=lambda: NOW_S)


async def test_stopped_database_raises_unavailable_then_heals(
    private_pg_server: EmbeddedPostgres,
) -> None:
    pg = private_pg_server
    async with await open_store(pg) as store:
        assert (await store.write_batch(batch(0, 10))).inserted == 10
        pg.stop()
        with pytest.raises(StoreUnavailable, match="retry later") as info:
            await store.write_batch(batch(10, 10), [DEAD])
        assert info.value.__cause__ is not None, "the psycopg error is kept as the cause"
        with pytest.raises(StoreUnavailable):
            await store.count_fixes()
        pg.start()
        # the ingest shell retries the very same batch: it is stored once, dead letter included
        assert await store.write_batch(batch(10, 10), [DEAD]) == WriteResult(
            inserted=10, duplicates=0, dead_letters=1
        )
        assert await store.count_fixes() == 20
        assert store.statistics().unavailable_errors == 2


async def test_killed_database_loses_nothing_committed(
    private_pg_server: EmbeddedPostgres,
) -> None:
    pg = private_pg_server
    async with await open_store(pg) as store:
        assert (await store.write_batch(batch(0, 100))).inserted == 100
        pg.kill()  # SIGKILL to postmaster and backends: crash recovery at the next start
        with pytest.raises(StoreUnavailable):
            await store.write_batch(batch(100, 100))
        pg.start()
        result = await store.write_batch(batch(0, 200))  # redelivery of both batches
        assert result == WriteResult(inserted=100, duplicates=100, dead_letters=0)
        assert await store.count_fixes("u1") == 200


async def test_open_against_a_stopped_database_raises_unavailable(
    private_pg_server: EmbeddedPostgres,
) -> None:
    private_pg_server.stop()
    with pytest.raises(StoreUnavailable, match="migrating the schema"):
        await open_store(private_pg_server)
    private_pg_server.start()
    async with await open_store(private_pg_server) as store:
        assert await store.count_fixes() == 0

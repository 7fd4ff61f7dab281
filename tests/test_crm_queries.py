"""store/crm_queries.py directly: the filtered feed's bounded scan moves the cursor over
non-matching stretches (an empty page that says ``more``) and still returns every match once,
in order, for every page size."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from store import Store
from store import crm_queries as q
from tests.crm_world import exception_body, publish_exceptions

pytestmark = pytest.mark.anyio
D = dt.date(2026, 11, 23)


async def test_filtered_feed_with_a_small_scan_window(pg_dsn: str) -> None:
    store = await Store.open(pg_dsn, partitioning="native")
    await store.aclose()
    clients = ["C1", "C2", "C2", "C2", "C2", "C2", "C2", "C1", "C2", "C1", "C1", "C2"]
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for k, c in enumerate(clients):
            await publish_exceptions(
                conn, [exception_body(service_date=D, site_id=f"S{k}", kind="late", client_id=c)]
            )
    expected = [f"2026-11-23/S{k}/late" for k, c in enumerate(clients) if c == "C1"]
    async with AsyncConnectionPool(pg_dsn, kwargs={"autocommit": True}, open=False) as pool:
        for limit in (1, 2, 3, 1000):
            for scan in (1, 3, 5, 100):
                got: list[str] = []
                empty_but_more = 0
                after = 0
                for _ in range(100):
                    page = await q.feed_page(
                        pool,
                        after_seq=after,
                        limit=limit,
                        where=q.FeedFilter(client_id="C1"),
                        scan_rows=scan,
                    )
                    assert page.next_seq >= after
                    got += [json.loads(body)["id"] for _, body in page.items]
                    empty_but_more += not page.items and page.more
                    after = page.next_seq
                    if not page.more:
                        break
                assert got == expected, (limit, scan)
                if scan <= 3:
                    assert empty_but_more > 0  # the run of C2 rows was stepped over
                assert after == page.head_seq

"""The writer's ordering and exactly-once logic under any interleaving of publishes, outages and
commits whose outcome was lost, against an in-memory model of the outbox (store.outbox's
new_versions, the rule write_records applies in PostgreSQL).  No database: the interleavings
are Hypothesis'."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.store_writer import StoreWriter
from store.outbox import OutboxRecord, OutboxResult, StoredRow, new_versions, records_from_events
from store.outbox_journal import Item
from tests.outbox_world import stop_life

Outcome = Literal["ok", "down", "lost"]  # lost: committed, but the answer never came back


class ModelOutbox:
    """Rows as write_records stores them: store.outbox.new_versions over what is stored."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self.rows: list[StoredRow] = []
        self.calls = 0

    async def write(self, conn: Any, items: Sequence[Item]) -> OutboxResult:
        outcome = self.outcomes[self.calls] if self.calls < len(self.outcomes) else "ok"
        self.calls += 1
        if outcome == "down":
            raise psycopg.OperationalError("model: database down")
        recs = [it for it in items if isinstance(it, OutboxRecord)]
        assert len(recs) == len(items)
        new = new_versions(self.rows, recs)
        for i, version in new:
            r = recs[i]
            self.rows.append((r.kind, r.id, version, r.content_sha256(), r.at_us))
        if outcome == "lost":
            raise psycopg.OperationalError("model: connection lost during COMMIT")
        return OutboxResult(inserted=len(new), unchanged=len(items) - len(new), commands=0,
                            last_seq=None)  # fmt: skip


class FakeConn:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def fake_connect() -> Any:
    return FakeConn()


@settings(max_examples=60, deadline=None)
@given(
    publishes=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    outcomes=st.lists(st.sampled_from(["ok", "down", "lost"]), max_size=20),
    batch=st.integers(1, 40),
    journal=st.booleans(),
)
def test_any_interleaving_stores_each_content_once_in_published_order(
    publishes: list[int], outcomes: list[Outcome], batch: int, journal: bool
) -> None:
    model = ModelOutbox(outcomes)
    lives = [stop_life(n) for n in range(sum(publishes))]
    # what the records say, written once each in published order (the same rule, no faults)
    expected: list[StoredRow] = []
    for life in lives:
        recs = records_from_events(life)
        for i, version in new_versions(expected, recs):
            r = recs[i]
            expected.append((r.kind, r.id, version, r.content_sha256(), r.at_us))

    async def main(directory: Path) -> None:
        writer = StoreWriter(
            "unused", journal_path=directory / "outbox.db" if journal else None,
            clock_us=lambda: 0, batch_records=batch, retry_initial_s=0.0, retry_max_s=0.0,
            write=model.write, connect=fake_connect,
        )  # fmt: skip
        task = asyncio.create_task(writer.run(), name="store-writer")
        it = iter(lives)
        for k in publishes:
            for _ in range(k):
                writer.publish(next(it))
            await asyncio.sleep(0)  # let the writer interleave with the publishes
        async with asyncio.timeout(30):
            await writer.wait_idle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert writer.statistics().dropped_records == 0
        await writer.aclose()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(main(Path(d)))
    assert model.rows == expected

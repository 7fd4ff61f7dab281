"""The spool's rules against a scripted store: fast path, order, drain, bound, corruption.

The store here is a fake that is "up" or "down" on command (its data lands in a list), so
each rule is shown without a database; tests/test_spool_pg.py repeats the important ones
against a real PostgreSQL that is stopped and SIGKILLed.  The spool file is real (SQLite in
``tmp_path``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.fixes import DeadLetter, Fix, FixBatch
from store.errors import StoreUnavailable, StoreWriteError
from store.spool import SpoolingSink, open_spooling_sink
from store.spool_file import SpoolFile, SpoolFileError

pytestmark = pytest.mark.anyio

T0_US = 1_790_000_000 * 1_000_000


def batch(first: int, n: int, unit: str = "U1") -> FixBatch:
    return FixBatch.from_fixes(
        Fix(unit_id=unit, t_us=T0_US + i * 1_000_000, recv_us=T0_US, lat=1.0, lon=2.0)
        for i in range(first, first + n)
    )


@dataclass
class Result:
    inserted: int
    duplicates: int
    dead_letters: int


@dataclass
class ScriptedStore:
    """Up or down on command; keeps (unit, t) keys like the real table (ON CONFLICT DO NOTHING)."""

    up: bool = True
    refuse_t: set[int] = field(default_factory=set)  # fixes with these t_us are refused
    keys: list[tuple[str, int]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    calls: int = 0

    async def write_batch(self, fixes: FixBatch, dead_letters: Sequence[DeadLetter] = ()) -> Result:
        self.calls += 1
        await asyncio.sleep(0)
        if not self.up:
            raise StoreUnavailable("scripted outage; retry later")
        if self.refuse_t & set(fixes.t_us.tolist()):
            raise StoreWriteError("scripted refusal")
        seen = set(self.keys)
        new = [
            (u, t)
            for u, t in zip(fixes.unit_id.tolist(), fixes.t_us.tolist(), strict=True)
            if (u, t) not in seen
        ]
        self.keys.extend(dict.fromkeys(new))
        fresh = [d for d in dead_letters if d not in self.dead]
        self.dead.extend(fresh)
        return Result(
            inserted=len(set(new)), duplicates=len(fixes) - len(set(new)), dead_letters=len(fresh)
        )


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks (and the spool's worker thread) run until *condition* holds."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    pytest.fail("condition not reached")


def keys_of(*batches: FixBatch) -> list[tuple[str, int]]:
    return [
        (u, t) for b in batches for u, t in zip(b.unit_id.tolist(), b.t_us.tolist(), strict=True)
    ]


async def open_sink(path: Path, store: ScriptedStore, **kw: object) -> SpoolingSink:
    opts: dict[str, object] = {
        "retry_initial_s": 0.001,
        "retry_max_s": 0.002,
        "clock_us": lambda: T0_US,
    }
    opts.update(kw)
    return await SpoolingSink.open(path, store, **opts)  # type: ignore[arg-type]


async def test_store_up_and_spool_empty_writes_straight_to_the_store(tmp_path: Path) -> None:
    store = ScriptedStore()
    async with await open_sink(tmp_path / "spool.db", store) as sink:
        r = await sink.write_batch(batch(0, 10), [])
        assert (r.inserted, r.spooled) == (10, False)
        s = sink.statistics()
        assert (s.direct_batches, s.spooled_batches, s.batches, s.bytes) == (1, 0, 0, 0)
    assert store.keys == keys_of(batch(0, 10))


async def test_outage_spools_then_the_drain_writes_everything_once_in_order(tmp_path: Path) -> None:
    store = ScriptedStore(up=False)
    dl = DeadLetter(topic="fleet/U1/nmea", unit_id="U1", reason="bad_checksum", detail="x",
                    payload=b"$GP", recv_us=T0_US)  # fmt: skip
    async with await open_sink(tmp_path / "spool.db", store) as sink:
        assert (await sink.write_batch(batch(0, 10), [dl])).spooled
        assert (await sink.write_batch(batch(10, 10), [])).spooled
        store.up = True
        # the database is back, but older batches are spooled: this one must not overtake them
        r = await sink.write_batch(batch(20, 10), [])
        assert r.spooled
        assert store.keys == []
        s = sink.statistics()
        assert (s.batches, s.fixes, s.spooled_batches) == (3, 30, 3)
        assert s.oldest_age_s == 0.0
        assert s.bytes > 30 * 58
        while sink.statistics().batches:
            await sink.drain_once()
        s = sink.statistics()
        assert (s.drained_batches, s.drained_fixes_inserted, s.drained_dead_letters) == (3, 30, 1)
        assert (s.bytes, s.oldest_age_s) == (0, None)
        assert not (await sink.write_batch(batch(30, 1), [])).spooled  # fast path again
    assert store.keys == keys_of(batch(0, 10), batch(10, 10), batch(20, 10), batch(30, 1))
    assert store.dead == [dl]


async def test_the_drain_task_waits_for_work_and_retries_an_unavailable_store(
    tmp_path: Path,
) -> None:
    store = ScriptedStore(up=False)
    async with await open_sink(tmp_path / "spool.db", store) as sink, asyncio.TaskGroup() as tg:
        drain = tg.create_task(sink.run_drain(), name="store-spool-drain")
        for i in range(5):
            await sink.write_batch(batch(i * 10, 10), [])
        await until(lambda: sink.statistics().drain_retries >= 3)
        store.up = True
        await until(lambda: sink.statistics().batches == 0)
        drain.cancel()
    assert store.keys == keys_of(batch(0, 50))


async def test_a_full_spool_holds_the_writer_until_the_drain_frees_space(tmp_path: Path) -> None:
    store = ScriptedStore(up=False)
    one = len(__import__("store.spool_codec").spool_codec.encode_batch(batch(0, 100), []))
    async with await open_sink(tmp_path / "spool.db", store, max_bytes=3 * one) as sink:
        for i in range(3):
            await sink.write_batch(batch(i * 100, 100), [])
        assert sink.statistics().bytes == 3 * one
        fourth = asyncio.create_task(sink.write_batch(batch(300, 100), []))
        await until(lambda: sink.statistics().waiting_for_space == 1)
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert not fourth.done(), "no return (so no ack) while the spool is full"
        s = sink.statistics()
        assert (s.full_waits, s.waiting_for_space, s.batches) == (1, 1, 3)
        store.up = True
        await sink.drain_once()
        assert (await fourth).spooled
        while sink.statistics().batches:
            await sink.drain_once()
        assert sink.statistics().waiting_for_space == 0
    assert store.keys == keys_of(batch(0, 400))


async def test_a_corrupt_record_is_skipped_counted_and_its_neighbours_drained(
    tmp_path: Path,
) -> None:
    store = ScriptedStore(up=False)
    path = tmp_path / "spool.db"
    async with await open_sink(path, store) as sink:
        for i in range(3):
            await sink.write_batch(batch(i * 10, 10), [])
    with sqlite3.connect(path) as db:  # bit rot in the middle record's body, CRC left as is
        (body,) = db.execute("SELECT body FROM spooled WHERE seq = 2").fetchone()
        rotten = body[:20] + bytes([body[20] ^ 0x01]) + body[21:]
        db.execute("UPDATE spooled SET body = ? WHERE seq = 2", (rotten,))
    store.up = True
    async with await open_sink(path, store) as sink:
        assert sink.statistics().batches == 3
        while sink.statistics().batches:
            await sink.drain_once()
        s = sink.statistics()
        assert s.skipped == {"checksum": 1}
        assert s.drained_batches == 2
    assert store.keys == keys_of(batch(0, 10), batch(20, 10))


async def test_a_torn_tail_loses_only_the_unfinished_append(tmp_path: Path) -> None:
    """A crash during an append leaves a partial WAL frame: SQLite's frame checksums discard
    that transaction at recovery, and the records before it are all drained."""
    path = tmp_path / "spool.db"
    f = SpoolFile(path)
    from store.spool_codec import encode_batch

    f._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every append in the WAL for the test
    for i in range(5):
        body = encode_batch(batch(i * 10, 10), [])
        f.append(body, n_fixes=10, n_dead=0, appended_us=T0_US)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(path, crashed / "spool.db")  # the files as a crash leaves them (no close)
    wal = tmp_path / "spool.db-wal"
    shutil.copy(wal, crashed / "spool.db-wal")
    os.truncate(crashed / "spool.db-wal", wal.stat().st_size - 100)  # the last append, cut
    f.close()
    store = ScriptedStore()
    async with await open_sink(crashed / "spool.db", store) as sink:
        s = sink.statistics()
        assert s.batches == 4
        assert s.skipped == {"torn_tail": 1}, "the torn append is counted (and logged)"
        assert s.unclean_opens == 1
        while sink.statistics().batches:
            await sink.drain_once()
    assert store.keys == keys_of(batch(0, 40))
    async with await open_sink(crashed / "spool.db", store) as sink:
        s = sink.statistics()
        assert (s.unclean_opens, s.skipped) == (0, {}), "the close above was clean"


async def test_a_refused_row_becomes_a_dead_letter_and_the_drain_goes_on(tmp_path: Path) -> None:
    bad_t = T0_US + 13 * 1_000_000
    store = ScriptedStore(up=False, refuse_t={bad_t})
    async with await open_sink(tmp_path / "spool.db", store) as sink:
        for i in range(3):
            await sink.write_batch(batch(i * 10, 10), [])
        store.up = True
        while sink.statistics().batches:
            await sink.drain_once()
        s = sink.statistics()
        assert (s.refused_rows, s.dropped_rows, s.drained_fixes_inserted) == (1, 0, 29)
    assert store.keys == [k for k in keys_of(batch(0, 30)) if k[1] != bad_t]
    assert [d.reason for d in store.dead] == ["store_refused"]


def test_a_file_of_another_format_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SpoolFileError, match="move it aside"):
        SpoolFile(path)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SpoolFileError, match="unreadable"):
        SpoolFile(tmp_path / "junk.db")


# -- a property: any interleaving of writes, outages and drains ---------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 30)),
        st.tuples(st.just("toggle"), st.just(0)),
        st.tuples(st.just("drain"), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops, max_fixes=st.integers(1, 60), bound_batches=st.integers(1, 6))
def test_any_interleaving_stores_every_acknowledged_fix_once_in_order(
    tmp_path: Path, ops: list[tuple[str, int]], max_fixes: int, bound_batches: int
) -> None:
    async def scenario() -> None:
        path = tmp_path / f"p{np.random.default_rng().integers(1 << 62)}.db"
        store = ScriptedStore()
        written: list[FixBatch] = []
        bound = bound_batches * 31 * 58 + 200
        opts = {"retry_initial_s": 0.001, "retry_max_s": 0.001}
        async with open_spooling_sink(
            path, store, max_bytes=bound, drain_max_fixes=max_fixes, **opts
        ) as sink:
            first = 0
            for op, n in ops:
                if op == "toggle":
                    store.up = not store.up
                elif op == "drain" and store.up:
                    await sink.drain_once()
                elif op == "write":
                    b = batch(first, n)
                    first += n
                    task = asyncio.create_task(sink.write_batch(b, []))
                    await until(
                        lambda t=task: t.done() or sink.statistics().waiting_for_space > 0  # type: ignore[misc]
                    )
                    if not task.done():  # full: bring the store up and drain to release it
                        store.up = True
                        await sink.drain_once()
                    await task
                    written.append(b)  # acknowledged from here on
            store.up = True
            while sink.statistics().batches:
                await sink.drain_once()
            assert sink.statistics().bytes <= bound
        assert store.keys == keys_of(*written)

    asyncio.run(scenario())


async def test_the_spool_is_visible_in_prometheus_metrics(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from store.spool_metrics import register_spool_metrics

    store = ScriptedStore(up=False)
    async with await open_sink(tmp_path / "spool.db", store, max_bytes=1) as sink:
        await sink.write_batch(batch(0, 10), [])
        second = asyncio.create_task(sink.write_batch(batch(10, 10), []))
        await until(lambda: sink.statistics().waiting_for_space == 1)
        registry = CollectorRegistry()
        register_spool_metrics(registry, sink.statistics)
        text = generate_latest(registry).decode()
        assert "fleetwatch_spool_batches 1.0" in text
        assert "fleetwatch_spool_fixes 10.0" in text
        assert "fleetwatch_spool_full_waits_total 1.0" in text
        assert "fleetwatch_spool_waiting 1.0" in text
        assert 'fleetwatch_spool_skipped_records_total{reason="checksum"} 0.0' in text
        store.up = True
        await sink.drain_once()
        await second


async def test_a_bound_larger_than_the_free_disk_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await open_sink(tmp_path / "spool.db", ScriptedStore(), max_bytes=10**18):
        pass
    assert "could fill the disk" in caplog.text
    caplog.clear()
    async with await open_sink(tmp_path / "spool.db", ScriptedStore(), max_bytes=1024):
        pass
    assert "could fill the disk" not in caplog.text

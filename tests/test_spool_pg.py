"""The spool against a real PostgreSQL: an outage, a SIGKILL after the append, a SIGKILL mid-drain.

Exactly-once is checked on the ``fixes`` table (primary key (unit_id, t)) and on the dead
letters; "in order" by the transaction ids (``xmin``) the drain's commits gave the rows: a later
batch never commits before an earlier one.  The SIGKILL tests run a child Python process that
is killed by the signal itself, so no ``close`` or ``finally`` of ours runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.fixes import DeadLetter, Fix, FixBatch, dead_letter_source
from store import Store
from store.embedded import EmbeddedPostgres
from store.spool import DEFAULT_MAX_BYTES, SpoolingSink
from store.spool_codec import encode_batch
from store.spool_file import SpoolFile

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NOW_S = 1_790_000_000
REPO = Path(__file__).resolve().parents[1]
PER_BATCH = 500


def batch(k: int) -> tuple[FixBatch, list[DeadLetter]]:
    """Batch *k*: PER_BATCH fixes of 10 units, and one dead letter of its own message."""
    fixes = FixBatch.from_fixes(
        Fix(
            unit_id=f"U{i % 10}",
            t_us=(NOW_S + k * PER_BATCH + i) * 1_000_000,
            recv_us=(NOW_S + k * PER_BATCH + i) * 1_000_000,
            lat=55.0,
            lon=37.0,
            quality=1 if i % 2 else -1,
        )
        for i in range(PER_BATCH)
    )
    message = f"message {k}".encode()
    dead = DeadLetter(topic="fleet/U1/nmea", unit_id="U1", reason="bad_checksum", detail="x",
                      payload=b"$GPRMC*00", recv_us=NOW_S * 1_000_000,
                      source=dead_letter_source(message))  # fmt: skip
    return fixes, [dead]


def table(dsn: str) -> tuple[int, int, int, list[int]]:
    """(fix rows, distinct (unit, t), dead letters, the batches in commit order)."""
    with psycopg.connect(dsn) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (unit_id, t)) FROM fixes"
        ).fetchone() or (0, 0)
        (dead,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone() or (0,)
        order = conn.execute(
            "SELECT ((extract(epoch FROM t)::int8 - %s) / %s)::int AS k "
            "FROM fixes GROUP BY k ORDER BY max(xmin::text::int8), k",
            (NOW_S, PER_BATCH),
        ).fetchall()
    return int(rows), int(distinct), int(dead), [int(k) for (k,) in order]


async def open_store(pg: EmbeddedPostgres) -> Store:
    return await Store.open(pg.dsn, partitioning="native", timeout_s=1.0, clock=lambda: NOW_S)


async def drain_all(sink: SpoolingSink) -> None:
    for _ in range(10_000):
        if not sink.statistics().batches:
            return
        await sink.drain_once()


async def test_outage_spools_and_recovery_stores_every_fix_once_in_order(
    private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    pg = private_pg_server
    async with await open_store(pg) as store:
        sink = await SpoolingSink.open(tmp_path / "spool.db", store, drain_max_fixes=PER_BATCH,
                                       retry_initial_s=0.05, retry_max_s=0.2)  # fmt: skip
        async with sink:
            assert not (await sink.write_batch(*batch(0))).spooled
            pg.stop()
            for k in range(1, 6):  # each returns: the caller may acknowledge now
                assert (await sink.write_batch(*batch(k))).spooled
            s = sink.statistics()
            assert (s.batches, s.fixes) == (5, 5 * PER_BATCH)
            pg.start()
            assert (await sink.write_batch(*batch(6))).spooled, "behind the older batches"
            await drain_all(sink)
            s = sink.statistics()
            assert (s.drained_batches, s.drained_fixes_inserted) == (6, 6 * PER_BATCH)
            assert s.drained_fixes_duplicate == 0
            assert not (await sink.write_batch(*batch(7))).spooled
    rows, distinct, dead, order = table(pg.dsn)
    assert rows == distinct == 8 * PER_BATCH
    assert dead == 8
    assert order == list(range(8))


CHILD_APPEND_THEN_KILL = """
import asyncio, os, signal, sys
from store.errors import StoreUnavailable
from store.spool import DEFAULT_MAX_BYTES, SpoolingSink
from tests.test_spool_pg import batch

class Down:
    async def write_batch(self, fixes, dead_letters=()):
        raise StoreUnavailable("database down (simulated in the child)")

async def main():
    sink = await SpoolingSink.open(sys.argv[1], Down())
    for k in range(int(sys.argv[2])):
        await sink.write_batch(*batch(k))
        print(k, flush=True)  # acknowledged: the broker forgets the message now
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no finally

asyncio.run(main())
"""

CHILD_DRAIN_THEN_KILL = """
import asyncio, os, signal, sys
from store import Store
from store.spool import DEFAULT_MAX_BYTES, SpoolingSink

class KillAfterCommits:
    def __init__(self, store, n):
        self.store, self.n = store, n
    async def write_batch(self, fixes, dead_letters=()):
        result = await self.store.write_batch(fixes, dead_letters)
        self.n -= 1
        if self.n == 0:  # committed, not yet deleted from the spool
            os.kill(os.getpid(), signal.SIGKILL)
        return result

async def main():
    now_s, per_batch = int(sys.argv[4]), int(sys.argv[5])
    store = await Store.open(sys.argv[2], partitioning="native", clock=lambda: now_s)
    sink = await SpoolingSink.open(sys.argv[1], KillAfterCommits(store, int(sys.argv[3])),
                                   drain_max_fixes=per_batch)
    await sink.run_drain()

asyncio.run(main())
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_sigkill_after_spool_append_loses_nothing_and_stores_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    child = run_child(CHILD_APPEND_THEN_KILL, str(path), "6")
    assert child.returncode == -9, child.stderr
    acked = [int(x) for x in child.stdout.split()]
    assert acked == list(range(6))
    async with (
        await Store.open(pg_dsn, partitioning="native", clock=lambda: NOW_S) as store,
        await SpoolingSink.open(path, store) as sink,
    ):
        s = sink.statistics()
        assert s.batches == 6, "every acknowledged batch survived the kill"
        assert (s.unclean_opens, s.skipped) == (1, {}), "a crash after the COMMITs tears nothing"
        await drain_all(sink)
    rows, distinct, dead, order = table(pg_dsn)
    assert rows == distinct == 6 * PER_BATCH
    assert dead == 6
    assert order == [0, 1, 2, 3, 4, 5]  # one drain transaction (20k fixes) took them all


async def test_sigkill_between_drain_commit_and_delete_stores_nothing_twice(
    pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    f = SpoolFile(path)
    for k in range(5):
        fixes, letters = batch(k)
        f.append(encode_batch(fixes, letters), n_fixes=len(fixes), n_dead=1, appended_us=0)
    f.close()
    async with await Store.open(pg_dsn, partitioning="native", clock=lambda: NOW_S):
        pass  # migrate once, before the child
    child = run_child(CHILD_DRAIN_THEN_KILL, str(path), pg_dsn, "3", str(NOW_S), str(PER_BATCH))
    assert child.returncode == -9, child.stderr
    assert table(pg_dsn)[0] == 3 * PER_BATCH  # the third batch committed ...
    async with (
        await Store.open(pg_dsn, partitioning="native", clock=lambda: NOW_S) as store,
        await SpoolingSink.open(path, store, drain_max_fixes=PER_BATCH) as sink,
    ):
        assert sink.statistics().batches == 3  # ... but was still in the spool
        await drain_all(sink)
        s = sink.statistics()
        assert s.drained_fixes_duplicate == PER_BATCH  # the committed one, written again
        assert s.drained_fixes_inserted == 2 * PER_BATCH
    rows, distinct, dead, _ = table(pg_dsn)
    assert rows == distinct == 5 * PER_BATCH
    assert dead == 5, "the re-drained batch's dead letter is recognised by its fingerprint"


def design_fleet_second(s: int, units: int = 1_500) -> FixBatch:
    """One second of the design fleet: *units* trucks at 1 Hz (docs/ingest.md: 1,500 fixes/s)."""
    n = units
    t = np.full(n, (NOW_S + s) * 1_000_000, dtype=np.int64)
    return FixBatch(
        unit_id=np.array([f"unit-{i:05d}" for i in range(n)]),
        t_us=t,
        recv_us=t + 500_000,
        lat=np.full(n, 55.7) + s * 1e-5,
        lon=np.linspace(37.0, 37.9, n),
        speed_kmh=np.full(n, 30.0, dtype=np.float32),
        course=np.full(n, np.nan, dtype=np.float32),
        quality=np.full(n, -1, dtype=np.int8),
        sats=np.full(n, 9, dtype=np.int8),
        hdop=np.full(n, 0.9, dtype=np.float32),
        alt_m=np.full(n, np.nan, dtype=np.float32),
        talker=np.full(n, "GN"),
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_15_minute_outage_of_the_design_fleet_fits_and_drains_exactly_once(
    private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """15 min x 1,500 fixes/s = 1.35 M fixes spooled with the database stopped, then drained.

    The volume of a 15-minute outage without waiting 15 minutes: what matters for the spool is
    how much it holds (far under the default bound) and that the backlog drains, once each."""
    pg = private_pg_server
    seconds = 15 * 60
    async with await open_store(pg) as store:
        pg.stop()
        async with await SpoolingSink.open(tmp_path / "spool.db", store) as sink:
            for s in range(0, seconds, 4):  # 6,000-fix batches: 4 s of the fleet each
                batch4 = FixBatch.concat([design_fleet_second(s + k) for k in range(4)])
                assert (await sink.write_batch(batch4, [])).spooled
            s1 = sink.statistics()
            assert s1.fixes == seconds * 1_500
            assert s1.bytes < DEFAULT_MAX_BYTES / 10, "15 min of the design fleet is far in bound"
            assert s1.full_waits == 0
            pg.start()
            await drain_all(sink)
            s2 = sink.statistics()
            assert s2.drained_fixes_inserted == seconds * 1_500
            assert s2.drained_fixes_duplicate == 0
    rows, distinct, dead, _ = table(pg.dsn)
    assert rows == distinct == seconds * 1_500
    assert dead == 0

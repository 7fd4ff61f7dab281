"""The store the ingest shell writes through: a psycopg 3 async pool, one transaction a batch.

Reliability contract (../shared/reliability.md #1, #3, #6): :meth:`Store.write_batch` returns
only after COMMIT, with ``synchronous_commit`` left on, so the caller may acknowledge the
broker then; a database that is down raises :class:`StoreUnavailable` and nothing of the call
was committed, so the caller keeps the messages unacknowledged and retries later; writing the
same fixes again stores nothing new.  Dead letters go in the same transaction (a redelivery
after an ambiguous COMMIT failure may store a dead letter twice: they have no natural key).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool

from alerts.records import AlertRecord
from core.fixes import DeadLetter, FixBatch
from schedule.events import DetectionEvent
from schedule.stop_events import StopChanged
from store import partitions
from store.analytics import service_times
from store.dead_letters import count_dead_letters_by_reason, insert_dead_letters
from store.errors import StoreUnavailable, StoreWriteError
from store.fixes import (
    UnencodableText,
    count_fixes,
    create_stage_table,
    insert_fixes,
    select_fixes_for_unit,
    select_last_fixes,
    select_newest_fix_us,
    select_recent_fixes,
)
from store.migrate import Partitioning, apply_migrations
from store.outbox import load_alert_records, load_detection_events, load_stop_states
from store.units import UnitRow, select_units, upsert_units


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """What one committed :meth:`Store.write_batch` did."""

    inserted: int  # fixes stored by this call
    duplicates: int  # fixes of the batch already stored (or repeated within the batch)
    dead_letters: int  # dead letters stored by this call


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStatistics:
    """Counters since open, for /metrics."""

    batches: int
    fixes_inserted: int
    fixes_duplicate: int
    dead_letters: int
    partitions_created: int
    unavailable_errors: int


@contextlib.contextmanager
def _db_errors(action: str) -> Iterator[None]:
    """Map psycopg errors onto the store's: whose move is it next (see store.errors)."""
    try:
        yield
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"{action}: database unavailable ({e}); retry later") from e
    except UnencodableText as e:
        raise StoreWriteError(f"{action}: {e}") from e
    except psycopg.Error as e:
        raise StoreWriteError(f"{action}: the database refused the data ({e})") from e


class _Liveness:
    """Skip the pool's per-checkout liveness probe (one round trip) while connections work.

    The probe only matters after a pause: a server restart during an idle spell leaves dead
    connections in the pool.  Under a steady flow of batches it would cost a round trip each.
    """

    __slots__ = ("last_ok_s", "probe_after_idle_s")

    def __init__(self, probe_after_idle_s: float) -> None:
        self.last_ok_s = -math.inf
        self.probe_after_idle_s = probe_after_idle_s

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - self.last_ok_s > self.probe_after_idle_s:
            await AsyncConnectionPool.check_connection(conn)


class Store:
    """Fixes, dead letters and the unit registry in PostgreSQL.  Make one with :meth:`open`."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        make_pool: Callable[[], AsyncConnectionPool[Any]],
        liveness: _Liveness,
        layout: partitions.Layout,
        clock: Callable[[], float],
        partition_days_ahead: int,
        partition_max_late_days: int,
        timeout_s: float,
        timescaledb_jobs: partitions.TimescaleDBJobs | None = None,
    ) -> None:
        self._pool = pool
        self._make_pool = make_pool
        self._liveness = liveness
        self._pool_suspect = False
        self._layout = layout
        self._clock = clock
        self._days_ahead = partition_days_ahead
        self._max_late_days = partition_max_late_days
        self._timeout_s = timeout_s
        self._timescaledb_jobs = timescaledb_jobs
        self._known_days: set[int] = set()
        self._batches = 0
        self._inserted = 0
        self._duplicates = 0
        self._dead_letters = 0
        self._partitions_created = 0
        self._unavailable = 0

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        migrate: bool = True,
        partitioning: Partitioning = "auto",
        partition_days_ahead: int = 3,
        partition_max_late_days: int = 62,
        compress_after_days: int | None = 7,
        retention_days: int | None = None,
        timeout_s: float = 10.0,
        reconnect_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Migrate (unless ``migrate=False``), open the pool, create the partitions ahead.

        ``partitioning``: ``"auto"`` (a TimescaleDB hypertable when the server preloads
        TimescaleDB, else native day partitions, with a warning naming the postgresql.conf
        setting when TimescaleDB is installed but not preloaded), ``"native"`` or
        ``"timescaledb"`` (raises :class:`store.partitions.TimescaleDBUnavailable` saying what
        to add to postgresql.conf when the server cannot give one); it only matters when the
        schema is first created.  Hypertable layout only: ``compress_after_days`` (default 7,
        None: never) compresses chunks whose day is that old; ``retention_days`` (default
        None: keep) drops older chunks; both are TimescaleDB policy jobs, re-applied at every
        open with ``migrate=True`` so the settings win.  ``timeout_s`` bounds each wait for
        a connection.
        ``reconnect_timeout_s``: how long the pool retries (with backoff) a connection that
        fails, before giving up until the next request; it keeps the delay between the
        database's return and the first successful write short after a long outage.
        ``clock`` (seconds since the epoch) decides "today" for partitions; inject it for
        reproducible tests.
        Raises :class:`StoreUnavailable` when the database cannot be reached.
        """
        partitions.check_policy_settings(
            compress_after_days=compress_after_days, retention_days=retention_days
        )
        if migrate:
            with _db_errors("migrating the schema"):
                async with await psycopg.AsyncConnection.connect(
                    dsn, autocommit=True, connect_timeout=max(2, int(timeout_s))
                ) as conn:
                    await apply_migrations(conn, partitioning=partitioning)

        liveness = _Liveness(probe_after_idle_s=1.0)

        def make_pool() -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                open=False,
                kwargs={"autocommit": True},
                configure=_configure_connection,
                check=liveness.check,
                timeout=timeout_s,
                reconnect_timeout=reconnect_timeout_s,
                name="fleetwatch-store",
            )

        pool = make_pool()
        try:
            with _db_errors("opening the connection pool"):
                await pool.open(wait=True, timeout=timeout_s)
                async with pool.connection() as conn:
                    layout = await partitions.layout_of(conn)
                    jobs: partitions.TimescaleDBJobs | None = None
                    if layout == "timescaledb" and migrate:
                        jobs = await partitions.apply_timescaledb_policies(
                            conn,
                            compress_after_days=compress_after_days,
                            retention_days=retention_days,
                        )
                    elif layout == "timescaledb":  # migrate=False: read, change nothing
                        jobs = await partitions.read_timescaledb_jobs(conn)
            store = cls(
                pool,
                make_pool=make_pool,
                liveness=liveness,
                layout=layout,
                clock=clock,
                partition_days_ahead=partition_days_ahead,
                partition_max_late_days=partition_max_late_days,
                timeout_s=timeout_s,
                timescaledb_jobs=jobs,
            )
            await store._refresh_partitions()
            await store._ensure_partitions(())
        except BaseException:
            await pool.close()
            raise
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; after a connection failure, a fresh pool first.

        psycopg_pool retries a failed connection in the background with exponential backoff
        (1, 2, 4 ... s), so right after the database comes back a request can still time out
        waiting for the next attempt.  Replacing the pool after a failure makes the caller's
        own retry cadence (the ingest shell's backoff) drive reconnection instead.
        """
        if self._pool_suspect:
            old, self._pool = self._pool, self._make_pool()
            self._pool_suspect = False
            await self._pool.open(wait=False)
            await old.close(timeout=self._timeout_s)
        try:
            async with self._pool.connection() as conn:
                yield conn
            self._liveness.last_ok_s = time.monotonic()
        except psycopg.OperationalError:
            self._pool_suspect = True
            raise

    @property
    def layout(self) -> partitions.Layout:
        return self._layout

    @property
    def timescaledb_jobs(self) -> partitions.TimescaleDBJobs | None:
        """The hypertable's policy jobs (None on the native layout)."""
        return self._timescaledb_jobs

    async def run_timescaledb_jobs(self) -> None:
        """Run the refresh, compression and retention jobs now (hypertable layout; a no-op on
        native).  See :func:`store.partitions.run_timescaledb_jobs` for why not rely on the
        background scheduler."""
        if self._timescaledb_jobs is None:
            return
        with self._counting_errors("running the TimescaleDB policy jobs"):
            async with self._connection() as conn:
                await partitions.run_timescaledb_jobs(conn, self._timescaledb_jobs.all())

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            batches=self._batches,
            fixes_inserted=self._inserted,
            fixes_duplicate=self._duplicates,
            dead_letters=self._dead_letters,
            partitions_created=self._partitions_created,
            unavailable_errors=self._unavailable,
        )

    def _today(self) -> int:
        return int(self._clock() // 86_400)

    async def _refresh_partitions(self) -> None:
        if self._layout != "native":
            return
        with self._counting_errors("reading the partition list"):
            async with self._connection() as conn:
                self._known_days = await partitions.existing_partition_days(conn)

    async def _ensure_partitions(self, batch_days: Sequence[int]) -> None:
        if self._layout != "native":
            return
        missing = partitions.days_to_create(
            batch_days,
            self._known_days,
            today=self._today(),
            days_ahead=self._days_ahead,
            max_late_days=self._max_late_days,
        )
        if not missing:
            return
        with self._counting_errors("creating fixes partitions"):
            async with self._connection() as conn:
                self._partitions_created += await partitions.ensure_partitions(conn, missing)
        self._known_days.update(missing)

    @contextlib.contextmanager
    def _counting_errors(self, action: str) -> Iterator[None]:
        try:
            with _db_errors(action):
                yield
        except StoreUnavailable:
            self._unavailable += 1
            raise

    async def write_batch(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        """Store a batch of fixes and its dead letters in one transaction; return after COMMIT.

        Raises :class:`StoreUnavailable` (retry later: nothing committed) or
        :class:`StoreWriteError` (this data is refused: nothing committed).
        """
        if len(fixes):
            await self._ensure_partitions(partitions.days_of(fixes.t_us).tolist())
        with self._counting_errors(f"writing {len(fixes)} fixes, {len(dead_letters)} dead letters"):
            async with self._connection() as conn, conn.transaction():
                inserted = await insert_fixes(conn, fixes)
                n_dead = await insert_dead_letters(conn, dead_letters)
        result = WriteResult(
            inserted=inserted, duplicates=len(fixes) - inserted, dead_letters=n_dead
        )
        self._batches += 1
        self._inserted += result.inserted
        self._duplicates += result.duplicates
        self._dead_letters += n_dead
        return result

    async def count_fixes(self, unit_id: str | None = None) -> int:
        with self._counting_errors("counting fixes"):
            async with self._connection() as conn:
                return await count_fixes(conn, unit_id)

    async def fixes_for_unit(self, unit_id: str, start_us: int, end_us: int) -> FixBatch:
        """Fixes of one unit with ``start_us <= t < end_us``, in fix-time order."""
        with self._counting_errors(f"reading fixes of {unit_id!r}"):
            async with self._connection() as conn:
                return await select_fixes_for_unit(conn, unit_id, start_us, end_us)

    async def recent_fixes(self, start_us: int, end_us: int) -> FixBatch:
        """Every unit's fixes with ``start_us <= t < end_us`` in receive order (engine restore)."""
        with self._counting_errors("reading recent fixes"):
            async with self._connection() as conn:
                return await select_recent_fixes(conn, start_us, end_us)

    async def last_fixes(self, start_us: int, end_us: int) -> FixBatch:
        """The newest fix of every unit with one in ``start_us <= t < end_us``, one query
        (the decoder's seed at start: ``Decoder.seed``)."""
        with self._counting_errors("reading the units' last fixes"):
            async with self._connection() as conn:
                return await select_last_fixes(conn, start_us, end_us)

    async def newest_fix_us(self, start_us: int, end_us: int) -> int | None:
        """The newest stored fix time in ``[start_us, end_us)``, None when there is none."""
        with self._counting_errors("reading the newest fix time"):
            async with self._connection() as conn:
                return await select_newest_fix_us(conn, start_us, end_us)

    async def detection_events_since(self, since_us: int) -> list[DetectionEvent]:
        """The latest published version of every visit and stop since *since_us* (restart)."""
        with self._counting_errors("reading published detection events"):
            async with self._connection() as conn:
                return await load_detection_events(conn, since_us)

    async def alert_records(
        self, *, service_date: dt.date | None = None, since_date: dt.date | None = None
    ) -> list[AlertRecord]:
        """The latest stored version of every alert and visit exception of *service_date* (or
        from *since_date* on): what a restarted alert desk is rebuilt from."""
        with self._counting_errors("reading stored alerts"):
            async with self._connection() as conn:
                return await load_alert_records(
                    conn, service_date=service_date, since_date=since_date
                )

    async def stop_states(self, service_date: dt.date) -> list[StopChanged]:
        """The stored state of every stop of *service_date* (its latest version): what a
        restarted schedule board continues from."""
        with self._counting_errors("reading stored stop states"):
            async with self._connection() as conn:
                return await load_stop_states(conn, service_date)

    async def learned_service_minutes(self, *, min_visits: int = 5) -> dict[str, float]:
        """Median service minutes per site over its completed visits (analytics view of
        migration 0007), for sites with at least *min_visits*: what the ETAs start from."""
        with self._counting_errors("reading service times"):
            async with self._connection() as conn:
                rows = await service_times(conn)
        return {r.site_id: r.p50_min for r in rows if r.visits >= min_visits}

    async def dead_letter_counts(self) -> dict[str, int]:
        """Stored dead letters by reason code."""
        with self._counting_errors("counting dead letters"):
            async with self._connection() as conn:
                return await count_dead_letters_by_reason(conn)

    async def upsert_units(self, rows: Sequence[UnitRow]) -> None:
        with self._counting_errors(f"upserting {len(rows)} units"):
            async with self._connection() as conn, conn.transaction():
                await upsert_units(conn, rows)

    async def load_units(self) -> dict[str, UnitRow]:
        with self._counting_errors("loading units"):
            async with self._connection() as conn:
                return await select_units(conn)

    async def detach_partitions_older_than(self, days: int, *, drop: bool = False) -> list[str]:
        """Retention: see :func:`store.partitions.detach_partitions_older_than` (uses the
        store's clock for "today")."""
        with self._counting_errors("detaching old partitions"):
            async with self._connection() as conn:
                gone = await partitions.detach_partitions_older_than(
                    conn, days, now_us=int(self._clock() * 1_000_000), drop=drop
                )
        await self._refresh_partitions()
        return gone


async def _configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    await create_stage_table(conn)


@contextlib.asynccontextmanager
async def open_store(dsn: str, **kwargs: Any) -> AsyncIterator[Store]:
    """``async with open_store(dsn) as store:`` — :meth:`Store.open` then :meth:`Store.aclose`."""
    store = await Store.open(dsn, **kwargs)
    try:
        yield store
    finally:
        await store.aclose()

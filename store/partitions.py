"""Day partitions of ``fixes``: which to create, creating them, detaching old ones.

Native layout (no TimescaleDB): one RANGE partition per UTC day, ``fixes_pYYYYMMDD``, plus
``fixes_default`` for anything outside the window the store keeps partitions for.  The writer
creates partitions ahead of time (``days_ahead``) and on demand for the days a batch contains,
as far back as ``max_late_days`` (a unit that buffered fixes for days must still be stored in a
day partition); older or further-future fix times go to the DEFAULT partition, which is indexed
on ``t`` and stays small.  Which days to create is a pure function of the batch days, the days
known to exist and "today" (:func:`days_to_create`); only :func:`ensure_partitions` does I/O.

With TimescaleDB, the hypertable makes its own daily chunks; ensure is a no-op and retention
uses ``drop_chunks`` (see :func:`detach_partitions_older_than`) or a retention policy
(:func:`apply_timescaledb_policies`).

Which layout a new database gets (issue 13) is decided *before* anything touches TimescaleDB,
from facts that cannot end the session: :func:`read_timescaledb_facts` reads
``pg_available_extensions``, ``pg_extension`` and ``SHOW shared_preload_libraries`` (plain
catalog reads), and :func:`decide_layout` is a pure function of those facts and the wanted
``partitioning``.  Running ``CREATE EXTENSION timescaledb`` on a server that did not preload
the library is what must never happen: TimescaleDB answers with FATAL and the backend is gone,
so no ``EXCEPTION`` block can fall back.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from store.errors import MigrationError, StoreError

US_PER_DAY = 86_400 * 1_000_000
_EPOCH_DATE = dt.date(1970, 1, 1)
_PART = re.compile(r"^fixes_p(\d{8})$")

Layout = Literal["native", "timescaledb"]
#: What the operator asks for; ``auto`` is resolved to a :data:`Layout` by :func:`decide_layout`.
Partitioning = Literal["auto", "native", "timescaledb"]

log = logging.getLogger(__name__)


def day_of_us(t_us: int) -> int:
    """UTC day number (days since 1970-01-01) of a µs timestamp."""
    return t_us // US_PER_DAY


def days_of(t_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Distinct UTC day numbers in a column of µs timestamps (floor, so pre-1970 works too)."""
    return np.unique(np.floor_divide(t_us, US_PER_DAY))


def day_to_date(day: int) -> dt.date:
    return _EPOCH_DATE + dt.timedelta(days=int(day))


def partition_name(day: int) -> str:
    return "fixes_p" + day_to_date(day).strftime("%Y%m%d")


def days_to_create(
    batch_days: Iterable[int],
    known_days: set[int],
    *,
    today: int,
    days_ahead: int,
    max_late_days: int,
) -> list[int]:
    """Days that need a partition now: today..today+days_ahead, and the batch's days within
    [today - max_late_days, today + days_ahead], minus those known to exist.  Sorted."""
    lo, hi = today - max_late_days, today + days_ahead
    wanted = set(range(today, hi + 1))
    wanted.update(int(d) for d in batch_days if lo <= d <= hi)
    return sorted(wanted - known_days)


async def layout_of(conn: psycopg.AsyncConnection[Any]) -> Layout:
    """Whether ``fixes`` is natively partitioned or a hypertable (asked of the catalogs)."""
    cur = await conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass),
                  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"""
    )
    row = await cur.fetchone()
    if row is not None and row[0]:
        return "native"
    if row is not None and row[1]:
        cur = await conn.execute(
            """SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                              WHERE hypertable_name = 'fixes'
                                AND hypertable_schema = current_schema())"""
        )
        hrow = await cur.fetchone()
        if hrow is not None and hrow[0]:
            return "timescaledb"
    raise MigrationError(
        "the fixes table is neither natively partitioned nor a TimescaleDB hypertable: "
        "it was not created by fleetwatch's migrations"
    )


async def existing_partition_days(conn: psycopg.AsyncConnection[Any]) -> set[int]:
    """Day numbers of the day partitions currently attached to ``fixes``."""
    cur = await conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'fixes'::regclass"""
    )
    days: set[int] = set()
    for (name,) in await cur.fetchall():
        m = _PART.match(str(name))
        if m:
            d = dt.datetime.strptime(m[1], "%Y%m%d").date()
            days.add((d - _EPOCH_DATE).days)
    return days


async def ensure_partitions(conn: psycopg.AsyncConnection[Any], days: Iterable[int]) -> int:
    """Create the day partitions missing among *days* (one transaction); returns how many.

    Rows of those days already in the DEFAULT partition are moved into the new partition.
    A day whose partition was detached for retention is not re-created: its rows go to DEFAULT.
    """
    dates = [day_to_date(d) for d in days]
    if not dates:
        return 0
    async with conn.transaction():
        cur = await conn.execute("SELECT fleetwatch_ensure_fixes_partitions(%s::date[])", (dates,))
        row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def detach_partitions_older_than(
    conn: psycopg.AsyncConnection[Any],
    days: int,
    *,
    now_us: int | None = None,
    drop: bool = False,
) -> list[str]:
    """Detach (or with ``drop=True`` drop) day partitions that end more than *days* days before
    today (UTC); returns their names, oldest first.

    A detached partition stays as a plain table (``fixes_pYYYYMMDD``) for archiving; nothing
    reads it any more, and a late fix for that day goes to the DEFAULT partition.  *now_us*
    defaults to the wall clock (this is the shell; pass it for reproducible runs).
    With TimescaleDB this calls ``drop_chunks`` (chunks cannot be detached) and returns the
    dropped chunk names, whatever *drop* says.
    """
    if days < 0:
        raise ValueError(f"retention of {days} days: must be >= 0")
    if now_us is None:
        now_us = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    cutoff_day = day_of_us(now_us) - days  # partitions whose day < cutoff_day go
    if await layout_of(conn) == "timescaledb":
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT drop_chunks('fixes', older_than => %s::timestamptz)::text",
                (dt.datetime.combine(day_to_date(cutoff_day), dt.time(), tzinfo=dt.UTC),),
            )
            return [str(r[0]) for r in await cur.fetchall()]
    gone: list[str] = []
    for day in sorted(await existing_partition_days(conn)):
        if day >= cutoff_day:
            break
        name = partition_name(day)
        async with conn.transaction():
            await conn.execute(
                sql.SQL("ALTER TABLE fixes DETACH PARTITION {}").format(sql.Identifier(name))
            )
            if drop:
                await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        gone.append(name)
    return gone


# --- Which layout: TimescaleDB facts and the decision (issue 13) -----------------------------


class TimescaleDBUnavailable(StoreError):
    """``partitioning="timescaledb"`` was asked for but this server cannot give a hypertable.

    The operator's move: the message says what to change in postgresql.conf (or to choose
    ``partitioning="native"``/``"auto"``).  Nothing was created.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class TimescaleDBFacts:
    """What the server says about TimescaleDB, read without loading the library.

    ``available_version``: the default version in ``pg_available_extensions`` (the extension's
    files are installed on the server), else None.  ``created_version``: ``pg_extension``'s
    version in this database, else None.  ``preload``: the raw ``shared_preload_libraries``
    value, or None when this role may not read it (not a superuser nor pg_read_all_settings).
    """

    available_version: str | None
    created_version: str | None
    preload: str | None

    @property
    def preloaded(self) -> bool | None:
        """Whether ``timescaledb`` is in ``shared_preload_libraries`` (None: cannot tell)."""
        return None if self.preload is None else preload_has_timescaledb(self.preload)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutDecision:
    """The layout a new ``fixes`` table gets, and the one log line that says why."""

    layout: Layout
    reason: str
    fallback: bool  # auto wanted a hypertable but cannot have one: logged as a warning


def preload_has_timescaledb(preload: str) -> bool:
    """Whether a ``shared_preload_libraries`` value names TimescaleDB's loader.

    The value is a comma-separated list whose items may be quoted and may be paths
    (``'$libdir/timescaledb'``); a versioned library (``timescaledb-2.28.3``) is not the
    loader and does not count.
    """
    for item in preload.split(","):
        name = item.strip().strip('"').strip()
        name = name.rsplit("/", 1)[-1]
        name = name.removesuffix(".so")
        if name == "timescaledb":
            return True
    return False


def suggested_preload(preload: str | None) -> str:
    """The postgresql.conf line to write: the current list with ``timescaledb`` added."""
    items = [i.strip() for i in (preload or "").split(",") if i.strip()]
    return "shared_preload_libraries = '" + ",".join([*items, "timescaledb"]) + "'"


def decide_layout(wanted: Partitioning, facts: TimescaleDBFacts) -> LayoutDecision:
    """Resolve *wanted* against *facts*; raises :class:`TimescaleDBUnavailable` only when
    ``timescaledb`` was asked for explicitly.

    A hypertable needs the extension's files on the server *and* the library preloaded (or the
    extension already created in this database, which a DBA only does on a preloading server;
    used when the preload list cannot be read).  An explicit "not preloaded" wins over an
    existing extension: using it would end the session.
    """
    if wanted not in ("auto", "native", "timescaledb"):
        raise ValueError(f"partitioning must be auto, native or timescaledb, not {wanted!r}")
    if wanted == "native":
        return LayoutDecision(
            layout="native", reason="partitioning=native: native day partitions", fallback=False
        )
    version = facts.created_version or facts.available_version
    preloaded = facts.preloaded
    fix_conf = f"add {suggested_preload(facts.preload)} to postgresql.conf and restart PostgreSQL"
    if version is not None and (
        preloaded is True or (preloaded is None and facts.created_version is not None)
    ):
        return LayoutDecision(
            layout="timescaledb",
            reason=f"partitioning={wanted}: TimescaleDB {version} hypertable (1-day chunks)",
            fallback=False,
        )
    if version is None:
        why = "the timescaledb extension is not installed on this PostgreSQL server"
        todo = "install TimescaleDB for this PostgreSQL version and " + fix_conf
        if preloaded:
            why = (
                "shared_preload_libraries names timescaledb but its extension files are "
                "missing (not in pg_available_extensions)"
            )
            todo = "reinstall TimescaleDB for this PostgreSQL version"
    elif preloaded is None:
        why = (
            f"TimescaleDB {version} is installed but this role may not read "
            "shared_preload_libraries and the extension is not created in this database"
        )
        todo = (
            "make sure postgresql.conf has shared_preload_libraries including 'timescaledb', "
            "then run CREATE EXTENSION timescaledb as a superuser"
        )
    else:
        why = f"TimescaleDB {version} is installed but not preloaded"
        todo = fix_conf
    if wanted == "timescaledb":
        raise TimescaleDBUnavailable(
            f"partitioning=timescaledb: {why}; {todo} (or use partitioning=native)"
        )
    # auto: only worth a warning when TimescaleDB is there but unusable
    return LayoutDecision(
        layout="native",
        reason=f"partitioning=auto: {why}, so fixes uses native day partitions"
        + (f"; for a hypertable {todo} before the first start" if version is not None else ""),
        fallback=version is not None,
    )


async def read_timescaledb_facts(conn: psycopg.AsyncConnection[Any]) -> TimescaleDBFacts:
    """Read :class:`TimescaleDBFacts` with catalog queries only (never loads the library).

    *conn* must be in autocommit mode or outside a transaction that matters: a role that may
    not read ``shared_preload_libraries`` gets an ordinary ERROR here, which is caught.
    """
    cur = await conn.execute(
        """SELECT (SELECT default_version FROM pg_available_extensions
                   WHERE name = 'timescaledb'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"""
    )
    row = await cur.fetchone()
    available, created = (row[0], row[1]) if row is not None else (None, None)
    preload: str | None
    try:
        async with conn.transaction():
            cur = await conn.execute("SHOW shared_preload_libraries")
            prow = await cur.fetchone()
        preload = str(prow[0]) if prow is not None else ""
    except psycopg.errors.InsufficientPrivilege:
        preload = None
    return TimescaleDBFacts(
        available_version=None if available is None else str(available),
        created_version=None if created is None else str(created),
        preload=preload,
    )


async def resolve_layout(
    conn: psycopg.AsyncConnection[Any], wanted: Partitioning
) -> LayoutDecision:
    """Read the facts, decide, and log the decision once (a warning for a fallback)."""
    decision = decide_layout(wanted, await read_timescaledb_facts(conn))
    log.log(logging.WARNING if decision.fallback else logging.INFO, "%s", decision.reason)
    return decision


# --- TimescaleDB policies: compression, retention, the hourly aggregate's refresh ------------

#: The fixes_hourly refresh policy re-aggregates this far back: late fixes up to this age are
#: folded into the materialised hours; older late fixes are not (refresh by hand).  It cannot be
#: unbounded: measured on 2.28.3, a refresh over a range whose chunks retention dropped
#: recomputes those hours from nothing and empties them, so retention must exceed it.
HOURLY_REFRESH_LOOKBACK_DAYS = 3
#: ... and leaves the newest hour to the real-time part (it is still filling).
HOURLY_REFRESH_END_OFFSET = "1 hour"
HOURLY_REFRESH_EVERY = "1 hour"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimescaleDBJobs:
    """The policy jobs of the hypertable layout (``CALL run_job(id)`` runs one now)."""

    compression: int | None
    retention: int | None
    refresh_hourly: int

    def all(self) -> tuple[int, ...]:
        """In the order a maintenance pass should run them: refresh before compress/drop."""
        return tuple(
            j for j in (self.refresh_hourly, self.compression, self.retention) if j is not None
        )


def check_policy_settings(*, compress_after_days: int | None, retention_days: int | None) -> None:
    """Refuse settings that would lose aggregates or compress the chunk being written."""
    if compress_after_days is not None and compress_after_days < 1:
        raise ValueError(
            f"compress_after_days={compress_after_days}: must be >= 1 (today's chunk is being "
            "written) or None to keep chunks uncompressed"
        )
    if retention_days is not None and retention_days <= HOURLY_REFRESH_LOOKBACK_DAYS:
        raise ValueError(
            f"retention_days={retention_days}: must exceed the hourly aggregate's refresh "
            f"window of {HOURLY_REFRESH_LOOKBACK_DAYS} days (a refresh over dropped fixes would "
            "empty those hours), or None to keep fixes forever"
        )


async def _policy_job(
    conn: psycopg.AsyncConnection[Any], proc: str, hypertable: str
) -> tuple[int, str] | None:
    """(job id, its interval setting as text) of *proc* on *hypertable*, if any."""
    key = {"policy_compression": "compress_after", "policy_retention": "drop_after"}.get(proc, "")
    cur = await conn.execute(
        """SELECT job_id, coalesce(config->>%s, '') FROM timescaledb_information.jobs
           WHERE proc_name = %s AND hypertable_name = %s ORDER BY job_id LIMIT 1""",
        (key, proc, hypertable),
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


async def _same_interval(conn: psycopg.AsyncConnection[Any], text: str, days: int) -> bool:
    cur = await conn.execute("SELECT %s::interval = make_interval(days => %s)", (text, days))
    row = await cur.fetchone()
    return bool(row and row[0])


async def apply_timescaledb_policies(
    conn: psycopg.AsyncConnection[Any],
    *,
    compress_after_days: int | None,
    retention_days: int | None,
) -> TimescaleDBJobs:
    """Make the hypertable's policy jobs match the settings (idempotent; *conn* autocommit).

    ``compress_after_days``: chunks whose day ended that long ago are compressed (None: no
    compression policy).  ``retention_days``: chunks older than that are dropped (None: fixes
    are kept).  A policy whose interval changed is replaced; one whose setting is now None is
    removed.  The hourly aggregate's refresh policy is always there.
    """
    check_policy_settings(compress_after_days=compress_after_days, retention_days=retention_days)
    jobs: dict[str, int | None] = {}
    for proc, fn, arg, days in (
        ("policy_compression", "compression", "compress_after", compress_after_days),
        ("policy_retention", "retention", "drop_after", retention_days),
    ):
        current = await _policy_job(conn, proc, "fixes")
        if (
            current is not None
            and days is not None
            and await _same_interval(conn, current[1], days)
        ):
            jobs[fn] = current[0]
            continue
        async with conn.transaction():
            if current is not None:
                await conn.execute(
                    sql.SQL("SELECT {}('fixes', if_exists => true)").format(
                        sql.Identifier(f"remove_{fn}_policy")
                    )
                )
            jobs[fn] = None
            if days is not None:
                cur = await conn.execute(
                    sql.SQL("SELECT {}('fixes', {} => make_interval(days => %s))").format(
                        sql.Identifier(f"add_{fn}_policy"), sql.Identifier(arg)
                    ),
                    (days,),
                )
                row = await cur.fetchone()
                jobs[fn] = int(row[0]) if row is not None else None
    cur = await conn.execute(
        """SELECT add_continuous_aggregate_policy('fixes_hourly',
               start_offset => make_interval(days => %s), end_offset => %s::interval,
               schedule_interval => %s::interval, if_not_exists => true)""",
        (HOURLY_REFRESH_LOOKBACK_DAYS, HOURLY_REFRESH_END_OFFSET, HOURLY_REFRESH_EVERY),
    )
    cur = await conn.execute(
        # the jobs view names the aggregate (2.28) or its materialisation table (older)
        """SELECT j.job_id FROM timescaledb_information.jobs j
           JOIN timescaledb_information.continuous_aggregates c
             ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name)
           WHERE c.view_name = 'fixes_hourly' AND c.view_schema = current_schema()
             AND j.proc_name = 'policy_refresh_continuous_aggregate'"""
    )
    row = await cur.fetchone()
    if row is None:
        raise MigrationError("fixes_hourly has no refresh policy after adding one")
    return TimescaleDBJobs(
        compression=jobs["compression"], retention=jobs["retention"], refresh_hourly=int(row[0])
    )


async def run_timescaledb_jobs(conn: psycopg.AsyncConnection[Any], job_ids: Iterable[int]) -> None:
    """``CALL run_job(id)`` for each job, in this session, now (*conn* autocommit).

    TimescaleDB 2.28.3 on PostgreSQL 15.20 records jobs run by its *background scheduler* as
    failed ("cannot drop portal ... while it is being set up") although their work commits;
    ``run_job`` runs them cleanly.  Tests and operators who want a known state call this.
    """
    for job in job_ids:
        await conn.execute("CALL run_job(%s)", (job,))

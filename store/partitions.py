"""Day partitions of ``fixes``: which to create, creating them, detaching old ones.

Native layout (no TimescaleDB): one RANGE partition per UTC day, ``fixes_pYYYYMMDD``, plus
``fixes_default`` for anything outside the window the store keeps partitions for.  The writer
creates partitions ahead of time (``days_ahead``) and on demand for the days a batch contains,
as far back as ``max_late_days`` (a unit that buffered fixes for days must still be stored in a
day partition); older or further-future fix times go to the DEFAULT partition, which is indexed
on ``t`` and stays small.  Which days to create is a pure function of the batch days, the days
known to exist and "today" (:func:`days_to_create`); only :func:`ensure_partitions` does I/O.

With TimescaleDB, the hypertable makes its own daily chunks; ensure is a no-op and retention
uses ``drop_chunks`` (see :func:`detach_partitions_older_than`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

US_PER_DAY = 86_400 * 1_000_000
_EPOCH_DATE = dt.date(1970, 1, 1)
_PART = re.compile(r"^fixes_p(\d{8})$")

Layout = Literal["native", "timescaledb"]


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
    """Whether ``fixes`` is natively partitioned or a hypertable."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass)"
    )
    row = await cur.fetchone()
    return "native" if row is not None and row[0] else "timescaledb"


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

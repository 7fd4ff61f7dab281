"""One vehicle's recent track from the store: its fixes thinned to a bounded number of points,
and the stops and visits detected in that time.  What the console shows as "the last hour's
track" (ws/track.py), also after a restart, when the hub's memory holds nothing older than the
process.

Why it looks like this:

* **The window ends at the vehicle's newest stored fix** (at or before ``until_us``), not at the
  wall clock: a truck that went silent 20 minutes ago shows the hour before it went silent, as
  the hub's memory track does, and a replayed day shows its own hour.  The newest fix is one
  backward index probe (``fixes_vehicle_t``; the primary key ``(unit_id, t)`` for a unit the
  registry does not map, whose ``vehicle_id`` is NULL and whose vehicle is its unit id), bounded
  below by ``lookback_s`` so a vehicle silent for days costs a bounded scan and no old partition
  is read.
* **Thinned in the database**: one point per time bucket (the newest fix of the bucket, so the
  track ends at the truck), ``DISTINCT ON (date_bin(step, t, since))``; the bucket width is
  chosen so that at most ``max_points`` come back whatever the fix rate.  An hour at 1 Hz is
  3,600 rows read from the index but 500 sent over the wire and the websocket.
* **Stops and visits** come from the outbox (``record_versions``, kinds ``stop`` and
  ``visit``: every version the engine published), the newest version of each, through the
  expression index of migration 0008 on ``(body->>'vehicle_id', at)``.  A retracted one is left
  out (the engine took it back).
* One READ ONLY transaction with a ``statement_timeout``: a slow database costs the console a
  bounded wait, and the caller falls back to the memory track.

Errors: :class:`store.errors.StoreUnavailable` (the database cannot be reached, the pool had no
connection in time, the statement timed out) or :class:`store.errors.StoreError` (any other
database error: the schema is not migrated, ...).  Wrong arguments are the caller's bug:
:class:`ValueError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from core.fixes import datetime_to_us, us_to_datetime
from store.errors import StoreError, StoreUnavailable

US = 1_000_000
#: bounds of one request (the protocol checks them first; checked again here)
MAX_TRACK_MINUTES = 24 * 60
MIN_TRACK_POINTS = 2
MAX_TRACK_POINTS = 10_000
#: stops / visits returned at most (newest first kept)
MAX_TRACK_EVENTS = 500


class ConnectionSource(Protocol):
    """``async with source.connection() as conn`` (a psycopg pool of autocommit connections)."""

    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackStop:
    """A detected stop (the vehicle stood still): ``end_us`` None while it lasts."""

    stop_id: str
    site_id: str | None
    start_us: int
    end_us: int | None
    lat: float
    lon: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackVisit:
    """A detected site visit: ``departure_us`` None while the vehicle is there."""

    visit_id: str
    site_id: str
    arrival_us: int
    departure_us: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTrack:
    """The answer: parallel tuples of the kept points (oldest first; ``speed_kmh`` NaN when
    the unit gave none), how many fixes the window held before thinning, stops and visits."""

    vehicle_id: str
    since_us: int
    until_us: int
    fixes: int
    t_us: tuple[int, ...]
    lat: tuple[float, ...]
    lon: tuple[float, ...]
    speed_kmh: tuple[float, ...]
    stops: tuple[TrackStop, ...]
    visits: tuple[TrackVisit, ...]


def bucket_us(window_us: int, max_points: int) -> int:
    """The bucket width that yields at most *max_points* buckets over ``[since, since +
    window_us]`` (both ends inclusive: ``window // width <= max_points - 1``)."""
    if max_points < MIN_TRACK_POINTS:
        raise ValueError(f"max_points must be >= {MIN_TRACK_POINTS}, got {max_points}")
    return max(1, window_us // (max_points - 1) + 1)


_NEWEST = """
SELECT max(t) FROM (
    (SELECT t FROM fixes
      WHERE vehicle_id = %(v)s AND t <= %(until)s AND t >= %(floor)s
      ORDER BY t DESC LIMIT 1)
    UNION ALL
    (SELECT t FROM fixes
      WHERE unit_id = %(v)s AND vehicle_id IS NULL AND t <= %(until)s AND t >= %(floor)s
      ORDER BY t DESC LIMIT 1)
) newest
"""

_POINTS = """
WITH w AS (
    SELECT t, lat, lon, speed_kmh FROM fixes
     WHERE vehicle_id = %(v)s AND t >= %(since)s AND t <= %(until)s
    UNION ALL
    SELECT t, lat, lon, speed_kmh FROM fixes
     WHERE unit_id = %(v)s AND vehicle_id IS NULL AND t >= %(since)s AND t <= %(until)s
)
SELECT DISTINCT ON (date_bin(%(step)s, t, %(since)s))
       t, lat, lon, speed_kmh, count(*) OVER ()
  FROM w
 ORDER BY date_bin(%(step)s, t, %(since)s), t DESC
"""

# The predicate and the expression are those of the index of migration 0008 (write them alike,
# or the planner cannot use it).
_EVENTS = """
SELECT DISTINCT ON (kind, id) kind, body
  FROM record_versions
 WHERE kind IN ('stop', 'visit') AND (body->>'vehicle_id') = %(v)s
   AND at >= %(since)s AND at <= %(until)s
 ORDER BY kind, id, version DESC
"""


async def load_track(
    source: ConnectionSource,
    vehicle_id: str,
    *,
    until_us: int,
    minutes: int = 60,
    max_points: int = 500,
    lookback_s: float = 2 * 86_400,
    timeout_ms: int = 3000,
) -> StoredTrack | None:
    """*vehicle_id*'s last *minutes* of stored fixes, ending at its newest fix at or before
    *until_us* (and not older than *lookback_s* before it), thinned to at most *max_points*;
    None when the store holds no such fix."""
    if not 1 <= minutes <= MAX_TRACK_MINUTES:
        raise ValueError(f"minutes must be in [1, {MAX_TRACK_MINUTES}], got {minutes}")
    if not MIN_TRACK_POINTS <= max_points <= MAX_TRACK_POINTS:
        raise ValueError(f"max_points must be in [{MIN_TRACK_POINTS}, {MAX_TRACK_POINTS}]")
    if not vehicle_id:
        raise ValueError("vehicle_id is empty")
    until = us_to_datetime(until_us)
    floor = us_to_datetime(until_us - round(lookback_s * US))
    try:
        async with _reading(source, timeout_ms) as conn:
            cur = await conn.execute(_NEWEST, {"v": vehicle_id, "until": until, "floor": floor})
            row = await cur.fetchone()
            newest: dt.datetime | None = None if row is None else row[0]
            if newest is None:
                return None
            end_us = datetime_to_us(newest)
            window_us = minutes * 60 * US
            since_us = end_us - window_us
            args = {
                "v": vehicle_id,
                "since": us_to_datetime(since_us),
                "until": newest,
                "step": dt.timedelta(microseconds=bucket_us(window_us, max_points)),
            }
            cur = await conn.execute(_POINTS, args)
            rows = await cur.fetchall()
            cur = await conn.execute(_EVENTS, args)
            events = await cur.fetchall()
    except psycopg.OperationalError as exc:  # includes the pool's timeout and query cancel
        raise StoreUnavailable(f"reading the track of {vehicle_id}: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"reading the track of {vehicle_id}: {exc}") from exc
    stops, visits = _events(events)
    return StoredTrack(
        vehicle_id=vehicle_id,
        since_us=since_us,
        until_us=end_us,
        fixes=int(rows[0][4]) if rows else 0,
        t_us=tuple(datetime_to_us(r[0]) for r in rows),
        lat=tuple(float(r[1]) for r in rows),
        lon=tuple(float(r[2]) for r in rows),
        speed_kmh=tuple(math.nan if r[3] is None else float(r[3]) for r in rows),
        stops=stops,
        visits=visits,
    )


@contextlib.asynccontextmanager
async def _reading(
    source: ConnectionSource, timeout_ms: int
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection in a READ ONLY REPEATABLE READ transaction (the three statements
    see one snapshot) with a statement timeout."""
    async with source.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_ms)}ms",)
        )
        yield conn


def _us(text: Any) -> int | None:
    if text is None:
        return None
    return datetime_to_us(dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")))


def _events(
    rows: list[tuple[Any, ...]],
) -> tuple[tuple[TrackStop, ...], tuple[TrackVisit, ...]]:
    """Stored ``stop``/``visit`` bodies (newest version each) as stops and visits, oldest
    first, retracted ones left out; a body we cannot read is skipped, not fatal (the outbox
    is written by every fleetwatch version, this reader is one of them)."""
    stops: list[TrackStop] = []
    visits: list[TrackVisit] = []
    for kind, body in rows:
        if not isinstance(body, dict) or body.get("retracted"):
            continue
        try:
            if kind == "stop":
                start = _us(body["start"])
                if start is None:
                    continue
                stops.append(
                    TrackStop(
                        stop_id=str(body["stop_id"]),
                        site_id=None if body.get("site_id") is None else str(body["site_id"]),
                        start_us=start,
                        end_us=_us(body.get("end")),
                        lat=float(body["lat"]),
                        lon=float(body["lon"]),
                    )
                )
            else:
                arrival = _us(body["arrival"])
                if arrival is None:
                    continue
                visits.append(
                    TrackVisit(
                        visit_id=str(body["visit_id"]),
                        site_id=str(body["site_id"]),
                        arrival_us=arrival,
                        departure_us=_us(body.get("departure")),
                    )
                )
        except (KeyError, TypeError, ValueError):
            continue
    stops.sort(key=lambda s: (s.start_us, s.stop_id))
    visits.sort(key=lambda v: (v.arrival_us, v.visit_id))
    return tuple(stops[-MAX_TRACK_EVENTS:]), tuple(visits[-MAX_TRACK_EVENTS:])

"""The CRM and operations read queries: the visit-exception feed, service quality, overdue
sites and dispatcher KPIs, over the tables of migration 0005.

Why the feed is a plain ``seq > cursor`` scan: every writer of ``record_versions`` takes
``pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))`` *before* drawing a ``seq`` and holds it
until COMMIT (0005's header), so seqs become visible in increasing order.  A reader that has seen
seq N can never later find a committed row below N: the cursor "last seq returned" never skips a
row that a concurrent transaction committed late.  No reader-side lock is needed, so the API never
slows the writers down.

Every query runs in a READ ONLY transaction with a ``statement_timeout`` (``timeout_ms``), so a
slow query cannot hold a pooled connection for long; every size is bounded by the caller
(``fleetwatch/crm_api.py`` validates the parameters; the functions here check them again and
raise :class:`ValueError`, a bug of the caller, never the client's fault).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

#: feed page bounds (items); scanning a filtered feed stops after this many rows per request
MAX_FEED_LIMIT = 1000
FEED_SCAN_ROWS = 20_000
#: clients per service-quality page, sites per overdue page
MAX_CLIENT_PAGE = 500
MAX_OVERDUE_PAGE = 1000
#: longest date range any query accepts (days, inclusive)
MAX_RANGE_DAYS = 366
#: how far back overdue-site detection looks for due dates and visits
OVERDUE_LOOKBACK_DAYS = 366
EXCEPTION_KINDS = ("late", "missed", "cancelled", "unplanned")


class ConnectionSource(Protocol):
    """What the queries need: ``async with source.connection() as conn`` (a psycopg pool)."""

    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


@contextlib.asynccontextmanager
async def _reading(
    source: ConnectionSource, timeout_ms: int
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection inside a READ ONLY REPEATABLE READ transaction with a timeout.

    REPEATABLE READ: the several statements of one answer (a page and its totals) see one
    snapshot.  The pool's connections are autocommit, so the transaction block is explicit.
    """
    async with source.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_ms)}ms",)
        )
        yield conn


def _check_range(start: dt.date, end: dt.date) -> None:
    if end < start:
        raise ValueError(f"date range {start}..{end}: end before start")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ValueError(f"date range {start}..{end}: more than {MAX_RANGE_DAYS} days")


# --- the feed ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedFilter:
    """Optional filters on the exception feed (None: no filter)."""

    client_id: str | None = None
    site_id: str | None = None
    date_from: dt.date | None = None  # service date, inclusive
    date_to: dt.date | None = None  # service date, inclusive
    kind: str | None = None

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.client_id, self.site_id, self.date_from, self.date_to, self.kind)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPage:
    """One page of the feed: the versions (``seq`` and the ``body`` as JSON text: the API
    validates and re-serialises it in one pass of pydantic-core, never as Python dicts) and
    where to go on from.

    ``next_seq``: pass it back as the cursor.  ``more``: True when rows beyond ``next_seq``
    were already committed when the page was read (a page can be empty and still ``more`` when
    a filter matched nothing in the scanned stretch).
    """

    items: list[tuple[int, str]]
    next_seq: int
    more: bool
    head_seq: int


async def feed_page(
    source: ConnectionSource,
    *,
    after_seq: int,
    limit: int,
    where: FeedFilter = FeedFilter(),
    timeout_ms: int = 10_000,
    scan_rows: int = FEED_SCAN_ROWS,
) -> FeedPage:
    """The exception versions committed after ``after_seq``, in commit (seq) order."""
    if not 1 <= limit <= MAX_FEED_LIMIT:
        raise ValueError(f"limit {limit}: 1..{MAX_FEED_LIMIT}")
    if after_seq < 0:
        raise ValueError(f"after_seq {after_seq} < 0")
    conds = []
    params: dict[str, Any] = {"after": after_seq, "limit": limit, "scan": scan_rows}
    if where.client_id is not None:
        conds.append("body->>'client_id' = %(client_id)s")
        params["client_id"] = where.client_id
    if where.site_id is not None:
        conds.append("body->>'site_id' = %(site_id)s")
        params["site_id"] = where.site_id
    if where.kind is not None:
        conds.append("body->>'kind' = %(kind)s")
        params["kind"] = where.kind
    if where.date_from is not None:
        conds.append("body->>'service_date' >= %(date_from)s")
        params["date_from"] = where.date_from.isoformat()
    if where.date_to is not None:
        conds.append("body->>'service_date' <= %(date_to)s")
        params["date_to"] = where.date_to.isoformat()
    async with _reading(source, timeout_ms) as conn:
        head_row = await (
            await conn.execute(
                "SELECT coalesce(max(seq), 0) FROM record_versions WHERE kind = 'exception'"
            )
        ).fetchone()
        head = int(head_row[0]) if head_row else 0
        if not conds:
            cur = await conn.execute(
                "SELECT seq, body::text FROM record_versions WHERE kind = 'exception' AND seq > "
                "%(after)s ORDER BY seq LIMIT %(limit)s",
                params,
            )
            rows = await cur.fetchall()
            items = [(int(s), str(b)) for s, b in rows]
            next_seq = items[-1][0] if items else after_seq
            return FeedPage(items=items, next_seq=next_seq, more=next_seq < head, head_seq=head)
        # filtered: scan a bounded stretch of the feed, keep the matches; the cursor moves to
        # the last match of a full page, else to the end of the stretch (nothing is skipped:
        # the rows in between did not match)
        cur = await conn.execute(
            "WITH scanned AS (SELECT seq, body FROM record_versions WHERE kind = 'exception' "
            "AND seq > %(after)s ORDER BY seq LIMIT %(scan)s) "
            "SELECT seq, body::text FROM scanned WHERE "
            + " AND ".join(conds)
            + " ORDER BY seq LIMIT %(limit)s",
            params,
        )
        rows = await cur.fetchall()
        items = [(int(s), str(b)) for s, b in rows]
        if len(items) == limit:
            next_seq = items[-1][0]
        else:
            end = await (
                await conn.execute(
                    "SELECT max(seq) FROM (SELECT seq FROM record_versions WHERE kind = "
                    "'exception' AND seq > %(after)s ORDER BY seq LIMIT %(scan)s) s",
                    params,
                )
            ).fetchone()
            next_seq = int(end[0]) if end and end[0] is not None else after_seq
        return FeedPage(items=items, next_seq=next_seq, more=next_seq < head, head_seq=head)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedSummary:
    """The current exceptions (latest version per id) counted by (kind, status), as of the
    feed position ``head_seq``: a client that has applied the feed up to exactly ``head_seq``
    must hold the same counts."""

    head_seq: int
    counts: dict[tuple[str, str], int]


async def feed_summary(source: ConnectionSource, *, timeout_ms: int = 10_000) -> FeedSummary:
    async with _reading(source, timeout_ms) as conn:
        head_row = await (
            await conn.execute(
                "SELECT coalesce(max(seq), 0) FROM record_versions WHERE kind = 'exception'"
            )
        ).fetchone()
        cur = await conn.execute(
            "SELECT kind, status, count(*) FROM visit_exceptions_current GROUP BY 1, 2"
        )
        counts = {(str(k), str(s)): int(n) for k, s, n in await cur.fetchall()}
    return FeedSummary(head_seq=int(head_row[0]) if head_row else 0, counts=counts)


# --- service quality ---------------------------------------------------------------------------

_QUALITY_COLUMNS = """
    count(*) AS due,
    count(*) FILTER (WHERE state = 'visited' AND outcome IS DISTINCT FROM 'late') AS on_time,
    count(*) FILTER (WHERE state = 'visited' AND outcome = 'late') AS late,
    avg(minutes_late) FILTER (WHERE state = 'visited' AND outcome = 'late') AS late_mean,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY minutes_late)
        FILTER (WHERE state = 'visited' AND outcome = 'late') AS late_p90,
    count(*) FILTER (WHERE state = 'missed') AS missed,
    count(*) FILTER (WHERE state = 'cancelled') AS cancelled
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quality:
    """Service quality of one client or site over a date range (planned stops).

    ``due``: planned stops (cancelled ones included); ``pending``: not decided yet (still
    pending, at risk or late without a visit); ``on_time_pct``: on time ÷ (on time + late +
    missed) × 100, None when nothing was decided.
    """

    due: int
    on_time: int
    late: int
    late_mean_minutes: float | None
    late_p90_minutes: float | None
    missed: int
    cancelled: int

    @property
    def pending(self) -> int:
        return self.due - self.on_time - self.late - self.missed - self.cancelled

    @property
    def on_time_pct(self) -> float | None:
        decided = self.on_time + self.late + self.missed
        return round(100.0 * self.on_time / decided, 2) if decided else None


def _quality(row: dict[str, Any]) -> Quality:
    def opt(x: Any) -> float | None:
        return None if x is None else round(float(x), 2)

    return Quality(
        due=int(row["due"]),
        on_time=int(row["on_time"]),
        late=int(row["late"]),
        late_mean_minutes=opt(row["late_mean"]),
        late_p90_minutes=opt(row["late_p90"]),
        missed=int(row["missed"]),
        cancelled=int(row["cancelled"]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientQuality:
    client_id: str
    total: Quality
    sites: list[tuple[str, Quality]]


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityPage:
    clients: list[ClientQuality]
    next_client: str | None  # pass back as ``after_client``; None: last page


async def service_quality(
    source: ConnectionSource,
    *,
    date_from: dt.date,
    date_to: dt.date,
    client_id: str | None = None,
    after_client: str | None = None,
    limit: int = 100,
    timeout_ms: int = 10_000,
) -> QualityPage:
    """Per client (one page of clients, in client id order) and per site of each client.

    Sites without a client are not listed (the CRM has no account for them).
    """
    _check_range(date_from, date_to)
    if not 1 <= limit <= MAX_CLIENT_PAGE:
        raise ValueError(f"limit {limit}: 1..{MAX_CLIENT_PAGE}")
    params: dict[str, Any] = {
        "f": date_from,
        "t": date_to,
        "client": client_id,
        "after": after_client,
        "limit": limit + 1,
    }
    async with _reading(source, timeout_ms) as conn:
        cur = await conn.execute(
            "SELECT DISTINCT client_id FROM stop_states_current WHERE service_date BETWEEN %(f)s "
            "AND %(t)s AND client_id IS NOT NULL "
            "AND (%(client)s::text IS NULL OR client_id = %(client)s::text) "
            "AND (%(after)s::text IS NULL OR client_id > %(after)s::text) "
            "ORDER BY client_id LIMIT %(limit)s",
            params,
        )
        ids = [str(r[0]) for r in await cur.fetchall()]
        more = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            return QualityPage(clients=[], next_client=None)
        cur2 = conn.cursor(row_factory=dict_row)
        await cur2.execute(
            f"SELECT client_id, site_id, GROUPING(site_id) AS is_total, {_QUALITY_COLUMNS} "
            "FROM stop_states_current WHERE service_date BETWEEN %(f)s AND %(t)s "
            "AND client_id = ANY(%(ids)s) "
            "GROUP BY GROUPING SETS ((client_id), (client_id, site_id)) "
            "ORDER BY client_id, is_total DESC, site_id",
            {**params, "ids": ids},
        )
        by_client: dict[str, ClientQuality] = {}
        for row in await cur2.fetchall():
            cid = str(row["client_id"])
            if row["is_total"]:
                by_client[cid] = ClientQuality(client_id=cid, total=_quality(row), sites=[])
            else:
                by_client[cid].sites.append((str(row["site_id"]), _quality(row)))
    return QualityPage(
        clients=[by_client[c] for c in ids if c in by_client],
        next_client=ids[-1] if more else None,
    )


# --- overdue sites -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OverdueSite:
    """A site with no visit within its contract period, as of a date.

    ``period_days``: the contract's period: the longest gap between two consecutive due dates
    in the last year of plans (or the caller's fixed period).  ``last_visit``: the service date
    of its last visited stop (None: none in the look-back year).
    """

    site_id: str
    client_id: str | None
    period_days: int
    last_visit: dt.date | None
    days_since_visit: int | None
    last_due: dt.date


async def overdue_sites(
    source: ConnectionSource,
    *,
    as_of: dt.date,
    client_id: str | None = None,
    period_days: int | None = None,
    after_site: str | None = None,
    limit: int = 100,
    timeout_ms: int = 10_000,
) -> tuple[list[OverdueSite], str | None]:
    """Sites whose last visit is older than their period (``as_of`` − last visit > period).

    A site never visited in the look-back year is overdue once its first due date in it is
    older than its period.  Sites with fewer than two due dates in the year have no inferable
    period and are listed only when ``period_days`` is given.  Returns (page, next site cursor).
    """
    if not 1 <= limit <= MAX_OVERDUE_PAGE:
        raise ValueError(f"limit {limit}: 1..{MAX_OVERDUE_PAGE}")
    if period_days is not None and not 1 <= period_days <= MAX_RANGE_DAYS:
        raise ValueError(f"period_days {period_days}: 1..{MAX_RANGE_DAYS}")
    params: dict[str, Any] = {
        "as_of": as_of,
        "start": as_of - dt.timedelta(days=OVERDUE_LOOKBACK_DAYS - 1),
        "client": client_id,
        "period": period_days,
        "after": after_site,
        "limit": limit + 1,
    }
    sql = """
    WITH due AS (
        SELECT site_id, client_id, service_date, state,
               service_date - lag(service_date) OVER (PARTITION BY site_id ORDER BY service_date)
                   AS gap
        FROM stop_states_current
        WHERE service_date BETWEEN %(start)s AND %(as_of)s
          AND (%(client)s::text IS NULL OR client_id = %(client)s::text)
    ), per_site AS (
        SELECT site_id, max(client_id) AS client_id, count(*) AS n, max(gap) AS gap,
               min(service_date) AS first_due, max(service_date) AS last_due,
               max(service_date) FILTER (WHERE state = 'visited') AS last_visit
        FROM due GROUP BY site_id
    ), judged AS (
        SELECT site_id, client_id, last_due, last_visit,
               coalesce(%(period)s::int, CASE WHEN n >= 2 THEN gap END) AS period_days,
               %(as_of)s::date - coalesce(last_visit, first_due) AS days_since
        FROM per_site
    )
    SELECT site_id, client_id, period_days, last_visit, last_due, days_since
    FROM judged
    WHERE period_days IS NOT NULL AND days_since > period_days
      AND (%(after)s::text IS NULL OR site_id > %(after)s::text)
    ORDER BY site_id LIMIT %(limit)s
    """
    async with _reading(source, timeout_ms) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    out = [
        OverdueSite(
            site_id=str(r["site_id"]),
            client_id=r["client_id"],
            period_days=int(r["period_days"]),
            last_visit=r["last_visit"],
            days_since_visit=int(r["days_since"]) if r["last_visit"] is not None else None,
            last_due=r["last_due"],
        )
        for r in rows[:limit]
    ]
    return out, (out[-1].site_id if more and out else None)


# --- dispatcher KPIs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Kpis:
    """One dispatcher's (or everyone's) figures over alerts opened in a range.

    Minutes are measured from the alert's ``opened_at``.  Retracted alerts (proved wrong) and
    alerts born from late data (corrections, not news: never escalated) are left out.
    ``within_sla_share``: alerts acknowledged within the SLA ÷ alerts received (0..1).
    ``escalations``: overall, alerts that were escalated at least once; per dispatcher, hops
    away from them (alerts they did not acknowledge in time).
    """

    received: int
    acknowledged: int
    ack_median_minutes: float | None
    ack_p90_minutes: float | None
    resolved: int
    resolve_median_minutes: float | None
    resolve_p90_minutes: float | None
    within_sla_share: float | None
    escalations: int


_KPI_SQL = """
WITH a AS (
    SELECT id, status, opened_at, acknowledged_at, acknowledged_by, closed_at, assignee,
           escalation_level, body,
           extract(epoch FROM acknowledged_at - opened_at) / 60.0 AS ack_min,
           CASE WHEN status = 'resolved'
                THEN extract(epoch FROM closed_at - opened_at) / 60.0 END AS res_min
    FROM alerts_current
    WHERE opened_at >= %(start)s AND opened_at < %(end)s
      AND status <> 'retracted' AND NOT detected_late
), hops AS (
    SELECT DISTINCT a.id, h->>'to' AS dispatcher
    FROM a, jsonb_array_elements(coalesce(a.body->'hops', '[]'::jsonb)) h
    WHERE h->>'to' IS NOT NULL
), away AS (
    SELECT h->>'from' AS dispatcher, count(*) AS n
    FROM a, jsonb_array_elements(coalesce(a.body->'hops', '[]'::jsonb)) h
    WHERE h->>'from' IS NOT NULL GROUP BY 1
), per AS (
    SELECT hops.dispatcher,
           count(*) AS received,
           count(*) FILTER (WHERE a.acknowledged_by = hops.dispatcher) AS acknowledged,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.ack_min)
               FILTER (WHERE a.acknowledged_by = hops.dispatcher) AS ack_med,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY a.ack_min)
               FILTER (WHERE a.acknowledged_by = hops.dispatcher) AS ack_p90,
           count(*) FILTER (WHERE a.res_min IS NOT NULL AND a.assignee = hops.dispatcher)
               AS resolved,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.res_min)
               FILTER (WHERE a.assignee = hops.dispatcher) AS res_med,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY a.res_min)
               FILTER (WHERE a.assignee = hops.dispatcher) AS res_p90,
           count(*) FILTER (WHERE a.acknowledged_by = hops.dispatcher
                            AND a.ack_min <= %(sla)s) AS within
    FROM hops JOIN a ON a.id = hops.id
    GROUP BY hops.dispatcher
)
SELECT per.dispatcher, received, acknowledged, ack_med, ack_p90, resolved, res_med, res_p90,
       within, coalesce(away.n, 0) AS escalations
FROM per LEFT JOIN away ON away.dispatcher = per.dispatcher
UNION ALL
SELECT NULL, count(*), count(acknowledged_at),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_min),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_min),
       count(res_min),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY res_min),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY res_min),
       count(*) FILTER (WHERE ack_min <= %(sla)s),
       count(*) FILTER (WHERE escalation_level > 0)
FROM a
ORDER BY 1 NULLS FIRST
"""


async def dispatcher_kpis(
    source: ConnectionSource,
    *,
    date_from: dt.date,
    date_to: dt.date,
    sla_minutes: float,
    timeout_ms: int = 10_000,
) -> tuple[Kpis, dict[str, Kpis]]:
    """(overall, per dispatcher) over alerts opened on ``date_from``..``date_to`` (UTC days)."""
    _check_range(date_from, date_to)
    if not sla_minutes > 0:
        raise ValueError(f"sla_minutes {sla_minutes}: must be > 0")
    start = dt.datetime.combine(date_from, dt.time(), dt.UTC)
    end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
    async with _reading(source, timeout_ms) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_KPI_SQL, {"start": start, "end": end, "sla": sla_minutes})
        rows = await cur.fetchall()

    def opt(x: Any) -> float | None:
        return None if x is None else round(float(x), 2)

    def kpis(r: dict[str, Any]) -> Kpis:
        received = int(r["received"])
        return Kpis(
            received=received,
            acknowledged=int(r["acknowledged"]),
            ack_median_minutes=opt(r["ack_med"]),
            ack_p90_minutes=opt(r["ack_p90"]),
            resolved=int(r["resolved"]),
            resolve_median_minutes=opt(r["res_med"]),
            resolve_p90_minutes=opt(r["res_p90"]),
            within_sla_share=round(int(r["within"]) / received, 4) if received else None,
            escalations=int(r["escalations"]),
        )

    overall = next(kpis(r) for r in rows if r["dispatcher"] is None)
    per = {str(r["dispatcher"]): kpis(r) for r in rows if r["dispatcher"] is not None}
    return overall, per

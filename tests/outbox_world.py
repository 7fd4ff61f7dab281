"""Engine-shaped records for the outbox tests: the life of a stop as the engine publishes it
(stop states, an alert thread, a visit exception, a visit), deterministic per stop number."""

from __future__ import annotations

from typing import Any

import psycopg

from alerts.records import AlertVersion, Comment, ExceptionVersion, Hop
from schedule.events import VisitCompleted, VisitStarted
from schedule.stop_events import StopChanged, StopState

T0 = 1_790_000_000 * 1_000_000  # µs, a weekday morning in 2026
MIN = 60 * 1_000_000


def stop_changed(n: int, state: StopState, *, at_us: int, cause: str = "tick") -> StopChanged:
    site = f"S{n:05d}"
    return StopChanged(
        stop_id=f"2026-09-21/{site}",
        site_id=site,
        client_id=f"C{n % 97}",
        service_date="2026-09-21",
        vehicle_id=f"V{n % 50}",
        state=state,
        previous=None,
        window_start_us=T0 + n * MIN,
        window_end_us=T0 + (n + 30) * MIN,
        planned_arrival_us=T0 + (n + 5) * MIN,
        eta_us=at_us + 10 * MIN,
        arrival_us=T0 + (n + 40) * MIN if state == "visited" else None,
        departure_us=T0 + (n + 50) * MIN if state == "visited" else None,
        visited_by=f"V{n % 50}" if state == "visited" else None,
        visit_id=f"visit-{n}" if state == "visited" else None,
        outcome="late" if state == "visited" else None,
        minutes_late=10.0 if state == "visited" else None,
        reason=f"decided at {at_us}",
        cause=cause,  # type: ignore[arg-type]
        at_us=at_us,
    )


def alert(
    n: int, version: int, status: str, *, at_us: int, comments: tuple[Comment, ...] = ()
) -> AlertVersion:
    site = f"S{n:05d}"
    return AlertVersion(
        id=f"stop/2026-09-21/{site}",
        version=version,
        subject="stop",
        kind="late",
        severity="major",
        status=status,  # type: ignore[arg-type]
        summary=f"{site} late",
        facts=(("window_end_us", T0 + (n + 30) * MIN), ("eta_min", 12.5)),
        assignee="d1",
        escalation_level=0,
        hops=(Hop(level=0, to="d1", from_=None, at_us=T0, reason="responsible"),),
        acknowledged_by="d1" if status == "acknowledged" else None,
        acknowledged_at_us=at_us if status == "acknowledged" else None,
        comments=comments,
        detected_late=False,
        opened_at_us=T0 + (n + 30) * MIN,
        change="raised" if version == 1 else "acknowledged",
        by="engine:tick",
        at_us=at_us,
    )


def exception(
    n: int, version: int, status: str, *, at_us: int, comments: tuple[Comment, ...] = ()
) -> ExceptionVersion:
    site = f"S{n:05d}"
    return ExceptionVersion(
        id=f"2026-09-21/{site}/late",
        version=version,
        kind="late",
        status=status,  # type: ignore[arg-type]
        site_id=site,
        client_id=f"C{n % 97}",
        service_date="2026-09-21",
        vehicle_id=f"V{n % 50}",
        window_start_us=T0 + n * MIN,
        window_end_us=T0 + (n + 30) * MIN,
        arrival_us=T0 + (n + 40) * MIN,
        minutes_late=10.0,
        comments=comments,
        at_us=at_us,
    )


def stop_life(n: int, *, shift_us: int = 0) -> list[Any]:
    """Everything the engine publishes about stop *n*, in order (8 records).  ``shift_us``
    moves the decision times only, as a restarted engine's ticks would."""
    at = T0 + (n + 31) * MIN + shift_us
    c = Comment(by="d1", at_us=T0 + (n + 60) * MIN, text=f"traffic on A{n % 9}")
    return [
        stop_changed(n, "pending", at_us=T0 + shift_us, cause="import"),
        stop_changed(n, "late", at_us=at),
        alert(n, 1, "open", at_us=at),
        VisitStarted(
            visit_id=f"visit-{n}",
            vehicle_id=f"V{n % 50}",
            site_id=f"S{n:05d}",
            arrival_us=T0 + (n + 40) * MIN,
            confirmed_us=T0 + (n + 41) * MIN,
        ),
        exception(n, 1, "confirmed", at_us=T0 + (n + 41) * MIN + shift_us),
        VisitCompleted(
            visit_id=f"visit-{n}",
            vehicle_id=f"V{n % 50}",
            site_id=f"S{n:05d}",
            arrival_us=T0 + (n + 40) * MIN,
            departure_us=T0 + (n + 50) * MIN,
            fix_count=120,
            inside_share=0.97,
            median_hdop=float("nan"),
            closed_by="exit",
        ),
        stop_changed(n, "visited", at_us=T0 + (n + 50) * MIN + shift_us, cause="fix"),
        exception(n, 2, "confirmed", at_us=T0 + (n + 60) * MIN, comments=(c,)),
    ]


async def stored_versions(dsn: str) -> list[tuple[int, str, str, int, bytes]]:
    """(seq, kind, id, version, body_sha256) of every stored version, in seq order."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT seq, kind, id, version, body_sha256 FROM record_versions ORDER BY seq"
        )
        return [(int(a), b, c, int(d), bytes(e)) for a, b, c, d, e in await cur.fetchall()]


def check_versions(rows: list[tuple[int, str, str, int, bytes]]) -> dict[tuple[str, str], int]:
    """Every (kind, id)'s versions are 1, 2, ... in seq order and no version repeats the one
    before it (a return to an earlier content is a version; the same content twice in a row
    never is); returns the number of versions per (kind, id)."""
    per: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], bytes] = {}
    for _seq, kind, rid, version, sha in rows:
        key = (kind, rid)
        assert version == per.get(key, 0) + 1, f"{key}: version {version} after {per.get(key)}"
        per[key] = version
        assert last.get(key) != sha, f"{key}: version {version} repeats the one before it"
        last[key] = sha
    return per

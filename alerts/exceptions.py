"""The visit-exception ledger: the CRM's record of every late, missed, cancelled or unplanned
visit, versioned.

Identity is ``"<service_date>/<site_id>/<kind>"``: a site is served at most once a day, so one
exception per site, day and kind, identical across runs.  A stop can hold two: a *missed*
exception retracted by late data and the *late* exception that the same data revealed.

The ledger is driven by *desired state*: each schedule record says what the stop is now, the
ledger derives which exceptions should exist and with which content, and emits a new version
only where that differs from the current one (ignoring ``version`` and ``at_us``).  That makes
it idempotent by construction — the same record twice changes nothing — and makes retraction
the only way an exception stops counting: an exception is never deleted.

Status (documented in docs/formats.md): ``open`` for a missed stop nobody has confirmed (it is
inferred from the absence of a visit; late data may still retract it); ``confirmed`` for an
observed fact (late arrival, unplanned visit), a dispatcher's decision (cancelled) or a missed
stop whose alert a dispatcher acknowledged; ``retracted`` when later data proved it wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from alerts.records import Comment, ExceptionKind, ExceptionStatus, ExceptionVersion
from schedule.stop_events import StopChanged, UnplannedVisit, stop_id_of

_STOP_KINDS: tuple[ExceptionKind, ...] = ("missed", "late", "cancelled")


def exception_id(stop_id: str, kind: ExceptionKind) -> str:
    return f"{stop_id}/{kind}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Want:
    kind: ExceptionKind
    status: ExceptionStatus
    vehicle_id: str | None
    arrival_us: int | None
    minutes_late: float | None


def _wanted(ev: StopChanged) -> _Want | None:
    if ev.state == "missed":
        return _Want(
            kind="missed", status="open", vehicle_id=ev.vehicle_id, arrival_us=None,
            minutes_late=None,
        )  # fmt: skip
    if ev.state == "visited" and ev.outcome == "late":
        return _Want(
            kind="late", status="confirmed", vehicle_id=ev.visited_by or ev.vehicle_id,
            arrival_us=ev.arrival_us, minutes_late=ev.minutes_late,
        )  # fmt: skip
    if ev.state == "cancelled":
        return _Want(
            kind="cancelled", status="confirmed", vehicle_id=ev.vehicle_id, arrival_us=None,
            minutes_late=None,
        )  # fmt: skip
    return None


class ExceptionLedger:
    """Current exceptions by id; every method returns the new versions it made."""

    def __init__(self) -> None:
        self._current: dict[str, ExceptionVersion] = {}
        self._comments: dict[str, tuple[Comment, ...]] = {}  # stop id -> comments
        self._cancel_notes: dict[str, Comment] = {}  # stop id -> the cancel reason
        self._unplanned: dict[str, dict[str, UnplannedVisit]] = {}  # stop id -> live visits

    def restore(
        self, current: Iterable[ExceptionVersion], comments: Mapping[str, tuple[Comment, ...]]
    ) -> None:
        """Start from stored exceptions (the latest version of each) and the dispatchers'
        comments per stop id (the stop's alert thread holds them all).  The cancel note is the
        cancelled exception's first comment; the live unplanned visits behind an ``unplanned``
        exception are not stored and come back from the re-derived ``UnplannedVisit`` records
        (:meth:`note_unplanned`)."""
        for rec in current:
            self._current[rec.id] = rec
            stop_id = rec.id.rsplit("/", 1)[0]
            if rec.kind == "cancelled" and rec.comments and rec.comments[0].by == "cancel":
                self._cancel_notes[stop_id] = rec.comments[0]
        self._comments.update(comments)

    def note_unplanned(self, ev: UnplannedVisit) -> None:
        """Take a re-derived unplanned visit into account without deciding anything yet (a
        restoring desk: :meth:`on_unplanned` with the last one decides)."""
        visits = self._unplanned.setdefault(stop_id_of(ev.service_date, ev.site_id), {})
        if ev.retracted:
            visits.pop(ev.visit_id, None)
        else:
            visits[ev.visit_id] = ev

    def get(self, exception_id_: str) -> ExceptionVersion | None:
        return self._current.get(exception_id_)

    def current(self) -> tuple[ExceptionVersion, ...]:
        return tuple(self._current.values())

    def _put(self, rec: ExceptionVersion) -> list[ExceptionVersion]:
        old = self._current.get(rec.id)
        if old is not None:
            if replace(rec, version=old.version, at_us=old.at_us) == old:
                return []
            rec = replace(rec, version=old.version + 1)
        self._current[rec.id] = rec
        return [rec]

    def _comments_of(self, stop_id: str, kind: ExceptionKind) -> tuple[Comment, ...]:
        note = self._cancel_notes.get(stop_id) if kind == "cancelled" else None
        return ((note,) if note else ()) + self._comments.get(stop_id, ())

    def on_stop(self, ev: StopChanged, at_us: int) -> list[ExceptionVersion]:
        """Bring the stop's exceptions in line with the stop's new state."""
        if ev.state == "cancelled" and ev.cancel_reason and ev.stop_id not in self._cancel_notes:
            self._cancel_notes[ev.stop_id] = Comment(
                by="cancel", at_us=ev.at_us, text=f"cancelled: {ev.cancel_reason}"
            )
        want = _wanted(ev)
        out: list[ExceptionVersion] = []
        for kind in _STOP_KINDS:
            xid = exception_id(ev.stop_id, kind)
            old = self._current.get(xid)
            if want is not None and want.kind == kind:
                status = want.status
                if old is not None and old.status == "confirmed":
                    status = "confirmed"
                out += self._put(
                    ExceptionVersion(
                        id=xid,
                        version=1,
                        kind=kind,
                        status=status,
                        site_id=ev.site_id,
                        client_id=ev.client_id,
                        service_date=ev.service_date,
                        vehicle_id=want.vehicle_id,
                        window_start_us=ev.window_start_us,
                        window_end_us=ev.window_end_us,
                        arrival_us=want.arrival_us,
                        minutes_late=want.minutes_late,
                        comments=self._comments_of(ev.stop_id, kind),
                        at_us=at_us,
                    )
                )
            elif old is not None and old.status != "retracted":
                out += self._put(replace(old, status="retracted", at_us=at_us))
        return out

    def on_unplanned(self, ev: UnplannedVisit, at_us: int) -> list[ExceptionVersion]:
        """One ``unplanned`` exception per site and day, from its earliest live visit."""
        stop_id = stop_id_of(ev.service_date, ev.site_id)
        visits = self._unplanned.setdefault(stop_id, {})
        if ev.retracted:
            visits.pop(ev.visit_id, None)
        else:
            visits[ev.visit_id] = ev
        xid = exception_id(stop_id, "unplanned")
        old = self._current.get(xid)
        if not visits:
            if old is None or old.status == "retracted":
                return []
            return self._put(replace(old, status="retracted", at_us=at_us))
        first = min(visits.values(), key=lambda v: (v.arrival_us, v.visit_id))
        return self._put(
            ExceptionVersion(
                id=xid,
                version=1,
                kind="unplanned",
                status="confirmed",
                site_id=first.site_id,
                client_id=first.client_id,
                service_date=first.service_date,
                vehicle_id=first.vehicle_id,
                window_start_us=None,
                window_end_us=None,
                arrival_us=first.arrival_us,
                minutes_late=None,
                comments=self._comments.get(stop_id, ()),
                at_us=at_us,
            )
        )

    def on_comment(self, stop_id: str, comment: Comment, at_us: int) -> list[ExceptionVersion]:
        """A dispatcher's comment on the stop's alert lands on each of its exceptions (and on
        any exception the stop gets later)."""
        self._comments[stop_id] = (*self._comments.get(stop_id, ()), comment)
        out: list[ExceptionVersion] = []
        for kind in (*_STOP_KINDS, "unplanned"):
            old = self._current.get(exception_id(stop_id, kind))
            if old is not None:
                out += self._put(
                    replace(old, comments=self._comments_of(stop_id, kind), at_us=at_us)
                )
        return out

    def forget_days_before(self, service_date: str) -> None:
        """Drop every record of service dates before ``service_date`` (ids start with it)."""
        for store in (self._current, self._comments, self._cancel_notes, self._unplanned):
            for key in [k for k in store if k.split("/", 1)[0] < service_date]:
                del store[key]

    def on_acknowledged(self, stop_id: str, at_us: int) -> list[ExceptionVersion]:
        """A dispatcher acknowledged the stop's missed alert: the missed exception is
        confirmed (it may still be retracted by late data)."""
        old = self._current.get(exception_id(stop_id, "missed"))
        if old is None or old.status != "open":
            return []
        return self._put(replace(old, status="confirmed", at_us=at_us))

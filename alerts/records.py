"""What the alert stage hands out: alert versions and visit-exception versions.

Every change to an alert thread or to a visit exception is a *new version* of a full record,
not a delta: a consumer (the console, the store's outbox, the CRM feed) keeps the newest
version per ``id`` and can drop everything older.  Records are frozen, slotted and
keyword-only (h11's events); times are integer µs since the epoch, UTC, in data time, and
``to_json_dict()`` turns them into ISO-8601 UTC strings so that every consumer serialises the
same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from core.fixes import iso_utc, us_from_iso

AlertStatus = Literal["open", "acknowledged", "resolved", "retracted"]
Severity = Literal["info", "warning", "major", "critical"]
#: Ranking of severities: a thread "worsens" when its severity rank goes up.
SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "major": 2, "critical": 3}
AlertKind = Literal[
    "at_risk",
    "late",
    "missed",
    "unplanned_due",
    "behind_schedule",
    "gps_silent",
    "unscheduled_stop",
    "not_left_depot",
]
#: What a version changed.
Change = Literal[
    "raised",  # first version of the thread
    "worsened",  # severity went up (at risk → late → missed): needs a new acknowledgement
    "updated",  # a material fact changed at the same severity (e.g. the arrival, the vehicle)
    "reopened",  # a resolved or retracted thread got a new alarming fact
    "acknowledged",
    "commented",
    "escalated",  # an escalation hop: re-routed to another dispatcher
    "resolved",  # the problem went away (visited, cancelled, condition ended, risk cleared)
    "retracted",  # later data proved the alert wrong
]
ExceptionKind = Literal["late", "missed", "cancelled", "unplanned"]
#: ``open``: inferred from absence (a missed stop: no visit seen so far) and not yet confirmed
#: by a dispatcher — late data may still retract it.  ``confirmed``: stands on an observed
#: fact (a late arrival, an unplanned visit), a dispatcher's decision (cancelled) or a
#: dispatcher's acknowledgement.  ``retracted``: later data proved it wrong; the CRM must not
#: count it.  A retracted exception can come back (``open``) only with a new fact.
ExceptionStatus = Literal["open", "confirmed", "retracted"]

#: A fact behind an alert.  Keys ending in ``_us`` are µs timestamps (ISO in JSON, the key
#: without the suffix).
FactValue = str | int | float | bool | None


def _time_or_none(t_us: int | None) -> str | None:
    return None if t_us is None else iso_utc(t_us)


def _finite(x: FactValue) -> FactValue:
    """JSON has no NaN/Infinity: a non-finite number is "unknown" (null)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: Fact keys that hold a µs time (``*_us`` in memory, ISO under the key without the suffix in
#: JSON): what :func:`facts_from_json` turns back into integers.
TIME_FACTS = frozenset({"window_start", "window_end", "planned_arrival", "eta", "since"})


def facts_json(facts: tuple[tuple[str, FactValue], ...]) -> dict[str, FactValue]:
    out: dict[str, FactValue] = {}
    for key, value in facts:
        if key.endswith("_us") and (value is None or isinstance(value, int)):
            out[key[:-3]] = _time_or_none(value if isinstance(value, int) else None)
        else:
            out[key] = _finite(value)
    return out


def facts_from_json(d: dict[str, Any]) -> tuple[tuple[str, FactValue], ...]:
    """The inverse of :func:`facts_json` for the desk's facts (a restart reads them back)."""
    out: list[tuple[str, FactValue]] = []
    for key, value in d.items():
        if key in TIME_FACTS and (value is None or isinstance(value, str)):
            out.append((key + "_us", None if value is None else us_from_iso(value)))
        else:
            out.append((key, value))
    return tuple(out)


def _us_or_none(text: str | None) -> int | None:
    return None if text is None else us_from_iso(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Comment:
    """Free text from a dispatcher (bounded by :class:`AlertParams.max_comment_chars`)."""

    by: str
    at_us: int
    text: str

    def to_json_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": iso_utc(self.at_us), "text": self.text}

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Comment:
        return cls(by=str(d["by"]), at_us=us_from_iso(d["at"]), text=str(d["text"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One escalation hop recorded on a thread (also the initial assignment, level 0)."""

    level: int  # 0 responsible dispatcher, 1 least-loaded on shift, 2 head dispatcher
    to: str
    from_: str | None
    at_us: int
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "to": self.to,
            "from": self.from_,
            "at": iso_utc(self.at_us),
            "reason": self.reason,
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Hop:
        return cls(
            level=int(d["level"]),
            to=str(d["to"]),
            from_=d.get("from"),
            at_us=us_from_iso(d["at"]),
            reason=str(d["reason"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertVersion:
    """One version of an alert thread: the whole thread as it stands after ``change``."""

    id: str  # "stop/<date>/<site>" or "vehicle/<date>/<vehicle>/<condition>"
    version: int  # 1, 2, ... strictly increasing per id
    subject: Literal["stop", "vehicle"]
    kind: AlertKind
    severity: Severity
    status: AlertStatus
    summary: str  # what happened, for a human
    facts: tuple[tuple[str, FactValue], ...]
    assignee: str
    escalation_level: int
    hops: tuple[Hop, ...]
    acknowledged_by: str | None
    acknowledged_at_us: int | None
    comments: tuple[Comment, ...]
    detected_late: bool  # born from data that arrived after the fact: a correction, not news
    opened_at_us: int
    change: Change
    by: str  # "engine:<cause>", "escalation" or a dispatcher id
    at_us: int
    #: the armed escalation deadline after this version (None: no timer — acknowledged,
    #: finished, at the head, or a late correction that is not escalated).  Part of the stored
    #: content, so a restarted desk re-arms the timer where it was (docs/alerts.md, Restart).
    escalates_at_us: int | None = None

    @property
    def active(self) -> bool:
        return self.status in ("open", "acknowledged")

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "type": "alert",
            "id": self.id,
            "version": self.version,
            "subject": self.subject,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "summary": self.summary,
            "facts": facts_json(self.facts),
            "assignee": self.assignee,
            "escalation_level": self.escalation_level,
            "hops": [h.to_json_dict() for h in self.hops],
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _time_or_none(self.acknowledged_at_us),
            "comments": [c.to_json_dict() for c in self.comments],
            "detected_late": self.detected_late,
            "opened_at": iso_utc(self.opened_at_us),
            "change": self.change,
            "by": self.by,
            "at": iso_utc(self.at_us),
            "escalates_at": _time_or_none(self.escalates_at_us),
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> AlertVersion:
        """The inverse of :meth:`to_json_dict`, also for a stored body (``record_versions``),
        whose ``engine_version`` is the desk's own number (``version`` there is the store's).
        Times come back at the JSON's millisecond precision.  Raises ``KeyError`` /
        ``ValueError`` on a body that is not an alert version."""
        return cls(
            id=str(d["id"]),
            version=int(d.get("engine_version", d["version"])),
            subject=d["subject"],
            kind=d["kind"],
            severity=d["severity"],
            status=d["status"],
            summary=str(d["summary"]),
            facts=facts_from_json(d["facts"]),
            assignee=str(d["assignee"]),
            escalation_level=int(d["escalation_level"]),
            hops=tuple(Hop.from_json_dict(h) for h in d["hops"]),
            acknowledged_by=d.get("acknowledged_by"),
            acknowledged_at_us=_us_or_none(d.get("acknowledged_at")),
            comments=tuple(Comment.from_json_dict(c) for c in d["comments"]),
            detected_late=bool(d["detected_late"]),
            opened_at_us=us_from_iso(d["opened_at"]),
            change=d["change"],
            by=str(d["by"]),
            at_us=us_from_iso(d["at"]),
            escalates_at_us=_us_or_none(d.get("escalates_at")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExceptionVersion:
    """One version of a visit exception: the CRM's record of a late, missed, cancelled or
    unplanned visit.  The JSON form is the ``exceptions.json`` / CRM feed item
    (docs/formats.md, "Visit exceptions")."""

    id: str  # "<service_date>/<site_id>/<kind>"
    version: int
    kind: ExceptionKind
    status: ExceptionStatus
    site_id: str
    client_id: str | None
    service_date: str
    vehicle_id: str | None
    window_start_us: int | None  # None for an unplanned visit (no contracted window today)
    window_end_us: int | None
    arrival_us: int | None
    minutes_late: float | None
    comments: tuple[Comment, ...]
    at_us: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "status": self.status,
            "site_id": self.site_id,
            "client_id": self.client_id,
            "service_date": self.service_date,
            "vehicle_id": self.vehicle_id,
            "window_start": _time_or_none(self.window_start_us),
            "window_end": _time_or_none(self.window_end_us),
            "arrival": _time_or_none(self.arrival_us),
            "minutes_late": _finite(self.minutes_late),
            "comments": [c.to_json_dict() for c in self.comments],
            "at": iso_utc(self.at_us),
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> ExceptionVersion:
        """The inverse of :meth:`to_json_dict` (a stored body: ``engine_version`` first)."""
        minutes = d.get("minutes_late")
        return cls(
            id=str(d["id"]),
            version=int(d.get("engine_version", d["version"])),
            kind=d["kind"],
            status=d["status"],
            site_id=str(d["site_id"]),
            client_id=d.get("client_id"),
            service_date=str(d["service_date"]),
            vehicle_id=d.get("vehicle_id"),
            window_start_us=_us_or_none(d.get("window_start")),
            window_end_us=_us_or_none(d.get("window_end")),
            arrival_us=_us_or_none(d.get("arrival")),
            minutes_late=None if minutes is None else float(minutes),
            comments=tuple(Comment.from_json_dict(c) for c in d["comments"]),
            at_us=us_from_iso(d["at"]),
        )


AlertRecord = AlertVersion | ExceptionVersion

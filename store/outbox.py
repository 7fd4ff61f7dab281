"""The transactional outbox: every version of every record the engine publishes, numbered by
the store (migration 0005 holds the tables; docs/outbox.md explains the rules).

Why the store numbers versions and not the engine: the engine's counters live in memory and
restart at 1 after a crash, and a restarted engine re-derives (re-publishes) the day's records
from the stored fixes.  Here each record is compared with what is already stored for its
``(kind, id)`` by content (a SHA-256 of its JSON body *without* the fields that do not change
what it says: version numbers, decision time, cause) and data time (:class:`StoredHistory`
holds the rule): the content of the latest version is skipped, and so is the content of an
earlier version told at a data time *before* the latest version's (a re-derivation of
history); anything else — new content, or a genuine return to an earlier state such as a stop
pending → at risk → pending — gets ``version = latest + 1``.  The CRM feed reads
``record_versions`` in ``seq`` order; since every writer holds
``pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))`` until its COMMIT, ``seq`` order is
commit order and a cursor never skips a late commit.

The conversion from engine events to :class:`OutboxRecord` is pure (:func:`records_from_events`);
:func:`write_records` is one transaction over one connection, batched with arrays (one round
trip per statement whatever the batch size).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

import psycopg

from alerts.records import AlertRecord, AlertVersion, ExceptionVersion
from core.fixes import datetime_to_us, iso_utc
from schedule.events import (
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
)
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CancelStop,
    Command,
    ReassignStop,
    ReorderRoute,
    StopChanged,
    VehiclePosition,
)

RecordKind = Literal["exception", "alert", "stop_state", "visit", "stop"]
KINDS: tuple[RecordKind, ...] = ("exception", "alert", "stop_state", "visit", "stop")
#: the advisory lock every outbox writer holds until COMMIT (seq order = commit order)
OUTBOX_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('fleetwatch.outbox'))"

#: Body keys left out of the content hash: they number or date a decision without changing
#: what it says.  A re-derived record after a restart is decided at another tick (``at``),
#: possibly from a fix instead of a tick (``cause``, ``reason``), with another ETA; a
#: restarted engine's board learns a visit from the store, not as it happened, so the state
#: it came from (``previous``) and whether it was learned late (``detected_late``) describe
#: the path to the decision, not the decision.
_VOLATILE: dict[RecordKind, frozenset[str]] = {
    "exception": frozenset({"version", "engine_version", "at"}),
    "alert": frozenset({"version", "engine_version", "at"}),
    "stop_state": frozenset(
        {"version", "engine_version", "at", "cause", "reason", "eta", "previous", "detected_late"}
    ),
    "visit": frozenset({"version", "engine_version", "supersedes"}),
    "stop": frozenset({"version", "engine_version", "supersedes"}),
}


class OutboxError(ValueError):
    """A record that cannot go into the outbox (a bug of the caller, not of the data)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecord:
    """One engine record on its way to ``record_versions``: its identity, data time and JSON
    body (``version`` in the body is replaced by the store's)."""

    kind: RecordKind
    id: str
    at_us: int
    body: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OutboxError(f"unknown record kind {self.kind!r}; one of {KINDS}")
        if not self.id:
            raise OutboxError(f"a {self.kind} record needs an id")

    def content_sha256(self) -> bytes:
        """SHA-256 of the canonical JSON of the body without its volatile keys."""
        volatile = _VOLATILE[self.kind]
        content = {k: v for k, v in self.body.items() if k not in volatile}
        return hashlib.sha256(canonical_json(content).encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class JournaledCommand:
    """An accepted (or refused) dispatcher command for ``commands_journal``: what a restarted
    engine cannot re-derive from fixes, re-applied after :meth:`Engine.restore`."""

    at_us: int
    command: Command
    accepted: bool = True
    refusal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxResult:
    """What one :func:`write_records` call did."""

    inserted: int  # new versions in record_versions
    unchanged: int  # records whose content was already stored (re-derived, redelivered)
    commands: int  # rows added to commands_journal
    last_seq: int | None  # highest seq written (None if nothing new)


@dataclass(slots=True)
class StoredHistory:
    """What the store holds for one ``(kind, id)``, as much as the dedupe rule needs: every
    content stored (any version) and the latest version's number, content and data time.

    :meth:`already_published` is the rule.  A record is skipped if its content is the latest
    version's (a redelivered batch, a re-drain after a lost COMMIT, a duplicate in one batch,
    a restarted engine re-telling the current state), or an earlier version's **and** its data
    time is before the latest version's (a restarted engine re-telling the day's history in
    order: pending, at risk, late, visited; a batch retried after a lost COMMIT).  Anything
    else is a new version, including a genuine return to an earlier state (a stop pending →
    at risk → pending: the second "pending" happens after the "at risk", so the CRM and the
    console must see it; the first rule, "content stored in any version", dropped about 20 of
    the 296 stop-state changes of the simulated day).

    Known limitation (pinned in tests/test_outbox_rule.py): an earlier content told again at a
    data time **not before** the latest version's cannot be told from a return and becomes a
    new version: a re-derivation that decides an earlier state again at exactly the latest
    stored time, or a batch retried after a lost COMMIT in which one id changed twice at the
    same data time (A then B at t: A and B are stored again as two more versions).  Either way
    the latest version ends as the engine's latest word (a spurious flap, never a wrong final
    state).  The engine's re-derived decisions carry the data time of the re-read fixes (0
    before the first fix), so a re-told past state is normally dated before the state that
    followed it.
    """

    version: int = 0  # the latest version (0: nothing stored)
    latest_sha: bytes | None = None
    latest_at_us: int = 0
    contents: set[bytes] = field(default_factory=set)

    def add_stored(self, version: int, sha: bytes, at_us: int) -> None:
        """Take one stored version into account (rows in any order)."""
        self.contents.add(sha)
        if version > self.version:
            self.version, self.latest_sha, self.latest_at_us = version, sha, at_us

    def already_published(self, sha: bytes, at_us: int) -> bool:
        """Whether a record with content *sha* told at data time *at_us* says nothing new."""
        if sha == self.latest_sha:
            return True
        return sha in self.contents and at_us < self.latest_at_us

    def append(self, sha: bytes, at_us: int) -> int:
        """Record a new version; returns its number (latest + 1)."""
        self.add_stored(self.version + 1, sha, at_us)
        return self.version


#: a stored version as the rule reads it: (kind, id, version, body_sha256, at in µs)
StoredRow = tuple[str, str, int, bytes, int]


def new_versions(
    stored: Iterable[StoredRow],
    records: Sequence[OutboxRecord],
    hashes: Sequence[bytes] | None = None,
) -> list[tuple[int, int]]:
    """``(index into records, version)`` of each record that is a new version, in order.

    Pure: *stored* are the versions already in ``record_versions`` for the records' ids (any
    order); the records are decided one after the other, each against the stored versions and
    the new ones before it in the same call (so a batch decides as its records written one at
    a time would).  *hashes* are the records' ``content_sha256()`` when already computed.
    """
    if hashes is None:
        hashes = [r.content_sha256() for r in records]
    histories: dict[tuple[str, str], StoredHistory] = {}
    for kind, rid, version, sha, at_us in stored:
        key = (kind, rid)
        h = histories.get(key)
        if h is None:
            h = histories[key] = StoredHistory()
        h.add_stored(version, sha, at_us)
    out: list[tuple[int, int]] = []
    for i, (rec, sha) in enumerate(zip(records, hashes, strict=True)):
        key = (rec.kind, rec.id)
        h = histories.get(key)
        if h is None:
            h = histories[key] = StoredHistory()
        elif h.already_published(sha, rec.at_us):
            continue
        out.append((i, h.append(sha, rec.at_us)))
    return out


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, NaN/inf as null: one text per content."""
    return json.dumps(_finite(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dataclass_json(obj: Any) -> dict[str, Any]:
    """A frozen event as JSON: ``*_us`` fields as ISO-8601 UTC under the name without suffix."""
    out: dict[str, Any] = {"event": type(obj).__name__}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name.endswith("_us"):
            out[f.name[:-3]] = None if v is None else iso_utc(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = _finite(v)
    return out


def record_of(ev: object) -> OutboxRecord | None:
    """The outbox record of one engine output, or None for outputs that are not stored
    (positions, route progress, vehicle conditions, DataDelayed: console material)."""
    body: dict[str, Any]
    if isinstance(ev, ExceptionVersion):
        body = ev.to_json_dict()
        body["engine_version"] = body.pop("version")
        return OutboxRecord(kind="exception", id=ev.id, at_us=ev.at_us, body=body)
    if isinstance(ev, AlertVersion):
        body = ev.to_json_dict()
        body["engine_version"] = body.pop("version")
        return OutboxRecord(kind="alert", id=ev.id, at_us=ev.at_us, body=body)
    if isinstance(ev, StopChanged):
        body = _dataclass_json(ev)
        return OutboxRecord(kind="stop_state", id=ev.stop_id, at_us=ev.at_us, body=body)
    if isinstance(ev, VisitStarted | VisitCompleted):
        body = ev.to_json_dict()
        body["engine_version"] = body.pop("version")
        at = ev.departure_us if isinstance(ev, VisitCompleted) else ev.confirmed_us
        return OutboxRecord(kind="visit", id=ev.visit_id, at_us=at, body=_finite(body))
    if isinstance(ev, StopStarted | StopEnded):
        body = ev.to_json_dict()
        body["engine_version"] = body.pop("version")
        at = ev.end_us if isinstance(ev, StopEnded) else ev.start_us
        return OutboxRecord(kind="stop", id=ev.stop_id, at_us=at, body=_finite(body))
    return None


def records_from_events(events: Iterable[object]) -> list[OutboxRecord]:
    """The stored records among the engine's outputs, in output order."""
    out: list[OutboxRecord] = []
    for ev in events:
        if type(ev) is VehiclePosition:  # most of a round (one per vehicle), never stored
            continue
        rec = record_of(ev)
        if rec is not None:
            out.append(rec)
    return out


# -- commands -------------------------------------------------------------------------------------

_COMMAND_TYPES: dict[str, type[Any]] = {
    "reassign": ReassignStop,
    "reorder": ReorderRoute,
    "cancel": CancelStop,
    "acknowledge": Acknowledge,
    "comment": AddComment,
}
_COMMAND_NAMES = {cls: name for name, cls in _COMMAND_TYPES.items()}


def command_to_json(cmd: Command) -> dict[str, Any]:
    """``{"type": "acknowledge", "alert_id": ..., "version": ..., "by": ...}``."""
    out: dict[str, Any] = {"type": _COMMAND_NAMES[type(cmd)]}
    for f in fields(cmd):
        v = getattr(cmd, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def command_from_json(d: dict[str, Any]) -> Command:
    """The inverse of :func:`command_to_json`; raises :class:`OutboxError` on a malformed one."""
    try:
        cls = _COMMAND_TYPES[d["type"]]
        kwargs = {f.name: d[f.name] for f in fields(cls)}
    except KeyError as e:
        raise OutboxError(f"journaled command {d!r} lacks {e}") from e
    if cls is ReorderRoute:
        kwargs["stop_ids"] = tuple(kwargs["stop_ids"])
    cmd: Command = cls(**kwargs)
    return cmd


# -- the transaction ------------------------------------------------------------------------------

_INSERT_VERSIONS = """
INSERT INTO record_versions (kind, id, version, body, body_sha256, at)
SELECT k, i, v, b::jsonb, h, 'epoch'::timestamptz + a * interval '1 microsecond'
FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::bytea[], %b::bigint[])
     WITH ORDINALITY AS t(k, i, v, b, h, a, n)
ORDER BY n
RETURNING seq
"""

_STORED = """
SELECT r.kind, r.id, r.version, r.body_sha256,
       (extract(epoch FROM r.at) * 1000000)::bigint
FROM record_versions r
JOIN unnest(%s::text[], %s::text[]) AS q(kind, id)
  ON r.kind = q.kind COLLATE "C" AND r.id = q.id COLLATE "C"
"""

# Each *_current row is derived from the stored body in SQL, in the same transaction: the
# current tables cannot disagree with the feed.  A row is replaced only by a higher version.
_CURRENT: dict[RecordKind, str] = {
    "exception": """
INSERT INTO visit_exceptions_current AS c (id, version, seq, kind, status, site_id, client_id,
    service_date, vehicle_id, window_start, window_end, arrival, minutes_late, comments)
SELECT DISTINCT ON (r.id) r.id, r.version, r.seq, b->>'kind', b->>'status', b->>'site_id',
    b->>'client_id', (b->>'service_date')::date, b->>'vehicle_id',
    (b->>'window_start')::timestamptz, (b->>'window_end')::timestamptz,
    (b->>'arrival')::timestamptz, (b->>'minutes_late')::float8, coalesce(b->'comments', '[]')
FROM record_versions r CROSS JOIN LATERAL (SELECT r.body AS b) AS x
WHERE r.seq = ANY(%s::bigint[]) AND r.kind = %s ORDER BY r.id, r.version DESC
ON CONFLICT (id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
    kind = excluded.kind, status = excluded.status, site_id = excluded.site_id,
    client_id = excluded.client_id, service_date = excluded.service_date,
    vehicle_id = excluded.vehicle_id, window_start = excluded.window_start,
    window_end = excluded.window_end, arrival = excluded.arrival,
    minutes_late = excluded.minutes_late, comments = excluded.comments
WHERE c.version < excluded.version
""",
    "alert": """
INSERT INTO alerts_current AS c (id, version, seq, kind, severity, status, assignee,
    escalation_level, opened_at, acknowledged_at, acknowledged_by, closed_at, detected_late, body)
SELECT DISTINCT ON (r.id) r.id, r.version, r.seq, b->>'kind', b->>'severity', b->>'status',
    b->>'assignee', coalesce((b->>'escalation_level')::int, 0), (b->>'opened_at')::timestamptz,
    (b->>'acknowledged_at')::timestamptz, b->>'acknowledged_by',
    CASE WHEN b->>'status' IN ('resolved', 'retracted') THEN r.at END,
    coalesce((b->>'detected_late')::boolean, false), b
FROM record_versions r CROSS JOIN LATERAL (SELECT r.body AS b) AS x
WHERE r.seq = ANY(%s::bigint[]) AND r.kind = %s ORDER BY r.id, r.version DESC
ON CONFLICT (id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
    kind = excluded.kind, severity = excluded.severity, status = excluded.status,
    assignee = excluded.assignee, escalation_level = excluded.escalation_level,
    opened_at = excluded.opened_at, acknowledged_at = excluded.acknowledged_at,
    acknowledged_by = excluded.acknowledged_by,
    closed_at = CASE WHEN excluded.closed_at IS NULL THEN NULL
                     ELSE coalesce(c.closed_at, excluded.closed_at) END,
    detected_late = excluded.detected_late, body = excluded.body
WHERE c.version < excluded.version
""",
    "stop_state": """
INSERT INTO stop_states_current AS c (stop_id, version, seq, site_id, client_id, service_date,
    vehicle_id, state, outcome, minutes_late, window_start, window_end, planned_arrival,
    arrival, departure, visited_by, body)
SELECT DISTINCT ON (r.id) r.id, r.version, r.seq, b->>'site_id', b->>'client_id',
    (b->>'service_date')::date, b->>'vehicle_id', b->>'state', b->>'outcome',
    (b->>'minutes_late')::float8, (b->>'window_start')::timestamptz,
    (b->>'window_end')::timestamptz, (b->>'planned_arrival')::timestamptz,
    (b->>'arrival')::timestamptz, (b->>'departure')::timestamptz, b->>'visited_by', b
FROM record_versions r CROSS JOIN LATERAL (SELECT r.body AS b) AS x
WHERE r.seq = ANY(%s::bigint[]) AND r.kind = %s ORDER BY r.id, r.version DESC
ON CONFLICT (stop_id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
    site_id = excluded.site_id, client_id = excluded.client_id,
    service_date = excluded.service_date, vehicle_id = excluded.vehicle_id,
    state = excluded.state, outcome = excluded.outcome, minutes_late = excluded.minutes_late,
    window_start = excluded.window_start, window_end = excluded.window_end,
    planned_arrival = excluded.planned_arrival, arrival = excluded.arrival,
    departure = excluded.departure, visited_by = excluded.visited_by, body = excluded.body
WHERE c.version < excluded.version
""",
    # A VisitStarted correction stored after the VisitCompleted keeps the known departure.
    "visit": """
INSERT INTO visits_current AS c (visit_id, version, seq, vehicle_id, site_id, arrival,
    departure, retracted, body)
SELECT DISTINCT ON (r.id) r.id, r.version, r.seq, b->>'vehicle_id', b->>'site_id',
    (b->>'arrival')::timestamptz, (b->>'departure')::timestamptz,
    coalesce((b->>'retracted')::boolean, false), b
FROM record_versions r CROSS JOIN LATERAL (SELECT r.body AS b) AS x
WHERE r.seq = ANY(%s::bigint[]) AND r.kind = %s ORDER BY r.id, r.version DESC
ON CONFLICT (visit_id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
    vehicle_id = excluded.vehicle_id, site_id = excluded.site_id, arrival = excluded.arrival,
    departure = CASE WHEN excluded.departure IS NULL AND NOT excluded.retracted
                     THEN c.departure ELSE excluded.departure END,
    retracted = excluded.retracted, body = excluded.body
WHERE c.version < excluded.version
""",
}

_INSERT_COMMANDS = """
INSERT INTO commands_journal (at, by_user, command, accepted, refusal)
SELECT 'epoch'::timestamptz + a * interval '1 microsecond', u, c::jsonb, ok, r
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::boolean[], %s::text[])
     WITH ORDINALITY AS t(a, u, c, ok, r, n)
ORDER BY n
"""


async def write_records(
    conn: psycopg.AsyncConnection[Any],
    records: Sequence[OutboxRecord | JournaledCommand],
) -> OutboxResult:
    """Store *records* in one transaction (commits before returning).

    For each record in order, :func:`new_versions` decides against what is stored for its
    ``(kind, id)`` (:class:`StoredHistory`: the latest version's content, or an earlier one's
    told before the latest version's data time → skipped); a new version gets
    ``version = latest + 1`` in ``record_versions`` and replaces the ``*_current`` row.
    Commands go to ``commands_journal`` in the same transaction.  Raises psycopg's errors
    (``OperationalError``: the database is unavailable, retry the same records — a retry after
    a lost COMMIT stores nothing twice, as long as no id changed twice at one data time in it:
    each record is then the latest version of its id or an earlier one told before it).
    """
    recs = [r for r in records if isinstance(r, OutboxRecord)]
    cmds = [r for r in records if isinstance(r, JournaledCommand)]
    hashes = [r.content_sha256() for r in recs]
    async with conn.transaction():
        await conn.execute(OUTBOX_LOCK_SQL)
        stored: list[StoredRow] = []
        if recs:
            keys = sorted({(r.kind, r.id) for r in recs})
            cur = await conn.execute(
                _STORED, ([k for k, _ in keys], [i for _, i in keys]), prepare=True
            )
            stored = [
                (kind, rid, int(version), bytes(sha), int(at))
                for kind, rid, version, sha, at in await cur.fetchall()
            ]
        cols: tuple[list[str], list[str], list[int], list[str], list[bytes], list[int]] = (
            [],
            [],
            [],
            [],
            [],
            [],
        )
        kinds_written: set[RecordKind] = set()
        for i, version in new_versions(stored, recs, hashes):
            rec = recs[i]
            body = dict(rec.body)
            body["version"] = version
            kinds_written.add(rec.kind)
            for col, value in zip(
                cols,
                (rec.kind, rec.id, version, canonical_json(body), hashes[i], rec.at_us),
                strict=True,
            ):
                col.append(value)  # type: ignore[attr-defined]
        seqs: list[int] = []
        if cols[0]:
            cur = await conn.execute(_INSERT_VERSIONS, cols, prepare=True)
            seqs = [int(row[0]) for row in await cur.fetchall()]
            for kind in KINDS:
                if kind in kinds_written and kind in _CURRENT:
                    await conn.execute(_CURRENT[kind], (seqs, kind), prepare=True)
        if cmds:
            await conn.execute(
                _INSERT_COMMANDS,
                (
                    [c.at_us for c in cmds],
                    [c.command.by for c in cmds],
                    [canonical_json(command_to_json(c.command)) for c in cmds],
                    [c.accepted for c in cmds],
                    [c.refusal for c in cmds],
                ),
                prepare=True,
            )
    return OutboxResult(
        inserted=len(seqs),
        unchanged=len(recs) - len(seqs),
        commands=len(cmds),
        last_seq=max(seqs) if seqs else None,
    )


def stop_changed_from_body(body: dict[str, Any]) -> StopChanged:
    """A stored ``stop_state`` body back as the :class:`StopChanged` the engine published
    (the inverse of :func:`record_of` for stop states; ``version``/``event`` are dropped)."""
    kwargs: dict[str, Any] = {}
    for f in fields(StopChanged):
        if f.name.endswith("_us"):
            text = body.get(f.name[:-3])
            kwargs[f.name] = None if text is None else _iso_us(text)
        elif f.name in body:
            kwargs[f.name] = body[f.name]
    return StopChanged(**kwargs)


def _iso_us(text: str) -> int:
    return datetime_to_us(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


async def load_stop_states(
    conn: psycopg.AsyncConnection[Any], service_date: dt.date
) -> list[StopChanged]:
    """The stored state of every stop of *service_date* (its latest version), by stop id: what
    a restarted engine's board can start from, so that stops visited before the fixes it
    re-reads are not decided anew (docs/outbox.md, "Restart")."""
    cur = await conn.execute(
        "SELECT body FROM stop_states_current WHERE service_date = %s ORDER BY stop_id",
        (service_date,),
    )
    return [stop_changed_from_body(body) for (body,) in await cur.fetchall()]


async def load_commands_since(
    conn: psycopg.AsyncConnection[Any], since_us: int
) -> list[tuple[int, Command]]:
    """Accepted commands journaled at or after *since_us* (e.g. the start of the service day),
    oldest first, as ``(at_us, command)``: what the lead re-applies after ``Engine.restore``."""
    cur = await conn.execute(
        "SELECT (extract(epoch FROM at) * 1000000)::bigint, command "
        "FROM commands_journal WHERE accepted AND at >= 'epoch'::timestamptz + "
        "%s * interval '1 microsecond' ORDER BY seq",
        (since_us,),
    )
    return [(int(at), command_from_json(cmd)) for at, cmd in await cur.fetchall()]


_DETECTION_TYPES: dict[str, type[Any]] = {
    "VisitStarted": VisitStarted,
    "VisitCompleted": VisitCompleted,
    "StopStarted": StopStarted,
    "StopEnded": StopEnded,
}


def detection_event_from_body(body: dict[str, Any]) -> DetectionEvent:
    """A stored ``visit``/``stop`` body back as the detection event the engine published
    (the inverse of :func:`record_of` for them; the engine's own version is restored)."""
    cls = _DETECTION_TYPES.get(str(body.get("event")))
    if cls is None:
        raise OutboxError(f"not a stored detection event: event={body.get('event')!r}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name == "version":
            kwargs["version"] = int(body.get("engine_version", 1))
        elif f.name.endswith("_us"):
            text = body.get(f.name[:-3])
            kwargs[f.name] = None if text is None else _iso_us(text)
        elif f.name in body:
            value = body[f.name]
            kwargs[f.name] = float("nan") if value is None and f.name == "median_hdop" else value
    return cast(DetectionEvent, cls(**kwargs))


async def load_detection_events(
    conn: psycopg.AsyncConnection[Any], since_us: int
) -> list[DetectionEvent]:
    """The latest stored version of every visit and stop whose time is at or after *since_us*:
    what a restarted engine adopts (``Engine.restore(..., previous=...)``) so that visits keep
    their ids and stops served before the re-read fixes are not decided anew."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (kind, id) body FROM record_versions "
        "WHERE kind IN ('visit', 'stop') AND at >= 'epoch'::timestamptz + "
        "%s * interval '1 microsecond' ORDER BY kind, id, version DESC",
        (since_us,),
    )
    return [detection_event_from_body(body) for (body,) in await cur.fetchall()]


async def load_alert_records(
    conn: psycopg.AsyncConnection[Any],
    *,
    service_date: dt.date | None = None,
    since_date: dt.date | None = None,
) -> list[AlertRecord]:
    """The latest stored version of every alert thread and visit exception of *service_date*
    (or of every service date from *since_date* on), comments and the armed escalation
    deadline included: what ``AlertDesk.restore`` rebuilds the desk from after a restart
    (docs/alerts.md, "Restart").  Read from the ``*_current`` rows' ``seq`` (one version per
    id, the newest), alerts first, each kind in id order.  Raises :class:`OutboxError` when
    neither or both dates are given."""
    if (service_date is None) == (since_date is None):
        raise OutboxError("load_alert_records: give service_date or since_date")
    low = service_date if service_date is not None else since_date
    high = service_date if service_date is not None else dt.date.max
    cur = await conn.execute(
        "SELECT kind, body FROM ("
        " SELECT 'alert' AS kind, r.body FROM alerts_current c"
        " JOIN record_versions r ON r.seq = c.seq"
        " WHERE split_part(c.id, '/', 2) BETWEEN %(low)s AND %(high)s"
        " UNION ALL"
        " SELECT 'exception', r.body FROM visit_exceptions_current c"
        " JOIN record_versions r ON r.seq = c.seq"
        " WHERE c.service_date BETWEEN %(low)s::date AND %(high)s::date"
        ") AS u",
        {"low": str(low), "high": str(high)},
    )
    out: list[AlertRecord] = []
    for kind, body in await cur.fetchall():
        try:
            out.append(
                AlertVersion.from_json_dict(body)
                if kind == "alert"
                else ExceptionVersion.from_json_dict(body)
            )
        except (KeyError, ValueError, TypeError) as exc:
            what = f"stored {kind} {body.get('id')!r}"
            raise OutboxError(f"{what} cannot be read back: {exc}") from exc
    out.sort(key=lambda r: (isinstance(r, ExceptionVersion), r.id))  # (sorting in SQL costs more)
    return out

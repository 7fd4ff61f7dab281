"""The alert desk: schedule events, clock ticks and dispatcher commands in; alert versions and
visit-exception versions out.

Sans-I/O (design.md): the desk never reads a clock, never sleeps and does no I/O.  The engine
calls :meth:`AlertDesk.consume` with the schedule stage's events, :meth:`AlertDesk.tick` when
:meth:`AlertDesk.next_deadline_us` is due (or on every engine tick: a tick with nothing due is
O(1)), and :meth:`AlertDesk.command` for the console's acknowledge/comment.  Times are µs since
the epoch, UTC, in data time; the desk's clock is the largest ``now_us`` it has been given, so
the versions of a thread never go back in time even if a caller does.

Idempotence.  Events are de-duplicated per subject (a stop, a vehicle condition, a site's
unplanned visits): an event equal to one already applied at the subject's latest ``at_us``, or
older than it, changes nothing (counted as ``duplicate_events`` / ``stale_events``).  Feeding
the same batch twice therefore produces no record the second time.

How schedule facts map onto threads (alerts/threads.py has the lifecycle):

===========================  =============================================================
stop ``at_risk``/``late``/``missed``  alarming fact, severity warning/major/critical
stop ``pending``/``visited``/``cancelled``  CLEAR (RETRACT when the event is a retraction)
``UnplannedDue``             alarming fact ``unplanned_due`` (critical) on the stop's thread;
                             ``resolved`` clears it
``VehicleCondition``         ``active``: alarming fact of its kind; not active: CLEAR
``UnplannedVisit``           no alert: an ``unplanned`` visit exception only
``RouteProgress``            ignored (console material)
===========================  =============================================================

A change in ETA or in the wording of the reason alone is not a new version (it would make one
per tick per stop); the console has RouteProgress for that.

Restart (docs/alerts.md, "Restart").  :meth:`AlertDesk.restore` rebuilds every thread and the
exception ledger from the latest stored version of each record (``escalates_at`` carries the
armed timer); until :meth:`AlertDesk.finish_restore` the desk is *restoring*: the schedule
records the restarted engine re-derives are de-duplicated as usual but not applied — only the
last one per subject is kept — and timers wait.  ``finish_restore`` then applies those last
records against the restored threads with the live rules, so a re-derived fact equal to the
stored one makes no version, and a different one makes the version an uninterrupted desk would
have made.  Why not apply them as they come: the re-run starts the day again (plans pending,
then at risk, late ...), and applying that history to a thread that is already "missed,
acknowledged" would downgrade it, clear the acknowledgement and announce it all again.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from alerts import escalation
from alerts.escalation import DeadlineQueue, Route
from alerts.exceptions import ExceptionLedger
from alerts.records import (
    SEVERITY_RANK,
    AlertKind,
    AlertRecord,
    AlertVersion,
    Change,
    Comment,
    ExceptionVersion,
    FactValue,
    Hop,
    Severity,
)
from alerts.roster import Roster
from alerts.threads import (
    ACTIVE,
    ThreadInput,
    ThreadStatus,
    stable_stop_alert_id,
    stable_vehicle_alert_id,
    step,
)
from core.fixes import US_PER_S, iso_utc
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CommandRefused,
    RouteProgress,
    ScheduleEvent,
    StopChanged,
    UnplannedDue,
    UnplannedVisit,
    VehicleCondition,
    stop_id_of,
)

STOP_SEVERITY: dict[str, tuple[AlertKind, Severity]] = {
    "at_risk": ("at_risk", "warning"),
    "late": ("late", "major"),
    "missed": ("missed", "critical"),
}
CONDITION_SEVERITY: dict[str, Severity] = {
    "behind_schedule": "warning",
    "unscheduled_stop": "warning",
    "gps_silent": "major",
    "not_left_depot": "major",
}


def _ms(value: FactValue) -> FactValue:
    """A µs time cut to the millisecond the stored JSON keeps, so that a restored thread's
    material compares equal to the re-derived one."""
    return value - value % 1000 if isinstance(value, int) and not isinstance(value, bool) else value


def material_of(kind: str, facts: tuple[tuple[str, FactValue], ...]) -> tuple[object, ...]:
    """What makes an alarming fact *new* for a thread (beyond its severity): the kind, and for a
    stop its vehicle and window, for a vehicle condition its start.  An ETA or a reason's
    wording is not material.  Derived from the facts alone, so a restored thread has it."""
    f = dict(facts)
    if kind in ("at_risk", "late", "missed"):
        return (kind, f.get("vehicle_id"), _ms(f.get("window_start_us")),
                _ms(f.get("window_end_us")))  # fmt: skip
    if kind == "unplanned_due":
        return (kind, _ms(f.get("window_start_us")), _ms(f.get("window_end_us")))
    return (kind, _ms(f.get("since_us")))


class RestoreError(RuntimeError):
    """:meth:`AlertDesk.restore` on a desk that already holds threads (a bug of the wiring:
    restore comes first, before plans, fixes and commands)."""


def _date_of_alert(alert_id: str) -> str:
    """``stop/<date>/<site>`` and ``vehicle/<date>/<vehicle>/<kind>`` → ``<date>``."""
    return alert_id.split("/", 2)[1]


def _date_of_subject(subject: str) -> str:
    """De-duplication subjects: ``<date>/<site>``, ``unplanned/<date>/<site>``,
    ``vehicle/<date>/...``."""
    head, rest = subject.split("/", 1)
    return rest.split("/", 1)[0] if head in ("unplanned", "vehicle") else head


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertParams:
    """Escalation timing and input bounds (defaults are the company's current rule)."""

    ack_timeout_s: float = 10 * 60  # N: unacknowledged this long → least-loaded on shift
    head_after_s: float = 15 * 60  # M: then this much longer → the head dispatcher
    max_comment_chars: int = 2000
    max_comments_per_alert: int = 200
    recent_resolved: int = 200  # resolved/retracted threads kept in snapshots
    escalate_detected_late: bool = False  # late corrections are records, not pages

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be > 0, got {getattr(self, name)}"
            for name in (
                "ack_timeout_s",
                "head_after_s",
                "max_comment_chars",
                "max_comments_per_alert",
            )
            if not getattr(self, name) > 0
        ]
        if self.recent_resolved < 0:
            problems.append(f"recent_resolved must be >= 0, got {self.recent_resolved}")
        if problems:
            raise ValueError("AlertParams: " + "; ".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskSnapshot:
    """What a console shows on connect: active threads (newest version each, most severe
    first), recently finished ones, and each dispatcher's load."""

    at_us: int
    active: tuple[AlertVersion, ...]
    recent_finished: tuple[AlertVersion, ...]
    loads: tuple[tuple[str, int], ...]


@dataclass(slots=True)
class _Thread:
    id: str
    subject: str  # dedupe subject / stop id or vehicle condition key
    stop_id: str | None
    kind: AlertKind
    severity: Severity
    status: ThreadStatus
    summary: str
    facts: tuple[tuple[str, FactValue], ...]
    material: tuple[object, ...]
    vehicle_id: str | None
    assignee: str = ""
    level: int = 0
    hops: list[Hop] = field(default_factory=list)
    ack_by: str | None = None
    ack_at_us: int | None = None
    comments: list[Comment] = field(default_factory=list)
    detected_late: bool = False
    opened_at_us: int = 0
    version: int = 0
    last: AlertVersion | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fact:
    """An alarming fact derived from one schedule event."""

    kind: AlertKind
    severity: Severity
    summary: str
    facts: tuple[tuple[str, FactValue], ...]
    material: tuple[object, ...]
    vehicle_id: str | None
    detected_late: bool
    by: str


class AlertDesk:
    """Alert threads, escalation and the visit-exception ledger, composed."""

    def __init__(self, *, roster: Roster, params: AlertParams | None = None) -> None:
        self.roster = roster
        self.params = params or AlertParams()
        self._threads: dict[str, _Thread] = {}
        self._ledger = ExceptionLedger()
        self._deadlines = DeadlineQueue()
        self._loads: Counter[str] = Counter()
        self._seen: dict[str, tuple[int, set[ScheduleEvent]]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._now_us = 0
        self.counts: Counter[str] = Counter()
        # restoring (between restore and finish_restore): the last re-derived record per
        # (channel, key), in the order of their last arrival; stored comments not yet matched
        # by a re-applied journaled comment
        self._restoring = False
        self._deferred: dict[tuple[str, str], ScheduleEvent] = {}
        self._unmatched_comments: dict[str, Counter[tuple[str, str]]] = {}

    # -- public API ------------------------------------------------------------------------

    def consume(self, events: Sequence[ScheduleEvent], now_us: int) -> list[AlertRecord]:
        now = self._clock(now_us)
        out: list[AlertRecord] = []
        for ev in events:
            if isinstance(ev, RouteProgress):
                self.counts["route_progress_ignored"] += 1
                continue
            if not isinstance(ev, StopChanged | VehicleCondition | UnplannedVisit | UnplannedDue):
                self.counts["unknown_events"] += 1
                continue
            if not self._first_time(ev):
                continue
            self.counts["events"] += 1
            if self._restoring:
                self._defer(ev)
            elif isinstance(ev, StopChanged):
                out += self._ledger.on_stop(ev, now)
                out += self._on_stop(ev, now)
            elif isinstance(ev, UnplannedDue):
                out += self._on_unplanned_due(ev, now)
            elif isinstance(ev, VehicleCondition):
                out += self._on_condition(ev, now)
            else:
                out += self._ledger.on_unplanned(ev, now)
        return out

    def tick(self, now_us: int) -> list[AlertRecord]:
        now = self._clock(now_us)
        if self._restoring:  # timers fire after finish_restore, against the final threads
            return []
        out: list[AlertRecord] = []
        for alert_id in self._deadlines.pop_due(now):
            th = self._threads[alert_id]
            if th.status is not ThreadStatus.OPEN:  # cannot happen: timers are cancelled
                raise AssertionError(f"escalation timer fired for {th.status.value} {alert_id}")
            waited = self.params.ack_timeout_s if th.level == 0 else self.params.head_after_s
            route = escalation.next_route(
                self.roster, th.level, th.assignee, self._loads, now, waited
            )
            if route is None:
                continue
            self._step(th, ThreadInput.HOP)
            self._assign(th, route, now, counted=True)
            self._arm(th, now)
            self.counts["hops"] += 1
            out.append(self._version(th, "escalated", "escalation", now))
        return out

    def next_deadline_us(self) -> int | None:
        return self._deadlines.next_deadline()

    def command(self, cmd: Acknowledge | AddComment, now_us: int) -> list[AlertRecord]:
        """Carry out a dispatcher's command, or raise :class:`CommandRefused` having changed
        nothing (not even the desk's clock)."""
        try:
            out = self._command(cmd, max(self._now_us, int(now_us)))
        except CommandRefused as exc:
            self.counts[f"refused_{exc.code}"] += 1
            raise
        self._clock(now_us)
        return out

    # -- restart ---------------------------------------------------------------------------

    @property
    def restoring(self) -> bool:
        return self._restoring

    def restore(self, stored: Iterable[AlertRecord]) -> list[AlertRecord]:
        """Rebuild the desk from stored records (``store.outbox.load_alert_records``): for each
        id the highest version given wins.  Threads come back with their id, version, status,
        kind and facts, assignee, escalation level and hops, acknowledgement, comments and
        opening time; open ones count in their assignee's load and re-arm their timer at the
        stored ``escalates_at`` (a deadline passed while the service was down fires at the
        first tick after :meth:`finish_restore`, once).  The ledger gets its exceptions back.

        The desk is then *restoring* until :meth:`finish_restore`: feed it what the engine
        re-derives (plans, stored detection events and fixes, journaled commands) in between.
        Returns the records it adopted (the latest of each id), for the consumers that start
        empty too (the console hub); the store knows them all.  Raises :class:`RestoreError`
        unless the desk is still empty."""
        if self._threads or self._ledger.current() or self._seen:
            raise RestoreError("AlertDesk.restore: the desk already holds threads or records")
        alerts: dict[str, AlertVersion] = {}
        exceptions: dict[str, ExceptionVersion] = {}
        for rec in stored:
            if isinstance(rec, AlertVersion):
                a = alerts.get(rec.id)
                if a is None or rec.version > a.version:
                    alerts[rec.id] = rec
            else:
                x = exceptions.get(rec.id)
                if x is None or rec.version > x.version:
                    exceptions[rec.id] = rec
        comments: dict[str, tuple[Comment, ...]] = {}
        for v in sorted(alerts.values(), key=lambda r: (r.at_us, r.id)):
            th = self._thread_of(v)
            self._threads[th.id] = th
            if th.status is ThreadStatus.OPEN:
                self._loads[th.assignee] += 1
                if v.escalates_at_us is not None:
                    self._deadlines.set_at(th.id, v.escalates_at_us)
            elif th.status not in ACTIVE:
                self._finished[th.id] = None
            if th.stop_id is not None and th.comments:
                comments[th.stop_id] = tuple(th.comments)
            if th.comments:
                self._unmatched_comments[th.id] = Counter((c.by, c.text) for c in th.comments)
            self._seen_at(th.subject, v.at_us)
            self._clock(v.at_us)
        while len(self._finished) > self.params.recent_resolved:
            self._finished.popitem(last=False)
        self._ledger.restore(exceptions.values(), comments)
        for x in exceptions.values():
            stop_id = x.id.rsplit("/", 1)[0]
            self._seen_at("unplanned/" + stop_id if x.kind == "unplanned" else stop_id, x.at_us)
            self._clock(x.at_us)
        self._restoring = True
        self.counts["restored_threads"] += len(alerts)
        self.counts["restored_exceptions"] += len(exceptions)
        return [*alerts.values(), *exceptions.values()]

    def active_conditions(self) -> list[VehicleCondition]:
        """The vehicle conditions whose threads are active, as the schedule board raised them
        (kind, since, detail): after :meth:`restore`, what a restarted board takes back
        (``ScheduleBoard.restore_conditions``) so that it does not raise them again with a new
        ``since`` — a condition's clock is the board's, and only the store remembers it."""
        out: list[VehicleCondition] = []
        for th in self._threads.values():
            if th.stop_id is not None or th.status not in ACTIVE or th.last is None:
                continue
            f = dict(th.facts)
            since, minutes, date = f.get("since_us"), f.get("minutes"), f.get("service_date")
            if th.vehicle_id is None or not isinstance(since, int) or not isinstance(date, str):
                continue
            out.append(
                VehicleCondition(
                    vehicle_id=th.vehicle_id,
                    service_date=date,
                    kind=th.kind,  # type: ignore[arg-type]
                    active=True,
                    since_us=since,
                    at_us=th.last.at_us,
                    minutes=float(minutes) if isinstance(minutes, int | float) else 0.0,
                    detail=str(f.get("detail") or ""),
                    cause="tick",
                    detected_late=th.detected_late,
                )
            )
        return out

    def finish_restore(self, now_us: int) -> list[AlertRecord]:
        """End the restore: apply, with the live rules, the last re-derived record of each
        subject to the restored threads and exceptions, and return the versions that makes
        (none where the re-derived state equals the stored one).  From here the desk behaves
        as if it had never stopped.  A no-op when not restoring."""
        if not self._restoring:
            return []
        now = self._clock(now_us)
        self._restoring = False
        out: list[AlertRecord] = []
        for (channel, _), ev in self._deferred.items():
            if channel == "ledger":
                assert isinstance(ev, StopChanged)
                out += self._ledger.on_stop(ev, now)
            elif channel == "unplanned":
                assert isinstance(ev, UnplannedVisit)
                out += self._ledger.on_unplanned(ev, now)
            elif isinstance(ev, StopChanged):
                out += self._on_stop(ev, now)
            elif isinstance(ev, UnplannedDue):
                out += self._on_unplanned_due(ev, now)
            elif isinstance(ev, VehicleCondition):
                out += self._on_condition(ev, now)
        self._deferred.clear()
        self._unmatched_comments.clear()
        self.counts["restore_changes"] += len(out)
        return out

    def _seen_at(self, subject: str, at_us: int) -> None:
        """The stored state of *subject* stands as of *at_us*: a re-derived record older than
        that is stale (the desk's idempotence rule), e.g. the "pending" a re-imported plan
        says about a stop the stored thread already has at risk."""
        last_at, _ = self._seen.get(subject, (at_us, set()))
        self._seen[subject] = (max(last_at, at_us), set())

    def _defer(self, ev: ScheduleEvent) -> None:
        keys: list[tuple[str, str]]
        if isinstance(ev, StopChanged):
            keys = [("ledger", ev.stop_id), ("thread", stable_stop_alert_id(ev.stop_id))]
        elif isinstance(ev, UnplannedDue):
            keys = [("thread", stable_stop_alert_id(stop_id_of(ev.service_date, ev.site_id)))]
        elif isinstance(ev, VehicleCondition):
            keys = [("thread", stable_vehicle_alert_id(ev.service_date, ev.vehicle_id, ev.kind))]
        else:
            assert isinstance(ev, UnplannedVisit)
            self._ledger.note_unplanned(ev)
            keys = [("unplanned", stop_id_of(ev.service_date, ev.site_id))]
        for key in keys:
            self._deferred.pop(key, None)
            self._deferred[key] = ev
        self.counts["restore_deferred"] += 1

    @staticmethod
    def _thread_of(v: AlertVersion) -> _Thread:
        stop_id = v.id.removeprefix("stop/") if v.subject == "stop" else None
        vehicle = dict(v.facts).get("vehicle_id")
        return _Thread(
            id=v.id,
            subject=stop_id if stop_id is not None else v.id,
            stop_id=stop_id,
            kind=v.kind,
            severity=v.severity,
            status=ThreadStatus(v.status),
            summary=v.summary,
            facts=v.facts,
            material=material_of(v.kind, v.facts),
            vehicle_id=vehicle if isinstance(vehicle, str) else None,
            assignee=v.assignee,
            level=v.escalation_level,
            hops=list(v.hops),
            ack_by=v.acknowledged_by,
            ack_at_us=v.acknowledged_at_us,
            comments=list(v.comments),
            detected_late=v.detected_late,
            opened_at_us=v.opened_at_us,
            version=v.version,
            last=v,
        )

    def snapshot(self) -> DeskSnapshot:
        active = [
            th.last for th in self._threads.values() if th.status in ACTIVE and th.last is not None
        ]
        active.sort(key=lambda r: (-SEVERITY_RANK[r.severity], r.opened_at_us, r.id))
        finished = tuple(
            last for aid in self._finished if (last := self._threads[aid].last) is not None
        )
        loads = tuple((d.id, self._loads[d.id]) for d in self.roster.dispatchers)
        return DeskSnapshot(
            at_us=self._now_us, active=tuple(active), recent_finished=finished, loads=loads
        )

    def exceptions(self) -> tuple[ExceptionVersion, ...]:
        """The current version of every visit exception."""
        return self._ledger.current()

    def loads(self) -> dict[str, int]:
        """Open (unacknowledged) threads per dispatcher, only those with any."""
        return {d: n for d, n in self._loads.items() if n}

    def statistics(self) -> dict[str, int]:
        """Counters and sizes for /metrics (trio's ``statistics()`` habit)."""
        stats = dict(self.counts)
        stats["threads"] = len(self._threads)
        stats["threads_open"] = sum(self._loads.values())
        stats["deadlines_armed"] = len(self._deadlines)
        stats["exceptions"] = len(self._ledger.current())
        return stats

    def forget_days_before(self, service_date: str) -> int:
        """Drop every thread, exception and de-duplication entry of service dates before
        ``service_date`` (ISO, compared as text); returns how many threads went.

        The desk's memory is per day; the engine calls this at the day's rollover, after the
        store has the day's records, so that a long-running service stays bounded.  Open
        threads of those days leave the loads and the timers with them."""
        gone = [aid for aid, th in self._threads.items() if _date_of_alert(aid) < service_date]
        for aid in gone:
            th = self._threads.pop(aid)
            if th.status is ThreadStatus.OPEN:
                self._loads[th.assignee] -= 1
            self._deadlines.cancel(aid)
            self._finished.pop(aid, None)
        for subject in [k for k in self._seen if _date_of_subject(k) < service_date]:
            del self._seen[subject]
        self._ledger.forget_days_before(service_date)
        return len(gone)

    # -- events ----------------------------------------------------------------------------

    def _clock(self, now_us: int) -> int:
        self._now_us = max(self._now_us, int(now_us))
        return self._now_us

    def _first_time(self, ev: ScheduleEvent) -> bool:
        if isinstance(ev, StopChanged | UnplannedDue):
            subject = stop_id_of(ev.service_date, ev.site_id)
        elif isinstance(ev, VehicleCondition):
            subject = stable_vehicle_alert_id(ev.service_date, ev.vehicle_id, ev.kind)
        else:
            assert isinstance(ev, UnplannedVisit)
            subject = "unplanned/" + stop_id_of(ev.service_date, ev.site_id)
        last_at, seen = self._seen.get(subject, (ev.at_us, set()))
        if ev.at_us < last_at:
            self.counts["stale_events"] += 1
            return False
        if ev.at_us > last_at:
            seen = set()
        if ev in seen:
            self.counts["duplicate_events"] += 1
            return False
        seen.add(ev)
        self._seen[subject] = (ev.at_us, seen)
        return True

    def _on_stop(self, ev: StopChanged, now: int) -> list[AlertRecord]:
        aid = stable_stop_alert_id(ev.stop_id)
        by = f"engine:{ev.cause}"
        ks = STOP_SEVERITY.get(ev.state)
        if ks is None:
            th = self._threads.get(aid)
            if th is None or th.status not in ACTIVE:
                return []
            if ev.retraction:
                return self._finish(th, ThreadInput.RETRACT, "retracted", by, now, ev.reason)
            return self._finish(th, ThreadInput.CLEAR, "resolved", by, now, ev.reason)
        kind, severity = ks
        facts: tuple[tuple[str, FactValue], ...] = (
            ("stop_id", ev.stop_id),
            ("site_id", ev.site_id),
            ("client_id", ev.client_id),
            ("service_date", ev.service_date),
            ("vehicle_id", ev.vehicle_id),
            ("state", ev.state),
            ("window_start_us", ev.window_start_us),
            ("window_end_us", ev.window_end_us),
            ("planned_arrival_us", ev.planned_arrival_us),
            ("eta_us", ev.eta_us),
            ("reason", ev.reason),
        )
        what = {"at_risk": "at risk", "late": "late", "missed": "missed"}[kind]
        fact = _Fact(
            kind=kind,
            severity=severity,
            summary=f"{ev.site_id} ({ev.vehicle_id or 'no vehicle'}) {what}: {ev.reason}",
            facts=facts,
            material=material_of(kind, facts),
            vehicle_id=ev.vehicle_id,
            detected_late=ev.detected_late,
            by=by,
        )
        return self._raise(aid, ev.stop_id, ev.stop_id, fact, now)

    def _on_unplanned_due(self, ev: UnplannedDue, now: int) -> list[AlertRecord]:
        stop_id = stop_id_of(ev.service_date, ev.site_id)
        aid = stable_stop_alert_id(stop_id)
        if ev.resolved:
            th = self._threads.get(aid)
            if th is None or th.status not in ACTIVE or th.kind != "unplanned_due":
                return []
            return self._finish(
                th, ThreadInput.CLEAR, "resolved", "engine:import", now, "now on a route"
            )
        due_facts: tuple[tuple[str, FactValue], ...] = (
            ("stop_id", stop_id),
            ("site_id", ev.site_id),
            ("client_id", ev.client_id),
            ("service_date", ev.service_date),
            ("window_start_us", ev.window_start_us),
            ("window_end_us", ev.window_end_us),
        )
        fact = _Fact(
            kind="unplanned_due",
            severity="critical",
            summary=(
                f"{ev.site_id} is due today ({iso_utc(ev.window_start_us)}–"
                f"{iso_utc(ev.window_end_us)}) but on no route: it will be missed"
            ),
            facts=due_facts,
            material=material_of("unplanned_due", due_facts),
            vehicle_id=None,
            detected_late=False,
            by="engine:import",
        )
        return self._raise(aid, stop_id, stop_id, fact, now)

    def _on_condition(self, ev: VehicleCondition, now: int) -> list[AlertRecord]:
        aid = stable_vehicle_alert_id(ev.service_date, ev.vehicle_id, ev.kind)
        by = f"engine:{ev.cause}"
        if not ev.active:
            th = self._threads.get(aid)
            if th is None or th.status not in ACTIVE:
                return []
            return self._finish(th, ThreadInput.CLEAR, "resolved", by, now, ev.detail)
        severity = CONDITION_SEVERITY.get(ev.kind)
        if severity is None:  # a condition this desk does not know: counted, not a crash
            self.counts["unknown_condition_kinds"] += 1
            severity = "warning"
        cond_facts: tuple[tuple[str, FactValue], ...] = (
            ("vehicle_id", ev.vehicle_id),
            ("service_date", ev.service_date),
            ("condition", ev.kind),
            ("since_us", ev.since_us),
            ("minutes", ev.minutes),
            ("detail", ev.detail),
        )
        fact = _Fact(
            kind=ev.kind,
            severity=severity,
            summary=f"{ev.vehicle_id} {ev.kind.replace('_', ' ')}: {ev.detail}",
            facts=cond_facts,
            material=material_of(ev.kind, cond_facts),
            vehicle_id=ev.vehicle_id,
            detected_late=ev.detected_late,
            by=by,
        )
        return self._raise(aid, aid, None, fact, now)

    # -- thread mechanics ------------------------------------------------------------------

    def _raise(
        self, aid: str, subject: str, stop_id: str | None, fact: _Fact, now: int
    ) -> list[AlertRecord]:
        th = self._threads.get(aid)
        if th is None:
            th = _Thread(
                id=aid,
                subject=subject,
                stop_id=stop_id,
                kind=fact.kind,
                severity=fact.severity,
                status=ThreadStatus.NEW,
                summary=fact.summary,
                facts=fact.facts,
                material=(),
                vehicle_id=fact.vehicle_id,
            )
            self._threads[aid] = th
        worse = SEVERITY_RANK[fact.severity] > SEVERITY_RANK[th.severity]
        before = th.status
        if before in ACTIVE and not worse and fact.material == th.material:
            return []  # only the ETA or the wording changed: not a new version
        inp = ThreadInput.WORSEN if worse else ThreadInput.FACT
        self._step(th, inp)
        th.kind, th.severity, th.summary = fact.kind, fact.severity, fact.summary
        th.facts, th.material, th.vehicle_id = fact.facts, fact.material, fact.vehicle_id
        change: Change
        escalate = self.params.escalate_detected_late or not fact.detected_late
        if before in (ThreadStatus.NEW, ThreadStatus.RESOLVED, ThreadStatus.RETRACTED):
            change = "raised" if before is ThreadStatus.NEW else "reopened"
            self._finished.pop(aid, None)
            th.ack_by = th.ack_at_us = None
            th.detected_late = fact.detected_late
            th.opened_at_us = now
            th.level = 0
            self._assign(
                th,
                escalation.first_route(self.roster, th.vehicle_id, self._loads, now),
                now,
                counted=False,
            )
            if escalate:
                self._arm(th, now)
        elif before is ThreadStatus.ACKNOWLEDGED and th.status is ThreadStatus.OPEN:
            change = "worsened"
            th.ack_by = th.ack_at_us = None
            self._loads[th.assignee] += 1
            if escalate:
                self._arm(th, now)
        else:
            change = "worsened" if worse else "updated"
            if (
                escalate
                and th.status is ThreadStatus.OPEN
                and self._deadlines.deadline_of(th.id) is None
            ):
                self._arm(th, now)  # a late-born thread that live data now confirms is news
        return [self._version(th, change, fact.by, now)]

    def _step(self, th: _Thread, inp: ThreadInput) -> None:
        th.status = step(th.status, inp)

    def _assign(self, th: _Thread, route: Route, now: int, *, counted: bool) -> None:
        """(Re)assign an OPEN thread, keeping the load counters exact: ``counted`` says the
        thread is already in its old assignee's load (a hop), not (a raise or reopen)."""
        if counted:
            self._loads[th.assignee] -= 1
        th.hops.append(
            Hop(
                level=route.level,
                to=route.to,
                from_=th.assignee or None,
                at_us=now,
                reason=route.reason,
            )
        )
        th.assignee, th.level = route.to, route.level
        self._loads[route.to] += 1

    def _arm(self, th: _Thread, now: int) -> None:
        if th.level >= escalation.LEVEL_HEAD:
            self._deadlines.cancel(th.id)
            return
        wait_s = self.params.ack_timeout_s if th.level == 0 else self.params.head_after_s
        self._deadlines.set_at(th.id, now + round(wait_s * US_PER_S))

    def _finish(
        self, th: _Thread, inp: ThreadInput, change: Change, by: str, now: int, why: str
    ) -> list[AlertRecord]:
        was_open = th.status is ThreadStatus.OPEN
        self._step(th, inp)
        if was_open:
            self._loads[th.assignee] -= 1
        self._deadlines.cancel(th.id)
        th.summary = f"{th.summary} — {change}: {why}" if why else th.summary
        self._finished[th.id] = None
        self._finished.move_to_end(th.id)
        while len(self._finished) > self.params.recent_resolved:
            self._finished.popitem(last=False)
        return [self._version(th, change, by, now)]

    def _version(self, th: _Thread, change: Change, by: str, now: int) -> AlertVersion:
        th.version += 1
        rec = AlertVersion(
            id=th.id,
            version=th.version,
            subject="stop" if th.stop_id is not None else "vehicle",
            kind=th.kind,
            severity=th.severity,
            status=th.status.value,  # type: ignore[arg-type]
            summary=th.summary,
            facts=th.facts,
            assignee=th.assignee,
            escalation_level=th.level,
            hops=tuple(th.hops),
            acknowledged_by=th.ack_by,
            acknowledged_at_us=th.ack_at_us,
            comments=tuple(th.comments),
            detected_late=th.detected_late,
            opened_at_us=th.opened_at_us,
            change=change,
            by=by,
            at_us=now,
            escalates_at_us=self._deadlines.deadline_of(th.id),
        )
        th.last = rec
        return rec

    # -- commands --------------------------------------------------------------------------

    def _command(self, cmd: Acknowledge | AddComment, now: int) -> list[AlertRecord]:
        if not isinstance(cmd, Acknowledge | AddComment):
            raise CommandRefused(
                "invalid",
                f"{type(cmd).__name__} is not an alert command (acknowledge, comment); "
                "schedule commands go to the schedule engine",
            )
        th = self._threads.get(cmd.alert_id)
        if th is None or th.status is ThreadStatus.NEW:
            raise CommandRefused("unknown_id", f"no alert {cmd.alert_id!r}")
        if not self.roster.can_act(cmd.by):
            raise CommandRefused(
                "not_allowed",
                f"{cmd.by!r} is not a dispatcher in the roster (viewers cannot act)",
            )
        if isinstance(cmd, Acknowledge):
            return self._acknowledge(th, cmd, now)
        if self._restoring and self._matches_stored_comment(th, cmd):
            return []  # a journaled comment re-applied: the restored thread holds it already
        return self._comment(th, cmd, now)

    def _matches_stored_comment(self, th: _Thread, cmd: AddComment) -> bool:
        unmatched = self._unmatched_comments.get(th.id)
        text = cmd.text.strip() if isinstance(cmd.text, str) else ""
        if unmatched is None or unmatched[(cmd.by, text)] <= 0:
            return False
        unmatched[(cmd.by, text)] -= 1
        self.counts["restore_comments_matched"] += 1
        return True

    def _acknowledge(self, th: _Thread, cmd: Acknowledge, now: int) -> list[AlertRecord]:
        if th.status not in ACTIVE:
            raise CommandRefused(
                "already_final", f"alert {th.id} is {th.status.value}: nothing to acknowledge"
            )
        if cmd.version != th.version:
            raise CommandRefused(
                "stale_version",
                f"alert {th.id} is at version {th.version}, you saw {cmd.version}: "
                "reload it and acknowledge what it says now",
            )
        if th.status is ThreadStatus.ACKNOWLEDGED:
            raise CommandRefused("invalid", f"alert {th.id} is already acknowledged by {th.ack_by}")
        self._step(th, ThreadInput.ACKNOWLEDGE)
        self._loads[th.assignee] -= 1
        self._deadlines.cancel(th.id)
        th.ack_by, th.ack_at_us = cmd.by, now
        out: list[AlertRecord] = [self._version(th, "acknowledged", cmd.by, now)]
        if th.stop_id is not None and th.kind == "missed":
            out += self._ledger.on_acknowledged(th.stop_id, now)
        return out

    def _comment(self, th: _Thread, cmd: AddComment, now: int) -> list[AlertRecord]:
        text = cmd.text.strip() if isinstance(cmd.text, str) else ""
        if not text:
            raise CommandRefused("invalid", "an empty comment: write what happened")
        if len(text) > self.params.max_comment_chars:
            raise CommandRefused(
                "invalid",
                f"a comment of {len(text)} characters; at most {self.params.max_comment_chars}",
            )
        if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
            raise CommandRefused("invalid", "a comment with control characters")
        if len(th.comments) >= self.params.max_comments_per_alert:
            raise CommandRefused(
                "invalid",
                f"alert {th.id} already holds {len(th.comments)} comments "
                f"(at most {self.params.max_comments_per_alert})",
            )
        comment = Comment(by=cmd.by, at_us=now, text=text)
        self._step(th, ThreadInput.COMMENT)
        th.comments.append(comment)
        out: list[AlertRecord] = [self._version(th, "commented", cmd.by, now)]
        if th.stop_id is not None:
            out += self._ledger.on_comment(th.stop_id, comment, now)
        return out

"""A desk killed mid-day and restored from the records it had emitted continues exactly as an
uninterrupted desk (issue 9): same alert and exception versions, field for field, versions
included — acknowledgements, comments, assignees, escalation levels and the armed timers come
back from the stored versions alone.

The restarted desk is fed, while restoring, what a restarted engine re-derives: the schedule
records of some suffix of the day before the cut (any suffix: the engine re-reads only its
horizon) and the journaled commands; that must announce nothing.  Mutations of the restore
(an acknowledgement, a comment or a timer dropped) must make the property fail, so the test
can fail.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.desk import AlertDesk, AlertParams, RestoreError
from alerts.records import AlertRecord, AlertVersion, ExceptionVersion
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CommandRefused,
    ScheduleEvent,
    StopChanged,
)
from tests.alerts_helpers import DATE, MIN, condition, roster, stop, utc

SITES = ("S0001", "S0002", "S0003", "S0004")
VEHICLES = ("V001", "V003", "V009", None)
STATES = ("pending", "at_risk", "late", "missed", "visited", "cancelled")
PEOPLE = ("D00", "D01", "D02", "D03", "VW")
TEXTS = ("called the driver", "client closed", "ok")

# one step of a day: ("events", [...]) | ("tick",) | ("ack", pick, by, skew) |
# ("comment", pick, by, text); each with its time (µs, whole milliseconds: what JSON keeps)
Step = tuple[int, tuple[Any, ...]]


def _stop_event(
    site: str, state: str, vehicle: str | None, retraction: bool, late: bool, minutes: int,
    at: int,
) -> StopChanged:  # fmt: skip
    kw: dict[str, object] = {}
    if state == "visited":
        kw = {
            "outcome": "late" if minutes > 30 else "on_time",
            "arrival_us": utc("09:30") + minutes * MIN,
            "minutes_late": float(minutes) if minutes > 30 else None,
            "visited_by": vehicle or "V001",
        }
    if state == "cancelled":
        kw["cancel_reason"] = "client closed"
    return stop(site, state, at=at, vehicle=vehicle, retraction=retraction,  # type: ignore[arg-type]
                detected_late=late, **kw)  # fmt: skip


@st.composite
def days(draw: st.DrawFn) -> list[Step]:
    now = utc("05:00")
    steps: list[Step] = []
    seen: dict[str, tuple[int, set[ScheduleEvent]]] = {}
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.integers(0, 20 * 60)) * 1_000_000 + draw(st.integers(0, 999)) * 1000
        what = draw(st.sampled_from(("events", "events", "tick", "tick", "ack", "comment")))
        if what == "events":
            events: list[ScheduleEvent] = []
            for _ in range(draw(st.integers(1, 3))):
                ev: ScheduleEvent
                if draw(st.integers(0, 4)) == 0:
                    kind = draw(st.sampled_from(("gps_silent", "behind_schedule")))
                    vehicle = draw(st.sampled_from(("V001", "V003")))
                    ev = dataclasses.replace(
                        condition(kind, active=draw(st.booleans()), vehicle=vehicle), at_us=now
                    )
                    subject = f"{ev.vehicle_id}/{ev.kind}"
                else:
                    ev = _stop_event(
                        draw(st.sampled_from(SITES)), draw(st.sampled_from(STATES)),
                        draw(st.sampled_from(VEHICLES)), draw(st.integers(0, 5)) == 0,
                        draw(st.integers(0, 5)) == 0, draw(st.integers(1, 90)), now,
                    )  # fmt: skip
                    subject = ev.stop_id
                # the desk's contract: at one instant a subject's records are distinct facts
                at, same = seen.get(subject, (-1, set()))
                same = same if at == now else set()
                if ev in same:
                    continue
                same.add(ev)
                seen[subject] = (now, same)
                events.append(ev)
            steps.append((now, ("events", events)))
        elif what == "tick":
            steps.append((now, ("tick",)))
        elif what == "ack":
            pick = draw(st.integers(0, 7))
            by = draw(st.sampled_from(PEOPLE))
            steps.append((now, ("ack", pick, by, draw(st.sampled_from((0, 0, 0, -1))))))
        else:
            pick = draw(st.integers(0, 7))
            by = draw(st.sampled_from(PEOPLE))
            steps.append((now, ("comment", pick, by, draw(st.sampled_from(TEXTS)))))
    return steps


class Run:
    """One desk fed steps; commands pick their alert from what this desk has said so far."""

    def __init__(self, desk: AlertDesk) -> None:
        self.desk = desk
        self.latest: dict[str, AlertRecord] = {}
        self.journal: list[Acknowledge | AddComment] = []

    def seen(self, records: list[AlertRecord]) -> list[AlertRecord]:
        for r in records:
            self.latest[r.id] = r
        return records

    def step(self, step: Step) -> list[AlertRecord]:
        now, (what, *args) = step
        if what == "events":
            return self.seen(self.desk.consume(args[0], now))
        if what == "tick":
            return self.seen(self.desk.tick(now))
        alerts = sorted(r.id for r in self.latest.values() if isinstance(r, AlertVersion))
        if not alerts:
            return []
        aid = alerts[args[0] % len(alerts)]
        cmd: Acknowledge | AddComment
        if what == "ack":
            cmd = Acknowledge(alert_id=aid, version=self.latest[aid].version + args[2], by=args[1])
        else:
            cmd = AddComment(alert_id=aid, text=args[2], by=args[1])
        try:
            out = self.seen(self.desk.command(cmd, now))
        except CommandRefused:
            return []
        self.journal.append(cmd)
        return out


def stored_form(records: list[AlertRecord]) -> list[AlertRecord]:
    """What the store gives back: each record's JSON body (the store's own version number in
    ``version``, the desk's in ``engine_version``), through JSON text."""
    out: list[AlertRecord] = []
    for i, r in enumerate(records):
        body = r.to_json_dict()
        body["engine_version"] = body["version"]
        body["version"] = 1000 + i
        back = json.loads(json.dumps(body))
        out.append(
            AlertVersion.from_json_dict(back)
            if isinstance(r, AlertVersion)
            else ExceptionVersion.from_json_dict(back)
        )
    return out


def as_json(records: list[AlertRecord]) -> list[dict[str, Any]]:
    return [r.to_json_dict() for r in records]


def new_desk() -> AlertDesk:
    return AlertDesk(roster=roster(), params=AlertParams())


def check_restart(
    steps: list[Step],
    cut: int,
    rerun_from: int,
    *,
    stored: Callable[[list[AlertRecord]], list[AlertRecord]] = stored_form,
) -> None:
    cut = cut % (len(steps) + 1)
    rerun_from = rerun_from % (cut + 1)
    whole = Run(new_desk())
    per_step = [whole.step(s) for s in steps]

    first = Run(new_desk())
    emitted = [r for s in steps[:cut] for r in first.step(s)]  # then kill -9
    second = Run(new_desk())
    second.desk.restore(stored(emitted))
    second.latest = {r.id: r for r in emitted}
    assert second.desk.restoring
    # the restarted engine re-derives part of the day and re-applies the journal
    restart_now = steps[cut - 1][0] if cut else utc("05:00")
    # the re-imported plan first: every stop "pending" at the start of the day, older than
    # anything stored (stale for a stop the store knows; nothing for one it does not)
    plan = [stop(site, "pending", at=utc("05:00") - 1000, cause="import") for site in SITES]
    rerun: list[AlertRecord] = second.desk.consume(plan, utc("05:00") - 1000)
    for now, (what, *args) in steps[rerun_from:cut]:
        if what == "events":
            rerun += second.desk.consume(args[0], now)
        elif what == "tick":
            rerun += second.desk.tick(now)
    for cmd in first.journal:
        with suppress(CommandRefused):
            rerun += second.desk.command(cmd, restart_now)
    rerun += second.desk.finish_restore(restart_now)
    assert as_json(rerun) == [], "a restarted desk announced again what it had said"
    assert not second.desk.restoring
    got = [r for s in steps[cut:] for r in second.step(s)]
    want = [r for out in per_step[cut:] for r in out]
    assert as_json(got) == as_json(want)
    assert second.desk.loads() == whole.desk.loads()
    assert second.desk.next_deadline_us() == whole.desk.next_deadline_us()


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(days(), st.integers(0, 10_000), st.integers(0, 10_000))
def test_a_restored_desk_continues_as_an_uninterrupted_one(
    steps: list[Step], cut: int, rerun_from: int
) -> None:
    check_restart(steps, cut, rerun_from)


@contextmanager
def mutated_restore(mutate: Callable[[Any], None]) -> Iterator[None]:
    """The desk's restore with *mutate* applied to every rebuilt thread."""
    original = AlertDesk._thread_of

    def broken(v: AlertVersion) -> Any:
        th = original(v)
        mutate(th)
        return th

    AlertDesk._thread_of = staticmethod(broken)  # type: ignore[method-assign]
    try:
        yield
    finally:
        AlertDesk._thread_of = staticmethod(original)  # type: ignore[method-assign]


def _drop_ack(th: Any) -> None:
    th.ack_by = th.ack_at_us = None


def _drop_comments(th: Any) -> None:
    th.comments = []


def _drop_level(th: Any) -> None:
    th.level = 0


def _a_day() -> list[Step]:
    """Two stops go late; one is acknowledged, the other commented and escalated before the
    cut (after step 5); after it, both get versions that show what restore had to keep."""
    late = [stop("S0001", "late", at="09:00")]
    late2 = [stop("S0002", "late", at="09:05", vehicle="V003")]
    missed2 = [stop("S0002", "missed", at="09:30", vehicle="V003")]
    return [
        (utc("09:00"), ("events", late)),
        (utc("09:05"), ("events", late2)),
        (utc("09:06"), ("ack", 1, "D02", 0)),
        (utc("09:07"), ("comment", 0, "D01", "called the driver")),
        (utc("09:12"), ("tick",)),
        (utc("09:21"), ("comment", 1, "D02", "ok")),
        (utc("09:22"), ("comment", 0, "D02", "ok")),
        (utc("09:30"), ("events", missed2)),
        (utc("09:45"), ("tick",)),
    ]


@pytest.mark.parametrize(
    "mutate", [_drop_ack, _drop_comments, _drop_level], ids=["ack", "comments", "level"]
)
def test_the_restart_check_fails_when_restore_drops_state(
    mutate: Callable[[Any], None],
) -> None:
    """The property above is not vacuous: on one plain day, a restore that forgets
    acknowledgements, comments or the escalation level fails it (and the real one passes)."""
    check_restart(_a_day(), 5, 0)
    with mutated_restore(mutate), pytest.raises(AssertionError):
        check_restart(_a_day(), 5, 0)


def test_the_restart_check_fails_when_restore_forgets_how_recent_the_stored_state_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the stored state's time per subject, the re-imported plan's "pending" (older
    than anything stored) would resolve the stored late alerts at finish_restore."""
    check_restart(_a_day(), 5, 5)
    monkeypatch.setattr(AlertDesk, "_seen_at", lambda self, subject, at_us: None)
    with pytest.raises(AssertionError):
        check_restart(_a_day(), 5, 5)


def test_the_restart_check_fails_when_the_store_drops_the_timer() -> None:
    def no_deadline(records: list[AlertRecord]) -> list[AlertRecord]:
        return [
            dataclasses.replace(r, escalates_at_us=None) if isinstance(r, AlertVersion) else r
            for r in stored_form(records)
        ]

    with pytest.raises(AssertionError):
        check_restart(_a_day(), 5, 0, stored=no_deadline)


def test_a_dropped_timer_is_caught_and_a_kept_one_fires_once_at_the_first_tick() -> None:
    """An open alert whose deadline passes while the service is down escalates at the first
    tick after the restart, once; without ``escalates_at`` in the stored body it never would."""
    d = new_desk()
    (raised,) = [r for r in d.consume([stop("S0001", "late", at="09:00")], utc("09:00"))
                 if isinstance(r, AlertVersion)]  # fmt: skip
    assert raised.escalates_at_us == utc("09:10")
    again = new_desk()
    again.restore(stored_form([raised]))
    assert again.finish_restore(utc("09:00")) == []
    assert again.next_deadline_us() == utc("09:10")
    (hop,) = again.tick(utc("09:40"))
    assert isinstance(hop, AlertVersion)
    assert (hop.change, hop.escalation_level, hop.version) == ("escalated", 1, 2)
    assert again.tick(utc("09:41")) == []
    no_timer = new_desk()
    no_timer.restore(stored_form([dataclasses.replace(raised, escalates_at_us=None)]))
    no_timer.finish_restore(utc("09:00"))
    assert no_timer.tick(utc("09:40")) == []


def test_a_re_derived_change_is_announced_once_at_finish() -> None:
    """What the re-run decides differently from the stored state (here: the stop worsened
    to missed while the service was down) is one version, made at finish_restore."""
    d = new_desk()
    out = d.consume([stop("S0001", "late", at="09:00")], utc("09:00"))
    d.command(Acknowledge(alert_id=f"stop/{DATE}/S0001", version=1, by="D01"), utc("09:05"))
    stored = [*out, *d.command(AddComment(alert_id=f"stop/{DATE}/S0001", text="on it",
                                          by="D01"), utc("09:06"))]  # fmt: skip
    stored = [r for r in stored if isinstance(r, AlertVersion)][-1:]
    again = new_desk()
    again.restore(stored_form(stored))
    assert again.consume([stop("S0001", "at_risk", at="08:30")], utc("08:30")) == []
    assert again.consume([stop("S0001", "late", at="09:00")], utc("09:00")) == []
    assert again.consume([stop("S0001", "missed", at="10:00")], utc("10:00")) == []
    assert again.tick(utc("10:00")) == []  # timers wait for the end of the restore
    # the journaled comment is in the restored thread already: not added twice
    assert again.command(AddComment(alert_id=f"stop/{DATE}/S0001", text="on it", by="D01"),
                         utc("10:00")) == []  # fmt: skip
    (worse,) = [r for r in again.finish_restore(utc("10:00")) if isinstance(r, AlertVersion)]
    assert (worse.change, worse.kind, worse.status, worse.version) == (
        "worsened", "missed", "open", 4,
    )  # fmt: skip
    assert [c.text for c in worse.comments] == ["on it"]
    assert again.loads() == {"D01": 1}
    with pytest.raises(RestoreError):
        again.restore([])


def test_restore_rebuilds_loads_finished_threads_and_exceptions() -> None:
    d = new_desk()
    out = d.consume(
        [stop("S0001", "missed", at="10:00"), stop("S0002", "late", at="10:00", vehicle="V003"),
         condition("gps_silent", at="10:00")], utc("10:00"),
    )  # fmt: skip
    out += d.consume([stop("S0002", "cancelled", at="10:05", vehicle="V003",
                           cancel_reason="client closed")], utc("10:05"))  # fmt: skip
    again = new_desk()
    again.restore(stored_form(out))
    assert again.finish_restore(utc("10:05")) == []
    assert again.loads() == d.loads()
    assert {x.id: x for x in again.exceptions()} == {x.id: x for x in d.exceptions()}
    snap, want = again.snapshot(), d.snapshot()
    assert [a.id for a in snap.active] == [a.id for a in want.active]
    assert [a.id for a in snap.recent_finished] == [a.id for a in want.recent_finished]

"""A Hypothesis state machine over random interleavings of schedule events, clock ticks and
dispatcher commands, checking the desk's invariants after every step (issue 8):

- versions strictly increase per id, and never go back in time;
- one thread per subject (ids are derived from the subject only);
- escalation hops only an unacknowledged (open) thread, and never past the head;
- a resolved or retracted thread comes back only as "reopened", from a new alarming fact;
- consume is idempotent (the same batch again yields nothing);
- each dispatcher's load equals the open threads assigned to them;
- commands succeed or are refused exactly as a naive model predicts, and a refusal changes
  nothing;
- a stop's missed/late exception is live exactly when the stop's last state says so.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from alerts.desk import AlertDesk, AlertParams
from alerts.records import AlertRecord, AlertVersion, ExceptionVersion
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CommandRefused,
    ScheduleEvent,
    StopChanged,
    stop_id_of,
)
from tests.alerts_helpers import DATE, MIN, condition, roster, stop, utc

SITES = ("S0001", "S0002", "S0003")
VEHICLES = ("V001", "V003", "V009", None)
PEOPLE = ("D00", "D01", "D02", "D03", "VW", "stranger")
STATES = ("pending", "at_risk", "late", "missed", "visited", "cancelled")


class DeskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.desk = AlertDesk(roster=roster(), params=AlertParams())
        self.now = utc("03:30")
        self.last: dict[str, AlertRecord] = {}
        self.last_batch: list[ScheduleEvent] = []
        self.stop_state: dict[str, StopChanged] = {}
        self.subjects: set[str] = set()
        self.batches: list[list[ScheduleEvent]] = []
        self.instant: dict[str, tuple[int, set[StopChanged]]] = {}

    # -- feeding -------------------------------------------------------------------------

    def _record(self, recs: list[AlertRecord], source: str) -> None:
        for r in recs:
            prev = self.last.get(r.id)
            if prev is None:
                assert r.version == 1, r
            else:
                assert r.version == prev.version + 1, (prev, r)
                assert r.at_us >= prev.at_us
            if isinstance(r, AlertVersion):
                assert r.id in self.subjects, f"{r.id} is not the thread of any subject fed"
                if r.change == "escalated":
                    assert source == "tick"
                    assert isinstance(prev, AlertVersion)
                    assert prev.status == "open"
                    assert r.status == "open"
                    assert r.escalation_level > prev.escalation_level
                    assert r.escalation_level <= 2
                if isinstance(prev, AlertVersion) and not prev.active and r.active:
                    assert r.change == "reopened", (prev, r)
                    assert source == "consume"
                if r.change in ("raised", "reopened", "worsened", "updated"):
                    assert source == "consume"
            self.last[r.id] = r

    def _consume(self, events: list[ScheduleEvent]) -> None:
        for e in events:
            if isinstance(e, StopChanged):
                self.subjects.add(f"stop/{e.stop_id}")
                self.stop_state[e.stop_id] = e
            else:
                self.subjects.add(f"vehicle/{e.service_date}/{e.vehicle_id}/{e.kind}")
        self.last_batch = events
        self.batches.append(events)
        self._record(self.desk.consume(events, self.now), "consume")

    def _build_stop(
        self,
        site: str,
        state: str,
        outcome: str,
        vehicle: str | None,
        retraction: bool,
        detected_late: bool,
        minutes: int,
    ) -> StopChanged:
        kw: dict[str, object] = {}
        if state == "visited":
            kw = {
                "outcome": outcome,
                "arrival_us": utc("09:30") + minutes * MIN,
                "minutes_late": float(minutes) if outcome == "late" else None,
                "visited_by": vehicle or "V001",
            }
        if state == "cancelled":
            kw["cancel_reason"] = "client closed"
        ev = stop(
            site, state, at=self.now, vehicle=vehicle, retraction=retraction,  # type: ignore[arg-type]
            detected_late=detected_late, **kw,
        )  # fmt: skip
        # The contract: at one instant a subject's records are distinct facts (a record equal
        # to one already given at that instant is a replay).  Keep generated data within it.
        at, seen = self.instant.get(ev.stop_id, (-1, set()))
        if at == self.now and ev in seen:
            self.now += 1
            return self._build_stop(site, state, outcome, vehicle, retraction, detected_late,
                                    minutes)  # fmt: skip
        if at != self.now:
            seen = set()
        seen.add(ev)
        self.instant[ev.stop_id] = (self.now, seen)
        return ev

    @rule(
        advance=st.integers(0, 15 * MIN),
        batch=st.lists(
            st.tuples(
                st.sampled_from(SITES),
                st.sampled_from(STATES),
                st.sampled_from(("early", "on_time", "late")),
                st.sampled_from(VEHICLES),
                st.booleans(),
                st.booleans(),
                st.integers(1, 120),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def stop_events(
        self, advance: int, batch: list[tuple[str, str, str, str | None, bool, bool, int]]
    ) -> None:
        """One batch of stop records at one instant (several may concern the same stop)."""
        self.now += advance
        events: list[ScheduleEvent] = [self._build_stop(*args) for args in batch]
        self._consume(events)

    @rule(advance=st.integers(0, 15 * MIN), active=st.booleans(),
          kind=st.sampled_from(("gps_silent", "behind_schedule")))  # fmt: skip
    def condition_event(self, advance: int, active: bool, kind: str) -> None:
        self.now += advance
        ev = condition(kind, active=active, at="00:00")
        from dataclasses import replace

        self._consume([replace(ev, at_us=self.now)])

    @precondition(lambda self: bool(self.last_batch))
    @rule()
    def replay_last_batch(self) -> None:
        assert self.desk.consume(self.last_batch, self.now) == []

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def replay_an_earlier_batch(self, data: st.DataObject) -> None:
        """A restart that re-sends older output (or a duplicate delivery): nothing happens."""
        batch = data.draw(st.sampled_from(self.batches))
        assert self.desk.consume(batch, self.now) == []

    @rule(advance=st.integers(0, 30 * MIN))
    def tick(self, advance: int) -> None:
        self.now += advance
        self._record(self.desk.tick(self.now), "tick")
        nd = self.desk.next_deadline_us()
        assert nd is None or nd > self.now

    # -- commands --------------------------------------------------------------------------

    def _alert_ids(self) -> list[str]:
        return sorted(k for k, v in self.last.items() if isinstance(v, AlertVersion)) or ["x"]

    @rule(data=st.data(), by=st.sampled_from(PEOPLE), skew=st.sampled_from((0, 0, 0, -1, 1)))
    def acknowledge(self, data: st.DataObject, by: str, skew: int) -> None:
        aid = data.draw(st.sampled_from([*self._alert_ids(), "stop/unknown"]))
        cur = self.last.get(aid)
        version = (cur.version if cur else 1) + skew
        expected: str | None
        if not isinstance(cur, AlertVersion):
            expected = "unknown_id"
        elif by not in ("D00", "D01", "D02", "D03"):
            expected = "not_allowed"
        elif not cur.active:
            expected = "already_final"
        elif version != cur.version:
            expected = "stale_version"
        elif cur.status == "acknowledged":
            expected = "invalid"
        else:
            expected = None
        self._command(Acknowledge(alert_id=aid, version=version, by=by), expected)

    @rule(data=st.data(), by=st.sampled_from(PEOPLE),
          text=st.sampled_from(("", "  ", "called the driver", "x" * 2001, "ok\x00")))  # fmt: skip
    def comment(self, data: st.DataObject, by: str, text: str) -> None:
        aid = data.draw(st.sampled_from([*self._alert_ids(), "stop/unknown"]))
        cur = self.last.get(aid)
        expected: str | None
        if not isinstance(cur, AlertVersion):
            expected = "unknown_id"
        elif by not in ("D00", "D01", "D02", "D03"):
            expected = "not_allowed"
        elif text != "called the driver":
            expected = "invalid"
        else:
            expected = None
        self._command(AddComment(alert_id=aid, text=text, by=by), expected)

    def _command(self, cmd: Acknowledge | AddComment, expected: str | None) -> None:
        before = self.desk.snapshot()
        if expected is not None:
            with pytest.raises(CommandRefused) as info:
                self.desk.command(cmd, self.now)
            assert info.value.code == expected, (cmd, info.value.code, expected, str(info.value))
            assert self.desk.snapshot() == before
            return
        recs = self.desk.command(cmd, self.now)
        self._record(recs, "command")
        (a,) = [r for r in recs if isinstance(r, AlertVersion)]
        if isinstance(cmd, Acknowledge):
            assert (a.status, a.acknowledged_by) == ("acknowledged", cmd.by)
        else:
            assert a.comments[-1].text == cmd.text.strip()

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def loads_count_open_threads(self) -> None:
        want = Counter(
            r.assignee
            for r in self.last.values()
            if isinstance(r, AlertVersion) and r.status == "open"
        )
        assert Counter(self.desk.loads()) == +want
        snap = self.desk.snapshot()
        assert {a.id for a in snap.active} == {
            r.id for r in self.last.values() if isinstance(r, AlertVersion) and r.active
        }
        assert all(self.last[a.id] == a for a in snap.active)

    @invariant()
    def exceptions_follow_the_stops_last_state(self) -> None:
        for site in SITES:
            sid = stop_id_of(DATE, site)
            ev = self.stop_state.get(sid)
            for kind, live in (
                ("missed", ev is not None and ev.state == "missed"),
                ("late", ev is not None and ev.state == "visited" and ev.outcome == "late"),
                ("cancelled", ev is not None and ev.state == "cancelled"),
            ):
                x = self.last.get(f"{sid}/{kind}")
                assert isinstance(x, ExceptionVersion | None)
                assert (x is not None and x.status != "retracted") == live, (kind, ev, x)

    @invariant()
    def a_thread_is_open_only_on_an_alarming_fact(self) -> None:
        for sid, ev in self.stop_state.items():
            a = self.last.get(f"stop/{sid}")
            if isinstance(a, AlertVersion):
                assert a.active == (ev.state in ("at_risk", "late", "missed")), (ev, a)


TestDeskMachine = DeskMachine.TestCase

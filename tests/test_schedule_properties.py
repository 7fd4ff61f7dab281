"""Hypothesis properties of the schedule board.

* Final states never depend on arrival order: the same detection facts in any order and
  chunking, with the clock ticking at random instants in between, end in the same states as
  all facts delivered at once.
* A stateful machine interleaves visits, corrections, retractions, late bursts, ticks and
  dispatcher commands and checks the invariants after every step: a stop is missed only if no
  live visit exists that day; visited only if one does; every retraction has a superseding
  fact; states move forward except by retraction.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from schedule.board import ScheduleBoard
from schedule.events import DetectionEvent, VisitCompleted, VisitStarted
from schedule.stop_events import (
    CancelStop,
    CommandRefused,
    ReassignStop,
    ScheduleEvent,
    StopChanged,
)
from schedule.stop_states import RANK
from tests.schedule_world import DAY, T0, M, at, board, plan, visit

SITES = [f"S{i}" for i in range(1, 7)]
VEHICLES = ("V1", "V2")
PLAN = plan(
    {
        "V1": [("S1", 8, 10), ("S2", 9, 11), ("S3", 10, 12)],
        "V2": [("S4", 8, 9), ("S5", 11, 13)],
    }
)
END = at(23)


@st.composite
def facts(draw: st.DrawFn) -> list[DetectionEvent]:
    out: list[DetectionEvent] = []
    n = draw(st.integers(0, 8))
    for k in range(n):
        veh = draw(st.sampled_from(VEHICLES))
        site = draw(st.sampled_from(SITES))
        arrive = draw(st.floats(6.0, 16.0))
        vid = f"v{k}"
        out.append(visit(vid, veh, site, arrive))
        if draw(st.booleans()):
            out.append(visit(vid, veh, site, arrive, completed=True))
        if draw(st.integers(0, 3)) == 0:
            out.append(visit(vid, veh, site, arrive, version=2, retracted=True))
    return out


def _data_us(ev: DetectionEvent) -> int:
    if isinstance(ev, VisitStarted):
        return ev.confirmed_us
    if isinstance(ev, VisitCompleted):
        return ev.departure_us
    return T0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts(), st.data())
def test_final_states_do_not_depend_on_order_or_chunking(
    evs: list[DetectionEvent], data: st.DataObject
) -> None:
    ref = board()
    ref.load_plan(PLAN, at(5))
    ref.on_detection(evs, END)
    ref.tick(END)

    b = board()
    b.load_plan(PLAN, at(5))
    order = data.draw(st.permutations(evs))
    now = at(5)
    i = 0
    while i < len(order):
        size = data.draw(st.integers(1, 3))
        chunk = order[i : i + size]
        i += size
        # the clock may run past decisions before the chunk comes (a backlog)
        lag = data.draw(st.integers(0, 8 * 60)) * M
        now = max(now, *(_data_us(e) for e in chunk)) + lag
        while (d := b.next_deadline_us()) is not None and d <= now:
            b.tick(d)
        b.on_detection(chunk, now)
    b.tick(max(now, END))
    assert b.states() == ref.states()


class BoardMachine(RuleBasedStateMachine):
    """Random interleavings against the board; invariants checked on every emitted record."""

    def __init__(self) -> None:
        super().__init__()
        self.b: ScheduleBoard = board()
        self.now = at(5)
        self.visits: dict[str, tuple[str, str, float, int, bool]] = {}
        self.n = 0

    @initialize()
    def load(self) -> None:
        self.check(self.b.load_plan(PLAN, self.now))

    def check(self, events: list[ScheduleEvent]) -> None:
        day0, day1 = T0, T0 + 24 * 60 * M
        live = self.b.live_visit_sites(day0, day1)
        for e in events:
            if not isinstance(e, StopChanged):
                continue
            if e.previous is not None and not e.retraction:
                assert RANK[e.state] >= RANK[e.previous], e
            if e.retraction:
                if e.state == "visited":
                    assert e.site_id in live, e  # the visit that supersedes "missed"
                else:
                    assert e.previous == "visited"
                    assert e.site_id not in live, e  # the visit was retracted
            if e.state == "visited":
                assert e.visit_id is not None
                assert e.arrival_us is not None
        self.b.next_deadline_us()

    @invariant()
    def missed_only_without_a_visit(self) -> None:
        live = self.b.live_visit_sites(T0, T0 + 24 * 60 * M)
        for stop_id, state in self.b.states().items():
            site = stop_id.split("/")[1]
            if state == "missed":
                assert site not in live
            if state == "visited":
                assert site in live

    @rule(veh=st.sampled_from(VEHICLES), site=st.sampled_from(SITES), back_min=st.integers(0, 30))
    def live_visit(self, veh: str, site: str, back_min: int) -> None:
        self.n += 1
        vid = f"v{self.n}"
        arrive_h = (self.now - T0) / 3_600_000_000 - back_min / 60
        self.visits[vid] = (veh, site, arrive_h, 1, False)
        self.check(self.b.on_detection([visit(vid, veh, site, arrive_h)], self.now + 2 * M))

    @rule(veh=st.sampled_from(VEHICLES), site=st.sampled_from(SITES), hours_ago=st.integers(1, 8))
    def late_burst(self, veh: str, site: str, hours_ago: int) -> None:
        """A store-and-forward backlog: a visit hours in the past, with its completion."""
        self.n += 1
        vid = f"v{self.n}"
        arrive_h = max(0.5, (self.now - T0) / 3_600_000_000 - hours_ago)
        self.visits[vid] = (veh, site, arrive_h, 1, False)
        evs: list[DetectionEvent] = [
            visit(vid, veh, site, arrive_h),
            visit(vid, veh, site, arrive_h, completed=True),
        ]
        self.check(self.b.on_detection(evs, self.now))

    @rule(pick=st.integers(0, 1000))
    def retract(self, pick: int) -> None:
        alive = sorted(k for k, v in self.visits.items() if not v[4])
        if not alive:
            return
        vid = alive[pick % len(alive)]
        veh, site, arrive_h, version, _ = self.visits[vid]
        self.visits[vid] = (veh, site, arrive_h, version + 1, True)
        ev = visit(vid, veh, site, arrive_h, version=version + 1, retracted=True)
        self.check(self.b.on_detection([ev], self.now))

    @rule(minutes=st.integers(1, 240))
    def clock(self, minutes: int) -> None:
        self.now = min(self.now + minutes * M, END)
        while (d := self.b.next_deadline_us()) is not None and d <= self.now:
            self.check(self.b.tick(d))
        self.check(self.b.tick(self.now))

    @rule(site=st.sampled_from(SITES[:5]))
    def cancel(self, site: str) -> None:
        before = self.b.states().get(f"{DAY}/{site}")
        try:
            ev = self.b.command(
                CancelStop(stop_id=f"{DAY}/{site}", reason="client closed", by="d"), self.now
            )
        except CommandRefused as exc:
            refused = exc.code
        else:
            self.check(ev)
            return
        assert refused == "already_final"
        assert before in ("visited", "missed", "cancelled")

    @rule(site=st.sampled_from(SITES[:5]), to=st.sampled_from(VEHICLES))
    def reassign(self, site: str, to: str) -> None:
        try:
            ev = self.b.command(
                ReassignStop(stop_id=f"{DAY}/{site}", to_vehicle=to, by="d"), self.now
            )
        except CommandRefused as exc:
            refused = exc.code
        else:
            self.check(ev)
            return
        assert refused in ("already_final", "unknown_id", "invalid")


TestBoardMachine = BoardMachine.TestCase
TestBoardMachine.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

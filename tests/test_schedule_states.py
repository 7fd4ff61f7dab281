"""The stop lifecycle table: complete where the board needs it, illegal pairs raise, the
documentation diagram is the generated one, and the vectorised ETA equals a scalar loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedule.eta import TravelModel, route_eta
from schedule.schedule_params import InvalidScheduleParams, ScheduleParams
from schedule.stop_states import (
    INPUTS,
    RANK,
    STATES,
    TERMINAL,
    TRANSITIONS,
    IllegalStopTransition,
    diagram,
    transition,
)

ROOT = Path(__file__).resolve().parents[1]


def test_docs_hold_the_generated_diagram() -> None:
    text = (ROOT / "docs" / "schedule.md").read_text(encoding="utf-8")
    assert diagram() in text, "docs/schedule.md: paste the output of schedule.stop_states.diagram()"


def test_every_state_answers_every_input_the_board_sends_it() -> None:
    for state in STATES:
        for inp in ("eta_late", "eta_ok", "visit", "cancel"):
            transition(state, inp)
    for state in ("pending", "at_risk"):
        transition(state, "window_end")
    transition("late", "grace_end")
    transition("visited", "visit_gone")


def test_illegal_pairs_raise() -> None:
    with pytest.raises(IllegalStopTransition, match="pending"):
        transition("pending", "grace_end")
    with pytest.raises(IllegalStopTransition):
        transition("missed", "visit_gone")


def test_forward_only_except_retraction() -> None:
    for (state, inp), (nxt, action) in TRANSITIONS.items():
        assert nxt in STATES
        assert inp in INPUTS
        if action != "retract":
            assert RANK[nxt] >= RANK[state], (state, inp)
        if state == "cancelled":
            assert nxt == "cancelled"
        if action == "refuse":
            assert state in TERMINAL


def test_params_are_checked() -> None:
    with pytest.raises(InvalidScheduleParams, match="grace_min"):
        ScheduleParams(grace_min=-1)
    with pytest.raises(InvalidScheduleParams, match="urban_speed_kmh"):
        ScheduleParams(urban_speed_kmh=0)


def _scalar_eta(start: int, travel: list[float], ws: list[int], svc: list[float]) -> list[int]:
    out = []
    t = float(start)
    for tr, w, s in zip(travel, ws, svc, strict=True):
        arrive = max(t + tr * 1e6, float(w))
        out.append(round(arrive))
        t = arrive + s * 1e6
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 3600.0),  # planned leg s
            st.integers(-7200, 7200),  # window start relative to start, s
            st.floats(0.0, 1800.0),  # service s
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(0.5, 3.0),
)
def test_vectorised_eta_equals_the_scalar_recurrence(
    legs: list[tuple[float, int, float]], ratio: float
) -> None:
    start = 1_800_000_000_000_000
    planned = np.array([x[0] for x in legs])
    ws = np.array([start + x[1] * 1_000_000 for x in legs], np.int64)
    svc = np.array([x[2] for x in legs])
    n = len(legs)
    got = route_eta(
        start_us=start,
        start_lon=37.6,
        start_lat=55.7,
        lon=np.full(n, 37.6),
        lat=np.full(n, 55.7),
        window_start_us=ws,
        service_s=svc,
        speed_mps=5.0,
        planned_leg_s=planned,
        ratio=ratio,
    )
    want = _scalar_eta(start, (planned * ratio).tolist(), ws.tolist(), svc.tolist())
    assert np.all(np.abs(got - np.array(want)) <= 2)


def test_travel_model_learns_a_median_by_hour_and_ignores_nonsense() -> None:
    p = ScheduleParams(min_learned_legs=3)
    m = TravelModel(p)
    assert m.speed_mps(9) == pytest.approx(25 / 3.6 / 1.4)
    assert m.ratio(9) == 1.0
    for dur in (600.0, 700.0, 6000.0):  # one leg with a lunch inside
        assert m.learn(5000.0, dur, 9, planned_s=600.0)
    assert m.ratio(9) == pytest.approx(700 / 600)
    assert m.speed_mps(9) == pytest.approx(5000 / 700)
    assert m.ratio(10) == 1.0
    assert not m.learn(5000.0, -5.0, 9)
    assert not m.learn(100.0, 60.0, 9)  # too short to say anything, no plan

"""evaluate_schedule on hand-made StopChanged streams: each figure can fail."""

from __future__ import annotations

from typing import Any

from schedule.evaluate_schedule import evaluate_schedule
from schedule.stop_events import StopChanged, StopState
from tests.schedule_world import DAY, at

D = DAY.isoformat()


def rec(site: str, state: StopState, t_h: float, **kw: Any) -> StopChanged:
    base: dict[str, Any] = dict(
        stop_id=f"{D}/{site}",
        site_id=site,
        client_id=None,
        service_date=D,
        vehicle_id="V1",
        state=state,
        previous=None,
        window_start_us=at(9),
        window_end_us=at(11),
        planned_arrival_us=at(9.5),
        eta_us=None,
        arrival_us=None,
        departure_us=None,
        visited_by=None,
        visit_id=None,
        outcome=None,
        minutes_late=None,
        reason="",
        cause="tick",
        at_us=at(t_h),
    )
    base.update(kw)
    return StopChanged(**base)


def truth(**kw: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"scenario": {"date": D}, "visits": [], "skipped": [], "late": []}
    t.update(kw)
    return t


def visit(site: str, arrive: str = "2026-11-23T10:00:00Z", **kw: Any) -> dict[str, Any]:
    return {
        "site_id": site,
        "vehicle_id": "V1",
        "unit_id": "U1",
        "arrival": arrive,
        "observed": True,
        **kw,
    }


def test_skipped_missed_exactly_once_and_visited_never_missed() -> None:
    changes = [
        rec("S1", "pending", 6),
        rec("S1", "late", 11, previous="pending"),
        rec("S1", "missed", 11.5, previous="late"),
        rec("S2", "pending", 6),
        rec("S2", "missed", 11.5, previous="pending"),
        rec("S2", "visited", 12, previous="missed", retraction=True),
        rec("S2", "missed", 13, previous="visited", retraction=True),  # flapped: twice missed
        rec("S3", "pending", 6),
        rec("S3", "missed", 11.5, previous="pending"),
        rec("S3", "visited", 12, previous="missed", retraction=True, outcome="on_time"),
    ]
    t = truth(skipped=[{"site_id": "S1"}, {"site_id": "S2"}], visits=[visit("S3")])
    f = evaluate_schedule(changes, t)
    assert (f.skipped, f.skipped_missed_once) == (2, 1)
    assert (f.visited, f.visited_final_missed, f.visited_transient_missed) == (1, 0, 1)


def test_late_classification_and_decision_delay() -> None:
    changes = [
        rec("S1", "late", 11 + 30 / 3600, previous="pending"),
        rec(
            "S1",
            "visited",
            11.3,
            previous="late",
            outcome="late",
            minutes_late=18.0,
            arrival_us=at(11.3),
        ),
        rec("S2", "late", 11 + 90 / 3600, previous="pending"),
        rec("S2", "visited", 11.5, previous="late", outcome="late", minutes_late=25.0),
    ]
    t = truth(
        visits=[visit("S1"), visit("S2")],
        late=[
            {"site_id": "S1", "vehicle_id": "V1", "late_by_s": 17 * 60},
            {"site_id": "S2", "vehicle_id": "V1", "late_by_s": 30 * 60},
        ],
    )
    f = evaluate_schedule(changes, t)
    assert (f.late, f.late_classified, f.late_decided_in_time) == (2, 1, 1)
    assert f.late_decision_max_s is not None
    assert round(f.late_decision_max_s) == 90


def test_at_risk_recall_and_false_at_risk() -> None:
    changes = [
        rec("S1", "at_risk", 10.0, previous="pending"),
        rec("S1", "visited", 11.4, previous="at_risk", outcome="late", minutes_late=24.0),
        rec("S2", "late", 11.0, previous="pending"),
        rec("S2", "visited", 11.6, previous="late", outcome="late", minutes_late=36.0),
        rec("S3", "at_risk", 10.0, previous="pending"),
        rec("S3", "visited", 10.5, previous="at_risk", outcome="on_time"),
        rec("S4", "visited", 10.0, outcome="on_time"),
    ]
    t = truth(
        visits=[visit(s) for s in ("S1", "S2", "S3", "S4")],
        late=[
            {"site_id": "S1", "vehicle_id": "V1", "late_by_s": 24 * 60},
            {"site_id": "S2", "vehicle_id": "V1", "late_by_s": 36 * 60},
        ],
        traffic_delays=[{"vehicle_id": "V1", "start": "2026-11-23T08:30:00Z", "delay_s": 3600}],
    )
    f = evaluate_schedule(changes, t)
    assert (f.delayed_targets, f.delayed_at_risk_in_time) == (2, 1)
    assert f.at_risk_recall == 0.5
    assert f.false_at_risk == 1
    assert f.false_at_risk_share == 0.25
    late_delay = truth(
        **{
            **t,
            "traffic_delays": [
                {"vehicle_id": "V1", "start": "2026-11-23T10:30:00Z", "delay_s": 3600}
            ],
        }
    )
    assert evaluate_schedule(changes, late_delay).delayed_targets == 0


def test_visits_hidden_by_a_silent_unit_are_excluded() -> None:
    changes = [rec("S1", "missed", 11.5, previous="late")]
    t = truth(
        visits=[visit("S1", "2026-11-23T10:00:00Z")],
        silent_units=[{"unit_id": "U1", "from": "2026-11-23T10:01:00Z"}],
    )
    f = evaluate_schedule(changes, t)
    assert (f.visited, f.unobserved_visits, f.visited_final_missed) == (0, 1, 0)

"""The schedule board by behaviour: stop states, late data, commands, vehicle conditions."""

from __future__ import annotations

import math

import pytest

from schedule.events import StopEnded, StopStarted
from schedule.stop_events import (
    CancelStop,
    CommandRefused,
    ReassignStop,
    ReorderRoute,
    RouteProgress,
    ScheduleEvent,
    StopChanged,
    UnplannedDue,
    UnplannedVisit,
    VehicleCondition,
    VehiclePosition,
)
from tests.schedule_world import DAY, M, at, board, plan, visit

D = DAY.isoformat()


def sid(site: str) -> str:
    return f"{D}/{site}"


def changes(events: list[ScheduleEvent], site: str | None = None) -> list[StopChanged]:
    return [e for e in events if isinstance(e, StopChanged) and (site is None or e.site_id == site)]


def run_clock(b, until_us: int) -> list[ScheduleEvent]:  # type: ignore[no-untyped-def]
    out: list[ScheduleEvent] = []
    while (d := b.next_deadline_us()) is not None and d <= until_us:
        out += b.tick(d)
    out += b.tick(until_us)
    return out


def test_import_makes_every_stop_pending_and_reports_due_but_unplanned_sites() -> None:
    b = board()
    ev = b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 10, 12)]}), at(6))
    first = changes(ev)
    assert [(c.site_id, c.state, c.previous, c.cause) for c in first] == [
        ("S1", "pending", None, "import"),
        ("S2", "pending", None, "import"),
    ]
    due = sorted(e.site_id for e in ev if isinstance(e, UnplannedDue))
    assert due == ["S3", "S4", "S5", "S6"]
    # a later plan that holds S3 resolves it
    ev2 = b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 10, 12), ("S3", 11, 13)]}), at(7))
    resolved = [e for e in ev2 if isinstance(e, UnplannedDue)]
    assert [(e.site_id, e.resolved) for e in resolved] == [("S3", True)]


def test_on_time_early_and_late_outcomes() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 9, 11), ("S3", 9, 11)]}), at(6))
    ev = b.on_detection([visit("a", "V1", "S1", 8.5)], at(8.6))
    ev += b.on_detection([visit("b", "V1", "S2", 10)], at(10.1))
    ev += run_clock(b, at(11.25))
    ev += b.on_detection([visit("c", "V1", "S3", 11.25)], at(11.3))
    got = {c.site_id: (c.outcome, c.minutes_late) for c in changes(ev) if c.state == "visited"}
    assert got == {"S1": ("early", None), "S2": ("on_time", None), "S3": ("late", 15.0)}
    s3 = changes(ev, "S3")
    assert [c.state for c in s3][-2:] == ["late", "visited"]


def test_late_is_decided_at_window_end_and_missed_after_grace() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    assert b.next_deadline_us() is not None
    ev = run_clock(b, at(11) - 1)
    assert all(c.state != "late" for c in changes(ev))
    ev = run_clock(b, at(11))
    late = [c for c in changes(ev) if c.state == "late"]
    assert late
    assert late[0].at_us == at(11)
    assert late[0].cause == "tick"
    ev = run_clock(b, at(11.5) - 1)
    assert not [c for c in changes(ev) if c.state == "missed"]
    ev = run_clock(b, at(11.5))
    assert [c.state for c in changes(ev)] == ["missed"]


def test_a_visit_by_any_vehicle_serves_the_site() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    ev = b.on_detection([visit("x", "V2", "S1", 9.5)], at(9.6))
    v = [c for c in changes(ev) if c.state == "visited"]
    assert v
    assert v[0].visited_by == "V2"
    assert v[0].vehicle_id == "V1"


def test_backlog_visit_retracts_missed_and_is_flagged_detected_late() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    run_clock(b, at(12))
    assert b.states()[sid("S1")] == "missed"
    ev = b.on_detection([visit("a", "V1", "S1", 10.9)], at(12.5))
    (c,) = changes(ev)
    assert (c.state, c.previous, c.retraction, c.detected_late) == ("visited", "missed", True, True)
    assert c.outcome == "on_time"
    assert c.cause == "late_data"


def test_retracted_visit_sends_the_stop_back_to_what_the_clock_justifies() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    b.on_detection([visit("a", "V1", "S1", 9.5)], at(9.6))
    ev = run_clock(b, at(12))
    assert b.states()[sid("S1")] == "visited"
    assert not changes(ev)
    ev = b.on_detection([visit("a", "V1", "S1", 9.5, version=2, retracted=True)], at(12))
    (c,) = changes(ev)
    assert (c.state, c.previous, c.retraction) == ("missed", "visited", True)


def test_corrections_highest_version_wins_whatever_the_order() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    # v2 (retraction) arrives before v1: v1 must not resurrect the visit
    b.on_detection([visit("a", "V1", "S1", 9.5, version=2, retracted=True)], at(9.7))
    b.on_detection([visit("a", "V1", "S1", 9.5)], at(9.8))
    assert b.states()[sid("S1")] in ("pending", "at_risk")


def test_earlier_arrival_from_late_data_updates_the_visited_stop() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    run_clock(b, at(11.2))
    b.on_detection([visit("b", "V2", "S1", 11.2)], at(11.3))
    ev = b.on_detection([visit("a", "V1", "S1", 10.5)], at(11.4))
    (c,) = changes(ev)
    assert (c.state, c.previous, c.outcome, c.visited_by) == ("visited", "visited", "on_time", "V1")


def test_unplanned_visit_recorded_and_retracted_with_its_visit() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    ev = b.on_detection([visit("u", "V1", "S5", 9.2)], at(9.3))
    (u,) = [e for e in ev if isinstance(e, UnplannedVisit)]
    assert (u.site_id, u.retracted) == ("S5", False)
    ev = b.on_detection([visit("u", "V1", "S5", 9.2, version=2, retracted=True)], at(9.4))
    (u2,) = [e for e in ev if isinstance(e, UnplannedVisit)]
    assert u2.retracted


def test_cancel_ends_a_stop_without_missed_and_refuses_what_cannot_apply() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 9, 11)]}), at(6))
    ev = b.command(CancelStop(stop_id=sid("S1"), reason="client closed", by="d1"), at(8))
    (c,) = changes(ev)
    assert (c.state, c.cancel_reason, c.cause) == ("cancelled", "client closed", "command")
    ev = run_clock(b, at(13))
    assert all(c.site_id != "S1" for c in changes(ev))
    with pytest.raises(CommandRefused) as e:
        b.command(CancelStop(stop_id=sid("S1"), reason="again", by="d1"), at(13))
    assert e.value.code == "already_final"
    with pytest.raises(CommandRefused) as e:
        b.command(CancelStop(stop_id=sid("S9"), reason="x", by="d1"), at(13))
    assert e.value.code == "unknown_id"
    with pytest.raises(CommandRefused) as e:
        b.command(CancelStop(stop_id=sid("S2"), reason=" ", by="d1"), at(13))
    assert e.value.code in ("invalid", "already_final")


def test_reassign_and_reorder_move_stops_and_recompute_etas() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 10, 12), ("S3", 11, 13)]}), at(6))
    ev = b.command(ReassignStop(stop_id=sid("S2"), to_vehicle="V2", by="d1"), at(8))
    (c,) = changes(ev)
    assert c.vehicle_id == "V2"
    assert c.state == "pending"
    routes = {e.route_id: e for e in ev if isinstance(e, RouteProgress)}
    assert routes[f"{D}/V1"].stop_ids == (sid("S1"), sid("S3"))
    assert routes[f"{D}/V2"].stop_ids == (sid("S2"),)
    ev = b.command(
        ReorderRoute(route_id=f"{D}/V1", stop_ids=(sid("S3"), sid("S1")), by="d1"), at(8)
    )
    (rp,) = [e for e in ev if isinstance(e, RouteProgress)]
    assert rp.stop_ids == (sid("S3"), sid("S1"))
    assert rp.eta_us[0] < rp.eta_us[1]
    with pytest.raises(CommandRefused) as e:
        b.command(ReorderRoute(route_id=f"{D}/V1", stop_ids=(sid("S3"),), by="d1"), at(8))
    assert e.value.code == "invalid"
    with pytest.raises(CommandRefused) as e:
        b.command(ReassignStop(stop_id=sid("S1"), to_vehicle="V9", by="d1"), at(8))
    assert e.value.code == "unknown_id"
    b.on_detection([visit("a", "V1", "S1", 9.5)], at(9.6))
    with pytest.raises(CommandRefused) as e:
        b.command(ReassignStop(stop_id=sid("S1"), to_vehicle="V2", by="d1"), at(9.7))
    assert e.value.code == "already_final"


def test_replacing_the_plan_keeps_served_stops_and_cancels_dropped_open_ones() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 10, 12)]}), at(6))
    b.on_detection([visit("a", "V1", "S1", 9.5)], at(9.6))
    ev = b.load_plan(plan({"V2": [("S1", 9, 11), ("S3", 10, 12)]}), at(9.7))
    st = b.states()
    assert st[sid("S1")] == "visited"
    assert st[sid("S3")] == "pending"
    (dropped,) = [c for c in changes(ev) if c.site_id == "S2"]
    assert dropped.state == "cancelled"
    assert dropped.cancel_reason == "removed from the plan"


def test_visits_seen_before_the_import_count() -> None:
    b = board()
    b.on_detection([visit("a", "V1", "S1", 9.5)], at(9.6))
    ev = b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(10))
    assert [c.state for c in changes(ev)] == ["visited"]


def test_at_risk_when_eta_passes_window_end_minus_margin_and_back() -> None:
    b = board(at_risk_margin_min=15)
    b.load_plan(plan({"V1": [("S1", 9, 9.75)]}), at(6))
    # the vehicle is 20 km away from S1 at 9:00: 20 km / 17.9 km/h ≈ 67 min > 45 − 15 min
    far = VehiclePosition(vehicle_id="V1", t_us=at(9), lon=37.61 - 0.32, lat=55.75, speed_kmh=30)
    ev = b.on_positions([far], at(9))
    ev += run_clock(b, at(9) + 31_000_000)
    risk = [c for c in changes(ev) if c.state == "at_risk"]
    assert risk
    assert risk[0].eta_us is not None
    assert risk[0].eta_us > at(9.5)
    near = VehiclePosition(vehicle_id="V1", t_us=at(9.1), lon=37.61, lat=55.7501, speed_kmh=10)
    ev = b.on_positions([near], at(9.1))
    ev += run_clock(b, at(9.1) + 31_000_000)
    assert [c.state for c in changes(ev)] == ["pending"]


def test_gps_silent_during_working_hours_and_back() -> None:
    b = board(gps_silent_min=15)
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    p = VehiclePosition(vehicle_id="V1", t_us=at(8.5), lon=37.55, lat=55.75, speed_kmh=0)
    b.on_positions([p], at(8.5))
    ev = run_clock(b, at(8.5) + 15 * M)
    silent = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "gps_silent"]
    assert len(silent) == 1
    assert silent[0].active
    assert silent[0].since_us == at(8.5)
    p2 = VehiclePosition(vehicle_id="V1", t_us=at(9), lon=37.56, lat=55.75, speed_kmh=20)
    ev = b.on_positions([p2], at(9))
    back = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "gps_silent"]
    assert len(back) == 1
    assert not back[0].active


def test_unscheduled_stop_longer_than_n_minutes() -> None:
    b = board(unscheduled_stop_min=20)
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    st = StopStarted(stop_id="k", vehicle_id="V1", site_id=None, start_us=at(9), lat=55.8, lon=37.7)
    assert not [e for e in b.on_detection([st], at(9.05)) if isinstance(e, VehicleCondition)]
    ev = run_clock(b, at(9) + 20 * M)
    on = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "unscheduled_stop"]
    assert len(on) == 1
    assert on[0].active
    end = StopEnded(
        stop_id="k",
        vehicle_id="V1",
        site_id=None,
        start_us=at(9),
        end_us=at(9.5),
        lat=55.8,
        lon=37.7,
        fix_count=10,
        closed_by="exit",
    )
    ev = b.on_detection([end], at(9.5))
    off = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "unscheduled_stop"]
    assert len(off) == 1
    assert not off[0].active


def test_a_stop_in_the_depot_yard_is_not_unscheduled() -> None:
    b = board(unscheduled_stop_min=20)
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    st = StopStarted(
        stop_id="k", vehicle_id="V1", site_id=None, start_us=at(9), lat=55.75, lon=37.5501
    )
    b.on_detection([st], at(9))
    ev = run_clock(b, at(10))
    assert not [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "unscheduled_stop"]


def test_not_left_the_depot_by_the_planned_departure() -> None:
    b = board(not_left_depot_min=15)
    b.load_plan(plan({"V1": [("S1", 9, 11)]}, first_hour=9), at(6))  # departure 8:00
    p = VehiclePosition(vehicle_id="V1", t_us=at(8.2), lon=37.5501, lat=55.75, speed_kmh=0)
    b.on_positions([p], at(8.2))
    ev = run_clock(b, at(8.25))
    on = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "not_left_depot"]
    assert len(on) == 1
    assert on[0].active
    assert on[0].since_us == at(8)
    p2 = VehiclePosition(vehicle_id="V1", t_us=at(8.3), lon=37.58, lat=55.75, speed_kmh=30)
    ev = b.on_positions([p2], at(8.3))
    off = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "not_left_depot"]
    assert len(off) == 1
    assert not off[0].active


def test_behind_schedule_by_n_minutes() -> None:
    b = board(behind_schedule_min=30, gps_silent_min=600)
    b.load_plan(plan({"V1": [("S1", 9, 14)]}), at(6))  # planned arrival 9:30
    p = VehiclePosition(vehicle_id="V1", t_us=at(10), lon=37.5, lat=55.75, speed_kmh=0)
    ev = b.on_positions([p], at(10))
    ev += run_clock(b, at(10) + 31_000_000)
    on = [e for e in ev if isinstance(e, VehicleCondition) and e.kind == "behind_schedule"]
    assert len(on) == 1
    assert on[0].active
    assert on[0].minutes >= 30


def test_positions_never_rewind_and_unknown_vehicles_are_counted() -> None:
    b = board()
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    new = VehiclePosition(vehicle_id="V1", t_us=at(9), lon=37.6, lat=55.75, speed_kmh=0)
    old = VehiclePosition(vehicle_id="V1", t_us=at(8), lon=37.5, lat=55.75, speed_kmh=0)
    b.on_positions([new], at(9))
    b.on_positions([old], at(9.01))
    assert b._vehicles["V1"].last_t_us == at(9)
    b.on_positions(
        [VehiclePosition(vehicle_id="ZZ", t_us=at(9), lon=0, lat=0, speed_kmh=math.nan)], at(9)
    )
    assert b.bad_input == 1


def test_snapshot_holds_every_stop_route_and_active_condition() -> None:
    b = board(gps_silent_min=15)
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 9, 11)]}), at(6))
    run_clock(b, at(9))
    snap = b.snapshot()
    assert {s.site_id for s in snap.stops} == {"S1", "S2"}
    assert [r.route_id for r in snap.routes] == [f"{D}/V1"]
    assert any(c.kind == "gps_silent" for c in snap.conditions)
    assert {d.site_id for d in snap.unplanned_due} == {"S3", "S4", "S5", "S6"}


def test_grace_until_end_of_working_day() -> None:
    b = board(grace_until_end_of_day=True, working_day_end_local_min=20 * 60)
    b.load_plan(plan({"V1": [("S1", 9, 11)]}), at(6))
    run_clock(b, at(19.9))
    assert b.states()[sid("S1")] == "late"
    run_clock(b, at(20))
    assert b.states()[sid("S1")] == "missed"


def test_a_restarted_board_continues_from_the_stored_stop_states() -> None:
    """Issue 9: after the plan's re-import (every stop pending), the stored states come back —
    missed and cancelled stay so; a visited stop whose visit retracted a "missed" goes back to
    missed, so the re-derived visit retracts it again with the same record; at risk and
    pending are left to the ETA; the restored records are handed back to be published."""
    b = board()
    day = plan({"V1": [("S1", 9, 11), ("S2", 9, 11), ("S3", 9, 11), ("S4", 12, 14)]})
    b.load_plan(day, at(6))
    run_clock(b, at(10))
    b.command(CancelStop(stop_id=sid("S2"), reason="client closed", by="D01"), at(10))
    run_clock(b, at(12))  # S1 and S3 missed
    (retracting,) = changes(b.on_detection([visit("a", "V1", "S3", 10.9)], at(12.5)))
    stored = {s: b._stops[s].last for s in b._stops}
    assert stored[sid("S1")].state == "missed"  # type: ignore[union-attr]

    again = board()
    again.load_plan(day, 0)  # as a restarted engine: data clock not started, all pending
    taken = again.restore_stop_states([r for r in stored.values() if r is not None])
    assert [(r.stop_id, r.state) for r in taken] == [
        (sid("S1"), "missed"), (sid("S2"), "cancelled"), (sid("S3"), "visited"),
    ]  # fmt: skip
    assert again.states() == {sid("S1"): "missed", sid("S2"): "cancelled",
                              sid("S3"): "missed", sid("S4"): "pending"}  # fmt: skip
    (c,) = changes(again.on_detection([visit("a", "V1", "S3", 10.9)], at(12.5)))
    assert c == retracting
    assert not changes(run_clock(again, at(12.6)), "S1")  # missed is not decided again


def test_a_restarted_board_keeps_a_restored_condition_and_its_since() -> None:
    b = board(behind_schedule_min=30, gps_silent_min=600)
    b.load_plan(plan({"V1": [("S1", 9, 14)]}), at(6))
    p = VehiclePosition(vehicle_id="V1", t_us=at(10), lon=37.5, lat=55.75, speed_kmh=0)
    ev = b.on_positions([p], at(10)) + run_clock(b, at(10) + 31_000_000)
    (on,) = [e for e in ev if isinstance(e, VehicleCondition) and e.active]

    again = board(behind_schedule_min=30, gps_silent_min=600)
    assert again.restore_conditions([on]) == 1
    again.load_plan(plan({"V1": [("S1", 9, 14)]}), at(6))  # at data time 0: cannot end it
    p2 = VehiclePosition(vehicle_id="V1", t_us=at(10.5), lon=37.5, lat=55.75, speed_kmh=0)
    ev = again.on_positions([p2], at(10.5)) + run_clock(again, at(10.5) + 31_000_000)
    assert not [e for e in ev if isinstance(e, VehicleCondition)]  # not raised again
    assert again.snapshot().conditions == (on,)

"""AlertDesk by behaviour: one thread per subject, lifecycle, escalation, commands, exceptions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alerts.desk import AlertDesk, AlertParams
from alerts.records import AlertRecord, AlertVersion, ExceptionVersion
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CancelStop,
    CommandRefused,
    RouteProgress,
    UnplannedDue,
    UnplannedVisit,
)
from tests.alerts_helpers import DATE, MIN, condition, roster, stop, utc, visited


def desk(**kw: Any) -> AlertDesk:
    return AlertDesk(roster=roster(), params=AlertParams(**kw))


def alerts(recs: list[AlertRecord]) -> list[AlertVersion]:
    return [r for r in recs if isinstance(r, AlertVersion)]


def excs(recs: list[AlertRecord]) -> list[ExceptionVersion]:
    return [r for r in recs if isinstance(r, ExceptionVersion)]


def test_at_risk_late_missed_escalate_one_thread() -> None:
    d = desk()
    evs = [stop(state="at_risk", at="09:00"), stop(state="late", at="09:31", previous="at_risk")]
    evs.append(stop(state="missed", at="10:01", previous="late"))
    out = [d.consume([e], e.at_us) for e in evs]
    versions = [alerts(o)[0] for o in out]
    assert {v.id for v in versions} == {f"stop/{DATE}/S0001"}
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.severity for v in versions] == ["warning", "major", "critical"]
    assert [v.change for v in versions] == ["raised", "worsened", "worsened"]
    assert all(v.status == "open" for v in versions)
    assert versions[0].assignee == "D01"  # responsible for V001, on shift at 12:00 local
    assert versions[0].by == "engine:tick"
    missed = excs(out[2])
    assert [(x.kind, x.status, x.version) for x in missed] == [("missed", "open", 1)]
    assert missed[0].id == f"{DATE}/S0001/missed"


def test_consume_is_idempotent() -> None:
    d = desk()
    evs = [
        stop(state="at_risk", at="09:00"),
        stop(state="late", at="09:31"),
        stop(state="missed", at="10:01"),
        condition(at="09:10"),
    ]
    first = d.consume(evs, utc("10:01"))
    assert first
    assert d.consume(evs, utc("10:02")) == []
    assert d.consume(evs[:2], utc("10:03")) == []  # older than the subject's latest: stale
    assert d.counts["duplicate_events"] + d.counts["stale_events"] == 6


def test_eta_or_wording_change_alone_is_not_a_version() -> None:
    d = desk()
    d.consume([stop(state="at_risk", at="09:00", eta_us=utc("09:40"))], utc("09:00"))
    again = stop(state="at_risk", at="09:01", eta_us=utc("09:45"), reason="ETA 09:45")
    assert d.consume([again], utc("09:01")) == []


def test_visit_resolves_and_records_a_late_exception() -> None:
    d = desk()
    d.consume([stop(state="late", at="09:31")], utc("09:31"))
    out = d.consume([visited(at="09:51", arrival="09:50", previous="late")], utc("09:51"))
    (a,) = alerts(out)
    assert (a.status, a.change, a.version) == ("resolved", "resolved", 2)
    (x,) = excs(out)
    assert (x.kind, x.status, x.minutes_late, x.arrival_us) == (
        "late",
        "confirmed",
        20.0,
        utc("09:50"),
    )
    assert d.next_deadline_us() is None  # a resolved thread has no timer
    assert d.loads() == {}


def test_late_data_retracts_missed_and_reveals_late() -> None:
    d = desk()
    d.consume([stop(state="missed", at="10:01")], utc("10:01"))
    late = visited(
        at="13:00", arrival="09:50", previous="missed", retraction=True, detected_late=True,
        cause="late_data",
    )  # fmt: skip
    out = d.consume([late], utc("13:00"))
    (a,) = alerts(out)
    assert (a.status, a.change, a.by) == ("retracted", "retracted", "engine:late_data")
    by_kind = {x.kind: x for x in excs(out)}
    assert by_kind["missed"].status == "retracted"
    assert by_kind["missed"].version == 2
    assert by_kind["late"].status == "confirmed"
    assert by_kind["late"].minutes_late == 20.0


def test_retracted_thread_reopens_only_with_a_new_alarming_fact() -> None:
    d = desk()
    d.consume([stop(state="missed", at="10:01")], utc("10:01"))
    d.consume([visited(at="13:00", retraction=True, previous="missed")], utc("13:00"))
    # a non-alarming record of the same visit: no alert, no exception change
    assert d.consume([visited(at="13:05")], utc("13:05")) == []
    # the visit turns out on time: the late exception goes, still no alert
    out = d.consume([visited(at="13:06", outcome="on_time")], utc("13:06"))
    assert [(r.kind, r.status) for r in excs(out)] == [("late", "retracted")]
    assert alerts(out) == []
    # the visit itself is retracted (it was a drive-by): missed again, same thread reopened
    out = d.consume([stop(state="missed", at="14:00", retraction=True)], utc("14:00"))
    (a,) = alerts(out)
    assert (a.id, a.status, a.change, a.version) == (f"stop/{DATE}/S0001", "open", "reopened", 3)


def test_escalation_hops_to_least_loaded_then_head() -> None:
    d = desk()
    # D02 already carries an open alert, so the pool hop goes to D03 (least loaded, not D01)
    d.consume([stop("S0002", "late", at="09:00", vehicle="V003")], utc("09:00"))
    d.consume([stop("S0001", "late", at="09:02")], utc("09:02"))
    assert d.loads() == {"D02": 1, "D01": 1}
    d.command(Acknowledge(alert_id=f"stop/{DATE}/S0002", version=1, by="D02"), utc("09:03"))
    assert d.tick(utc("09:11")) == []  # S0001 is due at 09:12
    (hop1,) = alerts(d.tick(utc("09:12")))
    assert (hop1.assignee, hop1.escalation_level, hop1.change) == ("D02", 1, "escalated")
    assert hop1.hops[-1].from_ == "D01"
    assert "not acknowledged by D01 within 10 min" in hop1.hops[-1].reason
    assert d.next_deadline_us() == utc("09:27")
    (hop2,) = alerts(d.tick(utc("09:30")))
    assert (hop2.assignee, hop2.escalation_level) == ("D00", 2)
    assert [h.to for h in hop2.hops] == ["D01", "D02", "D00"]
    assert d.next_deadline_us() is None
    assert d.tick(utc("11:00")) == []


def test_pool_hop_prefers_the_least_loaded() -> None:
    d = desk()
    d.consume([stop("S0002", "late", at="09:00", vehicle="V003")], utc("09:00"))  # D02: 1
    d.consume([stop("S0001", "late", at="09:00")], utc("09:00"))  # D01: 1
    out = alerts(d.tick(utc("09:10")))
    # equal deadlines fire in alert id order: S0001 leaves D01 for D03 (load 0 < D02's 1);
    # S0002 then leaves D02 for D01, whose load dropped to 0 with that hop, rather than D03
    assert [(a.id, a.assignee) for a in out] == [
        (f"stop/{DATE}/S0001", "D03"),
        (f"stop/{DATE}/S0002", "D01"),
    ]
    assert sum(d.loads().values()) == 2


def test_no_hop_once_acknowledged() -> None:
    d = desk()
    (a,) = alerts(d.consume([stop(state="late", at="09:00")], utc("09:00")))
    d.command(Acknowledge(alert_id=a.id, version=a.version, by="D01"), utc("09:05"))
    assert d.next_deadline_us() is None
    assert d.tick(utc("10:00")) == []


def test_worsening_after_acknowledgement_reopens_and_rearms() -> None:
    d = desk()
    (a,) = alerts(d.consume([stop(state="at_risk", at="09:00")], utc("09:00")))
    (ack,) = alerts(d.command(Acknowledge(alert_id=a.id, version=1, by="D01"), utc("09:01")))
    assert ack.status == "acknowledged"
    (w,) = alerts(d.consume([stop(state="late", at="09:31")], utc("09:31")))
    assert (w.status, w.change, w.acknowledged_by) == ("open", "worsened", None)
    assert d.next_deadline_us() == utc("09:41")
    assert d.loads() == {"D01": 1}


def test_first_route_when_the_responsible_dispatcher_is_off_shift() -> None:
    d = desk()
    # 13:00 UTC = 16:00 local: D01/D02 are off, D03 (12:00-21:00) is on
    (a,) = alerts(d.consume([stop(state="late", at="13:00")], utc("13:00")))
    assert a.assignee == "D03"
    assert "D01 (responsible for V001) is off shift" in a.hops[0].reason
    # 19:00 UTC = 22:00 local: nobody on shift: straight to the head, no timer
    (b,) = alerts(d.consume([stop("S0009", "late", at="19:00")], utc("19:00")))
    assert (b.assignee, b.escalation_level) == ("D00", 2)


def test_detected_late_alert_is_flagged_and_not_paged() -> None:
    d = desk()
    ev = stop(state="missed", at="13:00", detected_late=True, cause="late_data")
    (a,) = alerts(d.consume([ev], utc("13:00")))
    assert a.detected_late
    assert d.next_deadline_us() is None
    d2 = desk(escalate_detected_late=True)
    d2.consume([ev], utc("13:00"))
    assert d2.next_deadline_us() == utc("13:10")


# -- commands: one test per refusal code ---------------------------------------------------


def _open_alert(d: AlertDesk) -> AlertVersion:
    (a,) = alerts(d.consume([stop(state="late", at="09:00")], utc("09:00")))
    return a


def _refused(d: AlertDesk, cmd: Any) -> str:
    with pytest.raises(CommandRefused) as info:
        d.command(cmd, utc("09:05"))
    assert str(info.value)  # a message a user can act on
    return info.value.code


def test_refused_unknown_id() -> None:
    d = desk()
    assert _refused(d, Acknowledge(alert_id="stop/nope", version=1, by="D01")) == "unknown_id"
    assert _refused(d, AddComment(alert_id="stop/nope", text="x", by="D01")) == "unknown_id"
    assert d.counts["refused_unknown_id"] == 2


def test_refused_stale_version() -> None:
    d = desk()
    a = _open_alert(d)
    d.command(AddComment(alert_id=a.id, text="calling the driver", by="D02"), utc("09:01"))
    assert _refused(d, Acknowledge(alert_id=a.id, version=1, by="D01")) == "stale_version"


def test_refused_not_allowed() -> None:
    d = desk()
    a = _open_alert(d)
    assert _refused(d, Acknowledge(alert_id=a.id, version=1, by="VW")) == "not_allowed"
    assert _refused(d, AddComment(alert_id=a.id, text="hi", by="stranger")) == "not_allowed"


@pytest.mark.parametrize("text", ["", "   \n ", "x" * 2001, "bell\x07"])
def test_refused_invalid_comment(text: str) -> None:
    d = desk()
    a = _open_alert(d)
    assert _refused(d, AddComment(alert_id=a.id, text=text, by="D01")) == "invalid"


def test_refused_invalid_other() -> None:
    d = desk(max_comments_per_alert=1)
    a = _open_alert(d)
    d.command(AddComment(alert_id=a.id, text="one", by="D01"), utc("09:01"))
    assert _refused(d, AddComment(alert_id=a.id, text="two", by="D01")) == "invalid"
    d.command(Acknowledge(alert_id=a.id, version=2, by="D01"), utc("09:02"))
    assert _refused(d, Acknowledge(alert_id=a.id, version=3, by="D02")) == "invalid"
    cancel = CancelStop(stop_id=f"{DATE}/S0001", reason="closed", by="D01")
    assert _refused(d, cancel) == "invalid"


def test_refused_already_final() -> None:
    d = desk()
    d.consume([stop(state="late", at="09:00")], utc("09:00"))
    (r,) = alerts(d.consume([visited(at="09:51")], utc("09:51")))
    assert _refused(d, Acknowledge(alert_id=r.id, version=r.version, by="D01")) == "already_final"
    # comments stay possible on a finished thread (they feed the CRM's exception)
    assert alerts(d.command(AddComment(alert_id=r.id, text="traffic", by="D01"), utc("10:00")))


def test_refusal_changes_nothing() -> None:
    d = desk()
    a = _open_alert(d)
    before = d.snapshot()
    _refused(d, Acknowledge(alert_id=a.id, version=9, by="D01"))
    assert d.snapshot() == before


# -- comments and exceptions -----------------------------------------------------------------


def test_comment_lands_on_thread_and_exception_including_later_ones() -> None:
    d = desk()
    (a,) = alerts(d.consume([stop(state="at_risk", at="09:00")], utc("09:00")))
    out = d.command(AddComment(alert_id=a.id, text="  driver stuck  ", by="D01"), utc("09:05"))
    (c,) = alerts(out)
    assert [(x.by, x.text) for x in c.comments] == [("D01", "driver stuck")]
    assert excs(out) == []  # no exception yet
    (x,) = excs(d.consume([stop(state="missed", at="10:01")], utc("10:01")))
    assert [k.text for k in x.comments] == ["driver stuck"]
    out = d.command(AddComment(alert_id=a.id, text="client informed", by="D00"), utc("10:05"))
    (x2,) = excs(out)
    assert (x2.version, [k.text for k in x2.comments]) == (2, ["driver stuck", "client informed"])


def test_acknowledging_a_missed_alert_confirms_its_exception() -> None:
    d = desk()
    (a,) = alerts(d.consume([stop(state="missed", at="10:01")], utc("10:01")))
    out = d.command(Acknowledge(alert_id=a.id, version=1, by="D01"), utc("10:02"))
    (x,) = excs(out)
    assert (x.kind, x.status, x.version) == ("missed", "confirmed", 2)
    # still retractable by late data
    out = d.consume([visited(at="13:00", outcome="on_time", retraction=True)], utc("13:00"))
    assert [(x.kind, x.status) for x in excs(out)] == [("missed", "retracted")]


def test_cancelled_stop_resolves_and_records_its_reason() -> None:
    d = desk()
    d.consume([stop(state="at_risk", at="09:00")], utc("09:00"))
    ev = stop(state="cancelled", at="09:05", cancel_reason="client closed", cause="command")
    out = d.consume([ev], utc("09:05"))
    assert [(a.status, a.by) for a in alerts(out)] == [("resolved", "engine:command")]
    (x,) = excs(out)
    assert (x.kind, x.status) == ("cancelled", "confirmed")
    assert [k.text for k in x.comments] == ["cancelled: client closed"]


def test_vehicle_condition_thread() -> None:
    d = desk()
    (a,) = alerts(d.consume([condition(at="09:00")], utc("09:00")))
    assert (a.id, a.subject, a.severity) == (f"vehicle/{DATE}/V001/gps_silent", "vehicle", "major")
    (r,) = alerts(d.consume([condition(active=False, at="09:30")], utc("09:30")))
    assert (r.id, r.status) == (a.id, "resolved")
    (o,) = alerts(d.consume([condition(at="11:00")], utc("11:00")))
    assert (o.id, o.status, o.change, o.version) == (a.id, "open", "reopened", 3)


def test_unplanned_due_and_unplanned_visit() -> None:
    d = desk()
    due = UnplannedDue(
        site_id="S0100", client_id="C0100", service_date=DATE, window_start_us=utc("06:00"),
        window_end_us=utc("09:00"), at_us=utc("04:00"),
    )  # fmt: skip
    (a,) = alerts(d.consume([due], utc("04:00")))
    assert (a.id, a.kind, a.severity) == (f"stop/{DATE}/S0100", "unplanned_due", "critical")
    assert a.assignee == "D01"  # no vehicle: least loaded on shift (07:00 local)
    # a plan import put it on a route: the stop's own record clears it
    (r,) = alerts(d.consume([stop("S0100", "pending", at="05:00")], utc("05:00")))
    assert r.status == "resolved"
    visit = UnplannedVisit(
        visit_id="v1", site_id="S0200", client_id="C0200", service_date=DATE, vehicle_id="V002",
        arrival_us=utc("08:00"), departure_us=utc("08:10"), at_us=utc("08:11"),
    )  # fmt: skip
    out = d.consume([visit], utc("08:11"))
    assert alerts(out) == []
    (x,) = excs(out)
    assert (x.id, x.kind, x.status, x.window_start_us) == (
        f"{DATE}/S0200/unplanned", "unplanned", "confirmed", None,
    )  # fmt: skip
    from dataclasses import replace

    (y,) = excs(d.consume([replace(visit, retracted=True, at_us=utc("09:00"))], utc("09:00")))
    assert (y.status, y.version) == ("retracted", 2)


def test_route_progress_is_ignored() -> None:
    d = desk()
    rp = RouteProgress(
        route_id=f"{DATE}/V001", vehicle_id="V001", service_date=DATE, stop_ids=(), eta_us=(),
        behind_s=0.0, at_us=utc("09:00"),
    )  # fmt: skip
    assert d.consume([rp], utc("09:00")) == []
    assert d.counts["route_progress_ignored"] == 1


def test_snapshot_orders_active_by_severity_and_keeps_finished() -> None:
    d = desk()
    d.consume([stop("S0001", "at_risk", at="09:00")], utc("09:00"))
    d.consume([stop("S0002", "missed", at="09:01")], utc("09:01"))
    d.consume([stop("S0003", "late", at="09:02")], utc("09:02"))
    d.consume([visited("S0003", at="09:51")], utc("09:51"))
    snap = d.snapshot()
    assert [a.facts[1][1] for a in snap.active] == ["S0002", "S0001"]
    assert [a.status for a in snap.recent_finished] == ["resolved"]
    assert dict(snap.loads)["D01"] == 2


def test_json_is_safe_and_exceptions_carry_exactly_the_crm_fields() -> None:
    d = desk()
    recs = d.consume([stop(state="missed", at="10:01")], utc("10:01"))
    recs += d.command(AddComment(alert_id=f"stop/{DATE}/S0001", text="ok", by="D01"), utc("10:02"))
    recs += d.consume([visited(at="13:00", retraction=True)], utc("13:00"))
    for r in recs:
        json.dumps(r.to_json_dict(), allow_nan=False)
    x = excs(recs)[-1].to_json_dict()
    assert set(x) == {
        "id", "version", "kind", "status", "site_id", "client_id", "service_date", "vehicle_id",
        "window_start", "window_end", "arrival", "minutes_late", "comments", "at",
    }  # fmt: skip
    late = next(r for r in excs(recs) if r.kind == "late").to_json_dict()
    assert late["arrival"] == "2026-11-23T09:50:00Z"
    assert late["window_end"] == "2026-11-23T09:30:00Z"
    a = alerts(recs)[0].to_json_dict()
    assert a["facts"]["window_end"] == "2026-11-23T09:30:00Z"
    assert a["at"] == "2026-11-23T10:01:00Z"


def test_versions_never_go_back_in_time() -> None:
    d = desk()
    (a,) = alerts(d.consume([stop(state="late", at="09:00")], utc("09:00")))
    # a caller passing an older now: the desk keeps its clock
    (c,) = alerts(d.command(AddComment(alert_id=a.id, text="x", by="D01"), utc("08:00")))
    assert c.at_us == utc("09:00")
    assert MIN == 60_000_000


def test_an_unknown_condition_kind_is_counted_not_a_crash() -> None:
    from dataclasses import replace

    d = desk()
    odd = replace(condition(at="09:00"), kind="tyre_pressure")  # type: ignore[arg-type]
    (a,) = alerts(d.consume([odd], utc("09:00")))
    assert (a.kind, a.severity) == ("tyre_pressure", "warning")
    assert d.counts["unknown_condition_kinds"] == 1


def test_unknown_event_types_are_counted() -> None:
    d = desk()
    assert d.consume(["not an event"], utc("09:00")) == []  # type: ignore[list-item]
    assert d.counts["unknown_events"] == 1


def test_non_finite_numbers_become_null_in_json() -> None:
    d = desk()
    ev = visited(at="10:00", minutes_late=float("nan"))
    (x,) = excs(d.consume([ev], utc("10:00")))
    assert x.to_json_dict()["minutes_late"] is None
    c = condition(at="10:00")
    from dataclasses import replace

    (a,) = alerts(d.consume([replace(c, minutes=float("inf"))], utc("10:00")))
    json.dumps(a.to_json_dict(), allow_nan=False)


def test_forgetting_past_days_bounds_memory_and_keeps_loads_exact() -> None:
    from dataclasses import replace

    d = desk()
    d.consume([stop(state="late", at="09:00"), condition(at="09:00")], utc("09:00"))
    d.consume([stop(state="missed", at="10:00")], utc("10:00"))
    tomorrow = replace(
        stop("S0005", "late", at="09:00"),
        stop_id="2026-11-24/S0005", service_date="2026-11-24", at_us=utc("09:00") + 86_400 * 10**6,
    )  # fmt: skip
    d.consume([tomorrow], tomorrow.at_us)
    assert d.statistics()["threads"] == 3
    assert d.forget_days_before("2026-11-24") == 2
    stats = d.statistics()
    assert (stats["threads"], stats["exceptions"], stats["threads_open"]) == (1, 0, 1)
    assert [a.id for a in d.snapshot().active] == ["stop/2026-11-24/S0005"]
    assert d.next_deadline_us() == tomorrow.at_us + 10 * MIN
    # the forgotten day's records are gone for good: a comment on one is unknown
    with pytest.raises(CommandRefused) as info:
        d.command(AddComment(alert_id=f"stop/{DATE}/S0001", text="x", by="D01"), tomorrow.at_us)
    assert info.value.code == "unknown_id"


def test_a_late_born_thread_is_paged_once_live_data_confirms_it() -> None:
    d = desk()
    d.consume([stop(state="late", at="09:40", detected_late=True)], utc("09:40"))
    assert d.next_deadline_us() is None
    d.consume([stop(state="missed", at="10:01")], utc("10:01"))
    assert d.next_deadline_us() == utc("10:11")


def _live(d: AlertDesk) -> set[tuple[str, str, int | None, float | None]]:
    return {
        (x.id, x.kind, x.arrival_us, x.minutes_late)
        for x in d.exceptions()
        if x.status != "retracted"
    }


def test_out_of_coverage_across_window_end_ends_like_in_order_delivery() -> None:
    """Issue 8: a unit out of coverage across a window end; the backlog shows the visit.
    The missed alert is retracted, and the exceptions that count are those of the same day
    delivered in order."""
    in_order = desk()
    in_order.consume([stop(state="late", at="09:31")], utc("09:31"))
    in_order.consume([visited(at="09:51", arrival="09:50", previous="late")], utc("09:51"))

    gap = desk()
    gap.consume([stop(state="late", at="09:31")], utc("09:31"))
    (missed,) = alerts(gap.consume([stop(state="missed", at="10:01")], utc("10:01")))
    assert missed.severity == "critical"
    backlog = visited(
        at="11:30", arrival="09:50", previous="missed", retraction=True, detected_late=True,
        cause="late_data",
    )  # fmt: skip
    (retracted,) = alerts(gap.consume([backlog], utc("11:30")))
    assert (retracted.id, retracted.status) == (missed.id, "retracted")
    assert _live(gap) == _live(in_order) == {(f"{DATE}/S0001/late", "late", utc("09:50"), 20.0)}
    retracted_x = {x.id for x in gap.exceptions() if x.status == "retracted"}
    assert retracted_x == {f"{DATE}/S0001/missed"}

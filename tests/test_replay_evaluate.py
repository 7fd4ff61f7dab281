"""schedule.evaluate: the ruler for visits against truth (matching, precision, recall, errors)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from core.fixes import datetime_to_us
from schedule.evaluate import TruthFormatError, VisitInterval, evaluate_visits


def us(hhmmss: str) -> int:
    return datetime_to_us(dt.datetime.fromisoformat(f"2026-11-23T{hhmmss}+00:00"))


def iso(hhmmss: str) -> str:
    return f"2026-11-23T{hhmmss}Z"


def truth_visit(v: str, s: str, a: str, d: str, observed: bool = True) -> dict[str, Any]:
    return {
        "vehicle_id": v,
        "site_id": s,
        "unit_id": "U",
        "seq": 1,
        "arrival": iso(a),
        "departure": iso(d),
        "observed": observed,
    }


def det(v: str, s: str, a: str, d: str) -> VisitInterval:
    return VisitInterval(vehicle_id=v, site_id=s, arrival_us=us(a), departure_us=us(d))


TRUTH: dict[str, Any] = {
    "visits": [
        truth_visit("V1", "S1", "08:00:00", "08:10:00"),
        truth_visit("V1", "S2", "09:00:00", "09:10:00"),
        truth_visit("V2", "S1", "08:30:00", "08:40:00"),
        truth_visit("V2", "S3", "10:00:00", "10:10:00", observed=False),
    ],
    "drive_bys": [{"vehicle_id": "V2", "site_id": "S9", "t": iso("11:00:30")}],
}


def test_perfect_detection() -> None:
    detected = [
        det("V1", "S1", "08:00:05", "08:10:02"),
        det("V1", "S2", "08:59:58", "09:10:00"),
        det("V2", "S1", "08:30:00", "08:41:30"),
    ]
    ev = evaluate_visits(detected, TRUTH)
    assert (ev.precision, ev.recall, ev.true_visits, ev.unobserved) == (1.0, 1.0, 3, 1)
    assert ev.arrival_err_s["max"] == 5.0
    assert ev.departure_err_s["max"] == 90.0
    assert ev.within_60s_share == pytest.approx(2 / 3)


def test_wrong_vehicle_wrong_site_and_no_overlap_are_false_positives() -> None:
    detected = [
        det("V2", "S2", "09:00:00", "09:10:00"),  # wrong vehicle
        det("V1", "S3", "08:00:00", "08:10:00"),  # wrong site
        det("V1", "S1", "12:00:00", "12:10:00"),  # same pair, another time
        det("V1", "S1", "08:00:00", "08:10:00"),
    ]
    ev = evaluate_visits(detected, TRUTH)
    assert ev.matched == 1
    assert ev.false_positives == 3
    assert ev.precision == pytest.approx(0.25)
    assert ev.recall == pytest.approx(1 / 3)
    assert ev.missed == 2


def test_one_truth_visit_matches_one_detection_only() -> None:
    split = [det("V1", "S1", "08:00:00", "08:04:00"), det("V1", "S1", "08:05:00", "08:10:00")]
    ev = evaluate_visits(split, TRUTH)
    assert ev.matched == 1
    assert ev.false_positives == 1


def test_unobserved_visits_are_neither_missed_nor_false_positives() -> None:
    ev = evaluate_visits([det("V2", "S3", "10:00:00", "10:10:00")], TRUTH)
    assert ev.false_positives == 0
    assert ev.detected == 0
    assert ev.missed == 3


def test_detections_from_drive_bys_are_counted() -> None:
    ev = evaluate_visits([det("V2", "S9", "11:00:00", "11:02:10")], TRUTH)
    assert ev.from_drive_bys == 1
    assert ev.false_positives == 1


def test_malformed_truth_is_named() -> None:
    with pytest.raises(TruthFormatError, match=r"visits\[0\]\.arrival"):
        evaluate_visits(
            [], {"visits": [dict(truth_visit("V", "S", "08:00:00", "08:01:00"), arrival="noon")]}
        )
    with pytest.raises(TruthFormatError, match="no 'visits'"):
        evaluate_visits([], {})

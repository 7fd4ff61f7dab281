"""Detected visits against a scenario's ground truth: precision, recall, timing errors.

Why here and not in the simulator: the rules of "what counts as the same visit" belong to
detection (the simulator only writes what happened), and the replay, the tests and the issue
report must all measure with one ruler.  Truth is the parsed ``truth.json`` (a plain mapping,
see docs/formats.md), so this module does not import the simulators.

Matching: a detected visit and a true visit match when vehicle and site are equal and their
[arrival, departure] intervals overlap (each true visit and each detection used at most once,
greedily by largest overlap).  True visits with ``observed: false`` (silent unit, all fixes
lost) cannot be detected and are left out of recall; a detection matching one is not a false
positive either.  A detection is *from a drive-by* when it matches no true visit and the same
vehicle passed the same site (``drive_bys``) within its interval ± ``driveby_slack_s``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.fixes import datetime_to_us


class TruthFormatError(ValueError):
    """truth.json lacks a key or holds a malformed time (the scenario writer's to fix)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitInterval:
    """A visit reduced to what evaluation compares."""

    vehicle_id: str
    site_id: str
    arrival_us: int
    departure_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitEvaluation:
    """The figures the issue asks for (times in seconds)."""

    true_visits: int  # observed true visits
    unobserved: int
    detected: int
    matched: int
    false_positives: int
    missed: int
    precision: float
    recall: float
    from_drive_bys: int
    arrival_err_s: dict[str, float]  # p50, p90, p95, p99, max of |error|
    departure_err_s: dict[str, float]
    within_60s_share: float  # matched visits with both arrival and departure within 60 s
    false_positive_examples: list[dict[str, str]]
    missed_examples: list[dict[str, str]]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "true_visits": self.true_visits,
            "unobserved": self.unobserved,
            "detected": self.detected,
            "matched": self.matched,
            "false_positives": self.false_positives,
            "missed": self.missed,
            "precision": round(self.precision, 5),
            "recall": round(self.recall, 5),
            "from_drive_bys": self.from_drive_bys,
            "arrival_err_s": self.arrival_err_s,
            "departure_err_s": self.departure_err_s,
            "within_60s_share": round(self.within_60s_share, 5),
            "false_positive_examples": self.false_positive_examples,
            "missed_examples": self.missed_examples,
        }


def _us(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise TruthFormatError(f"{where}: expected an ISO-8601 time string, got {value!r}")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TruthFormatError(f"{where}: {value!r} is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise TruthFormatError(f"{where}: {value!r} has no time zone")
    return datetime_to_us(t)


def truth_visits(truth: Mapping[str, Any]) -> tuple[list[VisitInterval], list[VisitInterval]]:
    """(observed, unobserved) true visits of a parsed truth.json."""
    if "visits" not in truth:
        raise TruthFormatError("truth has no 'visits'")
    seen: list[VisitInterval] = []
    unseen: list[VisitInterval] = []
    for i, v in enumerate(truth["visits"]):
        where = f"truth visits[{i}]"
        try:
            iv = VisitInterval(
                vehicle_id=str(v["vehicle_id"]),
                site_id=str(v["site_id"]),
                arrival_us=_us(v["arrival"], where + ".arrival"),
                departure_us=_us(v["departure"], where + ".departure"),
            )
        except KeyError as exc:
            raise TruthFormatError(f"{where}: missing {exc}") from None
        (seen if v.get("observed", True) else unseen).append(iv)
    return seen, unseen


def _percentiles(err: list[float]) -> dict[str, float]:
    if not err:
        return {}
    a = np.abs(np.asarray(err))
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
    }


def _match(
    detected: Sequence[VisitInterval], truth: Sequence[VisitInterval]
) -> list[tuple[int, int]]:
    by_key: dict[tuple[str, str], list[int]] = {}
    for j, tv in enumerate(truth):
        by_key.setdefault((tv.vehicle_id, tv.site_id), []).append(j)
    cands: list[tuple[int, int, int]] = []
    for i, d in enumerate(detected):
        for j in by_key.get((d.vehicle_id, d.site_id), []):
            tv = truth[j]
            ov = min(d.departure_us, tv.departure_us) - max(d.arrival_us, tv.arrival_us)
            if ov >= 0:
                cands.append((-ov, i, j))
    cands.sort()
    used_d: set[int] = set()
    used_t: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in cands:
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return pairs


def evaluate_visits(
    detected: Sequence[VisitInterval],
    truth: Mapping[str, Any],
    *,
    driveby_slack_s: float = 60.0,
    examples: int = 10,
) -> VisitEvaluation:
    seen, unseen = truth_visits(truth)
    pairs = _match(detected, seen)
    matched_d = {i for i, _ in pairs}
    matched_t = {j for _, j in pairs}
    rest = [i for i in range(len(detected)) if i not in matched_d]
    excused = {i for i, _ in _match([detected[i] for i in rest], unseen)}
    fp_idx = [i for k, i in enumerate(rest) if k not in excused]
    drive_bys: dict[tuple[str, str], list[int]] = {}
    for k, b in enumerate(truth.get("drive_bys", [])):
        key = (str(b["vehicle_id"]), str(b["site_id"]))
        drive_bys.setdefault(key, []).append(_us(b["t"], f"truth drive_bys[{k}].t"))
    slack = round(driveby_slack_s * 1e6)
    from_db = 0
    for i in fp_idx:
        d = detected[i]
        ts = drive_bys.get((d.vehicle_id, d.site_id), [])
        if any(d.arrival_us - slack <= t <= d.departure_us + slack for t in ts):
            from_db += 1
    arr = [(detected[i].arrival_us - seen[j].arrival_us) / 1e6 for i, j in pairs]
    dep = [(detected[i].departure_us - seen[j].departure_us) / 1e6 for i, j in pairs]
    within = sum(1 for a, b in zip(arr, dep, strict=True) if abs(a) <= 60 and abs(b) <= 60)
    n_det = len(detected) - len(excused)
    missed = [j for j in range(len(seen)) if j not in matched_t]

    def show(v: VisitInterval) -> dict[str, str]:
        from core.fixes import iso_utc

        return {
            "vehicle_id": v.vehicle_id,
            "site_id": v.site_id,
            "arrival": iso_utc(v.arrival_us),
            "departure": iso_utc(v.departure_us),
        }

    return VisitEvaluation(
        true_visits=len(seen),
        unobserved=len(unseen),
        detected=n_det,
        matched=len(pairs),
        false_positives=len(fp_idx),
        missed=len(missed),
        precision=len(pairs) / n_det if n_det else 1.0,
        recall=len(pairs) / len(seen) if seen else 1.0,
        from_drive_bys=from_db,
        arrival_err_s=_percentiles(arr),
        departure_err_s=_percentiles(dep),
        within_60s_share=within / len(pairs) if pairs else 1.0,
        false_positive_examples=[show(detected[i]) for i in fp_idx[:examples]],
        missed_examples=[show(seen[j]) for j in missed[:examples]],
    )

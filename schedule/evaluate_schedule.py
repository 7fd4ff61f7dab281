"""Score a schedule run against the simulator's truth (pure: StopChanged stream + truth → figures).

The figures are issue 8's (docs/schedule.md):

* every skipped stop ends ``missed``, decided exactly once (no flapping missed → … → missed);
* every observed visited stop ends not ``missed`` (a transient ``missed`` later retracted by
  backlog data is counted separately: that is late data working, not an error);
* late stops end ``visited`` with outcome ``late`` and minutes within ``late_tolerance_min``
  of the truth, and were declared ``late`` within ``late_within_s`` after window end;
* "at risk" before window end for the late stops behind a delay of ``delay_min`` + minutes
  that began at least ``foresee_min`` before their window end (recall), and "false at risk":
  stops flagged at risk that then kept their window, as a share of all stops.

Visits the data cannot show (``observed: false`` in truth, or a unit that went silent before
the visit's first ``min_dwell_s``) are excluded and counted.  Truth times are ISO-8601 UTC
strings as ``truth.json`` writes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from schedule.stop_events import StopChanged, stop_id_of


def _us(text: str) -> int:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(t.timestamp() * 1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFigures:
    stops: int
    skipped: int
    skipped_missed_once: int  # skipped stops ending missed after exactly one missed decision
    visited: int  # observed visits of planned stops
    visited_final_missed: int  # must be 0
    visited_transient_missed: int  # missed, then retracted by late data (ends visited)
    unobserved_visits: int  # excluded: no data shows them
    late: int
    late_classified: int  # outcome late, minutes within tolerance
    late_decided_in_time: int  # state late within late_within_s after window end
    late_decision_max_s: float | None
    delayed_targets: int  # late stops behind a foreseeable delay
    delayed_at_risk_in_time: int
    false_at_risk: int  # flagged at risk, then kept the window
    cancelled: int
    cancelled_ok: int  # truth cancellations ending cancelled (never missed)

    @property
    def at_risk_recall(self) -> float | None:
        return self.delayed_at_risk_in_time / self.delayed_targets if self.delayed_targets else None

    @property
    def false_at_risk_share(self) -> float:
        return self.false_at_risk / self.stops if self.stops else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at_risk_recall"] = self.at_risk_recall
        d["false_at_risk_share"] = round(self.false_at_risk_share, 4)
        return d


def evaluate_schedule(
    changes: Iterable[StopChanged],
    truth: Mapping[str, Any],
    *,
    late_tolerance_min: float = 2.0,
    late_within_s: float = 60.0,
    delay_min: float = 30.0,
    foresee_min: float = 60.0,
    min_dwell_s: float = 120.0,
) -> ScheduleFigures:
    date = str(truth["scenario"]["date"])
    history: dict[str, list[StopChanged]] = {}
    for c in changes:
        history.setdefault(c.stop_id, []).append(c)
    final = {sid: recs[-1] for sid, recs in history.items()}

    def missed_decisions(sid: str) -> int:
        return sum(
            1 for r in history.get(sid, ()) if r.state == "missed" and r.previous != "missed"
        )

    skipped = {stop_id_of(date, s["site_id"]) for s in truth.get("skipped", [])}
    cancelled = {stop_id_of(date, s["site_id"]) for s in truth.get("cancelled", [])}
    silent_from = {u["unit_id"]: _us(u["from"]) for u in truth.get("silent_units", [])}

    def observable(v: Mapping[str, Any]) -> bool:
        # truth's "observed" means some fix of the visit was sent; detection needs the
        # visit's first min_dwell_s of fixes, so a unit going silent before that hides it
        if not v.get("observed", True):
            return False
        cut = silent_from.get(v.get("unit_id", ""))
        return cut is None or cut >= _us(v["arrival"]) + min_dwell_s * 1e6

    observed = {stop_id_of(date, v["site_id"]) for v in truth["visits"] if observable(v)}
    unobserved = {stop_id_of(date, v["site_id"]) for v in truth["visits"] if not observable(v)}
    skipped_once = sum(
        1 for s in skipped if s in final and final[s].state == "missed" and missed_decisions(s) == 1
    )
    visited_final_missed = sum(1 for s in observed if s in final and final[s].state == "missed")
    transient = sum(
        1
        for s in observed
        if s in final and final[s].state == "visited" and missed_decisions(s) > 0
    )
    late_truth = {
        stop_id_of(date, x["site_id"]): x
        for x in truth.get("late", [])
        if stop_id_of(date, x["site_id"]) in observed
    }
    classified = 0
    decided = 0
    worst: float | None = None
    for sid, x in late_truth.items():
        f = final.get(sid)
        if (
            f is not None
            and f.outcome == "late"
            and f.minutes_late is not None
            and abs(f.minutes_late - x["late_by_s"] / 60.0) <= late_tolerance_min
        ):
            classified += 1
        first_late = next((r for r in history.get(sid, ()) if r.state == "late"), None)
        if first_late is not None:
            lag = (first_late.at_us - first_late.window_end_us) / 1e6
            worst = lag if worst is None else max(worst, lag)
            if lag <= late_within_s:
                decided += 1
    delays = [
        (d["vehicle_id"], _us(d["start"]))
        for d in truth.get("traffic_delays", [])
        if d.get("delay_s", 0) >= delay_min * 60
    ]
    targets = in_time = 0
    for sid in late_truth:
        recs = history.get(sid)
        if not recs:
            continue
        we = recs[0].window_end_us
        veh = late_truth[sid]["vehicle_id"]
        if not any(v == veh and start <= we - foresee_min * 60e6 for v, start in delays):
            continue
        targets += 1
        if any(r.state == "at_risk" and r.at_us < we for r in recs):
            in_time += 1
    false_risk = sum(
        1
        for sid, recs in history.items()
        if any(r.state == "at_risk" for r in recs)
        and final[sid].state == "visited"
        and final[sid].outcome in ("early", "on_time")
    )
    return ScheduleFigures(
        stops=len(final),
        skipped=len(skipped),
        skipped_missed_once=skipped_once,
        visited=len(observed),
        visited_final_missed=visited_final_missed,
        visited_transient_missed=transient,
        unobserved_visits=len(unobserved),
        late=len(late_truth),
        late_classified=classified,
        late_decided_in_time=decided,
        late_decision_max_s=worst,
        delayed_targets=targets,
        delayed_at_risk_in_time=in_time,
        false_at_risk=false_risk,
        cancelled=len(cancelled),
        cancelled_ok=sum(1 for s in cancelled if s in final and final[s].state == "cancelled"),
    )

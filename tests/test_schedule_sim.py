"""The simulator's issue-8 options (cancellations, a unit out of coverage across a window end,
breakdowns) and the schedule board end to end on such a day (decode → match → detect → board)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from schedule.evaluate_schedule import evaluate_schedule
from schedule.stop_events import StopChanged
from simulators.formats import load_truth, parse_iso_us
from simulators.scenario import ScenarioParams, write_scenario
from tests.schedule_harness import DayRun, run_day, run_day_in_order

Day = tuple[Path, dict[str, Any], DayRun]

PARAMS = ScenarioParams(
    seed=11,
    sites=80,
    vehicles=4,
    skip_rate=0.1,
    late_rate=0.5,
    cancel_rate=0.1,
    coverage_gap_units=1,
    breakdown_rate=1.0,
    silent_units=0,
    clock_off_units=0,
)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    out = tmp_path_factory.mktemp("sched-sim")
    write_scenario(PARAMS, out)
    return out, load_truth(out / "truth.json"), run_day(out)


def test_new_options_are_absent_from_a_default_scenario_description() -> None:
    d = ScenarioParams().to_json_dict()
    assert "cancel_rate" not in d
    assert "coverage_gap_units" not in d
    assert dataclasses.replace(ScenarioParams(), cancel_rate=0.1).to_json_dict()["cancel_rate"]


def test_cancelled_stops_are_not_driven_to(day: Day) -> None:
    _, truth, _ = day
    cancelled = truth["cancelled"]
    assert cancelled
    visited = {v["site_id"] for v in truth["visits"]}
    skipped = {s["site_id"] for s in truth["skipped"]}
    cmds = [json.loads(x) for x in (day[0] / "commands.jsonl").read_text().splitlines()]
    assert sorted(c["stop_id"].split("/")[1] for c in cmds) == sorted(
        c["site_id"] for c in cancelled
    )
    assert all(c["command"] == "cancel" for c in cmds)
    for c in cancelled:
        assert c["site_id"] not in visited
        assert c["site_id"] not in skipped
        assert c["reason"]


def test_coverage_gap_holds_a_visit_until_after_window_end_plus_grace(
    day: Day,
) -> None:
    _, truth, _ = day
    (gap,) = truth["coverage_gaps"]
    we = parse_iso_us(gap["window_end"])
    assert parse_iso_us(gap["released_at"]) > we + 30 * 60_000_000
    (visit,) = [v for v in truth["visits"] if v["site_id"] == gap["site_id"]]
    arrival = parse_iso_us(visit["arrival"])
    assert parse_iso_us(gap["start"]) <= arrival < we
    assert any(d["start"] == gap["start"] for d in truth["dropouts"])


def test_breakdowns_are_foreseeable_delays(day: Day) -> None:
    _, truth, _ = day
    kinds = [d for d in truth["traffic_delays"] if d.get("kind") == "breakdown"]
    assert kinds
    assert all(30 * 60 - 5 <= d["delay_s"] <= 60 * 60 + 5 for d in kinds)
    assert any(u["kind"] == "breakdown" for u in truth["unscheduled_stops"])


def test_board_end_to_end_missed_retracted_by_the_backlog(day: Day) -> None:
    _, truth, run = day
    date = truth["scenario"]["date"]
    (gap,) = truth["coverage_gaps"]
    stop = f"{date}/{gap['site_id']}"
    recs = [e for e in run.events if isinstance(e, StopChanged) and e.stop_id == stop]
    states = [r.state for r in recs]
    assert "missed" in states
    assert recs[-1].state == "visited"
    (flip,) = [r for r in recs if r.previous == "missed" and r.state == "visited"]
    assert flip.retraction
    assert flip.detected_late
    assert flip.arrival_us is not None
    assert flip.arrival_us < flip.window_end_us
    fig = evaluate_schedule([e for e in run.events if isinstance(e, StopChanged)], truth)
    assert fig.skipped_missed_once == fig.skipped
    assert fig.visited_final_missed == 0
    assert fig.cancelled_ok == fig.cancelled
    assert fig.late_classified == fig.late
    assert fig.late_decided_in_time == fig.late


def test_final_states_equal_the_same_day_delivered_in_order(day: Day) -> None:
    """The coverage gap's backlog (and every dropout's) released late vs. the same fixes fed in
    fix-time order: the same final state for every stop."""
    scenario, _, run = day
    in_order = run_day_in_order(scenario)
    assert in_order.board.states() == run.board.states()

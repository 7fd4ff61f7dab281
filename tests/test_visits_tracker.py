"""The tracker's promises: corrections by version, bounded memory, duplicates, FixBatch input."""

from __future__ import annotations

import numpy as np
import pytest

from core.fixes import FixBatch
from schedule.events import InvalidEvent, VisitCompleted, VisitStarted, latest
from schedule.params import DetectionParams
from schedule.stops import IllegalTransition
from schedule.tracker import FleetTracker, VehicleTracker
from schedule.visits import TRANSITIONS, VisitInput, VisitState, step
from tests.test_visits_synthetic import (
    T0_US,
    Circles,
    TrackBuilder,
    feed_all,
    final_visits,
)

SITE = Circles([(0.0, 0.0, 50.0)])


def test_late_backlog_reopens_a_visit_closed_by_a_gap_as_a_correction() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(1500).drive(600, 0, 20)
    a = b.arrays()
    t = (a["t_us"] - T0_US) / 1e6
    hole = (t > 300) & (t < 1000)  # a 700 s dropout while parked: buffered on the unit
    tr = VehicleTracker("V", SITE.ids)
    live = feed_all(tr, a, SITE, [np.flatnonzero(~hole)], finish=False)
    live += tr.advance(int(a["t_us"][-1]) + 10**9)
    before = final_visits(live)
    assert len(before) == 2  # the gap > max_gap_s split the visit
    backlog = feed_all(tr, a, SITE, [np.flatnonzero(hole)], finish=False)
    after = final_visits(live + backlog)
    assert len(after) == 1
    # the correction reuses the first visit's id with a higher version; the second is retracted
    first_id = next(e.visit_id for e in live if isinstance(e, VisitCompleted))
    corrected = [e for e in backlog if isinstance(e, VisitCompleted) and e.visit_id == first_id]
    assert corrected
    assert corrected[-1].version > 1
    assert corrected[-1].supersedes == corrected[-1].version - 1
    assert any(e.retracted for e in backlog)
    assert tr.stats.late_fixes == int(hole.sum())


def test_duplicates_are_counted_and_change_nothing() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(300).drive(600, 0, 20)
    a = b.arrays()
    n = len(a["t_us"])
    tr = VehicleTracker("V", SITE.ids)
    idx = np.arange(n)
    events = feed_all(tr, a, SITE, [idx, idx[: n // 2], np.concatenate((idx, idx))])
    assert tr.stats.duplicates == n // 2 + 2 * n
    assert len(final_visits(events)) == 1
    assert all(e.version == 1 for e in events)


def test_memory_is_bounded_by_the_horizon_and_older_fixes_are_counted() -> None:
    params = DetectionParams(horizon_s=1800.0)
    b = TrackBuilder().start(-3000, 0)
    for _ in range(6):  # two hours of visits and driving
        b.drive(0, 0, 30).park(300).drive(-3000, 0, 30).park(200)
    a = b.arrays()
    n = len(a["t_us"])
    tr = VehicleTracker("V", SITE.ids, params)
    events = feed_all(tr, a, SITE, [np.arange(i, min(i + 60, n)) for i in range(0, n, 60)])
    assert len(final_visits(events)) == 6
    assert tr.retained_fixes < 1800 + 900  # horizon plus the activity around its edge
    a2 = {k: v.copy() for k, v in a.items()}
    a2["t_us"] = a2["t_us"] - 10**6 // 2  # new, older-than-horizon fix times
    tr.feed(
        a2["t_us"][:3],
        a2["lon"][:3],
        a2["lat"][:3],
        a2["speed_kmh"][:3],
        a2["hdop"][:3],
        np.empty((2, 0)),
        np.empty((2, 0)),
    )
    assert tr.stats.beyond_horizon == 3


def test_fleet_tracker_splits_a_batch_by_unit() -> None:
    b1 = TrackBuilder(seed=1).start(-500, 0).drive(0, 0, 20).park(300).drive(600, 0, 20)
    b2 = TrackBuilder(seed=2).start(500, 0).drive(0, 0, 20).park(200).drive(-600, 0, 20)
    a1, a2 = b1.arrays(), b2.arrays()

    def batch(a: dict[str, np.ndarray], unit: str) -> FixBatch:
        n = len(a["t_us"])
        return FixBatch(
            unit_id=np.full(n, unit),
            t_us=a["t_us"],
            recv_us=a["t_us"] + 500_000,
            lat=a["lat"],
            lon=a["lon"],
            speed_kmh=a["speed_kmh"].astype(np.float32),
            course=np.full(n, np.nan, np.float32),
            quality=np.full(n, 1, np.int8),
            sats=np.full(n, 9, np.int8),
            hdop=a["hdop"].astype(np.float32),
            alt_m=np.full(n, np.nan, np.float32),
            talker=np.full(n, "GP"),
        )

    both = FixBatch.concat([batch(a1, "U1"), batch(a2, "U2")])
    order = np.random.default_rng(0).permutation(len(both))  # interleaved, out of order
    fleet = FleetTracker(SITE.ids, {"U1": "V1", "U2": "V2"})
    events = []
    for chunk in np.array_split(order, 7):
        events += fleet.feed_matched(both.take(chunk), SITE)
    events += fleet.finish()
    done = [e for e in latest(events).values() if isinstance(e, VisitCompleted)]
    assert sorted(e.vehicle_id for e in done) == ["V1", "V2"]
    assert fleet.statistics().fixes_in == len(both)


def test_visit_transition_table_raises_on_illegal_moves() -> None:
    assert step(VisitState.OUTSIDE, VisitInput.ENTER) is VisitState.CANDIDATE
    for state in VisitState:
        for inp in VisitInput:
            if (state, inp) not in TRANSITIONS:
                with pytest.raises(IllegalTransition):
                    step(state, inp)


def test_events_validate_their_fields() -> None:
    with pytest.raises(InvalidEvent, match="supersedes"):
        VisitStarted(
            visit_id="v", version=2, vehicle_id="V", site_id="S", arrival_us=0, confirmed_us=1
        )
    with pytest.raises(InvalidEvent, match="before arrival"):
        VisitStarted(visit_id="v", vehicle_id="V", site_id="S", arrival_us=5, confirmed_us=1)
    ok = VisitStarted(
        visit_id="v",
        version=3,
        supersedes=2,
        vehicle_id="V",
        site_id="S",
        arrival_us=0,
        confirmed_us=0,
    )
    assert ok.to_json_dict()["arrival"].endswith("Z")

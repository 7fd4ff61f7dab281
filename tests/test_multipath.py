"""Multipath outliers, crawls and back-to-back stops (issue 11, items 9, 10, 12, 13, 14).

Each class has tracks built here for it, with positions placed exactly where the rule is
decided (which of an outlier's two steps exceeds the 40 m slack, a crawl's speed, a re-park's
distance), and a Hypothesis property over random noise and outlier placement.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule.events import StopEnded, latest
from schedule.motion import Track, motion
from schedule.params import DetectionParams
from schedule.stops import detect_stops
from tests.test_visits_synthetic import (
    Circles,
    TrackBuilder,
    final_stops,
    final_visits,
    run,
)

P = DetectionParams()
NO_SITES = Circles([])
SITE = Circles([(0.0, 0.0, 50.0)])


def parked_then_away(
    *, dt_s: float = 1.0, park_s: float = 900.0, sigma_m: float = 2.0, seed: int = 0
) -> TrackBuilder:
    """Drive into the site at (0, 0), stand ``park_s``, drive off east."""
    b = TrackBuilder(dt_s=dt_s, seed=seed).start(-800.0, 0.0).drive(0.0, 0.0, 30.0)
    b.park(park_s, sigma_m=sigma_m)
    return b.drive(1500.0, 0.0, 30.0)


def parked_indices(b: TrackBuilder, lo_s: float, hi_s: float) -> list[int]:
    """Indices of the fixes of the standing part between its ``lo_s`` and ``hi_s`` seconds."""
    t = np.asarray(b.t)
    v = np.asarray(b.v)
    standing = np.flatnonzero(v < 3.0)
    t0 = t[standing[0]]
    return [int(i) for i in standing if lo_s <= t[i] - t0 <= hi_s]


def put(b: TrackBuilder, i: int, x: float, y: float) -> None:
    b.x[i], b.y[i] = x, y


def stops_and_motion(b: TrackBuilder) -> tuple[list[tuple[int, int, str | None]], object]:
    a = b.arrays()
    track = Track.from_arrays(a["t_us"], a["lon"], a["lat"], a["speed_kmh"], a["hdop"])
    m = motion(track, P)
    recs = detect_stops(m, P, int(a["t_us"][0]))
    return [(r.first, r.last, r.closed_by) for r in recs], m


# -- item 9: a lone outlier never ends a stop or a visit, whichever step exceeds the slack -----


@pytest.mark.parametrize(
    ("before", "outlier", "after"),
    [
        ((0.0, 0.0), (38.0, 0.0), (-5.0, 0.0)),  # away 38 m (under the slack), back 43 m (over)
        ((-5.0, 0.0), (38.0, 0.0), (0.0, 0.0)),  # away 43 m (over), back 38 m (under)
        ((0.0, 0.0), (70.0, 10.0), (1.0, 0.0)),  # both over
        ((0.0, 0.0), (0.0, -39.5), (0.0, 2.0)),  # away 39.5 m, back 41.5 m: just either side
    ],
)
def test_a_lone_outlier_never_cuts_the_stop_or_the_visit(
    before: tuple[float, float], outlier: tuple[float, float], after: tuple[float, float]
) -> None:
    reference = parked_then_away()
    b = parked_then_away()
    i = parked_indices(b, 400, 400)[0]
    put(b, i - 1, *before)
    put(b, i, *outlier)
    put(b, i + 1, *after)
    stops, m = stops_and_motion(b)
    assert len(stops) == 1
    assert stops[0][2] == "exit"  # ended by driving off, not by a jump at the outlier
    assert not bool(np.any(m.jump[1:] & (np.diff(m.t_s) < 30)))  # type: ignore[attr-defined]
    # the outlier is what goes, never the genuine fix beside it
    assert set(range(len(b.t))) - set(m.keep.tolist()) == {i}  # type: ignore[attr-defined]
    events = run(b, SITE)
    assert len(final_stops(events)) == 1
    assert final_visits(events) == final_visits(run(reference, SITE))


@pytest.mark.parametrize("burst", [1, 2, 3])
@pytest.mark.parametrize("entry_m", [36.0, 45.0, 75.0])
def test_an_outlier_burst_of_one_to_three_fixes_never_cuts_the_stop(
    burst: int, entry_m: float
) -> None:
    b = parked_then_away(sigma_m=0.0)
    i = parked_indices(b, 300, 300)[0]
    # the first fix of the burst at entry_m, the others 60 m out: the step into the burst may be
    # under the slack, the step out of it is over it
    for k in range(burst):
        put(b, i + k, entry_m if k == 0 else 60.0, 0.0)
    stops, m = stops_and_motion(b)
    assert len(stops) == 1
    assert set(range(len(b.t))) - set(m.keep.tolist()) <= set(range(i, i + burst))  # type: ignore[attr-defined]
    assert len(final_stops(run(b, NO_SITES))) == 1


def test_a_real_jump_still_splits_the_stop() -> None:
    """The receiver re-acquires 150 m away and stays there: that is no outlier."""
    b = TrackBuilder().start(-800.0, 0.0).drive(0.0, 0.0, 30.0).park(400)
    b.pos = (150.0, 0.0)
    b.park(400).drive(1500.0, 0.0, 30.0)
    stops, m = stops_and_motion(b)
    assert len(stops) == 2
    assert stops[0][2] == "teleport"
    assert m.dropped_outliers == 0  # type: ignore[attr-defined]


# -- item 10: the burst loop measures from the last kept fix --------------------------------


@pytest.mark.parametrize("ahead_m", [40.0, 60.0, 90.0])
def test_an_outlier_just_before_departure_costs_no_genuine_fix(ahead_m: float) -> None:
    """A 5 s unit: the last parked fix is an outlier lying ahead on the way out, so the first
    genuine driving fixes come back "near" it.  Only the outlier may be dropped, and the visit's
    departure is the last genuine inside fix."""
    b = TrackBuilder(dt_s=5.0, seed=1).start(-800.0, 0.0).drive(0.0, 0.0, 30.0)
    b.park(600, sigma_m=2.0)
    i = len(b.t) - 1
    b.drive(1500.0, 0.0, 30.0)
    reference = run(b, SITE)
    put(b, i, ahead_m + 60.0, 0.0)
    a = b.arrays()
    m = motion(Track.from_arrays(a["t_us"], a["lon"], a["lat"], a["speed_kmh"], a["hdop"]), P)
    assert m.dropped_outliers == 1
    assert i not in m.keep.tolist()
    visits = final_visits(run(b, SITE))
    assert len(visits) == 1
    _, _, dep = visits[0]
    _, _, dep_ref = final_visits(reference)[0]
    # the outlier was the last parked fix: the departure may move back by that one fix only
    assert dep_ref - 5 <= dep <= dep_ref


def test_genuine_fixes_after_a_dropped_outlier_are_measured_from_the_last_kept_fix() -> None:
    b = parked_then_away(sigma_m=0.0)
    i = parked_indices(b, 200, 200)[0]
    put(b, i, 70.0, 0.0)  # a lone outlier...
    put(b, i + 1, 72.0, 0.0)  # ...and a second 2 m from it: a 2-fix burst
    _, m = stops_and_motion(b)
    assert m.dropped_outliers == 2  # type: ignore[attr-defined]


# -- item 12: a stop has a bounded extent; a crawl is slow, not stopped at X ----------------


def crawl(speed_kmh: float, *, reported: bool = True, dt_s: float = 1.0) -> TrackBuilder:
    """Drive in, then a 10-minute queue crawl at a constant speed, then drive off."""
    b = TrackBuilder(dt_s=dt_s, seed=2).start(-500.0, 0.0).drive(0.0, 0.0, 30.0)
    b.drive(speed_kmh / 3.6 * 600.0, 0.0, speed_kmh, sigma_m=3.0)
    b.drive(3000.0, 0.0, 30.0)
    if not reported:
        b.v = [float("nan")] * len(b.v)
    return b


@pytest.mark.parametrize("speed_kmh", [2.5, 3.0, 5.0, 8.0])
@pytest.mark.parametrize("reported", [True, False])
def test_a_slow_crawl_is_not_a_stop(speed_kmh: float, reported: bool) -> None:
    stops, _ = stops_and_motion(crawl(speed_kmh, reported=reported))
    assert stops == []


@pytest.mark.parametrize("reported", [True, False])
def test_standing_then_creeping_away_is_a_stop_that_ends_where_it_left_its_place(
    reported: bool,
) -> None:
    """Ten minutes parked, then a 2.5 km/h creep that never looks like driving: the stop is the
    standing (plus the creep up to the extent bound), and it ends by moving on."""
    b = TrackBuilder(seed=9).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(600, sigma_m=3.0)
    t_stand_end = b.now
    b.drive(300.0, 0.0, 2.5, sigma_m=3.0).drive(3000.0, 0.0, 30.0)
    if not reported:
        b.v = [float("nan")] * len(b.v)
    stops, m = stops_and_motion(b)
    assert len(stops) == 1
    assert stops[0][2] == "exit"
    end_s = float(m.t_s[stops[0][1]]) + 1.0  # type: ignore[attr-defined]  # t_s: from the 1st fix
    # the bound: ~100 m of creep at 0.69 m/s after the stand, never the whole 300 m creep
    assert t_stand_end - 5 <= end_s <= t_stand_end + P.stop_extent_m / (2.5 / 3.6) + 10


def test_a_jam_of_stands_and_short_creeps_is_one_stop() -> None:
    b = TrackBuilder(seed=3).start(-500.0, 0.0).drive(0.0, 0.0, 30.0)
    for k in range(4):  # four stands of 2 minutes, 12 m creeps at 6 km/h between them
        b.park(120, sigma_m=6.0)
        if k < 3:
            b.drive(12.0 * (k + 1), 0.0, 6.0, sigma_m=3.0)
    b.drive(3000.0, 0.0, 30.0)
    stops, _ = stops_and_motion(b)
    assert len(stops) == 1
    assert len(final_stops(run(b, NO_SITES))) == 1


@settings(max_examples=40, deadline=None)
@given(
    legs=st.lists(
        st.tuples(st.integers(20, 400), st.floats(0.0, 60.0), st.sampled_from([2.0, 4.0, 6.0])),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
)
def test_every_stop_lies_within_its_extent(legs: list[tuple[int, float, float]], seed: int) -> None:
    """Stands and creeps of any length: no stop's fixes (5-fix majority) wander farther than
    ``stop_extent_m`` from where it started, so none is reported "at" a place it crawled past."""
    b = TrackBuilder(seed=seed).start(-500.0, 0.0).drive(0.0, 0.0, 30.0)
    x = 0.0
    for stand_s, creep_m, creep_kmh in legs:
        b.park(stand_s, sigma_m=5.0)
        if creep_m > 1.0:
            x += creep_m
            b.drive(x, 0.0, creep_kmh, sigma_m=3.0)
    b.drive(x + 2000.0, 0.0, 30.0)
    a = b.arrays()
    track = Track.from_arrays(a["t_us"], a["lon"], a["lat"], a["speed_kmh"], a["hdop"])
    m = motion(track, P)
    for r in detect_stops(m, P, int(a["t_us"][0])):
        hx, hy = np.median(m.x[r.first : r.first + 10]), np.median(m.y[r.first : r.first + 10])
        d = np.hypot(m.x[r.first : r.last + 1] - hx, m.y[r.first : r.last + 1] - hy)
        beyond = d > P.stop_extent_m
        # in every window of 5 fixes, at most 2 (outliers) lie beyond the extent
        win = np.convolve(beyond.astype(int), np.ones(5, dtype=int), mode="valid")
        note(f"stop {r}")
        assert not bool(np.any(win >= 3))
        assert math.hypot(r.x - hx, r.y - hy) <= P.stop_extent_m


# -- item 13: back-to-back stops at one place merge; a stop starts at the standstill ---------


def re_park(move_m: float, *, away_m: float = 0.0) -> TrackBuilder:
    """Stand 4 min, re-park ``move_m`` east at 6 km/h (via a detour ``away_m`` north), stand."""
    b = TrackBuilder(seed=4).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(240, sigma_m=4.0)
    if away_m:
        b.drive(move_m / 2, away_m, 20.0).drive(move_m, 0.0, 20.0)
    else:
        b.drive(move_m, 0.0, 6.0)
    return b.park(240, sigma_m=4.0).drive(3000.0, 0.0, 30.0)


@pytest.mark.parametrize("move_m", [20.0, 35.0, 45.0])
def test_back_to_back_stops_at_one_place_are_one_stop(move_m: float) -> None:
    stops = final_stops(run(re_park(move_m), NO_SITES))
    assert len(stops) == 1
    assert stops[0][2] - stops[0][1] >= 480


@pytest.mark.parametrize(("move_m", "away_m"), [(120.0, 0.0), (20.0, 150.0)])
def test_stops_at_two_places_or_across_a_drive_stay_two(move_m: float, away_m: float) -> None:
    assert len(final_stops(run(re_park(move_m, away_m=away_m), NO_SITES))) == 2


def test_a_stop_starts_where_the_standstill_starts() -> None:
    """Braking through 7, 6, 5 km/h over the last metres: those fixes are not the stop."""
    b = TrackBuilder(seed=5).start(-500.0, 0.0).drive(-12.0, 0.0, 30.0)
    for v in (7.0, 6.0, 5.0, 4.0):
        b.drive(b.pos[0] + v / 3.6, 0.0, v, sigma_m=0.5)
    t_stand = b.now + b.dt_s
    b.park(300, sigma_m=1.0, speed_noise_kmh=0.3).drive(2000.0, 0.0, 30.0)
    stops = final_stops(run(b, NO_SITES))
    assert len(stops) == 1
    assert stops[0][1] == int(t_stand)


# -- item 14: closed_by says how the stop really ended --------------------------------------


def ended(b: TrackBuilder) -> list[StopEnded]:
    evs = [e for e in latest(run(b, NO_SITES)).values() if isinstance(e, StopEnded)]
    return sorted((e for e in evs if not e.retracted), key=lambda e: e.start_us)


def test_a_jump_minutes_after_the_stop_does_not_make_it_a_teleport() -> None:
    b = TrackBuilder(seed=6).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(300)
    b.drive(1000.0, 0.0, 30.0)
    b.pos = (1300.0, 0.0)  # 10 minutes later the receiver re-acquires 300 m on
    b.drive(3000.0, 0.0, 30.0)
    assert [e.closed_by for e in ended(b)] == ["exit"]


def test_a_long_data_step_while_driving_later_does_not_make_it_a_teleport() -> None:
    b = TrackBuilder(seed=7).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(300)
    b.drive(2000.0, 0.0, 40.0).gap(61, 2700.0, 0.0).drive(5000.0, 0.0, 40.0)
    assert [e.closed_by for e in ended(b)] == ["exit"]


def test_a_jump_at_its_end_is_a_teleport_and_a_gap_at_its_end_is_a_gap() -> None:
    jump = TrackBuilder(seed=8).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(300)
    jump.pos = (400.0, 0.0)
    jump.drive(3000.0, 0.0, 30.0)
    assert [e.closed_by for e in ended(jump)] == ["teleport"]
    gap = TrackBuilder(seed=8).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(300)
    gap.gap(900, 2000.0, 0.0).drive(3000.0, 0.0, 30.0)
    assert [e.closed_by for e in ended(gap)] == ["gap"]
    short = TrackBuilder(seed=8).start(-500.0, 0.0).drive(0.0, 0.0, 30.0).park(300)
    short.gap(90, 900.0, 0.0).drive(3000.0, 0.0, 30.0)  # a 90 s hole, then 900 m on
    assert [e.closed_by for e in ended(short)] == ["gap"]


# -- the properties: one outlier (or a burst) anywhere in a long stop changes nothing --------


@settings(max_examples=60, deadline=None)
@given(
    where=st.floats(0.02, 0.98),
    dist_m=st.floats(40.0, 80.0),
    angle=st.floats(0.0, 2 * math.pi),
    burst=st.integers(1, 3),
    sigma_m=st.sampled_from([2.0, 4.0, 6.0]),
    dt_s=st.sampled_from([1.0, 5.0]),
    seed=st.integers(0, 2**16),
)
def test_inserting_an_outlier_anywhere_in_a_long_stop_changes_nothing(
    where: float, dist_m: float, angle: float, burst: int, sigma_m: float, dt_s: float, seed: int
) -> None:
    clean = parked_then_away(dt_s=dt_s, park_s=900.0, sigma_m=sigma_m, seed=seed)
    noisy = parked_then_away(dt_s=dt_s, park_s=900.0, sigma_m=sigma_m, seed=seed)
    idx = parked_indices(noisy, 0.0, 900.0)
    i = idx[min(int(where * len(idx)), len(idx) - burst - 1)]
    for k in range(burst):
        put(noisy, i + k, dist_m * math.cos(angle), dist_m * math.sin(angle))
    note(f"outlier at fix {i}")
    a = noisy.arrays()
    m = motion(Track.from_arrays(a["t_us"], a["lon"], a["lat"], a["speed_kmh"], a["hdop"]), P)
    dropped = set(range(len(noisy.t))) - set(m.keep.tolist())
    assert dropped <= set(range(i, i + burst))  # no genuine fix is lost to the outlier
    before, after = run(clean, SITE), run(noisy, SITE)
    assert len(final_stops(after)) == len(final_stops(before)) == 1
    assert final_visits(after) == final_visits(before)
    (_, s0, e0), (_, s1, e1) = final_stops(before)[0], final_stops(after)[0]
    assert abs(s1 - s0) <= dt_s
    assert abs(e1 - e0) <= dt_s

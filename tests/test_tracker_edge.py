"""Append-only rounds of a parked vehicle: what its open stop reports can change while rounds
only append, and a truck parked at a fence's edge.

A stop's ``site_id`` (StopStarted, StopEnded) is the site holding at least half of its fixes
(``schedule.stops.stop_site``), so every fix a parked truck adds can move it: a stop that
outlived its visit (the truck re-parked beyond the margin) loses its site, one that began
outside a site gains it.  And back-to-back stops at one place are one stop
(``schedule.stops._merge_back_to_back``), judged on the medians of the two: a growing open stop
can merge with the closed one before it, or a merged one come apart.  Each of those changes
an event, so the round that makes it must re-run: per vehicle (``VehicleTracker._append_only``)
and fleet-wide (``schedule.fastpath.select_parked``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule.tracker import FleetTracker, VehicleTracker
from tests.test_tracker_fastpath import batch, run_rounds
from tests.test_tracker_incremental import Watched, compare_rounds, cut, explicit
from tests.test_tracker_parked import rounds_of
from tests.test_visits_properties import FENCES, PARAMS, draw_chunks
from tests.test_visits_synthetic import TrackBuilder

Parts = list[tuple[int, float, float, float]]


def drive(x0: float, x1: float, y: float, step: float = 5.0, kmh: float = 18.0) -> Parts:
    k = max(int(abs(x1 - x0) / step), 1)
    return [(1, x0 + (x1 - x0) * i / k, y, kmh) for i in range(k + 1)]


def jitter(x: float, y: float) -> Parts:
    """Two fixes reported at driving speed: not still, too few to confirm a move."""
    return [(2, x, y, 12.0)]


def fleet_compare(arrays: dict[str, np.ndarray], every: int) -> FleetTracker:
    """The fleet with its fast paths against one without, round by round."""
    n = len(arrays["t_us"])
    rounds = [batch([("U0", arrays, idx)]) for idx in cut(n, every)]
    fast = FleetTracker(FENCES.ids, {"U0": "V0"}, PARAMS)
    usual = FleetTracker(FENCES.ids, {"U0": "V0"}, PARAMS, incremental=False)
    clock: list[int | None] = [None] * len(rounds)
    got = run_rounds(fast, rounds, clock, with_now=False)
    want = run_rounds(usual, rounds, clock, with_now=False)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"
    return fast


def check(parts: Parts, everies: Sequence[int] = (7, 25, 60)) -> None:
    arrays = explicit(parts)
    n = len(arrays["t_us"])
    for every in everies:
        compare_rounds(arrays, cut(n, every))
        fleet_compare(arrays, every)


# fence 0: centre (0, 0), radius 50 m; its margin reaches 65 m


def test_a_stop_that_outlives_its_visit_loses_its_site_in_its_round() -> None:
    # parked inside near the edge, re-parked 25 m on beyond the margin: the visit exits, the
    # stop goes on (jitter between two runs 25 m apart), with fence 0 as its site until the
    # fixes beyond outnumber those inside
    parts = [*drive(-150.0, 45.0, 0.0), (250, 45.0, 0.0, 0.0), *jitter(57.0, 0.0)]
    parts += [(400, 70.0, 0.0, 0.0), *drive(70.0, 400.0, -300.0, 6.0, 20.0)]
    check(parts)


def test_a_stop_begun_outside_gains_the_site_of_the_visit_in_its_round() -> None:
    parts = [*drive(200.0, 75.0, 0.0), (300, 70.0, 0.0, 0.0), *jitter(57.0, 0.0)]
    parts += [(600, 45.0, 0.0, 0.0), *drive(45.0, -400.0, -300.0, 6.0, 20.0)]
    check(parts)


@pytest.mark.parametrize("second", [55.0, 58.0])
def test_a_growing_stop_that_comes_to_merge_with_the_stop_before_it(second: float) -> None:
    # away from every fence: stop a at x=0, then (2 s later) stop r whose first run stands
    # too far to join a's chain and whose median is too far to merge; r's truck then moves
    # 25 m back (jitter: one chain) and r's median comes within stop_merge_m of a's
    y = -600.0
    parts = [*drive(-300.0, 0.0, y), (250, 0.0, y, 0.0), *jitter(20.0, y)]
    parts += [(220, second, y, 0.0), *jitter(40.0, y), (500, second - 25.0, y, 0.0)]
    parts += drive(second - 25.0, 400.0, y, 6.0, 20.0)
    check(parts)


def test_a_merged_stop_that_comes_apart() -> None:
    # stop a at x=0, r 40 m on (too far to join, near enough to merge: one stop from a's
    # start); r's truck moves 25 m further and r's median leaves stop_merge_m of a's
    y = -600.0
    parts = [*drive(-300.0, 0.0, y), (250, 0.0, y, 0.0), *jitter(20.0, y)]
    parts += [(220, 40.0, y, 0.0), *jitter(52.0, y), (500, 65.0, y, 0.0)]
    parts += drive(65.0, 400.0, y, 6.0, 20.0)
    check(parts)


# -- a truck parked at a fence's edge ---------------------------------------------------

#: spots near fence edges: fence 0 (r 50) just inside, on, just outside the fence, near the
#: margin's edge (65 m), and between overlapping fences 1 and 2
EDGE_SPOTS = [(-45.0, 0.0), (0.0, 50.0), (-54.0, 0.0), (0.0, -60.0), (437.0, 0.0), (400.0, 42.0)]

edge_leg = st.tuples(
    st.just("park"),
    st.sampled_from(range(len(EDGE_SPOTS))),
    st.integers(150, 700),  # seconds
    st.sampled_from([3.0, 6.0, 10.0]),  # jitter sigma, m: across the fence line
    st.sampled_from([0.0, 0.0, 0.03]),  # multipath outlier rate
    st.sampled_from([0.3, 2.0]),  # speed noise, km/h
)
shift_leg = st.tuples(st.just("shift"), st.integers(-25, 25), st.integers(-25, 25))


def edge_track(legs: list[tuple[object, ...]], seed: int) -> dict[str, np.ndarray]:
    """A truck that parks at fence edges (and re-parks a few metres off: a new still run)."""
    b = TrackBuilder(seed=seed).start(-300.0, -300.0)
    for leg in legs:
        if leg[0] == "park":
            _, spot, dur, sigma, outliers, noise = leg
            x, y = EDGE_SPOTS[spot]  # type: ignore[index]
            if (x, y) != b.pos:
                b.drive(x, y, 20.0)
            b.park(dur, sigma_m=sigma, outlier_rate=outliers, speed_noise_kmh=noise)  # type: ignore[arg-type]
        else:
            x, y = b.pos
            b.drive(x + float(leg[1]), y + float(leg[2]), 4.0)  # type: ignore[arg-type]
    b.drive(-300.0, -300.0, 30.0)
    return b.arrays()


class EdgeWatched(Watched):
    """Counts the rounds the fence-edge proof let append (a kept new fix outside the fence,
    or a visit whose last inside fix is not the newest)."""

    def _visits_stay(self, open_v, kept, inside, *args):  # type: ignore[no-untyped-def]
        out = super()._visits_stay(open_v, kept, inside, *args)
        if out is not None:
            for v, end, _, _ in out:
                if end != (kept[-1] if kept else end) or not inside[v.site].issuperset(kept):
                    self.seen["edge"] += 1
        return out


def edge_rounds(arrays: dict[str, np.ndarray], chunks: Sequence[np.ndarray]) -> EdgeWatched:
    return compare_rounds(arrays, chunks, None, EdgeWatched)


legs_st = st.lists(st.one_of(edge_leg, edge_leg, shift_leg), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(legs=legs_st, seed=st.integers(0, 2**16), data=st.data())
def test_parked_at_a_fence_edge_every_round_reports_what_a_full_rerun_reports(
    legs: list[tuple[object, ...]], seed: int, data: st.DataObject
) -> None:
    arrays = edge_track(legs, seed)
    n = len(arrays["t_us"])
    chunks = draw_chunks(data, n, max_step=60)
    if data.draw(st.booleans(), label="a chunk late"):
        k = data.draw(st.integers(0, len(chunks) - 1))
        chunks.insert(min(k + 3, len(chunks)), chunks.pop(k))
    note(f"{n} fixes, {len(chunks)} rounds")
    edge_rounds(arrays, chunks)


@settings(max_examples=25, deadline=None)
@given(
    fleet_legs=st.lists(legs_st, min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_parked_at_a_fence_edge_the_fleet_reports_what_a_full_rerun_reports(
    fleet_legs: list[list[tuple[object, ...]]], seed: int, data: st.DataObject
) -> None:
    units = [(f"U{u}", edge_track(legs, seed + u)) for u, legs in enumerate(fleet_legs)]
    round_s = data.draw(st.sampled_from([3, 10, 40]), label="round length")
    parts = rounds_of(units, round_s, set(), 0)
    rounds_b = [batch(p) for p in parts]
    unit_map = {u: f"V{u}" for u, _ in units}
    fast = FleetTracker(FENCES.ids, unit_map, PARAMS)
    full = FleetTracker(FENCES.ids, unit_map, PARAMS, incremental=False)
    clock: list[int | None] = [None] * len(rounds_b)
    got = run_rounds(fast, rounds_b, clock, with_now=True)
    want = run_rounds(full, rounds_b, clock, with_now=True)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"


def test_the_edge_generator_takes_the_fence_edge_case() -> None:
    """Coverage (derandomized): the generator above reaches the fence-edge append rounds."""
    seen: Counter[str] = Counter()

    @settings(max_examples=15, derandomize=True, database=None, deadline=None)
    @given(legs=legs_st, seed=st.integers(0, 2**16), data=st.data())
    def collect(legs: list[tuple[object, ...]], seed: int, data: st.DataObject) -> None:
        arrays = edge_track(legs, seed)
        chunks = draw_chunks(data, len(arrays["t_us"]), max_step=60)
        seen.update(edge_rounds(arrays, chunks).seen)

    collect()
    assert seen["edge"] > 0, seen


def test_jitter_across_the_fence_line_appends_and_reports_one_visit() -> None:
    # parked 3 m inside fence 0 with 6 m jitter: about a third of the fixes outside the
    # fence, all within the margin; rounds of 20 fixes
    arrays = edge_track([("park", 0, 900, 6.0, 0.0, 0.3)], 3)
    n = len(arrays["t_us"])
    fast = edge_rounds(arrays, cut(n, 20))
    assert fast.seen["edge"] > 10
    assert fast.stats.reruns < n // 20 // 2


def test_the_share_and_exit_thresholds_of_the_edge_case() -> None:
    """Explicit: parked 4 min inside, then runs outside the fence within the margin (no
    exit however long) and beyond it (an exit once exit_confirm_fixes follow, one of them
    moving); the share threshold (min_inside_share 0.2: a visit whose fixes from its first
    through its last inside one are less than a fifth inside is dropped when that inside fix
    comes: 273 / 1323 above, 273 / 1423 below: retracted)."""
    inside, near, beyond = (40.0, 0.0), (58.0, 0.0), (70.0, 0.0)
    arrive = drive(200.0, 40.0, 0.0)  # 3 fixes inside on the way in
    for k_near in (1050, 1150):  # back inside for 30 s: a share of 273 / (273 + k_near)
        parts = [*arrive, (240, *inside, 0.0), (k_near, *near, 0.0), (30, *inside, 0.0)]
        parts += [*drive(40.0, -400.0, 300.0)]
        check(parts, everies=(17, 40))
    for k_beyond in (2, 3):  # dwelling (its stop not due yet): moving fixes may append
        parts = [*arrive, (125, *inside, 0.0), (30, *near, 0.0), (k_beyond, *beyond, 12.0)]
        parts += [(60, *near, 0.0), (60, *inside, 0.0), *drive(40.0, -400.0, 300.0)]
        check(parts, everies=(9, 40))
    for k_beyond, v in ((2, 12.0), (3, 12.0), (3, 0.0), (4, 0.0)):
        parts = [*arrive, (240, *inside, 0.0), (30, *near, 0.0), (k_beyond, *beyond, v)]
        parts += [(60, *near, 0.0), (60, *inside, 0.0), *drive(40.0, -400.0, 300.0)]
        check(parts, everies=(9, 40))


def test_a_falling_share_at_the_edge_does_not_hide_a_visit_it_dominated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parked between overlapping fences 1 and 2, one fix a round: the open visit's share
    falls as edge fixes outside its fence come in, and a candidate visit of the other site,
    dropped while the open one dominated it (``drop_dominated``), comes back; a round that
    only appended would miss its VisitStarted (found by a Hypothesis search of this file's
    generator with the rule off).  Without :meth:`VehicleTracker._other_inside_since` the
    rounds differ."""
    legs: list[tuple[object, ...]] = [
        ("park", 5, 349, 10.0, 0.0, 0.3),
        ("park", 5, 350, 10.0, 0.0, 0.3),
    ]
    arrays = edge_track(legs, 3)
    chunks = [np.arange(i, i + 1) for i in range(len(arrays["t_us"]))]
    edge_rounds(arrays, chunks)  # with the rule: every round as the full re-run
    monkeypatch.setattr(VehicleTracker, "_other_inside_since", lambda self, site, start: False)
    with pytest.raises(AssertionError, match=r"round \d+ differs"):
        edge_rounds(arrays, chunks)

"""The parked fast path (schedule/fastpath.py ``select_parked``) changes nothing reported.

``FleetTracker(fast=True)`` appends the fixes of vehicles that one compiled pass proves are in
:meth:`VehicleTracker._append_only`'s *parked* or *dwelling* case (an open stop and/or open
visits reaching the newest fix, every new fix reported still, within the stop's extent, inside
each open visit's site, no other site's pair), without :meth:`VehicleTracker.feed`.  The
promise: every round's events equal those of a fleet without any fast path, whatever the
vehicles do at their sites (jitter, creeping, multipath outliers, speed noise around the still
threshold, overlapping fences, gaps), however the rounds cut their data (late, re-sent,
clock-advanced rounds).  Then each threshold of the selection, one at a time, and the compiled
selection against its numpy reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule import fastpath
from schedule.fastpath import FAR_US, ParkedTail, parked_window, select_parked
from schedule.fastpath import select_parked_reference as reference
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker, VehicleTracker
from tests.test_tracker_fastpath import batch, run_rounds
from tests.test_visits_properties import FENCES, PARAMS
from tests.test_visits_synthetic import TrackBuilder, lonlat

#: places to park: the fences' centres, where fences 1 and 2 overlap, a fence's edge, nowhere
SPOTS = [(0.0, 0.0), (400.0, 0.0), (415.0, 15.0), (-47.0, 0.0), (0.0, 600.0), (300.0, 300.0)]

park_leg = st.tuples(
    st.just("park"),
    st.sampled_from(range(len(SPOTS))),
    st.integers(60, 600),  # seconds
    st.sampled_from([1.0, 3.0, 10.0]),  # jitter sigma, m
    st.sampled_from([0.0, 0.0, 0.02, 0.06]),  # multipath outlier rate
    st.sampled_from([0.3, 0.5, 2.0]),  # speed noise, km/h (2.0: often >= stop_speed_kmh)
)
creep_leg = st.tuples(st.just("creep"), st.integers(-60, 60), st.sampled_from([1.0, 2.5, 5.0]))
gap_leg = st.tuples(st.just("gap"), st.integers(5, 400))


def build(legs: list[tuple[object, ...]], seed: int) -> dict[str, np.ndarray]:
    """A truck that drives to each spot and parks there (or creeps, or goes silent)."""
    b = TrackBuilder(seed=seed).start(-300.0, -300.0)
    for leg in legs:
        if leg[0] == "park":
            _, spot, dur, sigma, outliers, noise = leg
            x, y = SPOTS[spot]  # type: ignore[index]
            if (x, y) != b.pos:
                b.drive(x, y, 20.0)
            b.park(dur, sigma_m=sigma, outlier_rate=outliers, speed_noise_kmh=noise)  # type: ignore[arg-type]
        elif leg[0] == "creep":
            _, dx, v = leg
            x, y = b.pos
            b.drive(x + float(dx), y, float(v))  # type: ignore[arg-type]
        else:
            b.gap(float(leg[1]))  # type: ignore[arg-type]
    b.drive(-300.0, -300.0, 30.0)
    return b.arrays()


def rounds_of(
    units: list[tuple[str, dict[str, np.ndarray]]],
    round_s: int,
    late: set[int],
    delay: int,
) -> list:
    t_min = min(int(a["t_us"].min()) for _, a in units)
    t_max = max(int(a["t_us"].max()) for _, a in units)
    n_rounds = (t_max - t_min) // (round_s * 1_000_000) + 1
    parts: list[list] = [[] for _ in range(n_rounds)]
    for unit, arrays in units:
        r = (arrays["t_us"] - t_min) // (round_s * 1_000_000)
        for k in range(n_rounds):
            idx = np.flatnonzero(r == k)
            if len(idx):
                to = min(k + delay, n_rounds - 1) if k in late else k
                parts[to].append((unit, arrays, idx))
    return parts


def compare(
    units: list[tuple[str, dict[str, np.ndarray]]],
    parts: list,
    clock: list[int | None],
    *,
    with_now: bool,
) -> FleetTracker:
    """Both fleets fed the same rounds: equal events round by round; returns the fast one."""
    rounds = [batch(p) for p in parts]
    unit_map = {u: f"V{u}" for u, _ in units}
    fast = FleetTracker(FENCES.ids, unit_map, PARAMS)
    usual = FleetTracker(FENCES.ids, unit_map, PARAMS, fast=False)
    got = run_rounds(fast, rounds, clock, with_now=with_now)
    want = run_rounds(usual, rounds, clock, with_now=with_now)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"
    for v, tr in fast.vehicles.items():
        other = usual.vehicles[v]
        assert tr.retained_fixes == other.retained_fixes
        assert tr.stats.fixes_in == other.stats.fixes_in
    return fast


@settings(max_examples=40, deadline=None)
@given(
    fleet_legs=st.lists(
        st.lists(st.one_of(park_leg, park_leg, creep_leg, gap_leg), min_size=1, max_size=4),
        min_size=1,
        max_size=3,
    ),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_the_parked_fast_path_reports_what_the_usual_way_reports(
    fleet_legs: list[list[tuple[object, ...]]], seed: int, data: st.DataObject
) -> None:
    units = []
    for u, legs in enumerate(fleet_legs):
        arrays = build(legs, seed + u)
        arrays["t_us"] += data.draw(st.integers(0, 30), label=f"offset {u}") * 1_000_000
        units.append((f"U{u}", arrays))
    round_s = data.draw(st.sampled_from([1, 3, 10, 40]), label="round length")
    n_rounds = (
        max(int(a["t_us"].max()) for _, a in units) - min(int(a["t_us"].min()) for _, a in units)
    ) // (round_s * 1_000_000) + 1
    late = data.draw(st.sets(st.integers(0, n_rounds - 1), max_size=3), label="late rounds")
    delay = data.draw(st.integers(1, 20), label="delay")
    parts = rounds_of(units, round_s, late, delay)
    if data.draw(st.booleans(), label="a round sent twice"):
        k = data.draw(st.integers(0, len(parts) - 1))
        parts.insert(k + 1, list(parts[k]))
    clock = data.draw(
        st.lists(
            st.one_of(st.none(), st.none(), st.none(), st.sampled_from([1, 200, 400])),
            min_size=len(parts),
            max_size=len(parts),
        ),
        label="clock advances",
    )
    with_now = data.draw(st.booleans(), label="feed with now_us")
    note(f"{len(units)} units, {len(parts)} rounds of {round_s} s, late {sorted(late)}")
    compare(units, parts, clock, with_now=with_now)


def test_the_generator_takes_the_parked_fast_path_with_a_stop_and_dwelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Coverage: the property test's kind of fleet does take the parked fast path, both with
    an open stop (several open visits where the fences overlap) and *dwelling* (an open visit
    before its stop is announced), and still reports what the usual way reports."""
    kinds: list[tuple[bool, int]] = []
    orig = VehicleTracker.append_parked

    def spy(self: VehicleTracker, tail: ParkedTail, *args: np.ndarray) -> ParkedTail | None:
        kinds.append((tail.stop, len(tail.sites)))
        return orig(self, tail, *args)

    monkeypatch.setattr(VehicleTracker, "append_parked", spy)
    units = [
        ("U0", build([("park", 2, 600, 3.0, 0.02, 0.5), ("creep", 20, 2.5)], 1)),
        ("U1", build([("park", 0, 400, 3.0, 0.0, 0.3), ("gap", 100), ("park", 3, 300, 3.0, 0.0, 2.0)], 2)),  # noqa: E501
        ("U2", build([("park", 5, 400, 3.0, 0.02, 0.5)], 3)),
    ]  # fmt: skip
    parts = rounds_of(units, 3, set(), 0)
    fast = compare(units, parts, [None] * len(parts), with_now=True)
    assert fast.statistics().fast_parked == len(kinds) > 50
    assert (True, 2) in kinds  # parked where two fences overlap: one stop, two visits
    assert (True, 1) in kinds
    assert (False, 1) in kinds  # dwelling: a visit open, its stop not yet announced
    assert (True, 0) in kinds  # a stop away from every site


# -- the selection, threshold by threshold ----------------------------------------------

P = DetectionParams()
M = 1 / (6_371_008.8 * np.pi / 180.0)  # degrees of latitude per metre
T0 = 1_700_000_000_000_000


def tail_at(**kw: object) -> ParkedTail:
    base = {
        "t_us": T0,
        "lon": 0.0,
        "lat": 0.0,
        "speed_kmh": 0.5,
        "first_max_us": T0 + 5_000_000,
        "stop": True,
        "box": (0.0, 0.0, 0.0, 0.0),
        "until_us": FAR_US,
        "sites": (7,),
        "fixes_in": 0,
        "reruns": 0,
        "opened": None,
    }
    base.update(kw)
    return ParkedTail(**base)  # type: ignore[arg-type]


tail = tail_at


def one(
    tl: ParkedTail | None,
    *,
    k: int = 4,
    dt_s: float = 1.0,
    first_dt_s: float = 1.0,
    speed: float = 0.5,
    north_m: float = 0.0,
    inside: list[tuple[int, int]] | None = None,
    near: list[tuple[int, int]] | None = None,
    now_us: int | None = None,
    jump_m: float = 0.0,
    p: DetectionParams = P,
) -> bool:
    """One vehicle's round of ``k`` fixes after its tail (its newest fix where the new ones
    are, or ``jump_m`` south of them): does it take the parked fast path?  (The compiled
    selection and the reference must agree.)"""
    if tl is not None:
        tl = tl._replace(lat=(north_m - jump_m) * M)
    t = T0 + round(first_dt_s * 1e6) + np.arange(k, dtype=np.int64) * round(dt_s * 1e6)
    lat = np.full(k, north_m * M)
    lon = np.zeros(k)
    v = np.full(k, speed)
    # by fix (FleetTracker.feed sorts the pairs by their fix's place in the batch)
    ins = sorted(inside if inside is not None else [(i, 7) for i in range(k)])
    nrs = sorted(near if near is not None else [(i, 7) for i in range(k)])
    in_r = np.array([i for i, _ in ins], dtype=np.int64)
    in_s = np.array([s for _, s in ins], dtype=np.int64)
    nr_r = np.array([i for i, _ in nrs], dtype=np.int64)
    nr_s = np.array([s for _, s in nrs], dtype=np.int64)
    args = (p, [tl], np.array([0, k]), t, lon, lat, v, in_r, in_s, nr_r, nr_s, now_us)
    f1, c1 = select_parked(*args)  # type: ignore[arg-type]
    f2, c2 = reference(*args)  # type: ignore[arg-type]
    assert f1.tolist() == f2.tolist()
    assert c1.tolist() == c2.tolist()
    return bool(f1[0])


def test_a_plain_parked_round_takes_it_and_no_tail_never_does() -> None:
    assert one(tail())
    assert not one(None)


def test_still_means_reported_below_stop_speed_with_an_open_stop_only() -> None:
    below = np.nextafter(P.stop_speed_kmh, 0.0)
    assert one(tail(), speed=below)
    assert not one(tail(), speed=P.stop_speed_kmh)  # the displacement rule is never relied on
    assert not one(tail(), speed=np.nan)  # unknown speed: an unclean step
    # dwelling (no open stop): moving inside the site is fine, until the stop could be due
    assert one(tail(stop=False, until_us=T0 + 10_000_000), speed=8.0)
    assert one(tail(stop=False, until_us=T0 + 4_000_001), k=4)  # newest new fix T0 + 4 s
    assert not one(tail(stop=False, until_us=T0 + 4_000_000), k=4)


def test_the_first_new_fix_within_the_window_bound_and_steps_clean() -> None:
    assert one(tail(first_max_us=T0 + 1_000_000))
    assert not one(tail(first_max_us=T0 + 999_999))
    assert not one(tail(), first_dt_s=0.0)  # not after the newest kept fix
    lim_s = min(P.max_gap_s, P.teleport_check_s) - 1e-3
    far = tail(first_max_us=FAR_US)
    assert one(far, first_dt_s=lim_s)
    assert not one(far, first_dt_s=lim_s + 1e-6)
    assert not one(tail(), k=3, dt_s=0.0)  # duplicate times
    # a jump away from the tail's fix: more than the slack at standstill
    assert one(tail(), jump_m=P.teleport_slack_m - 1.0)
    assert not one(tail(), jump_m=P.teleport_slack_m + 1.0)


def test_within_the_stop_extent_of_its_head_box() -> None:
    limit = P.stop_extent_m - 1.0

    def tail(**kw: object) -> ParkedTail:
        return tail_at(**{"first_max_us": FAR_US, **kw})

    assert one(tail(), north_m=limit - 1e-3, first_dt_s=30.0)
    assert not one(tail(), north_m=limit + 1e-3, first_dt_s=30.0)
    # the farthest corner counts: a box 20 m tall leaves 20 m less beyond its near edge
    assert not one(tail(box=(0.0, 0.0, -20 * M, 0.0)), north_m=limit - 10.0, first_dt_s=30.0)
    # dwelling: no stop, no extent rule
    assert one(tail(stop=False, until_us=FAR_US), north_m=limit + 20.0, first_dt_s=30.0)


def test_inside_each_open_visit_and_no_other_site() -> None:
    two = tail(sites=(3, 7))
    both = [(i, s) for i in range(4) for s in (3, 7)]
    assert one(two, inside=both, near=both)
    assert not one(two, inside=[(i, 7) for i in range(4)], near=both)  # one fix not in 3
    assert not one(two, inside=both[:-1], near=both)
    assert not one(tail(), near=[(i, 7) for i in range(4)] + [(2, 9)])  # another site's margin
    assert not one(tail(), inside=[(i, 7) for i in range(4)] + [(0, 9)])
    assert one(tail(), near=[])  # a fix inside is near: no near pair is fine too
    # an open stop and no open visit: no pair at all
    assert one(tail(sites=()), inside=[], near=[])
    assert not one(tail(sites=()), inside=[], near=[(1, 7)])


def test_the_clock_no_more_than_max_gap_past_the_newest_fix() -> None:
    newest = T0 + 4_000_000
    assert one(tail(), now_us=newest + round(P.max_gap_s * 1e6))
    assert not one(tail(), now_us=newest + round(P.max_gap_s * 1e6) + 1)


def test_candidates_look_parked_by_their_own_fixes() -> None:
    t = T0 + np.arange(6, dtype=np.int64) * 1_000_000
    z = np.zeros(6)
    v = np.array([0.1, 0.1, 0.1, 20.0, 20.0, 20.0])
    e = np.empty(0, np.int64)
    args = (P, [None, None], np.array([0, 3, 6]), t, z, z, v, e, e, e, e, None)
    fast, cand = select_parked(*args)  # type: ignore[arg-type]
    assert fast.tolist() == [False, False]
    assert cand.tolist() == [True, False]
    inside = np.array([3, 4, 5], dtype=np.int64)  # ... unless inside a fence
    args = (P, [None, None], np.array([0, 3, 6]), t, z, z, v, inside, inside, e, e, None)
    assert select_parked(*args)[1].tolist() == [True, True]  # type: ignore[arg-type]


def test_the_window_bound_follows_append_only_k0() -> None:
    """``parked_window``: the window ``_append_only`` would read reaches a fix at least
    ``speed_window_s`` before the newest (so ``plain_still`` answers) while the first new fix
    comes no later than the bound; and none too early in the track."""
    w = round(P.speed_window_s * 1e6)
    t = T0 + np.arange(60, dtype=np.int64) * 1_000_000
    win = parked_window(t, P)
    assert win is not None
    start, first_max = win
    last = int(t[-1])
    for first in (last + 1, first_max):
        k0 = int(t.searchsorted(first - w, side="right")) - 8
        assert k0 - fastpath.LEAD_STEPS >= start
        assert int(t[k0]) <= last - w - 1000
    k0 = int(t.searchsorted(first_max + 1 - w, side="right")) - 8
    assert int(t[k0]) > last - w - 1000  # one microsecond later the window is too short
    assert parked_window(t[:25], P) is None  # too few fixes before the window


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.sampled_from([1, 1000, 500_000, 1_000_000, 7_000_000]), max_size=80))
def test_the_compiled_window_equals_the_reference(steps: list[int]) -> None:
    t = T0 + np.cumsum(np.array([0, *steps], dtype=np.int64))
    assert parked_window(t, P) == fastpath.parked_window_reference(t, P)


def draw_k(data: st.DataObject, values: list[float], k: int) -> list[float]:
    return data.draw(st.lists(st.sampled_from(values), min_size=k, max_size=k))


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    data=st.data(),
)
def test_the_compiled_selection_equals_the_reference(sizes: list[int], data: st.DataObject) -> None:
    """Random batches (speeds around the thresholds, NaN, steps around the slack and the gap
    limit, positions around the extent, pairs of open and other sites) and tails."""
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    n = int(bounds[-1])
    tails: list[ParkedTail | None] = []
    ts, xs, ys, vs = [], [], [], []
    for k in sizes:
        t0 = T0 + data.draw(st.integers(0, 10**9))
        if data.draw(st.booleans()):
            tails.append(
                tail(
                    t_us=t0,
                    speed_kmh=data.draw(st.sampled_from([0.0, 2.9, 3.0, np.nan])),
                    first_max_us=t0 + data.draw(st.integers(0, 3_000_000)),
                    stop=data.draw(st.booleans()),
                    box=(0.0, 10 * M, 0.0, 10 * M),
                    until_us=t0 + data.draw(st.integers(0, 10_000_000)),
                    sites=tuple(data.draw(st.sets(st.integers(0, 3), max_size=3))),
                )
            )
        else:
            tails.append(None)
        steps = draw_k(data, [0, 500_000, 1_000_000, 59_999_000, 60_000_000], k)
        ts.append(t0 + np.cumsum(steps))
        xs.append(draw_k(data, [0.0, 5.0, 45.0, 98.0, 99.0], k))
        ys.append(draw_k(data, [0.0, 3.0, 90.0], k))
        vs.append(draw_k(data, [0.0, 2.9, 3.0, 9.0, np.nan], k))
    t = np.concatenate(ts).astype(np.int64)
    lon, lat = lonlat(np.concatenate(xs), np.concatenate(ys))
    v = np.concatenate(vs).astype(np.float64)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 3)), max_size=3 * n))
    pairs_n = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 3)), max_size=2 * n)
    )
    in_r = np.array(sorted(i for i, _ in pairs), dtype=np.int64)
    in_s = np.array([s for _, s in sorted(pairs)], dtype=np.int64)
    nr_r = np.array(sorted(i for i, _ in pairs_n), dtype=np.int64)
    nr_s = np.array([s for _, s in sorted(pairs_n)], dtype=np.int64)
    now = data.draw(st.one_of(st.none(), st.integers(T0, T0 + 2 * 10**9)))
    args = (P, tails, bounds, t, lon, lat, v, in_r, in_s, nr_r, nr_s, now)
    f1, c1 = select_parked(*args)  # type: ignore[arg-type]
    f2, c2 = reference(*args)  # type: ignore[arg-type]
    assert f1.tolist() == f2.tolist()
    assert c1.tolist() == c2.tolist()


def test_two_units_of_one_vehicle_in_a_round_go_the_usual_way_after_the_first() -> None:
    """A vehicle reported by two units (a unit swapped: each round the old one's fixes, then
    the new one's).  Both groups were selected against the vehicle's tail before the round;
    once the first is fed, the second's selection is stale (its step from the first's newest
    fix was never checked: here a multipath outlier) and it goes the usual way."""
    arrays = build([("park", 0, 500, 3.0, 0.0, 0.5)], 5)
    n = len(arrays["t_us"])
    parts = []
    for k, lo in enumerate(range(0, n, 10)):
        idx = np.arange(lo, min(lo + 10, n))
        if k % 7 == 3:
            arrays["lat"][idx[4]] += 150 * M  # the old unit's last fix of the round: an outlier
        parts.append([("U0", arrays, idx[:5]), ("U1", arrays, idx[5:])])
    rounds = [batch(p) for p in parts]
    unit_map = {"U0": "V0", "U1": "V0"}
    fast = FleetTracker(FENCES.ids, unit_map, PARAMS)
    usual = FleetTracker(FENCES.ids, unit_map, PARAMS, fast=False)
    clock: list[int | None] = [None] * len(rounds)
    got = run_rounds(fast, rounds, clock, with_now=False)
    assert got == run_rounds(usual, rounds, clock, with_now=False)
    assert fast.statistics().fast_parked > 10

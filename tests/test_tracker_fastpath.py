"""The fleet-wide fast path (schedule/fastpath.py) changes nothing reported, round by round.

``FleetTracker(fast=True)`` appends the fixes of vehicles that one vectorised pass proves are
simply driving, without calling :meth:`VehicleTracker.feed`.  The promise: every round's events
(ids, versions, every field) equal those of a fleet without it, whatever the fleet does (driving
at any speed, parked at a site with jitter and multipath outliers, GGA-only stretches, gaps,
jumps), however the rounds cut its data, and with late, re-sent or clock-advanced rounds.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st

from core.fixes import FIX_COLUMNS, FixBatch
from schedule.events import DetectionEvent
from schedule.fastpath import (
    LEAD_STEPS,
    Tail,
    clean_steps,
    select,
    select_reference,
    tail_of,
    tail_of_reference,
)
from schedule.tracker import FleetTracker
from tests.test_visits_properties import FENCES, PARAMS, build, leg
from tests.test_visits_synthetic import TrackBuilder


def batch(parts: list[tuple[str, dict[str, np.ndarray], np.ndarray]]) -> FixBatch:
    """One FixBatch of several units' fixes (``idx`` into each unit's arrays), in that order."""
    cols: dict[str, list[np.ndarray]] = {name: [] for name in FIX_COLUMNS}
    for unit, arrays, idx in parts:
        k = len(idx)
        cols["unit_id"].append(np.full(k, unit))
        cols["t_us"].append(arrays["t_us"][idx])
        cols["recv_us"].append(arrays["t_us"][idx])
        cols["lat"].append(arrays["lat"][idx])
        cols["lon"].append(arrays["lon"][idx])
        cols["speed_kmh"].append(arrays["speed_kmh"][idx])
        cols["course"].append(np.full(k, np.nan))
        cols["quality"].append(np.full(k, 1))
        cols["sats"].append(np.full(k, 8))
        cols["hdop"].append(arrays["hdop"][idx])
        cols["alt_m"].append(np.full(k, np.nan))
        cols["talker"].append(np.full(k, "GP"))
    out = {
        name: np.concatenate(v).astype(FIX_COLUMNS[name]) if v else np.empty(0, FIX_COLUMNS[name])
        for name, v in cols.items()
    }
    return FixBatch(**out)


def run_rounds(
    fleet: FleetTracker, rounds: list[FixBatch], clock: list[int | None], *, with_now: bool
) -> list[list[DetectionEvent]]:
    out = []
    for fixes, lag in zip(rounds, clock, strict=True):
        now = int(fixes.t_us.max()) + 1_000_000 if len(fixes) else None
        events = fleet.feed_matched(fixes, FENCES, now_us=now if with_now else None)
        if lag is not None and now is not None:
            events += fleet.advance(now + lag * 1_000_000)
        out.append(events)
    out.append(fleet.finish())
    return out


drive_leg = st.tuples(st.just("drive"), st.integers(0, 5), st.sampled_from([8, 20, 40, 60, 90]))


@settings(max_examples=60, deadline=None)
@given(
    fleet_legs=st.lists(
        st.lists(st.one_of(leg, drive_leg), min_size=1, max_size=6), min_size=1, max_size=4
    ),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_the_fast_path_reports_what_the_usual_way_reports(
    fleet_legs: list[list[tuple[str, int, object]]], seed: int, data: st.DataObject
) -> None:
    units: list[tuple[str, dict[str, np.ndarray]]] = []
    rng = np.random.default_rng(seed)
    for u, legs in enumerate(fleet_legs):
        arrays = build(legs, seed + u).arrays()
        n = len(arrays["t_us"])
        arrays["t_us"] += data.draw(st.integers(0, 30), label=f"offset {u}") * 1_000_000
        if data.draw(st.booleans(), label=f"GGA-only stretch {u}"):
            lo = data.draw(st.integers(0, n - 1))
            arrays["speed_kmh"][lo : lo + data.draw(st.integers(1, 100))] = np.nan
        if data.draw(st.booleans(), label=f"outliers while driving {u}"):
            hit = rng.random(n) < 0.03
            arrays["lon"][hit] += rng.uniform(-0.002, 0.002, int(hit.sum()))
        units.append((f"U{u}", arrays))
    round_s = data.draw(st.sampled_from([1, 2, 5, 30]), label="round length")
    t_min = min(int(a["t_us"].min()) for _, a in units)
    t_max = max(int(a["t_us"].max()) for _, a in units)
    n_rounds = (t_max - t_min) // (round_s * 1_000_000) + 1
    parts: list[list[tuple[str, dict[str, np.ndarray], np.ndarray]]] = [[] for _ in range(n_rounds)]
    late = data.draw(st.sets(st.integers(0, n_rounds - 1), max_size=4), label="late rounds")
    for unit, arrays in units:
        r = (arrays["t_us"] - t_min) // (round_s * 1_000_000)
        for k in range(n_rounds):
            idx = np.flatnonzero(r == k)
            if not len(idx):
                continue
            to = k
            if k in late:  # store-and-forward: this unit's data of the round comes later
                to = min(k + data.draw(st.integers(1, 40), label="delay"), n_rounds - 1)
            parts[to].append((unit, arrays, idx))
    if data.draw(st.booleans(), label="a round sent twice"):
        k = data.draw(st.integers(0, n_rounds - 1))
        parts.insert(k + 1, list(parts[k]))
    if data.draw(st.booleans(), label="shuffled within rounds"):
        for p in parts:
            rng.shuffle(p)  # type: ignore[arg-type]
    if data.draw(st.booleans(), label="fixes jostled within a unit's part"):
        # a unit's fixes of a round arrive a little out of order (FleetTracker.feed sorts
        # them by time: in order after the newest kept fix, they still take the fast path)
        for p in parts:
            for i, (unit, arrays, idx) in enumerate(p):
                j = np.argsort(np.arange(len(idx)) + rng.uniform(0, 3, len(idx)), kind="stable")
                p[i] = (unit, arrays, idx[j])
    rounds = [batch(p) for p in parts]
    clock = data.draw(
        st.lists(
            st.one_of(st.none(), st.none(), st.sampled_from([1, 200, 400])),
            min_size=len(rounds),
            max_size=len(rounds),
        ),
        label="clock advances",
    )
    with_now = data.draw(st.booleans(), label="feed with now_us")
    note(f"{len(units)} units, {len(rounds)} rounds of {round_s} s, late {sorted(late)}")
    ids = FENCES.ids
    unit_map = {u: f"V{u}" for u, _ in units}
    fast = FleetTracker(ids, unit_map, PARAMS)
    usual = FleetTracker(ids, unit_map, PARAMS, fast=False)
    got = run_rounds(fast, rounds, clock, with_now=with_now)
    want = run_rounds(usual, rounds, clock, with_now=with_now)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"
    for v, tr in fast.vehicles.items():
        other = usual.vehicles[v]
        assert tr.retained_fixes == other.retained_fixes
        assert tr.stats.fixes_in == other.stats.fixes_in


def test_driving_vehicles_take_the_fast_path_and_a_site_visit_does_not() -> None:
    """Two trucks: one drives far from every fence for ten minutes, the other drives to a site
    and parks there.  After the first rounds the driver only appends (no feed, no re-run);
    the parked one goes the usual way and its visit is reported as without the fast path."""
    driver = TrackBuilder(seed=1).start(-3000.0, -3000.0).drive(3000.0, -3000.0, 40.0).arrays()
    parker = TrackBuilder(seed=2).start(-300.0, -300.0).drive(0.0, 0.0, 30.0).park(300).arrays()
    units = [("U0", driver), ("U1", parker)]
    t0 = min(int(a["t_us"][0]) for _, a in units)
    n_rounds = max(len(a["t_us"]) for _, a in units)
    rounds = []
    for k in range(n_rounds):
        lo, hi = t0 + k * 1_000_000, t0 + (k + 1) * 1_000_000
        rounds.append(
            batch([(u, a, np.flatnonzero((a["t_us"] >= lo) & (a["t_us"] < hi))) for u, a in units])
        )
    fast = FleetTracker(FENCES.ids, {"U0": "V0", "U1": "V1"}, PARAMS)
    usual = FleetTracker(FENCES.ids, {"U0": "V0", "U1": "V1"}, PARAMS, fast=False)
    got = run_rounds(fast, rounds, [None] * len(rounds), with_now=False)
    want = run_rounds(usual, rounds, [None] * len(rounds), with_now=False)
    assert got == want
    assert any(ev.vehicle_id == "V1" for evs in got for ev in evs)  # the visit was reported
    d_fast, d_usual = fast.vehicles["V0"].stats, usual.vehicles["V0"].stats
    assert d_fast.fixes_in == d_usual.fixes_in == len(driver["t_us"])
    # the usual way re-runs the driver during its warm-up; the fast path no more than that
    assert d_fast.reruns <= d_usual.reruns
    assert d_fast.appended >= len(driver["t_us"]) - 40
    assert d_fast.fast_path >= len(driver["t_us"]) - 40
    assert d_usual.fast_path == 0
    assert fast.vehicles["V1"].stats.fast_path < len(parker["t_us"]) // 2  # it stood still
    assert fast.vehicles["V0"].fast_tail is not None


def test_a_round_of_fixes_a_little_out_of_order_takes_the_fast_path() -> None:
    """A driving unit whose fixes of each round arrive jostled (a second or two out of order,
    as the simulated day's do) is appended by the fast path as if they came in order."""
    driver = TrackBuilder(seed=1).start(-3000.0, -3000.0).drive(3000.0, -3000.0, 40.0).arrays()
    n = len(driver["t_us"])
    rng = np.random.default_rng(0)
    rounds = []
    for lo in range(0, n, 10):
        idx = np.arange(lo, min(lo + 10, n))
        rounds.append(batch([("U0", driver, idx[np.argsort(idx + rng.uniform(0, 3, len(idx)))])]))
    assert any(bool(np.any(np.diff(r.t_us) < 0)) for r in rounds)  # jostled indeed
    fast = FleetTracker(FENCES.ids, {"U0": "V0"}, PARAMS)
    usual = FleetTracker(FENCES.ids, {"U0": "V0"}, PARAMS, fast=False)
    got = run_rounds(fast, rounds, [None] * len(rounds), with_now=False)
    assert got == run_rounds(usual, rounds, [None] * len(rounds), with_now=False)
    assert fast.vehicles["V0"].stats.fast_path >= len(rounds) - 5
    assert fast.vehicles["V0"].stats.late_fixes == 0


def test_a_step_is_clean_only_when_no_frame_can_call_it_a_jump() -> None:
    """The conservative step rule: a plausible 1 s step at 40 km/h is clean; a 200 m jump,
    an unknown speed, a gap-sized step and a step back in time are not."""
    m = 1 / 111_195.0  # degrees of latitude per metre
    t0 = np.array([0, 0, 0, 0, 5_000_000], np.int64)
    t1 = np.array([1_000_000, 1_000_000, 1_000_000, 400_000_000, 4_000_000], np.int64)
    lat0 = np.zeros(5)
    lat1 = np.array([11 * m, 200 * m, 11 * m, 11 * m, 11 * m])
    v = np.array([40.0, 40.0, np.nan, 40.0, 40.0])
    got = clean_steps(t0, np.zeros(5), lat0, v, t1, np.zeros(5), lat1, v, PARAMS)
    assert got.tolist() == [True, False, False, False, False]


def test_the_tail_counts_the_clean_steps_before_the_newest_fix() -> None:
    n = LEAD_STEPS + 4
    t = np.arange(n, dtype=np.int64) * 1_000_000
    lat = np.arange(n) * 11 / 111_195.0
    lon = np.zeros(n)
    v = np.full(n, 40.0)
    tail = tail_of(t, lon, lat, v, PARAMS, fixes_in=n, reruns=1)
    assert tail is not None
    assert tail.clean == n - 1
    assert tail.t_us == int(t[-1])
    lat[3] += 300 / 111_195.0  # a multipath fix: two unclean steps
    tail = tail_of(t, lon, lat, v, PARAMS, fixes_in=n, reruns=1)
    assert tail is not None
    assert tail.clean == n - 1 - 4
    assert tail_of(t[:LEAD_STEPS], lon[:LEAD_STEPS], lat[:LEAD_STEPS], v[:LEAD_STEPS], PARAMS,
                   fixes_in=1, reruns=0) is None  # fmt: skip


def _pick(data: st.DataObject, values: list[float], k: int) -> list[float]:
    return data.draw(st.lists(st.sampled_from(values), min_size=k, max_size=k))


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5), data=st.data())
def test_the_compiled_selection_equals_the_reference(sizes: list[int], data: st.DataObject) -> None:
    """select (compiled) and select_reference (numpy) on random batches: speeds around the
    moving threshold and NaN, steps around the slack, the speed limit and the gap limit,
    pairs, tails with too few clean steps or none, a clock around max_gap_s."""
    t0 = 1_700_000_000_000_000
    bounds = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
    n = int(bounds[-1])
    tails: list[Tail | None] = []
    ts, ys, vs = [], [], []
    for k in sizes:
        start = t0 + data.draw(st.integers(0, 10**9))
        kind = data.draw(st.sampled_from(["none", "short", "tail"]))
        v0 = data.draw(st.sampled_from([2.9, 3.0, 40.0, np.nan]))
        clean = LEAD_STEPS - 1 if kind == "short" else LEAD_STEPS
        tails.append(None if kind == "none" else Tail(start, 0.0, 0.0, v0, clean, 0, 0))
        steps = _pick(data, [0, 500_000, 1_000_000, 59_999_000, 60_000_000], k)
        ts.append(start + np.cumsum(steps))
        ys.append(np.cumsum(_pick(data, [0.0, 11.0, 30.0, 80.0, 400.0], k)))
        vs.append(_pick(data, [0.0, 2.9, 3.0, 5.0, 40.0, 300.0, np.nan], k))
    t = np.concatenate(ts).astype(np.int64)
    lat = np.concatenate(ys) / 111_195.0
    lon = np.zeros(n)
    v = np.concatenate(vs).astype(np.float64)
    paired = np.zeros(n, dtype=bool)
    paired[data.draw(st.lists(st.integers(0, n - 1), max_size=2))] = True
    now = data.draw(st.one_of(st.none(), st.integers(t0, t0 + 2 * 10**9)))
    args = (PARAMS, tails, bounds, t, lon, lat, v, paired, now)
    f1, c1 = select(*args)
    f2, c2 = select_reference(*args)
    assert f1.tolist() == f2.tolist()
    assert c1.tolist() == c2.tolist()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(0, LEAD_STEPS + 4))
def test_the_compiled_tail_equals_the_reference(data: st.DataObject, n: int) -> None:
    """tail_of (compiled clean count) and tail_of_reference (numpy) on random steps around the
    slack, the speed limit and the gap limit, with unknown speeds."""
    steps = _pick(data, [0, 500_000, 1_000_000, 59_999_000, 60_000_000], n)
    t = (1_700_000_000_000_000 + np.cumsum(steps)).astype(np.int64)
    lat = np.cumsum(_pick(data, [0.0, 11.0, 30.0, 80.0, 400.0], n)) / 111_195.0
    v = np.array(_pick(data, [0.0, 3.0, 40.0, 300.0, np.nan], n), dtype=np.float64)
    args = (t, np.zeros(n), lat, v, PARAMS)
    got = tail_of(*args, fixes_in=n, reruns=1)
    want = tail_of_reference(*args, fixes_in=n, reruns=1)
    assert repr(got) == repr(want)  # (a NaN speed equals itself)

"""The compiled checkpoint searches (schedule/checkpoint_kernel.py) give exactly the numpy rules'
answers: the same checkpoints, the same kept pairs, the same per-site masks.

Two sources of inputs: generated motions (still/jump/gap flags, unknown speeds, exact zero
steps, NaN positions, thresholds hit on the nose, pairs of several sites, any active/start/until)
and every re-run of a stretch of a simulated day (tests/support/day.py: a small
``fleetwatch simulate`` day made afresh), where each kernel call of the tracker is
checked against the numpy reference with the very arguments the re-run passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedule import checkpoint_kernel
from schedule.motion import BURST_FIXES, Motion
from schedule.params import DetectionParams
from schedule.tracker import _CHECKPOINT_LEAD_FIXES, FleetTracker, VehicleTracker
from tests.support.day import MatchedDay

P = DetectionParams()

# steps near the thresholds: drift 2*50 m, crawl 10 km/h, stop 3 km/h, confirm 20/30 s
_DT = st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 301.0])
_STEP = st.one_of(
    st.just(0.0),  # frozen / duplicate position
    st.sampled_from([1.0, 5.0, 25.0, 50.0, 100.0, -30.0]),
    st.floats(-200.0, 200.0, allow_nan=False),
)
_SPEED = st.one_of(
    st.just(float("nan")),
    st.sampled_from([0.0, 2.9, 3.0, 9.99, 10.0, 40.0]),
    st.floats(0.0, 120.0),
)


@st.composite
def motions(draw: Any) -> tuple[Motion, npt.NDArray[np.int64]]:
    """A Motion over n kept fixes (keep = all) and their fix times."""
    n = draw(st.integers(0, 90))
    dt = np.array(draw(st.lists(_DT, min_size=n, max_size=n)))
    t_s = np.concatenate(([0.0], np.cumsum(dt[1:]))) if n else np.empty(0)
    sx = draw(st.lists(_STEP, min_size=n, max_size=n))
    sy = draw(st.lists(_STEP, min_size=n, max_size=n))
    x, y = np.cumsum(sx), np.cumsum(sy)
    if n and draw(st.integers(0, 9)) == 0:  # a NaN position (NaN propagation of the maxima)
        k = draw(st.integers(0, n - 1))
        x[k] = np.nan
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    sparse = st.lists(st.integers(0, 9).map(lambda v: v == 0), min_size=n, max_size=n)
    still = np.array(draw(flags), dtype=bool)
    jump = np.array(draw(sparse), dtype=bool)
    gap = np.array(draw(sparse), dtype=bool) | (dt > 300.0)
    speed = np.array(draw(st.lists(_SPEED, min_size=n, max_size=n)), dtype=np.float64)
    reported = (
        None
        if draw(st.booleans())
        else np.array(draw(st.lists(_SPEED, min_size=n, max_size=n)), dtype=np.float64)
    )
    m = Motion(
        keep=np.arange(n),
        t_s=t_s.astype(np.float64),
        x=x.astype(np.float64),
        y=y.astype(np.float64),
        speed_kmh=speed,
        still=still,
        jump=jump,
        gap=gap,
        dropped_outliers=0,
        dropped_frozen=0,
        reported_kmh=reported,
    )
    kept_t = (1_700_000_000_000_000 + np.round(t_s * 1e6)).astype(np.int64)
    return m, kept_t


@st.composite
def pairs(draw: Any, n: int) -> npt.NDArray[np.int64]:
    """(2, K) kept-index/site pairs over 4 sites, in runs (a fence is entered and left), some
    duplicated, in time order, in runs of time order (a backlog after newer fixes) or in any
    order."""
    if n == 0:
        return np.empty((2, 0), np.int64)
    rows: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(0, 6))):
        site = draw(st.integers(0, 3))
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(a, min(n, a + 30)))
        rows += [(k, site) for k in range(a, b)]
    if rows and draw(st.booleans()):
        rows.append(rows[draw(st.integers(0, len(rows) - 1))])
    if draw(st.booleans()):  # in time order, as live pairs come
        rows.sort()
    order = draw(st.permutations(range(len(rows)))) if draw(st.booleans()) else range(len(rows))
    return np.array([rows[i] for i in order], dtype=np.int64).reshape(-1, 2).T.copy()


def _tracker() -> VehicleTracker:
    return VehicleTracker("v", ["a", "b", "c", "d"], P)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_structural_equals_numpy(data: st.DataObject) -> None:
    m, kept_t = data.draw(motions())
    n = len(kept_t)
    near_any = np.array(
        data.draw(st.lists(st.integers(0, 4).map(lambda v: v == 0), min_size=n, max_size=n)),
        dtype=bool,
    )
    active = data.draw(st.integers(0, n))
    tr = _tracker()
    assert tr._checkpoints_in(m, near_any, kept_t, active) == tr._checkpoints_in_numpy(
        m, near_any, kept_t, active
    )


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_settled_equals_numpy(data: st.DataObject) -> None:
    m, kept_t = data.draw(motions())
    n = len(kept_t)
    kin = data.draw(pairs(n))
    knear = (
        np.concatenate((kin, data.draw(pairs(n))), axis=1)
        if data.draw(st.booleans())
        else (data.draw(pairs(n)))
    )
    active = data.draw(st.integers(0, n))
    start = data.draw(st.integers(0, n + 2))
    until = data.draw(st.integers(0, n + 2))
    tr = _tracker()
    got = tr._settled_checkpoints(m, kin, knear, kept_t, start, until, active)
    assert got == tr._settled_checkpoints_numpy(m, kin, knear, kept_t, start, until, active)


def _rerun_pairs_numpy(
    kept_t: npt.NDArray[np.int64],
    in_t: npt.NDArray[np.int64],
    in_site: npt.NDArray[np.int32],
    near_t: npt.NDArray[np.int64],
    near_site: npt.NDArray[np.int32],
    active: int,
) -> tuple[Any, ...]:
    """What ``VehicleTracker._rerun`` computed in numpy before ``rerun_pairs``."""
    kin = VehicleTracker._kept_pairs_numpy(kept_t, in_t, in_site)
    knear = VehicleTracker._kept_pairs_numpy(kept_t, near_t, near_site)
    nk = len(kept_t)
    sites = sorted(set(kin[1][kin[0] >= active].tolist()))
    near_any = np.zeros(nk, dtype=bool)
    near_any[knear[0]] = True
    near_any[kin[0]] = True
    return kin, knear, near_any, sites


def _assert_rerun_pairs(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    kin, knear, near_any, sites = got
    w_kin, w_knear, w_near_any, w_sites = want
    assert kin.dtype == w_kin.dtype == np.int64
    np.testing.assert_array_equal(kin, w_kin)
    np.testing.assert_array_equal(knear, w_knear)
    np.testing.assert_array_equal(near_any, w_near_any)
    assert sites.tolist() == w_sites


@st.composite
def timed_pairs(draw: Any, kept_t: npt.NDArray[np.int64]) -> tuple[Any, Any]:
    """Pairs by fix time: mostly kept fixes' times, some of dropped fixes or before the first
    kept one; in time order, in time order with a backlog after it, or in any order."""
    t = st.integers(-5, 205)
    if len(kept_t):
        t = st.one_of(st.sampled_from(kept_t.tolist()), st.sampled_from(kept_t.tolist()), t)
    rows = draw(st.lists(st.tuples(t, st.integers(0, 3)), max_size=80))
    how = draw(st.sampled_from(["sorted", "backlog", "any"]))
    if how != "any":
        rows.sort()
    if how == "backlog" and rows:
        cut = draw(st.integers(0, len(rows)))
        rows = rows[cut:] + rows[:cut]
    pt = np.array([r[0] for r in rows], dtype=np.int64)
    ps = np.array([r[1] for r in rows], dtype=np.int32)
    return pt, ps


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_rerun_pairs_equal_numpy(data: st.DataObject) -> None:
    """Pairs by fix time onto kept fixes, as ``_kept_pairs`` and the re-run's per-site masks
    did in numpy."""
    n = data.draw(st.integers(0, 40))
    times = sorted(data.draw(st.sets(st.integers(0, 200), min_size=n, max_size=n)))
    kept_t = np.array(times, dtype=np.int64)
    in_t, in_s = data.draw(timed_pairs(kept_t))
    nr_t, nr_s = data.draw(timed_pairs(kept_t))
    active = data.draw(st.integers(0, n))
    got = checkpoint_kernel.rerun_pairs(kept_t, in_t, in_s, nr_t, nr_s, active)
    _assert_rerun_pairs(got, _rerun_pairs_numpy(kept_t, in_t, in_s, nr_t, nr_s, active))
    np.testing.assert_array_equal(
        VehicleTracker._kept_pairs(kept_t, in_t, in_s),
        VehicleTracker._kept_pairs_numpy(kept_t, in_t, in_s),
    )


def _motion_of(
    x: Any, y: Any, t_s: Any, spd: Any, still: Any, jump: Any, gap: Any, rep: Any = None
) -> Motion:
    return Motion(np.arange(len(t_s)), t_s, x, y, spd, still, jump, gap, 0, 0, rep)


def test_day_reruns_equal_numpy(monkeypatch: pytest.MonkeyPatch, simulated_day: MatchedDay) -> None:
    """Every kernel call of the re-runs over the first 120,000 fixes of a simulated day (at
    ~40 new fixes per vehicle a round, the live size) equals the numpy reference on the same
    arguments."""
    batch, ins, nrs, sids, units = simulated_day
    ref = _tracker()
    calls = {"structural": 0, "settled": 0, "rerun_pairs": 0, "nonempty": 0}
    structural, settled = checkpoint_kernel.structural, checkpoint_kernel.settled
    rerun_pairs = checkpoint_kernel.rerun_pairs

    def check_structural(*a: Any) -> Any:
        *arrays, near_any, active, _pv = a
        got = structural(*a)
        kept_t = np.arange(len(arrays[0]), dtype=np.int64)
        want = ref._checkpoints_in_numpy(_motion_of(*arrays), near_any, kept_t, active)
        assert got.tolist() == want
        calls["structural"] += 1
        calls["nonempty"] += bool(want)
        return got

    def check_settled(*a: Any) -> Any:
        *arrays, kin, knear, start, until, active, _pv = a
        got = settled(*a)
        kept_t = np.arange(len(arrays[0]), dtype=np.int64)
        m = _motion_of(*arrays)
        want = ref._settled_checkpoints_numpy(m, kin, knear, kept_t, start, until, active)
        assert got.tolist() == want
        calls["settled"] += 1
        calls["nonempty"] += bool(want)
        return got

    def check_rerun_pairs(*a: Any) -> Any:
        got = rerun_pairs(*a)
        _assert_rerun_pairs(got, _rerun_pairs_numpy(*a))
        calls["rerun_pairs"] += 1
        return got

    monkeypatch.setattr(checkpoint_kernel, "structural", check_structural)
    monkeypatch.setattr(checkpoint_kernel, "settled", check_settled)
    monkeypatch.setattr(checkpoint_kernel, "rerun_pairs", check_rerun_pairs)
    # the re-runs' separate kernel calls (schedule/rerun_kernel.py composes the same kernels
    # in one compiled call, checked against these in tests/test_rerun_kernel.py)
    monkeypatch.setattr(VehicleTracker, "_detect_compiled", lambda *a: None)
    fleet = FleetTracker(sids, units, P)
    # ~40 new fixes per vehicle a round, as 2,000-fix batches give the benchmarks' 50 vehicles
    n, bf = min(120_000, len(batch)), 40 * len(units)
    for a in range(0, n, bf):
        b = min(a + bf, n)
        si = (ins[0] >= a) & (ins[0] < b)
        sn = (nrs[0] >= a) & (nrs[0] < b)
        fleet.feed(
            batch.take(np.arange(a, b)),
            np.stack((ins[0][si] - a, ins[1][si])),
            np.stack((nrs[0][sn] - a, nrs[1][sn])),
        )
    fleet.finish()
    assert calls["rerun_pairs"] > 500
    assert calls["settled"] > 300
    assert calls["nonempty"] > 300


def test_param_vector_reads_the_params() -> None:
    """The thresholds the kernels read are the params' (not a stale cached vector)."""
    q = DetectionParams(drift_radius_m=70.0, stop_merge_m=20.0, move_confirm_fixes=5)
    v = checkpoint_kernel.param_vector(q, _CHECKPOINT_LEAD_FIXES, BURST_FIXES)
    assert v[checkpoint_kernel.P_DRIFT2] == 140.0
    assert v[checkpoint_kernel.P_FAR2] == 140.0
    assert v[checkpoint_kernel.P_NEED_FIXES] == 6
    assert v[checkpoint_kernel.P_BURST] == BURST_FIXES
    assert not v.flags.writeable


def test_warm_up_compiles() -> None:
    checkpoint_kernel.warm_up()
    for kernel in (checkpoint_kernel.settled, checkpoint_kernel.structural):
        assert kernel.signatures

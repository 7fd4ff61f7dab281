"""The compiled stop walk (schedule/stops_kernel.py) gives, record for record and bit for bit,
the answer of the numpy chain walk it replaced (``detect_stops_reference``), and is driven by
the same transition table.

Inputs: Motion objects drawn directly (any mix of still runs, jitter, jumps, gaps, NaN speeds,
creeping, back-to-back stops), tracks drawn as segments and passed through ``motion()``, and
windows of the simulated day (tests/support/day.py: made afresh, decoded and matched).
"""

from __future__ import annotations

import itertools
from dataclasses import astuple, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedule import stops_kernel as k
from schedule.motion import BURST_FIXES, Motion, Track, motion
from schedule.params import DetectionParams
from schedule.stops import (
    _ANCHOR_FIXES,
    INPUT_CODE,
    STATE_CODE,
    TABLE,
    TRANSITIONS,
    IllegalTransition,
    StopInput,
    StopRecord,
    StopState,
    _median,
    _param_row,
    _reported,
    detect_stops,
    detect_stops_reference,
)
from tests.support.day import MatchedDay

PARAMS = (
    DetectionParams(),
    DetectionParams(stop_min_s=60.0, move_confirm_fixes=1, stop_merge_gap_s=300.0),
    DetectionParams(stop_min_s=30.0, speed_window_s=60.0, move_confirm_s=5.0, stop_extent_m=40.0),
)
T0_US = 1_767_225_600_000_000


def bits(records: list[StopRecord]) -> list[tuple[Any, ...]]:
    """Every field, floats as their exact bits (NaN compares, and one ulp does not pass)."""
    return [tuple(v.hex() if isinstance(v, float) else v for v in astuple(r)) for r in records]


def assert_same(
    m: Motion, p: DetectionParams, *, active_from: int, now_us: int | None
) -> list[StopRecord]:
    ref_pending: list[int] = []
    got_pending: list[int] = []
    ref = detect_stops_reference(
        m, p, T0_US, active_from=active_from, now_us=now_us, pending_out=ref_pending
    )
    got = detect_stops(m, p, T0_US, active_from=active_from, now_us=now_us, pending_out=got_pending)
    assert bits(got) == bits(ref)
    assert got_pending == ref_pending
    types = [tuple(type(v) for v in astuple(r)) for r in got]
    assert types == [tuple(type(v) for v in astuple(r)) for r in ref]
    return ref


def kernel_status(m: Motion, p: DetectionParams, *, active_from: int, stale: bool) -> int:
    status: int = k.detect(
        m.t_s, m.x, m.y, m.speed_kmh, _reported(m), m.still, m.jump, m.gap, TABLE,
        _param_row(p), active_from, stale,
    )[0]  # fmt: skip
    return status


# --- drawn Motion objects -------------------------------------------------------------------


@st.composite
def motions(draw: st.DrawFn) -> Motion:
    """A Motion built segment by segment: parked (jitter, drift reported as speed, a stray
    non-still fix), creeping (inside or beyond stop_extent_m), driving, re-parking nearby
    (back-to-back stops), jumps and gaps; NaN reported speeds anywhere."""
    t: list[float] = []
    xs: list[float] = []
    ys: list[float] = []
    still: list[bool] = []
    jump: list[bool] = []
    gap: list[bool] = []
    rep: list[float] = []
    x = draw(st.floats(-500, 500))
    y = draw(st.floats(-500, 500))
    now = draw(st.floats(0, 100))
    nan_share = draw(st.sampled_from([0.0, 0.3, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def add(px: float, py: float, dt: float, is_still: bool, v: float, split: str = "") -> None:
        nonlocal now
        now += dt
        t.append(now)
        xs.append(px + 0.0)  # no -0.0: a median's zero sign would depend on sort stability
        ys.append(py + 0.0)
        still.append(is_still)
        jump.append(split == "jump")
        gap.append(split == "gap")
        rep.append(float("nan") if rng.random() < nan_share else v)

    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["park", "park", "creep", "drive", "jump", "gap", "repark"]))
        count = draw(st.integers(1, 60))
        dt = float(draw(st.sampled_from([1, 2, 5, 10, 30])))
        if kind in ("park", "repark"):
            if kind == "repark":
                x += draw(st.floats(-60, 60))
                y += draw(st.floats(-60, 60))
            sigma = draw(st.sampled_from([0.0, 3.0, 10.0, 40.0]))
            stray = draw(st.sampled_from([0.0, 0.05, 0.3]))
            for _ in range(count):
                moving = bool(rng.random() < stray)
                v = float(rng.uniform(3, 9)) if moving else float(rng.uniform(0, 3))
                add(x + rng.normal(0, sigma), y + rng.normal(0, sigma), dt, not moving, v)
        elif kind == "creep":
            step_m = draw(st.sampled_from([0.5, 2.0, 5.0, 12.0]))
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(count):
                x += step_m * np.cos(angle)
                y += step_m * np.sin(angle)
                add(x, y, dt, bool(rng.random() < 0.9), float(rng.uniform(0, 6)))
        elif kind == "drive":
            for _ in range(count):
                x += rng.normal(0, 15 * dt)
                y += rng.normal(0, 15 * dt)
                add(x, y, dt, bool(rng.random() < 0.05), float(rng.uniform(10, 60)))
        elif kind == "jump":
            x += draw(st.floats(-2000, 2000))
            add(x, y, dt, draw(st.booleans()), float(rng.uniform(0, 40)), "jump")
        else:
            add(x, y, draw(st.floats(61, 2000)), draw(st.booleans()), 0.0, "gap")
    n = len(t)
    rep_a = np.array(rep)
    speed = np.where(np.isnan(rep_a), rng.uniform(0, 20, n), rep_a)
    speed[rng.random(n) < 0.05] = np.nan  # an estimate can be unknown too
    jump_a = np.array(jump, dtype=bool)
    gap_a = np.array(gap, dtype=bool)
    jump_a[0] = gap_a[0] = False  # motion() never marks the step before the first fix
    return Motion(
        keep=np.arange(n, dtype=np.intp),
        t_s=np.array(t),
        x=np.array(xs),
        y=np.array(ys),
        speed_kmh=speed,
        still=np.array(still, dtype=bool),
        jump=jump_a,
        gap=gap_a,
        dropped_outliers=0,
        dropped_frozen=0,
        reported_kmh=None if draw(st.booleans()) and nan_share == 1.0 else rep_a,
    )


def chaos_motion(
    rng: np.random.Generator,
    n: int,
    spread: float,
    p_still: float,
    p_split: float,
    p_nan: float = 0.0,
) -> Motion:
    """Any masks at all over three places (paths the segments above rarely take: splits inside
    still runs, one-fix runs, a chain cut before its own piece)."""
    places = rng.uniform(-150, 150, (3, 2))
    which = rng.integers(0, 3, n)
    rep = rng.uniform(0, 8, n)
    rep[rng.random(n) < 0.3] = np.nan
    t_s = np.cumsum(rng.choice([1.0, 5.0, 10.0, 30.0, 400.0], n, p=[0.3, 0.3, 0.3, 0.07, 0.03]))
    x = places[which, 0] + rng.normal(0, spread, n) + 0.0
    x[rng.random(n) < p_nan] = np.nan  # not from motion(), but the medians must still agree
    return Motion(
        keep=np.arange(n, dtype=np.intp),
        t_s=t_s,
        x=x,
        y=places[which, 1] + rng.normal(0, spread, n) + 0.0,
        speed_kmh=rng.uniform(0, 15, n),
        still=rng.random(n) < p_still,
        jump=rng.random(n) < p_split,
        gap=rng.random(n) < p_split,
        dropped_outliers=0,
        dropped_frozen=0,
        reported_kmh=rep,
    )


@st.composite
def chaos(draw: st.DrawFn) -> Motion:
    return chaos_motion(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        draw(st.integers(1, 80)),
        draw(st.sampled_from([1.0, 20.0, 80.0])),
        draw(st.sampled_from([0.5, 0.8, 0.95])),
        draw(st.sampled_from([0.0, 0.03, 0.15])),
        draw(st.sampled_from([0.0, 0.0, 0.02])),
    )


def calls(m: Motion, data: st.DataObject) -> tuple[DetectionParams, int, int | None]:
    n = len(m.t_s)
    p = data.draw(st.sampled_from(PARAMS))
    active_from = data.draw(st.one_of(st.just(0), st.integers(-3, n + 3)))
    last_us = T0_US + round(float(m.t_s[-1]) * 1e6)
    now_us = data.draw(
        st.one_of(
            st.none(),
            st.integers(last_us, last_us + round(2 * p.max_gap_s * 1e6)),
            st.just(last_us + round(p.max_gap_s * 1e6)),  # at the staleness boundary
        )
    )
    return p, active_from, now_us


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(m=motions(), data=st.data())
def test_kernel_equals_reference_on_drawn_motions(m: Motion, data: st.DataObject) -> None:
    p, active_from, now_us = calls(m, data)
    assert_same(m, p, active_from=active_from, now_us=now_us)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(m=chaos(), data=st.data())
def test_kernel_equals_reference_on_any_masks(m: Motion, data: st.DataObject) -> None:
    p, active_from, now_us = calls(m, data)
    assert_same(m, p, active_from=active_from, now_us=now_us)


def test_the_walk_itself_answers_random_motions() -> None:
    """The equalities above are the kernel's, not the reference's fallback: away from a hypot
    within 2**-48 of a threshold (never, for continuous random positions) it decides alone."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        m = chaos_motion(rng, int(rng.integers(1, 120)), 20.0, 0.9, 0.03)
        stale = bool(rng.random() < 0.5)
        for p in PARAMS:
            assert kernel_status(m, p, active_from=0, stale=stale) == k.DONE


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    segs=st.lists(
        st.tuples(
            st.sampled_from(["park", "drive", "creep", "gap"]),
            st.integers(5, 80),
            st.floats(0.5, 40),
        ),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**32 - 1),
    with_speed=st.booleans(),
    data=st.data(),
)
def test_kernel_equals_reference_after_motion(
    segs: list[tuple[str, int, float]], seed: int, with_speed: bool, data: st.DataObject
) -> None:
    """Tracks through the real feature pass: its still/jump/gap masks and speed estimates."""
    rng = np.random.default_rng(seed)
    t, xs, ys, v = [0.0], [0.0], [0.0], [0.0]
    for kind, count, size in segs:
        for _ in range(count):
            dt = 10.0 if kind != "gap" else 400.0
            step = {"park": 0.0, "drive": 10 * size, "creep": size / 4, "gap": 10 * size}[kind]
            t.append(t[-1] + dt)
            xs.append(xs[-1] + step + rng.normal(0, 5))
            ys.append(ys[-1] + rng.normal(0, 5))
            v.append(step / dt * 3.6 + abs(rng.normal(0, 1)))
    t_us = T0_US + (np.array(t) * 1e6).astype(np.int64)
    lat = 55.7 + np.array(ys) / 111_000.0
    lon = 37.6 + np.array(xs) / 62_700.0
    track = Track.from_arrays(t_us, lon, lat, np.array(v) if with_speed else None)
    p = data.draw(st.sampled_from(PARAMS))
    m = motion(track, p)
    if len(m.t_s):
        _, active_from, now_us = calls(m, data)
        assert_same(m, p, active_from=active_from, now_us=now_us)


@given(
    values=st.lists(
        st.sampled_from([0.0, 1.0, 2.5, np.nan, np.inf, -np.inf, 1e300, -7.0])
        | st.floats(allow_nan=True, allow_infinity=True).map(lambda v: v + 0.0),
        min_size=1,
        max_size=120,
    ),
    pad=st.integers(0, 3),
)
def test_kernel_median_is_the_reference_median(values: list[float], pad: int) -> None:
    """Short (insertion sort), long (selection) and NaN-holding (numpy's sort order) slices."""
    a = np.array([5.0] * pad + values + [5.0] * pad)
    got = k._median(a, pad, pad + len(values), np.empty(max(len(a), k.SHORT)))
    want = _median(a[pad : pad + len(values)])
    assert got.hex() == want.hex() or (got == want == 0.0)  # a zero's sign: sort stability


def test_empty_and_one_fix() -> None:
    p = PARAMS[0]
    empty = motion(Track.from_arrays([], [], []), p)
    pending: list[int] = []
    assert detect_stops(empty, p, T0_US, pending_out=pending) == []
    assert pending == []
    one = motion(Track.from_arrays([T0_US], [37.6], [55.7], [0.0]), p)
    assert_same(one, p, active_from=0, now_us=T0_US + 10**9)
    assert_same(one, p, active_from=0, now_us=None)


def parked_then_moved(second_x: float) -> Motion:
    """Parked 30 fixes at (0, 0), one stray fix, parked again at (second_x, 0), then gone."""
    n = 70
    x = np.concatenate((np.zeros(30), [second_x / 2], np.full(30, second_x), 100 + np.arange(9.0)))
    still = np.concatenate((np.ones(30, bool), [False], np.ones(30, bool), np.zeros(9, bool)))
    return Motion(
        keep=np.arange(n, dtype=np.intp),
        t_s=np.arange(n, dtype=np.float64) * 10.0,
        x=x,
        y=np.zeros(n),
        speed_kmh=np.where(still, 0.0, 30.0),
        still=still,
        jump=np.zeros(n, bool),
        gap=np.zeros(n, bool),
        dropped_outliers=0,
        dropped_frozen=0,
        reported_kmh=np.where(still, 0.0, 30.0),
    )


@pytest.mark.parametrize("second_x", [30.0, np.nextafter(30.0, 0.0), np.nextafter(30.0, 99.0)])
def test_a_distance_at_the_join_radius_is_decided_as_the_reference_does(
    second_x: float,
) -> None:
    """At exactly stop_radius_m the kernel hands the call to the reference (CPython's hypot
    and libm's might differ there); one ulp on either side too, and the answers still agree."""
    m = parked_then_moved(second_x)
    p = replace(PARAMS[0], stop_merge_gap_s=0.0)  # two stops stay two
    assert kernel_status(m, p, active_from=0, stale=False) == k.FALLBACK
    recs = assert_same(m, p, active_from=0, now_us=None)
    assert len(recs) == (1 if second_x <= 30.0 else 2)  # joined across the stray fix, or not


def test_far_from_the_radius_the_kernel_decides() -> None:
    m = parked_then_moved(12.0)
    assert kernel_status(m, PARAMS[0], active_from=0, stale=False) == k.DONE
    assert len(assert_same(m, PARAMS[0], active_from=0, now_us=None)) == 1


# --- the table ------------------------------------------------------------------------------


def test_encoded_table_is_the_transition_table() -> None:
    assert sorted(STATE_CODE.values()) == list(range(len(StopState)))
    assert sorted(INPUT_CODE.values()) == list(range(len(StopInput)))
    assert TABLE.shape == (len(StopState), len(StopInput))
    for state, inp in itertools.product(StopState, StopInput):
        nxt = TRANSITIONS.get((state, inp))
        want = k.ILLEGAL if nxt is None else STATE_CODE[nxt]
        assert TABLE[STATE_CODE[state], INPUT_CODE[inp]] == want


def test_kernel_constants_are_the_python_ones() -> None:
    assert k.BURST == BURST_FIXES
    assert k.ANCHOR == _ANCHOR_FIXES


def long_stop() -> Motion:
    return motion(
        Track.from_arrays(
            T0_US + np.arange(60, dtype=np.int64) * 10_000_000,
            np.concatenate((np.full(40, 37.6), 37.6 + np.arange(1, 21) * 3e-3)),
            np.full(60, 55.7),
            np.concatenate((np.zeros(40), np.full(20, 40.0))),
        ),
        PARAMS[0],
    )


def test_the_walk_is_driven_by_the_table() -> None:
    """An edge removed from the table is refused, as ``step`` refuses it; an edge redirected
    changes the answer: the kernel has no transitions of its own."""
    m = long_stop()
    assert len(detect_stops(m, PARAMS[0], T0_US)) == 1
    no_edge = dict(TRANSITIONS)
    del no_edge[(StopState.PENDING, StopInput.LONG_ENOUGH)]
    with pytest.raises(IllegalTransition, match=r"PENDING.*LONG_ENOUGH"):
        detect_stops(m, PARAMS[0], T0_US, table=k.encode_table(no_edge, STATE_CODE, INPUT_CODE))
    never = {**TRANSITIONS, (StopState.PENDING, StopInput.LONG_ENOUGH): StopState.PENDING}
    table = k.encode_table(never, STATE_CODE, INPUT_CODE)
    pending: list[int] = []
    assert detect_stops(m, PARAMS[0], T0_US, table=table, pending_out=pending) == []
    assert pending == [0]  # never long enough: still pending at the end


def test_warm_up_runs() -> None:
    k.warm_up()


# --- the simulated day ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def day_tracks(simulated_day: MatchedDay) -> list[Track]:
    """Each unit's fixes of the simulated day, in fix-time order without duplicate times."""
    batch, units = simulated_day.batch, simulated_day.units
    tracks = []
    for unit in sorted(units):
        sel = np.flatnonzero(batch.unit_id == unit)
        sel = sel[np.argsort(batch.t_us[sel], kind="stable")]
        t = batch.t_us[sel]
        sel = sel[np.concatenate(([True], t[1:] > t[:-1]))]
        f64: dict[str, npt.NDArray[np.float64]] = {
            c: getattr(batch, c)[sel].astype(np.float64) for c in ("speed_kmh", "hdop")
        }
        tracks.append(
            Track(batch.t_us[sel], batch.lon[sel], batch.lat[sel], f64["speed_kmh"], f64["hdop"])
        )
    return tracks


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_kernel_equals_reference_on_day_windows(
    day_tracks: list[Track], data: st.DataObject
) -> None:
    track = data.draw(st.sampled_from(day_tracks))
    length = data.draw(st.sampled_from([40, 200, 600, 3000]) | st.integers(1, 5000))
    a = data.draw(st.integers(0, max(len(track) - length, 0)))
    sel = slice(a, a + length)
    window = Track(
        track.t_us[sel], track.lon[sel], track.lat[sel], track.speed_kmh[sel], track.hdop[sel]
    )
    p = data.draw(st.sampled_from(PARAMS))
    m = motion(window, p)
    if not len(m.t_s):
        return
    _, active_from, now_us = calls(m, data)
    assert_same(m, p, active_from=active_from, now_us=now_us)
    assert kernel_status(m, p, active_from=active_from, stale=False) == k.DONE


def test_whole_day_per_unit(day_tracks: list[Track]) -> None:
    """Every unit's whole day in one call (hundreds of stops each, merges included)."""
    p = PARAMS[0]
    total = 0
    for track in day_tracks[::5]:
        m = motion(track, p)
        total += len(assert_same(m, p, active_from=0, now_us=None))
    assert total > 0


def test_params_row_follows_the_params_object() -> None:
    """The cached row is per params object: a changed threshold is seen on the next call."""
    m = long_stop()
    p = PARAMS[0]
    assert len(detect_stops(m, p, T0_US)) == 1
    longer = replace(p, stop_min_s=10_000.0)
    assert detect_stops(m, longer, T0_US) == []
    assert len(detect_stops(m, p, T0_US)) == 1

"""The compiled motion features equal the numpy ones bit for bit.

:func:`schedule.motion.motion` (the kernels of :mod:`schedule.motion_kernel`) against
:func:`schedule.motion.motion_reference` (the numpy code it replaced, kept as the
specification): every field of :class:`Motion`, arrays compared byte for byte (so NaN
positions, infinities and signed zeros too) and with their dtypes, on generated tracks built
to hit each rule at its threshold (standing and driving random walks, unknown speeds, gaps,
teleports, 1-5-fix outlier bursts, frozen runs ending in jumps, duplicate positions, 0-2 fixes,
thresholds drawn too) and on windows of a simulated day run through the production decoder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from numba import njit

from ingest.nmea import Decoder
from schedule import motion_kernel
from schedule.motion import (
    _DEG,
    _EARTH_R_M,
    BURST_FIXES,
    Motion,
    Track,
    _drop_outlier_bursts,
    motion,
    motion_reference,
)
from schedule.params import DetectionParams
from simulators.formats import iter_payloads, unit_files
from simulators.scenario import ScenarioParams, write_scenario

LON0, LAT0 = 37.6, 55.75
M_PER_DEG = _EARTH_R_M * _DEG
T0_US = 1_795_000_000 * 1_000_000

#: A track as a list of segments: (kind, fixes, size, step seconds).
#: stand: noise of ``size`` m around the current point; drive: ``size`` m/s along a heading;
#: teleport: one fix ``size`` m away; burst: ``fixes`` fixes ``size`` m off, then back;
#: frozen: ``fixes`` exact repeats of the last position; gap: the next step lasts ``size`` s.
KINDS = ("stand", "drive", "teleport", "burst", "frozen", "gap")
STEP_S = st.sampled_from([1.0, 1.0, 5.0, 0.5, 0.001, 20.0, 59.0, 61.0])
SEGMENT = st.tuples(
    st.sampled_from(KINDS),
    st.integers(1, 40),
    st.floats(0.0, 400.0, allow_nan=False),
    STEP_S,
)
#: How a track reports speed: always, never (GGA-only), or with holes and odd values.
SPEED_MODES = st.sampled_from(["reported", "none", "holes", "odd"])


def build_track(segments: list[tuple[str, int, float, float]], speed_mode: str, seed: int) -> Track:
    """The fixes the segments describe (positions in metres around LON0, LAT0)."""
    rng = np.random.default_rng(seed)
    t, x, y, v = [0.0], [0.0], [0.0], [0.0]
    pending_gap = 0.0
    heading = float(rng.uniform(0, 2 * math.pi))

    def add(dt: float, px: float, py: float, speed_ms: float) -> None:
        nonlocal pending_gap
        t.append(t[-1] + (pending_gap or dt))
        pending_gap = 0.0
        x.append(px)
        y.append(py)
        v.append(speed_ms * 3.6)

    for kind, k, size, dt in segments:
        cx, cy = x[-1], y[-1]
        if kind == "stand":
            for _ in range(k):
                add(dt, cx + rng.normal(0, size / 40), cy + rng.normal(0, size / 40), 0.3)
        elif kind == "drive":
            speed = size / 10  # 0-40 m/s
            for _ in range(k):
                heading += float(rng.normal(0, 0.2))
                step = speed * (pending_gap or dt)
                add(dt, x[-1] + step * math.cos(heading), y[-1] + step * math.sin(heading), speed)
        elif kind == "teleport":
            ang = float(rng.uniform(0, 2 * math.pi))
            add(dt, cx + 50 * size * math.cos(ang), cy + 50 * size * math.sin(ang), 0.0)
        elif kind == "burst":
            ang = float(rng.uniform(0, 2 * math.pi))
            for _ in range(min(k, 5)):
                add(dt, cx + size * math.cos(ang), cy + size * math.sin(ang), 0.2)
            add(dt, cx + rng.normal(0, 3), cy + rng.normal(0, 3), 0.2)
        elif kind == "frozen":
            for _ in range(k):
                add(dt, cx, cy, v[-1] / 3.6)
        else:
            pending_gap = 61.0 + 10 * size  # 61 s - 67 min
    n = len(t)
    speed = np.asarray(v, dtype=np.float64)
    speed += rng.normal(0, 0.5, n)
    if speed_mode == "none":
        speed[:] = np.nan
    elif speed_mode == "holes":
        speed[rng.random(n) < 0.4] = np.nan
    elif speed_mode == "odd":
        odd = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.9999, 3.0, 10.0, 1e6, -5.0])
        pick = rng.random(n) < 0.3
        speed[pick] = odd[rng.integers(0, len(odd), int(pick.sum()))]
    t_us = T0_US + np.round(np.asarray(t) * 1e6).astype(np.int64)
    t_us = t_us + np.arange(n)  # strictly increasing even after rounding
    lon = LON0 + np.asarray(x) / (M_PER_DEG * math.cos(math.radians(LAT0)))
    lat = LAT0 + np.asarray(y) / M_PER_DEG
    return Track.from_arrays(t_us, lon, lat, speed, np.full(n, 1.0))


@st.composite
def params(draw: st.DrawFn) -> DetectionParams:
    """Defaults, or thresholds moved to where the generated steps sit near them."""
    if draw(st.booleans()):
        return DetectionParams()
    return DetectionParams(
        speed_window_s=draw(st.sampled_from([0.0, 1.0, 5.0, 20.0, 60.0])),
        teleport_check_s=draw(st.sampled_from([0.0, 1.0, 20.0, 60.0, 600.0])),
        max_gap_s=draw(st.sampled_from([1.0, 20.0, 300.0])),
        teleport_slack_m=draw(st.sampled_from([0.0, 10.0, 40.0])),
        stop_radius_m=draw(st.sampled_from([1.0, 5.0, 30.0])),
        stop_speed_kmh=draw(st.sampled_from([0.0, 3.0, 20.0])),
        crawl_speed_kmh=draw(st.sampled_from([0.0, 10.0])),
        gap_rejoin_m=draw(st.sampled_from([0.0, 100.0])),
        max_speed_kmh=draw(st.sampled_from([50.0, 250.0])),
    )


def assert_same(got: Motion, want: Motion) -> None:
    """Every field equal; arrays byte for byte with the same dtype and length."""
    for name in Motion.__slots__:
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray), name
            assert a.dtype == b.dtype, (name, a.dtype, b.dtype)
            assert a.shape == b.shape, (name, a.shape, b.shape)
            if a.tobytes() != b.tobytes():
                u = np.dtype(f"u{a.dtype.itemsize}")
                bad = np.flatnonzero(a.view(u) != b.view(u))
                raise AssertionError(f"{name} differs at {bad[:10]}: {a[bad[:5]]} != {b[bad[:5]]}")
        else:
            assert type(a) is type(b), (name, a, b)
            assert a == b, (name, a, b)


@given(
    st.lists(SEGMENT, max_size=12),
    SPEED_MODES,
    st.integers(0, 2**32 - 1),
    params(),
)
def test_compiled_motion_is_the_reference_on_generated_tracks(
    segments: list[tuple[str, int, float, float]],
    speed_mode: str,
    seed: int,
    p: DetectionParams,
) -> None:
    track = build_track(segments, speed_mode, seed)
    want = motion_reference(track, p)
    note(f"n={len(track)} dropped={want.dropped_outliers},{want.dropped_frozen}")
    assert_same(motion(track, p), want)


@given(st.integers(0, 2), SPEED_MODES, st.integers(0, 2**32 - 1), params())
def test_compiled_motion_is_the_reference_on_tiny_tracks(
    n: int, speed_mode: str, seed: int, p: DetectionParams
) -> None:
    full = build_track([("drive", 3, 100.0, 1.0)], speed_mode, seed)
    columns = (full.t_us, full.lon, full.lat, full.speed_kmh, full.hdop)
    cut = Track(*(np.ascontiguousarray(a[:n]) for a in columns))
    assert_same(motion(cut, p), motion_reference(cut, p))


def test_the_generated_tracks_reach_every_rule() -> None:
    """The generator is not vacuous: its tracks drop bursts and frozen runs and flag jumps,
    gaps and standing fixes (the property above compares those paths, not only plain ones)."""
    p = DetectionParams()
    seen = {"outliers": 0, "frozen": 0, "jump": 0, "gap": 0, "still": 0, "inf": 0}
    rng = np.random.default_rng(7)
    for seed in range(300):
        kinds = rng.choice(KINDS, size=8)
        segs = [(str(k), int(rng.integers(1, 30)), float(rng.uniform(0, 400)), 1.0) for k in kinds]
        track = build_track(segs, str(rng.choice(["reported", "none", "holes", "odd"])), seed)
        m = motion(track, p)
        assert_same(m, motion_reference(track, p))
        seen["outliers"] += m.dropped_outliers
        seen["frozen"] += m.dropped_frozen
        seen["jump"] += int(m.jump.sum())
        seen["gap"] += int(m.gap.sum())
        seen["still"] += int(m.still.sum())
        seen["inf"] += int(np.isinf(m.speed_kmh).sum())
    assert all(v > 0 for v in seen.values()), seen


def test_the_kernel_measures_metres_as_local_xy_does() -> None:
    assert M_PER_DEG == motion_kernel.M_PER_DEG


def test_other_dtypes_take_the_reference() -> None:
    full = build_track([("drive", 20, 100.0, 1.0), ("burst", 2, 90.0, 1.0)], "holes", 3)
    odd = Track(full.t_us, full.lon.astype(np.float32), full.lat, full.speed_kmh, full.hdop)
    assert_same(motion(odd, DetectionParams()), motion_reference(odd, DetectionParams()))


# --- the outlier-burst rule: compiled against its Python specification ----------------------

#: Tracks for the burst rule: mostly what it acts on (multipath bursts, frozen runs, real jumps)
#: between standing jitter and driving.
BURSTY_SEGMENT = st.tuples(
    st.sampled_from(["burst", "burst", "stand", "stand", "teleport", "frozen", "drive", "gap"]),
    st.integers(1, 12),
    st.floats(0.0, 400.0, allow_nan=False),
    STEP_S,
)


def burst_rule_both_ways(
    track: Track, p: DetectionParams, extra_bad: list[int]
) -> tuple[tuple[bytes, int], tuple[bytes, int], int]:
    """(Python keep and count, compiled keep and count, raw jumps) on the kernel's own frame,
    the raw jump flags plus ``extra_bad`` (the rule must agree on any candidate set: it
    re-checks each one from the last kept fix)."""
    cos_lat0 = np.cos(float(track.lat[0]) * _DEG)
    raw, bad, n_bad = motion_kernel.frame(
        track.t_us,
        track.lon,
        track.lat,
        track.speed_kmh,
        M_PER_DEG,
        cos_lat0,
        p.teleport_slack_m,
        p.max_speed_kmh,
        p.teleport_check_s,
    )
    bad[extra_bad] = True
    t_s, x, y, v0 = (raw[r].copy() for r in (motion_kernel.RAW_T, motion_kernel.RAW_X,
                                             motion_kernel.RAW_Y, motion_kernel.RAW_V))  # fmt: skip
    keep_py = np.ones(len(track), dtype=bool)
    n_py = _drop_outlier_bursts(t_s, x, y, v0, p, bad.copy(), keep_py)
    keep_nb = np.ones(len(track), dtype=bool)
    n_nb = motion_kernel.drop_outlier_bursts(
        raw, bad, keep_nb, BURST_FIXES, p.teleport_slack_m, p.max_speed_kmh, p.teleport_check_s
    )
    return (keep_py.tobytes(), n_py), (keep_nb.tobytes(), n_nb), n_bad


@settings(max_examples=400, deadline=None)
@given(
    st.lists(BURSTY_SEGMENT, min_size=1, max_size=14),
    SPEED_MODES,
    st.integers(0, 2**32 - 1),
    params(),
    st.data(),
)
def test_compiled_burst_rule_is_the_python_one(
    segments: list[tuple[str, int, float, float]],
    speed_mode: str,
    seed: int,
    p: DetectionParams,
    data: st.DataObject,
) -> None:
    """The same ``keep`` mask and the same count, fix for fix (motion() no longer runs the
    Python rule, so this is where the two are compared directly)."""
    track = build_track(segments, speed_mode, seed)
    extra = data.draw(st.lists(st.integers(0, len(track) - 1), max_size=4))
    want, got, n_bad = burst_rule_both_ways(track, p, extra)
    note(f"n={len(track)} raw jumps={n_bad} dropped={want[1]}")
    assert got[1] == want[1]
    assert got[0] == want[0]


def test_the_burst_tracks_reach_every_reading() -> None:
    """The burst generator is not vacuous: the rule drops fixes on its tracks, keeps some raw
    jumps (real ones), and drops more than the first forward reading would (the scores
    decide), so the property above compares every branch."""
    p = DetectionParams()
    rng = np.random.default_rng(11)
    dropped = kept_jumps = 0
    for seed in range(200):
        kinds = rng.choice(["burst", "burst", "stand", "stand", "teleport", "frozen"], size=10)
        segs = [(str(k), int(rng.integers(1, 12)), float(rng.uniform(0, 400)), 1.0) for k in kinds]
        track = build_track(segs, "reported" if seed % 2 else "none", seed)
        want, got, n_bad = burst_rule_both_ways(track, p, [])
        assert got == want
        dropped += want[1]
        kept_jumps += n_bad > 0 and want[1] == 0
    assert dropped > 100, dropped
    assert kept_jumps > 0


def test_the_burst_rule_measures_with_cpythons_hypot() -> None:
    """Where libm's hypot and CPython's differ in the last bit, the rule follows CPython's:
    fix 2 lies at exactly the slack from fix 0 by ``math.hypot`` (so it is back, and the
    outlier between them goes) but just beyond it by libm's.  Random tracks almost never put
    a distance on a threshold to the bit; this puts one there."""
    rng = np.random.default_rng(5)
    for dx, dy in rng.uniform(1, 5, (20_000, 2)).tolist():
        if float(np.hypot(dx, dy)) > math.hypot(dx, dy):
            break
    else:
        pytest.fail("no pair where libm's hypot rounds above CPython's")
    slack = math.hypot(dx, dy)
    p = DetectionParams(teleport_slack_m=slack)
    xs = [0.0, 200.0, dx, 900.0, 1800.0, 2700.0, 3600.0]
    ys = [0.0, 0.0, dy, 0.0, 0.0, 0.0, 0.0]
    n = len(xs)
    raw = np.empty((5, n))
    raw[motion_kernel.RAW_T] = np.arange(n, dtype=np.float64)
    raw[motion_kernel.RAW_X] = xs
    raw[motion_kernel.RAW_Y] = ys
    raw[motion_kernel.RAW_V] = np.nan  # no speed: the slack alone
    raw[motion_kernel.RAW_D] = np.nan  # (unused by the rule)
    bad = np.zeros(n, dtype=bool)
    bad[1] = True
    keep_py = np.ones(n, dtype=bool)
    n_py = _drop_outlier_bursts(*(raw[r].copy() for r in range(4)), p, bad, keep_py)
    keep_nb = np.ones(n, dtype=bool)
    n_nb = motion_kernel.drop_outlier_bursts(
        raw, bad, keep_nb, BURST_FIXES, slack, p.max_speed_kmh, p.teleport_check_s
    )
    assert n_py == 1
    assert keep_py.tolist() == [True, False, True, True, True, True, True]
    assert (n_nb, keep_nb.tolist()) == (n_py, keep_py.tolist())


@njit(cache=False)
def _py_hypot_all(a: Any, b: Any) -> Any:
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = motion_kernel.py_hypot(a[i], b[i])
    return out


def test_compiled_hypot_is_cpythons_not_libms() -> None:
    """py_hypot equals math.hypot bit for bit on pairs of every scale (metres, random bit
    patterns, one leg a billionth of the other, subnormals), where libm's hypot (np.hypot)
    differs from math.hypot on some of them (else this would prove nothing)."""
    rng = np.random.default_rng(3)
    n = 100_000
    a = np.concatenate(
        [
            rng.uniform(-500, 500, n),
            rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64),
            rng.uniform(-100, 100, n),
            rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-320, -300, n),
        ]
    )
    b = np.concatenate(
        [
            rng.uniform(-500, 500, n),
            rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64),
            a[2 * n : 3 * n] * rng.uniform(-1e-9, 1e-9, n),
            rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-320, -300, n),
        ]
    )
    want = np.array([math.hypot(u, w) for u, w in zip(a.tolist(), b.tolist(), strict=True)])
    got = _py_hypot_all(a, b)
    assert got.tobytes() == want.tobytes()  # NaN: CPython's and the kernel's are both math.nan
    with np.errstate(invalid="ignore"):
        assert (np.hypot(a, b) != want).sum() > 0


@given(st.floats(width=64), st.floats(width=64))
def test_compiled_hypot_is_cpythons_on_any_pair(a: float, b: float) -> None:
    got, want = motion_kernel.py_hypot(a, b), math.hypot(a, b)
    assert math.isnan(got) == math.isnan(want)
    if not math.isnan(want):
        assert np.float64(got).tobytes() == np.float64(want).tobytes()


# --- windows of a simulated day, through the production decoder ------------------------------


@pytest.fixture(scope="module")
def day_tracks(tmp_path_factory: pytest.TempPathFactory) -> list[Track]:
    """Each unit's fixes of a two-vehicle multipath day (decoded, sorted, deduplicated)."""
    out: Path = tmp_path_factory.mktemp("scenario-motion")
    write_scenario(
        ScenarioParams(
            seed=5,
            sites=40,
            vehicles=2,
            noise_model="multipath",
            jam_rate=0.3,
            slow_unit_fraction=0.5,
            clock_off_units=0,
            silent_units=0,
        ),
        out,
    )
    rows = [(r, u, p) for u, f in unit_files(out).items() for r, p in iter_payloads(f)]
    fixes = Decoder().decode([u for _, u, _ in rows], [p for *_, p in rows], [r for r, *_ in rows])
    b = fixes.fixes
    tracks = []
    for unit in np.unique(b.unit_id).tolist():
        idx = np.flatnonzero(b.unit_id == unit)
        t, first = np.unique(b.t_us[idx], return_index=True)
        sel = idx[first]
        tracks.append(
            Track.from_arrays(
                t,
                b.lon[sel],
                b.lat[sel],
                b.speed_kmh[sel].astype(np.float64),
                b.hdop[sel].astype(np.float64),
            )
        )
    return tracks


def window(track: Track, a: int, n: int) -> Track:
    sl = slice(a, a + n)
    columns = (track.t_us, track.lon, track.lat, track.speed_kmh, track.hdop)
    return Track(*(a[sl] for a in columns))


def test_compiled_motion_is_the_reference_on_day_windows(day_tracks: list[Track]) -> None:
    """Windows of 40, 600 and 3,000 fixes (the tracker's append and re-run sizes) tiled over
    the whole day, each unit with its speeds and without (a GGA-only unit)."""
    p = DetectionParams()
    dropped = compared = 0
    for track in day_tracks:
        gga = Track(track.t_us, track.lon, track.lat, np.full(len(track), np.nan), track.hdop)
        for tr in (track, gga):
            for size, stride in ((40, 97), (600, 450), (3000, 2600)):
                for a in range(0, max(len(tr) - size, 0) + 1, stride):
                    w = window(tr, a, size)
                    want = motion_reference(w, p)
                    assert_same(motion(w, p), want)
                    dropped += want.dropped_outliers + want.dropped_frozen
                    compared += 1
    assert compared > 500
    assert dropped > 0  # the day's outliers went through the burst rule


@given(st.data())
def test_compiled_motion_is_the_reference_on_random_day_windows(
    day_tracks: list[Track], data: st.DataObject
) -> None:
    track = data.draw(st.sampled_from(day_tracks))
    n = data.draw(st.integers(0, 3000))
    a = data.draw(st.integers(0, max(len(track) - n, 0)))
    w = window(track, a, n)
    p = data.draw(params())
    assert_same(motion(w, p), motion_reference(w, p))

"""The append-round kernels (schedule/append_kernel.py) answer exactly as their numpy references.

``plain_still`` must equal :func:`schedule.tracker._plain_still` bit for bit (None where it says
None) on windows with gaps, jumps, unknown speeds, duplicate positions and speeds at the
thresholds; ``within_extent`` must equal ``within_extent_reference``; and the checkpoint
compiled search of ``_checkpoint_while_driving`` (``drive_checkpoints``) must place the very
checkpoints ``motion`` and ``_checkpoints_in`` place (trackers with and without it keep the
same checkpoints, round by round, on tracks with gaps, jumps, GGA-only stretches and
outliers).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule import append_kernel
from schedule.motion import Track, motion
from schedule.tracker import VehicleTracker, _plain_still
from tests.test_visits_properties import FENCES, PARAMS, build, draw_chunks, leg
from tests.test_visits_synthetic import TrackBuilder, feed_all

M_LAT = 1 / 111_195.0  # degrees of latitude per metre (about)

step = st.tuples(
    st.sampled_from([0.001, 0.5, 1.0, 1.0, 2.0, 3.0, 20.0, 59.0, 61.0, 299.0, 301.0]),  # dt s
    st.sampled_from([0.0, 0.0, 0.5, 3.0, 10.0, 29.9, 30.0, 30.1, 45.0, 300.0, 2000.0]),  # metres
    st.floats(0, 2 * np.pi),  # heading
    st.one_of(
        st.sampled_from([0.0, 2.9, 3.0, 3.0, 3.1, 9.9, 10.0, 40.0, 120.0]),
        st.floats(0, 130),
    ),  # reported speed
)

#: creeping at about the stop thresholds: plain windows whose fixes are still or not by a hair
creep = st.tuples(
    st.sampled_from([1.0, 2.0, 3.0]),
    st.sampled_from([0.0, 1.0, 2.5, 3.0, 5.0, 12.0]),
    st.sampled_from([0.0, 0.1]),
    st.sampled_from([0.5, 2.9, 3.0, 3.1, 9.9, 10.0]),
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    kind = draw(st.sampled_from([step, creep, st.one_of(step, creep)]))
    steps = draw(st.lists(kind, min_size=2, max_size=60))
    lat0 = draw(st.sampled_from([0.0, 55.75, -33.9, 69.6]))
    lon0 = draw(st.sampled_from([0.0, 37.61, 151.2, -179.99]))
    t = [1_700_000_000_000_000]
    x, y = [0.0], [0.0]
    v = [draw(st.sampled_from([0.0, 3.0, 5.0, 40.0]))]
    unknown = draw(st.booleans())  # some speeds NaN or inf (then motion() must judge)
    for dt, d, h, sp in steps:
        t.append(t[-1] + max(round(dt * 1e6), 1))
        x.append(x[-1] + d * np.cos(h))
        y.append(y[-1] + d * np.sin(h))
        v.append(draw(st.sampled_from([sp, np.nan, np.inf])) if unknown else sp)
    lat = lat0 + np.array(y) * M_LAT
    lon = lon0 + np.array(x) * M_LAT / np.cos(np.radians(lat0))
    return np.array(t, np.int64), lon, lat, np.array(v)


def kernel_plain_still(
    t: np.ndarray, lon: np.ndarray, lat: np.ndarray, v: np.ndarray, k0: int, n_old: int
) -> np.ndarray | None:
    """The kernel as _append_only calls it: old columns from k0, new ones after n_old."""
    p = PARAMS
    out = np.empty(len(t) - n_old + 1, dtype=bool)
    ok = append_kernel.plain_still(
        t[:n_old], lon[:n_old], lat[:n_old], v[:n_old], k0, t[n_old:], lon[n_old:], lat[n_old:],
        v[n_old:], float(np.cos(float(lat[k0]) * (np.pi / 180.0))), p.stop_speed_kmh,
        p.crawl_speed_kmh, p.stop_radius_m, p.speed_window_s, min(p.max_gap_s, p.teleport_check_s),
        p.teleport_slack_m, p.max_speed_kmh, out,
    )  # fmt: skip
    return out if ok else None


@settings(max_examples=400, deadline=None)
@given(w=windows(), data=st.data())
def test_plain_still_equals_the_numpy_reference(
    w: tuple[np.ndarray, ...], data: st.DataObject
) -> None:
    t, lon, lat, v = w
    n = len(t)
    n_old = data.draw(st.integers(1, n - 1), label="old fixes")
    k0 = data.draw(st.integers(0, n_old - 1), label="window start")
    want = _plain_still(t[k0:], lon[k0:], lat[k0:], v[k0:], n_old - k0 - 1, PARAMS)
    got = kernel_plain_still(t, lon, lat, v, k0, n_old)
    note(f"want {want}, got {got}")
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.tolist() == want.tolist()


@settings(max_examples=300, deadline=None)
@given(w=windows(), data=st.data())
def test_plain_still_is_motions_still_where_it_answers(
    w: tuple[np.ndarray, ...], data: st.DataObject
) -> None:
    """The reference is itself held to motion(): where it answers, motion() over the same
    window keeps every fix and calls the same fixes still (the append round's proofs rest on
    that; it once missed motion()'s crawl clause)."""
    t, lon, lat, v = w
    first = data.draw(st.integers(0, len(t) - 1), label="first")
    want = _plain_still(t, lon, lat, v, first, PARAMS)
    if want is None:
        return
    m = motion(Track(t, lon, lat, v, np.ones(len(t))), PARAMS)
    assert len(m.keep) == len(t)
    assert m.still[first:].tolist() == want.tolist()


def test_plain_still_sees_a_window_the_reference_calls_plain() -> None:
    """Not vacuous: a truck parked with a little jitter is plain and still throughout."""
    rng = np.random.default_rng(3)
    n = 40
    t = np.arange(n, dtype=np.int64) * 2_000_000
    lat = 55.75 + rng.normal(0, 2, n) * M_LAT
    lon = 37.61 + rng.normal(0, 2, n) * M_LAT
    v = np.full(n, 0.5)
    got = kernel_plain_still(t, lon, lat, v, 0, 30)
    assert got is not None
    assert got.all()
    v[35] = 50.0  # reports driving, though it moved no farther than the stop radius: moving,
    v[36] = 9.9  # as motion() says (issue 11 #12); just under crawl speed: still
    got = kernel_plain_still(t, lon, lat, v, 0, 30)
    want = _plain_still(t, lon, lat, v, 29, PARAMS)
    assert got is not None
    assert want is not None
    assert got.tolist() == want.tolist()
    assert not got[35 - 29]
    assert got[36 - 29]
    creeping = 55.75 + np.arange(n) * 3.0 * M_LAT  # 3 m/s at exactly stop_speed_kmh: moving
    speed = np.full(n, PARAMS.stop_speed_kmh)
    got = kernel_plain_still(t // 2, lon * 0 + 37.61, creeping, speed, 0, 30)
    want = _plain_still(t // 2, lon * 0 + 37.61, creeping, speed, 29, PARAMS)
    assert want is not None
    assert got is not None
    assert got.tolist() == want.tolist() == [False] * 11
    lat[36] += 500 * M_LAT  # a jump: motion() must judge
    assert kernel_plain_still(t, lon, lat, v, 0, 30) is None


@settings(max_examples=300, deadline=None)
@given(
    box=st.tuples(st.floats(-1, 1), st.floats(0, 0.002), st.floats(-60, 60), st.floats(0, 0.002)),
    offsets=st.lists(
        st.tuples(st.one_of(st.floats(-0.003, 0.003), st.just(np.nan)), st.floats(-0.003, 0.003)),
        max_size=30,
    ),
    limit=st.sampled_from([99.0, 29.0, 0.0]),
)
def test_within_extent_equals_the_numpy_reference(
    box: tuple[float, float, float, float], offsets: list[tuple[float, float]], limit: float
) -> None:
    lon_min, w, lat_min, h = box
    b = (lon_min, lon_min + w, lat_min, lat_min + h)
    lon = np.array([lon_min + dx for dx, _ in offsets], dtype=np.float64)
    lat = np.array([lat_min + dy for _, dy in offsets], dtype=np.float64)
    cos0 = float(np.cos(b[2] * (np.pi / 180.0)))
    want = append_kernel.within_extent_reference(b, lon, lat, limit)
    assert bool(append_kernel.within_extent(*b, lon, lat, cos0, limit)) == want


def checkpoints_per_round(
    arrays: dict[str, np.ndarray], chunks: list[np.ndarray]
) -> list[list[int]]:
    tracker = VehicleTracker("V", FENCES.ids, PARAMS)
    out = []
    for idx in chunks:
        feed_all(tracker, arrays, FENCES, [idx], finish=False)
        out.append(list(tracker._checkpoints))
    return out


@settings(max_examples=60, deadline=None)
@given(
    legs=st.lists(leg, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_the_compiled_drive_search_places_the_checkpoints_motion_places(
    legs: list[tuple[str, int, object]], seed: int, data: st.DataObject
) -> None:
    """Round by round, a tracker whose drive-checkpoint search always runs motion() keeps
    the very checkpoints the compiled search keeps."""
    arrays = build(legs, seed).arrays()
    n = len(arrays["t_us"])
    if data.draw(st.booleans(), label="GGA-only stretch"):
        lo = data.draw(st.integers(0, n - 1))
        arrays["speed_kmh"][lo : lo + data.draw(st.integers(1, 200))] = np.nan
    chunks = draw_chunks(data, n, max_step=120)
    with_check = checkpoints_per_round(arrays, chunks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(append_kernel, "drive_checkpoints", lambda *a: -1)
        without = checkpoints_per_round(arrays, chunks)
    assert with_check == without


def test_the_compiled_search_answers_while_driving_and_at_a_site() -> None:
    """Not vacuous: driving off and away from every fence the kernel answers (and places
    checkpoints), slowing down into a site it answers "none" without motion()."""
    b = TrackBuilder(seed=5).start(-3000, 0).drive(0, 0, 40).park(100).drive(-3000, 0, 40)
    arrays = b.arrays()
    calls: list[int] = []
    real = append_kernel.drive_checkpoints

    def spy(*a: object) -> int:
        got = int(real(*a))  # type: ignore[arg-type]
        calls.append(got)
        return got

    n = len(arrays["t_us"])
    chunks = [np.arange(i, min(i + 30, n)) for i in range(0, n, 30)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(append_kernel, "drive_checkpoints", spy)
        kept = checkpoints_per_round(arrays, chunks)
    assert 0 in calls  # none, decided without motion()
    assert any(c > 0 for c in calls)  # found by the kernel
    assert len(kept[-1]) > 1


def _drive(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` fixes 3 s apart driving east at 50 km/h (about 42 m a step): clean steps."""
    t = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 3_000_000
    lat = np.full(n, 55.0)
    lon = 37.0 + np.arange(n) * 41.7 * M_LAT / np.cos(np.radians(55.0))
    return t, lon, lat, np.full(n, 50.0)


def _search(pairs: np.ndarray, hint: np.ndarray, k: int = 5) -> int:
    t, lon, lat, speed = _drive()
    out = np.empty(len(t), dtype=np.int64)
    no_pairs = np.empty(0, dtype=np.int64)
    no_hint = np.zeros(4, dtype=np.int64)
    return int(
        append_kernel.drive_checkpoints(
            t, lon, lat, speed, 0, k, pairs, no_pairs, hint, no_hint,
            float(np.cos(np.radians(55.0))), PARAMS.crawl_speed_kmh, PARAMS.stop_speed_kmh,
            round(min(PARAMS.max_gap_s, PARAMS.teleport_check_s) * 1e6) - 1000,
            PARAMS.teleport_slack_m, PARAMS.max_speed_kmh, 6,
            max(PARAMS.exit_confirm_fixes, PARAMS.move_confirm_fixes) + 1,
            max(PARAMS.exit_confirm_s, PARAMS.move_confirm_s), 2 * PARAMS.drift_radius_m, out,
        )
    )  # fmt: skip


def test_a_pair_hint_skips_only_the_pairs_it_proves_older() -> None:
    """The drive search starts each pair table's scan at the re-run's hint (the first pair
    not older than the hint's time) only while the hint is for this very table (its data
    address, a length it has not shrunk below) and the search starts no earlier than the
    hint's time; any other hint scans the whole table, so no pair is ever missed."""
    t, *_ = _drive()
    lo = int(t[5])
    # a pair on every fix of the search: nothing may be a checkpoint
    pairs = np.concatenate((t[:3], t[5:]))  # older pairs first, as the re-run left them
    assert _search(pairs, np.zeros(4, dtype=np.int64)) == 0
    assert _search(np.empty(0, dtype=np.int64), np.zeros(4, dtype=np.int64)) > 0  # not vacuous
    addr, n = pairs.ctypes.data, len(pairs)
    # a hint that (wrongly) calls every pair older: obeyed only when it is valid...
    assert _search(pairs, np.array([addr, n, lo, n], dtype=np.int64)) > 0  # it is used
    # ...not for a table at another address, a shorter table, or an earlier search start
    other = pairs.copy()
    assert _search(other, np.array([addr, n, lo, n], dtype=np.int64)) == 0
    assert _search(pairs[: n - 1], np.array([addr, n, lo, n], dtype=np.int64)) == 0
    assert _search(pairs, np.array([addr, n, lo + 1, n], dtype=np.int64)) == 0
    # a true hint (the three older pairs skipped) changes nothing
    assert _search(pairs, np.array([addr, n, lo, 3], dtype=np.int64)) == 0


def test_the_tracker_hands_the_drive_search_its_tables_hints() -> None:
    """Not vacuous in the tracker: driving between fences, some drive searches get a hint
    taken from the very pair table they scan (so they skip its older pairs)."""
    b = TrackBuilder(seed=5).start(-3000, 0).drive(0, 0, 40).park(100).drive(-3000, 0, 40)
    b = b.drive(0, 0, 40).park(100).drive(3000, 0, 40).drive(-3000, 0, 40)
    arrays = b.arrays()
    matched: list[bool] = []
    real = append_kernel.drive_checkpoints

    def spy(*a: np.ndarray) -> int:
        for pairs, hint in ((a[6], a[8]), (a[7], a[9])):
            matched.append(bool(len(pairs)) and pairs.ctypes.data == int(hint[0]))
        return int(real(*a))  # type: ignore[arg-type]

    n = len(arrays["t_us"])
    chunks = [np.arange(i, min(i + 30, n)) for i in range(0, n, 30)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(append_kernel, "drive_checkpoints", spy)
        checkpoints_per_round(arrays, chunks)
    assert any(matched)

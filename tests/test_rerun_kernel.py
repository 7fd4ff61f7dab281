"""A re-run's detection in one compiled call (schedule/rerun_kernel.py) finds exactly what the
separate calls find (``VehicleTracker._detect_slow``, its reference): the same visits (after
``drop_dominated``), stops, pending chain, kept fix times, checkpoints, stop sites and figures,
and the open stop's site counts.

Each re-run is checked on its own arguments: ``_detect_compiled`` is wrapped so that every call
also runs the slow path on the same motion and compares the two.  Inputs: generated tracks over
overlapping fences (a visit dominated by its neighbour's, parked jitter, gaps, GGA-only
stretches) fed in any chunking, and the re-runs of a stretch of a simulated day.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedule import checkpoint_kernel, rerun_kernel
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker, VehicleTracker
from tests.support.day import MatchedDay
from tests.test_visits_properties import draw_chunks
from tests.test_visits_synthetic import Circles, TrackBuilder, feed_all

# two fences overlapping (a truck parked in one jitters into the other: drop_dominated), and
# two more a few hundred metres on
FENCES = Circles([(0.0, 0.0, 40.0), (45.0, 0.0, 30.0), (200.0, 0.0, 40.0), (420.0, 60.0, 50.0)])
PLACES = [(0.0, 0.0), (40.0, 0.0), (200.0, 0.0), (420.0, 60.0), (300.0, -200.0)]
PARAMS = DetectionParams(horizon_s=3600.0)

leg = st.one_of(
    st.tuples(st.just("drive"), st.sampled_from(range(len(PLACES))), st.sampled_from([5, 15, 30])),
    st.tuples(st.just("park"), st.integers(20, 400), st.sampled_from([2.0, 8.0, 25.0])),
    st.tuples(st.just("gap"), st.integers(5, 600), st.booleans()),
)


def _same_found(got: Any, want: Any) -> None:
    visits, stops, pending, kept_t, cps, sites, figures, tail = got
    w_visits, w_stops, w_pending, w_kept_t, w_cps, w_sites, w_figures, w_tail = want
    assert visits == w_visits
    assert stops == w_stops
    assert pending == w_pending
    assert kept_t.dtype == w_kept_t.dtype
    np.testing.assert_array_equal(kept_t, w_kept_t)
    assert cps.tolist() == w_cps.tolist()
    assert sites == w_sites
    np.testing.assert_array_equal(np.array(figures), np.array(w_figures))  # (NaN == NaN)
    if stops and stops[-1].closed_by is None and stops[-1].last == len(kept_t) - 1:
        assert tail == w_tail  # (the only case _diff_stops reads it)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every re-run's compiled detection compared with the slow path on the same motion."""
    calls = {"compiled": 0, "visits": 0, "stops": 0, "tail": 0, "slow": 0}
    fast = VehicleTracker._detect_compiled

    def both(self: VehicleTracker, m: Any, track: Any, *a: Any) -> Any:
        got = fast(self, m, track, *a)
        if got is None:
            calls["slow"] += 1
            return None
        _same_found(got, self._detect_slow(m, track, *a[:3]))
        calls["compiled"] += 1
        calls["visits"] += bool(got[0])
        calls["stops"] += bool(got[1])
        calls["tail"] += got[7] is not None and bool(got[7])
        return got

    monkeypatch.setattr(VehicleTracker, "_detect_compiled", both)
    return calls


def _build(legs: list[tuple[str, int, object]], seed: int) -> TrackBuilder:
    b = TrackBuilder(seed=seed).start(-300.0, 0.0)
    for kind, a, c in legs:
        if kind == "drive":
            x, y = PLACES[a]
            if (x, y) != b.pos:
                b.drive(x, y, float(c))  # type: ignore[arg-type]
        elif kind == "park":
            b.park(a, sigma_m=float(c), outlier_rate=0.02)  # type: ignore[arg-type]
        elif c:
            b.gap(a, *PLACES[a % len(PLACES)])
        else:
            b.gap(a)
    b.drive(-300.0, 0.0, 30.0)
    return b


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(legs=st.lists(leg, min_size=1, max_size=8), seed=st.integers(0, 2**16), data=st.data())
def test_generated_reruns_equal_the_slow_path(
    checked: dict[str, int], legs: list[tuple[str, int, object]], seed: int, data: st.DataObject
) -> None:
    arrays = _build(legs, seed).arrays()
    n = len(arrays["t_us"])
    if data.draw(st.booleans(), label="GGA-only stretch"):
        lo = data.draw(st.integers(0, n - 1))
        arrays["speed_kmh"][lo : lo + data.draw(st.integers(1, 300))] = np.nan
    params = PARAMS
    if data.draw(st.booleans(), label="short horizon"):  # trims: pair tables reallocated
        params = DetectionParams(horizon_s=600.0)
    tracker = VehicleTracker("V", FENCES.ids, params)
    if data.draw(st.booleans(), label="structural checkpoints only"):
        tracker.settled_checkpoints = False
    chunks = draw_chunks(data, n, max_step=120)
    # a dropout: a run of chunks held back and delivered after some later ones (a backlog:
    # pairs out of time order, re-runs from before the last one's first kept fix)
    if len(chunks) > 2 and data.draw(st.booleans(), label="backlog"):
        a = data.draw(st.integers(0, len(chunks) - 2), label="backlog from")
        b = data.draw(st.integers(a + 1, len(chunks) - 1), label="backlog to")
        later = data.draw(st.integers(b, len(chunks) - 1), label="delivered after")
        chunks = chunks[:a] + chunks[b : later + 1] + chunks[a:b] + chunks[later + 1 :]
    feed_all(tracker, arrays, FENCES, chunks)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_kept_pairs_from_a_hint_equal_kept_pairs(data: st.DataObject) -> None:
    """Starting the leading scan at any pair before which every pair is older than the first
    kept fix changes nothing, and the scan reports the first pair not older."""
    times = sorted(data.draw(st.sets(st.integers(0, 200), max_size=40)))
    kept_t = np.array(times, dtype=np.int64)
    rows = data.draw(st.lists(st.tuples(st.integers(-5, 205), st.integers(0, 3)), max_size=80))
    if data.draw(st.booleans()):
        rows.sort()
    pt = np.array([r[0] for r in rows], dtype=np.int64)
    ps = np.array([r[1] for r in rows], dtype=np.int32)
    want = checkpoint_kernel.kept_pairs(kept_t, pt, ps)
    q0 = 0
    if len(kept_t):
        while q0 < len(pt) and pt[q0] < kept_t[0]:
            q0 += 1
    got, q = checkpoint_kernel.kept_pairs_from(kept_t, pt, ps, data.draw(st.integers(0, q0)))
    np.testing.assert_array_equal(got, want)
    assert q == q0


def test_generated_reruns_reach_every_part(checked: dict[str, int]) -> None:
    """The comparison above sees visits, stops and open stops' site counts (not vacuous)."""
    b = TrackBuilder(seed=5).start(-300.0, 0.0).drive(0.0, 0.0, 15.0).park(300, sigma_m=25.0)
    b.drive(200.0, 0.0, 15.0).park(200, sigma_m=3.0).drive(-300.0, 0.0, 30.0)
    arrays = b.arrays()
    n = len(arrays["t_us"])
    chunks = [np.arange(a, min(a + 7, n)) for a in range(0, n, 7)]
    feed_all(VehicleTracker("V", FENCES.ids, PARAMS), arrays, FENCES, chunks)
    assert checked["compiled"] > 20
    assert checked["visits"] > 5
    assert checked["stops"] > 5
    assert checked["tail"] > 5


def test_day_reruns_equal_the_slow_path(checked: dict[str, int], simulated_day: MatchedDay) -> None:
    """The re-runs over the first 60,000 fixes of a simulated day at ~40 new fixes per vehicle
    a round (the live size)."""
    batch, ins, nrs, sids, units = simulated_day
    fleet = FleetTracker(sids, units, DetectionParams())
    n, bf = min(60_000, len(batch)), 40 * len(units)
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
    assert checked["compiled"] > 300
    assert checked["visits"] > 100
    assert checked["tail"] > 50


def test_a_pair_hint_holds_only_for_the_table_it_was_taken_of() -> None:
    """A hint applies to a table at the same address, not shorter, for a first kept fix not
    older; anything else (another buffer, a view starting elsewhere in the same buffer, a
    shorter view, an older first fix) starts the scan at the first pair."""
    buf = np.arange(100, dtype=np.int64)
    hint = rerun_kernel._hint_of(buf[:50], 40, 40)
    assert rerun_kernel._hint_from(buf[:50], hint, 40) == 40
    assert rerun_kernel._hint_from(buf[:80], hint, 45) == 40  # appended to, a later fix
    assert rerun_kernel._hint_from(buf[:49], hint, 40) == 0
    assert rerun_kernel._hint_from(buf[2:60], hint, 40) == 0
    assert rerun_kernel._hint_from(buf[:60].copy(), hint, 40) == 0
    assert rerun_kernel._hint_from(buf[:50], hint, 39) == 0
    assert rerun_kernel._hint_from(buf[:50], np.zeros(rerun_kernel.N_HINT, np.int64), 40) == 0


def test_the_compiled_detect_is_cached_under_the_kernel_modules_digest() -> None:
    """numba caches ``detect`` under a name carrying a digest of the other kernel modules (it
    embeds their code, and numba's cache notices edits of its own file only): every other
    ``*_kernel.py`` is in the digest, the name carries the current digest, and an edit of a
    kernel's code or of a module constant changes it (the digest reads the loaded modules,
    not files: a logic module does no I/O)."""
    here = Path(rerun_kernel.__file__).parent
    files = {p.stem for p in here.glob("*_kernel.py")} - {"rerun_kernel"}
    assert {m.__name__.rsplit(".", 1)[1] for m in rerun_kernel.KERNEL_MODULES} == files
    digest = rerun_kernel.kernel_digest(rerun_kernel.KERNEL_MODULES)
    assert rerun_kernel.detect.py_func.__qualname__ == f"detect_{digest}"

    def module(src: str) -> types.ModuleType:
        m = types.ModuleType("schedule.fake_kernel")
        exec(compile(src, "fake_kernel.py", "exec"), m.__dict__)
        return m

    base = "K = 3\nS = frozenset({'a', 'b', 'c'})\ndef f(x):\n    return x + K\n"
    d0 = rerun_kernel.kernel_digest([module(base)])
    assert rerun_kernel.kernel_digest([module(base)]) == d0
    assert rerun_kernel.kernel_digest([module(base.replace("K = 3", "K = 4"))]) != d0
    assert rerun_kernel.kernel_digest([module(base.replace("x + K", "x - K"))]) != d0
    assert rerun_kernel.kernel_digest([module(base + "def g():\n    return 1\n")]) != d0


def test_the_digest_does_not_follow_string_hashing(tmp_path: Path) -> None:
    """The same sources give the same cache name in every process (PYTHONHASHSEED varies)."""
    code = "from schedule import rerun_kernel as r; print(r.kernel_digest(r.KERNEL_MODULES))"
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    one = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    env["PYTHONHASHSEED"] = "2"
    two = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert one.stdout == two.stdout

"""motion() per call: the numpy reference against the compiled kernels, on windows of a day.

Windows of 40, 600 and 3,000 fixes (an append round's, a typical re-run's, a long re-run's)
cut from each unit's fixes of a simulated day, the same windows for both paths; CPU time
(``time.process_time``) over all windows, median of ``--repeats`` passes, per call.  Also
says what share of the windows has a raw jump (where the compiled path also runs the
outlier-burst rule).

    python benchmarks/bench_motion_kernel.py --matched /tmp/day_matched.pkl
    python benchmarks/bench_motion_kernel.py --scenario /tmp/day   # decodes the day first
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _args import positive_int
from bench_detect import add_matched_arguments, matched_input

from schedule.motion import (
    Motion,
    Track,
    _step_implausible,
    local_xy,
    motion,
    motion_reference,
)
from schedule.motion_kernel import warm_up
from schedule.params import DetectionParams


def unit_tracks(batch: object) -> list[Track]:
    """Each unit's fixes in time order, duplicates dropped (what a tracker holds)."""
    unit_id = np.asarray(batch.unit_id)  # type: ignore[attr-defined]
    out = []
    for unit in np.unique(unit_id).tolist():
        idx = np.flatnonzero(unit_id == unit)
        t, first = np.unique(np.asarray(batch.t_us)[idx], return_index=True)  # type: ignore[attr-defined]
        sel = idx[first]
        cols = [np.asarray(getattr(batch, c))[sel].astype(np.float64) for c in ("lon", "lat")]
        speed = np.asarray(batch.speed_kmh)[sel].astype(np.float64)  # type: ignore[attr-defined]
        out.append(Track.from_arrays(t, cols[0], cols[1], speed))
    return out


def windows(tracks: list[Track], size: int, count: int, rng: np.random.Generator) -> list[Track]:
    long_enough = [t for t in tracks if len(t) >= size]
    out = []
    for _ in range(count):
        tr = long_enough[int(rng.integers(len(long_enough)))]
        a = int(rng.integers(0, len(tr) - size + 1))
        sl = slice(a, a + size)
        out.append(Track(tr.t_us[sl], tr.lon[sl], tr.lat[sl], tr.speed_kmh[sl], tr.hdop[sl]))
    return out


def raw_jump(w: Track) -> bool:
    """The window has an implausible step before any is dropped (the compiled path runs the
    outlier-burst rule)."""
    p = DetectionParams()
    t_s = (w.t_us - w.t_us[0]).astype(np.float64) / 1e6
    x, y = local_xy(w.lon, w.lat)
    v0 = np.where(np.isnan(w.speed_kmh), np.nan, w.speed_kmh)
    return bool(_step_implausible(t_s, x, y, v0, p).any())


def per_call_us(
    fn: Callable[[Track, DetectionParams], Motion], ws: list[Track], repeats: int
) -> float:
    p = DetectionParams()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        for w in ws:
            fn(w, p)
        times.append(time.process_time() - t0)
    return statistics.median(times) / len(ws) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_matched_arguments(ap)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--windows", type=positive_int, default=300)
    args = ap.parse_args()
    batch = matched_input(ap, args.matched, args.scenario)[0]
    warm_up()
    tracks = unit_tracks(batch)
    rng = np.random.default_rng(1)
    print("fixes  ref_us  compiled_us  ratio  jump_share")
    for size in (40, 600, 3000):
        ws = windows(tracks, size, max(20, args.windows * 40 // size), rng)
        for w in ws:  # the two paths agree on these windows (the tests prove it in general)
            assert motion(w, DetectionParams()).keep.tobytes() == (
                motion_reference(w, DetectionParams()).keep.tobytes()
            )
        ref = per_call_us(motion_reference, ws, args.repeats)
        comp = per_call_us(motion, ws, args.repeats)
        jumps = np.mean([raw_jump(w) for w in ws])
        print(f"{size:5d}  {ref:6.1f}  {comp:11.1f}  {ref / comp:5.1f}  {jumps:.2f}")


if __name__ == "__main__":
    main()

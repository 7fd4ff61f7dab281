"""Stop detection per call: the compiled walk (``detect_stops``) vs the numpy walk it replaced
(``detect_stops_reference``), on windows of a simulated day, in the same run.

    python benchmarks/bench_stops.py --scenario DIR | --matched PKL [--repeats 7]

Windows of 40, 600 and 3,000 kept fixes (the tracker re-runs from its last checkpoint over a
few hundred fixes; 40 is an append-sized round, 3,000 a long re-run), 24 per size, taken at
random places of random units and passed through ``motion()`` beforehand (untimed).  Every
repeat times both implementations over all windows of a size, interleaved, so they share the
machine's noise; printed: the median over repeats of process CPU time per call (µs), and the
median of the per-repeat ratios.  The two answers are compared on every window first.

``--scenario`` is a day written by ``fleetwatch simulate --out DIR`` (decoded and matched here,
untimed); ``--matched`` the pickle of (FixBatch, inside pairs, near pairs, site ids, units) that
benchmarks/bench_detect.py's ``load_matched`` returns (default /tmp/day_matched.pkl if it
exists).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _args import positive_int
from bench_detect import add_matched_arguments, matched_input

from core.fixes import FixBatch
from schedule.motion import Motion, Track, motion
from schedule.params import DetectionParams
from schedule.stops import detect_stops, detect_stops_reference
from schedule.stops_kernel import warm_up

SIZES = (40, 600, 3000)
WINDOWS = 24


def windows(
    batch: FixBatch, units: dict[str, str], size: int, p: DetectionParams, seed: int
) -> list[tuple[Motion, int]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[Motion, int]] = []
    names = sorted(units)
    while len(out) < WINDOWS:
        sel = np.flatnonzero(batch.unit_id == names[int(rng.integers(len(names)))])
        sel = sel[np.argsort(batch.t_us[sel], kind="stable")]
        t = batch.t_us[sel]
        sel = sel[np.concatenate(([True], t[1:] > t[:-1]))]
        if len(sel) < size + 50:
            continue
        a = int(rng.integers(0, len(sel) - size - 50))
        s = sel[a : a + size + 50]  # a few more raw fixes: motion() may drop some
        track = Track(
            batch.t_us[s],
            batch.lon[s],
            batch.lat[s],
            batch.speed_kmh[s].astype(np.float64),
            batch.hdop[s].astype(np.float64),
        )
        m = motion(track, p)
        if len(m.t_s) >= size:
            cut = slice(0, size)
            m = Motion(
                keep=m.keep[cut],
                t_s=m.t_s[cut].copy(),
                x=m.x[cut].copy(),
                y=m.y[cut].copy(),
                speed_kmh=m.speed_kmh[cut].copy(),
                still=m.still[cut].copy(),
                jump=m.jump[cut].copy(),
                gap=m.gap[cut].copy(),
                dropped_outliers=0,
                dropped_frozen=0,
                reported_kmh=None if m.reported_kmh is None else m.reported_kmh[cut].copy(),
            )
            out.append((m, int(track.t_us[0])))
    return out


def cpu_per_call(fn: Callable[..., Any], ws: list[tuple[Motion, int]], p: DetectionParams) -> float:
    """CPU µs per call over all windows, each called enough times for ~20 ms in total."""
    loops = max(1, 20_000 // (len(ws) * len(ws[0][0].t_s)))
    t = time.process_time()
    for _ in range(loops):
        for m, t0 in ws:
            fn(m, p, t0, active_from=0, now_us=None, pending_out=[])
    return (time.process_time() - t) / (loops * len(ws)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_matched_arguments(ap)
    ap.add_argument("--repeats", type=positive_int, default=7)
    args = ap.parse_args()
    batch, _inside, _near, _sites, units = matched_input(ap, args.matched, args.scenario)
    p = DetectionParams()
    warm_up()
    print(f"{'fixes':>6} {'reference µs':>13} {'kernel µs':>10} {'speed-up':>9} {'stops/call':>11}")
    for i, size in enumerate(SIZES):
        ws = windows(batch, units, size, p, seed=i)
        n_stops = 0
        for m, t0 in ws:
            ref = detect_stops_reference(m, p, t0)
            if detect_stops(m, p, t0) != ref:
                raise SystemExit(f"kernel and reference differ on a {size}-fix window")
            n_stops += len(ref)
        refs, kers, ratios = [], [], []
        for _ in range(args.repeats):
            r = cpu_per_call(detect_stops_reference, ws, p)
            k = cpu_per_call(detect_stops, ws, p)
            refs.append(r)
            kers.append(k)
            ratios.append(r / k)
        print(
            f"{size:>6} {statistics.median(refs):>13.1f} {statistics.median(kers):>10.1f} "
            f"{statistics.median(ratios):>8.1f}x {n_stops / len(ws):>11.2f}"
        )


if __name__ == "__main__":
    main()

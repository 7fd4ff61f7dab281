"""Per-call cost of the visit detector: numpy reference vs compiled kernel.

What one tracker re-run pays for visits, on real windows of the simulated day (40, 600 and
3,000 kept fixes holding 1-3 sites with an inside fix), three ways:

  reference   the tracker's loop: per site, two masks from the (fix, site) pairs and one
              ``_detect_visits_for_site_reference`` call (``motion_counts`` once);
  per-site    the same loop calling the compiled drop-in ``detect_visits_for_site``;
  all-sites   one ``visits_kernel.detect_visits_all_sites`` call (no loop, no masks).

CPU microseconds per re-run (``time.process_time``), median over windows of the median of
``--repeats`` timed blocks; ratios to the reference measured in the same run.

    python benchmarks/bench_visits_kernel.py --scenario DIR | --pickle PKL [--repeats 7]
        [--sizes 40 600 3000]

``--scenario``: a day written by ``fleetwatch simulate --out DIR``; ``--pickle``: bench_detect's
``load_matched`` answer (default /tmp/day_matched.pkl if it exists).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from _args import positive_int
from bench_detect import Matched, add_matched_arguments, matched_input

from schedule import visits_kernel
from schedule.motion import Motion, Track, motion
from schedule.params import DetectionParams
from schedule.visits import (
    VisitRecord,
    _detect_visits_for_site_reference,
    detect_visits_for_site,
    motion_counts,
)

Pairs = npt.NDArray[np.int64]
Window = tuple[Motion, int, Pairs, Pairs, npt.NDArray[np.float64], int]
Detector = Callable[..., list[VisitRecord]]


def windows(day: Matched, size: int, want: int) -> list[Window]:
    """Up to ``want`` windows of ``size`` fixes of several units with 1-3 sites active."""
    batch, ins, nrs, _sids, _units = day
    p = DetectionParams()
    out: list[Window] = []
    for unit in sorted(set(batch.unit_id.tolist())):
        idx = np.flatnonzero(batch.unit_id == unit)
        idx = idx[np.argsort(batch.t_us[idx], kind="stable")]
        t = batch.t_us[idx]
        idx = idx[np.concatenate(([True], t[1:] != t[:-1]))]
        for a in range(0, len(idx) - size, max(size // 2, 20)):
            w = idx[a : a + size]
            track = Track(
                batch.t_us[w],
                batch.lon[w].astype(np.float64),
                batch.lat[w].astype(np.float64),
                batch.speed_kmh[w].astype(np.float64),
                batch.hdop[w].astype(np.float64),
            )
            m = motion(track, p)
            pos = np.full(len(batch.t_us), -1, dtype=np.int64)
            pos[w[m.keep]] = np.arange(len(m.keep))
            pairs = []
            for pr in (ins, nrs):
                q = pos[pr[0]]
                ok = q >= 0
                pairs.append(np.stack((q[ok], pr[1][ok])).astype(np.int64))
            kin, knear = pairs
            active = len(m.keep) // 2
            n_sites = len(set(kin[1][kin[0] >= active].tolist()))
            if 1 <= n_sites <= 3:
                out.append((m, int(track.t_us[0]), kin, knear, track.hdop[m.keep], active))
                break  # one window per unit: different vehicles, different sites
        if len(out) >= want:
            break
    return out


def loop(detect: Detector, w: Window, p: DetectionParams) -> list[VisitRecord]:
    """VehicleTracker._rerun's per-site loop."""
    m, t0, kin, knear, hdop, active = w
    nk = len(m.t_s)
    visits: list[VisitRecord] = []
    sites = sorted(set(kin[1][kin[0] >= active].tolist()))
    common = motion_counts(m, p) if sites else None
    for site in sites:
        inside = np.zeros(nk, dtype=bool)
        inside[kin[0][kin[1] == site]] = True
        near = np.zeros(nk, dtype=bool)
        near[knear[0][knear[1] == site]] = True
        visits.extend(detect(m, p, t0, site, inside, near, hdop, active_from=active, common=common))
    return visits


def per_call_us(fn: Callable[[], Any], repeats: int) -> float:
    """Median CPU µs of one call (blocks of calls lasting >= ~20 ms)."""
    fn()
    k = 1
    while True:
        t = time.process_time()
        for _ in range(k):
            fn()
        if time.process_time() - t > 0.02 or k >= 1 << 14:
            break
        k *= 2
    samples = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(k):
            fn()
        samples.append((time.process_time() - t) / k * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_matched_arguments(ap, "--pickle")
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--windows", type=positive_int, default=5)
    ap.add_argument("--sizes", type=positive_int, nargs="+", default=[40, 600, 3000])
    args = ap.parse_args()
    day = matched_input(ap, args.pickle, args.scenario, "--pickle")
    p = DetectionParams()
    visits_kernel.warm_up()
    print(f"{'fixes':>6} {'windows':>7} {'reference':>10} {'per-site':>16} {'all-sites':>16}")
    for size in args.sizes:
        ws = windows(day, size, args.windows)
        ref, per, alls = [], [], []
        for w in ws:
            m, t0, kin, knear, hdop, active = w
            want = loop(_detect_visits_for_site_reference, w, p)
            assert loop(detect_visits_for_site, w, p) == want
            got = visits_kernel.detect_visits_all_sites(
                m, p, t0, kin, knear, hdop, active_from=active
            )
            assert got == want
            ref.append(per_call_us(lambda w=w: loop(_detect_visits_for_site_reference, w, p),
                                   args.repeats))  # fmt: skip
            per.append(per_call_us(lambda w=w: loop(detect_visits_for_site, w, p), args.repeats))
            alls.append(
                per_call_us(
                    lambda m=m, t0=t0, kin=kin, knear=knear, hdop=hdop, active=active: (
                        visits_kernel.detect_visits_all_sites(
                            m, p, t0, kin, knear, hdop, active_from=active
                        )
                    ),
                    args.repeats,
                )
            )
        if not ws:
            print(f"{size:>6} {0:>7}  (no window with 1-3 sites active)")
            continue
        r, s, a = (statistics.median(x) for x in (ref, per, alls))
        print(
            f"{size:>6} {len(ws):>7} {r:>8.1f}us {s:>8.1f}us {r / s:>5.1f}x "
            f"{a:>8.1f}us {r / a:>5.1f}x"
        )


if __name__ == "__main__":
    main()

"""Scenario generator throughput: a full day (1,500 sites, 50 vehicles, 1 Hz) written to disk.

Figure: seconds and fixes/s of ``write_scenario`` for the default full day (median of
--repeats runs).  Baseline, measured in the same run: a naive per-fix Python loop that does
the same work per fix (position along the route, GPS noise, a ``Fix`` object,
``ingest.nmea_encode.encode_rmc`` + ``encode_gga``, a ``#recv`` line, writing) on a subset of
--baseline-fixes fixes, extrapolated to the full day's fix count.

    python benchmarks/bench_simulator.py [--repeats 3] [--sites 1500] [--vehicles 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _args import positive_int

from core.fixes import Fix
from ingest.nmea_encode import encode_gga, encode_rmc
from simulators.city import Projection
from simulators.roads import StreetGrid, route
from simulators.scenario import ScenarioParams, write_scenario


def ours(params: ScenarioParams) -> tuple[float, int, float]:
    """Wall seconds, fixes, CPU seconds of this process (robust on a loaded machine)."""
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as d:
        c0 = time.process_time()
        t0 = time.perf_counter()
        truth = write_scenario(params, Path(d))
        secs = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return secs, int(truth.scenario["fixes"]), cpu


def naive(n_fixes: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``n_fixes`` fixes made and written one Python object at a time."""
    rng = np.random.Generator(np.random.PCG64(1))
    proj = Projection(lat0=55.7558, lon0=37.6173)
    r = route(StreetGrid(), rng, -8000.0, -6000.0, 9000.0, 7000.0)
    xs, ys = r.x.tolist(), r.y.tolist()
    seg = [math.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) for i in range(len(xs) - 1)]
    rnd = random.Random(1)
    t0_us = int(dt.datetime(2026, 11, 23, 5, tzinfo=dt.UTC).timestamp()) * 1_000_000
    cos0 = math.cos(math.radians(55.7558))
    with (
        tempfile.TemporaryDirectory(prefix="bench-naive-") as d,
        open(Path(d) / "u.nmea", "wb") as f,
    ):
        start = time.perf_counter()
        c0 = time.process_time()
        s, i, along = 0.0, 0, 0.0
        for k in range(n_fixes):
            v = 8.0 + rnd.gauss(0, 1)
            s += v
            along += v
            while i < len(seg) - 1 and along > seg[i]:
                along -= seg[i]
                i += 1
            frac = min(along / seg[i], 1.0) if seg[i] else 0.0
            x = xs[i] + frac * (xs[i + 1] - xs[i]) + rnd.gauss(0, 8)
            y = ys[i] + frac * (ys[i + 1] - ys[i]) + rnd.gauss(0, 8)
            lat = proj.lat0 + math.degrees(y / 6_371_008.8)
            lon = proj.lon0 + math.degrees(x / (6_371_008.8 * cos0))
            t_us = t0_us + k * 1_000_000
            fix = Fix(
                unit_id="U0001",
                t_us=t_us,
                recv_us=t_us,
                lat=lat,
                lon=lon,
                speed_kmh=v * 3.6,
                course=90.0,
                quality=1,
                sats=9,
                hdop=1.1,
                alt_m=150.0,
            )
            recv = dt.datetime.fromtimestamp((t_us + 400_000) / 1e6, dt.UTC)
            f.write(f"#recv {recv.isoformat(timespec='milliseconds')[:-6]}Z\n".encode())
            f.write(encode_rmc(fix, decimals=5) + encode_gga(fix, decimals=5))
            if i >= len(seg) - 1:
                i, along = 0, 0.0
        return time.perf_counter() - start, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--sites", type=positive_int, default=1500)
    ap.add_argument("--vehicles", type=positive_int, default=50)
    ap.add_argument("--baseline-fixes", type=positive_int, default=50_000)
    a = ap.parse_args()
    try:  # a day that cannot be planned is a usage error, not a traceback
        params = ScenarioParams(sites=a.sites, vehicles=a.vehicles)
        runs = [ours(params)]
    except ValueError as exc:  # ScenarioError included: it names what to change
        ap.error(str(exc))
    runs += [ours(params) for _ in range(a.repeats - 1)]
    secs = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[2] for r in runs)
    fixes = runs[0][1]
    naive_runs = [naive(a.baseline_fixes) for _ in range(a.repeats)]
    base = statistics.median(r[0] for r in naive_runs)
    base_cpu = statistics.median(r[1] for r in naive_runs)
    base_rate = a.baseline_fixes / base
    base_full = fixes / base_rate
    base_full_cpu = base_cpu * fixes / a.baseline_fixes
    print(f"scenario: {a.sites} sites, {a.vehicles} vehicles, default rates, {fixes:,} fixes")
    print(
        f"write_scenario          : {secs:8.2f} s  {fixes / secs:12,.0f} fixes/s  "
        f"(runs: {', '.join(f'{r[0]:.2f}' for r in runs)}; CPU {cpu:.2f} s)"
    )
    print(
        f"baseline per-fix loop   : {base_full:8.2f} s  {base_rate:12,.0f} fixes/s  "
        f"(measured on {a.baseline_fixes:,} fixes, extrapolated; CPU {base_full_cpu:.2f} s)"
    )
    print(
        f"speed-up                : {base_full / secs:8.1f}x wall, {base_full_cpu / cpu:.1f}x CPU"
    )
    print(f"2,000,000 fixes at our rate would take {2e6 / (fixes / secs):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

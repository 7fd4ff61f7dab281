"""Geofence matching throughput: FenceIndex vs shapely 2 STRtree, in the same run.

    python benchmarks/bench_geofence.py [--points 1000000] [--repeats 7]

Workload: 1,500 city-like fences (≈ 2/3 circles of 25–80 m, 1/3 building polygons, some
overlapping; geofence.synthetic) in a 40 × 40 km box around Moscow's centre, and two point sets:
"uniform" in that box (most points on no site) and "near sites" (half the points within 150 m
of a site centre: the work detection does).  On the near-sites points the benchmark also runs
what the tracker runs per batch (``schedule.tracker.FleetTracker.feed_matched``): the plain
query *and* the 15 m exit-margin query on the same points ("detection" rows).

Contenders, all answering "every (point, site) pair with the point in the fence":
  FenceIndex      ``index.query`` (the compiled kernel, geofence/kernel.py);
  numpy (before)  ``index._query_numpy``, the whole-array implementation it replaced;
  STRtree query   ``tree.query(points, predicate="intersects")`` with the shapely points made
                  beforehand (query only: the fair race for the index's own work);
  STRtree + pts   the same with ``shapely.points(lon, lat)`` inside the timing (what a caller
                  holding coordinate arrays, as the engine does, pays).
The tree holds the fences in lon/lat; circles are 64-gon buffers built in each circle's local
metric frame, and for the margin query a second tree holds every fence grown by 15 m in its
local frame (a plain STRtree cannot hold a metric circle or a metric margin).  Its pairs differ
from the index's only within a few cm of a circle's edge; the run prints how many and how close.

Every repeat runs every contender once, interleaved, so they share the machine's noise.
Printed: the median over repeats of wall time and of process CPU time, and the median of the
per-repeat ratios (the steadiest figure on a shared machine).  Batches of 1,000: each repeat
runs all batches back to back; figures are per batch.  The kernel's compile time is measured in
fresh processes: cold (empty numba cache) and cached.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psutil
import shapely
from _args import positive_int
from shapely.geometry.base import BaseGeometry

from geofence import FenceIndex, Site
from geofence.projection import from_local_m, to_local_m
from geofence.reference import fence_lonlat, local_frame_origin
from geofence.synthetic import make_city_sites, random_points

FloatArray = npt.NDArray[np.float64]
BATCH = 1_000
MARGIN_M = 15.0  # schedule.params.DetectionParams.exit_margin_m


@dataclass(frozen=True, slots=True)
class Sample:
    """Seconds (per call) of one contender in one repeat."""

    wall: float
    cpu: float


def measure(fn: Callable[[], object], calls: int = 1) -> Sample:
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return Sample((time.perf_counter() - w0) / calls, (time.process_time() - c0) / calls)


def race(
    contenders: dict[str, Callable[[], object]], repeats: int, calls: int = 1
) -> dict[str, list[Sample]]:
    """Every contender once per repeat, interleaved (order rotated each repeat)."""
    out: dict[str, list[Sample]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        gc.collect()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(measure(contenders[name], calls))
    return out


def report(title: str, n: int, samples: dict[str, list[Sample]], ours: str = "FenceIndex") -> None:
    print(f"  {title}")
    base = samples[ours]
    for name, ss in samples.items():
        wall = statistics.median(s.wall for s in ss)
        cpu = statistics.median(s.cpu for s in ss)
        line = (
            f"    {name:<16} wall {wall * 1e3:9.3f} ms ({n / wall / 1e6:6.2f} M pts/s) | "
            f"cpu {cpu * 1e3:9.3f} ms ({n / cpu / 1e6:6.2f} M pts/s)"
        )
        if name != ours:
            rw = statistics.median(o.wall / b.wall for o, b in zip(ss, base, strict=True))
            rc = statistics.median(o.cpu / b.cpu for o, b in zip(ss, base, strict=True))
            line += f"  -> FenceIndex is {rw:5.1f}x wall, {rc:5.1f}x cpu"
        print(line)


def grown_lonlat(site: Site, margin_m: float) -> BaseGeometry:
    """The fence grown by ``margin_m`` metres in its local frame, in lon/lat (STRtree's
    version of the margin query)."""
    if site.radius_m is not None:
        return fence_lonlat(
            Site(site_id=site.site_id, client_id=site.client_id, name=site.name,
                 geometry=site.geometry, radius_m=site.radius_m + margin_m),
            quad_segs=16,
        )  # fmt: skip
    lon0, lat0 = local_frame_origin(site)
    local = shapely.transform(
        site.geometry, lambda c: np.column_stack(to_local_m(c[:, 0], c[:, 1], lon0, lat0))
    )
    return shapely.transform(
        local.buffer(margin_m, quad_segs=16),
        lambda c: np.column_stack(from_local_m(c[:, 0], c[:, 1], lon0, lat0)),
    )


def compile_times() -> str:
    """Seconds to import geofence and run geofence.warm_up() in a fresh process: with an
    empty numba cache (cold) and then with the cache that run left (cached)."""
    code = (
        "import time; w, c = time.perf_counter(), time.process_time(); import geofence; "
        "geofence.warm_up(); print(time.perf_counter() - w, time.process_time() - c)"
    )
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "cached"):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True)  # fmt: skip
            wall, cpu = (float(v) for v in r.stdout.split())
            out.append(f"{label} {wall:.2f} s wall / {cpu:.2f} s cpu")
    return "; ".join(out)


def near_sites_points(
    sites_lonlat: FloatArray, n: int, seed: int = 2
) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    lon, lat = random_points(n, seed=seed)
    half = n // 2
    pick = rng.integers(0, len(sites_lonlat), half)
    r = 150.0 * np.sqrt(rng.random(half))
    a = rng.uniform(0, 2 * np.pi, half)
    lon[:half], lat[:half] = from_local_m(
        r * np.cos(a), r * np.sin(a), sites_lonlat[pick, 0], sites_lonlat[pick, 1]
    )
    perm = rng.permutation(n)
    return lon[perm], lat[perm]


def compare(
    index: FenceIndex, ours: npt.NDArray[np.intp], theirs: npt.NDArray[np.intp],
    lon: FloatArray, lat: FloatArray, margin_m: float,
) -> str:  # fmt: skip
    n = len(index.sites)
    k_ours = ours[0].astype(np.int64) * n + ours[1]
    k_theirs = theirs[0].astype(np.int64) * n + theirs[1]
    differ = np.setxor1d(k_ours, k_theirs)
    if len(differ) == 0:
        return "identical"
    pt, site = differ // n, differ % n
    d = np.abs(index.distance_m(lon[pt], lat[pt], site) - margin_m)
    return (
        f"{len(differ)} of {len(k_ours)} pairs differ, all within {d.max() * 100:.1f} cm "
        f"of the (grown) fence's edge"
    )


def per_call(samples: dict[str, list[Sample]], calls: int) -> dict[str, list[Sample]]:
    return {k: [Sample(s.wall / calls, s.cpu / calls) for s in v] for k, v in samples.items()}


def batches(lon: FloatArray, lat: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
    return [(lon[k : k + BATCH], lat[k : k + BATCH]) for k in range(0, len(lon) - BATCH + 1, BATCH)]


def run(n_points: int, repeats: int, *, compile_time: bool) -> None:
    proc = psutil.Process()
    sites = make_city_sites(1500, seed=0)
    n_circles = sum(s.is_circle for s in sites)
    print(f"sites: {len(sites)} ({n_circles} circles, {len(sites) - n_circles} polygons), "
          f"points: {n_points:,}, repeats: {repeats}, batch: {BATCH}")  # fmt: skip
    if compile_time:
        print(f"kernel compile (fresh process: import geofence + warm_up): {compile_times()}")

    gc.collect()
    rss0 = proc.memory_info().rss
    index = FenceIndex.build(sites, margin_m=MARGIN_M)
    rss_build = proc.memory_info().rss - rss0
    t_build = statistics.median(
        measure(lambda: FenceIndex.build(sites, margin_m=MARGIN_M)).wall for _ in range(3)
    )
    st = index.stats
    print(f"index: build {t_build * 1e3:.1f} ms; {st.cells:,} cells of {st.cell_m:.0f} m, "
          f"{st.grid_entries:,} grid entries; arrays {st.array_bytes / 1e6:.2f} MB + "
          f"{st.polygon_vertices:,} local polygon vertices in GEOS; RSS growth "
          f"{rss_build / 1e6:.1f} MB")  # fmt: skip

    tree = shapely.STRtree(np.array([fence_lonlat(s, quad_segs=16) for s in sites]))
    tree_m = shapely.STRtree(np.array([grown_lonlat(s, MARGIN_M) for s in sites]))
    centres = np.array([local_frame_origin(s) for s in sites])

    workloads = {
        "uniform": random_points(n_points, seed=1),
        "near sites": near_sites_points(centres, n_points),
    }
    for name, (lon, lat) in workloads.items():
        print(f"\n== {name} points ==")
        pts = shapely.points(lon, lat)
        for margin, t in ((0.0, tree), (MARGIN_M, tree_m)):
            ours = index.query(lon, lat, margin_m=margin)
            same = np.array_equal(ours, index._query_numpy(lon, lat, margin_m=margin))
            theirs = t.query(pts, predicate="intersects")
            print(f"margin {margin:g} m: {ours.shape[1]:,} pairs; compiled vs numpy: "
                  f"{'identical' if same else 'DIFFERENT'}; STRtree vs index: "
                  f"{compare(index, ours, theirs, lon, lat, margin)}")  # fmt: skip

        def bulk(
            margin: float, t: shapely.STRtree, lon: FloatArray = lon, lat: FloatArray = lat,
            pts: npt.NDArray[np.object_] = pts,
        ) -> dict[str, Callable[[], object]]:  # fmt: skip
            return {
                "FenceIndex": lambda: index.query(lon, lat, margin_m=margin),
                "numpy (before)": lambda: index._query_numpy(lon, lat, margin_m=margin),
                "STRtree query": lambda: t.query(pts, predicate="intersects"),
                "STRtree + pts": lambda: t.query(shapely.points(lon, lat), predicate="intersects"),
            }

        def per_batch(margins: Sequence[tuple[float, shapely.STRtree]], lon: FloatArray = lon,
                      lat: FloatArray = lat) -> dict[str, Callable[[], object]]:  # fmt: skip
            bs = batches(lon, lat)
            bp = [shapely.points(x, y) for x, y in bs]

            def fence_index() -> None:
                for x, y in bs:
                    for m, _ in margins:
                        index.query(x, y, margin_m=m)

            def numpy_() -> None:
                for x, y in bs:
                    for m, _ in margins:
                        index._query_numpy(x, y, margin_m=m)

            def tree_q() -> None:
                for p in bp:
                    for _, t in margins:
                        t.query(p, predicate="intersects")

            def tree_p() -> None:
                for x, y in bs:
                    p = shapely.points(x, y)
                    for _, t in margins:
                        t.query(p, predicate="intersects")

            return {"FenceIndex": fence_index, "numpy (before)": numpy_, "STRtree query": tree_q,
                    "STRtree + pts": tree_p}  # fmt: skip

        n_b = len(batches(lon, lat))
        report(f"bulk {n_points:,} points, one call, margin 0", n_points,
               race(bulk(0.0, tree), repeats))  # fmt: skip
        if name == "near sites":
            report(f"bulk {n_points:,} points, one call, margin {MARGIN_M:g} m", n_points,
                   race(bulk(MARGIN_M, tree_m), repeats))  # fmt: skip
            det = {k: [bulk(0.0, tree)[k], bulk(MARGIN_M, tree_m)[k]] for k in bulk(0.0, tree)}
            report(f"detection, bulk: plain + {MARGIN_M:g} m query on {n_points:,} points",
                   n_points, race({k: (lambda f=f: [g() for g in f]) for k, f in det.items()},
                                  repeats))  # fmt: skip
        r = race(per_batch([(0.0, tree)]), repeats)
        report(f"batches of {BATCH:,} ({n_b:,} batches), margin 0: per batch", BATCH,
               per_call(r, n_b))  # fmt: skip
        if name == "near sites":
            r = race(per_batch([(0.0, tree), (MARGIN_M, tree_m)]), repeats)
            report(f"detection, batches of {BATCH:,}: plain + {MARGIN_M:g} m query per batch",
                   BATCH, per_call(r, n_b))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=positive_int, default=1_000_000)
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--no-compile-time", action="store_true", help="skip the fresh-process compile")
    args = ap.parse_args()
    print(
        f"numpy {np.__version__}, shapely {shapely.__version__} "
        f"(GEOS {shapely.geos_version_string}), {psutil.cpu_count()} CPUs, "
        f"load average {tuple(round(x, 2) for x in psutil.getloadavg())}"
    )
    run(args.points, args.repeats, compile_time=not args.no_compile_time)
    print(f"load average at the end {tuple(round(x, 2) for x in psutil.getloadavg())}")


if __name__ == "__main__":
    main()

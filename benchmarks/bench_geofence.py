"""Geofence matching throughput: FenceIndex vs shapely 2 STRtree, in the same run.

    python benchmarks/bench_geofence.py [--points 1000000] [--repeats 5]

Workload: 1,500 city-like fences (≈ 2/3 circles of 25–80 m, 1/3 building polygons, some
overlapping; geofence.synthetic) in a 40 × 40 km box around Moscow's centre, and uniform random
points in that box ("uniform"), plus a second set where half the points are within 150 m of a
site centre ("near sites": what a fleet that spends its day at sites sends).

Baselines, answering the same question (every (point, site) pair with the point in the fence):
  (a) STRtree bulk: ``tree.query(shapely.points(lon, lat), predicate="intersects")`` on the
      fences in lon/lat, circles as 64-gon buffers built in metres (point creation included);
  (b) per-point loop: ``tree.query(Point(x, y), predicate="intersects")`` one point at a time,
      timed on a subset and extrapolated.
The STRtree answers differ from the index only by pairs within a few cm of a circle's edge (the
64-gon is inscribed in the true circle); the run prints how many and how close.

Wall figures are medians of ``--repeats`` runs; CPU figures (process time) are the minimum, which
is steadier on a shared machine because waiting for a core is not counted.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psutil
import shapely

from geofence import FenceIndex
from geofence.projection import from_local_m
from geofence.reference import fence_lonlat
from geofence.synthetic import make_city_sites, random_points

FloatArray = npt.NDArray[np.float64]
BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds per call: the median wall time over repeats, and the minimum process CPU time
    (steadier when other processes share the cores: it does not count time spent waiting)."""

    wall: float
    cpu: float


def time_calls(fn: Callable[[], object], repeats: int, calls: int = 1) -> Timing:
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        cpus.append((time.process_time() - c0) / calls)
        walls.append((time.perf_counter() - w0) / calls)
    return Timing(statistics.median(walls), min(cpus))


def batch_time(
    fn: Callable[[FloatArray, FloatArray], object], lon: FloatArray, lat: FloatArray, repeats: int
) -> Timing:
    """Wall: median over repeats of the median batch; CPU: min over repeats of the mean."""
    n_batches = len(lon) // BATCH
    batches = [
        (lon[k * BATCH : (k + 1) * BATCH], lat[k * BATCH : (k + 1) * BATCH])
        for k in range(n_batches)
    ]
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        ts = []
        c0 = time.process_time()
        for x, y in batches:
            t0 = time.perf_counter()
            fn(x, y)
            ts.append(time.perf_counter() - t0)
        cpus.append((time.process_time() - c0) / n_batches)
        walls.append(statistics.median(ts))
    return Timing(statistics.median(walls), min(cpus))


def rate(what: str, who: str, t: Timing, n: int, extra: str = "") -> str:
    return (
        f"{what}: {who:<10} wall {t.wall * 1e3:9.3f} ms = {n / t.wall / 1e6:6.2f} M pts/s | "
        f"cpu {t.cpu * 1e3:9.3f} ms = {n / t.cpu / 1e6:6.2f} M pts/s  {extra}"
    )


def ratio(base: Timing, ours: Timing) -> str:
    return f"-> ratio wall {base.wall / ours.wall:5.1f}x, cpu {base.cpu / ours.cpu:5.1f}x"


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
    lon: FloatArray, lat: FloatArray,
) -> str:  # fmt: skip
    n = len(index.sites)
    k_ours = ours[0].astype(np.int64) * n + ours[1]
    k_theirs = theirs[0].astype(np.int64) * n + theirs[1]
    differ = np.setxor1d(k_ours, k_theirs)
    if len(differ) == 0:
        return "identical"
    pt, site = differ // n, differ % n
    d = np.abs(index.distance_m(lon[pt], lat[pt], site))
    return (
        f"{len(differ)} of {len(k_ours)} pairs differ, all within {d.max() * 100:.1f} cm "
        f"of a fence edge"
    )


def run(n_points: int, repeats: int) -> None:
    proc = psutil.Process()
    sites = make_city_sites(1500, seed=0)
    n_circles = sum(s.is_circle for s in sites)
    print(f"sites: {len(sites)} ({n_circles} circles, {len(sites) - n_circles} polygons), "
          f"points: {n_points:,}, repeats: {repeats}, batch: {BATCH}")  # fmt: skip

    gc.collect()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    index = FenceIndex.build(sites, margin_m=15.0)
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_build = proc.memory_info().rss - rss0
    t_build = time_calls(lambda: FenceIndex.build(sites, margin_m=15.0), repeats).wall
    st = index.stats
    print(f"index: build {t_build * 1e3:.1f} ms; {st.cells:,} cells of {st.cell_m:.0f} m, "
          f"{st.grid_entries:,} grid entries; arrays {st.array_bytes / 1e6:.2f} MB + "
          f"{st.polygon_vertices:,} local polygon vertices in GEOS; tracemalloc peak during "
          f"build {build_peak / 1e6:.2f} MB; RSS growth {rss_build / 1e6:.1f} MB")  # fmt: skip

    geoms = np.array([fence_lonlat(s, quad_segs=16) for s in sites])
    tree = shapely.STRtree(geoms)
    centres = np.array([(s.geometry.centroid.x, s.geometry.centroid.y) for s in sites])

    workloads = {
        "uniform": random_points(n_points, seed=1),
        "near sites": near_sites_points(centres, n_points),
    }
    for name, (lon, lat) in workloads.items():
        print(f"\n== {name} points ==")
        ours = index.query(lon, lat)
        theirs = tree.query(shapely.points(lon, lat), predicate="intersects")
        print(
            f"pairs: {ours.shape[1]:,}; STRtree vs index: {compare(index, ours, theirs, lon, lat)}"
        )

        tracemalloc.start()
        index.query(lon, lat)
        _, q_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        def ours_bulk(lon: FloatArray = lon, lat: FloatArray = lat) -> object:
            return index.query(lon, lat)

        def tree_bulk(lon: FloatArray = lon, lat: FloatArray = lat) -> object:
            return tree.query(shapely.points(lon, lat), predicate="intersects")

        t_ours = time_calls(ours_bulk, repeats)
        t_tree = time_calls(tree_bulk, repeats)
        bulk = f"bulk {n_points:,}"
        print(rate(bulk, "FenceIndex", t_ours, n_points, f"(temporary peak {q_peak / 1e6:.0f} MB)"))
        print(rate(bulk, "STRtree", t_tree, n_points, ratio(t_tree, t_ours)))

        b_ours = batch_time(lambda x, y: index.query(x, y), lon, lat, repeats)
        b_tree = batch_time(
            lambda x, y: tree.query(shapely.points(x, y), predicate="intersects"), lon, lat, repeats
        )
        batch = f"batch {BATCH}"
        print(rate(batch, "FenceIndex", b_ours, BATCH))
        print(rate(batch, "STRtree", b_tree, BATCH, ratio(b_tree, b_ours)))

        m = min(20_000, n_points)
        pts = [shapely.Point(x, y) for x, y in zip(lon[:m].tolist(), lat[:m].tolist(), strict=True)]

        def loop(pts: list[shapely.Point] = pts) -> None:
            for p in pts:
                tree.query(p, predicate="intersects")

        t_loop = time_calls(loop, repeats)
        per_pt = Timing(t_loop.wall / m, t_loop.cpu / m)
        print(rate(f"per-point loop ({m:,} points, extrapolated)", "STRtree", per_pt, 1))
        speedup_wall = per_pt.wall * n_points / t_ours.wall
        speedup_cpu = per_pt.cpu * n_points / t_ours.cpu
        print(f"   FenceIndex bulk vs per-point loop: wall {speedup_wall:5.0f}x, "
              f"cpu {speedup_cpu:5.0f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(
        f"numpy {np.__version__}, shapely {shapely.__version__} "
        f"(GEOS {shapely.geos_version_string}), {psutil.cpu_count()} CPUs, "
        f"load average {tuple(round(x, 2) for x in psutil.getloadavg())}"
    )
    run(args.points, args.repeats)


if __name__ == "__main__":
    main()

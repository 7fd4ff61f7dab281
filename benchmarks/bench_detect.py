"""Fixes/s through visit and stop detection for a simulated day, against a per-fix baseline.

Usage: python benchmarks/bench_detect.py [--vehicles 50] [--sites 1500] [--repeats 3]
       [--batch-fixes 20000] [--scenario DIR] [--compare-full]

The scenario is simulated (or read from --scenario), decoded and matched against its fences
once, untimed; then the same matched fixes, in receive order and cut into batches, go through

* ``FleetTracker`` (schedule.tracker): per-vehicle numpy masks, run-length encoding, state
  machines over runs, replay from the last checkpoint on a batch that can change anything (a
  batch that provably cannot only appends: ``TrackerStats.appended``);
* with ``--compare-full``, also ``FleetTracker(incremental=False)`` (the re-run on every batch,
  as before) in the same run, and a check that both report exactly the same events; and
* the baseline: a naive per-fix Python state machine (per vehicle, per site: inside/outside with
  a dwell timer and an exit counter; a speed-based stop timer), the textbook implementation
  without the jitter, teleport or late-data rules.

Prints medians of ``--repeats`` runs of each and their ratio.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from _args import positive_int

from core.fixes import FixBatch
from geofence import FenceIndex, load_sites_geojson
from ingest.nmea import Decoder
from schedule.events import DetectionEvent, VisitCompleted, latest
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker
from schedule.warm import warm_up as warm_up_detection
from simulators.formats import iter_payloads, load_units, unit_files
from simulators.scenario import ScenarioParams, write_scenario


def load_matched(
    scenario: Path, params: DetectionParams
) -> tuple[FixBatch, npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[str, ...], dict[str, str]]:
    sites = load_sites_geojson(scenario / "sites.geojson").sites
    index = FenceIndex.build(sites, margin_m=params.exit_margin_m)
    units = {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}
    rows = [(r, u, p) for u, f in unit_files(scenario).items() for r, p in iter_payloads(f)]
    rows.sort(key=lambda r: r[0])
    fixes = Decoder().decode([u for _, u, _ in rows], [p for *_, p in rows], [r for r, *_ in rows])
    batch = fixes.fixes.take(np.argsort(fixes.fixes.recv_us, kind="stable"))
    inside = index.query(batch.lon, batch.lat, margin_m=0.0)
    near = index.query(batch.lon, batch.lat, margin_m=params.exit_margin_m)
    return batch, inside.astype(np.int64), near.astype(np.int64), index.site_ids, units


Matched = tuple[
    FixBatch, npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[str, ...], dict[str, str]
]
#: where engineers keep a pickled load_matched answer between runs (only used if it exists)
MATCHED_PICKLE = Path("/tmp/day_matched.pkl")


def add_matched_arguments(ap: argparse.ArgumentParser, flag: str = "--matched") -> None:
    """The per-call kernel benchmarks' input: a simulated day, decoded and matched."""
    ap.add_argument(
        flag, type=Path, default=None,
        help=f"pickle of bench_detect.load_matched's answer (default: {MATCHED_PICKLE} if it "
        "exists)",
    )  # fmt: skip
    ap.add_argument(
        "--scenario", type=Path,
        help="a simulated day (fleetwatch simulate --out DIR), decoded and matched here",
    )  # fmt: skip


def matched_input(
    ap: argparse.ArgumentParser, pkl: Path | None, scenario: Path | None, flag: str = "--matched"
) -> Matched:
    """The day of --matched or --scenario; a usage error naming both when neither is there
    (the pickle's default path exists only on machines where someone wrote it)."""
    if pkl is None and scenario is None and MATCHED_PICKLE.is_file():
        pkl = MATCHED_PICKLE
    if pkl is not None:
        if not pkl.is_file():
            ap.error(f"{flag} {pkl}: no such file")
        with pkl.open("rb") as f:
            got: Matched = pickle.load(f)
        return got
    if scenario is None:
        ap.error(
            f"give --scenario DIR (a day written by `fleetwatch simulate --out DIR`) or {flag} "
            f"PKL ({MATCHED_PICKLE} does not exist)"
        )
    if not (scenario / "sites.geojson").is_file():
        ap.error(f"--scenario {scenario}: not a scenario directory (no sites.geojson)")
    return load_matched(scenario, DetectionParams())


Batch = tuple[FixBatch, npt.NDArray[np.int64], npt.NDArray[np.int64]]


def cut_batches(
    batch: FixBatch,
    inside: npt.NDArray[np.int64],
    near: npt.NDArray[np.int64],
    batch_fixes: int,
) -> list[Batch]:
    """The day as the engine receives it: batches of ``batch_fixes`` fixes in receive order,
    each with its own fence and margin pairs (fix index relative to the batch).

    Done once, before any clock runs: in the service the decoder hands each batch over and
    the matcher returns its pairs, so slicing one day-long array per batch (~0.8 CPU-s at
    2,000-fix batches) is the harness's cost, not detection's.  The baseline gets the same
    whole-day arrays it always had.
    """
    n = len(batch)
    out: list[Batch] = []
    for a in range(0, n, batch_fixes):
        b = min(a + batch_fixes, n)
        out.append(
            (batch.take(np.arange(a, b)), _batch_pairs(inside, a, b), _batch_pairs(near, a, b))
        )
    return out


def run_tracker(
    batches: list[Batch],
    site_ids: tuple[str, ...],
    units: dict[str, str],
    params: DetectionParams,
    *,
    incremental: bool = True,
    out: list[DetectionEvent] | None = None,
) -> int:
    fleet = FleetTracker(site_ids, units, params, incremental=incremental)
    events: list[DetectionEvent] = [] if out is None else out
    for part, ins, nrs in batches:
        events += fleet.feed(part, ins, nrs)
    events += fleet.finish()
    return sum(
        1 for e in latest(events).values() if isinstance(e, VisitCompleted) and not e.retracted
    )


def _batch_pairs(pairs: npt.NDArray[np.int64], a: int, b: int) -> npt.NDArray[np.int64]:
    """The (fix, site) pairs of fixes [a, b), fix index made relative to a, in their order.

    Pairs sorted by fix (as ``FenceIndex.query`` returns them) are sliced by binary search:
    a mask over all of the day's ~800,000 pairs per batch cost the harness ~1.4 CPU-s at
    2,000-fix batches, charged to the tracker's time.  Unsorted pairs take the mask (the same
    pairs in the same order either way).
    """
    fix = pairs[0]
    if len(fix) < 2 or bool(np.all(fix[1:] >= fix[:-1])):
        lo, hi = (int(i) for i in fix.searchsorted([a, b]))
        return np.stack((fix[lo:hi] - a, pairs[1][lo:hi]))
    sel = (fix >= a) & (fix < b)
    return np.stack((fix[sel] - a, pairs[1][sel]))


@dataclass
class _NaiveSite:
    entered: float = -1.0
    last_in: float = -1.0
    outside: int = 0
    visit: bool = False


@dataclass
class _NaiveVehicle:
    sites: dict[int, _NaiveSite] = field(default_factory=dict)
    stop_start: float = -1.0
    visits: int = 0
    stops: int = 0


def run_naive(
    batch: FixBatch,
    inside: npt.NDArray[np.int64],
    near: npt.NDArray[np.int64],
    units: dict[str, str],
    params: DetectionParams,
) -> int:
    """Per-fix Python: the baseline (one dict lookup and a few branches per fix and site)."""
    near_of: dict[int, set[int]] = {}
    for i, s in zip(near[0].tolist(), near[1].tolist(), strict=True):
        near_of.setdefault(i, set()).add(s)
    in_of: dict[int, set[int]] = {}
    for i, s in zip(inside[0].tolist(), inside[1].tolist(), strict=True):
        in_of.setdefault(i, set()).add(s)
    vehicles: dict[str, _NaiveVehicle] = {}
    unit = batch.unit_id.tolist()
    t_s = (batch.t_us / 1e6).tolist()
    speed = batch.speed_kmh.tolist()
    empty: set[int] = set()
    for i in range(len(batch)):
        v = vehicles.setdefault(units.get(unit[i], unit[i]), _NaiveVehicle())
        t = t_s[i]
        ins = in_of.get(i, empty)
        nrs = near_of.get(i, empty)
        for s in ins:
            st = v.sites.setdefault(s, _NaiveSite())
            if st.entered < 0:
                st.entered = t
        for s, st in list(v.sites.items()):
            if s in nrs or s in ins:
                st.last_in, st.outside = t, 0
                if not st.visit and t - st.entered >= params.min_dwell_s:
                    st.visit = True
            else:
                st.outside += 1
                if (
                    st.outside >= params.exit_confirm_fixes
                    and t - st.last_in >= params.exit_confirm_s
                ):
                    v.visits += st.visit
                    del v.sites[s]
        if speed[i] < params.stop_speed_kmh:
            if v.stop_start < 0:
                v.stop_start = t
        elif v.stop_start >= 0:
            v.stops += t - v.stop_start >= params.stop_min_s
            v.stop_start = -1.0
    return sum(v.visits + sum(st.visit for st in v.sites.values()) for v in vehicles.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, help="an existing scenario directory")
    # the simulator's own defaults (`fleetwatch simulate`): 1,500 sites need ~50 vehicles to be
    # served within one local day (20 raised ScenarioError on a first run without --scenario)
    ap.add_argument("--vehicles", type=positive_int, default=ScenarioParams().vehicles)
    ap.add_argument("--sites", type=positive_int, default=ScenarioParams().sites)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--batch-fixes", type=positive_int, default=20_000)
    ap.add_argument(
        "--compare-full",
        action="store_true",
        help="also time FleetTracker(incremental=False) and check both report the same events",
    )
    args = ap.parse_args()
    if args.scenario is not None and not (args.scenario / "sites.geojson").is_file():
        ap.error(f"--scenario {args.scenario}: not a scenario directory (no sites.geojson)")
    params = DetectionParams()
    with tempfile.TemporaryDirectory() as tmp:
        scenario = args.scenario
        if scenario is None:
            scenario = Path(tmp) / "day"
            try:
                write_scenario(ScenarioParams(sites=args.sites, vehicles=args.vehicles), scenario)
            except ValueError as exc:  # ScenarioError included: it names what to change
                ap.error(str(exc))
        t0 = time.perf_counter()
        batch, inside, near, site_ids, units = load_matched(scenario, params)
        print(
            f"scenario {scenario}: {len(batch):,} fixes, {len(site_ids)} sites, "
            f"{len(units)} units (decode+match, untimed: {time.perf_counter() - t0:.1f} s)"
        )
        # as the service does at start: compile (or load from numba's cache) the detection
        # kernels before the clock runs, so no repeat pays for them
        warm_up_detection()
        tracker_s, naive_s, full_s = [], [], []
        tracker_c, naive_c, full_c = [], [], []  # CPU seconds: steadier on a shared machine
        visits = naive_visits = 0
        inc_events: list[DetectionEvent] = []
        full_events: list[DetectionEvent] = []
        bf = args.batch_fixes
        batches = cut_batches(batch, inside, near, bf)  # untimed: see cut_batches
        for _ in range(args.repeats):
            inc_events.clear()
            a, c = time.perf_counter(), time.process_time()
            visits = run_tracker(batches, site_ids, units, params, out=inc_events)
            tracker_s.append(time.perf_counter() - a)
            tracker_c.append(time.process_time() - c)
            if args.compare_full:
                full_events.clear()
                a, c = time.perf_counter(), time.process_time()
                run_tracker(batches, site_ids, units, params, incremental=False, out=full_events)
                full_s.append(time.perf_counter() - a)
                full_c.append(time.process_time() - c)
            a, c = time.perf_counter(), time.process_time()
            naive_visits = run_naive(batch, inside, near, units, params)
            naive_s.append(time.perf_counter() - a)
            naive_c.append(time.process_time() - c)
    n = len(batch)
    t_med, b_med = statistics.median(tracker_s), statistics.median(naive_s)
    tc, bc = statistics.median(tracker_c), statistics.median(naive_c)
    if args.compare_full:
        f_med, fc = statistics.median(full_s), statistics.median(full_c)
        same = _same_events(inc_events, full_events)
        print(
            f"FleetTracker(incremental=False), same run: median {f_med:.2f} s "
            f"= {n / f_med:,.0f} fixes/s  runs {[round(x, 2) for x in full_s]}; "
            f"CPU median {fc:.2f} s; incremental speed-up {f_med / t_med:.2f}x wall, "
            f"{fc / tc:.2f}x CPU; identical events: {same}"
        )
    print(
        f"FleetTracker (batches of {args.batch_fixes:,} fixes): median {t_med:.2f} s "
        f"= {n / t_med:,.0f} fixes/s ({visits} visits)  runs {[round(x, 2) for x in tracker_s]}"
        f"; CPU median {tc:.2f} s = {n / tc:,.0f} fixes/CPU-s"
    )
    print(
        f"baseline per-fix Python state machine:  median {b_med:.2f} s "
        f"= {n / b_med:,.0f} fixes/s ({naive_visits} visits, no jitter/teleport/late rules)"
        f"  runs {[round(x, 2) for x in naive_s]}; "
        f"CPU median {bc:.2f} s = {n / bc:,.0f} fixes/CPU-s"
    )
    print(f"ratio tracker/baseline throughput: {b_med / t_med:.2f}x wall, {bc / tc:.2f}x CPU")


def _same_events(a: list[DetectionEvent], b: list[DetectionEvent]) -> bool:
    """Event for event, field by field (NaN equals NaN: HDOP-less units)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y):
            return False
        for name in x.__slots__:
            u, v = getattr(x, name), getattr(y, name)
            if not (u == v or (u != u and v != v)):
                return False
    return True


if __name__ == "__main__":
    main()

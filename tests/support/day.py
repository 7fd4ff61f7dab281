"""A simulated day decoded and matched as the benchmarks' ``load_matched`` does, for the
kernel tests' "real windows" (the fixture ``matched_day`` in tests/conftest.py).

Why not the benchmarks' 50-vehicle day: the tests need real tracks (arrivals, parked trucks,
fences that overlap, store-and-forward backlogs, multipath), not its size; 8 vehicles over
300 sites give ~200,000 fixes in a few seconds and are made afresh in every run, so the tests
never depend on a file left in /tmp.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from geofence import FenceIndex, load_sites_geojson
from ingest.nmea import Decoder
from schedule.params import DetectionParams
from simulators.formats import iter_payloads, load_units, unit_files
from simulators.scenario import ScenarioParams, write_scenario


class MatchedDay(NamedTuple):
    batch: FixBatch  # every decoded fix, in arrival order
    inside: npt.NDArray[np.int64]  # (2, K) fix index, site index: inside the fence
    near: npt.NDArray[np.int64]  # the same for the fence grown by exit_margin_m
    site_ids: tuple[str, ...]
    units: dict[str, str]  # unit id -> vehicle id


def matched_day(out: Path, *, vehicles: int = 8, sites: int = 300, seed: int = 1) -> MatchedDay:
    write_scenario(ScenarioParams(seed=seed, sites=sites, vehicles=vehicles), out)
    params = DetectionParams()
    index = FenceIndex.build(
        load_sites_geojson(out / "sites.geojson").sites, margin_m=params.exit_margin_m
    )
    units = {u.unit_id: u.vehicle_id for u in load_units(out / "units.csv")}
    rows = [(r, u, p) for u, f in unit_files(out).items() for r, p in iter_payloads(f)]
    rows.sort(key=lambda r: r[0])
    fixes = Decoder().decode([u for _, u, _ in rows], [p for *_, p in rows], [r for r, *_ in rows])
    batch = fixes.fixes.take(np.argsort(fixes.fixes.recv_us, kind="stable"))
    inside = index.query(batch.lon, batch.lat, margin_m=0.0).astype(np.int64)
    near = index.query(batch.lon, batch.lat, margin_m=params.exit_margin_m).astype(np.int64)
    return MatchedDay(batch, inside, near, index.site_ids, units)

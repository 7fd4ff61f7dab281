"""Run decode -> geofence -> visit/stop detection offline over a scenario directory.

Reads ``sites.geojson``, ``units.csv`` and every ``nmea/<unit>.nmea`` (payloads merged across
units by receive time, as the broker would have delivered them), decodes them in batches with
the production decoder, matches each batch against the fence index and feeds the trackers, as
fast as the CPU allows.  Writes into ``--out``: ``visits.json`` and ``stops.json`` (the final,
corrected records), ``events.jsonl`` (every event in emission order, corrections included) and
``summary.json`` (counts, timings, tracker statistics; with ``--evaluate`` the comparison with
``truth.json``).  The summary is also printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.fixes import FixBatch, iso_utc
from fleetwatch.regions import depot_points, sites_in_region
from geofence import FenceIndex, load_sites_geojson
from ingest.nmea import DecodeOptions, Decoder
from schedule.evaluate import VisitInterval, evaluate_visits
from schedule.events import (
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
    latest,
)
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker, TrackerStats
from simulators.formats import load_truth, load_units, merged_payloads, unit_files

#: Payloads handed to the decoder (and then to matching and the trackers) per batch.
DEFAULT_BATCH_PAYLOADS = 100_000
#: Receive-time interval at which silent vehicles' open visits/stops are checked for closing.
ADVANCE_EVERY_US = 60_000_000


class ScenarioError(Exception):
    """The scenario directory is missing a file or holds no usable site (the user's to fix)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DetectionParams()
    parser.add_argument("scenario", type=Path, metavar="SCENARIO_DIR",
                        help="a scenario written by fleetwatch simulate")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--min-dwell-s", type=float, default=d.min_dwell_s,
                        help=f"a visit needs this long inside (default {d.min_dwell_s:g})")
    parser.add_argument("--min-stop-s", type=float, default=d.stop_min_s,
                        help=f"a stop lasts at least this long (default {d.stop_min_s:g})")
    parser.add_argument("--max-gap-s", type=float, default=d.max_gap_s,
                        help=f"a longer gap ends a visit (default {d.max_gap_s:g})")
    parser.add_argument("--exit-margin-m", type=float, default=d.exit_margin_m,
                        help=f"hysteresis outside a fence (default {d.exit_margin_m:g})")
    parser.add_argument(
        "--batch-payloads",
        type=int,
        default=DEFAULT_BATCH_PAYLOADS,
        help=f"payloads per decode/match/detect batch (default {DEFAULT_BATCH_PAYLOADS})",
    )
    parser.add_argument(
        "--evaluate", action="store_true", help="compare the visits with truth.json"
    )
    parser.add_argument(  # ops: the sites region (fleetwatch/regions.py)
        "--region", default="auto", metavar="BOX",
        help="refuse sites outside lon_min,lat_min,lon_max,lat_max; 'auto' (default): around "
        "the scenario's depots; 'off'",
    )  # fmt: skip


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay produced (the CLI writes it; tests inspect it)."""

    events: list[DetectionEvent]
    visits: list[dict[str, Any]]
    stops: list[dict[str, Any]]
    summary: dict[str, Any]
    stats: TrackerStats
    timings_s: dict[str, float] = field(default_factory=dict)


def _records(events: list[DetectionEvent]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fold the event stream into the final visits and stops (JSON-ready)."""
    folded = latest(events)
    visits: dict[str, dict[str, Any]] = {}
    stops: dict[str, dict[str, Any]] = {}
    for ev in folded.values():
        if ev.retracted:
            continue
        if isinstance(ev, VisitStarted):
            visits.setdefault(ev.visit_id, {}).update(
                visit_id=ev.visit_id,
                vehicle_id=ev.vehicle_id,
                site_id=ev.site_id,
                arrival=iso_utc(ev.arrival_us),
                open=ev.visit_id not in visits,
            )
        elif isinstance(ev, VisitCompleted):
            d = ev.to_json_dict()
            del d["event"]
            d["open"] = False
            visits.setdefault(ev.visit_id, {}).update(d)
        elif isinstance(ev, StopStarted):
            stops.setdefault(ev.stop_id, {}).update(
                stop_id=ev.stop_id,
                vehicle_id=ev.vehicle_id,
                site_id=ev.site_id,
                start=iso_utc(ev.start_us),
                lat=ev.lat,
                lon=ev.lon,
                open=ev.stop_id not in stops,
            )
        elif isinstance(ev, StopEnded):
            d = ev.to_json_dict()
            del d["event"]
            d["open"] = False
            stops.setdefault(ev.stop_id, {}).update(d)
    for s in stops.values():
        s["kind"] = "visit" if s.get("site_id") else "unscheduled"
    vs = sorted(visits.values(), key=lambda v: (v["vehicle_id"], v["arrival"]))
    ss = sorted(stops.values(), key=lambda s: (s["vehicle_id"], s["start"]))
    return vs, ss


def replay_scenario(
    scenario: Path,
    params: DetectionParams | None = None,
    *,
    batch_payloads: int = DEFAULT_BATCH_PAYLOADS,
    evaluate: bool = False,
    region: str = "auto",
) -> ReplayResult:
    """Replay one scenario directory (sans output: see :func:`run` for the files)."""
    params = params or DetectionParams()
    for name in ("sites.geojson", "units.csv"):
        if not (scenario / name).is_file():
            raise ScenarioError(f"{scenario}: no {name} (is it a scenario directory?)")
    t_start = time.perf_counter()
    load = load_sites_geojson(scenario / "sites.geojson")
    load, _ = sites_in_region(  # ops: the sites region (fleetwatch/regions.py)
        load, region, source=f"{scenario}/sites.geojson", anchors=depot_points(scenario)
    )
    if not load.sites:
        raise ScenarioError(
            f"{scenario}/sites.geojson: no usable site ({len(load.problems)} problems)"
        )
    index = FenceIndex.build(load.sites, margin_m=params.exit_margin_m)
    units = {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}
    files = unit_files(scenario)
    fleet = FleetTracker(index.site_ids, units, params)
    decoder = Decoder(DecodeOptions())
    t_setup = time.perf_counter()

    def matcher(lon: Any, lat: Any, margin_m: float) -> Any:
        return index.query(lon, lat, margin_m=margin_m)

    events: list[DetectionEvent] = []
    counts: dict[str, int] = {}
    t_decode = t_detect = 0.0
    n_payloads = n_fixes = 0
    next_advance: int | None = None
    batch_units: list[str] = []
    batch_payload: list[bytes] = []
    batch_recv: list[int] = []

    def flush() -> None:
        nonlocal t_decode, t_detect, n_fixes, next_advance
        if not batch_payload:
            return
        a = time.perf_counter()
        res = decoder.decode(batch_units, batch_payload, np.asarray(batch_recv, np.int64))
        b = time.perf_counter()
        for k, v in res.counts.items():
            counts[k] = counts.get(k, 0) + v
        fixes: FixBatch = res.fixes
        n_fixes += len(fixes)
        events.extend(fleet.feed_matched(fixes, matcher))
        now = batch_recv[-1]
        if next_advance is None or now >= next_advance:
            events.extend(fleet.advance(now))
            next_advance = now + ADVANCE_EVERY_US
        t_decode += b - a
        t_detect += time.perf_counter() - b
        batch_units.clear()
        batch_payload.clear()
        batch_recv.clear()

    for recv, unit, payload in merged_payloads(scenario):
        batch_units.append(unit)
        batch_payload.append(payload)
        batch_recv.append(recv)
        n_payloads += 1
        if len(batch_payload) >= batch_payloads:
            flush()
    flush()
    b = time.perf_counter()
    events.extend(fleet.finish())
    t_detect += time.perf_counter() - b
    visits, stops = _records(events)
    t_end = time.perf_counter()
    stats = fleet.statistics()
    summary: dict[str, Any] = {
        "scenario": str(scenario),
        "sites": len(load.sites),
        "site_problems": [str(p) for p in load.problems],
        "units": len(files),
        "payloads": n_payloads,
        "fixes": n_fixes,
        "decode_counts": dict(sorted(counts.items())),
        "events": len(events),
        "corrections": sum(1 for e in events if e.version > 1),
        "visits": len(visits),
        "open_visits": sum(1 for v in visits if v.get("open")),
        "stops": len(stops),
        "unscheduled_stops": sum(1 for s in stops if s["kind"] == "unscheduled"),
        "tracker": {k: getattr(stats, k) for k in stats.__slots__},
        "unknown_units": sorted(fleet.unknown_units),
        "params": {k: getattr(params, k) for k in params.__slots__},
        "seconds": {
            "setup": round(t_setup - t_start, 3),
            "decode": round(t_decode, 3),
            "match_and_detect": round(t_detect, 3),
            "total": round(t_end - t_start, 3),
        },
        "fixes_per_s": round(n_fixes / max(t_end - t_start, 1e-9)),
    }
    if evaluate:
        truth_path = scenario / "truth.json"
        if not truth_path.is_file():
            raise ScenarioError(f"{scenario}: --evaluate needs truth.json")
        detected = [
            VisitInterval(
                vehicle_id=v["vehicle_id"],
                site_id=v["site_id"],
                arrival_us=_parse(v["arrival"]),
                departure_us=_parse(v["departure"]),
            )
            for v in visits
            if not v.get("open")
        ]
        summary["evaluation"] = evaluate_visits(detected, load_truth(truth_path)).to_json_dict()
    return ReplayResult(events=events, visits=visits, stops=stops, summary=summary, stats=stats)


def _parse(text: str) -> int:
    from schedule.evaluate import _us

    return _us(text, "visit")


def run(args: argparse.Namespace) -> int:
    try:
        params = DetectionParams(
            min_dwell_s=args.min_dwell_s,
            stop_min_s=args.min_stop_s,
            max_gap_s=args.max_gap_s,
            exit_margin_m=args.exit_margin_m,
        )
    except ValueError as exc:
        print(f"fleetwatch replay: {exc}", file=sys.stderr)
        return 2
    try:
        result = replay_scenario(
            args.scenario, params, batch_payloads=args.batch_payloads, evaluate=args.evaluate,
            region=args.region,
        )  # fmt: skip
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"fleetwatch replay: {exc}", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "visits.json").write_text(json.dumps(result.visits, indent=1) + "\n")
    (out / "stops.json").write_text(json.dumps(result.stops, indent=1) + "\n")
    with (out / "events.jsonl").open("w", encoding="utf-8") as f:
        for ev in result.events:
            f.write(json.dumps(ev.to_json_dict()) + "\n")
    (out / "summary.json").write_text(json.dumps(result.summary, indent=1) + "\n")
    print(json.dumps(result.summary, indent=1))
    return 0

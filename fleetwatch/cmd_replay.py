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

from alerts.records import AlertVersion, ExceptionVersion
from core.fixes import FixBatch, iso_utc
from fleetwatch.cli_types import non_negative_float, positive_float, positive_int
from fleetwatch.engine_setup import Schedule, build_engine, load_schedule
from fleetwatch.regions import depot_points, sites_in_region
from geofence import SiteFileError, load_sites_geojson
from ingest.nmea import DecodeOptions, Decoder
from schedule.engine import EngineParams, tick_until
from schedule.evaluate import VisitInterval, evaluate_visits
from schedule.evaluate_schedule import evaluate_schedule
from schedule.events import (
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
    latest,
)
from schedule.params import DetectionParams
from schedule.stop_events import (
    Acknowledge,
    AddComment,
    CancelStop,
    Command,
    CommandRefused,
    ReassignStop,
    ReorderRoute,
    StopChanged,
)
from schedule.tracker import TrackerStats
from simulators.formats import load_truth, load_units, merged_payloads, unit_files

DETECTION_EVENTS = (VisitStarted, VisitCompleted, StopStarted, StopEnded)

#: Payloads handed to the decoder (and then to matching and the trackers) per batch.
DEFAULT_BATCH_PAYLOADS = 100_000
#: Receive time covered by one decode batch (the live service batches by 100 ms or 2,000
#: messages; any chunking gives the same final events, larger batches replay faster).
DEFAULT_BATCH_S = 60.0


class ScenarioError(Exception):
    """The scenario directory is missing a file or holds no usable site (the user's to fix)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DetectionParams()
    parser.add_argument("scenario", type=Path, metavar="SCENARIO_DIR",
                        help="a scenario written by fleetwatch simulate")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "--min-dwell-s",
        type=positive_float,
        default=d.min_dwell_s,
        help=f"a visit needs this long inside (default {d.min_dwell_s:g})",
    )
    parser.add_argument(
        "--min-stop-s",
        type=positive_float,
        default=d.stop_min_s,
        help=f"a stop lasts at least this long (default {d.stop_min_s:g})",
    )
    parser.add_argument(
        "--max-gap-s",
        type=positive_float,
        default=d.max_gap_s,
        help=f"a longer gap ends a visit (default {d.max_gap_s:g})",
    )
    parser.add_argument(
        "--exit-margin-m",
        type=non_negative_float,
        default=d.exit_margin_m,
        help=f"hysteresis outside a fence (default {d.exit_margin_m:g})",
    )
    parser.add_argument(
        "--batch-payloads",
        type=positive_int,
        default=DEFAULT_BATCH_PAYLOADS,
        help=f"at most this many payloads per decode batch (default {DEFAULT_BATCH_PAYLOADS})",
    )
    parser.add_argument(
        "--batch-s",
        type=positive_float,
        default=DEFAULT_BATCH_S,
        help=f"at most this much receive time per decode batch, s (default {DEFAULT_BATCH_S})",
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
    #: everything the engine emitted, in order (detection, schedule, alert records, status)
    output: list[Any] = field(default_factory=list)
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
    batch_s: float = DEFAULT_BATCH_S,
    engine_params: EngineParams | None = None,
    evaluate: bool = False,
    with_schedule: bool = True,
    roster_file: Path | None = None,
    region: str = "auto",
) -> ReplayResult:
    """Replay one scenario directory through the live engine (sans output: see :func:`run`).

    Payloads are merged across units by receive time (as the broker delivered them), decoded
    in batches of at most *batch_s* seconds of receive time or *batch_payloads* payloads, and
    fed to :class:`schedule.engine.Engine` with the receive time as the driver's clock; the
    engine is ticked at every deadline it names in between, exactly as the live shell's timer
    does.  At the end of the data the engine's data clock catches up and everything still
    open is closed (:meth:`Engine.finish`).
    """
    params = params or DetectionParams()
    for name in ("sites.geojson", "units.csv"):
        if not (scenario / name).is_file():
            raise ScenarioError(f"{scenario}: no {name} (is it a scenario directory?)")
    if batch_payloads < 1 or not batch_s > 0:
        raise ValueError("batch_payloads must be >= 1 and batch_s > 0")
    if evaluate and not (scenario / "truth.json").is_file():  # before the replay, not after it
        raise ScenarioError(f"{scenario}: --evaluate needs truth.json")
    t_start = time.perf_counter()
    load = load_sites_geojson(scenario / "sites.geojson")
    load, _ = sites_in_region(  # ops: the sites region (fleetwatch/regions.py)
        load, region, source=f"{scenario}/sites.geojson", anchors=depot_points(scenario)
    )
    if not load.sites:
        raise ScenarioError(
            f"{scenario}/sites.geojson: no usable site ({len(load.problems)} problems)"
        )
    units = {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}
    files = unit_files(scenario)
    schedule = (
        load_schedule(scenario, roster_file=roster_file)
        if with_schedule and any((scenario / n).is_file() for n in ("plans.csv", "plans.json"))
        else None
    )
    engine = build_engine(load, units, detection=params, params=engine_params, schedule=schedule)
    commands = load_commands(scenario / "commands.jsonl")
    refused: list[dict[str, Any]] = []
    decoder = Decoder(DecodeOptions())
    t_setup = time.perf_counter()

    out: list[Any] = []
    counts: dict[str, int] = {}
    t_decode = t_engine = 0.0
    n_payloads = n_fixes = 0
    window_us = round(batch_s * 1e6)
    batch_units: list[str] = []
    batch_payload: list[bytes] = []
    batch_recv: list[int] = []
    last_now: int | None = None

    def flush() -> None:
        nonlocal t_decode, t_engine, n_fixes, last_now
        if not batch_payload:
            return
        a = time.perf_counter()
        res = decoder.decode(batch_units, batch_payload, np.asarray(batch_recv, np.int64))
        b = time.perf_counter()
        for k, v in res.counts.items():
            counts[k] = counts.get(k, 0) + v
        fixes: FixBatch = res.fixes
        n_fixes += len(fixes)
        now = batch_recv[-1]
        if last_now is None and schedule is not None:
            for plan in schedule.inputs.plans.values():
                out.extend(engine.load_plan(plan, batch_recv[0]))
        out.extend(tick_until(engine, now))
        while commands and commands[0][0] <= now:
            at, cmd = commands.pop(0)
            out.extend(tick_until(engine, at))
            try:
                out.extend(engine.command(cmd, at))
            except CommandRefused as exc:
                refused.append({"at": iso_utc(at), "code": exc.code, "message": str(exc)})
        out.extend(engine.feed(fixes, now))
        last_now = now
        t_decode += b - a
        t_engine += time.perf_counter() - b
        batch_units.clear()
        batch_payload.clear()
        batch_recv.clear()

    for recv, unit, payload in merged_payloads(scenario):
        if batch_recv and (
            recv - batch_recv[0] >= window_us or len(batch_payload) >= batch_payloads
        ):
            flush()
        batch_units.append(unit)
        batch_payload.append(payload)
        batch_recv.append(recv)
        n_payloads += 1
    flush()
    b = time.perf_counter()
    if last_now is not None:
        end = last_now + round(params.max_gap_s * 1e6) + 1
        if schedule is not None:  # run the clock past every window + grace of the day
            end = max(end, _day_end_us(schedule))
        out.extend(engine.finish(end))
    t_engine += time.perf_counter() - b
    events = [e for e in out if isinstance(e, DETECTION_EVENTS)]
    visits, stops = _records(events)
    t_end = time.perf_counter()
    stats = engine.tracker.statistics()
    est = engine.statistics()
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
        "engine": {k: getattr(est, k) for k in est.__slots__ if k != "tracker"},
        "unknown_units": sorted(engine.tracker.unknown_units),
        "params": {k: getattr(params, k) for k in params.__slots__},
        "seconds": {
            "setup": round(t_setup - t_start, 3),
            "decode": round(t_decode, 3),
            "engine": round(t_engine, 3),
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
    if schedule is not None:
        stop_changes = [e for e in out if isinstance(e, StopChanged)]
        summary["schedule"] = schedule_summary(out)
        summary["commands_refused"] = refused
        if evaluate:
            truth = json.loads((scenario / "truth.json").read_text(encoding="utf-8"))
            summary["schedule_evaluation"] = evaluate_schedule(stop_changes, truth).to_json_dict()
    return ReplayResult(
        events=events, visits=visits, stops=stops, summary=summary, stats=stats, output=out
    )


def _day_end_us(schedule: Schedule) -> int:
    """The latest moment any planned stop can still change by the clock: window end + grace
    (+ an hour of margin), over every plan."""
    ends = [
        s.window_end_us
        for plan in schedule.inputs.plans.values()
        for route in plan.routes.values()
        for s in route
    ]
    return max(ends) + 3 * 3600 * 1_000_000 if ends else 0


def load_commands(path: Path) -> list[tuple[int, Command]]:
    """Dispatcher commands of a scenario (``commands.jsonl``: one per line, with ``at``),
    in time order; replay applies each at its time.  Absent file: none."""
    if not path.is_file():
        return []
    out: list[tuple[int, Command]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            at = _parse(d["at"])
            kind = d["command"]
            by = str(d.get("by", "replay"))
            cmd: Command
            if kind == "cancel":
                cmd = CancelStop(stop_id=d["stop_id"], reason=d["reason"], by=by)
            elif kind == "reassign":
                cmd = ReassignStop(stop_id=d["stop_id"], to_vehicle=d["to_vehicle"], by=by)
            elif kind == "reorder":
                cmd = ReorderRoute(route_id=d["route_id"], stop_ids=tuple(d["stop_ids"]), by=by)
            elif kind == "acknowledge":
                cmd = Acknowledge(alert_id=d["alert_id"], version=int(d["version"]), by=by)
            elif kind == "comment":
                cmd = AddComment(alert_id=d["alert_id"], text=d["text"], by=by)
            else:
                raise ValueError(f"unknown command {kind!r}")
        except (KeyError, ValueError, TypeError) as exc:
            raise ScenarioError(f"{path}:{n}: {exc}") from None
        out.append((at, cmd))
    out.sort(key=lambda x: x[0])
    return out


def schedule_summary(out: list[Any]) -> dict[str, Any]:
    """Counts of the schedule's final states and of the alert desk's records."""
    final: dict[str, StopChanged] = {}
    for e in out:
        if isinstance(e, StopChanged):
            final[e.stop_id] = e
    states: dict[str, int] = {}
    for sc in final.values():
        key = sc.state if sc.state != "visited" else f"visited_{sc.outcome}"
        states[key] = states.get(key, 0) + 1
    alerts = [e for e in out if isinstance(e, AlertVersion)]
    exceptions = [e for e in out if isinstance(e, ExceptionVersion)]
    latest_exc: dict[str, ExceptionVersion] = {}
    for x in exceptions:
        latest_exc[x.id] = x
    kinds: dict[str, int] = {}
    for x in latest_exc.values():
        if x.status != "retracted":
            kinds[x.kind] = kinds.get(x.kind, 0) + 1
    return {
        "stops": len(final),
        "final_states": dict(sorted(states.items())),
        "alert_versions": len(alerts),
        "alert_threads": len({a.id for a in alerts}),
        "exception_versions": len(exceptions),
        "exceptions_by_kind": dict(sorted(kinds.items())),
    }


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
    if not args.scenario.is_dir():  # a mistyped path: a usage error, and no --out made for it
        what = "not a directory" if args.scenario.exists() else "no such directory"
        print(f"fleetwatch replay: SCENARIO_DIR {args.scenario}: {what}", file=sys.stderr)
        return 2
    out: Path = args.out
    try:  # an unusable --out is said at once, not after minutes of replay
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file of that name exists" if out.exists() else (exc.strerror or str(exc))
        print(f"fleetwatch replay: --out {out}: cannot create the directory ({why})",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        result = replay_scenario(
            args.scenario,
            params,
            batch_payloads=args.batch_payloads,
            batch_s=args.batch_s,
            evaluate=args.evaluate,
            region=args.region,
        )
    except SiteFileError as exc:  # names the file only: say which scenario
        print(f"fleetwatch replay: {args.scenario}: {exc}", file=sys.stderr)
        return 1
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"fleetwatch replay: {exc}", file=sys.stderr)
        return 1
    (out / "visits.json").write_text(json.dumps(result.visits, indent=1) + "\n")
    (out / "stops.json").write_text(json.dumps(result.stops, indent=1) + "\n")
    with (out / "events.jsonl").open("w", encoding="utf-8") as f:
        for ev in result.events:
            f.write(json.dumps(ev.to_json_dict()) + "\n")
    write_schedule_outputs(out, result.output)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=1) + "\n")
    print(json.dumps(result.summary, indent=1))
    return 0


def write_schedule_outputs(out: Path, records: list[Any]) -> None:
    """``stop_states.json`` (each planned stop's final record), ``alerts.jsonl`` (every alert
    version in order) and ``exceptions.json`` (every visit-exception version: the CRM feed's
    items, docs/formats.md)."""
    final: dict[str, StopChanged] = {}
    for e in records:
        if isinstance(e, StopChanged):
            final[e.stop_id] = e
    (out / "stop_states.json").write_text(
        json.dumps([stop_json(final[k]) for k in sorted(final)], indent=1) + "\n"
    )
    with (out / "alerts.jsonl").open("w", encoding="utf-8") as f:
        for e in records:
            if isinstance(e, AlertVersion):
                f.write(json.dumps(e.to_json_dict()) + "\n")
    exceptions = [e.to_json_dict() for e in records if isinstance(e, ExceptionVersion)]
    (out / "exceptions.json").write_text(json.dumps(exceptions, indent=1) + "\n")


def stop_json(sc: StopChanged) -> dict[str, Any]:
    """A :class:`StopChanged` as JSON: times as ISO-8601 UTC, µs fields renamed."""
    d: dict[str, Any] = {}
    for k in sc.__slots__:
        v = getattr(sc, k)
        if k.endswith("_us"):
            d[k[:-3]] = None if v is None else iso_utc(v)
        else:
            d[k] = v
    return d

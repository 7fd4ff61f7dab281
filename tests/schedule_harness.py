"""Test harness until schedule/engine.py lands: decode → match → detect → ScheduleBoard.

Drives a scenario directory through the production decoder, fence index and FleetTracker in
receive-time steps of ``step_s`` seconds (as the live service would see it), hands detection
events and the newest position per vehicle to the board, and ticks the board at every deadline
it names (never polling).  Returns every schedule event with the board, for the day-level
figures (schedule/evaluate_schedule.py) and the integration tests.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from core.fixes import FixBatch
from geofence import FenceIndex, load_sites_geojson
from ingest.nmea import DecodeOptions, Decoder
from schedule.board import ScheduleBoard
from schedule.params import DetectionParams
from schedule.plans import read_schedule_inputs
from schedule.schedule_params import ScheduleParams
from schedule.stop_events import CancelStop, ScheduleEvent, VehiclePosition
from schedule.tracker import FleetTracker
from simulators.formats import load_units, merged_payloads, parse_iso_us

ADVANCE_EVERY_US = 60_000_000


@dataclasses.dataclass(slots=True)
class DayRun:
    board: ScheduleBoard
    events: list[ScheduleEvent]
    inputs: Any
    ticks: int
    commands: int


def _tick_until(board: ScheduleBoard, now: int, out: list[ScheduleEvent]) -> int:
    n = 0
    while True:
        d = board.next_deadline_us()
        if d is None or d > now:
            return n
        out += board.tick(d)
        n += 1


def truth_commands(scenario: Path) -> list[tuple[int, Any]]:
    """The dispatcher's cancellations of the simulated day (truth.json ``cancelled``, the same
    as the scenario's commands.jsonl)."""
    path = scenario / "truth.json"
    if not path.is_file():
        return []
    truth = json.loads(path.read_text(encoding="utf-8"))
    date = truth["scenario"]["date"]
    return [
        (
            parse_iso_us(c["at"]),
            CancelStop(stop_id=f"{date}/{c['site_id']}", reason=c["reason"], by="dispatcher"),
        )
        for c in truth.get("cancelled", [])
    ]


def run_day(
    scenario: Path,
    *,
    step_s: float = 30.0,
    params: ScheduleParams | None = None,
    detection: DetectionParams | None = None,
    commands: list[tuple[int, Any]] | None = None,
) -> DayRun:
    """Replay the scenario into a board; ``commands`` = (time µs, command) fed at their time."""
    params = params or ScheduleParams()
    det = detection or DetectionParams()
    inputs = read_schedule_inputs(scenario)
    load = load_sites_geojson(scenario / "sites.geojson")
    index = FenceIndex.build(load.sites, margin_m=det.exit_margin_m)
    units = {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}
    fleet = FleetTracker(index.site_ids, units, det)
    decoder = Decoder(DecodeOptions())
    board = ScheduleBoard(
        sites=inputs.sites, vehicles=inputs.vehicles, depots=inputs.depots, params=params
    )
    out: list[ScheduleEvent] = []
    if commands is None:
        commands = truth_commands(scenario)
    pending_cmds = sorted(commands, key=lambda c: c[0])
    first = True
    ticks = 0
    step_us = int(step_s * 1e6)
    batch_u: list[str] = []
    batch_p: list[bytes] = []
    batch_r: list[int] = []
    next_advance = 0
    batch_end = 0

    def matcher(lon: Any, lat: Any, margin_m: float) -> Any:
        return index.query(lon, lat, margin_m=margin_m)

    def flush(now: int) -> None:
        nonlocal ticks, next_advance
        ticks += _tick_until(board, now, out)
        while pending_cmds and pending_cmds[0][0] <= now:
            t, cmd = pending_cmds.pop(0)
            ticks += _tick_until(board, t, out)
            out.extend(board.command(cmd, t))
        if not batch_p:
            return
        res = decoder.decode(batch_u, batch_p, np.asarray(batch_r, np.int64))
        fixes: FixBatch = res.fixes
        evs = fleet.feed_matched(fixes, matcher)
        if now >= next_advance:
            evs += fleet.advance(now)
            next_advance = now + ADVANCE_EVERY_US
        out.extend(board.on_detection(evs, now))
        if len(fixes):
            order = np.lexsort((fixes.t_us, fixes.unit_id))
            last = np.flatnonzero(
                np.concatenate((fixes.unit_id[order][1:] != fixes.unit_id[order][:-1], [True]))
            )
            pos = [
                VehiclePosition(
                    vehicle_id=units.get(str(fixes.unit_id[i]), str(fixes.unit_id[i])),
                    t_us=int(fixes.t_us[i]),
                    lon=float(fixes.lon[i]),
                    lat=float(fixes.lat[i]),
                    speed_kmh=float(fixes.speed_kmh[i]),
                )
                for i in order[last].tolist()
            ]
            out.extend(board.on_positions(pos, now))
        batch_u.clear()
        batch_p.clear()
        batch_r.clear()

    for recv, unit, payload in merged_payloads(scenario):
        if first:
            for day in sorted(inputs.plans):
                out.extend(board.load_plan(inputs.plans[day], recv))
            first = False
            batch_end = recv + step_us
        if recv >= batch_end:
            flush(batch_end)
            batch_end = (recv // step_us + 1) * step_us
        batch_u.append(unit)
        batch_p.append(payload)
        batch_r.append(recv)
    flush(batch_end)
    evs = fleet.finish()
    out.extend(board.on_detection(evs, batch_end))
    # the clock runs on to the end of every stop's grace
    horizon = max((s.grace_end_us for s in board._stops.values()), default=batch_end)
    ticks += _tick_until(board, max(horizon, batch_end) + 1, out)
    return DayRun(board=board, events=out, inputs=inputs, ticks=ticks, commands=len(commands))


def run_day_in_order(
    scenario: Path,
    *,
    step_s: float = 30.0,
    params: ScheduleParams | None = None,
    detection: DetectionParams | None = None,
) -> DayRun:
    """The same day delivered in fix-time order (no backlog, no bursts): every payload decoded
    first, then fed by fix time with "now" = the step's end.  Final states must equal those of
    :func:`run_day` (decisions never depend on arrival order)."""
    params = params or ScheduleParams()
    det = detection or DetectionParams()
    inputs = read_schedule_inputs(scenario)
    load = load_sites_geojson(scenario / "sites.geojson")
    index = FenceIndex.build(load.sites, margin_m=det.exit_margin_m)
    units = {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}
    fleet = FleetTracker(index.site_ids, units, det)
    board = ScheduleBoard(
        sites=inputs.sites, vehicles=inputs.vehicles, depots=inputs.depots, params=params
    )
    decoder = Decoder(DecodeOptions())
    parts: list[FixBatch] = []
    us: list[str] = []
    ps: list[bytes] = []
    rs: list[int] = []
    for recv, unit, payload in merged_payloads(scenario):
        us.append(unit)
        ps.append(payload)
        rs.append(recv)
    parts.append(decoder.decode(us, ps, np.asarray(rs, np.int64)).fixes)
    fixes = FixBatch.concat(parts)
    fixes = fixes.take(np.argsort(fixes.t_us, kind="stable"))
    commands = sorted(truth_commands(scenario), key=lambda c: c[0])
    out: list[ScheduleEvent] = []
    step_us = int(step_s * 1e6)
    t = fixes.t_us
    start = int(t[0])
    for day in sorted(inputs.plans):
        out.extend(board.load_plan(inputs.plans[day], start))
    ticks = 0
    next_advance = 0

    def matcher(lon: Any, lat: Any, margin_m: float) -> Any:
        return index.query(lon, lat, margin_m=margin_m)

    lo = 0
    end = start
    while lo < len(t):
        end = (int(t[lo]) // step_us + 1) * step_us
        hi = int(np.searchsorted(t, end, side="left"))
        ticks += _tick_until(board, end, out)
        while commands and commands[0][0] <= end:
            at, cmd = commands.pop(0)
            out.extend(board.command(cmd, at))
        chunk = fixes.take(np.arange(lo, hi))
        evs = fleet.feed_matched(chunk, matcher)
        if end >= next_advance:
            evs += fleet.advance(end)
            next_advance = end + ADVANCE_EVERY_US
        out.extend(board.on_detection(evs, end))
        last: dict[str, VehiclePosition] = {}
        for i in range(len(chunk)):
            vid = units.get(str(chunk.unit_id[i]), str(chunk.unit_id[i]))
            last[vid] = VehiclePosition(
                vehicle_id=vid,
                t_us=int(chunk.t_us[i]),
                lon=float(chunk.lon[i]),
                lat=float(chunk.lat[i]),
                speed_kmh=float(chunk.speed_kmh[i]),
            )
        out.extend(board.on_positions(list(last.values()), end))
        lo = hi
    out.extend(board.on_detection(fleet.finish(), end))
    horizon = max((s.grace_end_us for s in board._stops.values()), default=end)
    ticks += _tick_until(board, max(horizon, end) + 1, out)
    return DayRun(board=board, events=out, inputs=inputs, ticks=ticks, commands=0)

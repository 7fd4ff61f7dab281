"""Generate a scenario directory (docs/formats.md): city, plans, every unit's NMEA, ground truth.

Deterministic for a seed: the city comes from ``Generator(PCG64(seed))`` and every vehicle from
its own ``Generator(PCG64(SeedSequence([seed, k])))``, so the same parameters give
byte-identical files, and a vehicle's day does not depend on how many vehicles come after it.

A vehicle's day is planned first (route driven undisturbed → planned arrivals → contract
windows with slack around them), then driven for real with the injected events, sampled at its
unit's rate, observed through its GPS model, cut into MQTT payloads and written, one unit at a
time, so memory stays bounded by one vehicle's day.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from simulators.city import City, Site, generate_city
from simulators.drive import (
    MOVE,
    Phase,
    Timeline,
    crawl_phase,
    dwell_phase,
    move_phase,
    street_phases,
)
from simulators.gps import Dropout, MultipathNoise, observe, stand_and_creep, transmit
from simulators.nmea_writer import FixColumns, epoch_bytes
from simulators.plans import (
    RouteAssignment,
    assign_routes,
    sites_for_weekday,
    window_around,
    with_window,
)
from simulators.roads import Route, StreetGrid, route
from simulators.truth import Truth, UnscheduledStop, Visit, iso_s

FloatArray = npt.NDArray[np.float64]

_GARBAGE_BYTES = np.array([b for b in range(256) if b not in (0x0A, 0x0D, 0x23, 0x24)], np.uint8)


#: the latest window end a plan may need after its last stop (plans.window_around's slack)
WINDOW_SLACK_MIN = 180


NOISE_MODELS = ("default", "multipath")


class ScenarioError(ValueError):
    """The parameters ask for a day that cannot be planned (the message says what to change)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioParams:
    """Every knob of the generator; rates are probabilities unless named otherwise."""

    seed: int = 1
    date: dt.date = dt.date(2026, 11, 23)
    sites: int = 1500
    vehicles: int = 50
    lat0: float = 55.7558
    lon0: float = 37.6173
    size_km: float = 40.0
    tz: str = "Europe/Moscow"
    start_local: str = "07:00"  # first departures between this and one hour later
    rate_hz: float = 1.0
    slow_unit_fraction: float = 0.1  # units reporting at slow_rate_hz instead
    slow_rate_hz: float = 0.2
    noise_min_m: float = 3.0  # per-unit σ drawn uniformly in [min, max]
    noise_max_m: float = 15.0
    polygon_fraction: float = 0.35
    pair_fraction: float = 0.04  # sites in overlapping pairs
    skip_rate: float = 0.02  # per planned stop
    late_rate: float = 0.3  # per vehicle: one congestion costing 30–90 min
    jam_rate: float = 0.03  # per leg: a 3–12 min jam (unscheduled "traffic" stop)
    lunch_rate: float = 0.5  # per vehicle: a 20–45 min lunch stop
    driveby_rate: float = 0.03  # per leg: a detour through a fence without stopping
    multipath_rate: float = 0.002  # per epoch near buildings
    # "multipath": issue 11's independent noise (simulators.gps.MultipathNoise) and jams as
    # stands with short creeps (simulators.gps.stand_and_creep) instead of the default model
    noise_model: str = "default"
    dropout_rate: float = 0.3  # expected coverage dropouts per unit per day
    bad_rate: float = 0.0005  # per sentence
    clock_off_units: int = 1
    silent_units: int = 1
    # issue 8 (schedule): all off by default, and drawn from a separate random stream per
    # vehicle, so a scenario without them stays byte-identical for the same seed
    cancel_rate: float = 0.0  # per planned stop: the dispatcher cancels it (client closed)
    coverage_gap_units: int = 0  # units out of coverage across a stop's window end
    breakdown_rate: float = 0.0  # per vehicle: a 30–60 min standstill on a leg (foreseeable)

    def __post_init__(self) -> None:
        if self.sites < 1 or self.vehicles < 1:
            raise ValueError("need at least one site and one vehicle")
        if not 0 < self.noise_min_m <= self.noise_max_m:
            raise ValueError(f"noise range {self.noise_min_m}..{self.noise_max_m} m is not valid")
        for name in ("rate_hz", "slow_rate_hz"):
            r = getattr(self, name)
            if not 0 < r <= 10 or ((1 / r) % 0.01 > 1e-9 and 0.01 - (1 / r) % 0.01 > 1e-9):
                raise ValueError(f"{name}={r}: the epoch interval must be a multiple of 10 ms")
        for name in (
            "slow_unit_fraction",
            "skip_rate",
            "late_rate",
            "jam_rate",
            "lunch_rate",
            "driveby_rate",
            "multipath_rate",
            "bad_rate",
            "cancel_rate",
            "breakdown_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.noise_model not in NOISE_MODELS:
            raise ValueError(f"noise_model={self.noise_model!r}: choose one of {NOISE_MODELS}")
        if self.clock_off_units + self.silent_units > self.vehicles:
            raise ValueError(
                f"{self.clock_off_units} clock-off and {self.silent_units} silent units are more "
                f"than the {self.vehicles} vehicles: lower --clock-off-units / --silent-units"
            )
        if not 0 <= self.coverage_gap_units <= self.vehicles:
            raise ValueError("coverage_gap_units must be between 0 and the number of vehicles")

    def quiet(self) -> ScenarioParams:
        """The same day with nothing injected (GPS noise stays: it is not an event)."""
        return dataclasses.replace(
            self,
            skip_rate=0.0,
            late_rate=0.0,
            jam_rate=0.0,
            lunch_rate=0.0,
            driveby_rate=0.0,
            multipath_rate=0.0,
            dropout_rate=0.0,
            bad_rate=0.0,
            clock_off_units=0,
            silent_units=0,
            cancel_rate=0.0,
            coverage_gap_units=0,
            breakdown_rate=0.0,
        )

    def to_json_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["date"] = self.date.isoformat()
        for name in ("cancel_rate", "coverage_gap_units", "breakdown_rate"):
            if not d[name]:  # unchanged truth.json for scenarios without them
                del d[name]
        return d


@dataclass(slots=True)
class _Outputs:
    plan_rows: list[list[str]] = field(default_factory=list)
    depot_rows: list[list[str]] = field(default_factory=list)
    unit_rows: list[list[str]] = field(default_factory=list)
    fixes: int = 0


_DRIVERS = (
    "Ivanov",
    "Petrov",
    "Sidorov",
    "Smirnov",
    "Kuznetsov",
    "Popov",
    "Vasiliev",
    "Sokolov",
    "Mikhailov",
    "Novikov",
    "Fedorov",
    "Morozov",
    "Volkov",
    "Alekseev",
    "Lebedev",
    "Semenov",
)


def write_scenario(params: ScenarioParams, out: Path) -> Truth:
    """Write every file of the scenario into ``out`` (created); returns the truth written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "nmea").mkdir(exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(params.seed))
    city = generate_city(
        rng,
        n_sites=params.sites,
        lat0=params.lat0,
        lon0=params.lon0,
        size_km=params.size_km,
        polygon_fraction=params.polygon_fraction,
        pair_fraction=params.pair_fraction,
        tz=params.tz,
    )
    todays = sites_for_weekday(city, params.date.isoweekday())
    routes = assign_routes(city, todays, params.vehicles)
    special = rng.permutation(params.vehicles)
    clock_off = set(special[: params.clock_off_units].tolist())
    silent = set(
        special[params.clock_off_units : params.clock_off_units + params.silent_units].tolist()
    )
    slow = rng.random(params.vehicles) < params.slow_unit_fraction
    gap_units: set[int] = set()
    if params.coverage_gap_units:
        grng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, 0, 8])))
        gap_units = (
            set(grng.permutation(params.vehicles)[: params.coverage_gap_units].tolist()) - silent
        )
    truth = Truth(scenario=params.to_json_dict())
    outputs = _Outputs()
    sites = list(city.sites)
    ctx = _Context(params=params, city=city, grid=StreetGrid())
    for k, assignment in enumerate(routes):
        vrng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, k + 1])))
        xrng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([params.seed, k + 1, 8])))
        _vehicle_day(
            ctx,
            vrng,
            k,
            assignment,
            sites,
            truth,
            outputs,
            out,
            clock_off=k in clock_off,
            silent=k in silent,
            xrng=xrng,
            coverage_gap=k in gap_units,
            rate_hz=params.slow_rate_hz if slow[k] else params.rate_hz,
        )
    city = dataclasses.replace(city, sites=tuple(sites))
    truth.scenario["fixes"] = outputs.fixes
    (out / "sites.geojson").write_text(_sites_geojson(city), encoding="utf-8")
    _write_csv(
        out / "plans.csv",
        [
            "date",
            "vehicle_id",
            "seq",
            "site_id",
            "planned_arrival",
            "window_start",
            "window_end",
            "service_min",
        ],
        outputs.plan_rows,
    )
    _write_csv(
        out / "depots.csv",
        ["vehicle_id", "depot_id", "lat", "lon", "radius_m", "planned_departure", "planned_return"],
        outputs.depot_rows,
    )
    _write_csv(out / "units.csv", ["unit_id", "vehicle_id", "driver"], outputs.unit_rows)
    (out / "truth.json").write_text(truth.dumps(), encoding="utf-8")
    if truth.cancelled:  # the dispatcher's commands, for replay (absent without cancellations)
        lines = [
            json.dumps(
                {
                    "at": c["at"],
                    "command": "cancel",
                    "stop_id": f"{params.date.isoformat()}/{c['site_id']}",
                    "reason": c["reason"],
                    "by": "dispatcher",
                }
            )
            for c in sorted(truth.cancelled, key=lambda c: (c["at"], c["site_id"]))
        ]
        (out / "commands.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Context:
    params: ScenarioParams
    city: City
    grid: StreetGrid

    def local_epoch(self, minutes: float) -> float:
        """UTC epoch seconds of ``minutes`` after local midnight of the scenario date."""
        tz = ZoneInfo(self.params.tz)
        h, m = divmod(int(minutes), 60)
        base = dt.datetime.combine(self.params.date, dt.time(h, m), tzinfo=tz).timestamp()
        return base + (minutes - int(minutes)) * 60.0

    def local_minutes(self, t: float) -> float:
        return (t - self.local_epoch(0)) / 60.0

    def speeds(self, x: float, y: float) -> tuple[float, float]:
        """Slower in the dense centre, up to 60 km/h on the outskirts."""
        return (15.0, 40.0) if math.hypot(x, y) < 6000 else (25.0, 60.0)

    def clear_of_fences(self, x: float, y: float, margin_m: float) -> bool:
        sx = np.array([s.x for s in self.city.sites])
        sy = np.array([s.y for s in self.city.sites])
        r = np.array([s.outer_radius_m() for s in self.city.sites])
        return bool((np.hypot(sx - x, sy - y) > r + margin_m).all())


@dataclass(slots=True)
class _Leg:
    route: Route
    phases: list[tuple[Phase, str | None]]
    via_site: int | None = None


def _make_leg(
    ctx: _Context,
    rng: np.random.Generator,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    via_site: int | None = None,
) -> _Leg:
    via = None
    keep = None
    if via_site is not None:
        s = ctx.city.sites[via_site]
        via = (s.x, s.y)
        keep = (s.x, s.y, s.outer_radius_m() + 60.0)
    r = route(ctx.grid, rng, x0, y0, x1, y1, via=via)
    mid = len(r.x) // 2
    phases = street_phases(
        r.x, r.y, rng, v_kmh=ctx.speeds(float(r.x[mid]), float(r.y[mid])), keep_moving_near=keep
    )
    if via_site is not None:  # at least 20 km/h through the fence
        phases = [
            move_phase(p.length_m, max(p.v_mps, 20 / 3.6)) if p.kind == MOVE else p for p in phases
        ]
    return _Leg(route=r, phases=[(p, None) for p in phases], via_site=via_site)


def _point_at(r: Route, s: float) -> tuple[float, float]:
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(r.x), np.diff(r.y)))])
    return float(np.interp(s, cum, r.x)), float(np.interp(s, cum, r.y))


def _insert_stop(ctx: _Context, rng: np.random.Generator, leg: _Leg, kind: str) -> bool:
    """Split a long enough MOVE of the leg and stand (lunch) or crawl (jam) there."""
    offsets = np.cumsum([0.0] + [p.length_m for p, _ in leg.phases])
    candidates = [
        i
        for i, (p, tag) in enumerate(leg.phases)
        if p.kind == MOVE and p.length_m > 300 and not tag
    ]
    for _ in range(4):
        if not candidates:
            return False
        i = candidates[int(rng.integers(0, len(candidates)))]
        p = leg.phases[i][0]
        d1 = float(rng.uniform(100.0, p.length_m - 150.0))
        length = 0.0 if kind in ("lunch", "breakdown") else float(rng.uniform(15.0, 50.0))
        x, y = _point_at(leg.route, float(offsets[i]) + d1 + length / 2)
        if not ctx.clear_of_fences(x, y, 60.0):
            continue
        if kind == "lunch":
            mid = dwell_phase(float(rng.uniform(20 * 60, 45 * 60)))
        elif kind == "breakdown":
            mid = dwell_phase(float(rng.uniform(30 * 60, 60 * 60)))
        else:
            mid = crawl_phase(length, float(rng.uniform(180.0, 720.0)), period_s=120.0)
        new = [
            (move_phase(d1, p.v_mps), None),
            (mid, kind),
            (move_phase(p.length_m - d1 - length, p.v_mps), None),
        ]
        leg.phases[i : i + 1] = new
        return True
    return False


def _congest(leg: _Leg, rng: np.random.Generator, still_to_lose_s: float) -> float:
    """Turn the leg's moves into slow stop-and-go traffic (8–13 km/h); the seconds lost."""
    lost = 0.0
    if leg.via_site is not None:  # a drive-by crosses its fence at speed, congestion or not
        return lost
    for i, (p, tag) in enumerate(leg.phases):
        if p.kind != MOVE or tag or lost >= still_to_lose_s:
            continue
        v = float(rng.uniform(2.2, 3.6))
        slow = p.length_m / v
        if slow <= p.duration_s:
            continue
        leg.phases[i] = (crawl_phase(p.length_m, slow, period_s=90.0), "congestion")
        lost += slow - p.duration_s
    return lost


@dataclass(slots=True)
class _DayPlan:
    unit_id: str
    pts: list[tuple[float, float]]  # depot, the stops' parking points, depot
    legs: list[_Leg]  # undisturbed street legs between consecutive points
    depart: float
    windows: list[tuple[float, float]]  # per stop, UTC epoch seconds


@dataclass(slots=True)
class _Driven:
    tl: Timeline
    unit_on: float
    events: list[tuple[str, float, float, Any]]  # kind, start, end, ref
    visits_raw: list[tuple[int, int, float, float]]  # seq, site index, park, leave


def _vehicle_day(
    ctx: _Context,
    rng: np.random.Generator,
    k: int,
    a: RouteAssignment,
    sites: list[Site],
    truth: Truth,
    outputs: _Outputs,
    out: Path,
    *,
    clock_off: bool,
    silent: bool,
    rate_hz: float,
    xrng: np.random.Generator,
    coverage_gap: bool,
) -> None:
    """Plan, drive, observe and write one vehicle's day (the order of random draws is fixed:
    changing it changes every scenario; issue 8's options draw from ``xrng`` only)."""
    plan = _plan_day(ctx, rng, k, a, sites, outputs)
    driven = _drive_day(ctx, rng, a, plan, truth, xrng)
    _observe_and_write(
        ctx,
        rng,
        a,
        plan,
        driven,
        truth,
        outputs,
        out,
        clock_off=clock_off,
        silent=silent,
        rate_hz=rate_hz,
        xrng=xrng,
        coverage_gap=coverage_gap,
    )


def _plan_day(
    ctx: _Context,
    rng: np.random.Generator,
    k: int,
    a: RouteAssignment,
    sites: list[Site],
    outputs: _Outputs,
) -> _DayPlan:
    """Drive the route undisturbed with contracted service times: planned arrivals, the
    windows around them (written into ``sites``), the plan/depot/unit rows."""
    p = ctx.params
    city = ctx.city
    depot = city.depots[a.depot_index]
    unit_id = f"U{k + 1:04d}"
    pts = [(depot.x, depot.y)] + [(city.sites[i].x, city.sites[i].y) for i in a.stops]
    pts.append((depot.x, depot.y))
    legs = [_make_leg(ctx, rng, *pts[j], *pts[j + 1]) for j in range(len(pts) - 1)]

    h, m = (int(v) for v in p.start_local.split(":"))
    depart = ctx.local_epoch(h * 60 + m + 5 * int(rng.integers(0, 13)))
    t = depart
    windows: list[tuple[float, float]] = []
    for j, site_i in enumerate(a.stops):
        t += sum(ph.duration_s for ph, _ in legs[j].phases)
        t = float(round(t))
        site = city.sites[site_i]
        if ctx.local_minutes(t) + WINDOW_SLACK_MIN > 24 * 60:
            raise ScenarioError(
                f"{a.vehicle_id}'s {len(a.stops)} stops cannot be served within the local day "
                f"(stop {j + 1} at {iso_s(t)}): {p.sites} sites are too many for {p.vehicles} "
                "vehicles; raise --vehicles or lower --sites (the default day: 1,500 sites, "
                "50 vehicles)"
            )
        ws_min, we_min = window_around(rng, ctx.local_minutes(t), site.service_min)
        windows.append((ctx.local_epoch(ws_min), ctx.local_epoch(we_min)))
        sites[site_i] = with_window(sites[site_i], ws_min, we_min)
        outputs.plan_rows.append(
            [
                p.date.isoformat(),
                a.vehicle_id,
                str(j + 1),
                site.site_id,
                iso_s(t),
                iso_s(windows[-1][0]),
                iso_s(windows[-1][1]),
                str(site.service_min),
            ]
        )
        t += site.service_min * 60
    t += sum(ph.duration_s for ph, _ in legs[-1].phases)
    planned_return = t
    lon_d, lat_d = city.projection.to_lonlat(np.array([depot.x]), np.array([depot.y]))
    outputs.depot_rows.append(
        [
            a.vehicle_id,
            depot.depot_id,
            f"{lat_d[0]:.7f}",
            f"{lon_d[0]:.7f}",
            f"{depot.radius_m:g}",
            iso_s(depart),
            iso_s(planned_return),
        ]
    )
    driver = (
        f"{_DRIVERS[int(rng.integers(0, len(_DRIVERS)))]} {chr(65 + int(rng.integers(0, 26)))}."
    )
    outputs.unit_rows.append([unit_id, a.vehicle_id, driver])

    return _DayPlan(unit_id=unit_id, pts=pts, legs=legs, depart=depart, windows=windows)


def _drive_day(
    ctx: _Context,
    rng: np.random.Generator,
    a: RouteAssignment,
    plan: _DayPlan,
    truth: Truth,
    xrng: np.random.Generator,
) -> _Driven:
    """The real day: the plan's legs with skips, detours, jams, lunch and congestion (and with
    issue 8's options: dispatcher cancellations, a breakdown)."""
    p = ctx.params
    city = ctx.city
    depot = city.depots[a.depot_index]
    pts, legs, depart, windows = plan.pts, plan.legs, plan.depart, plan.windows
    n = len(a.stops)
    skipped = rng.random(n) < p.skip_rate
    jam = rng.random(n + 1) < p.jam_rate
    driveby = rng.random(n + 1) < p.driveby_rate
    lunch_leg = (
        int(rng.integers(n // 3, max(n // 3 + 1, 2 * n // 3 + 1)))
        if (rng.random() < p.lunch_rate)
        else -1
    )
    congest_leg = int(rng.integers(0, max(1, 2 * n // 3 + 1))) if rng.random() < p.late_rate else -1
    to_lose = float(rng.uniform(30 * 60, 90 * 60)) if congest_leg >= 0 else 0.0
    own = set(a.stops)
    site_x = np.array([s.x for s in city.sites])
    site_y = np.array([s.y for s in city.sites])

    unit_on = float(math.floor(depart - 600))
    tl = Timeline(t0=unit_on)
    tl.x, tl.y = [np.array([depot.x])], [np.array([depot.y])]
    tl.add(dwell_phase(depart - unit_on))
    events: list[tuple[str, float, float, Any]] = []  # kind, start, end, ref
    visits_raw: list[tuple[int, int, float, float]] = []  # seq, site index, park, leave
    cur = (depot.x, depot.y)
    prev_site: int | None = None
    lost_total = 0.0
    congestion_start: float | None = None
    lunch_done = False
    cancelled = np.zeros(n, dtype=bool)
    if p.cancel_rate > 0:
        cancelled = (xrng.random(n) < p.cancel_rate) & ~skipped
        for j in np.flatnonzero(cancelled).tolist():
            at = max(depart - 3600.0, windows[j][0] - float(xrng.uniform(0, 3600)))
            truth.cancelled.append(
                {
                    "vehicle_id": a.vehicle_id,
                    "site_id": city.sites[a.stops[j]].site_id,
                    "seq": j + 1,
                    "at": iso_s(at),
                    "reason": "client closed",
                }
            )
    breakdown_leg = -1
    if p.breakdown_rate > 0 and n >= 2 and xrng.random() < p.breakdown_rate:
        breakdown_leg = int(xrng.integers(1, n))
    breakdown_start: float | None = None
    targets = [j for j in range(n) if not skipped[j] and not cancelled[j]] + [n]
    for j in range(n):
        if skipped[j]:
            truth.skipped.append(
                {
                    "vehicle_id": a.vehicle_id,
                    "site_id": city.sites[a.stops[j]].site_id,
                    "seq": j + 1,
                }
            )
    last_j = -1
    for j in targets:
        dest = pts[j + 1]
        via: int | None = None
        if driveby[j]:
            mx, my = (cur[0] + dest[0]) / 2, (cur[1] + dest[1]) / 2
            dist = np.hypot(site_x - mx, site_y - my)
            cands = [i for i in np.argsort(dist)[:12].tolist() if i not in own and dist[i] < 3000]
            if cands:
                via = cands[int(rng.integers(0, len(cands)))]
        if via is None and j == last_j + 1:
            leg = legs[j]
            leg = _Leg(route=leg.route, phases=list(leg.phases))
        else:
            leg = _make_leg(ctx, rng, cur[0], cur[1], dest[0], dest[1], via_site=via)
        if jam[j]:
            _insert_stop(ctx, rng, leg, "traffic")
        if 0 <= lunch_leg <= j and not lunch_done:
            lunch_done = _insert_stop(ctx, rng, leg, "lunch")
        if (
            breakdown_leg >= 0
            and j >= breakdown_leg
            and breakdown_start is None
            and _insert_stop(ctx, xrng, leg, "breakdown")
        ):
            breakdown_start = -1.0  # set to its time when the leg is driven
        if congest_leg >= 0 and j >= congest_leg and lost_total < to_lose:
            lost_total += _congest(leg, rng, to_lose - lost_total)
        leg_dur = sum(ph.duration_s for ph, _ in leg.phases)
        if j < n:
            ws = windows[j][0]
            if tl.now + leg_dur < ws + 60:  # ahead of plan: wait where we are
                tl.add(dwell_phase(ws + 60 + float(rng.uniform(0, 120)) - tl.now - leg_dur))
        if prev_site is not None:
            visits_raw[-1] = (*visits_raw[-1][:3], tl.now)
        leg_start = tl.now
        tl.extend_path(leg.route.x, leg.route.y)
        for ph, tag in leg.phases:
            t_a = tl.now
            tl.add(ph)
            if tag == "congestion":
                if congestion_start is None:
                    congestion_start = t_a
            elif tag is not None:
                events.append((tag, t_a, tl.now, None))
                if tag == "breakdown":
                    breakdown_start = t_a
                    truth.traffic_delays.append(
                        {
                            "vehicle_id": a.vehicle_id,
                            "start": iso_s(t_a),
                            "delay_s": round(tl.now - t_a),
                            "kind": "breakdown",
                        }
                    )
        if via is not None:
            events.append(("driveby", leg_start, tl.now, via))
        cur = dest
        if j < n:
            site_i = a.stops[j]
            visits_raw.append((j + 1, site_i, tl.now, tl.now))
            tl.add(dwell_phase(city.sites[site_i].service_min * 60 + float(rng.uniform(-45, 45))))
            visits_raw[-1] = (j + 1, site_i, visits_raw[-1][2], tl.now)
            prev_site = site_i
        last_j = j
    tl.add(dwell_phase(float(rng.uniform(300, 600))))
    if congestion_start is not None:
        truth.traffic_delays.append(
            {
                "vehicle_id": a.vehicle_id,
                "start": iso_s(congestion_start),
                "delay_s": round(lost_total),
            }
        )

    return _Driven(tl=tl, unit_on=unit_on, events=events, visits_raw=visits_raw)


def _observe_and_write(
    ctx: _Context,
    rng: np.random.Generator,
    a: RouteAssignment,
    plan: _DayPlan,
    driven: _Driven,
    truth: Truth,
    outputs: _Outputs,
    out: Path,
    *,
    clock_off: bool,
    silent: bool,
    rate_hz: float,
    xrng: np.random.Generator,
    coverage_gap: bool,
) -> None:
    """Sample the day at the unit's rate, pass it through the GPS model and the network,
    record the truth, write the unit's NMEA file."""
    p = ctx.params
    city = ctx.city
    unit_id, windows = plan.unit_id, plan.windows
    tl, unit_on, events, visits_raw = driven.tl, driven.unit_on, driven.events, driven.visits_raw
    step = 1.0 / rate_hz
    n_ep = int((tl.now - unit_on) // step) + 1
    t_ep: FloatArray = unit_on + np.arange(n_ep, dtype=np.float64) * step
    kin = tl.sample(t_ep)
    noise = MultipathNoise() if p.noise_model == "multipath" else None
    if noise is not None:
        jams = [(t_a, t_b) for kind, t_a, t_b, _ in events if kind == "traffic"]
        kin = stand_and_creep(kin, jams, rng)
    near = np.hypot(kin.x, kin.y) < 3000.0
    for _, site_i, park, leave in visits_raw:
        if not city.sites[site_i].is_circle:
            near |= (t_ep >= park) & (t_ep <= leave)
    sigma = float(rng.uniform(p.noise_min_m, p.noise_max_m))
    obs = observe(
        kin,
        rng,
        sigma_m=sigma,
        rate_hz=rate_hz,
        near_buildings=near,
        multipath_rate=p.multipath_rate,
        noise=noise,
    )
    truth.multipath_outliers += int(obs.multipath.sum())
    dropouts: list[Dropout] = []
    span = t_ep[-1] - t_ep[0]
    for _ in range(int(rng.poisson(p.dropout_rate))):
        if span < 3600:
            break
        s0 = float(round(rng.uniform(t_ep[0] + 600, t_ep[-1] - 1800)))
        e0 = s0 + float(round(rng.uniform(120, 1200)))
        dropouts.append(Dropout(start_s=s0, end_s=e0, released_s=e0 + float(rng.uniform(1, 30))))
    kept: list[Dropout] = []
    for d in sorted(dropouts, key=lambda d: d.start_s):  # coverage gaps do not overlap
        if not kept or d.start_s >= kept[-1].released_s + 60:
            kept.append(d)
    dropouts = kept
    if coverage_gap:
        dropouts = _coverage_gap(ctx, xrng, a, plan, visits_raw, dropouts, truth)
    silent_from = (
        float(round(rng.uniform(t_ep[0] + 0.3 * span, t_ep[0] + 0.8 * span))) if silent else None
    )
    offset = 0
    if clock_off:
        offset = int(rng.choice([-1, 1]) * rng.integers(20, 181))
        truth.clock_offsets.append({"unit_id": unit_id, "offset_s": offset})
    if silent_from is not None:
        truth.silent_units.append({"unit_id": unit_id, "from": iso_s(silent_from)})
    for d in dropouts:
        if silent_from is not None and d.start_s >= silent_from:
            continue
        truth.dropouts.append(
            {
                "unit_id": unit_id,
                "start": iso_s(d.start_s),
                "end": iso_s(d.end_s),
                "released_at": dt.datetime.fromtimestamp(d.released_s, tz=dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.%f"
                )[:-3]
                + "Z",
            }
        )
    tx = transmit(t_ep, rng, dropouts=dropouts, silent_from_s=silent_from)
    sent = np.zeros(n_ep, dtype=bool)
    sent[tx.order] = True
    talker = "GN" if rng.random() < 0.2 else "GP"
    truth.units.append(
        {
            "unit_id": unit_id,
            "vehicle_id": a.vehicle_id,
            "rate_hz": rate_hz,
            "talker": talker,
            "noise_sigma_m": round(sigma, 2),
        }
    )

    # --- truth: visits, lateness, unscheduled stops, drive-bys
    for seq, site_i, park, leave in visits_raw:
        site = city.sites[site_i]
        win = np.flatnonzero((t_ep >= park - 900) & (t_ep <= leave + 900))
        inside = site.contains(kin.x[win], kin.y[win])
        at = int(np.searchsorted(t_ep[win], park))
        at = min(at, len(win) - 1)
        if not inside[at]:  # a 0.2 Hz unit may not sample the parked instant exactly
            at = int(np.searchsorted(t_ep[win], park + step))
        lo = at
        while lo > 0 and inside[lo - 1]:
            lo -= 1
        hi = at
        while hi < len(win) - 1 and inside[hi + 1]:
            hi += 1
        arrival, departure = float(t_ep[win[lo]]), float(t_ep[win[hi]])
        observed = bool(sent[win[lo] : win[hi] + 1].any())
        truth.visits.append(
            Visit(
                site_id=site.site_id,
                vehicle_id=a.vehicle_id,
                unit_id=unit_id,
                seq=seq,
                arrival=arrival,
                departure=departure,
                observed=observed,
            )
        )
        we = windows[seq - 1][1]
        if arrival > we:
            truth.late.append(
                {
                    "vehicle_id": a.vehicle_id,
                    "site_id": site.site_id,
                    "seq": seq,
                    "late_by_s": round(arrival - we),
                }
            )
    for kind, t_a, t_b, ref in events:
        if kind == "driveby":
            site = city.sites[ref]
            win = np.flatnonzero((t_ep >= t_a) & (t_ep <= t_b))
            d = np.hypot(kin.x[win] - site.x, kin.y[win] - site.y)
            truth.drive_bys.append(
                {
                    "vehicle_id": a.vehicle_id,
                    "unit_id": unit_id,
                    "site_id": site.site_id,
                    "t": iso_s(float(t_ep[win[int(np.argmin(d))]])),
                }
            )
        else:
            mid = tl.sample(np.array([(t_a + t_b) / 2]))
            lon, lat = city.projection.to_lonlat(mid.x, mid.y)
            truth.unscheduled_stops.append(
                UnscheduledStop(
                    vehicle_id=a.vehicle_id,
                    unit_id=unit_id,
                    lat=float(lat[0]),
                    lon=float(lon[0]),
                    start=t_a,
                    end=t_b,
                    kind=kind if kind in ("lunch", "breakdown") else "traffic",
                )
            )

    # --- sentences and payloads
    lon, lat = city.projection.to_lonlat(obs.x, obs.y)
    cols = FixColumns(
        t_us=np.round((t_ep + offset) * 1e6).astype(np.int64),
        lat=lat,
        lon=lon,
        speed_kmh=obs.speed_kmh,
        course=obs.course,
        quality=np.ones(n_ep, dtype=np.int64),
        sats=obs.sats,
        hdop=obs.hdop,
        alt_m=obs.alt_m,
    )
    buf, off = epoch_bytes(cols, talker=talker)
    o = off.tolist()
    epochs = [buf[o[2 * i] : o[2 * i + 2]] for i in range(n_ep)]
    _corrupt(rng, buf, o, epochs, np.flatnonzero(sent), p.bad_rate, truth.bad_sentences)
    (out / "nmea" / f"{unit_id}.nmea").write_bytes(
        _payload_file(epochs, tx.order, tx.bounds, tx.recv_s)
    )
    outputs.fixes += int(sent.sum())


def _coverage_gap(
    ctx: _Context,
    xrng: np.random.Generator,
    a: RouteAssignment,
    plan: _DayPlan,
    visits_raw: list[tuple[int, int, float, float]],
    dropouts: list[Dropout],
    truth: Truth,
) -> list[Dropout]:
    """The unit loses coverage a few minutes before one of its visits and gets it back after
    that stop's window end; the held fixes (which show the visit) arrive in a burst only after
    window end + 30 min (a schedule's default grace), so a live engine first calls the stop
    missed and must then retract.  Other dropouts overlapping it are dropped."""
    fits = [
        (seq, site_i, park, leave)
        for seq, site_i, park, leave in visits_raw
        if park < plan.windows[seq - 1][1] - 600
    ]
    if not fits:
        return dropouts
    seq, site_i, park, leave = fits[int(xrng.integers(len(fits) // 3, max(1, len(fits))))]
    we = plan.windows[seq - 1][1]
    start = float(round(park - xrng.uniform(180, 600)))
    end = float(round(max(leave + 60.0, we + xrng.uniform(60, 600))))
    released = we + 1800.0 + float(xrng.uniform(300, 1200))
    gap = Dropout(start_s=start, end_s=end, released_s=released)
    kept = [d for d in dropouts if d.released_s + 60 < start or d.start_s > released + 60]
    truth.coverage_gaps.append(
        {
            "unit_id": plan.unit_id,
            "vehicle_id": a.vehicle_id,
            "site_id": ctx.city.sites[site_i].site_id,
            "seq": seq,
            "window_end": iso_s(we),
            "start": iso_s(start),
            "end": iso_s(end),
            "released_at": iso_s(released),
        }
    )
    return sorted([*kept, gap], key=lambda d: d.start_s)


def _corrupt(
    rng: np.random.Generator,
    buf: bytes,
    off: list[int],
    epochs: list[bytes],
    sent: npt.NDArray[np.intp],
    rate: float,
    counts: dict[str, int],
) -> None:
    """Replace or precede some sentences of sent epochs by bad ones; counts by kind.

    Sentence *h* is epoch ``h // 2``'s RMC (even) or GGA (odd); ``epochs`` is rewritten.
    """
    if rate <= 0 or len(sent) == 0:
        return
    hits = np.flatnonzero(rng.random(2 * len(sent)) < rate)
    kinds = rng.integers(0, 3, len(hits))
    changed: dict[int, list[bytes]] = {}
    for h, kind in zip(hits.tolist(), kinds.tolist(), strict=True):
        i = int(sent[h // 2])
        pair = changed.setdefault(
            i, [buf[off[2 * i] : off[2 * i + 1]], buf[off[2 * i + 1] : off[2 * i + 2]]]
        )
        s = pair[h % 2]
        if kind == 0:
            good = int(s[-4:-2], 16)
            bad = (good + int(rng.integers(1, 256))) % 256
            pair[h % 2] = s[:-4] + f"{bad:02X}\r\n".encode()
            counts["checksum"] += 1
        elif kind == 1:
            cut = int(rng.integers(7, len(s) - 6))
            pair[h % 2] = s[:cut] + b"\r\n"
            counts["truncated"] += 1
        else:
            junk = _GARBAGE_BYTES[rng.integers(0, len(_GARBAGE_BYTES), int(rng.integers(5, 41)))]
            pair[h % 2] = junk.tobytes() + b"\r\n" + s
            counts["garbage"] += 1
    for i, pair in changed.items():
        epochs[i] = pair[0] + pair[1]


def _payload_file(
    epochs: Sequence[bytes],
    order: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
    recv_s: FloatArray,
) -> bytes:
    """``#recv`` line + sentences for every payload, in arrival order, as file bytes."""
    ms = np.round(recv_s * 1000).astype(np.int64).astype("datetime64[ms]")
    headers = [f"#recv {s}Z\n".encode() for s in np.datetime_as_string(ms, unit="ms").tolist()]
    n_pay, n_ep = len(headers), len(order)
    # item ids: epochs are 0..len(epochs)-1, header j is len(epochs) + j
    seq = np.empty(n_pay + n_ep, dtype=np.int64)
    payload_of = np.repeat(np.arange(n_pay), np.diff(bounds))
    seq[np.arange(n_ep) + payload_of + 1] = order
    seq[bounds[:-1] + np.arange(n_pay)] = len(epochs) + np.arange(n_pay)
    items = [*epochs, *headers]
    return b"".join([items[i] for i in seq.tolist()])


def _sites_geojson(city: City) -> str:
    proj = city.projection
    feats = []
    for s in city.sites:
        props: dict[str, Any] = {"site_id": s.site_id, "client_id": s.client_id, "name": s.name}
        if s.is_circle:
            lon, lat = proj.to_lonlat(np.array([s.x]), np.array([s.y]))
            geom: dict[str, Any] = {
                "type": "Point",
                "coordinates": [round(float(lon[0]), 7), round(float(lat[0]), 7)],
            }
            props["radius_m"] = s.radius_m
        else:
            rx = np.array([q[0] for q in s.polygon])
            ry = np.array([q[1] for q in s.polygon])
            lon, lat = proj.to_lonlat(rx, ry)
            ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
            ring[-1] = ring[0]
            geom = {"type": "Polygon", "coordinates": [ring]}
        sch = s.schedule
        props["schedule"] = {
            "weekdays": list(sch.weekdays),
            "window_start": f"{sch.window_start_min // 60:02d}:{sch.window_start_min % 60:02d}",
            "window_end": f"{sch.window_end_min // 60:02d}:{sch.window_end_min % 60:02d}",
            "tz": sch.tz,
        }
        props["service_min"] = s.service_min
        feats.append(
            json.dumps(
                {"type": "Feature", "geometry": geom, "properties": props}, ensure_ascii=False
            )
        )
    return '{"type": "FeatureCollection", "features": [\n' + ",\n".join(feats) + "\n]}\n"

"""Day plans: which vehicle serves which sites in which order, with planned arrivals and windows.

Two formats (docs/formats.md): the simulator's ``plans.csv`` (one row per stop) and a JSON
document (one object per service date, routes with their ordered stops).  A plan is written by
people and by tools, so import expects mistakes: every row is checked on its own, each bad row
becomes a :class:`PlanProblem` naming the row and what is wrong (unknown site or vehicle, window
end before start, duplicate stop, a time outside the service day, a site not due that day by
contract, a malformed field), and the good rows load.  Problems are returned as values; only a
document that cannot be parsed at all raises :class:`PlanFormatError`.

The module also holds the loader of the board's inputs from a scenario directory: pure parsing
from text (:func:`parse_schedule_inputs`) and a thin file-reading wrapper
(:func:`read_schedule_inputs`), so replay, ``fleetwatch run`` and tests share one path.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.fixes import datetime_to_us
from geofence.sites import load_sites_geojson
from schedule.contracts import SiteContract, local_day_us, site_contracts

PlanProblemCode = Literal[
    "malformed",
    "unknown_site",
    "unknown_vehicle",
    "window_order",
    "duplicate_stop",
    "outside_day",
    "not_due",
]

#: Plan documents larger than this are refused before parsing.
MAX_PLAN_BYTES = 32 * 1024 * 1024
_CSV_COLUMNS = ("date", "vehicle_id", "seq", "site_id", "window_start", "window_end")


class PlanFormatError(ValueError):
    """The plan document as a whole cannot be read (not CSV/JSON, missing columns, too big)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedStop:
    service_date: dt.date
    vehicle_id: str
    seq: int
    site_id: str
    planned_arrival_us: int | None
    window_start_us: int
    window_end_us: int
    service_min: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DayPlan:
    """One service date's routes: vehicle → its stops in visiting order."""

    service_date: dt.date
    routes: Mapping[str, tuple[PlannedStop, ...]]
    departures_us: Mapping[str, int] = field(default_factory=dict)  # planned depot departure
    returns_us: Mapping[str, int] = field(default_factory=dict)

    @property
    def stop_count(self) -> int:
        return sum(len(r) for r in self.routes.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanProblem:
    """One bad row: ``source`` names it (``plans.csv:line 7``), ``code`` is stable."""

    source: str
    code: PlanProblemCode
    message: str
    site_id: str | None = None
    vehicle_id: str | None = None

    def __str__(self) -> str:
        return f"{self.source}: {self.message} [{self.code}; row skipped]"


@dataclass(frozen=True, slots=True)
class PlanLoad:
    plans: dict[dt.date, DayPlan]
    problems: list[PlanProblem]


class _Bad(Exception):
    def __init__(self, code: PlanProblemCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_time_us(text: Any, what: str) -> int:
    """UTC µs of an ISO-8601 time with a zone (``Z`` or an offset); naive times are refused
    because a plan's meaning would then depend on the reader's zone."""
    if not isinstance(text, str) or not text.strip():
        raise _Bad("malformed", f"{what} is empty")
    s = text.strip()
    try:
        t = dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)
    except ValueError:
        raise _Bad("malformed", f"{what} {text!r} is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise _Bad("malformed", f"{what} {text!r} has no time zone (add 'Z' for UTC)")
    return datetime_to_us(t)


class _Builder:
    """Checks rows one by one against the sites, vehicles and contracts; keeps the good ones."""

    def __init__(self, sites: Mapping[str, SiteContract], vehicles: Collection[str] | None) -> None:
        self.sites = sites
        self.vehicles = vehicles
        self.problems: list[PlanProblem] = []
        self.stops: dict[dt.date, dict[str, list[PlannedStop]]] = {}
        self.seen: dict[tuple[dt.date, str], tuple[str, str]] = {}  # (date, site) → (veh, src)

    def add(
        self,
        source: str,
        *,
        date: Any,
        vehicle_id: Any,
        seq: Any,
        site_id: Any,
        planned_arrival: Any,
        window_start: Any,
        window_end: Any,
        service_min: Any,
    ) -> None:
        sid = site_id if isinstance(site_id, str) and site_id else None
        vid = vehicle_id if isinstance(vehicle_id, str) and vehicle_id else None
        try:
            stop = self._check(
                date, vid, seq, sid, planned_arrival, window_start, window_end, service_min
            )
        except _Bad as exc:
            self.problems.append(
                PlanProblem(
                    source=source, code=exc.code, message=str(exc), site_id=sid, vehicle_id=vid
                )
            )
            return
        first = self.seen.get((stop.service_date, stop.site_id))
        if first is not None:
            same = "in the same route" if first[0] == stop.vehicle_id else f"on {first[0]}'s route"
            self.problems.append(
                PlanProblem(
                    source=source,
                    code="duplicate_stop",
                    message=f"site {stop.site_id} is planned twice on {stop.service_date} "
                    f"({same}, first at {first[1]}); a site is served once a day",
                    site_id=sid,
                    vehicle_id=vid,
                )
            )
            return
        self.seen[(stop.service_date, stop.site_id)] = (stop.vehicle_id, source)
        self.stops.setdefault(stop.service_date, {}).setdefault(stop.vehicle_id, []).append(stop)

    def _check(
        self,
        date: Any,
        vid: str | None,
        seq: Any,
        sid: str | None,
        planned_arrival: Any,
        window_start: Any,
        window_end: Any,
        service_min: Any,
    ) -> PlannedStop:
        if vid is None:
            raise _Bad("malformed", "vehicle_id is empty")
        if sid is None:
            raise _Bad("malformed", "site_id is empty")
        try:
            day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date).strip())
        except ValueError:
            raise _Bad("malformed", f"date {date!r} is not YYYY-MM-DD") from None
        try:
            seq_i = int(seq)
        except (TypeError, ValueError):
            raise _Bad("malformed", f"seq {seq!r} is not an integer") from None
        site = self.sites.get(sid)
        if site is None:
            raise _Bad("unknown_site", f"unknown site {sid!r} (not in the sites file)")
        if self.vehicles is not None and vid not in self.vehicles:
            raise _Bad("unknown_vehicle", f"unknown vehicle {vid!r} (not in the fleet)")
        if window_start in (None, "") and window_end in (None, "") and site.contract is not None:
            ws, we = site.contract.window_us(day)
        else:
            ws = parse_time_us(window_start, "window_start")
            we = parse_time_us(window_end, "window_end")
        if we <= ws:
            raise _Bad("window_order", f"window end {window_end} is not after start {window_start}")
        pa = (
            None
            if planned_arrival in (None, "")
            else parse_time_us(planned_arrival, "planned_arrival")
        )
        d0, d1 = local_day_us(day, site.tz)
        for name, t in (("window_start", ws), ("window_end", we), ("planned_arrival", pa)):
            if t is not None and not d0 <= t <= d1:
                raise _Bad(
                    "outside_day",
                    f"{name} lies outside the service day {day} ({site.tz})",
                )
        if site.contract is not None and not site.contract.is_due(day):
            raise _Bad(
                "not_due",
                f"site {sid} is not due on {day} ({day.strftime('%A')}) by its contract",
            )
        svc = site.service_min
        if service_min not in (None, ""):
            try:
                svc = float(service_min)
            except (TypeError, ValueError):
                raise _Bad("malformed", f"service_min {service_min!r} is not a number") from None
            if not (math.isfinite(svc) and svc >= 0):
                raise _Bad("malformed", f"service_min {service_min!r} must be >= 0")
        return PlannedStop(
            service_date=day,
            vehicle_id=vid,
            seq=seq_i,
            site_id=sid,
            planned_arrival_us=pa,
            window_start_us=ws,
            window_end_us=we,
            service_min=svc,
        )

    def result(self) -> PlanLoad:
        plans = {}
        for day, routes in sorted(self.stops.items()):
            plans[day] = DayPlan(
                service_date=day,
                routes={
                    v: tuple(sorted(stops, key=lambda s: s.seq))
                    for v, stops in sorted(routes.items())
                },
            )
        return PlanLoad(plans, self.problems)


def parse_plans_csv(
    text: str,
    *,
    sites: Mapping[str, SiteContract],
    vehicles: Collection[str] | None = None,
    label: str = "plans.csv",
) -> PlanLoad:
    """Plans of a ``plans.csv`` text (columns by header name; ``planned_arrival`` and
    ``service_min`` optional; empty windows take the site's contract window)."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanFormatError(f"{label} is longer than {MAX_PLAN_BYTES} characters")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise PlanFormatError(
            f"{label}: header lacks column(s) {', '.join(missing)} (found: {', '.join(header)})"
        )
    reader.fieldnames = header
    b = _Builder(sites, vehicles)
    try:
        for row in reader:
            g = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
            b.add(
                f"{label}:line {reader.line_num}",
                date=g.get("date"),
                vehicle_id=g.get("vehicle_id"),
                seq=g.get("seq"),
                site_id=g.get("site_id"),
                planned_arrival=g.get("planned_arrival"),
                window_start=g.get("window_start"),
                window_end=g.get("window_end"),
                service_min=g.get("service_min"),
            )
    except csv.Error as exc:
        raise PlanFormatError(f"{label}: broken CSV near line {reader.line_num}: {exc}") from exc
    return b.result()


def parse_plans_json(
    text: str,
    *,
    sites: Mapping[str, SiteContract],
    vehicles: Collection[str] | None = None,
    label: str = "plans.json",
) -> PlanLoad:
    """Plans of a JSON document: one day object or a list of them (docs/formats.md)::

        {"date": "2026-11-23", "routes": [{"vehicle_id": "V001",
          "planned_departure": "2026-11-23T04:30:00Z",
          "stops": [{"site_id": "S0412", "planned_arrival": "…Z",
                     "window_start": "…Z", "window_end": "…Z", "service_min": 10}]}]}

    ``seq`` is the position in ``stops``; windows may be left out (the contract's are used).
    """
    if len(text) > MAX_PLAN_BYTES:
        raise PlanFormatError(f"{label} is longer than {MAX_PLAN_BYTES} characters")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"{label} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    days = doc if isinstance(doc, list) else [doc]
    b = _Builder(sites, vehicles)
    departures: dict[dt.date, dict[str, int]] = {}
    for i, day in enumerate(days):
        if not isinstance(day, dict) or not isinstance(day.get("routes"), list):
            raise PlanFormatError(f"{label}: day {i} must be an object with a 'routes' list")
        for r, route in enumerate(day["routes"]):
            src = f"{label}:day {i} route {r}"
            if not isinstance(route, dict) or not isinstance(route.get("stops"), list):
                b.problems.append(
                    PlanProblem(
                        source=src,
                        code="malformed",
                        message="a route must be an object with a 'stops' list",
                    )
                )
                continue
            vid = route.get("vehicle_id")
            dep = route.get("planned_departure")
            if dep and isinstance(vid, str):
                try:
                    d = dt.date.fromisoformat(str(day.get("date")))
                    departures.setdefault(d, {})[vid] = parse_time_us(dep, "planned_departure")
                except (ValueError, _Bad) as exc:
                    b.problems.append(PlanProblem(source=src, code="malformed", message=str(exc)))
            for k, stop in enumerate(route["stops"]):
                s = stop if isinstance(stop, dict) else {}
                b.add(
                    f"{src} stop {k}",
                    date=day.get("date"),
                    vehicle_id=vid,
                    seq=k + 1,
                    site_id=s.get("site_id"),
                    planned_arrival=s.get("planned_arrival"),
                    window_start=s.get("window_start"),
                    window_end=s.get("window_end"),
                    service_min=s.get("service_min"),
                )
    load = b.result()
    for d, deps in departures.items():
        if d in load.plans:
            load.plans[d] = dataclasses.replace(load.plans[d], departures_us=deps)
    return load


# --------------------------------------------------------------------------------------------
# the board's inputs from a scenario directory


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleInputs:
    """Everything :class:`schedule.board.ScheduleBoard` needs, with every problem found."""

    sites: dict[str, SiteContract]
    vehicles: frozenset[str]
    depots: dict[str, tuple[float, float]]  # vehicle → (lon, lat)
    plans: dict[dt.date, DayPlan]
    problems: list[str]


def _csv_dicts(text: str, label: str, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise PlanFormatError(f"{label}: missing column(s) {', '.join(missing)}")
    return [(reader.line_num, dict(r)) for r in reader]


def parse_schedule_inputs(
    *,
    sites_geojson: str,
    plans_text: str | None,
    plans_format: Literal["csv", "json"] = "csv",
    depots_csv: str | None = None,
    units_csv: str | None = None,
) -> ScheduleInputs:
    """Parse the board's inputs from texts (no file access).  The fleet is the vehicles of
    ``depots.csv`` and ``units.csv``; with neither, the plan's vehicles are taken as given."""
    problems: list[str] = []
    load = load_sites_geojson(sites_geojson)
    problems += [str(p) for p in load.problems]
    sites = site_contracts(load.sites)
    vehicles: set[str] = set()
    depots: dict[str, tuple[float, float]] = {}
    departures: dict[str, int] = {}
    returns: dict[str, int] = {}
    if depots_csv is not None:
        for line, r in _csv_dicts(depots_csv, "depots.csv", ("vehicle_id", "lat", "lon")):
            vid = (r.get("vehicle_id") or "").strip()
            try:
                lon, lat = float(r["lon"]), float(r["lat"])
                depots[vid] = (lon, lat)
                vehicles.add(vid)
                if r.get("planned_departure"):
                    departures[vid] = parse_time_us(r["planned_departure"], "planned_departure")
                if r.get("planned_return"):
                    returns[vid] = parse_time_us(r["planned_return"], "planned_return")
            except (ValueError, _Bad) as exc:
                problems.append(f"depots.csv:line {line}: {exc} [row skipped]")
    if units_csv is not None:
        for _, r in _csv_dicts(units_csv, "units.csv", ("vehicle_id",)):
            if r.get("vehicle_id"):
                vehicles.add(r["vehicle_id"].strip())
    plans: dict[dt.date, DayPlan] = {}
    if plans_text is not None:
        fleet = vehicles or None
        pl = (
            parse_plans_json(plans_text, sites=sites, vehicles=fleet)
            if plans_format == "json"
            else parse_plans_csv(plans_text, sites=sites, vehicles=fleet)
        )
        problems += [str(p) for p in pl.problems]
        for day, plan in pl.plans.items():
            deps = {
                **{v: t for v, t in departures.items() if v in plan.routes},
                **plan.departures_us,
            }
            rets = {v: t for v, t in returns.items() if v in plan.routes}
            plans[day] = dataclasses.replace(plan, departures_us=deps, returns_us=rets)
            if not vehicles:
                vehicles.update(plan.routes)
    return ScheduleInputs(
        sites=sites, vehicles=frozenset(vehicles), depots=depots, plans=plans, problems=problems
    )


def read_schedule_inputs(directory: Path, *, sites_file: Path | None = None) -> ScheduleInputs:
    """:func:`parse_schedule_inputs` over a scenario directory (``plans.csv``, the simulator's
    format, or else ``plans.json``).  The sites (their contracts: service windows) are the
    directory's ``sites.geojson``, else *sites_file* when it is GeoJSON: a deployment's plans
    directory holds the plans and depots, and the sites file is configured once (a copy in
    the plans directory was needed before, and nothing said so)."""

    def text(name: str) -> str | None:
        p = directory / name
        return p.read_text(encoding="utf-8") if p.is_file() else None

    sites = text("sites.geojson")
    if sites is None and sites_file is not None and sites_file.suffix in (".geojson", ".json"):
        sites = sites_file.read_text(encoding="utf-8-sig")
    if sites is None:
        raise PlanFormatError(
            f"{directory}: no sites.geojson (the sites with their service windows): put it "
            "there, or configure a GeoJSON sites file"
        )
    plans_csv = text("plans.csv")
    plans_json = text("plans.json") if plans_csv is None else None
    return parse_schedule_inputs(
        sites_geojson=sites,
        plans_text=plans_csv if plans_csv is not None else plans_json,
        plans_format="csv" if plans_csv is not None else "json",
        depots_csv=text("depots.csv"),
        units_csv=text("units.csv"),
    )

"""Sites and their loaders (GeoJSON and CSV; the formats are in docs/formats.md).

A site list is written by people and by tools, so the loaders expect mistakes: each feature or row
is checked on its own, and what is wrong with it becomes a :class:`SiteProblem` that names the
feature or row; the other sites load.  A problem is *fatal* when the site cannot be used (it is
skipped) and *non-fatal* when the loader repaired it (the repaired site is loaded and the repair
reported, so someone fixes the file).  Only a file that cannot be read at all raises (see
:mod:`geofence.errors`).

Decisions (docs/geofence.md lists them all):

* self-intersecting polygons are repaired with ``shapely.make_valid`` (polygonal parts kept) and
  reported non-fatal: a bow-tie drawn in a map editor still marks the right yard;
* coordinates that look swapped ([lat, lon] in GeoJSON, or lat/lon columns exchanged) are fatal,
  never silently swapped back: a wrong guess puts a fence in the wrong place;
* a duplicate ``site_id`` skips the later feature, keeping the first.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from geofence.errors import SiteFileFormatError, SiteFileUnreadableError
from geofence.projection import to_local_m
from geofence.region import Region

#: Largest circle radius accepted; the simulator's sites are 25–80 m.
DEFAULT_MAX_RADIUS_M = 2_000.0
#: Largest polygon extent (bounding-box diagonal) accepted.
DEFAULT_MAX_EXTENT_M = 5_000.0
#: Site files larger than this are refused before parsing.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

_KNOWN_PROPS = frozenset({"site_id", "client_id", "name", "radius_m", "schedule", "service_min"})
_CSV_REQUIRED = ("site_id", "client_id", "lat", "lon", "radius_m")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """One client site and its fence.

    ``geometry`` is in WGS84 lon/lat: a Polygon/MultiPolygon for a polygon fence, the centre
    Point for a circular fence of ``radius_m`` metres on the ground.
    """

    site_id: str
    client_id: str
    name: str
    geometry: BaseGeometry
    radius_m: float | None = None
    schedule: Mapping[str, Any] | None = None
    service_min: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if not self.site_id:
            raise ValueError("Site needs a non-empty site_id")
        if isinstance(self.geometry, Point):
            if self.radius_m is None or not (self.radius_m > 0.0 and math.isfinite(self.radius_m)):
                raise ValueError(
                    f"site {self.site_id!r}: a Point fence needs a finite radius_m > 0, "
                    f"got {self.radius_m!r}"
                )
        elif isinstance(self.geometry, Polygon | MultiPolygon):
            if self.radius_m is not None:
                raise ValueError(f"site {self.site_id!r}: radius_m is only for Point fences")
            if self.geometry.is_empty or not self.geometry.is_valid:
                raise ValueError(f"site {self.site_id!r}: polygon fence is empty or invalid")
        else:
            raise ValueError(
                f"site {self.site_id!r}: geometry must be a Point, Polygon or MultiPolygon, "
                f"got {self.geometry.geom_type}"
            )

    def __hash__(self) -> int:
        # the generated hash would fail on the mapping fields; equal sites share these
        return hash((self.site_id, self.client_id, self.name, self.radius_m))

    @property
    def is_circle(self) -> bool:
        return self.radius_m is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteProblem:
    """What is wrong with one feature/row.  ``fatal``: the site was skipped; otherwise it was
    repaired as ``message`` says and loaded."""

    source: str  # "sites.geojson:feature 12" or "sites.csv:row 7" (row = line number)
    site_id: str | None
    message: str
    fatal: bool

    def __str__(self) -> str:
        what = "skipped" if self.fatal else "repaired"
        sid = f" (site {self.site_id!r})" if self.site_id else ""
        return f"{self.source}{sid}: {self.message} [{what}]"


@dataclass(frozen=True, slots=True)
class SiteLoad:
    sites: list[Site]
    problems: list[SiteProblem]

    @property
    def fatal(self) -> list[SiteProblem]:
        return [p for p in self.problems if p.fatal]


class _Reject(Exception):
    """Internal: this feature/row cannot be used; message goes into a fatal SiteProblem."""


# --------------------------------------------------------------------------------------------
# file access


def _read_text(path: Path, max_bytes: int) -> str:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SiteFileFormatError(
                f"site file {path} is {size} bytes, more than the limit of {max_bytes}"
            )
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteFileUnreadableError(f"cannot read site file {path}: {exc}") from exc


def load_sites_geojson(
    path_or_text: str | os.PathLike[str],
    *,
    region: Region | None = None,
    max_radius_m: float = DEFAULT_MAX_RADIUS_M,
    max_extent_m: float = DEFAULT_MAX_EXTENT_M,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> SiteLoad:
    """Sites of a GeoJSON FeatureCollection (a path, or the JSON text itself when a ``str``
    starting with ``{``).  Raises only :class:`SiteFileError` subclasses, for the whole file."""
    if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
        text, label = path_or_text, "<text>"
        if len(text) > max_file_bytes:
            raise SiteFileFormatError(f"GeoJSON text longer than {max_file_bytes} characters")
    else:
        path = Path(path_or_text)
        text, label = _read_text(path, max_file_bytes), path.name
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SiteFileFormatError(
            f"{label} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise SiteFileFormatError(f"{label} is not a GeoJSON FeatureCollection (type: {got!r})")
    features = doc.get("features")
    if not isinstance(features, list):
        raise SiteFileFormatError(f"{label}: 'features' must be a list")

    checker = _Checker(region=region, max_radius_m=max_radius_m, max_extent_m=max_extent_m)
    for i, feature in enumerate(features):
        checker.add_feature(f"{label}:feature {i}", feature)
    return SiteLoad(checker.sites, checker.problems)


def load_sites_csv(
    path: str | os.PathLike[str],
    *,
    region: Region | None = None,
    max_radius_m: float = DEFAULT_MAX_RADIUS_M,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> SiteLoad:
    """Circular sites of a CSV file (columns by header name: site_id, client_id, name, lat, lon,
    radius_m; optional service_min; other columns become string attributes)."""
    p = Path(path)
    text = _read_text(p, max_file_bytes)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in _CSV_REQUIRED if c not in header]
    if missing:
        raise SiteFileFormatError(
            f"{p.name}: header lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    checker = _Checker(region=region, max_radius_m=max_radius_m, max_extent_m=0.0)
    try:
        for row in reader:
            checker.add_csv_row(f"{p.name}:row {reader.line_num}", row)
    except csv.Error as exc:
        raise SiteFileFormatError(
            f"{p.name}: broken CSV near line {reader.line_num}: {exc}"
        ) from exc
    return SiteLoad(checker.sites, checker.problems)


# --------------------------------------------------------------------------------------------
# per-feature checks


def _as_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(f"{what} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise _Reject(f"{what} must be finite, got {value!r}")
    return x


class _Checker:
    """Accumulates sites and problems; one instance per file."""

    def __init__(self, *, region: Region | None, max_radius_m: float, max_extent_m: float):
        self.region = region
        self.max_radius_m = max_radius_m
        self.max_extent_m = max_extent_m
        self.sites: list[Site] = []
        self.problems: list[SiteProblem] = []
        self._first_seen: dict[str, str] = {}

    # -- entry points ------------------------------------------------------------------------

    def add_feature(self, source: str, feature: Any) -> None:
        site_id: str | None = None
        notes: list[str] = []
        try:
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise _Reject("not a GeoJSON Feature object")
            props = feature.get("properties")
            if not isinstance(props, dict):
                raise _Reject("properties missing or not an object")
            site_id = self._site_id(props.get("site_id"), notes)
            geometry, radius = self._geojson_geometry(feature.get("geometry"), props, notes)
            site = self._site(site_id, props, geometry, radius, notes, source)
        except _Reject as exc:
            self._problem(source, site_id, str(exc), fatal=True)
            return
        self._accept(source, site, notes)

    def add_csv_row(self, source: str, row: Mapping[str, str | None]) -> None:
        site_id: str | None = None
        notes: list[str] = []
        try:
            site_id = self._site_id((row.get("site_id") or "").strip() or None, notes)
            lat = self._csv_float(row, "lat")
            lon = self._csv_float(row, "lon")
            self._check_position(lon, lat, csv_order=True)
            radius = self._radius(self._csv_float(row, "radius_m"))
            props: dict[str, Any] = {
                k: (v.strip() if isinstance(v, str) else v)
                for k, v in row.items()
                if k is not None and k not in ("lat", "lon", "radius_m")
            }
            props["site_id"] = site_id
            if props.get("service_min") not in (None, ""):
                with contextlib.suppress(ValueError):  # else _site reports a non-integer
                    props["service_min"] = int(str(props["service_min"]))
            else:
                props.pop("service_min", None)
            site = self._site(site_id, props, Point(lon, lat), radius, notes, source)
        except _Reject as exc:
            self._problem(source, site_id, str(exc), fatal=True)
            return
        self._accept(source, site, notes)

    # -- helpers -----------------------------------------------------------------------------

    def _problem(self, source: str, site_id: str | None, message: str, *, fatal: bool) -> None:
        self.problems.append(
            SiteProblem(source=source, site_id=site_id, message=message, fatal=fatal)
        )

    def _accept(self, source: str, site: Site, notes: list[str]) -> None:
        first = self._first_seen.get(site.site_id)
        if first is not None:
            self._problem(
                source,
                site.site_id,
                f"duplicate site_id {site.site_id!r} (first at {first})",
                fatal=True,
            )
            return
        self._first_seen[site.site_id] = source
        for note in notes:
            self._problem(source, site.site_id, note, fatal=False)
        self.sites.append(site)

    def _site_id(self, value: Any, notes: list[str]) -> str:
        if value is None or value == "":
            raise _Reject("missing site_id")
        if isinstance(value, int) and not isinstance(value, bool):
            notes.append(f"site_id {value} is a number; used as the string {str(value)!r}")
            return str(value)
        if not isinstance(value, str):
            raise _Reject(f"site_id must be a string, got {value!r}")
        return value

    def _csv_float(self, row: Mapping[str, str | None], column: str) -> float:
        raw = (row.get(column) or "").strip()
        if not raw:
            raise _Reject(f"{column} is empty")
        try:
            x = float(raw)
        except ValueError:
            raise _Reject(f"{column} {raw!r} is not a number") from None
        if not math.isfinite(x):
            raise _Reject(f"{column} must be finite, got {raw!r}")
        return x

    def _radius(self, r: float) -> float:
        if r <= 0.0:
            raise _Reject(f"radius_m must be > 0, got {r:g}")
        if r > self.max_radius_m:
            raise _Reject(
                f"radius_m {r:g} is absurd for a site (limit {self.max_radius_m:g} m; "
                f"degrees instead of metres, or a typo?)"
            )
        return r

    def _check_position(self, lon: float, lat: float, *, csv_order: bool = False) -> None:
        shown = f"lat={lat!r}, lon={lon!r}" if csv_order else f"[{lon!r}, {lat!r}]"
        order = "the lat and lon columns" if csv_order else "GeoJSON's [lon, lat] order"
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            if -180.0 <= lat <= 180.0 and -90.0 <= lon <= 90.0:
                raise _Reject(f"coordinate {shown} out of range; it looks swapped (check {order})")
            raise _Reject(
                f"coordinate {shown} out of range (lon must be in [-180, 180], lat in [-90, 90])"
            )
        region = self.region
        if region is None or region.contains(lon, lat):
            return
        if region.contains(lat, lon):
            raise _Reject(
                f"coordinate {shown} looks swapped: exchanged it would lie in region "
                f"{region.describe()} (check {order})"
            )
        raise _Reject(f"coordinate {shown} lies outside the configured region {region.describe()}")

    def _positions(self, coords: Any, what: str) -> list[tuple[float, float]]:
        if not isinstance(coords, list):
            raise _Reject(f"{what} must be a list of positions, got {type(coords).__name__}")
        out = []
        for k, pos in enumerate(coords):
            if not isinstance(pos, list) or len(pos) < 2:
                raise _Reject(f"{what} position {k} must be [lon, lat], got {pos!r}")
            lon = _as_number(pos[0], f"{what} position {k} lon")
            lat = _as_number(pos[1], f"{what} position {k} lat")
            self._check_position(lon, lat)
            out.append((lon, lat))
        return out

    def _ring(self, coords: Any, what: str, notes: list[str]) -> list[tuple[float, float]]:
        ring = self._positions(coords, what)
        if len(ring) >= 2 and ring[0] != ring[-1]:
            ring.append(ring[0])
            notes.append(f"{what} was not closed; closed it")
        if len(set(ring)) < 3:
            raise _Reject(f"{what} needs at least 3 distinct positions, got {len(set(ring))}")
        return ring

    def _polygon(self, coords: Any, what: str, notes: list[str]) -> Polygon:
        if not isinstance(coords, list) or not coords:
            raise _Reject(f"{what} must be a non-empty list of rings")
        rings = [self._ring(r, f"{what} ring {k}", notes) for k, r in enumerate(coords)]
        return Polygon(rings[0], rings[1:])

    def _geojson_geometry(
        self, geom: Any, props: Mapping[str, Any], notes: list[str]
    ) -> tuple[BaseGeometry, float | None]:
        if not isinstance(geom, dict):
            raise _Reject("geometry missing or not an object")
        gtype = geom.get("type")
        coords = geom.get("coordinates")
        if gtype == "Point":
            (pos,) = self._positions([coords], "Point")
            if "radius_m" not in props or props["radius_m"] is None:
                raise _Reject("Point site without properties.radius_m")
            return Point(pos), self._radius(_as_number(props["radius_m"], "radius_m"))
        if gtype == "Polygon":
            shape: BaseGeometry = self._polygon(coords, "Polygon", notes)
        elif gtype == "MultiPolygon":
            if not isinstance(coords, list) or not coords:
                raise _Reject("MultiPolygon must be a non-empty list of polygons")
            parts = [
                self._polygon(c, f"MultiPolygon part {k}", notes) for k, c in enumerate(coords)
            ]
            shape = MultiPolygon(parts)
        else:
            raise _Reject(
                f"unsupported geometry type {gtype!r} (a site is a Point with radius_m, "
                f"a Polygon or a MultiPolygon)"
            )
        if props.get("radius_m") is not None:
            notes.append(f"radius_m ignored: the fence is the {gtype} itself")
        return self._valid_polygonal(shape, notes), None

    def _valid_polygonal(self, shape: BaseGeometry, notes: list[str]) -> BaseGeometry:
        if not shapely.is_valid(shape):
            reason = shapely.is_valid_reason(shape)
            fixed = shapely.make_valid(shape)
            polys = [g for g in shapely.get_parts(fixed) if isinstance(g, Polygon) and g.area > 0.0]
            if not polys:
                raise _Reject(f"invalid polygon ({reason}) with no area left after repair")
            repaired: BaseGeometry = polys[0] if len(polys) == 1 else shapely.union_all(polys)
            if not isinstance(repaired, Polygon | MultiPolygon) or not shapely.is_valid(repaired):
                raise _Reject(f"invalid polygon ({reason}) that make_valid cannot repair")
            notes.append(
                f"invalid polygon ({reason}) repaired with make_valid into "
                f"{len(polys)} polygon(s); please fix the file"
            )
            shape = repaired
        if shape.area <= 0.0:
            raise _Reject("polygon has zero area")
        minx, miny, maxx, maxy = shape.bounds
        cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
        x, y = to_local_m(np.array([minx, maxx]), np.array([miny, maxy]), cx, cy)
        extent = float(np.hypot(x[1] - x[0], y[1] - y[0]))
        if extent > self.max_extent_m:
            raise _Reject(
                f"polygon spans {extent:.0f} m, more than the limit of {self.max_extent_m:g} m"
            )
        return shape

    def _schedule(self, value: Any, notes: list[str]) -> Mapping[str, Any] | None:
        if value is None:
            return None
        problem = _schedule_problem(value)
        if problem:
            notes.append(f"schedule ignored: {problem}")
            return None
        sched = dict(value)
        sched["weekdays"] = tuple(value["weekdays"])
        if "closed" in sched:
            sched["closed"] = tuple(value["closed"])
        return MappingProxyType(sched)

    def _site(
        self,
        site_id: str,
        props: Mapping[str, Any],
        geometry: BaseGeometry,
        radius: float | None,
        notes: list[str],
        source: str,
    ) -> Site:
        client_id = props.get("client_id")
        if client_id is None or client_id == "":
            raise _Reject("missing client_id")
        if not isinstance(client_id, str):
            if isinstance(client_id, int) and not isinstance(client_id, bool):
                notes.append(f"client_id {client_id} is a number; used as a string")
                client_id = str(client_id)
            else:
                raise _Reject(f"client_id must be a string, got {client_id!r}")
        name = props.get("name")
        if not isinstance(name, str) or not name.strip():
            notes.append(f"name missing or not a string; using the site_id {site_id!r}")
            name = site_id
        service = props.get("service_min")
        service_min: int | None = None
        if service is not None:
            if isinstance(service, int) and not isinstance(service, bool) and service >= 0:
                service_min = service
            else:
                notes.append(f"service_min {service!r} ignored: must be an integer >= 0")
        schedule = self._schedule(props.get("schedule"), notes)
        attrs = {k: v for k, v in props.items() if k not in _KNOWN_PROPS}
        return Site(
            site_id=site_id,
            client_id=client_id,
            name=name,
            geometry=geometry,
            radius_m=radius,
            schedule=schedule,
            service_min=service_min,
            attributes=MappingProxyType(attrs) if attrs else _EMPTY,
        )


def _schedule_problem(value: Any) -> str | None:
    """Why a schedule object is unusable, or None when it is fine."""
    if not isinstance(value, dict):
        return f"must be an object, got {type(value).__name__}"
    days = value.get("weekdays")
    if (
        not isinstance(days, list)
        or not days
        or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
    ):
        return f"weekdays must be a non-empty list of ISO weekdays 1..7, got {days!r}"
    for key in ("window_start", "window_end"):
        v = value.get(key)
        if not isinstance(v, str) or not _HHMM.match(v):
            return f"{key} must be 'HH:MM', got {v!r}"
    if value["window_start"] >= value["window_end"]:
        return (
            f"window_start {value['window_start']} is not before window_end {value['window_end']}"
        )
    tz = value.get("tz")
    if not isinstance(tz, str):
        return f"tz must be an IANA time zone name, got {tz!r}"
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {tz!r}"
    return _schedule_extension_problem(value)


def _iso_date_ok(v: Any) -> bool:
    if not isinstance(v, str) or not _ISO_DATE.match(v):
        return False
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return False
    return True


def _schedule_extension_problem(value: Mapping[str, Any]) -> str | None:
    """The optional keys of issue 8: ``every_weeks`` (serve every N-th week, counted from the
    ISO week of ``anchor_date``), ``closed`` (local dates the site is closed: holidays)."""
    every = value.get("every_weeks", 1)
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 52:
        return f"every_weeks must be an integer 1..52, got {every!r}"
    anchor = value.get("anchor_date")
    if anchor is not None and not _iso_date_ok(anchor):
        return f"anchor_date must be a date 'YYYY-MM-DD', got {anchor!r}"
    if every > 1 and anchor is None:
        return f"every_weeks={every} needs an anchor_date (a date of a service week)"
    closed = value.get("closed", [])
    if not isinstance(closed, list | tuple) or not all(_iso_date_ok(d) for d in closed):
        return f"closed must be a list of dates 'YYYY-MM-DD', got {closed!r}"
    return None


def schedule_problem(value: Any) -> str | None:
    """Public name of the schedule check (the schedule stage validates contracts with it)."""
    return _schedule_problem(value)

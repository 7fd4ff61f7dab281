"""Readers of the scenario files (docs/formats.md) for fleetwatch's wiring, replay and tests.

Readers select CSV columns by header name and ignore unknown JSON keys, as the format page
promises, so files written by a newer simulator still load.  Malformed input raises
:class:`ScenarioFormatError` naming the file and the row/feature at fault.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.fixes import datetime_to_us
from ingest.registry import UnitsFileError, read_units_csv

RECV_PREFIX = b"#recv "
#: the largest payload iter_payloads accepts (a unit's backlog burst is a few kB)
MAX_PAYLOAD_BYTES = 1 << 20


class ScenarioFormatError(ValueError):
    """A scenario file does not follow docs/formats.md (the message says where)."""


def parse_iso_us(text: str) -> int:
    """µs since epoch for ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` (UTC only: a ``Z`` is required)."""
    if not text.endswith("Z"):
        raise ScenarioFormatError(f"time {text!r} is not UTC ISO-8601 with a 'Z' suffix")
    try:
        t = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError as exc:
        raise ScenarioFormatError(f"time {text!r} is not ISO-8601: {exc}") from None
    return datetime_to_us(t)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedStop:
    date: dt.date
    vehicle_id: str
    seq: int
    site_id: str
    planned_arrival_us: int
    window_start_us: int
    window_end_us: int
    service_min: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DepotRow:
    vehicle_id: str
    depot_id: str
    lat: float
    lon: float
    radius_m: float
    planned_departure_us: int
    planned_return_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitRow:
    unit_id: str
    vehicle_id: str
    driver: str


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ScenarioFormatError(f"{path}: missing column(s) {', '.join(missing)}")
        yield from enumerate(reader, start=2)


def load_plans(path: Path) -> list[PlannedStop]:
    """``plans.csv`` rows in file order (by vehicle, then seq)."""
    cols = (
        "date",
        "vehicle_id",
        "seq",
        "site_id",
        "planned_arrival",
        "window_start",
        "window_end",
        "service_min",
    )
    out = []
    for line, r in _rows(path, cols):
        try:
            out.append(
                PlannedStop(
                    date=dt.date.fromisoformat(r["date"]),
                    vehicle_id=r["vehicle_id"],
                    seq=int(r["seq"]),
                    site_id=r["site_id"],
                    planned_arrival_us=parse_iso_us(r["planned_arrival"]),
                    window_start_us=parse_iso_us(r["window_start"]),
                    window_end_us=parse_iso_us(r["window_end"]),
                    service_min=int(r["service_min"]),
                )
            )
        except ValueError as exc:
            raise ScenarioFormatError(f"{path} line {line}: {exc}") from None
    return out


def load_depots(path: Path) -> list[DepotRow]:
    cols = (
        "vehicle_id",
        "depot_id",
        "lat",
        "lon",
        "radius_m",
        "planned_departure",
        "planned_return",
    )
    out = []
    for line, r in _rows(path, cols):
        try:
            out.append(
                DepotRow(
                    vehicle_id=r["vehicle_id"],
                    depot_id=r["depot_id"],
                    lat=float(r["lat"]),
                    lon=float(r["lon"]),
                    radius_m=float(r["radius_m"]),
                    planned_departure_us=parse_iso_us(r["planned_departure"]),
                    planned_return_us=parse_iso_us(r["planned_return"]),
                )
            )
        except ValueError as exc:
            raise ScenarioFormatError(f"{path} line {line}: {exc}") from None
    return out


def load_units(path: Path) -> list[UnitRow]:
    """``units.csv`` through the service's own reader (``ingest.registry.read_units_csv``):
    replay, the simulator and ``fleetwatch run`` accept exactly the same files."""
    try:
        entries = read_units_csv(path)
    except UnitsFileError as exc:
        raise ScenarioFormatError(str(exc)) from None
    return [UnitRow(unit_id=e.unit_id, vehicle_id=e.vehicle_id, driver=e.driver) for e in entries]


def load_sites_geojson(path: Path) -> list[dict[str, Any]]:
    """The features of ``sites.geojson`` (plain dicts; the geofence package builds fences)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScenarioFormatError(f"{path}: not JSON: {exc}") from None
    if doc.get("type") != "FeatureCollection":
        raise ScenarioFormatError(f"{path}: not a GeoJSON FeatureCollection")
    feats: list[dict[str, Any]] = doc["features"]
    for i, f in enumerate(feats):
        props = f.get("properties") or {}
        if "site_id" not in props:
            raise ScenarioFormatError(f"{path}: feature #{i} has no properties.site_id")
    return feats


def load_truth(path: Path) -> dict[str, Any]:
    """``truth.json`` as parsed JSON (its layout is documented, not wrapped in types)."""
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScenarioFormatError(f"{path}: not JSON: {exc}") from None
    for key in ("scenario", "visits", "skipped", "late"):
        if key not in doc:
            raise ScenarioFormatError(f"{path}: missing key {key!r}")
    return doc


def iter_payloads(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(recv_us, payload)`` for every payload of an ``nmea/<unit>.nmea`` file, in file order.

    Splits on LF: ``#recv`` opens a payload, other ``#`` lines are comments, every other line
    (LF restored) belongs to the current payload.  Lines before the first ``#recv`` are refused.
    """
    recv: int | None = None
    parts: list[bytes] = []
    size = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if line.startswith(b"#"):
                if line.startswith(RECV_PREFIX):
                    if recv is not None:
                        yield recv, b"".join(parts)
                    stamp = line[len(RECV_PREFIX) :].strip().decode("ascii", "replace")
                    try:
                        recv = parse_iso_us(stamp)
                    except ScenarioFormatError as exc:
                        raise ScenarioFormatError(f"{path} line {lineno}: {exc}") from None
                    parts, size = [], 0
                continue
            if recv is None:
                raise ScenarioFormatError(f"{path} line {lineno}: payload bytes before any #recv")
            size += len(line)
            if size > MAX_PAYLOAD_BYTES:
                raise ScenarioFormatError(
                    f"{path} line {lineno}: payload over {MAX_PAYLOAD_BYTES} bytes"
                )
            parts.append(line)
    if recv is not None:
        yield recv, b"".join(parts)


def unit_files(scenario_dir: Path) -> dict[str, Path]:
    """``unit_id -> nmea file`` for a scenario directory, sorted by unit id."""
    nmea = scenario_dir / "nmea"
    if not nmea.is_dir():
        raise ScenarioFormatError(f"{scenario_dir}: no nmea/ directory (is it a scenario?)")
    return {p.stem: p for p in sorted(nmea.glob("*.nmea"))}


def merged_payloads(scenario_dir: Path) -> Iterator[tuple[int, str, bytes]]:
    """``(recv_us, unit_id, payload)`` of every unit of a scenario, in receive-time order
    (what a broker would have seen; ties keep unit-id order).  One open file per unit."""
    files = unit_files(scenario_dir)

    def one(unit: str, path: Path) -> Iterator[tuple[int, str, bytes]]:
        for recv, payload in iter_payloads(path):
            yield recv, unit, payload

    return heapq.merge(*(one(u, p) for u, p in files.items()), key=lambda x: x[0])

"""The answer key of a scenario: what really happened (``truth.json``, see docs/formats.md).

Times are held as float seconds since the Unix epoch (true clock) while generating and written
as ISO-8601 UTC; the JSON layout is the documented contract.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any


def iso_s(t: float) -> str:
    """Whole-second ISO-8601 UTC (truth times are epochs of the units' 1 s grid)."""
    return dt.datetime.fromtimestamp(round(t), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Visit:
    site_id: str
    vehicle_id: str
    unit_id: str
    seq: int
    arrival: float
    departure: float
    observed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UnscheduledStop:
    vehicle_id: str
    unit_id: str
    lat: float
    lon: float
    start: float
    end: float
    kind: str  # "lunch" | "traffic"


@dataclass(slots=True)
class Truth:
    """Collected while generating, one vehicle at a time."""

    scenario: dict[str, Any]
    units: list[dict[str, Any]] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    unscheduled_stops: list[UnscheduledStop] = field(default_factory=list)
    drive_bys: list[dict[str, Any]] = field(default_factory=list)
    traffic_delays: list[dict[str, Any]] = field(default_factory=list)
    dropouts: list[dict[str, Any]] = field(default_factory=list)
    clock_offsets: list[dict[str, Any]] = field(default_factory=list)
    silent_units: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)  # issue 8 (optional)
    coverage_gaps: list[dict[str, Any]] = field(default_factory=list)  # issue 8 (optional)
    multipath_outliers: int = 0
    bad_sentences: dict[str, int] = field(
        default_factory=lambda: {"checksum": 0, "truncated": 0, "garbage": 0}
    )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "units": self.units,
            "visits": [
                {
                    "site_id": v.site_id,
                    "vehicle_id": v.vehicle_id,
                    "unit_id": v.unit_id,
                    "seq": v.seq,
                    "arrival": iso_s(v.arrival),
                    "departure": iso_s(v.departure),
                    "observed": v.observed,
                }
                for v in self.visits
            ],
            "skipped": self.skipped,
            "late": self.late,
            "unscheduled_stops": [
                {
                    "vehicle_id": u.vehicle_id,
                    "unit_id": u.unit_id,
                    "lat": round(u.lat, 7),
                    "lon": round(u.lon, 7),
                    "start": iso_s(u.start),
                    "end": iso_s(u.end),
                    "kind": u.kind,
                }
                for u in self.unscheduled_stops
            ],
            "drive_bys": self.drive_bys,
            "traffic_delays": self.traffic_delays,
            "dropouts": self.dropouts,
            "clock_offsets": self.clock_offsets,
            "silent_units": self.silent_units,
            "multipath_outliers": self.multipath_outliers,
            "bad_sentences": self.bad_sentences,
        } | {  # written only when used, so older scenarios' truth stays byte-identical
            k: v
            for k, v in (("cancelled", self.cancelled), ("coverage_gaps", self.coverage_gaps))
            if v
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json_dict(), indent=1, sort_keys=False) + "\n"

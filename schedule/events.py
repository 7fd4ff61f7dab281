"""What visit and stop detection tells the schedule stage and storage.

Events are small immutable records (h11's habit).  Each names the visit or stop it is about by a
stable id and carries a ``version``: when late, buffered fixes change an earlier decision, the
tracker emits the same kind of event with the same id, a higher version and ``supersedes`` set
to the version it replaces (``retracted=True`` when the visit or stop turned out not to exist).
A consumer keeps, per (kind, id), the event with the highest version; that is the truth so far.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.fixes import iso_utc

#: Why a visit or stop ended: the vehicle left (confirmed by hysteresis), no fixes for longer
#: than ``max_gap_s`` (or a gap after which the vehicle was elsewhere), a bad-fix jump, or
#: (visits only) the site was removed from the day's site list while the visit was open: it is
#: closed at its last fix inside the fence, and fixes after the removal are not matched to it.
ClosedBy = Literal["exit", "gap", "teleport", "site_removed"]


class InvalidEvent(ValueError):
    """An event built with inconsistent fields: a bug of the detector, never of the input."""


def _check_version(version: int, supersedes: int | None) -> None:
    if version < 1:
        raise InvalidEvent(f"version must be >= 1, got {version}")
    if supersedes is not None and not 1 <= supersedes < version:
        raise InvalidEvent(f"supersedes={supersedes} must be a lower version than {version}")
    if version > 1 and supersedes is None:
        raise InvalidEvent(f"version {version} must say which version it supersedes")


def _json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event": type(obj).__name__}
    for key, value in asdict(obj).items():
        if key.endswith("_us") and isinstance(value, int):
            out[key[:-3]] = iso_utc(value)
        elif isinstance(value, float) and math.isnan(value):
            out[key] = None
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitStarted:
    """The vehicle has been inside ``site_id`` for ``min_dwell_s``: a visit, not a drive-by."""

    visit_id: str
    version: int = 1
    supersedes: int | None = None
    retracted: bool = False
    vehicle_id: str
    site_id: str
    arrival_us: int
    confirmed_us: int  # fix time at which the dwell threshold was reached

    def __post_init__(self) -> None:
        _check_version(self.version, self.supersedes)
        if self.confirmed_us < self.arrival_us:
            raise InvalidEvent(f"visit {self.visit_id}: confirmed before arrival")

    def to_json_dict(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitCompleted:
    """The vehicle left ``site_id`` (or the visit was closed by a gap); with its quality."""

    visit_id: str
    version: int = 1
    supersedes: int | None = None
    retracted: bool = False
    vehicle_id: str
    site_id: str
    arrival_us: int
    departure_us: int
    fix_count: int
    inside_share: float  # share of the visit's fixes strictly inside the fence
    median_hdop: float  # NaN when the unit reports no HDOP
    closed_by: ClosedBy

    def __post_init__(self) -> None:
        _check_version(self.version, self.supersedes)
        if self.departure_us < self.arrival_us:
            raise InvalidEvent(f"visit {self.visit_id}: departure before arrival")

    @property
    def dwell_s(self) -> float:
        return (self.departure_us - self.arrival_us) / 1e6

    def to_json_dict(self) -> dict[str, Any]:
        d = _json(self)
        d["dwell_s"] = round(self.dwell_s, 3)
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class StopStarted:
    """The vehicle has stood still for ``stop_min_s``; ``site_id`` is None outside every site."""

    stop_id: str
    version: int = 1
    supersedes: int | None = None
    retracted: bool = False
    vehicle_id: str
    site_id: str | None
    start_us: int
    lat: float
    lon: float

    def __post_init__(self) -> None:
        _check_version(self.version, self.supersedes)

    def to_json_dict(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class StopEnded:
    """The vehicle moved on; ``lat``/``lon`` is the stop's place (median of its fixes)."""

    stop_id: str
    version: int = 1
    supersedes: int | None = None
    retracted: bool = False
    vehicle_id: str
    site_id: str | None
    start_us: int
    end_us: int
    lat: float
    lon: float
    fix_count: int
    closed_by: ClosedBy

    def __post_init__(self) -> None:
        _check_version(self.version, self.supersedes)
        if self.end_us < self.start_us:
            raise InvalidEvent(f"stop {self.stop_id}: end before start")

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / 1e6

    def to_json_dict(self) -> dict[str, Any]:
        d = _json(self)
        d["duration_s"] = round(self.duration_s, 3)
        return d


DetectionEvent = VisitStarted | VisitCompleted | StopStarted | StopEnded


def event_key(ev: DetectionEvent) -> tuple[str, str]:
    """(kind, id): the identity a correction shares with the event it replaces."""
    if isinstance(ev, VisitStarted | VisitCompleted):
        return type(ev).__name__, ev.visit_id
    return type(ev).__name__, ev.stop_id


def latest(events: list[DetectionEvent]) -> dict[tuple[str, str], DetectionEvent]:
    """Fold a stream of events and corrections into the current truth (retractions kept)."""
    out: dict[tuple[str, str], DetectionEvent] = {}
    for ev in events:
        key = event_key(ev)
        prev = out.get(key)
        if prev is None or ev.version > prev.version:
            out[key] = ev
    return out

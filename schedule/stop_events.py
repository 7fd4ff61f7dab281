"""What the schedule stage tells the alert stage, the console and the store.

This is the contract between ``schedule/`` (plans, per-stop state, ETA, vehicle conditions) and
``alerts/`` (alert threads, escalation, visit exceptions).  Records are small, frozen and
keyword-only (h11's habit); times are integer microseconds since the epoch, UTC, in *data
time*: the engine never reads a wall clock, so ``at_us`` is the engine's "now" (a fix time or a
tick) when the decision was taken.

Identity is stable across restarts and re-runs: a planned stop is ``"{service_date}/{site_id}"``
(a site is served at most once a day, by whichever vehicle gets there), a route is
``"{service_date}/{vehicle_id}"``.  Consumers key on those ids; a later record for the same id
replaces the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: pending → at_risk → late → visited | missed; cancelled by a dispatcher at any time before a
#: visit.  ``visited`` carries an :data:`Outcome`.  Only a retraction (late data proving a
#: decision wrong) moves a stop back.
StopState = Literal["pending", "at_risk", "late", "visited", "missed", "cancelled"]
Outcome = Literal["early", "on_time", "late"]
#: What moved the engine to decide: a fix batch, a clock tick, a dispatcher command, a plan
#: import, or fixes that arrived after the fact (a store-and-forward backlog).
Cause = Literal["fix", "tick", "command", "import", "late_data"]
VehicleConditionKind = Literal[
    "behind_schedule", "gps_silent", "unscheduled_stop", "not_left_depot"
]


def stop_id_of(service_date: str, site_id: str) -> str:
    return f"{service_date}/{site_id}"


def route_id_of(service_date: str, vehicle_id: str) -> str:
    return f"{service_date}/{vehicle_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopChanged:
    """A planned stop's state (or a fact behind it, e.g. the arrival) changed."""

    stop_id: str
    site_id: str
    client_id: str | None
    service_date: str  # local date, ISO
    vehicle_id: str | None  # planned vehicle (after a reassignment: the new one)
    state: StopState
    previous: StopState | None  # None for the first record of a stop
    window_start_us: int
    window_end_us: int
    planned_arrival_us: int | None
    eta_us: int | None  # None once visited/missed/cancelled or when unknown
    arrival_us: int | None
    departure_us: int | None
    visited_by: str | None  # vehicle that actually served the site (any vehicle serves it)
    visit_id: str | None  # the detection visit behind ``visited``
    outcome: Outcome | None
    minutes_late: float | None  # > 0 only for outcome "late"
    reason: str  # human-readable: "ETA 10:52 after window end 10:30 − 15 min margin"
    cause: Cause
    at_us: int
    detected_late: bool = False  # decided from data that arrived after the fact
    retraction: bool = False  # an earlier terminal decision (missed, visited) was reversed
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleCondition:
    """A condition of a vehicle began (``active``) or ended (not ``active``)."""

    vehicle_id: str
    service_date: str
    kind: VehicleConditionKind
    active: bool
    since_us: int
    at_us: int
    minutes: float  # how far behind / how long silent / how long stopped / how long overdue
    detail: str
    cause: Cause
    detected_late: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UnplannedVisit:
    """A visit to a site that no plan holds today (recorded, not alarmed)."""

    visit_id: str
    site_id: str
    client_id: str | None
    service_date: str
    vehicle_id: str
    arrival_us: int
    departure_us: int | None
    at_us: int
    retracted: bool = False
    detected_late: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UnplannedDue:
    """A site due today by its contract that no route holds: it will be missed for sure."""

    site_id: str
    client_id: str | None
    service_date: str
    window_start_us: int
    window_end_us: int
    at_us: int
    resolved: bool = False  # a later plan import or command put it on a route


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteProgress:
    """A route's ETAs changed (console material; not an alert by itself)."""

    route_id: str
    vehicle_id: str
    service_date: str
    stop_ids: tuple[str, ...]  # remaining stops in planned order
    eta_us: tuple[int, ...]  # one per remaining stop
    behind_s: float  # > 0: behind the plan
    at_us: int


ScheduleEvent = StopChanged | VehicleCondition | UnplannedVisit | UnplannedDue | RouteProgress


# -- dispatcher commands (validated by whoever holds the state they act on) ------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReassignStop:
    stop_id: str
    to_vehicle: str
    by: str  # dispatcher id


@dataclass(frozen=True, slots=True, kw_only=True)
class ReorderRoute:
    route_id: str
    stop_ids: tuple[str, ...]  # the route's remaining stops in their new order
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelStop:
    stop_id: str
    reason: str
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledge:
    alert_id: str
    version: int  # the version the dispatcher saw; a stale one is refused
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddComment:
    alert_id: str
    text: str
    by: str


ScheduleCommand = ReassignStop | ReorderRoute | CancelStop
AlertCommand = Acknowledge | AddComment
Command = ScheduleCommand | AlertCommand


class CommandRefused(ValueError):
    """A command that cannot be carried out; ``code`` is stable for clients to branch on.

    Codes: ``unknown_id``, ``stale_version``, ``already_final`` (stop visited/missed/cancelled),
    ``not_allowed`` (role), ``invalid`` (malformed argument).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[CommandRefused], tuple[str, str]]:
        """Picklable with its code: a refusal crosses from the engine's process to the caller's."""
        return (type(self), (self.code, str(self)))


@dataclass(frozen=True, slots=True, kw_only=True)
class VehiclePosition:
    """A vehicle's newest accepted fix, as the engine hands it to the schedule stage."""

    vehicle_id: str
    t_us: int
    lon: float
    lat: float
    speed_kmh: float  # NaN when the unit did not report speed

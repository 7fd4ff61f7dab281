"""Every threshold of the schedule stage (stop states, ETA, vehicle conditions), units in names.

One frozen record, like :class:`schedule.params.DetectionParams`, so that a board, a replay and
a test say exactly which rules they ran with.  docs/schedule.md explains each default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class InvalidScheduleParams(ValueError):
    """A schedule threshold that cannot work (negative, NaN, zero where a span is needed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleParams:
    """Thresholds of the schedule board.

    * ``grace_min``: a stop not visited by window end + grace is *missed* (issue 8: 30 min).
      With ``grace_until_end_of_day`` the stop is missed only at the end of its local service
      day instead (``working_day_end_local``), for fleets that still serve late sites.
    * ``at_risk_margin_min``: a stop is *at risk* when its ETA passes window end minus this.
    * ``behind_schedule_min``: a vehicle is *behind schedule* when its next stop's ETA is this
      much after the planned arrival; the condition ends below half of it (hysteresis, so a
      vehicle hovering at the threshold does not flap).
    * ``gps_silent_min``: no fix for this long between the route's planned departure and its
      planned return (the working hours).
    * ``unscheduled_stop_min``: a stop outside every site (and outside the depot yard) longer
      than this.
    * ``not_left_depot_min``: still inside the depot yard this long after the planned departure.
    * ``detected_late_after_s``: a decision taken from data older than "now" by more than this
      is flagged ``detected_late`` (store-and-forward backlog), not fired as news.
    * ETA cold start: straight-line distance × ``detour_factor`` / ``urban_speed_kmh``; once
      ``min_learned_legs`` legs of an hour of day are known, their median effective speed is used;
      legs the plan holds use the planned drive time × the learned actual/planned ratio.
    * ``eta_silent_slide_max_min``: how long a vehicle without fixes is assumed to stand still
      (its ETAs slide with the clock) before they freeze at that slide.
    """

    grace_min: float = 30.0
    grace_until_end_of_day: bool = False
    working_day_end_local_min: int = 24 * 60 - 1
    at_risk_margin_min: float = 15.0
    behind_schedule_min: float = 30.0
    gps_silent_min: float = 15.0
    unscheduled_stop_min: float = 20.0
    not_left_depot_min: float = 15.0
    depot_radius_m: float = 200.0
    detected_late_after_s: float = 180.0
    # ETA
    urban_speed_kmh: float = 25.0
    detour_factor: float = 1.4
    min_learned_legs: int = 5
    learned_legs_per_hour: int = 200
    min_leg_speed_kmh: float = 2.0
    max_leg_speed_kmh: float = 90.0
    max_leg_min: float = 180.0
    eta_refresh_s: float = 30.0
    eta_silent_slide_max_min: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if not value >= 0:  # also catches NaN
                raise InvalidScheduleParams(f"{f.name}={value!r}: must be a number >= 0")
        for name in ("urban_speed_kmh", "detour_factor", "max_leg_speed_kmh", "max_leg_min"):
            if getattr(self, name) <= 0:
                raise InvalidScheduleParams(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.min_leg_speed_kmh >= self.max_leg_speed_kmh:
            raise InvalidScheduleParams(
                f"min_leg_speed_kmh={self.min_leg_speed_kmh} must be below "
                f"max_leg_speed_kmh={self.max_leg_speed_kmh}"
            )
        if not 0 <= self.working_day_end_local_min < 24 * 60:
            raise InvalidScheduleParams(
                f"working_day_end_local_min={self.working_day_end_local_min} must be in 0..1439"
            )

    @property
    def grace_us(self) -> int:
        return round(self.grace_min * 60e6)

    @property
    def margin_us(self) -> int:
        return round(self.at_risk_margin_min * 60e6)

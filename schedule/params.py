"""Every threshold of visit and stop detection, with its unit in its name.

One frozen record so that a tracker, a replay and a test all say exactly which rules they ran
with; docs/detection.md explains each rule and why its default is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class InvalidDetectionParams(ValueError):
    """A detection threshold that cannot work (negative, zero where a span is needed, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionParams:
    """Thresholds for visits, stops, hysteresis, gaps and bad-fix rejection.

    Defaults are the issue's: a visit needs 2 min inside, leaving needs 15 m beyond the fence,
    a stop is < 3 km/h for 3 min.  The rest are chosen so that σ = 10 m jitter and 30-150 m
    multipath outliers cannot end a visit or a stop (see docs/detection.md).  A stop's size is
    bounded (``stop_extent_m``: a queue crawling faster than 2 km/h is slow, not stopped), and
    stops back to back at one place (``stop_merge_gap_s``, ``stop_merge_m``) are one stop.
    """

    # visits
    min_dwell_s: float = 120.0
    exit_margin_m: float = 15.0
    exit_confirm_s: float = 30.0
    exit_confirm_fixes: int = 3
    crawl_speed_kmh: float = 10.0
    min_slow_share: float = 0.5
    min_inside_share: float = 0.2
    min_still_s: float = 60.0
    # stops
    stop_speed_kmh: float = 3.0
    stop_min_s: float = 180.0
    stop_radius_m: float = 30.0
    drift_radius_m: float = 50.0
    move_confirm_s: float = 20.0
    move_confirm_fixes: int = 3
    speed_window_s: float = 20.0
    stop_extent_m: float = 100.0  # a stop's fixes (5-fix majority) stay this close to its head
    stop_merge_gap_s: float = 120.0  # back-to-back stops this close in time...
    stop_merge_m: float = 50.0  # ...and place (medians, and every fix between) are one stop
    # gaps and bad fixes
    max_gap_s: float = 300.0
    gap_rejoin_m: float = 100.0
    teleport_slack_m: float = 40.0
    teleport_check_s: float = 60.0
    max_speed_kmh: float = 250.0
    # memory
    horizon_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value >= 0:  # also catches NaN
                raise InvalidDetectionParams(f"{f.name}={value!r}: must be a number >= 0")
        for name in (
            "min_dwell_s",
            "stop_min_s",
            "stop_radius_m",
            "stop_extent_m",
            "max_gap_s",
            "horizon_s",
        ):
            if getattr(self, name) <= 0:
                raise InvalidDetectionParams(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.exit_confirm_fixes < 1 or self.move_confirm_fixes < 1:
            raise InvalidDetectionParams("exit_confirm_fixes and move_confirm_fixes must be >= 1")
        for name in ("min_slow_share", "min_inside_share"):
            if not getattr(self, name) <= 1.0:
                raise InvalidDetectionParams(f"{name}={getattr(self, name)} must be <= 1")
        if self.horizon_s < 2 * self.max_gap_s:
            raise InvalidDetectionParams(
                f"horizon_s={self.horizon_s} must be at least 2 * max_gap_s={self.max_gap_s}"
            )
        if self.stop_extent_m < self.stop_radius_m:
            raise InvalidDetectionParams(
                f"stop_extent_m={self.stop_extent_m} must be at least "
                f"stop_radius_m={self.stop_radius_m} (a stop may drift that far between runs)"
            )

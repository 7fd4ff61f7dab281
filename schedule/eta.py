"""ETA of every remaining stop of a route, from the vehicle's last position (numpy, per route).

Travel time of a leg comes from two sources, both learned from the fleet's own recent legs by
hour of day (a vehicle leaves site A, its next visit starts at site B):

* when the plan holds the leg (A and B consecutive with planned arrivals), the *planned* drive
  time — what the route planner expected — times the fleet's recent ratio actual / planned for
  that hour (cold start 1.0).  A plan's legs already know the streets; what the plan cannot know
  is today's traffic, and the ratio is exactly that;
* otherwise (reordered or reassigned stops, plans without arrival times), straight-line
  distance / an *effective* speed learned the same way (cold start: ``urban_speed_kmh /
  detour_factor``, 25 km/h through a street grid 1.4× longer than the straight line).

Each hour keeps the last ``learned_legs_per_hour`` legs and uses their median (one lunch break
inside a leg must not slow every ETA) once it has ``min_learned_legs``.  The first leg starts
mid-way: the planned time is scaled by the share of the straight-line distance still to go.

A truck early for a window waits for it (the company's drivers do), so the arrival at stop *i*
is ``max(departure(i−1) + travel(i), window_start(i))`` and the departure adds the site's
service time.  That recurrence is vectorised: with ``C`` the cumulative sum of travel + service,
``departure(i) = C(i) + max(start, max_{k ≤ i}(ws(k) + svc(k) − C(k)))``, one
``np.maximum.accumulate``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from schedule.schedule_params import ScheduleParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_M_PER_DEG_LAT = 110_574.0
#: legs of a vehicle's own that make its actual / planned ratio (the median of the last ones)
OWN_LEGS = 3
_M_PER_DEG_LON_EQ = 111_320.0


def distance_m(lon0: F64 | float, lat0: F64 | float, lon1: F64, lat1: F64) -> F64:
    """Equirectangular distance in metres (exact enough within a city)."""
    mean_lat = np.radians((np.asarray(lat0) + lat1) / 2.0)
    dx = (lon1 - lon0) * _M_PER_DEG_LON_EQ * np.cos(mean_lat)
    dy = (lat1 - lat0) * _M_PER_DEG_LAT
    return np.asarray(np.hypot(dx, dy), dtype=np.float64)


class TravelModel:
    """Effective straight-line speed by hour of day, learned from completed legs."""

    def __init__(self, params: ScheduleParams) -> None:
        self.params = params
        self.default_mps = params.urban_speed_kmh / 3.6 / params.detour_factor
        self._legs: list[deque[float]] = [
            deque(maxlen=max(1, params.learned_legs_per_hour)) for _ in range(24)
        ]
        self._speed: list[float] = [self.default_mps] * 24
        self._ratios: list[deque[float]] = [
            deque(maxlen=max(1, params.learned_legs_per_hour)) for _ in range(24)
        ]
        self._ratio: list[float] = [1.0] * 24
        self._own: dict[str, deque[float]] = {}
        self.legs_learned = 0

    def learn(
        self,
        dist_m: float,
        duration_s: float,
        hour: int,
        planned_s: float | None = None,
        vehicle_id: str | None = None,
    ) -> bool:
        """Add one leg (and its planned drive time when the plan holds it); False (ignored)
        when it is not a plausible drive."""
        p = self.params
        h = hour % 24
        if duration_s <= 0 or duration_s > p.max_leg_min * 60:
            return False
        used = False
        if planned_s is not None and planned_s >= 60.0:
            ratios = self._ratios[h]
            r = min(max(duration_s / planned_s, 0.25), 6.0)
            ratios.append(r)
            if vehicle_id is not None:
                own = self._own.setdefault(vehicle_id, deque(maxlen=OWN_LEGS))
                own.append(r)
            if len(ratios) >= p.min_learned_legs:
                self._ratio[h] = float(np.median(np.fromiter(ratios, np.float64)))
            used = True
        v = dist_m / duration_s
        if dist_m >= 200.0 and p.min_leg_speed_kmh / 3.6 <= v <= p.max_leg_speed_kmh / 3.6:
            legs = self._legs[h]
            legs.append(v)
            if len(legs) >= p.min_learned_legs:
                self._speed[h] = float(np.median(np.fromiter(legs, np.float64)))
            used = True
        self.legs_learned += used
        return used

    def speed_mps(self, hour: int) -> float:
        return self._speed[hour % 24]

    def ratio(self, hour: int, vehicle_id: str | None = None) -> float:
        """Recent actual / planned drive time: the vehicle's own last legs once it has
        ``OWN_LEGS`` of them (a congested truck stays congested, an uncongested one is not
        slowed by the others' jams), else the fleet's for the hour (1.0 until learned)."""
        if vehicle_id is not None:
            own = self._own.get(vehicle_id)
            if own is not None and len(own) >= OWN_LEGS:
                return float(np.median(np.fromiter(own, np.float64)))
        return self._ratio[hour % 24]


def hour_of(t_us: int) -> int:
    return int((t_us // 3_600_000_000) % 24)


def route_eta(
    *,
    start_us: int,
    start_lon: float,
    start_lat: float,
    lon: F64,
    lat: F64,
    window_start_us: I64,
    service_s: F64,
    speed_mps: float,
    planned_leg_s: F64 | None = None,
    ratio: float = 1.0,
    first_share: float = 1.0,
) -> I64:
    """Arrival ETAs (µs) at the remaining stops in order, leaving ``(start_lon, start_lat)``
    at ``start_us`` (see the module docstring).  ``planned_leg_s``: the plan's drive time into
    each stop (NaN where the plan does not hold the leg); ``first_share``: the share of the
    first leg still to drive."""
    n = len(lon)
    if n == 0:
        return np.zeros(0, np.int64)
    prev_lon = np.concatenate([[start_lon], lon[:-1]])
    prev_lat = np.concatenate([[start_lat], lat[:-1]])
    travel_s = distance_m(prev_lon, prev_lat, lon, lat) / max(speed_mps, 1e-3)
    if planned_leg_s is not None:
        planned = planned_leg_s * ratio
        planned[0] *= first_share
        travel_s = np.where(np.isnan(planned_leg_s), travel_s, planned)
    step = travel_s + service_s
    c = np.cumsum(step)
    base = (window_start_us - start_us) / 1e6 + service_s - c
    dep = c + np.maximum(0.0, np.maximum.accumulate(base))
    arrive_s = dep - service_s
    return start_us + np.round(arrive_s * 1e6).astype(np.int64)


def routes_eta(
    *,
    start_us: I64,
    start_lon: F64,
    start_lat: F64,
    lon: F64,
    lat: F64,
    window_start_us: I64,
    service_s: F64,
    speed_mps: F64,
    planned_leg_s: F64,
    ratio: F64,
    first_share: F64,
) -> I64:
    """:func:`route_eta` for many routes at once, one route per row (``R`` routes × ``L``
    stops, the per-route scalars as ``(R,)`` columns).  A row shorter than ``L`` is padded at
    its end with anything finite (its ETAs there are meaningless); ``planned_leg_s`` holds NaN
    where the plan does not hold the leg.

    Why rows and not one flat array: the recurrence's running sum and maximum run along each
    row (``axis=1``), so a route's ETAs are exactly :func:`route_eta`'s — the same additions in
    the same order, whatever other routes share the call (a flat array with segment offsets
    would round differently, and a route's ETA would depend on which routes happened to be
    refreshed with it).  The board refreshes ~1/30 of the fleet's routes every second at
    30,000 vehicles: one call here instead of ~15 numpy calls per route."""
    if lon.size == 0:
        return np.zeros(lon.shape, np.int64)
    prev_lon = np.concatenate([start_lon[:, None], lon[:, :-1]], axis=1)
    prev_lat = np.concatenate([start_lat[:, None], lat[:, :-1]], axis=1)
    travel_s = distance_m(prev_lon, prev_lat, lon, lat) / np.maximum(speed_mps, 1e-3)[:, None]
    planned = planned_leg_s * ratio[:, None]
    planned[:, 0] *= first_share
    travel_s = np.where(np.isnan(planned_leg_s), travel_s, planned)
    step = travel_s + service_s
    c = np.cumsum(step, axis=1)
    base = (window_start_us - start_us[:, None]) / 1e6 + service_s - c
    dep = c + np.maximum(0.0, np.maximum.accumulate(base, axis=1))
    arrive_s = dep - service_s
    return start_us[:, None] + np.round(arrive_s * 1e6).astype(np.int64)


def eta_margin_s(eta_us: I64, deadline_us: I64) -> float:
    """Seconds until the first stop's ETA would pass its deadline if the vehicle stood still
    (the ETA then slides with the clock): the board re-checks the route at that instant."""
    if len(eta_us) == 0:
        return math.inf
    return float(np.min(deadline_us - eta_us)) / 1e6

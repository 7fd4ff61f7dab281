"""Day plans: which vehicle serves which sites in which order, and the windows that fit.

Routing is deliberately simple and deterministic: the day's sites are cut into angular sectors
around the city centre with equal numbers of stops, each sector goes to one vehicle based at the
depot nearest its direction, and each vehicle visits its sites nearest-neighbour first (street
distance) from its depot.  Planned arrival times then come from driving that route undisturbed
(see ``scenario.py``), and the sites' contract windows are set around them with slack, so an
undisturbed day keeps every window by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from simulators.city import City, Site

WINDOW_STEP_MIN = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteAssignment:
    vehicle_id: str
    depot_index: int
    stops: tuple[int, ...]  # indices into City.sites, in visiting order


def sites_for_weekday(city: City, iso_weekday: int) -> list[int]:
    """Indices of the sites whose contract includes the day."""
    return [i for i, s in enumerate(city.sites) if iso_weekday in s.schedule.weekdays]


def assign_routes(city: City, site_idx: list[int], n_vehicles: int) -> list[RouteAssignment]:
    """Sector split and nearest-neighbour ordering (see the module docstring)."""
    if n_vehicles < 1:
        raise ValueError(f"need at least one vehicle, got {n_vehicles}")
    xs = np.array([city.sites[i].x for i in site_idx])
    ys = np.array([city.sites[i].y for i in site_idx])
    ang = np.arctan2(ys, xs) if len(site_idx) else np.zeros(0)
    order = np.argsort(ang, kind="stable")
    chunks = np.array_split(order, n_vehicles)
    dep_ang = np.array([math.atan2(d.y, d.x) for d in city.depots])
    out = []
    for v, chunk in enumerate(chunks):
        if len(chunk):
            mean = math.atan2(np.sin(ang[chunk]).mean(), np.cos(ang[chunk]).mean())
        else:
            mean = 2 * math.pi * v / n_vehicles
        diff = np.abs(np.angle(np.exp(1j * (dep_ang - mean))))
        depot = int(np.argmin(diff))
        d = city.depots[depot]
        stops = _nearest_neighbour(d.x, d.y, xs[chunk], ys[chunk])
        out.append(
            RouteAssignment(
                vehicle_id=f"V{v + 1:03d}",
                depot_index=depot,
                stops=tuple(site_idx[int(chunk[k])] for k in stops),
            )
        )
    return out


def _nearest_neighbour(x0: float, y0: float, xs: np.ndarray, ys: np.ndarray) -> list[int]:
    left = list(range(len(xs)))
    cx, cy = x0, y0
    tour = []
    while left:
        d = np.abs(xs[left] - cx) + np.abs(ys[left] - cy)
        k = left.pop(int(np.argmin(d)))
        tour.append(k)
        cx, cy = float(xs[k]), float(ys[k])
    return tour


def window_around(
    rng: np.random.Generator, planned_local_min: float, service_min: int
) -> tuple[int, int]:
    """A contract window (local minutes) that a truck arriving as planned keeps with slack."""
    before = float(rng.uniform(30.0, 120.0))
    after = float(rng.uniform(45.0, 150.0))
    start = math.floor((planned_local_min - before) / WINDOW_STEP_MIN) * WINDOW_STEP_MIN
    end = math.ceil((planned_local_min + service_min + after) / WINDOW_STEP_MIN) * WINDOW_STEP_MIN
    return max(0, start), min(24 * 60 - 1, end)


def with_window(site: Site, start_min: int, end_min: int) -> Site:
    """The site with its contract window set to the one its plan was built around."""
    return replace(
        site, schedule=replace(site.schedule, window_start_min=start_min, window_end_min=end_min)
    )

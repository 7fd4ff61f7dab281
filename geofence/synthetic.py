"""A city-like synthetic site set for tests and benchmarks (deterministic from a seed).

Sites cluster around business districts like the real ones: circles of 25–80 m and building
polygons (rotated rectangles, L-shapes, a few two-building MultiPolygons), and about one site in
ten has a neighbour whose fence overlaps it ("two tenants at one entrance").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from geofence.projection import from_local_m
from geofence.sites import Site


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> npt.NDArray[np.float64]:
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2.0
    c, s = np.cos(angle), np.sin(angle)
    rot = corners @ np.array([[c, s], [-s, c]])
    return np.asarray(rot + np.array([cx, cy]), dtype=np.float64)


def _building(rng: np.random.Generator) -> list[npt.NDArray[np.float64]]:
    """One or two polygon outlines in metres around (0, 0)."""
    angle = rng.uniform(0, np.pi)
    kind = rng.random()
    w, h = rng.uniform(20, 120), rng.uniform(20, 80)
    if kind < 0.6:
        return [_rect(0, 0, w, h, angle)]
    if kind < 0.9:  # L-shape: a rectangle with a corner cut out
        pts = (
            np.array([[0, 0], [w, 0], [w, h * 0.4], [w * 0.4, h * 0.4], [w * 0.4, h], [0, h]])
            - np.array([w, h]) / 2.0
        )
        c, s = np.cos(angle), np.sin(angle)
        return [pts @ np.array([[c, s], [-s, c]])]
    gap = rng.uniform(10, 40)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    return [
        _rect(-(w / 2 + gap / 2), 0, w, h, 0.0) @ rot,
        _rect(w / 2 + gap / 2, 0, w, h, 0.0) @ rot,
    ]


def _polygon_lonlat(
    outlines: list[npt.NDArray[np.float64]], lon0: float, lat0: float
) -> BaseGeometry:
    polys = []
    for ring in outlines:
        lon, lat = from_local_m(ring[:, 0], ring[:, 1], lon0, lat0)
        polys.append(Polygon(np.column_stack((lon, lat))))
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def make_city_sites(
    n: int = 1500,
    *,
    centre_lon: float = 37.6173,
    centre_lat: float = 55.7558,
    box_m: float = 40_000.0,
    polygon_share: float = 0.35,
    overlap_share: float = 0.1,
    seed: int = 0,
) -> list[Site]:
    """``n`` sites inside a ``box_m`` square around the centre."""
    rng = np.random.default_rng(seed)
    half = box_m / 2.0 * 0.95
    n_clusters = max(1, n // 40)
    cluster_xy = rng.uniform(-half, half, size=(n_clusters, 2))
    sites: list[Site] = []
    i = 0
    while len(sites) < n:
        if sites and rng.random() < overlap_share:
            # a partner overlapping the previous site: 20–60 m away
            prev = sites[-1].geometry
            c = prev.centroid
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(20, 60)
            lon0, lat0 = from_local_m(dist * np.cos(ang), dist * np.sin(ang), c.x, c.y)
        else:
            k = rng.integers(n_clusters)
            x, y = np.clip(cluster_xy[k] + rng.normal(0, box_m / 40, size=2), -half, half)
            lon0, lat0 = from_local_m(x, y, centre_lon, centre_lat)
        lon0_f, lat0_f = float(lon0), float(lat0)
        sid = f"S{i + 1:04d}"
        common = {
            "site_id": sid,
            "client_id": f"C{rng.integers(1, n // 3 + 2):04d}",
            "name": f"Site {sid}",
            "service_min": int(rng.integers(5, 16)),
        }
        if rng.random() < polygon_share:
            geom = _polygon_lonlat(_building(rng), lon0_f, lat0_f)
            sites.append(Site(geometry=geom, radius_m=None, **common))  # type: ignore[arg-type]
        else:
            r = float(np.round(rng.uniform(25, 80), 1))
            sites.append(Site(geometry=Point(lon0_f, lat0_f), radius_m=r, **common))  # type: ignore[arg-type]
        i += 1
    return sites


def random_points(
    n: int,
    *,
    centre_lon: float = 37.6173,
    centre_lat: float = 55.7558,
    box_m: float = 40_000.0,
    seed: int = 1,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``n`` uniform points (lon, lat) in the ``box_m`` square around the centre."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-box_m / 2, box_m / 2, n)
    y = rng.uniform(-box_m / 2, box_m / 2, n)
    return from_local_m(x, y, centre_lon, centre_lat)

"""Slow, independent answers to check the index against (tests) and to race it (benchmark).

The brute force shares no code path with :class:`~geofence.index.FenceIndex` beyond the
definition of a polygon's local frame (origin = centre of its lon/lat bounds, the map of
:func:`geofence.projection.to_local_m`): it selects candidates by a sorted-longitude window per
site instead of the grid, measures circles by the geodesic (Vincenty) distance instead of the
local plane, and tests polygons with ``shapely.contains``/``shapely.distance`` on Point objects
instead of ``contains_xy``/``dwithin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from geofence.projection import from_local_m, geodesic_distance_m, metres_per_degree, to_local_m
from geofence.sites import Site


@dataclass(frozen=True, slots=True, kw_only=True)
class BruteForce:
    """Every pair the brute force looked at: whether the point is inside the (grown) fence,
    and ``slack``: signed metres from the grown fence's boundary (negative inside)."""

    point: npt.NDArray[np.intp]
    site: npt.NDArray[np.intp]
    inside: npt.NDArray[np.bool_]
    slack: npt.NDArray[np.float64]

    def pairs(self) -> npt.NDArray[np.intp]:
        """The (2, K) answer, sorted by point then site."""
        p, s = self.point[self.inside], self.site[self.inside]
        order = np.lexsort((s, p))
        return np.vstack((p[order], s[order]))


def local_frame_origin(site: Site) -> tuple[float, float]:
    if site.radius_m is not None:
        return float(site.geometry.x), float(site.geometry.y)
    minx, miny, maxx, maxy = site.geometry.bounds
    return 0.5 * (minx + maxx), 0.5 * (miny + maxy)


def brute_force(
    sites: Sequence[Site],
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
    *,
    margin_m: float = 0.0,
) -> BruteForce:
    order = np.argsort(lon, kind="stable")
    lon_sorted = lon[order]
    pts_out, sites_out, inside_out, slack_out = [], [], [], []
    for j, site in enumerate(sites):
        lon0, lat0 = local_frame_origin(site)
        minx, miny, maxx, maxy = site.geometry.bounds
        reach = (site.radius_m or 0.0) + margin_m + 50.0  # generous on purpose
        kx, ky = metres_per_degree(max(abs(miny), abs(maxy)) + 0.1)
        dlon, dlat = reach / float(kx), reach / float(ky)
        a, b = np.searchsorted(lon_sorted, [minx - dlon, maxx + dlon])
        idx = order[a:b]
        idx = idx[(lat[idx] >= miny - dlat) & (lat[idx] <= maxy + dlat)]
        if len(idx) == 0:
            continue
        if site.radius_m is not None:
            d = geodesic_distance_m(lon0, lat0, lon[idx], lat[idx])
            slack = d - (site.radius_m + margin_m)
            inside = slack <= 0.0
        else:
            x, y = to_local_m(lon[idx], lat[idx], lon0, lat0)
            poly = shapely.transform(
                site.geometry,
                lambda c, lon0=lon0, lat0=lat0: np.column_stack(
                    to_local_m(c[:, 0], c[:, 1], lon0, lat0)
                ),
            )
            pts = shapely.points(x, y)
            edge = shapely.distance(poly.boundary, pts)
            within = shapely.contains(poly, pts)
            if margin_m > 0.0:
                inside = shapely.distance(poly, pts) <= margin_m
                slack = np.where(within, -edge - margin_m, edge - margin_m)
            else:
                inside = within
                slack = np.where(within, -edge, edge)
        pts_out.append(idx)
        sites_out.append(np.full(len(idx), j, dtype=np.intp))
        inside_out.append(np.asarray(inside, dtype=bool))
        slack_out.append(np.asarray(slack, dtype=np.float64))
    if not pts_out:
        e = np.empty(0, dtype=np.intp)
        return BruteForce(point=e, site=e, inside=np.empty(0, bool), slack=np.empty(0))
    return BruteForce(
        point=np.concatenate(pts_out).astype(np.intp),
        site=np.concatenate(sites_out),
        inside=np.concatenate(inside_out),
        slack=np.concatenate(slack_out),
    )


def scalar_query(
    sites: Sequence[Site], lon: Sequence[float], lat: Sequence[float], *, margin_m: float = 0.0
) -> list[tuple[int, int]]:
    """The same answer one point and one site at a time (the Hypothesis oracle)."""
    out = []
    for i, (x, y) in enumerate(zip(lon, lat, strict=True)):
        for j, site in enumerate(sites):
            lon0, lat0 = local_frame_origin(site)
            if site.radius_m is not None:
                d = float(geodesic_distance_m(lon0, lat0, x, y))
                if d <= site.radius_m + margin_m:
                    out.append((i, j))
                continue
            poly = shapely.transform(
                site.geometry,
                lambda c, lon0=lon0, lat0=lat0: np.column_stack(
                    to_local_m(c[:, 0], c[:, 1], lon0, lat0)
                ),
            )
            px, py = to_local_m(x, y, lon0, lat0)
            p = Point(float(px), float(py))
            hit = poly.distance(p) <= margin_m if margin_m > 0.0 else poly.contains(p)
            if hit:
                out.append((i, j))
    return out


def fence_lonlat(site: Site, *, quad_segs: int = 16) -> BaseGeometry:
    """The fence as a lon/lat polygon (circles buffered in the local frame, ``4 * quad_segs``
    vertices): what a plain shapely STRtree can index.  The polygon is inscribed in the circle,
    so it is smaller by up to ``r * (1 - cos(pi / (4 * quad_segs)))`` (9.6 cm for 80 m at 16)."""
    if site.radius_m is None:
        return site.geometry
    lon0, lat0 = local_frame_origin(site)
    circle = Point(0.0, 0.0).buffer(site.radius_m, quad_segs=quad_segs)
    return shapely.transform(
        circle, lambda c: np.column_stack(from_local_m(c[:, 0], c[:, 1], lon0, lat0))
    )

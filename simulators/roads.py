"""Street-like routes: a Manhattan grid of streets with some diagonal avenues.

Trucks must not drive in straight lines through buildings, or a geofence test would see them
cut through every fence between two sites.  A route leaves its origin by a short driveway to
the nearest street, follows grid streets (a staircase with a few turns, sometimes a diagonal
avenue) and enters its destination by a driveway.  Routes are polylines in the city's metric
plane; distances are their lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreetGrid:
    """Streets every ``spacing_m`` along x and y; ``diagonal_p`` of long routes take an avenue."""

    spacing_m: float = 250.0
    diagonal_p: float = 0.3


@dataclass(frozen=True, slots=True)
class Route:
    """A polyline: vertex coordinates (metres); consecutive vertices are distinct."""

    x: FloatArray
    y: FloatArray

    def length_m(self) -> float:
        return float(np.hypot(np.diff(self.x), np.diff(self.y)).sum())


def _snap(grid: StreetGrid, x: float, y: float) -> tuple[float, float, bool]:
    """Nearest point on a street; True when that street runs along y (a vertical line)."""
    g = grid.spacing_m
    gx = round(x / g) * g
    gy = round(y / g) * g
    if abs(x - gx) <= abs(y - gy):
        return gx, y, True
    return x, gy, False


def route(
    grid: StreetGrid,
    rng: np.random.Generator,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    *,
    via: tuple[float, float] | None = None,
) -> Route:
    """A street route from one point to another, optionally cutting through ``via``.

    ``via`` is for drive-bys: the route leaves the street, crosses the point, and continues on
    the far side (through a parking lot), never stopping there.
    """
    if via is not None:
        vx, vy = via
        a = route(grid, rng, x0, y0, vx, vy)
        # cross the point and come out on the far side, 150 m beyond, then on to the target
        dx, dy = vx - a.x[-2], vy - a.y[-2]
        n = float(np.hypot(dx, dy)) or 1.0
        ex, ey = vx + 150.0 * dx / n, vy + 150.0 * dy / n
        b = route(grid, rng, ex, ey, x1, y1)
        return _clean(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]))
    g = grid.spacing_m
    sx0, sy0, vert0 = _snap(grid, x0, y0)
    sx1, sy1, vert1 = _snap(grid, x1, y1)
    # from the snapped point to a grid node, in the direction of the target
    if vert0:
        n0 = (sx0, (np.floor if y1 < sy0 else np.ceil)(sy0 / g) * g)
    else:
        n0 = ((np.floor if x1 < sx0 else np.ceil)(sx0 / g) * g, sy0)
    if vert1:
        n1 = (sx1, (np.floor if y0 < sy1 else np.ceil)(sy1 / g) * g)
    else:
        n1 = ((np.floor if x0 < sx1 else np.ceil)(sx1 / g) * g, sy1)
    xs = [x0, sx0, float(n0[0])]
    ys = [y0, sy0, float(n0[1])]
    mx, my = _staircase(grid, rng, float(n0[0]), float(n0[1]), float(n1[0]), float(n1[1]))
    xs += mx
    ys += my
    xs += [sx1, x1]
    ys += [sy1, y1]
    return _clean(np.array(xs), np.array(ys))


def _staircase(
    grid: StreetGrid, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float
) -> tuple[list[float], list[float]]:
    """Grid nodes from (x0, y0) to (x1, y1), alternating x and y moves, maybe one avenue."""
    g = grid.spacing_m
    dx, dy = x1 - x0, y1 - y0
    if abs(dx) > 1500 and abs(dy) > 1500 and rng.random() < grid.diagonal_p:
        f0, f1 = sorted(rng.uniform(0.15, 0.85, 2))
        ax, ay = round((x0 + f0 * dx) / g) * g, round((y0 + f0 * dy) / g) * g
        bx, by = round((x0 + f1 * dx) / g) * g, round((y0 + f1 * dy) / g) * g
        p1x, p1y = _staircase(grid, rng, x0, y0, ax, ay)
        p2x, p2y = _staircase(grid, rng, bx, by, x1, y1)
        return [x0, *p1x, ax, bx, *p2x], [y0, *p1y, ay, by, *p2y]
    k = int(rng.integers(1, 4))
    nx = max(round(abs(dx) / g), 0)
    ny = max(round(abs(dy) / g), 0)
    bx = np.sort(rng.integers(0, nx + 1, k - 1)) if nx else np.zeros(k - 1, dtype=int)
    by = np.sort(rng.integers(0, ny + 1, k - 1)) if ny else np.zeros(k - 1, dtype=int)
    sx = np.sign(dx) * g
    sy = np.sign(dy) * g
    xs_stops = [x0 + sx * b for b in bx] + [x1]
    ys_stops = [y0 + sy * b for b in by] + [y1]
    xs, ys = [x0], [y0]
    cx, cy = x0, y0
    x_first = bool(rng.random() < 0.5)
    for i in range(k):
        if x_first:
            cx = float(xs_stops[i])
            xs.append(cx)
            ys.append(cy)
            cy = float(ys_stops[i])
        else:
            cy = float(ys_stops[i])
            xs.append(cx)
            ys.append(cy)
            cx = float(xs_stops[i])
        xs.append(cx)
        ys.append(cy)
    return xs, ys


def _clean(x: FloatArray, y: FloatArray) -> Route:
    """Drop repeated vertices so every segment has a length; both ends stay exactly as given."""
    eps = 1e-6
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = np.hypot(np.diff(x), np.diff(y)) > eps
    if not keep[-1]:  # the end point repeats an earlier one: keep the end, drop that one
        j = int(np.flatnonzero(keep[:-1])[-1])
        keep[-1] = True
        if j > 0:
            keep[j] = False
    x, y = x[keep], y[keep]
    if len(x) <= 2 and np.hypot(x[-1] - x[0], y[-1] - y[0]) <= eps:
        # a route to where we are: a 1 cm shuffle, ending exactly where it was asked to
        return Route(np.array([x[0], x[0] + 0.01, x[-1]]), np.array([y[0], y[0], y[-1]]))
    return Route(x, y)

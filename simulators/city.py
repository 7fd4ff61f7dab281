"""A city of mat sites: where they are, what their fences look like, who holds the contract.

Positions are generated in a local metric plane (x east, y north, metres from the centre) and
converted to WGS84 only when written: every distance the simulator reasons about (fence radii,
overlaps, street spacing) is then plain Euclidean arithmetic.  The projection is equirectangular
around the centre; over a 40 km city its error is well under 0.1 %, far below GPS noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8

FloatArray = npt.NDArray[np.float64]


class CityError(ValueError):
    """The requested city cannot be built (e.g. more sites than the area can hold)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Projection:
    """Equirectangular projection around ``(lat0, lon0)``, exact enough for a city."""

    lat0: float
    lon0: float

    def to_lonlat(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        lat = self.lat0 + np.degrees(y / EARTH_RADIUS_M)
        lon = self.lon0 + np.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(self.lat0))))
        return lon, lat

    def to_xy(self, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
        x = np.radians(lon - self.lon0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))
        y = np.radians(lat - self.lat0) * EARTH_RADIUS_M
        return x, y


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A contract's service days and local time window (minutes after local midnight)."""

    weekdays: tuple[int, ...]
    window_start_min: int
    window_end_min: int
    tz: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """One mat site.  ``x, y`` is the parking point (inside the fence), metres from the centre.

    ``polygon`` is the building outline's exterior ring (metres, closed, counter-clockwise) for
    polygon fences, empty for circles.
    """

    site_id: str
    client_id: str
    name: str
    x: float
    y: float
    radius_m: (
        float  # circle radius, or for polygons the radius of the largest inscribed circle bound
    )
    polygon: tuple[tuple[float, float], ...]
    service_min: int
    schedule: Schedule

    @property
    def is_circle(self) -> bool:
        return not self.polygon

    def contains(self, x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        """Which of the points (metres) are inside this site's fence."""
        if self.is_circle:
            return np.asarray(np.hypot(x - self.x, y - self.y) <= self.radius_m)
        return _in_polygon(self.polygon, x, y)

    def outer_radius_m(self) -> float:
        """Radius of a circle around the parking point that holds the whole fence."""
        if self.is_circle:
            return self.radius_m
        return max(math.hypot(px - self.x, py - self.y) for px, py in self.polygon)


@dataclass(frozen=True, slots=True, kw_only=True)
class Depot:
    depot_id: str
    x: float
    y: float
    radius_m: float


@dataclass(frozen=True, slots=True, kw_only=True)
class City:
    projection: Projection
    half_size_m: float
    sites: tuple[Site, ...]
    depots: tuple[Depot, ...]


def _in_polygon(
    ring: tuple[tuple[float, float], ...], x: FloatArray, y: FloatArray
) -> npt.NDArray[np.bool_]:
    """Even-odd ray casting over a closed ring, vectorised over the points."""
    px = np.array([p[0] for p in ring])
    py = np.array([p[1] for p in ring])
    inside = np.zeros(np.shape(x), dtype=bool)
    for i in range(len(ring) - 1):
        x1, y1, x2, y2 = px[i], py[i], px[i + 1], py[i + 1]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xint)
    return inside


_NAME_KINDS = ("BC", "Mall", "Shop", "Office", "Clinic", "Hotel", "Bank", "Gym", "Cafe", "School")
_NAME_WORDS = (
    "Sokol",
    "Arbat",
    "Tverskaya",
    "Kutuzov",
    "Neva",
    "Volga",
    "Sever",
    "Yug",
    "Zapad",
    "Vostok",
    "Mir",
    "Aurora",
    "Orion",
    "Kristall",
    "Vega",
    "Lotos",
    "Rassvet",
    "Sputnik",
    "Kosmos",
    "Taiga",
)
_WEEKDAY_SETS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),
    (1, 2, 3, 4, 5, 6, 7),
    (1, 3, 5),
    (2, 4, 6),
)
_WEEKDAY_P = (0.7, 0.1, 0.1, 0.1)


def _positions(rng: np.random.Generator, n: int, half: float) -> tuple[FloatArray, FloatArray]:
    """Clustered like business centres: dense centre, a few districts, sparse edges."""
    n_districts = 8
    dx = rng.uniform(-0.6 * half, 0.6 * half, n_districts)
    dy = rng.uniform(-0.6 * half, 0.6 * half, n_districts)
    kind = rng.choice(3, size=n, p=[0.5, 0.35, 0.15])
    x = np.empty(n)
    y = np.empty(n)
    c = kind == 0
    x[c] = rng.normal(0.0, 0.22 * half, c.sum())
    y[c] = rng.normal(0.0, 0.22 * half, c.sum())
    d = kind == 1
    which = rng.integers(0, n_districts, d.sum())
    x[d] = dx[which] + rng.normal(0.0, 0.05 * half, d.sum())
    y[d] = dy[which] + rng.normal(0.0, 0.05 * half, d.sum())
    u = kind == 2
    x[u] = rng.uniform(-half, half, u.sum())
    y[u] = rng.uniform(-half, half, u.sum())
    lim = 0.95 * half
    return np.clip(x, -lim, lim), np.clip(y, -lim, lim)


def _rectangle(
    rng: np.random.Generator, cx: float, cy: float
) -> tuple[tuple[tuple[float, float], ...], float]:
    """A rotated rectangular building around the parking point; its inner half-width."""
    w = float(rng.uniform(40.0, 110.0))
    h = float(rng.uniform(30.0, 70.0))
    a = float(rng.uniform(0.0, math.pi))
    ca, sa = math.cos(a), math.sin(a)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2), (-w / 2, -h / 2)]
    ring = tuple(
        (round(cx + ca * u - sa * v, 3), round(cy + sa * u + ca * v, 3)) for u, v in corners
    )
    return ring, min(w, h) / 2


def generate_city(
    rng: np.random.Generator,
    *,
    n_sites: int,
    lat0: float,
    lon0: float,
    size_km: float,
    polygon_fraction: float = 0.35,
    pair_fraction: float = 0.04,
    n_depots: int = 5,
    tz: str = "Europe/Moscow",
) -> City:
    """Sites with fences that never hold another site's parking point (see docs/formats.md)."""
    if n_sites < 1:
        raise CityError(f"need at least one site, got {n_sites}")
    half = size_km * 500.0
    if n_sites > (size_km**2) * 20:
        raise CityError(f"{n_sites} sites do not fit in {size_km}x{size_km} km (max 20 per km²)")
    n_pairs = int(n_sites * pair_fraction) // 2
    n_single = n_sites - 2 * n_pairs
    x, y = _positions(rng, n_single + n_pairs, half)
    is_poly = rng.random(n_single + n_pairs) < polygon_fraction
    is_poly[n_single:] = False  # pair anchors are circles, so the overlap is easy to control
    radius = rng.uniform(25.0, 80.0, n_single + n_pairs)
    # pair partners: a second circle whose fence overlaps the anchor's, parking points apart
    ang = rng.uniform(0, 2 * math.pi, n_pairs)
    r_b = rng.uniform(25.0, 80.0, n_pairs)
    r_a = radius[n_single:]
    lo = np.maximum(r_a, r_b) + 20.0
    hi = r_a + r_b
    dist = lo + rng.uniform(0.1, 0.9, n_pairs) * np.maximum(hi - lo, 1.0)
    dist = np.minimum(dist, hi - 0.5)
    bx = x[n_single:] + dist * np.cos(ang)
    by = y[n_single:] + dist * np.sin(ang)
    xs = np.concatenate([x, bx])
    ys = np.concatenate([y, by])
    rs = np.concatenate([radius, r_b])
    polys = np.concatenate([is_poly, np.zeros(n_pairs, dtype=bool)])
    pair_of = np.full(len(xs), -1)
    pair_of[n_single : n_single + n_pairs] = np.arange(n_single + n_pairs, len(xs))
    pair_of[n_single + n_pairs :] = np.arange(n_single, n_single + n_pairs)
    # polygons: outer radius up to ~65 m; keep every other parking point out of every fence
    rings: list[tuple[tuple[float, float], ...]] = []
    outer = rs.copy()
    for i in range(len(xs)):
        if polys[i]:
            ring, inner = _rectangle(rng, float(xs[i]), float(ys[i]))
            rings.append(ring)
            rs[i] = inner
            outer[i] = max(math.hypot(px - xs[i], py - ys[i]) for px, py in ring)
        else:
            rings.append(())
    _separate(rng, xs, ys, outer, pair_of, half, rings, polys)
    n_clients = max(1, int(n_sites * 0.6))
    clients = rng.integers(1, n_clients + 1, len(xs))
    wd = rng.choice(len(_WEEKDAY_SETS), size=len(xs), p=_WEEKDAY_P)
    service = rng.integers(5, 16, len(xs))
    kinds = rng.integers(0, len(_NAME_KINDS), len(xs))
    words = rng.integers(0, len(_NAME_WORDS), len(xs))
    nums = rng.integers(1, 40, len(xs))
    # default window (replaced for sites planned on the scenario's date, see plans.py)
    wstart = rng.choice([7 * 60, 8 * 60, 9 * 60, 10 * 60], size=len(xs))
    wend = wstart + rng.choice([4 * 60, 6 * 60, 8 * 60], size=len(xs))
    order = rng.permutation(len(xs))  # site ids do not reveal pairs or clusters
    sites = []
    for sid, i in enumerate(order, start=1):
        name = f"{_NAME_KINDS[kinds[i]]} {_NAME_WORDS[words[i]]}-{nums[i]}"
        if pair_of[i] >= 0:
            name += " (north entrance)" if i < pair_of[i] else " (south entrance)"
        sites.append(
            Site(
                site_id=f"S{sid:04d}",
                client_id=f"C{int(clients[i]):04d}",
                name=name,
                x=round(float(xs[i]), 3),
                y=round(float(ys[i]), 3),
                radius_m=round(float(rs[i]), 1),
                polygon=rings[i],
                service_min=int(service[i]),
                schedule=Schedule(
                    weekdays=_WEEKDAY_SETS[wd[i]],
                    window_start_min=int(wstart[i]),
                    window_end_min=int(wend[i]),
                    tz=tz,
                ),
            )
        )
    sites.sort(key=lambda s: s.site_id)
    ang_d = rng.uniform(0, 2 * math.pi) + np.arange(n_depots) * 2 * math.pi / n_depots
    depots = tuple(
        Depot(
            depot_id=f"D{k + 1:02d}",
            x=round(float(0.7 * half * math.cos(a)), 3),
            y=round(float(0.7 * half * math.sin(a)), 3),
            radius_m=120.0,
        )
        for k, a in enumerate(ang_d)
    )
    return City(
        projection=Projection(lat0=lat0, lon0=lon0),
        half_size_m=half,
        sites=tuple(sites),
        depots=depots,
    )


def _separate(
    rng: np.random.Generator,
    xs: FloatArray,
    ys: FloatArray,
    outer: FloatArray,
    pair_of: npt.NDArray[np.int_],
    half: float,
    rings: list[tuple[tuple[float, float], ...]],
    polys: npt.NDArray[np.bool_],
) -> None:
    """Move sites (not pair partners) until no fence holds another site's parking point.

    Conservative: fences are taken as circles of their outer radius plus a 20 m margin.
    """
    n = len(xs)
    for _ in range(50):
        dx = xs[:, None] - xs[None, :]
        dy = ys[:, None] - ys[None, :]
        d = np.hypot(dx, dy)
        np.fill_diagonal(d, np.inf)
        idx = np.arange(n)
        d[idx[pair_of >= 0], pair_of[pair_of >= 0]] = np.inf  # partners overlap on purpose
        bad_pairs = d < (outer[None, :] + 20.0)
        bad_pairs |= bad_pairs.T
        bad = np.flatnonzero(bad_pairs.any(axis=1))
        if len(bad) == 0:
            return
        moved: set[int] = set()
        for i in bad:
            if i in moved:
                continue
            group = [int(i)] if pair_of[i] < 0 else [int(i), int(pair_of[i])]
            ox, oy = rng.normal(0, 300.0, 2)
            for k in group:
                nx = float(np.clip(xs[k] + ox, -0.95 * half, 0.95 * half))
                ny = float(np.clip(ys[k] + oy, -0.95 * half, 0.95 * half))
                if polys[k]:
                    rings[k] = tuple(
                        (round(px - xs[k] + nx, 3), round(py - ys[k] + ny, 3))
                        for px, py in rings[k]
                    )
                xs[k], ys[k] = nx, ny
                moved.add(k)
    raise CityError("could not separate the sites' fences: ask for fewer sites or a larger area")

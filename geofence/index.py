"""The vectorised geofence index: every (point, site) containment pair of a batch in one call.

How a query runs (docs/geofence.md has the numbers):

1. :class:`~geofence.grid.Grid` turns each point into a cell and the cell into candidate sites;
   points in empty cells (nearly all of them in a city) drop out after a few operations.
2. Each candidate pair inside the site's padded box is moved into the site's own local metric
   frame (:func:`geofence.projection.to_local_m`, exact to < 3e-5 m at 2 km, and independent of
   how far the site is from anything else).
3. Circles: squared distance against the squared radius.  Polygons: ``shapely.contains_xy`` on
   the pairs, each against its site's prepared polygon in local metres (``shapely.dwithin``
   when a margin grows the fence).

Steps 1-3 for circles run in one compiled pass per point (:mod:`geofence.kernel`); only the
polygon pairs that survive the box go to shapely.  The numpy version of the same steps stays as
:meth:`FenceIndex._query_numpy`, the reference the tests hold the kernel to, pair for pair.

The index is immutable: built once per version of the day's site list and swapped through a
:class:`FenceIndexHolder` when the list changes, so readers never see a half-built index.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from geofence import kernel
from geofence.errors import FenceIndexError, MarginTooLargeError, StaleIndexError
from geofence.grid import Grid
from geofence.projection import local_m_arrays, metres_per_degree, to_local_m
from geofence.sites import Site

#: Sites farther from the equator than this are refused (the lon/lat grid degenerates).
MAX_ABS_LAT = 85.0
#: Extra padding of each site's box in the grid, relative and absolute (metres): the box only
#: selects candidates, so generous is merely a little slower, never wrong.
_PAD_REL = 0.01
_PAD_M = 1.0

#: Below this many candidate pairs the box pre-filter costs more calls than it saves.
_BBOX_FILTER_MIN_PAIRS = 512

_versions = itertools.count(1)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceIndexStats:
    """Sizes of an index, for metrics and the benchmark's memory figure."""

    sites: int
    circles: int
    polygons: int
    cells: int
    cell_m: float
    grid_entries: int
    array_bytes: int  # numpy arrays owned by the index (grid + per-site columns)
    polygon_vertices: int  # local-frame polygon copies held by GEOS (≈ 16 B per vertex + overhead)


def _local_polygon(geom: BaseGeometry, lon0: float, lat0: float) -> BaseGeometry:
    """The polygon moved into the site's local frame (metres east/north of lon0, lat0)."""

    def to_m(coords: FloatArray) -> FloatArray:
        x, y = to_local_m(coords[:, 0], coords[:, 1], lon0, lat0)
        return np.column_stack((x, y))

    return shapely.transform(geom, to_m)


def _edges(poly: BaseGeometry) -> FloatArray:
    """(E, 4) rows ax, ay, bx, by: every edge of every ring of a (multi)polygon, from the very
    coordinates GEOS holds (so the kernel and shapely test the same segments)."""
    rings = [*shapely.get_exterior_ring(shapely.get_parts(poly))]
    for part in shapely.get_parts(poly):
        rings.extend(
            shapely.get_interior_ring(part, k) for k in range(shapely.get_num_interior_rings(part))
        )
    rows = []
    for ring in rings:
        c = shapely.get_coordinates(ring)
        rows.append(np.column_stack((c[:-1], c[1:])))
    return np.concatenate(rows)


def _scale_bounds(
    lat0: FloatArray, lat_lo: FloatArray, lat_hi: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Squared lower and upper bounds of ``true local distance / distance at the origin's
    scales`` for points between ``lat_lo`` and ``lat_hi`` (a site's box), widened by 1e-9.

    The local frame's scales are those of the mid latitude ``(lat + lat0) / 2``; both scales
    are monotonic in latitude over a fence's box (≤ 0.05°), so their extreme ratios to the
    origin's are at the box's edges.  1e-9 covers float rounding (~1e-15) a million times over:
    the kernel decides a circle pair without trigonometry only when it is out (or in) by more
    than this factor, so its answer is the exact frame's answer."""
    kx0, ky0 = metres_per_degree(lat0)
    lo = np.ones_like(lat0)
    hi = np.ones_like(lat0)
    for edge in (lat_lo, lat_hi):
        kx, ky = metres_per_degree(0.5 * (np.clip(edge, -89.0, 89.0) + lat0))
        for r in (kx / kx0, ky / ky0):
            lo = np.minimum(lo, r)
            hi = np.maximum(hi, r)
    lo = lo - 1e-9
    hi = hi + 1e-9
    return np.asarray(lo * lo, dtype=np.float64), np.asarray(hi * hi, dtype=np.float64)


def _bow_m(lo_lon: float, lo_lat: float, hi_lon: float, hi_lat: float) -> float:
    """Safety pad for polygons: an edge straight in the site's local frame is not straight in
    lon/lat; it departs from the lon/lat chord by a bow that grows with the square of its length
    (0.36 m for a 5 km diagonal edge at 55.75°, measured; docs/geofence.md) and with
    tan(latitude).  The bow keeps to the vertices' lon/lat box in every case we measured; this
    pad (≥ 2.5x that bow) keeps the box conservative without relying on it."""
    lat_c = 0.5 * (lo_lat + hi_lat)
    kx, ky = metres_per_degree(lat_c)
    length = math.hypot((hi_lon - lo_lon) * float(kx), (hi_lat - lo_lat) * float(ky))
    return 1.5e-8 * length * length * (1.0 + abs(math.tan(math.radians(lat_c))))


class FenceIndex:
    """Immutable geofence index over a tuple of sites; see the module docstring."""

    __slots__ = (
        "_bbox",
        "_bbox_cols",
        "_boundary",
        "_circle",
        "_edges",
        "_grid",
        "_item_box",
        "_local",
        "_origin_lat",
        "_origin_lon",
        "_polygon",
        "_positions",
        "_radius",
        "_site_table",
        "_stats",
        "margin_m",
        "site_ids",
        "sites",
        "version",
    )

    sites: tuple[Site, ...]
    version: int
    margin_m: float
    site_ids: tuple[str, ...]
    _origin_lon: FloatArray
    _origin_lat: FloatArray
    _radius: FloatArray  # 0 for polygons
    _circle: npt.NDArray[np.bool_]
    _polygon: npt.NDArray[np.bool_]
    _local: npt.NDArray[np.object_]  # prepared polygons in each site's local frame; None: circle
    _boundary: npt.NDArray[np.object_]
    _bbox: FloatArray  # (n, 4) padded lon/lat boxes that the grid is built from
    _bbox_cols: FloatArray  # (4, n) the same, one contiguous row per edge
    _grid: Grid | None
    _site_table: FloatArray  # (n, 9) one row per site for the kernel (geofence.kernel.SITE_*)
    _item_box: FloatArray  # (grid entries, 4) each grid entry's site box, in the grid's order
    _edges: FloatArray  # (E, 4) every polygon edge in its site's local frame (kernel.EDGE_*)
    _stats: FenceIndexStats
    _positions: dict[str, int]

    def __init__(self) -> None:
        raise TypeError("use FenceIndex.build(sites)")

    @classmethod
    def build(
        cls,
        sites: Sequence[Site],
        *,
        margin_m: float = 0.0,
        cell_m: float | None = None,
        version: int | None = None,
    ) -> FenceIndex:
        """Index ``sites``; queries may then use any margin up to ``margin_m`` metres.

        ``cell_m`` is the grid cell size (default: 0.6 × the median padded fence box diagonal,
        clamped to 25–1,000 m).  ``version`` defaults to a process-wide increasing counter.
        """
        if not (margin_m >= 0.0 and math.isfinite(margin_m)):
            raise FenceIndexError(f"margin_m must be a finite number >= 0, got {margin_m!r}")
        sites_t = tuple(sites)
        seen: dict[str, int] = {}
        for i, s in enumerate(sites_t):
            if s.site_id in seen:
                raise FenceIndexError(
                    f"duplicate site_id {s.site_id!r} at positions {seen[s.site_id]} and {i}"
                )
            seen[s.site_id] = i
        n = len(sites_t)
        self = object.__new__(cls)
        self.sites = sites_t
        self.site_ids = tuple(s.site_id for s in sites_t)
        self._positions = seen
        self.version = next(_versions) if version is None else version
        self.margin_m = float(margin_m)

        origin_lon = np.empty(n)
        origin_lat = np.empty(n)
        radius = np.zeros(n)
        circle = np.zeros(n, dtype=bool)
        local = np.full(n, None, dtype=object)
        boundary = np.full(n, None, dtype=object)
        bbox = np.empty((n, 4))
        vertices = 0
        for i, s in enumerate(sites_t):
            g = s.geometry
            if isinstance(g, Point):
                if s.radius_m is None or not s.radius_m > 0.0:
                    raise FenceIndexError(f"site {s.site_id!r}: circle without radius_m > 0")
                origin_lon[i], origin_lat[i] = g.x, g.y
                radius[i] = s.radius_m
                circle[i] = True
                reach = s.radius_m
                lo_lon = hi_lon = g.x
                lo_lat = hi_lat = g.y
            elif isinstance(g, Polygon | MultiPolygon):
                lo_lon, lo_lat, hi_lon, hi_lat = g.bounds
                origin_lon[i] = 0.5 * (lo_lon + hi_lon)
                origin_lat[i] = 0.5 * (lo_lat + hi_lat)
                poly = _local_polygon(g, origin_lon[i], origin_lat[i])
                local[i] = poly
                boundary[i] = poly.boundary
                vertices += int(shapely.get_num_coordinates(poly))
                reach = 0.0
            else:
                raise FenceIndexError(
                    f"site {s.site_id!r}: unsupported geometry {g.geom_type} "
                    f"(Point with radius_m, Polygon or MultiPolygon)"
                )
            if not (abs(lo_lat) <= MAX_ABS_LAT and abs(hi_lat) <= MAX_ABS_LAT):
                raise FenceIndexError(
                    f"site {s.site_id!r}: latitude beyond ±{MAX_ABS_LAT}° is not supported"
                )
            grow = (reach + margin_m) * (1.0 + _PAD_REL) + _PAD_M
            if reach == 0.0:  # polygon: its local-frame edges bow away from the lon/lat box
                grow += _bow_m(lo_lon, lo_lat, hi_lon, hi_lat)
            dlat = grow / float(metres_per_degree(max(abs(lo_lat), abs(hi_lat)))[1]) * 1.01
            far_lat = min(max(abs(lo_lat), abs(hi_lat)) + dlat, 89.0)
            dlon = grow / float(metres_per_degree(far_lat)[0])
            bbox[i] = (lo_lon - dlon, lo_lat - dlat, hi_lon + dlon, hi_lat + dlat)
        if n and float(bbox[:, 2].max() - bbox[:, 0].min()) > 180.0:
            raise FenceIndexError(
                "sites span more than 180° of longitude (antimeridian-crossing site lists "
                "are not supported)"
            )
        shapely.prepare(local[~circle])
        for arr in (origin_lon, origin_lat, radius, circle, local, boundary, bbox):
            arr.setflags(write=False)
        self._origin_lon, self._origin_lat = origin_lon, origin_lat
        self._radius, self._circle, self._polygon = radius, circle, ~circle
        self._polygon.setflags(write=False)
        self._local, self._boundary, self._bbox = local, boundary, bbox
        self._bbox_cols = np.ascontiguousarray(bbox.T)
        self._bbox_cols.setflags(write=False)
        table = np.zeros((n, kernel.SITE_COLUMNS))
        table[:, kernel.SITE_LON0] = origin_lon
        table[:, kernel.SITE_LAT0] = origin_lat
        table[:, kernel.SITE_RADIUS] = radius
        kx0, ky0 = metres_per_degree(origin_lat)
        table[:, kernel.SITE_KX] = kx0
        table[:, kernel.SITE_KY] = ky0
        lo_f, hi_f = _scale_bounds(origin_lat, bbox[:, 1], bbox[:, 3])
        table[:, kernel.SITE_LO] = lo_f
        table[:, kernel.SITE_HI] = hi_f
        table[:, kernel.SITE_REL] = np.maximum(1.0 - np.sqrt(lo_f), np.sqrt(hi_f) - 1.0)
        edge_parts = [np.empty((0, 4))]
        n_edges = 0
        for k in np.flatnonzero(~circle).tolist():
            e = _edges(local[k])
            table[k, kernel.SITE_E0], table[k, kernel.SITE_E1] = n_edges, n_edges + len(e)
            table[k, kernel.SITE_X0 : kernel.SITE_Y1 + 1] = local[k].bounds
            edge_parts.append(e)
            n_edges += len(e)
        edges = np.ascontiguousarray(np.concatenate(edge_parts))
        for arr in (table, edges):
            arr.setflags(write=False)
        self._site_table, self._edges = table, edges

        if cell_m is None:
            if n:
                ext = np.hypot(
                    (bbox[:, 2] - bbox[:, 0]) * metres_per_degree(origin_lat)[0],
                    (bbox[:, 3] - bbox[:, 1]) * metres_per_degree(origin_lat)[1],
                )
                # ~0.6 of the median padded box diagonal: fewer false candidates per point
                # than one cell per fence, while the grid stays a few MB for a city
                cell_m = float(np.clip(0.6 * np.median(ext), 25.0, 1_000.0))
            else:
                cell_m = 100.0
        if not (cell_m > 0.0 and math.isfinite(cell_m)):
            raise FenceIndexError(f"cell_m must be a finite number > 0, got {cell_m!r}")
        self._grid = Grid.build(bbox, cell_m=cell_m) if n else None
        self._item_box = (
            np.ascontiguousarray(bbox[self._grid.items]) if self._grid else np.empty((0, 4))
        )
        self._item_box.setflags(write=False)
        g_bytes = self._grid.nbytes if self._grid else 0
        self._stats = FenceIndexStats(
            sites=n,
            circles=int(circle.sum()),
            polygons=int(n - circle.sum()),
            cells=(self._grid.nx * self._grid.ny) if self._grid else 0,
            cell_m=self._grid.cell_m if self._grid else cell_m,
            grid_entries=len(self._grid.items) if self._grid else 0,
            array_bytes=int(
                g_bytes
                + origin_lon.nbytes
                + origin_lat.nbytes
                + radius.nbytes
                + circle.nbytes
                + local.nbytes
                + boundary.nbytes
                + 2 * bbox.nbytes
                + table.nbytes
                + edges.nbytes
                + self._item_box.nbytes
            ),
            polygon_vertices=vertices,
        )
        return self

    # -- queries ---------------------------------------------------------------------------

    @property
    def stats(self) -> FenceIndexStats:
        return self._stats

    def __len__(self) -> int:
        return len(self.sites)

    def __repr__(self) -> str:
        return f"<FenceIndex version={self.version} sites={len(self.sites)}>"

    def index_of(self, site_id: str) -> int:
        """Position of a site in :attr:`sites` (KeyError when absent)."""
        return self._positions[site_id]

    def _check_margin(self, margin_m: float) -> None:
        if not margin_m >= 0.0:
            raise ValueError(f"margin_m must be >= 0, got {margin_m!r}")
        if margin_m > self.margin_m:
            raise MarginTooLargeError(
                f"query margin {margin_m} m exceeds the build margin {self.margin_m} m; "
                f"build the index with FenceIndex.build(..., margin_m={margin_m})"
            )

    def query(
        self,
        lon: npt.ArrayLike,
        lat: npt.ArrayLike,
        *,
        margin_m: float = 0.0,
    ) -> IntArray:
        """Every (point, site) pair with the point inside the site's fence (grown by
        ``margin_m`` metres), shape (2, K), sorted by point then site.

        "Inside": strictly inside a polygon (``contains``), at most the radius from a circle's
        centre; with a margin, at most ``margin_m`` from the polygon / ``radius + margin_m``
        from the centre.  NaN coordinates match nothing.
        """
        self._check_margin(margin_m)
        lon_a = np.ascontiguousarray(lon, dtype=np.float64).ravel()
        lat_a = np.ascontiguousarray(lat, dtype=np.float64).ravel()
        if lon_a.shape != lat_a.shape:
            raise ValueError(f"lon and lat differ in length: {lon_a.shape} vs {lat_a.shape}")
        g = self._grid
        if g is None or len(lon_a) == 0:
            return np.empty((2, 0), dtype=np.intp)
        pairs, pend, pxy = kernel.query_pairs(
            lon_a, lat_a, g.lon_origin, g.lat_origin, g.inv_dlon, g.inv_dlat, g.nx, g.ny,
            g.offsets, g.items, self._item_box, self._site_table, self._edges, float(margin_m),
        )  # fmt: skip
        if len(pend) == 0:
            return pairs  # type: ignore[no-any-return]
        # a point within ~1e-13 m of a polygon's edge (or its margin): GEOS's exact predicates
        geoms = self._local[pairs[1].take(pend)]
        if margin_m > 0.0:
            hit = shapely.dwithin(geoms, shapely.points(pxy[0], pxy[1]), margin_m)
        else:
            hit = shapely.contains_xy(geoms, pxy[0], pxy[1])
        if hit.all():
            return pairs  # type: ignore[no-any-return]
        keep = np.ones(pairs.shape[1], dtype=bool)
        keep[pend[~hit]] = False
        return pairs.compress(keep, axis=1)  # type: ignore[no-any-return]

    def _query_numpy(
        self,
        lon: npt.ArrayLike,
        lat: npt.ArrayLike,
        *,
        margin_m: float = 0.0,
    ) -> IntArray:
        """:meth:`query` as whole-array numpy operations: the implementation before the
        compiled kernel, kept as the reference the tests compare the kernel with."""
        self._check_margin(margin_m)
        lon_a = np.ascontiguousarray(lon, dtype=np.float64).ravel()
        lat_a = np.ascontiguousarray(lat, dtype=np.float64).ravel()
        if lon_a.shape != lat_a.shape:
            raise ValueError(f"lon and lat differ in length: {lon_a.shape} vs {lat_a.shape}")
        if self._grid is None or len(lon_a) == 0:
            return np.empty((2, 0), dtype=np.intp)
        pt, site = self._grid.candidates(lon_a, lat_a)
        if len(pt) == 0:
            return np.empty((2, 0), dtype=np.intp)
        lon_p, lat_p = lon_a[pt], lat_a[pt]
        if len(pt) > _BBOX_FILTER_MIN_PAIRS:
            # a cell is larger than the part of it a fence covers: drop pairs outside the
            # site's (padded) box before the trigonometry; ~3x fewer pairs near sites
            keep = lon_p >= self._bbox_cols[0][site]
            keep &= lon_p <= self._bbox_cols[2][site]
            keep &= lat_p >= self._bbox_cols[1][site]
            keep &= lat_p <= self._bbox_cols[3][site]
            pt, site, lon_p, lat_p = pt[keep], site[keep], lon_p[keep], lat_p[keep]
        inside = self._inside(lon_p, lat_p, site, margin_m)
        out = np.empty((2, int(np.count_nonzero(inside))), dtype=np.intp)
        pt.compress(inside, out=out[0])
        site.compress(inside, out=out[1])
        return out

    def _inside(
        self, lon: FloatArray, lat: FloatArray, site: IntArray, margin_m: float
    ) -> npt.NDArray[np.bool_]:
        """Exact test of candidate pairs (vectorised over pairs)."""
        x, y = local_m_arrays(lon, lat, self._origin_lon[site], self._origin_lat[site])
        reach = self._radius[site]  # 0 for polygons: their pairs are overwritten below
        reach += margin_m
        reach *= reach
        d2 = x * x
        d2 += y * y
        inside = np.less_equal(d2, reach)
        if self._stats.polygons == 0:
            return inside
        poly = self._polygon[site].nonzero()[0]
        if len(poly):
            geoms = self._local[site[poly]]
            if margin_m > 0.0:
                hit = shapely.dwithin(geoms, shapely.points(x[poly], y[poly]), margin_m)
            else:
                hit = shapely.contains_xy(geoms, x[poly], y[poly])
            inside[poly] = hit
        return inside

    def distance_m(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, site_idx: npt.ArrayLike
    ) -> FloatArray:
        """Signed metres from each point to its paired site's fence boundary (negative inside,
        ``+inf`` for NaN coordinates); arguments broadcast against each other."""
        lon_a, lat_a, idx = np.broadcast_arrays(
            np.asarray(lon, dtype=np.float64),
            np.asarray(lat, dtype=np.float64),
            np.asarray(site_idx, dtype=np.intp),
        )
        shape = lon_a.shape
        lon_f, lat_f, idx_f = lon_a.ravel(), lat_a.ravel(), idx.ravel()
        if len(idx_f) and (idx_f.min() < 0 or idx_f.max() >= len(self.sites)):
            raise IndexError(f"site index out of range 0..{len(self.sites) - 1}")
        x, y = to_local_m(lon_f, lat_f, self._origin_lon[idx_f], self._origin_lat[idx_f])
        d = np.hypot(x, y) - self._radius[idx_f]
        poly = np.flatnonzero(self._polygon[idx_f])
        if len(poly):
            geoms = self._local[idx_f[poly]]
            xp, yp = x[poly], y[poly]
            edge = shapely.distance(self._boundary[idx_f[poly]], shapely.points(xp, yp))
            d[poly] = np.where(shapely.contains_xy(geoms, xp, yp), -edge, edge)
        d[~(np.isfinite(lon_f) & np.isfinite(lat_f))] = np.inf
        return np.asarray(d.reshape(shape), dtype=np.float64)


def warm_up() -> None:
    """Compile the query kernel now (or load it from numba's cache).

    A cold compile takes ~10 s on a loaded 2-core machine (docs/bench/geofence.md); done by the
    engine's first round it would hold that round, and every fix behind it.  The service should
    call this in a worker thread at start, as it does ``ingest.nmea.warm_up``.  Compiles every
    variant the engine can hit: writable and read-only coordinate arrays, with and without a
    margin, circles and polygons.
    """
    poly = Polygon([(37.6, 55.7), (37.601, 55.7), (37.601, 55.701), (37.6, 55.701)])
    sites = (
        Site(site_id="c", client_id="w", name="c", geometry=Point(37.6, 55.7), radius_m=50.0),
        Site(site_id="p", client_id="w", name="p", geometry=poly),
    )
    index = FenceIndex.build(sites, margin_m=1.0)
    lon = np.array([37.6, 37.6005, 37.6, np.nan])
    lat = np.array([55.7, 55.7005, 55.7, np.nan])
    lon_ro, lat_ro = lon.copy(), lat.copy()
    lon_ro.setflags(write=False)
    lat_ro.setflags(write=False)
    for x, y in ((lon, lat), (lon_ro, lat_ro)):
        for margin in (0.0, 1.0):
            index.query(x, y, margin_m=margin)


class FenceIndexHolder:
    """The current index, swapped atomically (one reference assignment) and never locked.

    A reader does ``index = holder.current`` once per batch and uses that object for the whole
    batch; a rebuild builds a new index off to the side and calls :meth:`replace`.  In-flight
    batches finish on the index they started with; the next batch sees the new one.
    """

    __slots__ = ("_current",)

    def __init__(self, initial: FenceIndex) -> None:
        self._current = initial

    @property
    def current(self) -> FenceIndex:
        return self._current

    def replace(self, new: FenceIndex) -> FenceIndex:
        """Make ``new`` current and return the previous index.  Refuses an index whose version
        is not newer (a late rebuild must not overwrite a fresher one)."""
        old = self._current
        if new.version <= old.version:
            raise StaleIndexError(
                f"index version {new.version} is not newer than the current {old.version}"
            )
        self._current = new
        return old

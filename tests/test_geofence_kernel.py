"""The compiled query gives, pair for pair, the answer of the numpy query it replaced and of a
scalar loop in the same arithmetic.

Three implementations, one answer: :meth:`FenceIndex.query` (geofence/kernel.py),
:meth:`FenceIndex._query_numpy` (the whole-array version, kept as the reference) and
:func:`scalar_local_query` below (one point and one site at a time, plain Python floats, no grid,
no boxes, shapely on Point objects).  They must agree *exactly*, also for points placed on fence
edges and polygon vertices, where one ulp decides: that is what "exact as before" means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon

import geofence
from geofence import FenceIndex, Site, kernel
from geofence.projection import WGS84_A, WGS84_E2, from_local_m, to_local_m
from geofence.reference import local_frame_origin
from geofence.synthetic import make_city_sites, random_points

IntArray = npt.NDArray[np.intp]
_DEG = np.pi / 180.0


def local_xy(lon: float, lat: float, lon0: float, lat0: float) -> tuple[float, float]:
    """geofence.projection.local_m_arrays for one pair, in Python floats."""
    phi = (lat + lat0) * (0.5 * _DEG)
    c = math.cos(phi)
    s2 = math.sin(phi)
    s2 = s2 * s2 * -WGS84_E2 + 1.0
    w = math.sqrt(s2)
    x = (lon - lon0) * c / w * (WGS84_A * _DEG)
    y = (lat - lat0) / (w * s2) * (WGS84_A * (1.0 - WGS84_E2) * _DEG)
    return x, y


def scalar_local_query(
    sites: Sequence[Site], lon: Sequence[float], lat: Sequence[float], *, margin_m: float
) -> list[tuple[int, int]]:
    """Every (point, site) pair, one at a time: the index's semantics with no index."""
    local = []
    for site in sites:
        lon0, lat0 = local_frame_origin(site)
        poly = None
        if site.radius_m is None:
            poly = shapely.transform(
                site.geometry,
                lambda c, lon0=lon0, lat0=lat0: np.column_stack(
                    to_local_m(c[:, 0], c[:, 1], lon0, lat0)
                ),
            )
        local.append((lon0, lat0, poly))
    out = []
    for i, (px, py) in enumerate(zip(lon, lat, strict=True)):
        if not (math.isfinite(px) and math.isfinite(py)):
            continue
        for j, site in enumerate(sites):
            lon0, lat0, poly = local[j]
            x, y = local_xy(px, py, lon0, lat0)
            if poly is None:
                assert site.radius_m is not None
                reach = site.radius_m + margin_m
                hit = x * x + y * y <= reach * reach
            elif margin_m > 0.0:
                hit = bool(shapely.dwithin(poly, Point(x, y), margin_m))
            else:
                hit = bool(poly.contains(Point(x, y)))
            if hit:
                out.append((i, j))
    return out


def pairs_list(p: IntArray) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in p.T.tolist()]


def assert_three_agree(
    index: FenceIndex, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64], margin: float
) -> IntArray:
    got = index.query(lon, lat, margin_m=margin)
    ref = index._query_numpy(lon, lat, margin_m=margin)
    assert got.dtype == np.intp
    assert got.shape[0] == 2
    assert got.flags.c_contiguous
    assert np.array_equal(got, ref), "compiled != numpy"
    assert pairs_list(got) == scalar_local_query(
        index.sites, lon.tolist(), lat.tolist(), margin_m=margin
    ), "compiled != scalar loop"
    return got


def circle(site_id: str, lon: float, lat: float, r: float) -> Site:
    return Site(site_id=site_id, client_id="C", name=site_id, geometry=Point(lon, lat), radius_m=r)


# ---------------------------------------------------------------------------------------------
# Hypothesis: fences at several latitudes, points on and next to their edges


@st.composite
def edge_case(
    draw: st.DrawFn,
) -> tuple[list[Site], npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    lat0 = draw(st.sampled_from([0.0, -33.45, 55.75, 59.9, 70.0]) | st.floats(-75, 75))
    lon0 = draw(st.floats(-170.0, 170.0))
    sites: list[Site] = []
    xs: list[float] = []
    ys: list[float] = []
    extra_lonlat: list[tuple[float, float]] = []
    # margins the tracker uses: 0 (in) and 15 m (exit margin); the edge points below sit on
    # the fence grown by the margin as well as on the fence
    margin = draw(st.sampled_from([0.0, 15.0]))
    for j in range(draw(st.integers(1, 4))):
        ox, oy = draw(st.floats(-150, 150)), draw(st.floats(-150, 150))
        clon, clat = (float(v) for v in from_local_m(ox, oy, lon0, lat0))
        if draw(st.booleans()):
            r = draw(st.sampled_from([25.0, 80.0]) | st.floats(1.0, 2000.0))
            sites.append(circle(f"S{j}", clon, clat, r))
            for a in draw(st.lists(st.floats(0, 2 * np.pi), min_size=1, max_size=5)):
                for reach in (r, r + margin):
                    xs.append(ox + reach * math.cos(a))
                    ys.append(oy + reach * math.sin(a))
        else:
            k = draw(st.integers(3, 8))
            angles = sorted(
                draw(st.lists(st.floats(0, 2 * np.pi), min_size=k, max_size=k, unique=True))
            )
            radii = draw(st.lists(st.floats(5.0, 300.0), min_size=k, max_size=k))
            xy = np.array(
                [(r * math.cos(a), r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]
            )
            if not Polygon(xy).is_valid or Polygon(xy).area < 1.0:
                continue
            plon, plat = from_local_m(xy[:, 0], xy[:, 1], clon, clat)
            geom = Polygon(np.column_stack((plon, plat)))
            if not geom.is_valid:
                continue
            sites.append(Site(site_id=f"S{j}", client_id="C", name="p", geometry=geom))
            # the vertices themselves: exactly on the boundary in the local frame too
            extra_lonlat.extend(zip(plon.tolist(), plat.tolist(), strict=True))
            for (x1, y1), (x2, y2) in zip(xy, np.roll(xy, -1, axis=0), strict=True):
                t = draw(st.floats(0, 1))
                ex, ey = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
                nx_, ny_ = (y2 - y1), -(x2 - x1)
                norm = math.hypot(nx_, ny_) or 1.0
                for off in (0.0, margin):  # on the edge, and on the margin's offset of it
                    xs.append(ox + ex + off * nx_ / norm)
                    ys.append(oy + ey + off * ny_ / norm)
    jitter = st.sampled_from([0.0, 0.0, -1e-9, 1e-9, -1e-6, 1e-6, -0.01, 0.01]) | st.floats(-3, 3)
    xs = [x + draw(jitter) for x in xs]
    ys = [y + draw(jitter) for y in ys]
    plon, plat = from_local_m(np.array(xs), np.array(ys), lon0, lat0)
    lon = np.concatenate((plon, [p[0] for p in extra_lonlat], [np.nan, lon0, np.inf]))
    lat = np.concatenate((plat, [p[1] for p in extra_lonlat], [lat0, np.nan, lat0]))
    perm = draw(st.permutations(range(len(lon))))
    return sites, lon[list(perm)], lat[list(perm)], margin


@settings(max_examples=200, deadline=None)
@given(case=edge_case())
def test_compiled_equals_numpy_equals_scalar_loop_at_edges(
    case: tuple[list[Site], npt.NDArray[np.float64], npt.NDArray[np.float64], float],
) -> None:
    sites, lon, lat, margin = case
    index = FenceIndex.build(sites, margin_m=15.0)
    assert_three_agree(index, lon, lat, margin)


@pytest.mark.parametrize(
    ("lon0", "lat0"), [(37.6173, 55.7558), (-78.5, 0.0), (10.75, 59.9), (-70.65, -33.45)]
)
@pytest.mark.parametrize("margin", [0.0, 15.0])
def test_city_batches_equal_numpy(lon0: float, lat0: float, margin: float) -> None:
    """A city at several latitudes: bulk (the numpy box filter on) and small batches (off)."""
    sites = make_city_sites(400, centre_lon=lon0, centre_lat=lat0, box_m=8_000.0, seed=5)
    index = FenceIndex.build(sites, margin_m=15.0)
    lon, lat = random_points(60_000, centre_lon=lon0, centre_lat=lat0, box_m=8_000.0, seed=6)
    # half the points near a site's centre, as the fleet's fixes are
    centres = np.array([local_frame_origin(s) for s in sites])
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(sites), 30_000)
    r, a = 120.0 * np.sqrt(rng.random(30_000)), rng.uniform(0, 2 * np.pi, 30_000)
    lon[:30_000], lat[:30_000] = from_local_m(
        r * np.cos(a), r * np.sin(a), centres[pick, 0], centres[pick, 1]
    )
    lon[::997] = np.nan
    got = index.query(lon, lat, margin_m=margin)
    assert got.shape[1] > 5_000  # real hits, circles and polygons
    assert np.array_equal(got, index._query_numpy(lon, lat, margin_m=margin))
    for k in range(0, 3_000, 300):  # batches below the numpy box filter's threshold
        x, y = lon[k : k + 300], lat[k : k + 300]
        assert np.array_equal(
            index.query(x, y, margin_m=margin), index._query_numpy(x, y, margin_m=margin)
        )


# ---------------------------------------------------------------------------------------------
# the polygon test's uncertain cases go to shapely


def test_points_on_polygon_vertices_and_edges_are_left_to_shapely() -> None:
    """Exactly on the boundary: not *in* (contains), but within any margin (dwithin)."""
    square = np.array([[0.0, 0.0, 10.0, 0.0], [10.0, 0.0, 10.0, 10.0],
                       [10.0, 10.0, 0.0, 10.0], [0.0, 10.0, 0.0, 0.0]])  # fmt: skip
    on = [(0.0, 0.0), (10.0, 10.0), (5.0, 0.0), (10.0, 3.0), (0.0, 7.5)]
    for x, y in on:
        assert kernel._polygon_verdict(square, 0, 4, x, y, 0.0) == kernel._PENDING
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 5.0, 0.0) == kernel._IN
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 10.5, 0.0) == kernel._OUT
    assert kernel._polygon_verdict(square, 0, 4, 10.0, 12.0, 0.0) == kernel._OUT
    # margin: decided unless the distance is within DIST_TOL_M of it
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 12.0, 3.0) == kernel._IN
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 13.5, 3.0) == kernel._OUT
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 13.0, 3.0) == kernel._PENDING
    assert kernel._polygon_verdict(square, 0, 4, 5.0, 5.0, 3.0) == kernel._IN


def test_query_at_polygon_vertices_goes_through_the_shapely_path() -> None:
    geom = MultiPolygon(
        [
            Polygon([(37.60, 55.70), (37.601, 55.70), (37.601, 55.701), (37.60, 55.701)]),
            Polygon([(37.603, 55.70), (37.604, 55.70), (37.6035, 55.7012)]),
        ]
    )
    site = Site(site_id="P", client_id="C", name="P", geometry=geom)
    index = FenceIndex.build([site], margin_m=15.0)
    vx, vy = shapely.get_coordinates(geom).T
    lon = np.concatenate((vx, [37.6005, 37.6035, 37.6012]))
    lat = np.concatenate((vy, [55.7005, 55.7004, 55.7005]))
    g = index._grid
    assert g is not None
    _, pend, _ = kernel.query_pairs(
        lon, lat, g.lon_origin, g.lat_origin, g.inv_dlon, g.inv_dlat, g.nx, g.ny,
        g.offsets, g.items, index._item_box, index._site_table, index._edges, 0.0,
    )  # fmt: skip
    assert len(pend) == len(vx)  # every vertex, and nothing else, was uncertain
    inside = assert_three_agree(index, lon, lat, 0.0)
    assert inside[0].tolist() == [len(vx), len(vx) + 1]  # the vertices are on the boundary
    near = assert_three_agree(index, lon, lat, 15.0)
    assert near[0].tolist() == list(range(len(lon)))  # all within 15 m


# ---------------------------------------------------------------------------------------------
# warm-up


def test_warm_up_compiles_every_variant_the_engine_uses() -> None:
    geofence.warm_up()
    before = len(kernel.query_pairs.signatures)
    assert before >= 2  # writable and read-only coordinates
    sites = make_city_sites(50, seed=1)
    index = FenceIndex.build(sites, margin_m=15.0)
    lon, lat = random_points(2_000, seed=2)
    index.query(lon, lat)
    index.query(lon.astype(np.float32), lat.tolist(), margin_m=15.0)
    lon.setflags(write=False)
    lat.setflags(write=False)
    index.query(lon, lat, margin_m=15.0)
    assert len(kernel.query_pairs.signatures) == before, "a query compiled a new variant"

"""The vectorised index gives the brute-force answer.

"Exact" here means: the set of (point, site) pairs equals the brute force of
:mod:`geofence.reference` (Vincenty distance for circles; ``shapely.contains`` on Points in the
site's local frame for polygons), except pairs whose point lies within ``TOL_M`` of the (grown)
fence boundary, where the local plane and the geodesic may disagree by their documented error
(< 2e-7 m for fences up to 100 m).  Random points practically never fall in that band, so in
practice the sets are identical; the tests say how many pairs were excused.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon

from geofence import (
    FenceIndex,
    FenceIndexError,
    FenceIndexHolder,
    MarginTooLargeError,
    Site,
    StaleIndexError,
    load_sites_geojson,
)
from geofence.projection import from_local_m, geodesic_distance_m, to_local_m
from geofence.reference import brute_force, scalar_query
from geofence.synthetic import make_city_sites, random_points

TOL_M = 1e-6
MOSCOW_LON, MOSCOW_LAT = 37.6173, 55.7558

IntArray = npt.NDArray[np.intp]


def keys(pairs: IntArray, n_sites: int) -> npt.NDArray[np.int64]:
    return np.asarray(pairs[0].astype(np.int64) * n_sites + pairs[1], dtype=np.int64)


def assert_matches_brute_force(
    sites: Sequence[Site],
    got: IntArray,
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
    *,
    margin_m: float = 0.0,
    tol_m: float = TOL_M,
) -> int:
    """Compare with the brute force; return the number of pairs excused as boundary cases."""
    assert got.dtype == np.intp
    assert got.shape[0] == 2
    order = np.lexsort((got[1], got[0]))
    assert np.array_equal(order, np.arange(got.shape[1])), "pairs not sorted by point, site"
    bf = brute_force(sites, lon, lat, margin_m=margin_m)
    n = len(sites)
    k_got, k_ref = keys(got, n), keys(bf.pairs(), n)
    assert len(np.unique(k_got)) == len(k_got), "duplicate pairs"
    differ = np.setxor1d(k_got, k_ref)
    k_all = bf.point.astype(np.int64) * n + bf.site
    excused = np.isin(k_all, differ) & (np.abs(bf.slack) < tol_m)
    unexplained = np.setdiff1d(differ, k_all[excused])
    assert len(unexplained) == 0, (
        f"{len(unexplained)} pairs differ from the brute force, e.g. "
        f"{[(int(k // n), int(k % n)) for k in unexplained[:5]]}"
    )
    return int(excused.sum())


@pytest.fixture(scope="module")
def city() -> list[Site]:
    return make_city_sites(1500, seed=7)


@pytest.fixture(scope="module")
def city_index(city: list[Site]) -> FenceIndex:
    return FenceIndex.build(city, margin_m=15.0)


@pytest.mark.parametrize("margin_m", [0.0, 15.0])
def test_city_200k_points_equal_brute_force(
    city: list[Site], city_index: FenceIndex, margin_m: float
) -> None:
    lon, lat = random_points(200_000, seed=11)
    got = city_index.query(lon, lat, margin_m=margin_m)
    assert got.shape[1] > 300  # the test exercises real hits
    assert np.bincount(got[0]).max() >= 2  # and points in overlapping fences
    assert assert_matches_brute_force(city, got, lon, lat, margin_m=margin_m) == 0


@pytest.mark.slow
def test_city_1m_points_equal_brute_force(city: list[Site], city_index: FenceIndex) -> None:
    lon, lat = random_points(1_000_000, seed=12)
    got = city_index.query(lon, lat)
    assert got.shape[1] > 1_500
    assert assert_matches_brute_force(city, got, lon, lat) == 0


@pytest.mark.parametrize(
    ("lon0", "lat0"), [(-78.5, 0.0), (10.75, 59.9), (-70.65, -33.45), (151.2, -33.87)]
)
def test_correct_at_other_latitudes(lon0: float, lat0: float) -> None:
    sites = make_city_sites(300, centre_lon=lon0, centre_lat=lat0, box_m=10_000.0, seed=3)
    index = FenceIndex.build(sites, margin_m=5.0)
    lon, lat = random_points(100_000, centre_lon=lon0, centre_lat=lat0, box_m=10_000.0)
    for margin in (0.0, 5.0):
        got = index.query(lon, lat, margin_m=margin)
        assert got.shape[1] > 100
        assert_matches_brute_force(sites, got, lon, lat, margin_m=margin)


def circle(site_id: str, lon: float, lat: float, r: float) -> Site:
    return Site(site_id=site_id, client_id="C", name=site_id, geometry=Point(lon, lat), radius_m=r)


def polygon_m(site_id: str, lon0: float, lat0: float, xy: list[tuple[float, float]]) -> Site:
    arr = np.array(xy, dtype=float)
    lon, lat = from_local_m(arr[:, 0], arr[:, 1], lon0, lat0)
    geom = Polygon(np.column_stack((lon, lat)))
    return Site(site_id=site_id, client_id="C", name=site_id, geometry=geom)


@pytest.mark.parametrize("lat0", [0.0, 55.75, 60.0, -33.0])
@pytest.mark.parametrize("radius", [25.0, 80.0, 2000.0])
def test_circle_is_a_true_radius_in_metres(lat0: float, radius: float) -> None:
    """Points 1 mm inside/outside the circle, all around it, at several latitudes."""
    index = FenceIndex.build([circle("S", 30.0, lat0, radius)])
    theta = np.linspace(0.0, 2 * np.pi, 360, endpoint=False)
    inner = from_local_m(
        (radius - 1e-3) * np.cos(theta), (radius - 1e-3) * np.sin(theta), 30.0, lat0
    )
    outer = from_local_m(
        (radius + 1e-3) * np.cos(theta), (radius + 1e-3) * np.sin(theta), 30.0, lat0
    )
    assert index.query(*inner).shape[1] == 360
    assert index.query(*outer).shape[1] == 0
    d = geodesic_distance_m(30.0, lat0, *outer)
    assert np.all(d > radius)


@pytest.mark.parametrize("lat0", [55.75, -33.0, 70.0])
def test_large_polygon_edges_are_straight_in_the_local_frame(lat0: float) -> None:
    """A 20 km triangle (far beyond a building; its edges are straight in the local frame and
    bow by up to ~6 m against straight lon/lat lines): points 1 cm either side of its edges
    match the brute force, with fine cells and the box pre-filter active."""
    lon0 = 37.6
    tri = [(-10_000.0, -10_000.0), (10_000.0, 10_000.0), (10_000.0, -10_000.0)]
    site = polygon_m("T", lon0, lat0, tri)
    west, south, east, north = site.geometry.bounds
    c_lon, c_lat = 0.5 * (west + east), 0.5 * (south + north)
    index = FenceIndex.build([site], cell_m=25.0)
    # the site's frame is centred on its bounds; put points along each edge, in that frame
    ring = np.array(site.geometry.exterior.coords)
    vx, vy = to_local_m(ring[:, 0], ring[:, 1], c_lon, c_lat)
    t = np.linspace(0.005, 0.995, 200)
    xs, ys = [], []
    for k in range(3):
        ex, ey = vx[k + 1] - vx[k], vy[k + 1] - vy[k]
        nx, ny = -ey / np.hypot(ex, ey), ex / np.hypot(ex, ey)
        for side in (-0.01, 0.01):
            xs.append(vx[k] + t * ex + side * nx)
            ys.append(vy[k] + t * ey + side * ny)
    lon, lat = from_local_m(np.concatenate(xs), np.concatenate(ys), c_lon, c_lat)
    got = index.query(lon, lat)
    assert got.shape[1] == 3 * 200  # one side of every edge is inside
    assert assert_matches_brute_force([site], got, lon, lat) == 0


def test_overlapping_fences_return_every_site() -> None:
    lon0, lat0 = MOSCOW_LON, MOSCOW_LAT
    c_lon, c_lat = from_local_m(30.0, 0.0, lon0, lat0)
    sites = [
        circle("A", lon0, lat0, 50.0),
        polygon_m("B", lon0, lat0, [(-10, -10), (60, -10), (60, 60), (-10, 60)]),
        circle("C", float(c_lon), float(c_lat), 40.0),
        circle("far", lon0 + 0.1, lat0, 50.0),
    ]
    index = FenceIndex.build(sites)
    lon, lat = from_local_m(np.array([5.0, 200.0, 0.0]), np.array([5.0, 0.0, -45.0]), lon0, lat0)
    got = index.query(lon, lat)
    assert got.tolist() == [[0, 0, 0, 2], [0, 1, 2, 0]]


def test_nan_and_empty_and_outside_points_match_nothing(city_index: FenceIndex) -> None:
    site = city_index.sites[0].geometry.representative_point()
    lon = np.array([np.nan, site.x, 0.0, site.x, np.inf])
    lat = np.array([site.y, np.nan, 0.0, site.y, site.y])
    got = city_index.query(lon, lat)
    assert set(got[0].tolist()) == {3}
    assert city_index.query(np.empty(0), np.empty(0)).shape == (2, 0)
    empty = FenceIndex.build([])
    assert empty.query(lon, lat).shape == (2, 0)
    with pytest.raises(ValueError, match="differ in length"):
        city_index.query(np.zeros(3), np.zeros(2))


def test_margin_beyond_build_margin_is_refused(city_index: FenceIndex) -> None:
    with pytest.raises(MarginTooLargeError, match=r"margin_m=20"):
        city_index.query(np.zeros(1), np.zeros(1), margin_m=20.0)


def test_distance_is_signed_metres_to_the_boundary() -> None:
    lon0, lat0 = MOSCOW_LON, MOSCOW_LAT
    sites = [
        circle("A", lon0, lat0, 50.0),
        polygon_m("B", lon0, lat0, [(100, 0), (200, 0), (200, 100), (100, 100)]),
    ]
    index = FenceIndex.build(sites)
    x = np.array([0.0, 30.0, 80.0, 150.0, 110.0, 150.0, 250.0])
    y = np.array([0.0, 40.0, 0.0, 50.0, 50.0, -20.0, 50.0])
    site = np.array([0, 0, 0, 1, 1, 1, 1])
    lon, lat = from_local_m(x, y, lon0, lat0)
    d = index.distance_m(lon, lat, site)
    # polygon site B has its own frame origin (its centre): the offsets are the same to < 1 mm
    np.testing.assert_allclose(d, [-50.0, 0.0, 30.0, -50.0, -10.0, 20.0, 50.0], atol=1e-3)
    assert index.distance_m(np.nan, lat0, 0) == np.inf
    with pytest.raises(IndexError):
        index.distance_m(lon0, lat0, 2)


def test_query_with_margin_agrees_with_distance(city: list[Site], city_index: FenceIndex) -> None:
    lon, lat = random_points(100_000, seed=5)
    near = city_index.query(lon, lat, margin_m=15.0)
    d = city_index.distance_m(lon[near[0]], lat[near[0]], near[1])
    assert np.all(d <= 15.0 + 1e-9)
    inside = city_index.query(lon, lat)
    d0 = city_index.distance_m(lon[inside[0]], lat[inside[0]], inside[1])
    assert np.all(d0 <= 0.0)
    # every strict hit is also a margin hit
    assert np.isin(keys(inside, len(city)), keys(near, len(city))).all()


def test_build_refuses_broken_site_lists() -> None:
    with pytest.raises(FenceIndexError, match="duplicate site_id 'A'"):
        FenceIndex.build([circle("A", 37.6, 55.7, 10.0), circle("A", 37.7, 55.7, 10.0)])
    with pytest.raises(FenceIndexError, match="latitude beyond"):
        FenceIndex.build([circle("P", 0.0, 89.0, 10.0)])
    with pytest.raises(FenceIndexError, match="180"):
        FenceIndex.build([circle("W", -179.9, 0.0, 10.0), circle("E", 179.9, 0.0, 10.0)])
    with pytest.raises(FenceIndexError, match="margin_m"):
        FenceIndex.build([], margin_m=-1.0)


def test_index_is_built_from_loader_output() -> None:
    text = """{"type": "FeatureCollection", "features": [
      {"type": "Feature", "geometry": {"type": "Point", "coordinates": [37.6, 55.75]},
       "properties": {"site_id": "S1", "client_id": "C1", "name": "a", "radius_m": 30}},
      {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
         [[[37.61, 55.75], [37.612, 55.75], [37.612, 55.751], [37.61, 55.75]]],
         [[[37.62, 55.75], [37.622, 55.75], [37.622, 55.751], [37.62, 55.75]]]]},
       "properties": {"site_id": "S2", "client_id": "C1", "name": "b"}}]}"""
    index = FenceIndex.build(load_sites_geojson(text).sites)
    lon = np.array([37.6, 37.6115, 37.6215, 37.615])
    lat = np.array([55.75, 55.7501, 55.7501, 55.7505])
    assert index.query(lon, lat).tolist() == [[0, 1, 2], [0, 1, 1]]
    assert index.index_of("S2") == 1


def test_index_arrays_are_read_only(city_index: FenceIndex) -> None:
    assert city_index.stats.sites == 1500
    assert city_index.stats.array_bytes > 0
    with pytest.raises(TypeError):
        FenceIndex()


# ---------------------------------------------------------------------------------------------
# Hypothesis: vectorised vs scalar loop on random fences and points near their edges


@st.composite
def fence_and_points(draw: st.DrawFn) -> tuple[list[Site], list[float], list[float], float]:
    lat0 = draw(st.sampled_from([0.0, 33.0, -33.0, 55.75, 60.0, 70.0]) | st.floats(-70, 70))
    lon0 = draw(st.floats(-170.0, 170.0))
    n = draw(st.integers(1, 4))
    sites: list[Site] = []
    edge_xy: list[tuple[float, float]] = []
    for j in range(n):
        ox, oy = draw(st.floats(-100, 100)), draw(st.floats(-100, 100))
        clon, clat = (float(v) for v in from_local_m(ox, oy, lon0, lat0))
        if draw(st.booleans()):
            r = draw(st.floats(1.0, 2000.0))
            sites.append(circle(f"S{j}", clon, clat, r))
            for a in draw(st.lists(st.floats(0, 2 * np.pi), min_size=1, max_size=6)):
                edge_xy.append((ox + r * np.cos(a), oy + r * np.sin(a)))
        else:
            k = draw(st.integers(3, 9))
            angles = np.sort(draw(st.lists(st.floats(0, 2 * np.pi), min_size=k, max_size=k,
                                           unique=True)))  # fmt: skip
            radii = draw(st.lists(st.floats(5.0, 300.0), min_size=k, max_size=k))
            xy = [
                (float(r * np.cos(a)), float(r * np.sin(a)))
                for a, r in zip(angles, radii, strict=True)
            ]
            poly = Polygon(xy)
            if not poly.is_valid or poly.area < 1.0:
                continue
            lon, lat = from_local_m(np.array(xy)[:, 0], np.array(xy)[:, 1], clon, clat)
            geom = Polygon(np.column_stack((lon, lat)))
            if not geom.is_valid:
                continue
            sites.append(Site(site_id=f"S{j}", client_id="C", name="p", geometry=geom))
            for (x1, y1), (x2, y2) in zip(xy, xy[1:] + xy[:1], strict=True):
                t = draw(st.floats(0, 1))
                edge_xy.append((ox + x1 + t * (x2 - x1), oy + y1 + t * (y2 - y1)))
    margin = draw(st.sampled_from([0.0, 0.0, 3.0]))
    jitter = st.sampled_from([-1.0, -0.01, -1e-3, 1e-3, 0.01, 1.0, 10.0]) | st.floats(-30, 30)
    xs, ys = [], []
    for x, y in edge_xy:
        xs.append(x + draw(jitter))
        ys.append(y + draw(jitter))
    xs += draw(st.lists(st.floats(-2500, 2500), max_size=5))
    ys += [draw(st.floats(-2500, 2500)) for _ in range(len(xs) - len(ys))]
    lon_p, lat_p = from_local_m(np.array(xs), np.array(ys), lon0, lat0)
    return sites, list(map(float, lon_p)), list(map(float, lat_p)), margin


@settings(max_examples=150, deadline=None)
@given(case=fence_and_points())
def test_vectorised_equals_scalar_loop(
    case: tuple[list[Site], list[float], list[float], float],
) -> None:
    sites, lon, lat, margin = case
    index = FenceIndex.build(sites, margin_m=margin)
    got = index.query(np.array(lon), np.array(lat), margin_m=margin)
    want = scalar_query(sites, lon, lat, margin_m=margin)
    if set(map(tuple, got.T.tolist())) == set(want):
        return
    # the only allowed disagreements: points within the documented error of the boundary
    # (local plane vs geodesic: < 1e-4 m for radii up to 2 km below 70° latitude)
    assert_matches_brute_force(
        sites, got, np.array(lon), np.array(lat), margin_m=margin, tol_m=1e-4
    )


# ---------------------------------------------------------------------------------------------
# swap, not lock


def test_holder_swaps_and_in_flight_readers_keep_their_index() -> None:
    a = FenceIndex.build([circle("A", MOSCOW_LON, MOSCOW_LAT, 50.0)])
    b = FenceIndex.build([circle("B", MOSCOW_LON + 0.01, MOSCOW_LAT, 50.0)])
    holder = FenceIndexHolder(a)
    in_flight = holder.current
    assert holder.replace(b) is a
    assert holder.current is b
    lon, lat = np.array([MOSCOW_LON]), np.array([MOSCOW_LAT])
    assert in_flight.query(lon, lat).tolist() == [[0], [0]]  # old batch finishes on A
    assert holder.current.query(lon, lat).shape == (2, 0)  # new batches see B
    with pytest.raises(StaleIndexError):
        holder.replace(a)
    with pytest.raises(StaleIndexError):
        holder.replace(FenceIndex.build([], version=b.version))


def test_queries_during_swaps_always_see_one_whole_index() -> None:
    """A reader thread queries while a writer swaps two site lists back and forth; every
    answer equals the answer of one of the two indexes, never a mix."""
    sites_a = make_city_sites(300, box_m=5_000.0, seed=1)
    sites_b = make_city_sites(200, box_m=5_000.0, seed=2)
    lon, lat = random_points(20_000, box_m=5_000.0, seed=3)
    answers = {
        id(sites_a): FenceIndex.build(sites_a).query(lon, lat).tobytes(),
        id(sites_b): FenceIndex.build(sites_b).query(lon, lat).tobytes(),
    }
    holder = FenceIndexHolder(FenceIndex.build(sites_a))
    owner = {holder.current.version: id(sites_a)}
    swaps = 60
    done = threading.Event()
    seen: list[tuple[int, bool]] = []

    def reader() -> None:
        while not done.is_set() or len(seen) < 5:
            idx = holder.current
            got = idx.query(lon, lat).tobytes()
            seen.append((idx.version, got == answers[owner[idx.version]]))

    t = threading.Thread(target=reader, name="geofence-reader")
    t.start()
    try:
        for k in range(swaps):
            sites = sites_b if k % 2 == 0 else sites_a
            new = FenceIndex.build(sites)
            owner[new.version] = id(sites)
            holder.replace(new)
    finally:
        done.set()
        t.join(timeout=60)
    assert not t.is_alive()
    assert len({version for version, _ in seen}) >= 2  # the reader did overlap the swaps
    assert all(ok for _, ok in seen)

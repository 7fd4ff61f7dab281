"""The local metric frame measures metres on the WGS84 ellipsoid, anywhere, to the documented
precision (docs/geofence.md, "Metres on the real Earth")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.projection import (
    from_local_m,
    geodesic_distance_m,
    metres_per_degree,
    to_local_m,
)

#: (radius m, bound m) up to 60° of latitude: the documented error of the local frame
BOUNDS_TO_60 = [(100.0, 2e-7), (500.0, 2e-6), (2000.0, 3e-5)]


def test_vincenty_reference_matches_known_arcs() -> None:
    # one degree along the equator and along a meridian at the equator (WGS84 textbook values)
    assert float(geodesic_distance_m(0.0, 0.0, 1.0, 0.0)) == pytest.approx(111_319.491, abs=1e-3)
    assert float(geodesic_distance_m(0.0, 0.0, 0.0, 1.0)) == pytest.approx(110_574.389, abs=1e-3)
    # and the ellipsoid's own local scale agrees with the reference over a short arc
    kx, ky = metres_per_degree(55.75)
    d = float(geodesic_distance_m(37.6, 55.75, 37.6 + 1e-4, 55.75))
    assert d == pytest.approx(float(kx) * 1e-4, rel=1e-8)
    d = float(geodesic_distance_m(37.6, 55.75 - 5e-5, 37.6, 55.75 + 5e-5))
    assert d == pytest.approx(float(ky) * 1e-4, rel=1e-8)


@pytest.mark.parametrize("lat0", [0.0, 33.0, -33.0, 55.75, 60.0, -60.0])
@pytest.mark.parametrize(("radius", "bound"), BOUNDS_TO_60)
def test_local_frame_distance_is_geodesic(lat0: float, radius: float, bound: float) -> None:
    theta = np.linspace(0.0, 2 * np.pi, 721)
    lon, lat = from_local_m(radius * np.cos(theta), radius * np.sin(theta), 37.6, lat0)
    geodesic = geodesic_distance_m(37.6, lat0, lon, lat)
    assert np.abs(geodesic - radius).max() < bound


@given(
    lat0=st.floats(-80.0, 80.0),
    lon0=st.floats(-179.0, 179.0),
    x=st.floats(-5000.0, 5000.0),
    y=st.floats(-5000.0, 5000.0),
)
def test_from_local_inverts_to_local(lat0: float, lon0: float, x: float, y: float) -> None:
    lon, lat = from_local_m(x, y, lon0, lat0)
    bx, by = to_local_m(lon, lat, lon0, lat0)
    assert abs(float(bx) - x) < 1e-8
    assert abs(float(by) - y) < 1e-8


def test_one_city_wide_projection_would_be_wrong_by_decimetres() -> None:
    """Why each site has its own frame: an equirectangular projection around the city centre
    measures a 50 m circle 40 km north of the centre wrong by ~0.46 m east-west; the site's own
    frame is right to far below a micrometre."""
    centre_lon, centre_lat = 37.6173, 55.7558
    site_lon, site_lat = from_local_m(0.0, 40_000.0, centre_lon, centre_lat)
    east_lon, east_lat = from_local_m(50.0, 0.0, site_lon, site_lat)  # 50 m east of the site
    true_d = float(geodesic_distance_m(site_lon, site_lat, east_lon, east_lat))
    kx0, _ = metres_per_degree(centre_lat)
    city_d = float((east_lon - site_lon) * kx0)
    x, y = to_local_m(east_lon, east_lat, site_lon, site_lat)
    site_d = float(np.hypot(x, y))
    assert 0.4 < abs(city_d - true_d) < 0.5
    assert abs(site_d - true_d) < 1e-6

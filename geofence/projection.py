"""Metres on the WGS84 ellipsoid, in a local frame around each site.

Why a frame per site and not one projection for the whole index: a single equirectangular
projection around the city centre gets the east-west scale wrong by ``tan(lat) * dy / R`` at a
site ``dy`` north of the centre — at Moscow (55.75°N) and 40 km that is 0.92 %, i.e. 0.46 m on a
50 m circle and 18 m on a 2 km one.  Around each site's own origin the frame is exact to second
order, so its error depends only on the size of the fence, never on where the fence is.

The frame (``to_local_m``) maps (lon, lat) to east/north metres from an origin (lon0, lat0)::

    x = (lon - lon0) * N(phi_m) * cos(phi_m) * pi/180
    y = (lat - lat0) * M(phi_m) * pi/180          with phi_m = (lat + lat0) / 2

N and M are the ellipsoid's prime-vertical and meridional radii of curvature.  Evaluating them at
the mid latitude (and not at the origin) cancels the first-order error term; the distance from the
origin then differs from the true geodesic distance by less than 2e-7 m at 100 m, 2e-6 m at
500 m and 3e-5 m at 2 km up to 60° of latitude (7e-5 m at 70°, 3e-4 m at 80°; measured against
:func:`geodesic_distance_m`, see docs/geofence.md and tests/test_geofence_projection.py).

:func:`geodesic_distance_m` (Vincenty's inverse formula, ≈ 0.1 mm) is the reference the tests and
docs measure against; it is not used on the hot path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: WGS84 semi-major axis (m) and flattening.
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
WGS84_B = WGS84_A * (1.0 - WGS84_F)

_DEG = np.pi / 180.0

FloatArray = npt.NDArray[np.float64]
ArrayLike = FloatArray | float


def metres_per_degree(lat_deg: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """East-west and north-south metres per degree at a latitude (the local scale factors)."""
    phi = np.asarray(lat_deg, dtype=np.float64) * _DEG
    s = np.sin(phi)
    w2 = 1.0 - WGS84_E2 * s * s
    w = np.sqrt(w2)
    n = WGS84_A / w  # prime vertical radius of curvature
    m = WGS84_A * (1.0 - WGS84_E2) / (w2 * w)  # meridional radius of curvature
    return n * np.cos(phi) * _DEG, m * _DEG


def to_local_m(
    lon: ArrayLike, lat: ArrayLike, lon0: ArrayLike, lat0: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """East/north metres of (lon, lat) from the origin (lon0, lat0); broadcasts like numpy.

    The same formula as ``metres_per_degree`` at the mid latitude, written with in-place
    operations: on the hot path it runs once per candidate pair.
    """
    lat_a = np.asarray(lat, dtype=np.float64)
    lat0_a = np.asarray(lat0, dtype=np.float64)
    lon_a = np.asarray(lon, dtype=np.float64)
    lon0_a = np.asarray(lon0, dtype=np.float64)
    if lat_a.ndim and lat0_a.ndim and lon_a.ndim and lon0_a.ndim:
        return local_m_arrays(lon_a, lat_a, lon0_a, lat0_a)
    x, y = local_m_arrays(
        np.atleast_1d(lon_a), np.atleast_1d(lat_a), np.atleast_1d(lon0_a), np.atleast_1d(lat0_a)
    )
    shape = np.broadcast_shapes(lon_a.shape, lat_a.shape, lon0_a.shape, lat0_a.shape)
    return x.reshape(shape), y.reshape(shape)


def local_m_arrays(
    lon: FloatArray, lat: FloatArray, lon0: FloatArray, lat0: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """:func:`to_local_m` for float64 arrays (at least 1-d), with no conversions: the hot path."""
    phi = lat + lat0
    phi *= 0.5 * _DEG
    c = np.cos(phi)
    s2 = np.sin(phi, out=phi)
    s2 *= s2
    s2 *= -WGS84_E2
    s2 += 1.0  # w^2 = 1 - e^2 sin^2(phi)
    w = np.sqrt(s2)
    x = lon - lon0
    x *= c
    x /= w
    x *= WGS84_A * _DEG  # dlon * N cos(phi) * pi/180
    w *= s2  # w^3
    y = lat - lat0
    y /= w
    y *= WGS84_A * (1.0 - WGS84_E2) * _DEG  # dlat * M * pi/180
    return x, y


def from_local_m(
    x: ArrayLike, y: ArrayLike, lon0: ArrayLike, lat0: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`to_local_m` (fixed-point iteration; exact to ~1e-9 m within 100 km).

    Used to place test points and fence vertices at chosen metric offsets from an origin.
    """
    x_a = np.asarray(x, dtype=np.float64)
    y_a = np.asarray(y, dtype=np.float64)
    lat0_a = np.asarray(lat0, dtype=np.float64)
    kx, ky = metres_per_degree(lat0_a)
    lat = lat0_a + y_a / ky
    lon = np.asarray(lon0, dtype=np.float64) + x_a / kx
    for _ in range(6):
        kx, ky = metres_per_degree(0.5 * (lat + lat0_a))
        lat = lat0_a + y_a / ky
        lon = lon0 + x_a / kx
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def geodesic_distance_m(
    lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> FloatArray:
    """Ellipsoidal distance by Vincenty's inverse formula, vectorised (reference only).

    Accurate to ~0.1 mm; converges for all pairs that are not nearly antipodal, which is all a
    geofence ever sees.
    """
    lam_l = (np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64)) * _DEG
    u1 = np.arctan((1.0 - WGS84_F) * np.tan(np.asarray(lat1, dtype=np.float64) * _DEG))
    u2 = np.arctan((1.0 - WGS84_F) * np.tan(np.asarray(lat2, dtype=np.float64) * _DEG))
    lam_l, u1, u2 = np.broadcast_arrays(lam_l, u1, u2)
    su1, cu1, su2, cu2 = np.sin(u1), np.cos(u1), np.sin(u2), np.cos(u2)
    lam = lam_l.copy()
    sin_sigma = cos_sigma = sigma = cos2_alpha = cos_2sm = np.zeros_like(lam)
    for _ in range(200):
        sl, cl = np.sin(lam), np.cos(lam)
        sin_sigma = np.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        cos_sigma = su1 * su2 + cu1 * cu2 * cl
        sigma = np.arctan2(sin_sigma, cos_sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            sin_alpha = np.where(sin_sigma == 0.0, 0.0, cu1 * cu2 * sl / sin_sigma)
            cos2_alpha = 1.0 - sin_alpha * sin_alpha
            cos_2sm = np.where(cos2_alpha == 0.0, 0.0, cos_sigma - 2.0 * su1 * su2 / cos2_alpha)
        c = WGS84_F / 16.0 * cos2_alpha * (4.0 + WGS84_F * (4.0 - 3.0 * cos2_alpha))
        lam_prev = lam
        lam = lam_l + (1.0 - c) * WGS84_F * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm))
        )
        if np.all(np.abs(lam - lam_prev) < 1e-13):
            break
    u_sq = cos2_alpha * (WGS84_A**2 - WGS84_B**2) / WGS84_B**2
    a_ = 1.0 + u_sq / 16384.0 * (4096.0 + u_sq * (-768.0 + u_sq * (320.0 - 175.0 * u_sq)))
    b_ = u_sq / 1024.0 * (256.0 + u_sq * (-128.0 + u_sq * (74.0 - 47.0 * u_sq)))
    d_sigma = (
        b_
        * sin_sigma
        * (
            cos_2sm
            + b_
            / 4.0
            * (
                cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm)
                - b_ / 6.0 * cos_2sm * (-3.0 + 4.0 * sin_sigma**2) * (-3.0 + 4.0 * cos_2sm**2)
            )
        )
    )
    return np.asarray(WGS84_B * a_ * (sigma - d_sigma), dtype=np.float64)

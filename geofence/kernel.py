"""The compiled query: grid lookup, box filter and local-frame fence test in one pass per point.

Why compiled: the numpy query (:meth:`geofence.index.FenceIndex._query_numpy`, kept as the
tests' reference) makes ~30 whole-array passes, each streaming its temporaries through memory,
and pays numpy's per-call overhead ~60 times per batch; on 1,000-point batches that overhead
*is* the cost.  Here one loop reads each point's 16 bytes once and writes only the pairs.

Exactness: the arithmetic is a transcription of the numpy path, operation for operation and in
the same order (numba compiles without fastmath, so IEEE rounding is the same, and ``math.sin``
/ ``math.cos`` are the same libm calls numpy makes for float64 on this platform; the tests
compare the two on random points *at* fence edges).  The grid clip reproduces ``np.fmax`` /
``np.fmin`` (NaN lands on cell 0 of the empty ring).  Most circle pairs need no trigonometry
at all: measured with the origin's fixed metres-per-degree, a distance is within a factor known
at build time (``SITE_LO``/``SITE_HI``, ~1e-5 for a city fence, widened by 1e-9) of the local
frame's, so a point farther than that factor from the edge is decided without the exact frame,
and the exact frame's answer cannot differ; the others take the transcribed path.  A polygon
pair whose point is, by the same bound, outside the polygon's local bounds grown by the margin
is out without the exact frame.

Polygons are decided here too, on the same local-frame vertices shapely holds, with the same
semantics: without a margin, *strictly* inside (``contains_xy``: the boundary is outside); with
one, distance ≤ margin (``dwithin``).  Point-in-polygon is a crossing count whose one inexact
step, the side of an edge the point is on, is a 2×2 determinant checked against Shewchuk's
forward error bound: when the bound cannot certify its sign (the point is within ~1e-13 m of
an edge's line, inside the edge's box) the pair comes back *pending* and shapely decides it,
exactly as the numpy path does.  With a margin, a computed distance within ``DIST_TOL_M`` of
the margin is pending too (both ours and GEOS's distances are within ~1e-11 m of the truth).
Random points are never pending; points placed on a vertex or an axis-parallel edge are.

Two passes, as the NMEA kernel does: a count pass (the point's cell and its candidate count)
bounds the number of pairs and lists the points with any candidate; the fill pass visits only
those and writes the pairs, and the answer is copied out at its exact length.

Compiled with ``cache=True``: the first process after an install or an edit pays the compile
(~10 s on a loaded machine; :func:`geofence.warm_up` does it at start), later ones load the
machine code from numba's cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from geofence.projection import WGS84_A, WGS84_E2

_DEG = np.pi / 180.0
#: The constants of :func:`geofence.projection.local_m_arrays`, computed the same way
#: (numba freezes module globals as compile-time constants).
_HALF_DEG = float(0.5 * _DEG)
_KX = float(WGS84_A * _DEG)
_KY = float(WGS84_A * (1.0 - WGS84_E2) * _DEG)
_E2 = float(WGS84_E2)

#: Columns of the per-site table (one 112-byte row per site; the sites' boxes sit beside the
#: grid's lists, ``item_box``, read in order).
(
    SITE_LON0, SITE_LAT0, SITE_RADIUS, SITE_E0, SITE_E1, SITE_KX, SITE_KY, SITE_LO, SITE_HI,
    SITE_REL, SITE_X0, SITE_Y0, SITE_X1, SITE_Y1,
) = range(14)  # fmt: skip
#: ``SITE_E0:SITE_E1`` is a polygon's range of rows in the edge table (empty for a circle);
#: float64 holds these integers exactly.  ``SITE_KX``, ``SITE_KY``: metres per degree at the
#: origin; ``SITE_LO``, ``SITE_HI``: squared bounds of (true distance / distance measured with
#: those fixed scales) anywhere in the site's box, widened by 1e-9; ``SITE_REL``: the same as
#: one relative bound per coordinate.  ``SITE_X0:SITE_Y1``: a polygon's local-frame bounds.
SITE_COLUMNS = 14
#: Columns of the edge table: one row per polygon edge in the site's local frame (metres).
EDGE_AX, EDGE_AY, EDGE_BX, EDGE_BY = range(4)

#: Certifies the sign of a 2x2 determinant a*b - c*d computed in float64 from differences of
#: inputs: Shewchuk's ccwerrboundA = (3 + 16 eps) eps, eps = 2**-53.
_ORIENT_BOUND = (3.0 + 16.0 * 2.0**-53) * 2.0**-53
#: A computed distance this close to the margin is left to shapely (metres).
DIST_TOL_M = 1e-6

#: Verdicts of :func:`_polygon_verdict`.
_OUT, _IN, _PENDING = 0, 1, 2


@njit(cache=True, nogil=True)
def _polygon_verdict(edges: Any, e0: int, e1: int, x: float, y: float, margin_m: float) -> int:
    """Is (x, y) in the polygon whose edges are ``edges[e0:e1]`` (see the module docstring)?"""
    cross = False
    pending = False
    d2min = np.inf
    for e in range(e0, e1):
        ax = edges[e, EDGE_AX]
        ay = edges[e, EDGE_AY]
        bx = edges[e, EDGE_BX]
        by = edges[e, EDGE_BY]
        lo_x = min(ax, bx)
        hi_x = max(ax, bx)
        if (ay > y) != (by > y):
            if x < lo_x:
                cross = not cross
            elif x <= hi_x:
                left = (bx - ax) * (y - ay)
                right = (by - ay) * (x - ax)
                det = left - right
                if abs(det) <= _ORIENT_BOUND * (abs(left) + abs(right)):
                    pending = True
                elif (det > 0.0) == (by > ay):
                    cross = not cross
        elif (ay == y or by == y) and lo_x <= x <= hi_x:
            # not straddling, but touching the ray's line: the point may be on this edge
            left = (bx - ax) * (y - ay)
            right = (by - ay) * (x - ax)
            det = left - right
            if abs(det) <= _ORIENT_BOUND * (abs(left) + abs(right)):
                pending = True
        if margin_m > 0.0:
            dx = bx - ax
            dy = by - ay
            len2 = dx * dx + dy * dy
            t = 0.0
            if len2 > 0.0:
                t = ((x - ax) * dx + (y - ay) * dy) / len2
                t = min(max(t, 0.0), 1.0)
            ex = x - (ax + t * dx)
            ey = y - (ay + t * dy)
            d2min = min(d2min, ex * ex + ey * ey)
    if margin_m > 0.0:
        lo = margin_m - DIST_TOL_M
        if lo > 0.0 and d2min < lo * lo:
            return _IN
        hi = margin_m + DIST_TOL_M
        if d2min <= hi * hi:
            return _PENDING
    if pending:
        return _PENDING
    return _IN if cross else _OUT


@njit(cache=True, nogil=True)
def query_pairs(
    lon: Any,
    lat: Any,
    lon_origin: float,
    lat_origin: float,
    inv_dlon: float,
    inv_dlat: float,
    nx: int,
    ny: int,
    offsets: Any,
    items: Any,
    item_box: Any,
    site_table: Any,
    edges: Any,
    margin_m: float,
) -> tuple[Any, Any, Any]:
    """(pairs (2, K) sorted by point then site, pending positions in pairs, their local x, y
    (2, P)).

    A pair at a pending position is a polygon candidate left to the caller (dropped unless
    shapely says the point is in the fence); every other pair is a hit.
    """
    n = lon.shape[0]
    fx_max = float(nx - 1)
    fy_max = float(ny - 1)
    # count pass: each point's cell; an upper bound of the pairs; the points worth a visit
    hot_pt = np.empty(n, dtype=np.intp)
    hot_cell = np.empty(n, dtype=np.intp)
    h = 0
    bound = 0
    widest = 0
    for i in range(n):
        fx = (lon[i] - lon_origin) * inv_dlon
        fy = (lat[i] - lat_origin) * inv_dlat
        if not fx >= 0.0:  # also NaN, as np.fmax(fx, 0) does
            fx = 0.0
        if fx > fx_max:
            fx = fx_max
        if not fy >= 0.0:
            fy = 0.0
        if fy > fy_max:
            fy = fy_max
        cell = int(fy) * nx + int(fx)
        c = offsets[cell + 1] - offsets[cell]
        # without a branch: near sites, whether a point has candidates is a coin toss
        hot_pt[h] = i
        hot_cell[h] = cell
        h += c != 0
        bound += c
        widest = max(widest, c)
    buf = np.empty((2, bound), dtype=np.intp)
    survivors = np.empty(widest, dtype=np.intp)
    pend_pos = np.empty(0, dtype=np.intp)
    pend_xy = np.empty((2, 0), dtype=np.float64)
    k = 0
    p = 0
    for q in range(h):
        i = hot_pt[q]
        cell = hot_cell[q]
        x_i = lon[i]
        y_i = lat[i]
        # the sites' padded boxes, stored beside the cell's list (a rejected candidate costs no
        # visit to its site's row), tested without branches: ~2/3 of the candidates fail, in
        # no predictable pattern (NaN fails every comparison)
        m = 0
        for j in range(offsets[cell], offsets[cell + 1]):
            ok = (
                (x_i >= item_box[j, 0])
                & (x_i <= item_box[j, 2])
                & (y_i >= item_box[j, 1])
                & (y_i <= item_box[j, 3])
            )
            survivors[m] = j
            m += ok
        for t in range(m):
            s = items[survivors[t]]
            lon0 = site_table[s, SITE_LON0]
            lat0 = site_table[s, SITE_LAT0]
            e0 = int(site_table[s, SITE_E0])
            e1 = int(site_table[s, SITE_E1])
            if e1 == e0:
                # a circle: the origin's fixed scales measure the distance within a known
                # factor over the whole box (~1e-5 for a city fence); only a point that close
                # to the edge needs the exact frame, every other one is decided here
                dx = (x_i - lon0) * site_table[s, SITE_KX]
                dy = (y_i - lat0) * site_table[s, SITE_KY]
                d2a = dx * dx + dy * dy
                reach = site_table[s, SITE_RADIUS] + margin_m
                reach = reach * reach
                if d2a * site_table[s, SITE_LO] > reach:
                    continue
                if d2a * site_table[s, SITE_HI] < reach:
                    buf[0, k] = i
                    buf[1, k] = s
                    k += 1
                    continue
            if e1 > e0:
                # a polygon: outside its local bounds (grown by the margin) by more than the
                # fixed scales' error, it is out whatever the exact frame says
                xa = (x_i - lon0) * site_table[s, SITE_KX]
                ya = (y_i - lat0) * site_table[s, SITE_KY]
                rel = site_table[s, SITE_REL]
                slack = margin_m + DIST_TOL_M
                if (
                    xa - abs(xa) * rel > site_table[s, SITE_X1] + slack
                    or xa + abs(xa) * rel < site_table[s, SITE_X0] - slack
                    or ya - abs(ya) * rel > site_table[s, SITE_Y1] + slack
                    or ya + abs(ya) * rel < site_table[s, SITE_Y0] - slack
                ):
                    continue
            # geofence.projection.local_m_arrays, operation for operation
            phi = (y_i + lat0) * _HALF_DEG
            cs = math.cos(phi)
            sn = math.sin(phi)
            w2 = sn * sn
            w2 = w2 * -_E2
            w2 = w2 + 1.0
            w = math.sqrt(w2)
            x = x_i - lon0
            x = x * cs
            x = x / w
            x = x * _KX
            w3 = w * w2
            y = y_i - lat0
            y = y / w3
            y = y * _KY
            if e1 > e0:
                verdict = _polygon_verdict(edges, e0, e1, x, y, margin_m)
                if verdict == _OUT:
                    continue
                if verdict == _PENDING:
                    if p == len(pend_pos):  # rare: grow geometrically
                        grown = np.empty(max(16, 2 * p), dtype=np.intp)
                        grown[:p] = pend_pos[:p]
                        pend_pos = grown
                        grown_xy = np.empty((2, len(grown)), dtype=np.float64)
                        grown_xy[:, :p] = pend_xy[:, :p]
                        pend_xy = grown_xy
                    pend_pos[p] = k
                    pend_xy[0, p] = x
                    pend_xy[1, p] = y
                    p += 1
            else:
                reach = site_table[s, SITE_RADIUS] + margin_m
                reach = reach * reach
                d2 = x * x
                d2 = d2 + y * y
                if not d2 <= reach:
                    continue
            buf[0, k] = i
            buf[1, k] = s
            k += 1
    out = np.empty((2, k), dtype=np.intp)
    out[:, :] = buf[:, :k]
    return out, pend_pos[:p].copy(), pend_xy[:, :p].copy()

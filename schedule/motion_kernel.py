"""The compiled motion features: :func:`schedule.motion.motion` in a handful of loops.

Why compiled: the tracker calls ``motion`` on every re-run and on many append rounds, on tracks
of a few dozen to a few thousand fixes.  The numpy version (:func:`schedule.motion.
motion_reference`, kept as the tests' reference) makes ~60 numpy calls per track; at a few
hundred fixes their per-call overhead, not the arithmetic, is the cost (docs/bench/detect.md).
Here the common track (no implausible step: nothing to drop) is one call: a pass building the
local frame and the raw jump flags, and a pass over the kept fixes for speeds, *still*, jumps
and gaps.  A track with a raw jump takes two calls around the outlier-burst rule
(:func:`schedule.motion._drop_outlier_bursts`), which stays in Python: it runs once per jump,
and its ``math.hypot`` is CPython's own algorithm, which a compiled ``math.hypot`` (libm's
``hypot``) need not match in the last bit.

Exactness: every value is a transcription of the numpy code, operation for operation and in
the same order (numba compiles without fastmath, so no contraction into FMA and no
reassociation; ``math.hypot`` here and ``np.hypot`` there are both libm's ``hypot``).  The
numpy idioms are spelled out: ``np.maximum(a, b)`` is ``a if a >= b or a != a else b``,
``np.fmax(a, b)`` is ``a if a >= b or b != b else b``, and ``searchsorted(t - w, 'right') - 1``
on the strictly increasing fix times is a pointer that only moves forward.  The one
transcendental call, the cosine of the first fix's latitude, is made by the caller with
``np.cos`` (the very call :func:`schedule.motion.local_xy` makes) and passed in, as are the
metres per degree.  tests/test_motion_kernel.py holds the two paths to equal arrays on
generated tracks (standing, driving, unknown speeds, gaps, teleports, outlier bursts, frozen
runs, duplicate positions, 0-2 fixes) and on windows of the simulated day.

Compiled with ``cache=True``: the first process after an install or an edit pays the compile
(:func:`warm_up` does it at start); later ones load the machine code from numba's cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from schedule.params import DetectionParams

#: Metres per degree of latitude: ``schedule.motion``'s ``_EARTH_R_M * _DEG``, computed the same
#: way (a test asserts the two are equal).
M_PER_DEG = 6_371_008.8 * (np.pi / 180.0)
_DEG = np.pi / 180.0


@njit(cache=True, nogil=True, inline="always")
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats (NaN propagates from either side)."""
    if a >= b or a != a:
        return a
    return b


@njit(cache=True, nogil=True, inline="always")
def _fmax(a: float, b: float) -> float:
    """``np.fmax`` of two floats (NaN only when both are)."""
    if a >= b or b != b:
        return a
    return b


@njit(cache=True, nogil=True, inline="always")
def _implausible(
    dt_raw: float,
    d: float,
    va: float,
    vb: float,
    slack: float,
    max_speed: float,
    check: float,
) -> bool:
    """One row of ``schedule.motion._step_implausible``: step of ``dt_raw`` s and ``d`` m
    between fixes with speeds ``va``, ``vb`` (NaN: unknown)."""
    dt = _maximum(dt_raw, 1e-3)
    vmax = _fmax(va, vb)
    allowed = math.inf if vmax != vmax else slack + 1.5 * vmax / 3.6 * dt
    too_fast = d / dt * 3.6 > max_speed
    jumped = (d > allowed) and (dt <= check)
    return (too_fast and (d > slack)) or jumped


#: Rows of :func:`frame`'s ``raw`` (over the track's fixes): seconds since the first fix, east
#: and north metres, reported speed (NaN: unknown), length of the step from the previous fix.
RAW_T, RAW_X, RAW_Y, RAW_V, RAW_D = range(5)
#: Rows of :func:`features`' ``cols`` (over the kept fixes): ``Motion.t_s``, ``x``, ``y``,
#: ``speed_kmh``, ``reported_kmh``; and of its ``flags``: ``still``, ``jump``, ``gap``.
OUT_T, OUT_X, OUT_Y, OUT_V, OUT_REPORTED = range(5)
FLAG_STILL, FLAG_JUMP, FLAG_GAP = range(3)
# (the rows travel as two 2-D arrays: numba boxes each returned array at ~1 µs, a tenth of a
# short track's whole cost)


@njit(cache=True, nogil=True)
def frame(
    t_us: Any,
    lon: Any,
    lat: Any,
    speed: Any,
    m_per_deg: float,
    cos_lat0: float,
    slack: float,
    max_speed: float,
    check: float,
) -> tuple[Any, Any, int]:
    """(raw, bad, number of bad steps): ``motion``'s first lines, up to the raw jump flags
    ``bad = _step_implausible(t_s, x, y, v0, p)``; ``raw`` has the ``RAW_*`` rows."""
    n = t_us.shape[0]
    raw = np.empty((5, n), dtype=np.float64)
    bad = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return raw, bad, 0
    t_s = raw[RAW_T]
    x = raw[RAW_X]
    y = raw[RAW_Y]
    v0 = raw[RAW_V]
    step = raw[RAW_D]
    t0 = t_us[0]
    lon0 = lon[0]
    lat0 = lat[0]
    for i in range(n):
        t_s[i] = float(t_us[i] - t0) / 1e6
        x[i] = (lon[i] - lon0) * m_per_deg * cos_lat0
        y[i] = (lat[i] - lat0) * m_per_deg
        s = speed[i]
        v0[i] = np.nan if s != s else s
    step[0] = np.nan
    n_bad = 0
    for i in range(1, n):
        d = math.hypot(x[i] - x[i - 1], y[i] - y[i - 1])
        step[i] = d
        if _implausible(t_s[i] - t_s[i - 1], d, v0[i - 1], v0[i], slack, max_speed, check):
            bad[i] = True
            n_bad += 1
    return raw, bad, n_bad


@njit(cache=True, nogil=True)
def features(
    raw: Any,
    bad: Any,
    keep: Any,
    frozen_rule: bool,
    slack: float,
    max_speed: float,
    check: float,
    window: float,
    stop_speed: float,
    stop_radius: float,
    crawl_speed: float,
    max_gap: float,
    rejoin: float,
) -> tuple[Any, Any, Any, int]:
    """(kept, cols, flags, dropped_frozen): the rest of ``motion`` after the burst rule has
    cleared ``keep`` (modified in place by the frozen-run rule, which runs only when
    ``frozen_rule``: it needs a raw jump to act).  ``cols`` has the ``OUT_*`` rows, ``flags``
    the ``FLAG_*`` rows."""
    n = raw.shape[1]
    t_s = raw[RAW_T]
    x = raw[RAW_X]
    y = raw[RAW_Y]
    dropped_frozen = 0
    if frozen_rule and n > 2:
        # runs of exactly repeated positions (same[i]: step i-1 -> i moved by 0.0)
        i = 1
        while i < n:
            if x[i] - x[i - 1] == 0.0 and y[i] - y[i - 1] == 0.0:
                s = i
                while i < n and x[i] - x[i - 1] == 0.0 and y[i] - y[i - 1] == 0.0:
                    i += 1
                e = i
                if e < n and bad[e] and keep[e]:
                    for j in range(max(s - 1, 0), e):
                        if keep[j]:
                            dropped_frozen += 1
                            keep[j] = False
            else:
                i += 1
    m = 0
    for i in range(n):
        if keep[i]:
            m += 1
    kept = np.empty(m, dtype=np.intp)
    cols = np.empty((5, m), dtype=np.float64)
    flags = np.zeros((3, m), dtype=np.bool_)
    t = cols[OUT_T]
    xk = cols[OUT_X]
    yk = cols[OUT_Y]
    v = cols[OUT_V]
    rep = cols[OUT_REPORTED]
    still = flags[FLAG_STILL]
    jump = flags[FLAG_JUMP]
    gap = flags[FLAG_GAP]
    a = 0
    for i in range(n):
        if keep[i]:
            kept[a] = i
            t[a] = t_s[i]
            xk[a] = x[i]
            yk[a] = y[i]
            rep[a] = raw[RAW_V, i]
            v[a] = raw[RAW_V, i]
            a += 1
    # speed estimate and trailing displacement: from fix i back to fix j, the last fix at least
    # ``window`` earlier (searchsorted(t - window, 'right') - 1), or the previous fix
    ptr = 0
    for i in range(m):
        target = t[i] - window
        while ptr < m and t[ptr] <= target:
            ptr += 1
        r = rep[i]
        if r < stop_speed:  # standing by the unit's word: still whatever the displacement
            still[i] = True
            continue
        if r >= crawl_speed:  # driving by the unit's word: never still
            still[i] = False
            continue
        j = ptr - 1
        if j >= i:
            j = i - 1
        jj = max(j, 0)
        moved = math.hypot(xk[i] - xk[jj], yk[i] - yk[jj])
        if r != r:  # unknown speed: displacement over the window
            if j >= 0:
                v[i] = moved / _maximum(t[i] - t[jj], 1e-3) * 3.6
            else:
                v[i] = math.inf  # the first fix of an unknown-speed track: not slow
        still[i] = (moved if j >= 0 else math.inf) <= stop_radius
    # nothing dropped: the steps are the raw ones, already measured
    same_steps = m == n
    for i in range(1, m):
        dt = t[i] - t[i - 1]
        d = raw[RAW_D, i] if same_steps else math.hypot(xk[i] - xk[i - 1], yk[i] - yk[i - 1])
        va = v[i - 1]
        vb = v[i]
        if math.isinf(va):
            va = np.nan
        if math.isinf(vb):
            vb = np.nan
        jump[i] = _implausible(dt, d, va, vb, slack, max_speed, check) or (
            (dt > check) and (d > rejoin)
        )
        gap[i] = dt > max_gap
    return kept, cols, flags, dropped_frozen


@njit(cache=True, nogil=True)
def motion_plain(
    t_us: Any,
    lon: Any,
    lat: Any,
    speed: Any,
    m_per_deg: float,
    cos_lat0: float,
    slack: float,
    max_speed: float,
    check: float,
    window: float,
    stop_speed: float,
    stop_radius: float,
    crawl_speed: float,
    max_gap: float,
    rejoin: float,
) -> tuple[int, Any, Any, Any]:
    """(number of raw jumps, kept, cols, flags): the whole of ``motion`` for a track without a
    raw jump (then nothing is dropped).  With a raw jump, ``kept`` is empty and the other two
    are :func:`frame`'s ``raw`` and ``bad`` (as a one-row array, so that the types agree): the
    caller runs the burst rule and :func:`features` on them."""
    raw, bad, n_bad = frame(t_us, lon, lat, speed, m_per_deg, cos_lat0, slack, max_speed, check)
    if n_bad:
        return n_bad, np.empty(0, dtype=np.intp), raw, bad.reshape((1, bad.shape[0]))
    keep = np.ones(raw.shape[1], dtype=np.bool_)
    kept, cols, flags, _ = features(
        raw, bad, keep, False, slack, max_speed, check, window,
        stop_speed, stop_radius, crawl_speed, max_gap, rejoin,
    )  # fmt: skip
    return 0, kept, cols, flags


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache).

    A cold compile takes tens of seconds on a loaded 2-core machine; done by the tracker's
    first re-run it would hold that round and every fix behind it.  The service calls this in
    a worker thread at start, beside ``geofence.warm_up``.  Runs both paths of
    :func:`schedule.motion.motion` (a plain track, and one with a jump, an outlier and a frozen
    run), on the int64/float64 C-contiguous arrays the tracker builds.
    """
    from schedule.motion import Track, motion

    p = DetectionParams()
    t_us = np.arange(12, dtype=np.int64) * 5_000_000
    lat = np.asarray(55.7 + np.arange(12) * 1e-5, dtype=np.float64)
    lon = np.full(12, 37.6)
    speed = np.full(12, 1.0)
    motion(Track.from_arrays(t_us, lon, lat, speed), p)
    lat_jump = lat.copy()
    lat_jump[3] += 0.01  # a one-fix outlier burst
    lat_jump[6:9] = lat_jump[6]  # a frozen run ending in a jump
    lat_jump[9:] += 0.02
    motion(Track.from_arrays(t_us, lon, lat_jump, None), p)

"""The compiled motion features: :func:`schedule.motion.motion` in a handful of loops.

Why compiled: the tracker calls ``motion`` on every re-run and on many append rounds, on tracks
of a few dozen to a few thousand fixes.  The numpy version (:func:`schedule.motion.
motion_reference`, kept as the tests' reference) makes ~60 numpy calls per track; at a few
hundred fixes their per-call overhead, not the arithmetic, is the cost (docs/bench/detect.md).
Every track is one call (:func:`motion_features`): a pass building the local frame and the raw
jump flags, the outlier-burst rule where there is a raw jump (:func:`drop_outlier_bursts`, the
compiled :func:`schedule.motion._drop_outlier_bursts`; in Python it cost ~130 µs a call, 0.34 s
of the simulated day at 2,000-fix batches), and a pass over the kept fixes for speeds, *still*,
jumps and gaps.

Exactness: every value is a transcription of the numpy code, operation for operation and in
the same order (numba compiles without fastmath, so no contraction into FMA and no
reassociation; ``math.hypot`` here and ``np.hypot`` there are both libm's ``hypot``).  The
numpy idioms are spelled out: ``np.maximum(a, b)`` is ``a if a >= b or a != a else b``,
``np.fmax(a, b)`` is ``a if a >= b or b != b else b``, and ``searchsorted(t - w, 'right') - 1``
on the strictly increasing fix times is a pointer that only moves forward.  The one
transcendental call, the cosine of the first fix's latitude, is made by the caller with
``np.cos`` (the very call :func:`schedule.motion.local_xy` makes) and passed in, as are the
metres per degree.

The burst rule's Python is held to the same standard, with two more spellings.  Its
``math.hypot`` is *CPython's* (``Modules/mathmodule.c``'s ``vector_norm``: scaling, Dekker
splitting, compensated sums, a corrected square root), not libm's, and the two differ in the
last bit now and then; :func:`py_hypot` is a transcription of CPython 3.11's, branch for
branch (tests/test_motion_kernel.py compares it with ``math.hypot`` on random and adversarial
pairs; CPython 3.12 changed its tiny-value branch, and that test is where a new interpreter
would show).  Its ``max``/``min`` of two floats keep the first argument unless the other
compares greater/less, and its median is ``sorted(...)[len // 2]``: an insertion sort of the
same values picks the same one (ties are equal floats; only the sign of a zero could differ,
and a median zero is only ever subtracted from a position and squared).  A NaN position would
make Python's sort order arbitrary; positions from :func:`schedule.motion.local_xy` of decoded
fixes are never NaN.

tests/test_motion_kernel.py holds the two paths to equal arrays on generated tracks (standing,
driving, unknown speeds, gaps, teleports, outlier bursts, frozen runs, duplicate positions, 0-2
fixes) and on windows of the simulated day, and the compiled burst rule to the Python one (the
same ``keep`` mask and count).

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


_T27 = 134217729.0  # 2**27 + 1: Veltkamp-Dekker splitting, as CPython's vector_norm


@njit(cache=True, nogil=True)
def py_hypot(a: float, b: float) -> float:
    """CPython 3.11's ``math.hypot(a, b)``, to the bit (``math_hypot`` and ``vector_norm`` of
    ``Modules/mathmodule.c`` for two coordinates, operation for operation).

    Not libm's ``hypot`` (numba's ``math.hypot``, numpy's ``np.hypot``): CPython computes the
    sum of squares in compensated double-double arithmetic and corrects the square root, and
    the two answers differ in the last bit now and then.  The burst rule's Python compares
    such distances with thresholds and with each other, so the kernel must use the same ones.
    """
    x = abs(a)
    y = abs(b)
    mx = 0.0
    if x > mx:
        mx = x
    if y > mx:
        mx = y
    if math.isinf(mx):
        return mx
    if x != x or y != y:
        return math.nan
    if mx == 0.0:
        return mx
    max_e = math.frexp(mx)[1]
    if max_e < -1023:
        # ldexp(1.0, -max_e) would overflow: 3.11 divides by the largest instead (3.12 scales
        # by DBL_MIN and recurses; the tests pin the interpreter's answer)
        csum = 1.0
        frac1 = 0.0
        q = x / mx
        q = q * q
        old = csum
        csum += q
        frac1 += (old - csum) + q
        q = y / mx
        q = q * q
        old = csum
        csum += q
        frac1 += (old - csum) + q
        return mx * math.sqrt(csum - 1.0 + frac1)
    scale = math.ldexp(1.0, -max_e)
    csum = 1.0
    frac1 = 0.0
    frac2 = 0.0
    frac3 = 0.0
    for c in (x, y):
        q = c * scale  # lossless scaling
        t = q * _T27
        hi = t - (t - q)  # lossless splitting
        lo = q - hi
        q = hi * hi  # lossless squaring
        old = csum
        csum += q
        frac1 += (old - csum) + q
        q = 2.0 * hi * lo
        old = csum
        csum += q
        frac2 += (old - csum) + q
        frac3 += lo * lo
    h = math.sqrt(csum - 1.0 + (frac1 + frac2 + frac3))
    t = h * _T27
    hi = t - (t - h)
    lo = h - hi
    q = -hi * hi
    old = csum
    csum += q
    frac1 += (old - csum) + q
    q = -2.0 * hi * lo
    old = csum
    csum += q
    frac2 += (old - csum) + q
    q = -lo * lo
    old = csum
    csum += q
    frac3 += (old - csum) + q
    q = csum - 1.0 + (frac1 + frac2 + frac3)
    return (h + q / (2.0 * h)) / scale  # differential correction


@njit(cache=True, nogil=True, inline="always")
def _back(t: Any, x: Any, y: Any, v: Any, a: int, b: int, slack: float) -> bool:
    """``schedule.motion._Window.back``: fix b is back where fix a was."""
    span = t[b] - t[a]
    if span < 1e-3:  # max(span, 1e-3): 1e-3 only when it compares greater
        span = 1e-3
    va = v[a]
    vb = v[b]
    if vb != vb:
        vm = va
    elif va != va:
        vm = vb
    else:
        vm = vb if vb > va else va  # max(va, vb)
    lim = slack + (0.0 if vm != vm else 1.5 * vm / 3.6 * span)
    return py_hypot(x[b] - x[a], y[b] - y[a]) <= lim


@njit(cache=True, nogil=True, inline="always")
def _score(
    x: Any,
    y: Any,
    keep: Any,
    first: int,
    stop: int,
    only_kept: bool,
    a: int,
    b: int,
    mx: float,
    my: float,
) -> float:
    """``schedule.motion._Window.score`` of the burst ``first..stop-1`` (its kept fixes only
    when ``only_kept``) between fixes a and b."""
    ax = x[a]
    ay = y[a]
    ex = x[b] - ax
    ey = y[b] - ay
    ll = ex * ex + ey * ey
    out = math.inf
    for d in range(first, stop):
        if only_kept and not keep[d]:
            continue
        dx = x[d]
        dy = y[d]
        px = dx - ax
        py = dy - ay
        if ll == 0.0:
            u = 0.0
        else:
            u = (px * ex + py * ey) / ll
            if u < 0.0:  # max(u, 0.0)
                u = 0.0
            if u > 1.0:  # min(u, 1.0)
                u = 1.0
        off = py_hypot(px - u * ex, py - u * ey)
        if off < out:  # min(out, off, ...): the first of equals stays
            out = off
        near = py_hypot(dx - mx, dy - my)
        if near < out:
            out = near
    return out


@njit(cache=True, nogil=True, inline="always")
def _insert(buf: Any, m: int, value: float) -> None:
    """Insert ``value`` into the sorted ``buf[:m]`` after its equals (a stable insertion sort:
    the order Python's stable ``sorted`` gives the same sequence, zeros' signs included)."""
    j = m
    while j > 0 and value < buf[j - 1]:
        buf[j] = buf[j - 1]
        j -= 1
    buf[j] = value


#: Kinds of a burst-rule reading: a forward one drops fixes i..j-1, a backward one the kept
#: fixes between k and i.
_NONE, _FORWARD, _BACKWARD = 0, 1, 2


@njit(cache=True, nogil=True)
def drop_outlier_bursts(
    raw: Any,
    bad: Any,
    keep: Any,
    burst_fixes: int,
    slack: float,
    max_speed: float,
    check: float,
) -> int:
    """:func:`schedule.motion._drop_outlier_bursts` (the specification, which says why) on
    :func:`frame`'s ``raw`` rows: clears ``keep`` for multipath bursts, returns how many fixes
    it dropped.  The readings are not listed: the best valid one so far (highest score, then
    fewest fixes, then the first) and the first forward one are all the rule needs."""
    n = raw.shape[1]
    t = raw[RAW_T]
    x = raw[RAW_X]
    y = raw[RAW_Y]
    v = raw[RAW_V]
    sx = np.empty(n, dtype=np.float64)  # the window's kept positions, sorted (the median)
    sy = np.empty(n, dtype=np.float64)
    half = slack / 2
    dropped = 0
    for i in range(1, n):
        if not bad[i] or not keep[i]:
            continue
        base = i - 1
        while base >= 0 and not keep[base]:
            base -= 1
        if base < 0:
            continue
        # _jumped(base, i): np.hypot is libm's hypot, as math.hypot is here
        d = math.hypot(x[i] - x[base], y[i] - y[base])
        if not _implausible(t[i] - t[base], d, v[base], v[i], slack, max_speed, check):
            continue  # fine from the last kept fix: the jump was only from a dropped outlier
        lo = max(0, min(base, i - burst_fixes - 1) - 1)
        hi = min(n, i + burst_fixes + 1)
        m = 0
        for j in range(lo, hi):
            if keep[j]:
                _insert(sx, m, x[j])
                _insert(sy, m, y[j])
                m += 1
        mx = sx[m // 2]  # base is kept and in the window: m >= 1
        my = sy[m // 2]
        best = _NONE
        best_score = 0.0
        best_count = 0
        best_at = -1
        first_forward = -1
        for j in range(i + 1, hi):  # forward readings: i..j-1 were the burst
            if _back(t, x, y, v, base, j, slack):
                if first_forward < 0:
                    first_forward = j
                s = _score(x, y, keep, i, j, False, base, j, mx, my)
                count = j - i
                # min over (-score, count): a later reading wins only when strictly less
                if s > half and (
                    best == _NONE or -s < -best_score or (-s == -best_score and count < best_count)
                ):
                    best, best_score, best_count, best_at = _FORWARD, s, count, j
        for k in range(base - 1, max(i - burst_fixes - 2, -1), -1):  # backward readings
            if keep[k] and _back(t, x, y, v, k, i, slack):
                count = 0
                for dd in range(k + 1, i):
                    if keep[dd]:
                        count += 1
                if count == 0:
                    continue
                s = _score(x, y, keep, k + 1, i, True, k, i, mx, my)
                if s > half and (
                    best == _NONE or -s < -best_score or (-s == -best_score and count < best_count)
                ):
                    best, best_score, best_count, best_at = _BACKWARD, s, count, k
        if best == _NONE and first_forward >= 0:
            # no clear outlier: the first forward reading (white noise stepping out and back)
            best, best_at = _FORWARD, first_forward
        if best == _FORWARD:
            for dd in range(i, best_at):
                keep[dd] = False
            dropped += best_at - i
        elif best == _BACKWARD:
            for dd in range(best_at + 1, i):
                if keep[dd]:
                    keep[dd] = False
                    dropped += 1
    return dropped


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
def motion_features(
    t_us: Any,
    lon: Any,
    lat: Any,
    speed: Any,
    m_per_deg: float,
    cos_lat0: float,
    burst_fixes: int,
    slack: float,
    max_speed: float,
    check: float,
    window: float,
    stop_speed: float,
    stop_radius: float,
    crawl_speed: float,
    max_gap: float,
    rejoin: float,
) -> tuple[Any, Any, Any, int, int]:
    """(kept, cols, flags, dropped_outliers, dropped_frozen): the whole of ``motion``.  A
    track without a raw jump skips the burst and frozen-run rules (neither can act)."""
    raw, bad, n_bad = frame(t_us, lon, lat, speed, m_per_deg, cos_lat0, slack, max_speed, check)
    keep = np.ones(raw.shape[1], dtype=np.bool_)
    dropped_outliers = 0
    if n_bad:
        dropped_outliers = drop_outlier_bursts(raw, bad, keep, burst_fixes, slack, max_speed, check)
    kept, cols, flags, dropped_frozen = features(
        raw, bad, keep, n_bad > 0, slack, max_speed, check, window,
        stop_speed, stop_radius, crawl_speed, max_gap, rejoin,
    )  # fmt: skip
    return kept, cols, flags, dropped_outliers, dropped_frozen


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

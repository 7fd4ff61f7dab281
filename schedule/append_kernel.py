"""Compiled pieces of the append-only round (:meth:`schedule.tracker.VehicleTracker._append_only`).

Why compiled: most vehicle-rounds only append (a truck parked at a site, ~40 new fixes a
round at 2,000-fix batches), and deciding that cost ~180 µs a round, mostly numpy's per-call
overhead on arrays of a few dozen fixes: :func:`schedule.tracker._plain_still` alone makes ~25
numpy calls (and the window it reads was first built by four concatenations), the stop extent
check ~10.  Here each is one loop over the window, reading the kept columns in place (the
window is ``old[k0:]`` followed by the new fixes; nothing is concatenated).

Exactness: every float is computed as the numpy reference computes it, operation for operation
and in the same order (numba compiles without fastmath, so the IEEE rounding is the same;
``math.hypot`` is the libm ``hypot`` numpy's ``np.hypot`` calls).  The one transcendental
call, the cosine of the local frame's latitude, is not made here: the wrapper computes it with
``np.cos`` exactly as :func:`schedule.motion.local_xy` does and passes it in.  The numpy
functions stay the reference (:func:`schedule.tracker._plain_still`,
:func:`within_extent_reference`); ``tests/test_append_kernel.py`` compares
the two with Hypothesis on generated windows (NaN speeds, gaps, jumps, duplicate positions,
windows too short) and on the simulated day's append rounds.

Compiled with ``cache=True``: the first process after an edit pays the compile (a few seconds;
:func:`warm_up` does it at start), later ones load the machine code from numba's cache.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from schedule.motion import local_xy

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]

_EARTH_R_M = 6_371_008.8
_DEG = np.pi / 180.0
#: ``schedule.motion.local_xy``'s metres per degree (computed the same way, frozen by numba)
_K = float(_EARTH_R_M * _DEG)
_KMH = 3.6


@njit(cache=True)
def plain_still(
    t_old: I64,
    lon_old: F64,
    lat_old: F64,
    speed_old: F64,
    k0: int,
    t_new: I64,
    lon_new: F64,
    lat_new: F64,
    speed_new: F64,
    cos0: float,
    stop_speed_kmh: float,
    crawl_speed_kmh: float,
    stop_radius_m: float,
    speed_window_s: float,
    gap_limit_s: float,
    teleport_slack_m: float,
    max_speed_kmh: float,
    out: BoolA,
) -> bool:
    """:func:`schedule.tracker._plain_still` of the window ``old[k0:] + new`` for its fixes
    from the newest old one on, written into ``out`` (``len(new) + 1``); False where the
    reference returns None.  ``cos0`` is ``np.cos(lat_old[k0] * pi / 180)``;
    ``gap_limit_s`` is ``min(max_gap_s, teleport_check_s)``."""
    n_old = len(t_old) - k0
    n_new = len(t_new)
    n = n_old + n_new
    t_s = np.empty(n)
    x = np.empty(n)
    y = np.empty(n)
    v = np.empty(n)
    t0 = t_old[k0]
    lon0 = lon_old[k0]
    lat0 = lat_old[k0]
    for i in range(n):
        if i < n_old:
            ti, lo, la, sp = t_old[k0 + i], lon_old[k0 + i], lat_old[k0 + i], speed_old[k0 + i]
        else:
            j = i - n_old
            ti, lo, la, sp = t_new[j], lon_new[j], lat_new[j], speed_new[j]
        if not math.isfinite(sp):
            return False
        t_s[i] = float(ti - t0) / 1e6
        x[i] = (lo - lon0) * _K * cos0
        y[i] = (la - lat0) * _K
        v[i] = sp
    # steps: none longer than the gap limit, none implausible
    for i in range(1, n):
        dt = t_s[i] - t_s[i - 1]
        if dt > gap_limit_s:
            return False
    for i in range(1, n):
        dt = t_s[i] - t_s[i - 1]
        d = math.hypot(x[i] - x[i - 1], y[i] - y[i - 1])
        dtc = max(dt, 1e-3)
        allowed = teleport_slack_m + 1.5 * max(v[i - 1], v[i]) / _KMH * dtc
        too_fast = (d / dtc * _KMH > max_speed_kmh) and (d > teleport_slack_m)
        if too_fast or d > allowed:
            return False
    # still from the newest old fix on: reported slow, or moved little over the speed window
    first = n_old - 1
    j = 0
    for i in range(first, n):
        lim = t_s[i] - speed_window_s
        # searchsorted(t_s, lim, side="right") - 1: the last fix at or before lim
        while j < n and t_s[j] <= lim:
            j += 1
        jj = j - 1
        if jj >= i:
            jj = i - 1
        if jj < 0:
            return False
        moved = math.hypot(x[i] - x[jj], y[i] - y[jj])
        # as motion(): the displacement rule never overrides a unit reporting crawl speed
        out[i - first] = (v[i] < stop_speed_kmh) or (
            moved <= stop_radius_m and not v[i] >= crawl_speed_kmh
        )
    return True


@njit(cache=True)
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@njit(cache=True)
def within_extent(
    lon_min: float,
    lon_max: float,
    lat_min: float,
    lat_max: float,
    lon: F64,
    lat: F64,
    cos0: float,
    limit_m: float,
) -> bool:
    """No fix farther than ``limit_m`` from the box's farthest corner, measured as
    ``VehicleTracker._within_extent`` measures it (``schedule.motion.local_xy`` around the
    box's (min lon, min lat) corner; ``cos0`` is ``np.cos(lat_min * pi / 180)``)."""
    x0 = (lon_min - lon_min) * _K * cos0
    x1 = (lon_max - lon_min) * _K * cos0
    y0 = (lat_min - lat_min) * _K
    y1 = (lat_max - lat_min) * _K
    for i in range(len(lon)):
        x = (lon[i] - lon_min) * _K * cos0
        y = (lat[i] - lat_min) * _K
        dx = _maximum(abs(x - x0), abs(x - x1))
        dy = _maximum(abs(y - y0), abs(y - y1))
        if math.hypot(dx, dy) > limit_m:
            return False
    return True


@njit(cache=True)
def _clean_step(
    t0: int,
    lon0: float,
    lat0: float,
    v0: float,
    t1: int,
    lon1: float,
    lat1: float,
    v1: float,
    lim_us: int,
    teleport_slack_m: float,
    max_speed_kmh: float,
) -> bool:
    """:func:`schedule.fastpath.clean_steps` for one step: no re-run's ``motion`` can call it
    implausible (the distance over-estimated with the equator's east-west scale, the time
    under-estimated, each by far more than any rounding)."""
    dt_us = t1 - t0
    if dt_us <= 0 or dt_us > lim_us or not math.isfinite(v0) or not math.isfinite(v1):
        return False
    dt_s = max(dt_us / 1e6, 1e-3) * (1.0 - 1e-9)
    d_hi = math.hypot(abs(lon1 - lon0), abs(lat1 - lat0)) * _K * (1.0 + 1e-9) + 1e-6
    allowed = teleport_slack_m + 1.5 * max(v0, v1) / _KMH * dt_s
    not_fast = (d_hi * _KMH / dt_s <= max_speed_kmh) or (d_hi <= teleport_slack_m)
    return d_hi <= allowed and not_fast


@njit(cache=True)
def _hinted_start(pair_t: I64, hint: I64, lo: int) -> int:
    """Where a scan for the pairs not older than ``lo`` may start: every pair before it is
    older.  A pair table is long (the whole horizon) and its memory mostly out of cache, so
    the full scan cost more than all the rest of :func:`drive_checkpoints`.  ``hint`` is
    :mod:`schedule.rerun_kernel`'s (fields ``H_ADDR, H_LEN, H_T, H_Q`` = 0..3: the table's
    data address, its length, a time, the first pair not older than that time); it holds,
    as there, while the table begins at that address and has not shrunk (pairs are only
    ever appended after a table's end) and ``lo`` is not older than its time; else 0."""
    if pair_t.ctypes.data == hint[0] and len(pair_t) >= hint[1] and lo >= hint[2]:
        return int(hint[3])
    return 0


@njit(cache=True)
def drive_checkpoints(
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    kc: int,
    k: int,
    in_t: I64,
    near_t: I64,
    in_hint: I64,
    near_hint: I64,
    cos0: float,
    crawl_speed_kmh: float,
    stop_speed_kmh: float,
    lim_us: int,
    teleport_slack_m: float,
    max_speed_kmh: float,
    lead: int,
    need_fixes: int,
    need_s: float,
    far_m: float,
    out: I64,
) -> int:
    """``_checkpoint_while_driving``'s search (``motion`` over fixes ``kc:``, then
    :meth:`VehicleTracker._checkpoints_in` from fix ``k`` on) without ``motion`` where that is
    exact: the checkpoints' fix times are written to ``out`` and their number returned; -1
    when ``motion`` must run.

    *Candidates* are the fixes ``k:`` the rule could accept: not reported slower than
    ``crawl_speed_kmh`` (an unknown speed is estimated) and no fence or margin pair at the
    fix's time (``in_t``/``near_t``, any order; ``in_hint``/``near_hint``: the tables'
    :mod:`schedule.rerun_kernel` pair hints, see :func:`_hinted_start`).  Fewer than a run
    needs (``lead + need_fixes + 1``): no checkpoint.  When every step of fixes ``kc:`` is *clean*
    (``lim_us``: ``min(max_gap_s, teleport_check_s)`` less a millisecond, as in
    :func:`schedule.fastpath.clean_steps`: the distance over-estimated in any frame, so no
    step is a jump, none a gap, every speed known), ``motion`` keeps every fix, reports the
    reported speeds, flags no jump or gap, and calls a fix moving at ``crawl_speed_kmh`` or
    more still only when it reports less than ``stop_speed_kmh``; then the rule is run here
    on the frame ``motion`` builds (``cos0`` is ``np.cos(lat[kc] * pi / 180)``), operation
    for operation.  Otherwise -1 (``motion`` judges drops, bursts and estimated speeds)."""
    n = len(t)
    if k >= n:
        return 0
    clean = True
    for i in range(kc + 1, n):
        if not _clean_step(
            t[i - 1], lon[i - 1], lat[i - 1], speed[i - 1], t[i], lon[i], lat[i], speed[i],
            lim_us, teleport_slack_m, max_speed_kmh,
        ):  # fmt: skip
            clean = False
            break
    ok = np.empty(n - k, dtype=np.bool_)
    for i in range(k, n):
        ok[i - k] = not (speed[i] < crawl_speed_kmh)
    lo = t[k]
    for pairs, hint in ((in_t, in_hint), (near_t, near_hint)):
        for q in range(_hinted_start(pairs, hint, lo), len(pairs)):
            pt = pairs[q]
            if pt < lo:
                continue
            j = np.searchsorted(t, pt)
            if j < n and t[j] == pt:
                ok[j - k] = False
    if not clean:
        return 0 if int(ok.sum()) < lead + need_fixes + 1 else -1
    # motion's frame and features of the fixes kc: (kept index i is fix kc + i)
    m = n - kc
    t_s = np.empty(m)
    x = np.empty(m)
    y = np.empty(m)
    lon0, lat0, t0 = lon[kc], lat[kc], t[kc]
    for i in range(m):
        t_s[i] = float(t[kc + i] - t0) / 1e6
        x[i] = (lon[kc + i] - lon0) * _K * cos0
        y[i] = (lat[kc + i] - lat0) * _K
    # the rule's condition from the search start on (still: reported < stop_speed_kmh)
    active = k - kc
    cond = np.zeros(m, dtype=np.bool_)
    for i in range(active, m):
        v = speed[kc + i]
        zero = i > 0 and x[i] - x[i - 1] == 0 and y[i] - y[i - 1] == 0
        cond[i] = ok[i - active] and not (v < stop_speed_kmh) and v >= crawl_speed_kmh and not zero
    found = 0
    s = active
    while s < m:
        if not cond[s]:
            s += 1
            continue
        e = s
        while e < m and cond[e]:
            e += 1
        b = s + lead
        if e - b >= need_fixes:
            run_max = -math.inf
            for h in range(e - b):
                d = math.hypot(x[b + h] - x[b], y[b + h] - y[b])
                run_max = max(run_max, d)
                if run_max > far_m and h >= need_fixes and t_s[b + h] - t_s[b] >= need_s:
                    out[found] = t[kc + b + h]
                    found += 1
                    break
        s = e
    return found


def within_extent_reference(
    box: tuple[float, float, float, float], lon: F64, lat: F64, limit_m: float
) -> bool:
    """The numpy rule :func:`within_extent` transcribes (the tests' reference): the fixes and
    the box's corners in :func:`schedule.motion.local_xy`'s frame, each fix's distance from
    the farthest corner at most ``limit_m``."""
    x, y = local_xy(np.concatenate((box[:2], lon)), np.concatenate((box[2:], lat)))
    dx = np.maximum(np.abs(x[2:] - x[0]), np.abs(x[2:] - x[1]))
    dy = np.maximum(np.abs(y[2:] - y[0]), np.abs(y[2:] - y[1]))
    return not bool((np.hypot(dx, dy) > limit_m).any())


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache), so that the first append
    round of a live engine does not pay the compile."""
    t = np.arange(12, dtype=np.int64) * 1_000_000
    z = np.zeros(12)
    out = np.zeros(4, dtype=bool)
    plain_still(t[:9], z[:9], z[:9], z[:9], 0, t[9:], z[9:], z[9:], z[9:], 1.0,
                3.0, 10.0, 30.0, 20.0, 60.0, 40.0, 250.0, out)  # fmt: skip
    within_extent(0.0, 0.0, 0.0, 0.0, z, z, 1.0, 99.0)
    found = np.empty(12, dtype=np.int64)
    drive_checkpoints(
        t,
        z,
        z,
        z,
        0,
        3,
        t[4:6],
        t[:0],
        np.zeros(4, dtype=np.int64),
        np.zeros(4, dtype=np.int64),
        1.0,
        10.0,
        3.0,
        59_999_000,
        40.0,
        250.0,
        6,
        4,
        30.0,
        100.0,
        found,
    )


__all__ = [
    "drive_checkpoints",
    "plain_still",
    "warm_up",
    "within_extent",
    "within_extent_reference",
]

"""Compiled pieces of the parked fast path (:func:`schedule.fastpath.select_parked`).

Why compiled: the selection reads every fix of a round's batch (its step from the fix before,
its reported speed, its fence pairs against its vehicle's open sites, its distance from the
open stop's head box) and decides per vehicle; in numpy that is ~60 calls per batch whatever
its size, more than the parked rounds it saves at 2,000-fix batches.  Here it is one loop over
the batch and its pairs.  Every rule is conservative (a step's distance over-estimated, the
extent limit shrunk by a micrometre), so no rounding difference from the numpy references can
let a vehicle through that the reference would stop; ``tests/test_tracker_parked.py``
compares :func:`select` with :func:`schedule.fastpath.select_parked_reference`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from schedule.append_kernel import _clean_step

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]

_EARTH_R_M = 6_371_008.8
_DEG = np.pi / 180.0
#: ``schedule.append_kernel``'s metres per degree (``local_xy``'s, computed the same way)
_K = float(_EARTH_R_M * _DEG)


@njit(cache=True)
def clean_from(
    t: I64, lon: F64, lat: F64, v: F64, a: int, lim_us: int, slack_m: float, vmax_kmh: float
) -> bool:
    """Every step of fixes ``a:`` is clean (:func:`schedule.fastpath.clean_steps`)."""
    for i in range(a + 1, len(t)):
        if not _clean_step(
            t[i - 1], lon[i - 1], lat[i - 1], v[i - 1], t[i], lon[i], lat[i], v[i],
            lim_us, slack_m, vmax_kmh,
        ):  # fmt: skip
            return False
    return True


@njit(cache=True)
def clean_tail(
    t: I64, lon: F64, lat: F64, v: F64, lim_us: int, slack_m: float, vmax_kmh: float
) -> int:
    """How many of the steps between these fixes are clean counting back from the newest
    (:func:`schedule.fastpath.clean_steps`, as :func:`schedule.fastpath.tail_of` counts)."""
    c = 0
    for i in range(len(t) - 1, 0, -1):
        if not _clean_step(
            t[i - 1], lon[i - 1], lat[i - 1], v[i - 1], t[i], lon[i], lat[i], v[i],
            lim_us, slack_m, vmax_kmh,
        ):  # fmt: skip
            break
        c += 1
    return c


@njit(cache=True)
def window(t: I64, w_us: int, lead: int, far_us: int) -> tuple[int, int]:
    """:func:`schedule.fastpath.parked_window` (the reference): (first index, latest first
    new fix), or (-1, -1) for None."""
    n = len(t)
    last = t[n - 1]
    k0min = np.searchsorted(t, last + 1 - w_us, side="right") - 8
    b0 = np.searchsorted(t, last - w_us - 1000, side="right") - 1
    if k0min - lead < 0 or b0 < k0min:
        return -1, -1
    first_max = t[b0 + 8] + w_us - 1 if b0 + 8 < n else far_us
    if first_max <= last:
        return -1, -1
    return k0min - lead, first_max


@njit(cache=True)
def select(
    bounds: I64,
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    in_r: I64,
    in_s: I64,
    nr_r: I64,
    nr_s: I64,
    have: BoolA,
    tail_i: I64,
    tail_f: F64,
    sites: I64,
    lim_us: int,
    slack_m: float,
    vmax_kmh: float,
    stop_kmh: float,
    extent_m: float,
    has_now: bool,
    now_us: int,
    max_gap_s: float,
    fast: BoolA,
    cand: BoolA,
) -> None:
    """:func:`schedule.fastpath.select_parked_reference` in one pass (see there).

    Per group g: ``tail_i[g]`` = (newest fix time, latest first new fix, the newest new fix
    before this), ``tail_f[g]`` = (lon, lat, speed of the newest fix, open stop 0/1, head box
    min lon, max lon, min lat, max lat), ``sites[g]`` the open visits' sites padded with -1.
    ``has_now`` False: no clock.  Writes ``fast`` and ``cand``."""
    g_n = len(bounds) - 1
    k_sites = sites.shape[1]
    ip = 0
    jp = 0
    n_in = len(in_r)
    n_nr = len(nr_r)
    for g in range(g_n):
        a = bounds[g]
        b = bounds[g + 1]
        ok = bool(have[g])
        cd = True
        stop = tail_f[g, 3] != 0.0
        n_sites = 0
        for s in range(k_sites):
            if sites[g, s] >= 0:
                n_sites += 1
        full = (1 << n_sites) - 1
        if ok:
            if t[a] > tail_i[g, 1] or t[b - 1] >= tail_i[g, 2]:
                ok = False
            if has_now and (now_us - t[b - 1]) > max_gap_s * 1e6:
                ok = False
            if ok and not _clean_step(
                tail_i[g, 0], tail_f[g, 0], tail_f[g, 1], tail_f[g, 2],
                t[a], lon[a], lat[a], speed[a], lim_us, slack_m, vmax_kmh,
            ):  # fmt: skip
                ok = False
        if ok and stop:
            lon_min, lon_max = tail_f[g, 4], tail_f[g, 5]
            lat_min, lat_max = tail_f[g, 6], tail_f[g, 7]
            cos0 = math.cos(lat_min * _DEG)
            x1 = (lon_max - lon_min) * _K * cos0
            y1 = (lat_max - lat_min) * _K
        else:
            lon_min = lat_min = cos0 = x1 = y1 = 0.0
        for i in range(a, b):
            if i > a and (ok or cd) and not _clean_step(
                t[i - 1], lon[i - 1], lat[i - 1], speed[i - 1], t[i], lon[i], lat[i],
                speed[i], lim_us, slack_m, vmax_kmh,
            ):  # fmt: skip
                ok = False
                cd = False
            still = speed[i] < stop_kmh
            hit = 0
            inside = False
            while ip < n_in and in_r[ip] < i:
                ip += 1
            while ip < n_in and in_r[ip] == i:
                inside = True
                s_code = in_s[ip]
                found = -1
                for s in range(n_sites):
                    if sites[g, s] == s_code:
                        found = s
                        break
                if found < 0:
                    ok = False
                else:
                    hit |= 1 << found
                ip += 1
            while jp < n_nr and nr_r[jp] < i:
                jp += 1
            while jp < n_nr and nr_r[jp] == i:
                s_code = nr_s[jp]
                found = -1
                for s in range(n_sites):
                    if sites[g, s] == s_code:
                        found = s
                        break
                if found < 0:
                    ok = False
                jp += 1
            if hit != full:
                ok = False
            if not (still or inside):
                cd = False
            if ok and stop:
                if not still:
                    ok = False
                else:
                    x = (lon[i] - lon_min) * _K * cos0
                    y = (lat[i] - lat_min) * _K
                    dx = max(abs(x), abs(x - x1))
                    dy = max(abs(y), abs(y - y1))
                    if not math.hypot(dx, dy) <= extent_m:
                        ok = False
        fast[g] = ok
        cand[g] = cd


@njit(cache=True)
def select_driving(
    bounds: I64,
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    paired: BoolA,
    have: BoolA,
    tail_t: I64,
    tail_f: F64,
    lim_us: int,
    slack_m: float,
    vmax_kmh: float,
    move_kmh: float,
    has_now: bool,
    now_us: int,
    max_gap_s: float,
    fast: BoolA,
    cand: BoolA,
) -> None:
    """:func:`schedule.fastpath.select` (the driving fast path) in one pass over the batch.

    Group g's previous fix is its tail: time ``tail_t[g]``, ``tail_f[g]`` = (lon, lat,
    speed); ``have[g]`` False (no tail with enough clean steps): not fast, and a candidate
    by its own fixes.  A fix is fine when its step from the previous fix is clean, it is
    reported at ``move_kmh`` or more, it has no pair, and (the group's newest, with a
    clock) the clock is no more than ``max_gap_s`` past it.  Writes ``fast`` and ``cand``."""
    for g in range(len(bounds) - 1):
        a = bounds[g]
        b = bounds[g + 1]
        ok = True
        for i in range(a, b):
            if not speed[i] >= move_kmh or paired[i]:
                ok = False
                break
            if i > a:
                step = _clean_step(
                    t[i - 1], lon[i - 1], lat[i - 1], speed[i - 1], t[i], lon[i], lat[i],
                    speed[i], lim_us, slack_m, vmax_kmh,
                )  # fmt: skip
                if not step:
                    ok = False
                    break
        if ok and has_now and not (now_us - t[b - 1]) <= max_gap_s * 1e6:
            ok = False
        first = ok and _clean_step(
            tail_t[g], tail_f[g, 0], tail_f[g, 1], tail_f[g, 2], t[a], lon[a], lat[a],
            speed[a], lim_us, slack_m, vmax_kmh,
        )  # fmt: skip
        fast[g] = have[g] and first
        cand[g] = first if have[g] else ok


@njit(cache=True)
def pairs_by_rank(pairs: I64, rank: I64, codes: I64, out_r: I64, out_s: I64) -> bool:
    """The (2, K) pairs (fix index, site position) as (fix rank, site code) ordered by rank
    (stable: a fix's pairs keep their order), written to ``out_r``/``out_s``: a counting
    sort (``rank`` is a permutation) where ``np.argsort`` was two sorts a batch.  False
    (nothing meant) when a fix index or site position is out of range: the caller's numpy
    path raises what it raised."""
    n = len(rank)
    m = len(codes)
    k = pairs.shape[1]
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(k):
        f = pairs[0, i]
        s = pairs[1, i]
        if f < 0 or f >= n or s < 0 or s >= m:
            return False
        start[rank[f] + 1] += 1
    for r in range(n):
        start[r + 1] += start[r]
    for i in range(k):
        r = rank[pairs[0, i]]
        j = start[r]
        out_r[j] = r
        out_s[j] = codes[pairs[1, i]]
        start[r] = j + 1
    return True


@njit(cache=True)
def unit_codes(rows: npt.NDArray[np.uint32], table: npt.NDArray[np.uint32], out: I64) -> int:
    """Each row's index in ``table`` (rows of one width, sorted ascending as tuples), or -1;
    returns how many rows are not in it.

    The rows are unit ids of a fixed-width numpy string column viewed as code points
    (:meth:`schedule.tracker.FleetTracker.feed`): tuples compare as numpy compares the
    strings, so the index is the unit's rank in the table's sorted order."""
    n, w = rows.shape
    m = table.shape[0]
    missing = 0
    for i in range(n):
        lo = 0
        hi = m
        while lo < hi:
            mid = (lo + hi) >> 1
            less = False
            for j in range(w):
                x = table[mid, j]
                y = rows[i, j]
                if x != y:
                    less = x < y
                    break
            if less:
                lo = mid + 1
            else:
                hi = mid
        found = lo < m
        if found:
            for j in range(w):
                if table[lo, j] != rows[i, j]:
                    found = False
                    break
        if found:
            out[i] = lo
        else:
            out[i] = -1
            missing += 1
    return missing


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache)."""
    t = np.arange(12, dtype=np.int64) * 1_000_000
    z = np.zeros(12)
    clean_from(t, z, z, z, 0, 59_999_000, 40.0, 250.0)
    window(t, 20_000_000, 6, 2**62)
    clean_tail(t, z, z, z, 59_999_000, 40.0, 250.0)
    bounds = np.array([0, 6, 12], dtype=np.int64)
    pr = np.array([0, 1], dtype=np.int64)
    select(
        bounds, t, z, z, z, pr, pr, pr, pr, np.ones(2, dtype=np.bool_),
        np.zeros((2, 3), dtype=np.int64), np.zeros((2, 8)), np.full((2, 1), -1, dtype=np.int64),
        59_999_000, 40.0, 250.0, 3.0, 99.0, False, 0, 300.0,
        np.zeros(2, dtype=np.bool_), np.zeros(2, dtype=np.bool_),
    )  # fmt: skip
    select_driving(
        bounds, t, z, z, z, np.zeros(12, dtype=np.bool_), np.ones(2, dtype=np.bool_),
        t[:2], np.zeros((2, 3)), 59_999_000, 40.0, 250.0, 3.0, False, 0, 300.0,
        np.zeros(2, dtype=np.bool_), np.zeros(2, dtype=np.bool_),
    )  # fmt: skip
    pr2 = np.zeros((2, 1), dtype=np.int64)
    pairs_by_rank(pr2, pr[:1], pr[:1], pr[:1].copy(), pr[:1].copy())
    units = np.array(["u1", "u2"]).view(np.uint32).reshape(2, -1)
    unit_codes(units, units, np.empty(2, dtype=np.int64))


__all__ = [
    "clean_from",
    "clean_tail",
    "pairs_by_rank",
    "select",
    "select_driving",
    "unit_codes",
    "warm_up",
    "window",
]

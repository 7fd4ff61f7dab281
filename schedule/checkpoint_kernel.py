"""The re-run's checkpoint searches and pair bookkeeping, compiled.

Why compiled: after the detectors, a re-run (schedule/tracker.py ``VehicleTracker._rerun``) maps
the fence pairs onto the kept fixes, builds per-site masks and searches for checkpoints, both
structural (``_checkpoints_in``: away from every fence and moving for the hysteresis windows)
and settled (``_settled_checkpoints``: every detector has decided everything before).  In numpy
that is ~80 calls per re-run on arrays of a few hundred fixes plus a Python loop per site and
per run, where numpy's per-call overhead, not the arithmetic, is the cost (~20 % of a re-run at
2,000-fix batches, issue 7).  Here each is one loop over the fixes.

Exactness: every float operation is a transcription of the numpy code it replaces
(``VehicleTracker._checkpoints_in_numpy`` and ``_settled_checkpoints_numpy``, kept as the tests'
reference), operation for operation and in the same order: the same subtractions, the same
``hypot`` (numba's ``math.hypot`` and numpy's ``np.hypot`` both call libm's ``hypot``), the same
running maxima with numpy's NaN propagation (``np.maximum``: a NaN wins, and stays), the same
``d + run_id * big`` offsets of the settled rule's per-run maximum.  Compiled without fastmath,
IEEE rounding is the same.  The integer bookkeeping (searchsorted, unique, prefix counts) is
exact by construction.  tests/test_checkpoint_kernel.py compares kernel and reference on
generated motions and on windows of the simulated day.

Compiled with ``cache=True``: the first process after an install or an edit pays the compile;
:func:`warm_up` does it at start (the engine's first re-run would otherwise hold its round).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from schedule.params import DetectionParams

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]

#: Fields of the parameter vector (:func:`param_vector`): float64 holds the integer ones exactly.
(
    P_CRAWL, P_STOP_SPEED, P_DRIFT2, P_FAR2, P_NEED_FIXES, P_NEED_S, P_MOVE_FIXES, P_MOVE_S,
    P_EXIT_FIXES, P_EXIT_S, P_LEAD, P_BURST,
) = range(12)  # fmt: skip
N_PARAMS = 12


@lru_cache(maxsize=16)
def param_vector(p: DetectionParams, lead: int, burst: int) -> F64:
    """The thresholds the checkpoint rules read, computed as the numpy code computes them
    (``2 * p.drift_radius_m`` etc. in Python floats), as one read-only array: one argument
    instead of twelve keeps the compiled call's dispatch short."""
    v = np.empty(N_PARAMS)
    v[P_CRAWL] = p.crawl_speed_kmh
    v[P_STOP_SPEED] = p.stop_speed_kmh
    v[P_DRIFT2] = 2 * p.drift_radius_m
    v[P_FAR2] = 2 * max(p.drift_radius_m, p.stop_merge_m)
    v[P_NEED_FIXES] = max(p.exit_confirm_fixes, p.move_confirm_fixes) + 1
    v[P_NEED_S] = max(p.exit_confirm_s, p.move_confirm_s)
    v[P_MOVE_FIXES] = p.move_confirm_fixes
    v[P_MOVE_S] = p.move_confirm_s
    v[P_EXIT_FIXES] = p.exit_confirm_fixes
    v[P_EXIT_S] = p.exit_confirm_s
    v[P_LEAD] = lead
    v[P_BURST] = burst
    v.setflags(write=False)
    return v


@njit(cache=True)
def _np_max(a: float, b: float) -> float:
    """``np.maximum(a, b)``: a NaN on either side wins."""
    if math.isnan(a):
        return a
    if math.isnan(b) or b > a:
        return b
    return a


@njit(cache=True)
def _search_left(a: Any, v: int) -> int:
    """``np.searchsorted(a, v)`` (side left) for one int64 value, as a plain bisection."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def kept_pairs(kept_t: Any, pair_t: Any, pair_site: Any) -> Any:
    """(2, K) int64: (kept index, site) of the pairs whose fix time is a kept fix's, in pair
    order (``VehicleTracker._kept_pairs``: pairs before the first kept fix, or of a dropped
    fix, are left out).  Pairs come mostly in time order (a late backlog's come after the
    newer fixes'): each search starts from the previous pair's position, one step forward
    being the common case, and bisects only when that does not find it."""
    return kept_pairs_from(kept_t, pair_t, pair_site, 0)[0]


@njit(cache=True)
def kept_pairs_from(kept_t: Any, pair_t: Any, pair_site: Any, q_from: int) -> tuple[Any, int]:
    """:func:`kept_pairs`, given that every pair before ``q_from`` is older than the first
    kept fix (0 <= q_from <= len(pair_t)), and the first pair not older (len(pair_t) when
    none; 0 when there are no kept fixes): the leading scan starts at ``q_from``, so the
    answer is the same as from 0 (see ``schedule.rerun_kernel``'s pair hints)."""
    n = len(kept_t)
    m = len(pair_t)
    if m == 0 or n == 0:
        return np.empty((2, 0), np.int64), 0
    t_first = kept_t[0]
    # the leading pairs before the first kept fix (most of a vehicle's horizon, ~30 times the
    # re-run's own): skipped by a plain scan, no bookkeeping (any order: the scan stops at the
    # first pair not before it, and the loop below takes every pair from there on)
    q0 = q_from
    while q0 < m and pair_t[q0] < t_first:
        q0 += 1
    idx = np.empty(m - q0, np.int64)  # idx[q - q0]
    k = 0
    j = 0  # invariant after each pair: j = np.searchsorted(kept_t, pt)
    for q in range(q0, m):
        pt = pair_t[q]
        if pt < t_first:
            idx[q - q0] = -1
            continue
        if j < n and kept_t[j] < pt:
            j += 1
            if j < n and kept_t[j] < pt:
                j += _search_left(kept_t[j:], pt)
        elif j > 0 and kept_t[j - 1] >= pt:
            j = _search_left(kept_t, pt)
        if j < n and kept_t[j] == pt:
            idx[q - q0] = j
            k += 1
        else:
            idx[q - q0] = -1
    out = np.empty((2, k), np.int64)
    w = 0
    for q in range(q0, m):
        if idx[q - q0] >= 0:
            out[0, w] = idx[q - q0]
            out[1, w] = pair_site[q]
            w += 1
    return out, q0


@njit(cache=True)
def rerun_pairs(
    kept_t: Any, in_t: Any, in_site: Any, near_t: Any, near_site: Any, active: int
) -> Any:
    """A re-run's pair bookkeeping at once: the kept pairs (inside, near), the mask of fixes
    near or inside any site, and the sites with an inside fix from ``active`` on (ascending;
    ``schedule.visits_kernel.detect_visits_all_sites`` builds their masks itself)."""
    kin, knear, near_any, sites, _q_in, _q_near = rerun_pairs_from(
        kept_t, in_t, in_site, near_t, near_site, active, 0, 0
    )
    return kin, knear, near_any, sites


@njit(cache=True)
def rerun_pairs_from(
    kept_t: Any,
    in_t: Any,
    in_site: Any,
    near_t: Any,
    near_site: Any,
    active: int,
    in_from: int,
    near_from: int,
) -> Any:
    """:func:`rerun_pairs` with :func:`kept_pairs_from`'s start for each table; also returns
    the first pair of each not older than the first kept fix."""
    kin, q_in = kept_pairs_from(kept_t, in_t, in_site, in_from)
    knear, q_near = kept_pairs_from(kept_t, near_t, near_site, near_from)
    nk = len(kept_t)
    near_any = np.zeros(nk, np.bool_)
    for q in range(knear.shape[1]):
        near_any[knear[0, q]] = True
    for q in range(kin.shape[1]):
        near_any[kin[0, q]] = True
    cand = np.empty(kin.shape[1], np.int64)
    c = 0
    for q in range(kin.shape[1]):
        # (a repeat of the previous candidate changes no set: a vehicle's pairs come in runs
        # of one site, so the sort below sorts a few values, not one per inside fix)
        if kin[0, q] >= active and (c == 0 or kin[1, q] != cand[c - 1]):
            cand[c] = kin[1, q]
            c += 1
    srt = np.sort(cand[:c])
    sites = np.empty(c, np.int64)
    s_n = 0
    for q in range(c):
        if s_n == 0 or srt[q] != sites[s_n - 1]:
            sites[s_n] = srt[q]
            s_n += 1
    sites = sites[:s_n].copy()
    return kin, knear, near_any, sites, q_in, q_near


@njit(cache=True)
def _bad_step(jump_k: bool, gap_k: bool, speed_k: float, dx: float, dy: float, k: int) -> bool:
    """Step k-1 -> k is a jump, a gap or frozen (no displacement: ``dx``, ``dy`` are
    ``x[k] - x[k - 1]`` and ``y[k] - y[k - 1]``, read only for k > 0), or fix k's speed
    unknown.

    The per-fix helpers here take the fix's values, not the arrays: a compiled call with
    array arguments costs ~40 ns even when inlined (each array's reference count is taken and
    dropped), against ~2 ns with scalars, and the rules call them once per fix."""
    if jump_k or gap_k or not np.isfinite(speed_k):
        return True
    return k > 0 and dx == 0 and dy == 0


@njit(cache=True)
def structural(
    x: Any,
    y: Any,
    t_s: Any,
    speed: Any,
    still: Any,
    jump: Any,
    gap: Any,
    near_any: Any,
    active: int,
    pv: Any,
) -> Any:
    """Kept indices of ``VehicleTracker._checkpoints_in``'s checkpoints (ascending)."""
    n = len(t_s)
    out = np.empty(n, np.int64)
    n_out = 0
    crawl = pv[P_CRAWL]
    drift2 = pv[P_DRIFT2]
    need_fixes = int(pv[P_NEED_FIXES])
    need_s = pv[P_NEED_S]
    lead = int(pv[P_LEAD])
    k = active
    while k < n:
        # the next run [s, e) of fixes away from every fence, moving, with clean steps
        s = k
        while s < n and not _cond_at(
            near_any[s],
            still[s],
            jump[s],
            gap[s],
            speed[s],
            x[s] - x[s - 1],
            y[s] - y[s - 1],
            s,
            crawl,
        ):
            s += 1
        if s >= n:
            break
        e = s + 1
        while e < n and _cond_at(
            near_any[e],
            still[e],
            jump[e],
            gap[e],
            speed[e],
            x[e] - x[e - 1],
            y[e] - y[e - 1],
            e,
            crawl,
        ):
            e += 1
        k = e + 1  # fix e fails the condition
        b = s + lead
        if e - b < need_fixes:
            continue
        run_max = 0.0
        for q in range(e - b):
            d = math.hypot(x[b + q] - x[b], y[b + q] - y[b])
            run_max = d if q == 0 else _np_max(run_max, d)
            if run_max > drift2 and q >= need_fixes and t_s[b + q] - t_s[b] >= need_s:
                out[n_out] = b + q
                n_out += 1
                break
    return out[:n_out].copy()


@njit(cache=True)
def _cond_at(
    near_k: bool,
    still_k: bool,
    jump_k: bool,
    gap_k: bool,
    speed_k: float,
    dx: float,
    dy: float,
    k: int,
    crawl: float,
) -> bool:
    """``_checkpoints_in``'s per-fix condition (for fixes at or after ``active``), from fix
    k's values (see :func:`_bad_step`)."""
    if near_k or still_k or _bad_step(jump_k, gap_k, speed_k, dx, dy, k):
        return False
    return bool(speed_k >= crawl)


@njit(cache=True)
def settled(
    x: Any,
    y: Any,
    t_s: Any,
    speed: Any,
    still: Any,
    jump: Any,
    gap: Any,
    reported: Any,
    kin: Any,
    knear: Any,
    start: int,
    until: int,
    active: int,
    pv: Any,
) -> Any:
    """Kept indices of ``VehicleTracker._settled_checkpoints``' checkpoints (ascending);
    ``reported`` is the unit's own speed (all NaN: none)."""
    n = len(t_s)
    lead = int(pv[P_LEAD])
    lo = max(active + lead, start)
    hi = min(n - int(pv[P_BURST]) - 1, until)  # candidates i in [lo, hi)
    if hi <= lo:
        return np.empty(0, np.int64)
    crawl = pv[P_CRAWL]
    stop_speed = pv[P_STOP_SPEED]
    # motion: the lead steps up to i clean; backdating: fix i-1 not slow
    n_bad = np.zeros(n + 1, np.int64)
    for k in range(n):
        bad = _bad_step(jump[k], gap[k], speed[k], x[k] - x[k - 1], y[k] - y[k - 1], k)
        n_bad[k + 1] = n_bad[k] + (1 if bad else 0)
    ok = np.zeros(n + 1, np.bool_)  # ok[i]: candidate i survives so far
    any_ok = False
    for i in range(lo, hi):
        if n_bad[i + 1] != n_bad[i - lead]:
            continue
        rp = reported[i - 1]
        if speed[i - 1] >= crawl if math.isnan(rp) else rp >= stop_speed:
            ok[i] = True
            any_ok = True
    if not any_ok:
        return np.empty(0, np.int64)
    # stops: the last still fix j in [active, i), and the moves since
    last_still = np.empty(n, np.int64)  # last_still[k]: the last still fix <= k (from active)
    j = -1
    for k in range(n):
        if k >= active and still[k]:
            j = k
        last_still[k] = j
    has = False
    for i in range(lo, hi):
        if ok[i] and last_still[i - 1] >= 0:
            has = True
            break
    if has:
        # the numpy code's running maximum within each non-still run, via offsets by run id
        d = np.empty(n)
        seg_src = 0
        for k in range(n):
            st = k >= active and still[k]
            if st:
                seg_src = max(seg_src, k + 1)
            seg = min(seg_src, n - 1)
            # (a still fix measures 0: no hypot for it, most fixes of a parked vehicle)
            d[k] = 0.0 if st else math.hypot(x[k] - x[seg], y[k] - y[seg])
        big = d[0]
        for k in range(1, n):
            big = _np_max(big, d[k])  # d.max(): NaN if any
        big = big + 1.0
        moved = np.empty(n)
        run_id = 0
        acc = 0.0
        for k in range(n):
            if k >= active and still[k]:
                run_id += 1
            v = d[k] + run_id * big
            acc = v if k == 0 else _np_max(acc, v)
            moved[k] = acc - run_id * big
        far2 = pv[P_FAR2]
        move_fixes = pv[P_MOVE_FIXES]
        move_s = pv[P_MOVE_S]
        for i in range(lo, hi):
            if not ok[i]:
                continue
            jj = last_still[i - 1]
            if jj < 0:
                continue
            count = i - jj - 1
            span = t_s[i] - t_s[jj]
            if not (count >= move_fixes and span >= move_s and moved[i - 1] > far2):
                ok[i] = False
    i_last = -1
    for i in range(hi - 1, lo - 1, -1):
        if ok[i]:
            i_last = i
            break
    if i_last < 0:
        return np.empty(0, np.int64)
    # visits: per site with an inside fix in [active, i_last)
    m_in = kin.shape[1]
    sites_sel = np.empty(m_in, np.int64)
    c = 0
    for q in range(m_in):
        # (a repeat of the previous site changes no set: see rerun_pairs)
        if kin[0, q] >= active and kin[0, q] < i_last and (c == 0 or kin[1, q] != sites_sel[c - 1]):
            sites_sel[c] = kin[1, q]
            c += 1
    if c:
        srt = np.sort(sites_sel[:c])
        n_gap = np.zeros(n + 1, np.int64)
        n_still = np.zeros(n + 1, np.int64)
        for k in range(n):
            n_gap[k + 1] = n_gap[k] + (1 if gap[k] else 0)
            n_still[k + 1] = n_still[k] + (1 if still[k] else 0)
        exit_fixes = pv[P_EXIT_FIXES]
        exit_s = pv[P_EXIT_S]
        ins = np.zeros(n, np.bool_)
        nearm = np.zeros(n, np.bool_)
        n_near = np.zeros(n + 1, np.int64)
        for r in range(c):
            site = srt[r]
            if r > 0 and site == srt[r - 1]:
                continue
            ins[:] = False
            nearm[:] = False
            for q in range(m_in):
                if kin[1, q] == site and kin[0, q] >= active and kin[0, q] < i_last:
                    ins[kin[0, q]] = True
                    nearm[kin[0, q]] = True
            for q in range(knear.shape[1]):
                if knear[1, q] == site:
                    nearm[knear[0, q]] = True
            for k in range(n):
                n_near[k + 1] = n_near[k] + (1 if nearm[k] else 0)
            last = -1  # the last inside fix before i
            alive = False
            for i in range(active, i_last + 1):
                if i > active and ins[i - 1]:
                    last = i - 1
                if i < lo or not ok[i] or last < 0:
                    alive = alive or (i >= lo and ok[i])
                    continue
                beyond = (i - last - 1) - (n_near[i] - n_near[last + 1])
                moving = n_still[i] - n_still[last + 1] < i - last - 1
                exited = beyond >= exit_fixes and t_s[i - 1] - t_s[last] >= exit_s and moving
                gapped = n_gap[i + 1] > n_gap[last + 1]
                gap_later = n_gap[n] > n_gap[i + 1]
                if gapped or (exited and not gap_later):
                    alive = True
                else:
                    ok[i] = False
            if not alive:
                return np.empty(0, np.int64)
    # the first fix of each run of settled fixes (as the structural rule takes)
    out = np.empty(hi - lo, np.int64)
    n_out = 0
    for i in range(lo, hi):
        if ok[i] and not ok[i - 1]:
            out[n_out] = i
            n_out += 1
    return out[:n_out].copy()


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache): a cold compile takes tens of
    seconds on a loaded machine, which the first re-run would otherwise pay.  Call it where
    ``geofence.warm_up`` is called.  Runs each kernel on a small motion that reaches every
    branch (a structural run, still fixes, a site visited and left)."""
    from schedule.motion import Track, motion
    from schedule.tracker import VehicleTracker

    n = 80
    t = np.arange(n, dtype=np.int64) * 5_000_000
    lon = 37.6 + np.concatenate((np.zeros(20), np.arange(60) * 1e-4))
    lat = np.full(n, 55.7)
    speed = np.concatenate((np.zeros(20), np.full(60, 40.0)))
    tr = VehicleTracker("warm-up", ["s"])
    m = motion(Track(t, lon, lat, speed, np.full(n, np.nan)), tr.params)
    kept_t = t[m.keep]
    pair_t = kept_t[:25].copy()
    pair_s = np.zeros(25, np.int32)
    kin, knear, near_any, _sites = rerun_pairs(kept_t, pair_t, pair_s, pair_t, pair_s, 0)
    tr._checkpoints_in(m, near_any, kept_t, 0)
    tr._settled_checkpoints(m, kin, knear, kept_t, 0, len(kept_t), 0)


__all__ = [
    "N_PARAMS",
    "kept_pairs",
    "kept_pairs_from",
    "param_vector",
    "rerun_pairs",
    "rerun_pairs_from",
    "settled",
    "structural",
    "warm_up",
]

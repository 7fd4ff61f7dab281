"""The compiled visit detector: :func:`schedule.visits.detect_visits_for_site` in one pass.

Why compiled: the tracker re-runs the visit detector per site on every round that could report
something, over windows of a few hundred fixes; the numpy version
(:func:`schedule.visits._detect_visits_for_site_reference`, kept as the tests' reference) pays
numpy's per-call overhead ~20 times per site and a Python loop per piece (and recomputes the
dwell rule's cumulative sums over the whole candidate on every piece).  Here one loop walks the
pieces, counts the away fixes between them and scans the dwell rule incrementally.

Exactness: the outputs are the reference's bit for bit.  Integer counts (pieces, beyond, still,
gap, inside) are exact whatever the order.  The floats are computed by the same operations in
the same order: the slow-time sum is the reference's ``np.cumsum`` (a sequential sum) over the
same terms, continued rather than restarted when a candidate grows (every term of the dwell
rule at fix j looks only at fixes up to j, so the first index at which it holds cannot move
when ``last`` grows: scanning on from where the previous call stopped finds the index a full
recomputation finds); the spans, the inside share (count / count in float64), the rounding to
microseconds (``np.rint``: half to even, as Python's ``round``), the clock close (an int64 made
float64 before the sum, as Python does) and the median HDOP (sorted, ``0.5 * (a + b)``) are the
reference's expressions.  No fastmath.  The one difference the tests exclude is the sign of a
zero HDOP median: ``-0.0`` and ``0.0`` may sort either way (HDOP is never negative).

Compiled with ``cache=True``: the first process after an install or an edit pays the compile;
:func:`warm_up` does it at start, later processes load the machine code from numba's cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from schedule.events import ClosedBy
from schedule.motion import Motion
from schedule.params import DetectionParams
from schedule.select_kernel import lower_middle, select_middle
from schedule.visits import MotionCounts, VisitRecord, motion_counts

#: Columns of the integer output table (one row per visit).
V_SITE, V_FIRST, V_LAST, V_CONFIRM, V_ARRIVAL, V_DEPARTURE, V_CONFIRMED, V_CLOSED = range(8)
#: Columns of the float output table.
V_SHARE, V_HDOP = range(2)
#: ``V_CLOSED`` codes.
CLOSED_OPEN, CLOSED_EXIT, CLOSED_GAP = 0, 1, 2
_CLOSED: tuple[ClosedBy | None, ...] = (None, "exit", "gap")

#: Layout of the parameter vector (float64; the integer ``exit_confirm_fixes`` is compared as
#: the reference compares a Python int with it, exactly).
(
    P_MIN_DWELL, P_MIN_SLOW_SHARE, P_MIN_STILL, P_MIN_INSIDE_SHARE, P_EXIT_FIXES, P_EXIT_S,
    P_MAX_GAP, P_CRAWL,
) = range(8)  # fmt: skip

_OUTSIDE, _CANDIDATE, _VISITING = 0, 1, 2


def param_vector(p: DetectionParams) -> npt.NDArray[np.float64]:
    """The fields of ``p`` the kernel reads, in the ``P_*`` layout."""
    return np.array(
        (
            p.min_dwell_s,
            p.min_slow_share,
            p.min_still_s,
            p.min_inside_share,
            p.exit_confirm_fixes,
            p.exit_confirm_s,
            p.max_gap_s,
            p.crawl_speed_kmh,
        ),
        dtype=np.float64,
    )


#: The last parameters seen and their vector: a tracker passes the same DetectionParams
#: object on every call, and building the vector costs ~1 µs of a ~4 µs call.
_last_params: tuple[DetectionParams, npt.NDArray[np.float64]] | None = None


def _params(p: DetectionParams) -> npt.NDArray[np.float64]:
    """:func:`param_vector` of ``p``, cached by identity (DetectionParams is frozen)."""
    global _last_params
    last = _last_params  # one read: another thread may replace it meanwhile
    if last is not None and last[0] is p:
        return last[1]
    vec = param_vector(p)
    _last_params = (p, vec)
    return vec


@njit(cache=True)
def _grow(oi: Any, of: Any, cnt: int) -> tuple[Any, Any]:
    """Room for one more row (doubling)."""
    if cnt < oi.shape[0]:
        return oi, of
    cap = max(4, 2 * oi.shape[0])
    ni = np.empty((cap, oi.shape[1]), dtype=np.int64)
    nf = np.empty((cap, of.shape[1]), dtype=np.float64)
    ni[:cnt] = oi[:cnt]
    nf[:cnt] = of[:cnt]
    return ni, nf


@njit(cache=True)
def _median_hdop(hdop: Any, first: int, last: int) -> float:
    """Median of the non-NaN HDOPs of [first, last], NaN when none (as the reference's
    ``_median`` of the filtered slice: sorted, the middle value or ``0.5 * (a + b)``).

    The middle order statistics are selected (:mod:`schedule.select_kernel`, O(n)) rather
    than sorted: numba's sort cost ~20 µs of a ~40 µs re-run's visit detection.  Equal floats
    are the same value, so the selected ones are the sorted ones, except that ``-0.0 == 0.0``:
    with a zero among them the values are sorted as before (which zero lands where is the
    sort's own business)."""
    buf = np.empty(last - first + 1, dtype=np.float64)
    k = 0
    zero = False
    for j in range(first, last + 1):
        h = hdop[j]
        if not math.isnan(h):
            buf[k] = h
            k += 1
            if h == 0.0:
                zero = True
    if k == 0:
        return np.nan
    h2 = k // 2
    if zero:
        srt = np.sort(buf[:k])
        if k % 2:
            return float(srt[h2])
        return float(0.5 * (srt[h2 - 1] + srt[h2]))
    upper = select_middle(buf, k)
    if k % 2:
        return float(upper)
    return float(0.5 * (lower_middle(buf, k) + upper))


@njit(cache=True)
def _round_us(x: float) -> int:
    """Python's ``round(x)`` of a float (half to even), as an int64."""
    return int(np.rint(x))


@njit(cache=True)
def _site(
    t_s: Any,
    still: Any,
    gap: Any,
    crawl: Any,
    n_gap: Any,
    n_still: Any,
    inside: Any,
    near: Any,
    hdop: Any,
    active: int,
    site: int,
    t0_us: int,
    has_now: bool,
    now_us: int,
    prm: Any,
    oi: Any,
    of: Any,
    cnt: int,
) -> tuple[Any, Any, int]:
    """One site's visits appended to the output tables from row ``cnt``; returns the tables
    (grown when needed) and the new row count.  ``inside``/``near`` are the caller's masks:
    the reference's ``near | inside`` and ``inside & near`` with fixes before ``active`` away
    are applied per fix here."""
    n = t_s.shape[0]
    min_dwell = prm[P_MIN_DWELL]
    min_slow_share = prm[P_MIN_SLOW_SHARE]
    min_still = prm[P_MIN_STILL]
    min_inside_share = prm[P_MIN_INSIDE_SHARE]
    exit_fixes = prm[P_EXIT_FIXES]
    exit_s = prm[P_EXIT_S]

    state = _OUTSIDE
    first = -1
    last = -1
    confirm_k = -1
    # incremental dwell scan of the candidate [first, ...]: next fix, slow time so far,
    # start of the current still run, first fix of a long-enough standstill
    pos = 0
    slow = 0.0
    run_start = -1
    still_from = -1
    n_in = 0  # inside fixes of the current candidate / visit
    i = active if active > 0 else 0
    while True:
        # -- next piece [s, e): a run of inside fixes, cut before every gap step
        while i < n and not inside[i]:
            i += 1
        piece = i < n
        s = i
        e = i
        if piece:
            e = i + 1
            while e < n and inside[e] and not gap[e]:
                e += 1
            i = e
        # -- close what the piece (or the end of the data) ends
        reason = -1  # -1: nothing to close now
        if state != _OUTSIDE:
            nxt = s if piece else n
            gapped = n_gap[nxt + 1] > n_gap[last + 1] if piece else n_gap[n] > n_gap[last + 1]
            if gapped:
                nxt = np.searchsorted(n_gap, n_gap[last + 1] + 1) - 1
            # exit_confirmed(last, nxt)
            beyond = 0
            for j in range(last + 1, nxt):
                if not (j >= active and (near[j] or inside[j])):
                    beyond += 1
            exited = (
                beyond >= exit_fixes
                and t_s[nxt - 1] - t_s[last] >= exit_s
                and n_still[nxt] - n_still[last + 1] < nxt - last - 1
            )
            if gapped:
                reason = CLOSED_EXIT if exited else CLOSED_GAP
            elif exited:
                reason = CLOSED_EXIT
            elif not piece:
                reason = CLOSED_OPEN
                if has_now:
                    late = np.float64(now_us) - (np.float64(t0_us) + t_s[n - 1] * 1e6)
                    if late > prm[P_MAX_GAP] * 1e6:
                        reason = CLOSED_GAP
            if reason >= 0:
                share = np.float64(n_in) / np.float64(last + 1 - first)
                if confirm_k >= 0 and not share < min_inside_share:
                    oi, of = _grow(oi, of, cnt)
                    oi[cnt, V_SITE] = site
                    oi[cnt, V_FIRST] = first
                    oi[cnt, V_LAST] = last
                    oi[cnt, V_CONFIRM] = confirm_k
                    oi[cnt, V_ARRIVAL] = t0_us + _round_us(t_s[first] * 1e6)
                    oi[cnt, V_DEPARTURE] = t0_us + _round_us(t_s[last] * 1e6)
                    oi[cnt, V_CONFIRMED] = t0_us + _round_us(t_s[confirm_k] * 1e6)
                    oi[cnt, V_CLOSED] = reason
                    of[cnt, V_SHARE] = share
                    of[cnt, V_HDOP] = _median_hdop(hdop, first, last)
                    cnt += 1
                state = _OUTSIDE
            else:  # the candidate / visit goes on through this piece
                last = e - 1
                n_in += e - s
        if not piece:
            return oi, of, cnt
        if state == _OUTSIDE:
            state = _CANDIDATE
            first = s
            last = e - 1
            n_in = e - s
            confirm_k = -1
            pos = first
            slow = 0.0
            run_start = -1
            still_from = -1
        if state == _CANDIDATE:
            # the reference's _confirm_index(first, last), continued from ``pos``
            t_first = t_s[first]
            for j in range(pos, last + 1):
                if j > first:
                    slow = slow + (t_s[j] - t_s[j - 1] if crawl[j] and crawl[j - 1] else 0.0)
                if still[j]:
                    if j == first or not still[j - 1]:
                        run_start = j
                    if still_from < 0 and t_s[j] - t_s[run_start] >= min_still:
                        still_from = j
                span = t_s[j] - t_first
                if still_from >= 0 and span >= min_dwell and slow >= min_slow_share * span:
                    confirm_k = j
                    break
            pos = last + 1
            if confirm_k >= 0:
                state = _VISITING


@njit(cache=True)
def site_visits(
    t_s: Any,
    still: Any,
    gap: Any,
    crawl: Any,
    n_gap: Any,
    n_still: Any,
    inside: Any,
    near: Any,
    hdop: Any,
    active: int,
    site: int,
    t0_us: int,
    has_now: bool,
    now_us: int,
    prm: Any,
) -> tuple[Any, Any]:
    """One site's visits as (int table, float table), ``V_*`` columns, rows in time order."""
    oi = np.empty((0, 8), dtype=np.int64)
    of = np.empty((0, 2), dtype=np.float64)
    oi, of, cnt = _site(
        t_s, still, gap, crawl, n_gap, n_still, inside, near, hdop, active, site, t0_us,
        has_now, now_us, prm, oi, of, 0,
    )  # fmt: skip
    return oi[:cnt], of[:cnt]


@njit(cache=True)
def all_site_visits(
    t_s: Any,
    still: Any,
    gap: Any,
    speed_kmh: Any,
    hdop: Any,
    in_idx: Any,
    in_site: Any,
    near_idx: Any,
    near_site: Any,
    active: int,
    t0_us: int,
    has_now: bool,
    now_us: int,
    prm: Any,
) -> tuple[Any, Any]:
    """The visits of every site with an inside fix at or after ``active``, sites ascending,
    each site's in time order (the tracker's per-site loop, masks built from the (fix, site)
    pairs here), as (int table, float table)."""
    n = t_s.shape[0]
    crawl = np.empty(n, dtype=np.bool_)
    n_gap = np.zeros(n + 1, dtype=np.int64)
    n_still = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        crawl[j] = speed_kmh[j] < prm[P_CRAWL]
        n_gap[j + 1] = n_gap[j] + (1 if gap[j] else 0)
        n_still[j + 1] = n_still[j] + (1 if still[j] else 0)
    cand = np.empty(in_idx.shape[0], dtype=np.int64)
    k = 0
    for q in range(in_idx.shape[0]):
        # a repeat of the previous candidate changes no set (pairs come in runs of one site:
        # np.unique then sorts a few values, not one per inside fix)
        if in_idx[q] >= active and (k == 0 or in_site[q] != cand[k - 1]):
            cand[k] = in_site[q]
            k += 1
    sites = np.unique(cand[:k])
    oi = np.empty((0, 8), dtype=np.int64)
    of = np.empty((0, 2), dtype=np.float64)
    cnt = 0
    inside = np.zeros(n, dtype=np.bool_)
    near = np.zeros(n, dtype=np.bool_)
    for site in sites:
        for q in range(in_idx.shape[0]):
            if in_site[q] == site:
                inside[in_idx[q]] = True
        for q in range(near_idx.shape[0]):
            if near_site[q] == site:
                near[near_idx[q]] = True
        oi, of, cnt = _site(
            t_s, still, gap, crawl, n_gap, n_still, inside, near, hdop, active, site, t0_us,
            has_now, now_us, prm, oi, of, cnt,
        )  # fmt: skip
        inside[:] = False
        near[:] = False
    return oi[:cnt], of[:cnt]


def _records(oi: npt.NDArray[np.int64], of: npt.NDArray[np.float64]) -> list[VisitRecord]:
    """VisitRecords of the kernel's tables (Python ints and floats, as the reference's)."""
    closed = _CLOSED
    nan = np.nan  # the reference's very object: records compare equal (``==``) as its do
    return [
        VisitRecord(
            site=r[V_SITE],
            first=r[V_FIRST],
            last=r[V_LAST],
            arrival_us=r[V_ARRIVAL],
            departure_us=r[V_DEPARTURE],
            confirmed_us=r[V_CONFIRMED],
            fix_count=r[V_LAST] - r[V_FIRST] + 1,
            inside_share=f[V_SHARE],
            median_hdop=f[V_HDOP] if f[V_HDOP] == f[V_HDOP] else nan,
            closed_by=closed[r[V_CLOSED]],
        )
        for r, f in zip(oi.tolist(), of.tolist(), strict=True)
    ]


def records_of(oi: npt.NDArray[np.int64], of: npt.NDArray[np.float64]) -> list[VisitRecord]:
    """:func:`_records` (for ``schedule.rerun_kernel.detect``'s visit rows)."""
    return _records(oi, of)


def visit_params(p: DetectionParams) -> npt.NDArray[np.float64]:
    """:func:`param_vector` of ``p``, cached (:func:`_params`)."""
    return _params(p)


def _active(active_from: int, n: int) -> int:
    """``active_from`` as the first index the reference's ``near[:active_from] = False``
    leaves alone (Python slice semantics, negative counts from the end)."""
    if active_from < 0:
        return max(n + active_from, 0)
    return min(active_from, n)


def detect_visits_for_site(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    site: int,
    inside: npt.NDArray[np.bool_],
    near: npt.NDArray[np.bool_],
    hdop: npt.NDArray[np.float64],
    *,
    active_from: int = 0,
    now_us: int | None = None,
    common: MotionCounts | None = None,
    prm: npt.NDArray[np.float64] | None = None,
) -> list[VisitRecord]:
    """:func:`schedule.visits.detect_visits_for_site`, compiled (same signature; ``prm``: a
    cached :func:`param_vector` of ``p``, built here when None)."""
    if hdop.dtype != np.float64:
        # the reference's median of float32 HDOPs is float64 arithmetic up to 32 values and
        # float32 beyond (``_median``'s two paths); the tracker's HDOPs are float64
        from schedule.visits import _detect_visits_for_site_reference

        return _detect_visits_for_site_reference(
            m, p, t0_us, site, inside, near, hdop,
            active_from=active_from, now_us=now_us, common=common,
        )  # fmt: skip
    n = len(m.t_s)
    crawl, n_gap, n_still = common if common is not None else motion_counts(m, p)
    oi, of = site_visits(
        m.t_s, m.still, m.gap, crawl, n_gap, n_still, inside, near, hdop,
        _active(active_from, n), site, t0_us, now_us is not None,
        0 if now_us is None else now_us, _params(p) if prm is None else prm,
    )  # fmt: skip
    return _records(oi, of) if len(oi) else []


def detect_visits_all_sites(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    kin: npt.NDArray[np.int64],
    knear: npt.NDArray[np.int64],
    hdop: npt.NDArray[np.float64],
    *,
    active_from: int = 0,
    now_us: int | None = None,
    prm: npt.NDArray[np.float64] | None = None,
) -> list[VisitRecord]:
    """Every site's visits from the (2, K) kept-fix pairs ``kin`` (inside) and ``knear``
    (fence + margin): the tracker's loop ``for site in sorted(sites with an inside fix at or
    after active_from): detect_visits_for_site(...)`` in one call, in the same order (before
    ``drop_dominated``).  Fix indices in the pairs must be in [0, len(m.t_s)); ``hdop`` must be
    float64 (as the tracker's are: see :func:`detect_visits_for_site` for float32)."""
    if hdop.dtype != np.float64:
        raise TypeError(f"detect_visits_all_sites needs float64 HDOPs, got {hdop.dtype}")
    n = len(m.t_s)
    oi, of = all_site_visits(
        m.t_s, m.still, m.gap, m.speed_kmh, hdop, kin[0], kin[1], knear[0], knear[1],
        _active(active_from, n), t0_us, now_us is not None,
        0 if now_us is None else now_us, _params(p) if prm is None else prm,
    )  # fmt: skip
    return _records(oi, of) if len(oi) else []


def warm_up() -> None:
    """Compile the kernels now (or load them from numba's cache): a cold compile on the
    engine's first re-run would hold that round and every fix behind it."""
    n = 6
    t_s = np.arange(n, dtype=np.float64) * 100.0
    still = np.ones(n, dtype=np.bool_)
    gap = np.zeros(n, dtype=np.bool_)
    speed = np.zeros(n, dtype=np.float64)
    hdop = np.ones(n, dtype=np.float64)
    inside = np.ones(n, dtype=np.bool_)
    near = np.ones(n, dtype=np.bool_)
    prm = param_vector(DetectionParams())
    zero = np.zeros(1, dtype=np.int64)
    n_gap = np.concatenate((zero, np.cumsum(gap)))
    n_still = np.concatenate((zero, np.cumsum(still)))
    crawl = speed < 10.0
    site_visits(t_s, still, gap, crawl, n_gap, n_still, inside, near, hdop, 0, 1, 0, True, 0, prm)
    pairs = np.stack((np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int64)))
    all_site_visits(
        t_s, still, gap, speed, hdop, pairs[0], pairs[1], pairs[0], pairs[1], 0, 0, False, 0, prm
    )

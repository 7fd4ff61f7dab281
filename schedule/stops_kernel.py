"""The compiled stop chain walk: :func:`schedule.stops.detect_stops` in one pass of machine code.

Why compiled: the tracker re-runs stop detection on every round that could report something,
over a few hundred kept fixes, and the numpy chain walk (kept as
:func:`schedule.stops.detect_stops_reference`, the tests' reference) pays numpy's per-call
overhead ~10 times per still run (anchor and head medians, backdating, the extent window, the
jitter test); on such short arrays that overhead, not the arithmetic, was the cost
(docs/bench/detect.md: 1.5 s of 6.5 s of re-runs at 2,000-fix batches).  Here the pieces of
:func:`schedule.motion.cut_runs` are found while walking, and every helper is a loop over the
fixes it needs.

Exactness: every helper is a transcription of its numpy counterpart in schedule/stops.py,
operation for operation, in IEEE doubles without fastmath: ``np.hypot`` and numba's
``math.hypot`` are both the C library's ``hypot``; a median sorts the same values and takes the
same ``0.5 * (a + b)`` (NaN sorts last, as numpy's does); ``searchsorted`` is numba's, on the
same sorted times.  Two comparisons of the reference use *CPython's* ``math.hypot`` (its own
algorithm, not libm's; both are within 1 ulp of the true value): the head-to-anchor distance
against ``stop_radius_m`` and the merged medians against ``stop_merge_m``.  Where libm's answer
lies within 2**-48 (relative) of that threshold the two could disagree, so the kernel gives up
(:data:`FALLBACK`) and the wrapper runs the reference for that call; away from it they cannot.

The state machine is the table :data:`schedule.stops.TRANSITIONS`, encoded by
:func:`encode_table` at import as an integer array (``table[state, input]`` = next state, or
:data:`ILLEGAL`); the kernel takes every step through that array, and an edge the table lacks
stops the walk (:data:`ILLEGAL_STEP`) so that the wrapper raises ``IllegalTransition``.

Compiled with ``cache=True``: the first process after an install or an edit pays the compile
(:func:`warm_up` does it at start), later ones load the machine code from numba's cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from numba import njit

from schedule.select_kernel import lower_middle, select_middle

_S = TypeVar("_S", bound=Enum)
_I = TypeVar("_I", bound=Enum)

#: State codes of the encoded table (``schedule.stops`` maps its StopState members onto them).
IDLE, PENDING, STOPPED = 0, 1, 2
#: Input codes (StopInput members).
SLOW, JOIN, LONG_ENOUGH, BREAK = 0, 1, 2, 3
#: A (state, input) pair the table does not hold.
ILLEGAL = -1
#: Kernel status: a result; the reference must decide (see the module docstring); the walk met
#: an edge the table lacks (``info`` = state * 8 + input).
DONE, FALLBACK, ILLEGAL_STEP = 0, 1, 2
#: ``closed_by`` codes of the record rows.
OPEN, EXIT, GAP, TELEPORT = 0, 1, 2, 3
#: added to a row's ``closed_by`` code when the record was merged from back-to-back stops
MERGED = 4
#: Columns of the record rows: ints (first, last, confirm, closed_by) and floats (x, y, and the
#: first and last fix times, so the wrapper rounds Python floats, not numpy scalars: ~10x
#: cheaper, the same IEEE product and the same round-half-even).
R_FIRST, R_LAST, R_CONFIRM, R_CLOSED = range(4)
R_X, R_Y, R_T_FIRST, R_T_LAST = range(4)
#: Columns of the parameter row (:func:`param_row`).
(
    P_STOP_SPEED, P_CRAWL_SPEED, P_STOP_RADIUS, P_SPEED_WINDOW, P_STOP_EXTENT, P_DRIFT_RADIUS,
    P_MOVE_CONFIRM_S, P_MOVE_CONFIRM_FIXES, P_TELEPORT_CHECK, P_STOP_MIN, P_MERGE_GAP, P_MERGE_M,
) = range(12)  # fmt: skip
N_PARAMS = 12

#: schedule.motion.BURST_FIXES and schedule.stops._ANCHOR_FIXES (numba freezes globals; a test
#: checks they equal the Python constants).
BURST = 5
ANCHOR = 10
#: Medians of at most this many values sort in a fixed scratch array (insertion sort).
SHORT = 16
#: A squared distance this far (relative) from the squared threshold decides a hypot comparison.
SQUARE_SLACK = 1e-12
#: libm's and CPython's hypot agree on ``h <= r`` unless h is this close to r (relative).
NEAR_REL = 2.0**-48


def encode_table(
    transitions: Mapping[tuple[_S, _I], _S],
    state_code: Mapping[_S, int],
    input_code: Mapping[_I, int],
) -> npt.NDArray[np.int64]:
    """The transition table as ``table[state, input]`` = next state code (:data:`ILLEGAL`
    where the table has no edge), so the compiled walk is driven by the same table."""
    table = np.full((len(state_code), len(input_code)), ILLEGAL, dtype=np.int64)
    for (state, inp), nxt in transitions.items():
        table[state_code[state], input_code[inp]] = state_code[nxt]
    return table


def param_row(
    stop_speed_kmh: float,
    crawl_speed_kmh: float,
    stop_radius_m: float,
    speed_window_s: float,
    stop_extent_m: float,
    drift_radius_m: float,
    move_confirm_s: float,
    move_confirm_fixes: int,
    teleport_check_s: float,
    stop_min_s: float,
    stop_merge_gap_s: float,
    stop_merge_m: float,
) -> npt.NDArray[np.float64]:
    """The thresholds the walk reads, as one float64 row (one argument instead of twelve: the
    dispatcher's per-argument cost matters on 40-fix calls).  ``move_confirm_fixes`` is an
    integer below 2**53, so the float holds it exactly and ``count < it`` is unchanged."""
    row = np.empty(N_PARAMS, dtype=np.float64)
    row[P_STOP_SPEED] = stop_speed_kmh
    row[P_CRAWL_SPEED] = crawl_speed_kmh
    row[P_STOP_RADIUS] = stop_radius_m
    row[P_SPEED_WINDOW] = speed_window_s
    row[P_STOP_EXTENT] = stop_extent_m
    row[P_DRIFT_RADIUS] = drift_radius_m
    row[P_MOVE_CONFIRM_S] = move_confirm_s
    row[P_MOVE_CONFIRM_FIXES] = move_confirm_fixes
    row[P_TELEPORT_CHECK] = teleport_check_s
    row[P_STOP_MIN] = stop_min_s
    row[P_MERGE_GAP] = stop_merge_gap_s
    row[P_MERGE_M] = stop_merge_m
    return row


@njit(cache=True, nogil=True)
def _median(a: Any, lo: int, hi: int, buf: Any) -> float:
    """schedule.stops._median(a[lo:hi]) (hi > lo): the same order statistics, NaN last.

    ``buf`` is scratch of at least ``hi - lo`` values, allocated once per walk.  Up to
    :data:`SHORT` values (the 10-fix anchors and heads, several per still run) are
    insertion-sorted there; longer slices (a stop's own fixes, hundreds) are partitioned
    around the middle (:mod:`schedule.select_kernel`, O(n); a full sort costs ~50 ns a value),
    unless a NaN is among them: there numpy's sort order (NaN last) decides, so they are sorted
    as numpy sorts.  Equal values can only differ in the sign of a zero, which positions from
    :func:`schedule.motion.local_xy` never have (``a - a`` is +0.0).
    """
    m = hi - lo
    if m <= SHORT:
        for i in range(m):
            v = a[lo + i]
            j = i
            # v < buf[j-1] in numpy's sort order: NaN after every number
            while j > 0 and (v < buf[j - 1] or (buf[j - 1] != buf[j - 1] and v == v)):
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
        k = m // 2
        if m % 2:
            return float(buf[k])
        return float(0.5 * (buf[k - 1] + buf[k]))
    for i in range(m):
        v = a[lo + i]
        if v != v:
            srt = np.sort(a[lo:hi])
            k = m // 2
            if m % 2:
                return float(srt[k])
            return float(0.5 * (srt[k - 1] + srt[k]))
        buf[i] = v
    upper = select_middle(buf, m)  # afterwards buf[:m // 2] <= buf[m // 2] <= the rest
    if m % 2:
        return upper
    return float(0.5 * (lower_middle(buf, m) + upper))


@njit(cache=True, nogil=True)
def _hypot_le(dx: float, dy: float, r: float) -> bool:
    """``math.hypot(dx, dy) <= r`` (libm's hypot, as ``np.hypot``), mostly without calling it.

    ``dx*dx + dy*dy`` is within 3 ulps of the true square and libm's hypot within 1 ulp of the
    true root, so a square beyond ``r*r`` by more than a relative :data:`SQUARE_SLACK` (10^-12,
    thousands of ulps) decides the comparison the same way; only the rest (also NaN, overflow,
    underflow) calls hypot (~20 ns, against ~1 ns for the square).
    """
    d2 = dx * dx + dy * dy
    r2 = r * r
    if d2 < r2 * (1.0 - SQUARE_SLACK):
        return True
    if d2 > r2 * (1.0 + SQUARE_SLACK):
        return False
    return math.hypot(dx, dy) <= r


@njit(cache=True, nogil=True)
def _hypot_gt(dx: float, dy: float, r: float) -> bool:
    """``math.hypot(dx, dy) > r``, decided as :func:`_hypot_le` decides (NaN: False)."""
    d2 = dx * dx + dy * dy
    r2 = r * r
    if d2 < r2 * (1.0 - SQUARE_SLACK):
        return False
    if d2 > r2 * (1.0 + SQUARE_SLACK):
        return True
    return math.hypot(dx, dy) > r


@njit(cache=True, nogil=True)
def _near(h: float, r: float) -> bool:
    """libm's hypot ``h`` is too close to threshold ``r`` for CPython's to surely agree."""
    return abs(h - r) <= r * NEAR_REL


@njit(cache=True, nogil=True)
def _jitter(t_s: Any, x: Any, y: Any, last: int, nxt: int, ax: float, ay: float, prm: Any) -> bool:
    """schedule.stops._between_is_jitter."""
    n = len(t_s)
    count = nxt - last - 1
    t_end = t_s[nxt] if nxt < n else t_s[n - 1]
    if count < prm[P_MOVE_CONFIRM_FIXES] or t_end - t_s[last] < prm[P_MOVE_CONFIRM_S]:
        return True
    drift = prm[P_DRIFT_RADIUS]
    for j in range(last + 1, nxt):  # noqa: SIM110 - a plain loop compiles to a plain loop
        if not _hypot_le(x[j] - ax, y[j] - ay, drift):
            return False
    return True


@njit(cache=True, nogil=True)
def _split_reason(t_s: Any, gap: Any, k: int, prm: Any) -> int:
    """schedule.stops._split_reason."""
    return GAP if gap[k] or t_s[k] - t_s[k - 1] > prm[P_TELEPORT_CHECK] else TELEPORT


@njit(cache=True, nogil=True)
def _extent_cut(
    x: Any, y: Any, first: int, s: int, e: int, hx: float, hy: float, ext: float
) -> int:
    """schedule.stops._extent_cut: the 5-fix windows' beyond flags kept as the low bits of an
    integer (bit k: fix i - k), so no array is built."""
    lo = max(first, s - BURST + 1)
    bits = 0
    for i in range(e - lo):
        beyond = _hypot_gt(x[lo + i] - hx, y[lo + i] - hy, ext)
        bits = ((bits << 1) | (1 if beyond else 0)) & ((1 << BURST) - 1)
        if i < s - lo:
            continue  # fixes before s were judged with the previous piece
        wlen = min(i + 1, BURST)
        cnt = 0
        for k in range(wlen):  # branch-free: the count is all most fixes need (~1/3 faster)
            cnt += (bits >> k) & 1
        if cnt * 2 > wlen:
            top = -1
            for k in range(wlen):
                if (bits >> k) & 1:
                    top = k
            return lo + i - top  # the window's first fix beyond
    return e


@njit(cache=True, nogil=True)
def _record(
    x: Any, y: Any, first: int, last: int, reason: int, n_rec: int, ints: Any, flts: Any, buf: Any
) -> None:
    ints[n_rec, R_FIRST] = first
    ints[n_rec, R_LAST] = last
    ints[n_rec, R_CLOSED] = reason
    flts[n_rec, R_X] = _median(x, first, last + 1, buf)
    flts[n_rec, R_Y] = _median(y, first, last + 1, buf)


@njit(cache=True, nogil=True)
def _close(
    t_s: Any,
    x: Any,
    y: Any,
    rep: Any,
    prm: Any,
    state: int,
    first: int,
    last: int,
    reason: int,
    n_rec: int,
    ints: Any,
    flts: Any,
    buf: Any,
) -> int:
    """The ``close`` of the reference: a STOPPED chain becomes a record, ending where the unit
    last reported standstill if that keeps it a stop.  Returns the new record count."""
    if state != STOPPED:
        return n_rec
    end = last
    for j in range(last, first - 1, -1):
        if not rep[j] >= prm[P_STOP_SPEED]:
            if t_s[j] - t_s[first] >= prm[P_STOP_MIN]:
                end = j
            break
    _record(x, y, first, end, reason, n_rec, ints, flts, buf)
    return n_rec + 1


@njit(cache=True, nogil=True)
def detect(
    t_s: Any,
    x: Any,
    y: Any,
    speed: Any,
    rep: Any,
    still: Any,
    jump: Any,
    gap: Any,
    table: Any,
    prm: Any,
    active_from: int,
    stale: bool,
) -> tuple[int, int, int, Any, Any]:
    """The chain walk of schedule.stops.detect_stops_reference over n >= 1 kept fixes.

    Returns (status, info, pending first fix or -1, int rows, float rows) with one row per
    stop (see R_* and the module docstring; status FALLBACK or ILLEGAL_STEP: no rows).
    """
    n = len(t_s)
    ints = np.empty((n, 4), dtype=np.int64)
    flts = np.empty((n, 4), dtype=np.float64)
    buf = np.empty(max(n, SHORT), dtype=np.float64)  # the medians' scratch
    none_i = np.empty((0, 4), dtype=np.int64)
    none_f = np.empty((0, 4), dtype=np.float64)
    # nsa[i]: the first split step at or after fix i (n: none); first_split_after(i) = nsa[i+1]
    nsa = np.empty(n + 1, dtype=np.int64)
    nsa[n] = n
    for i in range(n - 1, -1, -1):
        nsa[i] = i if (jump[i] or gap[i]) else nsa[i + 1]
    # slow = still, but False before active_from (a slice bound, negative counts from the end)
    slow_from = active_from if active_from >= 0 else max(n + active_from, 0)
    stop_speed = prm[P_STOP_SPEED]
    radius = prm[P_STOP_RADIUS]
    ext = prm[P_STOP_EXTENT]
    stop_min = prm[P_STOP_MIN]

    n_rec = 0
    state = IDLE
    first = -1
    last = -1
    prev_last = -1
    hx0 = 0.0
    hy0 = 0.0
    pos = 0  # where the search for the next piece of cut_runs resumes
    todo_s = -1  # the piece pushed back onto the reference's todo list (-1: none)
    todo_e = -1
    while True:
        if todo_s >= 0:
            s = todo_s
            e = todo_e
            todo_s = -1
        else:
            s = max(pos, slow_from)
            while s < n and not still[s]:
                s += 1
            if s >= n:
                break
            e = s + 1
            while e < n and still[e] and not (jump[e] or gap[e]):
                e += 1
            pos = e
        if state != IDLE:
            joined = False
            if nsa[last + 1] > s:  # no split in (last, s]
                lo = max(first, last - ANCHOR + 1)
                ax = _median(x, lo, last + 1, buf)
                ay = _median(y, lo, last + 1, buf)
                hi = min(e, s + ANCHOR)
                hx = _median(x, s, hi, buf)
                hy = _median(y, s, hi, buf)
                h = math.hypot(hx - ax, hy - ay)
                if _near(h, radius):
                    return FALLBACK, 0, -1, none_i, none_f
                joined = h <= radius
                joined = joined and _jitter(t_s, x, y, last, s, ax, ay, prm)
            if joined:
                cut = _extent_cut(x, y, first, s, e, hx0, hy0, ext)
                if cut > s:
                    nxt = table[state, JOIN]
                    if nxt < 0:
                        return ILLEGAL_STEP, state * 8 + JOIN, -1, none_i, none_f
                    state = nxt
                    last = cut - 1
                    if state == PENDING and t_s[last] - t_s[first] >= stop_min:
                        nxt = table[state, LONG_ENOUGH]
                        if nxt < 0:
                            return ILLEGAL_STEP, state * 8 + LONG_ENOUGH, -1, none_i, none_f
                        state = nxt
                if cut < e:  # it has crept out of its place: moved on
                    n_rec = _close(
                        t_s, x, y, rep, prm, state, first, last, EXIT, n_rec, ints, flts, buf
                    )
                    nxt = table[state, BREAK]
                    if nxt < 0:
                        return ILLEGAL_STEP, state * 8 + BREAK, -1, none_i, none_f
                    state = nxt
                    prev_last = last
                    todo_s = cut
                    todo_e = e
                    continue
            else:
                # why_ended(s): a split at the chain's end with only jitter before it, or a move
                reason = EXIT
                k = nsa[last + 1]
                if k <= s and k < n:
                    lo = max(first, last - ANCHOR + 1)
                    ax = _median(x, lo, last + 1, buf)
                    ay = _median(y, lo, last + 1, buf)
                    if _jitter(t_s, x, y, last, k, ax, ay, prm):
                        reason = _split_reason(t_s, gap, k, prm)
                n_rec = _close(
                    t_s, x, y, rep, prm, state, first, last, reason, n_rec, ints, flts, buf
                )
                nxt = table[state, BREAK]
                if nxt < 0:
                    return ILLEGAL_STEP, state * 8 + BREAK, -1, none_i, none_f
                state = nxt
        if state == IDLE:
            floor = max(active_from, ints[n_rec - 1, R_LAST] + 1 if n_rec else 0, prev_last + 1)
            # _backdate
            lo = max(floor, np.searchsorted(t_s, t_s[s] - prm[P_SPEED_WINDOW]))
            first = s
            if lo < s:
                hi = min(e, s + ANCHOR)
                hx = _median(x, s, hi, buf)
                hy = _median(y, s, hi, buf)
                first = lo
                for j in range(s - 1, lo - 1, -1):
                    r = rep[j]
                    slow_j = speed[j] < prm[P_CRAWL_SPEED] if r != r else r < stop_speed
                    near = _hypot_le(x[j] - hx, y[j] - hy, radius)
                    if not (near and slow_j and not (jump[j + 1] or gap[j + 1])):
                        first = j + 1
                        break
            if first == s:  # _standing_from
                for j in range(s, e):
                    if not rep[j] >= stop_speed:
                        first = j
                        break
            hi = min(e, first + ANCHOR)
            hx0 = _median(x, first, hi, buf)
            hy0 = _median(y, first, hi, buf)
            cut = _extent_cut(x, y, first, first, e, hx0, hy0, ext)
            nxt = table[state, SLOW]
            if nxt < 0:
                return ILLEGAL_STEP, state * 8 + SLOW, -1, none_i, none_f
            state = nxt
            last = max(cut - 1, first)
            if cut < e:  # stood, then crept out of its place within one still run
                if state == PENDING and t_s[last] - t_s[first] >= stop_min:
                    nxt = table[state, LONG_ENOUGH]
                    if nxt < 0:
                        return ILLEGAL_STEP, state * 8 + LONG_ENOUGH, -1, none_i, none_f
                    state = nxt
                n_rec = _close(
                    t_s, x, y, rep, prm, state, first, last, EXIT, n_rec, ints, flts, buf
                )
                nxt = table[state, BREAK]
                if nxt < 0:
                    return ILLEGAL_STEP, state * 8 + BREAK, -1, none_i, none_f
                state = nxt
                prev_last = last
                if max(cut, first + 1) < e:
                    todo_s = max(cut, first + 1)
                    todo_e = e
                continue
        prev_last = e - 1
        if state == PENDING and t_s[last] - t_s[first] >= stop_min:
            nxt = table[state, LONG_ENOUGH]
            if nxt < 0:
                return ILLEGAL_STEP, state * 8 + LONG_ENOUGH, -1, none_i, none_f
            state = nxt
    pending = first if state == PENDING else -1
    if state != IDLE:
        # the last chain: closed if followed by a confirmed move, a jump or a gap, else open
        tail = -1
        k = nsa[last + 1]
        lo = max(first, last - ANCHOR + 1)
        ax = _median(x, lo, last + 1, buf)
        ay = _median(y, lo, last + 1, buf)
        if k < n and _jitter(t_s, x, y, last, k, ax, ay, prm):
            # a split at its end; a jump only once enough fixes follow to rule out a burst
            if _split_reason(t_s, gap, k, prm) == GAP or k + BURST < n:
                tail = _split_reason(t_s, gap, k, prm)
        elif not _jitter(t_s, x, y, last, n, ax, ay, prm):
            tail = EXIT
        if tail < 0 and stale:
            tail = TELEPORT if k < n and _split_reason(t_s, gap, k, prm) == TELEPORT else GAP
        n_rec = _close(
            t_s, x, y, rep, prm, state, first, last, max(tail, OPEN), n_rec, ints, flts, buf
        )
    # _merge_back_to_back, in place: row w - 1 is the previous kept stop
    merge_m = prm[P_MERGE_M]
    w = 0
    for r in range(n_rec):
        if w:
            a = w - 1
            a_first = ints[a, R_FIRST]
            a_last = ints[a, R_LAST]
            r_first = ints[r, R_FIRST]
            r_last = ints[r, R_LAST]
            ok = (
                ints[a, R_CLOSED] % MERGED == EXIT
                and t_s[r_first] - t_s[a_last] <= prm[P_MERGE_GAP]
                and nsa[a_last + 1] > r_first
            )
            if ok:
                h = math.hypot(flts[r, R_X] - flts[a, R_X], flts[r, R_Y] - flts[a, R_Y])
                if _near(h, merge_m):
                    return FALLBACK, 0, -1, none_i, none_f
                ok = h <= merge_m
            if ok:
                for j in range(a_last + 1, r_first):
                    if not _hypot_le(x[j] - flts[a, R_X], y[j] - flts[a, R_Y], merge_m):
                        ok = False
                        break
            if ok:
                hi = min(a_last + 1, a_first + ANCHOR)
                hx = _median(x, a_first, hi, buf)
                hy = _median(y, a_first, hi, buf)
                ok = _extent_cut(x, y, a_first, a_last + 1, r_last + 1, hx, hy, ext) > r_last
            if ok:
                _record(
                    x, y, a_first, r_last, ints[r, R_CLOSED] % MERGED + MERGED, a, ints, flts, buf
                )
                continue
        if w != r:
            for c in range(4):
                ints[w, c] = ints[r, c]
            for c in range(4):
                flts[w, c] = flts[r, c]
        w += 1
    # confirm: the first fix at which the stop had lasted stop_min_s (searchsorted, left)
    for r in range(w):
        f = ints[r, R_FIRST]
        lo = f
        hi = ints[r, R_LAST] + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if t_s[mid] - t_s[f] < stop_min:
                lo = mid + 1
            else:
                hi = mid
        ints[r, R_CONFIRM] = lo
        flts[r, R_T_FIRST] = t_s[f]
        flts[r, R_T_LAST] = t_s[ints[r, R_LAST]]
    return DONE, 0, pending, ints[:w], flts[:w]


@njit(cache=True, nogil=True)
def _min_max(a: Any, lo: int) -> tuple[float, float]:
    """``(float(a[lo:].min()), float(a[lo:].max()))`` (lo < len(a)): NaN if any is NaN, as
    numpy's reductions propagate it."""
    mn = a[lo]
    mx = a[lo]
    for i in range(lo, len(a)):
        v = a[i]
        if v != v:
            return math.nan, math.nan
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return float(mn), float(mx)


@njit(cache=True, nogil=True)
def stop_figures(lon: Any, lat: Any, keep: Any, kin: Any, recs: Any) -> tuple[Any, Any]:
    """What the tracker reports of each stop record of a re-run, in one call:
    :func:`schedule.stops.stop_figures_reference` compiled (the tests compare the two).

    ``recs`` is (R, 5) int64: first, confirm, last, fix_count, closed (0/1), as kept indices;
    ``kin`` (2, K) the (kept index, site) inside pairs.  Returns ``sites`` (R,) int64 (the
    site holding at least half of the stop's fixes, else -1: ``stop_site``) and ``flts``
    (R, 8): started lat, lon medians (fixes first..confirm), ended lat, lon medians
    (first..last; NaN when open), and the head box (min lon, max lon, min lat, max lat of
    the kept fixes from ``first`` on).  The medians are :func:`_median` (that of
    schedule.stops); the counts loop replaces ``np.bincount`` + ``np.argmax`` (lowest site on
    a tie, as argmax takes the first maximum).
    """
    nk = len(keep)
    lon_k = np.empty(nk, dtype=np.float64)
    lat_k = np.empty(nk, dtype=np.float64)
    for i in range(nk):
        lon_k[i] = lon[keep[i]]
        lat_k[i] = lat[keep[i]]
    buf = np.empty(max(nk, SHORT), dtype=np.float64)
    n_rec = recs.shape[0]
    sites = np.full(n_rec, -1, dtype=np.int64)
    flts = np.full((n_rec, 8), np.nan)
    n_pairs = kin.shape[1]
    n_sites = 0
    for j in range(n_pairs):
        if kin[1, j] + 1 > n_sites:
            n_sites = kin[1, j] + 1
    counts = np.zeros(max(n_sites, 1), dtype=np.int64)
    for r in range(n_rec):
        first = recs[r, 0]
        confirm = recs[r, 1]
        last = recs[r, 2]
        counts[:] = 0
        any_in = False
        for j in range(n_pairs):
            if kin[0, j] >= first and kin[0, j] <= last:
                counts[kin[1, j]] += 1
                any_in = True
        if any_in:
            best = 0
            for s in range(1, n_sites):
                if counts[s] > counts[best]:
                    best = s
            if counts[best] * 2 >= recs[r, 3]:
                sites[r] = best
        flts[r, 0] = _median(lat_k, first, confirm + 1, buf)
        flts[r, 1] = _median(lon_k, first, confirm + 1, buf)
        if recs[r, 4]:
            flts[r, 2] = _median(lat_k, first, last + 1, buf)
            flts[r, 3] = _median(lon_k, first, last + 1, buf)
        flts[r, 4], flts[r, 5] = _min_max(lon_k, first)
        flts[r, 6], flts[r, 7] = _min_max(lat_k, first)
    return sites, flts


def warm_up() -> None:
    """Compile the walk now (or load it from numba's cache).

    A cold compile takes ~10-30 s on a loaded 2-core machine; done by the engine's first
    re-run it would hold that round and every fix behind it.  The service should call this in
    a worker thread at start, as it does ``geofence.warm_up``.  It runs detection on a small
    track built by :func:`schedule.motion.motion`, so the array types are the tracker's.
    """
    from schedule.motion import Track, motion
    from schedule.params import DetectionParams
    from schedule.stops import detect_stops

    t_us = np.arange(60, dtype=np.int64) * 10_000_000
    lon = np.concatenate((np.full(30, 37.6), 37.6 + np.arange(1, 31) * 1e-3))
    lat = np.full(60, 55.7)
    p = DetectionParams()
    for speed in (None, np.where(np.arange(60) < 30, 0.0, 30.0)):
        m = motion(Track.from_arrays(t_us, lon, lat, speed), p)
        detect_stops(m, p, int(t_us[0]), now_us=int(t_us[-1]) + 10**9, pending_out=[])
    kin = np.array([[0, 1, 2], [0, 0, 1]], dtype=np.int64)
    recs = np.array([[0, 1, 2, 3, 1]], dtype=np.int64)
    stop_figures(lon, lat, np.arange(3), kin, recs)

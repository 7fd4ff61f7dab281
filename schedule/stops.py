"""Stop detection over one vehicle's track: runs of still fixes, chained across jitter.

Theory.  A fix is *still* when its reported speed is below ``stop_speed_kmh`` or it moved at most
``stop_radius_m`` over the last ``speed_window_s`` (:mod:`schedule.motion`).  Still fixes come in
runs; a stop is a chain of still runs joined across the non-still fixes between them when the
next run stands within ``stop_radius_m`` of where the chain stood and those fixes are *jitter*:
fewer than ``move_confirm_fixes``, or spanning less than ``move_confirm_s``, or all within
``drift_radius_m`` of where the vehicle stood (a parked truck's drift reported as speed).
Nothing joins across a jump (teleport) or a gap longer than ``max_gap_s`` (see
:mod:`schedule.motion`).  A chain lasting ``stop_min_s`` is a stop.

The states and their transitions are the table ``TRANSITIONS``; anything else raises
:class:`IllegalTransition`.  The loop runs once per still run, not per fix.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from schedule import stops_kernel as _k
from schedule.events import ClosedBy
from schedule.motion import BURST_FIXES, Motion, cut_runs, nonzero_1d
from schedule.params import DetectionParams


class IllegalTransition(RuntimeError):
    """A detector state machine was driven along an edge its table does not have (our bug)."""


class StopState(enum.Enum):
    IDLE = "idle"  # no slow chain
    PENDING = "pending"  # a slow chain shorter than stop_min_s
    STOPPED = "stopped"  # a slow chain of at least stop_min_s: a stop


class StopInput(enum.Enum):
    SLOW = "slow"  # a slow run that starts a chain
    JOIN = "join"  # a slow run joined to the chain across jitter
    LONG_ENOUGH = "long_enough"  # the chain reached stop_min_s
    BREAK = "break"  # confirmed movement, a jump or a gap: the chain ends


TRANSITIONS: dict[tuple[StopState, StopInput], StopState] = {
    (StopState.IDLE, StopInput.SLOW): StopState.PENDING,
    (StopState.PENDING, StopInput.JOIN): StopState.PENDING,
    (StopState.PENDING, StopInput.LONG_ENOUGH): StopState.STOPPED,
    (StopState.PENDING, StopInput.BREAK): StopState.IDLE,
    (StopState.STOPPED, StopInput.JOIN): StopState.STOPPED,
    (StopState.STOPPED, StopInput.BREAK): StopState.IDLE,
}


def step(state: StopState, inp: StopInput) -> StopState:
    try:
        return TRANSITIONS[(state, inp)]
    except KeyError:
        raise IllegalTransition(f"stop detector: no transition from {state} on {inp}") from None


#: The compiled walk's codes for the states and inputs, and TRANSITIONS encoded with them at
#: import (``table[state, input]`` = next state, or ILLEGAL): the table above stays the one
#: source of truth for both walks (tests/test_stops_kernel.py checks the encoding).
STATE_CODE: dict[StopState, int] = {
    StopState.IDLE: _k.IDLE,
    StopState.PENDING: _k.PENDING,
    StopState.STOPPED: _k.STOPPED,
}
INPUT_CODE: dict[StopInput, int] = {
    StopInput.SLOW: _k.SLOW,
    StopInput.JOIN: _k.JOIN,
    StopInput.LONG_ENOUGH: _k.LONG_ENOUGH,
    StopInput.BREAK: _k.BREAK,
}
TABLE = _k.encode_table(TRANSITIONS, STATE_CODE, INPUT_CODE)


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRecord:
    """A detected stop (indices are into the kept fixes of the :class:`Motion`)."""

    first: int
    last: int
    confirm: int  # first fix at which the chain had lasted stop_min_s
    start_us: int
    end_us: int
    x: float  # median position, local metres (the caller converts back to lon/lat)
    y: float
    fix_count: int
    closed_by: ClosedBy | None  # None: still open (the vehicle may be standing there)
    #: merged from back-to-back stops (:func:`_merge_back_to_back`): whether it stays one
    #: depends on the medians of its parts, which its later fixes move
    merged: bool = False


_ANCHOR_FIXES = 10


def _median(a: npt.NDArray[np.float64]) -> float:
    """Median of a short slice (np.median's generality costs 30 µs a call here).

    Slices of up to 32 values (the 10-fix anchors and heads, ~40 calls per vehicle-round) are
    sorted as Python floats: the same order and the same ``0.5 * (a + b)`` in IEEE doubles,
    without numpy's per-call overhead.  NaN (which Python's sort does not order as numpy's
    does) and longer slices take the numpy path.
    """
    if 0 < len(a) <= 32:
        vals = a.tolist()
        total = sum(vals)  # NaN iff a NaN (or +inf and -inf) is among them: numpy's path
        if total == total:
            vals.sort()
            h = len(vals) // 2
            return float(vals[h]) if len(vals) % 2 else 0.5 * (vals[h - 1] + vals[h])
    srt = np.sort(a)
    k = len(srt) // 2
    return float(srt[k]) if len(srt) % 2 else float(0.5 * (srt[k - 1] + srt[k]))


def _anchor(m: Motion, first: int, last: int) -> tuple[float, float]:
    lo = max(first, last - _ANCHOR_FIXES + 1)
    return _median(m.x[lo : last + 1]), _median(m.y[lo : last + 1])


def _head(m: Motion, first: int, end: int) -> tuple[float, float]:
    hi = min(end, first + _ANCHOR_FIXES)
    return _median(m.x[first:hi]), _median(m.y[first:hi])


def _reported(m: Motion) -> npt.NDArray[np.float64]:
    """The unit's own speeds over the kept fixes (NaN: not reported or not known)."""
    if m.reported_kmh is not None:
        return m.reported_kmh
    return np.full(len(m.t_s), np.nan)


def _backdate(
    m: Motion, p: DetectionParams, s: int, e: int, floor: int, rep: npt.NDArray[np.float64]
) -> int:
    """Earliest fix before slow run [s, e) that already stood where the run stands.

    The displacement rule needs ``speed_window_s`` of standing before it says "still", so the
    run starts late on tracks without reported speed; fixes within that window, slower than
    ``crawl_speed_kmh`` (estimated) or ``stop_speed_kmh`` (reported) and within
    ``stop_radius_m`` of the run's head belong to the stop.  A fix the unit itself reports at
    walking pace or more is still moving: the stop never starts on it (issue 11 #13).
    """
    lo = max(floor, int(m.t_s.searchsorted(m.t_s[s] - p.speed_window_s)))
    if lo >= s:
        return s
    hx, hy = _head(m, s, e)
    r = rep[lo:s]
    slow = np.where(np.isnan(r), m.speed_kmh[lo:s] < p.crawl_speed_kmh, r < p.stop_speed_kmh)
    ok = (np.hypot(m.x[lo:s] - hx, m.y[lo:s] - hy) <= p.stop_radius_m) & slow
    ok &= ~(m.jump[lo + 1 : s + 1] | m.gap[lo + 1 : s + 1])  # nothing joins across a split
    bad = nonzero_1d(~ok)
    return lo + (int(bad[-1]) + 1 if len(bad) else 0)


def _standing_from(p: DetectionParams, rep: npt.NDArray[np.float64], s: int, e: int) -> int:
    """First fix of [s, e) the unit does not report moving (>= ``stop_speed_kmh``); ``s`` when
    every fix does (drift reported as speed: the displacement rule decides alone)."""
    r = rep[s:e]
    standing = nonzero_1d(~(r >= p.stop_speed_kmh))
    return s + int(standing[0]) if len(standing) else s


def _extent_cut(
    m: Motion, p: DetectionParams, first: int, s: int, e: int, head: tuple[float, float]
) -> int:
    """First fix of [s, e) at which the chain that started at ``first`` has left its place:
    most fixes of a trailing window of :data:`BURST_FIXES` (so a lone outlier never cuts)
    lie farther than ``stop_extent_m`` from the chain's head; ``e`` when none does.

    That bounds a stop's size (issue 11 #12): a queue crawling at 2-8 km/h crosses
    ``stop_extent_m`` in 35-135 s, shorter than ``stop_min_s``, so it makes no stop at all.
    """
    lo = max(first, s - BURST_FIXES + 1)
    beyond = np.hypot(m.x[lo:e] - head[0], m.y[lo:e] - head[1]) > p.stop_extent_m
    if not beyond.any():
        return e
    cnt = np.concatenate(([0], np.cumsum(beyond)))
    idx = np.arange(len(beyond))
    w0 = np.maximum(idx - BURST_FIXES + 1, 0)
    wlen = idx - w0 + 1
    major = (cnt[idx + 1] - cnt[w0]) * 2 > wlen
    major[: s - lo] = False  # fixes before s were judged with the previous piece
    hits = nonzero_1d(major)
    if not len(hits):
        return e
    i = int(hits[0])
    return lo + int(w0[i]) + int(nonzero_1d(beyond[w0[i] : i + 1])[0])


def _between_is_jitter(
    m: Motion, p: DetectionParams, last: int, nxt: int, anchor: tuple[float, float]
) -> bool:
    """Non-slow fixes last+1..nxt-1 (nxt = next slow fix or len) are not a confirmed move."""
    count = nxt - last - 1
    t_end = m.t_s[nxt] if nxt < len(m.t_s) else m.t_s[-1]
    if count < p.move_confirm_fixes or t_end - m.t_s[last] < p.move_confirm_s:
        return True
    bx, by = m.x[last + 1 : nxt], m.y[last + 1 : nxt]
    return bool(np.all(np.hypot(bx - anchor[0], by - anchor[1]) <= p.drift_radius_m))


def _split_reason(m: Motion, p: DetectionParams, k: int) -> ClosedBy:
    """What the split at step k is: a gap in the data (also a move across a step longer than
    ``teleport_check_s``), else a jump."""
    return "gap" if m.gap[k] or m.t_s[k] - m.t_s[k - 1] > p.teleport_check_s else "teleport"


def detect_stops_reference(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    *,
    active_from: int = 0,
    now_us: int | None = None,
    pending_out: list[int] | None = None,
) -> list[StopRecord]:
    """Stops in the kept fixes from ``active_from`` on (earlier fixes are context only): the
    numpy chain walk, kept as the reference the compiled :func:`detect_stops` must equal.

    ``pending_out``, when given, receives the first fix of the chain still shorter than
    ``stop_min_s`` at the end of the track, if there is one (the tracker bounds when it can
    become a stop without re-running; see ``VehicleTracker._append_only``).

    ``t0_us`` is the fix time ``m.t_s`` is relative to.  ``now_us`` (the caller's clock) closes
    a chain whose last fix is more than ``max_gap_s`` old; None leaves it open.

    ``closed_by`` says how the stop really ended (issue 11 #14): ``"teleport"`` or ``"gap"``
    only when that split is AT its end (only jitter between its last still fix and the split),
    ``"exit"`` when the vehicle moved on (a confirmed move, or it left the stop's extent).
    """
    n = len(m.t_s)
    if n == 0:
        return []
    rep = _reported(m)
    slow = m.still.copy()
    slow[:active_from] = False
    split = m.jump | m.gap
    pieces = cut_runs(slow, split)
    # prefix counts: "any split in [a, b)" without a numpy call per still run
    zero = np.zeros(1, dtype=np.int64)
    n_split = np.concatenate((zero, np.cumsum(split))).astype(np.int64)
    split_at = nonzero_1d(split)

    def first_split_after(i: int) -> int:
        """Index of the first split step after fix i, or n."""
        k = int(split_at.searchsorted(i, side="right"))
        return int(split_at[k]) if k < len(split_at) else n

    out: list[StopRecord] = []
    state = StopState.IDLE
    first = last = prev_last = -1
    head = (0.0, 0.0)

    def close(reason: ClosedBy | None) -> None:
        if state is StopState.STOPPED:
            end = last
            # the stop ends where the unit last reported standstill (if that keeps it a stop)
            standing = nonzero_1d(~(rep[first : last + 1] >= p.stop_speed_kmh))
            if len(standing):
                cand = first + int(standing[-1])
                if m.t_s[cand] - m.t_s[first] >= p.stop_min_s:
                    end = cand
            out.append(_record(m, p, t0_us, first, end, reason))

    def long_enough(st: StopState) -> StopState:
        if st is StopState.PENDING and m.t_s[last] - m.t_s[first] >= p.stop_min_s:
            return step(st, StopInput.LONG_ENOUGH)
        return st

    def why_ended(nxt: int) -> ClosedBy:
        """The chain [first, last] is over; ``nxt`` is the next standing fix (or n)."""
        k = first_split_after(last)
        if k <= nxt and k < n and _between_is_jitter(m, p, last, k, _anchor(m, first, last)):
            return _split_reason(m, p, k)
        return "exit"

    todo = list(reversed(pieces))
    while todo:
        s, e = todo.pop()
        if state is not StopState.IDLE:
            joined = False
            if n_split[s + 1] == n_split[last + 1]:
                anchor = _anchor(m, first, last)
                hx, hy = _head(m, s, e)
                joined = math.hypot(hx - anchor[0], hy - anchor[1]) <= p.stop_radius_m
                joined = joined and _between_is_jitter(m, p, last, s, anchor)
            if joined:
                cut = _extent_cut(m, p, first, s, e, head)
                if cut > s:
                    state = step(state, StopInput.JOIN)
                    last = cut - 1
                    state = long_enough(state)
                if cut < e:  # it has crept out of its place: moved on
                    close("exit")
                    state = step(state, StopInput.BREAK)
                    prev_last = last
                    todo.append((cut, e))
                    continue
            else:
                close(why_ended(s))
                state = step(state, StopInput.BREAK)
        if state is StopState.IDLE:
            floor = max(active_from, out[-1].last + 1 if out else 0, prev_last + 1)
            first = _backdate(m, p, s, e, floor, rep)
            if first == s:
                first = _standing_from(p, rep, s, e)
            head = _head(m, first, e)
            cut = _extent_cut(m, p, first, first, e, head)
            state = step(state, StopInput.SLOW)
            last = max(cut - 1, first)
            if cut < e:  # stood, then crept out of its place within one still run
                state = long_enough(state)
                close("exit")
                state = step(state, StopInput.BREAK)
                prev_last = last
                if max(cut, first + 1) < e:
                    todo.append((max(cut, first + 1), e))
                continue
        prev_last = e - 1
        state = long_enough(state)
    if pending_out is not None and state is StopState.PENDING:
        pending_out.append(first)
    if state is not StopState.IDLE:
        # the last chain: closed if followed by a confirmed move, a jump or a gap, else open
        tail: ClosedBy | None = None
        k = first_split_after(last)
        anchor = _anchor(m, first, last)
        if k < n and _between_is_jitter(m, p, last, k, anchor):
            # a split at its end; a jump only once enough fixes follow to rule out a burst
            if _split_reason(m, p, k) == "gap" or k + BURST_FIXES < n:
                tail = _split_reason(m, p, k)
        elif not _between_is_jitter(m, p, last, n, anchor):
            tail = "exit"
        if (
            tail is None
            and now_us is not None
            and now_us - (t0_us + m.t_s[-1] * 1e6) > p.max_gap_s * 1e6
        ):
            tail = "teleport" if k < n and _split_reason(m, p, k) == "teleport" else "gap"
        close(tail)
    return _merge_back_to_back(m, p, t0_us, out, n_split)


_CLOSED_BY: tuple[ClosedBy | None, ...] = (None, "exit", "gap", "teleport")  # by _k code
_ROWS: dict[int, tuple[DetectionParams, npt.NDArray[np.float64]]] = {}


def _param_row(p: DetectionParams) -> npt.NDArray[np.float64]:
    """The kernel's parameter row for ``p``, built once per params object (looked up by
    identity: hashing a 25-field dataclass each call would cost more than the lookup saves;
    the entry holds ``p``, so its id cannot be reused while cached)."""
    hit = _ROWS.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    row = _k.param_row(
        p.stop_speed_kmh,
        p.crawl_speed_kmh,
        p.stop_radius_m,
        p.speed_window_s,
        p.stop_extent_m,
        p.drift_radius_m,
        p.move_confirm_s,
        p.move_confirm_fixes,
        p.teleport_check_s,
        p.stop_min_s,
        p.stop_merge_gap_s,
        p.stop_merge_m,
    )
    if len(_ROWS) >= 64:
        _ROWS.clear()
    _ROWS[id(p)] = (p, row)
    return row


def stop_param_row(p: DetectionParams) -> npt.NDArray[np.float64]:
    """The walk's parameter row for ``p`` (cached: :func:`_param_row`)."""
    return _param_row(p)


def detect_stops(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    *,
    active_from: int = 0,
    now_us: int | None = None,
    pending_out: list[int] | None = None,
    table: npt.NDArray[np.int64] = TABLE,
) -> list[StopRecord]:
    """Stops in the kept fixes from ``active_from`` on: :func:`detect_stops_reference`'s
    answer, record for record, from the compiled walk (:mod:`schedule.stops_kernel`).

    ``table`` is the encoded transition table the walk steps through (a test passes one with
    an edge removed to see the walk refuse it, as ``step`` does).  Where the compiled walk
    cannot be sure of the reference's answer (a distance within an ulp or so of a threshold
    the reference measures with CPython's own hypot) this call runs the reference.
    """
    n = len(m.t_s)
    if n == 0:
        return []
    t_s = m.t_s
    stale = now_us is not None and now_us - (t0_us + t_s[-1] * 1e6) > p.max_gap_s * 1e6
    status, info, pending, ints, flts = _k.detect(
        t_s,
        m.x,
        m.y,
        m.speed_kmh,
        _reported(m),
        m.still,
        m.jump,
        m.gap,
        table,
        _param_row(p),
        active_from,
        bool(stale),
    )
    if status != _k.DONE:
        if status == _k.ILLEGAL_STEP:
            state = next(s for s, c in STATE_CODE.items() if c == info // 8)
            inp = next(i for i, c in INPUT_CODE.items() if c == info % 8)
            raise IllegalTransition(f"stop detector: no transition from {state} on {inp}")
        return detect_stops_reference(
            m, p, t0_us, active_from=active_from, now_us=now_us, pending_out=pending_out
        )
    if pending_out is not None and pending >= 0:
        pending_out.append(pending)
    return records_of(t0_us, ints.tolist(), flts.tolist()) if len(ints) else []


def records_of(
    t0_us: int, ints: Sequence[Sequence[int]], flts: Sequence[Sequence[float]]
) -> list[StopRecord]:
    """The StopRecords of the compiled walk's rows, as lists (``stops_kernel.detect``'s int
    and float tables' ``tolist()``; ``schedule.rerun_kernel.detect``'s, whose rows carry
    more columns after these)."""
    return [
        StopRecord(
            first=r[0],
            last=r[1],
            confirm=r[2],
            start_us=t0_us + round(f[2] * 1e6),
            end_us=t0_us + round(f[3] * 1e6),
            x=f[0],
            y=f[1],
            fix_count=r[1] - r[0] + 1,
            closed_by=_CLOSED_BY[r[3] % _k.MERGED],
            merged=r[3] >= _k.MERGED,
        )
        for r, f in zip(ints, flts, strict=True)
    ]


def _record(
    m: Motion, p: DetectionParams, t0_us: int, first: int, last: int, reason: ClosedBy | None
) -> StopRecord:
    sel = slice(first, last + 1)
    return StopRecord(
        first=first,
        last=last,
        confirm=first + int((m.t_s[sel] - m.t_s[first]).searchsorted(p.stop_min_s)),
        start_us=t0_us + round(m.t_s[first] * 1e6),
        end_us=t0_us + round(m.t_s[last] * 1e6),
        x=_median(m.x[sel]),
        y=_median(m.y[sel]),
        fix_count=last - first + 1,
        closed_by=reason,
    )


def _merge_back_to_back(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    stops: list[StopRecord],
    n_split: npt.NDArray[np.int64],
) -> list[StopRecord]:
    """One stop from back-to-back stops at one place (issue 11 #13): the next starts within
    ``stop_merge_gap_s`` of the previous one's end, nothing splits them (jump, gap), its place
    lies within ``stop_merge_m`` of the previous one's, every fix between stays within
    ``stop_merge_m`` of it (a truck re-parking at the dock, not one that drove round the
    block), and the merged stop keeps the extent bound (:func:`_extent_cut`).
    """
    out: list[StopRecord] = []
    for r in stops:
        if out:
            a = out[-1]
            bx, by = m.x[a.last + 1 : r.first], m.y[a.last + 1 : r.first]
            hx, hy = _head(m, a.first, a.last + 1)
            if (
                a.closed_by == "exit"
                and m.t_s[r.first] - m.t_s[a.last] <= p.stop_merge_gap_s
                and n_split[r.first + 1] == n_split[a.last + 1]
                and math.hypot(r.x - a.x, r.y - a.y) <= p.stop_merge_m
                and bool(np.all(np.hypot(bx - a.x, by - a.y) <= p.stop_merge_m))
                and _extent_cut(m, p, a.first, a.last + 1, r.last + 1, (hx, hy)) > r.last
            ):
                out[-1] = replace(_record(m, p, t0_us, a.first, r.last, r.closed_by), merged=True)
                continue
        out.append(r)
    return out


def stop_site(record: StopRecord, kept_inside: npt.NDArray[np.int64]) -> int:
    """The site a stop belongs to: the one holding at least half of its fixes, else -1.

    ``kept_inside`` is (2, K): kept-fix index, site index.
    """
    sel = (kept_inside[0] >= record.first) & (kept_inside[0] <= record.last)
    if not sel.any():
        return -1
    counts = np.bincount(kept_inside[1][sel])  # argmax: the lowest site on a tie, as before
    best = int(np.argmax(counts))
    return best if int(counts[best]) * 2 >= record.fix_count else -1


def stop_figures_reference(
    lon_k: npt.NDArray[np.float64],
    lat_k: npt.NDArray[np.float64],
    kin: npt.NDArray[np.int64],
    records: list[StopRecord],
) -> list[tuple[int, float, float, float, float, tuple[float, float, float, float]]]:
    """Per stop record: site (:func:`stop_site`), started lat/lon medians, ended lat/lon
    medians (NaN when open) and head box, as the tracker reported them before
    :func:`schedule.stops_kernel.stop_figures` compiled it (that kernel's reference)."""
    out = []
    for rec in records:
        c = slice(rec.first, rec.confirm + 1)
        a = slice(rec.first, rec.last + 1)
        h = slice(rec.first, None)
        closed = rec.closed_by is not None
        out.append(
            (
                stop_site(rec, kin),
                _median(lat_k[c]),
                _median(lon_k[c]),
                _median(lat_k[a]) if closed else float("nan"),
                _median(lon_k[a]) if closed else float("nan"),
                (
                    float(lon_k[h].min()),
                    float(lon_k[h].max()),
                    float(lat_k[h].min()),
                    float(lat_k[h].max()),
                ),
            )
        )
    return out

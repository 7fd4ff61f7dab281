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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schedule.events import ClosedBy
from schedule.motion import Motion, cut_runs
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


_ANCHOR_FIXES = 10
_BURST_FIXES = 5  # the longest outlier burst schedule.motion drops


def _median(a: npt.NDArray[np.float64]) -> float:
    """Median of a short slice (np.median's generality costs 30 µs a call here)."""
    srt = np.sort(a)
    k = len(srt) // 2
    return float(srt[k]) if len(srt) % 2 else float(0.5 * (srt[k - 1] + srt[k]))


def _anchor(m: Motion, first: int, last: int) -> tuple[float, float]:
    lo = max(first, last - _ANCHOR_FIXES + 1)
    return _median(m.x[lo : last + 1]), _median(m.y[lo : last + 1])


def _head(m: Motion, first: int, end: int) -> tuple[float, float]:
    hi = min(end, first + _ANCHOR_FIXES)
    return _median(m.x[first:hi]), _median(m.y[first:hi])


def _backdate(m: Motion, p: DetectionParams, s: int, e: int, floor: int) -> int:
    """Earliest fix before slow run [s, e) that already stood where the run stands.

    The displacement rule needs ``speed_window_s`` of standing before it says "still", so the
    run starts late on tracks without reported speed; fixes within that window, slower than
    ``crawl_speed_kmh`` and within ``stop_radius_m`` of the run's head belong to the stop.
    """
    lo = max(floor, int(np.searchsorted(m.t_s, m.t_s[s] - p.speed_window_s)))
    if lo >= s:
        return s
    hx, hy = _head(m, s, e)
    ok = (np.hypot(m.x[lo:s] - hx, m.y[lo:s] - hy) <= p.stop_radius_m) & (
        m.speed_kmh[lo:s] < p.crawl_speed_kmh
    )
    ok &= ~(m.jump[lo + 1 : s + 1] | m.gap[lo + 1 : s + 1])  # nothing joins across a split
    bad = np.flatnonzero(~ok)
    return lo + (int(bad[-1]) + 1 if len(bad) else 0)


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


def detect_stops(
    m: Motion,
    p: DetectionParams,
    t0_us: int,
    *,
    active_from: int = 0,
    now_us: int | None = None,
) -> list[StopRecord]:
    """Stops in the kept fixes from ``active_from`` on (earlier fixes are context only).

    ``t0_us`` is the fix time ``m.t_s`` is relative to.  ``now_us`` (the caller's clock) closes
    a chain whose last fix is more than ``max_gap_s`` old; None leaves it open.
    """
    n = len(m.t_s)
    if n == 0:
        return []
    slow = m.still.copy()
    slow[:active_from] = False
    split = m.jump | m.gap
    pieces = cut_runs(slow, split)
    # prefix counts: "any split/jump/gap in [a, b)" without a numpy call per still run
    zero = np.zeros(1, dtype=np.int64)
    n_split = np.concatenate((zero, np.cumsum(split)))
    n_jump = np.concatenate((zero, np.cumsum(m.jump)))

    out: list[StopRecord] = []
    state = StopState.IDLE
    first = last = prev_last = -1

    def close(reason: ClosedBy | None) -> None:
        if state is StopState.STOPPED:
            sel = slice(first, last + 1)
            ax, ay = _median(m.x[sel]), _median(m.y[sel])
            out.append(
                StopRecord(
                    first=first,
                    last=last,
                    confirm=first
                    + int(np.searchsorted(m.t_s[first : last + 1] - m.t_s[first], p.stop_min_s)),
                    start_us=t0_us + round(m.t_s[first] * 1e6),
                    end_us=t0_us + round(m.t_s[last] * 1e6),
                    x=ax,
                    y=ay,
                    fix_count=last - first + 1,
                    closed_by=reason,
                )
            )

    for s, e in pieces:
        if state is not StopState.IDLE:
            joined = False
            if n_split[s + 1] == n_split[last + 1]:
                anchor = _anchor(m, first, last)
                head = _head(m, s, e)
                joined = math.hypot(
                    head[0] - anchor[0], head[1] - anchor[1]
                ) <= p.stop_radius_m and _between_is_jitter(m, p, last, s, anchor)
            if joined:
                state = step(state, StopInput.JOIN)
                last = e - 1
            else:
                reason: ClosedBy = (
                    "teleport"
                    if n_jump[s + 1] > n_jump[last + 1]
                    else ("gap" if n_split[s + 1] > n_split[last + 1] else "exit")
                )
                close(reason)
                state = step(state, StopInput.BREAK)
        if state is StopState.IDLE:
            state = step(state, StopInput.SLOW)
            floor = max(active_from, out[-1].last + 1 if out else 0, prev_last + 1)
            first, last = _backdate(m, p, s, e, floor), e - 1
        prev_last = e - 1
        if state is StopState.PENDING and m.t_s[last] - m.t_s[first] >= p.stop_min_s:
            state = step(state, StopInput.LONG_ENOUGH)
    if state is StopState.IDLE:
        return out
    # the last chain: closed if followed by a confirmed move, a jump or a gap, else open
    tail: ClosedBy | None = None
    jumps = np.flatnonzero(m.jump[last + 1 :])
    if len(jumps) and last + 1 + int(jumps[0]) + _BURST_FIXES < n:
        # a jump only ends the stop once enough fixes follow it to rule out an outlier burst
        tail = "teleport"
    elif m.gap[last + 1 :].any():
        tail = "gap"
    elif not _between_is_jitter(m, p, last, n, _anchor(m, first, last)):
        tail = "exit"
    elif now_us is not None and now_us - (t0_us + m.t_s[-1] * 1e6) > p.max_gap_s * 1e6:
        tail = "teleport" if len(jumps) else "gap"
    close(tail)
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

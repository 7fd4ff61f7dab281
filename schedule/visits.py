"""Visit detection over one vehicle's track, one site at a time.

Theory.  For a site, a fix is *in* when inside the fence and *near* when inside the fence grown
by ``exit_margin_m``.  A candidate visit opens at the first *in* fix and continues through every
later *in* fix; the fixes between two *in* fixes end it only when they are a confirmed exit: at
least ``exit_confirm_fixes`` of them beyond the margin (not *near*), spanning at least
``exit_confirm_s`` from the last *in* fix, and at least one of them moving.  That hysteresis is
what keeps a truck parked at the fence edge (σ = 10 m jitter, multipath outliers) in one visit,
and what lets a truck that moves on to a neighbouring site's parking place (still within the
margin now and then) leave.  A step longer than ``max_gap_s`` always ends it (closed at the last
fix before the gap); a shorter gap continues it when the vehicle is inside again after it.

A candidate becomes a visit once it has lasted ``min_dwell_s`` with the vehicle slow
(< ``crawl_speed_kmh``) for at least ``min_slow_share`` of that time, with one unbroken
standstill of ``min_still_s`` in it, and with at least ``min_inside_share`` of its fixes strictly
inside the fence: a drive-by, or stop-and-go traffic on a street through the fence, is not a
visit.  An exit also needs one of the away fixes to be moving: a parked truck whose jitter
carries it beyond the margin for a while has not left.

Overlapping fences each get their own visit (the detector runs per site), except that a visit
mostly outside its fence yields to an overlapping, clearly better one (:func:`drop_dominated`);
the schedule stage decides which planned stop a visit serves.

The transitions are the table ``TRANSITIONS``; anything else raises.  The loop runs once per
near run of a site, not per fix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schedule.events import ClosedBy
from schedule.motion import Motion, cut_runs, diff_1d, nonzero_1d, runs
from schedule.params import DetectionParams
from schedule.stops import IllegalTransition, _median


class VisitState(enum.Enum):
    OUTSIDE = "outside"
    CANDIDATE = "candidate"  # inside, not yet min_dwell_s slow
    VISITING = "visiting"


class VisitInput(enum.Enum):
    ENTER = "enter"  # a near run holding an inside fix, while outside
    STAY = "stay"  # a near run after jitter: the candidate goes on
    DWELL = "dwell"  # the dwell rule is met
    LEAVE = "leave"  # confirmed exit or a gap


TRANSITIONS: dict[tuple[VisitState, VisitInput], VisitState] = {
    (VisitState.OUTSIDE, VisitInput.ENTER): VisitState.CANDIDATE,
    (VisitState.CANDIDATE, VisitInput.STAY): VisitState.CANDIDATE,
    (VisitState.CANDIDATE, VisitInput.DWELL): VisitState.VISITING,
    (VisitState.CANDIDATE, VisitInput.LEAVE): VisitState.OUTSIDE,
    (VisitState.VISITING, VisitInput.STAY): VisitState.VISITING,
    (VisitState.VISITING, VisitInput.LEAVE): VisitState.OUTSIDE,
}


def step(state: VisitState, inp: VisitInput) -> VisitState:
    try:
        return TRANSITIONS[(state, inp)]
    except KeyError:
        raise IllegalTransition(f"visit detector: no transition from {state} on {inp}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitRecord:
    """A detected visit of one site (indices are into the kept fixes of the Motion)."""

    site: int
    first: int
    last: int
    arrival_us: int
    departure_us: int  # last inside fix (for an open visit: so far)
    confirmed_us: int
    fix_count: int
    inside_share: float
    median_hdop: float
    closed_by: ClosedBy | None  # None: still open


def _confirm_index(
    m: Motion, crawl: npt.NDArray[np.bool_], first: int, last: int, p: DetectionParams
) -> int:
    """First fix of [first, last] at which the dwell rule holds, or -1."""
    still = m.still
    t = m.t_s[first : last + 1]
    if t[-1] - t[0] < p.min_dwell_s:
        return -1
    c = crawl[first : last + 1]
    dt = diff_1d(t)
    slow_dt = np.where(c[1:] & c[:-1], dt, 0.0)
    slow_cum = np.concatenate(([0.0], np.cumsum(slow_dt)))
    span = t - t[0]
    ok = (span >= p.min_dwell_s) & (slow_cum >= p.min_slow_share * span)
    # ...and somewhere in it the vehicle stood still for min_still_s without a break
    still_ok = np.zeros(len(t), dtype=bool)
    for s, e in zip(*runs(still[first : last + 1]), strict=True):
        long = nonzero_1d(t[s:e] - t[s] >= p.min_still_s)
        if len(long):
            still_ok[s + int(long[0]) :] = True
            break
    hits = nonzero_1d(ok & still_ok)
    return first + int(hits[0]) if len(hits) else -1


MotionCounts = tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""(crawl mask, prefix count of gaps, prefix count of still fixes) of one Motion."""


def motion_counts(m: Motion, p: DetectionParams) -> MotionCounts:
    """The site-independent arrays :func:`detect_visits_for_site` needs, so that a re-run
    over several sites computes them once (two cumsums over the whole re-run per site were
    ~6 % of a 20,000-fix round)."""
    zero = np.zeros(1, dtype=np.int64)
    return (
        m.speed_kmh < p.crawl_speed_kmh,
        np.concatenate((zero, np.cumsum(m.gap))),
        np.concatenate((zero, np.cumsum(m.still))),
    )


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
) -> list[VisitRecord]:
    """Visits of one site; masks are over the kept fixes, fixes before ``active_from`` are
    context only (treated as away).  ``common``: :func:`motion_counts` of ``m`` and ``p``,
    when the caller runs several sites over the same motion (computed here when None).

    Runs the compiled kernel (:mod:`schedule.visits_kernel`, imported here so that modules
    importing this one do not load numba); :func:`_detect_visits_for_site_reference` is the
    numpy version it transcribes, kept as the tests' reference.
    """
    from schedule import visits_kernel

    return visits_kernel.detect_visits_for_site(
        m,
        p,
        t0_us,
        site,
        inside,
        near,
        hdop,
        active_from=active_from,
        now_us=now_us,
        common=common,
    )


def _detect_visits_for_site_reference(
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
) -> list[VisitRecord]:
    """The numpy version of :func:`detect_visits_for_site` (the tests' reference)."""
    n = len(m.t_s)
    near = near | inside
    near[:active_from] = False
    inside = inside & near
    pieces = cut_runs(inside, m.gap)
    if not pieces:
        return []
    crawl, n_gap, n_still = common if common is not None else motion_counts(m, p)
    # prefix counts: "any gap / how many beyond / all still in [a, b)" without numpy calls
    zero = np.zeros(1, dtype=np.int64)
    n_beyond = np.concatenate((zero, np.cumsum(~near)))
    n_inside = np.concatenate((zero, np.cumsum(inside)))
    t_s = m.t_s

    out: list[VisitRecord] = []
    state = VisitState.OUTSIDE
    first = last = -1
    # The dwell index found when the candidate became a visit: extending ``last`` cannot move
    # it (every term of _confirm_index looks only at fixes up to the index), and a candidate
    # was checked with the very (first, last) it is closed with, so close() need not recompute.
    confirm_k = -1

    def close(reason: ClosedBy | None) -> None:
        k = confirm_k
        sel = slice(first, last + 1)
        share = float(np.float64(n_inside[last + 1] - n_inside[first]) / (last + 1 - first))
        if k < 0 or share < p.min_inside_share:
            return
        h = hdop[sel]
        h = h[~np.isnan(h)]
        out.append(
            VisitRecord(
                site=site,
                first=first,
                last=last,
                arrival_us=t0_us + round(m.t_s[first] * 1e6),
                departure_us=t0_us + round(m.t_s[last] * 1e6),
                confirmed_us=t0_us + round(m.t_s[k] * 1e6),
                fix_count=last - first + 1,
                inside_share=share,
                median_hdop=_median(h) if len(h) else np.nan,
                closed_by=reason,
            )
        )

    def exit_confirmed(last: int, nxt: int) -> bool:
        """Fixes last+1..nxt-1 (none inside) are a confirmed exit."""
        beyond = n_beyond[nxt] - n_beyond[last + 1]
        return bool(
            beyond >= p.exit_confirm_fixes
            and t_s[nxt - 1] - t_s[last] >= p.exit_confirm_s
            # a parked truck's jitter never leaves
            and n_still[nxt] - n_still[last + 1] < nxt - last - 1
        )

    def gap_or_exit(last: int) -> ClosedBy:
        """A gap follows *last*: was the exit confirmed before it?  Then the visit ended by
        "exit", however long the silence after; otherwise by "gap".  (Whichever came *first*:
        a run over the day at once must say what the run that saw the fixes one by one said,
        the exit when it was confirmed -- a restart re-reads hours of fixes in one go.)"""
        first_gap = int(np.searchsorted(n_gap, n_gap[last + 1] + 1)) - 1
        return "exit" if exit_confirmed(last, first_gap) else "gap"

    for s, e in pieces:
        if state is not VisitState.OUTSIDE:
            gapped = n_gap[s + 1] > n_gap[last + 1]
            if gapped or exit_confirmed(last, s):
                close(gap_or_exit(last) if gapped else "exit")
                state = step(state, VisitInput.LEAVE)
            else:
                state = step(state, VisitInput.STAY)
                last = e - 1
        if state is VisitState.OUTSIDE:
            state = step(state, VisitInput.ENTER)
            first, last = s, e - 1
            confirm_k = -1
        if state is VisitState.CANDIDATE:
            confirm_k = _confirm_index(m, crawl, first, last, p)
            if confirm_k >= 0:
                state = step(state, VisitInput.DWELL)
    if state is VisitState.OUTSIDE:
        return out
    tail: ClosedBy | None = None
    if n_gap[n] > n_gap[last + 1]:
        tail = gap_or_exit(last)
    elif exit_confirmed(last, n):
        tail = "exit"
    elif now_us is not None and now_us - (t0_us + m.t_s[-1] * 1e6) > p.max_gap_s * 1e6:
        tail = "gap"
    close(tail)
    return out


def drop_dominated(visits: list[VisitRecord]) -> list[VisitRecord]:
    """Overlapping fences: drop a visit mostly outside its own fence (inside share < 0.5) when
    a visit of another site covers at least half of its time from at least twice as far inside.

    The truck parked for one tenant jitters into the neighbour's fence now and then; the
    neighbour's fence must not count that as its own visit.  Two visits both well inside their
    fences (a truck really serving two tenants from one parking place) are both kept.
    """
    out = []
    for a in visits:
        dur = max(a.departure_us - a.arrival_us, 1)
        dominated = a.inside_share < 0.5 and any(
            b is not a
            and b.site != a.site
            and b.inside_share >= 2 * a.inside_share
            and min(a.departure_us, b.departure_us) - max(a.arrival_us, b.arrival_us) >= dur / 2
            for b in visits
        )
        if not dominated:
            out.append(a)
    return out

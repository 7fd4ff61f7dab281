"""The fleet-wide fast path: one vectorised pass finds the vehicles whose new fixes only append.

Why: a live round brings each vehicle one or two fixes, and :meth:`VehicleTracker.feed` costs
~40 numpy calls for them even when :meth:`VehicleTracker._append_only` then proves that a
re-run could report nothing (the sorting, deduplication, pair mapping and the short motion
window all run per vehicle).  Most vehicles most of the time are simply driving, away from
every fence.  :func:`select` decides that for the whole round's batch at once, from a few
scalars kept per vehicle (:class:`Tail`: its newest fix and how many clean steps lead to it),
and :meth:`VehicleTracker.append_driving` then only appends; every other vehicle goes the
usual way.

A vehicle's new fixes take the fast path when (all of it, or the vehicle goes the usual way):

* its tracker is in a known state: nothing open (no announced visit or stop going on), not
  closed by the clock in its last re-run, not freshly restored, and the tail was taken after
  its last feed and re-run (``fixes_in`` and ``reruns`` stamps);
* the new fixes come in strictly increasing time after its newest kept fix, none within
  ``min(max_gap_s, teleport_check_s)`` of a gap, and the clock (if given) is no more than
  ``max_gap_s`` past the newest;
* no new fix has a fence or margin pair, and each reports a speed of at least
  ``max(crawl_speed_kmh, stop_speed_kmh)``: :func:`schedule.motion.motion` calls such a fix
  not *still* whatever its trailing displacement;
* every step into a new fix, and the ``BURST_FIXES + 1`` steps before the first, is *clean*:
  both speeds known, and certainly not implausible in any re-run's local frame (the distance
  is over-estimated with the east-west scale of the equator, the time under-estimated).  Then
  ``motion`` flags no jump or gap at the new fixes, drops none of them, and drops nothing it
  did not drop before (a burst is only read from a raw implausible step, and reaches at most
  ``BURST_FIXES`` fixes after it).

That is :meth:`VehicleTracker._append_only`'s *driving* case (nothing open, no fence pair,
nothing dropped, no new fix still, no jump, gap or frozen run), decided without its window:
the features it reads from the window are those of the new steps, which are fixed by the new
fix and the one before.  So the round only appends, as ``_append_only`` would have let it;
``tests/test_tracker_fastpath.py`` checks with Hypothesis that the events equal those of a
fleet without the fast path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schedule.motion import BURST_FIXES
from schedule.params import DetectionParams

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]
IntpA = npt.NDArray[np.intp]

_EARTH_R_M = 6_371_008.8
_M_PER_DEG = _EARTH_R_M * np.pi / 180.0
#: clean steps needed before the first new fix (see the module docstring)
LEAD_STEPS = BURST_FIXES + 1


class Tail(NamedTuple):
    """What :func:`select` needs of one vehicle: its newest kept fix, how many clean steps
    lead to it (capped), and the stamps that say the tail is still current."""

    t_us: int
    lon: float
    lat: float
    speed_kmh: float
    clean: int
    fixes_in: int
    reruns: int


def clean_steps(
    t0: I64,
    lon0: F64,
    lat0: F64,
    v0: F64,
    t1: I64,
    lon1: F64,
    lat1: F64,
    v1: F64,
    p: DetectionParams,
) -> BoolA:
    """Steps (fix 0 -> fix 1) that no re-run can call a jump or a gap (conservatively).

    ``schedule.motion`` measures a step in the local frame of its track's first fix, whose
    east-west scale (cos of that latitude) is at most 1: the distance here uses 1, so it is
    never below any frame's; the time span is the exact integer microseconds, with a
    millisecond of room where a limit is compared (the detectors use float seconds).
    """
    dt_us = t1 - t0
    lim_us = round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000
    dt_s = np.maximum(dt_us / 1e6, 1e-3) * (1.0 - 1e-9)
    d_hi = np.hypot(np.abs(lon1 - lon0), np.abs(lat1 - lat0)) * _M_PER_DEG * (1.0 + 1e-9) + 1e-6
    vmax = np.fmax(v0, v1)
    allowed = p.teleport_slack_m + 1.5 * vmax / 3.6 * dt_s
    not_fast = (d_hi * 3.6 / dt_s <= p.max_speed_kmh) | (d_hi <= p.teleport_slack_m)
    out: BoolA = (
        (dt_us > 0)
        & (dt_us <= lim_us)
        & np.isfinite(v0)
        & np.isfinite(v1)
        & (d_hi <= allowed)
        & not_fast
    )
    return out


def tail_of(
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    p: DetectionParams,
    *,
    fixes_in: int,
    reruns: int,
) -> Tail | None:
    """The tail of a vehicle whose kept fixes end with these (its last ``LEAD_STEPS + 1``
    or more); None when it has too few fixes to ever take the fast path yet."""
    n = len(t)
    if n < LEAD_STEPS + 1:
        return None
    ok = clean_steps(t[:-1], lon[:-1], lat[:-1], speed[:-1], t[1:], lon[1:], lat[1:], speed[1:], p)
    bad = (~ok).nonzero()[0]
    clean = len(ok) if not len(bad) else len(ok) - 1 - int(bad[-1])
    return Tail(
        int(t[-1]), float(lon[-1]), float(lat[-1]), float(speed[-1]), clean, fixes_in, reruns
    )


def select(
    p: DetectionParams,
    tails: list[Tail | None],
    bounds: IntpA,
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    paired: BoolA,
    now_us: int | None,
) -> tuple[BoolA, BoolA]:
    """Which vehicle groups of a batch sorted by vehicle (group g is ``bounds[g]:bounds[g+1]``,
    by fix time: :meth:`FleetTracker.feed` sorts each unit's fixes) take the fast path;
    ``tails[g]`` is the group's current tail or None, ``paired`` marks fixes with any fence
    or margin pair.

    Also returns which groups would have, had their tail allowed it (every new fix moving,
    clean and unpaired): only those are worth a new tail after the usual way (a vehicle
    standing or near a fence this round goes the usual way next round anyway, or once more).
    """
    g_n = len(tails)
    starts = bounds[:-1]
    if g_n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    have = np.fromiter((tl is not None and tl.clean >= LEAD_STEPS for tl in tails), bool, g_n)
    nul = Tail(0, 0.0, 0.0, np.nan, 0, 0, 0)
    tl_all = [tl if tl is not None else nul for tl in tails]
    tail_t = np.fromiter((tl.t_us for tl in tl_all), np.int64, g_n)
    tail_lon = np.fromiter((tl.lon for tl in tl_all), np.float64, g_n)
    tail_lat = np.fromiter((tl.lat for tl in tl_all), np.float64, g_n)
    tail_v = np.fromiter((tl.speed_kmh for tl in tl_all), np.float64, g_n)
    # each fix's previous fix: the one before it in its group, or its vehicle's tail
    prev_t = np.empty_like(t)
    prev_lon, prev_lat, prev_v = np.empty_like(lon), np.empty_like(lat), np.empty_like(speed)
    prev_t[1:], prev_lon[1:], prev_lat[1:], prev_v[1:] = t[:-1], lon[:-1], lat[:-1], speed[:-1]
    prev_t[starts], prev_lon[starts] = tail_t, tail_lon
    prev_lat[starts], prev_v[starts] = tail_lat, tail_v
    step = clean_steps(prev_t, prev_lon, prev_lat, prev_v, t, lon, lat, speed, p)
    ok = speed >= max(p.crawl_speed_kmh, p.stop_speed_kmh)  # never still (NaN: False)
    ok &= ~paired
    if now_us is not None:  # strictly increasing within a group: its last fix is its newest
        ok[bounds[1:] - 1] &= now_us - t[bounds[1:] - 1] <= p.max_gap_s * 1e6
    fast = have & np.logical_and.reduceat(step & ok, starts)
    step[starts[~have]] = True  # no tail (yet): a candidate by its own fixes
    candidate = np.logical_and.reduceat(step & ok, starts)
    return fast, candidate


__all__ = ["LEAD_STEPS", "Tail", "clean_steps", "select", "tail_of"]

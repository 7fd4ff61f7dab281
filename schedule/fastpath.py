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

The *parked* fast path does the same for :meth:`VehicleTracker._append_only`'s *parked* and
*dwelling* cases, where most append rounds are (a truck standing at a site: an open stop and
usually open visits reaching its newest fix): :func:`select_parked` (compiled, one pass over
the batch) proves them from a :class:`ParkedTail` taken after a usual round, and
:meth:`VehicleTracker.append_parked` appends the fixes and pairs and moves the open records'
ends, as ``_feed_fresh`` does.  It is a strict subset of ``_append_only``'s cases, each
condition at least as strict (see :func:`select_parked_reference`): a still fix is one
*reported* below ``stop_speed_kmh`` (the displacement rule, whose window and frame depend on
where a re-run starts, is never relied on), and the window ``_append_only`` would read is
clean and long enough (:func:`parked_window`).  ``tests/test_tracker_parked.py`` checks the
events round by round, each threshold, and the compiled selection against the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schedule import parked_kernel
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
    # (compiled: clean_steps on a few fixes is ~15 numpy calls; tail_of_reference)
    lim_us = round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000
    clean = parked_kernel.clean_tail(
        t, lon, lat, speed, lim_us, p.teleport_slack_m, p.max_speed_kmh
    )
    return Tail(
        int(t[-1]), float(lon[-1]), float(lat[-1]), float(speed[-1]), clean, fixes_in, reruns
    )


def tail_of_reference(
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    p: DetectionParams,
    *,
    fixes_in: int,
    reruns: int,
) -> Tail | None:
    """:func:`tail_of` in numpy (the tests' reference)."""
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
    """:func:`select_reference`, compiled (:func:`schedule.parked_kernel.select_driving`): one
    pass over the batch instead of ~30 numpy calls on all its fixes (~0.05 CPU-s of the
    simulated day at 2,000-fix batches)."""
    g_n = len(tails)
    fast = np.zeros(g_n, dtype=bool)
    cand = np.zeros(g_n, dtype=bool)
    if g_n == 0:
        return fast, cand
    nul = (0, 0.0, 0.0, np.nan)
    rows = [tl[:4] if tl is not None and tl.clean >= LEAD_STEPS else nul for tl in tails]
    have = np.fromiter((r is not nul for r in rows), bool, g_n)
    tail_t = np.fromiter((r[0] for r in rows), np.int64, g_n)
    tail_f = np.array([r[1:] for r in rows], dtype=np.float64)
    parked_kernel.select_driving(
        bounds.astype(np.int64), t, lon, lat, speed, paired, have, tail_t, tail_f,
        round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000, p.teleport_slack_m,
        p.max_speed_kmh, max(p.crawl_speed_kmh, p.stop_speed_kmh), now_us is not None,
        now_us or 0, p.max_gap_s, fast, cand,
    )  # fmt: skip
    return fast, cand


def select_reference(
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


#: no bound (a time after every fix)
FAR_US = 2**62
#: a fix this far inside the limit of the stop's extent rule is inside in any rounding
_EXTENT_ROOM_M = 1e-6
_DEG = np.pi / 180.0
#: ``schedule.append_kernel``'s metres per degree (``local_xy``'s, computed the same way)
_K_FRAME = float(_EARTH_R_M * _DEG)


class ParkedTail(NamedTuple):
    """What :func:`select_parked` needs of one vehicle in :meth:`VehicleTracker._append_only`'s
    *parked* (or *dwelling*) state: its newest kept fix, the window bound, the open records'
    figures, and the stamps that say it is still current (see
    :meth:`VehicleTracker.take_parked_tail`)."""

    t_us: int
    lon: float
    lat: float
    speed_kmh: float
    #: the first new fix may come no later than this (the window rule, :func:`parked_window`)
    first_max_us: int
    #: an open stop: every new fix must be reported still, within its head box's extent
    stop: bool
    #: the open stop's head box (min lon, max lon, min lat, max lat); NaN without one
    box: tuple[float, float, float, float]
    #: the newest new fix must come before this (*dwelling*: no stop can be announced yet)
    until_us: int
    #: the sites of the open visits (every new fix inside each, no pair of any other)
    sites: tuple[int, ...]
    fixes_in: int
    reruns: int
    #: the tracker's open-record cache when taken (a restore or site removal drops it)
    opened: object


def parked_window(t: I64, p: DetectionParams) -> tuple[int, int] | None:
    """:func:`parked_window_reference`, compiled (two searchsorted calls on a Python scalar
    each cost more than the rest of a parked round's bookkeeping)."""
    a, first_max = parked_kernel.window(t, round(p.speed_window_s * 1e6), LEAD_STEPS, FAR_US)
    return None if a < 0 else (a, first_max)


def parked_window_reference(t: I64, p: DetectionParams) -> tuple[int, int] | None:
    """(first fix index, latest first new fix) of the window rule for a tracker whose kept
    fix times are ``t``; None when no round can take the parked fast path now.

    ``_append_only`` reads the window ``t[k0:]`` plus the new fixes, ``k0`` the index of the
    last kept fix at or before ``new_t[0] - speed_window_s``, less 7 (integer microseconds:
    exact).  Its compiled *still* (:func:`schedule.append_kernel.plain_still`) answers only
    when ``k0 > 0``, every step of the window is plausible with known speeds and no gap, and
    the window's first fix lies at least ``speed_window_s`` before the newest kept fix (else
    that fix has no trailing fix and ``motion`` must judge).  ``k0`` grows with ``new_t[0] >
    t[-1]``: the smallest is ``k0min`` here, and ``k0 <= b0`` (the last fix a millisecond
    more than the window before the newest) holds while the first new fix comes before
    ``t[b0 + 8] + speed_window_s``.  The steps from ``k0min - LEAD_STEPS`` on must be clean
    (the caller checks): no outlier burst of ``motion`` reaches the window either.
    """
    n = len(t)
    last = int(t[-1])
    w = round(p.speed_window_s * 1e6)
    k0min = int(t.searchsorted(last + 1 - w, side="right")) - 8
    b0 = int(t.searchsorted(last - w - 1000, side="right")) - 1
    if k0min - LEAD_STEPS < 0 or b0 < k0min:
        return None
    first_max = int(t[b0 + 8]) + w - 1 if b0 + 8 < n else FAR_US
    if first_max <= last:
        return None
    return k0min - LEAD_STEPS, first_max


def _group_masks(
    sites: npt.NDArray[np.int64], gidx: IntpA, pair_r: I64, pair_s: I64
) -> tuple[BoolA, IntpA]:
    """For each pair (fix rank ``pair_r``, site code ``pair_s``): is its site one of its
    group's ``sites`` row (padded with -1), and in which slot."""
    row = sites[gidx[pair_r]]
    eq = row == pair_s[:, None]
    match: BoolA = eq.any(axis=1)
    slot: IntpA = eq.argmax(axis=1)
    return match, slot


def select_parked(
    p: DetectionParams,
    tails: list[ParkedTail | None],
    bounds: IntpA,
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    in_r: I64,
    in_s: I64,
    nr_r: I64,
    nr_s: I64,
    now_us: int | None,
) -> tuple[BoolA, BoolA]:
    """:func:`select_parked_reference`, compiled (:func:`schedule.parked_kernel.select`): one
    pass over the batch and its pairs instead of ~60 numpy calls."""
    g_n = len(tails)
    fast = np.zeros(g_n, dtype=bool)
    cand = np.zeros(g_n, dtype=bool)
    if g_n == 0:
        return fast, cand
    have = np.fromiter((tl is not None for tl in tails), bool, g_n)
    tail_i = np.zeros((g_n, 3), dtype=np.int64)
    tail_f = np.zeros((g_n, 8))
    with_tail = [tl for tl in tails if tl is not None]
    k_sites = max((len(tl.sites) for tl in with_tail), default=0)
    sites = np.full((g_n, max(k_sites, 1)), -1, dtype=np.int64)
    if with_tail:
        if k_sites > 62:
            return fast, cand  # more open visits than the kernel's bit set: the usual way
        gs = have.nonzero()[0]
        tail_i[gs] = [(tl.t_us, tl.first_max_us, tl.until_us) for tl in with_tail]
        tail_f[gs] = [(tl.lon, tl.lat, tl.speed_kmh, float(tl.stop), *tl.box) for tl in with_tail]
        if k_sites:
            pad = (-1,) * k_sites
            sites[gs] = [tl.sites + pad[len(tl.sites) :] for tl in with_tail]
    parked_kernel.select(
        bounds.astype(np.int64), t, lon, lat, speed, in_r, in_s, nr_r, nr_s, have, tail_i,
        tail_f, sites, round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000,
        p.teleport_slack_m, p.max_speed_kmh, p.stop_speed_kmh,
        p.stop_extent_m - 1.0 - _EXTENT_ROOM_M, now_us is not None, now_us or 0, p.max_gap_s,
        fast, cand,
    )  # fmt: skip
    return fast, cand


def select_parked_reference(
    p: DetectionParams,
    tails: list[ParkedTail | None],
    bounds: IntpA,
    t: I64,
    lon: F64,
    lat: F64,
    speed: F64,
    in_r: I64,
    in_s: I64,
    nr_r: I64,
    nr_s: I64,
    now_us: int | None,
) -> tuple[BoolA, BoolA]:
    """Which vehicle groups of a batch sorted by vehicle (and each by fix time, as for
    :func:`select`) are in :meth:`VehicleTracker._append_only`'s *parked* (or *dwelling*) case
    for certain: their new fixes only append and move the open records' ends.  ``in_r``/
    ``nr_r`` are the fence and margin pairs' fix positions in the batch (ascending), ``in_s``
    and ``nr_s`` their site codes.

    A group with a current tail takes it when (all of it; otherwise the usual way):

    * the new fixes come in strictly increasing time after the tail's newest fix, the first
      no later than ``first_max_us`` (:func:`parked_window`), every step into a new fix is
      *clean* (:func:`clean_steps`: no re-run's ``motion`` calls it a jump or a gap, both
      speeds known), and the clock (if given) no more than ``max_gap_s`` past the newest;
      with the tail's clean steps, ``append_kernel.plain_still`` answers and keeps every fix;
    * with an open stop: every new fix *reported* slower than ``stop_speed_kmh`` (then both
      ``plain_still`` and ``motion`` call it still whatever its trailing displacement: the
      displacement rule is never needed here), and no farther than ``stop_extent_m - 1``
      (less a micrometre of rounding room) from the farthest corner of the stop's head box,
      measured as ``append_kernel.within_extent`` measures it;
    * every new fix has a fence pair of each open visit's site, and no fix a fence or margin
      pair of any other site (no open visit: no pair at all);
    * *dwelling* (open visits, no open stop): the newest new fix before ``until_us``.

    Also returns which groups look parked this round (in order, clean steps within the
    group, every fix reported still or inside some fence): only those are worth a new tail
    after the usual way.
    """
    g_n = len(tails)
    if g_n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    starts = bounds[:-1]
    ends = bounds[1:]
    n = len(t)
    have = np.fromiter((tl is not None for tl in tails), bool, g_n)
    nul = ParkedTail(0, 0.0, 0.0, np.nan, -1, False, (np.nan,) * 4, 0, (), 0, 0, None)
    tl_all = [tl if tl is not None else nul for tl in tails]
    tail_t = np.fromiter((tl.t_us for tl in tl_all), np.int64, g_n)
    tail_lon = np.fromiter((tl.lon for tl in tl_all), np.float64, g_n)
    tail_lat = np.fromiter((tl.lat for tl in tl_all), np.float64, g_n)
    tail_v = np.fromiter((tl.speed_kmh for tl in tl_all), np.float64, g_n)
    first_max = np.fromiter((tl.first_max_us for tl in tl_all), np.int64, g_n)
    until = np.fromiter((tl.until_us for tl in tl_all), np.int64, g_n)
    stop = np.fromiter((tl.stop for tl in tl_all), bool, g_n)
    gidx = np.repeat(np.arange(g_n), ends - starts)
    # each fix's previous fix: the one before it in its group, or its vehicle's tail
    prev_t = np.empty_like(t)
    prev_lon, prev_lat, prev_v = np.empty_like(lon), np.empty_like(lat), np.empty_like(speed)
    prev_t[1:], prev_lon[1:], prev_lat[1:], prev_v[1:] = t[:-1], lon[:-1], lat[:-1], speed[:-1]
    prev_t[starts], prev_lon[starts] = tail_t, tail_lon
    prev_lat[starts], prev_v[starts] = tail_lat, tail_v
    step = clean_steps(prev_t, prev_lon, prev_lat, prev_v, t, lon, lat, speed, p)
    reported_still = speed < p.stop_speed_kmh  # NaN: False
    inside_any = np.zeros(n, dtype=bool)
    inside_any[in_r] = True
    # the pairs: of an open visit's site (which slot), or of another site
    k_sites = max((len(tl.sites) for tl in tl_all), default=0)
    n_sites = np.fromiter((len(tl.sites) for tl in tl_all), np.int64, g_n)
    bad_pair = np.zeros(g_n, dtype=bool)
    n_hit = np.zeros(n, dtype=np.int64)
    if k_sites:
        sites = np.full((g_n, k_sites), -1, dtype=np.int64)
        for g in have.nonzero()[0].tolist():
            s = tl_all[g].sites
            sites[g, : len(s)] = s
        match, slot = _group_masks(sites, gidx, in_r, in_s)
        hit = np.zeros((n, k_sites), dtype=bool)
        hit[in_r[match], slot[match]] = True
        n_hit = hit.sum(axis=1)
        bad_pair[gidx[in_r[~match]]] = True
        match_n, _ = _group_masks(sites, gidx, nr_r, nr_s)
        bad_pair[gidx[nr_r[~match_n]]] = True
    else:
        bad_pair[gidx[in_r]] = True
        bad_pair[gidx[nr_r]] = True
    ok = step & (n_hit == n_sites[gidx])
    # an open stop: reported still, and within the extent of its head box
    fstop = stop[gidx]
    if stop.any():
        box = np.array([tl.box for tl in tl_all], dtype=np.float64)[gidx]
        lon_min, lon_max, lat_min, lat_max = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
        k = _K_FRAME
        cos0 = np.cos(lat_min * _DEG)
        x = (lon - lon_min) * k * cos0
        x1 = (lon_max - lon_min) * k * cos0
        y = (lat - lat_min) * k
        y1 = (lat_max - lat_min) * k
        dx = np.maximum(np.abs(x), np.abs(x - x1))
        dist = np.hypot(dx, np.maximum(np.abs(y), np.abs(y - y1)))
        within = dist <= p.stop_extent_m - 1.0 - _EXTENT_ROOM_M  # NaN box: False
        ok &= ~fstop | (reported_still & within)
    last_t = t[ends - 1]
    g_ok = np.logical_and.reduceat(ok, starts) & have & ~bad_pair
    g_ok &= t[starts] <= first_max
    g_ok &= last_t < until
    if now_us is not None:
        g_ok &= now_us - last_t <= p.max_gap_s * 1e6
    step[starts] = True  # candidates: by their own fixes
    candidate = np.logical_and.reduceat(step & (reported_still | inside_any), starts)
    return g_ok, candidate


__all__ = [
    "FAR_US",
    "LEAD_STEPS",
    "ParkedTail",
    "Tail",
    "clean_steps",
    "parked_window",
    "parked_window_reference",
    "select",
    "select_parked",
    "select_parked_reference",
    "select_reference",
    "tail_of",
    "tail_of_reference",
]

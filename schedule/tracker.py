"""Per-vehicle detection state: fixes in any order and chunking in, versioned events out.

Why a replay and not a streaming state machine: fixes arrive out of order (store-and-forward
backlogs, a unit's real backwards timestamp), and "late buffered data re-opens decisions".  So a
:class:`VehicleTracker` keeps the vehicle's recent fixes sorted by fix time and, on every batch,
re-runs the (vectorised) detectors from the latest *checkpoint* at or before the earliest new
fix.  A checkpoint is a fix at which every detector is provably idle: the vehicle has been away
from every site and moving (not jitter) for longer than both hysteresis rules need, so nothing
before it can join anything after it.  The new run's records are matched to the ones already
reported (same site, overlapping time): unchanged ones emit nothing, changed ones emit the same
event id with a higher version, vanished ones are retracted.  The folded event stream therefore
equals what one run over all the fixes in order would report, whatever the arrival order and
chunking (tests/test_visits_tracker.py checks that with Hypothesis).

Memory is bounded by ``horizon_s``: fixes, checkpoints and reported records older than the
newest fix minus the horizon are forgotten (at a checkpoint, never inside an open visit or
stop).  A fix that arrives older than everything kept cannot be replayed here; it is counted in
``statistics().beyond_horizon`` and dropped (the store keeps it; a re-run from storage is the
remedy).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from schedule import (
    append_kernel,
    checkpoint_kernel,
    fastpath,
    parked_kernel,
    rerun_kernel,
    stops_kernel,
    visits_kernel,
)
from schedule.events import (
    ClosedBy,
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
    latest,
)
from schedule.motion import (
    BURST_FIXES,
    Motion,
    Track,
    diff_1d,
    local_xy,
    motion,
    nonzero_1d,
    runs,
)
from schedule.params import DetectionParams
from schedule.stops import TABLE as STOP_TABLE
from schedule.stops import StopRecord, detect_stops, stop_param_row
from schedule.stops import records_of as stop_records_of
from schedule.visits import VisitRecord, drop_dominated
from schedule.visits_kernel import detect_visits_all_sites

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]
IntpA = npt.NDArray[np.intp]
Pairs = npt.NDArray[np.int64]  # (2, K): row 0 fix index, row 1 site index

#: (lon, lat, margin_m) -> (2, K) containment pairs, like geofence.FenceIndex.query
Matcher = Callable[[F64, F64, float], npt.NDArray[np.integer]]

_CHECKPOINT_LEAD_FIXES = 6  # an outlier burst can drop up to 5 fixes after a jump
#: the last fixes of a re-run _chain_floor looks at, and the run starts among them it
#: refuses: a still run's head is 10 fixes, an outlier burst can still change BURST_FIXES + 2
_FLOOR_FIXES = 24
_YOUNG_FIXES = 20
_DRIVE_CHECKPOINT_S = 60.0  # while only appending a drive, look for a checkpoint this often
_DEG = np.pi / 180.0  # as schedule.motion.local_xy's (the kernels' frame cosine)
_M_PER_DEG = 6_371_008.8 * _DEG  # (schedule.motion's earth radius)


@dataclass(slots=True)
class TrackerStats:
    """Counters a metrics endpoint or the replay summary reads."""

    fixes_in: int = 0
    duplicates: int = 0
    late_fixes: int = 0  # arrived older than the vehicle's newest fix (replayed)
    beyond_horizon: int = 0  # arrived older than everything kept: dropped, counted
    reruns: int = 0
    fixes_rerun: int = 0
    appended: int = 0  # rounds that only appended: no re-run could have reported anything
    fast_path: int = 0  # of those, appended by FleetTracker's fast path (schedule/fastpath.py)
    fast_parked: int = 0  # of those, appended by its parked fast path (fastpath.select_parked)
    corrections: int = 0
    retractions: int = 0

    def add(self, other: TrackerStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _Reported:
    """What we last told the world about one visit or stop."""

    key: str
    site: int
    start_us: int
    end_us: int  # departure/end so far
    started: VisitStarted | StopStarted
    completed: VisitCompleted | StopEnded | None = None
    matched: bool = field(default=False)
    #: never re-derived again: its site was removed from the index, or it was restored from
    #: storage and starts before the fixes re-fed after a restart (see :meth:`restore`)
    frozen: bool = field(default=False)
    #: the detector's last record (an open visit closed by a site removal needs its figures)
    record: VisitRecord | None = None
    confirm_us: int = 0  # the fix at which it became a visit / stop (its started event's)
    #: a stop's head (the median of its chain's first fixes, which its extent is measured
    #: from) lies in this lon/lat box (min lon, max lon, min lat, max lat) of its kept fixes
    #: from its start to the newest fix of the re-run that reported it
    head_box: tuple[float, float, float, float] | None = None
    #: a stop merged from back-to-back stops (``StopRecord.merged``) by the last re-run
    merged: bool = False
    #: an open visit: its inside fixes and all its fixes through its last inside fix
    #: (``end_us``), kept up to date by append rounds (-1: not known until the next re-run)
    n_in: int = -1
    n_fix: int = -1
    #: an open stop: its inside fixes per site and all its fixes through the newest fix
    #: (None: not known until the next re-run; see VehicleTracker._stop_site_stays)
    site_counts: dict[int, int] | None = None
    stop_fixes: int = 0
    #: an open stop: the lon/lat box of its kept fixes (min lon, max lon, min lat, max lat)
    fix_box: tuple[float, float, float, float] | None = None
    #: an open stop: the stop before it in the last re-run may merge with it, as its
    #: median moves (False: that stop, or the fixes between them, rule it out for good)
    merge_risk: bool = True


@dataclass(slots=True)
class _Pending:
    """What a *parked* round found for the open records (applied when it only appends)."""

    visits: list[tuple[_Reported, int, int, int]]  # (visit, last inside fix, n_in, n_fix)
    stop_counts: tuple[dict[int, int], int] | None  # the open stop's site counts, fixes
    stop_box: tuple[float, float, float, float] | None  # the open stop's fixes' box
    dropped: bool  # the round's window dropped a fix


#: buffers of a group of columns appended together, their current views (each
#: ``buf[end - n:end]``: a trim moves the start, see _cut_head), the buffers' length, ``end``
_Group = tuple[tuple[npt.NDArray[Any], ...], tuple[npt.NDArray[Any], ...], int, int]


def _grown(
    group: _Group | None, cur: tuple[npt.NDArray[Any], ...], new: tuple[npt.NDArray[Any], ...]
) -> _Group:
    """Columns ``cur`` (of equal length) with ``new`` appended, as ``VehicleTracker._append``
    does for one column: written into the group's spare room (after ``end``) when every
    column is still the view last handed out, else into fresh buffers (of
    ``np.result_type(cur, new)``), from their start."""
    n = len(cur[0])
    k = len(new[0])
    if group is not None and group[3] + k <= group[2] and all(map(operator.is_, group[1], cur)):
        bufs, cap, a = group[0], group[2], group[3] - n
    else:
        cap = max(2 * (n + k), 64)
        dtypes = [np.result_type(c, x) for c, x in zip(cur, new, strict=True)]
        bufs = tuple(np.empty(cap, dtype=d) for d in dtypes)
        for b, c in zip(bufs, cur, strict=True):
            b[:n] = c
        a = 0
    end = a + n + k
    for b, x in zip(bufs, new, strict=True):
        b[a + n : end] = x
    return bufs, tuple(b[a:end] for b in bufs), cap, end


def _cut_head(
    group: _Group | None, cur: tuple[npt.NDArray[Any], ...], k: int
) -> tuple[_Group | None, tuple[npt.NDArray[Any], ...]]:
    """Columns ``cur`` without their first ``k`` values, and the group that keeps appending
    to them in place.

    Forgetting the oldest fixes (:meth:`VehicleTracker._trim`) as views of the same
    buffers, recorded as the group's current views, lets the next append write into the
    spare room as usual: before, the trimmed columns were views the group did not know, so
    every trim was followed by a fresh buffer and a copy of every kept fix (~1,800 such
    copies of ~8,000 fixes on the simulated day).  Nothing is written before ``end``: a view
    handed out before the trim (a re-run's ``Track``) still never changes.
    """
    out = tuple(c[k:] for c in cur)
    if group is not None and all(map(operator.is_, group[1], cur)):
        return (group[0], out, group[2], group[3]), out
    return group, out


#: FleetTracker._by_unit's table: the ids (sorted, distinct), their code points, as a list
_UnitTable = tuple[npt.NDArray[np.str_], npt.NDArray[np.uint32], list[str]]
#: ...kept up to this many ids (then started afresh from the batch's)
_MAX_UNITS = 1 << 16


#: what a re-run's detection found (VehicleTracker._detect_slow): visits, stops, the pending
#: chain's first fix, kept fix times, new checkpoints (fix times), stop sites and figures,
#: the open stop's site counts
_Found = tuple[
    list[VisitRecord],
    list[StopRecord],
    list[int],
    I64,
    npt.NDArray[np.int64],
    list[int],
    list[list[float]],
    dict[int, int] | None,
]


def _empty_pairs() -> tuple[I64, npt.NDArray[np.int32]]:
    return np.empty(0, np.int64), np.empty(0, np.int32)


class VehicleTracker:
    """Visits and stops of one vehicle (sans-I/O: arrays in, events out)."""

    def __init__(
        self,
        vehicle_id: str,
        site_ids: Sequence[str],
        params: DetectionParams | None = None,
        *,
        incremental: bool = True,
    ) -> None:
        """``site_ids[k]`` names site code ``k`` of the pairs fed in.  A list is kept by
        reference (the :class:`FleetTracker` shares its append-only site registry, so a code,
        once given, names the same site for ever); any other sequence is copied."""
        self.vehicle_id = vehicle_id
        self.site_ids: Sequence[str] = site_ids if isinstance(site_ids, list) else tuple(site_ids)
        self.params = params or DetectionParams()
        self._horizon_us = round(self.params.horizon_s * 1e6)  # (params are frozen)
        #: the checkpoint kernels' thresholds, built once (not on every re-run)
        self._checkpoint_pv = checkpoint_kernel.param_vector(
            self.params, _CHECKPOINT_LEAD_FIXES, BURST_FIXES
        )
        #: ...and the visit and stop kernels' (for the compiled re-run)
        self._visit_pv = visits_kernel.visit_params(self.params)
        self._stop_row = stop_param_row(self.params)
        self._t: I64 = np.empty(0, np.int64)
        self._lon: F64 = np.empty(0)
        self._lat: F64 = np.empty(0)
        self._speed: F64 = np.empty(0)
        self._hdop: F64 = np.empty(0)
        self._in_t, self._in_site = _empty_pairs()
        self._near_t, self._near_site = _empty_pairs()
        #: column name -> (buffer, the column's view of it): see _append
        self._buffers: dict[str, tuple[npt.NDArray[Any], npt.NDArray[Any]]] = {}
        #: the same for the five fix columns at once and for each pair table (_append_fixes)
        self._fix_buf: _Group | None = None
        self._pair_bufs: dict[str, _Group] = {}
        #: (visits list, stops list, stats.reruns, open visits, open stops): _open_records
        self._open_cache: (
            tuple[list[_Reported], list[_Reported], int, list[_Reported], list[_Reported]] | None
        ) = None
        self._checkpoints: list[int] = []  # fix times, ascending; [0] is the buffer start
        self._trimmed = False
        self._visits: list[_Reported] = []
        self._stops: list[_Reported] = []
        self._used_ids: set[str] = set()
        self.stats = TrackerStats()
        #: skip the re-run of a round that provably cannot report anything (see _append_only)
        self.incremental = incremental
        #: re-runs also place checkpoints where the detectors have decided everything before
        #: (see _settled_checkpoints); off, only the structural rule (for comparisons)
        self.settled_checkpoints = True
        #: re-runs detect in one compiled call (schedule/rerun_kernel.py); off, one call per
        #: detector and rule (_detect_slow, its reference)
        self.compiled_rerun = True
        #: where the last compiled re-run found the first pair of each table not older than
        #: its first kept fix (schedule/rerun_kernel.py's pair hints: the next re-run's scan
        #: starts there instead of at the horizon's first pair), with the arrays owning the
        #: tables' memory then.  Sound because a pair table's memory is only ever written
        #: after the end of the view last handed out (_append_pairs, _grown): any other
        #: assignment makes a new array or buffer, and the kernel checks the address
        self._pair_hints: (
            tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]] | None
        ) = None
        self._stale = False  # open records not refreshed since rounds were only appended
        self._restored = False  # restore() ran and no fix came yet
        self._clock_closed = False  # the last re-run closed something because of now_us
        #: set by FleetTracker: this tracker's schedule.fastpath.Tail (valid while its stamps
        #: equal stats.fixes_in and stats.reruns)
        self.fast_tail: fastpath.Tail | None = None
        #: the same for the parked fast path (valid while its stamps hold: FleetTracker.feed)
        self.parked_tail: fastpath.ParkedTail | None = None
        self._stop_floor_us: int | None = None  # no stop chain starts before this (_rerun)
        #: (stats.reruns, the newest fix of that re-run, the trusted floor once judged):
        #: see _chain_floor
        self._floor_check: tuple[int, int, bool | None] | None = None
        #: no kept fix after this one was dropped, nor can a dropped one come back (the last
        #: re-run's latest dropped fix, or the far future: see _visits_stay)
        self._last_drop_us = -_FAR_FUTURE_US
        self._pending: _Pending | None = None  # what _append_only found for a parked round

    # -- input -------------------------------------------------------------------------

    def feed(
        self,
        t_us: npt.ArrayLike,
        lon: npt.ArrayLike,
        lat: npt.ArrayLike,
        speed_kmh: npt.ArrayLike,
        hdop: npt.ArrayLike,
        inside: npt.ArrayLike,
        near: npt.ArrayLike,
        *,
        now_us: int | None = None,
    ) -> list[DetectionEvent]:
        """Add fixes (any order, duplicates allowed) with their site pairs; return new events.

        ``inside``/``near`` are (2, K) pairs (fix index into these arrays, site index) for the
        fence and the fence grown by ``exit_margin_m``.
        """
        t = np.asarray(t_us, dtype=np.int64)
        n_in = len(t)
        self.stats.fixes_in += n_in
        if n_in == 0:
            return self.advance(now_us) if now_us is not None else []
        ins = np.asarray(inside, dtype=np.int64).reshape(2, -1)
        nrs = np.asarray(near, dtype=np.int64).reshape(2, -1)
        order = np.argsort(t, kind="stable")
        t = t[order]
        first_of_t = np.concatenate(([True], t[1:] != t[:-1]))
        at = self._t.searchsorted(t)
        seen = np.zeros(n_in, dtype=bool)
        inb = at < len(self._t)
        seen[inb] = self._t[at[inb]] == t[inb]
        fresh = first_of_t & ~seen
        self.stats.duplicates += int(n_in - fresh.sum())
        if self._trimmed:
            old = t < self._checkpoints[0]
            self.stats.beyond_horizon += int((old & fresh).sum())
            fresh &= ~old
        if not fresh.any():
            return []
        if len(self._t):
            self.stats.late_fixes += int((t[fresh] < self._t[-1]).sum())
        src = order[fresh]  # indices into the caller's arrays, ascending in time
        new_t = t[fresh]
        # pairs of the kept fixes, by fix time
        pos = np.full(n_in, -1, dtype=np.int64)
        pos[src] = np.arange(len(src))

        def pairs_t(pr: Pairs) -> tuple[I64, npt.NDArray[np.int32]]:
            if pr.shape[1] == 0:
                return _empty_pairs()
            p = pos[pr[0]]
            ok = p >= 0
            return new_t[p[ok]], pr[1][ok].astype(np.int32)

        it, isite = pairs_t(ins)
        nt, nsite = pairs_t(nrs)
        new_lon = np.asarray(lon, np.float64)[src]
        new_lat = np.asarray(lat, np.float64)[src]
        new_speed = np.asarray(speed_kmh, np.float64)[src]
        new_hdop = np.asarray(hdop, np.float64)[src]
        return self._feed_fresh(
            new_t, new_lon, new_lat, new_speed, new_hdop, it, isite, nt, nsite, now_us
        )

    def feed_in_order(
        self,
        t: I64,
        lon: F64,
        lat: F64,
        speed: F64,
        hdop: F64,
        in_t: I64,
        in_site: npt.NDArray[np.int32],
        near_t: I64,
        near_site: npt.NDArray[np.int32],
        *,
        now_us: int | None = None,
    ) -> list[DetectionEvent]:
        """:meth:`feed` for fixes the caller knows to be in strictly increasing time after this
        tracker's newest fix (the live common case), with their pairs given by fix time: the
        sorting, deduplication and pair mapping of :meth:`feed` would change nothing, so they
        are skipped (:class:`FleetTracker` checks the order for a whole batch at once)."""
        k = len(t)
        if k == 0 or (len(self._t) and int(t[0]) <= int(self._t[-1])):
            raise ValueError("feed_in_order needs new fixes after the newest kept fix")
        self.stats.fixes_in += k
        return self._feed_fresh(t, lon, lat, speed, hdop, in_t, in_site, near_t, near_site, now_us)

    def _feed_fresh(
        self,
        new_t: I64,
        new_lon: F64,
        new_lat: F64,
        new_speed: F64,
        new_hdop: F64,
        it: I64,
        isite: npt.NDArray[np.int32],
        nt: I64,
        nsite: npt.NDArray[np.int32],
        now_us: int | None,
    ) -> list[DetectionEvent]:
        """The rest of :meth:`feed`: fixes new to this tracker, ascending in time, with their
        pairs by fix time."""
        kept_last = (
            self._append_only(
                new_t, new_lon, new_lat, new_speed, new_hdop, it, isite, nt, nsite, now_us
            )
            if self.incremental
            else None
        )
        dirty = int(new_t[0])
        # in order after the newest kept fix (kept_last implies it): no re-sort needed
        late = len(self._t) > 0 and kept_last is None and dirty < int(self._t[-1])
        self._append_fixes(new_t, new_lon, new_lat, new_speed, new_hdop)
        if late:
            o = np.argsort(self._t, kind="stable")
            self._t, self._lon, self._lat = self._t[o], self._lon[o], self._lat[o]
            self._speed, self._hdop = self._speed[o], self._hdop[o]
        if len(it):
            self._append_pairs("_in_t", "_in_site", it, isite)
        if len(nt):
            self._append_pairs("_near_t", "_near_site", nt, nsite)
        if self._restored:
            self._freeze_unreachable()
        if not self._checkpoints or (dirty < self._checkpoints[0] and not self._trimmed):
            self._checkpoints = [int(self._t[0])]  # before any fix the vehicle is idle
            self._trimmed = False
        events: list[DetectionEvent] = []
        if kept_last is not None:
            self.stats.appended += 1
            self._stale = True
            open_v, open_s = self._open_records()
            pend = self._pending
            if pend is not None:  # parked: the records as the round found them
                self._pending = None
                for r, end, n_in, n_fix in pend.visits:  # through their last inside fix
                    r.end_us, r.n_in, r.n_fix = end, n_in, n_fix
                for r in open_s:  # the open stop now reaches the newest fix
                    r.end_us = kept_last
                    if pend.stop_counts is None:
                        r.site_counts = None
                    else:
                        r.site_counts, r.stop_fixes = pend.stop_counts
                    r.fix_box = pend.stop_box
                if pend.dropped:
                    self._last_drop_us = int(new_t[-1])
            else:
                for r in open_v:
                    r.end_us = kept_last
                for r in open_s:
                    r.end_us = kept_last
            if not open_v and not open_s:
                self._checkpoint_while_driving()
        else:
            events = self._rerun(dirty, now_us)
        # _trim()'s own first test, without the call (it finds nothing on most rounds)
        cps = self._checkpoints
        if len(cps) > 1 and cps[1] <= int(self._t[-1]) - self._horizon_us:
            self._trim()
        return events

    def take_tail(self) -> fastpath.Tail | None:
        """This tracker's :class:`schedule.fastpath.Tail` now, or None while a round of it
        must go the usual way (something open, closed by the clock, freshly restored)."""
        if self._clock_closed or self._restored or len(self._t) < fastpath.LEAD_STEPS + 1:
            return None
        open_v, open_s = self._open_records()
        if open_v or open_s:
            return None
        k = len(self._t) - fastpath.LEAD_STEPS - 2
        k = max(k, 0)
        return fastpath.tail_of(
            self._t[k:],
            self._lon[k:],
            self._lat[k:],
            self._speed[k:],
            self.params,
            fixes_in=self.stats.fixes_in,
            reruns=self.stats.reruns,
        )

    def append_driving(self, t: I64, lon: F64, lat: F64, speed: F64, hdop: F64) -> None:
        """Append fixes that :func:`schedule.fastpath.select` proved only append (in order
        after the newest fix, no pair, never still, clean steps, nothing open): what
        :meth:`feed` does when :meth:`_append_only` finds the *driving* case."""
        k = len(t)
        self.stats.fixes_in += k
        self.stats.appended += 1
        self.stats.fast_path += 1
        self._stale = True
        self._append_fixes(t, lon, lat, speed, hdop)
        self._checkpoint_while_driving()
        cps = self._checkpoints
        limit = int(t[-1]) - self._horizon_us
        if len(cps) > 1 and cps[1] <= limit:  # else _trim() finds nothing to forget
            self._trim()

    def take_parked_tail(self) -> fastpath.ParkedTail | None:
        """This tracker's :class:`schedule.fastpath.ParkedTail` now, or None unless it is in
        :meth:`_append_only`'s *parked* or *dwelling* state with everything a round there
        reads of the past settled: open records (at most one stop; several visits each at
        least half inside, no other visit overlapping them) reaching the newest fix, not
        closed by the clock, not freshly restored, the newest fix reported still (with an
        open stop), and clean steps over the window :func:`schedule.fastpath.parked_window`
        names.  All of it holds while rounds only append (the stamps catch anything else)."""
        p = self.params
        if self._clock_closed or self._restored or not self._checkpoints or len(self._t) < 2:
            return None
        open_v, open_s = self._open_records()
        if (not open_v and not open_s) or len(open_s) > 1:
            return None
        last = int(self._t[-1])
        if any(r.end_us != last for r in open_s):
            return None
        if len(open_v) > 1 and any(v.record is None or v.record.inside_share < 0.5 for v in open_v):
            return None
        for ov in open_v:
            if ov.end_us != last:  # at a fence's edge (_visits_stay): new fixes all inside
                tl = self._visit_tail(ov)
                if tl is None or tl[1] >= p.exit_confirm_fixes:
                    return None
                # its share is lowest with one new fix (and grows with each further one)
                share = float(ov.n_in + 1) / float(ov.n_fix + tl[0] + 1)
                if share < p.min_inside_share or (len(open_v) > 1 and share < 0.5):
                    return None
        nan = float("nan")
        box: tuple[float, float, float, float] = (nan, nan, nan, nan)
        until = fastpath.FAR_US
        if open_s:
            head = open_s[0].head_box
            if head is None or not float(self._speed[-1]) < p.stop_speed_kmh:
                return None
            st = open_s[0]
            if st.merged or (st.merge_risk and self._merge_candidates(st)):
                return None
            # its site stays (see _stop_site_stays): every new fix is inside each open site
            if st.site >= 0 and not any(v.site == st.site for v in open_v):
                return None
            if st.site < 0 and open_v:
                return None
            box = head
        elif self._stop_floor_us is None:
            return None
        else:
            until = self._stop_floor_us + round((p.stop_min_s - 1.0) * 1e6)
            if until <= last:
                return None
        if open_v:
            v_start = min(v.start_us for v in open_v)
            open_ids = {id(v) for v in open_v}
            if any(
                r.end_us >= v_start and id(r) not in open_ids and not r.started.retracted
                for r in self._visits
            ):
                return None
        win = fastpath.parked_window(self._t, p)
        if win is None:
            return None
        t, lon, lat, v = self._t, self._lon, self._lat, self._speed
        lim_us = round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000
        # fastpath.clean_steps of the steps from win[0] on, compiled
        if not parked_kernel.clean_from(
            t, lon, lat, v, win[0], lim_us, p.teleport_slack_m, p.max_speed_kmh
        ):
            return None
        return fastpath.ParkedTail(
            last,
            float(lon[-1]),
            float(lat[-1]),
            float(v[-1]),
            win[1],
            bool(open_s),
            box,
            until,
            tuple(sorted({r.site for r in open_v})),
            self.stats.fixes_in,
            self.stats.reruns,
            self._open_cache,
        )

    def append_parked(
        self,
        tail: fastpath.ParkedTail,
        t: I64,
        lon: F64,
        lat: F64,
        speed: F64,
        hdop: F64,
        in_t: I64,
        in_site: npt.NDArray[np.int32],
        near_t: I64,
        near_site: npt.NDArray[np.int32],
    ) -> fastpath.ParkedTail | None:
        """Append fixes that :func:`schedule.fastpath.select_parked` proved are in the *parked*
        (or *dwelling*) case of :meth:`_append_only` (what :meth:`feed` then does: append the
        fixes and pairs, move the open records' ends to the newest fix); return the next tail
        (``tail`` moved on), or None when the window rule no longer allows one."""
        k = len(t)
        self.stats.fixes_in += k
        self.stats.appended += 1
        self.stats.fast_parked += 1
        self._stale = True
        open_v, open_s = self._open_records()
        last_old = int(self._t[-1])
        # the fixes after each open visit's last inside one (take_parked_tail knew them)
        tails = [
            0 if r.end_us == last_old or (tl := self._visit_tail(r)) is None else tl[0]
            for r in open_v
        ]
        self._append_fixes(t, lon, lat, speed, hdop)
        if len(in_t):
            self._append_pairs("_in_t", "_in_site", in_t, in_site)
        if len(near_t):
            self._append_pairs("_near_t", "_near_site", near_t, near_site)
        last = int(t[-1])
        for r, m in zip(open_v, tails, strict=True):  # the open visit/stop now reaches the
            r.end_us = last  # newest fix (inside each)
            if r.n_fix >= 0:
                r.n_in += k
                r.n_fix += m + k
        for r in open_s:  # (every new fix reported standing: the stop ends at the newest)
            r.end_us = last
            counts = r.site_counts
            if counts is not None:
                for s in tail.sites:
                    counts[s] = counts.get(s, 0) + k
                r.stop_fixes += k
        cps = self._checkpoints
        if len(cps) > 1 and cps[1] <= last - round(self.params.horizon_s * 1e6):
            self._trim()  # else _trim() finds nothing to forget
        # the tail's steps and the new ones are clean: only the window bound moves on
        win = fastpath.parked_window(self._t, self.params)
        if win is None:
            return None
        return fastpath.ParkedTail(
            last,
            float(lon[-1]),
            float(lat[-1]),
            float(speed[-1]),
            win[1],
            tail.stop,
            tail.box,
            tail.until_us,
            tail.sites,
            self.stats.fixes_in,
            self.stats.reruns,
            self._open_cache,
        )

    def _append(self, name: str, new: npt.NDArray[Any]) -> None:
        """``self.<name> = np.concatenate((self.<name>, new))`` in amortised O(len(new)).

        A vehicle keeps up to ``horizon_s`` of fixes (~8,000 on the simulated day) and a live
        round brings ~40: concatenating nine such columns copied ~600 kB per vehicle-round,
        ~14 % of a round at 2,000-fix batches.  Each column is a view of a buffer with spare
        room after it; new values are written into that room, which no earlier view covers,
        so arrays handed out before (a re-run's ``Track``) never change.  Any other
        assignment of the column (trim, re-sort, site removal) is noticed (the view is no
        longer the one recorded) and the next append starts a fresh buffer.
        """
        k = len(new)
        if k == 0:
            return  # the column as it is equals itself with nothing appended
        cur: npt.NDArray[Any] = getattr(self, name)
        n = len(cur)
        ent = self._buffers.get(name)
        if ent is not None and ent[1] is cur and n + k <= len(ent[0]):
            buf = ent[0]
        else:
            buf = np.empty(max(2 * (n + k), 64), dtype=np.result_type(cur, new))
            buf[:n] = cur
        buf[n : n + k] = new
        view = buf[: n + k]
        self._buffers[name] = (buf, view)
        setattr(self, name, view)

    def _append_fixes(self, t: I64, lon: F64, lat: F64, speed: F64, hdop: F64) -> None:
        """:meth:`_append` of the five fix columns at once (one buffer check, not five: an
        append round is dominated by such per-call Python at 2,000-fix batches).

        The common case, every column still the view last handed out and room left, is
        written out here (no tuples, generators or zips: ~1 µs a round on a 1 Hz fleet,
        where each round appends one fix); anything else goes through :func:`_grown`."""
        k = len(t)
        if not k:
            return
        g = self._fix_buf
        cur_t = self._t
        if g is not None:
            e = g[3]  # the columns are buf[e - len(cur_t):e]
            m = e + k
            v = g[1]
            if (
                m <= g[2]
                and v[0] is cur_t
                and v[1] is self._lon
                and v[2] is self._lat
                and v[3] is self._speed
                and v[4] is self._hdop
            ):
                a = e - len(cur_t)
                b_t, b_lon, b_lat, b_speed, b_hdop = g[0]
                b_t[e:m] = t
                b_lon[e:m] = lon
                b_lat[e:m] = lat
                b_speed[e:m] = speed
                b_hdop[e:m] = hdop
                views = (b_t[a:m], b_lon[a:m], b_lat[a:m], b_speed[a:m], b_hdop[a:m])
                self._fix_buf = (g[0], views, g[2], m)
                self._t, self._lon, self._lat, self._speed, self._hdop = views
                return
        self._fix_buf = g = _grown(
            g,
            (cur_t, self._lon, self._lat, self._speed, self._hdop),
            (t, lon, lat, speed, hdop),
        )
        self._t, self._lon, self._lat, self._speed, self._hdop = g[1]

    def _append_pairs(self, t_name: str, site_name: str, t: I64, site: npt.NDArray[Any]) -> None:
        """:meth:`_append` of one pair table's two columns (fix time, site code) at once (the
        common case written out, as in :meth:`_append_fixes`)."""
        k = len(t)
        if not k:
            return
        g = self._pair_bufs.get(t_name)
        cur_t = getattr(self, t_name)
        cur_s = getattr(self, site_name)
        if g is not None:
            e = g[3]  # as in _append_fixes
            m = e + k
            v = g[1]
            if m <= g[2] and v[0] is cur_t and v[1] is cur_s:
                a = e - len(cur_t)
                b_t, b_s = g[0]
                b_t[e:m] = t
                b_s[e:m] = site
                views = (b_t[a:m], b_s[a:m])
                self._pair_bufs[t_name] = (g[0], views, g[2], m)
                setattr(self, t_name, views[0])
                setattr(self, site_name, views[1])
                return
        g = _grown(g, (cur_t, cur_s), (t, site))
        self._pair_bufs[t_name] = g
        setattr(self, t_name, g[1][0])
        setattr(self, site_name, g[1][1])

    def _open_records(self) -> tuple[list[_Reported], list[_Reported]]:
        """The open visits and stops (:func:`_is_open`), in list order.

        Append rounds ask on every round; records only change in a re-run (which counts
        ``stats.reruns`` and builds new lists), :meth:`restore`, :meth:`_freeze_unreachable`
        and :meth:`retire_sites` (which drop the cache); :meth:`_trim` carries the answer over
        to its shorter lists.  So the answer is kept while the lists, the re-run count and
        those stay the same.  An append round only moves an open record's ``end_us``, which
        openness does not depend on.
        """
        c = self._open_cache
        if (
            c is not None
            and c[0] is self._visits
            and c[1] is self._stops
            and c[2] == self.stats.reruns
        ):
            return c[3], c[4]
        # _is_open inlined, the common rejection (a completed record) tested first: after
        # every re-run this scans both lists (~30 records), a function call per record was
        # most of it
        open_v = [
            r
            for r in self._visits
            if (r.completed is None or r.completed.retracted)
            and not r.frozen
            and not r.started.retracted
        ]
        open_s = [
            r
            for r in self._stops
            if (r.completed is None or r.completed.retracted)
            and not r.frozen
            and not r.started.retracted
        ]
        self._open_cache = (self._visits, self._stops, self.stats.reruns, open_v, open_s)
        return open_v, open_s

    def _append_only(
        self,
        new_t: I64,
        lon: F64,
        lat: F64,
        speed: F64,
        hdop: F64,
        it: I64,
        isite: npt.NDArray[np.int32],
        nt: I64,
        nsite: npt.NDArray[np.int32],
        now_us: int | None,
    ) -> int | None:
        """The newest fix a re-run would keep, when a re-run over these new fixes could not
        report anything (the round then only appends them: the next re-run, from the same
        checkpoint, covers them as always); None when the round must re-run.

        This is what makes a round's cost follow the new fixes instead of the vehicle's
        history in the two states a vehicle spends most of its time in.  The motion features
        (:func:`schedule.motion.motion`, the very code a re-run uses) are computed over a short
        window: the new fixes and the old ones a re-run would look at for them (the trailing
        ``speed_window_s`` and an outlier burst's 5 fixes before it); then, conservatively:

        * **parked**: an open, reported stop reaching the newest fix, and every kept fix from
          there on *still* (it extends the stop's last still run); either no open visit and no
          fence pair at all, or open reported visits reaching the newest fix with every
          kept new fix inside each of their sites and no pair of another site (it extends
          each visit's last inside run) and no other visit overlapping them.
          ``drop_dominated`` cannot change: one visit alone has nobody to be dominated by;
          several (a truck parked where fences overlap, as the synthetic city's sites do) are
          each at least half inside, which no visit dominates, and their shares only grow.
          At a fence's edge, kept new fixes may also lie outside the fence (within the margin,
          or fewer than ``exit_confirm_fixes`` beyond it after any inside fix): no exit can be
          confirmed, and the visit's share, counted exactly, stays above the thresholds
          (:meth:`_visits_stay`; the visit then reaches its last inside fix, as a re-run's
          record does).  The open stop's site (the site holding half its fixes) stays the
          same (:meth:`_stop_site_stays`), and it neither merges with the stop before it nor
          comes apart (:meth:`_stop_unmerged`).
          An outlier burst may be dropped, but only among fixes after every open record's
          confirming fix (so no started event can change), and with an open stop only among
          the new fixes (its site counts the old ones).  An open stop or visit emits
          nothing while it goes on.
        * **dwelling**: an open reported visit reaching the newest fix and no open stop yet
          (a visit is confirmed after ``min_dwell_s``, its stop only after ``stop_min_s``):
          as *parked* for the visit, and no stop chain can have lasted ``stop_min_s`` by the
          newest new fix (none starts before ``_stop_floor_us``, the pending chain's first
          fix at the last re-run, or a speed window before its last fixes), so no stop is
          announced; a chain that breaks or restarts meanwhile reports nothing either.
        * **driving**: nothing open, no new fix inside a fence, nothing dropped, and no new
          fix *still*: no stop run, no visit run, no transition; closed visits and stops stay
          closed (an exit only gains confirming fixes).  A new fix may lie within a fence's
          margin (no candidate visit gains an inside fix, so none is newly confirmed or
          grows its share), or inside one while no candidate of its site can have lasted
          ``min_dwell_s`` (:meth:`_no_visit_by`: arriving at the next site before a checkpoint
          follows the last visit); and new fixes may be *still* (queueing at lights, a halt
          after a visit before any checkpoint follows it) while no stop chain can have lasted
          ``stop_min_s`` by the newest new fix (:meth:`_no_stop_by`): a chain shorter than
          that is no stop record, so it reports nothing and merges with no stop before it;
          one rejoining a closed stop's chain would have lasted ``stop_min_s`` from a start
          the bound covers (see :meth:`_chain_floor`) (``tests/test_tracker_queue.py``).

        Both need the new fixes in order after the newest one, no jump, gap or frozen run in
        the window, and no record closed by the clock in the last re-run.
        ``tests/test_tracker_incremental.py`` checks, round by round, that the events equal
        those of a tracker that re-runs every round.
        """
        p = self.params
        self._pending = None
        n_old = len(self._t)
        if n_old < 2 or self._clock_closed or new_t[0] <= self._t[-1]:
            return None
        if now_us is not None and now_us - int(new_t[-1]) > p.max_gap_s * 1e6:
            return None
        last_t = int(self._t[-1])
        fc = self._floor_check
        if not self._stale and (fc is None or fc[0] != self.stats.reruns):
            # nothing appended since the last re-run: its newest fix is ours (_chain_floor)
            self._floor_check = (self.stats.reruns, last_t, None)
        open_v, open_s = self._open_records()
        if len(open_s) > 1:
            return None
        if len(open_v) > 1 and any(v.record is None or v.record.inside_share < 0.5 for v in open_v):
            return None  # overlapping fences: see the *parked* case
        if not open_v and not open_s and self._quiet(int(new_t[-1]), it):
            return int(new_t[-1])
        # dwelling: an open visit and no stop yet; no chain can last stop_min_s by t_end
        dwelling = False
        if open_v and not open_s:
            floor = self._chain_floor()
            dwelling = floor is not None and int(new_t[-1]) - floor < round(
                (p.stop_min_s - 1.0) * 1e6
            )
        parked = bool(open_s) or dwelling
        if parked:
            if open_s and open_s[0].end_us != last_t:
                return None
            drop_us = self._last_drop_us
            if any(v.end_us != last_t and (v.n_fix < 0 or drop_us >= v.end_us) for v in open_v):
                return None  # (a visit at a fence's edge: see _visits_stay)
            if open_s and open_s[0].merged:
                return None
            if not open_v and (len(isite) or len(nt)):
                return None
        elif open_v:
            return None
        elif len(isite) and not self._no_visit_by(int(new_t[-1]), it, isite):
            return None  # (fixes in a fence: see *driving*)
        window_us = round(p.speed_window_s * 1e6)
        k0 = int(self._t.searchsorted(new_t[0] - window_us, side="right")) - 8
        if k0 <= 0:
            return None
        # _plain_still of the window self.<column>[k0:] + new, compiled (schedule.append_kernel)
        still = np.empty(len(new_t) + 1, dtype=bool)
        if append_kernel.plain_still(
            self._t, self._lon, self._lat, self._speed, k0, new_t, lon, lat, speed,
            float(np.cos(float(self._lat[k0]) * _DEG)), p.stop_speed_kmh, p.crawl_speed_kmh,
            p.stop_radius_m, p.speed_window_s, min(p.max_gap_s, p.teleport_check_s),
            p.teleport_slack_m, p.max_speed_kmh, still,
        ):  # fmt: skip
            # nothing to drop or cut: motion() would keep every fix, the new ones are kept
            kept_lon, kept_lat, kept_t, kept_speed = lon, lat, new_t, speed
            clean = True
        else:
            t_w = np.concatenate((self._t[k0:], new_t))
            lon_w = np.concatenate((self._lon[k0:], lon))
            lat_w = np.concatenate((self._lat[k0:], lat))
            speed_w = np.concatenate((self._speed[k0:], speed))
            n_all = len(t_w)
            first_new = n_all - len(new_t)
            track = Track(t_w, lon_w, lat_w, speed_w, np.concatenate((self._hdop[k0:], hdop)))
            m = motion(track, p)
            if m.dropped_frozen or m.jump[1:].any() or m.gap[1:].any():
                return None
            keep = m.keep
            clean = len(keep) == n_all
            if not clean:  # an outlier burst at the end of the window
                if not parked:
                    return None
                kept = np.zeros(n_all, dtype=bool)
                kept[keep] = True
                first_drop = int(np.argmin(kept))
                if first_drop < (first_new if open_s else first_new - 5):
                    return None  # (an open stop: its site counts its old fixes)
                t_drop = int(t_w[first_drop])
                if any(r.confirm_us >= t_drop for r in (*open_v, *open_s)):
                    return None
            # kept fixes from the newest old one on (a re-run sees the same features for
            # them: nothing before the window can drop or cut anything this late)
            a = int(keep.searchsorted(first_new - 1))
            if a >= len(keep) or int(keep[a]) != first_new - 1:
                return None  # the newest old fix itself would be dropped
            still = m.still[a:]
            kept_new = keep[a + 1 :]
            kept_lon, kept_lat, kept_t = lon_w[kept_new], lat_w[kept_new], t_w[kept_new]
            kept_speed = speed_w[kept_new]
        newest = int(kept_t[-1]) if len(kept_t) else last_t
        if not parked:
            if bool(still[1:].any()) and not self._no_stop_by(int(new_t[-1])):
                return None
            return newest
        if open_s and not bool(still.all()):
            return None
        if open_s and not self._within_extent(open_s[0], kept_lon, kept_lat):
            return None
        # set membership of a few dozen fix times: np.isin hashes (~40 µs a call)
        kept_new_t = kept_t.tolist()
        inside: dict[int, set[int]] = {}
        visits: list[tuple[_Reported, int, int, int]] = []
        if open_v:
            sites = {v.site for v in open_v}
            inside = {v.site: set(it[isite == v.site].tolist()) for v in open_v}
            others = {t for t, s in zip(it.tolist(), isite.tolist(), strict=True) if s not in sites}
            others.update(
                t for t, s in zip(nt.tolist(), nsite.tolist(), strict=True) if s not in sites
            )
            if not others.isdisjoint(kept_new_t):
                return None
            v_start = min(v.start_us for v in open_v)
            open_ids = {id(v) for v in open_v}
            if any(
                r.end_us >= v_start and id(r) not in open_ids and not r.started.retracted
                for r in self._visits
            ):
                return None
            got = self._visits_stay(open_v, kept_new_t, inside, nt, nsite, clean, last_t)
            if got is None:
                return None
            visits = got
        counts = None
        stop_box = None
        if open_s:
            stop_box = self._stop_unmerged(open_s[0], kept_lon, kept_lat)
            if stop_box is None:
                return None
            standing = not bool((kept_speed >= p.stop_speed_kmh).any())
            stop = open_s[0]
            counts = self._stop_site_stays(stop, open_v, kept_new_t, inside, standing)
            if counts is False:
                return None
        stop_counts = counts if isinstance(counts, tuple) else None
        self._pending = _Pending(visits, stop_counts, stop_box, not clean)
        return newest

    def _merge_candidates(self, stop: _Reported) -> list[_Reported]:
        """The reported stops that ``stop`` (open) starts within ``stop_merge_gap_s`` of
        the end of (a second of margin for the float seconds)."""
        lim = stop.start_us - round((self.params.stop_merge_gap_s + 1.0) * 1e6)
        return [
            r for r in self._stops if r.end_us >= lim and r is not stop and not r.started.retracted
        ]

    def _stop_unmerged(
        self, stop: _Reported, lon: F64, lat: F64
    ) -> tuple[float, float, float, float] | None:
        """The open ``stop`` neither comes apart nor merges with these new fixes: the box
        of its fixes with them (None when it might).

        Back-to-back stops (:func:`schedule.stops._merge_back_to_back`) are one when, among
        other things, their medians lie within ``stop_merge_m``; the open one's median moves
        with every fix it gains.  So a stop merged from two (``merged``) may come apart: not
        extended here.  One starting within ``stop_merge_gap_s`` of the end of the stop
        before it may come to merge with it, unless the last re-run ruled that out for good
        (``merge_risk`` False: that stop did not end by "exit", or a split or a fix farther
        than ``stop_merge_m`` from its median lies between them, the common case of stops
        at neighbouring sites), or its median cannot come that near, which holds while the
        box of its kept fixes (the median of each coordinate lies within it) stays more than
        ``stop_merge_m`` + 1 m (frames and the reported median's rounding) from that stop's
        median (its StopEnded lat/lon) (``tests/test_tracker_edge.py``).
        """
        box = stop.fix_box
        if stop.merged or box is None:
            return None
        if len(lon):
            box = (
                min(box[0], float(lon.min())),
                max(box[1], float(lon.max())),
                min(box[2], float(lat.min())),
                max(box[3], float(lat.max())),
            )
        if not stop.merge_risk:
            return box
        reach = self.params.stop_merge_m + 1.0
        for r in self._merge_candidates(stop):
            c = r.completed
            if c is None or c.retracted or not isinstance(c, StopEnded):
                return None
            if c.closed_by != "exit":
                continue  # only a stop that moved on merges with the next
            dx = max(0.0, box[0] - c.lon, c.lon - box[1]) * _M_PER_DEG * np.cos(c.lat * _DEG)
            dy = max(0.0, box[2] - c.lat, c.lat - box[3]) * _M_PER_DEG
            if not float(np.hypot(dx, dy)) > reach:
                return None
        return box

    def _stop_site_stays(
        self,
        stop: _Reported,
        open_v: list[_Reported],
        kept: list[int],
        inside: dict[int, set[int]],
        standing: bool,
    ) -> tuple[dict[int, int], int] | bool:
        """The open ``stop``'s site (``StopStarted.site_id``: :func:`schedule.stops.stop_site`,
        the site holding at least half of its fixes, the lowest on a tie) is the same with
        the *parked* round's ``kept`` new fixes (inside the open visits' sites as ``inside``
        says, no other site's: :meth:`_append_only` checked): its site counts with them, True
        when it stays but its counts are no longer known, False when it may change.

        A truck re-parked beyond the margin (its visit exited, the stop goes on) loses its
        site as it stands there, and one that began outside a fence gains it
        (``tests/test_tracker_edge.py``).  Exact: the re-run noted the counts over the
        stop's fixes when it ended at that re-run's newest fix (``_diff_stops``), and while
        every fix it gains is reported standing (``StopRecord``'s end is the last fix not
        reported at ``stop_speed_kmh`` or more) and none of its old fixes is dropped (the
        *parked* case drops none with an open stop), the stop's fixes are those plus the
        kept new ones.  Otherwise, conservatively: a site ``S`` stays when every new fix is
        inside ``S`` (``2 c_S >= f`` gives ``2 (c_S + k) >= f + k``, and no other site gains
        more than ``k``; any prefix of them too, should the stop end before the newest), and
        no site stays none when no new fix is inside any (no open visit).
        """
        counts = stop.site_counts
        if counts is not None and standing:
            new = dict(counts)
            for s, ins in inside.items():
                c = sum(1 for t in kept if t in ins)
                if c:
                    new[s] = new.get(s, 0) + c
            f = stop.stop_fixes + len(kept)
            return (new, f) if _site_of(new, f) == stop.site else False
        if stop.site >= 0:
            site_ins = inside.get(stop.site)
            return site_ins is not None and site_ins.issuperset(kept)
        return not open_v

    def _visit_tail(self, v: _Reported) -> tuple[int, int] | None:
        """The kept fixes after the open visit ``v``'s last inside fix (``end_us``) and how
        many of them lie beyond the margin, when known (see :meth:`_visits_stay`)."""
        if v.n_fix < 0 or self._last_drop_us >= v.end_us:
            return None
        t = self._t
        tail = len(t) - int(t.searchsorted(v.end_us, side="right"))
        # (the pair tables are in arrival order, not time order)
        sel = (self._near_t > v.end_us) & (self._near_site == v.site)
        return tail, tail - len(set(self._near_t[sel].tolist()))

    def _visits_stay(
        self,
        open_v: list[_Reported],
        kept: list[int],
        inside: dict[int, set[int]],
        nt: I64,
        nsite: npt.NDArray[np.int32],
        clean: bool,
        last_t: int,
    ) -> list[tuple[_Reported, int, int, int]] | None:
        """Each open visit's (last inside fix, inside fixes, fixes through it) with the
        *parked* round's ``kept`` new fixes, when a re-run would report the same of it
        (nothing while it is open); None when it might not.

        The plain case: every kept new fix inside the visit's site, and its last inside fix
        the newest (it extends the visit's last inside run; its share only grows).

        At a fence's edge (a truck parked there with jitter across the fence, within
        ``exit_margin_m`` of it), kept new fixes outside the fence: the detector
        (:mod:`schedule.visits`) ends a visit only at a confirmed exit (at least
        ``exit_confirm_fixes`` fixes beyond the margin between two inside fixes, or after
        the last) or a gap (none here: the window has none, and a re-run closes a visit
        with one after its last inside fix); so while fewer than ``exit_confirm_fixes``
        fixes beyond the margin follow any inside fix, it goes on to its last inside fix.
        Its record (and so what it reports) then differs only in its share
        (``inside_share``, over its fixes through its last inside fix), which must stay at
        least ``min_inside_share`` (else the re-run drops it), and at least 0.5 with several
        open visits (overlapping fences: ``drop_dominated`` drops only a visit below 0.5).
        Counted exactly: the re-run noted the counts of each open visit, every round since
        moved them on; the fixes after the last inside one (their fence pairs) are read
        from the kept columns, which hold exactly the re-run's kept fixes and the rounds'
        since when no fix from the visit's last inside fix on was dropped (``clean`` for
        this round, ``_last_drop_us`` before: a drop among a re-run's last 12 fixes may
        still be undone, so such a re-run leaves it at the far future).
        """
        p = self.params
        out: list[tuple[_Reported, int, int, int]] = []
        for v in open_v:
            ins = inside[v.site]
            if v.end_us == last_t and ins.issuperset(kept):
                end = kept[-1] if kept else last_t
                k = len(kept)
                known = v.n_fix >= 0
                out.append((v, end, v.n_in + k if known else -1, v.n_fix + k if known else -1))
                continue
            tl = self._visit_tail(v) if clean else None
            if tl is None:
                return None
            tail, beyond = tl
            near = set(nt[nsite == v.site].tolist())
            n_in, n_fix, end = v.n_in, v.n_fix, v.end_us
            for x in kept:
                tail += 1
                if x in ins:
                    n_in += 1
                    n_fix += tail
                    tail = beyond = 0
                    end = x
                elif x not in near:
                    beyond += 1
                    if beyond >= p.exit_confirm_fixes:
                        return None
            if beyond >= p.exit_confirm_fixes:
                return None
            share = float(n_in) / float(n_fix)
            if share < p.min_inside_share or (len(open_v) > 1 and share < 0.5):
                return None
            if n_in * v.n_fix < v.n_in * n_fix and self._other_inside_since(v.site, v.start_us):
                return None  # its share fell: a visit it dominated may no longer be
            out.append((v, end, n_in, n_fix))
        return out

    def _other_inside_since(self, site: int, start_us: int) -> bool:
        """Whether a fix at or after ``start_us`` lies inside a fence other than ``site``'s.

        Why: :func:`schedule.visits.drop_dominated` drops a candidate visit of another site
        that the open visit covers from at least twice as far inside; at a fence's edge the
        open visit's share can fall, and such a candidate would then be reported.  It
        overlaps the open visit, so its last inside fix is at or after the visit's start:
        with no such fix there is no candidate to come back."""
        sel = self._in_t >= start_us
        return bool((self._in_site[sel] != site).any())

    def _quiet(self, t_end: int, new_in_t: I64) -> bool:
        """Nothing is reported from the last checkpoint on, and a re-run through ``t_end``
        could not report anything yet (the new fixes come in order after the newest one).

        Arriving at a site, or queueing at lights, nothing is open and the structural
        rounds (:meth:`_append_only`'s *parked* and *driving*) do not apply, so these rounds
        re-ran every time (a third of all re-runs at 2,000-fix batches).  A re-run from the
        last checkpoint ``cp`` reports only what it newly confirms (there is no record from
        ``cp`` on to correct or retract; those before it stand): a visit once its candidate
        (opened at an inside fix at or after ``cp``) has lasted ``min_dwell_s``, a stop once
        its chain (which starts at or after ``cp``: the re-run's backdating floor) has lasted
        ``stop_min_s``.  Neither can happen before those spans have passed since the first
        inside fix at or after ``cp``, and since ``cp``; a second of margin keeps the float
        seconds of the detectors on the safe side of the integer microseconds here.

        A stop chain also starts no earlier than ``_stop_floor_us`` (the last re-run's
        pending chain's first fix, or a speed window before the fixes an outlier burst could
        still change: see :meth:`_rerun`; the *dwelling* case of :meth:`_append_only` uses it
        the same way), so the stop's span is measured from the later of ``cp`` and that floor.
        That keeps arriving and queueing rounds quiet when the last checkpoint lies minutes
        back (the vehicle slowed down before the site, where no checkpoint is placed) but the
        chain in progress, if any, is younger than ``stop_min_s``.  The floor stays valid over
        rounds that only appended: their fixes come after the re-run's, and a chain starting
        among them starts after it.
        """
        p = self.params
        if not self._no_stop_by(t_end):
            return False
        cp_t = self._checkpoints[-1]
        # both lists are kept in start order (_retract_unmatched, _trim, restore): the last
        # record is the latest start (a scan of every kept record cost ~0.1 s a day at 2k)
        vs, ss = self._visits, self._stops
        if (vs and vs[-1].start_us >= cp_t) or (ss and ss[-1].start_us >= cp_t):
            return False
        old_in = self._in_t[self._in_t >= cp_t]
        first_in = min(
            int(old_in.min()) if len(old_in) else t_end,
            int(new_in_t.min()) if len(new_in_t) else t_end,
        )
        return t_end - first_in < round((p.min_dwell_s - 1.0) * 1e6)

    def _no_stop_by(self, t_end: int) -> bool:
        """No stop chain a re-run could find now has lasted ``stop_min_s`` by ``t_end`` (the
        new fixes come in order after the newest one), so none is a stop: a re-run from the
        last checkpoint ``cp`` starts every chain at or after ``cp`` (its backdating floor)
        and after ``_stop_floor_us`` when :meth:`_chain_floor` trusts it; a second of margin
        keeps the detector's float seconds on the safe side of the integer microseconds.
        (:meth:`_quiet` and the *driving* case of :meth:`_append_only` rest on it.)"""
        if not self._checkpoints or self._restored:
            return False
        cp_t = self._checkpoints[-1]
        floor = self._chain_floor()
        chain_from = cp_t if floor is None else max(cp_t, floor)
        return t_end - chain_from < round((self.params.stop_min_s - 1.0) * 1e6)

    def _no_visit_by(self, t_end: int, it: I64, isite: npt.NDArray[np.int32]) -> bool:
        """Nothing open: no candidate visit of a site these new fixes are inside (``it``,
        ``isite``) can have lasted ``min_dwell_s`` by ``t_end``, so a re-run confirms none.

        Arriving at a site just after leaving another (neighbouring sites, no checkpoint
        between), :meth:`_quiet` measures from the first inside fix since the last checkpoint,
        the previous visit's.  Per site ``S`` it is sharper: a re-run's candidate of ``S``
        alive at ``t_end`` opened at an inside fix of ``S`` at or after the checkpoint and
        after the last inside fix (``end_us``) of any visit of ``S`` reported closed (a
        confirmed exit or a gap after it stays one, so that visit is closed again at the same
        fix and the next candidate opens after it).  A candidate becomes a visit only once it
        has lasted ``min_dwell_s``, whatever its share (a visit confirmed with too small a
        share, or dominated, is such a candidate too).  Sites without a new inside fix keep
        their candidates as they were (none gains an inside fix: same confirmation, same
        share).  Inside fixes later dropped count too: the bound only gets earlier.
        """
        if not self._checkpoints or self._restored:
            return False
        lim = round((self.params.min_dwell_s - 1.0) * 1e6)
        if t_end - int(it.min()) >= lim:
            return False
        cp_t = self._checkpoints[-1]
        in_t, in_site = self._in_t, self._in_site
        for s in set(isite.tolist()):
            after = cp_t - 1
            for r in self._visits:
                c = r.completed
                if (
                    r.site == s
                    and c is not None
                    and not c.retracted
                    and not r.started.retracted
                    and not r.frozen
                ):
                    after = max(after, r.end_us)
            old = in_t[(in_t > after) & (in_site == s)]
            if len(old) and t_end - int(old.min()) >= lim:
                return False
            if t_end - int(it[isite == s].min()) >= lim:
                return False
        return True

    def _chain_floor(self) -> int | None:
        """``_stop_floor_us`` when it provably bounds every stop chain a re-run could find
        now, else None (then neither *dwelling* nor :meth:`_quiet` may lean on it).

        The last re-run's floor is its pending chain's first fix, or a speed window before
        the fixes an outlier burst could still change.  That misses one thing: a still run
        begun among the re-run's last fixes has a *head* (the median of its first 10 fixes)
        that later fixes still move, so whether it joins the chain before it (head within
        ``stop_radius_m`` of that chain's anchor) can flip; joined, the chain starts at the
        earlier chain's first fix, before the floor, and may last ``stop_min_s`` sooner than
        the floor says (``tests/test_tracker_incremental.py``: a truck standing, two jitter
        fixes, three standing fixes 35 m off, then back).  So the floor is trusted only when
        the re-run's last ``_FLOOR_FIXES`` fixes are all kept (no implausible step, no gap,
        every speed known: the compiled *still* rule over them, with its speed-window
        context, is motion()'s) and no still run starts among its last ``_YOUNG_FIXES`` (10
        for a head, ``BURST_FIXES + 2`` an outlier burst can still change, a margin).  Then
        every run's head and join were decided at that re-run, except for runs that a burst
        among the last fixes splits off or makes: split off a run going through the end, such
        a run joins that run's (pending) chain or starts a chain after the floor; after fixes
        that are not still, it cannot join a chain before them unless that chain was still
        pending (its first fix is the floor) -- a chain the walk broke was broken by a
        confirmed move, which stays one, or by a run it did not join, which is itself a chain
        (an older, decided one).  A chain started by backdating never reaches back past the
        chain before it.

        The re-run's newest fix is noted by :meth:`_append_only` in the first round after it
        (``_floor_check``: re-run count, newest fix, the verdict once judged); when a round
        appended before that (the fleet's fast path, with nothing open), the floor is not
        trusted until the next re-run.  Judged once per re-run.
        """
        fc = self._floor_check
        floor = self._stop_floor_us
        if fc is None or fc[0] != self.stats.reruns or floor is None:
            return None
        if fc[2] is not None:
            return floor if fc[2] else None
        p = self.params
        trusted = False
        i1 = int(self._t.searchsorted(fc[1], side="right"))  # the re-run's fixes: [:i1]
        i0 = i1 - _FLOOR_FIXES
        k0 = -1
        if i0 > 0:
            t_ctx = int(self._t[i0]) - round(p.speed_window_s * 1e6)
            k0 = int(self._t.searchsorted(t_ctx, side="right")) - 8
        if k0 > 0:
            still = np.empty(i1 - i0, dtype=bool)
            t, lon, lat, spd = self._t, self._lon, self._lat, self._speed
            if append_kernel.plain_still(
                t[: i0 + 1], lon[: i0 + 1], lat[: i0 + 1], spd[: i0 + 1], k0,
                t[i0 + 1 : i1], lon[i0 + 1 : i1], lat[i0 + 1 : i1], spd[i0 + 1 : i1],
                float(np.cos(float(lat[k0]) * _DEG)), p.stop_speed_kmh, p.crawl_speed_kmh,
                p.stop_radius_m, p.speed_window_s, min(p.max_gap_s, p.teleport_check_s),
                p.teleport_slack_m, p.max_speed_kmh, still,
            ):  # fmt: skip
                starts = still[1:] & ~still[:-1]  # still[0] is fix i0's
                trusted = not bool(starts[-_YOUNG_FIXES:].any())
        self._floor_check = (fc[0], fc[1], trusted)
        return floor if trusted else None

    def _within_extent(self, stop: _Reported, lon: F64, lat: F64) -> bool:
        """Every one of these fixes lies certainly within ``stop_extent_m`` of the stop's head.

        Still fixes alone do not extend a stop: the chain ends where 3 of 5 fixes lie beyond
        the extent from its head (:func:`schedule.stops._extent_cut`), so a vehicle creeping
        below the still speed leaves its stop.  The head is a median of some of the stop's
        kept fixes, so it lies in their box (``_Reported.head_box``); a fix no farther than
        ``stop_extent_m - 1`` from the box's farthest corner is within the extent in any
        re-run's local frame (frames differ by far less than 1 m over 100 m).  If no new fix
        is beyond, no window of 5 ending at a new fix holds more beyond fixes than the window
        ending at the stop's last fix did, and that one had no majority (the stop is open),
        so the chain goes on.
        """
        box = stop.head_box
        if box is None:
            return False
        # compiled (schedule.append_kernel); the numpy reference is within_extent_reference
        cos0 = float(np.cos(box[2] * _DEG))
        return bool(
            append_kernel.within_extent(*box, lon, lat, cos0, self.params.stop_extent_m - 1.0)
        )

    def _checkpoint_while_driving(self) -> None:
        """Find checkpoints in the recent drive without a re-run of the detectors.

        Rounds that only append create no checkpoint, so a long drive would leave the latest
        one behind the previous visit and the next re-run would start there.  This runs the
        motion features and the checkpoint rule (the very code a re-run uses) over the last
        couple of minutes only, at most once per ``_DRIVE_CHECKPOINT_S`` of fix time.
        """
        p = self.params
        t_end = int(self._t[-1])
        last_cp = self._checkpoints[-1]
        if last_cp >= t_end - round(_DRIVE_CHECKPOINT_S * 1e6):
            return
        span_s = 2 * max(p.exit_confirm_s, p.move_confirm_s) + _DRIVE_CHECKPOINT_S
        k = int(self._t.searchsorted(max(last_cp, t_end - round(span_s * 1e6))))
        t_ctx = int(self._t[k]) - round(p.speed_window_s * 1e6)
        kc = max(int(self._t.searchsorted(t_ctx, side="right")) - 2, 0)
        # the search compiled (schedule.append_kernel.drive_checkpoints), exact where no fix
        # can be dropped or have its speed estimated, and where too few fixes could be in a
        # checkpoint's run (slowing down at a site, queueing, passing fences); else motion()
        found = np.empty(len(self._t) - k, dtype=np.int64)
        # the last compiled re-run's pair hints, as _detect passes them (the kernel checks
        # their addresses): the scan of each pair table starts near its end, not at the horizon
        in_t, near_t, h = self._in_t, self._near_t, self._pair_hints
        in_hint = near_hint = _NO_HINT
        if h is not None:
            if h[0] is (in_t if in_t.base is None else in_t.base):
                in_hint = h[2][0]
            if h[1] is (near_t if near_t.base is None else near_t.base):
                near_hint = h[2][1]
        n_found = append_kernel.drive_checkpoints(
            self._t, self._lon, self._lat, self._speed, kc, k, in_t, near_t, in_hint, near_hint,
            float(np.cos(float(self._lat[kc]) * _DEG)), p.crawl_speed_kmh, p.stop_speed_kmh,
            round(min(p.max_gap_s, p.teleport_check_s) * 1e6) - 1000, p.teleport_slack_m,
            p.max_speed_kmh, _CHECKPOINT_LEAD_FIXES,
            max(p.exit_confirm_fixes, p.move_confirm_fixes) + 1,
            max(p.exit_confirm_s, p.move_confirm_s), 2 * p.drift_radius_m, found,
        )  # fmt: skip
        if n_found >= 0:
            self._checkpoints += [c for c in found[:n_found].tolist() if c > last_cp]
            return
        track = Track(
            self._t[kc:], self._lon[kc:], self._lat[kc:], self._speed[kc:], self._hdop[kc:]
        )
        m = motion(track, p)
        active = int(m.keep.searchsorted(k - kc))
        kept_t = track.t_us[m.keep]
        near_any = np.zeros(len(kept_t), dtype=bool)
        near_any[self._kept_pairs(kept_t, self._in_t, self._in_site)[0]] = True
        near_any[self._kept_pairs(kept_t, self._near_t, self._near_site)[0]] = True
        self._checkpoints += [
            c for c in self._checkpoints_in(m, near_any, kept_t, active) if c > last_cp
        ]

    def advance(self, now_us: int) -> list[DetectionEvent]:
        """Close visits and stops whose vehicle has been silent for more than ``max_gap_s``."""
        if not len(self._t) or now_us - int(self._t[-1]) <= self.params.max_gap_s * 1e6:
            return []
        if all(
            r.completed is not None and not r.completed.retracted
            for r in (*self._visits, *self._stops)
            if not r.started.retracted
        ):
            return []
        return self._rerun(int(self._t[-1]), now_us)

    def finish(self) -> list[DetectionEvent]:
        """End of data (offline replay): close everything still open."""
        if not len(self._t):
            return []
        return self.advance(int(self._t[-1]) + round(self.params.max_gap_s * 1e6) + 1)

    # -- detection -----------------------------------------------------------------------

    def _rerun(self, dirty_us: int, now_us: int | None) -> list[DetectionEvent]:
        p = self.params
        self._stale = False
        self._clock_closed = now_us is not None and now_us - int(self._t[-1]) > p.max_gap_s * 1e6
        # (bisect_right: np.searchsorted's side="right", for a list of ints)
        cp_i = max(bisect.bisect_right(self._checkpoints, dirty_us) - 1, 0)
        cp_t = self._checkpoints[cp_i]
        k = int(self._t.searchsorted(cp_t))
        t_ctx = int(self._t[k]) - round(p.speed_window_s * 1e6)
        kc = max(int(self._t.searchsorted(t_ctx, side="right")) - 2, 0)
        # the tracker's own columns: equal lengths, times strictly increasing (feed dedupes
        # and sorts them), so Track's checks (an O(n) pass per re-run) are skipped
        track = Track.unchecked(
            self._t[kc:], self._lon[kc:], self._lat[kc:], self._speed[kc:], self._hdop[kc:]
        )
        self.stats.reruns += 1
        self.stats.fixes_rerun += len(track)
        m = motion(track, p)
        t0 = int(track.t_us[0])
        active = int(m.keep.searchsorted(k - kc))
        n_tr = len(track)
        self._last_drop_us = -_FAR_FUTURE_US
        if len(m.keep) < n_tr:  # the latest dropped fix: before the kept run that ends it
            d = m.keep - np.arange(len(m.keep))
            j0 = int(d.searchsorted(d[-1])) if len(d) else 0
            drop = n_tr - 1 if not len(d) or int(m.keep[-1]) < n_tr - 1 else int(m.keep[j0]) - 1
            # among the last 12 fixes, later fixes may yet keep it (an outlier burst's reach)
            self._last_drop_us = _FAR_FUTURE_US if drop >= n_tr - 12 else int(track.t_us[drop])
        # (as detect_stops judges its clock: the newest kept fix older than max_gap_s)
        stale = (
            now_us is not None
            and len(m.t_s) > 0
            and now_us - (t0 + m.t_s[-1] * 1e6) > p.max_gap_s * 1e6
        )
        found = self._detect_compiled(m, track, active, t0, now_us, stale)
        if found is None:
            found = self._detect_slow(m, track, active, t0, now_us)
        visits, stops, pending, kept_t, cp_times, sites, figures, tail_counts = found
        nk = len(kept_t)
        # no stop chain can start before this any more (see _append_only's *dwelling*): the
        # pending chain's first fix, or a speed window (a stop's backdating) before the fixes
        # an outlier burst in the next fixes could still change
        floor = int(kept_t[max(nk - BURST_FIXES - 2, 0)]) - round((p.speed_window_s + 1) * 1e6)
        self._stop_floor_us = min(int(kept_t[pending[0]]), floor) if pending else floor
        # new checkpoints (replace those after the one we ran from)
        new_cps = cp_times.tolist()
        self._checkpoints = self._checkpoints[: cp_i + 1] + [c for c in new_cps if c > cp_t]
        events = self._diff_visits(visits, cp_t)
        events += self._diff_stops(stops, cp_t, m, kept_t, sites, figures, tail_counts)
        return events

    def _detect_compiled(
        self, m: Motion, track: Track, active: int, t0: int, now_us: int | None, stale: bool
    ) -> _Found | None:
        """:meth:`_detect_slow`'s answer from one compiled call (schedule/rerun_kernel.py), or
        None when the stop walk hands the call to its reference (or refuses a step: the slow
        path raises as the walk's wrapper does), or while ``compiled_rerun`` is off."""
        if not self.compiled_rerun:
            return None
        rep = m.reported_kmh if m.reported_kmh is not None else np.full(len(m.t_s), np.nan)
        in_t, near_t = self._in_t, self._near_t
        in_owner = in_t if in_t.base is None else in_t.base
        near_owner = near_t if near_t.base is None else near_t.base
        h = self._pair_hints
        (status, _info, pending, kept_t, oi, of, stop_i, stop_f, cp_times, counts,
         hints) = rerun_kernel.detect(
            track.t_us, track.lon, track.lat, track.hdop, m.keep, m.t_s, m.x, m.y,
            m.speed_kmh, rep, m.still, m.jump, m.gap, in_t, self._in_site,
            near_t, self._near_site,
            h[2][0] if h is not None and h[0] is in_owner else _NO_HINT,
            h[2][1] if h is not None and h[1] is near_owner else _NO_HINT,
            active, t0, now_us is not None,
            0 if now_us is None else now_us, bool(stale), self._visit_pv,
            STOP_TABLE, self._stop_row, self._checkpoint_pv, self.settled_checkpoints,
        )  # fmt: skip
        if status != stops_kernel.DONE:
            return None
        # (the owners are held, so their memory, which the hints name by address, stays
        # theirs; pairs are only ever appended after a view's end: see _pair_hints)
        self._pair_hints = (in_owner, near_owner, hints)
        visits = visits_kernel.records_of(oi, of) if len(oi) else []
        visits.sort(key=_ARRIVAL_SITE)
        if len(stop_i):
            rows_i, rows_f = stop_i.tolist(), stop_f.tolist()
            stops = stop_records_of(t0, rows_i, rows_f)
            sites = [r[4] for r in rows_i]
            figures = [r[4:] for r in rows_f]
            tail = dict(zip(*counts.tolist(), strict=True))  # ({} unless it applies)
        else:
            stops, sites, figures, tail = [], [], [], None
        return (
            visits,
            stops,
            [pending] if pending >= 0 else [],
            kept_t,
            cp_times,
            sites,
            figures,
            tail,
        )

    def _detect_slow(
        self, m: Motion, track: Track, active: int, t0: int, now_us: int | None
    ) -> _Found:
        """The detectors, checkpoint searches and stop figures of a re-run, one compiled call
        each (the reference of :meth:`_detect_compiled`): the visits (sorted by arrival and
        site), the stops, the pending chain's first fix (if any), the kept fix times, the new
        checkpoints (fix times), each stop's site and figures
        (``stops_kernel.stop_figures``) and the open stop's site counts when it ends at the
        newest kept fix (see :meth:`_stop_site_stays`)."""
        p = self.params
        kept_t = track.t_us[m.keep]
        # pairs on kept fixes and the sites visited from ``active`` on, at once
        kin, knear, near_any, site_a = checkpoint_kernel.rerun_pairs(
            kept_t, self._in_t, self._in_site, self._near_t, self._near_site, active
        )
        nk = len(kept_t)
        visits: list[VisitRecord] = (
            drop_dominated(
                detect_visits_all_sites(
                    m, p, t0, kin, knear, track.hdop[m.keep], active_from=active, now_us=now_us
                )
            )
            if len(site_a)
            else []
        )
        visits.sort(key=_ARRIVAL_SITE)
        pending: list[int] = []
        stops = detect_stops(m, p, t0, active_from=active, now_us=now_us, pending_out=pending)
        pv = self._checkpoint_pv
        x, y, t_s, spd, still, jump, gap = m.x, m.y, m.t_s, m.speed_kmh, m.still, m.jump, m.gap
        cps_i = checkpoint_kernel.structural(x, y, t_s, spd, still, jump, gap, near_any, active, pv)
        if self.settled_checkpoints:
            # nothing at or after the first fix of an open visit or stop is settled
            open_from = [r.first for r in visits if r.closed_by is None]
            open_from += [r.first for r in stops if r.closed_by is None]
            # ...and only after the last structural one (earlier ones would serve late data
            # only); all of them lie after every structural one: concatenated, still sorted
            after = int(cps_i[-1]) + 1 if len(cps_i) else active
            rep = m.reported_kmh if m.reported_kmh is not None else np.full(nk, np.nan)
            settled = checkpoint_kernel.settled(
                x, y, t_s, spd, still, jump, gap, rep, kin, knear,
                max(active, after), min(open_from, default=nk), active, pv,
            )  # fmt: skip
            if len(settled):
                cps_i = np.concatenate((cps_i, settled))
        # sites, medians and head boxes of every record in one compiled call
        # (schedule/stops_kernel.py; stops.stop_figures_reference is the rule as written)
        sites: list[int] = []
        figures: list[list[float]] = []
        tail: dict[int, int] | None = None
        if stops:
            recs = np.array(
                [(r.first, r.confirm, r.last, r.fix_count, r.closed_by is not None) for r in stops],
                dtype=np.int64,
            )
            sites_a, figs_a = stops_kernel.stop_figures(track.lon, track.lat, m.keep, kin, recs)
            sites, figures = sites_a.tolist(), figs_a.tolist()
            last = stops[-1]
            if last.closed_by is None and last.last == nk - 1:
                ks = kin[1][kin[0] >= last.first].tolist()
                tail = {s: ks.count(s) for s in set(ks)}
        return visits, stops, pending, kept_t, kept_t[cps_i], sites, figures, tail

    @staticmethod
    def _kept_pairs(
        kept_t: I64, pair_t: I64, pair_site: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.int64]:
        """(2, K): (kept index, site) of the pairs on kept fixes (schedule/checkpoint_kernel.py;
        :meth:`_kept_pairs_numpy` is the reference)."""
        out: npt.NDArray[np.int64] = checkpoint_kernel.kept_pairs(kept_t, pair_t, pair_site)
        return out

    @staticmethod
    def _kept_pairs_numpy(
        kept_t: I64, pair_t: I64, pair_site: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.int64]:
        """The numpy version of :meth:`_kept_pairs` (the compiled one's reference)."""
        if not len(pair_t) or not len(kept_t):
            return np.empty((2, 0), np.int64)
        sel = pair_t >= kept_t[0]
        pt, ps = pair_t[sel], pair_site[sel]
        idx = kept_t.searchsorted(pt)
        ok = idx < len(kept_t)
        ok[ok] = kept_t[idx[ok]] == pt[ok]
        return np.stack((idx[ok].astype(np.int64), ps[ok].astype(np.int64)))

    def _checkpoints_in(
        self, m: Motion, near_any: npt.NDArray[np.bool_], kept_t: I64, active: int
    ) -> list[int]:
        """Fix times at which every detector is idle whatever comes later (module docstring);
        compiled (schedule/checkpoint_kernel.py), :meth:`_checkpoints_in_numpy` is the rule."""
        pv = self._checkpoint_pv
        idx = checkpoint_kernel.structural(
            m.x, m.y, m.t_s, m.speed_kmh, m.still, m.jump, m.gap, near_any, active, pv
        )
        out: list[int] = kept_t[idx].tolist()
        return out

    def _checkpoints_in_numpy(
        self, m: Motion, near_any: npt.NDArray[np.bool_], kept_t: I64, active: int
    ) -> list[int]:
        """:meth:`_checkpoints_in` in numpy: the rule as written, the compiled one's reference."""
        p = self.params
        n = len(kept_t)
        if n == 0:
            return []
        zero = np.zeros(n, dtype=bool)
        zero[1:] = (diff_1d(m.x) == 0) & (diff_1d(m.y) == 0)
        cond = ~near_any & ~m.still & np.isfinite(m.speed_kmh) & ~m.jump & ~m.gap & ~zero
        cond &= m.speed_kmh >= p.crawl_speed_kmh  # a stop's start is never backdated past it
        cond[:active] = False
        need_fixes = max(p.exit_confirm_fixes, p.move_confirm_fixes) + 1
        need_s = max(p.exit_confirm_s, p.move_confirm_s)
        out: list[int] = []
        starts, ends = runs(cond)
        lead = _CHECKPOINT_LEAD_FIXES
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            b = s + lead
            if e - b < need_fixes:
                continue
            d = np.hypot(m.x[b:e] - m.x[b], m.y[b:e] - m.y[b])
            moved = np.maximum.accumulate(d) > 2 * p.drift_radius_m
            ok = moved & (np.arange(e - b) >= need_fixes) & (m.t_s[b:e] - m.t_s[b] >= need_s)
            hits = nonzero_1d(ok)
            if len(hits):
                out.append(int(kept_t[b + int(hits[0])]))
        return out

    def _settled_checkpoints(
        self,
        m: Motion,
        kin: npt.NDArray[np.int64],
        knear: npt.NDArray[np.int64],
        kept_t: I64,
        start: int,
        until: int,
        active: int,
    ) -> list[int]:
        """:meth:`_settled_checkpoints_numpy`, compiled (schedule/checkpoint_kernel.py)."""
        pv = self._checkpoint_pv
        rep = m.reported_kmh if m.reported_kmh is not None else np.full(len(kept_t), np.nan)
        idx = checkpoint_kernel.settled(
            m.x, m.y, m.t_s, m.speed_kmh, m.still, m.jump, m.gap, rep, kin, knear,
            start, until, active, pv,
        )  # fmt: skip
        out: list[int] = kept_t[idx].tolist()
        return out

    def _settled_checkpoints_numpy(
        self,
        m: Motion,
        kin: npt.NDArray[np.int64],
        knear: npt.NDArray[np.int64],
        kept_t: I64,
        start: int,
        until: int,
        active: int,
    ) -> list[int]:
        """Checkpoints the re-run's own state proves, where :meth:`_checkpoints_in` finds none
        (at kept fixes from ``start`` to before ``until``).

        The structural rule above wants the vehicle away from every fence, moving, for the
        hysteresis windows; a vehicle serving sites a few hundred metres apart never is (it
        leaves one fence's margin and enters the next within a minute), so its re-runs went
        back over several closed visits (docs/bench/detect.md, issue 7).  This rule asks
        instead whether each detector has *decided* everything before a fix ``c`` (kept index
        ``i``, this re-run running from a checkpoint at ``active``), such that no fix after it
        can change a decision before it and a run from ``c`` sees what a run from the start
        sees from ``c`` on:

        * visits: for every site with an inside fix in ``[active, i)``, the fixes after its
          last one up to ``i`` span a gap, or are already a confirmed exit
          (``exit_confirm_fixes`` beyond the margin over ``exit_confirm_s``, one of them
          moving) and no gap follows in this run.  Every term only grows with later fixes,
          so the candidate is closed whatever follows, at the same fix, and a later inside
          fix opens a new one (as it does in a run from ``c``).  (The detector names a
          candidate's reason "gap" when any gap follows its last inside fix, even after a
          confirmed exit: a gap later in this run may yet be filled by a backlog, which
          re-runs from before ``c`` only if ``c`` is not placed before the gap.)  Visits
          before ``c`` end before it, so ``drop_dominated`` pairs none across it.
        * stops: after the last still fix ``j`` in ``[active, i)`` the fixes ``j+1..i-1`` are
          a confirmed move (``move_confirm_fixes`` over ``move_confirm_s``, two of them more
          than twice ``max(drift_radius_m, stop_merge_m)`` apart, so one lies beyond the drift
          radius of the chain's anchor and beyond the merge radius of the last stop's place):
          no later still run joins the chain or merges with its stop, whatever follows.  Fix
          ``i-1`` is not slow in :func:`schedule.stops._backdate`'s sense, so no later stop is
          backdated to before ``c`` (a run from ``c`` floors its backdating at ``c``).
        * motion: the ``_CHECKPOINT_LEAD_FIXES`` steps up to ``c`` are no jump, gap or frozen
          step and have a known speed (as the structural rule's lead: the features from ``c``
          on do not depend on where the run starts), and at least ``BURST_FIXES + 1`` kept
          fixes follow ``c`` (a later burst cannot drop ``c`` or the fixes the rule read).

        The property tests (tests/test_tracker_settled.py, tests/test_visits_properties.py)
        compare chunked and late feeds with one feed of the whole track.
        """
        p = self.params
        n = len(kept_t)
        lead = _CHECKPOINT_LEAD_FIXES
        lo = max(active + lead, start)
        hi = min(n - BURST_FIXES - 1, until)  # candidates i in [lo, hi)
        if hi <= lo:
            return []
        # motion: lead steps clean
        zero = np.zeros(n, dtype=bool)
        zero[1:] = (diff_1d(m.x) == 0) & (diff_1d(m.y) == 0)
        bad = m.jump | m.gap | zero | ~np.isfinite(m.speed_kmh)
        n_bad = np.concatenate(([0], np.cumsum(bad)))
        i = np.arange(lo, hi)
        i = i[n_bad[i + 1] == n_bad[i - lead]]
        # backdating: fix i-1 not slow
        rep = m.reported_kmh if m.reported_kmh is not None else np.full(n, np.nan)
        rp, sp = rep[i - 1], m.speed_kmh[i - 1]
        i = i[np.where(np.isnan(rp), sp >= p.crawl_speed_kmh, rp >= p.stop_speed_kmh)]
        if not len(i):
            return []
        # stops: the last still fix j in [active, i), and the moves since
        still = m.still.copy()
        still[:active] = False
        pos = np.where(still, np.arange(n), -1)
        j = np.maximum.accumulate(pos)[i - 1]  # the last still fix before i
        has = j >= 0
        if has.any():
            # the first fix of the non-still run each fix is in (still fixes: measure 0)
            seg = np.minimum(np.maximum.accumulate(np.where(still, np.arange(n) + 1, 0)), n - 1)
            d = np.where(still, 0.0, np.hypot(m.x - m.x[seg], m.y - m.y[seg]))
            # running max within each non-still run: offset by run id so one accumulate does
            big = float(d.max()) + 1.0
            run_id = np.cumsum(still)
            moved = np.maximum.accumulate(d + run_id * big) - run_id * big
            far = moved[i - 1] > 2 * max(p.drift_radius_m, p.stop_merge_m)
            count = i - j - 1
            span = m.t_s[i] - m.t_s[np.maximum(j, 0)]
            stop_ok = (count >= p.move_confirm_fixes) & (span >= p.move_confirm_s) & far
            i = i[~has | stop_ok]
        # visits: per site with an inside fix in [active, i)
        sel = (kin[0] >= active) & (kin[0] < (int(i[-1]) if len(i) else 0))
        in_i, in_s = kin[0][sel], kin[1][sel]
        if len(in_i) and len(i):
            n_gap = np.concatenate(([0], np.cumsum(m.gap)))
            n_still = np.concatenate(([0], np.cumsum(m.still)))
            for site in sorted(set(in_s.tolist())):
                idx = in_i[in_s == site]
                idx.sort()
                c = idx.searchsorted(i) - 1  # last inside fix before i
                inn = c >= 0
                if not inn.any():
                    continue
                last = idx[np.maximum(c, 0)]
                # fixes near the site (or inside), as sorted kept indices
                near = np.unique(np.concatenate((knear[0][knear[1] == site], idx)))
                n_near = near.searchsorted(i) - near.searchsorted(last + 1)
                beyond = (i - last - 1) - n_near
                moving = n_still[i] - n_still[last + 1] < i - last - 1
                exited = (
                    (beyond >= p.exit_confirm_fixes)
                    & (m.t_s[i - 1] - m.t_s[last] >= p.exit_confirm_s)
                    & moving
                )
                gapped = n_gap[i + 1] > n_gap[last + 1]
                # a gap later in this run makes the candidate's reason "gap" for now, and a
                # backlog filling it (late, after c) would make it "exit" again
                gap_later = n_gap[n] > n_gap[i + 1]
                i = i[~inn | gapped | (exited & ~gap_later)]
                if not len(i):
                    return []
        if not len(i):
            return []
        # the first fix of each run of settled fixes (as _checkpoints_in takes)
        first = i[np.concatenate(([True], i[1:] != i[:-1] + 1))]
        out: list[int] = kept_t[first].tolist()
        return out

    # -- reporting -----------------------------------------------------------------------

    def _new_id(self, base: str) -> str:
        key, n = base, 1
        while key in self._used_ids:
            n += 1
            key = f"{base}.{n}"
        self._used_ids.add(key)
        return key

    def _diff_visits(self, records: list[VisitRecord], cp_t: int) -> list[DetectionEvent]:
        events: list[DetectionEvent] = []
        old = [r for r in self._visits if r.start_us >= cp_t and not r.frozen]
        for r in old:
            r.matched = False
        keep = [r for r in self._visits if r.start_us < cp_t or r.frozen]
        vid = self.vehicle_id
        for rec in records:
            site = rec.site
            site_id = self.site_ids[site]
            arrival, departure = rec.arrival_us, rec.departure_us
            rep = None
            for o in old:
                if (
                    not o.matched
                    and o.site == site
                    and o.start_us <= departure
                    and arrival <= o.end_us
                ):
                    rep = o
                    break
            if rep is not None and _visit_unchanged(rep, vid, site_id, rec):
                # what _report would do for a record whose events are unchanged (it emits
                # nothing), without building the events to compare: most re-runs re-derive
                # the visits they reported before, figure for figure
                rep.matched = True
                rep.start_us, rep.end_us = arrival, departure
                keep.append(rep)
            else:
                started = VisitStarted(
                    visit_id="",
                    vehicle_id=vid,
                    site_id=site_id,
                    arrival_us=arrival,
                    confirmed_us=rec.confirmed_us,
                )
                completed = None
                if rec.closed_by is not None:
                    completed = VisitCompleted(
                        visit_id="",
                        vehicle_id=vid,
                        site_id=site_id,
                        arrival_us=arrival,
                        departure_us=departure,
                        fix_count=rec.fix_count,
                        inside_share=round(rec.inside_share, 4),
                        median_hdop=rec.median_hdop,
                        closed_by=rec.closed_by,
                    )
                if rep is None and _overlaps_frozen(keep, site, arrival, departure):
                    continue  # restored from before the re-fed fixes: that one stands
                events += self._report(
                    rep, keep, f"{vid}-{site_id}-{arrival}", site, arrival, departure,
                    started, completed,
                )  # fmt: skip
            keep[-1].record = rec
            keep[-1].confirm_us = rec.confirmed_us
            if rec.closed_by is None:  # (exact: the share is n_in / fix_count in float64)
                keep[-1].n_in = round(rec.inside_share * rec.fix_count)
                keep[-1].n_fix = rec.fix_count
        events += self._retract_unmatched(old, keep)
        self._visits = keep
        return events

    def _diff_stops(
        self,
        records: list[StopRecord],
        cp_t: int,
        m: Motion,
        kept_t: I64,
        sites: list[int],
        flts: list[list[float]],
        tail_counts: dict[int, int] | None,
    ) -> list[DetectionEvent]:
        """Reconcile the re-run's stops with those reported: ``sites`` and ``flts`` are each
        record's site and figures (``stops_kernel.stop_figures``), ``tail_counts`` the open
        stop's site counts when it ends at the newest kept fix (:meth:`_detect_slow`)."""
        events: list[DetectionEvent] = []
        old = [r for r in self._stops if r.start_us >= cp_t and not r.frozen]
        for r in old:
            r.matched = False
        keep = [r for r in self._stops if r.start_us < cp_t or r.frozen]
        vid = self.vehicle_id
        p = self.params
        for i, (rec, site, f) in enumerate(zip(records, sites, flts, strict=True)):
            site_id = self.site_ids[site] if site >= 0 else None
            start, end = rec.start_us, rec.end_us
            rep = None
            for o in old:
                if not o.matched and o.start_us <= end and start <= o.end_us:
                    rep = o
                    break
            lat, lon = round(f[0], 7), round(f[1], 7)
            if rep is not None and _stop_unchanged(rep, vid, site_id, rec, lat, lon, f):
                # as in _diff_visits: _report would emit nothing for it
                rep.matched = True
                rep.start_us, rep.end_us, rep.site = start, end, site
                keep.append(rep)
            else:
                started = StopStarted(
                    stop_id="", vehicle_id=vid, site_id=site_id, start_us=start, lat=lat, lon=lon
                )
                completed = None
                if rec.closed_by is not None:
                    completed = StopEnded(
                        stop_id="",
                        vehicle_id=vid,
                        site_id=site_id,
                        start_us=start,
                        end_us=end,
                        lat=round(f[2], 7),
                        lon=round(f[3], 7),
                        fix_count=rec.fix_count,
                        closed_by=rec.closed_by,
                    )
                if rep is None and _overlaps_frozen(keep, None, start, end):
                    continue  # restored from before the re-fed fixes: that one stands
                events += self._report(
                    rep, keep, f"{vid}-stop-{start}", site, start, end, started, completed
                )
            keep[-1].confirm_us = int(kept_t[rec.confirm])
            keep[-1].merged = rec.merged
            if rec.closed_by is None:
                # what _merge_back_to_back asks of the stop before and the fixes between,
                # which later fixes cannot change (margins: a second, a metre)
                a = records[i - 1] if i else None
                keep[-1].merge_risk = bool(
                    a is not None
                    and a.closed_by == "exit"
                    and m.t_s[rec.first] - m.t_s[a.last] <= p.stop_merge_gap_s + 1.0
                    and not bool(
                        (
                            m.jump[a.last + 1 : rec.first + 1] | m.gap[a.last + 1 : rec.first + 1]
                        ).any()
                    )
                    and bool(
                        (
                            np.hypot(
                                m.x[a.last + 1 : rec.first] - a.x, m.y[a.last + 1 : rec.first] - a.y
                            )
                            <= p.stop_merge_m + 1.0
                        ).all()
                    )
                )
            if rec.closed_by is None and rec.last == len(kept_t) - 1:
                # its fixes by site, while it ends at the newest fix (see _stop_site_stays)
                keep[-1].site_counts = tail_counts
                keep[-1].stop_fixes = rec.fix_count
            else:
                keep[-1].site_counts = None
            # the fixes the head of the chain in progress is a median of lie among these
            # (a stop merged from back-to-back chains measures its extent from the last
            # chain's head, not from rec.first's): min lon, max lon, min lat, max lat
            keep[-1].head_box = keep[-1].fix_box = (f[4], f[5], f[6], f[7])
        events += self._retract_unmatched(old, keep)
        self._stops = keep
        return events

    def _report(
        self,
        rep: _Reported | None,
        keep: list[_Reported],
        key_text: str,
        site: int,
        start_us: int,
        end_us: int,
        started: VisitStarted | StopStarted,
        completed: VisitCompleted | StopEnded | None,
    ) -> list[DetectionEvent]:
        """Reconcile one re-detected visit or stop with what was reported before: a new one is
        announced under a fresh id; a matched one gets a new version only if it changed."""
        events: list[DetectionEvent] = []
        if rep is None:
            rep = _Reported(
                key=self._new_id(key_text),
                site=site,
                start_us=start_us,
                end_us=end_us,
                started=started,
            )
            rep.started = _versioned(started, rep.key, None)
            events.append(rep.started)
        rep.matched = True
        events += _update(rep, started, completed, self.stats)
        rep.start_us, rep.end_us, rep.site = start_us, end_us, site
        keep.append(rep)
        return events

    def _retract_unmatched(
        self, old: list[_Reported], keep: list[_Reported]
    ) -> list[DetectionEvent]:
        """Retract what the re-run no longer finds; leave *keep* in start order."""
        events: list[DetectionEvent] = []
        for o in old:
            if not o.matched:
                events += _retract(o, self.stats)
        keep.sort(key=_START)
        return events

    def _trim(self) -> None:
        """Forget what lies more than ``horizon_s`` behind the newest fix (at a checkpoint)."""
        if not len(self._t):
            return
        limit = int(self._t[-1]) - self._horizon_us
        cps = self._checkpoints
        if len(cps) < 2 or cps[1] > limit:
            return  # (ascending) no checkpoint but the first is old enough: nothing to forget
        i = int(np.asarray(cps).searchsorted(limit, side="right")) - 1
        if i <= 0:
            return
        cut_t = cps[i]
        # keep context fixes before the checkpoint for the speed estimate and jump rules
        t_ctx = cut_t - round(self.params.speed_window_s * 1e6)
        k = max(int(self._t.searchsorted(t_ctx, side="right")) - 2, 0)
        if k == 0:
            return
        self._checkpoints = cps[i:]
        # views of the same buffers (see _cut_head): the next append needs no fresh ones
        self._fix_buf, cols = _cut_head(
            self._fix_buf, (self._t, self._lon, self._lat, self._speed, self._hdop), k
        )
        self._t, self._lon, self._lat, self._speed, self._hdop = cols
        t_first = int(self._t[0])
        self._trim_pairs("_in_t", "_in_site", t_first)
        self._trim_pairs("_near_t", "_near_site", t_first)
        c = self._open_cache
        valid = (
            c is not None
            and c[0] is self._visits
            and c[1] is self._stops
            and c[2] == self.stats.reruns
        )
        self._visits = [r for r in self._visits if r.start_us >= cut_t]
        self._stops = [r for r in self._stops if r.start_us >= cut_t]
        if valid and c is not None:  # the open records kept, in the same filter
            self._open_cache = (
                self._visits,
                self._stops,
                c[2],
                [r for r in c[3] if r.start_us >= cut_t],
                [r for r in c[4] if r.start_us >= cut_t],
            )
        # ids embed the start time: those of forgotten records can never be generated again
        self._used_ids = {r.key for r in (*self._visits, *self._stops)}
        self._trimmed = True

    def _trim_pairs(self, t_name: str, site_name: str, t_first: int) -> None:
        """Drop one pair table's pairs on fixes before ``t_first`` (:meth:`_trim`).

        Pairs are appended in fix-time order, so the dropped ones are nearly always the
        table's head: then the rest are views of the same buffers (:func:`_cut_head`), kept
        appending in place; otherwise (pairs of late fixes appended after later ones) a
        selection, copied as before."""
        pt: I64 = getattr(self, t_name)
        keep = pt >= t_first
        d = len(keep) - int(np.count_nonzero(keep))
        if d == 0:
            return
        ps: npt.NDArray[np.int32] = getattr(self, site_name)
        if keep[d:].all():  # the d dropped pairs are the first d
            g, (pt, ps) = _cut_head(self._pair_bufs.get(t_name), (pt, ps), d)
            if g is not None:
                self._pair_bufs[t_name] = g
        else:
            pt, ps = pt[keep], ps[keep]
        setattr(self, t_name, pt)
        setattr(self, site_name, ps)

    # -- restart -------------------------------------------------------------------------

    def restore(self, latest: Sequence[DetectionEvent], site_code: Callable[[str], int]) -> None:
        """Adopt what a previous life of this tracker reported (the latest version of each
        event of this vehicle, e.g. from the store) before re-feeding the stored fixes.

        The identity rule (durable ids): a visit's id is ``{vehicle}-{site}-{arrival_us}`` and
        a stop's ``{vehicle}-stop-{start_us}`` as first reported, kept through corrections.
        A re-run over the same fixes derives the same ids without any restore, for every
        record whose arrival/start was not later corrected by late data.  ``restore`` makes
        the rule hold for those too: a re-derived visit (same site) or stop overlapping a
        restored one takes its id and continues its versions, so an unchanged one emits
        nothing (recognised as already published) and a changed one a correction.  Restored
        records that start before the first re-fed fix cannot be re-derived: they stay as
        restored (frozen) and a truncated re-derivation overlapping them is not reported.
        Re-feed the stored fixes in **one** :meth:`feed` (a partial re-feed would retract
        what its fixes do not reach yet), from at least the start of every open restored
        record (:attr:`refeed_from_us`); then live data as usual.
        """
        if len(self._t):
            raise RuntimeError("restore() must come before the first feed()")
        started: dict[str, VisitStarted | StopStarted] = {}
        completed: dict[str, VisitCompleted | StopEnded] = {}
        for ev in latest:
            if ev.vehicle_id != self.vehicle_id:
                continue
            key = ev.visit_id if isinstance(ev, VisitStarted | VisitCompleted) else ev.stop_id
            if isinstance(ev, VisitStarted | StopStarted):
                started[key] = ev
            else:
                completed[key] = ev
        for key, st in started.items():
            done = completed.get(key)
            is_open = done is None or done.retracted
            end = _FAR_FUTURE_US if is_open or done is None else _end_of(done)
            if isinstance(st, VisitStarted):
                site, start, confirm = site_code(st.site_id), st.arrival_us, st.confirmed_us
            else:
                site = -1 if st.site_id is None else site_code(st.site_id)
                start, confirm = st.start_us, _FAR_FUTURE_US
            rep = _Reported(
                key=key, site=site, start_us=start, end_us=end, started=st, completed=done
            )
            rep.confirm_us = confirm
            (self._visits if isinstance(st, VisitStarted) else self._stops).append(rep)
            self._used_ids.add(key)
        self._visits.sort(key=lambda r: r.start_us)
        self._stops.sort(key=lambda r: r.start_us)
        self._open_cache = None
        self._restored = True

    @property
    def refeed_from_us(self) -> int | None:
        """The earliest start of an open restored record (re-feed fixes from there at least)."""
        starts = [r.start_us for r in (*self._visits, *self._stops) if _is_open(r)]
        return min(starts) if starts else None

    def _freeze_unreachable(self) -> None:
        """After a restore, at the first feed: records starting before the first fix stand."""
        self._restored = False
        self._open_cache = None
        first = int(self._t[0])
        for r in (*self._visits, *self._stops):
            if r.start_us < first:
                r.frozen = True

    # -- site list changes ---------------------------------------------------------------

    def retire_sites(self, codes: set[int]) -> list[DetectionEvent]:
        """Sites ``codes`` left the index: forget their fence pairs, freeze their visits.

        A visit still open closes now, at its last fix inside the fence, with ``closed_by =
        "site_removed"``; a visit already closed stays as reported.  Neither is re-derived again
        (late fixes cannot reopen or correct them: the fence they were measured against is
        gone).  Stops keep the site they were attributed to.
        """
        if not codes:
            return []
        events: list[DetectionEvent] = []
        if self._stale:  # bring the open visits' figures up to the newest fix first
            events += self._rerun(int(self._t[-1]), None)
        self._open_cache = None  # records are frozen and closed below
        gone = np.fromiter(codes, dtype=np.int32, count=len(codes))
        s = ~np.isin(self._in_site, gone)
        self._in_t, self._in_site = self._in_t[s], self._in_site[s]
        s = ~np.isin(self._near_site, gone)
        self._near_t, self._near_site = self._near_t[s], self._near_site[s]
        for rep in self._visits:
            if rep.site not in codes or rep.frozen:
                continue
            rep.frozen = True
            rec = rep.record
            is_open = rep.completed is None or rep.completed.retracted
            if rec is None or rep.started.retracted or not is_open:
                continue
            completed = VisitCompleted(
                visit_id="",
                vehicle_id=self.vehicle_id,
                site_id=self.site_ids[rep.site],
                arrival_us=rec.arrival_us,
                departure_us=rec.departure_us,
                fix_count=rec.fix_count,
                inside_share=round(rec.inside_share, 4),
                median_hdop=rec.median_hdop,
                closed_by="site_removed",
            )
            rep.completed = _versioned(completed, rep.key, rep.completed)
            events.append(rep.completed)
        return events

    # -- introspection -------------------------------------------------------------------

    @property
    def retained_fixes(self) -> int:
        return len(self._t)

    def current(self) -> tuple[list[_Reported], list[_Reported]]:
        """Reported visits and stops still within the horizon (for tests and snapshots)."""
        return list(self._visits), list(self._stops)


AnyEvent = VisitStarted | StopStarted | VisitCompleted | StopEnded

_FAR_FUTURE_US = 2**62  # the end of a restored record still open
_NO_HINT = np.zeros(rerun_kernel.N_HINT, np.int64)  # (address 0: no table's)


def _site_of(counts: Mapping[int, int], fixes: int) -> int:
    """:func:`schedule.stops.stop_site` from a stop's inside fixes per site and its fix count:
    the site with the most (the lowest on a tie), when it holds at least half, else -1."""
    best, most = -1, 0
    for s, c in counts.items():
        if c > most or (c == most and c > 0 and s < best):
            best, most = s, c
    return best if best >= 0 and most * 2 >= fixes else -1


def _end_of(ev: VisitCompleted | StopEnded) -> int:
    return ev.departure_us if isinstance(ev, VisitCompleted) else ev.end_us


def _plain_still(
    t_us: I64, lon: F64, lat: F64, speed: F64, first: int, p: DetectionParams
) -> BoolA | None:
    """``schedule.motion``'s *still* for fixes ``first:`` of a short window, computed without
    it when no step is implausible, none is longer than ``teleport_check_s`` and every speed
    is known (then motion() keeps every fix and cuts nothing, and *still* is: reported speed
    below ``stop_speed_kmh``, or moved at most ``stop_radius_m`` over ``speed_window_s`` and
    not reported at ``crawl_speed_kmh`` or more); None when motion() itself must judge, or the
    window is too short to say.  (Without the crawl clause, which motion() gained with issue
    11, a parked truck's fix reported at driving speed counted as still here, not there:
    ``tests/test_append_kernel.py`` holds the two equal.)"""
    if not bool(np.isfinite(speed).all()):
        return None
    t_s = (t_us - t_us[0]).astype(np.float64) / 1e6
    dt = diff_1d(t_s)
    if float(dt.max()) > min(p.max_gap_s, p.teleport_check_s):
        return None
    x, y = local_xy(lon, lat)
    d = np.hypot(diff_1d(x), diff_1d(y))
    dtc = np.maximum(dt, 1e-3)
    allowed = p.teleport_slack_m + 1.5 * np.fmax(speed[:-1], speed[1:]) / 3.6 * dtc
    too_fast = (d / dtc * 3.6 > p.max_speed_kmh) & (d > p.teleport_slack_m)
    if bool((too_fast | (d > allowed)).any()):
        return None
    i = np.arange(first, len(t_s))
    j = t_s.searchsorted(t_s[i] - p.speed_window_s, side="right") - 1
    j = np.where(j >= i, i - 1, j)
    if int(j.min()) < 0:
        return None
    moved = np.hypot(x[i] - x[j], y[i] - y[j])
    # as motion(): the displacement rule never overrides a unit reporting crawl speed
    out: BoolA = (speed[i] < p.stop_speed_kmh) | (
        (moved <= p.stop_radius_m) & ~(speed[i] >= p.crawl_speed_kmh)
    )
    return out


def _pair_rows(fix: npt.NDArray[np.int64], site: npt.NDArray[np.int64]) -> Pairs:
    """``np.stack((fix, site))`` for two int64 rows: np.stack's generality costs ~25 µs a
    call, and :meth:`FleetTracker.feed` makes two per vehicle per batch."""
    out = np.empty((2, len(fix)), dtype=np.int64)
    out[0] = fix
    out[1] = site
    return out


def _overlaps_frozen(keep: list[_Reported], site: int | None, start_us: int, end_us: int) -> bool:
    """A frozen record (of ``site``; any site for stops: None) overlapping [start, end]."""
    return any(
        o.frozen
        and (site is None or o.site == site)
        and o.start_us <= end_us
        and start_us <= o.end_us
        for o in keep
    )


def _is_open(r: _Reported) -> bool:
    """Announced, not retracted, not (or no longer) completed, and still re-derivable."""
    return (
        not r.frozen and not r.started.retracted and (r.completed is None or r.completed.retracted)
    )


def _with_id(ev: AnyEvent, key: str, version: int, supersedes: int | None, retracted: bool) -> Any:
    if isinstance(ev, VisitStarted | VisitCompleted):
        return replace(
            ev, visit_id=key, version=version, supersedes=supersedes, retracted=retracted
        )
    return replace(ev, stop_id=key, version=version, supersedes=supersedes, retracted=retracted)


def _versioned(ev: AnyEvent, key: str, prev: AnyEvent | None, *, retracted: bool = False) -> Any:
    """``ev`` under id ``key``: version 1, or the version after ``prev`` superseding it."""
    if prev is None:
        return _with_id(ev, key, 1, None, retracted)
    return _with_id(ev, key, prev.version + 1, prev.version, retracted)


_START = operator.attrgetter("start_us")
_ARRIVAL_SITE = operator.attrgetter("arrival_us", "site")


def _feq(x: float, y: float) -> bool:
    """:func:`_same`'s equality of one field: NaN equals NaN."""
    return x == y or (x != x and y != y)


def _visit_unchanged(rep: _Reported, vehicle_id: str, site_id: str, rec: VisitRecord) -> bool:
    """:func:`_update` would emit nothing for ``rep`` and the events ``rec`` makes (as
    ``VehicleTracker._diff_visits`` builds them): the same :func:`_same` comparisons, field
    by field, without building the events (tests/test_tracker_unchanged.py checks it)."""
    s = rep.started
    if not (
        type(s) is VisitStarted
        and s.vehicle_id == vehicle_id
        and s.site_id == site_id
        and s.arrival_us == rec.arrival_us
        and s.confirmed_us == rec.confirmed_us
    ):
        return False
    c = rep.completed
    if rec.closed_by is None:
        return c is None or c.retracted
    return (
        type(c) is VisitCompleted
        and not c.retracted
        and c.vehicle_id == vehicle_id
        and c.site_id == site_id
        and c.arrival_us == rec.arrival_us
        and c.departure_us == rec.departure_us
        and c.fix_count == rec.fix_count
        and _feq(c.inside_share, round(rec.inside_share, 4))
        and _feq(c.median_hdop, rec.median_hdop)
        and c.closed_by == rec.closed_by
    )


def _stop_unchanged(
    rep: _Reported,
    vehicle_id: str,
    site_id: str | None,
    rec: StopRecord,
    lat: float,
    lon: float,
    figures: Sequence[float],
) -> bool:
    """:func:`_visit_unchanged` for a stop: ``lat``/``lon`` are the started event's (rounded),
    ``figures`` the record's row of ``stops_kernel.stop_figures`` (ended lat, lon at 2, 3)."""
    s = rep.started
    if not (
        type(s) is StopStarted
        and s.vehicle_id == vehicle_id
        and s.site_id == site_id
        and s.start_us == rec.start_us
        and _feq(s.lat, lat)
        and _feq(s.lon, lon)
    ):
        return False
    c = rep.completed
    if rec.closed_by is None:
        return c is None or c.retracted
    return (
        type(c) is StopEnded
        and not c.retracted
        and c.vehicle_id == vehicle_id
        and c.site_id == site_id
        and c.start_us == rec.start_us
        and c.end_us == rec.end_us
        and _feq(c.lat, round(figures[2], 7))
        and _feq(c.lon, round(figures[3], 7))
        and c.fix_count == rec.fix_count
        and c.closed_by == rec.closed_by
    )


_IDENTITY = frozenset({"visit_id", "stop_id", "version", "supersedes", "retracted"})


def _same(a: AnyEvent, b: AnyEvent) -> bool:
    """Same content, ignoring id and version; NaN equals NaN (HDOP of an HDOP-less unit)."""
    if type(a) is not type(b):
        return False
    for name in a.__slots__:
        if name in _IDENTITY:
            continue
        x, y = getattr(a, name), getattr(b, name)
        if not (x == y or (x != x and y != y)):
            return False
    return True


def _update(
    rep: _Reported,
    started: VisitStarted | StopStarted,
    completed: VisitCompleted | StopEnded | None,
    stats: TrackerStats,
) -> list[DetectionEvent]:
    events: list[DetectionEvent] = []
    if not _same(rep.started, started):
        new = _versioned(started, rep.key, rep.started)
        rep.started = new
        events.append(new)
        stats.corrections += 1
    if completed is None:
        if rep.completed is not None and not rep.completed.retracted:
            new_c = _versioned(rep.completed, rep.key, rep.completed, retracted=True)
            rep.completed = new_c
            events.append(new_c)
            stats.retractions += 1
        return events
    if rep.completed is None:
        new_c = _versioned(completed, rep.key, None)
    elif rep.completed.retracted or not _same(rep.completed, completed):
        new_c = _versioned(completed, rep.key, rep.completed)
        stats.corrections += 1
    else:
        return events
    rep.completed = new_c
    events.append(new_c)
    return events


def _retract(rep: _Reported, stats: TrackerStats) -> list[DetectionEvent]:
    events: list[DetectionEvent] = []
    stats.retractions += 1
    rep.started = _versioned(rep.started, rep.key, rep.started, retracted=True)
    events.append(rep.started)
    if rep.completed is not None and not rep.completed.retracted:
        rep.completed = _versioned(rep.completed, rep.key, rep.completed, retracted=True)
        events.append(rep.completed)
    return events


class SiteListMismatch(ValueError):
    """Fence pairs name a site position the tracker's current site list does not have: the
    caller swapped its FenceIndex without telling the tracker (call ``use_sites``)."""


class SiteIndex(Protocol):
    """What :meth:`FleetTracker.feed_index` needs of a ``geofence.FenceIndex``."""

    @property
    def site_ids(self) -> Sequence[str]: ...

    def query(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, *, margin_m: float = 0.0
    ) -> npt.NDArray[np.integer]: ...


class FleetTracker:
    """One :class:`VehicleTracker` per vehicle, fed whole :class:`FixBatch` es.

    Sites are known by id, not by position: the fence pairs fed in name positions in the
    *current* site list (``site_ids``, as the current ``FenceIndex`` numbers them), and the
    tracker translates each position to a code of its own registry, which only grows, so a
    code names the same site id for the tracker's whole life.  :meth:`use_sites` swaps in a
    new list (a new day's sites, a site edited or removed during the day) without losing any
    visit in progress: a visit to a site still listed goes on; one to a removed site closes
    with ``closed_by="site_removed"``.
    """

    def __init__(
        self,
        site_ids: Sequence[str],
        unit_to_vehicle: Mapping[str, str] | None = None,
        params: DetectionParams | None = None,
        *,
        incremental: bool = True,
        fast: bool = True,
    ) -> None:
        self.unit_to_vehicle = dict(unit_to_vehicle or {})
        self.incremental = incremental  # see VehicleTracker._append_only
        #: the fleet-wide fast path (schedule.fastpath) and VehicleTracker.feed_in_order for
        #: batches in order; only with ``incremental`` (False: every vehicle's fixes go
        #: through VehicleTracker.feed, the reference the property tests compare with)
        self.fast = fast and incremental
        self.params = params or DetectionParams()
        self.vehicles: dict[str, VehicleTracker] = {}
        self.unknown_units: set[str] = set()
        self._site_names: list[str] = []  # code -> site id, append-only
        self._site_code: dict[str, int] = {}
        self.site_ids: tuple[str, ...] = ()
        self._index_codes: I64 = np.empty(0, np.int64)  # current position -> code
        #: string width -> the unit ids seen in batches of that width: see _by_unit
        self._unit_tables: dict[int, _UnitTable] = {}
        self.use_sites(site_ids)

    def use_sites(self, site_ids: Sequence[str]) -> list[DetectionEvent]:
        """Make ``site_ids`` the current site list (pairs fed from now on index into it).

        Returns the events of visits closed because their site is no longer listed.  Call it
        when the ``FenceIndex`` is swapped, before feeding pairs computed with the new one
        (:meth:`feed_index` does it for you).
        """
        ids = tuple(site_ids)
        codes = np.fromiter((self._register_site(sid) for sid in ids), np.int64, len(ids))
        removed = set(self._index_codes.tolist()) - set(codes.tolist())
        self.site_ids, self._index_codes = ids, codes
        events: list[DetectionEvent] = []
        if removed:
            for tr in self.vehicles.values():
                events += tr.retire_sites(removed)
                tr.fast_tail = None
        return events

    def _tracker(self, unit_id: str) -> VehicleTracker:
        vehicle = self.unit_to_vehicle.get(unit_id)
        if vehicle is None:
            self.unknown_units.add(unit_id)
            vehicle = unit_id
        tr = self.vehicles.get(vehicle)
        if tr is None:
            tr = self.vehicles[vehicle] = VehicleTracker(
                vehicle, self._site_names, self.params, incremental=self.incremental
            )
        return tr

    def _trackers(self, units: list[str]) -> list[VehicleTracker]:
        """:meth:`_tracker` of each unit, the common case (a known unit whose vehicle has a
        tracker) without the call: a 1 Hz fleet of 30,000 units looks up 30,000 a round."""
        vehicle_of = self.unit_to_vehicle.get
        tracker_of = self.vehicles.get
        out: list[VehicleTracker] = []
        for u in units:
            v = vehicle_of(u)
            tr = tracker_of(v) if v is not None else None
            out.append(tr if tr is not None else self._tracker(u))
        return out

    def _by_unit(self, unit_id: npt.NDArray[np.str_], t_us: I64) -> tuple[I64, I64, list[str]]:
        """The batch's order by unit id, then fix time (then arrival), the unit groups'
        bounds in it, and each group's unit id.

        Why not ``np.argsort`` of the ids: sorting 2,000 strings costs ~140 µs a batch (~0.09
        CPU-s of the simulated day at 2,000-fix batches).  Each id is looked up instead (a
        compiled binary search on its code points) in a sorted table of the ids seen so far,
        and the ranks sort as small integers.  The order is the same: ranks order as numpy
        orders the strings, equal ids have equal ranks, and both sorts are stable."""
        n = len(unit_id)
        by_t = np.argsort(t_us, kind="stable")
        w = unit_id.dtype.itemsize // 4
        if unit_id.dtype != np.dtype(f"U{max(w, 1)}") or w == 0:  # (e.g. big-endian)
            order = by_t[np.argsort(unit_id[by_t], kind="stable")]
            units = unit_id[order]
            bounds = nonzero_1d(np.concatenate(([True], units[1:] != units[:-1], [True])))
            return order, bounds, units[bounds[:-1]].tolist()
        rows = np.ascontiguousarray(unit_id).view(np.uint32).reshape(n, w)
        codes = np.empty(n, dtype=np.int64)
        tab = self._unit_tables.get(w)
        if tab is None or parked_kernel.unit_codes(rows, tab[1], codes):
            tab = self._unit_table(w, unit_id, tab)
            parked_kernel.unit_codes(rows, tab[1], codes)  # (every id is in it now)
        ranks = codes[by_t]
        # (16-bit keys: numpy's stable sort is a radix sort)
        keys = ranks.astype(np.uint16) if len(tab[2]) <= 1 << 16 else ranks
        order = by_t[np.argsort(keys, kind="stable")]
        c = codes[order]
        bounds = nonzero_1d(np.concatenate(([True], c[1:] != c[:-1], [True])))
        names = tab[2]
        return order, bounds, [names[k] for k in c[bounds[:-1]].tolist()]

    def _unit_table(
        self, w: int, unit_id: npt.NDArray[np.str_], tab: _UnitTable | None
    ) -> _UnitTable:
        """:meth:`_by_unit`'s table of ids of width ``w`` with this batch's added (sorted,
        distinct; started afresh past ``_MAX_UNITS``, so churning ids cannot grow it for
        ever)."""
        ids = (
            unit_id
            if tab is None or len(tab[2]) > _MAX_UNITS
            else np.concatenate((tab[0], unit_id))
        )
        ids = np.ascontiguousarray(np.unique(ids))
        new = (ids, ids.view(np.uint32).reshape(len(ids), w), ids.tolist())
        self._unit_tables[w] = new
        return new

    def feed(
        self,
        fixes: FixBatch,
        inside: npt.ArrayLike,
        near: npt.ArrayLike,
        *,
        now_us: int | None = None,
    ) -> list[DetectionEvent]:
        """A batch of any units' fixes with their (2, K) fence pairs (fence, fence + margin)."""
        n = len(fixes)
        if n == 0:
            return []
        # by unit, then fix time (then arrival): a unit's fixes often arrive a second or two
        # out of order within a batch, and sorted they still only follow its newest fix
        # (feed_in_order, the fast path) instead of taking VehicleTracker.feed's sorting
        order, bounds, group_units = self._by_unit(fixes.unit_id, fixes.t_us)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        in_r, in_s = self._ranked_pairs(inside, rank)
        nr_r, nr_s = self._ranked_pairs(near, rank)
        events: list[DetectionEvent] = []
        speed = fixes.speed_kmh.astype(np.float64)
        hdop = fixes.hdop.astype(np.float64)
        starts = bounds[:-1].tolist()
        trackers = self._trackers(group_units)
        t_o, lon_o, lat_o = fixes.t_us[order], fixes.lon[order], fixes.lat[order]
        speed_o, hdop_o = speed[order], hdop[order]
        g_n = len(trackers)
        if self.fast:
            # schedule.fastpath: the vehicles whose fixes only append, for the batch at once
            paired = np.zeros(n, dtype=bool)
            paired[in_r] = True
            paired[nr_r] = True
            tails = [
                tl
                if (tl := tr.fast_tail) is not None
                and tl.fixes_in == tr.stats.fixes_in
                and tl.reruns == tr.stats.reruns
                else None
                for tr in trackers
            ]
            fast_a, cand_a = fastpath.select(
                self.params, tails, bounds, t_o, lon_o, lat_o, speed_o, paired, now_us
            )
            fast, candidate = fast_a.tolist(), cand_a.tolist()
            # ...and those provably parked (or dwelling) at a site: fastpath.select_parked
            ptails = [
                pt
                if (pt := tr.parked_tail) is not None
                and pt.fixes_in == tr.stats.fixes_in
                and pt.reruns == tr.stats.reruns
                and pt.opened is tr._open_cache
                else None
                for tr in trackers
            ]
            pfast_a, pcand_a = fastpath.select_parked(
                self.params, ptails, bounds, t_o, lon_o, lat_o, speed_o, in_r, in_s, nr_r, nr_s,
                now_us,
            )  # fmt: skip
            pfast, pcand = pfast_a.tolist(), pcand_a.tolist()
            # each group's newest fix for its new Tail, read at once (not 4 scalars a vehicle)
            last = bounds[1:] - 1
            last_t, last_lon = t_o[last].tolist(), lon_o[last].tolist()
            last_lat, last_speed = lat_o[last].tolist(), speed_o[last].tolist()
        else:
            tails = [None] * g_n
            fast = candidate = [False] * g_n
            ptails = [None] * g_n
            pfast = pcand = [False] * g_n
        # groups in strictly increasing time after their vehicle's newest fix: fed without
        # VehicleTracker.feed's sorting and deduplication (feed_in_order)
        newest = np.fromiter(
            (int(tr._t[-1]) if len(tr._t) else -(2**62) for tr in trackers), np.int64, g_n
        )
        fed_in = [tr.stats.fixes_in for tr in trackers]  # see the loop: units sharing a vehicle
        step_ok = np.empty(n, dtype=bool)
        step_ok[1:] = t_o[1:] > t_o[:-1]
        step_ok[bounds[:-1]] = t_o[bounds[:-1]] > newest
        in_order = (np.logical_and.reduceat(step_ok, bounds[:-1]) & self.fast).tolist()
        in_b = in_r.searchsorted(bounds).tolist()
        nr_b = nr_r.searchsorted(bounds).tolist()
        in_t, in_s32 = t_o[in_r], in_s.astype(np.int32)
        nr_t, nr_s32 = t_o[nr_r], nr_s.astype(np.int32)
        no_t, no_s = in_t[:0], in_s32[:0]
        for g, (a, b) in enumerate(zip(starts, bounds[1:].tolist(), strict=True)):
            tr = trackers[g]
            # Several units of one vehicle are several groups sharing one tracker: what was
            # decided for the batch at once (tails, in-order) holds only while no earlier
            # group of this batch fed that tracker (its fixes_in unchanged); otherwise the
            # group goes VehicleTracker.feed, which sorts and dedupes against what came first.
            tl = tails[g]
            if fast[g] and tl is not None and tl.fixes_in == tr.stats.fixes_in:
                tr.append_driving(t_o[a:b], lon_o[a:b], lat_o[a:b], speed_o[a:b], hdop_o[a:b])
                tr.fast_tail = fastpath.Tail(
                    last_t[g],
                    last_lon[g],
                    last_lat[g],
                    last_speed[g],
                    tl.clean + (b - a),
                    tr.stats.fixes_in,
                    tr.stats.reruns,
                )
                continue
            ptl = ptails[g]
            # (select_parked takes only vehicles with a tail; still current unless another
            # unit of the same vehicle was fed earlier in this batch)
            if pfast[g] and ptl is not None and ptl.fixes_in == tr.stats.fixes_in:
                ia, ib, na, nb = in_b[g], in_b[g + 1], nr_b[g], nr_b[g + 1]
                tr.parked_tail = tr.append_parked(
                    ptl, t_o[a:b], lon_o[a:b], lat_o[a:b], speed_o[a:b], hdop_o[a:b],
                    in_t[ia:ib], in_s32[ia:ib], nr_t[na:nb], nr_s32[na:nb],
                )  # fmt: skip
                continue
            if in_order[g] and fed_in[g] == tr.stats.fixes_in:
                ia, ib, na, nb = in_b[g], in_b[g + 1], nr_b[g], nr_b[g + 1]
                # VehicleTracker.feed_in_order without its order check (in_order is that)
                tr.stats.fixes_in += b - a
                # (most vehicles have no pair in a round: the shared empty tables, not slices)
                events += tr._feed_fresh(
                    t_o[a:b],
                    lon_o[a:b],
                    lat_o[a:b],
                    speed_o[a:b],
                    hdop_o[a:b],
                    in_t[ia:ib] if ib > ia else no_t,
                    in_s32[ia:ib] if ib > ia else no_s,
                    nr_t[na:nb] if nb > na else no_t,
                    nr_s32[na:nb] if nb > na else no_s,
                    now_us,
                )
            else:
                idx = order[a:b]
                ia, ib = in_r.searchsorted([a, b])
                na, nb = nr_r.searchsorted([a, b])
                events += tr.feed(
                    fixes.t_us[idx],
                    fixes.lon[idx],
                    fixes.lat[idx],
                    speed[idx],
                    hdop[idx],
                    _pair_rows(in_r[ia:ib] - a, in_s[ia:ib]),
                    _pair_rows(nr_r[na:nb] - a, nr_s[na:nb]),
                    now_us=now_us,
                )
            if candidate[g]:
                tr.fast_tail = tr.take_tail()
            elif pcand[g]:
                tr.parked_tail = tr.take_parked_tail()
        return events

    def restore(self, events: Iterable[DetectionEvent]) -> None:
        """Adopt the events a previous life reported (any order, any versions: the latest of
        each is used) before re-feeding the stored fixes; see :meth:`VehicleTracker.restore`.
        A site no longer listed keeps its code; its restored visits stand as they were."""
        folded = latest(list(events))
        by_vehicle: dict[str, list[DetectionEvent]] = {}
        for ev in folded.values():
            by_vehicle.setdefault(ev.vehicle_id, []).append(ev)
        for vehicle, evs in by_vehicle.items():
            tr = self.vehicles.get(vehicle)
            if tr is None:
                tr = self.vehicles[vehicle] = VehicleTracker(
                    vehicle, self._site_names, self.params, incremental=self.incremental
                )
            tr.restore(evs, self._register_site)

    def refeed_from_us(self) -> int | None:
        """Re-feed stored fixes from ``min(newest - horizon_s, this)`` after a restore."""
        starts = [s for tr in self.vehicles.values() if (s := tr.refeed_from_us) is not None]
        return min(starts) if starts else None

    def _register_site(self, site_id: str) -> int:
        code = self._site_code.get(site_id)
        if code is None:
            code = self._site_code[site_id] = len(self._site_names)
            self._site_names.append(site_id)
        return code

    @property
    def known_site_ids(self) -> tuple[str, ...]:
        """Every site id ever listed, in the order first seen (position = the tracker's code)."""
        return tuple(self._site_names)

    def _ranked_pairs(self, pairs: npt.ArrayLike, rank: I64) -> tuple[I64, I64]:
        """(2, K) fence pairs (fix index in the batch, position in the current site list) as
        (the fix's ``rank`` in the batch's order, registry code), ordered by rank (stable).

        Compiled in one pass (:func:`schedule.parked_kernel.pairs_by_rank`, a counting sort)
        where :meth:`_to_codes` and an argsort took ~40 µs a batch each for fence and margin
        pairs; an index out of range goes the numpy way, which raises as before."""
        pr = np.ascontiguousarray(np.asarray(pairs, dtype=np.int64).reshape(2, -1))
        k = pr.shape[1]
        out_r = np.empty(k, dtype=np.int64)
        out_s = np.empty(k, dtype=np.int64)
        if k == 0 or parked_kernel.pairs_by_rank(pr, rank, self._index_codes, out_r, out_s):
            return out_r, out_s
        pr = self._to_codes(pr)  # (SiteListMismatch for a position out of range)
        r = rank[pr[0]]
        o = np.argsort(r, kind="stable")
        return r[o], pr[1][o]

    def _to_codes(self, pairs: Pairs) -> Pairs:
        """(fix, position in the current site list) -> (fix, registry code)."""
        if pairs.shape[1] == 0:
            return pairs
        pos = pairs[1]
        n = len(self._index_codes)
        if int(pos.max()) >= n or int(pos.min()) < 0:
            raise SiteListMismatch(
                f"fence pairs name site position {int(pos.max())} but the current site list has "
                f"{n} sites: call use_sites(index.site_ids) when swapping the FenceIndex"
            )
        return np.stack((pairs[0], self._index_codes[pos]))

    def feed_matched(
        self, fixes: FixBatch, matcher: Matcher, *, now_us: int | None = None
    ) -> list[DetectionEvent]:
        """Match the batch with ``matcher`` (positions in ``site_ids``) and feed it."""
        inside = matcher(fixes.lon, fixes.lat, 0.0)
        near = matcher(fixes.lon, fixes.lat, self.params.exit_margin_m)
        return self.feed(fixes, inside, near, now_us=now_us)

    def feed_index(
        self, fixes: FixBatch, index: SiteIndex, *, now_us: int | None = None
    ) -> list[DetectionEvent]:
        """Match the batch against ``index`` (e.g. ``FenceIndexHolder.current``) and feed it;
        if the index lists other sites than the current list, swap it in first (the events of
        visits closed by a removal come first in the result)."""
        events: list[DetectionEvent] = []
        if index.site_ids is not self.site_ids and tuple(index.site_ids) != self.site_ids:
            events += self.use_sites(index.site_ids)
        inside = index.query(fixes.lon, fixes.lat, margin_m=0.0)
        near = index.query(fixes.lon, fixes.lat, margin_m=self.params.exit_margin_m)
        return events + self.feed(fixes, inside, near, now_us=now_us)

    def advance(self, now_us: int) -> list[DetectionEvent]:
        events: list[DetectionEvent] = []
        for tr in self.vehicles.values():
            events += tr.advance(now_us)
        return events

    def finish(self) -> list[DetectionEvent]:
        events: list[DetectionEvent] = []
        for tr in self.vehicles.values():
            events += tr.finish()
        return events

    def statistics(self) -> TrackerStats:
        total = TrackerStats()
        for tr in self.vehicles.values():
            total.add(tr.stats)
        return total


__all__ = [
    "ClosedBy",
    "FleetTracker",
    "Matcher",
    "SiteIndex",
    "SiteListMismatch",
    "TrackerStats",
    "VehicleTracker",
]

"""Per-fix motion features of one vehicle's track, computed as whole numpy arrays.

The detectors never loop over fixes: they take the masks computed here (which fixes to trust,
which are slow, which steps are jumps), run-length encode them and run small state machines over
the runs.  Everything here looks only at a fix, its neighbours and a short trailing window, so
the same fix gets the same features whichever batch it arrived in (the tracker relies on that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schedule import motion_kernel as _kernel
from schedule.motion_kernel import (
    FLAG_GAP,
    FLAG_JUMP,
    FLAG_STILL,
    OUT_REPORTED,
    OUT_T,
    OUT_V,
    OUT_X,
    OUT_Y,
)
from schedule.params import DetectionParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]
IntpA = npt.NDArray[np.intp]

_EARTH_R_M = 6_371_008.8
_DEG = np.pi / 180.0
_KMH = 3.6  # m/s -> km/h
_M_PER_DEG = _EARTH_R_M * _DEG  # local_xy's k
_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)


def diff_1d(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.diff`` of a 1-D numeric array (the same subtraction, element for element).

    ``np.diff``'s generality (any axis, any order, prepend/append) costs ~12 µs a call; the
    detectors make ~20 such calls per vehicle-round on arrays of a few hundred fixes, where
    that overhead, not the arithmetic, is the cost (docs/bench/detect.md).
    """
    out: npt.NDArray[Any] = a[1:] - a[:-1]
    return out


def nonzero_1d(a: BoolA) -> IntpA:
    """``np.flatnonzero`` of a 1-D array, without its ravel and dispatch overhead (same
    indices, same dtype): called ~25 times per vehicle-round."""
    return a.nonzero()[0]


@dataclass(frozen=True, slots=True)
class Track:
    """One vehicle's fixes in strictly increasing fix time: the detectors' input.

    ``speed_kmh`` is NaN where the unit did not report speed (GGA-only units), ``hdop`` NaN
    where unknown.
    """

    t_us: I64
    lon: F64
    lat: F64
    speed_kmh: F64
    hdop: F64

    def __post_init__(self) -> None:
        n = len(self.t_us)
        for name in ("lon", "lat", "speed_kmh", "hdop"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Track column {name!r} has the wrong length")
        if n > 1 and not bool(np.all(diff_1d(self.t_us) > 0)):
            raise ValueError("Track fix times must be strictly increasing (sort and dedupe first)")

    def __len__(self) -> int:
        return len(self.t_us)

    @classmethod
    def unchecked(cls, t_us: I64, lon: F64, lat: F64, speed_kmh: F64, hdop: F64) -> Track:
        """A Track of columns the caller already keeps valid (equal lengths, strictly
        increasing times), without :meth:`__post_init__`'s checks: the tracker builds one
        per re-run from its own columns, and the O(n) time check was a measurable share of
        a re-run's Python (docs/bench/detect.md)."""
        tr = object.__new__(cls)
        object.__setattr__(tr, "t_us", t_us)
        object.__setattr__(tr, "lon", lon)
        object.__setattr__(tr, "lat", lat)
        object.__setattr__(tr, "speed_kmh", speed_kmh)
        object.__setattr__(tr, "hdop", hdop)
        return tr

    @classmethod
    def from_arrays(
        cls,
        t_us: npt.ArrayLike,
        lon: npt.ArrayLike,
        lat: npt.ArrayLike,
        speed_kmh: npt.ArrayLike | None = None,
        hdop: npt.ArrayLike | None = None,
    ) -> Track:
        t = np.asarray(t_us, dtype=np.int64)
        nan = np.full(len(t), np.nan)
        return cls(
            t_us=t,
            lon=np.asarray(lon, dtype=np.float64),
            lat=np.asarray(lat, dtype=np.float64),
            speed_kmh=nan.copy() if speed_kmh is None else np.asarray(speed_kmh, np.float64),
            hdop=nan.copy() if hdop is None else np.asarray(hdop, dtype=np.float64),
        )


def local_xy(lon: F64, lat: F64) -> tuple[F64, F64]:
    """East/north metres around the track's first fix (equirectangular; exact enough for the
    tens-to-hundreds of metres that stop and jump rules compare)."""
    if len(lon) == 0:
        return np.empty(0), np.empty(0)
    lat0 = float(lat[0])
    k = _EARTH_R_M * _DEG
    return (lon - lon[0]) * k * np.cos(lat0 * _DEG), (lat - lat0) * k


def runs(mask: BoolA) -> tuple[IntpA, IntpA]:
    """Half-open [start, end) index ranges of the True runs of ``mask``."""
    m = np.concatenate(([False], mask.astype(bool), [False]))
    edges = nonzero_1d(m[1:] != m[:-1])
    return edges[0::2], edges[1::2]


@dataclass(frozen=True, slots=True)
class Motion:
    """Features of the kept fixes (``keep`` indexes the original track; all other arrays are
    over the kept fixes only)."""

    keep: IntpA
    t_s: F64  # seconds, relative to the first fix of the track
    x: F64
    y: F64
    speed_kmh: F64  # reported, or estimated from displacement where not reported
    still: BoolA  # standing: reported speed < stop_speed_kmh, or moved <= stop_radius_m lately
    jump: BoolA  # step (i-1 -> i) is a teleport or a move across a gap: nothing spans it
    gap: BoolA  # step (i-1 -> i) lasts longer than max_gap_s
    dropped_outliers: int
    dropped_frozen: int
    # the unit's own speed (NaN where it reports none): a stop starts and ends where this says
    # standstill.  Optional so that a Motion built elsewhere stays valid (NaN: unknown).
    reported_kmh: F64 | None = None


def _step_implausible(t_s: F64, x: F64, y: F64, v_kmh: F64, p: DetectionParams) -> BoolA:
    """Step i (i-1 -> i) moves farther than the reported speeds allow (a jump)."""
    n = len(t_s)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    dt = np.maximum(diff_1d(t_s), 1e-3)
    d = np.hypot(diff_1d(x), diff_1d(y))
    vmax = np.fmax(v_kmh[:-1], v_kmh[1:])  # NaN only when both unknown
    # rows where vmax is NaN take the inf branch, so no nan_to_num pass is needed
    allowed = np.where(np.isnan(vmax), np.inf, p.teleport_slack_m + 1.5 * vmax / _KMH * dt)
    too_fast = d / dt * _KMH > p.max_speed_kmh
    jumped = (d > allowed) & (dt <= p.teleport_check_s)
    out[1:] = (too_fast & (d > p.teleport_slack_m)) | jumped
    return out


def _estimate_speed(t_s: F64, x: F64, y: F64, reported: F64, window_s: float) -> F64:
    """Reported speed, or where missing, displacement over a trailing window (prefix-only, so a
    fix's estimate never changes when later fixes arrive)."""
    v = reported.copy()
    missing = np.isnan(v)
    if not missing.any():
        return v
    idx = nonzero_1d(missing)
    j = t_s.searchsorted(t_s[idx] - window_s, side="right") - 1
    j = np.where(j >= idx, idx - 1, j)  # sparse tracks: at least the previous fix
    ok = j >= 0
    jj = np.maximum(j, 0)  # np.clip(j, 0, None) without its dispatch (~10 µs a call)
    dt = np.maximum(t_s[idx] - t_s[jj], 1e-3)
    est = np.hypot(x[idx] - x[jj], y[idx] - y[jj]) / dt * _KMH
    v[idx] = np.where(ok, est, np.inf)  # the first fix of an unknown-speed track: not slow
    return v


def _trailing_displacement_m(t_s: F64, x: F64, y: F64, window_s: float) -> F64:
    """Distance from each fix back to the last fix at least ``window_s`` earlier (the previous
    fix on sparse tracks); +inf for a track's first fix."""
    n = len(t_s)
    if n == 0:
        return np.empty(0)
    i = np.arange(n)
    j = t_s.searchsorted(t_s - window_s, side="right") - 1
    j = np.where(j >= i, i - 1, j)
    jj = np.maximum(j, 0)  # np.clip(j, 0, None) without its dispatch (~10 µs a call)
    d = np.hypot(x - x[jj], y - y[jj])
    return np.where(j >= 0, d, np.inf)


BURST_FIXES = 5
"""The longest multipath burst :func:`motion` drops (fixes); also how many fixes after a jump
a detector must see before it may trust that jump (the tracker's checkpoint lead)."""


def _jumped(t_s: F64, x: F64, y: F64, v: F64, p: DetectionParams, a: int, b: int) -> bool:
    """Fix a -> fix b is a jump: :func:`_step_implausible` for one (not necessarily adjacent)
    pair of fixes."""
    dt = max(float(t_s[b] - t_s[a]), 1e-3)
    d = float(np.hypot(x[b] - x[a], y[b] - y[a]))
    if d / dt * _KMH > p.max_speed_kmh and d > p.teleport_slack_m:
        return True
    vmax = float(np.fmax(v[a], v[b]))
    if np.isnan(vmax) or dt > p.teleport_check_s:
        return False
    return d > p.teleport_slack_m + 1.5 * vmax / _KMH * dt


class _Window:
    """The fixes around one jump as Python floats (track index j is item ``j - lo``): the
    burst rule compares a few dozen pairs per jump, and a numpy scalar operation per
    comparison cost three times the whole detector."""

    __slots__ = ("hi", "lo", "mx", "my", "p", "t", "v", "x", "y")

    def __init__(
        self, t_s: F64, x: F64, y: F64, v: F64, keep: BoolA, p: DetectionParams, *, lo: int, hi: int
    ) -> None:
        self.lo, self.hi, self.p = lo, hi, p
        self.t, self.x, self.y = t_s[lo:hi].tolist(), x[lo:hi].tolist(), y[lo:hi].tolist()
        self.v = v[lo:hi].tolist()
        # where the vehicle mostly is around here (robust to a burst of up to 5 in 12 fixes)
        kept = [j - lo for j in range(lo, hi) if keep[j]]
        sx, sy = sorted(self.x[j] for j in kept), sorted(self.y[j] for j in kept)
        self.mx, self.my = sx[len(sx) // 2], sy[len(sy) // 2]

    def back(self, a: int, b: int) -> bool:
        """Fix b is back where fix a was: within the jump slack, plus 1.5 x the larger reported
        speed over the span (nothing extra when no speed is known)."""
        a, b = a - self.lo, b - self.lo
        span = max(self.t[b] - self.t[a], 1e-3)
        va, vb = self.v[a], self.v[b]
        vm = va if vb != vb else (vb if va != va else max(va, vb))  # NaN-aware max
        lim = self.p.teleport_slack_m + (0.0 if vm != vm else 1.5 * vm / _KMH * span)
        return math.hypot(self.x[b] - self.x[a], self.y[b] - self.y[a]) <= lim

    def score(self, burst: list[int], a: int, b: int) -> float:
        """Smallest distance of a burst fix from the path a -> b and from the median."""
        ax, ay = self.x[a - self.lo], self.y[a - self.lo]
        ex, ey = self.x[b - self.lo] - ax, self.y[b - self.lo] - ay
        ll = ex * ex + ey * ey
        out = math.inf
        for d in burst:
            dx, dy = self.x[d - self.lo], self.y[d - self.lo]
            px, py = dx - ax, dy - ay
            u = 0.0 if ll == 0.0 else min(max((px * ex + py * ey) / ll, 0.0), 1.0)
            off = math.hypot(px - u * ex, py - u * ey)
            out = min(out, off, math.hypot(dx - self.mx, dy - self.my))
        return out


def _drop_outlier_bursts(
    t_s: F64, x: F64, y: F64, v: F64, p: DetectionParams, bad: BoolA, keep: BoolA
) -> int:
    """Clear ``keep`` for multipath bursts; return how many fixes were dropped.

    Runs once per raw jump (``bad``), never per fix.  Every comparison starts from the last
    KEPT fix (``base``), not from fix i-1: a dropped outlier must not make the genuine fixes
    after it look like a jump (issue 11 #10: a departing truck lost 2-3 fixes that way).  At a
    jump base -> i there are two kinds of reading:

    * forward: a fix j among the next ``BURST_FIXES`` is back where ``base`` was, so i..j-1
      were the burst (the jump away exceeded the slack);
    * backward: i is back where a kept fix k among the ``BURST_FIXES`` before it was, so the
      kept fixes after k were the burst, entered by a step *under* the slack and left by this
      jump (issue 11 #9: such a lone outlier used to survive and cut the stop).

    A reading counts only if every fix it drops lies more than half the slack both off the path
    of the two fixes kept around it and from where the vehicle mostly is (the median of the
    kept fixes around i); its score is the smallest of those distances, and the highest score
    wins (then the fewest fixes).  A genuine fix is near the path (moving) or near the median
    (standing), so a reading that would drop one loses: with σ 6 m noise beside a 38 m
    outlier, the outlier goes, never the noisy fix after it.  When no reading is that clear
    (very noisy white noise stepping out and straight back), the first forward reading is
    taken, as before.  With no reading at all the jump is real (a receiver that re-acquired
    elsewhere) and stays.

    This is the specification (:func:`motion_reference` runs it); :func:`motion` runs its
    compiled transcription, :func:`schedule.motion_kernel.drop_outlier_bursts`, which
    tests/test_motion_kernel.py holds to the same ``keep`` and count.  A change here must be
    made there too (its docstring says which spellings keep the floats identical).
    """
    n = len(t_s)
    dropped = 0
    for i in nonzero_1d(bad).tolist():
        if not keep[i] or i == 0:
            continue
        base = i - 1
        while base >= 0 and not keep[base]:
            base -= 1
        if base < 0 or not _jumped(t_s, x, y, v, p, base, i):
            continue  # fine from the last kept fix: the jump was only from a dropped outlier
        w = _Window(
            t_s,
            x,
            y,
            v,
            keep,
            p,
            lo=max(0, min(base, i - BURST_FIXES - 1) - 1),
            hi=min(n, i + BURST_FIXES + 1),
        )
        # (-score, fixes dropped, the burst): farthest off first, then the fewest fixes
        readings: list[tuple[float, int, list[int]]] = []
        for j in range(i + 1, w.hi):
            if w.back(base, j):
                cand = list(range(i, j))
                readings.append((-w.score(cand, base, j), len(cand), cand))
        for k in range(base - 1, max(i - BURST_FIXES - 2, -1), -1):
            if keep[k] and w.back(k, i):
                cand = [d for d in range(k + 1, i) if keep[d]]
                if cand:
                    readings.append((-w.score(cand, k, i), len(cand), cand))
        valid = [r for r in readings if -r[0] > p.teleport_slack_m / 2]
        if valid:
            burst = min(valid, key=lambda r: (r[0], r[1]))[2]
        else:
            # no clear outlier: white noise of σ 10 m steps over the slack now and then, there
            # and straight back; the fix that stepped out goes (it is 40 m off its neighbours
            # either way), so that no "jump" is left to split a stop
            burst = next((c for _, _, c in readings if c[0] == i), [])
        if burst:
            keep[burst] = False
            dropped += len(burst)
    return dropped


def motion_reference(track: Track, p: DetectionParams) -> Motion:
    """:func:`motion` in numpy: the specification the compiled path is held to (tests only).

    Drop multipath outliers and frozen-then-jump fixes, estimate speeds, flag jumps/gaps.

    * An *outlier burst* (multipath: 1-5 fixes away from where the vehicle is) is dropped
      when either of its two steps is a jump (:func:`_drop_outlier_bursts`).
    * A *frozen* run (exactly repeated positions) that ends in a jump was a stale receiver, not
      a vehicle standing still: dropped too (reliability.md #13).
    * Remaining jumps split stops (``jump``); so do steps longer than ``max_gap_s`` and moves
      of more than ``gap_rejoin_m`` across a step longer than ``teleport_check_s``.
    """
    n = len(track)
    t_s = (track.t_us - (track.t_us[0] if n else 0)).astype(np.float64) / 1e6
    x, y = local_xy(track.lon, track.lat)
    v0 = np.where(np.isnan(track.speed_kmh), np.nan, track.speed_kmh)
    keep = np.ones(n, dtype=bool)
    bad = _step_implausible(t_s, x, y, v0, p)
    dropped_outliers = _drop_outlier_bursts(t_s, x, y, v0, p, bad, keep) if bad.any() else 0
    # frozen runs ending in a jump
    dropped_frozen = 0
    if n > 2:
        same = np.zeros(n, dtype=bool)
        same[1:] = (diff_1d(x) == 0.0) & (diff_1d(y) == 0.0)
        starts, ends = runs(same)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e < n and bad[e] and keep[e]:
                lo = max(s - 1, 0)
                dropped_frozen += int(keep[lo:e].sum())
                keep[lo:e] = False
    kept = nonzero_1d(keep)
    t_k, x_k, y_k = t_s[kept], x[kept], y[kept]
    v_k = _estimate_speed(t_k, x_k, y_k, v0[kept], p.speed_window_s)
    jump = _step_implausible(t_k, x_k, y_k, np.where(np.isinf(v_k), np.nan, v_k), p)
    reported = v0[kept]
    # the displacement rule never overrides a unit that reports driving speed (issue 11 #12):
    # drift reported as a few km/h is standing, >= crawl_speed_kmh is not
    still = (reported < p.stop_speed_kmh) | (
        (_trailing_displacement_m(t_k, x_k, y_k, p.speed_window_s) <= p.stop_radius_m)
        & ~(reported >= p.crawl_speed_kmh)
    )
    gap = np.zeros(len(kept), dtype=bool)
    if len(kept) > 1:
        dt = diff_1d(t_k)
        d = np.hypot(diff_1d(x_k), diff_1d(y_k))
        gap[1:] = dt > p.max_gap_s
        jump[1:] |= (dt > p.teleport_check_s) & (d > p.gap_rejoin_m)
    return Motion(
        keep=kept,
        t_s=t_k,
        x=x_k,
        y=y_k,
        speed_kmh=v_k,
        still=still,
        jump=jump,
        gap=gap,
        dropped_outliers=dropped_outliers,
        dropped_frozen=dropped_frozen,
        reported_kmh=reported,
    )


def motion(track: Track, p: DetectionParams) -> Motion:
    """Drop multipath outliers and frozen-then-jump fixes, estimate speeds, flag jumps/gaps:
    :func:`motion_reference`'s answer, bit for bit, from one call of the compiled kernel
    (:func:`schedule.motion_kernel.motion_features`, which runs the outlier-burst rule
    :func:`_drop_outlier_bursts` compiled where the track has a raw jump).  Columns of another
    dtype than the tracker's int64/float64 take the reference.
    """
    t_us, lon, lat, speed = track.t_us, track.lon, track.lat, track.speed_kmh
    if not (t_us.dtype == _I64 and lon.dtype == _F64 and lat.dtype == _F64 and speed.dtype == _F64):
        return motion_reference(track, p)
    cos_lat0 = np.cos(float(lat[0]) * _DEG) if len(t_us) else 1.0
    kept, cols, flags, dropped_outliers, dropped_frozen = _kernel.motion_features(
        t_us, lon, lat, speed, _M_PER_DEG, cos_lat0, BURST_FIXES,
        p.teleport_slack_m, p.max_speed_kmh, p.teleport_check_s, p.speed_window_s,
        p.stop_speed_kmh, p.stop_radius_m, p.crawl_speed_kmh, p.max_gap_s, p.gap_rejoin_m,
    )  # fmt: skip
    # rows by index: unpacking a 2-D array goes through its iterator (~2 µs a call against ~1)
    return Motion(
        keep=kept,
        t_s=cols[OUT_T],
        x=cols[OUT_X],
        y=cols[OUT_Y],
        speed_kmh=cols[OUT_V],
        still=flags[FLAG_STILL],
        jump=flags[FLAG_JUMP],
        gap=flags[FLAG_GAP],
        dropped_outliers=dropped_outliers,
        dropped_frozen=dropped_frozen,
        reported_kmh=cols[OUT_REPORTED],
    )


def cut_runs(mask: BoolA, cut: BoolA) -> list[tuple[int, int]]:
    """Runs of ``mask`` further cut before every fix i whose step ``cut[i]`` is set.

    One vectorised pass (a piece starts where the mask rises or a cut falls inside a run):
    the detectors call this on every re-run, and a per-run loop cost a numpy call per run.
    """
    n = len(mask)
    if n == 0:
        return []
    m = mask.astype(bool)
    start = m.copy()
    start[1:] &= ~m[:-1] | cut[1:]
    end = m.copy()  # end[i]: a piece ends after fix i
    end[:-1] &= ~m[1:] | cut[1:]
    starts = nonzero_1d(start)
    ends = nonzero_1d(end) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))

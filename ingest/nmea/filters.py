"""Per-unit memory across batches: duplicate fix times and implausible jumps.

The only state in the decoder.  Per unit it keeps the ``history_per_unit`` most recent accepted
fixes by fix time (sorted) and, while a unit is producing jump rejects, the last rejected fix
(the re-anchoring chain).  Rules, in docs/nmea.md:

* duplicate: a fix whose time equals an accepted fix of the unit.  Exception, the leap-second
  repeat: at exactly 00:00:00 a second fix with a different position is kept, 1 µs later.
* implausible jump: the fix is compared with the accepted fix of the unit *nearest in fix time*
  (not the latest: buffered fixes arrive hours late and backwards), and refused when the distance
  exceeds ``max_speed * max(dt, jump_min_dt_s) + jump_tolerance_m``.
* best-supported position: a remembered fix is *confirmed* once a later admitted fix was
  plausible from it.  When the time-nearest fix is not confirmed (a lone fix: possibly a
  multipath outlier that was itself just within the limit), a fix that is implausible from it is
  still accepted when it is plausible from the time-nearest *confirmed* fix and closer (in
  speed) to it than the lone fix is: the outlier, not the genuine fix after it, is the odd one.
* re-anchoring: when ``reanchor_after`` consecutive jump rejects of a unit are plausible from one
  to the next (the unit moves consistently, so the *anchor* was wrong, e.g. a frozen position),
  the last of them is accepted and becomes the new anchor.

* seed (after a restart): :meth:`FixFilter.seed` gives a unit with no history the newest fix the
  store holds for it.  The seed stays aside until the unit's first fix *newer* than it, and
  only then joins the history (as the newest fix, not confirmed, as it was in the previous
  life): a redelivered fix at or before the seed's time is decided exactly as without the seed
  (the broker's unacknowledged backlog after a crash), and the first new fix is judged against
  where the unit was instead of against nothing.

``admit`` is the definition (scalar); ``admit_batch`` accepts whole units at once when every fix
is newer than the history and each step is plausible, which is provably what ``admit`` would do,
and calls ``admit`` for the other units.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from core.fixes import iso_utc
from ingest.nmea.options import DecodeOptions
from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import US_PER_DAY

M_PER_DEG = 111_195.0  # mean Earth radius 6,371,000 m * pi / 180
_HALF_RAD = 0.5 * math.pi / 180.0

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@overload
def _cos(x: float) -> float: ...
@overload
def _cos(x: F64) -> F64: ...
def _cos(x: float | F64) -> float | F64:
    """cos for |x| <= pi/2 from + and * only (error < 1e-12): libm and numpy's SIMD cos may
    differ in the last bit, and the two decoders must agree bit for bit."""
    x2 = x * x
    return 1.0 - x2 / 2.0 * (
        1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0 * (
            1.0 - x2 / 132.0 * (1.0 - x2 / 182.0 * (1.0 - x2 / 240.0))))))
    )  # fmt: skip


def dist2_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Squared equirectangular distance in m² (exact enough below 100 km, all that matters)."""
    dlon = abs(lon2 - lon1)
    dlon = min(dlon, 360.0 - dlon)
    c = _cos((lat1 + lat2) * _HALF_RAD)
    dy = (lat2 - lat1) * M_PER_DEG
    dx = dlon * M_PER_DEG * c
    return dx * dx + dy * dy


def dist2_m_array(lat1: F64, lon1: F64, lat2: F64, lon2: F64) -> F64:
    """:func:`dist2_m` over arrays, the same operations in the same order."""
    dlon = np.abs(lon2 - lon1)
    dlon = np.minimum(dlon, 360.0 - dlon)
    c = _cos((lat1 + lat2) * _HALF_RAD)
    dy = (lat2 - lat1) * M_PER_DEG
    dx = dlon * M_PER_DEG * c
    return np.asarray(dx * dx + dy * dy, dtype=np.float64)


def _after(a: npt.NDArray[Any], first: float | bool) -> npt.NDArray[Any]:
    """``first`` followed by ``a`` (np.r_ costs ~15 µs a call in Python overhead)."""
    out = np.empty(len(a) + 1, dtype=a.dtype)
    out[0] = first
    out[1:] = a
    return out


@dataclass(slots=True)
class _Track:
    t: list[int] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    conf: list[bool] = field(default_factory=list)
    chain_n: int = 0
    chain_t: int = 0
    chain_lat: float = 0.0
    chain_lon: float = 0.0
    seed: tuple[int, float, float] | None = None  # (t, lat, lon) not yet in the history


@dataclass(frozen=True, slots=True)
class Verdict:
    """``t_us`` may differ from the input (leap-second repeat); ``reason`` None = accepted."""

    t_us: int
    reason: RejectReason | None = None
    detail: str = ""
    restamped: bool = False
    reanchored: bool = False
    bypassed: bool = False  # accepted past a lone (unconfirmed) time-nearest fix


class FixFilter:
    """Duplicate and jump checks with bounded memory per unit (see module docstring).

    State is columnar so that a batch updates every unit at once: per unit code, a ring of the
    ``history_per_unit`` latest accepted fixes (in time order: the fast path only appends fixes
    newer than the ring's newest, the scalar path rewrites the ring sorted) and the jump chain.
    """

    def __init__(self, options: DecodeOptions) -> None:
        self._opt = options
        self._vmax = options.max_speed_kmh / 3.6
        self._k = options.history_per_unit
        self._codes: dict[str, int] = {}
        self._names = np.empty(0, dtype=np.str_)  # unit id by code, rebuilt when units arrive
        cap = 16
        self._t = np.zeros((cap, self._k), dtype=np.int64)
        self._lat = np.zeros((cap, self._k), dtype=np.float64)
        self._lon = np.zeros((cap, self._k), dtype=np.float64)
        self._conf = np.zeros((cap, self._k), dtype=np.bool_)
        self._n = np.zeros(cap, dtype=np.int64)  # fixes in the ring
        self._head = np.zeros(cap, dtype=np.int64)  # next write position
        self._chain_n = np.zeros(cap, dtype=np.int64)
        self._chain_t = np.zeros(cap, dtype=np.int64)
        self._chain_lat = np.zeros(cap, dtype=np.float64)
        self._chain_lon = np.zeros(cap, dtype=np.float64)
        # each unit's latest dating anchor (an RMC or ZDA date+time) and its receive time
        self._anc_t = np.zeros(cap, dtype=np.int64)
        self._anc_recv = np.zeros(cap, dtype=np.int64)
        self._anc_ok = np.zeros(cap, dtype=np.bool_)
        # each unit's pending seed (see seed()): the stored fix it joins the history from
        self._seed_ok = np.zeros(cap, dtype=np.bool_)
        self._seed_t = np.zeros(cap, dtype=np.int64)
        self._seed_lat = np.zeros(cap, dtype=np.float64)
        self._seed_lon = np.zeros(cap, dtype=np.float64)

    def seed(
        self,
        units: Sequence[str],
        t_us: Sequence[int] | I64,
        lat: Sequence[float] | F64,
        lon: Sequence[float] | F64,
    ) -> int:
        """Give each unit *without history* its newest stored fix (a restart: the units'
        last fixes from the store); returns how many units were seeded.

        A unit the filter already tracks keeps its own history (it is newer and fuller); a
        unit listed twice keeps its newest fix.  The seed joins the unit's history only when
        the unit's first fix strictly after it arrives, so fixes at or before it (redeliveries
        of what the store already holds) are decided exactly as without it."""
        if not len(units) == len(t_us) == len(lat) == len(lon):
            raise ValueError(
                f"seed needs one time and position per unit; got {len(units)} units, "
                f"{len(t_us)} times, {len(lat)} latitudes, {len(lon)} longitudes"
            )
        fresh = [u not in self._codes for u in units]
        codes = self.codes(units)
        seeded: set[int] = set()
        for code, fresh_u, t, la, lo in zip(codes.tolist(), fresh, np.asarray(t_us).tolist(),
                                            np.asarray(lat).tolist(), np.asarray(lon).tolist(),
                                            strict=True):  # fmt: skip
            if not (fresh_u or code in seeded):
                continue
            if code in seeded and t <= self._seed_t[code]:
                continue
            seeded.add(code)
            self._seed_ok[code] = True
            self._seed_t[code], self._seed_lat[code], self._seed_lon[code] = t, la, lo
        return len(seeded)

    def anchors(self, codes: I64) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
        """The remembered dating anchor (time, receive time, present) of each unit code."""
        return self._anc_t[codes], self._anc_recv[codes], self._anc_ok[codes]

    def remember_anchors(self, codes: I64, t_us: I64, recv_us: I64) -> None:
        """The dating anchors of a batch in input order: each unit keeps its last one."""
        last = np.full(len(self._codes), -1, dtype=np.int64)
        np.maximum.at(last, codes, np.arange(len(codes)))
        u = np.flatnonzero(last >= 0)
        i = last[u]
        self._anc_t[u], self._anc_recv[u], self._anc_ok[u] = t_us[i], recv_us[i], True

    def __len__(self) -> int:
        return len(self._codes)

    def codes(self, units: Sequence[str]) -> I64:
        """Unit ids -> dense integer codes (new units get new codes and empty state)."""
        table = self._codes
        try:
            return np.fromiter(map(table.__getitem__, units), dtype=np.int64, count=len(units))
        except KeyError:
            for u in units:
                if u not in table:
                    table[u] = len(table)
        if len(table) > len(self._n):
            self._grow(max(len(table), 2 * len(self._n)))
        return np.fromiter(map(table.__getitem__, units), dtype=np.int64, count=len(units))

    def names(self, codes: I64, width: int) -> npt.NDArray[np.str_]:
        """Unit ids of codes as a numpy string column of ``width`` characters."""
        if len(self._names) != len(self._codes):
            self._names = np.array(list(self._codes), dtype=np.str_)
        return self._names[codes].astype(f"<U{width}")

    def _grow(self, cap: int) -> None:
        for name in ("_t", "_lat", "_lon", "_conf"):
            old = getattr(self, name)
            new = np.zeros((cap, self._k), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        for name in ("_n", "_head", "_chain_n", "_chain_t", "_chain_lat", "_chain_lon",
                     "_anc_t", "_anc_recv", "_anc_ok",
                     "_seed_ok", "_seed_t", "_seed_lat", "_seed_lon"):  # fmt: skip
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def history(self, unit: str) -> list[int]:
        """Fix times remembered for a unit, oldest first (for tests and debugging)."""
        code = self._codes.get(unit)
        return [] if code is None else self._load(code).t

    def _load(self, code: int) -> _Track:
        n, head = int(self._n[code]), int(self._head[code])
        pos = (head - n + np.arange(n)) % self._k
        return _Track(
            t=self._t[code, pos].tolist(),
            lat=self._lat[code, pos].tolist(),
            lon=self._lon[code, pos].tolist(),
            conf=self._conf[code, pos].tolist(),
            chain_n=int(self._chain_n[code]),
            chain_t=int(self._chain_t[code]),
            chain_lat=float(self._chain_lat[code]),
            chain_lon=float(self._chain_lon[code]),
            seed=(
                (int(self._seed_t[code]), float(self._seed_lat[code]),
                 float(self._seed_lon[code]))
                if self._seed_ok[code]
                else None
            ),
        )  # fmt: skip

    def _store(self, code: int, tr: _Track) -> None:
        n = len(tr.t)
        self._t[code, :n] = tr.t
        self._lat[code, :n] = tr.lat
        self._lon[code, :n] = tr.lon
        self._conf[code, :n] = tr.conf
        self._n[code], self._head[code] = n, n % self._k
        self._chain_n[code], self._chain_t[code] = tr.chain_n, tr.chain_t
        self._chain_lat[code], self._chain_lon[code] = tr.chain_lat, tr.chain_lon
        self._seed_ok[code] = tr.seed is not None

    def _limit2(self, dt_us: int) -> float:
        dt_s = max(abs(dt_us) / 1e6, self._opt.jump_min_dt_s)
        lim = self._vmax * dt_s + self._opt.jump_tolerance_m
        return lim * lim

    def admit(self, unit: str, t: int, lat: float, lon: float) -> Verdict:
        """The rule for one fix (the definition; the reference decoder calls it per fix)."""
        code = int(self.codes([unit])[0])
        tr = self._load(code)
        v = self._admit(tr, t, lat, lon)
        self._store(code, tr)
        return v

    def admit_each(
        self, units: Sequence[str], t: Sequence[int], lat: Sequence[float], lon: Sequence[float]
    ) -> list[Verdict]:
        """:meth:`admit` for each fix in order (each unit's memory loaded once, not per fix)."""
        tracks: dict[str, tuple[int, _Track]] = {}
        out = []
        for u, ti, la, lo in zip(units, t, lat, lon, strict=True):
            if u not in tracks:
                code = int(self.codes([u])[0])
                tracks[u] = (code, self._load(code))
            out.append(self._admit(tracks[u][1], ti, la, lo))
        for code, tr in tracks.values():
            self._store(code, tr)
        return out

    def _admit(self, tr: _Track, t: int, lat: float, lon: float) -> Verdict:
        if tr.seed is not None and t > tr.seed[0]:
            self._join_seed(tr)
        ts = tr.t
        i = bisect_left(ts, t)
        restamped = False
        if i < len(ts) and ts[i] == t:
            if tr.lat[i] == lat and tr.lon[i] == lon:
                return Verdict(t, RejectReason.DUPLICATE, f"redelivery of the fix at {iso_utc(t)}")
            if t % US_PER_DAY != 0 or (i + 1 < len(ts) and ts[i + 1] == t + 1):
                return Verdict(
                    t,
                    RejectReason.DUPLICATE,
                    f"second fix at {iso_utc(t)} with another position (first one kept)",
                )
            t, i, restamped = t + 1, i + 1, True
        if ts:
            j = i - 1 if i == len(ts) or (i > 0 and t - ts[i - 1] <= ts[i] - t) else i
            d2 = dist2_m(tr.lat[j], tr.lon[j], lat, lon)
            if d2 > self._limit2(t - ts[j]) and self._bypass(tr, i, j, t, lat, lon):
                self._insert(tr, i, t, lat, lon)
                return Verdict(t, restamped=restamped, bypassed=True)
            if d2 > self._limit2(t - ts[j]):
                if (
                    tr.chain_n
                    and t > tr.chain_t
                    and dist2_m(tr.chain_lat, tr.chain_lon, lat, lon)
                    <= self._limit2(t - tr.chain_t)
                ):
                    tr.chain_n += 1
                else:
                    tr.chain_n = 1
                tr.chain_t, tr.chain_lat, tr.chain_lon = t, lat, lon
                if tr.chain_n < self._opt.reanchor_after:
                    dt = abs(t - ts[j]) / 1e6
                    dist = math.sqrt(d2)
                    return Verdict(
                        t,
                        RejectReason.IMPLAUSIBLE_JUMP,
                        f"{dist:.0f} m from the fix at {iso_utc(ts[j])} in {dt:.1f} s "
                        f"({dist / max(dt, self._opt.jump_min_dt_s) * 3.6:.0f} km/h)",
                    )
                self._insert(tr, i, t, lat, lon)
                return Verdict(t, restamped=restamped, reanchored=True)
            tr.conf[j] = True
        self._insert(tr, i, t, lat, lon)
        return Verdict(t, restamped=restamped)

    def _join_seed(self, tr: _Track) -> None:
        """The pending seed joins the history, before the unit's first fix newer than it:
        as the newest fix, not confirmed (the previous life's newest fix had no later fix to
        confirm it).  Skipped if a redelivered fix at the seed's very time is already there."""
        assert tr.seed is not None
        st, sla, slo = tr.seed
        tr.seed = None
        i = bisect_left(tr.t, st)
        if i < len(tr.t) and tr.t[i] == st:
            return
        chain = tr.chain_n
        self._insert(tr, i, st, sla, slo)
        tr.chain_n = chain  # joining is not an accepted fix: a jump chain stays open

    def _bypass(self, tr: _Track, i: int, j: int, t: int, lat: float, lon: float) -> bool:
        """Whether a fix implausible from the time-nearest remembered fix ``j`` is accepted
        from the best-supported position instead: ``j`` is a lone fix (no later fix agreed
        with it), the fix is plausible from ``c``, the time-nearest confirmed fix, and nearer
        to ``c`` in speed than ``j`` is (so ``j`` is the odd one out, not the new fix)."""
        if tr.conf[j]:
            return False
        ts = tr.t
        lo, hi = i - 1, i  # scan outwards from the insertion point, skipping j
        c = -1
        while lo >= 0 or hi < len(ts):
            if lo == j or (lo >= 0 and not tr.conf[lo]):
                lo -= 1
                continue
            if hi == j or (hi < len(ts) and not tr.conf[hi]):
                hi += 1
                continue
            if lo >= 0 and (hi >= len(ts) or t - ts[lo] <= ts[hi] - t):
                c = lo
            elif hi < len(ts):
                c = hi
            break
        if c < 0:
            return False
        d2x = dist2_m(tr.lat[c], tr.lon[c], lat, lon)
        if d2x > self._limit2(t - ts[c]):
            return False
        d2j = dist2_m(tr.lat[c], tr.lon[c], tr.lat[j], tr.lon[j])
        floor = self._opt.jump_min_dt_s
        dtx = max(abs(t - ts[c]) / 1e6, floor)
        dtj = max(abs(ts[j] - ts[c]) / 1e6, floor)
        return d2x * dtj * dtj < d2j * dtx * dtx

    def _admit_unit(
        self,
        tr: _Track,
        rows: I64,
        t: I64,
        lat: F64,
        lon: F64,
        bad: npt.NDArray[np.bool_],
        odd: list[tuple[int, Verdict]],
        t_out: I64,
    ) -> int:
        """:meth:`_admit` for one unit's rows in order, except runs that are provably plain
        accepts: a row that is newer than, and plausible from, the row before it (``bad``
        false, as admit_batch computed it) while that row is the track's newest fix and no
        jump chain is open gets exactly the verdict "accepted" from _admit (the nearest fix in
        time is the newest, the same distance test passes), and so does the rest of the run
        up to the next ``bad`` row: such runs are appended in bulk.  A unit with one odd fix
        in a long batch (a real receiver's backwards timestamp) thus costs one scalar call,
        not one per fix.  Returns the number of rows decided by _admit."""
        n = len(rows)
        next_bad = [*np.flatnonzero(bad).tolist(), n]
        nb = 0  # index of the first entry of next_bad >= r
        tl, lal, lol = t.tolist(), lat.tolist(), lon.tolist()
        rl = rows.tolist()
        badl = bad.tolist()
        slow = 0
        r = 0
        while r < n:
            if (
                not badl[r]
                and tr.chain_n == 0
                and tr.seed is None
                and (r == 0 or (bool(tr.t) and tr.t[-1] == tl[r - 1]
                                and tr.lat[-1] == lal[r - 1] and tr.lon[-1] == lol[r - 1]))
            ):  # fmt: skip
                while next_bad[nb] < r:
                    nb += 1
                q = next_bad[nb]
                if tr.t:  # row r was plausible from the newest fix: it confirms it
                    tr.conf[-1] = True
                tr.t.extend(tl[r:q])
                tr.lat.extend(lal[r:q])
                tr.lon.extend(lol[r:q])
                tr.conf.extend([True] * (q - r - 1) + [False])
                if len(tr.t) > self._k:
                    drop = len(tr.t) - self._k
                    del tr.t[:drop], tr.lat[:drop], tr.lon[:drop], tr.conf[:drop]
                r = q
                continue
            v = self._admit(tr, tl[r], lal[r], lol[r])
            slow += 1
            t_out[rl[r]] = v.t_us
            if v.reason is not None or v.restamped or v.reanchored or v.bypassed:
                odd.append((rl[r], v))
            r += 1
        return slow

    def _insert(self, tr: _Track, i: int, t: int, lat: float, lon: float) -> None:
        tr.chain_n = 0
        tr.t.insert(i, t)
        tr.lat.insert(i, lat)
        tr.lon.insert(i, lon)
        tr.conf.insert(i, False)
        if len(tr.t) > self._k:
            del tr.t[0], tr.lat[0], tr.lon[0], tr.conf[0]

    def admit_batch(
        self, codes: I64, t: I64, lat: F64, lon: F64
    ) -> tuple[I64, list[tuple[int, Verdict]], int]:
        """Rows in input order (unit codes from :meth:`codes`) -> (final times, [(row,
        verdict)] for rows not plainly accepted, number of rows decided by the scalar path)."""
        n = len(t)
        t_out = t.copy()
        odd: list[tuple[int, Verdict]] = []
        if n == 0:
            return t_out, odd, 0
        k = self._k
        order = np.argsort(codes, kind="stable")
        cs, ts, la, lo = codes[order], t[order], lat[order], lon[order]
        first = _after(cs[1:] != cs[:-1], True)
        starts = np.flatnonzero(first)
        gcode = cs[starts]
        # previous fix of every row: the row before in its unit, or the ring's newest
        prev_t = _after(ts[:-1], 0)
        prev_lat = _after(la[:-1], 0.0)
        prev_lon = _after(lo[:-1], 0.0)
        last = (self._head[gcode] - 1) % k
        prev_t[starts] = self._t[gcode, last]
        prev_lat[starts] = self._lat[gcode, last]
        prev_lon[starts] = self._lon[gcode, last]
        has_prev = np.ones(n, dtype=bool)
        has_prev[starts] = self._n[gcode] > 0
        dt = ts - prev_t
        dt_s = np.maximum(np.abs(dt) / 1e6, self._opt.jump_min_dt_s)
        lim = self._vmax * dt_s + self._opt.jump_tolerance_m
        bad = has_prev & ((dt <= 0) | (dist2_m_array(prev_lat, prev_lon, la, lo) > lim * lim))
        blocked = (
            (np.add.reduceat(bad, starts) > 0)
            | (self._chain_n[gcode] > 0)
            | self._seed_ok[gcode]  # a pending seed joins in the scalar path
        )
        group = np.cumsum(first) - 1
        slow_rows = 0
        if blocked.any():
            ends = np.append(starts[1:], n)
            for g in np.flatnonzero(blocked).tolist():
                code = int(gcode[g])
                tr = self._load(code)
                a, b = int(starts[g]), int(ends[g])
                slow_rows += self._admit_unit(tr, order[a:b], ts[a:b], la[a:b], lo[a:b],
                                              bad[a:b], odd, t_out)  # fmt: skip
                self._store(code, tr)
            odd.sort(key=lambda rv: rv[0])
        # every other unit: append its rows to its ring (only the last k of them matter)
        fast = ~blocked[group]
        cnt = np.bincount(group, minlength=len(starts))
        rank = np.arange(n) - starts[group]
        keep = fast & (rank >= cnt[group] - k)
        rc = cs[keep]
        pos = (self._head[rc] + rank[keep]) % k
        fg = np.flatnonzero(~blocked)
        fc = gcode[fg]
        # each appended fix confirms the one before it: the ring's newest, then all but the last
        had = fc[self._n[fc] > 0]
        self._conf[had, (self._head[had] - 1) % k] = True
        self._t[rc, pos] = ts[keep]
        self._lat[rc, pos] = la[keep]
        self._lon[rc, pos] = lo[keep]
        self._conf[rc, pos] = rank[keep] < cnt[group[keep]] - 1
        self._head[fc] = (self._head[fc] + cnt[fg]) % k
        self._n[fc] = np.minimum(self._n[fc] + cnt[fg], k)
        return t_out, odd, slow_rows

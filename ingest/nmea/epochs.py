"""Parsed sentences -> one candidate fix per epoch, validated against its receive time.

Shared by both decoders (the parsers differ, this stage does not): numpy over the rows of a batch.

Epoch rule (docs/nmea.md): inside one payload, consecutive position sentences with a time of
day (RMC, GGA, GNS, GLL) with the same time form one epoch of at most one of each kind; a
repeated kind starts a new epoch (which the duplicate check then catches, e.g. GPRMC then
GNRMC).  A VTG belongs to the epoch of the last time-bearing sentence before it in its payload.

Dating rule: an epoch without an RMC has a time of day only.  It takes its date from the same
unit's dated sentences around it (RMC date, ZDA): the previous one in input order (this batch,
else the one remembered from earlier batches), else the next one in this batch; the date is the
one that puts the fix nearest that anchor's time.  Without an anchor it is dated by its receive
time when that is real (``DecodeOptions.date_from_receive_time``), else rejected ``undated``:
never by the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core.fixes import iso_utc
from ingest.nmea.options import WEEK_ROLLOVER_US, DecodeOptions
from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import (
    KIND_GGA,
    KIND_GLL,
    KIND_GNS,
    KIND_RMC,
    KIND_VTG,
    KIND_ZDA,
    TALKER_CODE_LIMIT,
    US_PER_DAY,
    ParsedRows,
    days_from_civil,
    talker_name,
)

_DAY_1981 = int(days_from_civil(1981, 1, 1))
I64 = npt.NDArray[np.int64]
#: Epoch slot of each kind (-1: not a position sentence with a time of day).
_SLOT = np.full(8, -1, dtype=np.int64)
_SLOT[[KIND_RMC, KIND_GGA, KIND_GNS, KIND_GLL]] = [0, 1, 2, 3]
#: A dating anchor is used only for fixes received within this of it (same unit): the date of
#: a time of day is the one nearest the anchor's time, right while the two are < 12 h apart.
ANCHOR_MAX_RECV_GAP_US = 12 * 3600 * 1_000_000


class AnchorMemory(Protocol):
    """Each unit's latest dating anchor (time, receive time) across batches (filters.FixFilter)."""

    def anchors(self, codes: I64) -> tuple[I64, I64, npt.NDArray[np.bool_]]: ...

    def remember_anchors(self, codes: I64, t_us: I64, recv_us: I64) -> None:
        """Anchors of a batch in input order: the last of each unit code is kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    """Validated epochs in input order, not yet checked against the unit's history."""

    seq: npt.NDArray[np.int64]
    payload: npt.NDArray[np.int64]
    t_us: npt.NDArray[np.int64]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    speed_kmh: npt.NDArray[np.float64]
    course: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int8]
    sats: npt.NDArray[np.int8]
    hdop: npt.NDArray[np.float64]
    alt_m: npt.NDArray[np.float64]
    talker: npt.NDArray[np.str_]


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochOutput:
    candidates: Candidates
    rejects: list[tuple[int, RejectReason, str]]
    merged: int
    unpaired_vtg: dict[str, int]
    corrected_rollover: int
    dating: int  # ZDA sentences read as dating sources


def _epoch_starts(p: I64, tod: I64, slot: I64) -> npt.NDArray[np.bool_]:
    """Which time-bearing rows open an epoch: a change of payload or of time of day, or a slot
    (RMC, GGA, GNS, GLL) already filled in the current epoch (GPRMC then GNRMC of one time)."""
    n = len(p)
    forced = np.ones(n, dtype=bool)
    forced[1:] = (p[1:] != p[:-1]) | (tod[1:] != tod[:-1])
    if n < 2:
        return forced
    # the common case without a cumsum: no row repeats the slot of the row before it in its
    # run, and no run has 3 rows (RMC + GGA per payload)
    same = ~forced[1:]
    if not (same & (slot[1:] == slot[:-1])).any() and not (same[1:] & same[:-1]).any():
        return forced
    run = np.cumsum(forced) - 1
    # A run without a repeated slot has at most 4 rows, so comparing each row with the rows
    # before it in its run (up to 3) finds every run that needs the sequential rule (rare: a
    # repeated kind in one payload).  Most batches have runs of 1-2 rows: one comparison.
    longest = int(np.diff(np.flatnonzero(forced), append=n).max())
    rep = (run[1:] == run[:-1]) & (slot[1:] == slot[:-1])
    rep = np.concatenate(([False], rep))
    for d in range(2, min(longest, 4)):
        rep[d:] |= (run[d:] == run[:-d]) & (slot[d:] == slot[:-d])
    if longest > 4:
        rep[4:] |= run[4:] == run[:-4]
    if not rep.any():
        return forced
    new = forced.copy()
    for r in np.unique(run[rep]).tolist():
        seen: set[int] = set()
        for i in np.flatnonzero(run == r).tolist():
            sl = int(slot[i])
            if sl in seen:
                new[i] = True
                seen = {sl}
            else:
                seen.add(sl)
    return new


#: Talker name by talker code (sentences.talker_code), for one gather per batch.
_TALKER_NAMES = np.array([talker_name(c) for c in range(TALKER_CODE_LIMIT)], dtype="<U2")


def _talker_names(codes: npt.NDArray[np.int16]) -> npt.NDArray[np.str_]:
    return _TALKER_NAMES[codes]


def build_candidates(
    rows: ParsedRows,
    recv_us: I64,
    unit_codes: I64,
    options: DecodeOptions,
    memory: AnchorMemory,
) -> EpochOutput:
    """Epochs of ``rows`` -> validated candidate fixes.  ``unit_codes`` is the unit code of
    each payload; ``memory`` keeps each unit's latest dating anchor across batches."""
    kind = rows.kind
    slot_of = _SLOT[kind]
    ti = np.flatnonzero(slot_of >= 0)
    n = len(ti)
    p, tod = rows.payload[ti], rows.tod_us[ti]
    new = _epoch_starts(p, tod, slot_of[ti])
    first = np.flatnonzero(new)
    n_ep = len(first)
    epoch_id = np.cumsum(new) - 1
    slot_row = np.full(n_ep * 4, -1, dtype=np.int64)  # 4 slots per epoch, flat: one scatter
    slot_row[epoch_id * 4 + slot_of[ti]] = ti
    rmc, gga, gns, gll = slot_row[0::4], slot_row[1::4], slot_row[2::4], slot_row[3::4]
    a = ti[first]
    pos = np.where(rmc >= 0, rmc, np.where(gga >= 0, gga, np.where(gns >= 0, gns, gll)))
    qsrc = np.where(gga >= 0, gga, gns)
    merged = n - n_ep

    # VTG: speed/course for the epoch of the previous time-bearing sentence of its payload.
    speed = np.where(rmc >= 0, rows.speed_kmh[rmc], np.nan)
    course = np.where(rmc >= 0, rows.course[rmc], np.nan)
    vi = np.flatnonzero(kind == KIND_VTG)
    unpaired: dict[str, int] = {}
    if len(vi):
        j = np.searchsorted(ti, vi) - 1
        ok = j >= 0
        ok[ok] = rows.payload[ti[j[ok]]] == rows.payload[vi[ok]]
        merged += int(ok.sum())
        for tk, cnt in zip(*np.unique(rows.talker[vi[~ok]], return_counts=True), strict=True):
            unpaired[f"{talker_name(int(tk))}VTG"] = int(cnt)
        ep = epoch_id[j[ok]]
        ep_first, k_first = np.unique(ep, return_index=True)
        src = vi[ok][k_first]
        use = rmc[ep_first] < 0
        speed[ep_first[use]] = rows.speed_kmh[src[use]]
        course[ep_first[use]] = rows.course[src[use]]

    lat, lon = rows.lat[pos], rows.lon[pos]
    tod_e = rows.tod_us[pos]
    payload = rows.payload[a]
    recv = recv_us[payload]
    date = np.where(rmc >= 0, rows.date_days[rmc], -1)
    dated = date >= 0
    t = date * US_PER_DAY + tod_e
    rejects: list[tuple[int, RejectReason, str]] = []

    # Dating sources: valid RMC dates and ZDA (not receiver power-up defaults).
    zi = np.flatnonzero(kind == KIND_ZDA)
    zda_default = zi[rows.date_days[zi] < _DAY_1981]
    for r in zda_default.tolist():
        rejects.append(
            (
                int(rows.seq[r]),
                RejectReason.POWER_UP_DEFAULT,
                f"receiver default date in ZDA: {iso_utc(int(rows.date_days[r]) * US_PER_DAY)}",
            )
        )
    dating = len(zi) - len(zda_default)
    # every RMC row is its epoch's RMC, so the RMC anchors are the epochs' (in row order)
    ai = rmc[(rmc >= 0) & (date >= _DAY_1981)]
    zv = zi[rows.date_days[zi] >= _DAY_1981]
    if len(zv):
        ai = np.sort(np.concatenate((ai, zv)))
    undated = np.flatnonzero(~dated)
    no_date = np.zeros(len(a), dtype=bool)
    if len(undated):
        t[undated], no_date[undated] = _date_undated(
            rows, recv_us, unit_codes, options, memory, ai, a[undated], tod_e[undated]
        )
    if len(ai):
        # each unit's latest anchor of this batch is remembered for the next batches
        ap = rows.payload[ai]
        memory.remember_anchors(
            unit_codes[ap], rows.date_days[ai] * US_PER_DAY + rows.tod_us[ai], recv_us[ap]
        )

    reason = np.zeros(len(a), dtype=np.int8)  # 0 = ok, else index into _CHECKS + 1
    alat, alon = np.abs(lat), np.abs(lon)
    max_future = round(options.max_future_s * 1e6)
    max_age = round(options.max_age_days * US_PER_DAY)
    checks = [
        (RejectReason.OUT_OF_RANGE, (alat > 90.0) | (alon > 180.0)),
        (RejectReason.POWER_UP_DEFAULT, (alat == 90.0) | (dated & (date < _DAY_1981))),
        (RejectReason.ZERO_POSITION, (lat == 0.0) & (lon == 0.0)),
        (RejectReason.UNDATED, no_date),
        (RejectReason.FUTURE_TIME, t - recv > max_future),
        (RejectReason.TOO_OLD, recv - t > max_age),
    ]
    for code, (_, mask) in enumerate(checks, start=1):
        reason[(reason == 0) & mask] = code
    corrected = 0
    old = np.flatnonzero(reason == len(checks))
    for i in old.tolist():
        for k in (1, 2, 3):
            tk = int(t[i]) + k * WEEK_ROLLOVER_US
            if int(recv[i]) - max_age <= tk <= int(recv[i]) + max_future:
                if options.week_rollover == "correct":
                    t[i] = tk
                    reason[i] = 0
                    corrected += 1
                else:
                    reason[i] = -1
                    rejects.append(
                        (
                            int(rows.seq[a[i]]),
                            RejectReason.WEEK_ROLLOVER,
                            f"fix date {iso_utc(int(t[i]))} is {k}x1024 GPS weeks before "
                            f"{iso_utc(tk)}, near receive time {iso_utc(int(recv[i]))}",
                        )
                    )
                break
    for i in np.flatnonzero(reason > 0).tolist():
        why = checks[reason[i] - 1][0]
        rejects.append((int(rows.seq[a[i]]), why, _detail(why, lat[i], lon[i], t[i], recv[i])))
    keep = reason == 0
    sel = slice(None) if keep.all() else keep  # the common case: no copies
    cand = Candidates(
        seq=rows.seq[a][sel],
        payload=payload[sel],
        t_us=t[sel],
        lat=lat[sel],
        lon=lon[sel],
        speed_kmh=speed[sel],
        course=course[sel],
        quality=np.where(qsrc >= 0, rows.quality[qsrc], -1).astype(np.int8)[sel],
        sats=np.where(qsrc >= 0, rows.sats[qsrc], -1).astype(np.int8)[sel],
        hdop=np.where(qsrc >= 0, rows.hdop[qsrc], np.nan)[sel],
        alt_m=np.where(qsrc >= 0, rows.alt_m[qsrc], np.nan)[sel],
        talker=_talker_names(rows.talker[pos][sel]),
    )
    return EpochOutput(
        candidates=cand,
        rejects=rejects,
        merged=merged,
        unpaired_vtg=unpaired,
        corrected_rollover=corrected,
        dating=dating,
    )


def _detail(why: RejectReason, lat: float, lon: float, t: int, recv: int) -> str:
    where = f"{float(lat):.6f},{float(lon):.6f}"
    if why is RejectReason.OUT_OF_RANGE:
        return f"position {where} outside [-90, 90] x [-180, 180]"
    if why is RejectReason.POWER_UP_DEFAULT:
        return f"receiver default: position {where} at {iso_utc(int(t))}"
    if why is RejectReason.ZERO_POSITION:
        return "position 0,0 (receiver without a fix)"
    if why is RejectReason.UNDATED:
        return (
            "time of day without a date: no RMC/ZDA date of the unit around it and no real "
            "receive time (pass --recv-time or #recv lines for a live capture)"
        )
    if why is RejectReason.FUTURE_TIME:
        ahead_s = (int(t) - int(recv)) / 1e6
        return f"fix time {iso_utc(int(t))} is {ahead_s:.0f} s after receive time"
    age_days = (int(recv) - int(t)) / 86_400e6
    return f"fix time {iso_utc(int(t))} is {age_days:.1f} days before receive time"


def _date_undated(
    rows: ParsedRows,
    recv_us: I64,
    unit_codes: I64,
    options: DecodeOptions,
    memory: AnchorMemory,
    ai: I64,
    first_row: I64,
    tod: I64,
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Fix times of epochs without a date of their own (see the module docstring), and which
    of them found no date at all."""
    m = len(first_row)
    pay = rows.payload[first_row]
    unit = unit_codes[pay]
    recv = recv_us[pay]
    anchor_t = np.full(m, -1, dtype=np.int64)
    # candidates in order of preference: previous in batch, remembered, next in batch
    n_rows = len(rows) + 1
    mem_t, mem_recv, mem_ok = memory.anchors(unit)
    if len(ai):
        a_unit = unit_codes[rows.payload[ai]]
        key = a_unit * n_rows + ai
        order = np.argsort(key, kind="stable")
        skey, srow, sunit = key[order], ai[order], a_unit[order]
        q = np.searchsorted(skey, unit * n_rows + first_row)
        a_t = rows.date_days[srow] * US_PER_DAY + rows.tod_us[srow]
        a_recv = recv_us[rows.payload[srow]]
        prev = q - 1
        has_prev = prev >= 0
        has_prev[has_prev] = sunit[prev[has_prev]] == unit[has_prev]
        nxt = np.minimum(q, len(ai) - 1)
        has_next = (q < len(ai)) & (sunit[nxt] == unit)
        cands = [
            (has_prev, a_t[np.maximum(prev, 0)], a_recv[np.maximum(prev, 0)]),
            (mem_ok, mem_t, mem_recv),
            (has_next, a_t[nxt], a_recv[nxt]),
        ]
    else:
        cands = [(mem_ok, mem_t, mem_recv)]
    for ok, ct, crecv in cands:
        use = (anchor_t < 0) & ok & (np.abs(recv - crecv) <= ANCHOR_MAX_RECV_GAP_US)
        anchor_t[use] = ct[use]
    found = anchor_t >= 0
    # the date (anchor day -1, 0 or +1) that puts the fix nearest its reference time
    ref = np.where(found, anchor_t, recv)
    rday = ref // US_PER_DAY
    opts3 = (rday[:, None] + np.array([-1, 0, 1])) * US_PER_DAY + tod[:, None]
    t = opts3[np.arange(m), np.argmin(np.abs(opts3 - ref[:, None]), axis=1)]
    no_date = ~found if not options.date_from_receive_time else np.zeros(m, dtype=bool)
    return np.asarray(t, dtype=np.int64), no_date

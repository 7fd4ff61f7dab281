"""Parsed sentences -> one candidate fix per epoch, validated against its receive time.

Shared by both decoders (the parsers differ, this stage does not): numpy over the rows of a batch.

Epoch rule (docs/nmea.md): inside one payload, consecutive time-bearing sentences (RMC, GGA, GNS)
with the same time of day form one epoch of at most one RMC and one GGA/GNS; a repeated kind
starts a new epoch (which the duplicate check then catches, e.g. GPRMC then GNRMC).  A VTG
belongs to the epoch of the last time-bearing sentence before it in its payload.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.fixes import iso_utc
from ingest.nmea.options import WEEK_ROLLOVER_US, DecodeOptions
from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import (
    KIND_RMC,
    KIND_VTG,
    TALKERS,
    US_PER_DAY,
    ParsedRows,
    days_from_civil,
)

_DAY_1981 = int(days_from_civil(1981, 1, 1))
_TALKER_NAMES = np.array(TALKERS)


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


def build_candidates(
    rows: ParsedRows, recv_us: npt.NDArray[np.int64], options: DecodeOptions
) -> EpochOutput:
    kind = rows.kind
    ti = np.flatnonzero(kind != KIND_VTG)
    n = len(ti)
    p, tod = rows.payload[ti], rows.tod_us[ti]
    g = kind[ti] != KIND_RMC
    forced = np.ones(n, dtype=bool)
    forced[1:] = (p[1:] != p[:-1]) | (tod[1:] != tod[:-1]) | (g[1:] == g[:-1])
    idx = np.arange(n)
    lastf = np.maximum.accumulate(np.where(forced, idx, 0)) if n else idx
    new = forced | ((idx - lastf) % 2 == 0)
    first = np.flatnonzero(new)
    nxt = first + 1
    has2 = nxt < n
    has2[has2] = ~new[nxt[has2]]
    a = ti[first]
    b = np.where(has2, ti[np.minimum(nxt, max(n - 1, 0))] if n else a, -1)
    a_rmc = kind[a] == KIND_RMC
    rmc = np.where(a_rmc, a, np.where(has2 & ~a_rmc, b, -1))
    gga = np.where(~a_rmc, a, np.where(has2 & a_rmc, b, -1))
    pos = np.where(rmc >= 0, rmc, gga)
    merged = int(has2.sum())

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
            unpaired[f"{TALKERS[int(tk)]}VTG"] = int(cnt)
        epoch_id = np.cumsum(new) - 1
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
    # GGA-only epochs: the date that puts the fix nearest its receive time (ties: the earlier).
    t = date * US_PER_DAY + tod_e
    if not dated.all():
        rday = recv // US_PER_DAY
        opts3 = (rday[:, None] + np.array([-1, 0, 1])) * US_PER_DAY + tod_e[:, None]
        nearest = opts3[np.arange(len(a)), np.argmin(np.abs(opts3 - recv[:, None]), axis=1)]
        t = np.where(dated, t, nearest)

    reason = np.zeros(len(a), dtype=np.int8)  # 0 = ok, else index into _CHECKS + 1
    alat, alon = np.abs(lat), np.abs(lon)
    max_future = round(options.max_future_s * 1e6)
    max_age = round(options.max_age_days * US_PER_DAY)
    checks = [
        (RejectReason.OUT_OF_RANGE, (alat > 90.0) | (alon > 180.0)),
        (RejectReason.POWER_UP_DEFAULT, (alat == 90.0) | (dated & (date < _DAY_1981))),
        (RejectReason.ZERO_POSITION, (lat == 0.0) & (lon == 0.0)),
        (RejectReason.FUTURE_TIME, t - recv > max_future),
        (RejectReason.TOO_OLD, recv - t > max_age),
    ]
    for code, (_, mask) in enumerate(checks, start=1):
        reason[(reason == 0) & mask] = code
    corrected = 0
    old = np.flatnonzero(reason == len(checks))
    rejects: list[tuple[int, RejectReason, str]] = []
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
        quality=np.where(gga >= 0, rows.quality[gga], -1).astype(np.int8)[sel],
        sats=np.where(gga >= 0, rows.sats[gga], -1).astype(np.int8)[sel],
        hdop=np.where(gga >= 0, rows.hdop[gga], np.nan)[sel],
        alt_m=np.where(gga >= 0, rows.alt_m[gga], np.nan)[sel],
        talker=_TALKER_NAMES[rows.talker[pos][sel]],
    )
    return EpochOutput(
        candidates=cand,
        rejects=rejects,
        merged=merged,
        unpaired_vtg=unpaired,
        corrected_rollover=corrected,
    )


def _detail(why: RejectReason, lat: float, lon: float, t: int, recv: int) -> str:
    where = f"{float(lat):.6f},{float(lon):.6f}"
    if why is RejectReason.OUT_OF_RANGE:
        return f"position {where} outside [-90, 90] x [-180, 180]"
    if why is RejectReason.POWER_UP_DEFAULT:
        return f"receiver default: position {where} at {iso_utc(int(t))}"
    if why is RejectReason.ZERO_POSITION:
        return "position 0,0 (receiver without a fix)"
    if why is RejectReason.FUTURE_TIME:
        ahead_s = (int(t) - int(recv)) / 1e6
        return f"fix time {iso_utc(int(t))} is {ahead_s:.0f} s after receive time"
    age_days = (int(recv) - int(t)) / 86_400e6
    return f"fix time {iso_utc(int(t))} is {age_days:.1f} days before receive time"

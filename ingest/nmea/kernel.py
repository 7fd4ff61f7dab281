"""The compiled single-pass parser: one numba loop over the concatenated bytes of a batch.

The numpy parser (vectorised.py) makes ~300 array passes per batch, each streaming temporaries
through memory.  This loop reads every byte once: while it frames a sentence (checksum XOR,
``*`` and bad-byte counts) it also reads every field as a decimal number (mantissa, digit count,
dot position, sign), so that the per-kind checks afterwards only look at a few integers per
field and never at the bytes again.

It is a transcription of fields.py (the specification) restricted to the *success* path: a
sentence becomes a row here only when every check of fields.py passes, with the same integer
arithmetic and the same float divisions by exact powers of ten (numba compiles without
fastmath, so the floats agree bit for bit).  Every other sentence gets the status FALLBACK and
goes to the scalar parser, except the framing rejects that need no parse (too long, missing
checksum) and skipped addresses, which the loop classifies itself.

Helpers take and return scalars only (no arrays: no reference counting per call).  Compiled
with ``cache=True``: the first process on a machine pays the compile (seconds, docs/nmea.md),
later ones load the machine code from the cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ingest.nmea.sentences import (
    GNS_QUALITY,
    KMH_PER_KNOT,
    MAX_DIGITS,
    MAX_FIELD_CHARS,
    MAX_SENTENCE_CHARS,
    MODE_CHARS,
    POW10_F,
    POW10_I,
    TALKERS,
)

#: Per-sentence status written by :func:`scan`.
ROW, SKIP, FALLBACK, TOO_LONG, MISSING_CHECKSUM = 0, 1, 2, 3, 4

#: Byte classes of the scan loop.
#: (_SEP: a comma or the ``*`` that ends the body; both close a field)
_DIGIT, _OTHER, _SEP, _DOT, _MINUS, _END, _BAD = 0, 1, 2, 3, 4, 5, 6
_CLASS = np.full(256, _BAD, dtype=np.uint8)
_CLASS[32:127] = _OTHER
_CLASS[48:58] = _DIGIT
_CLASS[ord(",")] = _SEP
_CLASS[ord(".")] = _DOT
_CLASS[ord("-")] = _MINUS
_CLASS[ord("*")] = _SEP
for _c in b"\r\n$":
    _CLASS[_c] = _END

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"abcdef"):
    _HEX[_c] = 10 + _i
_ADDR_OK = np.zeros(256, dtype=np.bool_)
_ADDR_OK[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")] = True
#: mode characters other than N (N means "no fix": a reject the scalar parser words)
_MODE_FIX = np.zeros(256, dtype=np.bool_)
_MODE_FIX[[c for c in MODE_CHARS if c != ord("N")]] = True
_MODE_OK = np.zeros(256, dtype=np.bool_)
_MODE_OK[list(MODE_CHARS)] = True
#: GNS mode character -> quality (0 for characters without one, e.g. 'N')
_GNS_Q = np.zeros(256, dtype=np.int8)
for _c, _q in GNS_QUALITY.items():
    _GNS_Q[_c] = _q
#: talker index by its two characters (first * 256 + second), -1 when unsupported
_TALKER_OF = np.full(65536, -1, dtype=np.int8)
for _i, _t in enumerate(TALKERS):
    _TALKER_OF[ord(_t[0]) * 256 + ord(_t[1])] = _i
_DIM = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_POW10_F = POW10_F.copy()
_POW10_I = POW10_I.copy()
_KMH = KMH_PER_KNOT
_MAXF = MAX_FIELD_CHARS
_MAXD = MAX_DIGITS
_MAXS = MAX_SENTENCE_CHARS
#: fields remembered per sentence: the largest supported count is 14; more means "not ours"
_MAXFIELDS = 16


@njit(cache=True, nogil=True)
def _tod(m: int, ip: int, k: int, nint: int) -> int:
    """fields.parse_time of an unsigned decimal (``ip`` = its integer part, which the scan
    kept: no division by a variable power of ten); -1 where it would raise."""
    if nint != 6 or k > 6:
        return -1
    frac = m - ip * _POW10_I[k]
    hh, mm, ss = ip // 10000, ip // 100 % 100, ip % 100
    if hh > 23 or mm > 59 or ss > 60 or (ss == 60 and (hh != 23 or mm != 59)):
        return -1
    if ss == 60:
        return 86_399_999_999
    return int(((hh * 60 + mm) * 60 + ss) * 1_000_000 + frac * _POW10_I[6 - k])


@njit(cache=True, nogil=True)
def _angle(m: int, ip: int, k: int, nint: int) -> float:
    """fields.parse_angle of an unsigned decimal (hemisphere aside); -1.0 where it would raise."""
    if nint < 3:
        return -1.0
    deg = ip // 100
    minutes = (m - deg * 100 * _POW10_I[k]) / _POW10_F[k]
    if minutes >= 60.0:
        return -1.0
    return float(deg + minutes / 60.0)


@njit(cache=True, nogil=True)
def _date(m: int, k: int, nint: int) -> int:
    """fields.parse_date of an unsigned decimal, as sentences.days_from_civil; -1 if it raises."""
    if nint != 6 or k != 0:
        return -1
    dd, mo, yy = m // 10000, m // 100 % 100, m % 100
    year = 1900 + yy if yy >= 80 else 2000 + yy
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if mo < 1 or mo > 12 or dd < 1 or dd > _DIM[mo] + (1 if mo == 2 and leap else 0):
        return -1
    y = year - (1 if mo <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = (mo + 9) % 12
    doy = (153 * mp + 2) // 5 + dd - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return int(era * 146097 + doe - 719468)


#: what _opt returns for a field fields._opt_float refuses (no NMEA number reaches it)
_BAD_VALUE = -1e300


@njit(cache=True, nogil=True)
def _usable(ok: bool, neg: bool, nd: int, length: int) -> bool:
    """fields.parse_decimal would return a number (the shape was checked by the scan)."""
    return ok and 1 <= nd <= _MAXD and length <= _MAXF


@njit(cache=True, nogil=True)
def _decimals(nd: int, dot: int) -> int:
    return nd - dot if dot >= 0 else 0


@njit(cache=True, nogil=True)
def _intdigits(nd: int, dot: int) -> int:
    return dot if dot >= 0 else nd


@njit(cache=True, nogil=True)
def _coord(ok: bool, neg: bool, nd: int, dot: int, m: int, ip: int, length: int) -> float:
    """fields.parse_angle's number (unsigned, [d]ddmm.m); -1.0 where it would raise."""
    if not _usable(ok, neg, nd, length) or neg:
        return -1.0
    return _angle(m, ip, _decimals(nd, dot), _intdigits(nd, dot))


@njit(cache=True, nogil=True)
def _hemi(v: float, length: int, c: int, pos: int, negc: int) -> float:
    """Signed degrees from the hemisphere field (one character); NaN where it would raise."""
    if v < 0.0 or length != 1:
        return np.nan
    if c == pos:
        return v
    if c == negc:
        return -v
    return np.nan


@njit(cache=True, nogil=True)
def _opt(ok: bool, neg: bool, nd: int, dot: int, m: int, length: int, signed: bool) -> float:
    """fields._opt_float: NaN for an empty field, _BAD_VALUE where it would raise."""
    if length == 0:
        return np.nan
    if not _usable(ok, neg, nd, length) or (neg and not signed):
        return _BAD_VALUE
    v = m / _POW10_F[_decimals(nd, dot)]
    return float(-v if neg else v)


@njit(cache=True, nogil=True)
def scan(buf: Any, offsets: Any, n_sent: int, require_checksum: bool) -> tuple[Any, ...]:
    """One pass over ``buf`` (payloads joined and terminated by ``\\n``; ``offsets`` = each
    payload's start) with ``n_sent`` = its count of ``$``.

    Returns per sentence ``starts, ends, payload, status, talker, kind, address length`` and
    the row columns ``tod_us, date_days, lat, lon, speed_kmh, course, quality, sats, hdop,
    alt_m`` (meaningful where status is ROW; NaN/-1 elsewhere, as fields.Row has them).
    """
    n = buf.shape[0]
    starts = np.empty(n_sent, dtype=np.int64)
    ends = np.empty(n_sent, dtype=np.int64)
    payload = np.empty(n_sent, dtype=np.int64)
    status = np.empty(n_sent, dtype=np.int8)
    talker = np.full(n_sent, -1, dtype=np.int8)
    kind = np.full(n_sent, -1, dtype=np.int8)
    alen_out = np.zeros(n_sent, dtype=np.int64)
    o_tod = np.full(n_sent, -1, dtype=np.int64)
    o_date = np.full(n_sent, -1, dtype=np.int64)
    o_lat = np.full(n_sent, np.nan)
    o_lon = np.full(n_sent, np.nan)
    o_spd = np.full(n_sent, np.nan)
    o_crs = np.full(n_sent, np.nan)
    o_q = np.full(n_sent, -1, dtype=np.int8)
    o_sat = np.full(n_sent, -1, dtype=np.int8)
    o_hdop = np.full(n_sent, np.nan)
    o_alt = np.full(n_sent, np.nan)
    # per field of the current sentence: start, end, mantissa, digits, digits before the dot
    # (-1: no dot), negative, and "is -?d*(.d*)?" (the shape of fields.parse_decimal)
    f_a = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_b = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_m = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_ip = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_nd = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_dot = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_neg = np.zeros(_MAXFIELDS, dtype=np.bool_)
    f_ok = np.zeros(_MAXFIELDS, dtype=np.bool_)
    npay = offsets.shape[0]
    p = 0
    k = 0
    i = 0
    while i < n:
        if buf[i] != 36:
            i += 1
            continue
        s = i
        x = 0
        stars = 0
        bad = 0
        nf = 0  # fields closed so far
        fa = s + 1
        m = 0
        ip = 0
        nd = 0
        dot = -1
        neg = False
        ok = True
        j = s + 1
        while j < n:
            c = buf[j]
            t = _CLASS[c]
            if t == _DIGIT:
                m = m * 10 + (c - 48)
                nd += 1
            elif t == _OTHER:
                ok = False
            elif t == _SEP:
                if c == 42:
                    stars += 1
                if nf < _MAXFIELDS:
                    f_a[nf] = fa
                    f_b[nf] = j
                    f_m[nf] = m
                    f_ip[nf] = m if dot < 0 else ip
                    f_nd[nf] = nd
                    f_dot[nf] = dot
                    f_neg[nf] = neg
                    f_ok[nf] = ok
                nf += 1
                fa = j + 1
                m = 0
                nd = 0
                dot = -1
                neg = False
                ok = True
            elif t == _DOT:
                if dot >= 0:
                    ok = False
                dot = nd
                ip = m
            elif t == _MINUS:
                if j == fa:
                    neg = True
                else:
                    ok = False
            elif t == _END:
                break
            else:
                bad += 1
                ok = False
            x ^= c
            j += 1
        e = j
        i = e
        while p + 1 < npay and offsets[p + 1] <= s:
            p += 1
        starts[k] = s
        ends[k] = e
        payload[k] = p
        st = FALLBACK
        ln = e - s
        be = e - 3
        if ln > _MAXS:
            st = TOO_LONG
        elif stars == 0:
            if require_checksum:
                st = MISSING_CHECKSUM
        elif ln >= 7 and stars == 1 and bad == 0 and buf[be] == 42:
            h1, h2 = _HEX[buf[e - 2]], _HEX[buf[e - 1]]
            # x covers the body, the '*' and both hex characters
            if h1 < 16 and h2 < 16 and (x ^ 42 ^ buf[e - 2] ^ buf[e - 1]) == h1 * 16 + h2:
                # the '*' closed the last body field: nf = the body's field count
                alen = f_b[0] - s - 1
                b1 = buf[s + 1]
                if 1 <= alen <= 15:
                    sup = False
                    if alen == 5 and b1 != 80:
                        tk = _TALKER_OF[np.int64(b1) * 256 + buf[s + 2]]
                        c3, c4, c5 = buf[s + 3], buf[s + 4], buf[s + 5]
                        kd = -1
                        if c3 == 82 and c4 == 77 and c5 == 67:
                            kd = 0
                        elif c3 == 71 and c4 == 71 and c5 == 65:
                            kd = 1
                        elif c3 == 71 and c4 == 78 and c5 == 83:
                            kd = 2
                        elif c3 == 86 and c4 == 84 and c5 == 71:
                            kd = 3
                        if tk >= 0 and kd >= 0:
                            sup = True
                            talker[k] = tk
                            kind[k] = kd
                            if _row(
                                buf, kd, nf, f_a, f_b, f_m, f_ip, f_nd, f_dot, f_neg, f_ok, k,
                                o_tod, o_date, o_lat, o_lon, o_spd, o_crs, o_q, o_sat,
                                o_hdop, o_alt,
                            ):  # fmt: skip
                                st = ROW
                    if not sup and (b1 == 80 or alen == 5) and (alen == 5 or alen >= 2):
                        valid = True
                        for q in range(s + 1, s + 1 + alen):
                            if not _ADDR_OK[buf[q]]:
                                valid = False
                        if valid:
                            st = SKIP
                            alen_out[k] = alen
        status[k] = st
        k += 1
    return (
        starts[:k], ends[:k], payload[:k], status[:k], talker[:k], kind[:k], alen_out[:k],
        o_tod[:k], o_date[:k], o_lat[:k], o_lon[:k], o_spd[:k], o_crs[:k], o_q[:k],
        o_sat[:k], o_hdop[:k], o_alt[:k],
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _row(
    buf: Any, kd: int, nf: int, f_a: Any, f_b: Any, f_m: Any, f_ip: Any, f_nd: Any, f_dot: Any,
    f_neg: Any, f_ok: Any, r: int, o_tod: Any, o_date: Any, o_lat: Any, o_lon: Any,
    o_spd: Any, o_crs: Any, o_q: Any, o_sat: Any, o_hdop: Any, o_alt: Any,
) -> bool:  # fmt: skip
    """Row ``r`` from the fields of one supported sentence; False: the scalar parser decides.

    A numeric field is usable when it has fields.parse_decimal's shape, 1-15 digits and at
    most MAX_FIELD_CHARS characters; its decimals are ``digits - digits before the dot``.
    Inlined into scan (array arguments to a real call would be reference-counted per call).
    """
    if kd == 0:
        if nf < 12 or nf > 14:
            return False
    elif kd == 1:
        if nf != 15:
            return False
    elif kd == 2:
        if nf < 13 or nf > 14:
            return False
    elif nf < 9 or nf > 10:
        return False
    tod, date, lat, lon = -1, -1, np.nan, np.nan
    if kd != 3:  # time, latitude, longitude: unsigned and required
        j = 1
        if not _usable(f_ok[j], f_neg[j], f_nd[j], f_b[j] - f_a[j]) or f_neg[j]:
            return False
        tod = _tod(f_m[j], f_ip[j], _decimals(f_nd[j], f_dot[j]), _intdigits(f_nd[j], f_dot[j]))
        if tod < 0:
            return False
        j = 3 if kd == 0 else 2
        lat = _hemi(_coord(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_ip[j], f_b[j] - f_a[j]),
                    f_b[j + 1] - f_a[j + 1], buf[f_a[j + 1]], 78, 83)  # fmt: skip
        j += 2
        lon = _hemi(_coord(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_ip[j], f_b[j] - f_a[j]),
                    f_b[j + 1] - f_a[j + 1], buf[f_a[j + 1]], 69, 87)  # fmt: skip
        if np.isnan(lat) or np.isnan(lon):
            return False
    if kd == 0 or kd == 3:
        if kd == 0:
            if f_b[2] - f_a[2] != 1 or buf[f_a[2]] != 65:  # status A (V: a no-fix reject)
                return False
            mj = 12 if nf >= 13 else -1
            j = 9
            if not f_ok[j] or f_neg[j] or f_nd[j] != 6 or f_dot[j] >= 0 or f_b[j] - f_a[j] != 6:
                return False
            date = _date(f_m[j], 0, 6)
            if date < 0:
                return False
            i_spd, i_crs = 7, 8
        else:
            mj = 9 if nf == 10 else -1
            i_spd, i_crs = 5, 1
        if (
            mj > 0
            and f_b[mj] != f_a[mj]
            and (f_b[mj] - f_a[mj] != 1 or not _MODE_FIX[buf[f_a[mj]]])
        ):
            return False
        j = i_spd
        spd = _opt(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_b[j] - f_a[j], False)
        j = i_crs
        crs = _opt(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_b[j] - f_a[j], False)
        if spd == _BAD_VALUE or crs == _BAD_VALUE:
            return False
        o_spd[r] = spd * _KMH
        o_crs[r] = crs
        if kd == 0:
            o_tod[r], o_date[r], o_lat[r], o_lon[r] = tod, date, lat, lon
        return True
    # GGA / GNS
    qa, qb = f_a[6], f_b[6]
    q = -1
    if kd == 1:
        if qb - qa != 1 or buf[qa] < 49 or buf[qa] > 56:  # '0' is a no-fix reject
            return False
        q = buf[qa] - 48
    else:
        if qb - qa < 1 or qb - qa > 8:
            return False
        for jj in range(qa, qb):
            c = buf[jj]
            if not _MODE_OK[c]:
                return False
            if q < 0 and c != 78:
                q = _GNS_Q[c]
        if q < 0:
            return False
    sl = f_b[7] - f_a[7]
    sats = -1
    if sl > 0:
        if sl > 2 or not f_ok[7] or f_neg[7] or f_dot[7] >= 0 or f_nd[7] != sl:
            return False
        sats = f_m[7]
    j = 8
    hdop = _opt(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_b[j] - f_a[j], False)
    j = 9
    alt = _opt(f_ok[j], f_neg[j], f_nd[j], f_dot[j], f_m[j], f_b[j] - f_a[j], True)
    if hdop == _BAD_VALUE or alt == _BAD_VALUE:
        return False
    o_tod[r], o_lat[r], o_lon[r] = tod, lat, lon
    o_q[r], o_sat[r], o_hdop[r], o_alt[r] = q, sats, hdop, alt
    return True

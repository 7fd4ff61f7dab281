"""The compiled single-pass parser: one numba loop over the concatenated bytes of a batch.

A numpy parser needed ~300 array passes per batch, each streaming its temporaries through
memory (~1.4 µs a sentence; docs/bench/decode.md).  This loop frames a sentence in one pass over
its bytes (checksum XOR, ``*`` and bad-byte counts, field bounds), then, for the supported
kinds only, reads fields 1-9 as decimals (mantissa, integer part, decimals, sign) and applies
the per-kind checks to those integers (~0.1-0.15 µs a sentence).

It is a transcription of fields.py (the specification) restricted to the *success* path: a
sentence becomes a row here only when every check of fields.py passes, with the same integer
arithmetic and the same float divisions by exact powers of ten (numba compiles without
fastmath, so the floats agree bit for bit).  Every other sentence gets the status FALLBACK and
goes to the scalar parser, except the framing rejects that need no parse (too long, missing
checksum) and skipped addresses, which the loop classifies itself.

Helpers take and return scalars only: a numba function taking arrays increfs/decrefs them on
every call and path (measured: +200 ns a sentence), so the row logic is written inline in
:func:`scan`.  Compiled with ``cache=True``: the first process after an install or an edit pays
the compile (~3.5 s), later ones load the machine code from the cache (``NUMBA_CACHE_DIR``, else
``__pycache__`` next to this file, else a per-user directory; docs/nmea.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ingest.nmea.sentences import (
    GNS_QUALITY,
    KIND_GGA,
    KIND_GLL,
    KIND_GNS,
    KIND_RMC,
    KIND_VTG,
    KIND_ZDA,
    KMH_PER_KNOT,
    MAX_DIGITS,
    MAX_FIELD_CHARS,
    MAX_SENTENCE_CHARS,
    MODE_CHARS,
    POW10_F,
    POW10_I,
)

#: Per-sentence status written by :func:`scan`.
ROW, SKIP, FALLBACK, TOO_LONG, MISSING_CHECKSUM = 0, 1, 2, 3, 4
#: framing and checksum right: the address decides (never a final status)
_CLEAN = 5

#: Byte classes of the scan loop.
#: (_SEP: a comma or the ``*`` that ends the body; both close a field)
_DIGIT, _OTHER, _DOT, _MINUS, _SEP, _END, _BAD = 0, 1, 2, 3, 4, 5, 6
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
#: talker code (sentences.talker_code: first * 256 + second) by its two characters, -1 when
#: not a talker: a character outside [A-Z0-9], or a first 'P' (proprietary)
_TALKER_OF = np.full(65536, -1, dtype=np.int16)
for _a in b"ABCDEFGHIJKLMNOQRSTUVWXYZ0123456789":
    for _b in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        _TALKER_OF[_a * 256 + _b] = _a * 256 + _b
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
def _frame_status(
    ln: int, stars: int, bad: int, star: int, h1c: int, h2c: int, x: int, require_checksum: bool
) -> int:
    """fields.frame_check's verdict from the loop's counts: TOO_LONG, MISSING_CHECKSUM,
    _CLEAN (one '*' before two hex digits that match, printable bytes only) or FALLBACK.

    ``x`` is the XOR of everything after the ``$``: the body, the ``*`` and the hex digits."""
    if ln > _MAXS:
        return TOO_LONG
    if stars == 0:
        return MISSING_CHECKSUM if require_checksum else FALLBACK
    h1, h2 = _HEX[h1c], _HEX[h2c]
    if ln < 7 or stars != 1 or bad != 0 or star != 42 or h1 > 15 or h2 > 15:
        return FALLBACK
    return _CLEAN if (x ^ 42 ^ h1c ^ h2c) == h1 * 16 + h2 else FALLBACK


@njit(cache=True, nogil=True)
def _kind(alen: int, c3: int, c4: int, c5: int, nf: int) -> int:
    """Sentence kind + 1 by the address's last three characters, negated when the field count
    is not one fields.py accepts; 0 when not a supported kind."""
    if alen != 5:
        return 0
    if c3 == 82 and c4 == 77 and c5 == 67:
        kd, lo, hi = KIND_RMC, 12, 14
    elif c3 == 71 and c4 == 71 and c5 == 65:
        kd, lo, hi = KIND_GGA, 15, 15
    elif c3 == 71 and c4 == 78 and c5 == 83:
        kd, lo, hi = KIND_GNS, 13, 14
    elif c3 == 86 and c4 == 84 and c5 == 71:
        kd, lo, hi = KIND_VTG, 9, 10
    elif c3 == 71 and c4 == 76 and c5 == 76:
        kd, lo, hi = KIND_GLL, 7, 8
    elif c3 == 90 and c4 == 68 and c5 == 65:
        kd, lo, hi = KIND_ZDA, 7, 7
    else:
        return 0
    return kd + 1 if lo <= nf <= hi else -(kd + 1)


@njit(cache=True, nogil=True)
def _tod(m: int, ip: int, k: int, nint: int) -> int:
    """fields.parse_time of an unsigned decimal (``ip`` = its integer part, which the loop
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
def _coord(ok: bool, neg: bool, m: int, ip: int, k: int, nint: int) -> float:
    """fields.parse_angle's number (unsigned, [d]ddmm.m) before the hemisphere; -1.0 where it
    would raise."""
    if not ok or neg or nint < 3:
        return -1.0
    deg = ip // 100
    minutes = (m - deg * 100 * _POW10_I[k]) / _POW10_F[k]
    if minutes >= 60.0:
        return -1.0
    return float(deg + minutes / 60.0)


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
def _date(m: int) -> int:
    """fields.parse_date of six digits ddmmyy, as sentences.days_from_civil; -1 if it raises."""
    dd, mo, yy = m // 10000, m // 100 % 100, m % 100
    return _civil(1900 + yy if yy >= 80 else 2000 + yy, mo, dd)


@njit(cache=True, nogil=True)
def _civil(year: int, mo: int, dd: int) -> int:
    """Days since 1970 of a calendar date (sentences.days_from_civil); -1 if not a date."""
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


#: what _opt returns for a field fields._opt_float refuses (no 15-digit NMEA number is this)
_BAD_VALUE = -1e300


@njit(cache=True, nogil=True)
def _opt(length: int, ok: bool, neg: bool, m: int, k: int, signed: bool) -> float:
    """fields._opt_float: NaN for an empty field, _BAD_VALUE where it would raise."""
    if length == 0:
        return np.nan
    if not ok or (neg and not signed):
        return _BAD_VALUE
    v = m / _POW10_F[k]
    return float(-v if neg else v)


@njit(cache=True, nogil=True)
def _mode_ok(length: int, c: int) -> bool:
    """An RMC/VTG mode field that fields.py accepts as a fix: empty, or one of MODE_CHARS
    other than N (N is a no-fix reject)."""
    return length == 0 or (length == 1 and _MODE_FIX[c])


@njit(cache=True, nogil=True)
def scan(buf: Any, offsets: Any, require_checksum: bool) -> tuple[Any, ...]:
    """One pass over ``buf`` (payloads joined and terminated by ``\\n``; ``offsets`` = each
    payload's start).

    Returns per sentence ``starts, ends, payload, status, talker, kind, skipped address`` and
    the row columns ``tod_us, date_days, lat, lon, speed_kmh, course, quality, sats, hdop,
    alt_m`` (defined where status is ROW only).
    """
    n = buf.shape[0]
    n_sent = 0  # every '$' starts a sentence
    for i in range(n):
        n_sent += buf[i] == 36
    starts = np.empty(n_sent, dtype=np.int64)
    ends = np.empty(n_sent, dtype=np.int64)
    payload = np.empty(n_sent, dtype=np.int64)
    status = np.empty(n_sent, dtype=np.int8)
    talker = np.full(n_sent, -1, dtype=np.int16)
    kind = np.full(n_sent, -1, dtype=np.int8)
    # a skipped address of at most 8 characters packed little-endian (0: longer ones)
    addr = np.zeros(n_sent, dtype=np.uint64)
    # row columns: written in full for every ROW, left undefined for the other statuses
    o_tod = np.empty(n_sent, dtype=np.int64)
    o_date = np.empty(n_sent, dtype=np.int64)
    o_lat = np.empty(n_sent)
    o_lon = np.empty(n_sent)
    o_spd = np.empty(n_sent)
    o_crs = np.empty(n_sent)
    o_q = np.empty(n_sent, dtype=np.int8)
    o_sat = np.empty(n_sent, dtype=np.int8)
    o_hdop = np.empty(n_sent)
    o_alt = np.empty(n_sent)
    # per field of the current sentence: bounds [f_a, f_b), then the decimal reading of fields
    # 1-9: mantissa, integer part, decimals, integer digits, sign, and "fields.parse_decimal
    # returns a number" (-?d*(.d*)?, 1-15 digits, at most MAX_FIELD_CHARS characters)
    f_a = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_b = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_m = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_ip = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_k = np.zeros(_MAXFIELDS, dtype=np.int64)
    f_ni = np.zeros(_MAXFIELDS, dtype=np.int64)
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
        j = s + 1
        while j < n:
            c = buf[j]
            t = _CLASS[c]
            if t >= _SEP:
                if t == _SEP:
                    if c == 42:
                        stars += 1
                    if nf < _MAXFIELDS:
                        f_a[nf] = fa
                        f_b[nf] = j
                    nf += 1
                    fa = j + 1
                elif t == _END:
                    break
                elif t == _BAD:
                    bad += 1
            x ^= c
            j += 1
        e = j
        i = e
        while p + 1 < npay and offsets[p + 1] <= s:
            p += 1
        starts[k] = s
        ends[k] = e
        payload[k] = p
        # a proprietary address ('P' + 1-14 of [A-Z0-9]) has no length limit: it is skipped
        # once its checksum and bytes are right (fields.parse_sentence)
        alen = (f_b[0] if nf > 0 else e) - s - 1
        prop = buf[s + 1] == 80 and 2 <= alen <= 15 if e > s + 1 else False
        if prop:
            for q in range(s + 2, s + 1 + alen):
                prop = prop and _ADDR_OK[buf[q]]
        st = _frame_status(
            min(e - s, _MAXS) if prop else e - s,
            stars,
            bad,
            buf[max(e - 3, 0)],
            buf[e - 2],
            buf[e - 1],
            x,
            require_checksum,
        )
        if prop and st == _CLEAN:
            st = SKIP
            if alen <= 8:
                key = np.uint64(0)
                for q in range(alen):
                    key |= np.uint64(buf[s + 1 + q]) << np.uint64(8 * q)
                addr[k] = key
        kd = -1
        if st == _CLEAN:
            # the '*' closed the last body field: nf = the body's field count
            kd = _kind(alen, buf[s + 3], buf[s + 4], buf[s + 5], nf)
            tk = _TALKER_OF[np.int64(buf[s + 1]) * 256 + buf[s + 2]] if alen == 5 else -1
            st = FALLBACK
            if tk >= 0 and kd > 0:
                kd -= 1
                talker[k], kind[k] = tk, kd
            else:
                if tk < 0 or kd == 0:
                    # not a supported address: skipped when it is any 5 characters of
                    # [A-Z0-9] (fields.parse_sentence; proprietary ones were skipped above)
                    valid = alen == 5
                    for q in range(s + 1, s + 1 + alen):
                        valid = valid and _ADDR_OK[buf[q]]
                    if valid:
                        st = SKIP
                        if alen <= 8:
                            key = np.uint64(0)
                            for q in range(alen):
                                key |= np.uint64(buf[s + 1 + q]) << np.uint64(8 * q)
                            addr[k] = key
                # else: a supported kind with a field count fields.py refuses (FALLBACK)
                kd = -1
        if kd >= 0:
            # numeric reading of fields 1-9 (all that any supported kind uses)
            for fj in range(1, min(nf, 10)):
                a, b = f_a[fj], f_b[fj]
                m = ip = nd = 0
                dot = -1
                neg = False
                ok = b - a <= _MAXF
                for jj in range(a, b):
                    c = buf[jj]
                    t = _CLASS[c]
                    if t == _DIGIT:
                        m = m * 10 + (c - 48)
                        nd += 1
                    elif t == _DOT and dot < 0:
                        dot = nd
                        ip = m
                    elif t == _MINUS and jj == a:
                        neg = True
                    else:
                        ok = False
                f_m[fj] = m
                f_ip[fj] = m if dot < 0 else ip
                f_k[fj] = nd - dot if dot >= 0 else 0
                f_ni[fj] = dot if dot >= 0 else nd
                f_neg[fj] = neg
                f_ok[fj] = ok and 1 <= nd <= _MAXD
            # the row: fields.py's success path, ``break`` = the scalar parser decides.  Inline
            # on purpose: a helper taking these arrays costs numba's reference counting per call.
            while True:
                tod, date, lat, lon, spd, crs = -1, -1, np.nan, np.nan, np.nan, np.nan
                q, sats, hdop, alt = -1, -1, np.nan, np.nan
                if kd != KIND_VTG:  # time (unsigned, required)
                    j = 5 if kd == KIND_GLL else 1
                    if not f_ok[j] or f_neg[j]:
                        break
                    tod = _tod(f_m[j], f_ip[j], f_k[j], f_ni[j])
                    if tod < 0:
                        break
                if kd != KIND_VTG and kd != KIND_ZDA:  # latitude, longitude: required
                    j = 3 if kd == KIND_RMC else (1 if kd == KIND_GLL else 2)
                    lat = _coord(f_ok[j], f_neg[j], f_m[j], f_ip[j], f_k[j], f_ni[j])
                    lat = _hemi(lat, f_b[j + 1] - f_a[j + 1], buf[f_a[j + 1]], 78, 83)
                    j += 2
                    lon = _coord(f_ok[j], f_neg[j], f_m[j], f_ip[j], f_k[j], f_ni[j])
                    lon = _hemi(lon, f_b[j + 1] - f_a[j + 1], buf[f_a[j + 1]], 69, 87)
                    if np.isnan(lat) or np.isnan(lon):
                        break
                if kd == KIND_GLL:
                    # status A (V is a no-fix reject), then the 2.3+ mode when present
                    if f_b[6] - f_a[6] != 1 or buf[f_a[6]] != 65:
                        break
                    if nf == 8 and not _mode_ok(f_b[7] - f_a[7], buf[f_a[7]]):
                        break
                elif kd == KIND_ZDA:
                    # day and month of 1-2 digits, a four-digit year, a calendar date
                    dl, ml, yl = f_b[2] - f_a[2], f_b[3] - f_a[3], f_b[4] - f_a[4]
                    if not (1 <= dl <= 2 and 1 <= ml <= 2 and yl == 4):
                        break
                    if not (f_ok[2] and f_ok[3] and f_ok[4]):
                        break
                    if f_neg[2] or f_neg[3] or f_neg[4]:
                        break
                    if f_ni[2] != dl or f_ni[3] != ml or f_ni[4] != yl:
                        break
                    date = _civil(f_m[4], f_m[3], f_m[2])
                    if date < 0:
                        break
                elif kd in (KIND_RMC, KIND_VTG):
                    if kd == KIND_RMC:
                        # status A (V is a no-fix reject); date ddmmyy
                        if f_b[2] - f_a[2] != 1 or buf[f_a[2]] != 65:
                            break
                        if not f_ok[9] or f_neg[9] or f_b[9] - f_a[9] != 6 or f_ni[9] != 6:
                            break
                        date = _date(f_m[9])
                        if date < 0:
                            break
                        mj, i_spd, i_crs = (12 if nf >= 13 else -1), 7, 8
                    else:
                        mj, i_spd, i_crs = (9 if nf == 10 else -1), 5, 1
                    if mj > 0 and not _mode_ok(f_b[mj] - f_a[mj], buf[f_a[mj]]):
                        break
                    j = i_spd
                    spd = _opt(f_b[j] - f_a[j], f_ok[j], f_neg[j], f_m[j], f_k[j], False)
                    j = i_crs
                    crs = _opt(f_b[j] - f_a[j], f_ok[j], f_neg[j], f_m[j], f_k[j], False)
                    if spd == _BAD_VALUE or crs == _BAD_VALUE:
                        break
                    spd = spd * _KMH
                else:  # GGA / GNS: quality from field 6, then satellites, HDOP, altitude
                    qa, qb = f_a[6], f_b[6]
                    if kd == KIND_GGA:
                        q = buf[qa] - 48 if qb - qa == 1 and 49 <= buf[qa] <= 56 else -1
                    elif 1 <= qb - qa <= 8:
                        for jj in range(qa, qb):
                            c = buf[jj]
                            if not _MODE_OK[c]:
                                q = -1
                                break
                            if q < 0 and c != 78:
                                q = _GNS_Q[c]
                    sl = f_b[7] - f_a[7]
                    if sl > 0:
                        sats = f_m[7] if f_ok[7] and not f_neg[7] and f_ni[7] == sl <= 2 else -2
                    hdop = _opt(f_b[8] - f_a[8], f_ok[8], f_neg[8], f_m[8], f_k[8], False)
                    alt = _opt(f_b[9] - f_a[9], f_ok[9], f_neg[9], f_m[9], f_k[9], True)
                    if q < 1 or sats == -2 or hdop == _BAD_VALUE or alt == _BAD_VALUE:
                        break
                o_tod[k], o_date[k], o_lat[k], o_lon[k] = tod, date, lat, lon
                o_spd[k], o_crs[k], o_q[k], o_sat[k], o_hdop[k], o_alt[k] = (
                    spd, crs, q, sats, hdop, alt
                )  # fmt: skip
                st = ROW
                break
        status[k] = st
        k += 1
    return (
        starts[:k], ends[:k], payload[:k], status[:k], talker[:k], kind[:k], addr[:k],
        o_tod[:k], o_date[:k], o_lat[:k], o_lon[:k], o_spd[:k], o_crs[:k], o_q[:k],
        o_sat[:k], o_hdop[:k], o_alt[:k],
    )  # fmt: skip

"""The numpy parser: a whole batch of payloads at once, over the concatenated bytes.

Framing, checksums (XOR prefix scan), field offsets (comma positions), numbers (digit windows
weighted by powers of ten) and dispatch by sentence type are array operations.  A row is handled
here only when every check the scalar parser (fields.py) makes is proven to pass, with the same
integer/float operations; every other row (rejects, empty positions, odd layouts, sentences
without checksum) goes to the scalar parser.  So both produce identical rows, and the numpy path
stays simple: it never decides a reject.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ingest.nmea.fields import Refuse, Row, Skip, parse_sentence
from ingest.nmea.options import DecodeOptions
from ingest.nmea.reference import join_payloads
from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import (
    FIELD_COUNTS,
    GNS_QUALITY,
    KIND_GGA,
    KIND_GNS,
    KIND_RMC,
    KIND_VTG,
    KINDS,
    KMH_PER_KNOT,
    MAX_DIGITS,
    MAX_FIELD_CHARS,
    MAX_SENTENCE_CHARS,
    MODE_CHARS,
    POW10_F,
    POW10_I,
    ROW_DTYPES,
    TALKERS,
    ParsedRows,
    ParseOutput,
    days_from_civil,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_W = MAX_FIELD_CHARS
_AR = np.arange(_W)
_PAD = 32
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"abcdef"):
    _HEX[_c] = 10 + _i
_ADDR_OK = np.zeros(256, dtype=bool)
_ADDR_OK[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")] = True
_MODE_OK = np.zeros(256, dtype=bool)
_MODE_OK[list(MODE_CHARS)] = True
_GNS_Q = np.zeros(256, dtype=np.int8)
for _c, _q in GNS_QUALITY.items():
    _GNS_Q[_c] = _q
_TALKER_CODES = np.array([t.encode()[0] * 256 + t.encode()[1] for t in TALKERS], dtype=np.int64)
_DIM = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class _Ctx:
    """The joined buffer and its per-byte prefix counts, shared by the field readers."""

    def __init__(self, data: bytes) -> None:
        self.buf = np.frombuffer(data, dtype=np.uint8)
        self.bufp = np.concatenate([self.buf, np.zeros(_PAD, dtype=np.uint8)])

    def window(self, fs: I64, width: int = _W) -> npt.NDArray[np.uint8]:
        return self.bufp[fs[:, None] + np.arange(width)]


def _decimal(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, B, I64, I64, B, I64]:
    """(ok, empty, mantissa, decimals, negative, integer digits) per field, as fields.py."""
    ln = fe - fs
    win = cx.window(fs)
    inside = _AR < ln[:, None]
    dig = (win - 48).astype(np.int64)
    isdig = (dig >= 0) & (dig < 10) & inside
    isdot = (win == 46) & inside
    isminus = (win == 45) & inside & (_AR == 0)
    other = inside & ~(isdig | isdot | isminus)
    ndig = isdig.sum(axis=1)
    ndot = isdot.sum(axis=1)
    ok = (ln >= 1) & (ln <= MAX_FIELD_CHARS) & ~other.any(axis=1) & (ndot <= 1)
    ok &= (ndig >= 1) & (ndig <= MAX_DIGITS)
    after = np.clip(ndig[:, None] - np.cumsum(isdig, axis=1), 0, 18)
    mant = np.where(isdig, dig * POW10_I[after], 0).sum(axis=1)
    dotpos = np.where(ndot == 1, np.argmax(isdot, axis=1), _W)
    k = (isdig & (_AR > dotpos[:, None])).sum(axis=1)
    return ok, ln == 0, mant, k, isminus[:, 0], ndig - k


def _opt_unsigned(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, F64]:
    ok, empty, m, k, neg, _ = _decimal(cx, fs, fe)
    val = np.where(empty, np.nan, m / POW10_F[np.minimum(k, 18)])
    return empty | (ok & ~neg), val


def _opt_signed(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, F64]:
    ok, empty, m, k, neg, _ = _decimal(cx, fs, fe)
    v = m / POW10_F[np.minimum(k, 18)]
    val = np.where(empty, np.nan, np.where(neg, -v, v))
    return empty | ok, val


def _time(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, I64]:
    ok, _, m, k, neg, nint = _decimal(cx, fs, fe)
    ok &= ~neg & (nint == 6) & (k <= 6)
    kk = np.minimum(k, 6)
    ip = m // POW10_I[kk]
    frac = m - ip * POW10_I[kk]
    hh, mm, ss = ip // 10000, ip // 100 % 100, ip % 100
    ok &= (hh <= 23) & (mm <= 59) & (ss <= 60) & ((ss < 60) | ((hh == 23) & (mm == 59)))
    tod = ((hh * 60 + mm) * 60 + ss) * 1_000_000 + frac * POW10_I[6 - kk]
    return ok, np.where(ss == 60, 86_399_999_999, tod)


def _char(cx: _Ctx, fs: I64, fe: I64) -> I64:
    """The field's single character, or -1 when the field is not exactly one character."""
    return np.where(fe - fs == 1, cx.bufp[fs].astype(np.int64), -1)


def _angle(
    cx: _Ctx, fs: I64, fe: I64, hs: I64, he: I64, pos: bytes, negc: bytes
) -> tuple[B, F64]:
    ok, _, m, k, neg, nint = _decimal(cx, fs, fe)
    kk = np.minimum(k, 18)
    deg = m // POW10_I[kk] // 100
    minutes = (m - deg * 100 * POW10_I[kk]) / POW10_F[kk]
    v = deg + minutes / 60.0
    h = _char(cx, hs, he)
    ok &= ~neg & (nint >= 3) & (minutes < 60.0) & ((h == pos[0]) | (h == negc[0]))
    return ok, np.where(h == negc[0], -v, v)


def _date(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, I64]:
    ok, _, m, k, neg, nint = _decimal(cx, fs, fe)
    ok &= ~neg & (nint == 6) & (k == 0)
    dd, mo, yy = m // 10000, m // 100 % 100, m % 100
    year = np.where(yy >= 80, 1900 + yy, 2000 + yy)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    mo_c = np.clip(mo, 0, 12)
    ok &= (mo >= 1) & (mo <= 12) & (dd >= 1) & (dd <= _DIM[mo_c] + ((mo == 2) & leap))
    return ok, days_from_civil(year, np.maximum(mo, 1), np.maximum(dd, 1))


def _mode_clean(cx: _Ctx, fs: I64, fe: I64) -> B:
    """Optional one-character mode that is not N (N is a no-fix reject: the scalar path)."""
    c = _char(cx, fs, fe)
    good = (c >= 0) & _MODE_OK[np.maximum(c, 0)] & (c != 78)
    return np.asarray((fe == fs) | good, dtype=bool)


def _empty_rows(n: int) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    out: dict[str, np.ndarray] = {  # type: ignore[type-arg]
        name: np.empty(n, dtype=dtype) for name, dtype in ROW_DTYPES.items()
    }
    for name in ("lat", "lon", "speed_kmh", "course", "hdop", "alt_m"):
        out[name][:] = np.nan
    out["quality"][:] = -1
    out["sats"][:] = -1
    out["tod_us"][:] = -1
    out["date_days"][:] = -1
    return out


def parse_vectorised(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    data, offsets = join_payloads(payloads)
    cx = _Ctx(data)
    buf = cx.buf
    is_d = buf == 36
    starts = np.flatnonzero(is_d).astype(np.int64)
    term = np.flatnonzero(is_d | (buf == 10) | (buf == 13)).astype(np.int64)
    ends = term[np.searchsorted(term, starts, side="right")]
    payload_of = np.searchsorted(np.asarray(offsets, dtype=np.int64), starts, side="right") - 1
    n = len(starts)
    ln = ends - starts

    # Framing and checksum.
    stars = np.concatenate([[0], np.cumsum(buf == 42)])
    bad_byte = np.concatenate([[0], np.cumsum((buf < 32) | (buf > 126))])
    xacc = np.bitwise_xor.accumulate(buf) if len(buf) else buf
    body_end = ends - 3
    clean = (ln >= 7) & (ln <= MAX_SENTENCE_CHARS)
    clean &= cx.bufp[np.maximum(body_end, 0)] == 42
    clean &= stars[ends] - stars[starts] == 1
    h1, h2 = _HEX[cx.bufp[ends - 2]], _HEX[cx.bufp[ends - 1]]
    clean &= (h1 < 16) & (h2 < 16)
    xor_body = xacc[np.maximum(body_end - 1, starts)] ^ xacc[starts]
    clean &= xor_body == (h1.astype(np.int64) * 16 + h2)
    clean &= bad_byte[np.maximum(body_end, starts)] - bad_byte[starts + 1] == 0

    # Address and dispatch.
    cpos = np.flatnonzero(buf == 44).astype(np.int64)
    c0 = np.searchsorted(cpos, starts)
    ncom = np.searchsorted(cpos, body_end) - c0
    cpos_p = np.concatenate([cpos, [len(buf)]])
    fc = np.where(ncom > 0, cpos_p[np.minimum(c0, len(cpos))], body_end)
    alen = fc - (starts + 1)
    addr_bad = np.concatenate([[0], np.cumsum(~_ADDR_OK[buf])])
    addr_ok = clean & (alen >= 1) & (alen <= 15)
    addr_ok &= addr_bad[np.maximum(fc, starts + 1)] - addr_bad[starts + 1] == 0
    b1 = cx.bufp[starts + 1].astype(np.int64)
    proprietary = addr_ok & (b1 == 80) & (alen >= 2)
    five = addr_ok & ~proprietary & (alen == 5)
    tcode = b1 * 256 + cx.bufp[starts + 2]
    talker = np.full(n, -1, dtype=np.int64)
    for i, code in enumerate(_TALKER_CODES.tolist()):
        talker[tcode == code] = i
    fcode = (
        cx.bufp[starts + 3].astype(np.int64) * 65536
        + cx.bufp[starts + 4].astype(np.int64) * 256
        + cx.bufp[starts + 5]
    )
    kind = np.full(n, -1, dtype=np.int64)
    for name, kd in KINDS.items():
        c = name.encode()
        kind[fcode == c[0] * 65536 + c[1] * 256 + c[2]] = kd
    supported = five & (talker >= 0) & (kind >= 0)
    skip = proprietary | (five & ~supported)
    handled = skip.copy()

    skipped: dict[str, int] = {}
    si = np.flatnonzero(skip)
    if len(si):
        win = cx.window(starts[si] + 1, 15)
        win = np.where(np.arange(15) < alen[si][:, None], win, 0).astype(np.uint8)
        keys, cnt = np.unique(np.ascontiguousarray(win).view("S15").ravel(), return_counts=True)
        skipped = {k.decode(): int(c) for k, c in zip(keys.tolist(), cnt.tolist(), strict=True)}

    parts: list[dict[str, np.ndarray]] = []  # type: ignore[type-arg]
    nf = ncom + 1

    def fields(rows: I64, j: int) -> tuple[I64, I64]:
        cj = c0[rows] + j
        fs = cpos_p[np.minimum(cj - 1, len(cpos))] + 1
        fe = np.where(j < nf[rows] - 1, cpos_p[np.minimum(cj, len(cpos))], body_end[rows])
        return fs, fe

    for kd, counts in FIELD_COUNTS.items():
        r = np.flatnonzero(supported & (kind == kd) & np.isin(nf, counts))
        if not len(r):
            continue
        out = _empty_rows(len(r))
        ok = np.ones(len(r), dtype=bool)

        def f(j: int, r: I64 = r) -> tuple[I64, I64]:
            return fields(r, j)

        if kd == KIND_VTG:
            fs9, fe9 = f(9)
            ok &= np.where(nf[r] == 10, _mode_clean(cx, fs9, fe9), True)
            ok_c, out["course"] = _opt_unsigned(cx, *f(1))
            ok_s, sp = _opt_unsigned(cx, *f(5))
            out["speed_kmh"] = sp * KMH_PER_KNOT
            ok &= ok_c & ok_s
        else:
            o = 3 if kd == KIND_RMC else 2
            ok_t, out["tod_us"] = _time(cx, *f(1))
            ok_la, out["lat"] = _angle(cx, *f(o), *f(o + 1), b"N", b"S")
            ok_lo, out["lon"] = _angle(cx, *f(o + 2), *f(o + 3), b"E", b"W")
            ok &= ok_t & ok_la & ok_lo
            if kd == KIND_RMC:
                ok &= _char(cx, *f(2)) == 65  # 'A'
                fs12, fe12 = f(12)
                ok &= np.where(nf[r] >= 13, _mode_clean(cx, fs12, fe12), True)
                ok_s, sp = _opt_unsigned(cx, *f(7))
                out["speed_kmh"] = sp * KMH_PER_KNOT
                ok_c, out["course"] = _opt_unsigned(cx, *f(8))
                ok_d, out["date_days"] = _date(cx, *f(9))
                ok &= ok_s & ok_c & ok_d
            else:
                if kd == KIND_GGA:
                    q = _char(cx, *f(6))
                    ok &= (q >= 49) & (q <= 56)
                    out["quality"] = (q - 48).astype(np.int8)
                else:
                    fs6, fe6 = f(6)
                    mw = cx.window(fs6, 8)
                    inside = np.arange(8) < (fe6 - fs6)[:, None]
                    nonn = inside & (mw != 78)
                    ok &= ((fe6 - fs6) >= 1) & ((fe6 - fs6) <= 8)
                    ok &= ~(inside & ~_MODE_OK[mw]).any(axis=1) & nonn.any(axis=1)
                    first = mw[np.arange(len(r)), np.argmax(nonn, axis=1)]
                    out["quality"] = _GNS_Q[first]
                fs7, fe7 = f(7)
                sok, _, sm, _, sneg, _ = _decimal(cx, fs7, fe7)
                ls = fe7 - fs7
                ok &= (ls == 0) | ((ls <= 2) & sok & ~sneg & (cx.bufp[fs7] != 46) & (
                    cx.bufp[fe7 - 1] != 46))
                out["sats"] = np.where(ls == 0, -1, sm).astype(np.int8)
                ok_h, out["hdop"] = _opt_unsigned(cx, *f(8))
                ok_a, out["alt_m"] = _opt_signed(cx, *f(9))
                ok &= ok_h & ok_a
        out["seq"] = r[ok]
        out["payload"] = payload_of[r[ok]]
        out["kind"] = np.full(int(ok.sum()), kd, dtype=np.int8)
        out["talker"] = talker[r[ok]].astype(np.int8)
        for name in ROW_DTYPES:
            if name not in ("seq", "payload", "kind", "talker"):
                out[name] = np.asarray(out[name])[ok]
        parts.append(out)
        handled[r[ok]] = True

    # Everything not proven clean: the scalar parser decides.
    fallback = np.flatnonzero(~handled)
    rejects: list[tuple[int, RejectReason, str]] = []
    fb: dict[str, list[float | int]] = {name: [] for name in ROW_DTYPES}
    for seq in fallback.tolist():
        res = parse_sentence(data[int(starts[seq]) : int(ends[seq])], options.require_checksum)
        if isinstance(res, Row):
            fb["seq"].append(seq)
            fb["payload"].append(int(payload_of[seq]))
            for name in Row.__slots__:
                fb[name].append(getattr(res, name))
        elif isinstance(res, Skip):
            skipped[res.address] = skipped.get(res.address, 0) + 1
        else:
            assert isinstance(res, Refuse)
            rejects.append((seq, res.reason, res.detail))
    parts.append({name: np.array(fb[name], dtype=dt) for name, dt in ROW_DTYPES.items()})
    cols = {name: np.concatenate([p[name] for p in parts]).astype(dt) for name, dt in ROW_DTYPES.items()}
    order = np.argsort(cols["seq"], kind="stable")
    rows = ParsedRows(**{name: c[order] for name, c in cols.items()})
    return ParseOutput(
        buffer=data,
        starts=starts,
        ends=ends,
        payload_of=payload_of.astype(np.int64),
        rows=rows,
        rejects=rejects,
        skipped=skipped,
        fallback_rows=len(fallback),
    )

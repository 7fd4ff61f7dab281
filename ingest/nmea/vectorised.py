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
from typing import Any

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
    KIND_RMC,
    KIND_VTG,
    KINDS,
    KMH_PER_KNOT,
    MAX_FIELD_CHARS,
    MAX_SENTENCE_CHARS,
    MODE_CHARS,
    POW10_F,
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
_SUPPORTED: dict[int, tuple[int, int]] = {
    int.from_bytes((t + f).encode(), "little"): (ti, kd)
    for ti, t in enumerate(TALKERS)
    for f, kd in KINDS.items()
}
_SUPPORTED_CODES = np.array(sorted(_SUPPORTED), dtype=np.uint64)
#: talker/kind of a supported address from its low 16 / high 24 bits, by a modulus that is
#: collision-free over the supported set (checked at import)
_TALKER_OF = np.full(1031, -1, dtype=np.int64)
_KIND_OF = np.full(1031, -1, dtype=np.int64)
for _code, (_ti, _kd) in _SUPPORTED.items():
    assert _TALKER_OF[(_code & 0xFFFF) % 1031] in (-1, _ti), "talker hash collision"
    assert _KIND_OF[(_code >> 16) % 1031] in (-1, _kd), "kind hash collision"
    _TALKER_OF[(_code & 0xFFFF) % 1031] = _ti
    _KIND_OF[(_code >> 16) % 1031] = _kd
_DIM = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class _Ctx:
    """The joined buffer (zero-padded for windows) and the positions of its dots."""

    def __init__(self, data: bytes) -> None:
        self.buf = np.frombuffer(data, dtype=np.uint8)
        padded = np.zeros(8 + len(data) + _PAD, dtype=np.uint8)
        padded[8 : 8 + len(data)] = self.buf
        #: the buffer followed by zeros, so that windows past the end read zeros
        self.bufp = padded[8:]
        #: w8[i] = the 8 bytes buf[i-8:i] as one little-endian uint64 (an overlapping view)
        self.w8: npt.NDArray[np.uint64] = np.ndarray(
            shape=(len(padded) - 8,), dtype="<u8", buffer=padded, strides=(1,)
        )
        dots = np.flatnonzero(self.buf == 46)
        self.dots = np.concatenate([dots, [len(self.bufp)]]).astype(np.int64)

    def window(self, fs: I64, width: int = _W) -> npt.NDArray[np.uint8]:
        return np.asarray(self.bufp[fs[:, None] + np.arange(width)], dtype=np.uint8)


_U = np.uint64
_ZEROS8 = _U(0x3030303030303030)
_ADD46 = _U(0x4646464646464646)
_HIGH = _U(0x8080808080808080)
#: LOW[k]: the k low bytes (the first k characters of a little-endian 8-byte load).
_LOW = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_SCALE = 100_000_000  # every number is read as value * 10**8


def _eight_digits(v: npt.NDArray[np.uint64]) -> tuple[B, I64]:
    """SWAR: 8 ASCII digits in a little-endian uint64 (first character lowest) -> their value.

    One multiply-shift per pair level instead of one operation per character (simdjson's
    ``parse_eight_digits_unrolled``); uint64 arithmetic wraps as in C.
    """
    ok = ((v + _ADD46) | (v - _ZEROS8)) & _HIGH == 0
    v = v - _ZEROS8
    v = v * _U(10) + (v >> _U(8))
    v = (
        (v & _U(0x000000FF000000FF)) * _U(100 + (1_000_000 << 32))
        + ((v >> _U(16)) & _U(0x000000FF000000FF)) * _U(1 + (10_000 << 32))
    ) >> _U(32)
    return ok, v.astype(np.int64)


def _fixed(cx: _Ctx, fs: I64, fe: I64, *, signed: bool = False) -> tuple[B, B, I64, B, I64, I64]:
    """(ok, empty, value * 10**8, negative, integer digits, decimals) per field.

    The integer part (at most 7 digits) and the decimals (at most 8) are each one unaligned
    8-byte load, missing characters filled with '0', and converted with :func:`_eight_digits`.
    ``value * 10**8`` is an exact integer below 2**53, so ``scaled / 1e8`` is the same correctly
    rounded quotient as the scalar ``m / 10**k``.  Longer fields are not ``ok``: the scalar
    parser decides them.
    """
    empty = fe == fs
    neg = (cx.bufp[fs] == 45) & ~empty if signed else np.zeros(len(fs), dtype=bool)
    istart = fs + neg
    dp = cx.dots[np.searchsorted(cx.dots, fs)]
    dot = np.where(dp < fe, dp, fe)
    nint = dot - istart
    k = np.maximum(fe - dot - 1, 0)
    ok = (nint <= 7) & (k <= 8) & (nint + k >= 1)
    nint_c, k_c = np.clip(nint, 0, 8), np.minimum(k, 8)
    hi = ~_LOW[8 - nint_c]  # the nint characters just before the dot
    vi = cx.w8[dot]
    oki, ival = _eight_digits((vi & hi) | (_ZEROS8 & ~hi))
    lo = _LOW[k_c]
    vf = cx.w8[dot + 9]
    okf, fval = _eight_digits((vf & lo) | (_ZEROS8 & ~lo))
    ok &= oki & okf
    return ok, empty, ival * _SCALE + fval, neg, nint, k


def _opt_unsigned(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, F64]:
    ok, empty, sc, _, _, _ = _fixed(cx, fs, fe)
    return empty | ok, np.where(empty, np.nan, sc / POW10_F[8])


def _opt_signed(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, F64]:
    ok, empty, sc, neg, _, _ = _fixed(cx, fs, fe, signed=True)
    v = sc / POW10_F[8]
    return empty | ok, np.where(empty, np.nan, np.where(neg, -v, v))


def _time(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, I64]:
    ok, empty, m, _, nint, k = _fixed(cx, fs, fe)
    ip = m // _SCALE
    frac = m - ip * _SCALE
    hh, mm, ss = ip // 10000, ip // 100 % 100, ip % 100
    ok &= ~empty & (nint == 6) & (k <= 6)
    ok &= (hh <= 23) & (mm <= 59) & (ss <= 60) & ((ss < 60) | ((hh == 23) & (mm == 59)))
    tod = ((hh * 60 + mm) * 60 + ss) * 1_000_000 + frac // 100
    return ok, np.where(ss == 60, 86_399_999_999, tod)


def _char(cx: _Ctx, fs: I64, fe: I64) -> I64:
    """The field's single character, or -1 when the field is not exactly one character."""
    return np.where(fe - fs == 1, cx.bufp[fs].astype(np.int64), -1)


def _angle(cx: _Ctx, fs: I64, fe: I64, hs: I64, he: I64, pos: bytes, negc: bytes) -> tuple[B, F64]:
    ok, empty, m, _, nint, _ = _fixed(cx, fs, fe)
    deg = m // _SCALE // 100
    minutes = (m - deg * 100 * _SCALE) / POW10_F[8]
    v = deg + minutes / 60.0
    h = _char(cx, hs, he)
    ok &= ~empty & (nint >= 3) & (minutes < 60.0) & ((h == pos[0]) | (h == negc[0]))
    return ok, np.where(h == negc[0], -v, v)


def _date(cx: _Ctx, fs: I64, fe: I64) -> tuple[B, I64]:
    ok, empty, m, _, nint, _ = _fixed(cx, fs, fe)
    m = m // _SCALE
    ok &= ~empty & (nint == 6) & (fe - fs == 6)
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


def _empty_rows(n: int) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {
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

    # Framing and checksum: counts of '*' and of bad bytes per sentence by binary search over
    # their (few) positions, XOR of the body from a prefix XOR.
    def count_in(pos: I64, lo: I64, hi: I64) -> I64:
        return np.asarray(np.searchsorted(pos, hi) - np.searchsorted(pos, lo), dtype=np.int64)

    star_pos = np.flatnonzero(buf == 42)
    bad_pos = np.flatnonzero(((buf < 32) & (buf != 10) & (buf != 13)) | (buf > 126))
    xacc = np.bitwise_xor.accumulate(buf) if len(buf) else buf
    body_end = ends - 3
    clean = (ln >= 7) & (ln <= MAX_SENTENCE_CHARS)
    clean &= cx.bufp[np.maximum(body_end, 0)] == 42
    clean &= count_in(star_pos, starts, ends) == 1
    h1, h2 = _HEX[cx.bufp[ends - 2]], _HEX[cx.bufp[ends - 1]]
    clean &= (h1 < 16) & (h2 < 16)
    xor_body = xacc[np.maximum(body_end - 1, starts)] ^ xacc[starts]
    clean &= xor_body == (h1.astype(np.int64) * 16 + h2)
    if len(bad_pos):
        clean &= count_in(bad_pos, starts, ends) == 0

    # Address and dispatch.
    cpos = np.flatnonzero(buf == 44).astype(np.int64)
    c0 = np.searchsorted(cpos, starts)
    ncom = np.searchsorted(cpos, body_end) - c0
    cpos_p = np.concatenate([cpos, [len(buf)]])
    fc = np.where(ncom > 0, cpos_p[np.minimum(c0, len(cpos))], body_end)
    alen = fc - (starts + 1)
    addr_ok = clean & (alen >= 1) & (alen <= 15)
    b1 = cx.bufp[starts + 1].astype(np.int64)
    five = addr_ok & (b1 != 80) & (alen == 5)
    code5 = cx.w8[starts + 9] & _LOW[5]  # the five address characters
    talker = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, -1, dtype=np.int64)
    supported = five & np.isin(code5, _SUPPORTED_CODES)
    si5 = np.flatnonzero(supported)
    sc5 = code5[si5]
    talker[si5] = _TALKER_OF[(sc5 & _U(0xFFFF)).astype(np.int64) % len(_TALKER_OF)]
    kind[si5] = _KIND_OF[(sc5 >> _U(16)).astype(np.int64) % len(_KIND_OF)]
    # Other addresses: skipped when made of [A-Z0-9] (proprietary 'P...' or 5 characters).
    cand = np.flatnonzero(addr_ok & ~supported & ((b1 == 80) | (alen == 5)))
    awin = cx.window(starts[cand] + 1, 15)
    alen_c = alen[cand]
    valid = (_ADDR_OK[awin] | (np.arange(15) >= alen_c[:, None])).all(axis=1)
    valid &= (alen_c == 5) | (alen_c >= 2)
    skip = np.zeros(n, dtype=bool)
    skip[cand[valid]] = True
    handled = skip.copy()

    skipped: dict[str, int] = {}
    si = np.flatnonzero(skip)
    if len(si):
        win = awin[valid]
        win = np.where(np.arange(15) < alen_c[valid][:, None], win, 0).astype(np.uint8)
        keys, cnt = np.unique(np.ascontiguousarray(win).view("S15").ravel(), return_counts=True)
        skipped = {k.decode(): int(c) for k, c in zip(keys.tolist(), cnt.tolist(), strict=True)}

    parts: list[dict[str, npt.NDArray[Any]]] = []
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
                sok, _, sm, _, snint, _ = _fixed(cx, fs7, fe7)
                sm = sm // _SCALE
                ls = fe7 - fs7
                ok &= (ls == 0) | (sok & (snint == ls) & (ls <= 2))
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
    cols = {
        name: np.concatenate([p[name] for p in parts]).astype(dt) for name, dt in ROW_DTYPES.items()
    }
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

"""The numpy parser: a whole batch of payloads at once, over the concatenated bytes.

Framing, checksums (XOR prefix scan), field offsets (comma positions), numbers (SWAR: eight
ASCII digits per unaligned 8-byte load, converted by three multiply-shifts) and dispatch by
sentence type are array operations.  A row is handled here only when every check the scalar
parser (fields.py) makes is proven to pass, with the same integer/float operations; every other
row (rejects, empty positions, odd layouts, sentences without checksum) goes to the scalar
parser, except framing rejects that need no parse (too long, no checksum).  So both produce
identical rows, and the numpy path stays simple: it never decides a field-level reject.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.nmea.fields import (
    MISSING_CHECKSUM_DETAIL,
    Refuse,
    Row,
    Skip,
    parse_sentence,
    too_long_detail,
)
from ingest.nmea.options import DecodeOptions
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
    """The payloads joined by ``\\n`` in one padded buffer: 8 bytes before (``w8`` loads ending
    before the first byte), then the data, a sentinel ``,`` and zeros (windows past the end)."""

    FRONT = 8

    def __init__(self, payloads: Sequence[bytes]) -> None:
        #: the joined bytes; the data starts at FRONT
        self.raw = b"\n".join([bytes(self.FRONT - 1), *payloads, b"," + bytes(_PAD + 8)])
        padded = np.frombuffer(self.raw, dtype=np.uint8)
        n = len(self.raw) - self.FRONT - _PAD - 9
        self.buf = padded[self.FRONT : self.FRONT + n]
        #: the data, then the sentinel comma and zeros, so that windows past the end are safe
        self.bufp = padded[self.FRONT :]
        #: w8[i] = the 8 bytes buf[i-8:i] as one little-endian uint64 (an overlapping view)
        self.w8: npt.NDArray[np.uint64] = np.ndarray(
            shape=(len(padded) - 8,), dtype="<u8", buffer=padded, strides=(1,)
        )
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        #: start offset of every payload in buf
        self.offsets = np.zeros(len(payloads), dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=self.offsets[1:])

    def window(self, fs: I64, width: int = _W) -> npt.NDArray[np.uint8]:
        return np.asarray(self.bufp[fs[:, None] + np.arange(width)], dtype=np.uint8)


_U = np.uint64
_ZEROS8 = _U(0x3030303030303030)
_ADD46 = _U(0x4646464646464646)
_HIGH = _U(0x8080808080808080)
#: LOW[k]: the k low bytes (the first k characters of a little-endian 8-byte load).
_LOW = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_SCALE = 100_000_000  # every number is read as value * 10**8
_DOTS = _U(0x2E2E2E2E2E2E2E2E)
_ONES = _U(0x0101010101010101)


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


def _fixed(cx: _Ctx, fs: I64, fe: I64, signed: B | bool = False) -> tuple[B, B, I64, B, I64, I64]:
    """(ok, empty, value * 10**8, negative, integer digits, decimals) per field.

    The dot is found with one 8-byte load at the field start (SWAR zero-byte search); the
    integer part (at most 7 digits) and the decimals (at most 8) are each one unaligned 8-byte
    load, missing characters filled with '0', and converted with :func:`_eight_digits`.
    ``value * 10**8`` is an exact integer below 2**53, so ``scaled / 1e8`` is the same correctly
    rounded quotient as the scalar ``m / 10**k``.  Longer fields are not ``ok``: the scalar
    parser decides them.
    """
    ln = fe - fs
    empty = ln == 0
    neg = (cx.bufp[fs] == 45) & ~empty & signed
    istart = fs + neg
    x = cx.w8[fs + 8] ^ _DOTS
    t = (x - _ONES) & ~x & _HIGH  # 0x80 in the first zero byte (a '.') and maybe later ones
    # index of the first '.' (-1 if none): isolate the lowest 0x80 bit, then a multiply moves
    # "byte index + 1" of the constant 0x0102..08 into the top byte
    low = (t & (~t + _U(1))) >> _U(7)
    byte = ((low * _U(0x0102030405060708)) >> _U(56)).astype(np.int64) - 1
    found = (t != 0) & (byte < ln)
    dot = np.where(found, fs + byte, fe)
    nint = dot - istart
    k = np.maximum(fe - dot - 1, 0)
    ok = (nint <= 7) & (k <= 8) & (nint + k >= 1) & (found | (ln <= 8))
    nint_c, k_c = np.clip(nint, 0, 8), np.minimum(k, 8)
    hi = ~_LOW[8 - nint_c]  # the nint characters just before the dot
    oki, ival = _eight_digits((cx.w8[dot] & hi) | (_ZEROS8 & ~hi))
    lo = _LOW[k_c]
    okf, fval = _eight_digits((cx.w8[dot + 9] & lo) | (_ZEROS8 & ~lo))
    ok &= oki & okf
    return ok, empty, ival * _SCALE + fval, neg, nint, k


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


#: Field index of each role per kind (RMC, GGA, GNS, VTG); -1 where the kind has no such field.
_F = {
    "time": (1, 1, 1, -1),
    "lat": (3, 2, 2, -1),
    "lon": (5, 4, 4, -1),
    "speed": (7, -1, -1, 5),
    "course": (8, -1, -1, 1),
    "date": (9, -1, -1, -1),
    "sats": (-1, 7, 7, -1),
    "hdop": (-1, 8, 8, -1),
    "alt": (-1, 9, 9, -1),
}
_NUMERIC = tuple(_F)


def _parse_supported(
    cx: _Ctx,
    sup: I64,
    kind: I64,
    talker: I64,
    starts: I64,
    body_end: I64,
    nf: I64,
    c0: I64,
    cpos: I64,
) -> tuple[dict[str, npt.NDArray[Any]], B]:
    """Rows of supported sentences with the right field count -> columns, and which rows are
    clean (every check of fields.py passes; the others go to the scalar parser)."""
    m = len(sup)
    ncp = len(cpos) - 1  # cpos ends with the sentinel after the data
    cpos_p = cpos
    c0s, nfs, bes = c0[sup], nf[sup], body_end[sup]

    def fb(idx: I64, j: I64) -> tuple[I64, I64]:
        """Bounds of field ``j`` (address = 0) of rows ``idx``; j < field count."""
        ci = c0s[idx] + j
        fs = cpos_p[np.clip(ci - 1, 0, ncp)] + 1
        fe = np.where(j < nfs[idx] - 1, cpos_p[np.minimum(ci, ncp)], bes[idx])
        return fs, fe

    # One fixed-point read for every numeric field of every row.
    present = {r: np.asarray(_F[r], dtype=np.int64)[kind] for r in _NUMERIC}
    rows = {r: np.flatnonzero(present[r] >= 0) for r in _NUMERIC}
    bnd = [fb(rows[r], present[r][rows[r]]) for r in _NUMERIC]
    fs_all = np.concatenate([b[0] for b in bnd])
    fe_all = np.concatenate([b[1] for b in bnd])
    lens = {r: b[1] - b[0] for r, b in zip(_NUMERIC, bnd, strict=True)}
    signed = np.concatenate([np.full(len(rows[r]), r == "alt") for r in _NUMERIC])
    ok_all, empty_all, sc_all, neg_all, nint_all, k_all = _fixed(cx, fs_all, fe_all, signed)
    bounds = np.cumsum([0] + [len(rows[r]) for r in _NUMERIC])
    got = {
        r: tuple(
            a[bounds[i] : bounds[i + 1]]
            for a in (ok_all, empty_all, sc_all, neg_all, nint_all, k_all)
        )
        for i, r in enumerate(_NUMERIC)
    }
    out = _empty_rows(m)
    ok = np.ones(m, dtype=bool)

    def put(role: str, col: str, okr: npt.NDArray[Any], val: npt.NDArray[Any]) -> None:
        idx = rows[role]
        ok[idx] &= okr
        out[col][idx] = val

    # time of day: exactly six integer digits, at most six decimals
    okr, empty, sc, _, nint, k = got["time"]
    ip = sc // _SCALE
    frac = sc - ip * _SCALE
    hh, mi, ss = ip // 10000, ip // 100 % 100, ip % 100
    okt = okr & ~empty & (nint == 6) & (k <= 6) & (hh <= 23) & (mi <= 59) & (ss <= 60)
    okt &= (ss < 60) | ((hh == 23) & (mi == 59))
    tod = ((hh * 60 + mi) * 60 + ss) * 1_000_000 + frac // 100
    put("time", "tod_us", okt, np.where(ss == 60, 86_399_999_999, tod))
    # latitude / longitude with their hemisphere fields
    for role, col, pos, negc in (("lat", "lat", 78, 83), ("lon", "lon", 69, 87)):
        okr, empty, sc, _, nint, _ = got[role]
        deg = sc // _SCALE // 100
        minutes = (sc - deg * 100 * _SCALE) / POW10_F[8]
        v = deg + minutes / 60.0
        idx = rows[role]
        hfs, hfe = fb(idx, present[role][idx] + 1)
        h = np.where(hfe - hfs == 1, cx.bufp[hfs], 0)
        oka = okr & ~empty & (nint >= 3) & (minutes < 60.0) & ((h == pos) | (h == negc))
        put(role, col, oka, np.where(h == negc, -v, v))
    # optional unsigned decimals; altitude may be negative
    for role, col, factor in (("speed", "speed_kmh", KMH_PER_KNOT), ("course", "course", 1.0),
                              ("hdop", "hdop", 1.0)):  # fmt: skip
        okr, empty, sc, _, _, _ = got[role]
        v = sc / POW10_F[8]
        if factor != 1.0:
            v = v * factor
        put(role, col, empty | okr, np.where(empty, np.nan, v))
    okr, empty, sc, neg, _, _ = got["alt"]
    v = sc / POW10_F[8]
    put("alt", "alt_m", empty | okr, np.where(empty, np.nan, np.where(neg, -v, v)))
    # date: ddmmyy
    okr, empty, sc, _, nint, k = got["date"]
    dm = sc // _SCALE
    dd, mo, yy = dm // 10000, dm // 100 % 100, dm % 100
    year = np.where(yy >= 80, 1900 + yy, 2000 + yy)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    mo_c = np.clip(mo, 0, 12)
    okd = okr & ~empty & (nint == 6) & (k == 0)
    okd &= lens["date"] == 6
    okd &= (mo >= 1) & (mo <= 12) & (dd >= 1) & (dd <= _DIM[mo_c] + ((mo == 2) & leap))
    put("date", "date_days", okd, days_from_civil(year, np.maximum(mo, 1), np.maximum(dd, 1)))
    # satellites: empty or one/two digits
    okr, empty, sc, _, nint, _ = got["sats"]
    idx = rows["sats"]
    ln = lens["sats"]
    put("sats", "sats", empty | (okr & (nint == ln) & (ln <= 2)), np.where(empty, -1, sc // _SCALE))

    # single-character fields
    every = np.arange(m)

    def char(idx: I64, j: I64 | int) -> I64:
        a, b = fb(idx, np.broadcast_to(np.asarray(j, dtype=np.int64), idx.shape))
        return np.where(b - a == 1, cx.bufp[a].astype(np.int64), -1)

    is_rmc, is_gga, is_gns, is_vtg = (kind == KIND_RMC), (kind == KIND_GGA), (kind == KIND_GNS), (
        kind == KIND_VTG)  # fmt: skip
    ri = np.flatnonzero(is_rmc)
    ok[ri] &= char(ri, 2) == 65  # status A (V is a no-fix reject: scalar path)
    mi_ = np.flatnonzero((is_rmc & (nfs >= 13)) | (is_vtg & (nfs == 10)))
    mj = np.where(is_rmc[mi_], 12, 9)
    mfs, mfe = fb(mi_, mj)
    mc = char(mi_, mj)
    ok[mi_] &= (mfe == mfs) | ((mc >= 0) & _MODE_OK[np.maximum(mc, 0)] & (mc != 78))
    del every
    quality = np.full(m, -1, dtype=np.int64)
    gg = np.flatnonzero(is_gga)
    q = char(gg, 6)
    ok[gg] &= (q >= 49) & (q <= 56)
    quality[gg] = q - 48
    gi = np.flatnonzero(is_gns)
    if len(gi):
        gfs, gfe = fb(gi, np.full(len(gi), 6))
        mw = cx.window(gfs, 8)
        inside = np.arange(8) < (gfe - gfs)[:, None]
        nonn = inside & (mw != 78)
        okg = ((gfe - gfs) >= 1) & ((gfe - gfs) <= 8)
        okg &= ~(inside & ~_MODE_OK[mw]).any(axis=1) & nonn.any(axis=1)
        ok[gi] &= okg
        quality[gi] = _GNS_Q[mw[np.arange(len(gi)), np.argmax(nonn, axis=1)]]
    out["quality"] = quality.astype(np.int8)
    out["kind"] = kind.astype(np.int8)
    out["talker"] = talker.astype(np.int8)
    return {name: col[ok] for name, col in out.items()}, ok


#: Payload bytes parsed per block.  numpy is memory-bound here: blocks whose temporaries stay in
#: the L2 cache parse about 3x faster per sentence than one pass over a large batch.
BLOCK_BYTES = 256 * 1024


def parse_vectorised(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    """Parse a batch in blocks of about :data:`BLOCK_BYTES` (sentences never span payloads,
    so blocks are independent) and stitch the blocks together."""
    lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads)) + 1
    if int(lengths.sum()) <= 2 * BLOCK_BYTES:
        return _parse_block(payloads, options)
    cum = np.cumsum(lengths)
    cuts = np.unique(np.searchsorted(cum, np.arange(BLOCK_BYTES, int(cum[-1]), BLOCK_BYTES)) + 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < len(payloads)], len(payloads)]
    parts = [_parse_block(payloads[a:b], options) for a, b in itertools.pairwise(bounds)]
    byte_off = np.concatenate([[0], cum])[bounds[:-1]]
    seq_off = np.cumsum([0] + [len(p.starts) for p in parts])
    rows = {
        name: np.concatenate(
            [
                getattr(p.rows, name) + (seq_off[i] if name == "seq" else bounds[i])
                if name in ("seq", "payload")
                else getattr(p.rows, name)
                for i, p in enumerate(parts)
            ]
        ).astype(dt)
        for name, dt in ROW_DTYPES.items()
    }
    skipped: dict[str, int] = {}
    for p in parts:
        for key, cnt in p.skipped.items():
            skipped[key] = skipped.get(key, 0) + cnt
    return ParseOutput(
        buffer=b"\n".join(payloads) + b"\n",
        starts=np.concatenate([p.starts + byte_off[i] for i, p in enumerate(parts)]),
        ends=np.concatenate([p.ends + byte_off[i] for i, p in enumerate(parts)]),
        base=0,
        payload_of=np.concatenate([p.payload_of + bounds[i] for i, p in enumerate(parts)]),
        rows=ParsedRows(**rows),
        rejects=[
            (seq + int(seq_off[i]), why, detail)
            for i, p in enumerate(parts)
            for seq, why, detail in p.rejects
        ],
        skipped=skipped,
        fallback_rows=sum(p.fallback_rows for p in parts),
    )


def _parse_block(payloads: Sequence[bytes], options: DecodeOptions) -> ParseOutput:
    cx = _Ctx(payloads)
    buf, offsets, base = cx.buf, cx.offsets, cx.FRONT
    is_d = buf == 36
    starts = np.flatnonzero(is_d).astype(np.int64, copy=False)
    term = np.flatnonzero(is_d | (buf == 10) | (buf == 13)).astype(np.int64, copy=False)
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
    n_stars = count_in(star_pos, starts, ends)
    clean &= n_stars == 1
    h1, h2 = _HEX[cx.bufp[ends - 2]], _HEX[cx.bufp[ends - 1]]
    clean &= (h1 < 16) & (h2 < 16)
    xor_body = xacc[np.maximum(body_end - 1, starts)] ^ xacc[starts]
    clean &= xor_body == (h1.astype(np.int64) * 16 + h2)
    if len(bad_pos):
        clean &= count_in(bad_pos, starts, ends) == 0

    # Address and dispatch.
    # comma positions, the last one the sentinel just after the data
    cpos = np.flatnonzero(cx.bufp[: len(buf) + 1] == 44).astype(np.int64, copy=False)
    c0 = np.searchsorted(cpos, starts)
    ncom = np.searchsorted(cpos, body_end) - c0
    fc = np.where(ncom > 0, cpos[np.minimum(c0, len(cpos) - 1)], body_end)
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
    nf_ok = np.zeros(n, dtype=bool)
    for kd, counts in FIELD_COUNTS.items():
        sel = supported & (kind == kd)
        nf_ok[sel] = np.isin(nf[sel], counts)
    sup = np.flatnonzero(supported & nf_ok)
    if len(sup):
        out, ok = _parse_supported(cx, sup, kind[sup], talker[sup], starts, body_end, nf, c0, cpos)
        good = sup[ok]
        out["seq"] = good
        out["payload"] = payload_of[good]
        parts.append(out)
        handled[good] = True

    # Framing rejects that need no parsing (bulk garbage must not cost a Python parse per '$').
    rejects: list[tuple[int, RejectReason, str]] = []
    too_long = ~handled & (ln > MAX_SENTENCE_CHARS)
    for seq, length in zip(np.flatnonzero(too_long).tolist(), ln[too_long].tolist(), strict=True):
        rejects.append((seq, RejectReason.TOO_LONG, too_long_detail(length)))
    handled |= too_long
    if options.require_checksum:
        missing = ~handled & (n_stars == 0)
        rejects.extend(
            (seq, RejectReason.MISSING_CHECKSUM, MISSING_CHECKSUM_DETAIL)
            for seq in np.flatnonzero(missing).tolist()
        )
        handled |= missing

    # Everything else not proven clean: the scalar parser decides.
    fallback = np.flatnonzero(~handled)
    fb: dict[str, list[float | int]] = {name: [] for name in ROW_DTYPES}
    for seq in fallback.tolist():
        raw = cx.raw[base + int(starts[seq]) : base + int(ends[seq])]
        res = parse_sentence(raw, options.require_checksum)
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
        buffer=cx.raw,
        base=base,
        starts=starts,
        ends=ends,
        payload_of=payload_of.astype(np.int64),
        rows=rows,
        rejects=rejects,
        skipped=skipped,
        fallback_rows=len(fallback),
    )

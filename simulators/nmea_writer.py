"""RMC and GGA sentences for a whole column of fixes at once, without a Python loop per fix.

The sentences are byte-for-byte those of :func:`ingest.nmea_encode.encode_rmc` /
:func:`~ingest.nmea_encode.encode_gga` (a Hypothesis test checks it), built as a byte matrix:
one row per sentence, one column block per field.  Variable-width numbers (``12.345`` vs
``0.171``) are right-aligned in a block wide enough for any value, and the unused leading
positions hold byte 0.  Zero bytes cost nothing in an XOR, so the checksum is one
``np.bitwise_xor.reduce`` along each row, and dropping every zero byte from the flattened
matrix leaves exactly the concatenated sentences.

Rounding is Python's (correct rounding of the binary value, half to even): numpy's
``rint(x * 10**d)`` agrees except when ``x * 10**d`` lies within float error of a half, and
those rare rows are re-rounded with Python's own ``format``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.nmea_encode import KMH_PER_KNOT

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ByteMatrix = npt.NDArray[np.uint8]

_HEXDIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_ZERO = ord("0")


@dataclass(frozen=True, slots=True, kw_only=True)
class FixColumns:
    """What the sentences say, one row per epoch (speed/course/hdop/alt must not be NaN)."""

    t_us: IntArray
    lat: FloatArray
    lon: FloatArray
    speed_kmh: FloatArray
    course: FloatArray
    quality: IntArray
    sats: IntArray
    hdop: FloatArray
    alt_m: FloatArray


def _const(text: bytes, n: int) -> ByteMatrix:
    return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text)))


def _digits(v: IntArray, width: int, *, pad: bool) -> ByteMatrix:
    """``v`` (≥ 0) as ``width`` decimal digits; without ``pad``, leading zeros become byte 0
    (the units digit always stays)."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = ((v[:, None] // powers) % 10 + _ZERO).astype(np.uint8)
    if not pad and width > 1:
        out[:, :-1][v[:, None] < powers[None, :-1]] = 0  # a digit above the number's top one
    return out


def _scaled(x: FloatArray, decimals: int) -> IntArray:
    """``round(|x| * 10**decimals)`` exactly as Python's ``format(|x|, f'.{decimals}f')``."""
    a = np.abs(x)
    s = a * 10.0**decimals
    r = np.rint(s)
    frac = s - np.floor(s)
    unsure = np.flatnonzero(np.abs(frac - 0.5) < 1e-6)
    out = r.astype(np.int64)
    for i in unsure.tolist():
        out[i] = int(format(float(a[i]), f".{decimals}f").replace(".", ""))
    return out


def _fixed(x: FloatArray, decimals: int) -> ByteMatrix:
    """``format(x, f'.{decimals}f')`` right-aligned in a block as wide as the widest value."""
    m = _scaled(x, decimals)
    ip = m // 10**decimals
    int_width = len(str(int(ip.max()))) if ip.size else 1
    sign = np.where(np.signbit(x), ord("-"), 0).astype(np.uint8)[:, None]
    ints = _digits(ip, int_width, pad=False)
    if decimals == 0:
        return np.hstack([sign, ints])
    frac = _digits(m % 10**decimals, decimals, pad=True)
    dot = _const(b".", len(x))
    # keep the sign next to the first digit: move it right over the unused leading bytes
    block = np.hstack([sign, ints])
    if np.any(sign):
        first = np.argmax(block[:, 1:] != 0, axis=1)  # index of the first digit in ints
        rows = np.flatnonzero(sign[:, 0])
        block[rows, 0] = 0
        block[rows, first[rows]] = ord("-")
    return np.hstack([block, dot, frac])


def _degmin(
    v: FloatArray, deg_width: int, decimals: int
) -> tuple[ByteMatrix, npt.NDArray[np.bool_]]:
    """``DD[D]MM.MMMMM`` and the hemisphere letter column, with ``encode_rmc``'s carry."""
    a = np.abs(v)
    deg = np.floor(a).astype(np.int64)
    minutes = (a - deg) * 60.0
    m = _scaled(np.asarray(minutes, dtype=np.float64), decimals)
    carry = m >= 60 * 10**decimals
    deg = deg + carry
    m = np.where(carry, 0, m)
    n = len(v)
    body = np.hstack(
        [
            _digits(deg, deg_width, pad=True),
            _digits(m // 10**decimals, 2, pad=True),
            _const(b".", n),
            _digits(m % 10**decimals, decimals, pad=True),
        ]
    )
    return body, v < 0  # encode_rmc: 'N' if lat >= 0, so -0.0 is north


def _clock(t_us: IntArray) -> tuple[ByteMatrix, ByteMatrix]:
    """``hhmmss.cc`` and ``ddmmyy`` blocks for µs timestamps (UTC)."""
    n = len(t_us)
    sec = t_us // 1_000_000
    cs = (t_us % 1_000_000) // 10_000
    sod = sec % 86_400
    days = (sec // 86_400).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    hms = np.hstack(
        [
            _digits(sod // 3600, 2, pad=True),
            _digits((sod // 60) % 60, 2, pad=True),
            _digits(sod % 60, 2, pad=True),
            _const(b".", n),
            _digits(cs, 2, pad=True),
        ]
    )
    dmy = np.hstack(
        [_digits(day, 2, pad=True), _digits(month, 2, pad=True), _digits(year % 100, 2, pad=True)]
    )
    return hms, dmy


def _letter(mask: npt.NDArray[np.bool_], if_true: bytes, if_false: bytes) -> ByteMatrix:
    return np.where(mask, if_true[0], if_false[0]).astype(np.uint8)[:, None]


def _frame(body: ByteMatrix) -> ByteMatrix:
    """``$`` + body + ``*HH\\r\\n``; the checksum is the XOR of the row (zeros are neutral)."""
    n = len(body)
    cs = np.bitwise_xor.reduce(body, axis=1)
    hexes = np.stack([_HEXDIGITS[cs >> 4], _HEXDIGITS[cs & 15]], axis=1)
    return np.hstack([_const(b"$", n), body, _const(b"*", n), hexes, _const(b"\r\n", n)])


def sentence_matrices(
    cols: FixColumns, *, talker: str = "GP", decimals: int = 5
) -> tuple[ByteMatrix, ByteMatrix]:
    """RMC and GGA rows (zero-padded byte matrices, one sentence per row)."""
    n = len(cols.t_us)
    if n and int(np.max(cols.sats)) > 99:
        raise ValueError("more than 99 satellites cannot be written in two digits")
    hms, dmy = _clock(cols.t_us)
    lat, south = _degmin(cols.lat, 2, decimals)
    lon, west = _degmin(cols.lon, 3, decimals)
    ns = _letter(south, b"S", b"N")
    ew = _letter(west, b"W", b"E")
    comma = _const(b",", n)
    t = talker.encode("ascii")
    rmc = np.hstack(
        [
            _const(t + b"RMC,", n),
            hms,
            _const(b",A,", n),
            lat,
            comma,
            ns,
            comma,
            lon,
            comma,
            ew,
            comma,
            _fixed(cols.speed_kmh / KMH_PER_KNOT, 3),
            comma,
            _fixed(cols.course, 2),
            comma,
            dmy,
            _const(b",,,A", n),
        ]
    )
    quality = np.where(cols.quality > 0, cols.quality, 1).astype(np.int64)
    gga = np.hstack(
        [
            _const(t + b"GGA,", n),
            hms,
            comma,
            lat,
            comma,
            ns,
            comma,
            lon,
            comma,
            ew,
            comma,
            _digits(quality, 1, pad=True),
            comma,
            _digits(cols.sats.astype(np.int64), 2, pad=True),
            comma,
            _fixed(cols.hdop, 2),
            comma,
            _fixed(cols.alt_m, 1),
            _const(b",M,,M,,", n),
        ]
    )
    return _frame(rmc), _frame(gga)


def epoch_bytes(
    cols: FixColumns, *, talker: str = "GP", decimals: int = 5
) -> tuple[bytes, IntArray]:
    """All sentences as one buffer, RMC then GGA per epoch, and ``2n + 1`` offsets into it:
    epoch *i*'s RMC is ``buf[off[2i]:off[2i+1]]`` and its GGA ``buf[off[2i+1]:off[2i+2]]``."""
    rmc, gga = sentence_matrices(cols, talker=talker, decimals=decimals)
    n = len(rmc)
    w = max(rmc.shape[1], gga.shape[1])
    both = np.zeros((2 * n, w), dtype=np.uint8)
    both[0::2, : rmc.shape[1]] = rmc
    both[1::2, : gga.shape[1]] = gga
    keep = both != 0
    lengths = keep.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return both[keep].tobytes(), offsets


def format_rmc_gga(
    cols: FixColumns, *, talker: str = "GP", decimals: int = 5
) -> tuple[list[str], list[str]]:
    """The RMC and the GGA sentence of every row (``encode_rmc``/``encode_gga`` equivalents)."""
    buf, off = epoch_bytes(cols, talker=talker, decimals=decimals)
    text = buf.decode("ascii")
    o = off.tolist()
    return (
        [text[o[2 * i] : o[2 * i + 1]] for i in range(len(cols.t_us))],
        [text[o[2 * i + 1] : o[2 * i + 2]] for i in range(len(cols.t_us))],
    )

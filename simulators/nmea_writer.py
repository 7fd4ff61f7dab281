"""RMC and GGA sentences for a whole column of fixes at once.

The sentences are byte-for-byte those of :func:`ingest.nmea_encode.encode_rmc` /
:func:`~ingest.nmea_encode.encode_gga` (a test checks it), but built for two million epochs in
seconds: the numeric splitting (degrees/minutes, clock and date fields) is done on numpy arrays,
the text by one f-string per sentence, and the checksums for all sentences in a single
``np.bitwise_xor.reduceat`` over their concatenated bytes instead of a Python loop per byte.

Sentences are returned as ``str`` (ASCII).  Callers that add raw garbage bytes work in latin-1,
which maps bytes 0–255 to the first 256 code points one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.nmea_encode import KMH_PER_KNOT

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_HEX = [f"{i:02X}" for i in range(256)]


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


def _degmin(v: FloatArray, decimals: int) -> tuple[list[int], list[float], npt.NDArray[np.bool_]]:
    """Whole degrees and minutes as ``encode_rmc`` computes them, including its carry to 60'."""
    a = np.abs(v)
    deg = np.floor(a).astype(np.int64)
    minutes = (a - deg) * 60.0
    near = np.flatnonzero(minutes >= 60.0 - 10.0 ** (-decimals))
    for i in near.tolist():  # at most a handful: the exact rounding check stays scalar
        if round(float(minutes[i]), decimals) >= 60.0:
            deg[i] += 1
            minutes[i] = 0.0
    return deg.tolist(), minutes.tolist(), v >= 0


def _clock(t_us: IntArray) -> tuple[list[str], list[str]]:
    """``hhmmss.cc`` and ``ddmmyy`` strings for µs timestamps (UTC)."""
    sec = t_us // 1_000_000
    cs = (t_us % 1_000_000) // 10_000
    sod = sec % 86_400
    hh, mm, ss = sod // 3600, (sod // 60) % 60, sod % 60
    days = (sec // 86_400).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    hms = [
        f"{h:02d}{m:02d}{s:02d}.{c:02d}"
        for h, m, s, c in zip(hh.tolist(), mm.tolist(), ss.tolist(), cs.tolist(), strict=True)
    ]
    dmy = [
        f"{d:02d}{mo:02d}{y % 100:02d}"
        for d, mo, y in zip(day.tolist(), month.tolist(), year.tolist(), strict=True)
    ]
    return hms, dmy


def _framed(bodies: list[str]) -> list[str]:
    """``$body*HH\\r\\n`` for every body, checksums computed in one vectorised pass."""
    if not bodies:
        return []
    raw = np.frombuffer("".join(bodies).encode("ascii"), dtype=np.uint8)
    lengths = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sums = np.bitwise_xor.reduceat(raw, starts).tolist()
    return [f"${b}*{_HEX[c]}\r\n" for b, c in zip(bodies, sums, strict=True)]


def format_rmc_gga(
    cols: FixColumns, *, talker: str = "GP", decimals: int = 5
) -> tuple[list[str], list[str]]:
    """The RMC and the GGA sentence of every row (``encode_rmc``/``encode_gga`` equivalents)."""
    hms, dmy = _clock(cols.t_us)
    lat_d, lat_m, north = _degmin(cols.lat, decimals)
    lon_d, lon_m, east = _degmin(cols.lon, decimals)
    ns = ["N" if b else "S" for b in north.tolist()]
    ew = ["E" if b else "W" for b in east.tolist()]
    w = 3 + decimals
    lat_s = [f"{d:02d}{m:0{w}.{decimals}f}" for d, m in zip(lat_d, lat_m, strict=True)]
    lon_s = [f"{d:03d}{m:0{w}.{decimals}f}" for d, m in zip(lon_d, lon_m, strict=True)]
    knots = (cols.speed_kmh / KMH_PER_KNOT).tolist()
    course = cols.course.tolist()
    rmc = [
        f"{talker}RMC,{h},A,{la},{n},{lo},{e},{k:.3f},{c:.2f},{d},,,A"
        for h, la, n, lo, e, k, c, d in zip(
            hms, lat_s, ns, lon_s, ew, knots, course, dmy, strict=True
        )
    ]
    quality = np.where(cols.quality > 0, cols.quality, 1).tolist()
    gga = [
        f"{talker}GGA,{h},{la},{n},{lo},{e},{q},{s:02d},{hd:.2f},{al:.1f},M,,M,,"
        for h, la, n, lo, e, q, s, hd, al in zip(
            hms,
            lat_s,
            ns,
            lon_s,
            ew,
            quality,
            cols.sats.tolist(),
            cols.hdop.tolist(),
            cols.alt_m.tolist(),
            strict=True,
        )
    ]
    return _framed(rmc), _framed(gga)

"""NMEA 0183 sentence writer: the inverse of the decoder, for simulators and round-trip tests.

Kept beside the decoder so that ``decode(encode(fix)) == fix`` is a property of one package.
"""

from __future__ import annotations

import math

from core.fixes import Fix, us_to_datetime

KMH_PER_KNOT = 1.852


def checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*`` (exclusive)."""
    c = 0
    for b in body:
        c ^= b
    return c


def frame(body: str, *, lower_hex: bool = False, eol: bytes = b"\r\n") -> bytes:
    """``$body*HH\\r\\n`` with the checksum in upper-case hex (lower-case on request: some
    receivers send it so, and the decoder must accept both)."""
    raw = body.encode("ascii")
    hx = f"{checksum(raw):02x}" if lower_hex else f"{checksum(raw):02X}"
    return b"$" + raw + b"*" + hx.encode("ascii") + eol


def _lat(lat: float, decimals: int) -> tuple[str, str]:
    a = abs(lat)
    deg = int(a)
    minutes = round((a - deg) * 60.0, decimals)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:02d}{minutes:0{3 + decimals}.{decimals}f}", "N" if lat >= 0 else "S"


def _lon(lon: float, decimals: int) -> tuple[str, str]:
    a = abs(lon)
    deg = int(a)
    minutes = round((a - deg) * 60.0, decimals)
    if minutes >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:03d}{minutes:0{3 + decimals}.{decimals}f}", "E" if lon >= 0 else "W"


def _hms(t_us: int) -> str:
    t = us_to_datetime(t_us)
    cs = t.microsecond // 10_000
    return f"{t.hour:02d}{t.minute:02d}{t.second:02d}.{cs:02d}"


def _opt(x: float, fmt: str) -> str:
    return "" if math.isnan(x) else format(x, fmt)


def encode_rmc(
    fix: Fix,
    *,
    decimals: int = 6,
    talker: str | None = None,
    lower_hex: bool = False,
    nav_status: str | None = None,
) -> bytes:
    """An RMC sentence (status A, mode A) for an accepted fix; ``nav_status`` appends NMEA
    4.10's navigational-status field (e.g. ``"V"``: not valid for safety, still a fix)."""
    lat, ns = _lat(fix.lat, decimals)
    lon, ew = _lon(fix.lon, decimals)
    d = us_to_datetime(fix.t_us)
    speed_kn = _opt(fix.speed_kmh / KMH_PER_KNOT, ".3f")
    course = _opt(fix.course, ".2f")
    body = (
        f"{talker or fix.talker}RMC,{_hms(fix.t_us)},A,{lat},{ns},{lon},{ew},{speed_kn},{course},"
        f"{d.day:02d}{d.month:02d}{d.year % 100:02d},,,A"
    )
    if nav_status is not None:
        body += f",{nav_status}"
    return frame(body, lower_hex=lower_hex)


def encode_gga(
    fix: Fix,
    *,
    decimals: int = 6,
    talker: str | None = None,
    lower_hex: bool = False,
    rtk: bool = False,
) -> bytes:
    """A GGA sentence for an accepted fix (quality defaults to 1 when unknown).

    ``rtk``: as high-precision receivers write it (altitude and geoid separation to 4
    decimals, differential age and station id): with ``decimals=8`` that is 90-100 characters,
    over NMEA's 82."""
    lat, ns = _lat(fix.lat, decimals)
    lon, ew = _lon(fix.lon, decimals)
    quality = fix.quality if fix.quality > 0 else 1
    sats = f"{fix.sats:02d}" if fix.sats >= 0 else ""
    tail = ",M,-25.6690,M,1.0,0031" if rtk else ",M,,M,,"
    alt = _opt(fix.alt_m, ".4f" if rtk else ".1f")
    body = (
        f"{talker or fix.talker}GGA,{_hms(fix.t_us)},{lat},{ns},{lon},{ew},{quality},{sats},"
        f"{_opt(fix.hdop, '.2f')},{alt}{tail}"
    )
    return frame(body, lower_hex=lower_hex)


def encode_gll(
    fix: Fix,
    *,
    decimals: int = 6,
    talker: str | None = None,
    lower_hex: bool = False,
    mode: str | None = "A",
) -> bytes:
    """A GLL sentence (position, time, status A; ``mode`` None: the NMEA 2.x form without the
    mode field)."""
    lat, ns = _lat(fix.lat, decimals)
    lon, ew = _lon(fix.lon, decimals)
    body = f"{talker or fix.talker}GLL,{lat},{ns},{lon},{ew},{_hms(fix.t_us)},A"
    if mode is not None:
        body += f",{mode}"
    return frame(body, lower_hex=lower_hex)


def encode_zda(t_us: int, *, talker: str = "GP", lower_hex: bool = False) -> bytes:
    """A ZDA sentence (UTC time and date; local zone 00:00)."""
    d = us_to_datetime(t_us)
    body = f"{talker}ZDA,{_hms(t_us)},{d.day:02d},{d.month:02d},{d.year:04d},00,00"
    return frame(body, lower_hex=lower_hex)


_GNS_MODE = {1: "A", 2: "D", 3: "P", 4: "R", 5: "F", 6: "E", 7: "M", 8: "S"}


def encode_gns(
    fix: Fix,
    *,
    decimals: int = 6,
    talker: str | None = None,
    lower_hex: bool = False,
    nav_status: str | None = None,
) -> bytes:
    """A GNS sentence (mode per constellation: GPS and GLONASS, from the fix quality)."""
    lat, ns = _lat(fix.lat, decimals)
    lon, ew = _lon(fix.lon, decimals)
    mode = _GNS_MODE.get(fix.quality, "A") * 2
    sats = f"{fix.sats:02d}" if fix.sats >= 0 else ""
    body = (
        f"{talker or fix.talker}GNS,{_hms(fix.t_us)},{lat},{ns},{lon},{ew},{mode},{sats},"
        f"{_opt(fix.hdop, '.2f')},{_opt(fix.alt_m, '.1f')},,,"
    )
    if nav_status is not None:
        body += f",{nav_status}"
    return frame(body, lower_hex=lower_hex)


def encode_vtg(fix: Fix, *, talker: str | None = None, lower_hex: bool = False) -> bytes:
    """A VTG sentence (course over ground and speed; no time: it follows its epoch's GGA)."""
    speed_kn = _opt(fix.speed_kmh / KMH_PER_KNOT, ".3f")
    speed_kmh = _opt(fix.speed_kmh, ".2f")
    body = f"{talker or fix.talker}VTG,{_opt(fix.course, '.2f')},T,,M,{speed_kn},N,{speed_kmh},K,A"
    return frame(body, lower_hex=lower_hex)

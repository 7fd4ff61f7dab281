"""The scalar sentence parser: one sentence's bytes -> a row, a skip, or a reject.

This is the definition of what a sentence means.  The compiled parser (kernel.py) handles the
rows it can prove clean with the same arithmetic and hands every other row to this function, so
the two agree bit for bit (tests/test_nmea_kernel.py, tests/test_nmea_properties.py).

Numbers are read as an integer mantissa and a count of decimals, then divided by an exact power
of ten: ``float("4810.8509")`` and the array path could differ in the last bit, this cannot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.nmea.rejects import RejectReason
from ingest.nmea.sentences import (
    FIELD_COUNTS,
    GNS_QUALITY,
    KIND_GGA,
    KIND_GLL,
    KIND_RMC,
    KIND_VTG,
    KIND_ZDA,
    KINDS,
    KMH_PER_KNOT,
    MAX_DIGITS,
    MAX_FIELD_CHARS,
    MAX_SENTENCE_CHARS,
    MODE_CHARS,
    POW10_F_LIST,
    POW10_I_LIST,
    days_from_civil,
    talker_code,
)

NAN = float("nan")
_ADDRESS = re.compile(rb"[A-Z0-9]{1,15}")
_PROPRIETARY = re.compile(rb"P[A-Z0-9]{1,14}")
_HEXDIGITS = frozenset(b"0123456789ABCDEFabcdef")
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class _Malformed(Exception):
    """A field that does not parse; the message is the reject's detail."""


@dataclass(frozen=True, slots=True)
class Row:
    kind: int
    talker: int
    tod_us: int
    date_days: int
    lat: float
    lon: float
    speed_kmh: float
    course: float
    quality: int
    sats: int
    hdop: float
    alt_m: float


@dataclass(frozen=True, slots=True)
class Skip:
    address: str


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: RejectReason
    detail: str


Parsed = Row | Skip | Refuse


def xor_checksum(body: bytes) -> int:
    c = 0
    for b in body:
        c ^= b
    return c


def parse_decimal(f: bytes) -> tuple[int, int, bool, int] | None:
    """``(mantissa, decimals, negative, integer_digits)`` of ``-?d*(.d*)?``, or None."""
    if not f or len(f) > MAX_FIELD_CHARS:
        return None
    neg = f[0] == 45  # '-'
    body = f[1:] if neg else f
    dot = body.find(b".")
    ip, fp = (body, b"") if dot == -1 else (body[:dot], body[dot + 1 :])
    digits = ip + fp
    if not digits or not digits.isdigit() or len(digits) > MAX_DIGITS:
        return None
    return int(digits), len(fp), neg, len(ip)


def _unsigned(f: bytes, what: str) -> tuple[int, int, int]:
    d = parse_decimal(f)
    if d is None or d[2]:
        raise _Malformed(f"{what} {f!r} is not an unsigned decimal number")
    return d[0], d[1], d[3]


def _opt_float(f: bytes, what: str, *, signed: bool = False) -> float:
    if not f:
        return NAN
    d = parse_decimal(f)
    if d is None or (d[2] and not signed):
        raise _Malformed(f"{what} {f!r} is not a decimal number")
    v = d[0] / POW10_F_LIST[d[1]]
    return -v if d[2] else v


def parse_time(f: bytes) -> int:
    """Time of day in µs; ``hhmm60`` (a leap second) only as 23:59:60, kept as 23:59:59.999999."""
    if not f:
        raise _Malformed("empty time field")
    m, k, nint = _unsigned(f, "time")
    if nint != 6 or k > 6:
        raise _Malformed(f"time {f!r} is not hhmmss[.s]")
    ip = m // POW10_I_LIST[k]
    frac = m - ip * POW10_I_LIST[k]
    hh, mm, ss = ip // 10000, ip // 100 % 100, ip % 100
    if hh > 23 or mm > 59 or ss > 60 or (ss == 60 and (hh != 23 or mm != 59)):
        raise _Malformed(f"time {f!r} is not a valid time of day")
    if ss == 60:
        return 86_399_999_999
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + frac * POW10_I_LIST[6 - k]


def parse_angle(f: bytes, hemi: bytes, pos: bytes, neg: bytes, what: str) -> float:
    """``[d]ddmm.mmmm`` plus hemisphere -> signed degrees (range is checked per fix, later)."""
    m, k, nint = _unsigned(f, what)
    if nint < 3:
        raise _Malformed(f"{what} {f!r} is not [d]ddmm.m")
    deg = m // POW10_I_LIST[k] // 100
    minutes = (m - deg * 100 * POW10_I_LIST[k]) / POW10_F_LIST[k]
    if minutes >= 60.0:
        raise _Malformed(f"{what} {f!r} has 60 or more minutes")
    v = deg + minutes / 60.0
    if hemi == pos:
        return v
    if hemi == neg:
        return -v
    raise _Malformed(f"{what} hemisphere {hemi!r} is not {pos!r} or {neg!r}")


def parse_date(f: bytes) -> int:
    """``ddmmyy`` -> days since 1970; two-digit years 80-99 are 19yy, 00-79 are 20yy."""
    if not f:
        raise _Malformed("empty date field")
    m, k, nint = _unsigned(f, "date")
    if nint != 6 or k != 0:
        raise _Malformed(f"date {f!r} is not ddmmyy")
    dd, mo, yy = m // 10000, m // 100 % 100, m % 100
    year = 1900 + yy if yy >= 80 else 2000 + yy
    if not _calendar(year, mo, dd):
        raise _Malformed(f"date {f!r} is not a calendar date")
    return int(days_from_civil(year, mo, dd))


def _calendar(year: int, mo: int, dd: int) -> bool:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 1 <= mo <= 12 and 1 <= dd <= _DAYS_IN_MONTH[mo] + (1 if mo == 2 and leap else 0)


def _digits(f: bytes, lo: int, hi: int, what: str) -> int:
    if not lo <= len(f) <= hi or not f.isdigit():
        raise _Malformed(f"{what} {f!r} is not {lo}-{hi} digits" if lo != hi
                         else f"{what} {f!r} is not {lo} digits")  # fmt: skip
    return int(f)


def parse_zda_date(dd: bytes, mm: bytes, yyyy: bytes) -> int:
    """ZDA's day, month (1-2 digits each) and four-digit year -> days since 1970."""
    d, m, y = _digits(dd, 1, 2, "day"), _digits(mm, 1, 2, "month"), _digits(yyyy, 4, 4, "year")
    if not _calendar(y, m, d):
        raise _Malformed(f"date {dd!r}.{mm!r}.{yyyy!r} is not a calendar date")
    return int(days_from_civil(y, m, d))


def _position(fl: list[bytes], i: int) -> tuple[float, float] | None:
    """Latitude/longitude from fields i..i+3, or None when all four are empty."""
    if not (fl[i] or fl[i + 1] or fl[i + 2] or fl[i + 3]):
        return None
    lat = parse_angle(fl[i], fl[i + 1], b"N", b"S", "latitude")
    lon = parse_angle(fl[i + 2], fl[i + 3], b"E", b"W", "longitude")
    return lat, lon


def _speed(f: bytes) -> float:
    v = _opt_float(f, "speed")
    return v * KMH_PER_KNOT


def _sats(f: bytes) -> int:
    if not f:
        return -1
    if len(f) > 2 or not f.isdigit():
        raise _Malformed(f"satellites {f!r} is not an integer 0-99")
    return int(f)


def _mode_ok(f: bytes) -> bool:
    return len(f) == 1 and f[0] in MODE_CHARS


MISSING_CHECKSUM_DETAIL = "no '*hh' checksum (required)"


def too_long_detail(length: int) -> str:
    return (
        f"sentence of {length} characters (NMEA 0183 allows 82; fleetwatch reads up to "
        f"{MAX_SENTENCE_CHARS})"
    )


def address_of(raw: bytes) -> bytes:
    """The address field: from after ``$`` to the first ``,`` or ``*`` (or the end)."""
    end = len(raw)
    for sep in (b",", b"*"):
        i = raw.find(sep, 1)
        if i != -1 and i < end:
            end = i
    return raw[1:end]


def frame_check(raw: bytes, require_checksum: bool, *, limit: bool = True) -> bytes | Refuse:
    """The body between ``$`` and ``*`` if framing and checksum are right, else the refusal
    (``limit``: refuse more than MAX_SENTENCE_CHARS)."""
    if limit and len(raw) > MAX_SENTENCE_CHARS:
        return Refuse(RejectReason.TOO_LONG, too_long_detail(len(raw)))
    star = raw.find(b"*")
    if star == -1:
        if require_checksum:
            return Refuse(RejectReason.MISSING_CHECKSUM, MISSING_CHECKSUM_DETAIL)
        body = raw[1:]
    else:
        body, hx = raw[1:star], raw[star + 1 :]
        if len(hx) != 2 or hx[0] not in _HEXDIGITS or hx[1] not in _HEXDIGITS:
            return Refuse(RejectReason.BAD_CHECKSUM, f"checksum field {hx!r} is not two hex digits")
        want, got = int(hx, 16), xor_checksum(body)
        if want != got:
            return Refuse(RejectReason.BAD_CHECKSUM, f"checksum {want:02X}, computed {got:02X}")
    for b in body:
        if b < 32 or b > 126:
            return Refuse(RejectReason.MALFORMED, f"non-printable byte 0x{b:02X}")
    return body


def parse_sentence(raw: bytes, require_checksum: bool) -> Parsed:
    """Classify and parse one framed sentence (``$`` .. checksum, no line end).

    A proprietary address (``P`` + 1-14 of ``[A-Z0-9]``) has no length limit: fleetwatch reads
    nothing in it, so SiRF's 97-character ``$PSRF`` lines are skipped, not ``too_long``.  Its
    checksum and bytes are still checked: an unverified address would count line noise as
    sentence types (an unbounded set of ``skipped:*`` keys and metric labels)."""
    prop = _PROPRIETARY.fullmatch(address_of(raw)) is not None
    body = frame_check(raw, require_checksum, limit=not prop)
    if isinstance(body, Refuse):
        return body
    if prop:
        return Skip(body.split(b",")[0].decode())
    fl = body.split(b",")
    addr = fl[0]
    if not _ADDRESS.fullmatch(addr):
        return Refuse(
            RejectReason.MALFORMED, f"address field {addr[:16]!r} is not [A-Z0-9]{{1,15}}"
        )
    if len(addr) != 5:
        return Refuse(RejectReason.MALFORMED, f"address field {addr!r} is not 5 characters")
    fmt = addr[2:].decode()
    if fmt not in KINDS:
        return Skip(addr.decode())
    kind = KINDS[fmt]
    if len(fl) not in FIELD_COUNTS[kind]:
        if kind == KIND_GLL and len(fl) == 5:  # NMEA 1.5 GLL: no time, cannot be dated
            return Skip(addr.decode())
        return Refuse(
            RejectReason.MALFORMED,
            f"{fmt} with {len(fl)} fields (expected {' or '.join(map(str, FIELD_COUNTS[kind]))})",
        )
    try:
        return _parse_fields(kind, talker_code(addr[:2].decode()), fl)
    except _Malformed as exc:
        return Refuse(RejectReason.MALFORMED, f"{fmt}: {exc}")


def _parse_fields(kind: int, talker: int, fl: list[bytes]) -> Row | Refuse:
    if kind == KIND_RMC:
        status, mode = fl[2], (fl[12] if len(fl) >= 13 else b"")
        if status == b"V":
            return Refuse(RejectReason.NO_FIX, "RMC status V (void)")
        if mode == b"N":
            return Refuse(RejectReason.NO_FIX, "RMC mode N (no fix)")
        if status != b"A":
            raise _Malformed(f"status {status!r} is not A or V")
        if mode and not _mode_ok(mode):
            raise _Malformed(f"mode {mode!r} is not one of {MODE_CHARS.decode()}")
        # fl[13], NMEA 4.10's navigational status (S/C/U/V), says nothing about the fix: ignored.
        tod = parse_time(fl[1])
        pos = _position(fl, 3)
        speed, course, date = _speed(fl[7]), _opt_float(fl[8], "course"), parse_date(fl[9])
        if pos is None:
            return Refuse(RejectReason.NO_FIX, "RMC status A with an empty position")
        return Row(kind, talker, tod, date, pos[0], pos[1], speed, course, -1, -1, NAN, NAN)
    if kind == KIND_GLL:
        status, mode = fl[6], (fl[7] if len(fl) == 8 else b"")
        if status == b"V":
            return Refuse(RejectReason.NO_FIX, "GLL status V (void)")
        if mode == b"N":
            return Refuse(RejectReason.NO_FIX, "GLL mode N (no fix)")
        if status != b"A":
            raise _Malformed(f"status {status!r} is not A or V")
        if mode and not _mode_ok(mode):
            raise _Malformed(f"mode {mode!r} is not one of {MODE_CHARS.decode()}")
        tod = parse_time(fl[5])
        pos = _position(fl, 1)
        if pos is None:
            return Refuse(RejectReason.NO_FIX, "GLL status A with an empty position")
        return Row(kind, talker, tod, -1, pos[0], pos[1], NAN, NAN, -1, -1, NAN, NAN)
    if kind == KIND_ZDA:
        # fl[5], fl[6]: the local zone (hours, minutes); ZDA's time and date are UTC, so unread.
        if not (fl[1] and fl[2] and fl[3] and fl[4]):
            return Refuse(RejectReason.NO_FIX, "ZDA without time or date (receiver has no time)")
        tod = parse_time(fl[1])
        date = parse_zda_date(fl[2], fl[3], fl[4])
        return Row(kind, talker, tod, date, NAN, NAN, NAN, NAN, -1, -1, NAN, NAN)
    if kind == KIND_VTG:
        mode = fl[9] if len(fl) == 10 else b""
        if mode == b"N":
            return Refuse(RejectReason.NO_FIX, "VTG mode N (no fix)")
        if mode and not _mode_ok(mode):
            raise _Malformed(f"mode {mode!r} is not one of {MODE_CHARS.decode()}")
        course, speed = _opt_float(fl[1], "course"), _speed(fl[5])
        return Row(kind, talker, -1, -1, NAN, NAN, speed, course, -1, -1, NAN, NAN)
    # GGA and GNS share the layout up to field 9 (altitude), except field 6.
    if kind == KIND_GGA:
        q = fl[6]
        if len(q) != 1 or not 48 <= q[0] <= 56:
            raise _Malformed(f"quality {q!r} is not a digit 0-8")
        quality = q[0] - 48
        if quality == 0:
            return Refuse(RejectReason.NO_FIX, "GGA quality 0 (no fix)")
    else:
        mode = fl[6]
        if not 1 <= len(mode) <= 8 or any(c not in MODE_CHARS for c in mode):
            raise _Malformed(f"mode {mode!r} is not 1-8 of {MODE_CHARS.decode()}")
        valid = [c for c in mode if c != 78]
        if not valid:
            return Refuse(RejectReason.NO_FIX, f"GNS mode {mode.decode()} (no fix)")
        quality = GNS_QUALITY[valid[0]]
    tod = parse_time(fl[1])
    pos = _position(fl, 2)
    sats, hdop = _sats(fl[7]), _opt_float(fl[8], "HDOP")
    alt = _opt_float(fl[9], "altitude", signed=True)
    name = "GGA" if kind == KIND_GGA else "GNS"
    if pos is None:
        return Refuse(RejectReason.NO_FIX, f"{name} with a fix but an empty position")
    return Row(kind, talker, tod, -1, pos[0], pos[1], NAN, NAN, quality, sats, hdop, alt)

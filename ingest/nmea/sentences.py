"""What the decoder reads: talkers, sentence kinds, field layouts, and the parsed-row table.

The table is the contract between the two parsers (scalar reference and compiled) and the shared
epoch stage: both fill the same columns with bit-identical values, so everything downstream is
computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.nmea.rejects import RejectReason

#: The satellite-system talkers seen most often (for tests and docs).  Any other two-character
#: ``[A-Z0-9]`` talker that does not start with ``P`` (proprietary) is read as well: ``IN``
#: (integrated navigation), ``II``, ``EC``, ``U1`` ... carry ordinary RMC/GGA/GNS/GLL.
TALKERS: tuple[str, ...] = ("GP", "GN", "GL", "GA", "GB", "BD", "QZ")
KIND_RMC, KIND_GGA, KIND_GNS, KIND_VTG, KIND_GLL, KIND_ZDA = 0, 1, 2, 3, 4, 5
KINDS: dict[str, int] = {
    "RMC": KIND_RMC, "GGA": KIND_GGA, "GNS": KIND_GNS, "VTG": KIND_VTG, "GLL": KIND_GLL,
    "ZDA": KIND_ZDA,
}  # fmt: skip
#: Allowed field counts (address included): RMC 2.x without/with mode, 4.10 with nav status;
#: GGA fixed; GNS without/with 4.10 nav status; VTG without/with mode (2.3+); GLL with time and
#: status, without/with mode (2.3+); ZDA fixed.  (NMEA 1.5's GLL without time, 5 fields, cannot
#: be dated: it is skipped.)
FIELD_COUNTS: dict[int, tuple[int, ...]] = {
    KIND_RMC: (12, 13, 14),
    KIND_GGA: (15,),
    KIND_GNS: (13, 14),
    KIND_VTG: (9, 10),
    KIND_GLL: (7, 8),
    KIND_ZDA: (7,),
}
#: NMEA 0183's own limit, from '$' to the end of the checksum.  Longer sentences of the
#: supported kinds are read (RTK receivers send 85-100 characters: eight decimals of minutes,
#: differential age and station id) and counted as ``long_sentence``.
NMEA_STANDARD_CHARS = 82
#: The sane bound: longer sentences are ``too_long``.  The Rust ``nmea`` crate stops at 102,
#: after gpsd (overlong packets are usually two Garmin sentences merged); 120 leaves room for
#: 10-decimal RTK positions and NMEA 4.11's extra fields while still refusing merged sentences.
MAX_SENTENCE_CHARS = 120
MAX_FIELD_CHARS = 16
MAX_DIGITS = 15  # every numeric mantissa stays exact in int64 and float64
MODE_CHARS = b"ADEFMNPRS"
#: GNS mode character -> GGA-style quality (NMEA 4.10 table): the first non-N character wins.
GNS_QUALITY: dict[int, int] = {
    ord("A"): 1, ord("D"): 2, ord("P"): 3, ord("R"): 4, ord("F"): 5,
    ord("E"): 6, ord("M"): 7, ord("S"): 8,
}  # fmt: skip
KMH_PER_KNOT = 1.852
#: Talker code of a two-character talker: first character * 256 + second (int16).
TALKER_CODE_LIMIT = 256 * 91


def talker_code(talker: str) -> int:
    return ord(talker[0]) * 256 + ord(talker[1])


def talker_name(code: int) -> str:
    return chr(code >> 8) + chr(code & 255)


US_PER_DAY = 86_400_000_000
#: Powers of ten as exact floats / ints: both parsers divide by these, never by ``10**k`` computed
#: differently, so their floats agree bit for bit.
POW10_F = np.array([10.0**i for i in range(19)], dtype=np.float64)
POW10_I = np.array([10**i for i in range(19)], dtype=np.int64)
POW10_F_LIST: list[float] = [float(x) for x in POW10_F]
POW10_I_LIST: list[int] = [int(x) for x in POW10_I]


def days_from_civil(y: npt.ArrayLike, m: npt.ArrayLike, d: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 (H. Hinnant's algorithm, integer only: same result scalar or array)."""
    y = np.asarray(y, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468, dtype=np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedRows:
    """Sentences that parsed to a usable RMC/GGA/GNS/GLL/VTG/ZDA, one row each, in input order.

    ``tod_us`` is the time of day (-1 for VTG, which has none); a leap second ``..60`` is kept as
    86_399_999_999.  ``date_days`` is -1 when the sentence has no date (RMC and ZDA have one).
    ``talker`` is :func:`talker_code`.  A ZDA row has no position (NaN).
    """

    seq: npt.NDArray[np.int64]
    payload: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    talker: npt.NDArray[np.int16]
    tod_us: npt.NDArray[np.int64]
    date_days: npt.NDArray[np.int64]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    speed_kmh: npt.NDArray[np.float64]
    course: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int8]
    sats: npt.NDArray[np.int8]
    hdop: npt.NDArray[np.float64]
    alt_m: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.seq)


ROW_DTYPES: dict[str, npt.DTypeLike] = {
    "seq": np.int64, "payload": np.int64, "kind": np.int8, "talker": np.int16,
    "tod_us": np.int64, "date_days": np.int64, "lat": np.float64, "lon": np.float64,
    "speed_kmh": np.float64, "course": np.float64, "quality": np.int8, "sats": np.int8,
    "hdop": np.float64, "alt_m": np.float64,
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseOutput:
    """Everything the parse stage found in one batch.

    ``starts``/``ends`` locate every framed sentence (by ``seq``) in ``buffer``, the payloads
    joined with ``\\n``; ``payload_of`` maps seq -> payload index.
    """

    buffer: bytes
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    payload_of: npt.NDArray[np.int64]
    rows: ParsedRows
    rejects: list[tuple[int, RejectReason, str]]  # (seq, reason, detail)
    skipped: dict[str, int]
    fallback_rows: int = 0  # sentences the compiled parser handed to the scalar parser
    base: int = 0  # where the joined payloads start in ``buffer``

    def sentence(self, seq: int) -> bytes:
        return self.buffer[self.base + int(self.starts[seq]) : self.base + int(self.ends[seq])]

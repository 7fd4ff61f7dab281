"""Accepted GPS fixes, as one record (for humans and tests) and as columns (for the hot path).

Every stage after the decoder is vectorised, so fixes travel as a :class:`FixBatch`: one numpy
array per field, all of one length.  A single :class:`Fix` exists for the CLI, for tests and for
the scalar reference decoder; converting between the two is lossless.

Times are integer microseconds since the Unix epoch, UTC, everywhere in the core: they sort,
subtract and vectorise exactly, and they are what PostgreSQL's ``timestamptz`` stores.
Missing optional values are NaN for floats and -1 for small integers, never Python ``None``, so
the columns stay numeric.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

US_PER_S = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: Column name -> numpy dtype.  ``unit_id`` and ``talker`` are numpy unicode strings.
FIX_COLUMNS: dict[str, npt.DTypeLike] = {
    "unit_id": np.str_,
    "t_us": np.int64,  # fix time (from the receiver), µs since epoch UTC
    "recv_us": np.int64,  # receive time (from the MQTT shell's clock), µs since epoch UTC
    "lat": np.float64,
    "lon": np.float64,
    "speed_kmh": np.float32,  # NaN when unknown (GGA-only unit)
    "course": np.float32,  # degrees true, NaN when unknown
    "quality": np.int8,  # GGA fix quality 0-8; -1 when unknown (RMC-only unit)
    "sats": np.int8,  # satellites in use; -1 when unknown
    "hdop": np.float32,  # NaN when unknown
    "alt_m": np.float32,  # altitude above mean sea level, NaN when unknown
    "talker": np.str_,  # "GP", "GN", "GL", "GA", "GB", "BD", "QZ"
}


def us_to_datetime(t_us: int) -> dt.datetime:
    """UTC datetime for a µs timestamp (exact: no float round trip)."""
    return _EPOCH + dt.timedelta(microseconds=int(t_us))


def datetime_to_us(t: dt.datetime) -> int:
    """µs timestamp for an aware datetime; naive datetimes are refused, not guessed."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: fleetwatch only takes timezone-aware times")
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def iso_utc(t_us: int) -> str:
    """ISO-8601 UTC with a ``Z`` suffix, milliseconds kept only when non-zero."""
    t = us_to_datetime(t_us)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=1 << 16)
def us_from_iso(text: str) -> int:
    """The inverse of :func:`iso_utc` (any ISO-8601 text with an offset or ``Z``; a naive one
    raises ``ValueError``, as :func:`datetime_to_us` does).  Cached: a restart reads back
    thousands of records whose times repeat (opening, hops, the minute a batch was decided)."""
    return datetime_to_us(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """One accepted position of one GPS unit at one epoch."""

    unit_id: str
    t_us: int
    recv_us: int
    lat: float
    lon: float
    speed_kmh: float = float("nan")
    course: float = float("nan")
    quality: int = -1
    sats: int = -1
    hdop: float = float("nan")
    alt_m: float = float("nan")
    talker: str = "GP"

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ValueError(f"latitude {self.lat} out of range [-90, 90]")
        if not -180.0 <= self.lon <= 180.0:
            raise ValueError(f"longitude {self.lon} out of range [-180, 180]")

    def to_json_dict(self) -> dict[str, Any]:
        """The ``fleetwatch decode`` output object (a stable interface: see README)."""

        def opt(x: float, nd: int) -> float | None:
            return None if x != x else round(float(x), nd)

        return {
            "unit": self.unit_id,
            "t": iso_utc(self.t_us),
            "lat": round(self.lat, 7),
            "lon": round(self.lon, 7),
            "speed_kmh": opt(self.speed_kmh, 2),
            "course": opt(self.course, 1),
            "quality": None if self.quality < 0 else self.quality,
            "sats": None if self.sats < 0 else self.sats,
            "hdop": opt(self.hdop, 2),
            "alt_m": opt(self.alt_m, 1),
            "talker": self.talker,
        }


@dataclass(frozen=True, slots=True)
class FixBatch:
    """Columns of accepted fixes; row *i* of every array is one fix.

    Arrays are owned by the batch and must not be mutated after construction: batches are
    handed to several stages (store, geofence) that may read them concurrently.
    """

    unit_id: npt.NDArray[np.str_]
    t_us: npt.NDArray[np.int64]
    recv_us: npt.NDArray[np.int64]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    speed_kmh: npt.NDArray[np.float32]
    course: npt.NDArray[np.float32]
    quality: npt.NDArray[np.int8]
    sats: npt.NDArray[np.int8]
    hdop: npt.NDArray[np.float32]
    alt_m: npt.NDArray[np.float32]
    talker: npt.NDArray[np.str_]
    _len: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.t_us)
        for name in FIX_COLUMNS:
            col = getattr(self, name)
            if not isinstance(col, np.ndarray) or col.ndim != 1 or len(col) != n:
                raise ValueError(f"FixBatch column {name!r} must be a 1-D array of length {n}")
        object.__setattr__(self, "_len", n)

    def __len__(self) -> int:
        return self._len

    @classmethod
    def empty(cls) -> FixBatch:
        return cls(**{name: np.empty(0, dtype=dtype) for name, dtype in FIX_COLUMNS.items()})

    @classmethod
    def from_fixes(cls, fixes: Iterable[Fix]) -> FixBatch:
        rows = list(fixes)
        if not rows:
            return cls.empty()
        return cls(
            **{
                name: np.array([getattr(f, name) for f in rows], dtype=dtype)
                for name, dtype in FIX_COLUMNS.items()
            }
        )

    def to_fixes(self) -> list[Fix]:
        cols = {name: getattr(self, name).tolist() for name in FIX_COLUMNS}
        return [Fix(**{name: cols[name][i] for name in FIX_COLUMNS}) for i in range(len(self))]

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> FixBatch:
        """Rows selected by an integer index or boolean mask (a new batch, arrays copied)."""
        return FixBatch(**{name: getattr(self, name)[index] for name in FIX_COLUMNS})

    @staticmethod
    def concat(batches: Sequence[FixBatch]) -> FixBatch:
        parts = [b for b in batches if len(b)]
        if not parts:
            return FixBatch.empty()
        if len(parts) == 1:
            return parts[0]
        return FixBatch(
            **{name: np.concatenate([getattr(b, name) for b in parts]) for name in FIX_COLUMNS}
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Input we refused, kept with its reason so an operator can see what a unit sent.

    ``payload`` is the offending sentence (or the whole MQTT payload when the payload itself
    was refused, e.g. unknown unit or oversize), truncated by the producer to a bounded size.
    """

    topic: str
    unit_id: str | None
    reason: str  # a stable reason code, e.g. "bad_checksum", "unknown_unit"
    detail: str  # a human sentence: what was wrong and where
    payload: bytes
    recv_us: int
    #: Identity of the message this came from (see :func:`dead_letter_source`): with topic,
    #: reason and payload it makes a dead letter's key, so a QoS 1 redelivery of the same
    #: message is stored once, while the same bad bytes in two different messages are two.
    source: bytes = b""


def dead_letter_source(message: bytes, rank: int = 0) -> bytes:
    """A short digest of the whole MQTT payload plus the reject's rank within it."""
    return hashlib.blake2b(message, digest_size=16).digest() + rank.to_bytes(4, "big")

"""Why the decoder refused a sentence: stable reason codes (they are stored and graphed)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.fixes import FixBatch


class RejectReason(enum.StrEnum):
    """Stable codes; each is explained, with its rule, in docs/nmea.md."""

    TOO_LONG = "too_long"  # more than 120 characters from '$' to the end of the checksum
    MISSING_CHECKSUM = "missing_checksum"  # no '*hh' while checksums are required
    BAD_CHECKSUM = "bad_checksum"  # '*hh' not two hex digits, or XOR mismatch
    MALFORMED = "malformed"  # wrong field count, unparseable field, non-ASCII byte
    NO_FIX = "no_fix"  # RMC status V, RMC/GNS mode N, GGA quality 0, empty position
    ZERO_POSITION = "zero_position"  # exactly 0,0
    OUT_OF_RANGE = "out_of_range"  # |lat| > 90 or |lon| > 180
    POWER_UP_DEFAULT = "power_up_default"  # |lat| == 90 exactly, or a date in 1980 or earlier
    UNDATED = "undated"  # a time of day only, no date around it, no real receive time
    FUTURE_TIME = "future_time"  # more than max_future_s ahead of receive time
    WEEK_ROLLOVER = "week_rollover"  # ~k*1024 weeks late and not corrected
    TOO_OLD = "too_old"  # older than max_age_days, not a rollover
    DUPLICATE = "duplicate"  # same unit, same fix time as an accepted fix
    IMPLAUSIBLE_JUMP = "implausible_jump"  # faster than max_speed_kmh from the time-nearest fix


@dataclass(frozen=True, slots=True, kw_only=True)
class SentenceReject:
    """One refused sentence (or epoch, attributed to its first sentence)."""

    payload_index: int
    unit_id: str
    reason: RejectReason
    detail: str
    sentence: bytes
    recv_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeResult:
    """Accepted fixes as columns, rejects in input order, and counters.

    ``counts`` keys: ``sentences`` (framed), ``accepted`` (fixes), ``merged`` (sentences folded
    into another sentence's fix), ``dating`` (ZDA sentences read as dating sources),
    ``skipped:<ADDRESS>``, ``reject:<reason>``, and the notes ``corrected:week_rollover``,
    ``restamped:leap_repeat``, ``reanchored``, ``long_sentence`` (sentences of 83-120
    characters that were read) and ``rejects_not_kept`` (rejects counted but without a record:
    at most 100 records per payload).  Every framed sentence is counted exactly once under
    ``accepted``, ``merged``, ``dating``, ``skipped:*`` or ``reject:*``.
    """

    fixes: FixBatch
    rejects: list[SentenceReject]
    counts: dict[str, int]

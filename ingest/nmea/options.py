"""Decoder configuration: every limit has its unit in its name and a documented default.

The defaults are the rules of docs/nmea.md; a deployment changes them per fleet (a fleet of
boats would raise ``max_speed_kmh``; a test replaying a 2009 log sets ``max_age_days`` high).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: 1024 GPS weeks in microseconds: the period of the 10-bit week counter in the GPS navigation
#: message, after which a receiver with a stale firmware epoch reports dates 19.6 years late.
WEEK_ROLLOVER_US = 1024 * 7 * 86_400 * 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeOptions:
    """How strict the decoder is.  See docs/nmea.md for the rule each field controls."""

    #: Refuse sentences without ``*hh``.  Units that send none must be configured explicitly.
    require_checksum: bool = True
    #: A fix more than this ahead of its receive time is ``future_time``.
    max_future_s: float = 300.0
    #: A fix older than this (relative to receive time) is ``too_old``, unless it is a GPS
    #: week-rollover date (see ``week_rollover``).  Store-and-forward backlogs are hours, not weeks.
    max_age_days: float = 30.0
    #: ``correct``: a date ~k*1024 weeks in the past whose corrected date is plausible (within
    #: ``max_age_days`` / ``max_future_s`` of receive time) is moved forward; ``reject``: refused.
    week_rollover: Literal["correct", "reject"] = "correct"
    #: A fix with a time of day only (GGA, GNS, GLL) and no RMC/ZDA date of its unit around it
    #: is dated by its receive time (a live receive time is real); ``False``: rejected as
    #: ``undated`` (an archive replayed with an assumed receive time: never the wall clock).
    date_from_receive_time: bool = True
    #: Speed between a fix and the time-nearest accepted fix of its unit above which the fix is
    #: an ``implausible_jump``.
    max_speed_kmh: float = 250.0
    #: Distance always allowed between two fixes (GPS noise), added to ``max_speed * dt``.
    jump_tolerance_m: float = 5.0
    #: Time differences shorter than this count as this long in the jump check, so that 10 Hz
    #: receivers, leap seconds (235960 -> 000000) and re-stamped repeats do not look like jumps.
    jump_min_dt_s: float = 1.0
    #: After this many consecutive jump rejects of a unit that are plausible among themselves,
    #: the last one is accepted and becomes the unit's new anchor (re-anchoring, docs/nmea.md).
    reanchor_after: int = 3
    #: Accepted fixes remembered per unit (most recent by fix time) for duplicate and jump
    #: checks across batches: the bound on the decoder's memory per unit (24 bytes a fix).
    #: 64 covers a QoS 1 redelivery window at 1 Hz; older duplicates (and any after a restart,
    #: which starts with no history) are caught by the store's idempotent insert.
    history_per_unit: int = 64

    def __post_init__(self) -> None:
        if self.week_rollover not in ("correct", "reject"):
            raise ValueError(
                f"week_rollover must be 'correct' or 'reject', not {self.week_rollover!r}"
            )
        for name in ("max_future_s", "max_age_days", "max_speed_kmh", "jump_min_dt_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_future_s", "max_age_days"):  # become integer microseconds
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.jump_tolerance_m < 0:
            raise ValueError(f"jump_tolerance_m must be >= 0, got {self.jump_tolerance_m!r}")
        if self.reanchor_after < 1:
            raise ValueError(f"reanchor_after must be >= 1, got {self.reanchor_after!r}")
        if self.history_per_unit < 1:
            raise ValueError(f"history_per_unit must be >= 1, got {self.history_per_unit!r}")

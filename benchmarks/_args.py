"""argparse types for the benchmarks' sizes, counts and durations.

A zero or negative size used to reach the benchmark itself: an IndexError on an empty list of
repeats, a ZeroDivisionError in a rate, or an empty table set up in a private PostgreSQL for
nothing.  These types refuse it while the options are parsed, so the user gets argparse's usage
error naming the option and the accepted form (``argument --repeats: expected a whole number
>= 1, got '0'``) before any database, broker or scenario is set up.
"""

from __future__ import annotations

import argparse
import math


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return value


def _real(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        bound = ">= 0" if zero_ok else "> 0"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count or size: 1, 2, ..."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """A count where 0 means none (or 'any free one', for a port)."""
    return _whole(text, 0)


def positive_float(text: str) -> float:
    """A duration or a rate: finite and > 0."""
    return _real(text, zero_ok=False)


def non_negative_float(text: str) -> float:
    """A duration where 0 means none (a warm-up)."""
    return _real(text, zero_ok=True)


__all__ = ["non_negative_float", "non_negative_int", "positive_float", "positive_int"]

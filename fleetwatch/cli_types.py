"""argparse types for the subcommands' numbers and dates: a bad value is a usage error.

Bad arguments exit 2 (usage error) in every subcommand, and argparse's own message named the
option but not the form it takes (``invalid float value: 'abc'``), while values of the right
type but out of range were found later, by the subcommand or the library under it, with exit
1 in some (``fleetwatch replay --batch-payloads 0``) and 2 in others.  These types check both
while parsing, so every such error is one line naming the option and what it accepts::

    fleetwatch replay: error: argument --batch-payloads: expected a whole number >= 1, got '0'
    fleetwatch simulate: error: argument --date: expected a date YYYY-MM-DD, got '2026-02-30'
      (day is out of range for month)

Standard library only: ``fleetwatch --help`` imports nothing heavy (fleetwatch/cli.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return value


def _real(text: str, *, zero_ok: bool, most: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low_ok = value >= 0 if zero_ok else value > 0
    if not (math.isfinite(value) and low_ok and value <= most):
        bound = ">= 0" if zero_ok else "> 0"
        if most != math.inf:
            bound = f"between 0 and {most:g}"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count or size: 1, 2, ..."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """A count where 0 means none."""
    return _whole(text, 0)


def positive_float(text: str) -> float:
    """A duration, rate or distance: finite and > 0."""
    return _real(text, zero_ok=False)


def non_negative_float(text: str) -> float:
    """A duration or rate where 0 means none: finite and >= 0."""
    return _real(text, zero_ok=True)


def fraction(text: str) -> float:
    """A share: 0 to 1."""
    return _real(text, zero_ok=True, most=1.0)


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    value = _whole(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return value


def iso_date(text: str) -> dt.date:
    """A calendar date, YYYY-MM-DD (``2026-02-30`` is refused, with the reason)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        why = str(exc)
        detail = f" ({why})" if why and "isoformat" not in why else ""
        raise argparse.ArgumentTypeError(
            f"expected a date YYYY-MM-DD, got {text!r}{detail}"
        ) from None


__all__ = [
    "fraction",
    "iso_date",
    "non_negative_float",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_int",
]

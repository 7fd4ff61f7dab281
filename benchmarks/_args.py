"""argparse types for the benchmarks' sizes, counts and durations.

A zero or negative size used to reach the benchmark itself: an IndexError on an empty list of
repeats, a ZeroDivisionError in a rate, or an empty table set up in a private PostgreSQL for
nothing.  These types refuse it while the options are parsed, so the user gets argparse's usage
error naming the option and the accepted form (``argument --repeats: expected a whole number
>= 1, got '0'``) before any database, broker or scenario is set up.  They are the subcommands'
own (fleetwatch/cli_types.py, standard library only), so both say the same thing.
"""

from __future__ import annotations

from fleetwatch.cli_types import non_negative_float, non_negative_int, positive_float, positive_int

__all__ = ["non_negative_float", "non_negative_int", "positive_float", "positive_int"]

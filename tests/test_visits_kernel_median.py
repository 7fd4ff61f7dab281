"""The visit kernel's HDOP median: selected, not sorted, and still the sorted one bit for bit.

``schedule.visits_kernel._median_hdop`` used to sort a visit's HDOPs (numba's sort was half of
a re-run's visit detection); it now selects the middle order statistics in place.  The promise
is the value the sort gave, to the bit: any values (repeats, infinities, NaNs skipped, zeros of
either sign, which take the sort), any count, odd or even.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from schedule import visits_kernel

values = st.one_of(
    st.sampled_from([0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 2.5, math.nan, math.inf, 0.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)


@njit(cache=False)
def sorted_median(hdop: Any, first: int, last: int) -> float:
    """What the kernel computed before, compiled as it was: numba's np.sort of the non-NaN
    values (its own order for zeros of either sign), middle value or 0.5 * (a + b)."""
    buf = np.empty(last - first + 1, dtype=np.float64)
    k = 0
    for j in range(first, last + 1):
        h = hdop[j]
        if not math.isnan(h):
            buf[k] = h
            k += 1
    if k == 0:
        return np.nan
    srt = np.sort(buf[:k])
    h2 = k // 2
    if k % 2:
        return float(srt[h2])
    return float(0.5 * (srt[h2 - 1] + srt[h2]))


def bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


@settings(max_examples=1500, deadline=None)
@given(st.lists(values, min_size=1, max_size=80), st.data())
def test_selected_median_is_the_sorted_one(vals: list[float], data: st.DataObject) -> None:
    h = np.array(vals, dtype=np.float64)
    first = data.draw(st.integers(0, len(vals) - 1))
    last = data.draw(st.integers(first, len(vals) - 1))
    got = visits_kernel._median_hdop(h, first, last)
    want = sorted_median(h, first, last)
    assert bits(got) == bits(want)  # NaN: the same NaN too


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.5, 5.0, width=32), min_size=1, max_size=400))
def test_long_visits_of_realistic_hdops(vals: list[float]) -> None:
    h = np.array(vals, dtype=np.float64)
    got = visits_kernel._median_hdop(h, 0, len(h) - 1)
    assert bits(got) == bits(float(np.median(h)))

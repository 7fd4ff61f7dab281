"""Medians selected, not sorted, and still the sorted ones bit for bit.

:mod:`schedule.select_kernel` selects the middle order statistics in place (Wirth), for the
visit kernel's HDOP median and the stop kernel's position medians: here against numpy's sort,
on any values without NaN (its contract), odd and even counts.  Then
``schedule.visits_kernel._median_hdop``, which used to sort a visit's HDOPs (numba's sort was
half of a re-run's visit detection): the value the sort gave, to the bit, for any values
(repeats, infinities, NaNs skipped, zeros of either sign, which take the sort), any count.
(The stop kernel's medians are held to the numpy reference in tests/test_stops_kernel.py.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from schedule import select_kernel, visits_kernel

values = st.one_of(
    st.sampled_from([0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 2.5, math.nan, math.inf, 0.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)


def same(got: float, want: float) -> bool:
    """The same float: bit for bit, except that a zero may be either zero (the selection's
    contract: equal values are interchangeable, and ``-0.0 == 0.0``)."""
    return got == want if want == 0.0 else bits(got) == bits(want)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.6, 1.0, 1.0, 2.5, math.inf, -math.inf, 0.0, -0.0]),
            st.floats(allow_nan=False, width=64),
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 5),
)
def test_selection_is_the_sort(vals: list[float], spare: int) -> None:
    """select_middle gives the sorted middle value and leaves the smaller ones in front (a
    permutation of the values, the spare tail untouched); lower_middle then gives the one
    below it."""
    m = len(vals)
    buf = np.array(vals + [7.0] * spare, dtype=np.float64)
    srt = np.sort(np.array(vals, dtype=np.float64))
    upper = select_kernel.select_middle(buf, m)
    assert same(upper, float(srt[m // 2]))
    assert sorted(buf[:m].tolist()) == srt.tolist()
    assert buf[m:].tolist() == [7.0] * spare
    assert all(v <= upper for v in buf[: m // 2].tolist())
    assert all(v >= upper for v in buf[m // 2 + 1 : m].tolist())
    if m % 2 == 0:
        assert same(select_kernel.lower_middle(buf, m), float(srt[m // 2 - 1]))


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

"""The middle order statistics of a scratch array, selected in place (compiled helpers).

Why selection: a median needs the one or two middle values, not the whole order; Wirth's
selection finds them in O(n) where a sort costs ~50 ns a value (numba's sort was half of a
re-run's visit detection).  The visit kernel's HDOP median
(:func:`schedule.visits_kernel._median_hdop`) and the stop kernel's position medians
(:func:`schedule.stops_kernel._median`) both select this way.  The selection lives here, in a
module that imports nothing of ours, because the stop kernel cannot import the visit kernel:
``visits_kernel`` imports ``schedule.visits``, which imports ``schedule.stops``, which
imports ``stops_kernel``.

Exactness: equal floats are the same value, so the selected middle values are the sorted
ones bit for bit, except that ``-0.0 == 0.0`` (the callers sort when a zero could be among
the values, or show it cannot) and that NaN compares false (the callers leave NaN out, or
sort).  tests/test_visits_kernel_median.py holds both against a sort.

Numba's cache: a caller's cached machine code includes these functions, and numba checks only
the caller's own file for changes (numba issue #1833).  After editing this file, touch
``visits_kernel.py`` and ``stops_kernel.py`` (or clear their ``__pycache__``), or they keep
running the old selection.
"""

from __future__ import annotations

from typing import Any

from numba import njit


@njit(cache=True, nogil=True)
def select_middle(buf: Any, m: int) -> float:
    """``np.sort(buf[:m])[m // 2]`` for m >= 1 values without NaN, by Wirth's selection in
    place: afterwards ``buf[:m // 2] <= buf[m // 2] <= buf[m // 2 + 1:m]``."""
    k = m // 2
    left = 0
    right = m - 1
    while left < right:
        pivot = buf[k]
        i = left
        j = right
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while pivot < buf[j]:
                j -= 1
            if i <= j:
                tmp = buf[i]
                buf[i] = buf[j]
                buf[j] = tmp
                i += 1
                j -= 1
        if j < k:
            left = i
        if k < i:
            right = j
    return float(buf[k])


@njit(cache=True, nogil=True)
def lower_middle(buf: Any, m: int) -> float:
    """``np.sort(buf[:m])[m // 2 - 1]`` for an even m >= 2, once :func:`select_middle` has
    run on ``buf[:m]``: the largest of the ``m // 2`` smallest values it left in front."""
    lower = buf[0]
    for i in range(1, m // 2):
        if buf[i] > lower:
            lower = buf[i]
    return float(lower)

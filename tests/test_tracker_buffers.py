"""The tracker's amortised column appends (``VehicleTracker._append``) are plain concatenation.

A vehicle's columns (fix times, positions, speeds, HDOP, fence pairs) are views of buffers with
spare room, so a round of ~40 fixes no longer copies ~8,000 kept ones.  Two things must hold:
the columns always equal what ``np.concatenate`` (with the trims, re-sorts and site removals in
between) would give, and an array handed out before an append (a re-run's ``Track``) never
changes.  Then the events cannot change either; the second property checks that end to end,
round by round, against a tracker that concatenates, on random chunkings with late chunks,
duplicates and clock advances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule.tracker import VehicleTracker, _cut_head, _grown
from tests.test_tracker_incremental import rounds
from tests.test_visits_properties import FENCES, PARAMS, build, leg
from tests.test_visits_synthetic import TrackBuilder, feed_all

_COLUMNS = ("_t", "_lon", "_lat", "_speed", "_hdop", "_in_t", "_in_site", "_near_t", "_near_site")


class _Concatenating(VehicleTracker):
    """The reference: every append copies the whole column, as before the buffers."""

    def _append(self, name: str, new: npt.NDArray[Any]) -> None:
        setattr(self, name, np.concatenate((getattr(self, name), new)))

    def _append_fixes(self, t: Any, lon: Any, lat: Any, speed: Any, hdop: Any) -> None:
        names = ("_t", "_lon", "_lat", "_speed", "_hdop")
        for name, new in zip(names, (t, lon, lat, speed, hdop), strict=True):
            self._append(name, new)

    def _append_pairs(self, t_name: str, site_name: str, t: Any, site: Any) -> None:
        self._append(t_name, t)
        self._append(site_name, site)


# an operation on one column: ("append", n) | ("trim", k) | ("resort", seed)
_op = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 70)),
    st.tuples(st.just("trim"), st.integers(0, 50)),
    st.tuples(st.just("resort"), st.integers(0, 2**16)),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(_op, max_size=40),
    dtype=st.sampled_from([np.int64, np.float64, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_append_equals_concatenate_and_never_changes_a_handed_out_view(
    ops: list[tuple[str, int]], dtype: type, seed: int
) -> None:
    tr = VehicleTracker("V", ("a",), PARAMS)
    tr._speed = np.empty(0, dtype=dtype)
    model = np.empty(0, dtype=dtype)
    rng = np.random.default_rng(seed)
    handed_out: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = []
    for kind, arg in ops:
        if kind == "append":
            new = rng.integers(-(10**6), 10**6, arg).astype(dtype)
            tr._append("_speed", new)
            model = np.concatenate((model, new))
        elif kind == "trim":  # as _trim does: a view of the tail
            tr._speed = tr._speed[arg:]
            model = model[arg:]
        else:  # as the out-of-order path does: a fancy-indexed copy
            o = np.random.default_rng(arg).permutation(len(model))
            tr._speed, model = tr._speed[o], model[o]
        assert tr._speed.dtype == model.dtype
        np.testing.assert_array_equal(tr._speed, model)
        handed_out.append((tr._speed, tr._speed.copy()))
        for view, then in handed_out:
            np.testing.assert_array_equal(view, then)


@settings(max_examples=60, deadline=None)
@given(
    legs=st.lists(leg, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_buffered_tracker_reports_what_a_concatenating_one_reports(
    legs: list[tuple[str, int, object]], seed: int, data: st.DataObject
) -> None:
    arrays = build(legs, seed).arrays()
    n = len(arrays["t_us"])
    step = data.draw(st.integers(1, 120), label="chunk size")
    cuts = sorted(set(range(step, n, step)))
    chunks = [np.arange(a, b) for a, b in zip([0, *cuts], [*cuts, n], strict=True) if b > a]
    order = list(range(len(chunks)))
    if data.draw(st.booleans(), label="some chunks late"):
        order = data.draw(st.permutations(order), label="order")
    chunked = [chunks[i] for i in order]
    if data.draw(st.booleans(), label="duplicates"):
        chunked.insert(len(chunked) // 2, chunked[0])
    clock = data.draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from([1, 400])),
            min_size=len(chunked),
            max_size=len(chunked),
        ),
        label="clock advances",
    )
    note(f"{n} fixes, {len(chunked)} rounds, order {order}")
    for incremental in (True, False):
        fast = VehicleTracker("V", FENCES.ids, PARAMS, incremental=incremental)
        ref = _Concatenating("V", FENCES.ids, PARAMS, incremental=incremental)
        got = rounds(fast, arrays, FENCES, chunked, clock)
        want = rounds(ref, arrays, FENCES, chunked, clock)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"round {k} differs (incremental={incremental})"
        for name in _COLUMNS:
            np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
            assert getattr(fast, name).dtype == getattr(ref, name).dtype, name


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, max_size=40), seed=st.integers(0, 2**16))
def test_a_group_cut_at_its_head_keeps_appending_in_place(
    ops: list[tuple[str, int]], seed: int
) -> None:
    """_grown / _cut_head (the fix columns and pair tables, as _trim cuts them): every column
    equals concatenation with the cuts, a view handed out never changes, and an append after
    a cut writes into the same buffers while they have room (no copy of the kept values)."""
    rng = np.random.default_rng(seed)
    cols: tuple[npt.NDArray[Any], ...] = (np.empty(0, np.int64), np.empty(0, np.int32))
    model = [c.copy() for c in cols]
    g = None
    handed_out: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = []
    for kind, arg in ops:
        if kind == "append" and arg:
            new = (rng.integers(0, 10**9, arg), rng.integers(0, 99, arg).astype(np.int32))
            before = g
            g = _grown(g, cols, new)
            if before is not None and before[1][0] is cols[0] and before[3] + arg <= before[2]:
                assert g[0][0] is before[0][0]  # in place
                assert g[0][1] is before[0][1]
            cols = g[1]
            model = [np.concatenate((m, x)) for m, x in zip(model, new, strict=True)]
        elif kind == "trim":
            k = min(arg, len(cols[0]))
            g, cols = _cut_head(g, cols, k)
            model = [m[k:] for m in model]
        elif kind == "resort":  # a copy the group does not know: the next append starts anew
            o = np.random.default_rng(arg).permutation(len(model[0]))
            cols = tuple(c[o] for c in cols)
            model = [m[o] for m in model]
        for c, m in zip(cols, model, strict=True):
            assert c.dtype == m.dtype
            np.testing.assert_array_equal(c, m)
            handed_out.append((c, c.copy()))
        for view, then in handed_out:
            np.testing.assert_array_equal(view, then)


def test_a_trim_leaves_the_columns_appending_in_place_and_equal_to_concatenation() -> None:
    """A long drive past the fences with a short horizon trims many times; after each trim the
    next round appends into the same buffers (before, every trim was followed by a fresh
    buffer and a copy of every kept fix), and every column and event still equals what a
    concatenating tracker has."""
    b = TrackBuilder(seed=3).start(-600, 0).drive(0, 0, 15).park(300).drive(-3000, 0, 15)
    b.drive(-3000, -3000, 15).drive(0, 600, 15).park(200).drive(-3000, 0, 15)
    arrays = b.arrays()
    n = len(arrays["t_us"])
    fast = VehicleTracker("V", FENCES.ids, PARAMS)
    ref = _Concatenating("V", FENCES.ids, PARAMS)
    trims = in_place = 0
    for lo in range(0, n, 20):
        idx = [np.arange(lo, min(lo + 20, n))]
        first = len(fast._t) and int(fast._t[0])
        buf = fast._fix_buf[0][0] if fast._fix_buf is not None else None
        assert feed_all(fast, arrays, FENCES, idx, finish=False) == feed_all(
            ref, arrays, FENCES, idx, finish=False
        )
        if len(fast._t) and first and int(fast._t[0]) != first:
            trims += 1
            assert fast._fix_buf is not None
            in_place += fast._fix_buf[0][0] is buf
        for name in _COLUMNS:
            np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
            assert getattr(fast, name).dtype == getattr(ref, name).dtype, name
    assert fast.finish() == ref.finish()
    assert trims >= 5
    assert in_place >= trims - 2  # a trim rarely comes when the buffers are full anyway

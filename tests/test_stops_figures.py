"""The compiled stop figures (schedule.stops_kernel.stop_figures) equal the reference rule
(schedule.stops.stop_figures_reference) bit for bit: sites, medians and head boxes the
tracker reports, on drawn positions incl. NaN, duplicates, ties and long slices."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from schedule import stops_kernel
from schedule.stops import StopRecord, stop_figures_reference

_coord = st.one_of(
    st.floats(-180, 180, allow_nan=False),
    st.sampled_from([0.5, 37.6, 37.6000001, 55.7]),
    st.just(math.nan),
)


def _bits(x: float) -> float | str:
    return "nan" if x != x else x


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(1, 80))
    lon = np.array(draw(st.lists(_coord, min_size=n, max_size=n)), dtype=np.float64)
    lat = np.array(draw(st.lists(_coord, min_size=n, max_size=n)), dtype=np.float64)
    keep = np.array(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1))), dtype=np.intp)
    nk = len(keep)
    pairs = draw(st.lists(st.tuples(st.integers(0, nk - 1), st.integers(0, 4)), max_size=60))
    kin = np.array(pairs, dtype=np.int64).reshape(-1, 2).T.copy()
    recs = []
    for _ in range(draw(st.integers(0, 4))):
        first = draw(st.integers(0, nk - 1))
        last = draw(st.integers(first, nk - 1))
        confirm = draw(st.integers(first, last))
        count = draw(st.integers(1, last - first + 3))
        closed = draw(st.booleans())
        recs.append((first, confirm, last, count, closed))
    return lon, lat, keep, kin, np.array(recs, dtype=np.int64).reshape(len(recs), 5)


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_compiled_stop_figures_equal_the_reference(case: tuple[np.ndarray, ...]) -> None:
    lon, lat, keep, kin, recs = case
    records = [
        StopRecord(
            first=int(f),
            confirm=int(c),
            last=int(la),
            start_us=0,
            end_us=0,
            x=0.0,
            y=0.0,
            fix_count=int(n),
            closed_by="exit" if cl else None,
        )
        for f, c, la, n, cl in recs.tolist()
    ]
    want = stop_figures_reference(lon[keep], lat[keep], kin, records)
    sites, flts = stops_kernel.stop_figures(lon, lat, keep, kin, recs)
    got = [
        (s, f[0], f[1], f[2], f[3], (f[4], f[5], f[6], f[7]))
        for s, f in zip(sites.tolist(), flts.tolist(), strict=True)
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        assert [_bits(x) for x in g[1:5]] == [_bits(x) for x in w[1:5]]
        assert [_bits(x) for x in g[5]] == [_bits(x) for x in w[5]]

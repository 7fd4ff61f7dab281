"""Street routes and vehicle kinematics: urban speeds, continuity, streets rather than beelines."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.drive import CRAWL, DWELL, Timeline, crawl_phase, dwell_phase, street_phases
from simulators.roads import StreetGrid, route

coord = st.floats(-15_000, 15_000)


@settings(max_examples=60, deadline=None)
@given(x0=coord, y0=coord, x1=coord, y1=coord, seed=st.integers(0, 2**32 - 1))
def test_routes_follow_streets_between_their_ends(
    x0: float, y0: float, x1: float, y1: float, seed: int
) -> None:
    grid = StreetGrid()
    r = route(grid, np.random.Generator(np.random.PCG64(seed)), x0, y0, x1, y1)
    assert (r.x[0], r.y[0]) == (x0, y0)
    assert (r.x[-1], r.y[-1]) == (x1, y1)
    dx, dy = np.diff(r.x), np.diff(r.y)
    assert (np.hypot(dx, dy) > 0).all()
    # inner segments (not the two driveways at each end) run along grid streets or avenues
    inner = slice(2, len(dx) - 2)
    axis = (np.abs(dx[inner]) < 1e-6) | (np.abs(dy[inner]) < 1e-6)
    on_grid = np.isclose(np.round(r.x[2:-2] / grid.spacing_m) * grid.spacing_m, r.x[2:-2]) | (
        np.isclose(np.round(r.y[2:-2] / grid.spacing_m) * grid.spacing_m, r.y[2:-2])
    )
    assert on_grid.all()
    # a segment off the axes is a diagonal avenue: it runs between grid crossings
    g = grid.spacing_m
    for i in np.flatnonzero(~axis) + 2:
        for px, py in ((r.x[i], r.y[i]), (r.x[i + 1], r.y[i + 1])):
            assert np.isclose(round(px / g) * g, px)
            assert np.isclose(round(py / g) * g, py)
    # no beeline: at least the Manhattan distance between the street ends, roughly
    assert r.length_m() >= 0.99 * np.hypot(x1 - x0, y1 - y0)


@settings(max_examples=40, deadline=None)
@given(
    x1=coord,
    y1=coord,
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from([1.0, 0.2]),
    jam=st.booleans(),
)
def test_driving_is_continuous_and_urban(
    x1: float, y1: float, seed: int, rate: float, jam: bool
) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    r = route(StreetGrid(), rng, 0.0, 0.0, x1, y1)
    tl = Timeline(t0=1000.0)
    tl.x, tl.y = [np.array([0.0])], [np.array([0.0])]
    tl.add(dwell_phase(30.0))
    tl.extend_path(r.x, r.y)
    phases = street_phases(r.x, r.y, rng, v_kmh=(25.0, 60.0))
    if jam:  # replace the first move by a stop-and-go crawl over the same distance
        phases[0] = crawl_phase(phases[0].length_m, 300.0)
    for p in phases:
        tl.add(p)
    tl.add(dwell_phase(60.0))
    assert abs(tl.s - r.length_m()) < 1e-6 * max(1.0, r.length_m())
    t = np.arange(tl.t0, tl.now, 1.0 / rate)
    k = tl.sample(t)
    vmax = 60 / 3.6
    assert (k.v_mps >= 0).all()
    assert k.v_mps.max() <= vmax + 1e-9 or jam  # a crawl's peak is 2L/D, checked below
    step = np.hypot(np.diff(k.x), np.diff(k.y))
    assert (step <= vmax / rate + 1e-6).all() or jam
    assert (k.x[0], k.y[0]) == (0.0, 0.0)
    assert np.hypot(k.x[-1] - x1, k.y[-1] - y1) < 1e-6  # parked at the destination
    parked = k.phase_kind == DWELL
    assert (k.v_mps[parked] == 0).all()
    if jam:
        crawl = k.phase_kind == CRAWL
        assert (k.v_mps[crawl] <= 2 * phases[0].length_m / 300.0 + 1e-9).all()

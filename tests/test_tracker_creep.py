"""A parked vehicle creeping out of its stop's extent, fed in small rounds.

The stop rule bounds a stop's extent (``stop_extent_m``, issue 11 #12): a chain of *still*
fixes ends (``closed_by="exit"``) where 3 of 5 fixes lie beyond the extent from its head, even
though every fix is still.  An incremental round that only checked "every new fix still"
(``VehicleTracker._append_only``, parked) skipped the re-run of the round in which the creep
crossed the extent, and reported the ``StopEnded`` a round late (found on the seed-1 day at
2,000-fix batches by ``bench_detect.py --compare-full``).  Round by round, the incremental
tracker must report what a tracker that re-runs every round reports.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from schedule.tracker import VehicleTracker
from tests.test_tracker_incremental import rounds
from tests.test_visits_synthetic import T0_US, Circles, lonlat

NO_FENCES = Circles([])


def creep_track(creep_kmh: float, creep_s: int, seed: int) -> dict[str, np.ndarray]:
    """Drive 300 s at 40 km/h, creep east at ``creep_kmh`` (reported as such, below the
    still threshold) for ``creep_s``, drive on at 40 km/h for 300 s; 1 Hz, σ 1 m noise."""
    rng = np.random.default_rng(seed)
    speeds = np.concatenate((np.full(300, 40.0), np.full(creep_s, creep_kmh), np.full(300, 40.0)))
    x = np.concatenate(([0.0], np.cumsum(speeds[1:] / 3.6)))
    n = len(x)
    lon, lat = lonlat(x + rng.normal(0, 1.0, n), rng.normal(0, 1.0, n))
    return {
        "t_us": T0_US + np.arange(n, dtype=np.int64) * 1_000_000,
        "lon": lon,
        "lat": lat,
        "speed_kmh": speeds,
        "hdop": np.full(n, 0.9),
    }


@settings(max_examples=25, deadline=None)
@given(
    creep_kmh=st.sampled_from([0.6, 1.0, 1.5]),
    creep_s=st.integers(400, 900),
    chunk=st.integers(5, 60),
    seed=st.integers(0, 2**16),
)
def test_creeping_out_of_the_extent_is_reported_in_the_same_round(
    creep_kmh: float, creep_s: int, chunk: int, seed: int
) -> None:
    arrays = creep_track(creep_kmh, creep_s, seed)
    n = len(arrays["t_us"])
    chunks = [np.arange(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    clock = [None] * len(chunks)
    got = rounds(VehicleTracker("V", (), None), arrays, NO_FENCES, chunks, clock)
    want = rounds(
        VehicleTracker("V", (), None, incremental=False), arrays, NO_FENCES, chunks, clock
    )
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"

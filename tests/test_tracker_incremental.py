"""Incremental rounds: a round that only appends must report exactly what a re-run reports.

``VehicleTracker(incremental=True)`` skips the re-run of a round whose new fixes provably cannot
change anything reported (a parked vehicle extending its open stop and visit, a vehicle driving
far from every site).  The promise is stronger than "the folded events converge": round by round,
the events (ids, versions, every field) equal those of a tracker that re-runs every round, so
the skip changes neither what is reported nor when.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st

from schedule.events import DetectionEvent
from schedule.tracker import VehicleTracker
from tests.test_visits_properties import FENCES, PARAMS, build, draw_chunks, leg, outcome
from tests.test_visits_synthetic import Circles, TrackBuilder, feed_all


def rounds(
    tracker: VehicleTracker,
    arrays: dict[str, np.ndarray],
    fences: Circles,
    chunks: Sequence[np.ndarray],
    clock_after: Sequence[int | None],
) -> list[list[DetectionEvent]]:
    """The events of each round (a feed, then an optional clock advance), and of finish()."""
    out = []
    for idx, lag_s in zip(chunks, clock_after, strict=True):
        events = feed_all(tracker, arrays, fences, [idx], finish=False)
        if lag_s is not None and len(idx):
            events += tracker.advance(int(arrays["t_us"][idx].max()) + lag_s * 10**6)
        out.append(events)
    out.append(tracker.finish())
    return out


@settings(max_examples=100, deadline=None)
@given(
    legs=st.lists(leg, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_every_round_reports_what_a_full_rerun_reports(
    legs: list[tuple[str, int, object]], seed: int, data: st.DataObject
) -> None:
    arrays = build(legs, seed).arrays()
    n = len(arrays["t_us"])
    if data.draw(st.booleans(), label="GGA-only stretch"):
        lo = data.draw(st.integers(0, n - 1))
        arrays["speed_kmh"][lo : lo + data.draw(st.integers(1, 200))] = np.nan
    chunks = draw_chunks(data, n, max_step=120)
    order = list(range(len(chunks)))
    if data.draw(st.booleans(), label="some chunks late"):
        order = data.draw(st.permutations(order), label="order")
    chunked = [chunks[i] for i in order]
    if data.draw(st.booleans(), label="duplicates"):
        chunked.insert(len(chunked) // 2, chunked[0])
    clock = data.draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from([1, 200, 400])),
            min_size=len(chunked),
            max_size=len(chunked),
        ),
        label="clock advances",
    )
    note(f"{n} fixes, {len(chunked)} rounds, order {order}")
    fast = VehicleTracker("V", FENCES.ids, PARAMS)
    full = VehicleTracker("V", FENCES.ids, PARAMS, incremental=False)
    got = rounds(fast, arrays, FENCES, chunked, clock)
    want = rounds(full, arrays, FENCES, chunked, clock)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"round {k} differs"
    assert full.stats.appended == 0
    # and the incremental tracker still converges to one run over all fixes in order, unless
    # a late chunk arrived older than everything kept (dropped and counted, as documented)
    if fast.stats.beyond_horizon == 0:
        reference = feed_all(
            VehicleTracker("V", FENCES.ids, PARAMS, incremental=False), arrays, FENCES
        )
        assert outcome([e for r in got for e in r]) == outcome(reference)


def test_a_parked_and_a_driving_vehicle_only_append() -> None:
    # a long visit with a stop, then a long drive far from the fence: most rounds append only
    b = TrackBuilder(seed=7).start(-600, 0).drive(0, 0, 20).park(1200).drive(-3000, 0, 40)
    b.drive(-3000, -3000, 40)
    arrays = b.arrays()
    n = len(arrays["t_us"])
    chunks = [np.arange(i, min(i + 20, n)) for i in range(0, n, 20)]
    fast = VehicleTracker("V", FENCES.ids, PARAMS)
    full = VehicleTracker("V", FENCES.ids, PARAMS, incremental=False)
    clock: list[int | None] = [None] * len(chunks)
    assert rounds(fast, arrays, FENCES, chunks, clock) == rounds(
        full, arrays, FENCES, chunks, clock
    )
    assert fast.stats.appended > len(chunks) // 2
    assert fast.stats.fixes_rerun < full.stats.fixes_rerun / 3


def test_leaving_a_stop_outside_every_fence_is_reported_in_its_round() -> None:
    # parked away from every site, then driving off: the round holding the departure must
    # re-run (the stop ends there), whatever the chunk boundaries
    for chunk in (7, 30, 90):
        b = TrackBuilder(seed=11).start(-600, -600).drive(300, 300, 30).park(400)
        b.drive(2000, 300, 30)
        arrays = b.arrays()
        n = len(arrays["t_us"])
        chunks = [np.arange(i, min(i + chunk, n)) for i in range(0, n, chunk)]
        clock: list[int | None] = [None] * len(chunks)
        fast = VehicleTracker("V", FENCES.ids, PARAMS)
        full = VehicleTracker("V", FENCES.ids, PARAMS, incremental=False)
        got = rounds(fast, arrays, FENCES, chunks, clock)
        assert got == rounds(full, arrays, FENCES, chunks, clock)
        assert fast.stats.appended > 0

"""Stable site identity: the tracker knows sites by id, and a new site list swaps in mid-day.

A new day's index (or a site edited during the day) numbers its sites differently; a visit in
progress to a site still listed must go on as one visit, and one to a removed site must close
with ``closed_by="site_removed"`` and never be touched again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from core.fixes import FixBatch
from schedule.events import DetectionEvent, VisitCompleted, VisitStarted, latest
from schedule.tracker import FleetTracker, SiteListMismatch
from tests.test_visits_synthetic import T0_US, Circles, TrackBuilder


class NamedCircles:
    """Circle fences with explicit site ids: a stand-in for one version of a FenceIndex."""

    def __init__(self, sites: Sequence[tuple[str, tuple[float, float, float]]]) -> None:
        self.site_ids = tuple(sid for sid, _ in sites)
        self._circles = Circles([c for _, c in sites])

    def query(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, *, margin_m: float = 0.0
    ) -> npt.NDArray[np.int64]:
        return self._circles(np.asarray(lon), np.asarray(lat), margin_m)


A = ("A", (0.0, 0.0, 50.0))
B = ("B", (800.0, 0.0, 50.0))
C = ("C", (-800.0, 0.0, 50.0))


def fix_batch(a: dict[str, np.ndarray], unit: str = "U1") -> FixBatch:
    n = len(a["t_us"])
    return FixBatch(
        unit_id=np.full(n, unit),
        t_us=a["t_us"],
        recv_us=a["t_us"] + 500_000,
        lat=a["lat"],
        lon=a["lon"],
        speed_kmh=a["speed_kmh"].astype(np.float32),
        course=np.full(n, np.nan, np.float32),
        quality=np.full(n, 1, np.int8),
        sats=np.full(n, 9, np.int8),
        hdop=a["hdop"].astype(np.float32),
        alt_m=np.full(n, np.nan, np.float32),
        talker=np.full(n, "GP"),
    )


def visit_track() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Drive to A, park 10 min, drive to B, park 5 min, drive away; and the fix times (s)."""
    b = TrackBuilder(seed=3).start(-500, 0).drive(0, 0, 20).park(600)
    b.drive(800, 0, 20).park(300).drive(1500, 0, 20)
    a = b.arrays()
    return a, (a["t_us"] - T0_US) / 1e6


def run(
    a: dict[str, np.ndarray], indexes: list[tuple[int, NamedCircles]], chunk: int = 50
) -> tuple[FleetTracker, list[DetectionEvent]]:
    """Feed ``a`` in chunks, swapping to ``indexes[k][1]`` from fix ``indexes[k][0]`` on."""
    n = len(a["t_us"])
    fleet = FleetTracker(indexes[0][1].site_ids, {"U1": "V1"})
    events: list[DetectionEvent] = []
    for lo in range(0, n, chunk):
        index = [ix for start, ix in indexes if start <= lo][-1]
        part = fix_batch({k: v[lo : lo + chunk] for k, v in a.items()})
        events += fleet.feed_index(part, index)
    events += fleet.finish()
    return fleet, events


def visits(events: list[DetectionEvent]) -> list[tuple[str, int, int, str]]:
    return sorted(
        (e.site_id, e.arrival_us // 10**6, e.departure_us // 10**6, e.closed_by)
        for e in latest(events).values()
        if isinstance(e, VisitCompleted) and not e.retracted
    )


def test_a_reordered_or_edited_site_list_keeps_the_visit_in_progress() -> None:
    a, t = visit_track()
    mid_a = int(np.searchsorted(t, 150 + 300))  # five minutes into the visit to A
    _, reference = run(a, [(0, NamedCircles([A, B]))])
    # the new list puts a new site first (every position moves) and edits A (larger fence)
    edited_a = ("A", (0.0, 0.0, 60.0))
    _, swapped = run(a, [(0, NamedCircles([A, B])), (mid_a, NamedCircles([C, B, edited_a]))])
    assert len(visits(reference)) == 2
    got, want = visits(swapped), visits(reference)
    assert [(v[0], v[1], v[3]) for v in got] == [(v[0], v[1], v[3]) for v in want]
    # the larger fence may keep the truck "inside" a fix longer on the way out
    assert all(abs(g[2] - w[2]) <= 5 for g, w in zip(got, want, strict=True))
    ids = {e.visit_id for e in swapped if isinstance(e, VisitStarted) and e.site_id == "A"}
    assert len(ids) == 1  # one visit, announced once: the swap did not split it


def test_a_removed_site_closes_its_open_visit_and_is_never_touched_again() -> None:
    a, t = visit_track()
    mid_a = int(np.searchsorted(t, 150 + 300)) // 50 * 50  # a chunk boundary inside the visit
    _, events = run(a, [(0, NamedCircles([A, B])), (mid_a, NamedCircles([B]))])
    done = visits(events)
    assert [v[0] for v in done] == ["A", "B"]
    _, _, departure_s, closed_by = done[0]
    assert closed_by == "site_removed"
    # closed at its last fix inside the fence before the swap
    assert departure_s <= int(a["t_us"][mid_a - 1]) // 10**6
    assert done[1][3] == "exit"
    a_events = [e for e in events if getattr(e, "site_id", None) == "A"]
    assert not any(e.retracted for e in a_events)
    removal = [e for e in a_events if isinstance(e, VisitCompleted)]
    assert len(removal) == 1
    assert removal[0].version == 1


def test_a_removed_site_that_comes_back_gets_new_visits_only() -> None:
    # removed and re-added during a drive between two visits to A
    b = TrackBuilder(seed=5).start(-500, 0).drive(0, 0, 20).park(300).drive(-1500, 0, 20)
    b.drive(0, 0, 20).park(300).drive(600, 0, 20)
    a = b.arrays()
    t = (a["t_us"] - T0_US) / 1e6
    away = int(np.searchsorted(t, 700)) // 50 * 50
    back = int(np.searchsorted(t, 900)) // 50 * 50
    _, reference = run(a, [(0, NamedCircles([A]))])
    _, events = run(
        a, [(0, NamedCircles([A])), (away, NamedCircles([B])), (back, NamedCircles([B, A]))]
    )
    assert len(visits(reference)) == 2
    assert visits(events) == visits(reference)


def test_pairs_from_an_index_the_tracker_was_not_told_about_are_refused() -> None:
    a, _ = visit_track()
    fleet = FleetTracker(["A"], {"U1": "V1"})
    part = fix_batch({k: v[:10] for k, v in a.items()})
    with pytest.raises(SiteListMismatch, match="use_sites"):
        fleet.feed(part, np.array([[0], [3]]), np.empty((2, 0)))


def test_site_codes_are_never_reused() -> None:
    fleet = FleetTracker(["A", "B"])
    fleet.use_sites(["B"])
    fleet.use_sites(["D", "A"])
    assert fleet.site_ids == ("D", "A")
    assert fleet.known_site_ids == ("A", "B", "D")

"""Visit detection on synthetic tracks: dwell, drive-by, fence-edge jitter, gaps, teleports.

The helpers here (a track builder in local metres and a circle-fence matcher) are shared by the
other test_visits_* / test_stops_* files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from schedule.events import (
    DetectionEvent,
    StopEnded,
    StopStarted,
    VisitCompleted,
    VisitStarted,
    latest,
)
from schedule.params import DetectionParams
from schedule.tracker import VehicleTracker

LON0, LAT0 = 37.6, 55.75
M_PER_DEG = 6_371_008.8 * math.pi / 180.0
T0_US = 1_795_000_000 * 1_000_000  # 2026-11-18, an arbitrary UTC instant


def lonlat(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x_a, y_a = np.asarray(x, float), np.asarray(y, float)
    return LON0 + x_a / (M_PER_DEG * math.cos(math.radians(LAT0))), LAT0 + y_a / M_PER_DEG


def xy(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (lon - LON0) * M_PER_DEG * math.cos(math.radians(LAT0)), (lat - LAT0) * M_PER_DEG


@dataclass
class Circles:
    """Circle fences in local metres; called like FenceIndex.query(lon, lat, margin_m)."""

    centres: list[tuple[float, float, float]]

    def __call__(self, lon: np.ndarray, lat: np.ndarray, margin_m: float) -> np.ndarray:
        x, y = xy(np.asarray(lon), np.asarray(lat))
        pts: list[np.ndarray] = []
        sites: list[np.ndarray] = []
        for s, (cx, cy, r) in enumerate(self.centres):
            hit = np.flatnonzero(np.hypot(x - cx, y - cy) <= r + margin_m)
            pts.append(hit)
            sites.append(np.full(len(hit), s))
        if not pts:
            return np.empty((2, 0), np.int64)
        return np.stack((np.concatenate(pts), np.concatenate(sites))).astype(np.int64)

    @property
    def ids(self) -> list[str]:
        return [f"S{i:04d}" for i in range(len(self.centres))]


@dataclass
class TrackBuilder:
    """A 1 Hz (or ``dt_s``) truck track built from legs; positions in local metres."""

    dt_s: float = 1.0
    seed: int = 0
    t: list[float] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    pos: tuple[float, float] = (0.0, 0.0)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def start(self, x: float, y: float) -> TrackBuilder:
        self.pos = (x, y)
        return self

    def drive(self, x: float, y: float, speed_kmh: float, sigma_m: float = 2.0) -> TrackBuilder:
        x0, y0 = self.pos
        dist = math.hypot(x - x0, y - y0)
        dur = dist / (speed_kmh / 3.6)
        n = max(int(dur / self.dt_s), 1)
        for i in range(1, n + 1):
            f = i / n
            self._add(x0 + f * (x - x0), y0 + f * (y - y0), speed_kmh, sigma_m)
        self.pos = (x, y)
        return self

    def park(
        self,
        duration_s: float,
        sigma_m: float = 3.0,
        outlier_rate: float = 0.0,
        speed_noise_kmh: float = 0.5,
    ) -> TrackBuilder:
        n = int(duration_s / self.dt_s)
        for _ in range(n):
            sx, sy = self.pos
            if outlier_rate and self.rng.random() < outlier_rate:
                ang = self.rng.uniform(0, 2 * math.pi)
                d = self.rng.uniform(30, 150)
                sx, sy = sx + d * math.cos(ang), sy + d * math.sin(ang)
            self._add(sx, sy, abs(self.rng.normal(0, speed_noise_kmh)), sigma_m)
        return self

    def gap(
        self, duration_s: float, x: float | None = None, y: float | None = None
    ) -> TrackBuilder:
        self.now += duration_s
        if x is not None and y is not None:
            self.pos = (x, y)
        return self

    def _add(self, x: float, y: float, v: float, sigma: float) -> None:
        self.now += self.dt_s
        self.t.append(self.now)
        self.x.append(x + self.rng.normal(0, sigma))
        self.y.append(y + self.rng.normal(0, sigma))
        self.v.append(v)

    def arrays(self) -> dict[str, np.ndarray]:
        lon, lat = lonlat(self.x, self.y)
        return {
            "t_us": T0_US + np.round(np.asarray(self.t) * 1e6).astype(np.int64),
            "lon": lon,
            "lat": lat,
            "speed_kmh": np.asarray(self.v, float),
            "hdop": np.full(len(self.t), 1.0),
        }


def feed_all(
    tracker: VehicleTracker,
    arrays: dict[str, np.ndarray],
    fences: Circles,
    chunks: Sequence[np.ndarray] | None = None,
    *,
    finish: bool = True,
) -> list[DetectionEvent]:
    """Feed the track in the given chunks (index arrays; default: one chunk) and finish."""
    n = len(arrays["t_us"])
    events: list[DetectionEvent] = []
    for idx in chunks if chunks is not None else [np.arange(n)]:
        a = {k: v[idx] for k, v in arrays.items()}
        events += tracker.feed(
            a["t_us"],
            a["lon"],
            a["lat"],
            a["speed_kmh"],
            a["hdop"],
            fences(a["lon"], a["lat"], 0.0),
            fences(a["lon"], a["lat"], tracker.params.exit_margin_m),
        )
    if finish:
        events += tracker.finish()
    return events


def final_visits(events: Sequence[DetectionEvent]) -> list[tuple[str, int, int]]:
    """(site, arrival s, departure s) of the completed, non-retracted visits."""
    out = [
        (e.site_id, (e.arrival_us - T0_US) // 10**6, (e.departure_us - T0_US) // 10**6)
        for e in latest(list(events)).values()
        if isinstance(e, VisitCompleted) and not e.retracted
    ]
    return sorted(out, key=lambda v: (v[1], v[0]))


def final_stops(events: Sequence[DetectionEvent]) -> list[tuple[str | None, int, int]]:
    out = [
        (e.site_id, (e.start_us - T0_US) // 10**6, (e.end_us - T0_US) // 10**6)
        for e in latest(list(events)).values()
        if isinstance(e, StopEnded) and not e.retracted
    ]
    return sorted(out, key=lambda v: v[1])


def run(
    b: TrackBuilder, fences: Circles, params: DetectionParams | None = None
) -> list[DetectionEvent]:
    return feed_all(VehicleTracker("V001", fences.ids, params), b.arrays(), fences)


SITE = Circles([(0.0, 0.0, 50.0)])


def test_parked_three_minutes_inside_is_one_visit_with_its_times() -> None:
    b = TrackBuilder().start(-1000, 0).drive(0, 0, 30).park(180).drive(1000, 0, 30)
    events = run(b, SITE)
    visits = final_visits(events)
    assert len(visits) == 1
    site, arr, dep = visits[0]
    arrive_t = 950 / (30 / 3.6)  # enters the 50 m fence 950 m after the start
    assert site == "S0000"
    assert abs(arr - arrive_t) <= 3
    assert abs(dep - (1000 / (30 / 3.6) + 180 + 50 / (30 / 3.6))) <= 4
    started = [e for e in events if isinstance(e, VisitStarted)]
    assert len(started) == 1
    assert started[0].confirmed_us - started[0].arrival_us >= 120e6


def test_dwell_shorter_than_min_dwell_is_no_visit_but_longer_is() -> None:
    short = TrackBuilder().start(-500, 0).drive(0, 0, 30).park(100).drive(500, 0, 30)
    assert final_visits(run(short, SITE)) == []
    longer = TrackBuilder().start(-500, 0).drive(0, 0, 30).park(130).drive(500, 0, 30)
    assert len(final_visits(run(longer, SITE))) == 1


def test_drive_by_through_the_fence_is_not_a_visit() -> None:
    b = TrackBuilder().start(-2000, 10).drive(2000, 10, 20)
    assert final_visits(run(b, SITE)) == []


def test_slow_drive_by_of_two_minutes_inside_a_big_fence_is_not_a_visit() -> None:
    big = Circles([(0.0, 0.0, 300.0)])
    b = TrackBuilder().start(-1000, 0).drive(1000, 0, 15)  # 144 s inside at 15 km/h
    assert final_visits(run(b, big)) == []


@pytest.mark.parametrize("seed", range(5))
def test_truck_parked_at_fence_edge_with_jitter_and_outliers_makes_one_visit(seed: int) -> None:
    # parked 2 m inside the edge: sigma 10 m puts half the fixes outside, outliers at 30-150 m
    b = TrackBuilder(seed=seed).start(-500, 0).drive(-48, 0, 20)
    b.park(1800, sigma_m=10.0, outlier_rate=0.03).drive(-500, 0, 20)
    visits = final_visits(run(b, SITE))
    assert len(visits) == 1, visits
    assert visits[0][2] - visits[0][1] >= 1750


def test_overlapping_fences_each_get_a_visit() -> None:
    two = Circles([(0.0, 0.0, 50.0), (30.0, 0.0, 50.0)])
    b = TrackBuilder().start(-500, 0).drive(15, 0, 20).park(300).drive(600, 0, 20)
    assert [v[0] for v in final_visits(run(b, two))] == ["S0000", "S0001"]


def test_two_separate_visits_to_the_same_site() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(200).drive(800, 0, 30)
    b.park(60).drive(0, 0, 30).park(200).drive(-500, 0, 30)
    assert len(final_visits(run(b, SITE))) == 2


def test_short_gap_inside_the_fence_continues_the_visit() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(100).gap(200).park(100)
    b.drive(500, 0, 20)
    visits = final_visits(run(b, SITE))
    assert len(visits) == 1
    assert visits[0][2] - visits[0][1] >= 400


def test_long_gap_closes_the_visit_at_the_last_fix_before_it() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(150)
    last_before = b.now
    b.gap(600).park(150).drive(500, 0, 20)
    events = run(b, SITE)
    visits = final_visits(events)
    assert len(visits) == 2
    assert visits[0][2] == int(last_before)
    closed = [e for e in latest(events).values() if isinstance(e, VisitCompleted)]
    assert sorted(e.closed_by for e in closed) == ["exit", "gap"]


def test_vehicle_gone_during_a_short_gap_is_closed_before_the_gap() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 20).park(150)
    last_before = b.now
    b.gap(200, 900, 0).drive(1500, 0, 30)
    visits = final_visits(run(b, SITE))
    assert len(visits) == 1
    assert visits[0][2] == int(last_before)


def test_frozen_position_then_jump_inside_a_fence_is_no_visit_and_no_stop() -> None:
    b = TrackBuilder().start(-600, 0).drive(-10, 0, 30)
    # receiver freezes: same position, speed 0, for 4 minutes, then the truck is 100 m on
    for _ in range(240):
        b.now += 1
        b.t.append(b.now)
        b.x.append(-10.0)
        b.y.append(0.0)
        b.v.append(0.0)
    b.pos = (90.0, 0.0)
    b.drive(900, 0, 30)
    events = run(b, SITE)
    assert final_visits(events) == []
    assert final_stops(events) == []


def test_visit_events_carry_quality() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 30).park(300).drive(500, 0, 30)
    done = [e for e in run(b, SITE) if isinstance(e, VisitCompleted)]
    assert len(done) == 1
    assert done[0].fix_count >= 300
    assert done[0].inside_share > 0.9
    assert done[0].median_hdop == pytest.approx(1.0)
    assert done[0].closed_by == "exit"


def test_stop_inside_site_carries_the_site() -> None:
    b = TrackBuilder().start(-500, 0).drive(0, 0, 30).park(400).drive(500, 0, 30)
    events = run(b, SITE)
    stops = final_stops(events)
    assert len(stops) == 1
    assert stops[0][0] == "S0000"
    assert any(isinstance(e, StopStarted) and e.site_id == "S0000" for e in events)

"""Stop detection on synthetic tracks: threshold, drift, teleports, gaps, place."""

from __future__ import annotations

import numpy as np
import pytest

from schedule.events import StopEnded, StopStarted, latest
from schedule.motion import Track, motion
from schedule.params import DetectionParams, InvalidDetectionParams
from schedule.stops import (
    TRANSITIONS,
    IllegalTransition,
    StopInput,
    StopState,
    detect_stops,
    step,
)
from tests.test_visits_synthetic import (
    T0_US,
    Circles,
    TrackBuilder,
    final_stops,
    lonlat,
    run,
)

NO_SITES = Circles([])


def test_stop_needs_stop_min_s() -> None:
    short = TrackBuilder().start(0, 0).drive(500, 0, 30).park(170).drive(1000, 0, 30)
    assert final_stops(run(short, NO_SITES)) == []
    long = TrackBuilder().start(0, 0).drive(500, 0, 30).park(190).drive(1000, 0, 30)
    stops = final_stops(run(long, NO_SITES))
    assert len(stops) == 1
    assert stops[0][0] is None  # outside every site: unscheduled


def test_unscheduled_stop_has_place_and_duration() -> None:
    b = TrackBuilder().start(0, 0).drive(800, 300, 30).park(600, sigma_m=8).drive(0, 0, 30)
    ended = [e for e in latest(run(b, NO_SITES)).values() if isinstance(e, StopEnded)]
    assert len(ended) == 1
    lon, lat = lonlat([800.0], [300.0])
    assert abs(ended[0].lon - lon[0]) < 1e-4
    assert abs(ended[0].lat - lat[0]) < 1e-4
    assert ended[0].duration_s == pytest.approx(600, abs=15)
    assert ended[0].closed_by == "exit"


@pytest.mark.parametrize("seed", range(4))
def test_parked_truck_drift_reported_as_speed_is_one_stop(seed: int) -> None:
    # sigma 10 m jitter and speeds up to ~8 km/h from the receiver's drift, 30 minutes
    b = TrackBuilder(seed=seed).start(0, 0).drive(500, 0, 30)
    b.park(1800, sigma_m=10.0, outlier_rate=0.02, speed_noise_kmh=4.0).drive(1500, 0, 30)
    stops = final_stops(run(b, NO_SITES))
    assert len(stops) == 1
    assert stops[0][2] - stops[0][1] >= 1750


def test_speed_zero_while_teleporting_is_not_a_stop() -> None:
    # the receiver says 0 km/h, but the position jumps 100 m every 20 s
    b = TrackBuilder().start(0, 0).drive(300, 0, 30)
    for k in range(15):
        b.pos = (300.0 + 100.0 * k, 0.0)
        b.park(20, sigma_m=1.0, speed_noise_kmh=0.1)
    b.drive(3000, 0, 30)
    assert final_stops(run(b, NO_SITES)) == []


def test_stop_split_by_a_move_to_another_place_is_two_stops() -> None:
    b = TrackBuilder().start(0, 0).drive(300, 0, 30).park(300).drive(600, 0, 10).park(300)
    b.drive(2000, 0, 30)
    assert len(final_stops(run(b, NO_SITES))) == 2


def test_short_gap_in_a_stop_keeps_one_stop_long_gap_splits_it() -> None:
    short = TrackBuilder().start(0, 0).drive(300, 0, 30).park(200).gap(120).park(200)
    short.drive(2000, 0, 30)
    assert len(final_stops(run(short, NO_SITES))) == 1
    long = TrackBuilder().start(0, 0).drive(300, 0, 30).park(200).gap(900).park(200)
    long.drive(2000, 0, 30)
    stops = final_stops(run(long, NO_SITES))
    assert len(stops) == 2


def test_open_stop_is_started_but_not_ended_until_the_vehicle_moves() -> None:
    from schedule.tracker import VehicleTracker
    from tests.test_visits_synthetic import feed_all

    b = TrackBuilder().start(0, 0).drive(300, 0, 30).park(400)
    tr = VehicleTracker("V", [], DetectionParams())
    events = feed_all(tr, b.arrays(), NO_SITES, finish=False)
    assert [type(e) for e in events] == [StopStarted]
    t_last = int(b.arrays()["t_us"][-1])
    assert tr.advance(t_last + 60_000_000) == []  # silent for a minute: still standing there
    closed = tr.advance(t_last + 600_000_000)  # silent beyond max_gap_s: closed at last fix
    assert len(closed) == 1
    assert isinstance(closed[0], StopEnded)
    assert closed[0].closed_by == "gap"
    assert closed[0].end_us == t_last


def test_gga_only_unit_without_speed_still_finds_the_stop() -> None:
    b = TrackBuilder().start(0, 0).drive(500, 0, 30).park(400, sigma_m=5).drive(1500, 0, 30)
    a = b.arrays()
    track = Track.from_arrays(a["t_us"], a["lon"], a["lat"])  # speed NaN
    stops = detect_stops(motion(track, DetectionParams()), DetectionParams(), int(a["t_us"][0]))
    assert len(stops) == 1
    assert (stops[0].end_us - stops[0].start_us) / 1e6 == pytest.approx(400, abs=30)
    assert stops[0].start_us >= T0_US


def test_the_transition_table_is_closed_and_illegal_moves_raise() -> None:
    assert step(StopState.IDLE, StopInput.SLOW) is StopState.PENDING
    for state in StopState:
        for inp in StopInput:
            if (state, inp) not in TRANSITIONS:
                with pytest.raises(IllegalTransition):
                    step(state, inp)
    assert set(TRANSITIONS.values()) <= set(StopState)


def test_params_refuse_nonsense() -> None:
    with pytest.raises(InvalidDetectionParams, match="stop_min_s"):
        DetectionParams(stop_min_s=0)
    with pytest.raises(InvalidDetectionParams, match="min_dwell_s"):
        DetectionParams(min_dwell_s=float("nan"))
    with pytest.raises(InvalidDetectionParams, match="horizon_s"):
        DetectionParams(horizon_s=100, max_gap_s=300)


def test_track_refuses_unsorted_times() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Track.from_arrays(np.array([2, 1]), np.zeros(2), np.zeros(2))

"""The simulator's multipath option (issue 11's independent generator) and a day run with it.

The noise model and the stand-and-creep jams are checked against their specification; a small
simulated day with the option on is replayed: every jam and lunch is one stop, and the visits
match the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fleetwatch.cmd_replay import replay_scenario
from simulators.drive import DWELL, MOVE, Kinematics
from simulators.gps import InvalidNoiseModel, MultipathNoise, multipath_noise, stand_and_creep
from simulators.scenario import ScenarioParams, write_scenario


def kinematics(v_mps: np.ndarray) -> Kinematics:
    """A straight eastward drive with the given speeds at 1 Hz."""
    n = len(v_mps)
    x = np.concatenate(([0.0], np.cumsum(v_mps[1:])))
    return Kinematics(
        t=np.arange(n, dtype=np.float64),
        x=x,
        y=np.zeros(n),
        v_mps=v_mps.astype(np.float64),
        course=np.full(n, 90.0),
        phase_kind=np.where(v_mps > 0, MOVE, DWELL),
    )


def test_the_noise_is_what_the_independent_generator_specifies() -> None:
    n = 200_000
    v = np.where(np.arange(n) < n // 2, 0.0, 10.0)  # half parked, half at 36 km/h
    ex, ey, mp = multipath_noise(v, np.random.default_rng(1), MultipathNoise())
    parked = v == 0.0
    assert not mp[~parked].any()  # outliers only while parked
    share = mp[parked].mean()
    assert 0.009 < share < 0.011
    mag = np.hypot(ex[mp], ey[mp])
    assert mag.min() >= 40.0
    assert mag.max() <= 80.0
    assert np.std(ex[parked & ~mp]) == pytest.approx(6.0, rel=0.02)
    assert np.std(ey[~parked]) == pytest.approx(3.0, rel=0.02)


def test_bursts_stay_at_one_offset_for_their_length() -> None:
    v = np.zeros(50_000)
    ex, ey, mp = multipath_noise(v, np.random.default_rng(2), MultipathNoise(burst_fixes=3))
    starts = np.flatnonzero(mp & ~np.concatenate(([False], mp[:-1])))
    assert len(starts) > 50
    for s in starts[:50].tolist():
        run = slice(s, s + 3)
        if s + 3 <= len(v):
            assert mp[run].all()
            assert np.ptp(ex[run]) == 0.0
            assert np.ptp(ey[run]) == 0.0


@pytest.mark.parametrize(
    "kw",
    [
        {"outlier_share": 1.5},
        {"outlier_min_m": 90.0},
        {"burst_fixes": 0},
        {"parked_sigma_m": -1.0},
    ],
)
def test_a_noise_model_that_cannot_be_simulated_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidNoiseModel):
        MultipathNoise(**kw)  # type: ignore[arg-type]


def test_a_jam_becomes_stands_with_short_creeps_over_the_same_stretch() -> None:
    # drive 60 s at 10 m/s, crawl 40 m in 600 s, drive on
    v = np.concatenate((np.full(60, 10.0), np.full(600, 40.0 / 600), np.full(60, 10.0)))
    kin = kinematics(v)
    jam = (60.0, 659.0)
    out = stand_and_creep(kin, [jam], np.random.default_rng(3))
    inside = (kin.t >= jam[0]) & (kin.t <= jam[1])
    # outside the jam nothing changes
    assert np.array_equal(out.x[~inside], kin.x[~inside])
    # the same stretch, monotone, from where the jam began to where it ended
    xs = out.x[inside]
    assert xs[0] == pytest.approx(kin.x[inside][0])
    assert xs[-1] == pytest.approx(kin.x[inside][-1])
    assert bool(np.all(np.diff(xs) >= -1e-9))
    # standing most of the time; creeping at walking pace (5-7 km/h) in between
    moving = out.v_mps[inside] > 0
    assert moving.mean() < 0.1
    assert out.v_mps[inside][moving].min() >= 5.0 / 3.6 - 1e-9
    assert out.v_mps[inside][moving].max() <= 7.0 / 3.6 + 1e-9
    assert out.v_mps[inside][0] == 0.0
    assert out.v_mps[inside][-1] == 0.0
    assert 2 <= len(np.flatnonzero(np.diff(moving.astype(int)) == 1)) <= 4


def test_the_scenario_refuses_an_unknown_noise_model() -> None:
    with pytest.raises(ValueError, match="noise_model"):
        ScenarioParams(noise_model="pink")


@pytest.fixture(scope="module")
def multipath_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenario-multipath")
    write_scenario(
        ScenarioParams(
            seed=3,
            sites=200,
            vehicles=6,
            jam_rate=0.3,
            noise_model="multipath",
            clock_off_units=0,
            silent_units=0,
        ),
        out,
    )
    return out


def test_a_multipath_day_splits_no_jam_and_keeps_the_visits(multipath_day: Path) -> None:
    truth = json.loads((multipath_day / "truth.json").read_text())
    assert truth["multipath_outliers"] > 500
    res = replay_scenario(multipath_day, evaluate=True)
    ev = res.summary["evaluation"]
    assert ev["precision"] == 1.0, ev["false_positive_examples"]
    assert ev["recall"] == 1.0, ev["missed_examples"]
    assert len(truth["unscheduled_stops"]) >= 20
    for ts in truth["unscheduled_stops"]:
        found = [
            s
            for s in res.stops
            if s["vehicle_id"] == ts["vehicle_id"]
            and s["start"] <= ts["end"]
            and ts["start"] <= s["end"]
        ]
        assert len(found) == 1, (ts, found)  # one stop: no outlier cut it, nothing missed it
        assert found[0]["closed_by"] == "exit"


def test_the_same_seed_without_outliers_is_the_same_day_without_them() -> None:
    v = np.where(np.arange(20_000) % 1000 < 600, 0.0, 8.0)
    ex1, ey1, mp1 = multipath_noise(v, np.random.default_rng(5), MultipathNoise())
    ex0, ey0, mp0 = multipath_noise(v, np.random.default_rng(5), MultipathNoise(outlier_share=0.0))
    assert mp1.sum() > 50
    assert not mp0.any()
    assert np.array_equal(ex1[~mp1], ex0[~mp1])
    assert np.array_equal(ey1[~mp1], ey0[~mp1])

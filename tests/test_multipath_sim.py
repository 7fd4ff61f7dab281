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


def dropped_fixes_on_a_day(*, vehicles: int = 10, hours: float = 8.0) -> dict[str, int]:
    """What the outlier rule drops on a multipath day, against the simulator's outlier mask.

    Each vehicle alternates drives (0.4-2 km at 25-50 km/h) and stands of 3-15 min, 30 % of
    them jams (stands with a 15-50 m creep); 1 Hz, the last 20 % of the vehicles 0.2 Hz.  The
    full measurement (10 vehicles x 8 h) is quoted in docs/detection.md:
    ``python -c "from tests.test_multipath_sim import dropped_fixes_on_a_day as d; print(d())"``
    """
    from schedule.motion import Track, motion
    from schedule.params import DetectionParams
    from simulators.drive import Timeline, dwell_phase, move_phase
    from simulators.gps import observe

    params = DetectionParams()
    out = {"outliers": 0, "dropped": 0, "genuine_dropped": 0, "jumps_left": 0}
    for veh in range(vehicles):
        rng = np.random.default_rng(1000 + veh)
        rate = 0.2 if veh >= 0.8 * vehicles else 1.0
        tl = Timeline(t0=0.0)
        px, py = [0.0], [0.0]
        jams: list[tuple[float, float]] = []
        while tl.now < hours * 3600:
            length, ang = float(rng.uniform(400, 2000)), float(rng.uniform(0, 2 * np.pi))
            px.append(px[-1] + length * np.cos(ang))
            py.append(py[-1] + length * np.sin(ang))
            tl.add(move_phase(length, float(rng.uniform(25, 50)) / 3.6))
            stand = float(rng.uniform(180, 900))
            if rng.random() < 0.3:  # a jam: 15-50 m crept within the stand
                creep = float(rng.uniform(15, 50))
                px.append(px[-1] + creep * np.cos(ang))
                py.append(py[-1] + creep * np.sin(ang))
                t_a = tl.now
                tl.add(move_phase(creep, 1.0))
                tl.add(dwell_phase(stand))
                jams.append((t_a, tl.now))
            else:
                tl.add(dwell_phase(stand))
        tl.x, tl.y = [np.array(px)], [np.array(py)]
        t = np.arange(0.0, tl.now, 1.0 / rate)
        kin = stand_and_creep(tl.sample(t), jams, rng)
        obs = observe(
            kin,
            rng,
            sigma_m=6.0,
            rate_hz=rate,
            near_buildings=np.ones(len(t), dtype=bool),
            multipath_rate=0.0,
            noise=MultipathNoise(),
        )
        lat = 55.75 + obs.y / 111_195.0
        lon = 37.6 + obs.x / (111_195.0 * np.cos(np.radians(55.75)))
        t_us = 1_795_000_000_000_000 + np.round(t * 1e6).astype(np.int64)
        m = motion(Track.from_arrays(t_us, lon, lat, obs.speed_kmh), params)
        dropped = np.setdiff1d(np.arange(len(t)), m.keep)
        out["outliers"] += int(obs.multipath.sum())
        out["dropped"] += len(dropped)
        out["genuine_dropped"] += int((~obs.multipath[dropped]).sum())
        out["jumps_left"] += int(m.jump.sum())
    return out


def test_on_a_multipath_day_the_outlier_rule_drops_outliers_not_genuine_fixes() -> None:
    """Issue 11 #10: the old loop dropped ~570-720 genuine fixes per 10-vehicle day (866 on the
    full measurement here); now a handful, and no jump is left to cut a stop."""
    got = dropped_fixes_on_a_day(vehicles=3, hours=3.0)
    assert got["outliers"] > 100
    assert got["jumps_left"] == 0
    assert got["genuine_dropped"] <= 0.01 * got["outliers"]
    assert got["dropped"] >= 0.95 * got["outliers"]

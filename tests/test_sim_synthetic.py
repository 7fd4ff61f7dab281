"""The one synthetic fleet (simulators/synthetic.py): what it publishes decodes to where it says
the units are, units with sites really stop at them, bad sentences are really bad, and the
publishing loop keeps its rate, window and message limit (fake pool, fake clock)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.nmea import DecodeOptions, Decoder
from simulators.publish import PoolStats
from simulators.synthetic import (
    EARTH_M_PER_DEG,
    FleetShape,
    SyntheticFleet,
    corrupt,
    inject_bad,
    publish_at_rate,
)

T0_US = 1_780_000_000_000_000


def _decode(fleet: SyntheticFleet, idx: np.ndarray, t_us: int) -> tuple[object, list[bytes]]:
    payloads = fleet.payloads(idx, t_us)
    units = [fleet.shape.unit_id(int(i)) for i in idx]
    res = Decoder(DecodeOptions()).decode(units, payloads, np.full(len(idx), t_us, np.int64))
    return res, payloads


def _metres(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    cos0 = math.cos(math.radians(float(np.mean(lat1))))
    return np.asarray(
        np.hypot((lat1 - lat2) * EARTH_M_PER_DEG, (lon1 - lon2) * EARTH_M_PER_DEG * cos0)
    )


@settings(max_examples=25, deadline=None)
@given(
    units=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    t_s=st.integers(0, 7 * 86_400),
    with_sites=st.booleans(),
)
def test_payloads_decode_to_the_fleets_own_positions(
    units: int, seed: int, t_s: int, with_sites: bool
) -> None:
    sites = np.array([[37.60, 55.75], [37.65, 55.70], [37.70, 55.80]]) if with_sites else None
    fleet = SyntheticFleet(FleetShape(units=units, seed=seed, sites_lonlat=sites))
    idx = np.arange(units, dtype=np.int64)
    t_us = T0_US + t_s * 1_000_000 + 123_456
    res, _ = _decode(fleet, idx, t_us)
    cols = fleet.columns(idx, t_us)
    fixes = res.fixes  # type: ignore[attr-defined]
    assert len(fixes) == units  # RMC+GGA merged into one fix per unit
    assert list(fixes.unit_id) == [fleet.shape.unit_id(i) for i in range(units)]
    assert (fixes.t_us == t_us - t_us % 10_000).all()
    assert _metres(fixes.lat, fixes.lon, cols.lat, cols.lon).max() < 0.05  # 5 decimals of minute
    np.testing.assert_allclose(fixes.speed_kmh, cols.speed_kmh, atol=0.01)


def test_same_shape_same_fleet_and_another_seed_another() -> None:
    idx = np.arange(10, dtype=np.int64)
    a = SyntheticFleet(FleetShape(units=10, seed=3)).payloads(idx, T0_US)
    b = SyntheticFleet(FleetShape(units=10, seed=3)).payloads(idx, T0_US)
    c = SyntheticFleet(FleetShape(units=10, seed=4)).payloads(idx, T0_US)
    assert a == b
    assert a != c


def test_units_with_sites_stand_at_their_site_for_the_dwell_then_drive_away() -> None:
    sites = np.array([[37.60, 55.75], [37.62, 55.76]])
    dwell_s = 120.0
    fleet = SyntheticFleet(FleetShape(units=6, seed=1, sites_lonlat=sites, dwell_s=dwell_s))
    idx = np.arange(6, dtype=np.int64)
    standing_s = np.zeros(6)
    near_s = np.zeros(6)
    far_m = np.zeros(6)
    lap_max = float((dwell_s + 2 * np.pi / fleet.omega).max())
    horizon = int(lap_max) + 2
    for s in range(horizon):
        c = fleet.columns(idx, T0_US + s * 1_000_000)
        own = sites[idx % len(sites)]
        d = _metres(c.lat, c.lon, own[:, 1], own[:, 0])
        still = c.speed_kmh == 0
        assert (d[still] < 1e-6 * EARTH_M_PER_DEG).all()  # standing means at the site
        standing_s += still
        near_s += d < 1.0
        far_m = np.maximum(far_m, d)
    # every unit stood at its site about one dwell per lap, and really left it between visits
    assert (standing_s >= dwell_s - 1).all()
    assert (near_s >= dwell_s - 1).all()
    assert (far_m > 2 * fleet.radius_m * 0.9).all()


def test_without_sites_units_never_stop() -> None:
    fleet = SyntheticFleet(FleetShape(units=50, seed=2))
    for s in range(0, 600, 7):
        c = fleet.columns(np.arange(50, dtype=np.int64), T0_US + s * 1_000_000)
        assert (c.speed_kmh >= 10 - 1e-9).all()


@given(first_seq=st.integers(0, 10_000), n=st.integers(0, 300), every=st.integers(0, 50))
def test_inject_bad_corrupts_exactly_the_sequence_numbers_it_says(
    first_seq: int, n: int, every: int
) -> None:
    fleet = SyntheticFleet(FleetShape(units=1))
    good = fleet.payloads(np.array([0]), T0_US)[0]
    payloads = [good] * n
    count = inject_bad(payloads, first_seq=first_seq, bad_every=every)
    hit = [i for i, p in enumerate(payloads) if p != good]
    want = [i for i in range(n) if every and (first_seq + i) % every == every - 1]
    assert hit == want
    assert count == len(want)


def test_a_corrupted_payload_is_rejected_by_its_checksum_and_the_gga_still_counts() -> None:
    fleet = SyntheticFleet(FleetShape(units=1))
    good = fleet.payloads(np.array([0]), T0_US)[0]
    bad = corrupt(good)
    assert bad != good
    assert len(bad) == len(good)
    res = Decoder(DecodeOptions()).decode(["lt-000000"], [bad], np.array([T0_US]))
    assert any(k.startswith("reject:") for k in res.counts)
    assert len(res.fixes) == 1  # the GGA alone still carries a fix


class FakePool:
    """A Pool that acks ``ack_per_pump`` messages per pump and records what it was given."""

    def __init__(self, *, connections: int = 2, max_inflight: int = 100, ack_per_pump: int = 50):
        self.stats = PoolStats()
        self.max_inflight = max_inflight
        self._connections = connections
        self.ack_per_pump = ack_per_pump
        self.sent: list[tuple[int, str, bytes]] = []
        self.peak_outstanding = 0
        self.clock = 0.0

    @property
    def connections(self) -> int:
        return self._connections

    @property
    def outstanding(self) -> int:
        return self.stats.published - self.stats.acked

    def connect(self, *, timeout_s: float = 10.0) -> None:
        raise AssertionError("the loop is given a connected pool")

    def wait_room(self, *, max_outstanding: int, deadline: float) -> None:
        raise AssertionError("the loop keeps its own window")

    def drain(self, *, timeout_s: float) -> bool:
        raise AssertionError("draining is the caller's business")

    def close(self) -> None:
        raise AssertionError("closing is the caller's business")

    def publish(self, conn: int, topic: str, payload: bytes) -> None:
        self.sent.append((conn, topic, payload))
        self.stats.published += 1
        self.peak_outstanding = max(self.peak_outstanding, self.outstanding)

    def pump(self, timeout_s: float) -> None:
        self.stats.acked = min(self.stats.published, self.stats.acked + self.ack_per_pump)
        self.clock += max(timeout_s, 0.001)  # every pump takes at least 1 ms of the fake clock


@pytest.mark.parametrize("rate", [1_000.0, 20_000.0])
def test_publish_at_rate_keeps_the_rate_the_window_and_round_robin(rate: float) -> None:
    fleet = SyntheticFleet(FleetShape(units=7, topic_root="t"))
    pool = FakePool(ack_per_pump=10_000)
    polls: list[float] = []
    run = publish_at_rate(
        fleet, pool, rate_per_s=rate, duration_s=2.0, clock=lambda: pool.clock,
        wall_us=lambda: T0_US + int(pool.clock * 1e6), poll=polls.append, poll_interval_s=0.5,
        unit_indices=np.array([1, 3, 5], dtype=np.int64),
    )  # fmt: skip
    assert rate * 2.0 * 0.98 <= run.sent <= rate * 2.0
    assert run.sent == len(pool.sent)
    assert pool.peak_outstanding <= pool.max_inflight * pool.connections
    topics = [t for _, t, _ in pool.sent]
    assert topics[:6] == [f"t/lt-00000{u}/nmea" for u in (1, 3, 5, 1, 3, 5)]
    units = [int(t.split("/")[1][3:]) for t in topics]
    assert [conn for conn, _, _ in pool.sent] == [u % 2 for u in units]
    assert 3 <= len(polls) <= 4


def test_publish_at_rate_never_exceeds_the_window_of_a_slow_broker() -> None:
    fleet = SyntheticFleet(FleetShape(units=1000))
    pool = FakePool(connections=1, max_inflight=64, ack_per_pump=3)
    run = publish_at_rate(
        fleet, pool, rate_per_s=1e6, duration_s=0.5, clock=lambda: pool.clock,
        wall_us=lambda: T0_US + int(pool.clock * 1e6),
    )  # fmt: skip
    assert pool.peak_outstanding == 64
    assert run.sent < 1e6 * 0.5  # held back by the acks, not by the rate


def test_publish_at_rate_stops_at_max_messages_and_counts_bad_ones() -> None:
    fleet = SyntheticFleet(FleetShape(units=10))
    pool = FakePool(ack_per_pump=10_000, max_inflight=10_000)
    run = publish_at_rate(
        fleet, pool, rate_per_s=1e9, duration_s=100.0, max_messages=1234, bad_every=100,
        clock=lambda: pool.clock, wall_us=lambda: T0_US + int(pool.clock * 1e6),
    )  # fmt: skip
    assert run.sent == len(pool.sent) == 1234
    assert run.bad == 12
    bad = [i for i, (_, _, p) in enumerate(pool.sent) if _checksum_broken(p)]
    assert bad == [i for i in range(1234) if i % 100 == 99]


def _checksum_broken(payload: bytes) -> bool:
    from ingest.nmea_encode import checksum

    line = payload.split(b"\r\n", 1)[0]
    body, _, cs = line[1:].rpartition(b"*")
    return cs != b"%02X" % checksum(body)


def test_loadtest_sites_option_puts_every_unit_through_a_site_of_the_file(tmp_path: Path) -> None:
    import json

    from fleetwatch.cmd_loadtest import site_centres
    from simulators.loadtest import LoadTestError, LoadTestParams

    feats = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [37.6 + k / 100, 55.75]},
         "properties": {"site_id": f"S{k}", "client_id": "C1", "name": f"s{k}", "radius_m": 40}}
        for k in range(3)
    ]  # fmt: skip
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    centres = site_centres(path)
    np.testing.assert_allclose(centres, [[37.60, 55.75], [37.61, 55.75], [37.62, 55.75]])
    p = LoadTestParams(units=6, sites_lonlat=centres, dwell_s=60.0)
    fleet = SyntheticFleet(p)
    idx = np.arange(6, dtype=np.int64)
    at_site = np.zeros(6, dtype=bool)
    for s in range(0, int((60 + 2 * np.pi / fleet.omega).max()) + 2, 5):
        c = fleet.columns(idx, T0_US + s * 1_000_000)
        own = centres[idx % 3]
        at_site |= _metres(c.lat, c.lon, own[:, 1], own[:, 0]) < 1.0
    assert at_site.all()
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(LoadTestError):
        site_centres(tmp_path / "empty.geojson")

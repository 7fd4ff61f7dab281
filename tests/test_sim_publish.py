"""Live publishing and the load tester: wire encoding, pacing, and delivery through a real broker.

Integration tests use the private broker fixture (tests/support/broker.py) and a paho
subscriber on its own network thread that collects what the broker delivered.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from fleetwatch import cli
from simulators.formats import iter_payloads, unit_files
from simulators.loadtest import (
    LoadTestParams,
    SyntheticFleet,
    _fifo_latency,
    _Polls,
    histogram_quantiles,
    run_load,
)
from simulators.mqtt_wire import (
    AckParser,
    MqttProtocolError,
    RawPublisherPool,
    encode_publish_qos1,
    varint,
)
from simulators.publish import (
    PoolStats,
    PublisherPool,
    TargetRefused,
    check_target,
    publish_scenario,
)
from simulators.scenario import ScenarioParams, write_scenario

# -- wire format (sans-I/O) ---------------------------------------------------------------------


@given(n=st.integers(0, 268_435_455))
def test_varint_round_trips(n: int) -> None:
    b = varint(n)
    value, mult = 0, 1
    for i, byte in enumerate(b):
        value += (byte & 0x7F) * mult
        mult *= 128
        assert bool(byte & 0x80) == (i < len(b) - 1)
    assert value == n
    assert len(b) <= 4


@settings(max_examples=200, deadline=None)
@given(
    n_acks=st.integers(0, 300),
    pings=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_ack_parser_counts_whatever_the_chunking(n_acks: int, pings: int, cuts: list[int]) -> None:
    stream = b"\x20\x02\x00\x00" + b"".join(
        b"\x40\x02" + (i % 65535 + 1).to_bytes(2, "big") for i in range(n_acks)
    )
    stream += b"\xd0\x00" * pings
    p = AckParser()
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for a, b in itertools.pairwise(points):
        p.feed(stream[a:b])
    assert p.connack_rc == 0
    assert p.pubacks == n_acks
    assert p.pingresps == pings


def test_ack_parser_refuses_what_a_publisher_never_gets() -> None:
    with pytest.raises(MqttProtocolError):
        AckParser().feed(b"\x30\x05\x00\x01a\x00\x01")  # a PUBLISH to a publish-only client


def test_publish_packet_layout() -> None:
    pkt = encode_publish_qos1(b"fleet/u1/nmea", 513, b"$X*00\r\n")
    assert pkt[0] == 0x32
    assert pkt[1] == len(pkt) - 2
    assert pkt[2:4] == (13).to_bytes(2, "big")
    assert pkt[4:17] == b"fleet/u1/nmea"
    assert pkt[17:19] == (513).to_bytes(2, "big")
    assert pkt[19:] == b"$X*00\r\n"


def test_targets_other_than_loopback_are_refused() -> None:
    with pytest.raises(TargetRefused):
        check_target("10.1.2.3", 1883)
    check_target("127.0.0.1", 1883)
    check_target("10.1.2.3", 1883, allowed=[("10.1.2.3", 1883)])  # the configured broker


# -- pacing, with a fake pool and a fake clock ---------------------------------------------------


class FakePool:
    """Publishes nothing; records (fake time, topic); pump() advances the fake clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[tuple[float, str, bytes]] = []
        self.stats = PoolStats()
        self.max_inflight = 100

    @property
    def connections(self) -> int:
        return 1

    @property
    def outstanding(self) -> int:
        return 0

    def clock(self) -> float:
        return self.now

    def connect(self, *, timeout_s: float = 1.0) -> None:
        pass

    def publish(self, conn: int, topic: str, payload: bytes) -> None:
        self.sent.append((self.now, topic, payload))
        self.stats.published += 1
        self.stats.acked += 1

    def pump(self, timeout_s: float) -> None:
        self.now += timeout_s

    def wait_room(self, *, max_outstanding: int, deadline: float) -> None:
        pass

    def drain(self, *, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


TINY = ScenarioParams(seed=3, sites=12, vehicles=2, rate_hz=0.2, slow_unit_fraction=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_scenario(TINY, out)
    return out


def _expected(tiny: Path) -> dict[str, list[bytes]]:
    return {u: [p for _, p in iter_payloads(f)] for u, f in unit_files(tiny).items()}


def test_paced_publishing_follows_receive_times(tiny: Path) -> None:
    pool = FakePool()
    speed = 60.0
    report = publish_scenario(
        tiny, pool, speed=speed, unit_connection=lambda u: 0, clock=pool.clock
    )
    recv = sorted(r for f in unit_files(tiny).values() for r, _ in iter_payloads(f))
    assert report.payloads == len(recv) == len(pool.sent)
    for (t, _, _), r in zip(pool.sent, recv, strict=True):
        want = (r - recv[0]) / 1e6 / speed
        assert want <= t <= want + 0.06  # never early; late by at most one pump step
    by_unit: dict[str, list[bytes]] = defaultdict(list)
    for _, topic, payload in pool.sent:
        by_unit[topic.split("/")[1]].append(payload)
    assert by_unit == _expected(tiny)


# -- against a real broker -----------------------------------------------------------------------


class Collector:
    """A paho subscriber on its own network thread (test-side only)."""

    def __init__(self, host: str, port: int, auth: tuple[str, str] | None = None) -> None:
        self.got: dict[str, list[bytes]] = defaultdict(list)
        self.count = 0
        self._ready = threading.Event()
        self._lock = threading.Lock()
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="collector")
        c.on_connect = lambda cl, *a: cl.subscribe("fleet/+/nmea", qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        if auth:
            c.username_pw_set(*auth)
        c.connect(host, port)
        c.loop_start()
        self.client = c
        assert self._ready.wait(10), "subscriber did not get its SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.got[msg.topic.split("/")[1]].append(msg.payload)
            self.count += 1

    def wait_for(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition with a deadline, not timing the test

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collector(mqtt_broker: Any) -> Iterator[Collector]:
    c = Collector(mqtt_broker.host, mqtt_broker.port)
    yield c
    c.close()


@pytest.mark.integration
@pytest.mark.parametrize("pool_kind", ["raw", "paho"])
def test_scenario_published_live_arrives_complete_and_in_order(
    tiny: Path, mqtt_broker: Any, collector: Collector, pool_kind: str
) -> None:
    cls = RawPublisherPool if pool_kind == "raw" else PublisherPool
    pool = cls(mqtt_broker.host, mqtt_broker.port, connections=2, client_id_prefix="sim-test")
    pool.connect()
    units = sorted(unit_files(tiny))
    try:
        report = publish_scenario(
            tiny, pool, speed=None, unit_connection=lambda u: units.index(u) % 2
        )
    finally:
        pool.close()
    expected = _expected(tiny)
    total = sum(len(v) for v in expected.values())
    assert report.payloads == report.acked == total
    collector.wait_for(total)
    assert dict(collector.got) == expected  # per unit, every payload, in publish order


@pytest.mark.integration
def test_load_tester_publishes_the_target_rate_without_loss(
    mqtt_broker: Any, collector: Collector
) -> None:
    p = LoadTestParams(units=2000, rate_hz=2.0, duration_s=1.5, drain_s=20.0)
    pool = RawPublisherPool(
        mqtt_broker.host, mqtt_broker.port, connections=2, client_id_prefix="lt"
    )
    pool.connect()
    try:
        report = run_load(p, pool)
    finally:
        pool.close()
    assert report["acked"] == report["published"]
    assert report["published"] >= 0.8 * p.target_rate * p.duration_s
    collector.wait_for(report["published"])
    assert collector.count == report["published"]
    assert set(collector.got) <= {p.unit_id(i) for i in range(p.units)}
    one = next(iter(collector.got.values()))[0]
    assert one.count(b"\r\n") == 2  # RMC + GGA per message
    assert b"RMC" in one
    assert b"GGA" in one


def test_synthetic_units_never_repeat_a_fix_time() -> None:
    p = LoadTestParams(units=3, rate_hz=50.0)
    fleet = SyntheticFleet(p)
    a = fleet.payloads(np.array([0, 1, 2]), 1_700_000_000_000_000)
    b = fleet.payloads(np.array([0, 1, 2]), 1_700_000_000_020_000)  # 20 ms later
    for x, y in zip(a, b, strict=True):
        assert x.split(b",")[1] != y.split(b",")[1]


def test_histogram_quantiles_from_two_scrapes() -> None:
    name = "lat_seconds"
    before = {
        f'{name}_bucket{{le="0.1"}}': 10.0,
        f'{name}_bucket{{le="1.0"}}': 10.0,
        f'{name}_bucket{{le="+Inf"}}': 10.0,
    }
    after = {
        f'{name}_bucket{{le="0.1"}}': 60.0,
        f'{name}_bucket{{le="1.0"}}': 110.0,
        f'{name}_bucket{{le="+Inf"}}': 110.0,
    }
    q = histogram_quantiles(before, after, name, (0.5, 0.99))
    assert q["p50"] == pytest.approx(0.1)  # 50 of 100 new samples are ≤ 0.1 s
    assert 0.9 < (q["p99"] or 0) <= 1.0


def test_fifo_latency_bounds() -> None:
    pub = np.array([0.0, 0.0, 1.0, 1.0])
    polls = _Polls(times=[0.5, 1.5, 2.5], counts=[1, 2, 4])
    lat = _fifo_latency(polls, pub, 1.0)
    assert lat["max"] == pytest.approx(1.5)
    assert lat["p50"] == pytest.approx(1.5)


def test_simulate_command_writes_a_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--sites",
            "15",
            "--vehicles",
            "2",
            "--seed",
            "4",
            "--rate-hz",
            "0.2",
            "--quiet",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vehicles"] == 2
    assert summary["late"] == 0
    for name in ("sites.geojson", "plans.csv", "depots.csv", "units.csv", "truth.json"):
        assert (tmp_path / name).is_file()
    assert len(list((tmp_path / "nmea").glob("*.nmea"))) == 2


def test_loadtest_command_refuses_a_remote_broker(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "loadtest",
            "--broker",
            "mqtt://192.0.2.7:1883",
            "--no-database",
            "--vehicles",
            "10",
            "--duration",
            "1",
        ]
    )
    assert rc == 2
    assert "refused" in capsys.readouterr().err


def test_simulate_arguments_reach_the_generator() -> None:
    from fleetwatch.cmd_simulate import _params, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--out", "x", "--noise-m", "4,9", "--skip-rate", "0.5", "--centre", "59.93,30.31"]
    )
    p = _params(args, default_date=None)
    assert (p.noise_min_m, p.noise_max_m, p.skip_rate) == (4.0, 9.0, 0.5)
    assert (p.lat0, p.lon0) == (59.93, 30.31)


@given(shift_s=st.integers(-400 * 86_400, 400 * 86_400))
def test_retimed_payloads_move_by_the_shift_and_keep_bad_sentences_bad(shift_s: int) -> None:
    import datetime as dt

    from ingest.nmea_encode import checksum
    from simulators.publish import retime_payload

    t0 = dt.datetime(2026, 11, 23, 23, 59, 58, tzinfo=dt.UTC)
    t0_us = int(t0.timestamp()) * 1_000_000
    fleet = SyntheticFleet(LoadTestParams(units=1))
    good = fleet.payloads(np.array([0]), t0_us + 250_000)[0]
    bad = b"$GPRMC,235958.25,A,5545.00000,N,03737.00000,E,1.000,1.00,231126,,,A*00\r\n"
    out = retime_payload(good + b"\x01\xffjunk\r\n" + bad, shift_s)
    lines = out.split(b"\r\n")
    assert lines[2:] == [b"\x01\xffjunk", bad[:-2], b""]
    rmc, gga = lines[0], lines[1]
    for line in (rmc, gga):
        body, _, cs = line[1:].rpartition(b"*")
        assert cs == b"%02X" % checksum(body)
    f = rmc.split(b",")
    want = t0 + dt.timedelta(seconds=shift_s)
    assert f[1] == f"{want:%H%M%S}.25".encode()
    assert f[9] == f"{want:%d%m}{want.year % 100:02d}".encode()
    assert gga.split(b",")[1] == f[1]
    assert rmc.split(b",")[2:9] == good.split(b"\r\n")[0].split(b",")[2:9]  # only time moved


@pytest.mark.integration
def test_per_unit_connections_pass_the_shipped_acl(
    tiny: Path, acl_broker: Any, tmp_path: Path
) -> None:
    """Each unit on its own connection, logged in as itself, may write only its own topic."""
    import shutil

    names = sorted(acl_broker.units)  # the ACL fixture's provisioned units
    (tmp_path / "nmea").mkdir()
    for src, name in zip(sorted(unit_files(tiny).values()), names, strict=False):
        shutil.copy(src, tmp_path / "nmea" / f"{name}.nmea")
    collector = Collector(acl_broker.host, acl_broker.port, auth=acl_broker.ingest_user)
    pool = PublisherPool(
        acl_broker.host,
        acl_broker.port,
        connections=len(names),
        client_id_prefix="acl-sim",
        credentials=lambda i: (names[i], acl_broker.units[names[i]]),
    )
    pool.connect()
    try:
        report = publish_scenario(tmp_path, pool, speed=None, unit_connection=names.index)
    finally:
        pool.close()
    expected = _expected(tmp_path)
    total = sum(len(v) for v in expected.values())
    assert report.acked == total
    collector.wait_for(total)
    collector.close()
    assert dict(collector.got) == expected

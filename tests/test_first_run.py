"""A new user's first run: every documented command works with its defaults, and bad input is
one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from fleetwatch.cli import EPILOG, main
from fleetwatch.cmd_check_broker import publish_backlog

#: fewer fixes, the same plan: a day's routes and windows do not depend on the fix rate
FEW_FIXES = ["--rate-hz", "0.1", "--slow-rate-hz", "0.1"]


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- fleetwatch simulate / replay / decode ---------------------------------------------------


def test_the_simulate_example_of_fleetwatch_help_writes_a_day(tmp_path: Path) -> None:
    # it was `--vehicles 20` with the default 1,500 sites: "V001's 68 stops cannot be served"
    (example,) = [x for x in EPILOG.splitlines() if "fleetwatch simulate" in x]
    argv = shlex.split(example)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "day")
    assert main([*argv, *FEW_FIXES]) == 0
    assert (tmp_path / "day" / "truth.json").is_file()


def test_simulate_a_single_vehicle_works_with_the_defaults(tmp_path: Path) -> None:
    # the default clock-off and silent units (one each) need two vehicles; the demo's
    # `--vehicles 1` fell back to the synthetic fleet because of it
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "1", "--sites", "5",
                 *FEW_FIXES]) == 0  # fmt: skip
    units = (tmp_path / "units.csv").read_text().splitlines()
    assert len(units) == 2


def test_simulate_keeps_the_faulty_units_when_the_fleet_can_carry_them(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "2", "--sites", "5",
                 *FEW_FIXES]) == 0  # fmt: skip
    scenario = json.loads((tmp_path / "truth.json").read_text())["scenario"]
    assert (scenario["clock_off_units"], scenario["silent_units"]) == (1, 1)


def test_simulate_too_many_sites_names_the_options_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--vehicles", "3", *FEW_FIXES]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "1500 sites are too many for 3 vehicles" in line
    assert "--vehicles" in line
    assert "--sites" in line


def test_simulate_too_many_faulty_units_names_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--out", str(tmp_path), "--vehicles", "1", "--silent-units", "2"]
    assert main(argv) == 2
    assert "--silent-units" in one_error_line(capsys.readouterr().err)


# -- fleetwatch check-broker ---------------------------------------------------------------

QUEUE_SIZE = 15  # paho's MQTT_ERR_QUEUE_SIZE


class _FakeInfo:
    """paho's MQTTMessageInfo, acknowledged when waited for (a broker slower than the queue)."""

    def __init__(self, client: _FakePahoClient, mid: int, rc: int) -> None:
        self.client, self.mid, self.rc = client, mid, rc
        self.published = False

    def wait_for_publish(self, timeout: float | None = None) -> None:
        if self.rc == QUEUE_SIZE:
            raise ValueError("Message is not queued due to ERR_QUEUE_SIZE")
        if self.client.acks:
            self.published = True
            self.client.in_flight.discard(self.mid)

    def is_published(self) -> bool:
        return self.published


class _FakePahoClient:
    """paho's rule that broke the default probe: packet ids are 16 bits, and a publish whose id
    is still unacknowledged is refused with MQTT_ERR_QUEUE_SIZE."""

    def __init__(self, *, acks: bool = True) -> None:
        self.acks = acks
        self.sent = 0
        self.in_flight: set[int] = set()
        self.most_in_flight = 0

    def publish(self, topic: str, payload: bytes, qos: int) -> _FakeInfo:
        mid = self.sent % 65535 + 1
        self.sent += 1
        if mid in self.in_flight:
            return _FakeInfo(self, mid, QUEUE_SIZE)
        self.in_flight.add(mid)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return _FakeInfo(self, mid, 0)


def test_check_broker_default_probe_outgrows_16_bit_packet_ids() -> None:
    # the default probe: 150 units x 1 Hz x 15 min; queued in one go it crashed with
    # "ValueError: Message is not queued due to ERR_QUEUE_SIZE" on a first run
    client = _FakePahoClient()
    publish_backlog(client, "fleetwatch-check/t", b"$x", 150 * 15 * 60)  # type: ignore[arg-type]
    assert client.sent == 135_000
    assert not client.in_flight
    assert client.most_in_flight < 65535


def test_check_broker_broker_that_stops_acknowledging_is_a_connection_error() -> None:
    client = _FakePahoClient(acks=False)
    with pytest.raises(ConnectionError, match="acknowledged nothing"):
        publish_backlog(client, "t", b"$x", 20, window=5, ack_timeout_s=0.01)  # type: ignore[arg-type]

"""`fleetwatch demo` end to end: private Mosquitto and PostgreSQL, a fleet, counts, clean exit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Broker

REPO = Path(__file__).resolve().parents[1]
DONE = re.compile(
    r"published (\d+) payloads \((\d+) corrupted, (\d+) from an unknown unit\); "
    r"fixes stored in PostgreSQL this run: (\d+); dead letters: (\d+); "
    r"acked (\d+) of (\d+) received"
)


def run_demo(
    *extra: str, data: Path | None = None, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One demo run; its data directory is removed afterwards unless *data* is given."""
    keep = data is not None
    # PostgreSQL started as root runs as 'nobody': its directory must be world-searchable
    data = data or Path(tempfile.mkdtemp(prefix="fleetwatch-demo-test-"))
    data.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["FLEETWATCH_DATA_DIR"] = str(data)
    env.update(env_extra or {})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "demo", "--duration", "4", *extra],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    return proc, data


def assert_servers_gone(data: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(data) not in ps.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_demo_with_the_synthetic_fleet_stores_every_good_fix() -> None:
    proc, data = run_demo("--fleet", "synthetic", "--vehicles", "30")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"t\+\s+\d+s\s+published\s+\d+\s+received", proc.stdout)
    done = DONE.search(proc.stdout)
    assert done, proc.stdout
    published, _bad, strangers, stored, _dead, acked, received = map(int, done.groups())
    assert published > 0
    assert stored == published - strangers  # a corrupted RMC still leaves its GGA's fix
    assert acked == received == published
    assert_servers_gone(data)


@pytest.mark.integration
@pytest.mark.slow
def test_demo_replays_the_simulated_day_and_acks_all_it_receives() -> None:
    proc, data = run_demo("--vehicles", "10", "--speed", "120")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = DONE.search(proc.stdout)
    assert done, proc.stdout
    published, _bad, _strangers, stored, _dead, acked, received = map(int, done.groups())
    assert acked == received
    assert received >= published
    assert stored > 0
    assert_servers_gone(data)


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_can_be_run_twice_and_the_second_run_stores_a_fresh_day() -> None:
    data = Path(tempfile.mkdtemp(prefix="fleetwatch-demo-twice-"))
    try:
        first, _ = run_demo("--vehicles", "5", "--speed", "300", data=data)
        assert first.returncode == 0, first.stdout + first.stderr
        second, _ = run_demo("--vehicles", "5", "--speed", "300", data=data)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    # the demo fails loudly when most decoded fixes were already stored: exit 0 means fresh
    assert second.returncode == 0, second.stdout + second.stderr
    assert re.search(r"is already stored: replaying \d{4}-\d{2}-\d{2}", second.stdout)
    done = DONE.search(second.stdout)
    assert done, second.stdout
    assert int(done.group(4)) > 0


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_leaves_no_session_on_a_configured_broker(mqtt_broker: Broker) -> None:
    proc, _ = run_demo(
        "--fleet", "synthetic", "--vehicles", "3",
        env_extra={"FLEETWATCH_MQTT_URL": mqtt_broker.url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    present: list[bool] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="fleetwatch-ingest-demo",
        protocol=paho.MQTTv5,
    )  # fmt: skip
    client.on_connect = lambda _c, _u, flags, _rc, _p: present.append(flags.session_present)
    client.connect(mqtt_broker.host, mqtt_broker.port, clean_start=False)
    for _ in range(50):
        client.loop(0.1)
        if present:
            break
    client.disconnect()
    assert present == [False]

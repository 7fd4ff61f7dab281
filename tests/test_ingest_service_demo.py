"""`fleetwatch demo` end to end: private Mosquitto and PostgreSQL, a fleet, counts, clean exit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DONE = re.compile(
    r"published (\d+) payloads \((\d+) corrupted, (\d+) from an unknown unit\); "
    r"fixes stored in PostgreSQL this run: (\d+); dead letters: (\d+); "
    r"acked (\d+) of (\d+) received"
)


def run_demo(*extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    # PostgreSQL started as root runs as 'nobody': its directory must be world-searchable
    data = Path(tempfile.mkdtemp(prefix="fleetwatch-demo-test-"))
    data.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["FLEETWATCH_DATA_DIR"] = str(data)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "demo", "--duration", "4", *extra],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    finally:
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

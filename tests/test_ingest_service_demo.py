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


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_stores_what_it_publishes_and_cleans_up() -> None:
    # PostgreSQL started as root runs as 'nobody': its directory must be world-searchable
    tmp_path = Path(tempfile.mkdtemp(prefix="fleetwatch-demo-test-"))
    tmp_path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["FLEETWATCH_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "fleetwatch", "demo", "--duration", "4", "--vehicles", "30"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"t\+\s+\d+s\s+published\s+\d+\s+received", proc.stdout)
    done = re.search(
        r"published (\d+) payloads \((\d+) corrupted, (\d+) from an unknown unit\); "
        r"fixes stored in PostgreSQL this run: (\d+)",
        proc.stdout,
    )
    assert done, proc.stdout
    published, _bad, strangers, stored = map(int, done.groups())
    assert published > 0
    assert stored == published - strangers  # a corrupted RMC still leaves its GGA's fix
    # the private servers are gone: nothing listens on the demo's files any more
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path) not in ps.stdout

"""`fleetwatch run` as an operator meets it: every bad setting at once, one line each, documented
exit codes, fail fast or --wait-for, and nothing but a line for resources it cannot have."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetwatch.health import DependencyLog
from fleetwatch.startup import (
    EXIT_CONFIG,
    EXIT_PORT,
    EXIT_UNAVAILABLE,
    DependencyRefused,
    DependencyUnavailable,
    wait_until_available,
)

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleetwatch(
    *args: str, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fleetwatch", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )  # fmt: skip


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("fleetwatch run:")]


def test_bad_settings_all_at_once_exit_2_no_traceback() -> None:
    proc = fleetwatch("run", env={
        "FLEETWATCH_MQTT_URL": "http://u:hunter2@broker",
        "FLEETWATCH_DATABASE_URL": "notadsn",
        "FLEETWATCH_HTTP_PORT": "99999",
    })  # fmt: skip
    assert proc.returncode == EXIT_CONFIG
    lines = error_lines(proc)
    assert len(lines) == 3, proc.stderr
    assert proc.stderr.count("\n") == 3  # nothing else: no traceback, no log
    for setting in ("FLEETWATCH_MQTT_URL", "FLEETWATCH_DATABASE_URL", "FLEETWATCH_HTTP_PORT"):
        assert any(setting in line for line in lines)
    assert "hunter2" not in proc.stderr


def test_missing_dependencies_are_named_before_anything_connects() -> None:
    proc = fleetwatch("run", env={})
    assert proc.returncode == EXIT_CONFIG
    assert len(error_lines(proc)) == 2
    assert "FLEETWATCH_MQTT_URL" in proc.stderr
    assert "FLEETWATCH_DATABASE_URL" in proc.stderr


def test_unreachable_dependencies_fail_fast_with_exit_3_one_line_each() -> None:
    t0 = time.monotonic()
    proc = fleetwatch("run", "--http-port", "0", env={
        "FLEETWATCH_MQTT_URL": f"mqtt://u:hunter2@127.0.0.1:{closed_port()}",
        "FLEETWATCH_DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/db",
    })  # fmt: skip
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("fleetwatch run: database unavailable: FLEETWATCH_DATABASE_URL=")
    assert lines[1].startswith("fleetwatch run: broker unavailable: FLEETWATCH_MQTT_URL=")
    assert all("--wait-for" in line for line in lines)
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr
    assert time.monotonic() - t0 < 30


def test_http_port_in_use_is_exit_4_and_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = fleetwatch("run", "--http-port", str(port), env={
            "FLEETWATCH_MQTT_URL": f"mqtt://127.0.0.1:{closed_port()}",
            "FLEETWATCH_DATABASE_URL": f"postgresql://127.0.0.1:{closed_port()}/db",
        })  # fmt: skip
    assert proc.returncode == EXIT_PORT, proc.stderr
    (line,) = error_lines(proc)
    assert f"FLEETWATCH_HTTP_PORT={port}" in line
    assert "in use" in line
    assert "Traceback" not in proc.stderr


# -- the wait policy, without processes ---------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.anyio
async def test_wait_for_retries_until_the_dependency_answers_and_logs_two_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    attempts = 0

    async def probe() -> None:
        nonlocal attempts
        attempts += 1
        clock.t += 1.0
        if attempts < 5:
            raise DependencyUnavailable("connection refused")

    dep = DependencyLog("database", "FLEETWATCH_DATABASE_URL", clock=clock)
    with caplog.at_level("INFO", logger="fleetwatch.health"):
        await wait_until_available(
            probe, dep, operation="connect", wait_s=60, clock=clock, initial_s=0.001, max_s=0.002
        )
    assert attempts == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # down once, back once; nothing per attempt
    assert "connection refused" in warnings[0]
    assert "next attempt in" in warnings[0]
    assert warnings[1].startswith("database available again after 4.0 s")


@pytest.mark.anyio
async def test_wait_for_gives_up_at_its_deadline_and_never_waits_for_a_refusal() -> None:
    clock = FakeClock()

    async def down() -> None:
        clock.t += 1.0
        raise DependencyUnavailable("connection refused")

    dep = DependencyLog("broker", "FLEETWATCH_MQTT_URL", clock=clock)
    with pytest.raises(DependencyUnavailable):
        await wait_until_available(
            down, dep, operation="connect", wait_s=3, clock=clock, initial_s=0.001, max_s=0.001
        )
    assert 3 <= clock.t <= 5

    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise DependencyRefused("not authorised")

    with pytest.raises(DependencyRefused):
        await wait_until_available(refused, dep, operation="connect", wait_s=60, clock=clock)
    assert calls == 1
    await asyncio.sleep(0)

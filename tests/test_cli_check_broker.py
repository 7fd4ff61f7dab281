"""`fleetwatch check-broker` against real brokers: the shipped configuration holds the backlog,
a minimal one (Mosquitto's default queue limit) does not and the output names the settings;
the shipped ACL lets the ingest user read the broker's $SYS counters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleetwatch.broker_watch import BrokerMetrics, BrokerSysWatcher
from fleetwatch.cmd_check_broker import EXIT_TOO_SMALL, ProbeResult, verdict
from tests.support.broker import AclBroker, MosquittoBroker, _run_as, free_port, mosquitto_path

ROOT = Path(__file__).resolve().parents[1]


def check_broker(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fleetwatch", "check-broker", "--mqtt-url", url, *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip


def test_verdicts() -> None:
    ok = ProbeResult(needed=100, published=100, held=100, seconds=1)
    assert verdict(ok, payload_bytes=150)[0] == 0
    partial = ProbeResult(needed=1000, published=100, held=100, seconds=1)
    code, line = verdict(partial, payload_bytes=150)
    assert code == 0
    assert "--max-probe 1000" in line
    lost = ProbeResult(needed=100, published=100, held=10, seconds=1)
    code, line = verdict(lost, payload_bytes=150)
    assert code == EXIT_TOO_SMALL
    assert "max_queued_messages >= 100" in line


@pytest.mark.integration
def test_the_shipped_broker_config_holds_the_backlog(acl_broker: AclBroker) -> None:
    user, password = acl_broker.ingest_user
    url = f"mqtt://{user}:{password}@{acl_broker.host}:{acl_broker.port}"
    proc = check_broker(url, "--units", "50", "--rate", "1", "--minutes", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[0])
    assert result["published"] == result["held"] == 3000
    assert "OK" in proc.stdout
    assert password not in proc.stdout + proc.stderr


@pytest.mark.integration
def test_a_minimal_broker_config_is_found_too_small(tmp_path: Path) -> None:
    if mosquitto_path() is None:
        pytest.fail("mosquitto is needed for this test")
    port = free_port()
    conf = textwrap.dedent(f"""\
        user {_run_as()}
        listener {port} 127.0.0.1
        allow_anonymous true
        persistence false
        """)  # Mosquitto's defaults: max_queued_messages 1000
    broker = MosquittoBroker(tmp_path, conf_text=conf, port=port)
    broker.start()
    try:
        proc = check_broker(broker.url, "--units", "50", "--rate", "1", "--minutes", "1")
    finally:
        broker.stop()
    assert proc.returncode == EXIT_TOO_SMALL, proc.stderr
    result = json.loads(proc.stdout.splitlines()[0])
    assert result["held"] < result["published"] == 3000
    assert "max_queued_messages >= 3000" in proc.stderr


@pytest.mark.anyio
@pytest.mark.integration
async def test_the_shipped_acl_lets_the_ingest_user_watch_drops(acl_broker: AclBroker) -> None:
    user, password = acl_broker.ingest_user
    registry = CollectorRegistry()
    watcher = BrokerSysWatcher(
        host=acl_broker.host, port=acl_broker.port, username=user, password=password,
        client_id="fw-acl-test", version=5, metrics=BrokerMetrics(registry),
    )  # fmt: skip
    try:
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            task = tg.create_task(watcher.run())
            await watcher.seen.wait()  # $SYS is retained: the first values arrive at once
            task.cancel()
    except TimeoutError:
        log = acl_broker.log.read_text(errors="replace")[-3000:] if acl_broker.log.exists() else ""
        pytest.fail(f"no $SYS reading in 30 s ({watcher.readings} readings); broker log:\n{log}")
    assert registry.get_sample_value("fleetwatch_broker_sys_visible") == 1

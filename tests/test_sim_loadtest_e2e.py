"""The load tester against a real ``fleetwatch run`` process, private broker and database.

What it checks is the tester's measuring side: rows counted in the database, the metrics
scrape, the process probe, and that a small load is stored with zero loss.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulators.loadtest import LoadTestParams, ProcessProbe, StoredCounter, run_load
from simulators.mqtt_wire import RawPublisherPool

READY_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(metrics_url: str, dsn: str) -> bool:
    try:
        with urllib.request.urlopen(metrics_url, timeout=1) as r:
            r.read()
        with psycopg.connect(dsn, connect_timeout=2) as c:
            c.execute("SELECT 1 FROM fixes LIMIT 1")
    except (OSError, psycopg.Error):
        return False
    return True


@pytest.fixture
def fleetwatch_run(mqtt_broker: Any, pg_dsn: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    port = _free_port()
    env = dict(os.environ)
    env.update(
        FLEETWATCH_MQTT_URL=mqtt_broker.url,
        FLEETWATCH_DATABASE_URL=pg_dsn,
        FLEETWATCH_ACCEPT_UNKNOWN_UNITS="true",
        FLEETWATCH_HTTP_PORT=str(port),
        FLEETWATCH_MQTT_CLIENT_ID=f"fw-lt-{port}",
        FLEETWATCH_LOG_LEVEL="WARNING",
    )
    if getattr(mqtt_broker, "kind", "mosquitto") != "mosquitto":
        env["FLEETWATCH_MQTT_VERSION"] = "4"
    log = (tmp_path / "fleetwatch.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetwatch", "run"], env=env, stdout=log, stderr=log
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(metrics, pg_dsn):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(
                "fleetwatch run did not come up:\n" + (tmp_path / "fleetwatch.log").read_text()
            )
        time.sleep(0.2)  # waiting for a subprocess to listen, with a deadline
    try:
        yield proc.pid, metrics
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.integration
@pytest.mark.slow
def test_load_is_stored_without_loss_and_measured(
    mqtt_broker: Any, pg_dsn: str, fleetwatch_run: tuple[int, str]
) -> None:
    pid, metrics = fleetwatch_run
    p = LoadTestParams(units=1000, rate_hz=2.0, duration_s=2.0, drain_s=30.0, poll_interval_s=0.1)
    pool = RawPublisherPool(
        mqtt_broker.host, mqtt_broker.port, connections=2, client_id_prefix="e2e"
    )
    stored = StoredCounter(pg_dsn, p.unit_prefix)
    pool.connect()
    try:
        report = run_load(p, pool, stored=stored, metrics_url=metrics, probe=ProcessProbe(pid=pid))
    finally:
        pool.close()
        stored.close()
    assert report["published"] > 0.8 * p.target_rate * p.duration_s
    assert report["loss"] == 0, report
    assert report["stored"] == report["published"]
    assert report["metrics_inserted"] == report["published"]
    assert report["latency_db_poll_s"]["p50"] > 0
    assert report["fleetwatch_peak_rss_mb"] > 10
    assert report["fleetwatch_cpu_percent"] > 0

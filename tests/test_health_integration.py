"""/readyz and /healthz of a running service against real PostgreSQL and Mosquitto processes:
readiness follows the database (probed while idle) and the broker within seconds, liveness does
not, and each outage is one WARNING down and one WARNING back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.config import Settings
from fleetwatch.service import Running, run_ingest
from store.embedded import EmbeddedPostgres
from tests.support.broker import Broker
from tests.support.pg import fresh_database
from tests.test_deploy import alert_exprs, metric_names
from tests.test_web import http_get

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def private_dsn(private_pg_server: EmbeddedPostgres) -> Iterator[str]:
    yield from fresh_database(private_pg_server.dsn)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run_ingest(settings, stop=stop, on_ready=ready.set_result))
        async with asyncio.timeout(30):
            done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        try:
            yield ready.result()
        finally:
            stop.set()


async def status_of(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, body = await http_get(port, path)
    return status, json.loads(body)


async def within(timeout_s: float, check: Callable[[], Any]) -> float:
    """Seconds until ``await check()`` is true; fails after *timeout_s*."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await check():
            return time.monotonic() - t0
        await asyncio.sleep(0.1)  # polling an external process's state, bounded
    pytest.fail(f"not within {timeout_s} s")


async def test_readiness_follows_the_database_and_the_broker_within_seconds(
    mqtt_broker: Broker,
    private_pg_server: EmbeddedPostgres,
    private_dsn: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(
        mqtt_url=mqtt_broker.url,
        database_url=private_dsn,
        http_port=0,
        mqtt_client_id=f"fw-health-{uuid.uuid4().hex[:8]}",
        database_timeout_s=1.0,
        accept_unknown_units=True,
    )
    async with running(settings) as h:
        assert h.http_port is not None
        port = h.http_port

        async def ready() -> bool:
            return (await status_of(port, "/readyz"))[0] == 200

        async def not_ready_because(check: str) -> bool:
            status, body = await status_of(port, "/readyz")
            return status == 503 and not body["checks"][check]["ok"]

        await within(20, ready)
        # the service is idle: no write is due, so only the probe can notice
        private_pg_server.stop()
        took = await within(10, lambda: not_ready_because("database"))
        assert took < 8
        assert (await status_of(port, "/healthz"))[0] == 200  # a restart would not help
        _, metrics = await http_get(port, "/metrics")
        assert b"fleetwatch_database_up 0.0" in metrics
        assert b"fleetwatch_ready 0.0" in metrics
        private_pg_server.start()
        await within(20, ready)
        # what the alert rules name is what the running service exposes (the engine's aside:
        # it is off without a sites file)
        _, metrics = await http_get(port, "/metrics")
        exposed = set(re.findall(rb"^# HELP (fleetwatch_[a-z0-9_]+)", metrics, re.M))
        for expr in alert_exprs():
            for name in {n for n in metric_names(expr) if not n.startswith("fleetwatch_engine_")}:
                family = re.sub(r"_(total|bucket|count|sum)$", "", name).encode()
                assert any(e.startswith(family) for e in exposed), name

        mqtt_broker.stop()
        await within(10, lambda: not_ready_because("broker"))
        mqtt_broker.start()
        await within(30, ready)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    down = [m for m in warnings if m.startswith("database unavailable")]
    back = [m for m in warnings if m.startswith("database available again")]
    assert len(down) == 1, warnings
    assert len(back) == 1, warnings
    assert "FLEETWATCH_DATABASE_URL" in down[0]
    assert "next attempt in" in down[0]
    broker = [m for m in warnings if m.startswith("broker ")]
    assert len(broker) == 2, broker  # lost once, back once
    assert "FLEETWATCH_MQTT_URL" in broker[0]

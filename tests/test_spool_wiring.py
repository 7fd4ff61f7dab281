"""``fleetwatch run`` with ``FLEETWATCH_SPOOL_FILE``: the service wires the spool and its drain.

The spool's rules are tested in tests/test_spool*.py; here only that the settings reach it:
with the database stopped the running service keeps acknowledging, ``/metrics`` shows the
spool, and after the database returns the drain task stores everything once.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from store.embedded import EmbeddedPostgres
from tests.support.broker import Broker
from tests.test_ingest_service_integration import (
    counts,
    eventually,
    fleet_items,
    publish,
    running,
    settings_for,
    stored,
    units_csv,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


async def test_the_service_spools_through_an_outage_when_a_spool_file_is_set(
    mqtt_broker: Broker, private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    pg = private_pg_server
    items = fleet_items(units=10, seconds=120, start_s=int(time.time()) - 3600)
    before, during = items[:200], items[200:]
    settings = settings_for(mqtt_broker, pg.dsn, units_csv(tmp_path / "u.csv", 10),
                            spool_file=tmp_path / "spool.db")  # fmt: skip
    async with running(settings) as h:
        assert h.spool is not None
        spool = h.spool
        await publish(mqtt_broker, before)
        await eventually(stored(pg.dsn, len(before)))
        await asyncio.to_thread(pg.stop)
        try:
            await publish(mqtt_broker, during)
            await eventually(lambda: h.service.statistics().messages_acked == len(items))
            assert spool.statistics().fixes == len(during)
            assert h.http_port is not None
            text = await asyncio.to_thread(scrape, h.http_port)
            assert f"fleetwatch_spool_fixes {float(len(during))}" in text
        finally:
            await asyncio.to_thread(pg.start)
        await eventually(lambda: spool.statistics().batches == 0, timeout_s=60)
    rows, distinct, _ = counts(pg.dsn)
    assert rows == distinct == len(items)

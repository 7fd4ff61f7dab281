"""Reliability #3 for the engine: a 60 s database outage under load leaves alerting going.

The real service (``run_ingest``: broker, decoder, spool, engine with the schedule board and
the alert desk) is fed a simulated day through a real Mosquitto while its private PostgreSQL is
stopped for 60 s.  The engine is fed after decode, beside the store: during the outage the test
watches visits and schedule events come out of it, the receiver keeps acknowledging (into the
spool), and after recovery every fix is stored exactly once and the final stop states are
replay's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest

from core.fixes import US_PER_S
from fleetwatch.cmd_replay import replay_scenario
from schedule.events import VisitStarted
from schedule.params import DetectionParams
from schedule.stop_events import StopChanged
from simulators.formats import merged_payloads
from simulators.scenario import write_scenario
from store.embedded import EmbeddedPostgres
from tests.support.broker import Broker
from tests.test_engine_live import small_params
from tests.test_ingest_service_integration import counts, eventually, publish, running, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

OUTAGE_S = 60.0


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_60s_database_outage_leaves_the_engine_alerting(
    mqtt_broker: Broker, private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    pg = private_pg_server
    scenario = tmp_path / "scenario"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    write_scenario(dataclasses.replace(small_params(day), skip_rate=0.15), scenario)
    items = [(f"fleet/{u}/nmea", p) for _, u, p in merged_payloads(scenario)]
    half = len(items) // 2
    settings = settings_for(
        mqtt_broker,
        pg.dsn,
        scenario / "units.csv",
        sites_file=scenario / "sites.geojson",
        plans_dir=scenario,
        spool_file=tmp_path / "spool.db",
        detect_interval_ms=200.0,
    )
    async with running(settings) as h:
        live = h.engine
        assert live is not None
        await publish(mqtt_broker, items[:half])
        await eventually(lambda: h.service.statistics().messages_acked >= half)
        await live.flush()
        before = len(live.recent)

        await asyncio.to_thread(pg.stop)
        down_at = time.monotonic()
        try:
            await publish(mqtt_broker, items[half:])
            # acknowledged (into the spool) while the database is down
            await eventually(
                lambda: h.service.statistics().messages_acked >= len(items), timeout_s=50
            )
            await live.flush()
            during = list(live.recent)[before:]
            assert not pg.running
            # the engine went on: visits recognised and stops decided from the fixes that came
            # in while the database was down
            assert any(isinstance(e, VisitStarted) for e in during)
            assert any(isinstance(e, StopChanged) for e in during)
            await asyncio.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        finally:
            await asyncio.to_thread(pg.start)
        assert h.spool is not None
        await eventually(lambda: h.spool.statistics().batches == 0, timeout_s=120)  # type: ignore[union-attr]
        newest = live.engine.newest_fix_us
        assert newest is not None
        await live.call(lambda e, _now: e.finish(newest + 86_400 * US_PER_S))
        out = list(live.recent)
    rows, distinct, _dead = counts(pg.dsn)
    replay = replay_scenario(scenario, DetectionParams())
    assert rows == distinct == replay.summary["fixes"]

    def final(records: list[object]) -> dict[str, tuple[object, ...]]:
        f: dict[str, StopChanged] = {}
        for e in records:
            if isinstance(e, StopChanged):
                f[e.stop_id] = e
        return {k: (v.state, v.outcome, v.arrival_us) for k, v in f.items()}

    assert final(out) == final(replay.output)

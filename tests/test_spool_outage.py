"""Reliability #3 with the spool: a 60 s database outage under load, through the real pipeline.

Real Mosquitto, real PostgreSQL (a private server the test stops), the real ingest service
(``ingest.service.IngestService`` unchanged) writing through :class:`store.spool.SpoolingSink`.
Without the spool the same outage stops acknowledgements (tests/test_ingest_service_integration.py
``test_database_down_under_load_then_every_fix_stored_once_and_acked`` shows the broker holding
the backlog); with it the receiver keeps acknowledging - each ack after the spool's fsync - and
the decoded fixes keep flowing to the engine's branch (``on_decoded``).  After recovery the
drain writes every fix exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core.fixes import FixBatch
from fleetwatch.service import ingest_options, mqtt_settings
from ingest.mqtt import MqttSource, unit_id_from_topic
from ingest.nmea import Decoder
from ingest.registry import UnitRegistry, read_units_csv
from ingest.service import IngestService
from store import StoreUnavailable, StoreWriteError, open_store
from store.embedded import EmbeddedPostgres
from store.spool import open_spooling_sink
from tests.support.broker import Broker
from tests.test_ingest_service_integration import (
    counts,
    eventually,
    fleet_items,
    publish,
    settings_for,
    stored,
    units_csv,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

UNITS = 50
CHUNK_SECONDS = 100  # fix-seconds of the fleet per chunk: 5,000 messages
OUTAGE_S = 60.0
CHUNKS = 6  # one chunk every 10 s of the outage


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_60s_database_outage_under_load_keeps_acknowledging_and_stores_all_once(
    mqtt_broker: Broker, private_pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    pg = private_pg_server
    t0 = int(time.time()) - 7200
    items = fleet_items(units=UNITS, seconds=20 + CHUNKS * CHUNK_SECONDS, start_s=t0)
    before, rest = items[: 20 * UNITS], items[20 * UNITS :]
    n = CHUNK_SECONDS * UNITS
    chunks = [rest[i * n : (i + 1) * n] for i in range(CHUNKS)]
    total = len(before) + sum(len(c) for c in chunks)
    units = units_csv(tmp_path / "u.csv", UNITS)
    settings = settings_for(mqtt_broker, pg.dsn, units, ingest_batch_max_messages=500,
                            mqtt_max_buffered_messages=1000)  # fmt: skip
    downstream: list[int] = []  # fixes handed to the engine's branch after each decode

    async def on_decoded(fixes: FixBatch) -> None:
        downstream.append(len(fixes))

    async with (
        open_store(pg.dsn, partitioning="native", timeout_s=1.0) as store,
        open_spooling_sink(
            tmp_path / "spool.db", store, retry_initial_s=0.1, retry_max_s=0.5
        ) as sink,
        MqttSource(mqtt_settings(settings), max_buffered_messages=1000) as source,
    ):
        service = IngestService(
            source=source,
            decoder=Decoder(),
            sink=sink,
            registry=UnitRegistry(read_units_csv(units)),
            options=ingest_options(settings),
            unavailable=(StoreUnavailable,),
            refused=(StoreWriteError,),
            unit_id_from_topic=unit_id_from_topic,
            on_decoded=on_decoded,
        )
        async with asyncio.TaskGroup() as tg:
            pipeline = tg.create_task(service.run(), name="ingest-pipeline")
            drain = tg.create_task(sink.run_drain(), name="store-spool-drain")
            async with asyncio.timeout(15):
                await source.wait_connected()
            await publish(mqtt_broker, before)
            await eventually(stored(pg.dsn, len(before)))
            assert sink.statistics().spooled_batches == 0, "fast path while the database is up"

            await asyncio.to_thread(pg.stop)
            down_at = time.monotonic()
            accepted_before = service.statistics().fixes_accepted
            try:
                acked = len(before)
                for i, chunk in enumerate(chunks):
                    await publish(mqtt_broker, chunk)
                    acked += len(chunk)
                    await eventually(
                        lambda n=acked: service.statistics().messages_acked >= n,  # type: ignore[misc]
                        timeout_s=30,
                    )
                    s = sink.statistics()
                    assert s.batches > 0
                    accepted = service.statistics().fixes_accepted
                    assert s.fixes == accepted - accepted_before, "every acked fix is spooled"
                    assert sum(downstream) == accepted, "fixes flow on while the database is down"
                    await asyncio.sleep(max(0.0, down_at + (i + 1) * OUTAGE_S / CHUNKS
                                            - time.monotonic()))  # fmt: skip
                assert not pg.running
                outage_s = time.monotonic() - down_at
                s = sink.statistics()
                assert s.oldest_age_s is not None
                assert s.oldest_age_s >= OUTAGE_S - 15
                assert s.full_waits == 0
                assert s.drain_retries >= 10
            finally:
                await asyncio.to_thread(pg.start)
            await eventually(lambda: sink.statistics().batches == 0, timeout_s=120)
            service.request_stop()
            await pipeline
            drain.cancel()
        s = sink.statistics()
        st = service.statistics()
    rows, distinct, dead = counts(pg.dsn)
    assert rows == distinct == st.fixes_accepted == total
    assert dead == {}
    assert st.messages_received == st.messages_acked == total
    assert s.drained_fixes_inserted + st.fixes_inserted == total
    assert s.skipped == {}
    assert outage_s >= OUTAGE_S

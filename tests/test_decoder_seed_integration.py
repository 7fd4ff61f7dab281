"""The decoder seeded at start (fleetwatch.service.seed_decoder, Store.last_fixes) through a real
Mosquitto and PostgreSQL: after a restart, a unit's first fix is judged against the newest fix
the store holds for it."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from core.fixes import US_PER_S, Fix
from ingest.nmea_encode import encode_gga, encode_rmc
from store import Store
from tests.support.broker import Broker
from tests.test_ingest_service_integration import (
    counts,
    eventually,
    publish,
    running,
    settings_for,
    units_csv,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KM = 1 / 111.195  # degrees of latitude per km


def message(unit: str, t_s: int, lat: float) -> tuple[str, bytes]:
    f = Fix(unit_id=unit, t_us=t_s * US_PER_S, recv_us=0, lat=lat, lon=37.5, speed_kmh=20.0,
            course=0.0, quality=1, sats=9, hdop=0.9, alt_m=150.0)  # fmt: skip
    return f"fleet/{unit}/nmea", encode_rmc(f) + encode_gga(f)


def dead_letters(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT unit_id, reason FROM dead_letters ORDER BY id").fetchall()
    return [(str(u), str(r)) for u, r in rows]


async def test_an_outlier_right_after_a_restart_becomes_a_dead_letter(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    t0 = int(time.time()) - 120
    units = units_csv(tmp_path / "units.csv", 3)
    # first life: U0000 and U0001 report where they are; the store keeps it
    async with running(settings_for(mqtt_broker, pg_dsn, units)) as h:
        await publish(mqtt_broker, [message("U0000", t0, 55.7), message("U0001", t0, 55.8)])
        await eventually(lambda: counts(pg_dsn)[0] == 2)
        await eventually(lambda: h.service.statistics().messages_acked >= 2)
    store = await Store.open(pg_dsn)
    try:
        last = await store.last_fixes((t0 - 3600) * US_PER_S, (t0 + 3600) * US_PER_S)
        assert last.unit_id.tolist() == ["U0000", "U0001"]
        assert last.t_us.tolist() == [t0 * US_PER_S] * 2
    finally:
        await store.aclose()

    # second life: U0000's outlier 10 km away 5 s after its stored fix is refused, its genuine
    # fix after it stored; U0001's redelivered stored fix is decided as without the seed (the
    # store's key absorbs it, no dead letter); U0002 has no stored fix: its first fix stands.
    async with running(settings_for(mqtt_broker, pg_dsn, units)) as h:
        await publish(mqtt_broker, [
            message("U0000", t0 + 5, 55.7 + 10 * KM),
            message("U0000", t0 + 6, 55.7 + 0.02 * KM),
            message("U0001", t0, 55.8),
            message("U0002", t0 + 5, 55.7 + 10 * KM),
        ])  # fmt: skip
        await eventually(lambda: h.service.statistics().messages_acked >= 4)
    rows, distinct, _ = counts(pg_dsn)
    assert (rows, distinct) == (4, 4)
    assert dead_letters(pg_dsn) == [("U0000", "implausible_jump")]
    with psycopg.connect(pg_dsn) as conn:
        got = conn.execute("SELECT unit_id, extract(epoch FROM t)::int8 FROM fixes "
                           "ORDER BY unit_id, t").fetchall()  # fmt: skip
    assert got == [("U0000", t0), ("U0000", t0 + 6), ("U0001", t0), ("U0002", t0 + 5)]


async def test_last_fixes_is_the_newest_fix_of_each_unit_in_the_window(pg_dsn: str) -> None:
    from core.fixes import FixBatch

    t0 = 1_790_000_000 * US_PER_S
    rows = (("A", 0, 55.0), ("A", 30, 55.1), ("A", 20, 55.2), ("B", -7200, 56.0),
            ("C", 10, 57.0), ("C", 4000, 57.5))  # fmt: skip
    fixes = [Fix(unit_id=u, t_us=t0 + dt * US_PER_S, recv_us=t0 + 99 * US_PER_S, lat=lat,
                 lon=37.5, speed_kmh=1.0, course=0.0, quality=1, sats=9, hdop=0.9, alt_m=1.0)
             for u, dt, lat in rows]  # fmt: skip
    store = await Store.open(pg_dsn, partitioning="native")
    try:
        await store.write_batch(FixBatch.from_fixes(fixes), [])
        last = await store.last_fixes(t0 - 3600 * US_PER_S, t0 + 3600 * US_PER_S)
        empty = await store.last_fixes(t0 + 5000 * US_PER_S, t0 + 6000 * US_PER_S)
    finally:
        await store.aclose()
    assert last.unit_id.tolist() == ["A", "C"]  # B is older than the window, C's newest after it
    assert last.t_us.tolist() == [t0 + 30 * US_PER_S, t0 + 10 * US_PER_S]
    assert last.lat.tolist() == [55.1, 57.0]
    assert len(empty) == 0

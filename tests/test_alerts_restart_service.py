"""`fleetwatch run` stopped mid-day and started again (issue 9): the alert desk comes back from
the database — every thread's latest version equal, field for field (assignee, escalation
level and timer, acknowledgement, comments) — and the restart stores not one new version.

The real service over a real Mosquitto and PostgreSQL (``run_ingest``, as the other live
tests start it), plans on, the day two days old: the restart re-reads no fixes (outside the
horizon), imports the plan again (every stop "pending", older than what the store holds) and
re-applies the dispatchers' journaled commands (already in the restored threads).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.desk import AlertDesk
from schedule.stop_events import Acknowledge, AddComment
from simulators.formats import merged_payloads
from simulators.scenario import write_scenario
from tests.support.broker import Broker
from tests.test_engine_live import small_params
from tests.test_ingest_service_integration import eventually, publish, running, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def desk_of(h: Any) -> AlertDesk:
    assert h.engine is not None
    assert h.writer is not None
    (desk,) = h.engine.engine.stages
    assert isinstance(desk, AlertDesk)
    return desk


def threads(desk: AlertDesk) -> dict[str, dict[str, Any]]:
    snap = desk.snapshot()
    return {a.id: a.to_json_dict() for a in (*snap.active, *snap.recent_finished)}


def stored_rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT kind, count(*) FROM record_versions GROUP BY kind").fetchall()
    return {str(k): int(n) for k, n in rows}


@pytest.mark.timeout(300)
async def test_a_restarted_service_gives_back_every_alert_and_stores_nothing_new(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    scenario = tmp_path / "scenario"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    write_scenario(dataclasses.replace(small_params(day), skip_rate=0.15), scenario)
    items = [(f"fleet/{unit}/nmea", payload) for _, unit, payload in merged_payloads(scenario)]
    part = items[: int(len(items) * 0.7)]  # the service stops at 70 % of the day
    settings = settings_for(
        mqtt_broker, pg_dsn, scenario / "units.csv",
        sites_file=scenario / "sites.geojson", plans_dir=scenario,
        detect_interval_ms=3_600_000.0, outbox_journal_file=tmp_path / "outbox.db",
    )  # fmt: skip
    async with running(settings) as h:
        desk = desk_of(h)
        assert h.engine is not None
        assert h.writer is not None
        await publish(mqtt_broker, part)
        await eventually(lambda: h.service.statistics().messages_acked >= len(part))
        await h.engine.flush()
        await h.engine.call(lambda e, now: e.tick(now))  # escalations that are due
        active = [a for a in desk.snapshot().active if a.status == "open"]
        assert len(active) >= 2, "the day needs open alerts to restore"
        head = desk.roster.head
        await h.engine.submit(Acknowledge(alert_id=active[0].id, version=active[0].version,
                                          by=head))  # fmt: skip
        await h.engine.submit(AddComment(alert_id=active[1].id, text="called the driver",
                                         by=head))  # fmt: skip
        await h.writer.wait_idle()
        before = threads(desk)
        deadline = desk.next_deadline_us()
        loads = desk.loads()
        exceptions = {x.id: x.to_json_dict() for x in desk.exceptions()}
        rows = stored_rows(pg_dsn)
    assert before[active[0].id]["status"] == "acknowledged"
    assert before[active[1].id]["comments"][-1]["text"] == "called the driver"
    assert any(a["escalates_at"] for a in before.values()), "no armed timer to restore"
    assert rows.get("alert", 0) >= len(before)

    async with running(settings) as h2:  # the restart: nothing published meanwhile
        again = desk_of(h2)
        assert h2.writer is not None
        await h2.writer.wait_idle()
        assert not again.restoring
        after = threads(again)
        assert after == before
        assert again.loads() == loads
        assert again.next_deadline_us() == deadline
        assert {x.id: x.to_json_dict() for x in again.exceptions()} == exceptions
        assert again.statistics()["restored_threads"] == len(before)
        assert stored_rows(pg_dsn) == rows, "the restart stored new versions"

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
from alerts.records import AlertVersion
from schedule.stop_events import Acknowledge, AddComment
from simulators.formats import merged_payloads
from simulators.scenario import write_scenario
from tests.support.broker import Broker
from tests.test_engine_live import small_params
from tests.test_ingest_service_integration import eventually, publish, running, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[1]


def desk_of(h: Any) -> AlertDesk:
    assert h.engine is not None
    assert h.writer is not None
    (desk,) = h.engine.engine.stages
    assert isinstance(desk, AlertDesk)
    return desk


def threads(desk: AlertDesk) -> dict[str, dict[str, Any]]:
    snap = desk.snapshot()
    return {a.id: a.to_json_dict() for a in (*snap.active, *snap.recent_finished)}


#: the engine checks silent vehicles' open visits every 10 s of driver time (EngineParams
#: advance_interval_s): a quiet period longer than that means the day's work is done
QUIET_S = 11.0


async def _quiet(h: Any) -> None:
    """Until the engine has emitted nothing for QUIET_S and the writer has stored it all."""
    import asyncio
    import time

    last, since = h.engine.engine.stats.stage_records, time.monotonic()
    async with asyncio.timeout(120):
        while time.monotonic() - since < QUIET_S:
            await asyncio.sleep(0.5)
            if (now := h.engine.engine.stats.stage_records) != last:
                last, since = now, time.monotonic()
    await h.writer.wait_idle()


def stored_rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT kind, count(*) FROM record_versions GROUP BY kind").fetchall()
    return {str(k): int(n) for k, n in rows}


def stored_fixes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM fixes").fetchone()
    assert row is not None
    return int(row[0])


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
        await _quiet(h)  # (the versions the commands name stay current)
        active = [a for a in desk.snapshot().active if a.status == "open"]
        assert len(active) >= 2, "the day needs open alerts to restore"
        head = desk.roster.head
        # acknowledge one without a timer if there is one, comment one that has a timer
        # (which alerts still wait for a hop depends on when the wall-clock ticks fell)
        untimed = [a for a in active if a.escalates_at_us is None] or active
        acked = untimed[0]
        timed = [a for a in active if a.escalates_at_us is not None and a is not acked]
        commented = (timed or [a for a in active if a is not acked])[0]
        await h.engine.submit(Acknowledge(alert_id=acked.id, version=acked.version, by=head))
        await h.engine.submit(AddComment(alert_id=commented.id, text="called the driver",
                                         by=head))  # fmt: skip
        await _quiet(h)
        before = threads(desk)
        deadline = desk.next_deadline_us()
        loads = desk.loads()
        exceptions = {x.id: x.to_json_dict() for x in desk.exceptions()}
        rows = stored_rows(pg_dsn)
    assert before[acked.id]["status"] == "acknowledged"
    assert before[commented.id]["comments"][-1]["text"] == "called the driver"
    assert rows.get("alert", 0) >= len(before)

    async with running(settings) as h2:  # the restart: nothing published meanwhile
        again = desk_of(h2)
        assert h2.writer is not None
        assert h2.engine is not None
        await h2.writer.wait_idle()
        assert not again.restoring
        after = threads(again)
        assert after == before
        assert again.loads() == loads
        assert again.next_deadline_us() == deadline
        assert {x.id: x.to_json_dict() for x in again.exceptions()} == exceptions
        assert again.statistics()["restored_threads"] == len(before)
        # the consumers that start empty (the console hub) were handed every restored alert
        published = {r.id: r.to_json_dict() for r in h2.engine.recent
                     if isinstance(r, AlertVersion)}  # fmt: skip
        assert {i: published.get(i) for i in before} == before
        assert stored_rows(pg_dsn) == rows, "the restart stored new versions"


class _Service:
    """``python -m fleetwatch run`` as a child process, its stderr (the log) read by a thread
    into ``lines``."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess
        import sys
        import threading

        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleetwatch", "run"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="fleetwatch-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def ready(self) -> bool:
        """``/readyz`` answers 200 (subscribed, database up, engine keeping up)."""
        import re
        import urllib.request

        m = re.search(r"metrics at http://[\d.]+:(\d+)/metrics", self.log())
        if m is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no drain, no goodbye
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


def _alerts_current(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, version, body FROM alerts_current").fetchall()
    return {str(i): (int(v), b) for i, v, b in rows}


async def _settled(
    dsn: str, *, quiet_s: float = QUIET_S, timeout_s: float = 120.0
) -> dict[str, int]:
    """Poll until the stored fixes and versions stop changing for *quiet_s* (bounded): the
    service has taken (and acknowledged) everything and published what it made of it."""
    import asyncio
    import time

    last, since = (stored_fixes(dsn), stored_rows(dsn)), time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = (stored_fixes(dsn), stored_rows(dsn))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now[1]
    pytest.fail(f"the store kept changing for {timeout_s} s: {last}")


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_fleetwatch_run_sigkilled_and_restarted_stores_nothing_new(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    """The issue's scenario end to end: ``fleetwatch run`` (a child process) takes 70 % of a
    day, is SIGKILLed, and is started again: it restores its alert desk from the store (the log
    says how many versions, and that none differ), and the outbox — alerts, exceptions, stop
    states, visits — does not change by one row."""
    import os

    scenario = tmp_path / "scenario"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    write_scenario(dataclasses.replace(small_params(day), skip_rate=0.15), scenario)
    items = [(f"fleet/{unit}/nmea", payload) for _, unit, payload in merged_payloads(scenario)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "FLEETWATCH_MQTT_URL": mqtt_broker.url,
           "FLEETWATCH_DATABASE_URL": pg_dsn, "FLEETWATCH_HTTP_PORT": "0",
           "FLEETWATCH_MQTT_CLIENT_ID": "fw-restart-test",
           "FLEETWATCH_SITES_FILE": str(scenario / "sites.geojson"),
           "FLEETWATCH_PLANS_DIR": str(scenario),
           "FLEETWATCH_UNITS_FILE": str(scenario / "units.csv"),
           "FLEETWATCH_OUTBOX_JOURNAL_FILE": str(tmp_path / "outbox.db")}  # fmt: skip
    first = _Service(env)
    try:
        await eventually(first.ready, timeout_s=120)
        assert "alert desk restored from 0 stored" in first.log()
        await publish(mqtt_broker, items[: int(len(items) * 0.7)])
        await eventually(lambda: stored_rows(pg_dsn).get("alert", 0) > 0, timeout_s=120)
        rows = await _settled(pg_dsn)
    finally:
        first.kill()
    alerts = _alerts_current(pg_dsn)
    assert alerts, first.log()
    assert all("escalates_at" in b for _, b in alerts.values())

    second = _Service(env)
    try:
        await eventually(second.ready, timeout_s=120)
        assert await _settled(pg_dsn) == rows, second.log()
    finally:
        second.kill()
    log = second.log()
    (restored,) = [ln for ln in log.splitlines() if "alert desk restored from" in ln]
    n_exceptions = _count_current(pg_dsn, "visit_exceptions_current")
    assert f"from {len(alerts) + n_exceptions} stored" in restored, restored
    assert "restore finished: 0 alert/exception versions differ" in log, log
    assert _alerts_current(pg_dsn) == alerts
    assert "Traceback" not in log


def _count_current(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])

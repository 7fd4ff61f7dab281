"""The one engine (schedule.engine) live and offline: the same object gives the same answer.

Unit tests drive :class:`Engine` with an injected driver clock (the scenario's receive times),
in many chunkings, with and without extra ticks; the integration test runs the whole service
against a real broker and database and compares its visits with ``fleetwatch replay`` on the
same scenario.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from core.fixes import US_PER_S, FixBatch
from fleetwatch.cmd_replay import replay_scenario
from fleetwatch.config import ConfigError, Settings
from fleetwatch.engine_metrics import EngineMetrics
from fleetwatch.engine_setup import SitesFileError, load_sites
from fleetwatch.live_engine import LiveEngine
from geofence import FenceIndex
from ingest.nmea import DecodeOptions, Decoder
from schedule.engine import DataDelayed, Engine, EngineParams, fence_matcher, tick_until
from schedule.events import DetectionEvent, VisitCompleted, VisitStarted, latest
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker
from simulators.formats import load_units, merged_payloads
from simulators.scenario import ScenarioParams, write_scenario
from tests.support.broker import Broker
from tests.test_ingest_service_integration import eventually, publish, running, settings_for

Visit = tuple[str, str, int, int]  # (vehicle, site, arrival_us, departure_us)


def small_params(date: dt.date) -> ScenarioParams:
    """A day small enough to publish over MQTT in seconds: 3 vehicles reporting every 5 s."""
    return ScenarioParams(
        seed=11,
        date=date,
        sites=120,
        vehicles=3,
        rate_hz=0.2,
        slow_rate_hz=0.2,
        dropout_rate=2.0,  # store-and-forward backlogs: late fixes in later commits
        driveby_rate=0.25,
        clock_off_units=0,
        silent_units=0,
        # no corrupted sentences: an epoch whose RMC is corrupted keeps only its GGA, dated by
        # the *receive* time, which differs between replay (the scenario's) and the live
        # service (the wall clock, days later): that fix would differ by design
        bad_rate=0.0,
    )


def detection(out: Iterable[object]) -> list[DetectionEvent]:
    return [e for e in out if isinstance(e, DetectionEvent.__args__)]


def completed_visits(events: Iterable[object]) -> list[Visit]:
    events = detection(events)
    out = [
        (ev.vehicle_id, ev.site_id, ev.arrival_us, ev.departure_us)
        for ev in latest(list(events)).values()
        if isinstance(ev, VisitCompleted) and not ev.retracted
    ]
    return sorted(out)


def open_visits(events: Iterable[object]) -> list[tuple[str, str, int]]:
    """(vehicle, site, arrival) of visits started and not (yet) completed."""
    folded = latest(detection(events))
    done = {
        ev.visit_id for ev in folded.values() if isinstance(ev, VisitCompleted) and not ev.retracted
    }
    return sorted(
        (ev.vehicle_id, ev.site_id, ev.arrival_us)
        for ev in folded.values()
        if isinstance(ev, VisitStarted) and not ev.retracted and ev.visit_id not in done
    )


def replay_visits(scenario: Path) -> list[Visit]:
    return completed_visits(replay_scenario(scenario, DetectionParams()).events)


# -- the sans-I/O engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live-scenario")
    write_scenario(small_params(dt.date(2026, 11, 20)), out)
    return out


def decode_scenario(scenario: Path) -> FixBatch:
    """Every fix of the scenario in receive order, with the scenario's receive times."""
    recv, units, payloads = [], [], []
    for r, u, p in merged_payloads(scenario):
        recv.append(r)
        units.append(u)
        payloads.append(p)
    return Decoder(DecodeOptions()).decode(units, payloads, np.asarray(recv, np.int64)).fixes


def scenario_index(scenario: Path) -> FenceIndex:
    load = load_sites(scenario / "sites.geojson")
    return FenceIndex.build(load.sites, margin_m=DetectionParams().exit_margin_m)


@pytest.fixture(scope="module")
def decoded(scenario: Path) -> FixBatch:
    return decode_scenario(scenario)


@pytest.fixture(scope="module")
def index(scenario: Path) -> FenceIndex:
    return scenario_index(scenario)


def vehicles(scenario: Path) -> dict[str, str]:
    return {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}


def new_engine(index: FenceIndex, units: dict[str, str], **params: float) -> Engine:
    return Engine(
        matcher=fence_matcher(index),
        site_ids=index.site_ids,
        unit_to_vehicle=units,
        params=EngineParams(**params),  # type: ignore[arg-type]
    )


def offline_visits(decoded: FixBatch, index: FenceIndex, units: dict[str, str]) -> list[Visit]:
    offline = FleetTracker(index.site_ids, units, DetectionParams())
    events = offline.feed_matched(decoded, lambda lon, lat, m: index.query(lon, lat, margin_m=m))
    events += offline.finish()
    return completed_visits(events)


def test_the_scenario_has_visits_to_find(scenario: Path) -> None:
    assert len(replay_visits(scenario)) >= 10  # else the comparisons below prove little


@pytest.mark.parametrize(("chunk", "round_s"), [(40, 1.0), (40, 30.0), (997, 5.0)])
def test_the_engine_driven_like_live_finds_the_visits_of_one_offline_run(
    scenario: Path, decoded: FixBatch, index: FenceIndex, chunk: int, round_s: float
) -> None:
    """Batches of *chunk* fixes with now = their newest receive time (the live service's wall
    clock), ticked at every deadline the engine names, then the end of data: the same
    completed visits as one offline tracker run over all fixes at once."""
    units = vehicles(scenario)
    expected = offline_visits(decoded, index, units)
    engine = new_engine(index, units, round_interval_s=round_s)
    got: list[object] = []
    now = 0
    for start in range(0, len(decoded), chunk):
        batch = decoded.take(np.arange(start, min(start + chunk, len(decoded))))
        now = int(batch.recv_us.max())
        got += tick_until(engine, now)
        got += engine.feed(batch, now)
    got += engine.finish(now + 86_400 * US_PER_S)
    assert engine.pending_fixes == 0
    assert engine.stats.fixes_matched == len(decoded)
    assert completed_visits(got) == expected
    assert expected  # non-trivial


def test_extra_ticks_at_any_time_change_nothing(
    scenario: Path, decoded: FixBatch, index: FenceIndex
) -> None:
    """A timer that fires early, late or twice is harmless: the folded answer is the same."""
    units = vehicles(scenario)
    rng = np.random.default_rng(5)
    answers = []
    for extra in (False, True):
        engine = new_engine(index, units, round_interval_s=2.0)
        got: list[object] = []
        now = 0
        for start in range(0, len(decoded), 300):
            batch = decoded.take(np.arange(start, min(start + 300, len(decoded))))
            now = int(batch.recv_us.max())
            if extra:
                for t in np.sort(rng.integers(now - 120 * US_PER_S, now, 3)):
                    got += engine.tick(int(t))
            got += tick_until(engine, now)
            got += engine.feed(batch, now)
        got += engine.finish(now + 86_400 * US_PER_S)
        answers.append(completed_visits(got))
    assert answers[0] == answers[1]


def test_fixes_wait_for_the_round_and_the_deadline_says_when(
    decoded: FixBatch, index: FenceIndex
) -> None:
    engine = new_engine(index, {}, round_interval_s=5.0)
    first = decoded.take(np.arange(50))
    now = int(first.recv_us.max())
    engine.feed(first, now)
    assert engine.pending_fixes == 50  # the round is not due yet
    deadline = engine.next_deadline_us()
    assert deadline == now + 5 * US_PER_S
    engine.tick(deadline - 1)
    assert engine.pending_fixes == 50
    engine.tick(deadline)
    assert engine.pending_fixes == 0
    assert engine.stats.rounds == 1


def test_a_full_buffer_runs_a_round_at_once_and_drops_nothing(
    decoded: FixBatch, index: FenceIndex
) -> None:
    engine = new_engine(index, {}, round_interval_s=3600.0, max_pending_fixes=100)
    now = int(decoded.recv_us[159])
    engine.feed(decoded.take(np.arange(60)), now)
    assert engine.pending_fixes == 60
    engine.feed(decoded.take(np.arange(60, 160)), now)  # 160 >= 100: a round now
    assert engine.pending_fixes == 0
    assert engine.stats.fixes_matched == 160


def test_the_data_clock_is_the_drivers_unless_the_fixes_are_older(
    decoded: FixBatch, index: FenceIndex
) -> None:
    engine = new_engine(index, {})
    assert engine.data_now(123) == 0  # no fix yet: the data clock has not started
    newest = int(decoded.t_us.max())
    engine.feed(decoded, newest + 10**9)
    assert engine.newest_fix_us == newest
    # received is not seen: the clock waits for the detection round (tests/test_engine_pace.py)
    assert engine.data_now(newest + 10**9) == (newest if engine.pending_fixes == 0 else 0)
    engine.flush(newest + 10**9)
    assert engine.data_now(newest + 10**9) == newest  # a replayed day: its own clock
    assert engine.data_now(newest - 10**9) == newest - 10**9  # capped by the driver's


def test_a_clock_ahead_cannot_move_the_data_clock_past_the_drivers(
    decoded: FixBatch, index: FenceIndex
) -> None:
    engine = new_engine(index, {})
    batch = decoded.take(np.arange(10))
    now = int(batch.t_us.min()) - 3600 * US_PER_S  # every fix "in the future"
    engine.feed(batch, now)
    assert engine.newest_fix_us == now


def test_silence_is_data_delayed_not_time_passing(decoded: FixBatch, index: FenceIndex) -> None:
    """With no fix from anyone for data_delayed_after_s the engine says so once, the data clock
    stalls (nothing can be declared late on silence), and the first fix ends the state."""
    engine = new_engine(index, {}, data_delayed_after_s=60.0)
    first = decoded.take(np.arange(100))
    now = int(first.recv_us.max())
    engine.feed(first, now)
    newest = engine.newest_fix_us
    assert newest is not None
    deadline = engine.next_deadline_us()
    assert deadline is not None
    assert deadline <= newest + 60 * US_PER_S
    out = tick_until(engine, newest + 600 * US_PER_S)
    delayed = [e for e in out if isinstance(e, DataDelayed)]
    assert [d.active for d in delayed] == [True]
    assert engine.data_delayed
    assert engine.data_now(newest + 3600 * US_PER_S) == newest
    again = engine.tick(newest + 900 * US_PER_S)
    assert not any(isinstance(e, DataDelayed) for e in again)  # said once
    later_at = np.flatnonzero(decoded.t_us > newest + 1000 * US_PER_S)[:50]
    later = decoded.take(later_at)
    back = engine.feed(later, int(later.t_us.max()))
    assert [e.active for e in back if isinstance(e, DataDelayed)] == [False]
    assert not engine.data_delayed


def test_commands_without_a_plan_or_desk_are_refused_specifically(index: FenceIndex) -> None:
    from schedule.stop_events import Acknowledge, CancelStop, CommandRefused

    engine = new_engine(index, {})
    with pytest.raises(CommandRefused) as e1:
        engine.command(CancelStop(stop_id="2026-11-20/S1", reason="closed", by="d1"), 0)
    assert e1.value.code == "not_allowed"
    with pytest.raises(CommandRefused) as e2:
        engine.command(Acknowledge(alert_id="a", version=1, by="d1"), 0)
    assert e2.value.code == "not_allowed"
    assert engine.stats.commands_refused == 2


@pytest.mark.anyio
async def test_the_live_shell_feeds_ticks_and_applies_backpressure(
    scenario: Path, decoded: FixBatch, index: FenceIndex
) -> None:
    """LiveEngine: offers beyond the inbox wait (never drop); the timer runs due rounds; a
    call runs in order after the batches before it; events reach every publisher."""
    clock = [int(decoded.recv_us.min())]
    engine = new_engine(index, vehicles(scenario), round_interval_s=1.0)
    metrics = EngineMetrics(CollectorRegistry())
    seen: list[object] = []
    live = LiveEngine(engine, metrics, clock_us=lambda: clock[0], queue_batches=2)
    live.add_publisher(seen.extend)
    batches = [decoded.take(np.arange(s, min(s + 200, len(decoded)))) for s in range(0, 2000, 200)]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(live.run(), name="engine")
        for b in batches:
            clock[0] = int(b.recv_us.max())
            await live.offer(b)
        flushed = await live.flush()
        assert engine.pending_fixes == 0
        assert engine.stats.fixes_in == sum(len(b) for b in batches)
        assert engine.stats.fixes_matched == sum(len(b) for b in batches)
        assert isinstance(flushed, list)
        task.cancel()
    assert seen == list(live.recent)
    assert metrics.events.labels("VisitStarted")._value.get() >= 0


# -- sites file and settings ------------------------------------------------------------------


def test_sites_csv_and_geojson_load_by_extension_and_bad_sites_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "sites.csv"
    csv.write_text(
        "site_id,client_id,name,lat,lon,radius_m\n"
        "A,c,Alpha,55.75,37.61,80\n"
        "B,c,Bravo,55.76,37.62,-5\n"  # radius <= 0: skipped, logged
    )
    with caplog.at_level(logging.WARNING, logger="fleetwatch.engine_setup"):
        load = load_sites(csv)
    assert [s.site_id for s in load.sites] == ["A"]
    assert any("site 'B'" in r.message for r in caplog.records)
    with pytest.raises(SitesFileError, match="no such file"):
        load_sites(tmp_path / "sites.txt")
    (tmp_path / "sites.txt").write_text("")
    with pytest.raises(SitesFileError, match="unknown extension"):
        load_sites(tmp_path / "sites.txt")
    broken = tmp_path / "sites.geojson"
    broken.write_text("{not json")
    with pytest.raises(SitesFileError, match="not valid JSON"):
        load_sites(broken)
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("site_id,client_id,name,lat,lon,radius_m\nB,c,Bravo,55.76,37.62,-5\n")
    with pytest.raises(SitesFileError, match="no usable site"):
        load_sites(only_bad)
    assert issubclass(SitesFileError, ConfigError)  # fleetwatch run reports it and exits


def test_sites_file_and_interval_settings(tmp_path: Path) -> None:
    assert Settings.load(env={}).sites_file is None
    assert Settings.load(env={}).detect_interval_ms == 1000.0
    s = Settings.load(env={"FLEETWATCH_SITES_FILE": "/x/sites.geojson"})
    assert s.sites_file == Path("/x/sites.geojson")
    toml = tmp_path / "fw.toml"
    toml.write_text('[geofence]\nsites_file = "s.csv"\ndetect_interval_ms = 250\n')
    s = Settings.load(config_file=toml, env={})
    assert (s.sites_file, s.detect_interval_ms) == (Path("s.csv"), 250.0)
    with pytest.raises(ConfigError, match="FLEETWATCH_DETECT_INTERVAL_MS"):
        Settings.load(env={"FLEETWATCH_DETECT_INTERVAL_MS": "0"})


# -- the live service -------------------------------------------------------------------------


def _finish_at(end_us: int, engine: Engine, _now_us: int) -> list[Any]:
    """``finish`` as a picklable call (the engine may be in a child process)."""
    return engine.finish(end_us)


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("engine_process", [False, True], ids=["thread", "process"])
async def test_live_service_finds_the_visits_replay_finds(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path, engine_process: bool
) -> None:
    """A small simulated day published in receive order through a real broker into the real
    service.  Rounds only on request (interval of an hour), so after everything is acked one
    round (``flush``) feeds the engine every decoded fix.  Its "now" is the newest fix time
    (the wall clock is days later), so the visits of vehicles that reported until the end of the
    day are still open: each must be a visit replay completed, with the same arrival, and every
    visit completed live must be one of replay's.  Then the end of data (a round long after the last
    fix, as replay's ``finish()``) must give *exactly* replay's completed visits, arrival and
    departure to the microsecond.  The fixes are the same (same decoder, all units registered,
    no corrupted sentences), so any difference is a fix lost or altered on the way.  The same
    with the engine in a child process (``FLEETWATCH_ENGINE_PROCESS``)."""
    scenario = tmp_path / "scenario"
    write_scenario(small_params(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)), scenario)
    items = [(f"fleet/{unit}/nmea", payload) for _, unit, payload in merged_payloads(scenario)]
    settings = settings_for(
        mqtt_broker,
        pg_dsn,
        scenario / "units.csv",
        sites_file=scenario / "sites.geojson",
        detect_interval_ms=3_600_000.0,
        engine_process=engine_process,
    )
    async with running(settings) as h:
        live_engine = h.engine
        assert live_engine is not None
        assert live_engine.remote == engine_process
        await publish(mqtt_broker, items)
        await eventually(lambda: h.service.statistics().messages_acked >= len(items))
        stats = h.service.statistics()
        await live_engine.flush()
        assert live_engine.counters().pending_fixes == 0
        newest = live_engine.counters().newest_fix_us
        assert newest is not None
        end = await live_engine.call(functools.partial(_finish_at, newest + 86_400 * US_PER_S))
    replay = replay_scenario(scenario, DetectionParams())
    expected = completed_visits(replay.events)
    # the same fixes reached detection: all accepted, committed and handed on, none dropped
    assert stats.rejects == 0
    assert stats.fixes_accepted == stats.fixes_inserted == replay.summary["fixes"]
    before_end = [e for e in live_engine.recent if e not in end]
    live = completed_visits(before_end)
    still_open = open_visits(before_end)
    assert set(live) <= set(expected)
    assert {(v, s, a) for v, s, a, _ in expected} == {(v, s, a) for v, s, a, _ in live} | set(
        still_open
    )
    assert live_engine.visits_completed >= len(live)  # first versions, corrections apart
    assert completed_visits(live_engine.recent) == expected
    assert len(expected) >= 10


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("engine_process", [False, True], ids=["thread", "process"])
async def test_live_service_with_plans_ends_in_replays_stop_states_and_exceptions(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path, engine_process: bool
) -> None:
    """``fleetwatch run`` with FLEETWATCH_PLANS_DIR: the schedule board and the alert desk run
    live; after the day is published through a real broker and the end of data is signalled,
    every planned stop is in the state replay gives it, and the visit exceptions (the CRM's
    records) are the same — one engine, two drivers."""
    from alerts.records import ExceptionVersion
    from schedule.stop_events import StopChanged

    scenario = tmp_path / "scenario"
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    write_scenario(dataclasses.replace(small_params(day), skip_rate=0.15), scenario)
    items = [(f"fleet/{unit}/nmea", payload) for _, unit, payload in merged_payloads(scenario)]
    settings = settings_for(
        mqtt_broker,
        pg_dsn,
        scenario / "units.csv",
        sites_file=scenario / "sites.geojson",
        plans_dir=scenario,
        detect_interval_ms=3_600_000.0,
        engine_process=engine_process,
    )
    async with running(settings) as h:
        live_engine = h.engine
        assert live_engine is not None
        assert live_engine.remote == engine_process
        imported = [e for e in live_engine.recent if isinstance(e, StopChanged)]
        assert imported  # the plan was imported at start: every stop pending
        await publish(mqtt_broker, items)
        await eventually(lambda: h.service.statistics().messages_acked >= len(items))
        await live_engine.flush()
        end = replay_scenario(scenario, DetectionParams()).output
        day_end = max(e.window_end_us for e in end if isinstance(e, StopChanged))
        await live_engine.call(functools.partial(_finish_at, day_end + 3 * 3600 * US_PER_S))
        live = list(live_engine.recent)

    def final_states(out: list[object]) -> dict[str, tuple[object, ...]]:
        final: dict[str, StopChanged] = {}
        for e in out:
            if isinstance(e, StopChanged):
                final[e.stop_id] = e
        return {k: (v.state, v.outcome, v.arrival_us, v.visited_by) for k, v in final.items()}

    def exceptions(out: list[object]) -> dict[str, tuple[object, ...]]:
        latest_x: dict[str, ExceptionVersion] = {}
        for e in out:
            if isinstance(e, ExceptionVersion):
                latest_x[e.id] = e
        # retracted ones are the history of arrival timing (a backlog that came after a
        # window end in replay's order); what stands must be the same
        return {
            k: (v.kind, v.status, v.arrival_us)
            for k, v in latest_x.items()
            if v.status != "retracted"
        }

    expected = final_states(end)
    assert final_states(live) == expected
    assert sum(1 for s in expected.values() if s[0] == "missed") >= 1
    assert exceptions(live) == exceptions(end)


def test_a_new_site_list_swaps_in_mid_day_without_losing_visits(
    scenario: Path, decoded: FixBatch, index: FenceIndex
) -> None:
    """The same sites in another order (a rebuilt index) swapped in halfway: the day's
    completed visits are exactly those of a run that never swapped."""
    units = vehicles(scenario)
    expected = offline_visits(decoded, index, units)
    load = load_sites(scenario / "sites.geojson")
    shuffled = FenceIndex.build(
        list(reversed(load.sites)), margin_m=DetectionParams().exit_margin_m
    )
    assert shuffled.site_ids != index.site_ids
    engine = new_engine(index, units, round_interval_s=5.0)
    got: list[object] = []
    half = len(decoded) // 2
    now = 0
    for start in range(0, len(decoded), 200):
        if start >= half and engine.tracker.site_ids == index.site_ids:
            got += engine.set_sites(fence_matcher(shuffled), shuffled.site_ids, now)
        batch = decoded.take(np.arange(start, min(start + 200, len(decoded))))
        now = int(batch.recv_us.max())
        got += tick_until(engine, now)
        got += engine.feed(batch, now)
    got += engine.finish(now + 86_400 * US_PER_S)
    assert engine.tracker.site_ids == shuffled.site_ids
    assert completed_visits(got) == expected

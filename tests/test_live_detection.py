"""Live detection (fleetwatch.detect): rounds over committed batches give the offline answer.

Unit tests drive :class:`DetectionRound` with an injected "now" (the scenario's receive times);
the integration test runs the whole service against a real broker and database and compares
its visits with ``fleetwatch replay`` on the same scenario.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from core.fixes import US_PER_S, FixBatch
from fleetwatch.cmd_replay import replay_scenario
from fleetwatch.config import ConfigError, Settings
from fleetwatch.detect import (
    DetectionRound,
    LiveDetector,
    SitesFileError,
    count_events,
    load_sites,
)
from fleetwatch.detect_metrics import DetectMetrics
from geofence import FenceIndex
from ingest.nmea import DecodeOptions, Decoder
from schedule.events import DetectionEvent, StopStarted, VisitCompleted, VisitStarted, latest
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


def completed_visits(events: Iterable[DetectionEvent]) -> list[Visit]:
    out = [
        (ev.vehicle_id, ev.site_id, ev.arrival_us, ev.departure_us)
        for ev in latest(list(events)).values()
        if isinstance(ev, VisitCompleted) and not ev.retracted
    ]
    return sorted(out)


def open_visits(events: Iterable[DetectionEvent]) -> list[tuple[str, str, int]]:
    """(vehicle, site, arrival) of visits started and not (yet) completed."""
    folded = latest(list(events))
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


# -- the sans-I/O round -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live-scenario")
    write_scenario(small_params(dt.date(2026, 11, 20)), out)
    return out


@pytest.fixture(scope="module")
def decoded(scenario: Path) -> FixBatch:
    """Every fix of the scenario in receive order, with the scenario's receive times."""
    recv, units, payloads = [], [], []
    for r, u, p in merged_payloads(scenario):
        recv.append(r)
        units.append(u)
        payloads.append(p)
    return Decoder(DecodeOptions()).decode(units, payloads, np.asarray(recv, np.int64)).fixes


@pytest.fixture(scope="module")
def index(scenario: Path) -> FenceIndex:
    load = load_sites(scenario / "sites.geojson")
    return FenceIndex.build(load.sites, margin_m=DetectionParams().exit_margin_m)


def vehicles(scenario: Path) -> dict[str, str]:
    return {u.unit_id: u.vehicle_id for u in load_units(scenario / "units.csv")}


def test_the_scenario_has_visits_to_find(scenario: Path) -> None:
    assert len(replay_visits(scenario)) >= 10  # else the comparisons below prove little


@pytest.mark.parametrize("commits_per_round", [1, 7])
def test_rounds_over_many_commits_find_the_visits_of_one_offline_run(
    scenario: Path, decoded: FixBatch, index: FenceIndex, commits_per_round: int
) -> None:
    """Commits of 40 fixes, a round every few commits with now = the last receive
    time (as the live service's wall clock would be), then a final round long after the day:
    the same completed visits as one offline tracker run over all fixes."""
    units = vehicles(scenario)
    offline = FleetTracker(index.site_ids, units, DetectionParams())
    events = offline.feed_matched(decoded, lambda lon, lat, m: index.query(lon, lat, margin_m=m))
    events += offline.finish()
    expected = completed_visits(events)

    live = DetectionRound(index, units, DetectionParams())
    got: list[DetectionEvent] = []
    for k, start in enumerate(range(0, len(decoded), 40)):
        commit = decoded.take(np.arange(start, min(start + 40, len(decoded))))
        assert live.offer(commit)
        if (k + 1) % commits_per_round == 0:
            got += live.run(now_us=int(commit.recv_us.max())).events
    end = int(decoded.t_us.max()) + 86_400 * US_PER_S
    got += live.run(now_us=end).events
    assert live.pending_fixes == 0
    assert live.dropped_fixes == 0
    assert completed_visits(got) == expected
    assert expected  # non-trivial


def test_a_full_accumulator_drops_whole_batches_and_counts_them(
    decoded: FixBatch, index: FenceIndex, caplog: pytest.LogCaptureFixture
) -> None:
    detection = DetectionRound(index, {}, max_pending_fixes=100)
    metrics = DetectMetrics(CollectorRegistry())
    detector = LiveDetector(detection, metrics, interval_s=1.0, clock_us=lambda: 0)
    first = decoded.take(np.arange(60))
    second = decoded.take(np.arange(60, 120))  # 120 > 100: dropped
    third = decoded.take(np.arange(120, 160))  # 100 exactly: kept
    with caplog.at_level(logging.WARNING, logger="fleetwatch.detect"):
        for batch in (first, second, third, second):
            detector.on_commit(batch)
    assert detection.pending_fixes == 100
    assert detection.dropped_fixes == 120
    assert metrics.dropped_fixes._value.get() == 120
    assert metrics.pending_fixes._value.get() == 100
    assert sum("live detection is behind" in r.message for r in caplog.records) == 1
    result = detection.run(now_us=int(third.recv_us.max()))
    assert result.fixes == 100
    assert detection.pending_fixes == 0
    assert detection.offer(second)  # room again after the round


def test_now_is_the_wall_clock_unless_the_fixes_are_older(
    decoded: FixBatch, index: FenceIndex
) -> None:
    detection = DetectionRound(index, {})
    empty = FixBatch.empty()
    assert detection.data_now(123, empty) == 123  # no fix yet: the wall clock
    newest = int(decoded.t_us.max())
    assert detection.data_now(newest + 10**9, decoded) == newest  # a replayed day: its clock
    assert detection.data_now(newest - 10**9, decoded) == newest - 10**9  # clock ahead: capped
    detection.process(decoded, newest)
    assert detection.newest_fix_us == newest
    assert detection.data_now(newest + 10**9, empty) == newest  # fleet silent: now stalls


def test_counts_take_first_versions_and_count_later_ones_as_corrections() -> None:
    t = 1_700_000_000 * US_PER_S
    events: list[DetectionEvent] = [
        VisitStarted(visit_id="v1", vehicle_id="A", site_id="S", arrival_us=t, confirmed_us=t),
        VisitStarted(
            visit_id="v1",
            version=2,
            supersedes=1,
            vehicle_id="A",
            site_id="S",
            arrival_us=t - 5,
            confirmed_us=t,
        ),
        StopStarted(stop_id="s1", vehicle_id="A", site_id="S", start_us=t, lat=55.0, lon=37.0),
        StopStarted(stop_id="s2", vehicle_id="A", site_id=None, start_us=t, lat=55.0, lon=37.0),
        VisitCompleted(
            visit_id="v1",
            vehicle_id="A",
            site_id="S",
            arrival_us=t,
            departure_us=t + 1,
            fix_count=3,
            inside_share=1.0,
            median_hdop=1.0,
            closed_by="exit",
        ),
    ]
    c = count_events(events)
    assert (c.visits_started, c.visits_completed, c.stops_site, c.stops_unscheduled) == (1, 1, 1, 1)
    assert c.corrections == 1


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
    with caplog.at_level(logging.WARNING, logger="fleetwatch.detect"):
        load = load_sites(csv)
    assert [s.site_id for s in load.sites] == ["A"]
    assert any("site 'B'" in r.message for r in caplog.records)
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


@pytest.mark.integration
@pytest.mark.anyio
async def test_live_service_finds_the_visits_replay_finds(
    mqtt_broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    """A small simulated day published in receive order through a real broker into the real
    service.  Rounds only on request (interval of an hour), so after everything is acked one
    round feeds the tracker every committed fix.  Its "now" is the newest fix time (the wall
    clock is days later), so the visits of vehicles that reported until the end of the day are
    still open: each must be a visit replay completed, with the same arrival, and every visit
    completed live must be one of replay's.  Then the end of data (a round long after the last
    fix, as replay's ``finish()``) must give *exactly* replay's completed visits, arrival and
    departure to the microsecond.  The fixes are the same (same decoder, all units registered,
    no corrupted sentences), so any difference is a fix lost or altered on the way."""
    scenario = tmp_path / "scenario"
    write_scenario(small_params(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)), scenario)
    items = [(f"fleet/{unit}/nmea", payload) for _, unit, payload in merged_payloads(scenario)]
    settings = settings_for(
        mqtt_broker,
        pg_dsn,
        scenario / "units.csv",
        sites_file=scenario / "sites.geojson",
        detect_interval_ms=3_600_000.0,
    )
    async with running(settings) as h:
        detector = h.detector
        assert detector is not None
        await publish(mqtt_broker, items)
        await eventually(lambda: h.service.statistics().messages_acked >= len(items))
        stats = h.service.statistics()
        waiting = asyncio.create_task(detector.next_round(30.0))
        await asyncio.sleep(0)  # the waiter is registered before the round is requested
        detector.request_round()
        await waiting
        assert detector.detection.pending_fixes == 0
        assert detector.detection.dropped_fixes == 0
    replay = replay_scenario(scenario, DetectionParams())
    expected = completed_visits(replay.events)
    # the same fixes reached detection: all accepted, committed and handed on, none dropped
    assert stats.rejects == 0
    assert stats.fixes_accepted == stats.fixes_inserted == replay.summary["fixes"]
    live = completed_visits(detector.recent)
    still_open = open_visits(detector.recent)
    assert set(live) <= set(expected)
    assert {(v, s, a) for v, s, a, _ in expected} == {(v, s, a) for v, s, a, _ in live} | set(
        still_open
    )
    assert detector.visits_completed >= len(live)  # first versions, corrections apart
    newest = detector.detection.newest_fix_us
    assert newest is not None
    end = detector.detection.run(now_us=newest + 86_400 * US_PER_S).events
    assert completed_visits([*detector.recent, *end]) == expected
    assert len(expected) >= 10

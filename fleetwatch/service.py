"""Wiring: build the ingest components from :class:`~fleetwatch.config.Settings` and run them.

Everything runs in one task group on one event loop: the MQTT source's own task, the three
pipeline stages (``ingest.service``), the HTTP endpoint, the shutdown watcher and, when a sites
file is configured, the ``engine`` task (``fleetwatch.live_engine``), fed by the pipeline's
decode stage *before* the database write (the store is a side branch: an outage of it never
stops matching and alerting).
SIGINT and SIGTERM set a stop event; the watcher then asks the pipeline to drain (write and
acknowledge what it already took) and, after ``shutdown_timeout_s``, cancels it: batches still
in flight are abandoned *unacknowledged*, and the broker redelivers them to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from alerts.records import AlertRecord, AlertVersion, ExceptionVersion
from core.fixes import FixBatch, iso_utc
from fleetwatch.auth import Authenticator, load_tokens
from fleetwatch.broker_watch import open_sys_watcher
from fleetwatch.config import ConfigError, Settings
from fleetwatch.console import register_console
from fleetwatch.crm_api import crm_router, open_crm_pool
from fleetwatch.engine_metrics import EngineMetrics
from fleetwatch.engine_process import EngineProcess
from fleetwatch.engine_setup import (
    Schedule,
    build_engine,
    build_engine_warm,
    load_schedule,
    load_sites,
)
from fleetwatch.health import Health, PostgresProbe, health_limits, reading_from
from fleetwatch.live_engine import LiveEngine
from fleetwatch.regions import sites_for_run
from fleetwatch.startup import wait_for_dependencies
from fleetwatch.store_writer import StoreWriter
from fleetwatch.web import WebOptions, WebServer, WebShell, open_web_server
from geofence import SiteLoad
from geofence import warm_up as warm_up_fences
from ingest.batcher import BatchLimits
from ingest.metrics import IngestMetrics, SourceCounters
from ingest.mqtt import MqttSettings, MqttSource, parse_mqtt_url, unit_id_from_topic
from ingest.nmea import DecodeOptions, Decoder
from ingest.nmea import warm_up as warm_up_decoder
from ingest.registry import UnitEntry, UnitRegistry, read_units_csv
from ingest.service import IngestOptions, IngestService, wall_clock_us
from schedule.engine import Engine, EngineParams
from schedule.events import DetectionEvent
from schedule.plans import DayPlan
from schedule.stop_events import Command, CommandRefused, StopChanged
from schedule.warm import warm_up as warm_up_detection
from store import Store, StoreUnavailable, StoreWriteError, UnitRow
from store.spool import SpoolingSink
from store.spool_metrics import register_spool_metrics
from store.tracks import ConnectionSource
from ws.pages import page_router

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    """Handles on a running service, for the demo's live counts and for tests."""

    service: IngestService
    source: MqttSource
    store: Store
    http_port: int | None
    #: None when no sites file is configured (the engine is off)
    engine: LiveEngine | None = None
    #: None when no spool file is configured
    spool: SpoolingSink | None = None
    #: the engine's outbox writer; None without an engine or a database
    writer: StoreWriter | None = None


def mqtt_settings(settings: Settings) -> MqttSettings:
    """The MQTT client's settings: URL from the configuration, session rules from ours."""
    if not settings.mqtt_url:
        raise ConfigError(
            "no broker configured: set FLEETWATCH_MQTT_URL (or [mqtt] url, or --mqtt-url)"
        )
    base = MqttSettings(
        client_id=settings.mqtt_client_id,
        topic=settings.mqtt_topic,
        session_expiry_s=settings.mqtt_session_expiry_s,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        mqtt_version=settings.mqtt_version,
    )
    return parse_mqtt_url(settings.mqtt_url, base)


def ingest_options(settings: Settings) -> IngestOptions:
    return IngestOptions(
        limits=BatchLimits(
            max_messages=settings.ingest_batch_max_messages,
            max_age_us=round(settings.ingest_batch_max_age_ms * 1000),
            max_bytes=settings.ingest_batch_max_bytes,
        ),
        batches_in_flight=settings.ingest_batches_in_flight,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        store_retry_max_s=max(settings.ingest_store_retry_max_s, 0.1),
    )


async def load_registry(settings: Settings, store: Store, *, upsert: bool = True) -> UnitRegistry:
    """Units of the units file (upserted into the store first) and of the store."""
    entries: list[UnitEntry] = []
    if settings.units_file is not None:
        entries = read_units_csv(settings.units_file)
    if entries and upsert:
        await store.upsert_units(
            [UnitRow(unit_id=e.unit_id, vehicle_id=e.vehicle_id, driver=e.driver or None)
             for e in entries]
        )  # fmt: skip
    stored = await store.load_units()
    registry = UnitRegistry(
        (UnitEntry(unit_id=r.unit_id, vehicle_id=r.vehicle_id, driver=r.driver or "")
         for r in stored.values()),
        accept_unknown=settings.accept_unknown_units,
    )  # fmt: skip
    registry = registry.merged(entries)
    if upsert and not len(registry) and not registry.accept_unknown:
        log.warning(
            "no units registered (no units file, none in the store): every payload will be a "
            "dead letter 'unknown_unit'; give --units FILE or set FLEETWATCH_ACCEPT_UNKNOWN_UNITS"
        )
    return registry


def _source_counters(source: MqttSource) -> SourceCounters:
    s = source.statistics()
    return SourceCounters(
        received=s.received,
        acked=s.acked,
        reconnects=s.reconnects,
        stale_acks=s.stale_acks_dropped,
        connected=s.connected,
        buffered=s.buffered,
        redelivered=s.redelivered,
    )


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set *stop* while the block runs (main thread only)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                continue
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_ingest(
    settings: Settings,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[Running], None] | None = None,
) -> None:
    """Run the ingest service until *stop* is set (then drain) or an error escapes."""
    if not settings.database_url:
        raise ConfigError(
            "no database configured: set FLEETWATCH_DATABASE_URL (or [database] url, "
            "or --database-url)"
        )
    log.info("starting ingest with %s", settings.redacted())
    # -- ops: the one web shell (fleetwatch/web.py); bound first so "port in use" fails fast --
    shell = WebShell()
    web: WebServer | None = None
    if settings.http_port is not None:
        web = open_web_server(
            shell, host=settings.http_host, port=settings.http_port,
            options=WebOptions(access_log=settings.http_access_log),
        )  # fmt: skip
    try:
        await wait_for_dependencies(settings)  # the start-up rule: fleetwatch/startup.py
    except BaseException:
        if web is not None:
            web.close()
        raise
    # -- end ops --
    async with contextlib.AsyncExitStack() as stack:
        if web is not None:
            stack.callback(web.close)
        store = await Store.open(
            settings.database_url,
            max_size=settings.database_pool_size,
            timeout_s=settings.database_timeout_s,
        )
        stack.push_async_callback(store.aclose)
        tokens = load_console_tokens(settings)
        # the CRM / ops pull API reads the store through a small pool of its own, so a slow
        # report never takes a connection ingest needs
        crm_pool = await stack.enter_async_context(open_crm_pool(settings.database_url, max_size=4))
        shell.include_router(
            crm_router(pool_or_store=crm_pool, tokens=tokens, sla_minutes=settings.crm_sla_minutes)
        )
        # the console's "last hour's track" reads fixes through two connections of its own:
        # a dispatcher's click never waits behind ingest or a CRM report
        console_pool = await stack.enter_async_context(
            open_crm_pool(settings.database_url, max_size=2, name="fleetwatch-console")
        )
        registry = await load_registry(settings, store)
        log.info("unit registry: %d units (accept unknown: %s)", len(registry),
                 registry.accept_unknown)  # fmt: skip
        metrics = IngestMetrics(shell.registry)
        spool: SpoolingSink | None = None
        if settings.spool_file is not None:
            spool = await SpoolingSink.open(
                settings.spool_file,
                store,
                max_bytes=settings.spool_max_bytes,
                retry_max_s=max(settings.ingest_store_retry_max_s, 0.1),
            )
            stack.push_async_callback(spool.aclose)
            register_spool_metrics(metrics.registry, spool.statistics)
        else:
            log.info("no spool (FLEETWATCH_SPOOL_FILE unset): a database outage stops acks")
        stages = build_live_engine(settings, registry, metrics)
        engine = stages.live if stages is not None else None
        if engine is not None:  # its child process, if it has one: up before the restore
            stack.push_async_callback(engine.aclose)
            await engine.start()
        writer = (
            attach_consumers(
                stages, settings, shell, metrics.registry, tokens, track_source=console_pool
            )
            if stages is not None
            else None
        )
        if writer is not None:
            stack.push_async_callback(writer.aclose)
        # the decoder's kernel compiles (~4 s cold) in a worker thread, before any message
        await asyncio.to_thread(warm_up_decoder)
        if engine is not None and not engine.remote:  # the fence query's compiled pass
            await asyncio.to_thread(warm_up_fences)  # before the first round
            await asyncio.to_thread(warm_up_detection)  # the detectors' kernels
        decoder = Decoder(DecodeOptions())
        await seed_decoder(decoder, store, wall_clock_us())  # before the first message
        source = MqttSource(
            mqtt_settings(settings), max_buffered_messages=settings.mqtt_max_buffered_messages
        )
        await stack.enter_async_context(source)
        metrics.watch_source(lambda: _source_counters(source))
        service = IngestService(
            source=source,
            decoder=decoder,
            sink=spool if spool is not None else store,
            registry=registry,
            metrics=metrics,
            options=ingest_options(settings),
            unavailable=(StoreUnavailable,),
            refused=(StoreWriteError,),
            unit_id_from_topic=unit_id_from_topic,
            on_decoded=engine.offer if engine is not None else None,
        )
        # -- ops: health (fleetwatch/health.py) and the web shell's port --
        probe = PostgresProbe(settings.database_url, connect_timeout_s=settings.database_timeout_s)
        stack.push_async_callback(probe.aclose)
        health = Health(
            read=lambda: reading_from(
                writer_store_up=service.statistics().store_up,
                broker_connected=source.statistics().connected,
                unacked_messages=service.statistics().unacked_messages,
                last_commit_us=service.statistics().last_commit_us,
                now_us=wall_clock_us(),
                engine_lag_s=None if engine is None else engine.lag_s(),
            ),
            probe=probe,
            registry=shell.registry,
            limits=health_limits(settings),
        )
        shell.set_health(health)
        http_port: int | None = None
        if web is not None:
            http_port = web.port
            log.info("metrics at http://%s:%d/metrics", settings.http_host, http_port)
        if stages is not None:
            await _start_engine(stages, store, writer, settings)
        if on_ready is not None:
            on_ready(
                Running(
                    service=service,
                    source=source,
                    store=store,
                    http_port=http_port,
                    engine=engine,
                    spool=spool,
                    writer=writer,
                )
            )
        async with asyncio.TaskGroup() as tg:
            pipeline = tg.create_task(service.run(), name="ingest-pipeline")
            helpers: list[asyncio.Task[None]] = []
            # -- ops: health probe and web server; the server stops when the pipeline ends --
            helpers.append(tg.create_task(health.run_probe(), name="health-probe"))
            if settings.mqtt_watch_sys and settings.mqtt_url:
                watcher = open_sys_watcher(
                    mqtt_url=settings.mqtt_url, client_id=settings.mqtt_client_id,
                    version=settings.mqtt_version, registry=shell.registry,
                )  # fmt: skip
                helpers.append(tg.create_task(watcher.run(), name="broker-sys-watch"))
            if web is not None:
                pipeline.add_done_callback(web.stop_after)
                tg.create_task(web.serve(), name="web")
            # -- end ops --
            if settings.units_reload_s > 0:
                helpers.append(
                    tg.create_task(
                        _reload_registry(settings, store, service, engine),
                        name="ingest-units-reload",
                    )
                )
            if engine is not None:
                helpers.append(tg.create_task(engine.run(), name="engine"))
            if writer is not None:
                helpers.append(tg.create_task(writer.run(), name="store-writer"))
            if spool is not None:
                helpers.append(tg.create_task(spool.run_drain(), name="store-spool-drain"))
            tg.create_task(
                _shutdown_when(stop, service, pipeline, settings.shutdown_timeout_s, helpers),
                name="ingest-shutdown",
            )
        log.info("ingest stopped: %s", dataclasses.asdict(service.statistics()))


#: How far back the decoder's seed looks for each unit's newest stored fix.  A unit silent for
#: longer starts without history: after 6 h the jump limit (max_speed_kmh × the gap) spans
#: 1,500 km, so an older fix would judge nothing anyway.
DECODER_SEED_WINDOW_S = 6 * 3600


async def seed_decoder(decoder: Decoder, store: Store, now_us: int) -> int:
    """Give the decoder's per-unit filter each unit's newest stored fix of the last
    :data:`DECODER_SEED_WINDOW_S` (one query), so that the first fix of a unit after a restart
    is judged against where the unit was (an outlier becomes a dead letter instead of the
    unit's new position); redeliveries at or before it are decided as without it
    (docs/nmea.md, "Seeding at start").  The database down: the decoder starts empty (logged),
    as before.  Returns the number of units seeded."""
    try:
        last = await store.last_fixes(
            now_us - DECODER_SEED_WINDOW_S * 1_000_000, now_us + 300_000_000
        )
    except StoreUnavailable as exc:
        log.warning("decoder starts without history: cannot read the units' last fixes (%s); "
                    "each unit's first fix is judged against nothing", exc)  # fmt: skip
        return 0
    n = decoder.seed(last)
    log.info("decoder seeded with the newest stored fix of %d units (last %d h)",
             n, DECODER_SEED_WINDOW_S // 3600)  # fmt: skip
    return n


alert_log = logging.getLogger("fleetwatch.alerts")


def log_alert_records(records: Sequence[Any]) -> None:
    """Every alert and visit-exception version as one JSON line on the ``fleetwatch.alerts``
    logger (INFO): what an operator greps, beside the console and the store."""
    if not alert_log.isEnabledFor(logging.INFO):
        return
    for r in records:
        if isinstance(r, AlertVersion | ExceptionVersion):
            alert_log.info("%s", json.dumps(r.to_json_dict(), ensure_ascii=False))


def _load_plan(plan: DayPlan, engine: Engine, now_us: int) -> list[Any]:
    return engine.load_plan(plan, now_us)


def _restore(
    fixes: FixBatch, previous: Sequence[DetectionEvent], engine: Engine, now_us: int
) -> list[Any]:
    return engine.restore(fixes, now_us, previous)


def _set_units(units: dict[str, str], engine: Engine, _now_us: int) -> None:
    engine.set_units(units)


def _learn_service_minutes(learned: dict[str, float], engine: Engine, _now_us: int) -> None:
    engine.learn_service_minutes(learned)


def _horizon_s(engine: Engine, _now_us: int) -> float:
    return engine.detection.horizon_s


def vehicles_of(registry: UnitRegistry) -> dict[str, str]:
    return {unit: entry.vehicle_id for unit, entry in registry.items()}


@dataclass(slots=True)
class LiveStages:
    """The engine and what the wiring attaches to it before ingest starts."""

    live: LiveEngine
    sites: SiteLoad
    schedule: Schedule | None


def build_live_engine(
    settings: Settings, registry: UnitRegistry, metrics: IngestMetrics
) -> LiveStages | None:
    """The live engine over ``settings.sites_file``; None (logged) when none is configured.
    Plans are imported later (:func:`_start_engine`), once every consumer is attached.

    Raises :class:`fleetwatch.engine_setup.SitesFileError` when the file as a whole is
    unusable."""
    if settings.sites_file is None:
        log.info("engine off: no sites file (set FLEETWATCH_SITES_FILE)")
        return None
    load = load_sites(settings.sites_file)
    load = sites_for_run(load, settings.sites_region, path=str(settings.sites_file))  # ops
    em = EngineMetrics(metrics.registry)
    for problem in load.problems:
        em.site_problems.labels("true" if problem.fatal else "false").inc()
    schedule = (
        load_schedule(
            settings.plans_dir, roster_file=settings.roster_file, sites_file=settings.sites_file
        )
        if settings.plans_dir is not None
        else None
    )
    params = EngineParams(round_interval_s=settings.detect_interval_ms / 1000)
    engine: Engine | EngineProcess
    if settings.engine_process:  # built in the child, off ingest's GIL
        engine = EngineProcess(
            functools.partial(
                build_engine_warm, load, vehicles_of(registry), params=params, schedule=schedule
            )
        )
    else:
        engine = build_engine(load, vehicles_of(registry), params=params, schedule=schedule)
    live = LiveEngine(engine, em, clock_us=wall_clock_us)
    live.add_publisher(log_alert_records)
    log.info("engine: %d sites from %s (%d problems), a detection round every %g ms",
             len(load.sites), settings.sites_file, len(load.problems),
             settings.detect_interval_ms)  # fmt: skip
    return LiveStages(live=live, sites=load, schedule=schedule)


def attach_consumers(
    stages: LiveStages,
    settings: Settings,
    shell: WebShell,
    registry: CollectorRegistry,
    tokens: Authenticator,
    *,
    track_source: ConnectionSource | None = None,
) -> StoreWriter | None:
    """The engine's consumers, attached before anything is published: the store writer
    (outbox: what the CRM reads), the dispatcher console (websocket + page)."""
    live = stages.live
    writer: StoreWriter | None = None
    if settings.database_url:
        writer = StoreWriter(
            settings.database_url,
            journal_path=settings.outbox_journal_file,
            clock_us=wall_clock_us,
            registry=registry,
        )
        live.add_publisher(writer.publish)
        live.add_command_hook(writer.record_command)
    roster = stages.schedule.roster if stages.schedule is not None else None
    register_console(
        shell, live, tokens=tokens, sites=stages.sites.sites, roster=roster,
        track_source=track_source,
    )  # fmt: skip
    shell.include_router(page_router(tile_url=settings.map_tile_url))
    return writer


def load_console_tokens(settings: Settings) -> Authenticator:
    """Who may use the console and the APIs: ``FLEETWATCH_TOKENS_FILE`` (hashed tokens), or
    nobody (every connection refused with 4401 / 401, logged once)."""
    if settings.tokens_file is None:
        # INFO, not WARNING: a pure ingest deployment without the console or the API is valid
        log.info(
            "no tokens file (FLEETWATCH_TOKENS_FILE): the console and the CRM API are closed "
            "(every request refused); mint tokens with `python -m fleetwatch.auth`"
        )
        return Authenticator([])
    return load_tokens(settings.tokens_file)


async def _start_engine(
    stages: LiveStages, store: Store, writer: StoreWriter | None, settings: Settings
) -> None:
    """Before ingest starts, rebuild the state a previous life had (a restart after kill -9),
    in this order: the alert desk from its stored versions (threads, timers, acknowledgements,
    comments, exceptions), the day plans, the detection events it published (from the outbox)
    and the last ``horizon_s`` of stored fixes, the dispatchers' accepted commands of the day
    (from the commands journal), and last ``finish_restore`` — also when a read failed, so the
    desk always leaves its restoring state.  What is re-derived carries the same ids and
    content, so the desk and the outbox recognise it and the CRM is told nothing twice."""
    live = stages.live
    restoring = False
    if stages.schedule is not None and stages.schedule.inputs.plans:
        since = min(stages.schedule.inputs.plans)
        try:
            stored = await store.alert_records(since_date=since)
        except StoreUnavailable as exc:
            log.warning("alert desk starts empty: cannot read stored alerts (%s); open alerts "
                        "are raised again, escalation starts over", exc)  # fmt: skip
        else:
            live.apply_now(functools.partial(_restore_alerts, stored), wall_clock_us())
            restoring = True
            log.info("alert desk restored from %d stored alert and exception versions (service "
                     "dates from %s)", len(stored), since)  # fmt: skip
    try:
        await _rebuild_engine(stages, store, writer, settings)
    finally:
        if restoring:
            live.apply_now(_finish_restore, wall_clock_us())
    # what was built so far lives all day: keep it out of the cyclic collector's full passes
    # (each took 0.3–0.5 s at 30,000 stops, a tick that long stalls the engine)
    gc.freeze()


def _restore_alerts(stored: Sequence[AlertRecord], engine: Engine, _now_us: int) -> list[Any]:
    return engine.restore_alerts(stored)  # published: the console hub starts empty too


def _restore_stop_states(states: Sequence[StopChanged], engine: Engine, now_us: int) -> list[Any]:
    return engine.restore_stop_states(states, now_us)


def _finish_restore(engine: Engine, now_us: int) -> list[Any]:
    out = engine.finish_restore(now_us)
    log.info("restore finished: %d alert/exception versions differ from the stored ones", len(out))
    return out


async def _rebuild_engine(
    stages: LiveStages, store: Store, writer: StoreWriter | None, settings: Settings
) -> None:
    live = stages.live
    if stages.schedule is not None:
        try:  # analytics fed back into the ETA model: typical service time per site
            learned = await store.learned_service_minutes()
        except StoreUnavailable:
            learned = {}
        live.apply_now(functools.partial(_learn_service_minutes, learned), wall_clock_us())
        for plan in stages.schedule.inputs.plans.values():
            live.apply_now(functools.partial(_load_plan, plan), wall_clock_us())
        log.info("schedule: %d plans from %s, %d problems (logged), roster of %d",
                 len(stages.schedule.inputs.plans), settings.plans_dir,
                 len(stages.schedule.inputs.problems),
                 len(stages.schedule.roster.dispatchers))  # fmt: skip
        for day in stages.schedule.inputs.plans:
            try:  # the board continues from the stored stop states, not from "pending"
                states = await store.stop_states(day)
            except StoreUnavailable as exc:
                log.warning("stop states of %s not restored (%s): the board decides them "
                            "again from the re-read data", day, exc)  # fmt: skip
                continue
            if states:
                live.apply_now(functools.partial(_restore_stop_states, states), wall_clock_us())
    now = wall_clock_us()
    horizon_us = round(live.apply_now(_horizon_s, now) * 1e6)
    until = now + 300_000_000  # the decoder's bound on fixes ahead of the clock
    try:
        # the window ends where the stored data ends, not at the wall clock: after a long
        # stop (the broker holding hours of backlog) the visits in progress at the crash
        # are at the end of the stored data, and the backlog continues from there
        newest = await store.newest_fix_us(now - RESTORE_LOOKBACK_US, until)
        anchor = now if newest is None else min(now, newest)
        fixes = await store.recent_fixes(anchor - horizon_us, until)
        previous = await store.detection_events_since(anchor - 2 * horizon_us)
    except StoreUnavailable as exc:
        log.warning("engine starts empty: cannot read recent fixes (%s); visits in progress "
                    "at the restart get new ids", exc)  # fmt: skip
        return
    if len(fixes) or previous:
        live.apply_now(functools.partial(_restore, fixes, previous), now)
        log.info("engine restored from %d stored fixes of the %.0f h up to the newest (%s) "
                 "and %d published detection events", len(fixes), horizon_us / 3.6e9,
                 iso_utc(anchor), len(previous))  # fmt: skip
    if writer is None:
        return
    day_start = now - 86_400 * 1_000_000
    try:
        commands = await writer.commands_since(day_start)
    except StoreUnavailable as exc:
        log.warning("dispatcher commands of today not re-applied (%s)", exc)
        return
    for at_us, cmd in commands:
        live.apply_now(functools.partial(_reapply, cmd, at_us), now)
    if commands:
        log.info("re-applied %d dispatcher commands from the journal", len(commands))


#: how far back a restart looks for the end of the stored data (today's state, not last week's)
RESTORE_LOOKBACK_US = 86_400 * 1_000_000


def _reapply(cmd: Command, at_us: int, engine: Engine, _now_us: int) -> list[Any]:
    try:
        return engine.command(cmd, at_us)
    except CommandRefused as exc:  # e.g. an acknowledged alert that no longer exists
        log.info("journaled command %s not re-applied: %s", type(cmd).__name__, exc)
        return []


async def _shutdown_when(
    stop: asyncio.Event,
    service: IngestService,
    pipeline: asyncio.Task[None],
    timeout_s: float,
    helpers: Sequence[asyncio.Task[None]] = (),
) -> None:
    """On *stop*: drain the pipeline for up to *timeout_s*, then abandon what is left.

    *helpers* (tasks that would run forever, e.g. the registry reload) end with the pipeline.
    """
    try:
        await _drain_on(stop, service, pipeline, timeout_s)
    finally:
        for task in helpers:
            task.cancel()


async def _reload_registry(
    settings: Settings, store: Store, service: IngestService, engine: LiveEngine | None
) -> None:
    """Every ``units_reload_s``: units added to the store are admitted without a restart."""
    while True:
        await asyncio.sleep(settings.units_reload_s)
        try:
            registry = await load_registry(settings, store, upsert=False)
        except StoreUnavailable:
            continue  # the writer reports the outage; keep the current registry
        current = service.registry
        if dict(registry) != dict(current):
            log.info("unit registry reloaded: %d units (was %d)", len(registry), len(current))
            service.set_registry(registry)
            if engine is not None:
                await engine.call(functools.partial(_set_units, vehicles_of(registry)))


async def _drain_on(
    stop: asyncio.Event, service: IngestService, pipeline: asyncio.Task[None], timeout_s: float
) -> None:
    stop_wait = asyncio.create_task(stop.wait(), name="ingest-stop-wait")
    try:
        await asyncio.wait({stop_wait, pipeline}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    if pipeline.done():
        return  # the pipeline ended (drained, or an error the task group reports)
    log.info("stopping: writing and acknowledging the batches in flight (<= %.0f s)", timeout_s)
    service.request_stop()
    done, _ = await asyncio.wait({pipeline}, timeout=timeout_s)
    if not done:
        unacked = service.statistics().unacked_messages
        log.warning("shutdown timeout: abandoning %d unacknowledged messages (the broker "
                    "redelivers them on the next start)", unacked)  # fmt: skip
        pipeline.cancel()

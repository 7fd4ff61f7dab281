"""Live demo: a private broker and database (unless configured), a simulated fleet publishing
NMEA over MQTT, fleetwatch ingesting and storing it, and live counts every second.

Runs until Ctrl-C or --duration seconds, then stops the fleet, lets fleetwatch write and
acknowledge what it took, checks the database, and stops the private servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import numpy as np

from fleetwatch.cli_types import non_negative_int, positive_float, positive_int
from fleetwatch.cmd_run import add_common_arguments, setup_logging
from fleetwatch.config import ConfigError, Settings, env_name, missing_files
from fleetwatch.embedded import EmbeddedBrokerError, open_private_servers
from fleetwatch.service import Running, run_ingest, stop_on_signals
from ingest.mqtt import parse_mqtt_url
from simulators.synthetic import FleetShape, SyntheticFleet, inject_bad
from store import StoreError

log = logging.getLogger("fleetwatch.demo")

#: Centre of the synthetic fleet's city (Moscow, as the simulator's default).
CENTRE_LAT, CENTRE_LON = 55.7558, 37.6173


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--vehicles", type=positive_int, default=50, help="simulated units (default 50)"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=1.0, help="fixes per second per unit (default 1)"
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--fleet",
        choices=["simulator", "synthetic"],
        default="simulator",
        help="simulator: yesterday's simulated day (fleetwatch simulate) replayed at --speed; "
        "synthetic: trucks circling the centre in real time (default simulator)",
    )
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=60.0,
        help="replay speed of the simulated day (default 60)",
    )
    parser.add_argument(
        "--bad-every",
        type=non_negative_int,
        default=97,
        metavar="N",
        help="corrupt one payload in N, to show dead letters (0: never)",
    )


@dataclass(slots=True)
class FleetCounters:
    published: int = 0  # payloads the broker acknowledged
    bad: int = 0  # of which deliberately corrupted
    strangers: int = 0  # of which from an unregistered unit


def demo_units(n: int) -> list[str]:
    return [f"DEMO{u:04d}" for u in range(n)]


def write_units_csv(path: Path, units: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{u},V{u[4:]},Driver {i + 1}" for i, u in enumerate(units)]
    path.write_text("unit_id,vehicle_id,driver\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_demo_tokens(base: Path) -> tuple[Path, dict[str, str]]:
    """Fresh tokens for this demo run: the head dispatcher D00 and dispatcher D01 (the
    generated roster's ids), a viewer, and a CRM/ops reader; hashed in ``base/tokens.toml``
    (the clear tokens are printed once, and written beside it for the CRM example client)."""
    from fleetwatch.auth import entry_toml, mint

    base.mkdir(parents=True, exist_ok=True)
    clear: dict[str, str] = {}
    lines: list[str] = []
    for user, scopes in (
        ("D00", ["head_dispatcher"]),
        ("D01", ["dispatcher"]),
        ("viewer", ["console:view"]),
        ("crm", ["crm:read", "ops:read"]),
    ):
        token, entry = mint(user, scopes)
        clear[user] = token
        lines.append(entry_toml(entry))
    path = base / "tokens.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)
    secret = base / "demo-tokens.txt"
    secret.write_text("".join(f"{u} {t}\n" for u, t in clear.items()), encoding="utf-8")
    secret.chmod(0o600)
    return path, clear


async def publish_fleet(
    settings: Settings, units: list[str], rate_hz: float, bad_every: int, counters: FleetCounters
) -> None:
    """Publish one RMC+GGA payload per unit per period at QoS 1, in real time, until cancelled."""
    mqtt = parse_mqtt_url(settings.mqtt_url or "")
    period_s = 1.0 / rate_hz
    version = (
        aiomqtt.ProtocolVersion.V5 if settings.mqtt_version == 5 else aiomqtt.ProtocolVersion.V311
    )
    quiet = logging.getLogger("fleetwatch.demo.fleet-mqtt")
    quiet.setLevel(logging.ERROR)  # aiomqtt warns about >10 concurrent publishes: we mean it
    async with aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password,
        identifier=f"fleetwatch-demo-fleet-{os.getpid()}",
        protocol=version,
        max_inflight_messages=1000,
        logger=quiet,
    ) as client:
        fleet = SyntheticFleet(
            FleetShape(units=len(units) + 1, centre_lat=CENTRE_LAT, centre_lon=CENTRE_LON)
        )
        everyone = np.arange(len(units), dtype=np.int64)
        stranger = np.array([len(units)], dtype=np.int64)
        tick = 0
        next_at = time.monotonic()
        start_us = time.time_ns() // 1000 // 10_000 * 10_000  # centiseconds, as NMEA carries
        period_us = round(period_s * 1_000_000)
        while True:
            # The epoch comes from the schedule, not from the moment of publishing: after a
            # stall the fleet catches up with distinct epochs, as a unit's buffer would, instead
            # of stamping two ticks with one centisecond (which ingest rightly calls duplicates).
            t_us = start_us + tick * period_us
            payloads = fleet.payloads(everyone, t_us)
            counters.bad += inject_bad(payloads, first_seq=tick * len(units), bad_every=bad_every)
            sends = [
                client.publish(f"fleet/{unit}/nmea", payload, qos=1)
                for unit, payload in zip(units, payloads, strict=True)
            ]
            if tick % max(1, round(10 * rate_hz)) == 0:  # an unregistered unit, every ~10 s
                rmc = fleet.payloads(stranger, t_us)[0].split(b"\r\n", 1)[0] + b"\r\n"
                sends.append(client.publish("fleet/STRANGER/nmea", rmc, qos=1))
                counters.strangers += 1
            await asyncio.gather(*sends)
            counters.published += len(sends)
            tick += 1
            next_at += period_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def scenario_for(base: Path, vehicles: int, day: str | None = None) -> Path:
    """The simulated day *day* (default yesterday, UTC) for *vehicles*, generated once, reused.

    A past day, because the replay keeps the scenario's fix times: an accelerated replay of
    today would run into the future, which the decoder rightly refuses.  A second demo run
    takes the day before the oldest one already stored (:func:`fresh_day`), so that its fixes
    are new rows, not duplicates of the first run's keys.
    """
    if day is None:
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
    out = base / f"scenario-{day}-{vehicles}v"
    if (out / "units.csv").exists():
        return out
    cmd = [
        sys.executable,
        "-m",
        "fleetwatch",
        "simulate",
        "--out",
        str(out),
        "--vehicles",
        str(vehicles),
        "--sites",
        str(max(30, 30 * vehicles)),
        "--date",
        day,
    ]
    print(f"fleetwatch demo: simulating {vehicles} vehicles on {day} ...", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


#: the decoder refuses fixes older than this before their receive time (DecodeOptions)
MAX_DEMO_DAYS_BACK = 29


def fresh_day(database_url: str, units_csv: Path, yesterday: str) -> str:
    """The newest past day with no stored fix of these units: yesterday, or the day before the
    oldest demo day already in the database.  Raises ValueError past MAX_DEMO_DAYS_BACK."""
    import datetime as dt

    import psycopg

    units = [line.split(",", 1)[0] for line in units_csv.read_text().splitlines()[1:] if line]
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT min(t) FROM fixes WHERE unit_id = ANY(%s)", (units,)
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return yesterday  # a fresh database: nothing stored yet
    oldest = row[0] if row else None
    day = dt.date.fromisoformat(yesterday)
    if oldest is not None and oldest.date() <= day:
        day = oldest.date() - dt.timedelta(days=1)
    today = dt.datetime.now(dt.UTC).date()
    if (today - day).days > MAX_DEMO_DAYS_BACK:
        raise ValueError(
            f"the demo database already holds {MAX_DEMO_DAYS_BACK} simulated days of these "
            "units (older fixes would be refused as too old); remove the demo's data "
            "directory (FLEETWATCH_DATA_DIR/demo) or point FLEETWATCH_DATABASE_URL at a fresh "
            "database"
        )
    return day.isoformat()


async def publish_scenario(
    settings: Settings, scenario: Path, speed: float, counters: FleetCounters
) -> None:
    """``fleetwatch simulate --publish`` as a child process; its progress feeds the counts."""
    cmd = [
        sys.executable,
        "-m",
        "fleetwatch",
        "simulate",
        "--publish",
        settings.mqtt_url or "",
        "--scenario",
        str(scenario),
        "--speed",
        f"{speed:g}",
        # no --retime: each run replays a day of its own (fresh_day), with the day's own times
    ]
    env = {**os.environ, "FLEETWATCH_MQTT_URL": settings.mqtt_url or ""}
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    assert proc.stdout is not None
    try:
        tail = b""
        while chunk := await proc.stderr.read(4096):
            tail = (tail + chunk)[-4096:]
            found = re.findall(rb"published (\d+) payloads", tail)
            if found:
                counters.published = int(found[-1])
        report = await proc.stdout.read()  # one JSON line, written at the end
        rc = await proc.wait()
        if rc == 0 and report.strip():
            # the final count is the broker's: payloads it acknowledged to the publisher
            counters.published = int(json.loads(report.splitlines()[-1])["acked"])
        if rc != 0:
            raise RuntimeError(
                f"fleetwatch simulate --publish exited with {rc}: "
                f"{tail.decode(errors='replace')[-500:]}"
            )
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _line(elapsed_s: float, fleet: FleetCounters, running: Running) -> str:
    s = running.service.statistics()
    lag = (
        "-"
        if s.last_receive_to_commit_us is None
        else f"{s.last_receive_to_commit_us / 1000:.0f} ms"
    )
    db = "up" if s.store_up else "DOWN (holding, not acking)"
    d = running.engine
    visits = "" if d is None else f"  visits {d.visits_started}/{d.visits_completed}"
    return (
        f"t+{elapsed_s:5.0f}s  published {fleet.published:7d}  received {s.messages_received:7d}"
        f"  stored {s.fixes_inserted:7d}  rejects {s.rejects:5d}  dead letters {s.dead_letters:5d}"
        f"  lag {lag:>7}  db {db}{visits}"
    )


async def print_live(
    fleet: FleetCounters, handle: asyncio.Future[Running], out: TextIO, started: float
) -> None:
    running = await handle
    while True:
        await asyncio.sleep(1.0)
        print(_line(time.monotonic() - started, fleet, running), file=out, flush=True)


async def demo_main(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    units = demo_units(args.vehicles)
    fleet = FleetCounters()
    stop = asyncio.Event()
    handle: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    baseline = 0
    final: dict[str, Any] = {}

    def on_ready(r: Running) -> None:
        handle.set_result(r)

    async def until_stopped() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.duration):
                await stop.wait()
        stop.set()

    with stop_on_signals(stop):
        async with asyncio.TaskGroup() as tg:
            ingest = tg.create_task(
                run_ingest(settings, stop=stop, on_ready=on_ready), name="fleetwatch-ingest"
            )
            running = await _ready(handle, ingest)
            baseline = await running.store.count_fixes()
            async with asyncio.timeout(15):
                await running.source.wait_connected()
            http = (
                f"  metrics: http://{settings.http_host}:{running.http_port}/metrics"
                if running.http_port is not None
                else ""
            )
            what = (
                f"the simulated day of {args.vehicles} vehicles "
                f"({args.scenario.name[len('scenario-') :][:10]}) at ×{args.speed:g}"
                if args.fleet == "simulator"
                else f"{len(units)} synthetic units at {args.rate:g} Hz"
            )
            print(
                f"fleetwatch demo: {what} → "
                f"{_safe_url(settings.mqtt_url)} → PostgreSQL.{http}  Ctrl-C stops.",
                file=out,
                flush=True,
            )
            if running.http_port is not None and running.engine is not None:
                base_url = f"http://{settings.http_host}:{running.http_port}"
                tokens = getattr(args, "console_tokens", {})
                print(
                    f"fleetwatch demo: dispatcher console {base_url}/?token="
                    f"{tokens.get('D01', '')}  (viewer: {base_url}/?token="
                    f"{tokens.get('viewer', '')}; CRM feed: {base_url}/api/crm/v1/"
                    "visit-exceptions with 'Authorization: Bearer <crm token in "
                    f"{settings.tokens_file}>')",
                    file=out,
                    flush=True,
                )
            if args.fleet == "simulator":
                fleet_run = publish_scenario(settings, args.scenario, args.speed, fleet)
            else:
                fleet_run = publish_fleet(settings, units, args.rate, args.bad_every, fleet)
            publisher = tg.create_task(fleet_run, name="demo-fleet")
            printer = tg.create_task(print_live(fleet, handle, out, started), name="demo-printer")
            await until_stopped()
            publisher.cancel()
            printer.cancel()
            await _caught_up(running, fleet)
            # ingest drains (writes and acks what it took) on `stop`, then returns
        final = dataclasses.asdict(running.service.statistics())
    stored = await _count_after(settings, baseline)
    good = fleet.published - fleet.bad - fleet.strangers
    print(_line(time.monotonic() - started, fleet, running), file=out)
    print(
        f"done: published {fleet.published} payloads ({fleet.bad} corrupted, {fleet.strangers} "
        f"from an unknown unit); fixes stored in PostgreSQL this run: {stored}; "
        f"dead letters: {final['dead_letters']}; acked {final['messages_acked']} of "
        f"{final['messages_received']} received.",
        file=out,
    )
    if args.fleet == "synthetic":
        # one clean fix per payload: every good payload must be a stored row
        if stored < good and final["messages_received"] >= fleet.published:
            print(f"fleetwatch demo: only {stored} of {good} good fixes stored", file=sys.stderr)
            return 1
    elif final["fixes_accepted"] and final["fixes_inserted"] < 0.9 * final["fixes_accepted"]:
        # a day replayed onto keys that are already stored: almost everything is a duplicate
        print(
            f"fleetwatch demo: only {final['fixes_inserted']} of {final['fixes_accepted']} "
            f"decoded fixes were new rows ({final['fixes_duplicate']} duplicates): the database "
            "already held this day's fixes (keys unit_id, t)",
            file=sys.stderr,
        )
        return 1
    elif stored != final["fixes_inserted"] or final["messages_acked"] != final["messages_received"]:
        # the simulated day carries its own faults (bad sentences, outliers, duplicates, bursts
        # of several fixes per payload), so payloads and rows do not match one to one: check
        # that the database holds exactly what ingest says it committed, and all was acked
        print(
            f"fleetwatch demo: the database holds {stored} new fixes, ingest committed "
            f"{final['fixes_inserted']}; acked {final['messages_acked']} of "
            f"{final['messages_received']}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _caught_up(running: Running, fleet: FleetCounters, timeout_s: float = 15.0) -> None:
    """Before stopping ingest: let it receive what the broker acknowledged to the fleet."""
    for _ in range(int(timeout_s / 0.05)):
        if running.service.statistics().messages_received >= fleet.published:
            return
        await asyncio.sleep(0.05)


async def _ready(handle: asyncio.Future[Running], ingest: asyncio.Task[None]) -> Running:
    waiters: set[asyncio.Future[Any]] = {handle, ingest}
    async with asyncio.timeout(60):
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not handle.done():
        ingest.result()  # raises the start-up error
        raise RuntimeError("ingest ended before it was ready")
    return handle.result()


async def _count_after(settings: Settings, baseline: int) -> int:
    from store import Store

    store = await Store.open(settings.database_url or "", migrate=False)
    try:
        return await store.count_fixes() - baseline
    finally:
        await store.aclose()


async def _forget_session(settings: Settings) -> None:
    """Remove the demo's session from the broker (logged, never fatal: the demo is over)."""
    from fleetwatch.startup import DependencyUnavailable, forget_session

    mqtt = parse_mqtt_url(settings.mqtt_url or "")
    try:
        await forget_session(
            mqtt.host, mqtt.port, username=mqtt.username, password=mqtt.password,
            client_id=settings.mqtt_client_id, version=settings.mqtt_version,
        )  # fmt: skip
    except DependencyUnavailable as exc:
        log.warning("could not remove the demo's MQTT session %r (it expires in %d s): %s",
                    settings.mqtt_client_id, settings.mqtt_session_expiry_s, exc)  # fmt: skip


def _safe_url(url: str | None) -> str:
    from fleetwatch.config import redact_url

    return redact_url(url or "")


def run(args: argparse.Namespace) -> int:
    try:
        overrides: dict[str, Any] = {
            "http_port": args.http_port,
            "log_level": args.log_level
            or ("WARNING" if os.environ.get(env_name("log_level")) is None else None),
        }
        settings = Settings.load(config_file=args.config, overrides=overrides)
        if args.http_port is None and env_name("http_port") not in os.environ:
            settings = dataclasses.replace(settings, http_port=0)  # never clash with a real one
    except ConfigError as exc:
        print(f"fleetwatch demo: {exc}", file=sys.stderr)
        return 2
    # before the private servers start: a missing --units file was a traceback out of the
    # service's task group, after the servers had started
    given = {"units_file": "--units"} if args.units_file is not None else {}
    missing = missing_files(dataclasses.replace(settings, units_file=args.units_file), given)
    if missing:
        for line in missing:
            print(f"fleetwatch demo: {line}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    base = settings.data_dir.resolve() / "demo"
    args.scenario = None
    if args.fleet == "simulator":
        try:
            args.scenario = scenario_for(base, args.vehicles)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(
                f"fleetwatch demo: the simulator failed ({exc}); using the synthetic fleet",
                file=sys.stderr,
            )
            args.fleet = "synthetic"
    sites_file = settings.sites_file
    if args.scenario is not None:
        units_file = args.units_file or args.scenario / "units.csv"
        if sites_file is None and (args.scenario / "sites.geojson").is_file():
            sites_file = args.scenario / "sites.geojson"  # live visits in the counts line
    else:
        units_file = args.units_file or write_units_csv(
            base / "units.csv", demo_units(args.vehicles)
        )
    plans_dir = settings.plans_dir
    if plans_dir is None and args.scenario is not None and (args.scenario / "plans.csv").is_file():
        plans_dir = args.scenario  # the schedule, alerts and visit exceptions live
    tokens_file, console_tokens = write_demo_tokens(base)
    settings = dataclasses.replace(
        settings,
        units_file=units_file,
        sites_file=sites_file,
        plans_dir=plans_dir,
        tokens_file=settings.tokens_file or tokens_file,
        outbox_journal_file=settings.outbox_journal_file or base / "outbox-journal.sqlite",
        spool_file=settings.spool_file or base / "spool.sqlite",
        mqtt_client_id=settings.mqtt_client_id + "-demo",
        # short-lived, and forgotten at exit (forget_session): a broker must not queue a
        # fleet's data for days for a demo session nobody will resume
        mqtt_session_expiry_s=600,
    )
    print(
        f"fleetwatch demo: starting private servers as needed (files in {base}) ...",
        file=sys.stdout,
        flush=True,
    )
    try:
        with open_private_servers(settings, base) as servers:
            if args.scenario is not None:
                yesterday = args.scenario.name[len("scenario-") :][:10]  # scenario-YYYY-MM-DD-Nv
                day = fresh_day(
                    servers.settings.database_url or "", args.scenario / "units.csv", yesterday
                )
                if day != yesterday:
                    args.scenario = scenario_for(base, args.vehicles, day)
                    print(f"fleetwatch demo: {yesterday} is already stored: replaying {day}",
                          flush=True)  # fmt: skip
            try:
                args.console_tokens = console_tokens
                return asyncio.run(demo_main(servers.settings, args, sys.stdout))
            finally:
                asyncio.run(_forget_session(servers.settings))
    except ValueError as exc:
        print(f"fleetwatch demo: {exc}", file=sys.stderr)
        return 1
    except (EmbeddedBrokerError, StoreError) as exc:
        print(f"fleetwatch demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

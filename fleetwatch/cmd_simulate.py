"""Write a simulated day (sites, plans, units, each unit's NMEA, ground truth) or publish one live.

  fleetwatch simulate --out DIR [--sites 1500] [--vehicles 50] [--date D] [--seed S] ...
  fleetwatch simulate --publish mqtt://127.0.0.1:1883 --speed 60 [--scenario DIR]

Files and their formats: docs/formats.md.  Publishing sends each unit's payloads to
``fleet/<unit>/nmea`` at QoS 1, paced by their receive times divided by --speed (or as fast as
the broker acknowledges with --speed max), multiplexed over --connections connections, and
stops at the end of the day.  Only loopback brokers or the configured one (FLEETWATCH_MQTT_URL)
are accepted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from fleetwatch.cli_types import (
    fraction,
    iso_date,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from simulators.mqtt_wire import RawPublisherPool
from simulators.publish import (
    BrokerUnavailable,
    Pool,
    PublisherPool,
    TargetRefused,
    check_target,
    last_receive_us,
    publish_scenario,
)
from simulators.scenario import NOISE_MODELS, ScenarioParams, write_scenario

_RATES = (
    "skip",
    "late",
    "jam",
    "lunch",
    "driveby",
    "multipath",
    "dropout",
    "bad",
    "cancel",
    "breakdown",
)


def _pair(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(math.isfinite(x) for x in parts):
        raise argparse.ArgumentTypeError(f"expected a number A or a pair A,B, got {text!r}")
    return parts[0], parts[-1]


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'max', got {text!r}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ScenarioParams()
    g = parser.add_argument_group("scenario")
    g.add_argument("--out", type=Path, help="write the scenario into this directory")
    g.add_argument("--sites", type=positive_int, default=d.sites, help=f"default {d.sites}")
    g.add_argument(
        "--vehicles", type=positive_int, default=d.vehicles, help=f"default {d.vehicles}"
    )
    g.add_argument(
        "--date",
        type=iso_date,
        help=f"service date YYYY-MM-DD (default {d.date}; today when publishing on the fly)",
    )
    g.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    g.add_argument("--centre", type=_pair, metavar="LAT,LON", default=(d.lat0, d.lon0),
                   help=f"centre of the city (default {d.lat0},{d.lon0})")  # fmt: skip
    g.add_argument(
        "--size-km", type=positive_float, default=d.size_km, help="side of the city square"
    )
    g.add_argument("--tz", default=d.tz, help=f"sites' local time zone (default {d.tz})")
    g.add_argument("--start-local", default=d.start_local, help="first departures (HH:MM)")
    g.add_argument(
        "--rate-hz", type=positive_float, default=d.rate_hz, help="fix rate of most units"
    )
    g.add_argument("--slow-unit-fraction", type=fraction, default=d.slow_unit_fraction,
                   help=f"share of units reporting at --slow-rate-hz "
                        f"(default {d.slow_unit_fraction})")  # fmt: skip
    g.add_argument("--slow-rate-hz", type=positive_float, default=d.slow_rate_hz,
                   help=f"fix rate of the slow units (default {d.slow_rate_hz})")  # fmt: skip
    g.add_argument(
        "--noise-m",
        type=_pair,
        metavar="MIN[,MAX]",
        default=(d.noise_min_m, d.noise_max_m),
        help=f"GPS noise in metres, per unit between MIN and MAX "
        f"(default {d.noise_min_m:g},{d.noise_max_m:g})",
    )
    g.add_argument(
        "--noise-model",
        choices=NOISE_MODELS,
        default=d.noise_model,
        help="multipath: white noise (6 m parked, 3 m moving), 1%% of parked fixes 40-80 m "
        "outliers, jams as stands with short creeps (issue 11's independent generator)",
    )
    for name in _RATES:
        default = getattr(d, f"{name}_rate")
        g.add_argument(
            f"--{name}-rate", type=non_negative_float, default=default, help=f"default {default}"
        )
    # None: the generator's default, unless the fleet is too small to carry it (_faulty_units)
    g.add_argument("--clock-off-units", type=non_negative_int, default=None,
                   help=f"units whose clock is wrong (default {d.clock_off_units}; "
                        "0 for a single vehicle)")  # fmt: skip
    g.add_argument("--silent-units", type=non_negative_int, default=None,
                   help=f"units that never report (default {d.silent_units}; "
                        "0 for a single vehicle)")  # fmt: skip
    g.add_argument(
        "--coverage-gap-units",
        type=non_negative_int,
        default=d.coverage_gap_units,
        help="units out of coverage across a stop's window end, backlog after window end + 30 min",
    )
    g.add_argument("--quiet", action="store_true", help="inject nothing (GPS noise stays)")
    p = parser.add_argument_group("live publishing")
    p.add_argument("--publish", metavar="URL", help="mqtt://[user:pass@]host:port")
    p.add_argument("--scenario", type=Path, help="publish this scenario directory")
    p.add_argument("--speed", type=_speed, default=1.0, help="N times real time, or 'max'")
    p.add_argument(
        "--connections", type=positive_int, default=4, help="MQTT connections (default 4)"
    )
    p.add_argument(
        "--per-unit-connections",
        action="store_true",
        help="one connection per unit, user name = unit id (for ACL brokers)",
    )
    p.add_argument(
        "--retime",
        action="store_true",
        help="move fix times so the day ends as publishing ends (fixes are never in the future)",
    )
    p.add_argument(
        "--unit-password",
        help="password of every unit with --per-unit-connections (ACL test brokers)",
    )


def _faulty_units(args: argparse.Namespace, base: ScenarioParams) -> tuple[int, int]:
    """(clock-off, silent) units: as given, else the generator's defaults when the fleet has a
    vehicle for each, else none: ``--vehicles 1`` used to fail with "more clock-off and silent
    units than vehicles" (and the demo then fell back to the synthetic fleet)."""
    fits = args.vehicles >= base.clock_off_units + base.silent_units
    clock_off, silent = args.clock_off_units, args.silent_units
    if clock_off is None:
        clock_off = base.clock_off_units if fits else 0
    if silent is None:
        silent = base.silent_units if fits else 0
    return clock_off, silent


def _params(args: argparse.Namespace, *, default_date: dt.date | None) -> ScenarioParams:
    base = ScenarioParams()
    clock_off, silent = _faulty_units(args, base)
    kw = {f"{n}_rate": getattr(args, f"{n}_rate") for n in _RATES}
    p = ScenarioParams(
        seed=args.seed,
        date=args.date or default_date or base.date,
        sites=args.sites,
        vehicles=args.vehicles,
        lat0=args.centre[0],
        lon0=args.centre[1],
        size_km=args.size_km,
        tz=args.tz,
        start_local=args.start_local,
        rate_hz=args.rate_hz,
        slow_unit_fraction=args.slow_unit_fraction,
        slow_rate_hz=args.slow_rate_hz,
        noise_min_m=args.noise_m[0],
        noise_max_m=args.noise_m[1],
        noise_model=args.noise_model,
        clock_off_units=clock_off,
        silent_units=silent,
        coverage_gap_units=args.coverage_gap_units,
        **kw,
    )
    return p.quiet() if args.quiet else p


def _allowed_brokers() -> list[tuple[str, int]]:
    from fleetwatch.config import ConfigError, Settings
    from ingest.mqtt import parse_mqtt_url

    try:
        url = Settings.load().mqtt_url
    except ConfigError:
        return []
    if not url:
        return []
    s = parse_mqtt_url(url)
    return [(s.host, s.port)]


def _publish(args: argparse.Namespace, scenario: Path) -> int:
    from ingest.mqtt import parse_mqtt_url

    target = parse_mqtt_url(args.publish)
    check_target(target.host, target.port, _allowed_brokers())
    from simulators.formats import load_units

    units = [u.unit_id for u in load_units(scenario / "units.csv")]
    index = {u: i for i, u in enumerate(units)}
    pool: Pool
    if args.per_unit_connections:
        pool = PublisherPool(
            target.host,
            target.port,
            connections=len(units),
            client_id_prefix="fleetwatch-sim",
            credentials=lambda i: (units[i], args.unit_password or ""),
        )

        def conn(u: str) -> int:
            return index[u]
    else:
        pool = RawPublisherPool(
            target.host,
            target.port,
            connections=max(1, min(args.connections, len(units))),
            client_id_prefix=f"fleetwatch-sim-{int(time.time())}",
            username=target.username,
            password=target.password,
        )

        def conn(u: str) -> int:
            return index[u] % pool.connections

    def progress(n: int, s: float) -> None:
        print(f"\rpublished {n} payloads in {s:.0f} s", end="", file=sys.stderr, flush=True)

    shift_s = 0
    if args.retime:
        from simulators.formats import merged_payloads

        first = next(iter(merged_payloads(scenario)))[0]
        last = last_receive_us(scenario)
        span_s = (last - first) / 1e6 / (args.speed or math.inf)
        shift_s = math.floor(time.time() + span_s - last / 1e6)
    pool.connect()
    try:
        report = publish_scenario(
            scenario,
            pool,
            speed=args.speed,
            unit_connection=conn,
            progress=progress,
            shift_s=shift_s,
        )
    finally:
        pool.close()
    print(file=sys.stderr)
    print(json.dumps(report.to_json_dict()))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.publish:
            from ingest.mqtt import parse_mqtt_url

            target = parse_mqtt_url(args.publish)
            check_target(target.host, target.port, _allowed_brokers())  # before any work
            if args.scenario:
                return _publish(args, args.scenario)
            params = _params(args, default_date=dt.datetime.now(dt.UTC).date())
            with tempfile.TemporaryDirectory(prefix="fleetwatch-sim-") as tmp:
                write_scenario(params, Path(tmp))
                return _publish(args, Path(tmp))
        if not args.out:
            print("fleetwatch simulate: give --out DIR, or --publish URL", file=sys.stderr)
            return 2
        params = _params(args, default_date=None)
        t0 = time.perf_counter()
        truth = write_scenario(params, args.out)
        secs = time.perf_counter() - t0
        summary = {
            "out": str(args.out),
            "sites": params.sites,
            "vehicles": params.vehicles,
            "fixes": truth.scenario["fixes"],
            "visits": len(truth.visits),
            "skipped": len(truth.skipped),
            "late": len(truth.late),
            "cancelled": len(truth.cancelled),
            "seconds": round(secs, 2),
        }
        print(json.dumps(summary))
        return 0
    except (ValueError, OSError, BrokerUnavailable) as exc:
        kind = "refused" if isinstance(exc, TargetRefused) else "error"
        print(f"fleetwatch simulate: {kind}: {exc}", file=sys.stderr)
        return 2

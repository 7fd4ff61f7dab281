"""Run the service: subscribe to the broker, store every fix in PostgreSQL, match sites and
detect visits when a sites file is given, serve /metrics, /healthz and /readyz, until SIGINT
or SIGTERM (then the batches in flight are written and acknowledged).

Settings come from defaults, a TOML file (--config or FLEETWATCH_CONFIG), FLEETWATCH_*
environment variables and these options, in that order (docs/configuration.md).  Every bad
setting is reported at once, one line each.  Exit codes: 0 stopped cleanly, 2 bad settings,
3 database or broker unavailable at start (see --wait-for) or refusing us, 4 HTTP port
unusable, 1 anything else (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from fleetwatch.cli_types import non_negative_float, port
from fleetwatch.config import ConfigError, Settings, problems_for_run
from fleetwatch.startup import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PORT,
    EXIT_UNAVAILABLE,
    quiet_library_logs,
)

log = logging.getLogger("fleetwatch")

EPILOG = """\
examples:
  FLEETWATCH_MQTT_URL=mqtt://fleetwatch:PW@broker:1883 \\
  FLEETWATCH_DATABASE_URL=postgresql://fleetwatch:PW@db/fleetwatch fleetwatch run
  fleetwatch run --config /etc/fleetwatch/fleetwatch.toml --wait-for 120
"""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo`` (they override the environment and file)."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML settings file (default: $FLEETWATCH_CONFIG)")  # fmt: skip
    parser.add_argument("--units", type=Path, metavar="FILE", dest="units_file",
                        help="units.csv (unit_id,vehicle_id,driver) to register")  # fmt: skip
    parser.add_argument("--http-port", type=port, metavar="PORT",
                        help="port of /metrics, /healthz, /readyz (0: any free port)")  # fmt: skip
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log threshold (default INFO)")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_common_arguments(parser)
    parser.add_argument("--mqtt-url", metavar="URL",
                        help="broker, mqtt://[user:password@]host[:port]")  # fmt: skip
    parser.add_argument("--database-url", metavar="DSN",
                        help="PostgreSQL, postgresql://user:password@host:5432/dbname")  # fmt: skip
    parser.add_argument("--accept-unknown-units", action="store_true", default=None,
                        help="store fixes of units in no registry (load tests)")  # fmt: skip
    parser.add_argument("--wait-for", type=non_negative_float, metavar="SECONDS",
                        dest="startup_wait_s",
                        help="at start, wait up to SECONDS for the database and the broker "
                             "(default 0: fail fast, exit code 3)")  # fmt: skip
    parser.add_argument("--sites-region", metavar="BOX", dest="sites_region",
                        help="refuse sites outside lon_min,lat_min,lon_max,lat_max, or "
                             "'auto' / 'off' (default auto)")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> Settings:
    keys = ("units_file", "http_port", "log_level", "mqtt_url", "database_url",
            "accept_unknown_units", "startup_wait_s", "sites_region")  # fmt: skip
    overrides: dict[str, Any] = {k: getattr(args, k, None) for k in keys}
    return Settings.load(config_file=args.config, overrides=overrides)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_library_logs()


def report(command: str, problems: list[str] | tuple[str, ...]) -> None:
    """One line per problem, each prefixed with the command."""
    for problem in problems:
        print(f"fleetwatch {command}: {problem}", file=sys.stderr)


def exit_code_of(exc: BaseException) -> tuple[int, list[str]] | None:
    """(exit code, lines) for an error an operator can act on; None for a bug.

    Errors raised inside the service's task groups arrive wrapped in ExceptionGroups: the
    first actionable one inside is reported.
    """
    from fleetwatch.engine_setup import SitesFileError
    from fleetwatch.startup import DependencyUnavailable
    from fleetwatch.web import WebError
    from ingest.mqtt import MqttRefusedError, MqttUrlError
    from ingest.registry import UnitsFileError
    from store import StoreError, StoreUnavailable

    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = exit_code_of(inner)
            if found is not None:
                return found
        return None
    text = " ".join(str(exc).split())
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, list(exc.problems)
    if isinstance(exc, UnitsFileError | SitesFileError | MqttUrlError):
        return EXIT_CONFIG, [text]
    if isinstance(exc, WebError):
        return EXIT_PORT, [text]
    if isinstance(exc, DependencyUnavailable):
        return EXIT_UNAVAILABLE, list(exc.lines)
    if isinstance(exc, MqttRefusedError):
        return EXIT_UNAVAILABLE, [f"broker (FLEETWATCH_MQTT_URL): {text}"]
    if isinstance(exc, StoreUnavailable):
        return EXIT_UNAVAILABLE, [f"database unavailable (FLEETWATCH_DATABASE_URL): {text}"]
    if isinstance(exc, StoreError):
        return EXIT_UNAVAILABLE, [f"database (FLEETWATCH_DATABASE_URL): {text}"]
    return None


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        report("run", exc.problems)
        return EXIT_CONFIG
    given = {"units_file": "--units"} if args.units_file is not None else {}
    problems = problems_for_run(settings, given)
    if problems:
        report("run", problems)
        return EXIT_CONFIG
    setup_logging(settings.log_level)
    from fleetwatch.service import run_ingest, stop_on_signals

    async def main() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            await run_ingest(settings, stop=stop)

    try:
        asyncio.run(main())
    except Exception as exc:
        found = exit_code_of(exc)
        if found is None:
            raise
        code, lines = found
        report("run", lines)
        return code
    return EXIT_OK


__all__ = ["EXIT_ERROR", "add_arguments", "run"]

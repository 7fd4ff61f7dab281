"""Run the ingest service: subscribe to the configured broker, store fixes in the configured
database, serve /metrics, until SIGINT/SIGTERM.

Settings come from defaults, a TOML file (--config or FLEETWATCH_CONFIG), FLEETWATCH_*
environment variables and these options, in that order (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from fleetwatch.config import ConfigError, Settings
from fleetwatch.service import run_ingest, stop_on_signals
from ingest.registry import UnitsFileError
from store import StoreError

log = logging.getLogger("fleetwatch")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo`` (they override the environment and file)."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    parser.add_argument("--units", type=Path, metavar="FILE", dest="units_file",
                        help="units.csv (unit_id,vehicle_id,driver) to register")  # fmt: skip
    parser.add_argument("--http-port", type=int, metavar="PORT",
                        help="port of /metrics and /healthz (0: any free port)")  # fmt: skip
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--mqtt-url", metavar="URL",
                        help="broker, mqtt://[user:password@]host[:port]")  # fmt: skip
    parser.add_argument("--database-url", metavar="DSN", help="PostgreSQL DSN")
    parser.add_argument("--accept-unknown-units", action="store_true", default=None,
                        help="store fixes of units in no registry (load tests)")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> Settings:
    keys = ("units_file", "http_port", "log_level", "mqtt_url", "database_url",
            "accept_unknown_units")  # fmt: skip
    overrides: dict[str, Any] = {k: getattr(args, k, None) for k in keys}
    return Settings.load(config_file=args.config, overrides=overrides)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"fleetwatch run: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            await run_ingest(settings, stop=stop)

    try:
        asyncio.run(main())
    except (ConfigError, UnitsFileError) as exc:
        print(f"fleetwatch run: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"fleetwatch run: database: {exc}", file=sys.stderr)
        return 1
    return 0

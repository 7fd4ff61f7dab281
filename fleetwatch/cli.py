"""The ``fleetwatch`` console script: one subcommand per module ``fleetwatch.cmd_<name>``.

argparse (standard library) is the CLI framework: the subcommands take a handful of options
each, and it costs no dependency and no start-up time (``fleetwatch decode`` is used in shell
pipelines).  Each subcommand lives in its own module so that stages can add theirs without
touching this file's logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "decode": ("fleetwatch.cmd_decode", "decode NMEA text to JSON fixes (stdin or FILE)"),
    "run": ("fleetwatch.cmd_run", "run the ingest service on the configured broker/database"),
    "demo": ("fleetwatch.cmd_demo", "live demo: private broker+database, simulated fleet, counts"),
    "simulate": ("fleetwatch.cmd_simulate", "write a scenario or publish a simulated fleet"),
    "loadtest": ("fleetwatch.cmd_loadtest", "drive a running fleetwatch at a target fix rate"),
    "replay": ("fleetwatch.cmd_replay", "run the engine offline over a scenario directory"),
}


def _load(name: str) -> ModuleType | None:
    module, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None  # subcommand not built yet
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args._module.run(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())

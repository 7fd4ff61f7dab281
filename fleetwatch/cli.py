"""fleetwatch: real-time telemetry for a fleet of mat-service trucks.

GPS units publish NMEA 0183 over MQTT; `fleetwatch run` stores every fix in PostgreSQL and
detects visits and stops; the other commands decode, simulate, replay, load-test and check.
Run `fleetwatch COMMAND --help` for a command's options; settings are in
docs/configuration.md, operations (health, metrics, exit codes) in docs/operations.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

# argparse (standard library) is the CLI framework: every subcommand has a handful of options,
# it costs no dependency and no start-up time (`fleetwatch decode` runs in shell pipelines),
# and each subcommand's module is imported only when that subcommand runs or shows its help:
# `fleetwatch --help` imports none, so neither numpy nor numba is loaded (tests/test_cli.py).

#: subcommand -> (module, one-line help); a stage adds its command here and in its module.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("fleetwatch.cmd_run", "run the service on the configured broker and database"),
    "check-broker": ("fleetwatch.cmd_check_broker",
                     "check that the broker holds an outage's backlog for the fleet"),
    "decode": ("fleetwatch.cmd_decode", "decode NMEA text to JSON fixes (FILE or stdin)"),
    "replay": ("fleetwatch.cmd_replay", "run the engine offline over a scenario directory"),
    "simulate": ("fleetwatch.cmd_simulate", "write a scenario, or publish a simulated fleet"),
    "loadtest": ("fleetwatch.cmd_loadtest", "drive a running fleetwatch at a target rate"),
    "demo": ("fleetwatch.cmd_demo",
             "live demo: private broker and database, a simulated fleet, live counts"),
}  # fmt: skip

EPILOG = """\
examples:
  fleetwatch run --config /etc/fleetwatch/fleetwatch.toml
  fleetwatch decode track.nmea | head
  fleetwatch simulate --out /tmp/day --sites 600 --vehicles 20
  fleetwatch replay /tmp/day --out /tmp/day/out --evaluate
"""


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (the first non-option word)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in *argv* has its module imported."""
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="fleetwatch",
        description=doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else doc,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(mod.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


def load(name: str) -> ModuleType:
    """A subcommand's module (for tests and docs)."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args, extra = build_parser(args_list).parse_known_args(args_list)
    if extra:  # reported by the subcommand's parser, with the subcommand's usage
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        rc: int = args._module.run(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())

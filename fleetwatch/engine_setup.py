"""Build the one engine from files and settings: used by ``fleetwatch run`` and ``replay``.

Both commands go through here so that live operation and replay run the same engine with the
same stages; they differ only in the clock that drives it and where its input comes from.
With only sites, the engine matches and detects; with a day plan it also runs the schedule
board, and the alert desk (roster from a file, or a generated one) after it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alerts.desk import AlertDesk, AlertParams
from alerts.roster import Roster, RosterError, generate_roster, parse_roster
from fleetwatch.config import ConfigError
from geofence import FenceIndex, SiteFileError, SiteLoad, load_sites_csv, load_sites_geojson
from schedule.board import ScheduleBoard
from schedule.engine import Engine, EngineParams, fence_matcher
from schedule.params import DetectionParams
from schedule.plans import PlanFormatError, ScheduleInputs, read_schedule_inputs
from schedule.schedule_params import ScheduleParams

log = logging.getLogger(__name__)


class SitesFileError(ConfigError):
    """The configured sites file cannot be used at all (unreadable, not parseable, no site)."""


class PlanSetupError(ConfigError):
    """The configured plan or roster cannot be used at all (the message names the file)."""


def load_sites(path: Path, *, source: str = "FLEETWATCH_SITES_FILE") -> SiteLoad:
    """Sites of a GeoJSON or CSV file, chosen by extension; problems are logged per site.

    *source* is where the path came from (the setting, or an option such as ``--sites``): the
    errors name it, so ``fleetwatch loadtest --sites x`` does not blame a setting the user never
    set.  A missing path is said as such before its extension is looked at ("unknown extension
    ''" for a mistyped ``--sites sites`` hid the real problem)."""
    label = f"{source} {path}" if source.startswith("-") else f"{source}={path}"
    if not path.is_file():
        raise SitesFileError(f"{label}: {'not a file' if path.exists() else 'no such file'}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".geojson", ".json"):
            load = load_sites_geojson(path)
        elif suffix == ".csv":
            load = load_sites_csv(path)
        else:
            raise SitesFileError(
                f"{label}: unknown extension {suffix!r}; use .geojson/.json (GeoJSON) or .csv"
            )
    except SiteFileError as exc:
        raise SitesFileError(f"{label}: {exc}") from exc
    for problem in load.problems:
        log.warning("site file: %s", problem)
    if not load.sites:
        raise SitesFileError(
            f"{label}: no usable site ({len(load.problems)} problems, logged above)"
        )
    return load


def load_roster(path: Path | None, vehicles: list[str]) -> Roster:
    """The dispatchers' roster from *path* (TOML or JSON by extension), or a generated one
    for *vehicles* (the demo and replay: one dispatcher per 12 vehicles and a head)."""
    if path is None:
        return generate_roster(vehicles)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanSetupError(f"roster file {path}: {exc.strerror}") from exc
    try:
        return parse_roster(text, fmt="json" if path.suffix.lower() == ".json" else "toml")
    except RosterError as exc:
        raise PlanSetupError(f"roster file {path}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """The board's inputs and the roster, loaded and checked; the plans are imported into
    the engine with :meth:`Engine.load_plan` by whoever drives it (at its own 'now')."""

    inputs: ScheduleInputs
    roster: Roster


def load_schedule(
    directory: Path, *, roster_file: Path | None = None, sites_file: Path | None = None
) -> Schedule:
    """Plans (``plans.csv`` or ``plans.json``), depots and units of a scenario-shaped
    directory, the sites from its ``sites.geojson`` or else *sites_file* (GeoJSON); every bad
    row is logged and skipped, a directory without a usable plan fails."""
    try:
        inputs = read_schedule_inputs(directory, sites_file=sites_file)
    except (PlanFormatError, OSError) as exc:
        raise PlanSetupError(f"plans in {directory}: {exc}") from exc
    for problem in inputs.problems:
        log.warning("plan import: %s", problem)
    if not inputs.plans:
        raise PlanSetupError(
            f"plans in {directory}: no usable plan ({len(inputs.problems)} problems, logged)"
        )
    return Schedule(inputs=inputs, roster=load_roster(roster_file, sorted(inputs.vehicles)))


def build_engine(
    load: SiteLoad,
    unit_to_vehicle: Mapping[str, str],
    *,
    detection: DetectionParams | None = None,
    params: EngineParams | None = None,
    schedule: Schedule | None = None,
    schedule_params: ScheduleParams | None = None,
    alert_params: AlertParams | None = None,
) -> Engine:
    """The engine over *load*'s sites (fence index built once for this site list), with the
    schedule board and the alert desk when a *schedule* is given."""
    detection = detection or DetectionParams()
    index = FenceIndex.build(load.sites, margin_m=detection.exit_margin_m)
    board = None
    stages: list[AlertDesk] = []
    if schedule is not None:
        inp = schedule.inputs
        vehicles = set(inp.vehicles) | set(unit_to_vehicle.values())
        board = ScheduleBoard(
            sites=inp.sites,
            vehicles=vehicles,
            depots=inp.depots,
            params=schedule_params or ScheduleParams(),
        )
        stages.append(AlertDesk(roster=schedule.roster, params=alert_params))
    return Engine(
        matcher=fence_matcher(index),
        site_ids=index.site_ids,
        unit_to_vehicle=unit_to_vehicle,
        detection=detection,
        params=params,
        board=board,
        stages=stages,
    )


def build_engine_warm(
    load: SiteLoad,
    unit_to_vehicle: Mapping[str, str],
    *,
    params: EngineParams | None = None,
    schedule: Schedule | None = None,
) -> Engine:
    """:func:`build_engine` after the fence query's compiled pass (``geofence.warm_up``) and
    the detection kernels' (``schedule.warm.warm_up``): the engine's child process
    builds its engine with this, so its first round does not compile."""
    from geofence import warm_up
    from schedule.warm import warm_up as warm_up_detection

    warm_up()
    warm_up_detection()
    return build_engine(load, unit_to_vehicle, params=params, schedule=schedule)

"""Build the one engine from files and settings: used by ``fleetwatch run`` and ``replay``.

Both commands go through here so that live operation and replay run the same engine with the
same stages; they differ only in the clock that drives it and where its input comes from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from fleetwatch.config import ConfigError
from geofence import FenceIndex, SiteFileError, SiteLoad, load_sites_csv, load_sites_geojson
from schedule.engine import Engine, EngineParams, fence_matcher
from schedule.params import DetectionParams

log = logging.getLogger(__name__)


class SitesFileError(ConfigError):
    """The configured sites file cannot be used at all (unreadable, not parseable, no site)."""


def load_sites(path: Path) -> SiteLoad:
    """Sites of a GeoJSON or CSV file, chosen by extension; problems are logged per site."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".geojson", ".json"):
            load = load_sites_geojson(path)
        elif suffix == ".csv":
            load = load_sites_csv(path)
        else:
            raise SitesFileError(
                f"FLEETWATCH_SITES_FILE={path}: unknown extension {suffix!r}; "
                "use .geojson/.json (GeoJSON) or .csv"
            )
    except SiteFileError as exc:
        raise SitesFileError(f"FLEETWATCH_SITES_FILE: {exc}") from exc
    for problem in load.problems:
        log.warning("site file: %s", problem)
    if not load.sites:
        raise SitesFileError(
            f"FLEETWATCH_SITES_FILE={path}: no usable site ({len(load.problems)} problems, "
            "logged above)"
        )
    return load


def build_engine(
    load: SiteLoad,
    unit_to_vehicle: Mapping[str, str],
    *,
    detection: DetectionParams | None = None,
    params: EngineParams | None = None,
) -> Engine:
    """The engine over *load*'s sites (fence index built once for this site list)."""
    detection = detection or DetectionParams()
    index = FenceIndex.build(load.sites, margin_m=detection.exit_margin_m)
    return Engine(
        matcher=fence_matcher(index),
        site_ids=index.site_ids,
        unit_to_vehicle=unit_to_vehicle,
        detection=detection,
        params=params,
    )

"""The region the day's sites must lie in, for `fleetwatch run` and `fleetwatch replay`.

A site written [lat, lon] instead of [lon, lat] is still a valid place on Earth (near Moscow,
lon 37.6 / lat 55.7 becomes lon 55.7 / lat 37.6, in Iran), so without a region it loads
silently and simply never matches.  The setting ``sites_region`` (``--sites-region``,
``replay --region``) is:

* ``lon_min,lat_min,lon_max,lat_max`` — an explicit box;
* ``auto`` (default) — a box around the day's depots when they are known (replay's
  ``depots.csv``), else around the median of the sites themselves, widened by
  :data:`AUTO_MARGIN_DEG` on every side: a fleet's day fits in it, a swapped coordinate does not;
* ``off`` — no check.

A site outside the region is refused as a fatal :class:`~geofence.sites.SiteProblem` (logged and
counted like any other), with "looks swapped" when exchanging its coordinates would put it
inside.  :func:`within_region` is pure; the loaders stay as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from fleetwatch.config import parse_region
from geofence.region import Region
from geofence.sites import SiteLoad, SiteProblem

#: ``auto``: degrees added around the anchor box (about 110 km of latitude)
AUTO_MARGIN_DEG = 1.0


def region_for(
    setting: str,
    *,
    anchors: Sequence[tuple[float, float]] = (),
    fallback: Sequence[tuple[float, float]] = (),
    margin_deg: float = AUTO_MARGIN_DEG,
) -> Region | None:
    """The region of a ``sites_region`` value; ``auto`` boxes *anchors* (lon, lat), or the
    median of *fallback* points when there are no anchors; None = no check."""
    parsed = parse_region(setting)
    if parsed == "off":
        return None
    if isinstance(parsed, tuple):
        lon0, lat0, lon1, lat1 = parsed
        return Region(name="sites_region", lon_min=lon0, lat_min=lat0, lon_max=lon1, lat_max=lat1)
    if anchors:
        lons, lats = [p[0] for p in anchors], [p[1] for p in anchors]
        name = "auto: depots"
    elif fallback:
        lons = [statistics.median(p[0] for p in fallback)]
        lats = [statistics.median(p[1] for p in fallback)]
        name = "auto: the sites' median"
    else:
        return None
    return Region(
        name=name,
        lon_min=max(min(lons) - margin_deg, -180.0),
        lat_min=max(min(lats) - margin_deg, -90.0),
        lon_max=min(max(lons) + margin_deg, 180.0),
        lat_max=min(max(lats) + margin_deg, 90.0),
    )


def site_points(load: SiteLoad) -> list[tuple[float, float]]:
    """A representative (lon, lat) of each site (its centroid)."""
    out = []
    for site in load.sites:
        c = site.geometry.centroid
        out.append((float(c.x), float(c.y)))
    return out


def within_region(load: SiteLoad, region: Region | None, *, source: str) -> SiteLoad:
    """*load* without the sites outside *region*; each one becomes a fatal problem."""
    if region is None:
        return load
    kept = []
    problems = list(load.problems)
    for site, (lon, lat) in zip(load.sites, site_points(load), strict=True):
        if region.contains(lon, lat):
            kept.append(site)
            continue
        if region.contains(lat, lon):
            why = (f"coordinate (lon {lon:g}, lat {lat:g}) looks swapped: exchanged it would lie "
                   f"in region {region.describe()} (GeoJSON is [lon, lat])")  # fmt: skip
        else:
            why = f"coordinate (lon {lon:g}, lat {lat:g}) lies outside region {region.describe()}"
        problems.append(SiteProblem(source=source, site_id=site.site_id, message=why, fatal=True))
    return replace(load, sites=kept, problems=problems)


def sites_in_region(
    load: SiteLoad,
    setting: str,
    *,
    source: str,
    anchors: Sequence[tuple[float, float]] = (),
) -> tuple[SiteLoad, Region | None]:
    """:func:`within_region` for a ``sites_region`` setting (see the module docstring)."""
    region = region_for(setting, anchors=anchors, fallback=site_points(load))
    return within_region(load, region, source=source), region


def sites_for_run(load: SiteLoad, setting: str, *, path: str) -> SiteLoad:
    """`fleetwatch run`: the loaded sites checked against ``sites_region`` (no depots known:
    ``auto`` boxes the sites' median); refusals logged; none left is a ConfigError (exit 2)."""
    import logging

    from fleetwatch.config import ConfigError

    log = logging.getLogger("fleetwatch.regions")
    checked, region = sites_in_region(load, setting, source=path)
    for problem in checked.problems[len(load.problems) :]:
        log.warning("site file: %s", problem)
    if region is not None:
        log.info("sites region %s: %d of %d sites inside", region.describe(),
                 len(checked.sites), len(load.sites))  # fmt: skip
    if not checked.sites:
        raise ConfigError(
            f"FLEETWATCH_SITES_FILE={path}: no site inside FLEETWATCH_SITES_REGION="
            f"{setting!r} ({region.describe() if region else 'off'}); fix the file or the region"
        )
    return checked


def depot_points(scenario: object) -> list[tuple[float, float]]:
    """(lon, lat) of a scenario's depots.csv; [] when it has none."""
    from pathlib import Path

    from simulators.formats import load_depots

    path = Path(str(scenario)) / "depots.csv"
    if not path.is_file():
        return []
    return [(d.lon, d.lat) for d in load_depots(path)]

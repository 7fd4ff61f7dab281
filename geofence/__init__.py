"""Geofences: the day's sites, loaded and checked, and a vectorised index that matches whole
batches of fixes against them (docs/geofence.md)."""

from geofence.errors import (
    FenceIndexError,
    GeofenceError,
    MarginTooLargeError,
    SiteFileError,
    SiteFileFormatError,
    SiteFileUnreadableError,
    StaleIndexError,
)
from geofence.index import FenceIndex, FenceIndexHolder, FenceIndexStats, warm_up
from geofence.region import MOSCOW, Region
from geofence.sites import Site, SiteLoad, SiteProblem, load_sites_csv, load_sites_geojson

__all__ = [
    "MOSCOW",
    "FenceIndex",
    "FenceIndexError",
    "FenceIndexHolder",
    "FenceIndexStats",
    "GeofenceError",
    "MarginTooLargeError",
    "Region",
    "Site",
    "SiteFileError",
    "SiteFileFormatError",
    "SiteFileUnreadableError",
    "SiteLoad",
    "SiteProblem",
    "StaleIndexError",
    "load_sites_csv",
    "load_sites_geojson",
    "warm_up",
]

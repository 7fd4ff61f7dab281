"""Exceptions of the geofence package.

Problems with *one* site are not exceptions: the loaders return them as
:class:`geofence.sites.SiteProblem` records so that one bad site never blocks the others.
Exceptions are for what stops a whole operation: a file that cannot be read at all, a site list
handed to the index that breaks its contract (a bug of the caller), a query the index was not
built for.
"""

from __future__ import annotations


class GeofenceError(Exception):
    """Base class of everything this package raises on purpose."""


class SiteFileError(GeofenceError):
    """A site file as a whole cannot be used; no site was loaded from it."""


class SiteFileUnreadableError(SiteFileError):
    """The file cannot be opened, read or decoded (missing, permissions, not UTF-8)."""


class SiteFileFormatError(SiteFileError):
    """The file was read but is not what it must be: not JSON, not a GeoJSON
    FeatureCollection, or a CSV without its required header columns."""


class FenceIndexError(GeofenceError, ValueError):
    """The sites handed to :meth:`FenceIndex.build` break its contract (duplicate ids,
    unsupported geometry, non-positive radius): validate with the loaders first."""


class MarginTooLargeError(FenceIndexError):
    """A query asked for a margin larger than the one the index was built with: the grid
    would miss candidates.  Build with ``margin_m`` at least the largest margin you query."""


class StaleIndexError(GeofenceError):
    """:meth:`FenceIndexHolder.replace` was given an index not newer than the current one."""

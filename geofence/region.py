"""The configured service region: the box every site must lie in.

It exists to catch the commonest site-file mistake, [lat, lon] written where GeoJSON wants
[lon, lat]: near Moscow (lon ≈ 37.6, lat ≈ 55.7) both orders are valid coordinates on Earth, so
only a region tells them apart.  ``None`` where a region is accepted means "anywhere on Earth"
(then only the world ranges are checked).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """A lon/lat box (WGS84 degrees, west < east; boxes across the antimeridian are refused)."""

    name: str
    lon_min: float
    lat_min: float
    lon_max: float
    lat_max: float

    def __post_init__(self) -> None:
        if not (-180.0 <= self.lon_min < self.lon_max <= 180.0):
            raise ValueError(
                f"region {self.name!r}: need -180 <= lon_min < lon_max <= 180, "
                f"got {self.lon_min}..{self.lon_max}"
            )
        if not (-90.0 <= self.lat_min < self.lat_max <= 90.0):
            raise ValueError(
                f"region {self.name!r}: need -90 <= lat_min < lat_max <= 90, "
                f"got {self.lat_min}..{self.lat_max}"
            )

    def contains(self, lon: float, lat: float) -> bool:
        return self.lon_min <= lon <= self.lon_max and self.lat_min <= lat <= self.lat_max

    def describe(self) -> str:
        return (
            f"{self.name} (lon {self.lon_min:g}..{self.lon_max:g}, "
            f"lat {self.lat_min:g}..{self.lat_max:g})"
        )


#: The default service region of the configuration: Moscow and its ring roads.
MOSCOW = Region(name="moscow", lon_min=36.8, lat_min=55.1, lon_max=38.4, lat_max=56.1)

"""A uniform lon/lat grid that maps a point to the sites whose (padded) boxes cover its cell.

Why a dense grid and not a tree: the day's sites fill a city-sized box, so a few hundred
thousand cells of ~100 m cover it in a few MB, and locating a million points is a handful of
whole-array numpy operations (no per-point branching, no Python objects).  A point outside every
site's cell costs one float→int conversion and two integer loads: "almost nothing".

The grid is a padded CSR table: ``offsets[c] : offsets[c+1]`` slices ``items`` to the site
indices of cell ``c`` (ascending); ``counts`` repeats the lengths as int32 so that the pass over
all points is a single 4-byte gather.  One ring of empty cells surrounds the sites' extent, and
coordinates are clipped onto it, so points outside the extent (and NaN, mapped onto the ring)
need no separate mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geofence.projection import metres_per_degree

#: Upper bound of the number of cells; a larger extent gets coarser cells instead.
MAX_CELLS = 4_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Grid:
    lon_origin: float  # lon of the padded grid's west edge
    lat_origin: float
    inv_dlon: float  # cells per degree
    inv_dlat: float
    nx: int  # padded width  (cells of the extent + 2)
    ny: int
    cell_m: float
    offsets: npt.NDArray[np.intp]  # (nx * ny + 1,): items[offsets[c]:offsets[c+1]] of cell c
    counts: npt.NDArray[np.int32]  # (nx * ny,): sites per cell (one gather per point)
    items: npt.NDArray[np.intp]  # site indices, grouped by cell

    @classmethod
    def build(cls, bboxes: npt.NDArray[np.float64], *, cell_m: float) -> Grid:
        """Grid over ``bboxes`` (n, 4: lon_min, lat_min, lon_max, lat_max, already padded)."""
        n = len(bboxes)
        lon_min = float(bboxes[:, 0].min())
        lat_min = float(bboxes[:, 1].min())
        lon_max = float(bboxes[:, 2].max())
        lat_max = float(bboxes[:, 3].max())
        kx, ky = metres_per_degree(0.5 * (lat_min + lat_max))
        # at least one cell; coarser cells when the extent would need too many
        while True:
            dlon = cell_m / float(kx)
            dlat = cell_m / float(ky)
            nx_core = int(np.floor((lon_max - lon_min) / dlon)) + 1
            ny_core = int(np.floor((lat_max - lat_min) / dlat)) + 1
            if (nx_core + 2) * (ny_core + 2) <= MAX_CELLS:
                break
            cell_m *= 1.5
        nx, ny = nx_core + 2, ny_core + 2
        lon_origin, lat_origin = lon_min - dlon, lat_min - dlat
        inv_dlon, inv_dlat = 1.0 / dlon, 1.0 / dlat

        ix0 = np.floor((bboxes[:, 0] - lon_origin) * inv_dlon).astype(np.int64)
        ix1 = np.floor((bboxes[:, 2] - lon_origin) * inv_dlon).astype(np.int64)
        iy0 = np.floor((bboxes[:, 1] - lat_origin) * inv_dlat).astype(np.int64)
        iy1 = np.floor((bboxes[:, 3] - lat_origin) * inv_dlat).astype(np.int64)
        np.clip(ix0, 1, nx - 2, out=ix0)
        np.clip(ix1, 1, nx - 2, out=ix1)
        np.clip(iy0, 1, ny - 2, out=iy0)
        np.clip(iy1, 1, ny - 2, out=iy1)
        wx = ix1 - ix0 + 1
        wy = iy1 - iy0 + 1
        per_site = wx * wy
        total = int(per_site.sum())
        site = np.repeat(np.arange(n, dtype=np.int64), per_site)
        first = np.cumsum(per_site) - per_site
        k = np.arange(total, dtype=np.int64) - np.repeat(first, per_site)  # 0..per_site-1
        w = np.repeat(wx, per_site)
        cell = (np.repeat(iy0, per_site) + k // w) * nx + np.repeat(ix0, per_site) + k % w
        order = np.lexsort((site, cell))
        counts = np.bincount(cell, minlength=nx * ny)
        offsets = np.zeros(nx * ny + 1, dtype=np.intp)
        np.cumsum(counts, out=offsets[1:])
        counts32 = counts.astype(np.int32)
        items = site[order].astype(np.intp)
        for arr in (offsets, counts32, items):
            arr.setflags(write=False)
        return cls(
            lon_origin=lon_origin,
            lat_origin=lat_origin,
            inv_dlon=inv_dlon,
            inv_dlat=inv_dlat,
            nx=nx,
            ny=ny,
            cell_m=cell_m,
            offsets=offsets,
            counts=counts32,
            items=items,
        )

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.counts.nbytes + self.items.nbytes)

    def cells(
        self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.intp]:
        """Padded cell of each point; outside the extent (or NaN) -> a cell of the empty ring."""
        fx = lon - self.lon_origin
        fx *= self.inv_dlon
        fy = lat - self.lat_origin
        fy *= self.inv_dlat
        # fmax/fmin return the non-NaN operand: NaN lands on cell 0 of the empty ring
        np.fmax(fx, 0.0, out=fx)
        np.fmin(fx, self.nx - 1, out=fx)
        np.fmax(fy, 0.0, out=fy)
        np.fmin(fy, self.ny - 1, out=fy)
        ix = fx.astype(np.intp)
        iy = fy.astype(np.intp)
        iy *= self.nx
        iy += ix
        return iy

    def candidates(
        self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(point index, site index) of every site whose cell list holds the point's cell,
        ordered by point, then site."""
        cell = self.cells(lon, lat)
        count = self.counts[cell]
        # ndarray methods, not np.* functions: this runs per 1,000-point batch and the
        # functions' Python wrappers cost more than the work
        pts = count.nonzero()[0]
        if len(pts) == 0:
            empty = np.empty(0, dtype=np.intp)
            return empty, empty
        cnt = count[pts]
        ends = cnt.cumsum()
        # position in items of pair j = offsets[cell of its point] + (j - first pair of point)
        shift = self.offsets[cell[pts]] - (ends - cnt)
        pos = shift.repeat(cnt)
        pos += np.arange(int(ends[-1]), dtype=np.intp)
        return pts.repeat(cnt), self.items[pos]

"""The sites region of run and replay: a swapped [lat, lon] site is refused and named, by an
explicit box or by `auto` (depots, or the sites' own median), and `off` turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwatch.config import ConfigError
from fleetwatch.regions import region_for, sites_for_run, sites_in_region, within_region
from geofence import load_sites_geojson
from geofence.region import Region
from tests.test_geofence_sites import collection, point_feature

MOSCOW_SITES = [point_feature(i, lon=37.5 + 0.01 * i, lat=55.7 + 0.005 * i) for i in range(8)]
SWAPPED = point_feature(99, lon=55.74, lat=37.61)  # [lat, lon] written as [lon, lat]


def load(*features: object):  # type: ignore[no-untyped-def]
    return load_sites_geojson(collection(*features))


def test_auto_without_depots_refuses_the_swapped_site_and_says_so() -> None:
    checked, region = sites_in_region(load(*MOSCOW_SITES, SWAPPED), "auto", source="sites")
    assert region is not None
    assert [s.site_id for s in checked.sites] == [f"S{i:04d}" for i in range(8)]
    (problem,) = checked.fatal
    assert problem.site_id == "S0099"
    assert "looks swapped" in problem.message


def test_auto_with_depots_boxes_the_depots() -> None:
    region = region_for("auto", anchors=[(37.6, 55.7), (37.7, 55.8)], fallback=[(0.0, 0.0)])
    assert region is not None
    assert region.contains(37.6, 55.7)
    assert not region.contains(55.7, 37.6)


def test_explicit_and_off() -> None:
    box = region_for("37,55,38,56")
    assert box == Region(name="sites_region", lon_min=37, lat_min=55, lon_max=38, lat_max=56)
    assert region_for("off", fallback=[(1.0, 2.0)]) is None
    checked, _ = sites_in_region(load(*MOSCOW_SITES, SWAPPED), "off", source="sites")
    assert len(checked.sites) == 9


@given(st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=20))
def test_every_site_is_either_kept_or_refused_once(offsets: list[tuple[float, float]]) -> None:
    feats = [
        point_feature(i, lon=37.6 + dx, lat=55.7 + dy / 2) for i, (dx, dy) in enumerate(offsets)
    ]
    loaded = load(*feats)
    checked = within_region(loaded, region_for("36.6,55.2,38.6,56.2"), source="s")
    assert len(checked.sites) + len(checked.fatal) == len(loaded.sites) + len(loaded.fatal)


def test_run_refuses_a_file_with_no_site_in_the_region() -> None:
    with pytest.raises(ConfigError, match="FLEETWATCH_SITES_REGION"):
        sites_for_run(load(*MOSCOW_SITES), "10,10,11,11", path="sites.geojson")


def test_replay_takes_the_region_option(tmp_path: Path) -> None:
    from fleetwatch.cli import build_parser

    args = build_parser(["replay"]).parse_args(["replay", str(tmp_path), "--out", "o",
                                                "--region", "off"])  # fmt: skip
    assert args.region == "off"

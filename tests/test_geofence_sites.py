"""Site loaders: each kind of bad input is reported against its feature/row, and never blocks
the other sites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon

from geofence import (
    MOSCOW,
    Site,
    SiteFileFormatError,
    SiteFileUnreadableError,
    SiteLoad,
    load_sites_csv,
    load_sites_geojson,
)

SCHEDULE = {"weekdays": [1, 2, 3, 4, 5], "window_start": "09:00", "window_end": "12:30",
            "tz": "Europe/Moscow"}  # fmt: skip
SQUARE = [[37.60, 55.75], [37.601, 55.75], [37.601, 55.7506], [37.60, 55.7506], [37.60, 55.75]]


def point_feature(i: int, lon: float = 37.62, lat: float = 55.75, **props: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "site_id": f"S{i:04d}",
        "client_id": "C0001",
        "name": f"Site {i}",
        "radius_m": 40,
        "schedule": SCHEDULE,
        "service_min": 10,
    }
    p.update(props)
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": p}  # fmt: skip


def polygon_feature(i: int, rings: Any, gtype: str = "Polygon", **props: Any) -> dict[str, Any]:
    f = point_feature(i, **props)
    f["geometry"] = {"type": gtype, "coordinates": rings}
    del f["properties"]["radius_m"]
    return f


def collection(*features: Any) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def load_with_one_bad(bad: dict[str, Any], **kw: Any) -> SiteLoad:
    """Two good sites around one bad feature (index 1)."""
    return load_sites_geojson(
        collection(point_feature(0), bad, point_feature(2, lon=37.63)), region=MOSCOW, **kw
    )


def only_problem(load: SiteLoad) -> str:
    assert len(load.problems) == 1, load.problems
    return str(load.problems[0])


def test_good_file_loads_every_kind_of_fence(tmp_path: Path) -> None:
    mp = [[SQUARE], [[[37.61, 55.76], [37.611, 55.76], [37.611, 55.7606], [37.61, 55.76]]]]
    path = tmp_path / "sites.geojson"
    path.write_text(
        collection(
            point_feature(0, extra="kept"),
            polygon_feature(1, [SQUARE]),
            polygon_feature(2, mp, gtype="MultiPolygon"),
        )
    )
    load = load_sites_geojson(path, region=MOSCOW)
    assert load.problems == []
    a, b, c = load.sites
    assert isinstance(a.geometry, Point)
    assert a.radius_m == 40.0
    assert a.is_circle
    assert a.attributes == {"extra": "kept"}
    assert a.schedule is not None
    assert a.schedule["weekdays"] == (1, 2, 3, 4, 5)
    assert a.service_min == 10
    assert a.client_id == "C0001"
    assert a.name == "Site 0"
    assert isinstance(b.geometry, Polygon)
    assert b.radius_m is None
    assert not b.is_circle
    assert isinstance(c.geometry, MultiPolygon)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            {"type": "Feature", "properties": {"site_id": "S0001", "client_id": "C1"},
             "geometry": {"type": "LineString", "coordinates": [[37.6, 55.7], [37.7, 55.8]]}},
            "unsupported geometry type 'LineString'",
        ),
        (point_feature(1, lon=55.75, lat=37.62), "looks swapped"),
        (point_feature(1, lon=37.62, lat=95.0), "out of range"),
        (point_feature(1, lon=250.0, lat=55.7), "out of range"),
        (point_feature(1, lon=30.3, lat=59.9), "outside the configured region moscow"),
        (point_feature(1, radius_m=0), "radius_m must be > 0"),
        (point_feature(1, radius_m=-5), "radius_m must be > 0"),
        (point_feature(1, radius_m=5000), "radius_m 5000 is absurd"),
        (point_feature(1, radius_m="40"), "radius_m must be a number"),
        (point_feature(1, radius_m=None), "without properties.radius_m"),
        (point_feature(1, site_id=None), "missing site_id"),
        (point_feature(1, site_id=""), "missing site_id"),
        (point_feature(1, client_id=None), "missing client_id"),
        (point_feature(0), "duplicate site_id 'S0000' (first at <text>:feature 0)"),
        (polygon_feature(1, [[[37.6, 55.75], [37.601, 55.75], [37.6, 55.75]]]),
         "at least 3 distinct positions"),
        (polygon_feature(1, [[[37.6, 55.75], [37.601, 55.75], [37.601, 55.75], [37.6, 55.75]]]),
         "at least 3 distinct positions"),
        (polygon_feature(1, [[[37.6, 55.75], ["x", 55.75], [37.601, 55.751], [37.6, 55.75]]]),
         "position 1 lon must be a number"),
        (polygon_feature(1, [[[37.6, 55.75], [37.601, 55.75], [37.6, 55.75], [37.601, 55.75],
                              [37.6, 55.75]]]), "at least 3 distinct positions"),
        ({"type": "Feature", "properties": {"site_id": "S0001"}, "geometry": None},
         "geometry missing"),
        ("not a feature", "not a GeoJSON Feature"),
    ],
)  # fmt: skip
def test_bad_feature_is_named_and_skipped_and_others_load(bad: Any, expected: str) -> None:
    load = load_with_one_bad(bad)
    msg = only_problem(load)
    assert load.problems[0].fatal
    assert load.problems[0].source == "<text>:feature 1"
    assert expected in msg, msg
    assert len(load.sites) == 2


def test_self_intersecting_polygon_is_repaired_and_reported() -> None:
    bowtie = [[[37.60, 55.75], [37.601, 55.7506], [37.601, 55.75], [37.60, 55.7506],
               [37.60, 55.75]]]  # fmt: skip
    load = load_with_one_bad(polygon_feature(1, bowtie))
    msg = only_problem(load)
    assert not load.problems[0].fatal
    assert "feature 1" in msg
    assert "Self-intersection" in msg
    assert "make_valid" in msg
    assert len(load.sites) == 3
    repaired = load.sites[1].geometry
    assert shapely.is_valid(repaired)
    assert repaired.area > 0


def test_unclosed_ring_is_closed_and_reported() -> None:
    load = load_with_one_bad(polygon_feature(1, [SQUARE[:-1]]))
    assert "not closed" in only_problem(load)
    assert not load.problems[0].fatal
    assert len(load.sites) == 3


def test_huge_polygon_is_rejected() -> None:
    big = [[[37.0, 55.5], [37.5, 55.5], [37.5, 55.9], [37.0, 55.5]]]
    load = load_with_one_bad(polygon_feature(1, big))
    assert "more than the limit" in only_problem(load)


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"schedule": {"weekdays": [0, 8]}}, "weekdays"),
        ({"schedule": {**SCHEDULE, "tz": "Mars/Olympus"}}, "unknown time zone"),
        ({"schedule": {**SCHEDULE, "window_start": "9am"}}, "window_start must be 'HH:MM'"),
        ({"schedule": {**SCHEDULE, "window_start": "13:00"}}, "is not before window_end"),
        ({"service_min": -3}, "service_min -3 ignored"),
        ({"name": None}, "name missing"),
        ({"site_id": 17}, "site_id 17 is a number"),
    ],
)
def test_repairable_property_problems_keep_the_site(props: dict[str, Any], expected: str) -> None:
    load = load_with_one_bad(point_feature(1, **props))
    msg = only_problem(load)
    assert not load.problems[0].fatal
    assert expected in msg
    assert "feature 1" in msg
    assert len(load.sites) == 3


def test_region_none_accepts_anywhere_but_checks_world_ranges() -> None:
    text = collection(point_feature(0, lon=151.2, lat=-33.87), point_feature(1, lon=0, lat=91))
    load = load_sites_geojson(text)
    assert [s.site_id for s in load.sites] == ["S0000"]
    assert "out of range" in only_problem(load)


def test_one_bad_site_never_blocks_1499_others() -> None:
    feats = [point_feature(i, lon=37.3 + (i % 50) * 0.01, lat=55.5 + (i // 50) * 0.01)
             for i in range(1500)]  # fmt: skip
    feats[700]["properties"]["radius_m"] = -1
    load = load_sites_geojson(collection(*feats), region=MOSCOW)
    assert len(load.sites) == 1499
    assert [p.source for p in load.fatal] == ["<text>:feature 700"]


@pytest.mark.parametrize(
    ("text", "error", "expected"),
    [
        ("{not json", SiteFileFormatError, "not valid JSON"),
        ('{"type": "Feature"}', SiteFileFormatError, "not a GeoJSON FeatureCollection"),
        ('{"type": "FeatureCollection", "features": 3}', SiteFileFormatError, "must be a list"),
    ],
)
def test_file_level_failures_raise(text: str, error: type[Exception], expected: str) -> None:
    with pytest.raises(error, match=expected):
        load_sites_geojson(text)


def test_unreadable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(SiteFileUnreadableError, match="cannot read site file"):
        load_sites_geojson(tmp_path / "missing.geojson")
    bad = tmp_path / "latin1.geojson"
    bad.write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(SiteFileUnreadableError):
        load_sites_geojson(bad)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sites.geojson"
    path.write_text(collection(point_feature(0)))
    with pytest.raises(SiteFileFormatError, match="more than the limit"):
        load_sites_geojson(path, max_file_bytes=10)


# ---------------------------------------------------------------------------------------------
# CSV

CSV_HEADER = "site_id,client_id,name,lat,lon,radius_m,service_min,zone\n"


def write_csv(tmp_path: Path, rows: list[str], header: str = CSV_HEADER) -> Path:
    path = tmp_path / "sites.csv"
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def test_csv_loads_circles_with_extra_columns_as_attributes(tmp_path: Path) -> None:
    load = load_sites_csv(write_csv(tmp_path, ["S1,C1,BC Sokol,55.80,37.51,45,10,north"]),
                          region=MOSCOW)  # fmt: skip
    assert load.problems == []
    (s,) = load.sites
    assert s.geometry.equals(Point(37.51, 55.80))
    assert s.radius_m == 45.0
    assert s.service_min == 10
    assert s.attributes == {"zone": "north"}
    assert s.name == "BC Sokol"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("S2,C1,x,37.51,55.80,45,10,n", "looks swapped"),
        ("S2,C1,x,abc,37.5,45,10,n", "lat 'abc' is not a number"),
        ("S2,C1,x,,37.5,45,10,n", "lat is empty"),
        ("S2,C1,x,55.8,37.5,0,10,n", "radius_m must be > 0"),
        ("S2,C1,x,55.8,37.5,9000,10,n", "absurd"),
        ("S2,C1,x,55.8,37.5,nan,10,n", "must be finite"),
        (",C1,x,55.8,37.5,40,10,n", "missing site_id"),
        ("S2,,x,55.8,37.5,40,10,n", "missing client_id"),
        ("S1,C1,x,55.8,37.5,40,10,n", "duplicate site_id 'S1' (first at sites.csv:row 2)"),
    ],
)
def test_csv_bad_row_is_named_and_skipped(tmp_path: Path, row: str, expected: str) -> None:
    rows = ["S1,C1,a,55.80,37.51,45,10,n", row, "S3,C1,c,55.81,37.52,45,10,n"]
    load = load_sites_csv(write_csv(tmp_path, rows), region=MOSCOW)
    msg = only_problem(load)
    assert load.problems[0].source == "sites.csv:row 3"
    assert load.problems[0].fatal
    assert expected in msg, msg
    assert [s.site_id for s in load.sites] == ["S1", "S3"]


def test_csv_without_required_columns_raises(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["S1,55.8,37.5"], header="site_id,lat,lon\n")
    with pytest.raises(SiteFileFormatError, match="client_id, radius_m"):
        load_sites_csv(path)


def test_site_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="radius_m"):
        Site(site_id="S1", client_id="C1", name="n", geometry=Point(37.6, 55.7), radius_m=0.0)
    with pytest.raises(ValueError, match="only for Point"):
        Site(site_id="S1", client_id="C1", name="n", geometry=Polygon(SQUARE), radius_m=5.0)
    with pytest.raises(ValueError, match="non-empty site_id"):
        Site(site_id="", client_id="C1", name="n", geometry=Point(37.6, 55.7), radius_m=5.0)


def test_sites_are_hashable_values() -> None:
    load = load_sites_geojson(collection(point_feature(0), point_feature(1)), region=MOSCOW)
    again = load_sites_geojson(collection(point_feature(0)), region=MOSCOW)
    assert load.sites[0] == again.sites[0]
    assert {load.sites[0], load.sites[1], again.sites[0]} == {load.sites[0], load.sites[1]}


# ---------------------------------------------------------------------------------------------
# fuzz: any feature is either a site or exactly one fatal problem, never an exception

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
KEYS = ["type", "geometry", "properties", "coordinates", "site_id", "client_id", "radius_m",
        "schedule", "service_min", "name", "weekdays", "tz"]  # fmt: skip


def _mutate(obj: Any, path: list[str], value: Any) -> Any:
    if not path or not isinstance(obj, dict):
        return value
    out = dict(obj)
    out[path[0]] = _mutate(obj.get(path[0]), path[1:], value)
    return out


@st.composite
def features(draw: st.DrawFn) -> Any:
    base = draw(st.sampled_from([point_feature(1), polygon_feature(1, [SQUARE])]))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))
        base = _mutate(base, path, draw(JSON))
    return base if draw(st.integers(0, 9)) else draw(JSON)


@given(feats=st.lists(features(), max_size=6))
def test_any_feature_loads_or_is_one_fatal_problem(feats: list[Any]) -> None:
    load = load_sites_geojson(collection(*feats), region=MOSCOW)
    fatal_sources = [p.source for p in load.fatal]
    assert len(set(fatal_sources)) == len(fatal_sources)
    assert len(load.sites) + len(fatal_sources) == len(feats)
    for p in load.problems:
        assert p.source.startswith("<text>:feature ")
        assert p.message

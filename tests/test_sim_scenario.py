"""The scenario generator: determinism, and ground truth that the NMEA it wrote agrees with.

The NMEA is read back with a deliberately small parser of our own (checksum-verified RMC only),
so these tests do not depend on the ingest decoder they are meant to judge.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.nmea_encode import checksum
from simulators.city import Projection
from simulators.formats import (
    iter_payloads,
    load_depots,
    load_plans,
    load_sites_geojson,
    load_truth,
    load_units,
    parse_iso_us,
    unit_files,
)
from simulators.scenario import ScenarioParams, write_scenario

BUSY = ScenarioParams(
    seed=7,
    sites=60,
    vehicles=4,
    skip_rate=0.1,
    late_rate=1.0,
    jam_rate=0.15,
    lunch_rate=1.0,
    driveby_rate=0.2,
    multipath_rate=0.01,
    dropout_rate=1.5,
    bad_rate=0.002,
    clock_off_units=1,
    silent_units=1,
    slow_unit_fraction=0.25,
)


@dataclasses.dataclass
class RmcFix:
    t: float  # fix time as the unit's clock says (s)
    recv: float
    x: float
    y: float
    speed_kmh: float


def _rmc_fixes(path: Path, proj: Projection) -> list[RmcFix]:
    out = []
    for recv_us, payload in iter_payloads(path):
        for line in payload.split(b"\r\n"):
            if not (line.startswith(b"$") and line[3:6] == b"RMC" and b"*" in line):
                continue
            body, _, cs = line[1:].rpartition(b"*")
            if len(cs) != 2 or f"{checksum(body):02X}".encode() != cs:
                continue
            f = body.decode("ascii").split(",")
            hh, mm, ss = int(f[1][0:2]), int(f[1][2:4]), float(f[1][4:])
            d, mo, y = int(f[9][0:2]), int(f[9][2:4]), 2000 + int(f[9][4:6])
            t = dt.datetime(y, mo, d, hh, mm, tzinfo=dt.UTC).timestamp() + ss
            lat = int(f[3][:2]) + float(f[3][2:]) / 60
            lon = int(f[5][:3]) + float(f[5][3:]) / 60
            x, y_ = proj.to_xy(np.array([lon]), np.array([lat]))
            out.append(RmcFix(t, recv_us / 1e6, float(x[0]), float(y_[0]), float(f[7]) * 1.852))
    return out


@dataclasses.dataclass
class Loaded:
    dir: Path
    truth: dict[str, Any]
    proj: Projection
    fences: dict[str, tuple[float, float, float, Any]]  # site -> x, y, radius/outer, polygon
    fixes: dict[str, list[RmcFix]]


def _load(out: Path, params: ScenarioParams) -> Loaded:
    import shapely

    truth = load_truth(out / "truth.json")
    proj = Projection(lat0=params.lat0, lon0=params.lon0)
    fences = {}
    for f in load_sites_geojson(out / "sites.geojson"):
        g = f["geometry"]
        sid = f["properties"]["site_id"]
        if g["type"] == "Point":
            x, y = proj.to_xy(np.array([g["coordinates"][0]]), np.array([g["coordinates"][1]]))
            fences[sid] = (float(x[0]), float(y[0]), float(f["properties"]["radius_m"]), None)
        else:
            ring = np.array(g["coordinates"][0])
            px, py = proj.to_xy(ring[:, 0], ring[:, 1])
            poly = shapely.Polygon(np.c_[px, py])
            c = poly.centroid
            outer = float(np.hypot(px - c.x, py - c.y).max())
            fences[sid] = (c.x, c.y, outer, poly)
    offsets = {c["unit_id"]: c["offset_s"] for c in truth["clock_offsets"]}
    fixes = {}
    for unit, path in unit_files(out).items():
        fx = _rmc_fixes(path, proj)
        for f in fx:
            f.t -= offsets.get(unit, 0)  # back to the true clock
        fx.sort(key=lambda f: f.t)
        fixes[unit] = fx
    return Loaded(out, truth, proj, fences, fixes)


def _inside(fence: tuple[float, float, float, Any], x: np.ndarray, y: np.ndarray, margin: float):
    import shapely

    fx, fy, r, poly = fence
    if poly is None:
        return np.hypot(x - fx, y - fy) <= r + margin
    return shapely.contains_xy(poly.buffer(margin), x, y)


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    out = tmp_path_factory.mktemp("busy")
    write_scenario(BUSY, out)
    return _load(out, BUSY)


def _iso(t: str) -> float:
    return parse_iso_us(t) / 1e6


def test_same_seed_gives_byte_identical_files(tmp_path: Path, busy: Loaded) -> None:
    write_scenario(BUSY, tmp_path / "again")
    a = sorted(p.relative_to(busy.dir) for p in busy.dir.rglob("*") if p.is_file())
    b = sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file()
    )
    assert a == b
    for rel in a:
        assert (busy.dir / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_another_seed_gives_another_city(tmp_path: Path, busy: Loaded) -> None:
    write_scenario(dataclasses.replace(BUSY, seed=8), tmp_path)
    assert (tmp_path / "sites.geojson").read_bytes() != (busy.dir / "sites.geojson").read_bytes()


def test_every_injected_kind_happened(busy: Loaded) -> None:
    t = busy.truth
    for key in ("skipped", "late", "unscheduled_stops", "drive_bys", "dropouts", "traffic_delays"):
        assert t[key], f"no {key} in a scenario that asked for them"
    assert {s["kind"] for s in t["unscheduled_stops"]} == {"lunch", "traffic"}
    assert len(t["clock_offsets"]) == 1
    assert len(t["silent_units"]) == 1
    assert t["multipath_outliers"] > 0
    assert all(v > 0 for v in t["bad_sentences"].values())


def test_each_visit_has_fixes_inside_the_fence_for_its_dwell(busy: Loaded) -> None:
    silent = {s["unit_id"]: _iso(s["from"]) for s in busy.truth["silent_units"]}
    rates = {u["unit_id"]: u["rate_hz"] for u in busy.truth["units"]}
    checked = 0
    for v in busy.truth["visits"]:
        a, d = _iso(v["arrival"]), _iso(v["departure"])
        if d >= silent.get(v["unit_id"], math.inf):
            assert not v["observed"] or a < silent[v["unit_id"]]
            continue
        assert v["observed"]
        assert d - a >= 4 * 60, "a service lasts minutes"
        fx = [f for f in busy.fixes[v["unit_id"]] if a <= f.t <= d]
        expected = (d - a) * rates[v["unit_id"]]
        assert len(fx) >= 0.95 * expected  # bad sentences cost a few
        x = np.array([f.x for f in fx])
        y = np.array([f.y for f in fx])
        inside = _inside(busy.fences[v["site_id"]], x, y, margin=50.0)  # σ ≤ 15 m
        assert inside.mean() >= 0.95, (v, inside.mean())
        checked += 1
    assert checked >= 20


def test_skipped_stops_see_no_parked_truck(busy: Loaded) -> None:
    unit_of = {u["vehicle_id"]: u["unit_id"] for u in busy.truth["units"]}
    for s in busy.truth["skipped"]:
        fx = busy.fixes[unit_of[s["vehicle_id"]]]
        x = np.array([f.x for f in fx])
        y = np.array([f.y for f in fx])
        t = np.array([f.t for f in fx])
        inside = _inside(busy.fences[s["site_id"]], x, y, margin=0.0)
        # the truck may drive past; it never stands there: no 2 minutes of fixes inside
        runs = np.split(t[inside], np.flatnonzero(np.diff(t[inside]) > 30) + 1)
        assert all(len(r) == 0 or r[-1] - r[0] < 120 for r in runs), s


def test_drive_bys_cross_the_fence_at_speed(busy: Loaded) -> None:
    unit_of = {u["vehicle_id"]: u["unit_id"] for u in busy.truth["units"]}
    for db in busy.truth["drive_bys"]:
        t0 = _iso(db["t"])
        fx = [f for f in busy.fixes[unit_of[db["vehicle_id"]]] if abs(f.t - t0) <= 60]
        if not fx:  # fell in a silence
            continue
        x = np.array([f.x for f in fx])
        y = np.array([f.y for f in fx])
        d = np.hypot(x - busy.fences[db["site_id"]][0], y - busy.fences[db["site_id"]][1])
        assert d.min() < 60.0, "the pass goes through the fence"
        inside = _inside(busy.fences[db["site_id"]], x, y, margin=0.0)
        assert all(f.speed_kmh > 10 for f, i in zip(fx, inside, strict=True) if i)


def test_unscheduled_stops_are_away_from_every_fence(busy: Loaded) -> None:
    for s in busy.truth["unscheduled_stops"]:
        x, y = busy.proj.to_xy(np.array([s["lon"]]), np.array([s["lat"]]))
        for fence in busy.fences.values():
            assert not _inside(fence, x, y, margin=30.0)[0], s
        assert _iso(s["end"]) - _iso(s["start"]) >= 180


def test_late_list_is_exactly_the_visits_after_their_window(busy: Loaded) -> None:
    plans = {(p.vehicle_id, p.seq): p for p in load_plans(busy.dir / "plans.csv")}
    late = {
        (v["vehicle_id"], v["seq"]): round(
            _iso(v["arrival"]) - plans[v["vehicle_id"], v["seq"]].window_end_us / 1e6
        )
        for v in busy.truth["visits"]
        if _iso(v["arrival"]) * 1e6 > plans[v["vehicle_id"], v["seq"]].window_end_us
    }
    assert {(x["vehicle_id"], x["seq"]): x["late_by_s"] for x in busy.truth["late"]} == late
    visited = {(v["vehicle_id"], v["seq"]) for v in busy.truth["visits"]}
    skipped = {(s["vehicle_id"], s["seq"]) for s in busy.truth["skipped"]}
    assert not visited & skipped
    assert visited | skipped == set(plans)


def test_bad_sentence_counts_match_the_files(busy: Loaded) -> None:
    counts = {"checksum": 0, "truncated": 0, "garbage": 0}
    for path in unit_files(busy.dir).values():
        for _, payload in iter_payloads(path):
            for line in payload.split(b"\r\n")[:-1]:
                if not line.startswith(b"$"):
                    counts["garbage"] += 1
                elif b"*" not in line:
                    counts["truncated"] += 1
                else:
                    body, _, cs = line[1:].rpartition(b"*")
                    counts["checksum"] += f"{checksum(body):02X}".encode() != cs
    assert counts == busy.truth["bad_sentences"]


def test_dropout_backlog_arrives_later_in_bursts(busy: Loaded) -> None:
    for d in busy.truth["dropouts"]:
        start, end, rel = _iso(d["start"]), _iso(d["end"]), _iso(d["released_at"])
        held = [f for f in busy.fixes[d["unit_id"]] if start <= f.t < end]
        silent = [s for s in busy.truth["silent_units"] if s["unit_id"] == d["unit_id"]]
        if silent and rel >= _iso(silent[0]["from"]):
            assert not held
            continue
        assert held
        assert all(f.recv >= rel for f in held)
        per_payload: dict[float, int] = defaultdict(int)
        for f in held:
            per_payload[f.recv] += 1
        assert max(per_payload.values()) >= 5, "bursts hold several epochs"


def test_off_clock_and_silent_units(busy: Loaded) -> None:
    (c,) = busy.truth["clock_offsets"]
    fx = busy.fixes[c["unit_id"]]
    # f.t was corrected back by the offset: recv − true time is the usual sub-second latency
    lag = np.median([f.recv - f.t for f in fx])
    assert 0.0 < lag < 1.5
    (s,) = busy.truth["silent_units"]
    last = max(recv for recv, _ in iter_payloads(busy.dir / "nmea" / f"{s['unit_id']}.nmea"))
    assert last / 1e6 < _iso(s["from"])


def test_sites_file_has_circles_polygons_and_overlapping_pairs(busy: Loaded) -> None:
    feats = load_sites_geojson(busy.dir / "sites.geojson")
    assert len(feats) == BUSY.sites
    kinds = {f["geometry"]["type"] for f in feats}
    assert kinds == {"Point", "Polygon"}
    for f in feats:
        p = f["properties"]
        assert set(p["schedule"]) == {"weekdays", "window_start", "window_end", "tz"}
        assert p["schedule"]["window_start"] < p["schedule"]["window_end"]
        assert 5 <= p["service_min"] <= 15
        if f["geometry"]["type"] == "Point":
            assert 25 <= p["radius_m"] <= 80
    circles = [v for v in busy.fences.values() if v[3] is None]
    overlapping = sum(
        1
        for i, a in enumerate(circles)
        for b in circles[i + 1 :]
        if math.hypot(a[0] - b[0], a[1] - b[1]) < a[2] + b[2]
    )
    assert overlapping >= 1


def test_files_round_trip_through_the_readers(busy: Loaded) -> None:
    units = load_units(busy.dir / "units.csv")
    depots = load_depots(busy.dir / "depots.csv")
    plans = load_plans(busy.dir / "plans.csv")
    assert {u.vehicle_id for u in units} == {d.vehicle_id for d in depots}
    assert {p.vehicle_id for p in plans} <= {u.vehicle_id for u in units}
    assert {p.site_id for p in plans} <= set(busy.fences)
    assert set(unit_files(busy.dir)) == {u.unit_id for u in units}
    for path in unit_files(busy.dir).values():
        rebuilt = b"".join(
            b"#recv "
            + dt.datetime.fromtimestamp(r / 1e6, dt.UTC)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            .encode()
            + b"Z\n"
            + payload
            for r, payload in iter_payloads(path)
        )
        assert rebuilt == path.read_bytes()
    assert json.loads((busy.dir / "truth.json").read_text())["scenario"]["seed"] == BUSY.seed

"""Properties of the generator over its parameters, and of the batch NMEA writer.

Scenarios are kept small (≤ 60 sites, ≤ 3 vehicles) and few, so the module runs in seconds.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import Fix
from ingest.nmea_encode import checksum, encode_gga, encode_rmc
from simulators.formats import iter_payloads, load_plans, load_truth, parse_iso_us, unit_files
from simulators.nmea_writer import FixColumns, format_rmc_gga
from simulators.scenario import ScenarioParams, write_scenario

fix_rows = st.lists(
    st.tuples(
        st.integers(0, 4_102_444_800_000_000),  # up to 2100
        st.floats(-89.999, 89.999),
        st.floats(-179.999, 179.999),
        st.floats(0, 250),
        st.floats(0, 359.99),
        st.integers(0, 30),
        st.floats(0.5, 50),
        st.floats(-400, 9000),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(rows=fix_rows, talker=st.sampled_from(["GP", "GN", "GL"]), decimals=st.integers(4, 6))
def test_batch_writer_equals_the_reference_encoder(
    rows: list[tuple[int, float, float, float, float, int, float, float]],
    talker: str,
    decimals: int,
) -> None:
    cols = FixColumns(
        t_us=np.array([r[0] for r in rows], dtype=np.int64),
        lat=np.array([r[1] for r in rows]),
        lon=np.array([r[2] for r in rows]),
        speed_kmh=np.array([r[3] for r in rows]),
        course=np.array([r[4] for r in rows]),
        quality=np.ones(len(rows), dtype=np.int64),
        sats=np.array([r[5] for r in rows], dtype=np.int64),
        hdop=np.array([r[6] for r in rows]),
        alt_m=np.array([r[7] for r in rows]),
    )
    rmc, gga = format_rmc_gga(cols, talker=talker, decimals=decimals)
    for i, r in enumerate(rows):
        fix = Fix(
            unit_id="u",
            t_us=r[0],
            recv_us=r[0],
            lat=r[1],
            lon=r[2],
            speed_kmh=r[3],
            course=r[4],
            quality=1,
            sats=r[5],
            hdop=r[6],
            alt_m=r[7],
            talker=talker,
        )
        assert rmc[i].encode() == encode_rmc(fix, decimals=decimals)
        assert gga[i].encode() == encode_gga(fix, decimals=decimals)


def test_batch_writer_carries_rounded_minutes_into_degrees() -> None:
    lat = 55 + 59.9999999 / 60  # minutes round to 60.00000
    cols = FixColumns(
        t_us=np.array([0]),
        lat=np.array([lat]),
        lon=np.array([-lat]),
        speed_kmh=np.array([0.0]),
        course=np.array([0.0]),
        quality=np.array([1]),
        sats=np.array([8]),
        hdop=np.array([1.0]),
        alt_m=np.array([0.0]),
    )
    rmc, _ = format_rmc_gga(cols)
    assert ",5600.00000,N,05600.00000,W," in rmc[0]


@st.composite
def small_params(draw: st.DrawFn) -> ScenarioParams:
    """Small days a few trucks can serve (≤ 20 sites per vehicle, so routes end by evening)."""
    vehicles = draw(st.integers(1, 3))
    return ScenarioParams(
        seed=draw(st.integers(0, 10_000)),
        sites=draw(st.integers(10, 20 * vehicles)),
        vehicles=vehicles,
        size_km=draw(st.sampled_from([5.0, 12.0, 40.0])),
        rate_hz=draw(st.sampled_from([1.0, 0.5])),
        slow_unit_fraction=draw(st.sampled_from([0.0, 0.5])),
        noise_min_m=3.0,
        noise_max_m=draw(st.sampled_from([3.0, 15.0])),
        polygon_fraction=draw(st.sampled_from([0.0, 0.35, 1.0])),
        start_local=draw(st.sampled_from(["06:00", "07:00", "09:30"])),
        clock_off_units=0,
        silent_units=0,
    )


def _iso(t: str) -> float:
    return parse_iso_us(t) / 1e6


@settings(max_examples=6, deadline=None)
@given(params=small_params())
def test_an_undisturbed_day_keeps_every_window(params: ScenarioParams) -> None:
    quiet = params.quiet()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        write_scenario(quiet, out)
        truth = load_truth(out / "truth.json")
        plans = load_plans(out / "plans.csv")
    for p in plans:  # the plan itself keeps its windows
        assert p.window_start_us <= p.planned_arrival_us
        assert p.planned_arrival_us + p.service_min * 60_000_000 <= p.window_end_us
    for key in ("skipped", "late", "unscheduled_stops", "drive_bys", "dropouts"):
        assert truth[key] == []
    assert truth["clock_offsets"] == []
    assert truth["silent_units"] == []
    assert truth["bad_sentences"] == {"checksum": 0, "truncated": 0, "garbage": 0}
    by_stop = {(v["vehicle_id"], v["seq"]): v for v in truth["visits"]}
    assert set(by_stop) == {(p.vehicle_id, p.seq) for p in plans}
    for p in plans:
        v = by_stop[p.vehicle_id, p.seq]
        assert v["site_id"] == p.site_id
        assert v["observed"]
        assert p.window_start_us <= parse_iso_us(v["arrival"]) <= p.window_end_us


rates = st.floats(0.0, 1.0)


@settings(max_examples=5, deadline=None)
@given(
    params=small_params(),
    skip=rates,
    late=rates,
    jam=st.floats(0, 0.3),
    lunch=rates,
    driveby=st.floats(0, 0.3),
    dropouts=st.floats(0, 3),
    bad=st.floats(0, 0.01),
    specials=st.integers(0, 1),
)
def test_every_injected_event_is_in_the_truth(
    params: ScenarioParams,
    skip: float,
    late: float,
    jam: float,
    lunch: float,
    driveby: float,
    dropouts: float,
    bad: float,
    specials: int,
) -> None:
    p = dataclasses.replace(
        params,
        skip_rate=skip,
        late_rate=late,
        jam_rate=jam,
        lunch_rate=lunch,
        driveby_rate=driveby,
        dropout_rate=dropouts,
        bad_rate=bad,
        clock_off_units=specials,
        silent_units=specials if params.vehicles > 1 else 0,
    )
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        write_scenario(p, out)
        truth = load_truth(out / "truth.json")
        plans = load_plans(out / "plans.csv")
        files = unit_files(out)
        payloads = {u: list(iter_payloads(f)) for u, f in files.items()}
    # every planned stop is either visited or skipped, never both
    visited = {(v["vehicle_id"], v["seq"]) for v in truth["visits"]}
    skipped = {(s["vehicle_id"], s["seq"]) for s in truth["skipped"]}
    assert not visited & skipped
    assert visited | skipped == {(q.vehicle_id, q.seq) for q in plans}
    # lateness is exactly arrival after window end
    ends = {(q.vehicle_id, q.seq): q.window_end_us / 1e6 for q in plans}
    late_truth = {(x["vehicle_id"], x["seq"]): x["late_by_s"] for x in truth["late"]}
    late_seen = {
        (v["vehicle_id"], v["seq"]): round(_iso(v["arrival"]) - ends[v["vehicle_id"], v["seq"]])
        for v in truth["visits"]
        if _iso(v["arrival"]) > ends[v["vehicle_id"], v["seq"]]
    }
    assert late_truth == late_seen
    # bad sentences in the files are exactly those counted
    bad_seen = {"checksum": 0, "truncated": 0, "garbage": 0}
    for pl in payloads.values():
        for _, payload in pl:
            for line in payload.split(b"\r\n")[:-1]:
                if not line.startswith(b"$"):
                    bad_seen["garbage"] += 1
                elif b"*" not in line:
                    bad_seen["truncated"] += 1
                else:
                    body, _, cs = line[1:].rpartition(b"*")
                    bad_seen["checksum"] += f"{checksum(body):02X}".encode() != cs
    assert bad_seen == truth["bad_sentences"]
    # a silent unit sends nothing after `from`; a dropout's epochs arrive after its release
    for s in truth["silent_units"]:
        assert all(r / 1e6 < _iso(s["from"]) for r, _ in payloads[s["unit_id"]])
    for dr in truth["dropouts"]:
        pl = payloads[dr["unit_id"]]
        in_gap = [r for r, _ in pl if _iso(dr["start"]) + 2 <= r / 1e6 < _iso(dr["end"])]
        assert in_gap == [], "nothing arrives during a dropout"
    assert len(truth["clock_offsets"]) == specials
    # injected stops last minutes and are listed with a place
    for u in truth["unscheduled_stops"]:
        assert _iso(u["end"]) - _iso(u["start"]) >= 180
        assert not math.isnan(u["lat"])


def test_a_day_too_long_for_the_fleet_is_refused_with_advice(tmp_path: Path) -> None:
    import pytest

    from simulators.scenario import ScenarioError

    too_many = ScenarioParams(sites=300, vehicles=1, clock_off_units=0, silent_units=0)
    with pytest.raises(ScenarioError, match="raise --vehicles or lower --sites"):
        write_scenario(too_many, tmp_path)

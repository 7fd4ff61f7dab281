"""The engine's per-round positions: the vectorised ``newest_positions`` keeps the one-by-one
rule (newest fix per vehicle, ties as documented, sorted by vehicle), and the cheap
``VehiclePosition`` maker gives the very objects the constructor gives."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import FIX_COLUMNS, FixBatch
from schedule.engine import _make_position, newest_positions, newest_positions_reference
from schedule.stop_events import VehiclePosition

UNITS = ["u1", "u2", "u3", "u10", "ab", "b"]


@st.composite
def batches(draw: st.DrawFn) -> tuple[FixBatch, dict[str, str]]:
    n = draw(st.integers(0, 40))
    units = draw(st.lists(st.sampled_from(UNITS), min_size=n, max_size=n))
    # few distinct times, so ties within a unit and across units of one vehicle are common
    t = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    floats = st.floats(-180, 180, allow_nan=False)
    lon = draw(st.lists(floats, min_size=n, max_size=n))
    lat = draw(st.lists(floats, min_size=n, max_size=n))
    speed = draw(st.lists(st.floats(0, 200, width=32) | st.just(np.nan), min_size=n, max_size=n))
    # some units map to a shared vehicle, some to their own, some are unregistered
    mapping = draw(
        st.dictionaries(st.sampled_from(UNITS), st.sampled_from(["V1", "V2", "u3", "Vb"]))
    )
    cols = {name: np.zeros(n, dtype=dtype) for name, dtype in FIX_COLUMNS.items()}
    cols["unit_id"] = np.array(units, dtype=str) if n else np.empty(0, dtype=str)
    cols["t_us"] = np.array(t, dtype=np.int64) * 1_000_000
    cols["lon"] = np.array(lon, dtype=np.float64)
    cols["lat"] = np.array(lat, dtype=np.float64)
    cols["speed_kmh"] = np.array(speed, dtype=np.float32)
    return FixBatch(**cols), mapping


def _same(a: list[VehiclePosition], b: list[VehiclePosition]) -> bool:
    # NaN speeds: compare representations, field by field
    return [repr(p) for p in a] == [repr(p) for p in b]


@settings(max_examples=300, deadline=None)
@given(batches())
def test_newest_positions_keeps_the_one_by_one_rule(case: tuple[FixBatch, dict[str, str]]) -> None:
    fixes, mapping = case
    got = newest_positions(fixes, mapping)
    assert _same(got, newest_positions_reference(fixes, mapping))
    # one position per vehicle, sorted
    ids = [p.vehicle_id for p in got]
    assert ids == sorted(set(ids))
    assert all(type(p) is VehiclePosition for p in got)


def test_a_later_fix_of_equal_time_wins_and_units_of_one_vehicle_merge() -> None:
    cols = {name: np.zeros(4, dtype=dtype) for name, dtype in FIX_COLUMNS.items()}
    cols["unit_id"] = np.array(["b", "a", "a", "c"])
    cols["t_us"] = np.array([7, 7, 7, 3], dtype=np.int64)
    cols["lon"] = np.array([1.0, 2.0, 3.0, 4.0])
    got = newest_positions(FixBatch(**cols), {"a": "V", "b": "V"})
    # V: a and b both at t=7; unit "a" (first in id order), its later fix (lon 3)
    assert [(p.vehicle_id, p.t_us, p.lon) for p in got] == [("V", 7, 3.0), ("c", 3, 4.0)]


@given(
    st.text(min_size=1, max_size=8),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
)
def test_the_cheap_maker_gives_the_constructors_object(
    v: str, t: int, lon: float, lat: float, sp: float
) -> None:
    made = _make_position(v, t, lon, lat, sp)
    ref = VehiclePosition(vehicle_id=v, t_us=t, lon=lon, lat=lat, speed_kmh=sp)
    assert made == ref
    assert hash(made) == hash(ref)
    assert repr(made) == repr(ref)
    assert pickle.loads(pickle.dumps(made)) == ref

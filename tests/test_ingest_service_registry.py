"""The unit registry and its units.csv reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.registry import UnitEntry, UnitRegistry, UnitsFileError, read_units_csv

unit_id_st = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=12)


def test_reads_the_simulator_format(tmp_path: Path) -> None:
    path = tmp_path / "units.csv"
    path.write_text("unit_id,vehicle_id,driver\nU0001,V001,Ivanov I.\nU0002,V002,\n")
    entries = read_units_csv(path)
    assert entries == [
        UnitEntry(unit_id="U0001", vehicle_id="V001", driver="Ivanov I."),
        UnitEntry(unit_id="U0002", vehicle_id="V002", driver=""),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unit,vehicle\nU1,V1\n", "header must name"),
        ("unit_id,vehicle_id\nU1,V1\nU1,V2\n", "listed twice"),
        ("unit_id,vehicle_id\nfleet/U1,V1\n", r":2: unit id 'fleet/U1'"),
        ("unit_id,vehicle_id\nU1,\n", "empty vehicle id"),
    ],
)
def test_bad_files_name_the_line_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "units.csv"
    path.write_text(text)
    with pytest.raises(UnitsFileError, match=message):
        read_units_csv(path)


def test_missing_file_is_a_units_file_error(tmp_path: Path) -> None:
    with pytest.raises(UnitsFileError, match="cannot read"):
        read_units_csv(tmp_path / "nope.csv")


@given(st.dictionaries(unit_id_st, unit_id_st, max_size=20), unit_id_st)
def test_admits_exactly_the_registered_units(units: dict[str, str], probe: str) -> None:
    reg = UnitRegistry(UnitEntry(unit_id=u, vehicle_id=v) for u, v in units.items())
    assert reg.admits(probe) == (probe in units)
    assert reg.vehicle_of(probe) == units.get(probe)
    assert UnitRegistry(accept_unknown=True).admits(probe)


def test_merged_is_a_new_version_and_later_entries_win() -> None:
    old = UnitRegistry([UnitEntry(unit_id="U1", vehicle_id="V1")])
    new = old.merged(
        [UnitEntry(unit_id="U1", vehicle_id="V9"), UnitEntry(unit_id="U2", vehicle_id="V2")]
    )
    assert old.vehicle_of("U1") == "V1"  # readers of the old version see no change
    assert new.vehicle_of("U1") == "V9"
    assert len(new) == 2

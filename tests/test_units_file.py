"""One ``units.csv`` reader: the service, replay and the simulator accept the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.registry import UnitsFileError, read_units_csv
from simulators.formats import ScenarioFormatError, load_units


@pytest.mark.parametrize(
    "text",
    [
        "unit_id,vehicle_id\nU1,V1\nU2,V2\n",  # no driver column: the service accepts it
        "unit_id,vehicle_id,driver\nU1,V1,Ann\nU2,V2,\n",
        "vehicle_id,unit_id,driver\r\nV1,U1,Ann\r\nV2,U2,Bo\r\n",  # any column order, CRLF
    ],
)
def test_replay_reads_every_file_the_service_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "units.csv"
    path.write_text(text, encoding="utf-8")
    service = [(e.unit_id, e.vehicle_id) for e in read_units_csv(path)]
    replay = [(u.unit_id, u.vehicle_id) for u in load_units(path)]
    assert service == replay == [("U1", "V1"), ("U2", "V2")]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("unit,vehicle\nU1,V1\n", "missing"),
        ("unit_id,vehicle_id\nU1,V1\nU1,V2\n", "listed twice"),
        ("unit_id,vehicle_id\n,V1\n", "unit"),
    ],
)
def test_both_refuse_the_same_bad_files(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "units.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UnitsFileError, match=why):
        read_units_csv(path)
    with pytest.raises(ScenarioFormatError, match=why):
        load_units(path)

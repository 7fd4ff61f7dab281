"""The roster: parse + validate as a pure function, every problem named; shifts; generator."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.roster import RosterError, generate_roster, parse_roster, roster_to_toml
from tests.alerts_helpers import ROSTER_TOML, roster, utc


def test_example_roster_parses() -> None:
    r = roster()
    assert r.head == "D00"
    assert r.responsible_for("V001") == "D01"
    assert r.responsible_for("V003") == "D02"
    assert r.responsible_for("V999") is None
    assert r.can_act("D01")
    assert r.can_act("D00")
    assert not r.can_act("VW")
    assert not r.can_act("nobody")


def test_shipped_example_file_parses() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "deploy" / "roster.example.toml").read_text()
    r = parse_roster(text)
    assert r.head


def test_shifts_follow_local_time() -> None:
    r = roster()  # Europe/Moscow = UTC+3; D01 06:00-15:00 local = 03:00-12:00 UTC
    assert not r.on_shift("D01", utc("02:59"))
    assert r.on_shift("D01", utc("03:00"))
    assert r.on_shift("D01", utc("11:59"))
    assert not r.on_shift("D01", utc("12:00"))
    assert r.acting_on_shift(utc("10:00")) == ("D01", "D02", "D03")
    assert r.acting_on_shift(utc("13:00")) == ("D03",)
    assert r.on_shift("D00", utc("23:00"))  # the head is the last resort, always reachable
    assert not r.on_shift("VW", utc("10:00"))


def test_overnight_shift_belongs_to_the_day_it_starts() -> None:
    text = """
tz = "UTC"
[[dispatcher]]
id = "H"
role = "head"
[[dispatcher]]
id = "N"
shifts = [{days = [1], start = "22:00", end = "06:00"}]
"""
    r = parse_roster(text)
    # 2026-11-23 is a Monday
    assert r.on_shift("N", utc("23:00"))
    assert not r.on_shift("N", utc("21:59"))
    assert r.on_shift("N", utc("23:00") + 6 * 3600 * 10**6)  # Tuesday 05:00
    assert not r.on_shift("N", utc("23:00") + 7 * 3600 * 10**6)  # Tuesday 06:00
    assert not r.on_shift("N", utc("05:00"))  # Monday 05:00: Sunday has no shift


def test_every_problem_is_named_at_once() -> None:
    text = """
tz = "Mars/Olympus"
colour = "red"
[[dispatcher]]
id = "D 1"
role = "boss"
shifts = [{days = [0, 8], start = "25:00", end = "7pm", break = 1}]
vehicles = ["V001"]
[[dispatcher]]
id = "D2"
shifts = []
vehicles = ["V001"]
[[dispatcher]]
id = "D2"
role = "viewer"
vehicles = ["V002"]
"""
    with pytest.raises(RosterError) as info:
        parse_roster(text)
    problems = "\n".join(info.value.problems)
    for expected in (
        "unknown top-level key 'colour'",
        "unknown time zone 'Mars/Olympus'",
        "dispatcher[0].id: 'D 1' is not an id",
        "dispatcher[0].role: 'boss'",
        "dispatcher[0].shifts[0]: unknown key 'break'",
        "dispatcher[0].shifts[0].days",
        "dispatcher[0].shifts[0].start: '25:00'",
        "dispatcher[0].shifts[0].end: '7pm'",
        "dispatcher[1].shifts: a dispatcher needs at least one shift",
        "dispatcher[2].vehicles: a viewer cannot be responsible",
    ):
        assert expected in problems, f"{expected!r} not in:\n{problems}"


def test_duplicates_and_heads_are_named() -> None:
    text = """
tz = "UTC"
[[dispatcher]]
id = "A"
shifts = [{days = [1], start = "08:00", end = "09:00"}]
vehicles = ["V1"]
[[dispatcher]]
id = "A"
shifts = [{days = [1], start = "08:00", end = "09:00"}]
vehicles = ["V1"]
"""
    with pytest.raises(RosterError) as info:
        parse_roster(text)
    problems = "\n".join(info.value.problems)
    assert "dispatcher id 'A' is used twice" in problems
    assert "vehicle 'V1' has two responsible dispatchers" in problems
    assert "exactly one dispatcher must have role = 'head', found 0" in problems


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("tz = ", "toml", "not valid TOML"),
        ("{", "json", "not valid JSON"),
        ("[1, 2]", "json", "table/object at the top"),
        ('tz = "UTC"', "toml", "lists no dispatcher"),
    ],
)
def test_unreadable_text_is_refused_with_a_reason(text: str, fmt: str, expected: str) -> None:
    with pytest.raises(RosterError, match=expected):
        parse_roster(text, fmt=fmt)  # type: ignore[arg-type]


def test_json_form_is_the_same_roster() -> None:
    import tomllib

    assert parse_roster(json.dumps(tomllib.loads(ROSTER_TOML)), fmt="json") == roster()


@given(
    st.lists(st.from_regex(r"V[0-9]{3}", fullmatch=True), min_size=0, max_size=60, unique=True),
    st.integers(min_value=1, max_value=20),
)
def test_generated_roster_round_trips_and_covers_every_vehicle(
    vehicles: list[str], per: int
) -> None:
    r = generate_roster(vehicles, vehicles_per_dispatcher=per)
    assert parse_roster(roster_to_toml(r)) == r
    for v in vehicles:
        assert r.responsible_for(v) is not None
    assert all(len(d.vehicles) <= per for d in r.dispatchers)
    # someone besides the head is on shift through the working day (09:00-17:00 local)
    assert r.acting_on_shift(utc("06:00"))
    assert r.acting_on_shift(utc("14:00"))

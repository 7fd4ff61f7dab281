"""Who answers an alert: dispatchers, the head dispatcher, their shifts and their vehicles.

The company's client-service rule (issue 8): each vehicle has a responsible dispatcher; an
alert nobody acknowledges goes to the least-loaded dispatcher on shift, then to the head.  The
roster is a small configuration text (TOML, or the same shape in JSON)::

    tz = "Europe/Moscow"            # shifts are in this local time

    [[dispatcher]]
    id = "D00"
    name = "Petrova A."
    role = "head"                   # head (exactly one) | dispatcher | viewer
    shifts = [{days = [1, 2, 3, 4, 5, 6], start = "06:00", end = "20:00"}]

    [[dispatcher]]
    id = "D01"
    name = "Ivanov I."
    shifts = [{days = [1, 2, 3, 4, 5], start = "06:00", end = "14:30"}]
    vehicles = ["V001", "V002"]

:func:`parse_roster` is a pure function from text to a validated :class:`Roster`; it collects
*every* problem and raises one :class:`RosterError` naming them all, so an operator fixes the
file in one pass.  Days are ISO weekdays (Monday = 1); a shift whose end is not after its start
runs over midnight (``22:00``–``06:00`` belongs to the day it starts on).  The head dispatcher
is the last resort and is treated as reachable at any time; a ``viewer`` may watch the console
but may not acknowledge or comment.

:func:`generate_roster` builds a plausible roster for a simulated fleet, and
:func:`roster_to_toml` writes one back out (``parse_roster(roster_to_toml(r)) == r``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.fixes import us_to_datetime

Role = Literal["head", "dispatcher", "viewer"]
ROLES: tuple[Role, ...] = ("head", "dispatcher", "viewer")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOP_KEYS = {"tz", "dispatcher"}
_PERSON_KEYS = {"id", "name", "role", "shifts", "vehicles"}
_SHIFT_KEYS = {"days", "start", "end"}


class RosterError(ValueError):
    """The roster text is not usable; ``problems`` names each problem (path: what is wrong)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            f"roster: {len(self.problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Shift:
    days: tuple[int, ...]  # ISO weekdays the shift *starts* on
    start_min: int  # minutes after local midnight
    end_min: int  # end <= start: the shift runs over midnight

    def covers(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        wd = local.isoweekday()
        if self.start_min < self.end_min:
            return wd in self.days and self.start_min <= minute < self.end_min
        prev = 7 if wd == 1 else wd - 1
        return (wd in self.days and minute >= self.start_min) or (
            prev in self.days and minute < self.end_min
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatcher:
    id: str
    name: str
    role: Role
    shifts: tuple[Shift, ...]
    vehicles: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Roster:
    """A validated roster.  Not slotted: its lookup tables are cached on first use."""

    tz: str
    dispatchers: tuple[Dispatcher, ...]

    def __post_init__(self) -> None:
        heads = [d.id for d in self.dispatchers if d.role == "head"]
        if len(heads) != 1:
            raise RosterError([f"roster needs exactly one head dispatcher, found {heads}"])

    @functools.cached_property
    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    @functools.cached_property
    def _by_id(self) -> dict[str, Dispatcher]:
        return {d.id: d for d in self.dispatchers}

    @functools.cached_property
    def _by_vehicle(self) -> dict[str, str]:
        return {v: d.id for d in self.dispatchers for v in d.vehicles}

    @functools.cached_property
    def head(self) -> str:
        return next(d.id for d in self.dispatchers if d.role == "head")

    def get(self, dispatcher_id: str) -> Dispatcher | None:
        return self._by_id.get(dispatcher_id)

    def can_act(self, dispatcher_id: str) -> bool:
        """Dispatchers and the head may acknowledge and comment; viewers and strangers not."""
        d = self._by_id.get(dispatcher_id)
        return d is not None and d.role != "viewer"

    def responsible_for(self, vehicle_id: str | None) -> str | None:
        """The dispatcher responsible for a vehicle (and so for its route), if any."""
        if vehicle_id is None:
            return None
        return self._by_vehicle.get(vehicle_id)

    @functools.cached_property
    def _on_shift_by_minute(self) -> dict[int, tuple[str, ...]]:
        return {}

    def acting_on_shift(self, now_us: int) -> tuple[str, ...]:
        """Non-head dispatchers on shift at ``now_us``, in roster order.

        Shifts change on whole minutes, so the answer is cached per minute (bounded): an
        escalation storm asks this once per hop, and a fleet's roster has dozens of people."""
        minute = now_us // 60_000_000
        cache = self._on_shift_by_minute
        found = cache.get(minute)
        if found is None:
            if len(cache) >= 4096:
                cache.clear()
            local = us_to_datetime(minute * 60_000_000).astimezone(self._zone)
            found = tuple(
                d.id
                for d in self.dispatchers
                if d.role == "dispatcher" and any(s.covers(local) for s in d.shifts)
            )
            cache[minute] = found
        return found

    def on_shift(self, dispatcher_id: str, now_us: int) -> bool:
        """The head is always reachable (last resort); others by their shifts."""
        d = self._by_id.get(dispatcher_id)
        if d is None or d.role == "viewer":
            return False
        return d.role == "head" or dispatcher_id in self.acting_on_shift(now_us)


# -- parsing ---------------------------------------------------------------------------------


def _parse_hhmm(value: object, where: str, problems: list[str]) -> int | None:
    if not isinstance(value, str) or not _HHMM.match(value):
        problems.append(f"{where}: {value!r} is not a time HH:MM (00:00-23:59)")
        return None
    h, m = value.split(":")
    return int(h) * 60 + int(m)


def _parse_shift(raw: object, where: str, problems: list[str]) -> Shift | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: a shift is a table {{days, start, end}}, got {raw!r}")
        return None
    for key in sorted(set(raw) - _SHIFT_KEYS):
        problems.append(f"{where}: unknown key {key!r} (known: days, start, end)")
    days = raw.get("days")
    ok_days: tuple[int, ...] | None = None
    if (
        not isinstance(days, list)
        or not days
        or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
    ):
        problems.append(f"{where}.days: {days!r} is not a non-empty list of ISO weekdays 1-7")
    elif len(set(days)) != len(days):
        problems.append(f"{where}.days: {days!r} repeats a day")
    else:
        ok_days = tuple(sorted(days))
    start = _parse_hhmm(raw.get("start"), f"{where}.start", problems)
    end = _parse_hhmm(raw.get("end"), f"{where}.end", problems)
    if start is not None and end is not None and start == end:
        problems.append(f"{where}: start and end are both {raw.get('start')}: an empty shift")
        return None
    if ok_days is None or start is None or end is None:
        return None
    return Shift(days=ok_days, start_min=start, end_min=end)


def _parse_person(raw: object, where: str, problems: list[str]) -> Dispatcher | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: a dispatcher is a table, got {raw!r}")
        return None
    n_before = len(problems)
    for key in sorted(set(raw) - _PERSON_KEYS):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_PERSON_KEYS))})")
    pid = raw.get("id")
    if not isinstance(pid, str) or not _ID.match(pid):
        problems.append(f"{where}.id: {pid!r} is not an id (1-64 of A-Z a-z 0-9 _ . -)")
    name = raw.get("name", pid)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        problems.append(f"{where}.name: {name!r} is not a name (1-200 characters)")
    role = raw.get("role", "dispatcher")
    if role not in ROLES:
        problems.append(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    shifts_raw = raw.get("shifts", [])
    shifts: list[Shift] = []
    if not isinstance(shifts_raw, list):
        problems.append(f"{where}.shifts: a list of shifts, got {shifts_raw!r}")
    else:
        for i, s in enumerate(shifts_raw):
            shift = _parse_shift(s, f"{where}.shifts[{i}]", problems)
            if shift is not None:
                shifts.append(shift)
        if role == "dispatcher" and not shifts_raw:
            problems.append(f"{where}.shifts: a dispatcher needs at least one shift")
    vehicles = raw.get("vehicles", [])
    if not isinstance(vehicles, list) or not all(
        isinstance(v, str) and _ID.match(v) for v in vehicles
    ):
        problems.append(f"{where}.vehicles: {vehicles!r} is not a list of vehicle ids")
        vehicles = []
    elif len(set(vehicles)) != len(vehicles):
        problems.append(f"{where}.vehicles: a vehicle is listed twice")
    elif vehicles and role == "viewer":
        problems.append(f"{where}.vehicles: a viewer cannot be responsible for vehicles")
    if len(problems) > n_before:
        return None
    assert isinstance(pid, str)
    assert isinstance(name, str)
    return Dispatcher(
        id=pid,
        name=name,
        role=role,
        shifts=tuple(shifts),
        vehicles=tuple(vehicles),
    )


def roster_from_mapping(data: Mapping[str, Any]) -> Roster:
    """Validate an already-decoded roster (TOML or JSON); every problem named."""
    problems: list[str] = []
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(f"unknown top-level key {key!r} (known: dispatcher, tz)")
    tz = data.get("tz")
    if not isinstance(tz, str):
        problems.append(f"tz: {tz!r} is not an IANA time zone name such as 'Europe/Moscow'")
    else:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(f"tz: unknown time zone {tz!r}")
    people_raw = data.get("dispatcher")
    people: list[Dispatcher] = []
    if not isinstance(people_raw, list) or not people_raw:
        problems.append("dispatcher: the roster lists no dispatcher ([[dispatcher]] tables)")
    else:
        for i, raw in enumerate(people_raw):
            d = _parse_person(raw, f"dispatcher[{i}]", problems)
            if d is not None:
                people.append(d)
        seen: dict[str, int] = {}
        owner: dict[str, str] = {}
        for d in people:
            if d.id in seen:
                problems.append(f"dispatcher id {d.id!r} is used twice")
            seen[d.id] = 1
            for v in d.vehicles:
                if v in owner:
                    problems.append(
                        f"vehicle {v!r} has two responsible dispatchers: {owner[v]!r} and {d.id!r}"
                    )
                owner.setdefault(v, d.id)
        heads = [d.id for d in people if d.role == "head"]
        if len(heads) != 1 and len(people) == len(people_raw):
            problems.append(
                f"exactly one dispatcher must have role = 'head', found {len(heads)}: {heads}"
            )
    if problems:
        raise RosterError(problems)
    assert isinstance(tz, str)
    return Roster(tz=tz, dispatchers=tuple(people))


def parse_roster(text: str, *, fmt: Literal["toml", "json"] = "toml") -> Roster:
    """A validated roster from configuration text (pure: no file, no clock)."""
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RosterError([f"not valid {fmt.upper()}: {exc}"]) from None
    if not isinstance(data, dict):
        raise RosterError([f"the roster is a table/object at the top, got {type(data).__name__}"])
    return roster_from_mapping(data)


# -- writing and generating ------------------------------------------------------------------


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def roster_to_toml(roster: Roster) -> str:
    """TOML text that :func:`parse_roster` reads back into an equal roster."""
    lines = [f"tz = {json.dumps(roster.tz)}"]
    for d in roster.dispatchers:
        lines += ["", "[[dispatcher]]", f"id = {json.dumps(d.id)}"]
        lines.append(f"name = {json.dumps(d.name, ensure_ascii=False)}")
        lines.append(f"role = {json.dumps(d.role)}")
        shifts = ", ".join(
            f"{{days = [{', '.join(map(str, s.days))}], "
            f'start = "{_hhmm(s.start_min)}", end = "{_hhmm(s.end_min)}"}}'
            for s in d.shifts
        )
        lines.append(f"shifts = [{shifts}]")
        lines.append(f"vehicles = [{', '.join(json.dumps(v) for v in d.vehicles)}]")
    return "\n".join(lines) + "\n"


_SURNAMES = (
    "Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Sokolova", "Popov", "Lebedeva", "Kozlov",
    "Novikova", "Morozov", "Volkova", "Solovyov", "Vasilyeva", "Zaitsev", "Pavlova", "Semyonov",
)  # fmt: skip


def generate_roster(
    vehicle_ids: Sequence[str],
    *,
    vehicles_per_dispatcher: int = 12,
    tz: str = "Europe/Moscow",
) -> Roster:
    """A plausible roster for a fleet: one head (06:00–20:00, Mon–Sat), one dispatcher per
    ``vehicles_per_dispatcher`` vehicles on the day shift (06:00–15:00, Mon–Sat) owning a
    contiguous block of vehicles, and one late-shift dispatcher (12:00–21:00) without vehicles
    who takes escalations in the afternoon.  Deterministic: same vehicles, same roster."""
    if vehicles_per_dispatcher < 1:
        raise ValueError(f"vehicles_per_dispatcher must be >= 1, got {vehicles_per_dispatcher}")
    vehicles = sorted(set(vehicle_ids))
    week = (1, 2, 3, 4, 5, 6)
    people = [
        Dispatcher(
            id="D00",
            name=f"{_SURNAMES[0]} (head)",
            role="head",
            shifts=(Shift(days=week, start_min=6 * 60, end_min=20 * 60),),
            vehicles=(),
        )
    ]
    n = max(1, -(-len(vehicles) // vehicles_per_dispatcher))
    for i in range(n):
        block = vehicles[i * vehicles_per_dispatcher : (i + 1) * vehicles_per_dispatcher]
        people.append(
            Dispatcher(
                id=f"D{i + 1:02d}",
                name=_SURNAMES[(i + 1) % len(_SURNAMES)],
                role="dispatcher",
                shifts=(Shift(days=week, start_min=6 * 60, end_min=15 * 60),),
                vehicles=tuple(block),
            )
        )
    people.append(
        Dispatcher(
            id=f"D{n + 1:02d}",
            name=_SURNAMES[(n + 1) % len(_SURNAMES)],
            role="dispatcher",
            shifts=(Shift(days=week, start_min=12 * 60, end_min=21 * 60),),
            vehicles=(),
        )
    )
    return Roster(tz=tz, dispatchers=tuple(people))

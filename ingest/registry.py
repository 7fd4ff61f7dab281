"""Which GPS unit sits in which vehicle: the unit registry.

A payload from a unit nobody registered is not a fix of the fleet (a stolen unit, a test bench,
a typo in provisioning).  It is not dropped silently either: the ingest service keeps it as a
dead letter with reason ``unknown_unit``, so an operator sees it and registers the unit.

The registry is an immutable value: a new version (units file re-read, units added in the
store) is built and swapped in whole, never mutated under a reader.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Unit ids appear in MQTT topics: no ``/``, ``+``, ``#``, whitespace or control characters.
_UNIT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_REQUIRED_COLUMNS = ("unit_id", "vehicle_id")


class UnitsFileError(ValueError):
    """The units file cannot be used as it is; the message names the file, line and fix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitEntry:
    """One GPS unit and the vehicle (and driver) it is installed in."""

    unit_id: str
    vehicle_id: str
    driver: str = ""

    def __post_init__(self) -> None:
        if not _UNIT_ID.fullmatch(self.unit_id):
            raise ValueError(
                f"unit id {self.unit_id!r} is not usable in an MQTT topic: use 1-64 characters "
                "from A-Z a-z 0-9 _ . : -"
            )
        if not self.vehicle_id:
            raise ValueError(f"unit {self.unit_id!r} has an empty vehicle id")


class UnitRegistry(Mapping[str, UnitEntry]):
    """unit id -> :class:`UnitEntry`, read-only.

    ``accept_unknown=True`` turns the check off (every unit is its own vehicle); it exists for
    load tests and first installs, and is off by default.
    """

    __slots__ = ("_accept_unknown", "_entries")

    def __init__(self, entries: Iterable[UnitEntry] = (), *, accept_unknown: bool = False) -> None:
        self._entries: dict[str, UnitEntry] = {}
        for entry in entries:
            self._entries[entry.unit_id] = entry
        self._accept_unknown = accept_unknown

    @property
    def accept_unknown(self) -> bool:
        return self._accept_unknown

    def __getitem__(self, unit_id: str) -> UnitEntry:
        return self._entries[unit_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def admits(self, unit_id: str) -> bool:
        """Whether payloads of this unit are fleet data (known, or unknown units accepted)."""
        return self._accept_unknown or unit_id in self._entries

    def vehicle_of(self, unit_id: str) -> str | None:
        entry = self._entries.get(unit_id)
        return None if entry is None else entry.vehicle_id

    def merged(self, entries: Iterable[UnitEntry]) -> UnitRegistry:
        """A new registry: these entries over the current ones (later wins per unit id)."""
        return UnitRegistry(
            [*self._entries.values(), *entries], accept_unknown=self._accept_unknown
        )


def read_units_csv(path: Path) -> list[UnitEntry]:
    """Parse a ``units.csv`` (``unit_id,vehicle_id,driver``; see docs/formats.md)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UnitsFileError(f"cannot read units file {path}: {exc.strerror}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise UnitsFileError(
            f"{path}: header must name the columns unit_id,vehicle_id[,driver]; missing {missing}"
        )
    entries: list[UnitEntry] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        unit_id = (row.get("unit_id") or "").strip()
        if unit_id in seen:
            raise UnitsFileError(
                f"{path}:{line}: unit {unit_id!r} listed twice (first on line {seen[unit_id]})"
            )
        try:
            entries.append(
                UnitEntry(
                    unit_id=unit_id,
                    vehicle_id=(row.get("vehicle_id") or "").strip(),
                    driver=(row.get("driver") or "").strip(),
                )
            )
        except ValueError as exc:
            raise UnitsFileError(f"{path}:{line}: {exc}") from exc
        seen[unit_id] = line
    return entries

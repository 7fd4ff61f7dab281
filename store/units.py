"""The unit → vehicle registry (``units``), which the fix writer joins to fill ``vehicle_id``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitRow:
    """One GPS unit and the vehicle (and driver) it is installed in."""

    unit_id: str
    vehicle_id: str
    driver: str | None = None

    def __post_init__(self) -> None:
        if not self.unit_id:
            raise ValueError("unit_id must not be empty")
        if not self.vehicle_id:
            raise ValueError(f"unit {self.unit_id!r}: vehicle_id must not be empty")


_UPSERT = """
INSERT INTO units (unit_id, vehicle_id, driver) VALUES (%s, %s, %s)
ON CONFLICT (unit_id) DO UPDATE
SET vehicle_id = EXCLUDED.vehicle_id, driver = EXCLUDED.driver, updated_at = now()
WHERE (units.vehicle_id, units.driver) IS DISTINCT FROM (EXCLUDED.vehicle_id, EXCLUDED.driver)
"""


async def upsert_units(conn: psycopg.AsyncConnection[Any], rows: Sequence[UnitRow]) -> None:
    """Insert or update units (inside the caller's transaction).  Fixes already stored keep
    the vehicle they were stored with: a unit moved to another truck does not rewrite history."""
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_UPSERT, [(r.unit_id, r.vehicle_id, r.driver) for r in rows])


async def select_units(conn: psycopg.AsyncConnection[Any]) -> dict[str, UnitRow]:
    cur = await conn.execute("SELECT unit_id, vehicle_id, driver FROM units")
    return {
        str(u): UnitRow(unit_id=str(u), vehicle_id=str(v), driver=None if d is None else str(d))
        for u, v, d in await cur.fetchall()
    }

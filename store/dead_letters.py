"""Dead letters: refused input kept with its reason, written in the fixes' transaction.

The text columns hold what a unit or our decoder said; a NUL character (which PostgreSQL text
cannot hold) is replaced by U+FFFD there.  The ``payload`` column keeps the exact bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ingest.fixes import DeadLetter, us_to_datetime

_COPY_SQL = (
    "COPY dead_letters (topic, unit_id, reason, detail, payload, recv_at) "
    "FROM STDIN (FORMAT BINARY)"
)
_TYPES = ["text", "text", "text", "text", "bytea", "timestamptz"]


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd")


async def insert_dead_letters(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[DeadLetter]
) -> int:
    """COPY *rows* into ``dead_letters`` inside the caller's transaction; returns the count.

    Dead letters are few (a per-row COPY is fine here): the fixes take the vectorised path.
    """
    if not rows:
        return 0
    async with conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
        copy.set_types(_TYPES)
        for d in rows:
            await copy.write_row(
                (
                    _text(d.topic),
                    None if d.unit_id is None else _text(d.unit_id),
                    _text(d.reason),
                    _text(d.detail),
                    bytes(d.payload),
                    us_to_datetime(d.recv_us),
                )
            )
    return len(rows)


async def count_dead_letters_by_reason(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
    return {str(reason): int(n) for reason, n in await cur.fetchall()}

"""Dead letters: refused input kept with its reason, written in the fixes' transaction.

The text columns hold what a unit or our decoder said; a NUL character (which PostgreSQL text
cannot hold) is replaced by U+FFFD there.  The ``payload`` column keeps the exact bytes.

Each row is keyed by a fingerprint of (topic, reason, source message, payload): a redelivered
MQTT message is decoded into the same rejects again, and storing them again would count them
twice.  A repeat moves ``last_recv_at`` forward instead (idempotent: ``greatest``).  The same
bad bytes in two different messages are two rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg

from core.fixes import DeadLetter, us_to_datetime

_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS dead_letters_stage "
    "(topic text, unit_id text, reason text, detail text, payload bytea, recv_at timestamptz, "
    "fingerprint bytea) ON COMMIT DELETE ROWS"
)
_COPY_SQL = (
    "COPY dead_letters_stage (topic, unit_id, reason, detail, payload, recv_at, fingerprint) "
    "FROM STDIN (FORMAT BINARY)"
)
_TYPES = ["text", "text", "text", "text", "bytea", "timestamptz", "bytea"]
# DISTINCT ON: one row per fingerprint even when a batch holds the same message twice, so
# ON CONFLICT never meets a row it has already touched in this statement.  xmax = 0 tells a
# new row from an updated one.
_MERGE_SQL = """
INSERT INTO dead_letters AS d (topic, unit_id, reason, detail, payload, recv_at, last_recv_at,
                               fingerprint)
SELECT DISTINCT ON (fingerprint) topic, unit_id, reason, detail, payload, recv_at, recv_at,
       fingerprint
FROM dead_letters_stage ORDER BY fingerprint, recv_at
ON CONFLICT (fingerprint) DO UPDATE
   SET last_recv_at = greatest(d.last_recv_at, EXCLUDED.last_recv_at)
RETURNING (xmax = 0)
"""


def fingerprint(d: DeadLetter) -> bytes:
    """sha256 of topic, reason, source message and payload: a dead letter's identity across
    redeliveries (``DeadLetter.source`` names the MQTT message and the reject's rank in it)."""
    h = hashlib.sha256(d.topic.encode("utf-8", "surrogatepass"))
    h.update(b"\x00" + d.reason.encode("utf-8", "surrogatepass") + b"\x00")
    h.update(len(d.source).to_bytes(4, "big") + bytes(d.source))
    h.update(bytes(d.payload))
    return h.digest()


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd")


async def insert_dead_letters(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[DeadLetter]
) -> int:
    """Store *rows* inside the caller's transaction; returns how many were new.

    Dead letters are few (a per-row COPY is fine here): the fixes take the vectorised path.
    """
    if not rows:
        return 0
    await conn.execute(_STAGE_SQL)
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
                    fingerprint(d),
                )
            )
    cur = await conn.execute(_MERGE_SQL)
    return sum(1 for (new,) in await cur.fetchall() if new)


async def count_dead_letters_by_reason(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
    return {str(reason): int(n) for reason, n in await cur.fetchall()}

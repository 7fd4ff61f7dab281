"""Writing a :class:`FixBatch` into ``fixes``: one binary COPY, one INSERT … SELECT.

The hot path builds the whole PostgreSQL binary COPY stream from the batch's numpy columns
(:func:`encode_fix_copy`) instead of formatting one Python tuple per fix: rows are records of a
numpy structured dtype (big-endian ``>i4``/``>i8``/``>f8`` fields, each preceded by its int32
length), so the fixed-width part of every row is written by a handful of vectorised column
assignments.  The two text columns (``unit_id``, ``talker``) are encoded once per *distinct*
value, and rows are grouped by the byte lengths of those two strings so that within a group the
rows are fixed-width too.  Row order in the staging table does not matter: every row carries its
batch position (``ord``), which decides which of two duplicates wins.

NULLs would make rows variable-width, so the stream carries NaN and -1 as they are and the
INSERT turns them into NULL (``NULLIF``); reading back turns NULL into NaN and -1 again.

Duplicates within the batch (the same fix twice, GPRMC and GNRMC of one epoch) are dropped in
numpy before encoding, keeping the first in batch order; the rows go out sorted by (unit, t).
The batch lands in a session TEMP table (``ON COMMIT DELETE ROWS``, not WAL-logged), then
``INSERT … SELECT … ON CONFLICT DO NOTHING`` copies the rows not stored yet: idempotent across
batches (a redelivered message) and within one (DO NOTHING never raises "cannot affect row a
second time", even if a duplicate reached it).  The plpgsql function
``fleetwatch_insert_staged_fixes()`` (migration 0002) tries a plain INSERT first and falls back
to ON CONFLICT only on a unique violation, because ON CONFLICT's speculative insertion costs
~4 µs a row even when nothing conflicts; being one function call, it is one round trip.
``vehicle_id`` is joined from ``units`` here.
(Deduplicating in SQL with ``DISTINCT ON`` cost a sort of the whole batch: ~2.5 µs a row.)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from core.fixes import FIX_COLUMNS, FixBatch, datetime_to_us, us_to_datetime

#: µs between 1970-01-01 and PostgreSQL's epoch 2000-01-01 (binary timestamptz is µs since it).
PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

#: Fixed-width staging columns in COPY order: (name, big-endian numpy type).
_FIXED: tuple[tuple[str, str], ...] = (
    ("ord", ">i4"),
    ("t", ">i8"),
    ("recv_at", ">i8"),
    ("lat", ">f8"),
    ("lon", ">f8"),
    ("speed_kmh", ">f4"),
    ("course", ">f4"),
    ("quality", ">i2"),
    ("sats", ">i2"),
    ("hdop", ">f4"),
    ("alt_m", ">f4"),
)
_TEXT = ("unit_id", "talker")
STAGE_COLUMNS = tuple(name for name, _ in _FIXED) + _TEXT
_NFIELDS = len(STAGE_COLUMNS)

STAGE_TABLE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS fixes_stage (
    ord integer, t timestamptz, recv_at timestamptz, lat double precision,
    lon double precision, speed_kmh real, course real, quality smallint, sats smallint,
    hdop real, alt_m real, unit_id text COLLATE "C", talker text
) ON COMMIT DELETE ROWS
"""
COPY_STAGE_SQL = f"COPY fixes_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_INSERT_FROM_STAGE = """
INSERT INTO fixes (unit_id, vehicle_id, t, recv_at, lat, lon, speed_kmh, course, quality, sats,
                   hdop, alt_m, talker)
SELECT s.unit_id, u.vehicle_id, s.t, s.recv_at, s.lat, s.lon,
       NULLIF(s.speed_kmh, 'NaN'), NULLIF(s.course, 'NaN'),
       NULLIF(s.quality, -1), NULLIF(s.sats, -1),
       NULLIF(s.hdop, 'NaN'), NULLIF(s.alt_m, 'NaN'), s.talker
FROM fixes_stage s LEFT JOIN units u ON u.unit_id = s.unit_id
"""
#: The idempotent INSERT, as a statement (the benchmark's baseline uses it).  The store runs
#: the same SQL inside ``fleetwatch_insert_staged_fixes()`` (migration 0002).
INSERT_FROM_STAGE_SQL = _INSERT_FROM_STAGE + "ON CONFLICT DO NOTHING\n"


class UnencodableText(ValueError):
    """A unit id or talker holds a NUL character, which PostgreSQL text cannot store."""


def _encode_distinct(
    col: npt.NDArray[np.str_],
) -> tuple[npt.NDArray[np.bytes_], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """UTF-8 of each distinct value (encoded once), its byte length, and the row → value map."""
    uniq, inverse = np.unique(col, return_inverse=True)
    encoded = [s.encode("utf-8") for s in uniq.tolist()]
    if any(b"\x00" in b for b in encoded):
        raise UnencodableText("text with a NUL character cannot be stored in PostgreSQL")
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    width = max(1, int(lengths.max(initial=0)))
    return np.array(encoded, dtype=f"S{width}"), lengths, inverse.reshape(-1)


def _row_dtype(unit_len: int, talker_len: int) -> np.dtype[np.void]:
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for name, typ in _FIXED:
        fields += [(name + "_len", ">i4"), (name, typ)]
    fields.append(("unit_id_len", ">i4"))
    if unit_len:
        fields.append(("unit_id", f"S{unit_len}"))
    fields.append(("talker_len", ">i4"))
    if talker_len:
        fields.append(("talker", f"S{talker_len}"))
    return np.dtype(fields)


def first_of_each_key(
    unit_code: npt.NDArray[np.intp], t_us: npt.NDArray[np.int64]
) -> npt.NDArray[np.intp]:
    """Batch positions of the first row of each distinct (unit, t), ordered by (unit, t).

    Duplicates within a batch (a fix sent twice, GPRMC and GNRMC of one epoch) are dropped here,
    keeping the first in batch order; the sort by (unit, t) also makes the primary-key index
    inserts land next to each other.  *unit_code* must order as the unit ids do.
    """
    n = len(t_us)
    order = np.lexsort((np.arange(n), t_us, unit_code))
    u, t = unit_code[order], t_us[order]
    first = np.ones(n, dtype=np.bool_)
    first[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1])
    return order[first]


def encode_fix_copy(batch: FixBatch) -> bytes:
    """The complete binary COPY stream (signature, rows, trailer) for ``fixes_stage``.

    One row per distinct (unit_id, t): the first of the batch (see :func:`first_of_each_key`).
    """
    if len(batch) == 0:
        return COPY_SIGNATURE + COPY_TRAILER
    unit_bytes, unit_lens, unit_inv_all = _encode_distinct(batch.unit_id)
    talker_bytes, talker_lens, talker_inv_all = _encode_distinct(batch.talker)
    keep = first_of_each_key(unit_inv_all, batch.t_us)
    unit_inv, talker_inv = unit_inv_all[keep], talker_inv_all[keep]
    row_unit_len = unit_lens[unit_inv]
    row_talker_len = talker_lens[talker_inv]
    values: dict[str, npt.NDArray[Any]] = {
        "ord": keep,
        "t": batch.t_us[keep] - PG_EPOCH_OFFSET_US,
        "recv_at": batch.recv_us[keep] - PG_EPOCH_OFFSET_US,
        "lat": batch.lat[keep],
        "lon": batch.lon[keep],
        "speed_kmh": batch.speed_kmh[keep],
        "course": batch.course[keep],
        "quality": batch.quality[keep],
        "sats": batch.sats[keep],
        "hdop": batch.hdop[keep],
        "alt_m": batch.alt_m[keep],
    }
    key = row_unit_len * 65_536 + row_talker_len
    group_keys, group_of_row = np.unique(key, return_inverse=True)
    parts: list[bytes] = [COPY_SIGNATURE]
    for g, k in enumerate(group_keys.tolist()):
        unit_len, talker_len = divmod(int(k), 65_536)
        rows: slice | npt.NDArray[np.intp] = (
            slice(None) if len(group_keys) == 1 else np.flatnonzero(group_of_row == g)
        )
        dtype = _row_dtype(unit_len, talker_len)
        out = np.empty(len(values["ord"][rows]), dtype=dtype)
        out["nfields"] = _NFIELDS
        for name, _typ in _FIXED:
            out[name + "_len"] = np.dtype(_typ).itemsize
            out[name] = values[name][rows]
        out["unit_id_len"] = unit_len
        if unit_len:
            out["unit_id"] = unit_bytes[unit_inv[rows]]
        out["talker_len"] = talker_len
        if talker_len:
            out["talker"] = talker_bytes[talker_inv[rows]]
        parts.append(out.tobytes())
    parts.append(COPY_TRAILER)
    return b"".join(parts)


async def create_stage_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """Once per connection (the pool's ``configure``): the session's staging table."""
    await conn.execute(STAGE_TABLE_DDL)


async def insert_fixes(conn: psycopg.AsyncConnection[Any], batch: FixBatch) -> int:
    """COPY *batch* into the staging table and insert its new rows; returns how many were new.

    Must run inside the caller's transaction (that is what makes a batch atomic with its dead
    letters), at most once per transaction: the staging table empties itself only at commit
    or rollback.
    """
    if len(batch) == 0:
        return 0
    payload = encode_fix_copy(batch)
    async with conn.cursor() as cur:
        async with cur.copy(COPY_STAGE_SQL) as copy:
            await copy.write(payload)
        # One round trip: plain INSERT first, ON CONFLICT DO NOTHING only after a
        # unique violation (migration 0002; same SQL as INSERT_FROM_STAGE_SQL).
        await cur.execute("SELECT fleetwatch_insert_staged_fixes()")
        row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


_MIN_QUERY_US = datetime_to_us(dt.datetime(1, 1, 2, tzinfo=dt.UTC))
_MAX_QUERY_US = datetime_to_us(dt.datetime(9999, 12, 30, tzinfo=dt.UTC))


def _batch_of(rows: list[tuple[Any, ...]]) -> FixBatch:
    """Rows of ``_FIX_SELECT_LIST`` as a columnar batch."""
    if not rows:
        return FixBatch.empty()
    columns = list(zip(*rows, strict=True))
    return FixBatch(
        **{
            name: np.array(columns[i], dtype=dtype)
            for i, (name, dtype) in enumerate(FIX_COLUMNS.items())
        }
    )


#: the stored fix's columns in FIX_COLUMNS order, as the SELECTs below read them back
_FIX_SELECT_LIST = """unit_id, (extract(epoch FROM t) * 1000000)::int8,
       (extract(epoch FROM recv_at) * 1000000)::int8,
       lat, lon, coalesce(speed_kmh, 'NaN'), coalesce(course, 'NaN'), coalesce(quality, -1),
       coalesce(sats, -1), coalesce(hdop, 'NaN'), coalesce(alt_m, 'NaN'), talker"""
_SELECT_FIXES = f"""
SELECT {_FIX_SELECT_LIST}
FROM fixes WHERE unit_id = %s AND t >= %s AND t < %s
ORDER BY t
"""


async def select_fixes_for_unit(
    conn: psycopg.AsyncConnection[Any], unit_id: str, start_us: int, end_us: int
) -> FixBatch:
    """Fixes of one unit with ``start_us <= t < end_us``, ordered by fix time.

    Bounds beyond what a datetime holds (years 1-9999) are clamped, so ``0, 2**63 - 1`` works.
    """
    lo, hi = (min(max(x, _MIN_QUERY_US), _MAX_QUERY_US) for x in (start_us, end_us))
    cur = await conn.execute(_SELECT_FIXES, (unit_id, us_to_datetime(lo), us_to_datetime(hi)))
    return _batch_of(await cur.fetchall())


_SELECT_RECENT = f"""
SELECT {_FIX_SELECT_LIST}
FROM fixes WHERE t >= %s AND t < %s
ORDER BY recv_at, unit_id, t
"""


async def select_recent_fixes(
    conn: psycopg.AsyncConnection[Any], start_us: int, end_us: int
) -> FixBatch:
    """Every unit's fixes with ``start_us <= t < end_us``, in receive order: what the engine
    re-reads at start to rebuild its state (the last ``horizon_s``)."""
    lo, hi = (min(max(x, _MIN_QUERY_US), _MAX_QUERY_US) for x in (start_us, end_us))
    cur = await conn.execute(_SELECT_RECENT, (us_to_datetime(lo), us_to_datetime(hi)))
    return _batch_of(await cur.fetchall())


_SELECT_LAST = f"""
SELECT DISTINCT ON (unit_id) {_FIX_SELECT_LIST}
FROM fixes WHERE t >= %s AND t < %s
ORDER BY unit_id, t DESC
"""


async def select_last_fixes(
    conn: psycopg.AsyncConnection[Any], start_us: int, end_us: int
) -> FixBatch:
    """The newest fix (by fix time) of every unit that has one with ``start_us <= t <
    end_us``, by unit id, in one query: what the decoder's filter is seeded with at start."""
    lo, hi = (min(max(x, _MIN_QUERY_US), _MAX_QUERY_US) for x in (start_us, end_us))
    cur = await conn.execute(_SELECT_LAST, (us_to_datetime(lo), us_to_datetime(hi)))
    return _batch_of(await cur.fetchall())


async def select_newest_fix_us(
    conn: psycopg.AsyncConnection[Any], start_us: int, end_us: int
) -> int | None:
    """The newest stored fix time with ``start_us <= t < end_us`` (None: none): where the
    stored data ends, which a restart reads back from (the bounds keep it to a partition or
    two)."""
    lo, hi = (min(max(x, _MIN_QUERY_US), _MAX_QUERY_US) for x in (start_us, end_us))
    cur = await conn.execute(
        "SELECT (extract(epoch FROM max(t)) * 1000000)::int8 FROM fixes WHERE t >= %s AND t < %s",
        (us_to_datetime(lo), us_to_datetime(hi)),
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def count_fixes(conn: psycopg.AsyncConnection[Any], unit_id: str | None = None) -> int:
    if unit_id is None:
        cur = await conn.execute("SELECT count(*) FROM fixes")
    else:
        cur = await conn.execute("SELECT count(*) FROM fixes WHERE unit_id = %s", (unit_id,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0

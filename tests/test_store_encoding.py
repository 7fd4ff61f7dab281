"""The store's pure parts: the numpy-built binary COPY stream, the partition plan, migration
files.  No database here: the stream is checked against a per-row ``struct`` reference encoder
written straight from the PostgreSQL COPY BINARY format description."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.fixes import Fix, FixBatch
from store.errors import MigrationError
from store.fixes import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    PG_EPOCH_OFFSET_US,
    STAGE_COLUMNS,
    UnencodableText,
    encode_fix_copy,
)
from store.migrate import load_migrations
from store.partitions import days_of, days_to_create, partition_name

UNITS = ["u1", "unit-0002", "ü3", "TRUCK-ΩΩ-7", "a" * 40, ""]
TALKERS = ["GP", "GN", "BD", "G", "QZS"]

opt_f32 = st.one_of(st.just(math.nan), st.floats(-1e6, 1e6, width=32))
fix_st = st.builds(
    Fix,
    unit_id=st.sampled_from(UNITS),
    t_us=st.one_of(st.integers(-(2**40), 2**52), st.sampled_from([0, 1, 10**15])),  # + repeats
    recv_us=st.integers(-(2**40), 2**52),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed_kmh=opt_f32,
    course=opt_f32,
    quality=st.integers(-1, 8),
    sats=st.integers(-1, 40),
    hdop=opt_f32,
    alt_m=opt_f32,
    talker=st.sampled_from(TALKERS),
)


def reference_row(ord_: int, f: Fix) -> list[bytes | None]:
    """Field payloads of one staging row, one ``struct.pack`` each (the slow, obvious way)."""
    return [
        struct.pack(">i", ord_),
        struct.pack(">q", f.t_us - PG_EPOCH_OFFSET_US),
        struct.pack(">q", f.recv_us - PG_EPOCH_OFFSET_US),
        struct.pack(">d", f.lat),
        struct.pack(">d", f.lon),
        struct.pack(">f", f.speed_kmh),
        struct.pack(">f", f.course),
        struct.pack(">h", f.quality),
        struct.pack(">h", f.sats),
        struct.pack(">f", f.hdop),
        struct.pack(">f", f.alt_m),
        f.unit_id.encode(),
        f.talker.encode(),
    ]


def parse_copy(stream: bytes) -> list[list[bytes | None]]:
    """Split a binary COPY stream into rows of field payloads (NULL = None)."""
    assert stream.startswith(COPY_SIGNATURE)
    pos = len(COPY_SIGNATURE)
    rows: list[list[bytes | None]] = []
    while True:
        (nfields,) = struct.unpack_from(">h", stream, pos)
        pos += 2
        if nfields == -1:
            break
        row: list[bytes | None] = []
        for _ in range(nfields):
            (length,) = struct.unpack_from(">i", stream, pos)
            pos += 4
            if length == -1:
                row.append(None)
            else:
                row.append(stream[pos : pos + length])
                pos += length
        rows.append(row)
    assert pos == len(stream), "bytes after the trailer"
    return rows


@given(st.lists(fix_st, max_size=40))
def test_copy_stream_matches_the_per_row_reference(fixes: list[Fix]) -> None:
    stream = encode_fix_copy(FixBatch.from_fixes(fixes))
    rows = parse_copy(stream)
    first: dict[tuple[str, int], int] = {}
    for i, f in enumerate(fixes):
        first.setdefault((f.unit_id, f.t_us), i)  # the first of duplicates in batch order wins
    assert len(rows) == len(first)
    assert all(len(r) == len(STAGE_COLUMNS) for r in rows)
    # rows are sorted and grouped by text length: the ord column says which fix each one is
    by_ord = {struct.unpack(">i", r[0] or b"")[0]: r for r in rows}
    assert sorted(by_ord) == sorted(first.values())
    for i in by_ord:
        assert by_ord[i] == reference_row(i, fixes[i])


def test_empty_batch_is_signature_and_trailer() -> None:
    assert encode_fix_copy(FixBatch.empty()) == COPY_SIGNATURE + COPY_TRAILER


def test_nul_in_unit_id_is_refused_not_truncated() -> None:
    batch = FixBatch.from_fixes([Fix(unit_id="u\x00x", t_us=0, recv_us=0, lat=1.0, lon=1.0)])
    with pytest.raises(UnencodableText):
        encode_fix_copy(batch)


@given(st.lists(st.integers(-(2**45), 2**45), min_size=1, max_size=50))
def test_days_of_floors_towards_the_past(ts: list[int]) -> None:
    days = days_of(np.array(ts, dtype=np.int64)).tolist()
    assert days == sorted({t // 86_400_000_000 for t in ts})


@given(
    batch_days=st.sets(st.integers(19_000, 21_000), max_size=20),
    known=st.sets(st.integers(19_000, 21_000), max_size=20),
    today=st.integers(19_500, 20_500),
    ahead=st.integers(0, 10),
    late=st.integers(0, 400),
)
def test_partition_plan(
    batch_days: set[int], known: set[int], today: int, ahead: int, late: int
) -> None:
    plan = days_to_create(batch_days, known, today=today, days_ahead=ahead, max_late_days=late)
    assert plan == sorted(set(plan)), "sorted, no repeats"
    assert not set(plan) & known, "never re-creates a known partition"
    for d in range(today, today + ahead + 1):
        assert d in plan or d in known, "today and the days ahead always exist afterwards"
    for d in batch_days:
        if today - late <= d <= today + ahead:
            assert d in plan or d in known, "a batch day in the window gets its partition"
        else:
            assert d not in plan, "a batch day outside the window goes to DEFAULT"


def test_partition_names_are_utc_days() -> None:
    assert partition_name(0) == "fixes_p19700101"
    assert partition_name(-1) == "fixes_p19691231"
    assert partition_name(20_415) == "fixes_p20251123"


def test_shipped_migrations_are_numbered_from_one() -> None:
    migs = load_migrations()
    assert [m.version for m in migs] == list(range(1, len(migs) + 1))
    assert all(m.sql.strip() for m in migs)


def test_migration_files_load_in_numeric_order(tmp_path: Path) -> None:
    for name in ["0002_b.sql", "0010_j.sql", "0001_a.sql"] + [
        f"{i:04d}_x{i}.sql" for i in range(3, 10)
    ]:
        (tmp_path / name).write_text(f"-- {name}\n")
    (tmp_path / "README.md").write_text("not a migration")
    assert [m.version for m in load_migrations(tmp_path)] == list(range(1, 11))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "expected 0002"),
        (["0001_a.sql", "0001_b.sql"], "expected 0002"),
        (["0002_b.sql"], "expected 0001"),
        (["0001_a.sql", "2_b.sql"], "not named"),
    ],
)
def test_migration_gaps_duplicates_and_bad_names_are_refused(
    tmp_path: Path, files: list[str], message: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=message):
        load_migrations(tmp_path)

"""The spool's record body: one decoded batch (fix columns + dead letters) as bytes, and back.

Sans-I/O: two pure functions.  The spool stores what the ingest shell decoded, so the drain
writes to PostgreSQL exactly what a direct write would have written; the round trip must be
exact, NaN and the ``-1`` "unknown" sentinels included (tests/test_spool_codec.py checks it
with Hypothesis).

Layout (little-endian, version 1)::

    "FWS1" | n_fixes u32 | n_dead u32
    numeric columns in FIX_COLUMNS order, raw (n_fixes * itemsize each)
    per text column: itemsize u32 | n_distinct u32 | each distinct value (u32 len + UTF-8)
                     | codes (n_fixes * i32)
    per dead letter: recv_us i64 | has_unit u8 | topic, unit_id, reason, detail, payload,
                     source (u32 len + bytes each; text as UTF-8 with surrogates passed)

The text columns are dictionary-coded (a batch holds few distinct unit ids and talkers): 4 bytes
a row instead of numpy's 4 bytes a character.  About 58 bytes a fix in all.  The checksum
over the body is the spool file's job (store/spool_file.py), not this module's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core.fixes import FIX_COLUMNS, DeadLetter, FixBatch

MAGIC = b"FWS1"
_HEADER = struct.Struct("<4sII")
_U32 = struct.Struct("<I")
_DEAD_HEAD = struct.Struct("<qB")
_TEXT_COLUMNS = tuple(n for n, d in FIX_COLUMNS.items() if np.dtype(d).kind == "U")
_NUMERIC: tuple[tuple[str, np.dtype[np.generic]], ...] = tuple(
    (n, np.dtype(d).newbyteorder("<")) for n, d in FIX_COLUMNS.items() if np.dtype(d).kind != "U"
)
#: bytes a fix costs in the body besides its text-column dictionaries
FIXED_BYTES_PER_FIX = sum(d.itemsize for _, d in _NUMERIC) + 4 * len(_TEXT_COLUMNS)


class SpoolRecordCorrupt(ValueError):
    """A spool record's body does not parse: the record is skipped (and counted), never drained."""


def _text(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def encode_batch(fixes: FixBatch, dead_letters: Sequence[DeadLetter]) -> bytes:
    """The record body of one decoded batch (see the module docstring for the layout)."""
    n = len(fixes)
    parts: list[bytes] = [_HEADER.pack(MAGIC, n, len(dead_letters))]
    for name, dtype in _NUMERIC:
        parts.append(np.ascontiguousarray(getattr(fixes, name), dtype=dtype).tobytes())
    for name in _TEXT_COLUMNS:
        col: npt.NDArray[np.str_] = getattr(fixes, name)
        uniq, codes = np.unique(col, return_inverse=True)
        parts.append(_U32.pack(col.dtype.itemsize) + _U32.pack(len(uniq)))
        for value in uniq.tolist():
            b = _text(value)
            parts.append(_U32.pack(len(b)) + b)
        parts.append(codes.reshape(-1).astype("<i4").tobytes())
    for d in dead_letters:
        parts.append(_DEAD_HEAD.pack(d.recv_us, d.unit_id is not None))
        for field in (d.topic, d.unit_id or "", d.reason, d.detail):
            b = _text(field)
            parts.append(_U32.pack(len(b)) + b)
        for raw in (bytes(d.payload), bytes(d.source)):
            parts.append(_U32.pack(len(raw)) + raw)
    return b"".join(parts)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise SpoolRecordCorrupt(
                f"record body truncated: wanted {n} bytes at offset {self.pos} of {len(self.buf)}"
            )
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def blob(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        try:
            return self.blob().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise SpoolRecordCorrupt(f"record body holds invalid UTF-8: {e}") from e


def decode_batch(body: bytes) -> tuple[FixBatch, list[DeadLetter]]:
    """Inverse of :func:`encode_batch`; raises :class:`SpoolRecordCorrupt` on malformed input."""
    r = _Reader(body)
    magic, n, n_dead = _HEADER.unpack(r.take(_HEADER.size))
    if magic != MAGIC:
        raise SpoolRecordCorrupt(f"record body starts with {magic!r}, not {MAGIC!r}")
    cols: dict[str, npt.NDArray[np.generic]] = {}
    for name, dtype in _NUMERIC:
        raw = r.take(n * dtype.itemsize)
        cols[name] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    for name in _TEXT_COLUMNS:
        itemsize = r.u32()
        if itemsize % 4:
            raise SpoolRecordCorrupt(f"column {name}: itemsize {itemsize} is not a multiple of 4")
        n_uniq = r.u32()
        if n_uniq > max(n, 1):
            raise SpoolRecordCorrupt(f"column {name}: {n_uniq} distinct values for {n} rows")
        dtype_u = np.dtype(f"<U{itemsize // 4}")
        uniq = np.array([r.text() for _ in range(n_uniq)], dtype=dtype_u)
        codes = np.frombuffer(r.take(4 * n), dtype="<i4").astype(np.intp)
        if n and (n_uniq == 0 or int(codes.min()) < 0 or int(codes.max()) >= n_uniq):
            raise SpoolRecordCorrupt(f"column {name}: a code points outside its dictionary")
        cols[name] = uniq[codes] if n else np.empty(0, dtype=dtype_u)
    dead: list[DeadLetter] = []
    for _ in range(n_dead):
        recv_us, has_unit = _DEAD_HEAD.unpack(r.take(_DEAD_HEAD.size))
        topic, unit_id, reason, detail = r.text(), r.text(), r.text(), r.text()
        payload, source = r.blob(), r.blob()
        dead.append(
            DeadLetter(
                topic=topic,
                unit_id=unit_id if has_unit else None,
                reason=reason,
                detail=detail,
                payload=payload,
                recv_us=int(recv_us),
                source=source,
            )
        )
    if r.pos != len(body):
        raise SpoolRecordCorrupt(f"{len(body) - r.pos} trailing bytes after the record body")
    return FixBatch(**cols), dead  # type: ignore[arg-type]

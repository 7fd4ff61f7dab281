"""The spool on disk: one SQLite file in WAL mode, ``synchronous=FULL``; blocking calls.

Why SQLite rather than our own segment files (docs/spool.md has the measurements): an append is
one transaction whose COMMIT fsyncs the WAL, so "appended" means "durable" with no code of ours
between the bytes and the disk; a crash during an append leaves a WAL tail whose frame
checksums do not match, and SQLite's recovery discards it (that batch was never acknowledged:
the broker redelivers it); deleting a drained record is a transaction too, so there is no
cursor file to keep in step.  On top of that, each record carries a CRC-32 of its body, checked
at read: a record whose bytes changed underneath (a torn page, bit rot, a hand edit) is
reported by :meth:`SpoolFile.read_oldest` as corrupt, and the caller skips and counts it.

Every method blocks (disk I/O and fsync): the async sink (store/spool.py) calls them on one
dedicated worker thread, never on the event loop, and never from two threads at once.
"""

from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path

#: the schema version in ``PRAGMA user_version``; a file of another version is refused
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- append order, never reused
    appended_us  INTEGER NOT NULL,                   -- wall clock at append, µs since epoch
    n_fixes      INTEGER NOT NULL,
    n_dead       INTEGER NOT NULL,
    crc          INTEGER NOT NULL,                   -- zlib.crc32 of body
    body         BLOB    NOT NULL                    -- store/spool_codec.py
)
"""


class SpoolFileError(Exception):
    """The spool file cannot be opened or used (wrong format, unreadable, disk full).

    The message names the file: move it aside to start with an empty spool (its batches are
    then lost unless drained by hand), or fix the disk and restart.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledRecord:
    """One record read back; ``intact`` is False when its CRC does not match its body."""

    seq: int
    appended_us: int
    n_fixes: int
    n_dead: int
    body: bytes
    intact: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolLevel:
    """What the file holds now (gauges)."""

    batches: int
    fixes: int
    bytes: int  # record bodies
    oldest_appended_us: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    """What :class:`SpoolFile` found when it opened a file that was not closed cleanly.

    A clean close checkpoints and deletes the ``-wal`` file; a leftover one means the process
    died (or another is using the file).  SQLite replays its committed transactions and drops
    the rest; ``torn_tail_bytes`` > 0 means the WAL ended inside a frame: an append was cut
    short by the crash (never acknowledged, so the broker redelivers that batch)."""

    wal_bytes: int
    torn_tail_bytes: int


def inspect_wal(path: Path) -> Recovery | None:
    """Look at ``<path>-wal`` before SQLite opens it (None: no leftover WAL, a clean state).

    The WAL is a 32-byte header (page size at bytes 8-11, big-endian) and frames of a 24-byte
    header plus one page; a length that is not a whole number of frames is a torn write."""
    wal = Path(f"{path}-wal")
    try:
        size = wal.stat().st_size
        with wal.open("rb") as f:
            header = f.read(32)
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    page_size = int.from_bytes(header[8:12], "big") if len(header) == 32 else 0
    if page_size < 512:  # not even a whole header: everything in it is torn
        return Recovery(wal_bytes=size, torn_tail_bytes=size)
    return Recovery(wal_bytes=size, torn_tail_bytes=(size - 32) % (24 + page_size))


class SpoolFile:
    """Append-only batches in append order; delete after a successful drain.  Not thread-safe:
    one caller thread at a time (the sink's worker thread).

    ``recovery`` is not None when the file was not closed cleanly (see :class:`Recovery`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path = Path(path)
        try:
            self.recovery = inspect_wal(path)
        except OSError as e:
            raise SpoolFileError(f"cannot read the spool's WAL {path}-wal: {e}") from e
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise SpoolFileError(f"cannot open the spool file {path}: {e}") from e
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise SpoolFileError(f"spool file {path}: the file system refuses WAL mode")
            self._db.execute("PRAGMA synchronous=FULL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, FORMAT_VERSION):
                raise SpoolFileError(
                    f"spool file {path} has format {version}, this fleetwatch reads "
                    f"{FORMAT_VERSION}: drain it with the version that wrote it, or move it aside"
                )
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            self._db.execute("COMMIT")
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(n_fixes), 0), coalesce(sum(length(body)), 0) "
                "FROM spooled"
            ).fetchone()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise SpoolFileError(
                f"spool file {path} is unreadable ({e}): move it aside to start empty"
            ) from e
        except BaseException:
            self._db.close()
            raise
        self._batches, self._fixes, self._bytes = int(row[0]), int(row[1]), int(row[2])
        self._oldest_us = self._query_oldest()

    def _query_oldest(self) -> int | None:
        row = self._db.execute("SELECT appended_us FROM spooled ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def level(self) -> SpoolLevel:
        return SpoolLevel(
            batches=self._batches,
            fixes=self._fixes,
            bytes=self._bytes,
            oldest_appended_us=self._oldest_us,
        )

    def append(self, body: bytes, *, n_fixes: int, n_dead: int, appended_us: int) -> int:
        """Store one record durably (COMMIT = WAL fsync); returns its sequence number."""
        try:
            cur = self._db.execute(
                "INSERT INTO spooled (appended_us, n_fixes, n_dead, crc, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (appended_us, n_fixes, n_dead, zlib.crc32(body), body),
            )
        except sqlite3.Error as e:
            raise SpoolFileError(f"cannot append to the spool file {self.path}: {e}") from e
        seq = cur.lastrowid
        assert seq is not None
        self._batches += 1
        self._fixes += n_fixes
        self._bytes += len(body)
        if self._oldest_us is None:
            self._oldest_us = appended_us
        return int(seq)

    def read_oldest(self, *, max_fixes: int, max_records: int) -> list[SpooledRecord]:
        """The oldest records, in append order: at least one (if any), then more while their
        fixes add up to at most *max_fixes*, at most *max_records* in all."""
        rows = self._db.execute(
            "SELECT seq, appended_us, n_fixes, n_dead, crc, CAST(body AS BLOB) FROM spooled "
            "ORDER BY seq LIMIT ?",
            (max_records,),
        ).fetchall()
        out: list[SpooledRecord] = []
        total = 0
        for seq, appended_us, n_fixes, n_dead, crc, body in rows:
            if out and total + int(n_fixes) > max_fixes:
                break
            total += int(n_fixes)
            body = bytes(body)
            out.append(
                SpooledRecord(
                    seq=int(seq),
                    appended_us=int(appended_us),
                    n_fixes=int(n_fixes),
                    n_dead=int(n_dead),
                    body=body,
                    intact=zlib.crc32(body) == int(crc),
                )
            )
        return out

    def delete(self, records: list[SpooledRecord]) -> None:
        """Forget drained (or skipped) records, in one transaction."""
        if not records:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM spooled WHERE seq = ?", [(r.seq,) for r in records])
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise SpoolFileError(f"cannot delete from the spool file {self.path}: {e}") from e
        self._batches -= len(records)
        self._fixes -= sum(r.n_fixes for r in records)
        self._bytes -= sum(len(r.body) for r in records)
        self._oldest_us = self._query_oldest()

    def close(self) -> None:
        """Checkpoint and close (a crash instead of this loses nothing: the WAL is replayed)."""
        self._db.close()

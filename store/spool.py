"""A bounded local durable spool in front of the PostgreSQL store, behind the same sink protocol.

Why: the ingest shell acknowledges a batch's MQTT messages only after ``write_batch`` returned
(reliability #1).  With PostgreSQL down, a plain store makes ``write_batch`` fail, the shell
retries, stops reading, and within the broker's in-flight window ingestion - and the engine fed
from it - stops.  :class:`SpoolingSink` makes ``write_batch`` return after the batch is either
committed to PostgreSQL *or* appended to a local SQLite file and fsynced, so a database outage
costs disk space, not ingestion (reliability #3).  A separate drain task moves spooled batches
to PostgreSQL, oldest first.

Rules (docs/spool.md):

* **Fast path.** Spool empty: write straight to PostgreSQL (no extra fsync).  On
  :class:`~store.errors.StoreUnavailable`, or whenever the spool is not empty (order: a newer
  batch must not overtake older spooled ones), append to the spool instead.
* **Drain.** :meth:`SpoolingSink.run_drain` (a task the caller owns, named, cancellable) writes
  the oldest records through the store's idempotent ``write_batch`` and deletes them only after
  the COMMIT.  A crash between COMMIT and delete re-drains them: the fixes key ``(unit_id, t)``
  and the dead-letter fingerprints make that a no-op, so nothing is stored twice.
* **Bounded.** ``max_bytes`` of record bodies; when an append would exceed it, ``write_batch``
  waits (no ack: the broker keeps the backlog) and the wait is counted (reliability #4).
* **Corruption.** A record whose CRC or body does not check out is skipped, logged and counted
  by reason; the records before and after it are drained.
* **Refused data.** A spooled batch the database refuses (:class:`~store.errors.StoreWriteError`)
  is bisected as the ingest shell does on its direct path: each refused fix becomes a dead
  letter ``store_refused``; a dead letter refused even with ASCII-escaped text is dropped,
  counted and logged (never silently), so one bad row never blocks the drain.

All file I/O runs on one worker thread of the sink's own (SQLite connections are not
thread-safe, and the event loop must never wait for an fsync).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar

import numpy as np

from core.fixes import DeadLetter, FixBatch
from store.errors import StoreUnavailable, StoreWriteError
from store.spool_codec import SpoolRecordCorrupt, decode_batch, encode_batch
from store.spool_file import SpooledRecord, SpoolFile, SpoolFileError, SpoolLevel

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Default bound: 2 GiB of record bodies.  A fix costs 58 bytes plus its share of the batch's
#: unit-id dictionary in the spool (61.5 bytes measured for the design fleet, 68.5 when each
#: 2,000-fix batch holds 1,500 units; store/spool_codec.py), so this holds >= 31 M fixes: 15
#: minutes at 34,000 fixes/s (the service's measured peak is 33.6k), 5.8 hours of the design
#: fleet (1,500 fixes/s: 15 minutes of it is 83 MB).
DEFAULT_MAX_BYTES = 2 * 1024**3


class WriteResultLike(Protocol):
    @property
    def inserted(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def dead_letters(self) -> int: ...


class PgSink(Protocol):
    """What the spool needs from ``store.Store``."""

    async def write_batch(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResultLike: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolWriteResult:
    """``write_batch``'s answer.  A spooled batch is durable but not yet in PostgreSQL: its
    ``inserted``/``dead_letters`` are 0 here and counted by the drain
    (:attr:`SpoolStatistics.drained_fixes_inserted`) when it lands."""

    inserted: int
    duplicates: int
    dead_letters: int
    spooled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolStatistics:
    """Counters since open (gauges where noted), for /metrics."""

    batches: int  # gauge: records in the spool
    fixes: int  # gauge
    bytes: int  # gauge: record bodies
    max_bytes: int  # gauge: the bound
    oldest_age_s: float | None  # gauge: age of the oldest record, None when empty
    waiting_for_space: int  # gauge: write_batch calls waiting now
    direct_batches: int  # written straight to PostgreSQL
    spooled_batches: int  # appended to the spool
    spooled_fixes: int
    drained_batches: int  # records committed to PostgreSQL and deleted
    drained_fixes_inserted: int
    drained_fixes_duplicate: int
    drained_dead_letters: int
    drain_retries: int  # drain attempts that met an unavailable database
    full_waits: int  # write_batch calls that had to wait for space
    full_wait_s: float  # total time spent waiting for space
    skipped: dict[str, int]  # records skipped: "checksum", "undecodable", "torn_tail"
    unclean_opens: int  # 1 when the file was not closed cleanly (a crash): WAL replayed
    refused_rows: int  # rows the database refused during a drain (kept as dead letters)
    dropped_rows: int  # refused even as dead letters: dropped, logged


class SpoolingSink:
    """``write_batch`` like ``store.Store``'s, durable through a database outage.

    Open with :func:`open_spooling_sink` (or :meth:`open`), run :meth:`run_drain` in the
    caller's task group, :meth:`aclose` at the end (the store itself stays the caller's).
    """

    def __init__(
        self,
        store: PgSink,
        spool: SpoolFile,
        executor: concurrent.futures.ThreadPoolExecutor,
        *,
        max_bytes: int,
        drain_max_fixes: int,
        retry_initial_s: float,
        retry_max_s: float,
        clock_us: Callable[[], int],
        monotonic_s: Callable[[], float],
    ) -> None:
        self._store = store
        self._spool = spool
        self._executor = executor
        self._max_bytes = max_bytes
        self._drain_max_fixes = drain_max_fixes
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock_us = clock_us
        self._mono = monotonic_s
        self._level = spool.level()
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._closed = False
        self._waiting = 0
        self._direct = 0
        self._spooled = 0
        self._spooled_fixes = 0
        self._drained = 0
        self._drained_inserted = 0
        self._drained_duplicates = 0
        self._drained_dead = 0
        self._drain_retries = 0
        self._full_waits = 0
        self._full_wait_s = 0.0
        self._skipped: dict[str, int] = {}
        self._unclean_opens = 0
        self._refused = 0
        self._dropped = 0

    @classmethod
    async def open(
        cls,
        path: Path | str,
        store: PgSink,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        drain_max_fixes: int = 20_000,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        monotonic_s: Callable[[], float] = time.monotonic,
    ) -> SpoolingSink:
        """Open (or create) the spool file at *path*; what it holds from a previous run is
        drained first.  ``max_bytes``: bound on spooled record bodies (None is not offered: an
        unbounded disk buffer ends in a full disk).  ``drain_max_fixes``: fixes per drain
        transaction (several records merged, so a backlog drains faster than it came in).
        ``retry_*_s``: the drain's backoff while the database is unavailable.
        Raises :class:`~store.spool_file.SpoolFileError` when the file is unusable."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if drain_max_fixes < 1:
            raise ValueError(f"drain_max_fixes must be >= 1, got {drain_max_fixes}")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fleetwatch-spool")
        try:
            spool = await asyncio.get_running_loop().run_in_executor(executor, SpoolFile, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        sink = cls(
            store,
            spool,
            executor,
            max_bytes=max_bytes,
            drain_max_fixes=drain_max_fixes,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
            clock_us=clock_us,
            monotonic_s=monotonic_s,
        )
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(spool.path.parent).free
            if free < max_bytes - sink._level.bytes:
                log.warning(
                    "spool %s may grow by %d more bytes but its disk has %d free: a long outage "
                    "could fill the disk (the service then stops without acknowledging); lower "
                    "FLEETWATCH_SPOOL_MAX_BYTES or free space",
                    path,
                    max_bytes - sink._level.bytes,
                    free,
                )
        if spool.recovery is not None:
            r = spool.recovery
            log.warning(
                "spool %s was not closed cleanly (%d WAL bytes left): SQLite replayed its "
                "committed appends%s",
                path,
                r.wal_bytes,
                f"; a torn append of {r.torn_tail_bytes} bytes was discarded (never "
                "acknowledged: the broker redelivers it)"
                if r.torn_tail_bytes
                else "",
            )
            sink._unclean_opens = 1
            if r.torn_tail_bytes:
                sink._skipped["torn_tail"] = 1
        if sink._level.batches:
            log.warning(
                "spool %s holds %d batches (%d fixes) from a previous run: draining them first",
                path,
                sink._level.batches,
                sink._level.fixes,
            )
        return sink

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file (what it holds stays for the next run) and the worker thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._in_thread(self._spool.close)
        finally:
            self._executor.shutdown(wait=True)

    async def _in_thread(self, fn: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args, **kwargs)
        )

    def statistics(self) -> SpoolStatistics:
        lv = self._level
        oldest = (
            None
            if lv.oldest_appended_us is None
            else max(0.0, (self._clock_us() - lv.oldest_appended_us) / 1e6)
        )
        return SpoolStatistics(
            batches=lv.batches,
            fixes=lv.fixes,
            bytes=lv.bytes,
            max_bytes=self._max_bytes,
            oldest_age_s=oldest,
            waiting_for_space=self._waiting,
            direct_batches=self._direct,
            spooled_batches=self._spooled,
            spooled_fixes=self._spooled_fixes,
            drained_batches=self._drained,
            drained_fixes_inserted=self._drained_inserted,
            drained_fixes_duplicate=self._drained_duplicates,
            drained_dead_letters=self._drained_dead,
            drain_retries=self._drain_retries,
            full_waits=self._full_waits,
            full_wait_s=self._full_wait_s,
            skipped=dict(self._skipped),
            unclean_opens=self._unclean_opens,
            refused_rows=self._refused,
            dropped_rows=self._dropped,
        )

    # -- the write path --------------------------------------------------------------------------
    async def write_batch(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter] = ()
    ) -> SpoolWriteResult:
        """Return once the batch is committed to PostgreSQL or fsynced in the spool.

        Waits while the spool is full (the caller must not acknowledge meanwhile: that is the
        backpressure).  Raises :class:`StoreWriteError` from the direct path (the caller
        isolates refused rows, as without a spool) and
        :class:`~store.spool_file.SpoolFileError` when the disk fails us.
        """
        async with self._write_lock:  # one writer at a time keeps the spool in call order
            if self._closed:
                raise SpoolFileError("write_batch on a closed spool")
            if self._level.batches == 0:
                try:
                    r = await self._store.write_batch(fixes, dead_letters)
                except StoreUnavailable as exc:
                    log.warning("database unavailable, spooling batches to disk: %s", exc)
                else:
                    self._direct += 1
                    return SpoolWriteResult(
                        inserted=r.inserted,
                        duplicates=r.duplicates,
                        dead_letters=r.dead_letters,
                        spooled=False,
                    )
            await self._append(fixes, list(dead_letters))
            return SpoolWriteResult(inserted=0, duplicates=0, dead_letters=0, spooled=True)

    async def _append(self, fixes: FixBatch, dead_letters: list[DeadLetter]) -> None:
        body = await self._in_thread(encode_batch, fixes, dead_letters)
        async with self._changed:
            if not self._fits(len(body)):
                self._full_waits += 1
                self._waiting += 1
                t0 = self._mono()
                log.warning(
                    "spool full (%d of %d bytes): holding acknowledgements until the drain "
                    "frees space",
                    self._level.bytes,
                    self._max_bytes,
                )
                try:
                    await self._changed.wait_for(lambda: self._fits(len(body)))
                finally:
                    self._waiting -= 1
                    self._full_wait_s += self._mono() - t0
        await self._in_thread(self._append_in_thread, body, len(fixes), len(dead_letters))
        self._spooled += 1
        self._spooled_fixes += len(fixes)
        async with self._changed:
            self._changed.notify_all()

    def _fits(self, size: int) -> bool:
        # an empty spool takes any record, or a record above the bound would wait forever
        return self._level.batches == 0 or self._level.bytes + size <= self._max_bytes

    def _append_in_thread(self, body: bytes, n_fixes: int, n_dead: int) -> None:
        self._spool.append(body, n_fixes=n_fixes, n_dead=n_dead, appended_us=self._clock_us())
        self._level = self._spool.level()

    # -- the drain ---------------------------------------------------------------------------
    async def run_drain(self) -> None:
        """Move spooled batches to PostgreSQL, oldest first, until cancelled.

        Run it as a named task in the caller's task group.  Cancelling it mid-write leaves the
        record in the spool; the next drain (this run or the next) writes it again, idempotently.
        """
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._level.batches > 0)
            await self.drain_once()

    async def drain_once(self) -> int:
        """Drain one group of oldest records (retrying while the database is unavailable);
        returns how many records left the spool."""
        records = await self._in_thread(
            self._spool.read_oldest, max_fixes=self._drain_max_fixes, max_records=1000
        )
        if not records:
            return 0
        good: list[SpooledRecord] = []
        batches: list[FixBatch] = []
        dead: list[DeadLetter] = []
        bad: list[SpooledRecord] = []
        for rec in records:
            try:
                if not rec.intact:
                    raise SpoolRecordCorrupt("CRC-32 of the body does not match")
                f, d = decode_batch(rec.body)
            except SpoolRecordCorrupt as exc:
                reason = "checksum" if not rec.intact else "undecodable"
                log.error(
                    "skipping spool record %d (%d fixes, %d dead letters, appended at %d µs): "
                    "%s: %s",
                    rec.seq,
                    rec.n_fixes,
                    rec.n_dead,
                    rec.appended_us,
                    reason,
                    exc,
                )
                self._skipped[reason] = self._skipped.get(reason, 0) + 1
                bad.append(rec)
                continue
            good.append(rec)
            batches.append(f)
            dead.extend(d)
        if good:
            fixes = FixBatch.concat(batches)
            try:
                r = await self._write_when_available(fixes, dead)
                inserted, duplicates, n_dead = r.inserted, r.duplicates, r.dead_letters
            except StoreWriteError as exc:
                log.error(
                    "the database refused spooled batches %d..%d (%s): isolating the refused rows",
                    good[0].seq,
                    good[-1].seq,
                    exc,
                )
                inserted, duplicates, n_dead = await self._write_isolating(
                    fixes, dead, 0, len(fixes) + len(dead)
                )
            self._drained += len(good)
            self._drained_inserted += inserted
            self._drained_duplicates += duplicates
            self._drained_dead += n_dead
        await self._in_thread(self._delete_in_thread, good + bad)
        async with self._changed:
            self._changed.notify_all()
        return len(good) + len(bad)

    def _delete_in_thread(self, records: list[SpooledRecord]) -> None:
        self._spool.delete(records)
        self._level = self._spool.level()

    async def _write_when_available(
        self, fixes: FixBatch, dead: Sequence[DeadLetter]
    ) -> WriteResultLike:
        """One transaction, retried with capped exponential backoff while the database is down;
        :class:`StoreWriteError` propagates."""
        wait_s = self._retry_initial_s
        while True:
            try:
                return await self._store.write_batch(fixes, dead)
            except StoreUnavailable as exc:
                self._drain_retries += 1
                log.info("spool drain: database unavailable, retrying in %.1f s: %s", wait_s, exc)
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, self._retry_max_s)

    async def _write_isolating(
        self, fixes: FixBatch, dead: Sequence[DeadLetter], lo: int, hi: int
    ) -> tuple[int, int, int]:
        """Rows ``lo:hi`` of (fixes, then dead letters), bisected down to the refused rows;
        returns (inserted, duplicates, dead letters).  Every part is idempotent, so a crash
        half-way re-runs it harmlessly."""
        n = len(fixes)
        part_fixes = fixes.take(np.arange(max(lo, 0), min(hi, n)))
        part_dead = list(dead[max(lo - n, 0) : max(hi - n, 0)])
        try:
            r = await self._write_when_available(part_fixes, part_dead)
            return r.inserted, r.duplicates, r.dead_letters
        except StoreWriteError as exc:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                a = await self._write_isolating(fixes, dead, lo, mid)
                b = await self._write_isolating(fixes, dead, mid, hi)
                return a[0] + b[0], a[1] + b[1], a[2] + b[2]
            return await self._write_refused_row(part_fixes, part_dead, exc)

    async def _write_refused_row(
        self, fixes: FixBatch, dead: list[DeadLetter], exc: Exception
    ) -> tuple[int, int, int]:
        self._refused += 1
        if len(fixes):
            fix = fixes.to_fixes()[0]
            letter = DeadLetter(
                topic=f"fleet/{fix.unit_id}/nmea",
                unit_id=fix.unit_id,
                reason="store_refused",
                detail=f"the database refused this fix: {exc}"[:500],
                payload=json.dumps(fix.to_json_dict()).encode()[:1024],
                recv_us=fix.recv_us,
            )
        else:
            d = dead[0]
            letter = dataclasses.replace(
                d,
                topic=ascii(d.topic)[1:-1],
                unit_id=None if d.unit_id is None else ascii(d.unit_id)[1:-1],
                detail=ascii(d.detail)[1:-1][:500],
            )
        try:
            r = await self._write_when_available(FixBatch.empty(), [letter])
        except StoreWriteError as again:
            self._dropped += 1
            log.error(
                "spool drain: dropping a row the database refuses even as a dead letter: %r (%s)",
                letter,
                again,
            )
            return 0, 0, 0
        return 0, 0, r.dead_letters


@contextlib.asynccontextmanager
async def open_spooling_sink(
    path: Path | str, store: PgSink, **kwargs: object
) -> AsyncIterator[SpoolingSink]:
    """``async with open_spooling_sink(path, store) as sink:`` — :meth:`SpoolingSink.open`
    then :meth:`SpoolingSink.aclose` (see there for the keyword arguments)."""
    sink = await SpoolingSink.open(path, store, **kwargs)  # type: ignore[arg-type]
    try:
        yield sink
    finally:
        await sink.aclose()


__all__ = [
    "DEFAULT_MAX_BYTES",
    "SpoolFileError",
    "SpoolLevel",
    "SpoolStatistics",
    "SpoolWriteResult",
    "SpoolingSink",
    "open_spooling_sink",
]

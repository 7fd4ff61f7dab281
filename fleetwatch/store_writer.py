"""The store writer: the engine's outbox publisher and the task that commits it.

The engine never waits for the database (design.md): :meth:`StoreWriter.publish` is a
``LiveEngine`` publisher that only converts the output to outbox records and appends them to a
bounded in-memory queue.  The ``store-writer`` task takes what queued, commits it through
:func:`store.outbox.write_records` (one transaction a batch, versions assigned by the store),
and during a database outage moves it to a local fsynced journal (store/outbox_journal.py) so
that memory stays bounded however long the outage lasts.  Once anything is journaled, later
batches are journaled behind it until the journal drained: records are stored in the order the
engine published them.  After recovery, or after a restart that finds a journal, the journal
drains oldest first; a batch is deleted from it only after its COMMIT, and re-draining one whose
delete was lost stores nothing twice (the outbox skips a record whose content is its id's latest
stored version, or an earlier one told before it: store.outbox.StoredHistory).

Overflow is visible, never silent: a full memory queue (the journal is missing, full or slower
than the engine) drops records, counted in ``fleetwatch_outbox_dropped_records_total`` and
logged.  What a crash loses from memory the restarted engine re-derives from the stored fixes,
and dispatcher commands are journaled durably (:meth:`StoreWriter.record_command`) to be
re-applied after a restart (:meth:`StoreWriter.commands_since`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schedule.stop_events import Command
from store.errors import StoreUnavailable, StoreWriteError
from store.outbox import (
    JournaledCommand,
    OutboxResult,
    load_commands_since,
    records_from_events,
    write_records,
)
from store.outbox_journal import Item, decode_items, encode_items
from store.spool_file import SpooledRecord, SpoolFile

log = logging.getLogger(__name__)
_T = TypeVar("_T")

WriteFn = Callable[[psycopg.AsyncConnection[Any], Sequence[Item]], Awaitable[OutboxResult]]
#: opens the writer's connection (default: psycopg to ``dsn``; tests inject a fake)
ConnectFn = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreWriterStatistics:
    queued: int  # records in memory now
    max_queued: int
    journal_batches: int
    journal_records: int
    journal_bytes: int
    oldest_journal_age_s: float | None
    committed_batches: int
    versions_inserted: int  # new versions in record_versions
    unchanged: int  # records already stored (re-derived, re-drained)
    commands: int
    journaled_records: int
    unavailable: int  # write attempts that met an unavailable database
    refused_records: int  # records PostgreSQL refused (logged, dropped)
    dropped_records: int  # memory queue full (logged)
    skipped_journal_records: int  # corrupt journal batches (logged)


class StoreWriter:
    """Publisher + task.  ``dsn``: the database; ``journal_path``: the outbox journal file
    (None: no journal — an outage longer than the memory queue then drops, counted)."""

    def __init__(
        self,
        dsn: str,
        *,
        journal_path: Path | str | None,
        clock_us: Callable[[], int],
        registry: CollectorRegistry | None = None,
        max_queued_records: int = 100_000,
        batch_records: int = 5_000,
        journal_max_bytes: int = 512 * 2**20,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        write_timeout_s: float = 30.0,
        command_timeout_s: float = 2.0,
        write: WriteFn = write_records,
        connect: ConnectFn | None = None,
    ) -> None:
        if max_queued_records < 1 or batch_records < 1:
            raise ValueError("max_queued_records and batch_records must be >= 1")
        self._dsn = dsn
        self._clock_us = clock_us
        self._queue: collections.deque[list[Item]] = collections.deque()  # publish groups
        self._queued = 0  # records in _queue
        self._resting = False  # the task is waiting with nothing in flight
        self._max_queued = max_queued_records
        self._batch = batch_records
        self._journal_max_bytes = journal_max_bytes
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._write_timeout_s = write_timeout_s
        self._write = write
        self._connect = connect or self._connect_dsn
        self._journal = None if journal_path is None else SpoolFile(journal_path)
        if self._journal is not None and self._journal.level().batches:
            lv = self._journal.level()
            log.warning(
                "outbox journal %s holds %d batches (%d records) from a previous run: "
                "draining them first",
                journal_path,
                lv.batches,
                lv.fixes,
            )
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._command_conn: psycopg.AsyncConnection[Any] | None = None
        self._command_lock = asyncio.Lock()
        self._command_timeout_s = command_timeout_s
        self._journal_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="outbox-journal"
        )
        self._wake = asyncio.Event()
        self._idle = asyncio.Condition()
        self._retry_wait_s = retry_initial_s
        self._retry_at = 0.0
        self._stats: dict[str, int] = collections.Counter()
        if registry is not None:
            registry.register(_Collector(self.statistics))

    # -- the publisher side (the engine task: never blocks) ----------------------------------------

    def publish(self, events: Sequence[Any]) -> None:
        """``LiveEngine.add_publisher(writer.publish)``: queue the stored records of *events*."""
        self._enqueue(records_from_events(events))

    async def record_command(
        self, cmd: Command, *, at_us: int, accepted: bool = True, refusal: str | None = None
    ) -> None:
        """Journal a dispatcher command; durable when it returns: committed to
        ``commands_journal``, or (database unavailable) appended to the fsynced local journal
        and written with the records when the database returns.  Call it after the engine
        accepted the command, before telling the dispatcher.  Raises :class:`StoreUnavailable`
        when the database is down and there is no journal, :class:`StoreWriteError` when the
        database refuses it."""
        item = JournaledCommand(at_us=at_us, command=cmd, accepted=accepted, refusal=refusal)
        async with self._command_lock:
            if not self._journaled():
                try:
                    async with asyncio.timeout(self._command_timeout_s):
                        if self._command_conn is None or self._command_conn.closed:
                            self._command_conn = await psycopg.AsyncConnection.connect(
                                self._dsn, connect_timeout=max(1, int(self._command_timeout_s))
                            )
                        await self._write(self._command_conn, [item])
                    self._stats["commands"] += 1
                    return
                except (psycopg.OperationalError, TimeoutError, OSError) as e:
                    conn, self._command_conn = self._command_conn, None
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            await conn.close()
                    if self._journal is None:
                        raise StoreUnavailable(
                            f"command not journaled: database unavailable ({e}) and no outbox "
                            "journal configured"
                        ) from e
                except psycopg.Error as e:
                    raise StoreWriteError(f"the database refused the command {cmd!r}: {e}") from e
            journal = self._journal
            assert journal is not None
            await self._in_journal_thread(
                journal.append, encode_items([item]), n_fixes=1, n_dead=0,
                appended_us=self._clock_us(),
            )  # fmt: skip
            self._stats["journaled"] += 1
            self._wake.set()

    async def commands_since(self, since_us: int) -> list[tuple[int, Command]]:
        """The restart hook's input: accepted commands journaled since *since_us* (the start
        of the service day), oldest first (:func:`store.outbox.load_commands_since`).  Re-apply
        each with ``now_us = at_us``, so that the re-derived versions (acknowledged_at, comment
        times) equal the stored ones and the outbox announces nothing twice."""
        async with await psycopg.AsyncConnection.connect(self._dsn) as conn:
            return await load_commands_since(conn, since_us)

    async def _in_journal_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Every journal call on one worker thread (SpoolFile is not thread-safe)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await loop.run_in_executor(self._journal_thread, call)

    def _enqueue(self, items: Iterable[Item]) -> None:
        """One publish call's records stay one group: they are committed in one transaction
        (an alert version and the exception version it causes, never one without the other),
        and dropped together when the queue is full (counted)."""
        group = list(items)
        if not group:
            return
        if self._queued + len(group) > self._max_queued:
            before = self._stats["dropped"]
            self._stats["dropped"] += len(group)
            if before == 0 or before // 10_000 != self._stats["dropped"] // 10_000:
                log.error(
                    "outbox queue full (%d records): %d records dropped so far; the "
                    "database and the journal are not keeping up",
                    self._max_queued,
                    self._stats["dropped"],
                )
            return
        self._queue.append(group)
        self._queued += len(group)
        self._resting = False
        self._wake.set()

    # -- the task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """The ``store-writer`` task: run it in the service's task group until cancelled.
        Cancelling it mid-write commits nothing of that batch (it is lost from memory, as in a
        crash; the journal's batches stay for the next run)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queue and (not self._journaled() or loop.time() < self._retry_at):
                    await self._notify_idle()
                    timeout = None if not self._journaled() else self._retry_at - loop.time()
                    try:
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                self._resting = False
                groups = self._take()
                batch = [it for g in groups for it in g]
                if batch and not self._journaled():
                    if loop.time() >= self._retry_at and await self._commit(batch):
                        continue
                    if self._journal is None:  # no journal: keep it in memory, retry later
                        self._requeue(groups)
                        await self._wait_retry()
                        continue
                    await self._append(groups, batch)
                elif batch:
                    await self._append(groups, batch)
                if self._journaled() and loop.time() >= self._retry_at:
                    await self._drain_some()
        finally:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def wait_idle(self) -> None:
        """Until nothing waits in memory, in flight or in the journal (tests, shutdown)."""
        async with self._idle:
            await self._idle.wait_for(
                lambda: self._resting and not self._queue and not self._journaled()
            )

    async def _notify_idle(self) -> None:
        self._resting = True  # the task waits: nothing in flight
        async with self._idle:
            self._idle.notify_all()

    async def _wait_retry(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._retry_at - loop.time()))

    def _journaled(self) -> bool:
        return self._journal is not None and self._journal.level().batches > 0

    def _take(self) -> list[list[Item]]:
        """Whole publish groups, up to ``batch_records`` records (at least one group)."""
        groups: list[list[Item]] = []
        n = 0
        while self._queue and (not groups or n + len(self._queue[0]) <= self._batch):
            g = self._queue.popleft()
            groups.append(g)
            n += len(g)
        self._queued -= n
        return groups

    def _requeue(self, groups: list[list[Item]]) -> None:
        self._queue.extendleft(reversed(groups))
        self._queued += sum(len(g) for g in groups)

    async def _append(self, groups: list[list[Item]], batch: list[Item]) -> None:
        journal = self._journal
        assert journal is not None
        body = encode_items(batch)
        lv = journal.level()
        if lv.batches and lv.bytes + len(body) > self._journal_max_bytes:
            # full: keep them in memory (bounded: the queue drops, counted, when it is full too)
            self._requeue(groups)
            log.warning("outbox journal full (%d bytes): records wait in memory", lv.bytes)
            await self._wait_retry()
            return
        await self._in_journal_thread(
            journal.append, body, n_fixes=len(batch), n_dead=0, appended_us=self._clock_us()
        )
        self._stats["journaled"] += len(batch)

    async def _drain_some(self) -> None:
        journal = self._journal
        assert journal is not None
        recs: list[SpooledRecord] = await self._in_journal_thread(
            journal.read_oldest, max_fixes=self._batch, max_records=1000
        )
        items: list[Item] = []
        for rec in recs:
            try:
                if not rec.intact:
                    raise ValueError("CRC-32 of the body does not match")
                items.extend(decode_items(rec.body))
            except ValueError as e:
                log.error("skipping outbox journal batch %d (%d records): %s",
                          rec.seq, rec.n_fixes, e)  # fmt: skip
                self._stats["skipped_journal"] += rec.n_fixes
        if items and not await self._commit(items):
            return
        await self._in_journal_thread(journal.delete, recs)

    async def _commit(self, items: list[Item]) -> bool:
        """One transaction; False when the database is unavailable (the caller keeps them)."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                conn = await self._connection()
                result = await self._write(conn, items)
        except (psycopg.OperationalError, TimeoutError, OSError) as e:
            await self._lost_connection()
            self._stats["unavailable"] += 1
            loop = asyncio.get_running_loop()
            self._retry_at = loop.time() + self._retry_wait_s
            log.info("outbox: database unavailable (%s); retrying in %.1f s", e, self._retry_wait_s)
            self._retry_wait_s = min(self._retry_wait_s * 2, self._retry_max_s)
            return False
        except psycopg.Error as e:
            await self._lost_connection()
            if len(items) == 1:
                self._stats["refused"] += 1
                log.error("outbox: the database refused %r: %s (dropped)", items[0], e)
                return True
            mid = len(items) // 2  # isolate the refused record; the others are stored in order
            return await self._commit(items[:mid]) and await self._commit(items[mid:])
        self._retry_wait_s = self._retry_initial_s
        self._retry_at = 0.0
        self._stats["batches"] += 1
        self._stats["inserted"] += result.inserted
        self._stats["unchanged"] += result.unchanged
        self._stats["commands"] += result.commands
        return True

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        return self._conn

    async def _connect_dsn(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._dsn, connect_timeout=max(1, int(self._write_timeout_s))
        )

    async def _lost_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def aclose(self) -> None:
        """After the task ended: close the command connection, the journal and its thread."""
        if self._command_conn is not None:
            await self._command_conn.close()
            self._command_conn = None
        if self._journal is not None:
            await self._in_journal_thread(self._journal.close)
        self._journal_thread.shutdown(wait=True)

    def statistics(self) -> StoreWriterStatistics:
        lv = self._journal.level() if self._journal is not None else None
        oldest = None
        if lv is not None and lv.oldest_appended_us is not None:
            oldest = max(0.0, (self._clock_us() - lv.oldest_appended_us) / 1e6)
        s = self._stats
        return StoreWriterStatistics(
            queued=self._queued,
            max_queued=self._max_queued,
            journal_batches=lv.batches if lv else 0,
            journal_records=lv.fixes if lv else 0,
            journal_bytes=lv.bytes if lv else 0,
            oldest_journal_age_s=oldest,
            committed_batches=s["batches"],
            versions_inserted=s["inserted"],
            unchanged=s["unchanged"],
            commands=s["commands"],
            journaled_records=s["journaled"],
            unavailable=s["unavailable"],
            refused_records=s["refused"],
            dropped_records=s["dropped"],
            skipped_journal_records=s["skipped_journal"],
        )


class _Collector(Collector):
    def __init__(self, read: Callable[[], StoreWriterStatistics]) -> None:
        self._read = read

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        s = self._read()
        gauges = (
            ("fleetwatch_outbox_queued_records", "Outbox records waiting in memory.", s.queued),
            ("fleetwatch_outbox_max_queued_records", "The memory queue's bound.", s.max_queued),
            ("fleetwatch_outbox_journal_records", "Outbox records in the local journal.",
             s.journal_records),
            ("fleetwatch_outbox_journal_bytes", "Bytes in the local outbox journal.",
             s.journal_bytes),
            ("fleetwatch_outbox_journal_oldest_age_seconds",
             "Age of the oldest journaled batch (0 when empty).", s.oldest_journal_age_s or 0.0),
        )  # fmt: skip
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        counters = (
            ("fleetwatch_outbox_committed_batches", "Outbox transactions committed.",
             s.committed_batches),
            ("fleetwatch_outbox_versions_inserted", "New record versions stored.",
             s.versions_inserted),
            ("fleetwatch_outbox_unchanged_records",
             "Records whose content was already stored (re-derived or re-drained).", s.unchanged),
            ("fleetwatch_outbox_commands_journaled", "Dispatcher commands journaled.", s.commands),
            ("fleetwatch_outbox_journaled_records", "Records moved to the local journal.",
             s.journaled_records),
            ("fleetwatch_outbox_unavailable", "Writes that met an unavailable database.",
             s.unavailable),
            ("fleetwatch_outbox_refused_records", "Records the database refused (dropped).",
             s.refused_records),
            ("fleetwatch_outbox_dropped_records",
             "Records dropped because the memory queue was full.", s.dropped_records),
            ("fleetwatch_outbox_skipped_journal_records",
             "Journaled records skipped as corrupt.", s.skipped_journal_records),
        )  # fmt: skip
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)

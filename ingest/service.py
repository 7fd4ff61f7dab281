"""The ingest pipeline: MQTT messages -> batches -> decode -> one store transaction -> PUBACKs.

Three named tasks in one task group, joined by bounded queues::

    receive ──raw batches (≤ batches_in_flight)──> decode ──decoded (≤ 2)──> write ──> ack
                                                     └──fix batches──> engine (on_decoded)

* **receive** takes messages from the source into a size-or-age :class:`~ingest.batcher.Batcher`
  and owns its timer.  When the raw queue is full it stops taking messages, the source stops
  reading its socket, and the broker holds the backlog (reliability #4: backpressure, nothing
  dropped).
* **decode** validates payloads (size, topic, registered unit), decodes a whole batch in one
  call, and turns every reject into a :class:`~core.fixes.DeadLetter`.  Decoding happens
  exactly once per batch: the decoder keeps per-unit state (duplicates, jumps), so a retried
  write must not decode again.  Each decoded batch is handed to the engine (``on_decoded``)
  *before* it is written: the store is a side branch of the flow, and a database outage
  never stops matching and alerting (design.md).  A redelivered message reaches the engine
  twice; the engine's tracker drops duplicate fixes.
* **write** commits fixes and dead letters in one transaction, retrying the *same* decoded
  batch with capped backoff while the database is unavailable (never acking meanwhile), then
  acknowledges the batch's messages in receive order (reliability #1: acknowledged means
  durable).  A crash before the ack means the broker redelivers; the store's ``ON CONFLICT``
  makes the redelivery a no-op (reliability #2, #6).

The components are typed as Protocols here so this module depends on no broker or database
library (and the ``ingest`` package never imports ``store``: see tests/test_architecture.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import stamina

from core.fixes import DeadLetter, FixBatch, dead_letter_source
from ingest.batcher import Batch, Batcher, BatchLimits
from ingest.metrics import IngestMetrics
from ingest.registry import UnitRegistry

log = logging.getLogger(__name__)

Clock = Callable[[], int]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


# --- what the service needs from its neighbours --------------------------------------------


class InboundMessage(Protocol):
    """One MQTT message (``ingest.mqtt.Received``)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def recv_us(self) -> int: ...
    @property
    def token(self) -> Any: ...
    @property
    def oversize(self) -> bool: ...


class MessageSource(Protocol):
    """The MQTT shell (``ingest.mqtt.MqttSource``)."""

    async def receive_batch(self, max_messages: int) -> Sequence[InboundMessage]: ...
    def ack(self, tokens: Sequence[Any]) -> None: ...


class SentenceRejectLike(Protocol):
    @property
    def payload_index(self) -> int: ...
    @property
    def unit_id(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def sentence(self) -> bytes: ...
    @property
    def recv_us(self) -> int: ...


class DecodeResultLike(Protocol):
    @property
    def fixes(self) -> FixBatch: ...
    @property
    def rejects(self) -> Sequence[SentenceRejectLike]: ...
    @property
    def counts(self) -> Mapping[str, int]: ...


class BatchDecoder(Protocol):
    """The NMEA decoder (``ingest.nmea.Decoder``): stateful per unit, sans-I/O."""

    def decode(
        self, unit_ids: Sequence[str], payloads: Sequence[bytes], recv_us: npt.NDArray[np.int64]
    ) -> DecodeResultLike: ...


class WriteResultLike(Protocol):
    @property
    def inserted(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def dead_letters(self) -> int: ...


class FixSink(Protocol):
    """The store (``store.Store``): one transaction per call, idempotent."""

    async def write_batch(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter]
    ) -> WriteResultLike: ...


# --- configuration and statistics ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestOptions:
    """Tuning of the pipeline; defaults are documented in docs/ingest.md."""

    limits: BatchLimits = field(default_factory=BatchLimits)
    #: closed batches waiting for the decoder; the receive loop stops reading beyond this
    batches_in_flight: int = 4
    #: decoded batches waiting for the database
    decoded_in_flight: int = 2
    #: a payload above this is a dead letter ``oversize_payload`` (a burst after a coverage
    #: gap of ~6 min at 1 Hz is ~60 KiB; the shipped broker refuses packets over 128 KiB)
    max_payload_bytes: int = 64 * 1024
    #: dead letters keep at most this many bytes of what was refused
    dead_letter_payload_bytes: int = 1024
    #: backoff while the database is unavailable: first wait, and cap (seconds, jittered)
    store_retry_initial_s: float = 0.1
    store_retry_max_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("batches_in_flight", "decoded_in_flight", "max_payload_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"IngestOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.dead_letter_payload_bytes < 0:
            raise ValueError("IngestOptions.dead_letter_payload_bytes must be >= 0")
        if not 0 < self.store_retry_initial_s <= self.store_retry_max_s:
            raise ValueError("need 0 < store_retry_initial_s <= store_retry_max_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestStatistics:
    """Counters since start (gauges where noted), for the demo's live line and tests."""

    messages_received: int
    fixes_accepted: int
    fixes_inserted: int
    fixes_duplicate: int
    rejects: int
    dead_letters: int
    batches_written: int
    messages_acked: int
    store_retries: int
    store_up: bool  # gauge
    raw_batches_queued: int  # gauge
    decoded_batches_queued: int  # gauge
    unacked_messages: int  # gauge: received, not yet acknowledged
    last_commit_us: int | None
    last_receive_to_commit_us: int | None  # newest message of the last committed batch


@dataclass(frozen=True, slots=True, kw_only=True)
class _Written:
    """What committing one batch did (possibly in several transactions, see isolation)."""

    inserted: int
    duplicates: int
    dead_letters: int
    refused: int = 0  # rows the database refused, kept as dead letters ``store_refused``
    dropped: int = 0  # refused even as dead letters: counted and logged

    @classmethod
    def of(cls, r: WriteResultLike) -> _Written:
        return cls(inserted=r.inserted, duplicates=r.duplicates, dead_letters=r.dead_letters)

    def __add__(self, other: _Written) -> _Written:
        return _Written(
            inserted=self.inserted + other.inserted,
            duplicates=self.duplicates + other.duplicates,
            dead_letters=self.dead_letters + other.dead_letters,
            refused=self.refused + other.refused,
            dropped=self.dropped + other.dropped,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Decoded:
    """A batch after validation and decoding: what the writer retries, unchanged."""

    tokens: list[Any]
    fixes: FixBatch
    dead_letters: list[DeadLetter]
    recv_us: npt.NDArray[np.int64]
    closed_by: str


_STOP = None  # queue sentinel: the stage before has drained
#: bound on the topic -> verdict cache (one entry per unit topic; cleared when full)
_MAX_CACHED_TOPICS = 200_000


@dataclass(frozen=True, slots=True, kw_only=True)
class _Refusal:
    """Why every payload on one topic is refused before decoding."""

    unit_id: str | None
    reason: str
    detail: str


def _unit_id_from_fleet_topic(topic: str) -> str:
    """``fleet/<unit>/nmea`` -> ``<unit>``; the default when no topic parser is injected."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "fleet" or parts[2] != "nmea" or not parts[1]:
        raise ValueError(f"topic {topic!r} is not fleet/<unit_id>/nmea")
    return parts[1]


class IngestService:
    """The pipeline of one subscription; :meth:`run` until cancelled or :meth:`request_stop`.

    ``unavailable`` lists the exception types meaning "database down, retry later" (the
    store's ``StoreUnavailable``); ``refused`` those meaning "the database refuses this data"
    (``StoreWriteError``): the refused rows are isolated and kept as dead letters.  Anything
    else raised by the sink is a bug and stops the service loudly, without acking (the broker
    keeps the messages).
    """

    def __init__(
        self,
        *,
        source: MessageSource,
        decoder: BatchDecoder,
        sink: FixSink,
        registry: UnitRegistry,
        metrics: IngestMetrics | None = None,
        options: IngestOptions | None = None,
        unavailable: tuple[type[Exception], ...] = (ConnectionError,),
        refused: tuple[type[Exception], ...] = (),
        unit_id_from_topic: Callable[[str], str] = _unit_id_from_fleet_topic,
        on_decoded: Callable[[FixBatch], Awaitable[None]] | None = None,
        wall_clock: Clock = wall_clock_us,
        monotonic_clock: Clock = monotonic_us,
    ) -> None:
        self._source = source
        self._decoder = decoder
        self._sink = sink
        self.registry = registry
        self.metrics = metrics if metrics is not None else IngestMetrics()
        self.options = options if options is not None else IngestOptions()
        self._unavailable = unavailable
        self._refused = refused
        self._topic_parser = unit_id_from_topic
        self._verdicts: dict[str, str | _Refusal] = {}
        self._on_decoded = on_decoded
        self._wall = wall_clock
        self._mono = monotonic_clock
        self._batcher: Batcher[InboundMessage] = Batcher(self.options.limits)
        self._raw: asyncio.Queue[Batch[InboundMessage] | None] = asyncio.Queue(
            self.options.batches_in_flight
        )
        self._decoded: asyncio.Queue[_Decoded | None] = asyncio.Queue(
            self.options.decoded_in_flight
        )
        self._stopping = False
        self._receiving = False
        self._receive_task: asyncio.Task[None] | None = None
        # statistics
        self._received = 0
        self._accepted = 0
        self._inserted = 0
        self._duplicates = 0
        self._rejects = 0
        self._dead = 0
        self._batches = 0
        self._acked = 0
        self._retries = 0
        self._store_up = True
        self._last_commit_us: int | None = None
        self._last_lag_us: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Run the three stages until cancelled, or until drained after :meth:`request_stop`.

        Cancelling abandons the batches in flight without acknowledging them: the broker
        redelivers them to the next session.
        """
        async with asyncio.TaskGroup() as tg:
            self._receive_task = tg.create_task(self._receive_loop(), name="ingest-receive")
            tg.create_task(self._decode_loop(), name="ingest-decode")
            tg.create_task(self._write_loop(), name="ingest-write")

    def request_stop(self) -> None:
        """Stop taking messages; flush, decode, write and ack what was taken, then return."""
        if self._stopping:
            return
        self._stopping = True
        # Cancel only a loop that is inside its receive wait: a task cancelled before its first
        # step would never run the drain below (and the stages after it would wait forever);
        # a loop that has not started yet sees ``_stopping`` and drains at once.
        task = self._receive_task
        if self._receiving and task is not None and not task.done():
            task.cancel()

    def statistics(self) -> IngestStatistics:
        return IngestStatistics(
            messages_received=self._received,
            fixes_accepted=self._accepted,
            fixes_inserted=self._inserted,
            fixes_duplicate=self._duplicates,
            rejects=self._rejects,
            dead_letters=self._dead,
            batches_written=self._batches,
            messages_acked=self._acked,
            store_retries=self._retries,
            store_up=self._store_up,
            raw_batches_queued=self._raw.qsize(),
            decoded_batches_queued=self._decoded.qsize(),
            unacked_messages=self._received - self._acked,
            last_commit_us=self._last_commit_us,
            last_receive_to_commit_us=self._last_lag_us,
        )

    # -- stage 1: receive and batch --------------------------------------------------------------
    async def _receive_loop(self) -> None:
        try:
            if not self._stopping:
                self._receiving = True
                await self._receive_until_cancelled()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            if not self._stopping or task.uncancel() > 0:
                raise  # cancelled by the task group or the caller: abandon, don't drain
        last = self._batcher.flush(self._mono())
        if last is not None:
            await self._raw.put(last)
        await self._raw.put(_STOP)

    async def _receive_until_cancelled(self) -> None:
        batcher = self._batcher
        limits = self.options.limits
        source = self._source
        raw = self._raw
        metrics = self.metrics
        mono = self._mono
        while True:
            deadline = batcher.deadline_us()
            want = limits.max_messages - len(batcher)
            msgs: Sequence[InboundMessage] = ()
            if deadline is None:
                msgs = await source.receive_batch(want)
            else:
                delay_s = (deadline - mono()) / 1e6
                if delay_s > 0:
                    try:
                        async with asyncio.timeout(delay_s):
                            msgs = await source.receive_batch(want)
                    except TimeoutError:
                        msgs = ()
            now = mono()
            if msgs:
                sizes = [len(m.payload) for m in msgs]
                for closed in batcher.add_many(msgs, sizes, now):
                    await raw.put(closed)
                self._received += len(msgs)
                metrics.messages_received.inc(len(msgs))
                metrics.payload_bytes.inc(sum(sizes))
            aged = batcher.tick(now)
            if aged is not None:
                await raw.put(aged)
            metrics.queue_depth.labels("raw").set(raw.qsize())
            metrics.pending_messages.set(self._received - self._acked)

    # -- stage 2: validate and decode --------------------------------------------------------------
    async def _decode_loop(self) -> None:
        while True:
            batch = await self._raw.get()
            if batch is None:
                await self._decoded.put(_STOP)
                return
            decoded = self._decode(batch)
            if self._on_decoded is not None and len(decoded.fixes):
                # the engine branch: before the write, so matching and alerting never wait
                # for the database; awaiting it is backpressure when the engine is behind
                await self._on_decoded(decoded.fixes)
            await self._decoded.put(decoded)
            self.metrics.queue_depth.labels("decoded").set(self._decoded.qsize())

    def _verdict(self, topic: str) -> str | _Refusal:
        """The unit id of an admitted topic, or why its payloads are refused (cached)."""
        verdict = self._verdicts.get(topic)
        if verdict is not None:
            return verdict
        try:
            unit = self._topic_parser(topic)
        except ValueError as exc:
            verdict = _Refusal(unit_id=None, reason="bad_topic", detail=str(exc))
        else:
            if self.registry.admits(unit):
                verdict = unit
            else:
                verdict = _Refusal(
                    unit_id=unit,
                    reason="unknown_unit",
                    detail=f"unit {unit!r} is not in the unit registry (units file or store)",
                )
        if len(self._verdicts) >= _MAX_CACHED_TOPICS:
            self._verdicts.clear()
        self._verdicts[topic] = verdict
        return verdict

    def set_registry(self, registry: UnitRegistry) -> None:
        """Swap in a new registry version (e.g. units added in the store)."""
        self.registry = registry
        self._verdicts = {}

    def _decode(self, batch: Batch[InboundMessage]) -> _Decoded:
        opts = self.options
        cut = opts.dead_letter_payload_bytes
        max_payload = opts.max_payload_bytes
        items = batch.items
        n = len(items)
        tokens = [m.token for m in items]
        topics = [m.topic for m in items]
        payloads = [m.payload for m in items]
        recv_all = np.fromiter((m.recv_us for m in items), dtype=np.int64, count=n)
        cache_get = self._verdicts.get
        verdicts = [cache_get(t) or self._verdict(t) for t in topics]
        # the common case, all admitted, costs three list scans and no per-message branches
        refused_at = [i for i, v in enumerate(verdicts) if v.__class__ is not str]
        oversize_at = [i for i, m in enumerate(items) if m.oversize]
        oversize_at += [i for i, p in enumerate(payloads) if len(p) > max_payload]
        dead: list[DeadLetter] = []
        refused: dict[str, int] = {}
        if refused_at or oversize_at:
            drop: set[int] = set()
            for i in sorted(set(oversize_at)):
                v = verdicts[i]
                reason = "oversize_payload"
                dead.append(
                    DeadLetter(
                        topic=topics[i],
                        unit_id=v if isinstance(v, str) else v.unit_id,
                        reason=reason,
                        detail=f"payload larger than {max_payload} bytes",
                        payload=payloads[i][:cut],
                        recv_us=int(recv_all[i]),
                        source=dead_letter_source(payloads[i]),
                    )
                )
                refused[reason] = refused.get(reason, 0) + 1
                drop.add(i)
            for i in refused_at:
                if i in drop:
                    continue
                v = verdicts[i]
                assert isinstance(v, _Refusal)
                dead.append(
                    DeadLetter(
                        topic=topics[i],
                        unit_id=v.unit_id,
                        reason=v.reason,
                        detail=v.detail,
                        payload=payloads[i][:cut],
                        recv_us=int(recv_all[i]),
                        source=dead_letter_source(payloads[i]),
                    )
                )
                refused[v.reason] = refused.get(v.reason, 0) + 1
                drop.add(i)
            keep = [i for i in range(n) if i not in drop]
            unit_ids = [cast(str, verdicts[i]) for i in keep]
            topics = [topics[i] for i in keep]
            payloads = [payloads[i] for i in keep]
            recv_kept = recv_all[keep]
        else:
            unit_ids = cast(list[str], verdicts)
            recv_kept = recv_all
        if payloads:
            result = self._decoder.decode(unit_ids, payloads, recv_kept)
            fixes = result.fixes
            rank: dict[int, int] = {}
            for r in result.rejects:
                k = rank[r.payload_index] = rank.get(r.payload_index, -1) + 1
                dead.append(
                    DeadLetter(
                        topic=topics[r.payload_index],
                        unit_id=r.unit_id,
                        reason=str(r.reason),
                        detail=r.detail,
                        payload=r.sentence[:cut],
                        recv_us=r.recv_us,
                        source=dead_letter_source(payloads[r.payload_index], k),
                    )
                )
                refused[str(r.reason)] = refused.get(str(r.reason), 0) + 1
            self.metrics.count_decoder(result.counts)
        else:
            fixes = FixBatch.empty()
        self.metrics.count_by_label(self.metrics.rejects, refused)
        self.metrics.fixes_accepted.inc(len(fixes))
        self._accepted += len(fixes)
        self._rejects += sum(refused.values())
        return _Decoded(
            tokens=tokens,
            fixes=fixes,
            dead_letters=dead,
            recv_us=recv_all,
            closed_by=batch.reason,
        )

    # -- stage 3: write, then acknowledge -------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            decoded = await self._decoded.get()
            if decoded is None:
                return
            result = await self._write_until_committed(decoded)
            commit_us = self._wall()
            self._source.ack(decoded.tokens)
            self._account(decoded, result, commit_us)

    async def _write_until_committed(self, d: _Decoded) -> _Written | None:
        if not len(d.fixes) and not d.dead_letters:
            return None  # nothing to store (e.g. an empty payload): ack without a transaction
        try:
            return _Written.of(await self._write_retrying(d.fixes, d.dead_letters))
        except self._refused as exc:
            log.error(
                "the database refused a batch of %d fixes and %d dead letters (%s); "
                "isolating the refused rows",
                len(d.fixes),
                len(d.dead_letters),
                exc,
            )
            return await self._write_isolating(
                d.fixes, d.dead_letters, 0, len(d.fixes) + len(d.dead_letters)
            )

    async def _write_isolating(
        self, fixes: FixBatch, dead: Sequence[DeadLetter], lo: int, hi: int
    ) -> _Written:
        """Rows ``lo:hi`` of (fixes, then dead letters), bisected until the refused rows are
        single: each refused fix becomes a dead letter ``store_refused``; a refused dead letter
        is retried with ASCII-escaped text, and only if that is refused too it is dropped —
        counted in ``fleetwatch_ingest_dropped_total`` and logged, never silently.

        Bad data must not stop the stream (design.md), and a refused batch would otherwise be
        redelivered and refused forever.  The batch then commits in several transactions; it
        is still acknowledged only after all of them.
        """
        n = len(fixes)
        part_fixes = fixes.take(np.arange(max(lo, 0), min(hi, n)))
        part_dead = list(dead[max(lo - n, 0) : max(hi - n, 0)])
        try:
            return _Written.of(await self._write_retrying(part_fixes, part_dead))
        except self._refused as exc:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                first = await self._write_isolating(fixes, dead, lo, mid)
                return first + await self._write_isolating(fixes, dead, mid, hi)
            return await self._write_refused_row(part_fixes, part_dead, exc)

    async def _write_refused_row(
        self, fixes: FixBatch, dead: list[DeadLetter], exc: Exception
    ) -> _Written:
        cut = self.options.dead_letter_payload_bytes
        if len(fixes):
            fix = fixes.to_fixes()[0]
            letter = DeadLetter(
                topic=f"fleet/{fix.unit_id}/nmea",
                unit_id=fix.unit_id,
                reason="store_refused",
                detail=f"the database refused this fix: {exc}"[:500],
                payload=json.dumps(fix.to_json_dict()).encode()[:cut],
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
        self.metrics.store_refused.inc()
        try:
            written = _Written.of(await self._write_retrying(FixBatch.empty(), [letter]))
        except self._refused as again:
            log.error(
                "dropping a row the database refuses even as a dead letter: %r (%s)", letter, again
            )
            self.metrics.dropped.inc()
            return _Written(inserted=0, duplicates=0, dead_letters=0, refused=1, dropped=1)
        return dataclasses.replace(written, refused=1)

    async def _write_retrying(
        self, fixes: FixBatch, dead_letters: Sequence[DeadLetter]
    ) -> WriteResultLike:
        """One transaction, retried (same data) while the database is unavailable."""
        opts = self.options
        async for attempt in stamina.retry_context(
            on=self._unavailable,
            attempts=None,
            timeout=None,
            wait_initial=opts.store_retry_initial_s,
            wait_max=opts.store_retry_max_s,
            wait_jitter=opts.store_retry_initial_s,
        ):
            with attempt:
                t0 = self._mono()
                try:
                    result = await self._sink.write_batch(fixes, dead_letters)
                except self._unavailable as exc:
                    self._retries += 1
                    self.metrics.store_retries.inc()
                    if self._store_up:
                        log.warning("database unavailable, holding batches (no acks): %s", exc)
                    self._store_up = False
                    self.metrics.store_up.set(0)
                    raise
                self.metrics.write_seconds.observe((self._mono() - t0) / 1e6)
                if not self._store_up:
                    log.warning("database is back after %d failed write attempts", attempt.num - 1)
                self._store_up = True
                self.metrics.store_up.set(1)
                return result
        raise AssertionError("unreachable: retries are unbounded")  # pragma: no cover

    def _account(self, d: _Decoded, result: _Written | None, commit_us: int) -> None:
        m = self.metrics
        n = len(d.tokens)
        self._acked += n
        self._batches += 1
        m.batches_written.labels(d.closed_by).inc()
        if result is not None:
            self._inserted += result.inserted
            self._duplicates += result.duplicates
            self._dead += result.dead_letters
            m.fixes_inserted.inc(result.inserted)
            m.fixes_duplicate.inc(result.duplicates)
            if result.refused - result.dropped > 0:
                m.dead_letters.labels("store_refused").inc(result.refused - result.dropped)
        if d.dead_letters:
            by_reason: dict[str, int] = {}
            for dl in d.dead_letters:
                by_reason[dl.reason] = by_reason.get(dl.reason, 0) + 1
            m.count_by_label(m.dead_letters, by_reason)
        if n:
            lag_s = (commit_us - d.recv_us) / 1e6
            m.receive_to_commit.observe_many(lag_s)
            self._last_lag_us = commit_us - int(d.recv_us.max())
        if len(d.fixes):
            m.fix_to_commit.observe_many((commit_us - d.fixes.t_us) / 1e6)
        self._last_commit_us = commit_us
        m.pending_messages.set(self._received - self._acked)
        m.queue_depth.labels("decoded").set(self._decoded.qsize())

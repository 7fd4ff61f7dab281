"""The live shell around :class:`schedule.engine.Engine`: one task owns the engine.

The engine is sans-I/O; this shell only moves things in and out of it, as ``websockets``'
asyncio connection does around its protocol object:

* **Input** arrives on one bounded channel: decoded fix batches from ingest (straight after
  decoding, *before* the database write, so a database outage never stops matching and
  alerting), dispatcher commands (with a future for the answer), and registry changes.  When
  the channel is full, :meth:`LiveEngine.offer` waits: ingest's decode stage stops, its
  receive stage stops reading, the broker keeps the backlog.  That is backpressure, never a
  silent drop (reliability promise 4); the time spent waiting is counted.
* **Time**: the engine says when it next wants a tick (:meth:`Engine.next_deadline_us`); the
  task waits for input or that deadline, whichever comes first.  No polling.
* **Work** runs in a worker thread (``asyncio.to_thread``) so the event loop keeps serving
  MQTT, websockets and HTTP while a round runs; only this task ever touches the engine, so
  there is no concurrent access.
* **Output** goes to the publish callbacks (metrics, console hub, store outbox), which must
  not block: each owns its own bounded buffer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.fixes import FixBatch
from fleetwatch.engine_metrics import EngineMetrics
from schedule.engine import DataDelayed, Engine
from schedule.events import VisitCompleted, VisitStarted
from schedule.stop_events import Command

log = logging.getLogger(__name__)

#: Recent engine output kept for the demo and tests (the real consumers are the publishers).
RECENT_EVENTS = 100_000
Publisher = Callable[[Sequence[Any]], None]


class CommandHook(Protocol):
    def __call__(self, cmd: Command, *, at_us: int) -> Awaitable[Any]: ...


@dataclass(slots=True)
class _Call:
    """Run ``fn(engine, now_us)`` in the engine task and hand back its result."""

    fn: Callable[[Engine, int], Any]
    done: asyncio.Future[Any]


class LiveEngine:
    """The ``engine`` task: feeds, ticks and commands, in one place, in order."""

    def __init__(
        self,
        engine: Engine,
        metrics: EngineMetrics,
        *,
        clock_us: Callable[[], int],
        queue_batches: int = 64,
        publishers: Sequence[Publisher] = (),
    ) -> None:
        if queue_batches < 1:
            raise ValueError(f"queue_batches must be >= 1, got {queue_batches}")
        self.engine = engine
        self.metrics = metrics
        self._clock_us = clock_us
        self._inbox: asyncio.Queue[FixBatch | _Call] = asyncio.Queue(queue_batches)
        self._publishers = list(publishers)
        self._command_hooks: list[CommandHook] = []
        self.recent: collections.deque[Any] = collections.deque(maxlen=RECENT_EVENTS)
        self._idle_at = time.monotonic()  # last moment with nothing waiting
        self.offer_wait_s = 0.0
        self.rounds_done = 0
        #: first versions seen (for the demo's live line)
        self.visits_started = 0
        self.visits_completed = 0

    def apply_now(self, fn: Callable[[Engine, int], list[Any]], now_us: int) -> None:
        """Before :meth:`run` starts (the service is not taking messages yet): run *fn* on the
        engine synchronously — import the plans, restore from stored fixes — and publish what
        it emits like any other output; consumers recognise re-derived records by id."""
        t0 = time.perf_counter()
        self._emit(fn(self.engine, now_us), time.perf_counter() - t0)

    def lag_s(self) -> float:
        """How long input has been waiting for the engine (0 when it is keeping up): what
        readiness checks.  Not "how old the newest fix is": a silent fleet is not a lag."""
        if self._inbox.qsize() == 0 and self.engine.pending_fixes == 0:
            self._idle_at = time.monotonic()
            return 0.0
        return max(0.0, time.monotonic() - self._idle_at)

    def add_command_hook(self, hook: CommandHook) -> None:
        """Called (awaited) with every accepted command and its engine time, e.g. to journal
        it durably for a restart; a hook that raises makes the submit raise."""
        self._command_hooks.append(hook)

    def add_publisher(self, publisher: Publisher) -> None:
        self._publishers.append(publisher)

    # -- inputs (from other tasks) ---------------------------------------------------------------

    async def offer(self, fixes: FixBatch) -> None:
        """Ingest's hook after decoding: waits (backpressure) while the inbox is full."""
        if not len(fixes):
            return
        try:
            self._inbox.put_nowait(fixes)
        except asyncio.QueueFull:
            t0 = time.perf_counter()
            await self._inbox.put(fixes)
            waited = time.perf_counter() - t0
            self.offer_wait_s += waited
            self.metrics.backpressure_seconds.inc(waited)
        self.metrics.inbox.set(self._inbox.qsize())

    async def call(self, fn: Callable[[Engine, int], Any], *, timeout_s: float = 30.0) -> Any:
        """Run ``fn(engine, now_us)`` inside the engine task (in order with the batches before
        it) and return its result; its events are published like any other."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout_s):
            await self._inbox.put(_Call(fn, done))
            return await done

    async def submit(self, cmd: Command, *, timeout_s: float = 10.0) -> list[Any]:
        """A dispatcher's command; raises ``CommandRefused`` as the engine does.  An accepted
        one is handed to the command hooks (journal) before this returns."""
        at: list[int] = []

        def run(e: Engine, now: int) -> list[Any]:
            out = e.command(cmd, now)
            at.append(now)
            return out

        result: list[Any] = await self.call(run, timeout_s=timeout_s)
        for hook in self._command_hooks:
            await hook(cmd, at_us=at[0])
        return result

    async def flush(self, *, timeout_s: float = 60.0) -> list[Any]:
        """Run a round now over everything offered before this call."""
        result: list[Any] = await self.call(lambda e, now: e.flush(now), timeout_s=timeout_s)
        return result

    # -- the task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            deadline = self.engine.next_deadline_us()
            item: FixBatch | _Call | None
            if deadline is None:
                item = await self._inbox.get()
            else:
                wait_s = max(0.0, (deadline - self._clock_us()) / 1e6)
                try:
                    async with asyncio.timeout(wait_s):
                        item = await self._inbox.get()
                except TimeoutError:
                    item = None
            self.metrics.inbox.set(self._inbox.qsize())
            now = self._clock_us()
            if isinstance(item, _Call):
                await self._run_call(item, now)
                continue
            t0 = time.perf_counter()
            if item is None:
                out = await asyncio.to_thread(self.engine.tick, now)
            else:
                batches = [item]
                while len(batches) < 64:  # take what queued meanwhile: one round, not many
                    try:
                        nxt = self._inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if isinstance(nxt, _Call):
                        out = await self._feed(batches, now)
                        self._emit(out, time.perf_counter() - t0)
                        await self._run_call(nxt, now)
                        batches = []
                        t0 = time.perf_counter()
                        break
                    batches.append(nxt)
                out = await self._feed(batches, now) if batches else []
            self._emit(out, time.perf_counter() - t0)

    async def _feed(self, batches: list[FixBatch], now: int) -> list[Any]:
        if not batches:
            return []
        fixes = batches[0] if len(batches) == 1 else FixBatch.concat(batches)
        result: list[Any] = await asyncio.to_thread(self.engine.feed, fixes, now)
        return result

    async def _run_call(self, call: _Call, now: int) -> None:
        t0 = time.perf_counter()
        try:
            result = await asyncio.to_thread(call.fn, self.engine, now)
        except Exception as exc:  # handed to the caller (CommandRefused, a bug: theirs to see)
            if not call.done.done():
                call.done.set_exception(exc)
            return
        if isinstance(result, list):
            self._emit(result, time.perf_counter() - t0)
        if not call.done.done():
            call.done.set_result(result)

    def _emit(self, out: Sequence[Any], seconds: float) -> None:
        m = self.metrics
        if self._inbox.qsize() == 0:
            self._idle_at = time.monotonic()
        m.observe(self.engine, out, seconds)
        self.rounds_done = self.engine.stats.rounds
        for ev in out:
            if isinstance(ev, DataDelayed):
                if ev.active:
                    log.warning(
                        "the newest fix is more than %.0f s old: data delayed (an outage, or "
                        "a backlog or replayed day catching up); lateness is decided on the "
                        "fixes' own clock, never on the silence",
                        self.engine.params.data_delayed_after_s,
                    )
                else:
                    log.warning("fixes flow again: data no longer delayed")
        if not out:
            return
        self.recent.extend(out)
        for ev in out:
            if getattr(ev, "version", 0) == 1:
                if isinstance(ev, VisitStarted):
                    self.visits_started += 1
                elif isinstance(ev, VisitCompleted):
                    self.visits_completed += 1
        for publish in self._publishers:
            try:
                publish(out)
            except Exception:  # one broken consumer must not stop the engine or the others
                log.exception("engine output publisher %r failed", publish)
                m.publish_errors.inc()


OfferHook = Callable[[FixBatch], Awaitable[None]]

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
  there is no concurrent access.  With ``FLEETWATCH_ENGINE_PROCESS`` the engine itself lives
  in a child process (fleetwatch/engine_process.py) and the worker thread only waits for its
  answer, so a round no longer holds ingest's GIL; the steps, their order and this API are the
  same, but what is handed to :meth:`LiveEngine.call` must then be picklable.
* **Output** goes to the publish callbacks (metrics, console hub, store outbox), which must
  not block: each owns its own bounded buffer.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.fixes import FixBatch
from fleetwatch.engine_metrics import EngineCounters, EngineMetrics
from fleetwatch.engine_process import EngineHost, EngineIsRemote, EngineProcess, LocalEngine
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
        engine: Engine | EngineProcess,
        metrics: EngineMetrics,
        *,
        clock_us: Callable[[], int],
        queue_batches: int = 64,
        publishers: Sequence[Publisher] = (),
    ) -> None:
        if queue_batches < 1:
            raise ValueError(f"queue_batches must be >= 1, got {queue_batches}")
        self._host: EngineHost = (
            engine if isinstance(engine, EngineProcess) else LocalEngine(engine)
        )
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

    @property
    def engine(self) -> Engine:
        """The engine object, when it runs in this process (tests, the demo); raises
        :class:`EngineIsRemote` when it runs in a child: use :meth:`call`/:meth:`apply_now`."""
        if isinstance(self._host, LocalEngine):
            return self._host.engine
        raise EngineIsRemote("the engine runs in a child process: use LiveEngine.call")

    @property
    def remote(self) -> bool:
        """Whether the engine runs in a child process."""
        return self._host.remote

    def counters(self) -> EngineCounters:
        """The engine's counters after its last step (read live when it is in this process)."""
        return self._host.counters()

    async def start(self) -> None:
        """Start the engine's child process, if it has one, and wait until it has built the
        engine (a few seconds: imports, the fence index); before :meth:`apply_now`."""
        if isinstance(self._host, EngineProcess):
            await asyncio.to_thread(self._host.start)

    async def aclose(self) -> None:
        """Stop (terminate, join; kill if it lingers) the engine's child process, if any."""
        if isinstance(self._host, EngineProcess):
            await asyncio.to_thread(self._host.close)

    def apply_now(self, fn: Callable[[Engine, int], Any], now_us: int) -> Any:
        """Before :meth:`run` starts (the service is not taking messages yet): run *fn* on the
        engine synchronously — import the plans, restore from stored fixes — and publish what
        it emits (a list result) like any other output; consumers recognise re-derived records
        by id.  Returns *fn*'s result (e.g. a parameter the caller needs)."""
        t0 = time.perf_counter()
        result = self._host.execute(fn, now_us)
        self._emit(result if isinstance(result, list) else [], time.perf_counter() - t0)
        return result

    def lag_s(self) -> float:
        """How long input has been waiting for the engine (0 when it is keeping up): what
        readiness checks.  Not "how old the newest fix is": a silent fleet is not a lag."""
        if self._inbox.qsize() == 0 and self._host.counters().pending_fixes == 0:
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
        done: _Commanded = await self.call(functools.partial(_command, cmd), timeout_s=timeout_s)
        for hook in self._command_hooks:
            await hook(cmd, at_us=done.at_us)
        return done.out

    async def flush(self, *, timeout_s: float = 60.0) -> list[Any]:
        """Run a round now over everything offered before this call."""
        result: list[Any] = await self.call(_flush, timeout_s=timeout_s)
        return result

    # -- the task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """The engine task; with a child process, also its watch: the child's death ends the
        task with :class:`EngineProcessDied` at once, even while no input is coming."""
        host = self._host
        if not isinstance(host, EngineProcess):
            await self._run_loop()
            return
        # what the restore built lives all day: out of the child's cyclic collector's passes
        await asyncio.to_thread(host.execute, _freeze_gc, self._clock_us())
        loop_task = asyncio.ensure_future(self._run_loop())
        watch = asyncio.ensure_future(host.wait_died())
        try:
            await asyncio.wait({loop_task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (loop_task, watch):
                t.cancel()
            await asyncio.wait({loop_task, watch})
        for t in (loop_task, watch):  # the first to fail says why (both: the child died)
            if not t.cancelled() and t.exception() is not None:
                t.result()

    async def _run_loop(self) -> None:
        host = self._host
        while True:
            deadline = host.counters().next_deadline_us
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
                out = await asyncio.to_thread(host.execute, _tick, now)
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
        result: list[Any] = await asyncio.to_thread(
            self._host.execute, functools.partial(_feed, fixes), now
        )
        return result

    async def _run_call(self, call: _Call, now: int) -> None:
        t0 = time.perf_counter()
        try:
            result = await asyncio.to_thread(self._host.execute, call.fn, now)
        except Exception as exc:  # handed to the caller (CommandRefused, a bug: theirs to see)
            if not call.done.done():
                call.done.set_exception(exc)
            return
        if isinstance(result, list):
            self._emit(result, time.perf_counter() - t0)
        elif isinstance(result, _Commanded):
            self._emit(result.out, time.perf_counter() - t0)
        if not call.done.done():
            call.done.set_result(result)

    def _emit(self, out: Sequence[Any], seconds: float) -> None:
        m = self.metrics
        if self._inbox.qsize() == 0:
            self._idle_at = time.monotonic()
        counters = self._host.counters()
        m.observe(counters, out, seconds)
        self.rounds_done = counters.rounds
        for ev in out:
            if isinstance(ev, DataDelayed):
                if ev.active:
                    log.warning(
                        "the newest fix is more than %.0f s old: data delayed (an outage, or "
                        "a backlog or replayed day catching up); lateness is decided on the "
                        "fixes' own clock, never on the silence",
                        counters.data_delayed_after_s,
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


# -- the steps (module-level: they cross to the engine's process pickled) --------------------------


def _tick(engine: Engine, now_us: int) -> list[Any]:
    return engine.tick(now_us)


def _feed(fixes: FixBatch, engine: Engine, now_us: int) -> list[Any]:
    return engine.feed(fixes, now_us)


def _flush(engine: Engine, now_us: int) -> list[Any]:
    return engine.flush(now_us)


@dataclass(frozen=True, slots=True)
class _Commanded:
    """A command's records and the engine time it was applied at (for the journal)."""

    out: list[Any]
    at_us: int


def _command(cmd: Command, engine: Engine, now_us: int) -> _Commanded:
    return _Commanded(engine.command(cmd, now_us), now_us)


def _freeze_gc(_engine: Engine, _now_us: int) -> None:
    gc.freeze()

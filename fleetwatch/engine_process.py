"""Where :class:`fleetwatch.live_engine.LiveEngine` runs the engine: in its own process or in a
child process (``FLEETWATCH_ENGINE_PROCESS``, docs/engine.md "The engine's process").

Why a child process: a detection round is many small numpy calls that hold the GIL; run in a
worker thread of the ingest process they starve ingest's event loop (receive, decode, COPY)
even when the engine keeps up (docs/bench/end_to_end.md).  In a child the round has a GIL of
its own; the parent only pickles a batch's columns out and the round's records back.

Both hosts offer the one synchronous step the shell needs, :meth:`execute`: run
``fn(engine, now_us)`` and return its result, plus :meth:`counters` (what the metrics and the
shell's timer read).  The child serves one request at a time, in the order sent, so the
shell's ordering (one inbox; calls in order with batches) holds unchanged.  What crosses:

* to the child: ``(fn, now_us)``; *fn* must be picklable (a module-level function, or a
  :func:`functools.partial` of one over picklable arguments: fix batches, plans, commands);
* back: the result (the records), the engine's :class:`EngineCounters`, the log records the
  step emitted (re-emitted on the parent's loggers), or the exception it raised.

A child that dies (killed, out of memory, a crash in native code) is
:class:`EngineProcessDied`, raised by the step that was waiting for it and by
:meth:`EngineProcess.wait_died` (the shell watches it), so the service fails loudly instead of
waiting forever for an answer.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any, Literal, Protocol

from fleetwatch.engine_metrics import EngineCounters
from schedule.engine import Engine

log = logging.getLogger(__name__)

EngineFn = Callable[[Engine, int], Any]
#: builds the engine inside the child (a picklable callable, e.g. a partial of a builder)
EngineFactory = Callable[[], Engine]

#: how long a stopping child may take before it is killed
STOP_TIMEOUT_S = 5.0


def _mappingproxy(d: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(d)


def _reduce_mappingproxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return (_mappingproxy, (dict(m),))


# sites keep their attributes read-only (geofence.sites): a copy crosses, read-only again
ForkingPickler.register(MappingProxyType, _reduce_mappingproxy)


class EngineProcessDied(RuntimeError):
    """The engine's child process is gone: the engine's state with it; the service stops."""


class EngineIsRemote(RuntimeError):
    """The engine runs in a child process: reach it with ``LiveEngine.call``/``apply_now``."""


class RemoteEngineError(RuntimeError):
    """An exception of the child that could not be sent back as itself (not picklable)."""


class EngineHost(Protocol):
    remote: bool

    def execute(self, fn: EngineFn, now_us: int) -> Any: ...

    def counters(self) -> EngineCounters: ...


class LocalEngine:
    """The engine in this process (the default): each step runs where it is called."""

    remote = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def execute(self, fn: EngineFn, now_us: int) -> Any:
        return fn(self.engine, now_us)

    def counters(self) -> EngineCounters:
        return EngineCounters.of(self.engine)


class EngineProcess:
    """The engine in a child process (``spawn``: no inherited locks, sockets or threads)."""

    remote = True

    def __init__(
        self, factory: EngineFactory, *, start_method: Literal["spawn", "forkserver"] = "spawn"
    ) -> None:
        self._factory = factory
        self._ctx: multiprocessing.context.SpawnContext | multiprocessing.context.ForkServerContext
        if start_method == "spawn":
            self._ctx = multiprocessing.get_context("spawn")
        else:
            self._ctx = multiprocessing.get_context("forkserver")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()  # one request at a time (the shell never overlaps them)
        self._counters: EngineCounters | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child and wait (blocking) until it has built the engine; raises what
        building it raised."""
        if self._proc is not None:
            raise RuntimeError("the engine process is already started")
        parent, child = self._ctx.Pipe(duplex=True)
        level = logging.getLogger().getEffectiveLevel()
        proc = self._ctx.Process(
            target=_child_main, args=(child, self._factory, level), name="fleetwatch-engine",
            daemon=True,
        )  # fmt: skip
        proc.start()
        child.close()  # the child's end lives in the child only: its exit is our EOF
        self._proc, self._conn = proc, parent
        log.info("engine process started (pid %s)", proc.pid)
        self._receive()  # the engine is built (or its error raised)

    def execute(self, fn: EngineFn, now_us: int) -> Any:
        conn = self._require()
        with self._lock:
            try:  # pickled before anything is written: an unpicklable fn is the caller's error
                conn.send((fn, now_us))
            except OSError as exc:  # broken pipe: the child is gone
                raise EngineProcessDied(
                    f"the engine process died (exit code {self._exitcode()}): its state is lost"
                ) from exc
            return self._receive()

    def counters(self) -> EngineCounters:
        if self._counters is None:
            raise RuntimeError("the engine process is not started")
        return self._counters

    def _require(self) -> multiprocessing.connection.Connection:
        if self._conn is None:
            raise RuntimeError("the engine process is not started")
        return self._conn

    def _receive(self) -> Any:
        conn = self._require()
        try:
            status, value, counters, records = conn.recv()
        except (EOFError, OSError) as exc:
            raise EngineProcessDied(
                f"the engine process died (exit code {self._exitcode()}): its state is lost"
            ) from exc
        for record in records:
            logging.getLogger(record.name).handle(record)
        if counters is not None:
            self._counters = counters
        if status == "error":
            raise value
        return value

    def _exitcode(self) -> int | None:
        if self._proc is None:
            return None
        self._proc.join(1.0)
        return self._proc.exitcode

    async def wait_died(self) -> None:
        """Return... never, while the child lives; raise :class:`EngineProcessDied` when it
        exits (its sentinel becomes readable), whatever the shell is doing meanwhile."""
        if self._proc is None:
            raise RuntimeError("the engine process is not started")
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        fd = self._proc.sentinel

        def exited() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, exited)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
        code = await asyncio.to_thread(self._exitcode)
        raise EngineProcessDied(f"the engine process exited (exit code {code}): its state is lost")

    def close(self) -> None:
        """Stop the child: SIGTERM (its state is rebuilt from the store at the next start;
        there is nothing to save), then SIGKILL after :data:`STOP_TIMEOUT_S`; always joined."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            proc.join(STOP_TIMEOUT_S)
            if proc.is_alive():
                log.warning("engine process %s did not stop in %.0f s: killed", proc.pid,
                            STOP_TIMEOUT_S)  # fmt: skip
                proc.kill()
                proc.join()
        else:
            proc.join()
        if conn is not None:
            with self._lock:  # a step still waiting in a worker thread has seen EOF by now
                conn.close()
        proc.close()
        self._proc = None
        self._conn = None
        log.info("engine process stopped")


# -- the child ---------------------------------------------------------------------------------


class _Collect(logging.Handler):
    """The child's only log handler: records go back to the parent with the step's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        record.msg = record.getMessage()
        record.args = None
        record.exc_info = None
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


def _portable(exc: BaseException) -> BaseException:
    """*exc* if it survives pickling (with the child's traceback as a note), else a
    :class:`RemoteEngineError` with its text."""
    tb = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"in the engine process:\n{tb}")
        back: BaseException = pickle.loads(pickle.dumps(exc))
    except Exception:
        return RemoteEngineError(f"{type(exc).__name__}: {exc}\n{tb}")
    return back


def _child_main(
    conn: multiprocessing.connection.Connection, factory: EngineFactory, level: int
) -> None:
    """The child: build the engine, then answer ``(fn, now_us)`` requests until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    collect = _Collect()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(collect)
    root.setLevel(level)
    try:
        engine = factory()
    except Exception as exc:
        conn.send(("error", _portable(exc), None, collect.take()))
        return
    conn.send(("ok", None, EngineCounters.of(engine), collect.take()))
    while True:
        try:
            fn, now_us = conn.recv()
        except EOFError:
            return  # the parent is gone or closed us: nothing to save
        except Exception as exc:  # a request that does not unpickle here: the caller's error
            conn.send(("error", _portable(exc), EngineCounters.of(engine), collect.take()))
            continue
        try:
            result = fn(engine, now_us)
            reply: tuple[Any, ...] = ("ok", result, EngineCounters.of(engine), collect.take())
            conn.send(reply)
        except Exception as exc:  # the caller's to see, as in the thread engine
            err = ("error", _portable(exc), EngineCounters.of(engine), collect.take())
            conn.send(err)

"""The engine in a child process (``FLEETWATCH_ENGINE_PROCESS``): the same records, in the same
order, as the engine in a worker thread; the child's death is an error, never a hang.

The engine is built in the child by a picklable factory; steps cross as module-level functions
(or partials of them).  The thread engine is the reference: both shells are driven with the
same batches, clock and calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from core.fixes import FixBatch
from fleetwatch.engine_metrics import EngineMetrics
from fleetwatch.engine_process import EngineIsRemote, EngineProcess, EngineProcessDied
from fleetwatch.engine_setup import build_engine, load_sites
from fleetwatch.live_engine import LiveEngine
from schedule.engine import Engine, EngineParams
from schedule.stop_events import CancelStop, CommandRefused
from simulators.scenario import write_scenario
from tests.support.broker import Broker
from tests.test_engine_live import decode_scenario, small_params, vehicles
from tests.test_ingest_service_integration import running, settings_for

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("process-scenario")
    write_scenario(small_params(dt.date(2026, 11, 20)), out)
    return out


@pytest.fixture(scope="module")
def decoded(scenario: Path) -> FixBatch:
    return decode_scenario(scenario)


def make_engine(scenario: Path) -> Engine:
    """Module-level, so that a partial of it builds the same engine in the child."""
    return build_engine(
        load_sites(scenario / "sites.geojson"),
        vehicles(scenario),
        params=EngineParams(round_interval_s=1.0),
    )


def new_live(scenario: Path, *, process: bool, clock: list[int], **kw: Any) -> LiveEngine:
    engine: Engine | EngineProcess = (
        EngineProcess(functools.partial(make_engine, scenario))
        if process
        else make_engine(scenario)
    )
    return LiveEngine(engine, EngineMetrics(CollectorRegistry()), clock_us=lambda: clock[0], **kw)


def _finish(end_us: int, engine: Engine, _now_us: int) -> list[Any]:
    return engine.finish(end_us)


def _log_and_count(engine: Engine, _now_us: int) -> int:
    logging.getLogger("fleetwatch.test_child").warning("hello from pid %d", os.getpid())
    return engine.stats.fixes_in


def _boom(_engine: Engine, _now_us: int) -> None:
    raise KeyError("no such thing")


async def drive(live: LiveEngine, decoded: FixBatch, clock: list[int]) -> list[Any]:
    """Offer the day in 200-fix batches on the scenario's receive clock, with a flush in the
    middle and the end of data after the last: everything the engine emitted, in order."""
    seen: list[Any] = []
    live.add_publisher(seen.extend)
    await live.start()
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(live.run(), name="engine")
            starts = range(0, len(decoded), 200)
            for i, s in enumerate(starts):
                b = decoded.take(np.arange(s, min(s + 200, len(decoded))))
                clock[0] = int(b.recv_us.max())
                await live.offer(b)
                if i == len(starts) // 2:
                    await live.flush()
            await live.flush()
            assert live.counters().pending_fixes == 0
            await live.call(functools.partial(_finish, clock[0] + 86_400 * 10**6))
            task.cancel()
    finally:
        await live.aclose()
    return seen


@pytest.mark.anyio
async def test_the_process_engine_emits_what_the_thread_engine_emits(
    scenario: Path, decoded: FixBatch
) -> None:
    """Same batches, same clock, same calls: the same records in the same order, and the same
    counters; a day with completed visits, so the comparison proves something."""
    clocks = [[int(decoded.recv_us.min())], [int(decoded.recv_us.min())]]
    thread = new_live(scenario, process=False, clock=clocks[0], queue_batches=2)
    process = new_live(scenario, process=True, clock=clocks[1], queue_batches=2)
    expected = await drive(thread, decoded, clocks[0])
    got = await drive(process, decoded, clocks[1])
    assert sum(1 for e in expected if type(e).__name__ == "VisitCompleted") >= 5
    assert got == expected
    assert process.rounds_done == thread.rounds_done > 2
    assert process.visits_started == thread.visits_started > 0
    assert process.metrics.pending_fixes._value.get() == 0


@pytest.mark.anyio
async def test_calls_cross_and_errors_come_back_as_themselves(
    scenario: Path, decoded: FixBatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused command is a ``CommandRefused`` with its code; a step's own exception comes
    back with its type; an unpicklable call fails for its caller only; the child's log records
    reach the parent's loggers; ``live.engine`` says the engine is elsewhere."""
    clock = [int(decoded.recv_us.min())]
    live = new_live(scenario, process=True, clock=clock)
    await live.start()
    try:
        with pytest.raises(EngineIsRemote):
            _ = live.engine
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(live.run(), name="engine")
            await live.offer(decoded.take(np.arange(0, 100)))
            with pytest.raises(CommandRefused) as refused:
                await live.submit(CancelStop(stop_id="2026-11-20/S1", reason="closed", by="d1"))
            assert refused.value.code == "not_allowed"
            with pytest.raises(KeyError, match="no such thing"):
                await live.call(_boom)
            with pytest.raises(Exception, match=r"pickle|lambda|local"):
                await live.call(lambda e, _now: e.stats.fixes_in)
            with caplog.at_level(logging.WARNING, logger="fleetwatch.test_child"):
                fixes_in = await live.call(_log_and_count)
            assert fixes_in == 100  # the batch offered before the calls was fed first
            hello = [r for r in caplog.records if r.name == "fleetwatch.test_child"]
            assert len(hello) == 1
            assert hello[0].getMessage() != f"hello from pid {os.getpid()}"  # the child's
            task.cancel()
    finally:
        await live.aclose()


@pytest.mark.anyio
async def test_a_killed_engine_process_ends_the_task_loudly(
    scenario: Path, decoded: FixBatch
) -> None:
    """SIGKILL of the child while the shell waits for input (no deadline pending): ``run``
    raises :class:`EngineProcessDied` at once, and a step waiting for it raises it too."""
    clock = [int(decoded.recv_us.min())]
    live = new_live(scenario, process=True, clock=clock)
    await live.start()
    try:
        proc = live._host
        assert isinstance(proc, EngineProcess)
        assert proc.pid is not None
        run = asyncio.create_task(live.run())
        await live.flush()  # the task is up and idle (nothing offered: no deadline)
        os.kill(proc.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            with pytest.raises(EngineProcessDied, match="exit code -9"):
                await run
        with pytest.raises(EngineProcessDied):
            live.apply_now(_log_and_count, clock[0])
    finally:
        await live.aclose()


@pytest.mark.anyio
async def test_a_factory_that_fails_fails_the_start(tmp_path: Path) -> None:
    """The engine cannot be built in the child (no such sites file): ``start`` raises the
    builder's error, and the child is gone after ``aclose``."""
    live = LiveEngine(
        EngineProcess(functools.partial(make_engine, tmp_path / "missing")),
        EngineMetrics(CollectorRegistry()),
        clock_us=lambda: 0,
    )
    try:
        with pytest.raises(Exception, match="missing"):
            await live.start()
    finally:
        await live.aclose()


@pytest.mark.integration
@pytest.mark.anyio
async def test_the_service_fails_loudly_when_its_engine_process_dies(
    mqtt_broker: Broker, pg_dsn: str, scenario: Path
) -> None:
    """``fleetwatch run`` with FLEETWATCH_ENGINE_PROCESS: a SIGKILL of the engine's child ends
    the service with :class:`EngineProcessDied` (the task group reports it) instead of a
    service that acks fixes nobody matches."""
    settings = settings_for(
        mqtt_broker, pg_dsn, scenario / "units.csv", sites_file=scenario / "sites.geojson",
        engine_process=True,
    )  # fmt: skip
    died: list[BaseException] = []
    try:
        async with asyncio.timeout(60), running(settings) as h:
            assert h.engine is not None
            host = h.engine._host
            assert isinstance(host, EngineProcess)
            pid = host.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.Event().wait()  # cancelled when the service's task group fails
    except* EngineProcessDied as group:
        died.extend(leaves(group))
    assert len(died) == 1
    assert "exit code -9" in str(died[0])


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out

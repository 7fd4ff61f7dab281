"""The schedule decides on data the detection has seen, whatever the pace the data arrives at.

A backlog (the broker's after a restart, a store-and-forward burst, a replayed day) reaches the
live engine much faster than real time: between two detection rounds (``round_interval_s`` of
the driver's clock) minutes of data may wait in the engine.  The board's deadlines ("missed" at
window end + grace) are in data time; if the data clock moved with the fixes *received* rather
than the fixes *detected*, a stop whose visit sits in the waiting fixes was decided "missed" and,
one round later, retracted: a false exception in the CRM feed.  The same day driven at real pace
and compressed 600x ends with the same exceptions, and the compressed one retracts none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alerts.records import ExceptionVersion
from core.fixes import US_PER_S, FixBatch
from schedule.engine import Engine, tick_until
from schedule.stop_events import StopChanged
from tests.test_engine_live import vehicles
from tests.test_engine_restart import chunks_of, decoded, run, scenario  # noqa: F401
from tests.test_outbox_restart import engine_with_schedule


def compressed(engine: Engine, chunks: list[FixBatch], *, step_us: int) -> list[Any]:
    """The live shell fed a backlog: the driver's clock (wall time, after all the data)
    moves *step_us* per batch while the data moves minutes."""
    out: list[Any] = []
    now = max(int(c.recv_us.max()) for c in chunks)
    for batch in chunks:
        now += step_us
        out += tick_until(engine, now)
        out += engine.feed(batch, now)
    return out


def exceptions(out: list[Any]) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for ev in out:
        if isinstance(ev, ExceptionVersion):
            got.setdefault(ev.id, []).append(ev.status)
    return got


def test_a_backlog_at_600x_raises_the_exceptions_of_a_day_at_real_pace(
    scenario: Path,  # noqa: F811
    decoded: FixBatch,  # noqa: F811
) -> None:
    units = vehicles(scenario)
    chunks = chunks_of(decoded)
    start = int(decoded.recv_us.min())
    paced, imported = engine_with_schedule(scenario, units, start)
    want = imported + run(paced, chunks)
    fast, imported_fast = engine_with_schedule(scenario, units, start)
    # 150 fixes of 3 units at 0.2 Hz are ~4 min of data; 1 s rounds every 20 batches: over an
    # hour of data waits for each round
    got = imported_fast + compressed(fast, chunks, step_us=50_000)
    end = int(decoded.recv_us.max()) + 86_400 * US_PER_S
    got += fast.flush(end)
    want += paced.flush(end)
    missed_then_visited = sorted(
        {e.stop_id for e in got if isinstance(e, StopChanged) and e.state == "missed"}
        & {e.stop_id for e in got if isinstance(e, StopChanged) and e.state == "visited"}
    )
    assert not missed_then_visited
    # At real pace a store-and-forward burst arrives after the deadline it would have saved:
    # "missed", then retracted, is right then (the engine cannot know).  A backlog's round sees
    # the burst before it decides, so it may raise fewer; never another or a different one.
    fast_final = {i: s[-1] for i, s in exceptions(got).items()}
    paced_final = {i: s[-1] for i, s in exceptions(want).items()}
    assert paced_final, "the day has exceptions"
    assert set(fast_final) <= set(paced_final)
    assert {i: s for i, s in paced_final.items() if s != "retracted"} == {
        i: s for i, s in fast_final.items() if s != "retracted"
    }

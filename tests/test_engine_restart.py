"""A restart mid-day rebuilds the engine from stored fixes and ends where an uninterrupted run
ends: same visit and stop ids, same final facts (reliability: kill -9, then restart)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.fixes import US_PER_S, FixBatch
from geofence import FenceIndex
from schedule.engine import Engine, EngineParams, fence_matcher, tick_until
from schedule.events import latest
from schedule.params import DetectionParams
from simulators.scenario import write_scenario
from tests.test_engine_live import (
    decode_scenario,
    detection,
    scenario_index,
    small_params,
    vehicles,
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("restart-scenario")
    write_scenario(small_params(dt.date(2026, 11, 18)), out)
    return out


@pytest.fixture(scope="module")
def decoded(scenario: Path) -> FixBatch:
    return decode_scenario(scenario)


@pytest.fixture(scope="module")
def index(scenario: Path) -> FenceIndex:
    return scenario_index(scenario)


def engine_for(index: FenceIndex, units: dict[str, str]) -> Engine:
    return Engine(
        matcher=fence_matcher(index),
        site_ids=index.site_ids,
        unit_to_vehicle=units,
        params=EngineParams(round_interval_s=5.0),
    )


def run(engine: Engine, chunks: list[FixBatch]) -> list[Any]:
    out: list[Any] = []
    for batch in chunks:
        now = int(batch.recv_us.max())
        out += tick_until(engine, now)
        out += engine.feed(batch, now)
    return out


def final_facts(out: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The folded truth by (kind, id), without the in-memory version counters (versions are
    assigned durably by the store's outbox, not by the engine)."""
    facts = {}
    for key, ev in latest(detection(out)).items():
        if ev.retracted:
            continue
        d = dataclasses.asdict(ev)
        for k in ("version", "supersedes"):
            d.pop(k)
        facts[key] = d
    return facts


def chunks_of(decoded: FixBatch, size: int = 150) -> list[FixBatch]:
    """The day as the live service gets it: consecutive batches of *size* decoded fixes."""
    return [decoded.take(np.arange(s, min(s + size, len(decoded))))
            for s in range(0, len(decoded), size)]  # fmt: skip


@pytest.mark.parametrize("cut_share", [0.3, 0.55, 0.8])
def test_a_restart_mid_day_ends_where_an_uninterrupted_run_ends(
    scenario: Path, decoded: FixBatch, index: FenceIndex, cut_share: float
) -> None:
    units = vehicles(scenario)
    chunks = chunks_of(decoded)
    end = int(decoded.recv_us.max()) + 86_400 * US_PER_S

    whole = engine_for(index, units)
    expected_out = run(whole, chunks) + whole.finish(end)
    expected = final_facts(expected_out)
    assert sum(1 for k in expected if k[0] == "VisitCompleted") >= 10

    cut = int(len(chunks) * cut_share)
    first = engine_for(index, units)
    before = run(first, chunks[:cut])  # then kill -9: the engine's memory is gone
    stored = FixBatch.concat(chunks[:cut])  # what the store committed before the kill
    restart_now = int(stored.recv_us.max())
    horizon_us = round(DetectionParams().horizon_s * 1e6)
    recent = stored.take(np.flatnonzero(stored.t_us >= restart_now - horizon_us))
    order = np.lexsort((recent.t_us, recent.unit_id, recent.recv_us))
    second = engine_for(index, units)
    after = second.restore(recent.take(order), restart_now)
    # the broker redelivers the last unacknowledged batch: duplicates change nothing
    after += run(second, chunks[max(cut - 1, 0) :])
    after += second.finish(end)
    got = final_facts(before + after)
    assert got == expected


@pytest.mark.integration
@pytest.mark.anyio
async def test_the_store_gives_back_the_recent_fixes_of_every_unit_in_receive_order(
    pg_dsn: str,
) -> None:
    """What the service reads at start to restore the engine: the window's fixes of all units,
    exactly as written (NaN and -1 included), in receive order; nothing outside the window."""
    from store import Store
    from tests.test_store_write import NOW_S, NOW_US, assert_batches_equal, fix

    store = await Store.open(pg_dsn, partitioning="native", clock=lambda: float(NOW_S))
    try:
        fixes = [fix(f"u{i % 3}", dt_s=float(i), speed_kmh=float(i)) for i in range(30)]
        old = fix("u0", dt_s=-8 * 3600.0)  # beyond the window
        await store.write_batch(FixBatch.from_fixes([*fixes, old]), [])
        got = await store.recent_fixes(NOW_US - 3600 * US_PER_S, NOW_US + 3600 * US_PER_S)
        want = FixBatch.from_fixes(sorted(fixes, key=lambda f: (f.recv_us, f.unit_id, f.t_us)))
        assert_batches_equal(got, want)
        # where the stored data ends: what the restart window is anchored at
        newest = max(f.t_us for f in fixes)
        assert await store.newest_fix_us(NOW_US - 86_400 * US_PER_S, NOW_US + 3600 * US_PER_S) == (
            newest
        )
        assert await store.newest_fix_us(NOW_US - 86_400 * US_PER_S, newest) == newest - US_PER_S
        assert await store.newest_fix_us(NOW_US + 3600 * US_PER_S, NOW_US + 7200 * US_PER_S) is None
    finally:
        await store.aclose()

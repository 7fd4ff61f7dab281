"""The outbox against a real PostgreSQL: store-assigned versions, content dedup of re-derived
records, the current tables, the commands journal, racing writers (seq order = commit order)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import anyio
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.records import Comment
from schedule.stop_events import Acknowledge, AddComment, CancelStop, ReassignStop, ReorderRoute
from store import Store
from store.outbox import (
    JournaledCommand,
    OutboxRecord,
    command_from_json,
    command_to_json,
    load_commands_since,
    load_stop_states,
    records_from_events,
    write_records,
)
from tests.outbox_world import (
    MIN,
    T0,
    check_versions,
    exception,
    stop_changed,
    stop_life,
    stored_versions,
)

pytestmark = [pytest.mark.anyio]


async def _migrated(dsn: str) -> None:
    store = await Store.open(dsn, partitioning="native")
    await store.aclose()


async def _write(dsn: str, events: list[Any]) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        r = await write_records(conn, records_from_events(events))
    return r.inserted, r.unchanged


# -- pure --------------------------------------------------------------------------------------


def test_every_stored_kind_is_recognised_and_console_material_is_not() -> None:
    life = stop_life(1)
    recs = records_from_events([*life, object(), "DataDelayed"])
    assert [r.kind for r in recs] == [
        "stop_state", "stop_state", "alert", "visit", "exception", "visit", "stop_state",
        "exception",
    ]  # fmt: skip
    assert recs[4].body["engine_version"] == 1
    assert "version" not in recs[4].body


def test_the_content_hash_ignores_decision_time_but_not_facts() -> None:
    a, b = (records_from_events([exception(1, 1, "open", at_us=T0 + k)])[0] for k in (0, 7))
    assert a.content_sha256() == b.content_sha256()
    c = records_from_events([exception(1, 1, "confirmed", at_us=T0)])[0]
    assert c.content_sha256() != a.content_sha256()


_ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)


@given(
    st.one_of(
        st.builds(ReassignStop, stop_id=_ids, to_vehicle=_ids, by=_ids),
        st.builds(ReorderRoute, route_id=_ids, stop_ids=st.tuples(_ids, _ids), by=_ids),
        st.builds(CancelStop, stop_id=_ids, reason=_ids, by=_ids),
        st.builds(Acknowledge, alert_id=_ids, version=st.integers(1, 10**6), by=_ids),
        st.builds(AddComment, alert_id=_ids, text=_ids, by=_ids),
    )
)
def test_commands_round_trip_through_their_journal_json(cmd: Any) -> None:
    assert command_from_json(command_to_json(cmd)) == cmd


# -- against PostgreSQL ------------------------------------------------------------------------

pg = pytest.mark.integration


@pg
async def test_versions_are_the_stores_and_new_content_gets_the_next(pg_dsn: str) -> None:
    await _migrated(pg_dsn)
    # the engine's own numbers (7, 9) are ignored for numbering, kept as engine_version
    assert await _write(pg_dsn, [exception(1, 7, "open", at_us=T0)]) == (1, 0)
    assert await _write(pg_dsn, [exception(1, 9, "confirmed", at_us=T0 + MIN)]) == (1, 0)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "SELECT version, body->>'version', body->>'engine_version' FROM record_versions "
            "ORDER BY seq"
        )
        assert await cur.fetchall() == [(1, "1", "7"), (2, "2", "9")]
        cur = await conn.execute("SELECT version, status FROM visit_exceptions_current")
        assert await cur.fetchall() == [(2, "confirmed")]


@pg
async def test_a_re_derived_day_is_announced_once(pg_dsn: str) -> None:
    """A restarted engine re-publishes a whole day (decided at other ticks): nothing new is
    stored, and what follows the restart continues the version sequence."""
    await _migrated(pg_dsn)
    first = [ev for n in range(40) for ev in stop_life(n)]
    assert await _write(pg_dsn, first) == (len(first), 0)
    again = [ev for n in range(40) for ev in stop_life(n, shift_us=3 * MIN)]
    assert await _write(pg_dsn, again) == (0, len(again))
    assert await _write(pg_dsn, [exception(0, 1, "retracted", at_us=T0 + 99 * MIN)]) == (1, 0)
    per = check_versions(await stored_versions(pg_dsn))
    assert per[("exception", "2026-09-21/S00000/late")] == 3
    assert sum(per.values()) == len(first) + 1


@pg
async def test_a_return_to_an_earlier_state_is_a_new_version_and_re_telling_it_is_not(
    pg_dsn: str,
) -> None:
    """pending → at risk → pending: the second "pending" is news for the CRM and the console
    (the first rule, "content stored in any version", dropped it); the same day re-told by a
    restarted engine (other decision times, before the latest) adds nothing."""
    await _migrated(pg_dsn)
    day = [
        stop_changed(1, "pending", at_us=T0, cause="import"),
        stop_changed(1, "at_risk", at_us=T0 + 10 * MIN),
        stop_changed(1, "pending", at_us=T0 + 20 * MIN, cause="fix"),
    ]
    assert await _write(pg_dsn, day) == (3, 0)
    retold = [
        stop_changed(1, "pending", at_us=0, cause="import"),  # before the first fix
        stop_changed(1, "at_risk", at_us=T0 + 12 * MIN),
        stop_changed(1, "pending", at_us=T0 + 25 * MIN),
    ]
    assert await _write(pg_dsn, retold) == (0, 3)
    assert await _write(pg_dsn, day) == (0, 3)  # a retried batch
    assert await _write(pg_dsn, [stop_changed(1, "at_risk", at_us=T0 + 30 * MIN)]) == (1, 0)
    assert list(check_versions(await stored_versions(pg_dsn)).values()) == [4]
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT body->>'state' FROM record_versions ORDER BY seq")
        assert [s for (s,) in await cur.fetchall()] == ["pending", "at_risk", "pending", "at_risk"]
        cur = await conn.execute("SELECT version, state FROM stop_states_current")
        assert await cur.fetchall() == [(4, "at_risk")]


@pg
async def test_a_duplicate_within_one_batch_is_stored_once(pg_dsn: str) -> None:
    await _migrated(pg_dsn)
    ev = exception(3, 1, "open", at_us=T0)
    assert await _write(pg_dsn, [ev, ev, exception(3, 2, "open", at_us=T0 + 5)]) == (1, 2)


@pg
async def test_the_current_tables_hold_the_latest_version(pg_dsn: str) -> None:
    await _migrated(pg_dsn)
    await _write(pg_dsn, stop_life(5))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "SELECT version, status, minutes_late, comments->0->>'text' "
            "FROM visit_exceptions_current"
        )
        assert await cur.fetchall() == [(2, "confirmed", 10.0, "traffic on A5")]
        cur = await conn.execute("SELECT version, state, outcome FROM stop_states_current")
        assert await cur.fetchall() == [(3, "visited", "late")]
        cur = await conn.execute("SELECT version, departure IS NOT NULL FROM visits_current")
        assert await cur.fetchall() == [(2, True)]
        cur = await conn.execute("SELECT version, status, closed_at FROM alerts_current")
        assert await cur.fetchall() == [(1, "open", None)]


@pg
async def test_stop_states_load_back_as_the_engine_published_them(pg_dsn: str) -> None:
    """The restart's other input: the latest StopChanged of each stop of the day, exactly."""
    await _migrated(pg_dsn)
    for n in range(3):
        await _write(pg_dsn, stop_life(n))
    other_day = dataclasses.replace(
        stop_changed(9, "pending", at_us=T0), stop_id="2026-09-22/S00009", service_date="2026-09-22"
    )
    await _write(pg_dsn, [other_day])  # fmt: skip
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        got = await load_stop_states(conn, dt.date(2026, 9, 21))
    assert got == [stop_life(n)[6] for n in range(3)]


@pg
async def test_commands_are_journaled_with_the_records_and_loaded_by_day(pg_dsn: str) -> None:
    await _migrated(pg_dsn)
    ack = Acknowledge(alert_id="stop/2026-09-21/S00001", version=1, by="d1")
    note = AddComment(alert_id="stop/2026-09-21/S00001", text="called the driver", by="d2")
    old = CancelStop(stop_id="2026-09-20/S1", reason="closed", by="d1")
    refused = CancelStop(stop_id="2026-09-21/S9", reason="x", by="d1")
    batch: list[OutboxRecord | JournaledCommand] = [
        *records_from_events([exception(1, 1, "open", at_us=T0)]),
        JournaledCommand(at_us=T0 - 86_400 * 1_000_000, command=old),
        JournaledCommand(at_us=T0 + MIN, command=ack),
        JournaledCommand(at_us=T0 + 2 * MIN, command=refused, accepted=False,
                         refusal="already_final"),
        JournaledCommand(at_us=T0 + 3 * MIN, command=note),
    ]  # fmt: skip
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        r = await write_records(conn, batch)
        assert (r.inserted, r.commands) == (1, 4)
        assert await load_commands_since(conn, T0) == [(T0 + MIN, ack), (T0 + 3 * MIN, note)]


@pg
async def test_racing_writers_commit_in_seq_order_and_number_without_gaps(pg_dsn: str) -> None:
    """Four writers on overlapping ids: versions per id are 1..n in seq order, no content
    twice, and a reader never sees a smaller seq appear after a bigger one (the advisory lock
    makes seq order the commit order): checked through xmin (commit order of transactions)."""
    await _migrated(pg_dsn)

    async def writer(w: int) -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            for k in range(15):
                # each writer re-tells the thread's opening (at T0) before its own comment
                # (later): the opening is stored once, every comment once
                evs = [exception(n, 1, "open", at_us=T0) for n in range(10)]
                c = Comment(by=f"d{w}", at_us=T0 + 1 + k, text=f"w{w} k{k}")
                evs += [exception(n, 2, "open", at_us=c.at_us, comments=(c,)) for n in range(10)]
                await write_records(conn, records_from_events(evs))

    async with anyio.create_task_group() as tg:
        for w in range(4):
            tg.start_soon(writer, w)
    rows = await stored_versions(pg_dsn)
    per = check_versions(rows)
    assert per == {("exception", f"2026-09-21/S{n:05d}/late"): 61 for n in range(10)}
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT xmin::text::bigint FROM record_versions ORDER BY seq")
        xids = [int(x) for (x,) in await cur.fetchall()]
    assert xids == sorted(xids)

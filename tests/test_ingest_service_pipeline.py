"""The ingest pipeline's promises, over small in-memory fakes of broker, decoder and store.

What is checked here is the service's own logic: ack only after commit and in order; decode
once and retry only the write while the database is down; bounded buffers (backpressure, never
a silent drop); abandon without ack on cancellation; every refusal becomes a dead letter.
The same promises against real Mosquitto and PostgreSQL: tests/test_ingest_service_integration.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixes import DeadLetter, Fix, FixBatch
from ingest.batcher import BatchLimits
from ingest.metrics import IngestMetrics
from ingest.registry import UnitEntry, UnitRegistry
from ingest.service import IngestOptions, IngestService

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True, slots=True)
class Msg:
    topic: str
    payload: bytes
    recv_us: int
    token: int
    oversize: bool = False


class FakeSource:
    """A broker session: hands out queued messages, records PUBACKs, checks they are legal."""

    def __init__(self, msgs: Sequence[Msg], committed: set[int]) -> None:
        self._queue: deque[Msg] = deque(msgs)
        self._payloads = {m.token: m.payload for m in msgs}
        self._more = asyncio.Event()
        self.taken = 0
        self.acked: list[int] = []
        self._committed = committed

    def offer(self, msgs: Sequence[Msg]) -> None:
        self._queue.extend(msgs)
        self._more.set()

    async def receive_batch(self, max_messages: int) -> list[Msg]:
        while not self._queue:
            self._more.clear()
            await self._more.wait()
        n = min(max_messages, len(self._queue))
        self.taken += n
        return [self._queue.popleft() for _ in range(n)]

    def ack(self, tokens: Sequence[Any]) -> None:
        for t in tokens:
            if self._payloads[t] != b"skip":  # nothing to store for a skipped sentence
                assert t in self._committed, f"message {t} acked before it was committed"
        self.acked.extend(tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    payload_index: int
    unit_id: str
    reason: str
    detail: str
    sentence: bytes
    recv_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    fixes: FixBatch
    rejects: list[Reject]
    counts: dict[str, int]


class FakeDecoder:
    """Payload ``fix:<seconds>`` is one fix; ``skip`` is a skipped sentence; else a reject."""

    def __init__(self) -> None:
        self.calls = 0
        self.payloads_seen = 0

    def decode(
        self, unit_ids: Sequence[str], payloads: Sequence[bytes], recv_us: npt.NDArray[np.int64]
    ) -> Result:
        self.calls += 1
        self.payloads_seen += len(payloads)
        fixes: list[Fix] = []
        rejects: list[Reject] = []
        counts: dict[str, int] = {}
        for i, (unit, p) in enumerate(zip(unit_ids, payloads, strict=True)):
            if p.startswith(b"fix:"):
                t = int(p[4:])
                fixes.append(
                    Fix(
                        unit_id=unit,
                        t_us=t * 1_000_000,
                        recv_us=int(recv_us[i]),
                        lat=55.0,
                        lon=37.0,
                    )
                )
            elif p == b"skip":
                counts["skipped:GPGSV"] = counts.get("skipped:GPGSV", 0) + 1
            else:
                rejects.append(
                    Reject(
                        payload_index=i,
                        unit_id=unit,
                        reason="bad_checksum",
                        detail="test",
                        sentence=p,
                        recv_us=int(recv_us[i]),
                    )
                )
        return Result(fixes=FixBatch.from_fixes(fixes), rejects=rejects, counts=counts)


@dataclass(frozen=True, slots=True)
class Written:
    inserted: int
    duplicates: int
    dead_letters: int


@dataclass
class FakeSink:
    """The store: idempotent on (unit, time); can be down, or held until released."""

    committed_tokens: set[int]
    rows: set[tuple[str, int]] = field(default_factory=set)
    dead: list[DeadLetter] = field(default_factory=list)
    fail_next: int = 0
    calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: bool = False
    pending_tokens: deque[list[int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.gate.set()

    async def write_batch(self, fixes: FixBatch, dead_letters: Sequence[DeadLetter]) -> Written:
        self.calls += 1
        self.waiting = True
        await self.gate.wait()
        self.waiting = False
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("database is down (fake)")
        before = len(self.rows)
        self.rows.update(zip(fixes.unit_id.tolist(), fixes.t_us.tolist(), strict=True))
        self.dead.extend(dead_letters)
        inserted = len(self.rows) - before
        return Written(inserted, len(fixes) - inserted, len(dead_letters))


def make_messages(n: int, *, start: int = 0, unit: str = "U1") -> list[Msg]:
    return [
        Msg(f"fleet/{unit}/nmea", f"fix:{start + i}".encode(), start + i, start + i)
        for i in range(n)
    ]


@dataclass
class Rig:
    source: FakeSource
    decoder: FakeDecoder
    sink: FakeSink
    service: IngestService
    committed: set[int]


def make_rig(
    msgs: Sequence[Msg],
    *,
    limits: BatchLimits | None = None,
    units: Mapping[str, str] | None = None,
    **opts: Any,
) -> Rig:
    committed: set[int] = set()
    source = FakeSource(msgs, committed)
    decoder = FakeDecoder()
    sink = FakeSink(committed)
    registry = UnitRegistry(
        UnitEntry(unit_id=u, vehicle_id=v) for u, v in (units or {"U1": "V1", "U2": "V2"}).items()
    )
    options = IngestOptions(
        limits=limits or BatchLimits(max_messages=100, max_age_us=2_000),
        store_retry_initial_s=0.001,
        store_retry_max_s=0.002,
        **opts,
    )
    service = IngestService(
        source=source,
        decoder=decoder,
        sink=_Committing(sink, committed, source),
        registry=registry,
        options=options,
        metrics=IngestMetrics(),
    )
    return Rig(source, decoder, sink, service, committed)


class _Committing:
    """Wraps the sink: on success, what the batch stored becomes 'committed'.

    Test messages carry their token as ``recv_us``, and fixes and dead letters keep it, so
    the fake source can check every ack against what is durable.
    """

    def __init__(self, sink: FakeSink, committed: set[int], source: FakeSource) -> None:
        self.sink = sink
        self.committed = committed
        self.source = source

    async def write_batch(self, fixes: FixBatch, dead_letters: Sequence[DeadLetter]) -> Written:
        result = await self.sink.write_batch(fixes, dead_letters)
        self.committed.update(fixes.recv_us.tolist())
        self.committed.update(d.recv_us for d in dead_letters)
        return result


async def eventually(condition: Callable[[], bool], *, polls: int = 5_000) -> None:
    """Wait, yielding to the service's tasks, until *condition* holds (fail after *polls*)."""
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.001)
    pytest.fail("condition never became true")


async def run_until_drained(rig: Rig, *, expect_acked: int) -> None:
    """Run the service until *expect_acked* messages are acked, then stop it gracefully."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(rig.service.run(), name="service-under-test")
        await eventually(lambda: len(rig.source.acked) >= expect_acked)
        rig.service.request_stop()
    assert task.done()


async def test_every_message_acked_exactly_once_in_order_after_commit() -> None:
    msgs = make_messages(1_000)
    rig = make_rig(msgs)
    await run_until_drained(rig, expect_acked=1_000)
    assert rig.source.acked == [m.token for m in msgs]
    assert len(rig.sink.rows) == 1_000
    stats = rig.service.statistics()
    assert stats.messages_received == stats.messages_acked == 1_000
    assert stats.fixes_inserted == 1_000
    assert stats.unacked_messages == 0


async def test_refused_payloads_become_dead_letters_beside_good_fixes() -> None:
    good = make_messages(10)
    bad = [
        Msg("fleet/U1/nmea", b"$GPRMC,garbage", 5_001, 5_001),  # decoder reject
        Msg("fleet/U9/nmea", b"fix:77", 5_002, 5_002),  # unknown unit
        Msg("not/a/fleet/topic", b"fix:78", 5_003, 5_003),  # bad topic
        Msg("fleet/U2/nmea", b"x" * 64, 5_004, 5_004, oversize=True),  # oversize
        Msg("fleet/U2/nmea", b"y" * 300, 5_005, 5_005),  # over our own limit
        Msg("fleet/U2/nmea", b"skip", 5_006, 5_006),  # skipped: no fix, no dead letter
    ]
    rig = make_rig(
        [*good[:5], *bad, *good[5:]], max_payload_bytes=200, dead_letter_payload_bytes=16
    )
    await run_until_drained(rig, expect_acked=16)
    assert len(rig.sink.rows) == 10
    reasons = sorted(d.reason for d in rig.sink.dead)
    assert reasons == sorted(
        ["bad_checksum", "unknown_unit", "bad_topic", "oversize_payload", "oversize_payload"]
    )
    by_reason = {d.reason: d for d in rig.sink.dead}
    assert by_reason["unknown_unit"].unit_id == "U9"
    assert by_reason["bad_topic"].unit_id is None
    assert by_reason["bad_checksum"].topic == "fleet/U1/nmea"
    assert all(len(d.payload) <= 16 for d in rig.sink.dead)
    text = rig.service.metrics.render().decode()
    assert 'fleetwatch_ingest_rejects_total{reason="unknown_unit"} 1.0' in text
    assert 'fleetwatch_ingest_skipped_sentences_total{type="GPGSV"} 1.0' in text
    assert 'fleetwatch_ingest_dead_letters_total{reason="oversize_payload"} 2.0' in text


async def test_database_down_retries_the_same_decoded_batch_and_never_acks_meanwhile() -> None:
    msgs = make_messages(250)
    rig = make_rig(msgs)
    rig.sink.fail_next = 7
    await run_until_drained(rig, expect_acked=250)
    stats = rig.service.statistics()
    assert stats.store_retries == 7
    assert stats.store_up
    assert rig.source.acked == [m.token for m in msgs]
    assert len(rig.sink.rows) == 250
    # decoded once per batch: retries repeat the write, never the decode
    assert rig.decoder.payloads_seen == 250
    assert rig.sink.calls == stats.batches_written + 7
    text = rig.service.metrics.render().decode()
    assert "fleetwatch_store_retries_total 7.0" in text
    assert "fleetwatch_store_up 1.0" in text


async def test_store_up_gauge_reads_zero_while_the_database_is_down() -> None:
    rig = make_rig(make_messages(10))
    rig.sink.fail_next = 1_000_000
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(rig.service.run(), name="service-under-test")
        await eventually(lambda: rig.service.statistics().store_retries >= 3)
        assert not rig.service.statistics().store_up
        assert "fleetwatch_store_up 0.0" in rig.service.metrics.render().decode()
        assert rig.source.acked == []
        task.cancel()
    assert rig.source.acked == []


async def test_full_buffers_stop_the_receive_loop_and_nothing_is_dropped() -> None:
    limits = BatchLimits(max_messages=50, max_age_us=1_000)
    msgs = make_messages(5_000)
    rig = make_rig(msgs, limits=limits, batches_in_flight=2, decoded_in_flight=1)
    rig.sink.gate.clear()  # the database hangs
    # what may be held: raw queue + decoded queue + the batch being written + the one being
    # decoded + the open batch, each at most max_messages
    bound = (2 + 1 + 1 + 1 + 1) * 50
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(rig.service.run(), name="service-under-test")
        await eventually(
            lambda: rig.sink.waiting and rig.service.statistics().raw_batches_queued == 2
        )
        for _ in range(200):  # let every task run as far as it can
            await asyncio.sleep(0)
        taken = rig.source.taken
        assert 0 < taken <= bound, f"took {taken} messages with the database stuck"
        assert rig.source.acked == []
        for _ in range(200):
            await asyncio.sleep(0)
        assert rig.source.taken == taken, "the receive loop kept reading past its bound"
        rig.sink.gate.set()
        await eventually(lambda: len(rig.source.acked) >= 5_000)
        rig.service.request_stop()
    assert task.done()
    assert rig.source.acked == [m.token for m in msgs]
    assert len(rig.sink.rows) == 5_000


async def test_cancellation_abandons_the_batch_in_flight_without_acking() -> None:
    rig = make_rig(make_messages(300))
    rig.sink.gate.clear()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(rig.service.run(), name="service-under-test")
        await eventually(lambda: rig.sink.waiting)
        task.cancel()
    assert task.cancelled()
    assert rig.source.acked == []
    assert rig.sink.rows == set()


async def test_a_store_refusal_is_not_retried_and_stops_the_service_loudly() -> None:
    class Refusing:
        async def write_batch(self, fixes: FixBatch, dead: Sequence[DeadLetter]) -> Written:
            raise ValueError("the database refused this batch")

    committed: set[int] = set()
    source = FakeSource(make_messages(10), committed)
    service = IngestService(
        source=source,
        decoder=FakeDecoder(),
        sink=Refusing(),
        registry=UnitRegistry([UnitEntry(unit_id="U1", vehicle_id="V1")]),
    )
    with pytest.raises(ExceptionGroup) as info:
        await service.run()
    assert info.group_contains(ValueError, match="refused")
    assert source.acked == []


async def test_redelivered_messages_are_stored_once() -> None:
    msgs = make_messages(100)
    rig = make_rig([*msgs, *msgs])
    await run_until_drained(rig, expect_acked=200)
    assert len(rig.sink.rows) == 100
    stats = rig.service.statistics()
    assert stats.fixes_inserted == 100
    assert stats.fixes_duplicate == 100


class Refused(Exception):
    """What the fake database raises for data it will never take (StoreWriteError)."""


async def test_rows_the_database_refuses_are_isolated_and_the_stream_goes_on() -> None:
    msgs = [
        *make_messages(40),
        Msg("fleet/U2/nmea", b"fix:7000", 7000, 7000),
        *make_messages(40, start=100),
    ]
    committed: set[int] = set()
    source = FakeSource(msgs, committed)

    class Picky(FakeSink):
        async def write_batch(self, fixes: FixBatch, dead: Sequence[DeadLetter]) -> Written:
            if "U2" in fixes.unit_id.tolist():
                raise Refused("value out of range for this column")
            if any("é" in d.detail for d in dead):
                raise Refused("invalid byte sequence")
            return await super().write_batch(fixes, dead)

    sink = Picky(committed)
    decoder = FakeDecoder()
    service = IngestService(
        source=source,
        decoder=decoder,
        sink=_Committing(sink, committed, source),
        registry=UnitRegistry(
            [UnitEntry(unit_id="U1", vehicle_id="V1"), UnitEntry(unit_id="U2", vehicle_id="V2")]
        ),
        options=IngestOptions(limits=BatchLimits(max_messages=30, max_age_us=1_000)),
        refused=(Refused,),
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(service.run(), name="service-under-test")
        await eventually(lambda: len(source.acked) >= len(msgs))
        service.request_stop()
    assert source.acked == [m.token for m in msgs]
    assert len(sink.rows) == 80
    (letter,) = sink.dead
    assert letter.reason == "store_refused"
    assert letter.unit_id == "U2"
    assert b'"unit": "U2"' in letter.payload
    text = service.metrics.render().decode()
    assert "fleetwatch_ingest_store_refused_total 1.0" in text
    assert "fleetwatch_ingest_dropped_total 0.0" in text
    assert decoder.payloads_seen == len(msgs)  # isolation re-writes, never re-decodes


message_st = st.tuples(
    st.sampled_from(["U1", "U2", "U9"]),  # U9 is in no registry
    st.integers(0, 30),  # fix time (s): repeats are redeliveries
    st.sampled_from(["fix", "fix", "fix", "bad", "skip"]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(message_st, max_size=120),
    st.integers(1, 40),
    st.sets(st.integers(1, 12), max_size=6),
)
def test_any_stream_with_any_outages_is_acked_once_in_order_and_stored_once(
    spec: list[tuple[str, int, str]], batch_size: int, failing_calls: set[int]
) -> None:
    """Property: whatever the messages and whichever writes fail, every message is acked
    exactly once, in order, after commit; rows = distinct admitted fixes; decoding once."""
    msgs = [
        Msg(
            f"fleet/{unit}/nmea",
            f"fix:{t}".encode() if kind == "fix" else (b"skip" if kind == "skip" else b"$bad"),
            10_000 + i,
            10_000 + i,
        )
        for i, (unit, t, kind) in enumerate(spec)
    ]

    class Flaky(FakeSink):
        async def write_batch(self, fixes: FixBatch, dead: Sequence[DeadLetter]) -> Written:
            if self.calls + 1 in failing_calls:
                self.calls += 1
                raise ConnectionError("database restarting (fake)")
            return await super().write_batch(fixes, dead)

    async def scenario() -> None:
        committed: set[int] = set()
        source = FakeSource(msgs, committed)
        sink = Flaky(committed)
        decoder = FakeDecoder()
        service = IngestService(
            source=source,
            decoder=decoder,
            sink=_Committing(sink, committed, source),
            registry=UnitRegistry(
                [UnitEntry(unit_id="U1", vehicle_id="V1"), UnitEntry(unit_id="U2", vehicle_id="V2")]
            ),
            options=IngestOptions(
                limits=BatchLimits(max_messages=batch_size, max_age_us=500),
                store_retry_initial_s=0.001,
                store_retry_max_s=0.001,
            ),
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run(), name="service-under-test")
            await eventually(lambda: len(source.acked) >= len(msgs))
            service.request_stop()
        assert source.acked == [m.token for m in msgs]
        admitted = [(u, t) for u, t, k in spec if k == "fix" and u != "U9"]
        assert sink.rows == {(u, t * 1_000_000) for u, t in admitted}
        assert decoder.payloads_seen == sum(1 for u, _, _ in spec if u != "U9")
        reasons = sorted(d.reason for d in sink.dead)
        expected = sorted(
            ["unknown_unit"] * sum(1 for u, _, _ in spec if u == "U9")
            + ["bad_checksum"] * sum(1 for u, _, k in spec if u != "U9" and k == "bad")
        )
        assert reasons == expected

    asyncio.run(scenario())

"""The size-or-age batcher, driven by an injected clock (no sleeping, no wall clock)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.batcher import Batch, Batcher, BatchLimits

limits_st = st.builds(
    BatchLimits,
    max_messages=st.integers(1, 20),
    max_age_us=st.integers(0, 1_000),
    max_bytes=st.integers(1, 400),
)
#: (µs since the previous message, payload size)
arrivals_st = st.lists(st.tuples(st.integers(0, 600), st.integers(0, 150)), max_size=120)


@dataclass
class Run:
    batches: list[Batch[int]]
    sizes: list[int]
    add_time: list[int]


def drive(limits: BatchLimits, arrivals: list[tuple[int, int]], *, on_time: bool) -> Run:
    """Play arrivals through a batcher as the shell does.

    ``on_time``: the shell ticks exactly at each deadline the batcher announces (what the
    service's timer does); otherwise it never ticks and only arrivals move time.
    """
    b: Batcher[int] = Batcher(limits)
    out: list[Batch[int]] = []
    now = 0
    sizes, add_time = [], []
    for i, (gap, size) in enumerate(arrivals):
        now += gap
        if on_time:
            deadline = b.deadline_us()
            while deadline is not None and deadline <= now:
                closed = b.tick(deadline)
                assert closed is not None, "a due deadline must close the batch"
                out.append(closed)
                deadline = b.deadline_us()
        out.extend(b.add(i, size, now))
        sizes.append(size)
        add_time.append(now)
    last = b.flush(now)
    if last is not None:
        out.append(last)
    assert len(b) == 0
    assert b.deadline_us() is None
    return Run(out, sizes, add_time)


@given(limits_st, arrivals_st, st.booleans())
def test_every_message_in_exactly_one_batch_in_order(
    limits: BatchLimits, arrivals: list[tuple[int, int]], on_time: bool
) -> None:
    run = drive(limits, arrivals, on_time=on_time)
    flat = [item for batch in run.batches for item in batch.items]
    assert flat == list(range(len(arrivals)))
    assert all(len(batch) > 0 for batch in run.batches)


@given(limits_st, arrivals_st, st.booleans())
def test_no_batch_exceeds_its_bounds(
    limits: BatchLimits, arrivals: list[tuple[int, int]], on_time: bool
) -> None:
    run = drive(limits, arrivals, on_time=on_time)
    for batch in run.batches:
        assert len(batch) <= limits.max_messages
        assert batch.nbytes == sum(run.sizes[i] for i in batch.items)
        # a single oversized item forms a batch of its own; several never exceed the bound
        assert batch.nbytes <= limits.max_bytes or len(batch) == 1


@given(limits_st, arrivals_st)
def test_age_bound_respected_when_the_shell_ticks_on_time(
    limits: BatchLimits, arrivals: list[tuple[int, int]]
) -> None:
    run = drive(limits, arrivals, on_time=True)
    for batch in run.batches:
        first = batch.items[0]
        assert batch.opened_us == run.add_time[first]
        if batch.reason != "flush":
            assert batch.closed_us - batch.opened_us <= limits.max_age_us
        # no item is ever added to a batch that was already due to close
        for item in batch.items:
            assert run.add_time[item] - batch.opened_us < limits.max_age_us or (item == first)


@given(limits_st, arrivals_st, st.booleans())
def test_batches_close_no_earlier_than_their_rule(
    limits: BatchLimits, arrivals: list[tuple[int, int]], on_time: bool
) -> None:
    run = drive(limits, arrivals, on_time=on_time)
    for i, batch in enumerate(run.batches):
        if batch.reason == "age":
            assert batch.closed_us - batch.opened_us >= limits.max_age_us
        elif batch.reason == "messages":
            assert len(batch) == limits.max_messages
        elif batch.reason == "bytes":
            nxt = run.batches[i + 1].items[0] if i + 1 < len(run.batches) else None
            full = batch.nbytes >= limits.max_bytes
            overflow = nxt is not None and batch.nbytes + run.sizes[nxt] > limits.max_bytes
            assert full or overflow
        else:
            assert batch.reason == "flush"
            assert i == len(run.batches) - 1


def test_deadline_is_first_message_plus_age() -> None:
    b: Batcher[str] = Batcher(BatchLimits(max_messages=10, max_age_us=100))
    assert b.deadline_us() is None
    assert b.add("a", 1, now_us=1_000) == ()
    assert b.add("b", 1, now_us=1_050) == ()
    assert b.deadline_us() == 1_100
    assert b.tick(1_099) is None
    closed = b.tick(1_100)
    assert closed is not None
    assert list(closed.items) == ["a", "b"]
    assert closed.reason == "age"
    assert b.deadline_us() is None


def test_late_tick_closes_stale_batch_before_adding() -> None:
    b: Batcher[str] = Batcher(BatchLimits(max_messages=10, max_age_us=100))
    b.add("a", 1, now_us=0)
    closed = b.add("b", 1, now_us=500)
    assert [list(c.items) for c in closed] == [["a"]]
    assert b.deadline_us() == 600


@pytest.mark.parametrize("kwargs", [{"max_messages": 0}, {"max_age_us": -1}, {"max_bytes": 0}])
def test_limits_refuse_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        BatchLimits(**kwargs)


@given(
    limits_st,
    st.lists(st.lists(st.integers(0, 150), max_size=30), max_size=20),
    st.lists(st.integers(0, 600), min_size=20, max_size=20),
)
def test_add_many_equals_adding_one_by_one(
    limits: BatchLimits, chunks: list[list[int]], gaps: list[int]
) -> None:
    one: Batcher[int] = Batcher(limits)
    many: Batcher[int] = Batcher(limits)
    out_one: list[Batch[int]] = []
    out_many: list[Batch[int]] = []
    now, k = 0, 0
    for chunk, gap in zip(chunks, gaps, strict=False):
        now += gap
        ids = list(range(k, k + len(chunk)))
        k += len(chunk)
        for i, size in zip(ids, chunk, strict=True):
            out_one.extend(one.add(i, size, now))
        out_many.extend(many.add_many(ids, chunk, now))
        assert one.deadline_us() == many.deadline_us()
    key = [(list(b.items), b.nbytes, b.opened_us, b.closed_us, b.reason) for b in out_one]
    assert key == [(list(b.items), b.nbytes, b.opened_us, b.closed_us, b.reason) for b in out_many]

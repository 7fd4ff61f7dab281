"""Escalation pieces on their own: the deadline heap against a naive model, route choice."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from alerts.escalation import DeadlineQueue, first_route, least_loaded, next_route
from tests.alerts_helpers import roster, utc

KEYS = st.sampled_from([f"a{i}" for i in range(8)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(0, 1_000)),
        st.tuples(st.just("cancel"), KEYS, st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 1_000)),
    ),
    max_size=200,
)


@given(OPS)
def test_deadline_queue_matches_a_naive_dict(ops: list[tuple[str, str, int]]) -> None:
    q = DeadlineQueue()
    model: dict[str, int] = {}
    for op, key, t in ops:
        if op == "set":
            q.set_at(key, t)
            model[key] = t
        elif op == "cancel":
            q.cancel(key)
            model.pop(key, None)
        else:
            due = q.pop_due(t)
            assert sorted(due) == sorted(k for k, d in model.items() if d <= t)
            # deadline order, equal deadlines by key (not by the order they were set)
            assert due == sorted(due, key=lambda k: (model[k], k))
            for k in due:
                del model[k]
        assert len(q) == len(model)
        assert q.next_deadline() == (min(model.values()) if model else None)
        for k, d in model.items():
            assert q.deadline_of(k) == d


def test_least_loaded_prefers_lower_load_then_roster_order() -> None:
    r = roster()
    now = utc("10:00")  # D01, D02, D03 on shift
    assert least_loaded(r, Counter(), now) == "D01"
    assert least_loaded(r, Counter({"D01": 2, "D02": 1, "D03": 1}), now) == "D02"
    assert least_loaded(r, Counter(), now, exclude=frozenset({"D01", "D02"})) == "D03"
    assert least_loaded(r, Counter(), utc("20:00")) is None  # 23:00 local: nobody


def test_routes() -> None:
    r = roster()
    assert first_route(r, "V003", Counter(), utc("10:00")).to == "D02"
    assert first_route(r, "V999", Counter({"D01": 1}), utc("10:00")).to == "D02"
    head = first_route(r, "V001", Counter(), utc("20:00"))
    assert (head.to, head.level) == ("D00", 2)
    hop = next_route(r, 0, "D01", Counter(), utc("13:00"), 600)  # only D03 on shift
    assert hop is not None
    assert (hop.to, hop.level) == ("D03", 1)
    alone = next_route(r, 0, "D03", Counter(), utc("13:00"), 600)  # nobody else: head
    assert alone is not None
    assert (alone.to, alone.level) == ("D00", 2)
    assert next_route(r, 2, "D00", Counter(), utc("13:00"), 900) is None

"""Escalation: who gets an alert first, and where it goes when nobody acknowledges it.

The company's rule (issue 8): the vehicle's responsible dispatcher gets the alert (level 0);
not acknowledged within ``ack_timeout_s`` it is re-routed to the least-loaded dispatcher on
shift (level 1); not acknowledged ``head_after_s`` later it goes to the head dispatcher
(level 2), who is the last resort.  *Load* is the number of open (unacknowledged) alerts
assigned to a dispatcher, kept as a counter the desk updates on every change, so choosing is
O(dispatchers on shift), not O(alerts).

Who gets the first hop when the responsible dispatcher is off shift, or the vehicle has none:
the least-loaded dispatcher on shift, else the head.  A re-route never picks the dispatcher who
already let the alert time out; when nobody else is on shift it goes straight to the head.
Ties between equally loaded dispatchers go to the first in roster order (deterministic).

Timers live in :class:`DeadlineQueue`, a heap with lazy cancellation: per-tick work is
proportional to the deadlines that are due (plus a log factor), never to all alerts.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from alerts.roster import Roster

LEVEL_RESPONSIBLE = 0
LEVEL_POOL = 1
LEVEL_HEAD = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where an alert goes: the level it is at, the dispatcher, and why (recorded as a hop)."""

    level: int
    to: str
    reason: str


def least_loaded(
    roster: Roster, loads: Counter[str], now_us: int, *, exclude: frozenset[str] = frozenset()
) -> str | None:
    best: str | None = None
    best_load = 0
    for d in roster.acting_on_shift(now_us):
        if d in exclude:
            continue
        if best is None or loads[d] < best_load:
            best, best_load = d, loads[d]
    return best


def first_route(roster: Roster, vehicle_id: str | None, loads: Counter[str], now_us: int) -> Route:
    """Level 0: the responsible dispatcher when on shift; otherwise the least loaded on shift;
    otherwise the head."""
    responsible = roster.responsible_for(vehicle_id)
    if responsible is not None and roster.on_shift(responsible, now_us):
        return Route(
            level=LEVEL_RESPONSIBLE, to=responsible, reason=f"responsible for {vehicle_id}"
        )
    why = (
        f"{responsible} (responsible for {vehicle_id}) is off shift"
        if responsible is not None
        else f"no dispatcher is responsible for {vehicle_id or 'this site'}"
    )
    pick = least_loaded(roster, loads, now_us)
    if pick is not None:
        return Route(level=LEVEL_RESPONSIBLE, to=pick, reason=f"{why}: least loaded on shift")
    return Route(level=LEVEL_HEAD, to=roster.head, reason=f"{why} and nobody is on shift: head")


def next_route(
    roster: Roster, level: int, current: str, loads: Counter[str], now_us: int, waited_s: float
) -> Route | None:
    """The hop after ``level`` for an alert ``current`` did not acknowledge; None at the head."""
    if level >= LEVEL_HEAD:
        return None
    why = f"not acknowledged by {current} within {waited_s / 60:g} min"
    if level == LEVEL_RESPONSIBLE:
        pick = least_loaded(roster, loads, now_us, exclude=frozenset({current}))
        if pick is not None:
            return Route(level=LEVEL_POOL, to=pick, reason=f"{why}: least loaded on shift")
        return Route(level=LEVEL_HEAD, to=roster.head, reason=f"{why}, nobody else on shift: head")
    return Route(level=LEVEL_HEAD, to=roster.head, reason=f"{why}: head dispatcher")


class DeadlineQueue:
    """Deadlines per key with O(log n) set/cancel and lazy deletion.

    ``set_at(key, t)`` replaces the key's deadline; ``cancel(key)`` drops it; ``pop_due(now)``
    returns the keys whose deadline is ``<= now`` in deadline order and forgets them.  Equal
    deadlines come out in key order (not in the order they were set), so a desk rebuilt after
    a restart, which sets its timers in another order, fires them in the same order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, int]] = []
        self._live: dict[str, tuple[int, int]] = {}  # key -> (deadline, sequence)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def set_at(self, key: str, deadline_us: int) -> None:
        self._seq += 1
        self._live[key] = (deadline_us, self._seq)
        heapq.heappush(self._heap, (deadline_us, key, self._seq))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(t, k, s) for k, (t, s) in self._live.items()]
            heapq.heapify(self._heap)

    def cancel(self, key: str) -> None:
        self._live.pop(key, None)

    def deadline_of(self, key: str) -> int | None:
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def _drop_stale_top(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][1]) != (heap[0][0], heap[0][2]):
            heapq.heappop(heap)

    def next_deadline(self) -> int | None:
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_us: int) -> list[str]:
        due: list[str] = []
        while True:
            self._drop_stale_top()
            if not self._heap or self._heap[0][0] > now_us:
                return due
            _, key, _ = heapq.heappop(self._heap)
            del self._live[key]
            due.append(key)

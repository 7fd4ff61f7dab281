"""Size-or-age batching as a sans-I/O state machine.

Writing one fix per transaction is what makes naive pipelines slow; waiting for a full batch is
what makes them late when traffic is thin.  So a batch closes when it holds ``max_messages``
messages or ``max_bytes`` payload bytes, or when its first message is ``max_age_us`` old,
whichever comes first.

The batcher never reads a clock and never sleeps: every call takes ``now_us`` (µs, any
monotonic origin), and :meth:`Batcher.deadline_us` says when it next wants :meth:`Batcher.tick`.
The async shell (``ingest.service``) owns the timer.  This keeps the age rule testable with an
injected clock and replayable at any speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

#: Why a batch closed: it reached the message bound, the byte bound, its age, or was flushed.
CloseReason = Literal["messages", "bytes", "age", "flush"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    """Bounds of one batch.  Defaults are documented in docs/ingest.md.

    ``max_messages=2000`` keeps a batch's COPY around 10 ms; ``max_age_us=100_000`` (100 ms)
    bounds the latency a quiet fleet adds; ``max_bytes`` bounds memory per batch whatever the
    payload sizes (a unit back from a coverage gap sends its buffer in one payload).
    """

    max_messages: int = 2000
    max_age_us: int = 100_000
    max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")
        if self.max_age_us < 0:
            raise ValueError(f"max_age_us must be >= 0, got {self.max_age_us}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch(Generic[T]):
    """A closed batch: items in arrival order, when it opened and closed, and why."""

    items: Sequence[T]
    nbytes: int
    opened_us: int
    closed_us: int
    reason: CloseReason

    def __len__(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class Batcher(Generic[T]):
    """Collects items into batches bounded by count, bytes and age.

    An item larger than ``max_bytes`` on its own still forms a batch of one (size limits on a
    single payload are the validator's job, not the batcher's): nothing is ever refused here.
    """

    limits: BatchLimits = field(default_factory=BatchLimits)
    _items: list[T] = field(default_factory=list)
    _nbytes: int = 0
    _opened_us: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def deadline_us(self) -> int | None:
        """When the open batch reaches its age bound; ``None`` when nothing is pending."""
        if not self._items:
            return None
        return self._opened_us + self.limits.max_age_us

    def add(self, item: T, nbytes: int, now_us: int) -> tuple[Batch[T], ...]:
        """Add one item; return the batches this closes (zero, one or two), oldest first.

        Two batches close at once when the open batch is already past its age (the shell was
        late to tick) or would overflow ``max_bytes`` with this item, and the new item then
        fills a batch on its own.
        """
        limits = self.limits
        items = self._items
        first: tuple[Batch[T], ...] = ()
        if items:
            if now_us >= self._opened_us + limits.max_age_us:
                first = (self._close(now_us, "age"),)
                items = self._items
            elif self._nbytes + nbytes > limits.max_bytes:
                first = (self._close(now_us, "bytes"),)
                items = self._items
        if not items:
            self._opened_us = now_us
        items.append(item)
        self._nbytes += nbytes
        if len(items) >= limits.max_messages:
            return (*first, self._close(now_us, "messages"))
        if self._nbytes >= limits.max_bytes:
            return (*first, self._close(now_us, "bytes"))
        if limits.max_age_us == 0:
            return (*first, self._close(now_us, "age"))
        return first

    def add_many(self, items: Sequence[T], sizes: Sequence[int], now_us: int) -> list[Batch[T]]:
        """Add items arriving together (one read from the socket); same result as calling
        :meth:`add` for each at *now_us*, with one list extension in the common case."""
        if len(items) != len(sizes):
            raise ValueError("items and sizes must have the same length")
        limits = self.limits
        total = sum(sizes)
        pending = self._items
        fresh = not pending or now_us < self._opened_us + limits.max_age_us
        if (
            fresh
            and limits.max_age_us > 0
            and len(pending) + len(items) <= limits.max_messages
            and self._nbytes + total < limits.max_bytes
        ):
            if not items:
                return []
            if not pending:
                self._opened_us = now_us
            pending.extend(items)
            self._nbytes += total
            if len(pending) == limits.max_messages:
                return [self._close(now_us, "messages")]
            return []
        closed: list[Batch[T]] = []
        for item, size in zip(items, sizes, strict=True):
            closed.extend(self.add(item, size, now_us))
        return closed

    def tick(self, now_us: int) -> Batch[T] | None:
        """Close the open batch if it has reached its age bound."""
        deadline = self.deadline_us()
        if deadline is None or now_us < deadline:
            return None
        return self._close(now_us, "age")

    def flush(self, now_us: int) -> Batch[T] | None:
        """Close whatever is pending (shutdown)."""
        if not self._items:
            return None
        return self._close(now_us, "flush")

    def _close(self, now_us: int, reason: CloseReason) -> Batch[T]:
        batch = Batch(
            items=self._items,
            nbytes=self._nbytes,
            opened_us=self._opened_us,
            closed_us=now_us,
            reason=reason,
        )
        self._items = []
        self._nbytes = 0
        return batch

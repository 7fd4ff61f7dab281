"""Live visit/stop detection: committed fix batches -> fence matching -> the fleet tracker.

The ingest pipeline hands every committed :class:`FixBatch` to :meth:`DetectionRound.offer`
(from its ``on_commit`` hook, on the event loop: it only appends).  A task named ``detect``
runs a *round* every ``detect_interval_ms``: it takes what accumulated, matches it against the
day's fences in one vectorised call and feeds the :class:`FleetTracker`, then advances the
tracker to "now" so silent vehicles' visits close.  Rounds, not batches, because the tracker
pays a fixed cost per vehicle per call: at 100 ms ingest batches it would re-run every vehicle
ten times a second for a few fixes each.

"Now" for closing silent vehicles' visits is ``min(wall clock, newest fix time fed)``: in live
operation the fleet's newest fix is seconds old, so this is the wall clock; when the stream is a
replay (``fleetwatch demo`` replays a day at x60) or ingest is catching up a backlog, the fixes'
own clock is the one that says who has been silent, and the wall clock would close every open
visit at every round (to be corrected by the next fixes).  A unit whose clock runs ahead cannot
push it past the wall clock.  If the whole fleet falls silent, "now" stalls: visits stay open
until data flows again rather than being closed by an outage of our own.

The accumulator is bounded in fixes.  When detection falls that far behind, a further batch is
dropped *from detection only* (it is already durable in the database), counted in
``fleetwatch_detection_dropped_fixes_total`` and logged once.  Recovery path (not implemented):
re-read the dropped interval from the ``fixes`` table and feed it as late fixes, which the
tracker already replays and corrects.

:class:`DetectionRound` is sans-I/O (batches and ``now`` in, events out); :class:`LiveDetector`
is the async shell.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.fixes import FixBatch
from fleetwatch.config import ConfigError
from fleetwatch.detect_metrics import DetectMetrics
from geofence import FenceIndex, SiteFileError, SiteLoad, load_sites_csv, load_sites_geojson
from ingest.registry import UnitEntry
from schedule.events import DetectionEvent, StopStarted, VisitCompleted, VisitStarted
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker

log = logging.getLogger(__name__)

#: Fixes held for the next round before further batches are dropped from detection.
DEFAULT_MAX_PENDING_FIXES = 500_000
#: Recent events a :class:`LiveDetector` keeps for the demo and tests (the tracker's output
#: goes nowhere else yet: storage and the schedule stage are issue 5's).
RECENT_EVENTS = 100_000


class SitesFileError(ConfigError):
    """The configured sites file cannot be used at all (unreadable, not parseable, no site)."""


def load_sites(path: Path) -> SiteLoad:
    """Sites of a GeoJSON or CSV file, chosen by extension; problems are logged per site."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".geojson", ".json"):
            load = load_sites_geojson(path)
        elif suffix == ".csv":
            load = load_sites_csv(path)
        else:
            raise SitesFileError(
                f"FLEETWATCH_SITES_FILE={path}: unknown extension {suffix!r}; "
                "use .geojson/.json (GeoJSON) or .csv"
            )
    except SiteFileError as exc:
        raise SitesFileError(f"FLEETWATCH_SITES_FILE: {exc}") from exc
    for problem in load.problems:
        log.warning("site file: %s", problem)
    if not load.sites:
        raise SitesFileError(
            f"FLEETWATCH_SITES_FILE={path}: no usable site ({len(load.problems)} problems, "
            "logged above)"
        )
    return load


@dataclass(frozen=True, slots=True, kw_only=True)
class EventCounts:
    """What one round's events add to the counters (first versions only; corrections apart)."""

    visits_started: int = 0
    visits_completed: int = 0
    stops_site: int = 0
    stops_unscheduled: int = 0
    corrections: int = 0


def count_events(events: Sequence[DetectionEvent]) -> EventCounts:
    """Visits and stops are counted once, at their first version; a later version (including
    a retraction) counts as a correction, so the totals are "said so far", not "true now"."""
    started = completed = site = unscheduled = corrections = 0
    for ev in events:
        if ev.version > 1:
            corrections += 1
        elif isinstance(ev, VisitStarted):
            started += 1
        elif isinstance(ev, VisitCompleted):
            completed += 1
        elif isinstance(ev, StopStarted):
            if ev.site_id is None:
                unscheduled += 1
            else:
                site += 1
    return EventCounts(
        visits_started=started,
        visits_completed=completed,
        stops_site=site,
        stops_unscheduled=unscheduled,
        corrections=corrections,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    fixes: int
    events: tuple[DetectionEvent, ...]
    counts: EventCounts


class DetectionRound:
    """The accumulator and the tracker: :meth:`offer` batches, then :meth:`run` a round."""

    def __init__(
        self,
        index: FenceIndex,
        unit_to_vehicle: Mapping[str, str],
        params: DetectionParams | None = None,
        *,
        max_pending_fixes: int = DEFAULT_MAX_PENDING_FIXES,
    ) -> None:
        if max_pending_fixes < 1:
            raise ValueError(f"max_pending_fixes must be >= 1, got {max_pending_fixes}")
        self.index = index
        self.tracker = FleetTracker(index.site_ids, unit_to_vehicle, params)
        self.max_pending_fixes = max_pending_fixes
        self._pending: list[FixBatch] = []
        self._pending_fixes = 0
        self.dropped_fixes = 0
        self.rounds = 0
        #: newest fix time fed so far (µs), None before the first fix
        self.newest_fix_us: int | None = None

    @property
    def pending_fixes(self) -> int:
        return self._pending_fixes

    def set_units(self, unit_to_vehicle: Mapping[str, str]) -> None:
        """Registry reloaded: later rounds map units to vehicles with this."""
        self.tracker.unit_to_vehicle = dict(unit_to_vehicle)

    def offer(self, batch: FixBatch) -> bool:
        """Keep *batch* for the next round; False (and counted) when the bound is reached."""
        n = len(batch)
        if self._pending_fixes + n > self.max_pending_fixes:
            self.dropped_fixes += n
            return False
        if n:
            self._pending.append(batch)
            self._pending_fixes += n
        return True

    def take(self) -> FixBatch:
        """The accumulated fixes as one batch; the accumulator is empty afterwards."""
        batch = FixBatch.concat(self._pending)
        self._pending = []
        self._pending_fixes = 0
        return batch

    def process(self, fixes: FixBatch, now_us: int) -> RoundResult:
        """Match *fixes*, feed the tracker, advance it to *now_us*."""
        events: list[DetectionEvent] = []
        if len(fixes):
            newest = int(fixes.t_us.max())
            if self.newest_fix_us is None or newest > self.newest_fix_us:
                self.newest_fix_us = newest
            events += self.tracker.feed_matched(fixes, self._match)
        events += self.tracker.advance(now_us)
        self.rounds += 1
        return RoundResult(fixes=len(fixes), events=tuple(events), counts=count_events(events))

    def data_now(self, wall_us: int, fixes: FixBatch) -> int:
        """``min(wall_us, newest fix time including *fixes*)``: see the module docstring."""
        newest = self.newest_fix_us
        if len(fixes):
            t = int(fixes.t_us.max())
            newest = t if newest is None else max(newest, t)
        return wall_us if newest is None else min(wall_us, newest)

    def run(self, now_us: int) -> RoundResult:
        """:meth:`take` then :meth:`process`."""
        return self.process(self.take(), now_us)

    def _match(self, lon: Any, lat: Any, margin_m: float) -> npt.NDArray[np.integer[Any]]:
        pairs: npt.NDArray[np.integer[Any]] = self.index.query(lon, lat, margin_m=margin_m)
        return pairs


def vehicles_of(registry: Mapping[str, UnitEntry]) -> dict[str, str]:
    return {unit: entry.vehicle_id for unit, entry in registry.items()}


class LiveDetector:
    """The ``detect`` task: a round every *interval_s* (or on :meth:`request_round`)."""

    def __init__(
        self,
        detection: DetectionRound,
        metrics: DetectMetrics,
        *,
        interval_s: float,
        clock_us: Callable[[], int],
    ) -> None:
        self.detection = detection
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock_us = clock_us
        self._registry: Callable[[], Mapping[str, UnitEntry]] | None = None
        self._registry_seen: Mapping[str, UnitEntry] | None = None
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._warned_drop = False
        self.recent: collections.deque[DetectionEvent] = collections.deque(maxlen=RECENT_EVENTS)
        self.visits_started = 0
        self.visits_completed = 0

    def on_commit(self, batch: FixBatch) -> None:
        """Ingest's hook: never blocks, never raises for a full accumulator."""
        if not self.detection.offer(batch):
            self.metrics.dropped_fixes.inc(len(batch))
            if not self._warned_drop:
                self._warned_drop = True
                log.warning(
                    "live detection is behind: more than %d fixes pending; further batches "
                    "are left out of detection (they are stored; counted in "
                    "fleetwatch_detection_dropped_fixes_total)",
                    self.detection.max_pending_fixes,
                )
        self.metrics.pending_fixes.set(self.detection.pending_fixes)

    def set_registry_source(self, registry: Callable[[], Mapping[str, UnitEntry]]) -> None:
        """Where each round reads the current unit registry (it is reloaded while running)."""
        self._registry = registry

    def request_round(self) -> None:
        """Run a round now instead of at the next interval."""
        self._wake.set()

    async def next_round(self, timeout_s: float) -> None:
        """Wait until a round (started after this call) completes."""
        self._round_done.clear()
        async with asyncio.timeout(timeout_s):
            await self._round_done.wait()

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.round()

    async def round(self) -> RoundResult:
        self._sync_units()
        fixes = self.detection.take()  # on the loop: offer() and take() never interleave
        self.metrics.pending_fixes.set(0)
        now_us = self.detection.data_now(self._clock_us(), fixes)
        t0 = time.perf_counter()
        result = await asyncio.to_thread(self.detection.process, fixes, now_us)
        self.metrics.seconds.observe(time.perf_counter() - t0)
        self._count(result.counts)
        self.recent.extend(result.events)
        self._round_done.set()
        return result

    def _sync_units(self) -> None:
        if self._registry is None:
            return
        current = self._registry()
        if current is not self._registry_seen:
            self._registry_seen = current
            self.detection.set_units(vehicles_of(current))

    def _count(self, c: EventCounts) -> None:
        m = self.metrics
        self.visits_started += c.visits_started
        self.visits_completed += c.visits_completed
        m.visits_started.inc(c.visits_started)
        m.visits_completed.inc(c.visits_completed)
        m.stops.labels("site").inc(c.stops_site)
        m.stops.labels("unscheduled").inc(c.stops_unscheduled)
        m.corrections.inc(c.corrections)

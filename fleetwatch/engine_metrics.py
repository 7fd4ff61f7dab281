"""Prometheus collectors of the engine (matching, detection, schedule, alerts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schedule.engine import Engine
from schedule.events import StopStarted, VisitCompleted, VisitStarted
from schedule.stop_events import VehiclePosition


@dataclass(frozen=True, slots=True)
class EngineCounters:
    """What the shell and the metrics read of the engine after each step: a plain snapshot,
    so that it can cross a process boundary (the engine in a child process) as well."""

    pending_fixes: int
    data_delayed: bool
    newest_fix_us: int | None
    last_now_us: int | None
    next_deadline_us: int | None
    rounds: int
    data_delayed_after_s: float

    @classmethod
    def of(cls, engine: Engine) -> EngineCounters:
        return cls(
            pending_fixes=engine.pending_fixes,
            data_delayed=engine.data_delayed,
            newest_fix_us=engine.newest_fix_us,
            last_now_us=engine.last_now_us,
            next_deadline_us=engine.next_deadline_us(),
            rounds=engine.stats.rounds,
            data_delayed_after_s=engine.params.data_delayed_after_s,
        )


class EngineMetrics:
    """Detection counts are of first versions; later versions count as corrections."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.visits_started = Counter(
            "fleetwatch_visits_started", "Visits recognised (first version).", registry=r
        )
        self.visits_completed = Counter(
            "fleetwatch_visits_completed", "Visits completed (first version).", registry=r
        )
        self.stops = Counter(
            "fleetwatch_stops",
            "Stops recognised (first version), inside a site or unscheduled.",
            ["kind"],
            registry=r,
        )
        self.corrections = Counter(
            "fleetwatch_detection_corrections",
            "Events that correct or retract an earlier one (late fixes).",
            registry=r,
        )
        self.seconds = Histogram(
            "fleetwatch_engine_seconds",
            "Duration of one engine step (a round of matching and detection, or a tick).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.pending_fixes = Gauge(
            "fleetwatch_engine_pending_fixes",
            "Decoded fixes waiting for the next detection round.",
            registry=r,
        )
        self.inbox = Gauge(
            "fleetwatch_engine_inbox", "Batches and commands waiting for the engine.", registry=r
        )
        self.backpressure_seconds = Counter(
            "fleetwatch_engine_backpressure_seconds",
            "Time ingest waited because the engine's inbox was full (no fix is dropped).",
            registry=r,
        )
        self.events = Counter(
            "fleetwatch_engine_events",
            "Everything the engine emitted, by record type.",
            ["type"],
            registry=r,
        )
        self.data_delayed = Gauge(
            "fleetwatch_engine_data_delayed",
            "1 while no fix from any unit has arrived for data_delayed_after_s.",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "fleetwatch_engine_lag_seconds",
            "Driver clock minus the newest fix the engine has seen.",
            registry=r,
        )
        self.publish_errors = Counter(
            "fleetwatch_engine_publish_errors",
            "Engine output consumers that raised (logged; the engine goes on).",
            registry=r,
        )
        self.site_problems = Counter(
            "fleetwatch_site_problems",
            "Problems of the sites file at load: skipped (fatal) or repaired sites.",
            ["fatal"],
            registry=r,
        )
        for kind in ("site", "unscheduled"):
            self.stops.labels(kind)
        for fatal in ("true", "false"):
            self.site_problems.labels(fatal)

    def observe(self, engine: EngineCounters, out: Sequence[Any], seconds: float) -> None:
        self.seconds.observe(seconds)
        self.pending_fixes.set(engine.pending_fixes)
        self.data_delayed.set(1 if engine.data_delayed else 0)
        if engine.newest_fix_us is not None and engine.last_now_us is not None:
            self.lag_seconds.set(max(0.0, (engine.last_now_us - engine.newest_fix_us) / 1e6))
        # a round's output is mostly positions (one per vehicle: 30,000 at 30,000 vehicles):
        # count by type in one pass, and look closer only at what is not a position
        by_type: dict[type, int] = {}
        for ev in out:
            cls = type(ev)
            by_type[cls] = by_type.get(cls, 0) + 1
            if cls is VehiclePosition:
                continue
            version = getattr(ev, "version", 1)
            if isinstance(ev, VisitStarted | VisitCompleted | StopStarted) and version > 1:
                self.corrections.inc()
            elif isinstance(ev, VisitStarted):
                self.visits_started.inc()
            elif isinstance(ev, VisitCompleted):
                self.visits_completed.inc()
            elif isinstance(ev, StopStarted):
                self.stops.labels("unscheduled" if ev.site_id is None else "site").inc()
        for cls, n in by_type.items():
            name = cls.__name__
            self.events.labels(name).inc(n)

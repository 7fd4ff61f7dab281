"""Prometheus collectors of live visit/stop detection, on the ingest service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DetectMetrics:
    """Counts of first versions; corrections counted apart (see ``fleetwatch.detect``)."""

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
            "fleetwatch_detection_seconds",
            "Duration of one detection round (match, track, advance).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.pending_fixes = Gauge(
            "fleetwatch_detection_pending_fixes",
            "Committed fixes waiting for the next detection round.",
            registry=r,
        )
        self.dropped_fixes = Counter(
            "fleetwatch_detection_dropped_fixes",
            "Committed fixes left out of detection because its accumulator was full.",
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

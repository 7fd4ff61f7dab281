"""Prometheus view of :meth:`store.spool.SpoolingSink.statistics`, read at each scrape.

Reliability #4 asks that a full buffer be visible: ``fleetwatch_spool_full_waits`` counts the
batches that had to wait for space (their acknowledgements waited with them), and
``fleetwatch_spool_waiting`` is non-zero while one waits.  Alert on
``fleetwatch_spool_bytes / fleetwatch_spool_max_bytes`` and on
``fleetwatch_spool_oldest_age_seconds`` (how far PostgreSQL is behind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from store.spool import SpoolStatistics


class SpoolCollector(Collector):
    def __init__(self, read: Callable[[], SpoolStatistics]) -> None:
        self._read = read

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        s = self._read()
        gauges = (
            ("fleetwatch_spool_batches", "Batches in the local spool, not yet in PostgreSQL.",
             s.batches),
            ("fleetwatch_spool_fixes", "Fixes in the local spool.", s.fixes),
            ("fleetwatch_spool_bytes", "Record bytes in the local spool.", s.bytes),
            ("fleetwatch_spool_max_bytes", "The spool's bound (FLEETWATCH_SPOOL_MAX_BYTES).",
             s.max_bytes),
            ("fleetwatch_spool_oldest_age_seconds",
             "Age of the oldest spooled batch (0 when empty).", s.oldest_age_s or 0.0),
            ("fleetwatch_spool_waiting", "write_batch calls waiting for spool space now.",
             s.waiting_for_space),
        )  # fmt: skip
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        counters = (
            ("fleetwatch_spool_direct_batches",
             "Batches written straight to PostgreSQL by the spooling sink.", s.direct_batches),
            ("fleetwatch_spool_appended_batches", "Batches appended to the spool.",
             s.spooled_batches),
            ("fleetwatch_spool_appended_fixes", "Fixes appended to the spool.", s.spooled_fixes),
            ("fleetwatch_spool_drained_batches", "Spooled batches committed to PostgreSQL.",
             s.drained_batches),
            ("fleetwatch_spool_drained_fixes_inserted",
             "Spooled fixes committed as new rows.", s.drained_fixes_inserted),
            ("fleetwatch_spool_drain_retries",
             "Drain attempts that met an unavailable database.", s.drain_retries),
            ("fleetwatch_spool_full_waits",
             "Batches that waited for spool space (acks held: backpressure).", s.full_waits),
            ("fleetwatch_spool_full_wait_seconds", "Time spent waiting for spool space.",
             s.full_wait_s),
            ("fleetwatch_spool_refused_rows",
             "Spooled rows PostgreSQL refused (kept as dead letters store_refused).",
             s.refused_rows),
            ("fleetwatch_spool_unclean_opens",
             "Spool opened after a crash (SQLite replayed its WAL).", s.unclean_opens),
            ("fleetwatch_spool_dropped_rows",
             "Spooled rows refused even as dead letters: dropped and logged.", s.dropped_rows),
        )  # fmt: skip
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        skipped = CounterMetricFamily(
            "fleetwatch_spool_skipped_records",
            "Spool records skipped as corrupt (never drained), by reason.",
            labels=["reason"],
        )
        for reason in ("checksum", "undecodable", "torn_tail"):
            skipped.add_metric([reason], s.skipped.get(reason, 0))
        yield skipped


def register_spool_metrics(
    registry: CollectorRegistry, read: Callable[[], SpoolStatistics]
) -> None:
    """Expose the spool's statistics on *registry* (e.g. ``IngestMetrics.registry``)."""
    registry.register(SpoolCollector(read))

"""Prometheus metrics of the ingest pipeline, registered on a registry handed in.

Counters are bumped once per *batch* (never once per message), and the latency histograms
take whole numpy arrays (:class:`ArrayHistogram`), so metrics cost nothing per fix.

The process's registry and the HTTP server that serves it belong to the service layer
(``fleetwatch.web``): the wiring hands its registry to :class:`IngestMetrics`, and ingest owns
no server.  Every metric name is listed in docs/ingest.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

#: Latency buckets (seconds) for receive→commit and fix→commit: 1 ms .. 15 min.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
)  # fmt: skip
WRITE_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class ArrayHistogram(Collector):
    """A Prometheus histogram fed whole arrays at once (``np.searchsorted`` + ``bincount``).

    prometheus_client's :class:`Histogram` takes one value per call; a 2,000-fix batch would
    cost 2,000 Python calls.  Observations are in seconds.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)  # last: +Inf only
        self._sum = 0.0

    def observe_many(self, values_s: npt.NDArray[np.float64]) -> None:
        if len(values_s) == 0:
            return
        idx = np.searchsorted(self._bounds, values_s, side="left")
        add = np.bincount(idx, minlength=len(self._counts))
        self._counts += add
        self._sum += float(values_s.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        cum = np.cumsum(self._counts)
        total_sum = self._sum
        buckets = [(repr(float(b)), float(c)) for b, c in zip(self._bounds, cum[:-1], strict=True)]
        buckets.append(("+Inf", float(cum[-1])))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=total_sum
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceCounters:
    """What the MQTT source reports, read at scrape time (see ``ingest.mqtt.MqttStats``)."""

    received: int
    acked: int
    reconnects: int
    stale_acks: int
    connected: bool
    buffered: int
    #: PUBLISHes with the DUP flag: the broker resent a message we had not acknowledged (after
    #: a crash or a dropped connection) -- the redelivery reliability promise 2 relies on
    redelivered: int = 0


class _SourceCollector(Collector):
    def __init__(self, read: Callable[[], SourceCounters | None]) -> None:
        self._read = read

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        s = self._read()
        if s is None:
            return
        yield CounterMetricFamily(
            "fleetwatch_mqtt_received", "Messages the MQTT client received.", value=s.received
        )
        yield CounterMetricFamily(
            "fleetwatch_mqtt_acked", "PUBACKs sent after the batch was committed.", value=s.acked
        )
        yield CounterMetricFamily(
            "fleetwatch_mqtt_reconnects", "Reconnections to the broker.", value=s.reconnects
        )
        yield CounterMetricFamily(
            "fleetwatch_mqtt_stale_acks",
            "Acks not sent because their connection died (the broker redelivers those).",
            value=s.stale_acks,
        )
        yield CounterMetricFamily(
            "fleetwatch_mqtt_redelivered",
            "Messages the broker resent with the DUP flag (unacknowledged before a crash or a "
            "dropped connection); the store keeps each fix once.",
            value=s.redelivered,
        )
        yield GaugeMetricFamily(
            "fleetwatch_mqtt_connected", "1 while subscribed to the broker.", value=int(s.connected)
        )
        yield GaugeMetricFamily(
            "fleetwatch_mqtt_buffered_messages",
            "Received messages waiting for the batcher (bounded; the socket pauses when full).",
            value=s.buffered,
        )


class IngestMetrics:
    """The collectors of one ingest service, on their own registry (tests make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "fleetwatch_ingest_messages", "MQTT messages taken into batches.", registry=r
        )
        self.payload_bytes = Counter(
            "fleetwatch_ingest_payload_bytes", "Payload bytes taken into batches.", registry=r
        )
        self.fixes_accepted = Counter(
            "fleetwatch_ingest_fixes_accepted", "Fixes the decoder accepted.", registry=r
        )
        self.fixes_inserted = Counter(
            "fleetwatch_ingest_fixes_inserted", "Fixes committed as new rows.", registry=r
        )
        self.fixes_duplicate = Counter(
            "fleetwatch_ingest_fixes_duplicate",
            "Fixes the store already had (a redelivery): stored once, counted here.",
            registry=r,
        )
        self.rejects = Counter(
            "fleetwatch_ingest_rejects",
            "Sentences or payloads refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.decoder_counts = Counter(
            "fleetwatch_ingest_decoder_events",
            "Decoder counts by kind (sentences framed, accepted, merged, corrected...).",
            ["kind"],
            registry=r,
        )
        self.skipped_sentences = Counter(
            "fleetwatch_ingest_skipped_sentences",
            "Well-formed sentences the decoder does not use, by address (e.g. GPGSV, PUBX).",
            ["type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "fleetwatch_ingest_dead_letters",
            "Dead letters committed to the store, by reason.",
            ["reason"],
            registry=r,
        )
        self.batches_written = Counter(
            "fleetwatch_ingest_batches_written",
            "Batches committed, by what closed them (messages, bytes, age, flush).",
            ["closed_by"],
            registry=r,
        )
        self.store_retries = Counter(
            "fleetwatch_store_retries",
            "Write attempts that failed because the database was unavailable.",
            registry=r,
        )
        self.store_refused = Counter(
            "fleetwatch_ingest_store_refused",
            "Rows the database refused, isolated and kept as dead letters 'store_refused'.",
            registry=r,
        )
        self.dropped = Counter(
            "fleetwatch_ingest_dropped",
            "Rows refused even as dead letters: dropped, logged, counted here (should be 0).",
            registry=r,
        )
        self.store_up = Gauge(
            "fleetwatch_store_up", "0 while the database is unavailable, else 1.", registry=r
        )
        self.store_up.set(1)
        self.write_seconds = Histogram(
            "fleetwatch_ingest_write_seconds",
            "Duration of one committed batch write (the successful attempt).",
            buckets=WRITE_BUCKETS_S,
            registry=r,
        )
        self.queue_depth = Gauge(
            "fleetwatch_ingest_queue_batches",
            "Batches waiting between stages (bounded).",
            ["stage"],
            registry=r,
        )
        self.pending_messages = Gauge(
            "fleetwatch_ingest_unacked_messages",
            "Messages received and not yet acknowledged (in batches or being written).",
            registry=r,
        )
        self.receive_to_commit = ArrayHistogram(
            "fleetwatch_ingest_receive_to_commit_seconds",
            "From MQTT receive to database commit, per message.",
            LATENCY_BUCKETS_S,
        )
        self.fix_to_commit = ArrayHistogram(
            "fleetwatch_ingest_fix_to_commit_seconds",
            "From the fix's own GPS time to database commit, per fix (includes unit buffering).",
            LATENCY_BUCKETS_S,
        )
        r.register(self.receive_to_commit)
        r.register(self.fix_to_commit)

    def watch_source(self, read: Callable[[], SourceCounters | None]) -> None:
        """Expose the MQTT client's counters, read at each scrape."""
        self.registry.register(_SourceCollector(read))

    def count_decoder(self, counts: Mapping[str, int]) -> None:
        """Split the decoder's ``counts`` (``skipped:<ADDRESS>``, ``reject:<reason>``, ...).

        ``reject:*`` is not repeated here: rejects are counted from the reject records, with
        the service's own refusals (unknown unit, bad topic, oversize), in ``rejects``.
        """
        for key, n in counts.items():
            if not n:
                continue
            kind, _, detail = key.partition(":")
            if kind == "skipped":
                self.skipped_sentences.labels(detail).inc(n)
            elif kind != "reject":
                self.decoder_counts.labels(key).inc(n)

    def count_by_label(self, counter: Counter, counts: Mapping[str, int]) -> None:
        for label, n in counts.items():
            if n:
                counter.labels(label).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics of the fusion process (prometheus_client, one registry per service).

Names (all prefixed ``walkout_fusion_``): ``messages_total{kind}`` (accepted into the inbox),
``duplicates_total`` (inbox duplicates: redeliveries the transport could not tell), ``effects_total{effect}``,
``receipts_total{status}``, ``payment_failures_total``, ``review_items_total{kind}``,
``exit_to_receipt_seconds`` (histogram: wall clock at the receipt's publication minus the visit's exit time;
meaningful live, where capture time is wall time), gauges ``visits_open``, ``review_queue``,
``pending_effects``,
``inbox_rows``, ``event_clock_seconds``, ``late_messages``, and the transport's own counters as
``transport_messages_total{counter}`` (received, rejected, duplicate, failed, published, queued, delivered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class _CallbackCollector(Collector):
    """Reads counters from a callable at scrape time (the transport's counters)."""

    def __init__(self, name: str, doc: str, read: Callable[[], dict[str, int]]):
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        fam = CounterMetricFamily(self.name, self.doc, labels=["counter"])
        for key, value in sorted(self.read().items()):
            fam.add_metric([key], float(value))
        yield fam


class FusionMetrics:
    """The service's metrics; :meth:`serve` exposes them on an HTTP port."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "walkout_fusion_"
        self.messages = Counter(
            p + "messages", "Input messages accepted into the inbox", ["kind"], registry=r
        )
        self.duplicates = Counter(p + "duplicates", "Messages already in the inbox (skipped)", registry=r)
        self.effects = Counter(p + "effects", "Engine effects applied", ["effect"], registry=r)
        self.receipts = Counter(p + "receipts", "Receipts settled", ["status"], registry=r)
        self.payment_failures = Counter(p + "payment_failures", "Holds and captures declined", registry=r)
        self.review_items = Counter(p + "review_items", "Items queued for ops review", ["kind"], registry=r)
        self.latency = Histogram(
            p + "exit_to_receipt_seconds",
            "Wall clock from a visit's exit to its receipt",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.visits_open = Gauge(p + "visits_open", "Visits not yet closed", registry=r)
        self.review_queue = Gauge(p + "review_queue", "Open review items", registry=r)
        self.pending_effects = Gauge(p + "pending_effects", "Effects waiting to be applied", registry=r)
        self.inbox_rows = Gauge(p + "inbox_rows", "Inbox rows after the latest snapshot", registry=r)
        self.event_clock = Gauge(p + "event_clock_seconds", "The engine's event time", registry=r)
        self.late = Gauge(
            p + "late_messages", "Messages that arrived after their time was processed", registry=r
        )
        self._server: object | None = None

    def watch_transport(self, read: Callable[[], dict[str, int]]) -> None:
        self.registry.register(
            _CallbackCollector("walkout_fusion_transport_messages", "The transport's message counters", read)
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``addr:port`` (a daemon thread)."""
        self._server = start_http_server(port, addr, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", addr, port)

    def stop_serving(self) -> None:
        server = self._server
        if server is not None and isinstance(server, tuple):
            server[0].shutdown()
        self._server = None

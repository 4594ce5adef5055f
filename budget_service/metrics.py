"""Prometheus metrics on an HTTP port (METRICS_ADDR): read from the components at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from budget_service.errors import ConfigError
from budget_service.ledger_writer import LedgerWriter
from budget_service.reconcile import ReconcileResult


class LedgerCollector(Collector):
    """The ledger writer's progress and the reconciliation result."""

    def __init__(self, writer: LedgerWriter, reconciled: ReconcileResult) -> None:
        self.writer = writer
        self.reconciled = reconciled

    def collect(self) -> Iterator[Metric]:
        s = self.writer.stats
        yield GaugeMetricFamily(
            "budget_ledger_backlog_events",
            "Outbox entries not yet written to PostgreSQL and acknowledged",
            value=s.backlog_events,
        )
        yield GaugeMetricFamily(
            "budget_ledger_oldest_event_age_seconds",
            "Age of the oldest outbox entry not yet trimmed (the writer's lag)",
            value=s.oldest_event_age_seconds,
        )
        yield CounterMetricFamily(
            "budget_ledger_events_written", "Events this process wrote to PostgreSQL", s.written
        )
        yield CounterMetricFamily(
            "budget_ledger_duplicates_skipped",
            "Events delivered again and skipped by event id",
            s.duplicates,
        )
        yield CounterMetricFamily(
            "budget_ledger_write_failures", "Failed drain attempts (retried)", s.failures
        )
        yield CounterMetricFamily(
            "budget_ledger_malformed_events",
            "Outbox entries the writer could not read, set aside in ba:{org}:ledger:malformed",
            s.malformed,
        )
        r = self.reconciled
        if r.runs:
            differences = GaugeMetricFamily(
                "budget_ledger_reconcile_differences",
                "Counters that differed from the ledger at the last comparison",
                value=len(r.differences),
            )
            yield differences
            yield GaugeMetricFamily(
                "budget_ledger_reconcile_last_run_timestamp_seconds",
                "When Redis counters were last compared with the ledger",
                value=r.last_run_unix,
            )


class MetricsServer:
    """A /metrics endpoint for one service instance (its own registry)."""

    def __init__(self, addr: str, collectors: list[Collector]) -> None:
        self.registry = CollectorRegistry()
        for c in collectors:
            self.registry.register(c)
        host, _, port = addr.rpartition(":")
        try:
            self._httpd, self._thread = start_http_server(int(port), host, self.registry)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"METRICS_ADDR={addr!r}: cannot serve metrics there ({exc}); choose another"
                " host:port, or set METRICS_ADDR to an empty value to turn metrics off"
            ) from exc
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

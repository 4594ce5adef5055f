"""Prometheus metrics on an HTTP port (METRICS_ADDR), one registry per service instance.

- RPCs: `budget_rpc_calls_total{service,method,code}` and `budget_rpc_latency_seconds`
  (observed by servicekit/rpc.py for every call).
- Admissions: `budget_reservations_total{org,budget,outcome}` (admitted / refused, counted by
  the budget that admitted or refused; a reservation covered by three budgets counts on each).
- Utilization: `budget_utilization_ratio{org,budget}` (spent in the current period / limit),
  and overage: `budget_overage_nanos{org,budget}` (spent above the limit in the current period)
  and `budget_overage_commits{org,budget}` (commits that charged above it this period), from a
  snapshot of Redis refreshed every few seconds by a background job.
- Prices: `budget_price_catalog_version` and `budget_price_catalog_age_seconds` (since the
  newest price version took effect) of the in-process price table.
- Ledger: the writer's backlog and lag, events written, failures, dead letters, failing orgs,
  reconciliation differences, rows deleted by the retention job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from budget_service.hotpath import keys
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.errors import DataLost
from budget_service.hotpath.periods import bounds_ms, spent_in_period
from budget_service.hotpath.price_table import PriceTable
from budget_service.hotpath.store import redis_call
from budget_service.ledger.reconcile import ReconcileResult
from budget_service.ledger.retention import RetentionResult
from budget_service.ledger.writer import LedgerWriter
from servicekit.clock import Clock
from servicekit.errors import ConfigError

UTILIZATION_CHUNK = 1000  # budgets whose counters one script call reads
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The counters the request path updates (cheap: a labelled increment per event)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "budget_rpc_calls",
            "RPCs answered, by service, method and status code",
            ["service", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "budget_rpc_latency_seconds",
            "RPC latency in the server, by service and method",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reservations = Counter(
            "budget_reservations",
            "Reservations admitted or refused, by the budget that admitted or refused them",
            ["org", "budget", "outcome"],
            registry=registry,
        )

    def observe_call(self, service: str, method: str, code: str, seconds: float) -> None:
        self.calls.labels(service, method, code).inc()
        self.latency.labels(service, method).observe(seconds)

    def admitted(self, org: str, budget_ids: list[str]) -> None:
        for budget_id in budget_ids:
            self.reservations.labels(org, budget_id, "admitted").inc()

    def refused(self, org: str, budget_ids: list[str]) -> None:
        for budget_id in budget_ids:
            self.reservations.labels(org, budget_id, "refused").inc()


@dataclass
class Utilization:
    """Spent / limit and overage of every budget, as of `taken_at` (a background job's)."""

    ratios: dict[tuple[str, str], float]
    # (spent above the limit, commits that charged above it) in the current period
    overage: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    taken_at: float = 0.0

    @classmethod
    def empty(cls) -> Utilization:
        return cls({})

    async def refresh(self, redis: aioredis.Redis, cache: ConfigCache, clock: Clock) -> None:
        """Read every budget's spent counter, UTILIZATION_CHUNK budgets per script call.

        The config comes from the cache, caught up with what changed, not re-read; the
        counters come through the read-only snapshot script in chunks, so an org of 100,000
        budgets never holds Redis or the event loop for long.
        """
        ratios: dict[tuple[str, str], float] = {}
        overage: dict[tuple[str, str], tuple[int, int]] = {}
        now = clock.now_ms()
        for org in sorted(await redis_call(redis.smembers(keys.ORGS))):
            try:
                config = await cache.refresh(org)
            except DataLost:  # no counters to show until it is rebuilt
                continue
            budgets = list(config.by_uid.values())  # the cache may change while we await
            for start in range(0, len(budgets), UTILIZATION_CHUNK):
                chunk = budgets[start : start + UTILIZATION_CHUNK]
                reply = await cache.scripts.run(
                    "snapshot", [keys.ledger(org), *(keys.budget(org, b.uid) for b in chunk)], []
                )
                for b, (spent, _reserved, pstart, _exists, commits) in zip(
                    chunk, reply[1], strict=True
                ):
                    start_ms = bounds_ms(b.period, b.timezone, now)[0]
                    in_period = spent_in_period(spent, pstart, start_ms)
                    # a ratio for a dashboard, not money: a float is what Prometheus carries
                    ratios[(org, b.id)] = in_period / b.limit_nanos if b.limit_nanos else 0.0
                    if in_period > b.limit_nanos:
                        over_commits = spent_in_period(commits, pstart, start_ms)
                        overage[(org, b.id)] = (in_period - b.limit_nanos, over_commits)
        self.ratios = ratios
        self.overage = overage
        self.taken_at = time.time()


class StateCollector(Collector):
    """Gauges read at scrape time: the ledger writer, reconciliation, prices, utilization."""

    def __init__(
        self,
        writer: LedgerWriter,
        reconciled: ReconcileResult,
        prices: PriceTable,
        utilization: Utilization,
        now_ms: Callable[[], int],
        retention: RetentionResult | None = None,
    ) -> None:
        self.writer = writer
        self.retention = retention
        self.reconciled = reconciled
        self.prices = prices
        self.utilization = utilization
        self.now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        yield from self._ledger()
        version = self.prices.version
        yield GaugeMetricFamily(
            "budget_price_catalog_version",
            "Newest price version in the in-process price table (0: not loaded)",
            value=version,
        )
        newest = self.prices.newest_effective_from_ms()
        if newest is not None:
            yield GaugeMetricFamily(
                "budget_price_catalog_age_seconds",
                "Seconds since the newest price version took effect",
                value=max(0.0, (self.now_ms() - newest) / 1000),
            )
        ratio = GaugeMetricFamily(
            "budget_utilization_ratio",
            "Spent in the current period / limit (refreshed every few seconds)",
            labels=["org", "budget"],
        )
        for (org, budget_id), value in sorted(self.utilization.ratios.items()):
            ratio.add_metric([org, budget_id], value)
        yield ratio
        above = GaugeMetricFamily(
            "budget_overage_nanos",
            "Spent above the limit in the current period (budgets over their limit only)",
            labels=["org", "budget"],
        )
        commits = GaugeMetricFamily(
            "budget_overage_commits",
            "Commits that charged spend above the limit in the current period",
            labels=["org", "budget"],
        )
        for (org, budget_id), (nanos, count) in sorted(self.utilization.overage.items()):
            above.add_metric([org, budget_id], nanos)
            commits.add_metric([org, budget_id], count)
        yield above
        yield commits

    def _ledger(self) -> Iterator[Metric]:
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
            "Outbox entries this process could not read, set aside in ledger_dead_letters",
            s.malformed,
        )
        yield CounterMetricFamily(
            "budget_ledger_dead_lettered_events",
            "Outbox entries this process set aside in ledger_dead_letters (unreadable, or"
            " refused by PostgreSQL) instead of letting them stop the ledger",
            s.dead_lettered,
        )
        yield GaugeMetricFamily(
            "budget_ledger_dead_letters",
            "Events waiting in ledger_dead_letters for a person (budgetctl ledger dead-letters)",
            value=s.dead_letters,
        )
        yield GaugeMetricFamily(
            "budget_ledger_failing_orgs",
            "Orgs whose last drain failed (backed off; the other orgs drain on)",
            value=s.failing_orgs,
        )
        kept = self.retention
        if kept is not None and kept.runs:
            deleted = CounterMetricFamily(
                "budget_ledger_retention_deleted_rows",
                "Ledger rows the retention job of this process deleted, by table",
                labels=["table"],
            )
            for table, n in sorted(kept.deleted.items()):
                deleted.add_metric([table], n)
            yield deleted
            yield GaugeMetricFamily(
                "budget_ledger_retention_last_run_timestamp_seconds",
                "When the ledger retention job last ran (LEDGER_RETENTION_DAYS and"
                " LEDGER_ROLLUP_RETENTION_DAYS)",
                value=kept.last_run_unix,
            )
        r = self.reconciled
        if r.runs:
            yield GaugeMetricFamily(
                "budget_ledger_reconcile_differences",
                "Counters that differed from the ledger at the last comparison",
                value=len(r.differences),
            )
            yield GaugeMetricFamily(
                "budget_ledger_reconcile_last_run_timestamp_seconds",
                "When Redis counters were last compared with the ledger",
                value=r.last_run_unix,
            )


class MetricsServer:
    """A /metrics endpoint for one service instance (its own registry)."""

    def __init__(self, addr: str, registry: CollectorRegistry) -> None:
        self.registry = registry
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

"""Wiring: stores, engine, services, health, reflection, sweeper; start and graceful stop.

Health: the port opens only after migrations and the reconcile of Redis from PostgreSQL; it
then answers NOT_SERVING (the whole server, "", and each service name) until the price table
has caught up with the pricing service, SERVING from then on, and NOT_SERVING again at stop.
The name `liveness` answers SERVING from the moment the port opens: Kubernetes' liveness and
startup probes ask it, so a pod waiting for prices is kept out of traffic, not restarted.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import grpc.aio
import redis.asyncio as aioredis
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stale stubs
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from budget_service.api.admin import BudgetAdminService
from budget_service.api.gateway import BudgetService
from budget_service.config import epoch as epochs
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import store
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.engine import Engine
from budget_service.hotpath.org_overrides import OrgOverrides
from budget_service.hotpath.price_table import PriceTable
from budget_service.hotpath.redis_wire import Address, RedisWire
from budget_service.hotpath.sweeper import Sweeper
from budget_service.ledger.reconcile import ReconcileResult
from budget_service.ledger.recovery import EpochWatch, Rebuilder, prepare_data_set
from budget_service.ledger.retention import LedgerRetention
from budget_service.ledger.writer import LedgerWriter
from budget_service.ops.metrics import MetricsServer, ServiceMetrics, StateCollector, Utilization
from genproto.budget.v1 import budget_pb2, budget_pb2_grpc
from servicekit import db, serving, tracing
from servicekit.clock import Clock, SystemClock
from servicekit.errors import ConfigError
from servicekit.periodic import Periodic
from servicekit.settings import Settings

log = structlog.get_logger(__name__)
UTILIZATION_SECONDS = 10.0  # how often budget_utilization_ratio is re-read from Redis
PRUNE_SECONDS = 600.0  # how often idle orgs are taken out of the registry (hotpath/sweeper.py)
EPOCH_WATCH_SECONDS = 1.0
POOL_CLOSE_SECONDS = 10.0  # how often the data-set sentinel is checked (ledger/recovery.py)
SERVICE_NAMES = (
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"].full_name,
)
LIVENESS = "liveness"  # health name for liveness probes: the process is up and answering


@dataclass
class App:
    """A running budget service and everything it owns."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    redis: aioredis.Redis
    pool: asyncpg.Pool
    engine: Engine
    background: list[Periodic]
    ledger: LedgerWriter
    prices: PriceTable
    budget_service: BudgetService
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)
    reconciled: ReconcileResult
    utilization: Utilization
    metrics: MetricsServer | None
    rebuilder: Rebuilder
    retention: LedgerRetention
    readiness: asyncio.Task[None] | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_ready(self, seconds: float) -> bool:
        """True once health reports SERVING (prices loaded), False after `seconds`."""
        if self.readiness is None:
            return False
        done, _ = await asyncio.wait({self.readiness}, timeout=seconds)
        return bool(done) and not self.readiness.cancelled()

    async def stop(self) -> None:
        """Stop taking calls, let in-flight calls finish (up to the grace period), close stores."""
        if self.stopped.is_set():
            return
        log.info("server.stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        if self.readiness is not None:  # first, so it cannot report SERVING after this
            self.readiness.cancel()
            try:
                await self.readiness
            except asyncio.CancelledError:
                pass
        for name in ("", *SERVICE_NAMES, LIVENESS):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for job in self.background:
            await job.stop()
        await self.rebuilder.stop()
        await self.prices.stop()
        if self.budget_service.overrides is not None:
            await self.budget_service.overrides.stop()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.metrics is not None:
            self.metrics.stop()
        self.engine.scripts.close()
        await self.redis.aclose()
        await _close_pool(self.pool)
        self.stopped.set()
        log.info("server.stopped")


async def start(settings: Settings, clock: Clock | None = None) -> App:
    """Connect the stores, migrate, reconcile Redis from PostgreSQL, and serve."""
    if not settings.redis_url or not settings.database_url:
        raise ConfigError(
            "REDIS_URL and DATABASE_URL must be set (or use `make run`, which starts both)"
        )
    started = time.monotonic()
    clock = clock or SystemClock()
    tracing.configure(settings.tracing_exporter, "budget-service")
    redis = store.connect(
        settings.redis_url,
        timeout_seconds=settings.redis_timeout_seconds,
        pool_size=settings.redis_pool_size,
    )
    wire = RedisWire(
        Address.from_url(settings.redis_url), timeout_seconds=settings.redis_timeout_seconds
    )
    scripts = store.Scripts(redis, wire)
    await scripts.load()
    pool = await db.connect(settings.database_url, max_size=settings.database_pool_size)
    await db.migrate(pool, "budget_service", record_prefix="")
    repo = BudgetRepository(pool)
    epoch = await epochs.load(pool)
    cache = ConfigCache(scripts, epoch=epoch.value)
    sync = ConfigSync(scripts, epoch.value, cache)
    retention_ms = int(settings.retention_seconds * 1000)
    engine = Engine(
        scripts, cache, clock, retention_ms=retention_ms, outbox_limit=settings.ledger_outbox_limit
    )
    rebuilder = Rebuilder(
        scripts, pool, clock, epoch=epoch.value, retention_ms=retention_ms,
        window_ms=int((settings.retention_seconds + settings.max_ttl_seconds) * 1000),
        enabled=settings.auto_rebuild,
    )  # fmt: skip
    cache.on_lost = sync.on_lost = rebuilder.lost
    rebuilder.after_rebuild = functools.partial(sync.reconcile_org, repo)
    ledger = LedgerWriter(
        redis,
        pool,
        batch_size=settings.ledger_batch_size,
        claim_idle_ms=int(settings.ledger_claim_idle_seconds * 1000),
    )
    # The writer drains before anything is served: a rebuild at start waits for it.
    background: list[Periodic] = []
    if settings.ledger_writer:
        background.append(
            Periodic("ledger-writer", settings.ledger_poll_seconds, ledger.drain_once)
        )
        background[0].start()
    try:
        engine.data_set_lost = not await prepare_data_set(
            scripts, pool, sync, repo, rebuilder, epoch
        )
    except BaseException:
        await _close(background, rebuilder, scripts, redis, pool)
        raise
    watch = EpochWatch(scripts, epoch.value, rebuilder)
    watch.lost = engine.data_set_lost
    watch.on_change = lambda lost: setattr(engine, "data_set_lost", lost)
    # Without reuse_port a second process on a taken address fails to start instead of
    # silently splitting the traffic with the first.
    server = serving.server(settings, [("grpc.so_reuseport", int(settings.reuse_port))])
    prices = PriceTable(settings.pricing_addr)
    prices.start()
    overrides = OrgOverrides(pool, settings.database_url)
    await overrides.start()
    budget_service = BudgetService(engine, settings, prices, overrides)
    serving.register(budget_pb2_grpc.add_BudgetServiceServicer_to_server, budget_service, server)
    admin = BudgetAdminService(repo, sync, redis, clock, engine.cache)
    serving.register(budget_pb2_grpc.add_BudgetAdminServiceServicer_to_server, admin, server)
    registry = CollectorRegistry()
    budget_service.metrics = admin.metrics = ServiceMetrics(registry)
    health_servicer = health_aio.HealthServicer()
    serving.register(health_pb2_grpc.add_HealthServicer_to_server, health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(settings.budget_addr)
    except RuntimeError:
        port = 0
    metrics = None
    try:  # both listeners are bound before anything is served
        if port == 0:
            raise ConfigError(
                f"BUDGET_ADDR={settings.budget_addr!r}: cannot listen there (address in use or"
                " not local); choose another address"
            )
        if settings.metrics_addr:
            metrics = MetricsServer(settings.metrics_addr, registry)
    except ConfigError:
        await prices.stop()
        await overrides.stop()
        await _close(background, rebuilder, scripts, redis, pool)
        raise
    # grpcio's health servicer starts with "" SERVING: out of service until the prices load.
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    readiness = asyncio.create_task(
        _serve_when_ready(health_servicer, prices, started), name="readiness"
    )
    first_new = len(background)
    sweeper = Sweeper(redis, engine, clock)
    idle_ms = int((settings.retention_seconds + settings.max_ttl_seconds) * 1000)
    background += [
        Periodic("sweeper", settings.sweep_interval_seconds, sweeper.sweep_once),
        Periodic("org-prune", PRUNE_SECONDS, lambda: sweeper.prune_once(idle_ms)),
        # Applies an upsert whose push to Redis failed, and any drift, without a restart.
        Periodic(
            "config-reconcile", settings.config_reconcile_seconds, lambda: sync.reconcile(repo)
        ),
        # A Redis that lost its whole data set is noticed within a second, for every org.
        Periodic("epoch-watch", EPOCH_WATCH_SECONDS, watch.check_once),
    ]
    reconciled = ReconcileResult()
    background.append(
        Periodic(
            "ledger-reconcile",
            settings.ledger_reconcile_seconds,
            lambda: reconciled.run(scripts, pool, wait_seconds=10.0),
        )
    )
    retention = LedgerRetention(
        pool,
        redis,
        clock,
        days=settings.ledger_retention_days,
        rollup_days=settings.ledger_rollup_retention_days,
    )
    if settings.ledger_retention_days or settings.ledger_rollup_retention_days:
        background.append(
            Periodic(
                "ledger-retention", settings.ledger_retention_interval_seconds, retention.run_once
            )
        )
    utilization = Utilization.empty()
    registry.register(
        StateCollector(ledger, reconciled, prices, utilization, clock.now_ms, retention.result)
    )
    if metrics is not None:
        background.append(
            Periodic(
                "utilization",
                UTILIZATION_SECONDS,
                lambda: utilization.refresh(redis, engine.cache, clock),
            )
        )
    for job in background[first_new:]:
        job.start()
    host = settings.budget_addr.rsplit(":", 1)[0]
    log.info("server.started", addr=f"{host}:{port}", seconds=round(time.monotonic() - started, 3))
    return App(
        settings, server, port, redis, pool, engine, background, ledger, prices, budget_service,
        health_servicer, reconciled, utilization, metrics, rebuilder, retention, readiness,
    )  # fmt: skip


async def _close(
    background: list[Periodic],
    rebuilder: Rebuilder,
    scripts: store.Scripts,
    redis: aioredis.Redis,
    pool: asyncpg.Pool,
) -> None:
    """Stop what a failed start had started, and close the stores."""
    for job in background:
        await job.stop()
    await rebuilder.stop()
    scripts.close()
    await redis.aclose()
    await _close_pool(pool)


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool; connections a stuck task still holds are cut after a while."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        log.warning("server.pool_close_timeout", seconds=POOL_CLOSE_SECONDS)
        pool.terminate()


async def _serve_when_ready(health_servicer: Any, prices: PriceTable, started: float) -> None:
    """Report SERVING once the price table has caught up (the config is reconciled already).

    No time limit: a pod whose pricing service is unreachable at start stays out of service
    (a token-based Reserve there could only answer UNAVAILABLE) while pods that loaded their
    prices keep serving; the table retries every second and the pod joins when it loads.
    """
    await prices.ready.wait()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("server.ready", seconds=round(time.monotonic() - started, 3),
             prices_seconds=prices.load_seconds, prices_version=prices.version)  # fmt: skip

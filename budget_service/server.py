"""Wiring: stores, engine, services, health, reflection, sweeper; start and graceful stop."""

from __future__ import annotations

import asyncio
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
from budget_service.ledger.writer import LedgerWriter
from budget_service.ops.metrics import MetricsServer, ServiceMetrics, StateCollector, Utilization
from genproto.budget.v1 import budget_pb2, budget_pb2_grpc
from servicekit import db, tracing
from servicekit.clock import Clock, SystemClock
from servicekit.errors import ConfigError
from servicekit.periodic import Periodic
from servicekit.settings import Settings

log = structlog.get_logger(__name__)
UTILIZATION_SECONDS = 10.0  # how often budget_utilization_ratio is re-read from Redis
SERVICE_NAMES = (
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"].full_name,
)


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
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        """Stop taking calls, let in-flight calls finish (up to the grace period), close stores."""
        if self.stopped.is_set():
            return
        log.info("server.stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for job in self.background:
            await job.stop()
        await self.prices.stop()
        if self.budget_service.overrides is not None:
            await self.budget_service.overrides.stop()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.metrics is not None:
            self.metrics.stop()
        self.engine.scripts.close()
        await self.redis.aclose()
        await self.pool.close()
        self.stopped.set()
        log.info("server.stopped")


async def start(settings: Settings, clock: Clock | None = None) -> App:
    """Connect the stores, migrate, reconcile Redis from PostgreSQL, and serve."""
    if not settings.redis_url or not settings.database_url:
        raise ConfigError(
            "REDIS_URL and DATABASE_URL must be set (or use `make run`, which starts both)"
        )
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
    pool = await db.connect(settings.database_url)
    await db.migrate(pool, "budget_service", record_prefix="")
    repo = BudgetRepository(pool)
    sync = ConfigSync(scripts)
    await sync.reconcile(repo)

    engine = Engine(
        scripts, ConfigCache(scripts), clock, retention_ms=int(settings.retention_seconds * 1000)
    )
    # Without reuse_port a second process on a taken address fails to start instead of
    # silently splitting the traffic with the first.
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(settings.reuse_port))])
    prices = PriceTable(settings.pricing_addr)
    prices.start()
    overrides = OrgOverrides(pool, settings.database_url)
    await overrides.start()
    budget_service = BudgetService(engine, settings, prices, overrides)
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(  # type: ignore[no-untyped-call]
        budget_service, server
    )
    admin = BudgetAdminService(repo, sync, redis, clock, engine.cache)
    budget_pb2_grpc.add_BudgetAdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
        admin, server
    )
    registry = CollectorRegistry()
    budget_service.metrics = admin.metrics = ServiceMetrics(registry)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
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
        scripts.close()
        await redis.aclose()
        await pool.close()
        raise
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    background = [
        Periodic(
            "sweeper", settings.sweep_interval_seconds, Sweeper(redis, engine, clock).sweep_once
        ),
        # Applies an upsert whose push to Redis failed, and any drift, without a restart.
        Periodic(
            "config-reconcile", settings.config_reconcile_seconds, lambda: sync.reconcile(repo)
        ),
    ]
    ledger = LedgerWriter(
        redis,
        pool,
        batch_size=settings.ledger_batch_size,
        claim_idle_ms=int(settings.ledger_claim_idle_seconds * 1000),
    )
    if settings.ledger_writer:
        background.append(
            Periodic("ledger-writer", settings.ledger_poll_seconds, ledger.drain_once)
        )
    reconciled = ReconcileResult()
    background.append(
        Periodic(
            "ledger-reconcile",
            settings.ledger_reconcile_seconds,
            lambda: reconciled.run(scripts, pool, wait_seconds=10.0),
        )
    )
    utilization = Utilization.empty()
    registry.register(StateCollector(ledger, reconciled, prices, utilization, clock.now_ms))
    if metrics is not None:
        background.append(
            Periodic(
                "utilization",
                UTILIZATION_SECONDS,
                lambda: utilization.refresh(redis, engine.cache, clock),
            )
        )
    for job in background:
        job.start()
    host = settings.budget_addr.rsplit(":", 1)[0]
    log.info("server.started", addr=f"{host}:{port}")
    return App(
        settings, server, port, redis, pool, engine, background, ledger, prices, budget_service,
        health_servicer, reconciled, utilization, metrics,
    )  # fmt: skip

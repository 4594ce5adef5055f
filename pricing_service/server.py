"""Wiring of the pricing service: PostgreSQL catalog (seeded from the bundled file), feed, gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stale stubs
from grpc_reflection.v1alpha import reflection

from budget_service import db
from budget_service.errors import ConfigError
from budget_service.settings import Settings
from genproto.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from pricing_service import bundled
from pricing_service.catalog_repo import CatalogRepository
from pricing_service.feed import PriceFeed
from pricing_service.handlers import PricingService

log = structlog.get_logger(__name__)
SERVICE_NAME = pricing_pb2.DESCRIPTOR.services_by_name["PricingService"].full_name


@dataclass
class PricingApp:
    """A running pricing service and what it owns."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool
    catalog: CatalogRepository
    service: PricingService
    feed: PriceFeed
    health: Any

    async def stop(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.stop()
        await self.feed.stop()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.pool.close()
        log.info("pricing.stopped")


async def seed_bundled(catalog: CatalogRepository) -> int:
    """Record the bundled catalog; only prices that differ from the latest become versions."""
    changed = 0
    for price in bundled.load():
        if await catalog.record(price, source=bundled.SOURCE) is not None:
            changed += 1
    return changed


async def start(settings: Settings) -> PricingApp:
    """Migrate, seed the bundled catalog, and serve on PRICING_ADDR."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL must be set (or use `make run`, which starts PostgreSQL)")
    pool = await db.connect(settings.database_url)
    await db.migrate(pool, "pricing_service")
    catalog = CatalogRepository(pool)
    seeded = await seed_bundled(catalog)
    feed = PriceFeed(settings.database_url)
    await feed.start()
    service = PricingService(catalog, feed)
    server = grpc.aio.server()
    pricing_pb2_grpc.add_PricingServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(settings.pricing_addr)
    except RuntimeError:
        port = 0
    if port == 0:
        await feed.stop()
        await pool.close()
        raise ConfigError(f"PRICING_ADDR={settings.pricing_addr!r}: cannot listen there")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("pricing.started", port=port, bundled_versions=seeded)
    return PricingApp(settings, server, port, pool, catalog, service, feed, health_servicer)

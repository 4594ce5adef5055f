"""Wiring of the pricing service: PostgreSQL catalog (seeded from the bundled file), feed, gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stale stubs
from grpc_reflection.v1alpha import reflection

from genproto.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from pricing_service import bundled
from pricing_service.catalog_repo import CatalogRepository
from pricing_service.feed import PriceFeed
from pricing_service.handlers import PricingService
from pricing_service.overrides_repo import OverrideRepository
from pricing_service.sources import SourceRefresher, parse_source_list
from servicekit import db, serving
from servicekit.errors import ConfigError
from servicekit.periodic import Periodic
from servicekit.settings import Settings

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
    refresher: SourceRefresher
    periodic: Periodic | None

    async def stop(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.periodic is not None:
            await self.periodic.stop()
        self.service.stop()
        await self.feed.stop()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.pool.close()
        log.info("pricing.stopped")


async def seed_bundled(catalog: CatalogRepository) -> int:
    """Record the bundled catalog; only prices changed since its last load become versions.

    A bundled price read again unchanged does not replace a price that a source or an admin
    set since: those win until the bundled file itself changes that model.
    """
    return await catalog.record_changed(bundled.load(), source=bundled.SOURCE)


def _scheduled_refresh(refresher: SourceRefresher) -> Callable[[], Awaitable[None]]:
    """The Periodic job: every run after the first (start has just pulled the sources)."""
    first = True

    async def job() -> None:
        nonlocal first
        if first:
            first = False
            return
        await refresher.refresh()

    return job


async def start(settings: Settings) -> PricingApp:
    """Migrate, seed the bundled catalog, pull PRICING_SOURCE_URLS, and serve on PRICING_ADDR.

    A source that fails or is rejected at start is logged and leaves the prices as they were;
    the sources are pulled again every PRICING_REFRESH_SECONDS (0 or less: only at start and
    on RefreshCatalog).
    """
    if not settings.database_url:
        raise ConfigError("DATABASE_URL must be set (or use `make run`, which starts PostgreSQL)")
    pool = await db.connect(settings.database_url)
    await db.migrate(pool, "pricing_service", record_prefix="pricing_service/")
    catalog = CatalogRepository(pool)
    seeded = await seed_bundled(catalog)
    refresher = SourceRefresher(catalog, parse_source_list(settings.pricing_source_urls))
    for result in await refresher.refresh():
        log.info("pricing.source_at_start", source=result.source, outcome=result.outcome,
                 models=result.models, changed_models=result.changed_models)  # fmt: skip
    feed = PriceFeed(settings.database_url)
    await feed.start()
    service = PricingService(catalog, feed, OverrideRepository(pool), refresher)
    server = serving.server(settings)
    serving.register(pricing_pb2_grpc.add_PricingServiceServicer_to_server, service, server)
    health_servicer = health_aio.HealthServicer()
    serving.register(health_pb2_grpc.add_HealthServicer_to_server, health_servicer, server)
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
    periodic = None
    if refresher.sources and settings.pricing_refresh_seconds > 0:
        periodic = Periodic(
            "price-sources", settings.pricing_refresh_seconds, _scheduled_refresh(refresher)
        )
        periodic.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("pricing.started", port=port, bundled_versions=seeded, sources=len(refresher.sources))
    return PricingApp(settings, server, port, pool, catalog, service, feed, health_servicer,
                      refresher, periodic)  # fmt: skip

"""Each org's negotiated prices, cached in process for token pricing on the hot path.

Loaded from PostgreSQL on an org's first token call; the pricing service sends
NOTIFY price_overrides (payload: the org) on every change, which drops that org from the cache.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from pricing_service.overrides import PriceOverride
from pricing_service.overrides_repo import CHANNEL, OverrideRepository
from servicekit.errors import Unavailable

log = structlog.get_logger(__name__)


class OrgOverrides:
    """org -> its price overrides, invalidated by PostgreSQL notifications."""

    def __init__(self, pool: asyncpg.Pool, database_url: str) -> None:
        self.repo = OverrideRepository(pool)
        self.database_url = database_url
        self._cache: dict[str, tuple[PriceOverride, ...]] = {}
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        try:
            self._listener = await asyncpg.connect(self.database_url)
            await self._listener.add_listener(CHANNEL, self._changed)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("overrides.listen_failed", error=str(exc))

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    def _changed(self, *args: Any) -> None:
        org = args[-1] if args else ""
        self._cache.pop(str(org), None)

    async def get(self, org: str) -> tuple[PriceOverride, ...]:
        """The org's overrides (most specific chosen by the caller)."""
        cached = self._cache.get(org)
        if cached is not None:
            return cached
        if self._listener is None or self._listener.is_closed():
            await self.stop()
            await self.start()  # without notifications a cached copy could go stale
        try:
            found = tuple(await self.repo.for_org(org))
        except asyncpg.UndefinedTableError:
            found = ()  # the pricing service has not created its tables: nothing negotiated
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(f"cannot read the org's negotiated prices: {exc}") from exc
        if self._listener is not None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[org] = found
        return found

"""Price changes as they happen: PostgreSQL NOTIFY from every new version, fanned out in process."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)
CHANNEL = "price_versions"


class PriceFeed:
    """Wakes every waiter when a price version is recorded (by any replica)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._changed = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.url)
        await self._conn.add_listener(CHANNEL, self._notified)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self._changed.set()  # let waiters see the end

    def _notified(self, *_: Any) -> None:
        # One event per change generation: every current waiter wakes, later ones wait anew.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seconds: float) -> None:
        """Return at the next change, or after `seconds` (then callers re-check)."""
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            pass

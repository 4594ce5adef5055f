"""Releases holds whose caller vanished: every org's expiry index, scanned on an interval."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import structlog

from budget_service import keys
from budget_service.clock import Clock
from budget_service.engine import Engine
from budget_service.errors import BudgetServiceError
from budget_service.store import redis_call

log = structlog.get_logger(__name__)
BATCH = 500  # per org and pass: a backlog drains over passes instead of blocking one


class Sweeper:
    """Finds reservations past their expiry (ZRANGEBYSCORE, never a key scan) and expires them."""

    def __init__(
        self, client: aioredis.Redis, engine: Engine, clock: Clock, interval_seconds: float
    ) -> None:
        self.client = client
        self.engine = engine
        self.clock = clock
        self.interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def sweep_once(self) -> int:
        """One pass over every org; returns how many holds were released."""
        released = 0
        orgs: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        for org in orgs:
            due: list[str] = await redis_call(
                self.client.zrangebyscore(
                    keys.expiries(org), "-inf", self.clock.now_ms(), start=0, num=BATCH
                )
            )
            for reservation_id in due:
                if await self.engine.expire(org, reservation_id):
                    released += 1
                    log.info("hold.expired", org=org, reservation_id=reservation_id)
        return released

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep_once()
            except BudgetServiceError as exc:
                log.warning("sweeper.failed", error=str(exc))
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass

    def start(self) -> None:
        """Run passes in the background until stop()."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self, timeout: float = 5.0) -> None:
        """Let the current pass finish (no hold is left half-expired), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            log.warning("sweeper.stop_timeout", timeout_seconds=timeout)
        self._task = None

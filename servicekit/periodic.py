"""A background job run on an interval, stopped between runs (never cancelled mid-call)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from servicekit.errors import ServiceError

log = structlog.get_logger(__name__)


class Periodic:
    """Runs `job` every `interval_seconds` until stop(); a failed run is logged, not fatal."""

    def __init__(
        self, name: str, interval_seconds: float, job: Callable[[], Awaitable[Any]]
    ) -> None:
        self.name = name
        self.interval = interval_seconds
        self.job = job
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.job()
            except ServiceError as exc:
                log.warning("periodic.failed", job=self.name, error=exc.message)
            except Exception:  # a background job must outlive any one bad run
                log.exception("periodic.crashed", job=self.name)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, wait_seconds: float = 5.0) -> None:
        """Let the current run finish (no hold is left half-expired), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(self._task, wait_seconds)
        except TimeoutError:
            log.warning("periodic.stop_timeout", job=self.name, wait_seconds=wait_seconds)
        self._task = None

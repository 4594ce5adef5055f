"""Running a service as a process: settings, logging, uvloop, graceful stop on SIGINT/SIGTERM.

Both `python -m budget_service` and `python -m pricing_service` go through `run`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
import uvloop

from servicekit import logs
from servicekit.errors import ServiceError
from servicekit.settings import Settings


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def serve(start: Callable[[Settings], Awaitable[Stoppable]], settings: Settings) -> None:
    """Start, then stop gracefully on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start: a signal during it still counts
        loop.add_signal_handler(sig, stop.set)
    app = await start(settings)
    await stop.wait()
    await app.stop()


def run(name: str, start: Callable[[Settings], Awaitable[Stoppable]]) -> None:
    """Read the settings, configure logs, serve; a bad setting or store exits with code 2."""
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_format)
        uvloop.run(serve(start, settings))
    except ServiceError as exc:
        structlog.get_logger(name).error("server.failed", error=exc.message)
        sys.exit(2)

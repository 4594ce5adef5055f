"""`python -m pricing_service`: run the pricing service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from budget_service import logs
from budget_service.errors import BudgetServiceError
from budget_service.settings import Settings
from pricing_service import server


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = await server.start(settings)
    await stop.wait()
    await app.stop()


def main() -> None:
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_format)
        uvloop.run(serve(settings))
    except BudgetServiceError as exc:
        structlog.get_logger("pricing_service").error("server.failed", error=exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()

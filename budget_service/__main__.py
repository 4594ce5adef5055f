"""`python -m budget_service`: run the budget service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from budget_service import logs, server
from budget_service.errors import BudgetServiceError
from budget_service.settings import Settings

USAGE = """usage: python -m budget_service

Runs the budget service. Configured by environment variables:
"""


async def serve(settings: Settings) -> None:
    """Start, then stop gracefully on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start: a signal during it still counts
        loop.add_signal_handler(sig, stop.set)
    app = await server.start(settings)
    await stop.wait()
    await app.stop()


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(USAGE + "\n".join(f"  {n:32} {d!r:24} {h}" for n, d, h in Settings.describe()))
        return
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_format)
        uvloop.run(serve(settings))
    except BudgetServiceError as exc:
        structlog.get_logger("budget_service").error("server.failed", error=exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()
